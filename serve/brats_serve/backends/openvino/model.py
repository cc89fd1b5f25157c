"""Python stand-in for Triton's native ``openvino`` backend (``backend: "openvino"``).

Reads ``<version>/model.xml`` (+ ``model.bin``; or ``default_model_filename``) with ``openvino.Core`` and serves it
with dynamic batching (see ``_common``). Honours from ``config.pbtxt``: input/output name and dims,
``max_batch_size``, the instance kind (``KIND_CPU`` only: like the native 24.10 backend it refuses ``KIND_GPU``) and
the parameters the native backend (24.10) reads, with its values: ``NUM_STREAMS`` (AUTO, NUMA or a number),
``INFERENCE_NUM_THREADS``, ``COMPILATION_NUM_THREADS``, ``PERFORMANCE_HINT`` (LATENCY, THROUGHPUT,
CUMULATIVE_THROUGHPUT) and ``HINT_BF16`` (YES). Ignored: ``RESHAPE_IO_LAYERS``, ``SKIP_OV_DYNAMIC_BATCHSIZE``,
``ENABLE_BATCH_PADDING`` (the exported model is dynamic in N, D, H, W).

Precision: f32 unless ``HINT_BF16`` asks for bf16. This is a deliberate difference from the native 24.10 backend,
which leaves OpenVINO's default: bf16 on CPUs with AVX512-BF16 or AMX (max |served - eager| ~5e-3 for this
network), f32 elsewhere, with no parameter that forces f32. The stand-in keeps the export's f32 parity.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # brats_serve copies _common.py next to this file
import _common  # noqa: E402

PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")


def properties(spec) -> dict:
    """``compile_model`` properties from the config's parameters, checked as the native backend checks them."""
    params = {key: value.strip().upper() for key, value in spec.parameters.items() if value.strip()}
    # Each instance is its own stub process, and OpenVINO pins threads per process without seeing the others
    # (measured: two pinned 1-thread instances share one core). Unpinned, the OS spreads them.
    props: dict = {"INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}
    for key in ("INFERENCE_NUM_THREADS", "COMPILATION_NUM_THREADS"):
        if key in params:
            props[key] = _common.int_parameter(spec, key)
    if "NUM_STREAMS" in params:
        value = params["NUM_STREAMS"]
        if value not in ("AUTO", "NUMA") and not value.isdigit():
            raise ValueError(f"config parameter 'NUM_STREAMS' must be AUTO, NUMA or a number, got {value!r}")
        props["NUM_STREAMS"] = value
    if "PERFORMANCE_HINT" in params:
        value = params["PERFORMANCE_HINT"]
        if value not in PERFORMANCE_HINTS:
            raise ValueError(f"config parameter 'PERFORMANCE_HINT' must be one of {PERFORMANCE_HINTS}, got {value!r}")
        props["PERFORMANCE_HINT"] = value
    if "HINT_BF16" in params:
        if params["HINT_BF16"] != "YES":
            raise ValueError(f"config parameter 'HINT_BF16' must be YES, got {params['HINT_BF16']!r}")
        props["INFERENCE_PRECISION_HINT"] = "bf16"
    return props


class TritonPythonModel(_common.StandInModel):
    backend = "openvino"
    default_filename = "model.xml"

    def load(self, path, spec, use_gpu, device_id):
        import openvino as ov

        if use_gpu:
            raise ValueError(
                f"{path.parent.parent.name}: the openvino backend supports only CPU instances (KIND_CPU), "
                "as Triton's native openvino backend does; fix instance_group in the config"
            )
        core = ov.Core()
        device = "CPU"
        compiled = core.compile_model(core.read_model(str(path)), device, properties(spec))
        inputs = [name for port in compiled.inputs for name in port.get_names()]
        outputs = [name for port in compiled.outputs for name in port.get_names()]
        _common.check_names(path, spec, inputs, outputs)
        request = compiled.create_infer_request()
        feed = spec.input.name
        output = compiled.output(spec.output.name)

        def predict(batch):
            # share_inputs avoids a copy in; outputs are copied out because the next infer reuses the buffers
            return request.infer({feed: batch}, share_inputs=True, share_outputs=False)[output]

        return predict, f"{device} ({compiled.get_property('INFERENCE_PRECISION_HINT')})"

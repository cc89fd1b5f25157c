"""Python stand-in for Triton's native ``openvino`` backend (``backend: "openvino"``).

Reads ``<version>/model.xml`` (+ ``model.bin``; or ``default_model_filename``) with ``openvino.Core`` and serves it
with dynamic batching (see ``_common``). Honours from ``config.pbtxt``: input/output name and dims,
``max_batch_size``, the instance kind (``KIND_CPU`` only: like the native 24.10 backend it refuses ``KIND_GPU``) and
the parameters the native backend (24.10) reads, with its values: ``NUM_STREAMS`` (AUTO, NUMA or a number),
``INFERENCE_NUM_THREADS``, ``COMPILATION_NUM_THREADS``, ``PERFORMANCE_HINT`` (LATENCY, THROUGHPUT,
CUMULATIVE_THROUGHPUT) and ``HINT_BF16`` (YES). Ignored: ``RESHAPE_IO_LAYERS``, ``SKIP_OV_DYNAMIC_BATCHSIZE``,
``ENABLE_BATCH_PADDING`` (the exported model is dynamic in N, D, H, W).

Shapes: an IR with a static input shape (``brats_openvino_int8``) is compiled once, as the native backend does. An
IR with dynamic D, H, W is compiled for each request's shape (static), which OpenVINO runs faster and in less memory
than the dynamic graph (docs/performance-notes.md, issue 28); the last :data:`STATIC_SHAPES` shapes stay compiled
(each holds its own buffers: about 1.3 GiB for a whole BraTS crop in f32), an older one is compiled again when it
comes back. The native 24.10 backend compiles once at load with the IR's (or, with ``RESHAPE_IO_LAYERS``, the
config's) dims: there a dynamic config stays dynamic.

Precision: f32 unless ``HINT_BF16`` asks for bf16. This is a deliberate difference from the native 24.10 backend,
which leaves OpenVINO's default: bf16 on CPUs with AVX512-BF16 or AMX (max |served - eager| ~5e-3 for this
network), f32 elsewhere, with no parameter that forces f32. The stand-in keeps the export's f32 parity.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # brats_serve copies _common.py next to this file
import _common  # noqa: E402

PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
STATIC_SHAPES = 2  # request shapes kept compiled: the warm-up's and one case's tiles


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
        model = core.read_model(str(path))
        props = properties(spec)
        compiled = core.compile_model(model, device, props)
        inputs = [name for port in compiled.inputs for name in port.get_names()]
        outputs = [name for port in compiled.outputs for name in port.get_names()]
        _common.check_names(path, spec, inputs, outputs)
        precision = compiled.get_property("INFERENCE_PRECISION_HINT")
        if model.input(spec.input.name).get_partial_shape().is_static:
            return Requests(lambda shape: compiled, spec).predict, f"{device} ({precision}, static shape)"

        def compile_for(shape):
            model.reshape({spec.input.name: list(shape)})
            return core.compile_model(model, device, props)

        return Requests(compile_for, spec).predict, f"{device} ({precision}, compiled per request shape)"


class Requests:
    """One infer request per input shape, compiled by ``compile_for(shape)`` when first seen; the last
    :data:`STATIC_SHAPES` shapes are kept."""

    def __init__(self, compile_for, spec) -> None:
        self.compile_for, self.feed, self.output_name = compile_for, spec.input.name, spec.output.name
        self.cache: OrderedDict = OrderedDict()

    def request(self, shape: tuple[int, ...]):
        if shape in self.cache:
            self.cache.move_to_end(shape)
            return self.cache[shape]
        while len(self.cache) >= STATIC_SHAPES:
            self.cache.popitem(last=False)
        compiled = self.compile_for(shape)
        self.cache[shape] = (compiled.create_infer_request(), compiled.output(self.output_name))
        return self.cache[shape]

    def predict(self, batch):
        request, output = self.request(tuple(batch.shape))
        # share_inputs avoids a copy in; outputs are copied out because the next infer reuses the buffers
        return request.infer({self.feed: batch}, share_inputs=True, share_outputs=False)[output]

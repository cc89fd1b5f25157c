"""Python stand-in for Triton's native ``onnxruntime`` backend (``platform: "onnxruntime_onnx"``).

Loads ``<version>/model.onnx`` (or ``default_model_filename``) into an ONNX Runtime session and serves it with
dynamic batching (see ``_common``). Honours from ``config.pbtxt``: input/output name and dims, ``max_batch_size``,
the instance kind (``KIND_GPU`` -> ``CUDAExecutionProvider`` on the instance's device when ONNX Runtime offers it,
else CPU) and the parameters ``intra_op_thread_count`` and ``inter_op_thread_count`` (0 or absent: ONNX Runtime's
default). Ignored: ``optimization`` (ONNX Runtime's full graph optimisation always applies) and
``execution_accelerators``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # brats_serve copies _common.py next to this file
import _common  # noqa: E402


class TritonPythonModel(_common.StandInModel):
    backend = "onnxruntime"
    default_filename = "model.onnx"

    def load(self, path, spec, use_gpu, device_id):
        import onnxruntime as ort

        options = ort.SessionOptions()
        intra = _common.int_parameter(spec, "intra_op_thread_count")
        inter = _common.int_parameter(spec, "inter_op_thread_count")
        if intra:
            options.intra_op_num_threads = intra
        if inter:
            options.inter_op_num_threads = inter
        providers: list = ["CPUExecutionProvider"]
        if use_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
        session = ort.InferenceSession(str(path), options, providers=providers)
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        _common.check_names(path, spec, inputs, outputs)
        names = [spec.output.name]
        feed = spec.input.name

        def predict(batch):
            return session.run(names, {feed: batch})[0]

        return predict, session.get_providers()[0]

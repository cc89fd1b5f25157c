"""Python stand-in for Triton's native ``pytorch`` backend (``platform: "pytorch_libtorch"``).

Loads ``<version>/model.pt`` (or ``default_model_filename``) with ``torch.jit.load`` and serves it with dynamic
batching (see ``_common``) under ``torch.inference_mode``. Honours from ``config.pbtxt``: input/output name and
dims (the module's first input and first output are bound to them, as the native backend does for
``INPUT__0``/``OUTPUT__0``), ``max_batch_size``, the instance kind (``KIND_GPU`` -> ``cuda:<device>`` when
``torch.cuda.is_available()``, else CPU) and the parameters ``INTRA_OP_THREAD_COUNT`` and
``INTER_OP_THREAD_COUNT`` (absent: torch's defaults). Ignored: the native backend's JIT tuning parameters.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # brats_serve copies _common.py next to this file
import _common  # noqa: E402


class TritonPythonModel(_common.StandInModel):
    backend = "pytorch"
    default_filename = "model.pt"

    def load(self, path, spec, use_gpu, device_id):
        import torch

        intra = _common.int_parameter(spec, "INTRA_OP_THREAD_COUNT")
        inter = _common.int_parameter(spec, "INTER_OP_THREAD_COUNT")
        if inter:
            torch.set_num_interop_threads(inter)  # only allowed before any parallel work: do it first
        if intra:
            torch.set_num_threads(intra)
        device = torch.device(f"cuda:{device_id}" if use_gpu and torch.cuda.is_available() else "cpu")
        module = torch.jit.load(str(path), map_location=device).eval()

        def predict(batch):
            with warnings.catch_warnings():
                # Triton's input buffers may be read-only; the module never writes its input, so share, not copy
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                x = torch.from_numpy(batch)
            with torch.inference_mode():
                out = module(x.to(device))
            if isinstance(out, (tuple, list)):
                out = out[0]
            return out.cpu().numpy()

        return predict, str(device)

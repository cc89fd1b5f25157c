"""In-process predictors for :class:`brats_client.local.LocalTransport`, so the client's own tiling runs without
Triton: the benchmarks compare each backend with and without Triton on the same tiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np


def predictors(model, formats: Iterable[str], workdir: Path) -> dict[str, Callable]:
    """Export ``model`` to each format in ``workdir`` and load it back as a numpy predictor."""
    import torch
    from brats_export import exporters, parity

    work = Path(workdir)
    out: dict[str, Callable] = {}
    for fmt in formats:
        if fmt == "torch":
            def eager(batch: np.ndarray, _m=model) -> np.ndarray:
                with torch.inference_mode():
                    return _m(torch.from_numpy(batch)).numpy()
            out[fmt] = eager
        elif fmt == "openvino":
            onnx_path = exporters.export_onnx(model, work / "model.onnx")
            out[fmt] = parity.load_openvino(exporters.export_openvino(onnx_path, work / "model.xml"))
        else:  # the benchmark loads the other formats from the repository that brats-export writes
            raise ValueError(f"unknown format {fmt!r}; choose torch or openvino")
    return out

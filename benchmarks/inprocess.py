"""In-process predictors with the transport's interface, so the client's own tiling runs without Triton.

Used by the benchmarks to compare each backend with and without Triton on the same tiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from brats_client.transport import ModelInfo


class InProcess:
    """``infer_stream`` over a local predictor ``[N, 4, ...] -> [N, 3, ...]``, one batch at a time."""

    def __init__(self, name: str, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 8) -> None:
        self.info = ModelInfo(name, "1", "INPUT__0", "OUTPUT__0", max_batch_size, "in-process")
        self._predict = predict

    def infer_stream(self, items: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray]]:
        for key, batch in items:
            yield key, self._predict(batch)


def predictors(model, formats: Iterable[str], workdir: Path) -> dict[str, Callable]:
    """Export ``model`` to each format in ``workdir`` and load it back as a numpy predictor."""
    import torch
    from brats_export import exporters

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
            out[fmt] = exporters.load_openvino(exporters.export_openvino(onnx_path, work / "model.xml"))
        else:  # the benchmark loads the other formats from the repository that brats-export writes
            raise ValueError(f"unknown format {fmt!r}; choose torch or openvino")
    return out

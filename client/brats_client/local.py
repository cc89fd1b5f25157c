"""A predictor in this process behind :class:`brats_client.pipeline.Transport`: the client's own sliding window
and flips (:func:`brats_client.pipeline.predict`) without Triton, for the benchmarks' in-process rows and the
tests against the eager reference."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any

import numpy as np

from .contract import INPUT_NAME, OUTPUT_NAME, output_shape
from .model_info import ModelInfo


class LocalTransport:
    """``infer_stream`` over ``predict`` (``[N, 4, D, H, W] -> [N, 3, D, H, W]``), one batch at a time, in order."""

    def __init__(
        self, predict: Callable[[np.ndarray], np.ndarray], name: str = "local", max_batch_size: int = 8
    ) -> None:
        self.info = ModelInfo(name, "1", INPUT_NAME, OUTPUT_NAME, max_batch_size, "in-process")
        self._predict = predict

    def infer_stream(
        self, batches: Iterable[tuple[Any, np.ndarray]]
    ) -> Generator[tuple[Any, np.ndarray], None, None]:
        for key, batch in batches:
            output = np.asarray(self._predict(batch))
            if output.shape != output_shape(batch.shape):
                raise ValueError(f"predictor returned shape {output.shape} for input {batch.shape}; "
                                 f"expected {list(output_shape(batch.shape))}")
            yield key, output

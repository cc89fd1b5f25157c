"""A predictor in this process behind :class:`brats_client.protocol.Transport`: the client's whole ladder (sliding
window, flips, labels, outputs; :mod:`brats_client.pipeline`) without Triton, for the benchmarks' in-process rows
and the tests against the eager reference."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any

import numpy as np

from .contract import INPUT_NAME, OUTPUT_NAME, output_shape
from .errors import ServerError
from .model_info import ModelInfo


class LocalTransport:
    """``infer_stream`` over ``predict`` (``[N, 4, D, H, W] -> [N, 3, D, H, W]``), one batch at a time, in order;
    ``fixed_spatial``: the predictor takes only tiles of this shape (a static-shape model)."""

    def __init__(
        self, predict: Callable[[np.ndarray], np.ndarray], name: str = "local", max_batch_size: int = 8,
        fixed_spatial: tuple[int, ...] | None = None,
    ) -> None:
        self.info = ModelInfo(name, "1", INPUT_NAME, OUTPUT_NAME, max_batch_size, "in-process",
                              fixed_spatial=None if fixed_spatial is None else tuple(fixed_spatial))
        self._predict = predict

    def __enter__(self) -> LocalTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    crosses_network = False

    def describe(self) -> dict[str, Any]:
        return {"url": "in-process", "shared_memory": False, "concurrency": 1}

    def statistics(self) -> None:
        return None

    def open_model(self, name: str) -> LocalTransport:
        raise ServerError(f"an in-process predictor serves one model ({self.info.name}), not {name!r}")

    def close(self) -> None:
        pass

    def infer_stream(
        self, batches: Iterable[tuple[Any, np.ndarray]]
    ) -> Generator[tuple[Any, np.ndarray], None, None]:
        for key, batch in batches:
            output = np.asarray(self._predict(batch))
            if output.shape != output_shape(batch.shape):
                raise ValueError(f"predictor returned shape {output.shape} for input {batch.shape}; "
                                 f"expected {list(output_shape(batch.shape))}")
            yield key, output

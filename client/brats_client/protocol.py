"""The seam between the client's pipeline and whatever computes the network: :class:`Transport`.

Two implementations: :class:`brats_client.transport.TritonTransport` (a Triton server over gRPC) and
:class:`brats_client.local.LocalTransport` (a predictor in this process). The whole ladder of
:mod:`brats_client.pipeline` and the flip companion (:mod:`brats_client.server_flips`) use only what is declared here.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any, Protocol

import numpy as np

from .model_info import ModelInfo


class Transport(Protocol):
    """A model behind a stream of ``(key, batch [N, 4, D, H, W])`` -> ``(key, output [N, 3, D, H, W])``."""

    @property
    def info(self) -> ModelInfo:
        """The model's description; raises ServerError when it cannot be used."""
        ...

    def infer_stream(
        self, batches: Iterable[tuple[Any, np.ndarray]]
    ) -> Generator[tuple[Any, np.ndarray], None, None]:
        """Results in any order; closing the generator ends the stream and cancels what is in flight."""
        ...

    @property
    def crosses_network(self) -> bool:
        """True when requests travel to another host (not loopback, not in-process): what a server-side-flip
        companion saves is network bytes (:func:`brats_client.server_flips.open_for`)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Where the model runs, for the report: ``url``, ``shared_memory``, ``concurrency``."""
        ...

    def statistics(self) -> dict[str, int] | None:
        """Cumulative counters (``compute_infer_ns``, ...) of the model, or None where there are none."""
        ...

    def open_model(self, name: str) -> Transport:
        """A transport to another model of the same server (the flip companion); ServerError when there is none."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Transport: ...

    def __exit__(self, *exc: object) -> None: ...

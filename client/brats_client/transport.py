"""gRPC transport to Triton: the client's one door to the server.

The parts, each in its own module: ``server_options`` (where and how), ``endpoints`` (one gRPC client per server,
which takes the next request, dead or alive), ``model_info`` (what the live model takes and returns), ``shm``
(system shared memory slots) and ``stream`` (requests in flight, retries, and their end). Of the pipeline's
modules only this one, ``endpoints``, ``shm`` and ``stream`` import tritonclient (``model_info`` does not).

Tensors travel as binary (raw) contents, or through system shared memory when the server runs on this host
(``shared_memory="auto"``: when :func:`brats_client.shm.problem` finds nothing in the way). Requests are
asynchronous with a bounded number in flight; the caller's iterator is consumed lazily, so the next batches are
prepared while earlier ones compute.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from . import shm
from .contract import IN_CHANNELS, OUT_CHANNELS
from .endpoints import Endpoints, describe, read_model_info
from .errors import ServerError
from .model_info import ModelInfo
from .server_options import ServerOptions
from .stream import Stream

log = logging.getLogger(__name__)


class TritonTransport:
    """Sends FP32 batches ``[N, 4, D, H, W]`` to one model and yields ``[N, 3, D, H, W]`` results
    (a :class:`brats_client.protocol.Transport`)."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.endpoints = Endpoints(options)
        self._info: ModelInfo | None = None
        self._slots: shm.Slots | None = None
        self._shm_decided = False

    def __enter__(self) -> TritonTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._slots is not None:
            self._slots.close()
            self._slots = None
        self.endpoints.close()

    def check_model(self) -> ModelInfo:
        """Check that the servers answer and that the live model takes what this client sends.

        With several URLs, endpoints that fail the check are left out (with a warning) while one passes.
        """
        infos, failures = [], []
        for endpoint in self.endpoints.all:
            try:
                infos.append(read_model_info(endpoint, self.options))
            except ServerError as e:
                endpoint.alive = False
                failures.append(e)
        if not infos:
            raise failures[0] if len(failures) == 1 else ServerError("; ".join(str(e) for e in failures))
        for e in failures:
            log.warning("left out: %s", e)
        first = infos[0]
        for other in infos[1:]:
            if (other.input_name, other.output_name, other.max_batch_size) != (
                first.input_name, first.output_name, first.max_batch_size
            ):
                raise ServerError(f"the servers in {self.options.url} serve different {self.options.model!r} models")
        self._info = first
        log.info(
            "model %s version %s (%s) on %s: %s -> %s, max batch %d",
            first.name, first.version, first.platform, self.options.url,
            first.input_name, first.output_name, first.max_batch_size,
        )
        return first

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            self._info = self.check_model()
        return self._info

    @property
    def crosses_network(self) -> bool:
        return not all(shm.is_loopback(url) for url in self.options.urls)

    def describe(self) -> dict[str, Any]:
        o = self.options
        return {"url": o.url, "shared_memory": self.shared_memory_active, "concurrency": o.concurrency}

    def statistics(self) -> dict[str, int] | None:
        """:meth:`inference_statistics`, or None (logged) when the server does not give them."""
        try:
            return self.inference_statistics()
        except ServerError as e:
            log.debug("no statistics: %s", e)
            return None

    def open_model(self, name: str) -> TritonTransport:
        """A transport with these options to model ``name`` (checked when its ``info`` is first read)."""
        return TritonTransport(dataclasses.replace(self.options, model=name))

    def inference_statistics(self) -> dict[str, int]:
        """Cumulative server-side counters of the model (nanoseconds and counts)."""
        o = self.options
        out = {"inference_count": 0, "execution_count": 0, "compute_infer_ns": 0, "queue_ns": 0}
        for endpoint in self.endpoints.all:
            try:
                stats = endpoint.client.get_inference_statistics(
                    o.model, o.model_version, client_timeout=o.connect_timeout_s
                )
            except InferenceServerException as e:
                raise ServerError(f"cannot read statistics of {o.model!r} at {endpoint.url}: {describe(e)}") from e
            for s in stats.model_stats:
                out["inference_count"] += s.inference_count
                out["execution_count"] += s.execution_count
                out["compute_infer_ns"] += s.inference_stats.compute_infer.ns
                out["queue_ns"] += s.inference_stats.queue.ns
        return out

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """One batch, synchronously."""
        for _, out in self.infer_stream([(None, batch)]):
            return out
        raise AssertionError("unreachable")

    def infer_stream(self, batches: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray]]:
        """Yield ``(key, output)`` in completion order, at most ``concurrency`` requests in flight.

        Close the iterator (or exhaust it) to end the stream: its requests in flight are cancelled and their
        shared-memory slots returned (:class:`brats_client.stream.Stream`).
        """
        info = self.info
        source = iter(batches)
        first = next(source, None)
        if first is None:
            return
        self._decide_shared_memory(first[1])
        stream = Stream(self.options, info, self.endpoints, self._slots)

        def chained() -> Iterator[tuple[Any, np.ndarray]]:
            yield first
            yield from source

        yield from stream.results(chained())

    @property
    def shared_memory_active(self) -> bool:
        return self._slots is not None

    def _decide_shared_memory(self, batch: np.ndarray) -> None:
        """Once per transport, on the first batch: set up shared memory if the options ask for it and it works."""
        if self._shm_decided:
            return
        self._shm_decided = True
        o = self.options
        if o.shared_memory == "off" or len(self.endpoints) > 1:
            return
        if o.shared_memory == "auto" and not shm.is_loopback(o.url):  # also False for dns:/ipv4:/ipv6: targets
            return
        client = self.endpoints.first.client
        need = o.concurrency * batch.nbytes * (IN_CHANNELS + OUT_CHANNELS) // IN_CHANNELS
        problem = shm.problem(client, need, timeout_s=o.connect_timeout_s)
        if problem is None:
            self._slots = shm.Slots(client, o.concurrency, timeout_s=o.connect_timeout_s)
        elif o.shared_memory == "on":
            raise ServerError(f"--shared-memory on: {problem}; use --shared-memory off")
        else:
            log.info("shared memory not used (%s); tensors go inside the gRPC messages", problem)

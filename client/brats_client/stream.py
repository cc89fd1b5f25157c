"""One stream of requests: at most ``concurrency`` in flight, retried when the server is unavailable, and every
request accounted for when the stream ends.

Whatever ends a stream (the last result, a request that failed for good, an exception in the caller's iterator or
in the caller's loop, KeyboardInterrupt, a deadline), ``close`` cancels the requests still in flight, waits for
their callbacks at most ``DRAIN_TIMEOUT_S`` and gives back their shared-memory slots (``shm.Slots`` keeps the pool
full), so the next stream of the same transport starts with every slot free. No wait here is unbounded: each
request has the gRPC deadline ``timeout_s``, and the wait for a callback stops ``ANSWER_GRACE_S`` later.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from . import model_info, shm
from .contract import IN_CHANNELS, OUT_CHANNELS, output_shape
from .endpoints import Endpoint, Endpoints, describe, error_type
from .errors import BackendLostError, DeadlineError, ServerError, ServerUnavailableError
from .model_info import ModelInfo
from .server_options import ServerOptions

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0  # how long a closing stream waits for the callbacks of its cancelled requests
ANSWER_GRACE_S = 5.0  # beyond the gRPC deadline, in case a callback never comes


@dataclass(eq=False)
class _Request:
    key: Any
    batch: np.ndarray
    attempt: int = 0
    slot: int | None = None
    endpoint: Endpoint | None = None
    call: Any = None  # the gRPC call in flight (cancellable); None while none is
    counted: bool = False  # counted in endpoint.in_flight


class Stream:
    """Sends FP32 batches ``[N, 4, D, H, W]`` and yields ``(key, [N, 3, D, H, W])`` in completion order."""

    def __init__(self, options: ServerOptions, info: ModelInfo, endpoints: Endpoints, slots: shm.Slots | None):
        self.options, self.info, self.endpoints, self.slots = options, info, endpoints, slots
        self._done: queue.SimpleQueue[tuple[_Request, Any, Any]] = queue.SimpleQueue()
        self._open: set[_Request] = set()  # submitted, not finished

    def results(self, batches: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray]]:
        o = self.options
        source = iter(batches)
        exhausted = False
        try:
            self.endpoints.check_usable()
            self.endpoints.probe()
            if self.slots is not None:
                self.slots.sync()
            while True:
                while not exhausted and len(self._open) < o.concurrency:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    key, batch = item
                    self._check_batch(batch)
                    request = _Request(key, batch)
                    self._open.add(request)
                    self._send(request)
                if not self._open:
                    return
                request, result, error = self._next_answer()
                if error is not None:
                    self._drop_slot(request)
                    kind = error_type(error)
                    if kind is BackendLostError:  # Triton's python backend gave up on the model's stub
                        why = self._stub_lost_message(request.endpoint, error)
                        self.endpoints.mark_broken(request.endpoint, why)
                        self._open.discard(request)
                        raise BackendLostError(why)
                    if self._retry(request, error):
                        continue
                    self._open.discard(request)
                    where = request.endpoint.url if request.endpoint is not None else o.url
                    raise kind(f"inference of {o.model!r} at {where} failed: {describe(error)}")
                try:
                    output = self._read_output(request, result)
                finally:  # answered: the server is done with the slot, whatever the answer held
                    self._open.discard(request)
                    self._free_slot(request)
                yield request.key, output
        finally:
            self.close()

    def _stub_lost_message(self, endpoint: Endpoint, error: InferenceServerException) -> str:
        return (
            f"model {self.options.model!r} at {endpoint.url}: {error.message()} Triton's python backend heard "
            "nothing from the model's stub process for 1 s (the stub was stalled, by CPU or memory starvation or "
            "a paused machine, or it died: killed by the kernel's OOM killer or crashed, which brats-serve logs, "
            "naming the model, before it stops with exit code 5); Triton 24.10 then answers each later request of "
            "that model with an error or the previous request's output, so this client sends that server nothing "
            "more. Restart the server (brats-serve) and keep its machine from being overloaded, then run again"
        )

    def _check_batch(self, batch: np.ndarray) -> None:
        if batch.dtype != np.float32 or batch.ndim != 5 or batch.shape[1] != IN_CHANNELS:
            raise ValueError(f"batches must be float32 [N, 4, D, H, W], got {batch.dtype} {batch.shape}")
        if self.info.max_batch_size and batch.shape[0] > self.info.max_batch_size:
            raise ValueError(
                f"batch of {batch.shape[0]} exceeds the model's max_batch_size {self.info.max_batch_size}"
            )

    def _send(self, request: _Request) -> None:
        o, info, batch = self.options, self.info, request.batch

        def callback(result: Any, error: Any) -> None:
            self._done.put((request, result, error))

        endpoint = self.endpoints.choose()
        endpoint.in_flight += 1
        request.endpoint, request.counted = endpoint, True
        try:  # a region registration fails like a request would (e.g. UNAVAILABLE: retried)
            inp = grpcclient.InferInput(info.input_name, list(batch.shape), "FP32")
            out = grpcclient.InferRequestedOutput(info.output_name)
            if self.slots is not None:
                if request.slot is None:
                    request.slot = self.slots.acquire(o.timeout_s)
                in_name, in_handle = self.slots.region(request.slot, "in", batch.nbytes)
                out_bytes = batch.nbytes // IN_CHANNELS * OUT_CHANNELS
                out_name, _ = self.slots.region(request.slot, "out", out_bytes)
                self.slots.write(in_handle, np.ascontiguousarray(batch))
                inp.set_shared_memory(in_name, batch.nbytes)
                out.set_shared_memory(out_name, out_bytes)
            else:
                inp.set_data_from_numpy(np.ascontiguousarray(batch))
            request.call = endpoint.client.async_infer(
                o.model, [inp], callback, model_version=o.model_version, outputs=[out],
                client_timeout=o.timeout_s,
            )
        except InferenceServerException as e:
            callback(None, e)

    def _next_answer(self) -> tuple[_Request, Any, Any]:
        """The next callback, within the request deadline and a grace period."""
        wait_s = self.options.timeout_s + ANSWER_GRACE_S
        try:
            request, result, error = self._done.get(timeout=wait_s)
        except queue.Empty:
            raise DeadlineError(
                f"no answer from {self.options.model!r} at {self.options.url} within {wait_s:g} s; "
                "raise --timeout-s if the model needs longer"
            ) from None
        request.call = None
        if request.counted:
            request.endpoint.in_flight -= 1
            request.counted = False
        return request, result, error

    def _retry(self, request: _Request, error: InferenceServerException) -> bool:
        """Send a failed request again: at once to another live server, else after a backoff; False to give up."""
        if error_type(error) is not ServerUnavailableError:  # refused as busy, or unreachable
            return False
        endpoints = self.endpoints
        if len(endpoints) > 1:
            if request.endpoint is not None:
                endpoints.mark_dead(request.endpoint, describe(error))
            if endpoints.any_alive():
                self._send(request)
                return True
        if request.attempt >= self.options.retries:
            return False
        delay_s = self.options.backoff_s * 2**request.attempt
        log.warning("%s: %s; retrying in %.1f s", self.options.url, describe(error), delay_s)
        time.sleep(delay_s)
        endpoints.revive_all()
        if self.slots is not None:
            self.slots.server_restarted()
        request.attempt += 1
        self._send(request)
        return True

    def _read_output(self, request: _Request, result: Any) -> np.ndarray:
        shape = output_shape(request.batch.shape)
        where = f"model {self.options.model!r} at {request.endpoint.url if request.endpoint else self.options.url}"
        model_info.check_output(result, self.info, shape, where)
        if self.slots is not None and request.slot is not None:
            return np.array(self.slots.read(request.slot, np.float32, shape))
        output = result.as_numpy(self.info.output_name)
        if output is None or output.shape != shape:  # the data itself, beyond what the response says
            got = None if output is None else list(output.shape)
            raise ServerError(f"{where} returned output data of shape {got}, expected {list(shape)}")
        return output

    def _free_slot(self, request: _Request) -> None:
        if self.slots is not None and request.slot is not None:
            self.slots.release(request.slot)
            request.slot = None

    def _drop_slot(self, request: _Request) -> None:
        if self.slots is not None and request.slot is not None:
            self.slots.retire(request.slot)
            request.slot = None

    def close(self) -> None:
        """Cancel what is in flight, wait for those callbacks (bounded), and give every slot back."""
        sent = {r for r in self._open if r.call is not None}
        for request in sent:
            request.call.cancel()
        waiting = set(sent)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while waiting:
            try:
                request, _, _ = self._done.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                log.warning("%d request(s) did not end within %g s of being cancelled; abandoned",
                            len(waiting), DRAIN_TIMEOUT_S)
                break
            waiting.discard(request)
        for request in self._open:
            request.call = None
            if request.counted:
                request.endpoint.in_flight -= 1
                request.counted = False
            if request in sent:  # the server may still read or write its regions
                self._drop_slot(request)
            else:  # never reached the server
                self._free_slot(request)
        self._open.clear()

"""The stream owns its requests: whatever ends it, nothing stays in flight, every shared-memory slot comes back,
and no wait is unbounded. A fake gRPC client plays the server (pure logic; real /dev/shm regions, which the fake
reads and writes by their keys as Triton would)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pytest
from brats_client import ServerOptions, shm, stream
from brats_client.endpoints import Endpoints
from brats_client.errors import ServerError
from brats_client.model_info import ModelInfo
from tritonclient.grpc._utils import get_cancelled_error
from tritonclient.utils import InferenceServerException

INFO = ModelInfo("fake", "1", "INPUT__0", "OUTPUT__0", 8, "fake")
SPATIAL = (8, 8, 8)


def batches(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(i, rng.standard_normal((1, 4, *SPATIAL)).astype(np.float32)) for i in range(n)]


def expected(batch: np.ndarray) -> np.ndarray:
    return batch[:, :3] * 2.0


@dataclass
class Meta:
    shape: list
    datatype: str = "FP32"


class Result:
    def __init__(self, output: np.ndarray, shm_out: bool, shape=None) -> None:
        self._output, self._shm_out = output, shm_out
        self._shape = list(output.shape) if shape is None else shape

    def get_output(self, name):
        return Meta(self._shape) if name == INFO.output_name else None

    def as_numpy(self, name):
        return None if self._shm_out else self._output


class Call:
    def __init__(self, server: FakeServer, callback) -> None:
        self.server, self.callback, self.done = server, callback, False
        self.lock = threading.Lock()

    def finish(self, result, error) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
        self.server.in_flight -= 1
        self.callback(result=result, error=error)

    def cancel(self) -> None:
        self.server.cancelled += 1
        if not self.server.ignore_cancel:
            self.finish(None, get_cancelled_error())


@dataclass
class FakeServer:
    """``behaviours``: one per request in order ("ok", "unavailable", "invalid", "stub", "shape", "silent"); then
    "ok".
    Answers come from a timer after ``delay_s``; "silent" never answers."""

    behaviours: list = field(default_factory=list)
    delay_s: float = 0.02
    ignore_cancel: bool = False
    ready: bool = True
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0
    registered: dict = field(default_factory=dict)  # name -> key
    registrations: int = 0

    # -- shared memory ------------------------------------------------------------------------------
    def register_system_shared_memory(self, name, key, byte_size, client_timeout=None):
        if name in self.registered:
            raise InferenceServerException(msg=f"shared memory region '{name}' already in manager")
        self.registered[name] = key
        self.registrations += 1

    def unregister_system_shared_memory(self, name="", client_timeout=None):
        self.registered.pop(name, None)

    def get_system_shared_memory_status(self, client_timeout=None):
        return type("Status", (), {"regions": dict(self.registered)})()

    def restart(self) -> None:
        self.registered.clear()

    def is_model_ready(self, model, version="", client_timeout=None):
        if not self.ready:
            raise InferenceServerException(msg="connection refused", status="StatusCode.UNAVAILABLE")
        return True

    def close(self):
        pass

    # -- inference ----------------------------------------------------------------------------------
    def _array(self, name: str, shape) -> np.ndarray:
        key = self.registered.get(name)
        if key is None:
            raise KeyError(name)
        return np.memmap(f"{shm.SHM_DIR}{key}", dtype=np.float32, mode="r+", shape=tuple(shape))

    def async_infer(self, model, inputs, callback, model_version="", outputs=(), client_timeout=None):
        behaviour = self.behaviours[self.requests] if self.requests < len(self.behaviours) else "ok"
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        call = Call(self, callback)
        tensor, out = inputs[0]._get_tensor(), outputs[0]._get_tensor()
        shape = list(tensor.shape)
        in_region = tensor.parameters["shared_memory_region"].string_param if tensor.parameters else ""
        out_region = out.parameters["shared_memory_region"].string_param if out.parameters else ""

        def answer() -> None:
            if call.done:  # cancelled meanwhile: Triton would still compute, but nobody reads the answer
                return
            if behaviour in ("unavailable", "invalid"):
                status = "StatusCode.UNAVAILABLE" if behaviour == "unavailable" else "StatusCode.INVALID_ARGUMENT"
                call.finish(None, InferenceServerException(msg=behaviour, status=status))
                return
            if behaviour == "stub":
                call.finish(None, InferenceServerException(
                    msg="Stub process 'fake_0_0' is not healthy.", status="StatusCode.INTERNAL"))
                return
            out_shape = [shape[0], 3, *shape[2:]]
            if in_region:
                try:
                    batch = np.array(self._array(in_region, shape))
                    result = expected(batch)
                    self._array(out_region, out_shape)[:] = result
                except OSError:  # the region was dropped: only after this call was cancelled
                    assert call.done
                    return
                except KeyError as e:
                    call.finish(None, InferenceServerException(
                        msg=f"Unable to find system shared memory region: {e}", status="StatusCode.INVALID_ARGUMENT"))
                    return
            else:
                batch = np.frombuffer(inputs[0]._get_content(), np.float32).reshape(shape)
                result = expected(batch)
            call.finish(Result(result, bool(in_region), [1, 3, 4, 8, 8] if behaviour == "shape" else None), None)

        if behaviour != "silent":
            threading.Timer(self.delay_s, answer).start()
        return call


def make(server: FakeServer, shared_memory: bool, concurrency: int = 2, **options):
    o = ServerOptions(url="127.0.0.1:1", concurrency=concurrency, backoff_s=0.01, **options)
    endpoints = Endpoints(o, lambda options, url: server)
    slots = shm.Slots(server, concurrency) if shared_memory else None
    return o, endpoints, slots


def run(server, o, endpoints, slots, items):
    return list(stream.Stream(o, INFO, endpoints, slots).results(items))


def free_slots(slots: shm.Slots) -> int:
    return slots._free.qsize()


@pytest.mark.parametrize("shared_memory", [True, False])
def test_results_come_back_with_at_most_concurrency_in_flight(shared_memory):
    server = FakeServer()
    o, endpoints, slots = make(server, shared_memory)
    items = batches(5)
    out = dict(run(server, o, endpoints, slots, items))
    for key, batch in items:
        np.testing.assert_array_equal(out[key], expected(batch))
    assert server.max_in_flight == 2 and endpoints.first.in_flight == 0
    if slots is not None:
        assert free_slots(slots) == 2
        slots.close()


def test_a_failed_request_cancels_the_others_and_every_slot_comes_back():
    """The hang of issue 14: one request fails for good while the other is in flight; the next stream on the
    same slots must find both slots free (it used to wait forever for the second)."""
    server = FakeServer(behaviours=["invalid", "ok"], delay_s=0.2)
    o, endpoints, slots = make(server, True, timeout_s=2.0)
    with pytest.raises(ServerError, match="INVALID_ARGUMENT: invalid"):
        run(server, o, endpoints, slots, batches(4))
    assert server.cancelled == 1 and endpoints.first.in_flight == 0
    assert free_slots(slots) == 2
    assert len(run(server, o, endpoints, slots, batches(4))) == 4
    slots.close()


def test_an_exception_in_the_callers_loop_ends_the_stream():
    server = FakeServer(delay_s=0.1)
    o, endpoints, slots = make(server, True)
    results = stream.Stream(o, INFO, endpoints, slots).results(batches(6))
    next(results)
    results.close()  # what contextlib.closing in pipeline.predict does when its loop raises
    assert server.cancelled == 1 and free_slots(slots) == 2 and endpoints.first.in_flight == 0
    slots.close()


def test_an_exception_in_the_callers_iterator_ends_the_stream():
    server = FakeServer(delay_s=0.1)
    o, endpoints, slots = make(server, True)

    def failing():
        yield from batches(2)
        raise RuntimeError("tile 3 cannot be cut")

    with pytest.raises(RuntimeError, match="tile 3"):
        run(server, o, endpoints, slots, failing())
    assert server.cancelled == 1 and free_slots(slots) == 2  # two sent, one answered, then the iterator failed
    slots.close()


def test_keyboard_interrupt_ends_the_stream():
    server = FakeServer(delay_s=0.1)
    o, endpoints, slots = make(server, True)

    def interrupted():
        yield from batches(3)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(server, o, endpoints, slots, interrupted())
    assert free_slots(slots) == 2 and endpoints.first.in_flight == 0
    slots.close()


def test_a_request_that_never_ends_is_abandoned_within_the_bound(monkeypatch):
    monkeypatch.setattr(stream, "DRAIN_TIMEOUT_S", 0.3)
    server = FakeServer(behaviours=["ok", "silent"], ignore_cancel=True)
    o, endpoints, slots = make(server, True)
    results = stream.Stream(o, INFO, endpoints, slots).results(batches(4))
    next(results)
    results.close()  # returns: the request that never ends is abandoned after DRAIN_TIMEOUT_S
    # the abandoned request's slot may still be written by the server: it is replaced, never reused
    assert free_slots(slots) == 2
    taken = sorted(slots.acquire(0.1) for _ in range(2))
    assert 1 not in taken and len(set(taken)) == 2
    slots.close()


def test_no_answer_is_an_error_within_the_deadline(monkeypatch):
    monkeypatch.setattr(stream, "ANSWER_GRACE_S", 0.2)
    server = FakeServer(behaviours=["silent"] * 4)
    o, endpoints, slots = make(server, False, timeout_s=0.3)
    with pytest.raises(ServerError, match="no answer from 'brats_openvino' at 127.0.0.1:1 within 0.5 s"):
        run(server, o, endpoints, slots, batches(2))


@pytest.mark.parametrize("shared_memory", [True, False])
def test_the_output_shape_is_checked_on_both_paths(shared_memory):
    server = FakeServer(behaviours=["shape"])
    o, endpoints, slots = make(server, shared_memory, concurrency=1)
    with pytest.raises(ServerError, match=r"returned output 'OUTPUT__0' as FP32 \[1, 3, 4, 8, 8\], expected FP32 "
                                          r"\[1, 3, 8, 8, 8\]"):
        run(server, o, endpoints, slots, batches(1))
    if slots is not None:
        assert free_slots(slots) == 1
        slots.close()


def test_regions_are_registered_again_after_a_server_restart():
    server = FakeServer()
    o, endpoints, slots = make(server, True)
    run(server, o, endpoints, slots, batches(3))
    assert server.registrations == 4  # in and out of two slots
    server.restart()  # between two cases, unseen by the client
    assert len(run(server, o, endpoints, slots, batches(3))) == 3
    assert server.registrations == 8
    slots.close()
    assert server.registered == {}


def test_unavailable_is_retried_on_a_fresh_slot():
    server = FakeServer(behaviours=["unavailable"])
    o, endpoints, slots = make(server, True, concurrency=1, retries=1)
    out = run(server, o, endpoints, slots, batches(2))
    assert [k for k, _ in out] == [0, 1] and server.requests == 3
    assert free_slots(slots) == 1 and slots.acquire(0.1) == 1  # slot 0 was retired after the failure
    slots.close()


def test_a_dead_endpoint_is_probed_and_taken_back():
    a, b = FakeServer(), FakeServer(ready=False)
    o = ServerOptions(url="127.0.0.1:1,127.0.0.1:2", concurrency=2)
    endpoints = Endpoints(o, lambda options, url: a if url.endswith(":1") else b)
    endpoints.mark_dead(endpoints.all[1], "UNAVAILABLE")
    endpoints.all[1].probe_at = 0.0
    endpoints.probe()
    assert not endpoints.all[1].alive and endpoints.all[1].probe_interval_s == 2.0  # not back: wait longer
    b.ready = True
    endpoints.all[1].probe_at = 0.0
    run(None, o, endpoints, None, batches(6))
    assert endpoints.all[1].alive and a.requests > 0 and b.requests > 0


def test_a_lost_stub_stops_all_use_of_that_server():
    """After "Stub process ... is not healthy" Triton 24.10 answers each request with the previous one's output:
    the failing stream says what to do, and later streams send that server nothing."""
    server = FakeServer(behaviours=["stub"])
    o, endpoints, slots = make(server, True)
    with pytest.raises(ServerError, match=r"is not healthy\. Triton's python backend heard nothing .* Restart the "
                                          r"server \(brats-serve\)"):
        run(server, o, endpoints, slots, batches(4))
    sent = server.requests
    with pytest.raises(ServerError, match="sends that server nothing more"):
        run(server, o, endpoints, slots, batches(4))
    assert server.requests == sent and free_slots(slots) == 2
    slots.close()


def test_a_lost_stub_on_one_of_two_servers_leaves_the_other():
    a, b = FakeServer(), FakeServer(behaviours=["stub"])
    o = ServerOptions(url="127.0.0.1:1,127.0.0.1:2", concurrency=2)
    endpoints = Endpoints(o, lambda options, url: a if url.endswith(":1") else b)
    with pytest.raises(ServerError, match="127.0.0.1:2: Stub process"):
        run(None, o, endpoints, None, batches(4))
    sent = b.requests
    assert len(run(None, o, endpoints, None, batches(6))) == 6
    assert b.requests == sent  # nothing more to the broken one, not even a probe
    endpoints.all[1].probe_at = 0.0
    endpoints.probe()
    assert not endpoints.all[1].alive


@pytest.mark.parametrize(("status", "message", "kind"), [
    ("StatusCode.UNAVAILABLE", "failed to connect", "ServerUnavailableError"),
    ("StatusCode.RESOURCE_EXHAUSTED", "queue full", "ServerUnavailableError"),
    ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", "DeadlineError"),
    ("StatusCode.NOT_FOUND", "Request for unknown model: 'm' is not found", "ModelNotReadyError"),
    ("StatusCode.INTERNAL", "Stub process 'm_0_0' is not healthy.", "BackendLostError"),
    ("StatusCode.INTERNAL", "inference failed", "ServerError"),
    ("StatusCode.INVALID_ARGUMENT", "is not unavailable", "ServerError"),  # the code decides, not the words
])
def test_server_errors_are_typed_by_their_status_code(status, message, kind):
    from brats_client import errors
    from brats_client.endpoints import error_type
    from tritonclient.utils import InferenceServerException

    found = error_type(InferenceServerException(message, status=status))
    assert found is getattr(errors, kind) and issubclass(found, errors.ServerError)

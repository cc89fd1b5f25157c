"""When the client uses system shared memory (pure logic; fake gRPC clients stand in for the server)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from brats_client import ServerOptions, TritonTransport, shm
from brats_client.errors import ServerError
from tritonclient.utils import InferenceServerException


class FakeClient:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse, self.calls = refuse, []

    def register_system_shared_memory(self, name, key, byte_size, client_timeout=None):
        self.calls.append(("register", name, byte_size))
        if self.refuse:
            raise InferenceServerException(msg=f"Unable to open shared memory region: '{key}'")

    def unregister_system_shared_memory(self, name, client_timeout=None):
        self.calls.append(("unregister", name))


def _probe_files() -> list[str]:
    return [n for n in os.listdir(shm.SHM_DIR) if n.startswith(f"brats_probe_{os.getpid()}_")]


@pytest.mark.parametrize("url,local", [
    ("127.0.0.1:8001", True), ("localhost:8001", True), ("127.0.0.2:8001", True), ("[::1]:8001", True),
    ("10.0.0.5:8001", False), ("triton.example.org:8001", False), ("[2001:db8::1]:8001", False),
])
def test_loopback_urls(url, local):
    assert shm.is_loopback(url) is local


def test_probe_registers_and_cleans_up():
    client = FakeClient()
    assert shm.problem(client, 1024) is None
    (register, name, size), unregister = client.calls
    assert register == "register" and size == 64 and unregister == ("unregister", name)
    assert _probe_files() == []


def test_probe_names_a_server_that_cannot_open_the_region():
    problem = shm.problem(FakeClient(refuse=True), 1024)
    assert "server cannot open this host's shared memory" in problem
    assert _probe_files() == []


def test_probe_names_a_full_dev_shm(monkeypatch):
    monkeypatch.setattr(shm, "free_bytes", lambda folder=shm.SHM_DIR: 10 * shm.MiB)
    client = FakeClient()
    problem = shm.problem(client, 300 * shm.MiB)
    assert problem == "/dev/shm has 10 MiB free, the requests in flight need 300 MiB"
    assert client.calls == []  # nothing registered


def _transport(monkeypatch, url: str, mode: str, problem: str | None):
    seen = []

    def fake_problem(client, need, timeout_s=None):
        seen.append(need)
        return problem

    monkeypatch.setattr(shm, "problem", fake_problem)
    transport = TritonTransport(ServerOptions(url=url, shared_memory=mode, concurrency=2))
    return transport, seen


BATCH = np.zeros((1, 4, 16, 16, 16), np.float32)


@pytest.mark.parametrize("url,mode,problem,active,probed", [
    ("127.0.0.1:1", "auto", None, True, True),
    ("127.0.0.1:1", "auto", "no room", False, True),
    ("10.1.2.3:1", "auto", None, False, False),  # another host: not even tried
    ("dns:///triton:1", "auto", None, False, False),
    ("127.0.0.1:1,127.0.0.1:2", "auto", None, False, False),  # several servers: requests go to either
    ("127.0.0.1:1", "off", None, False, False),
    ("10.1.2.3:1", "on", None, True, True),  # asked for: tried wherever the server is
])
def test_transport_decides_once_from_the_first_batch(monkeypatch, url, mode, problem, active, probed):
    transport, seen = _transport(monkeypatch, url, mode, problem)
    with transport:
        transport._decide_shared_memory(BATCH)
        transport._decide_shared_memory(BATCH)
        assert transport.shared_memory_active is active
        # room for two requests in flight, input and output of each
        assert seen == ([2 * BATCH.nbytes * 7 // 4] if probed else [])


def test_required_shared_memory_that_does_not_work_is_an_error(monkeypatch):
    transport, _ = _transport(monkeypatch, "127.0.0.1:1", "on", "no room")
    with transport, pytest.raises(ServerError, match="--shared-memory on: no room; use --shared-memory off"):
        transport._decide_shared_memory(BATCH)


def test_bad_mode_and_several_servers_are_refused():
    with pytest.raises(ValueError, match="shared_memory must be one of auto, on, off; got 'yes'"):
        ServerOptions(shared_memory="yes")
    with pytest.raises(ValueError, match="several URLs"):
        ServerOptions(url="127.0.0.1:1,127.0.0.1:2", shared_memory="on")
    assert ServerOptions(url="127.0.0.1:1,127.0.0.1:2").shared_memory == "auto"  # auto just stays off there

"""Shared fixtures of the unit tests: pure logic, in this process (processes and commands: tests/cli; a real
Triton server: tests/integration)."""

from __future__ import annotations

import sys

import numpy.testing  # noqa: F401  (its first import runs lscpu: done here, before the guard is on)
import pytest

_PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec"}
_guard = {"on": False}


def _refuse_processes(event: str, args: tuple) -> None:
    if _guard["on"] and event in _PROCESS_EVENTS:
        raise AssertionError(f"a unit test started a process ({event} {args[:1]}): it belongs in tests/cli")


sys.addaudithook(_refuse_processes)  # audit hooks stay for the interpreter's life: the flag scopes it


@pytest.fixture(autouse=True)
def no_processes():
    """Unit tests start no process: every way Python starts one (its audit events) fails the test."""
    _guard["on"] = True
    yield
    _guard["on"] = False


@pytest.fixture
def one_torch_thread():
    """Two shared cores: torch's thread pool spinning beside other processes is slower than one thread."""
    import torch  # here, not at the top: the client's unit tests run without torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

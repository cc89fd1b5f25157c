"""A model's backend process (its python backend stub) dies while the real ``tritonserver`` serves it, as when the
kernel's OOM killer picks it: ``brats-serve`` names the model and the signal, stops the server within seconds (not
Triton's 30 s exit timeout), keeps the server's log and exits 5; a client's request to that model fails with a
message naming the model; ``TritonServer.stop`` takes seconds too when nobody looked for the dead stub before.

The servers serve two instant stand-in models (benchmarks/instant.py: python-backend models, no network, no
export needed), so the test can tell that the right one is named. Deadlines are generous (a hang fails the test,
a slow machine does not); the one bound on time is the behaviour under test: a stop in seconds, not 30 s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from brats_serve import instant
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

VICTIM, BYSTANDER = instant.NAME, f"{instant.NAME}_b"
STOP_BOUND_S = 10.0  # a dead stub made every stop take Triton's 30 s exit timeout
WAIT_S = 60.0  # generous: only a hang reaches it


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    repo = instant.write_repository(tmp_path_factory.mktemp("dead_backend") / "repository", VICTIM)
    return instant.write_repository(repo, BYSTANDER)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


def stub_of(root_pid: int, model: str) -> int:
    """The pid of ``model``'s python backend stub among the descendants of ``root_pid`` (brats-serve or the
    supervisor): a process running ``triton_python_backend_stub`` whose instance argument is ``<model>_0_0``.
    Found here from ``/proc`` alone, not with the launcher's own code."""
    pending, seen = [root_pid], []
    while pending:
        pid = pending.pop()
        for child in _children(pid):
            pending.append(child)
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                seen.append(argv[:1] + argv[8:9])
                if argv[0].endswith(b"triton_python_backend_stub") and argv[8] == f"{model}_0_0".encode():
                    return child
    raise AssertionError(f"no stub of {model} under {root_pid}: {seen}")


def infer(url: str, model: str) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    x = np.ones((1, 4, 8, 8, 8), np.float32)
    client = grpcclient.InferenceServerClient(url)
    try:
        tensor = grpcclient.InferInput("INPUT__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer(model, [tensor], client_timeout=WAIT_S).as_numpy("OUTPUT__0")
    finally:
        client.close()


def test_brats_serve_names_the_dead_model_stops_in_seconds_keeps_the_log_and_exits_5(repository):
    """The chosen behaviour: stop (exit 5) for a supervisor to restart, not a reload in place."""
    from brats_client.exit_codes import EXIT_PARTIAL
    from brats_serve.ports import free_port, port_in_use

    port = free_port()
    cmd = [sys.executable, "-m", "brats_serve.cli", "--repository", str(repository), "--grpc-port", str(port),
           "--http-port", "0", "--metrics-port", "0"]  # no --log-file: the temporary log must survive
    serve = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log_path = None
    try:
        banner = []  # serving, gRPC, HTTP, metrics, log, the models ready, Ctrl-C
        while not banner or banner[-1] and not banner[-1].startswith("Ctrl-C to stop"):
            banner.append(serve.stdout.readline())
        assert "serving" in banner[0], "".join(banner) + serve.stderr.read()
        log_path = Path(next(line for line in banner if line.strip().startswith("log")).split(None, 1)[1].strip())
        assert infer(f"127.0.0.1:{port}", VICTIM).shape == (1, 3, 8, 8, 8)
        # As in an OOM kill during a request: the request fails before brats-serve looks (it is paused meanwhile).
        # After such a request Triton 24.10 waits its whole exit timeout (30 s) on SIGTERM.
        serve.send_signal(signal.SIGSTOP)
        try:
            os.kill(stub_of(serve.pid, VICTIM), signal.SIGKILL)
            with pytest.raises(InferenceServerException, match="is not healthy"):
                infer(f"127.0.0.1:{port}", VICTIM)
        finally:
            serve.send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        out, err = serve.communicate(timeout=WAIT_S)
        exited_s = time.monotonic() - resumed_at
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(timeout=WAIT_S)
        if log_path is not None:
            kept = log_path.is_file() and "Started GRPCInferenceService" in log_path.read_text()
            shutil.rmtree(log_path.parent, ignore_errors=True)
    assert serve.returncode == EXIT_PARTIAL, err
    assert exited_s < STOP_BOUND_S, f"brats-serve took {exited_s:.1f} s to stop after it could look\n{err}"
    assert f"model '{VICTIM}' lost its backend process" in err and "killed by SIGKILL" in err, err
    assert f"'{BYSTANDER}'" not in err, err
    assert f"Server log kept: {log_path}" in err, err
    assert kept, f"{log_path} was removed"
    assert not port_in_use("127.0.0.1", port)


def test_a_request_names_the_model_and_stop_takes_seconds_without_a_prior_look(repository, tmp_path, caplog):
    """From Python, nobody polls: the client's request fails naming the model, and ``stop`` itself finds the dead
    stub (SIGTERM would wait Triton's 30 s exit timeout for the dead model), says so and keeps the log."""
    from brats_client import ServerOptions
    from brats_client.errors import ServerError
    from brats_client.transport import TritonTransport
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    server = TritonServer(TritonServerConfig(
        repository, grpc_port=0, http_port=0, metrics_port=0
    )).start()  # stop_timeout_s 30
    log_path = server.log_path
    try:
        assert {b.model for b in server.backend_processes()} == {VICTIM, BYSTANDER}
        os.kill(stub_of(server.pid, VICTIM), signal.SIGKILL)
        options = ServerOptions(url=server.grpc_url, model=VICTIM, shared_memory="off")
        with TritonTransport(options) as transport, pytest.raises(ServerError) as caught:
            transport.infer(np.ones((1, 4, 8, 8, 8), np.float32))
        message = str(caught.value)
        assert f"model '{VICTIM}' at {server.grpc_url}" in message and "is not healthy" in message, message
        assert infer(server.grpc_url, BYSTANDER).shape == (1, 3, 8, 8, 8)  # the other model still answers
        caplog.set_level(logging.INFO, logger="brats_serve.launcher")
        started = time.monotonic()
        server.stop()
        stop_s = time.monotonic() - started
    finally:
        server.stop()
        kept = log_path.is_file()
        shutil.rmtree(log_path.parent, ignore_errors=True)
    assert stop_s < STOP_BOUND_S, f"stop took {stop_s:.1f} s with a dead stub"
    assert [(d.backend.model, d.how) for d in server.dead_backends] == [(VICTIM, "killed by SIGKILL")]
    assert f"lost its backend process (instance {VICTIM}_0_0" in caplog.text
    assert kept and server.log_path == log_path, f"{log_path} was removed"
    assert f"its log is kept: {log_path}" in caplog.text, caplog.text

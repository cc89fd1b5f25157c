"""How ``TritonServer`` notices a dead backend process, without Triton: a fake ``tritonserver`` (a Python script that
answers ``/v2/health/ready`` and never waits for its children) starts one fake python backend stub per model, a
process whose executable is named ``triton_python_backend_stub`` and whose command line has the real stub's layout
(``<repo>/<model>/1/model.onnx ... <instance> ...``). The real thing, with ``tritonserver`` and gRPC:
``tests/integration/test_serve_dead_backend.py``.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
from brats_serve import install, launcher
from brats_serve.launcher import TritonServer
from brats_serve.processes import DeadBackend, describe_wait_status
from brats_serve.server_config import TritonServerConfig
from fake_tritonserver import SERVE_READY

WAIT_S = 20.0  # generous: only a hang reaches it

FAKE_SERVER = """\
#!{python}
import http.server, os, signal, subprocess, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
if {stubborn}:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as Triton waiting for a dead model's unload
repo = args["model-repository"]
stub = os.path.join(args["backend-directory"], "triton_python_backend_stub")
os.makedirs(args["backend-directory"], exist_ok=True)
os.symlink(os.path.realpath(sys.executable), stub)  # the process's name is the stub's; python runs the model file
stubs = [  # kept referenced and never waited for: a dead one stays a zombie, as under Triton
    subprocess.Popen([stub, os.path.join(repo, name, "1", "model.onnx"), "shm_region", "1048576", "1048576",
                      str(os.getpid()), "/backends/python", "336", name + "_0_0", "/backends/onnxruntime"])
    for name in sorted(os.listdir(repo))
]

""" + SERVE_READY

SLEEPS = "import time; time.sleep(120)\n"
EXITS_0 = "import time; time.sleep(1)\n"  # a stub that ends by itself, cleanly, after its start


def start(tmp_path: Path, monkeypatch, models: dict[str, str], stubborn: bool = False, **options) -> TritonServer:
    """A ``TritonServer`` on the fake ``tritonserver``, one fake stub per model running ``models[name]``."""
    script = tmp_path / "fake_tritonserver"
    script.write_text(FAKE_SERVER.format(python=sys.executable, stubborn=stubborn))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(install, "tritonserver_binary", lambda: script)
    monkeypatch.setattr(install, "build_backend_directory", lambda dest: Path(dest))
    repo = tmp_path / "repo"
    for name, code in models.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "onnxruntime"\n')
        (repo / name / "1" / "model.onnx").write_text(code)
    server = TritonServer(TritonServerConfig(
        repo, grpc_port=0, http_port=0, metrics_port=0, startup_timeout_s=WAIT_S, **options
    ))
    server.start()
    deadline = time.monotonic() + WAIT_S
    while len(server.backend_processes()) < len(models):
        assert time.monotonic() < deadline, f"fake stubs not seen: {server.backend_processes()}"
        time.sleep(0.05)
    return server


def pid_of(server: TritonServer, model: str) -> int:
    return next(b.pid for b in server.backend_processes() if b.model == model)


def until_dead(server: TritonServer) -> list[DeadBackend]:
    deadline = time.monotonic() + WAIT_S
    while not (dead := server.poll_backends()):
        assert time.monotonic() < deadline, "the dead stub was not noticed"
        time.sleep(0.05)
    return dead


def is_zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.parametrize(
    ("status", "text"),
    [(9, "killed by SIGKILL"), (0x100, "exited with code 1"), (0, "exited with code 0"),
     (11 | 0x80, "killed by SIGSEGV (core dumped)"), (6, "killed by SIGABRT")],
)
def test_describe_wait_status(status, text):
    assert describe_wait_status(status) == text


def test_the_backend_processes_are_read_from_the_stubs_command_lines(tmp_path, monkeypatch):
    server = start(tmp_path, monkeypatch, {"brats_onnx": SLEEPS, "brats_onnx_flip4": SLEEPS})
    try:
        found = server.backend_processes()
        assert [(b.model, b.instance) for b in found] == [("brats_onnx", "brats_onnx_0_0"),
                                                          ("brats_onnx_flip4", "brats_onnx_flip4_0_0")]
        assert server.poll_backends() == [] and server.dead_backends == []
    finally:
        server.stop()


def test_a_killed_stub_is_named_once_and_stop_is_quick_and_keeps_the_log(tmp_path, monkeypatch, caplog):
    """The fake server ignores SIGTERM, as Triton waiting for the dead model: stop waits 3 s, not 30."""
    server = start(tmp_path, monkeypatch, {"a": SLEEPS, "b": SLEEPS}, stubborn=True, stop_timeout_s=30)
    log_path = server.log_path
    try:
        os.kill(pid_of(server, "a"), signal.SIGKILL)
        caplog.set_level(logging.INFO, logger="brats_serve.launcher")
        dead = until_dead(server)
        assert [(d.backend.model, d.backend.instance, d.how) for d in dead] == [("a", "a_0_0", "killed by SIGKILL")]
        assert "model 'a' lost its backend process (instance a_0_0" in str(dead[0])
        assert "out-of-memory killer" in str(dead[0])
        assert server.poll_backends() == []  # reported once
        assert [b.model for b in server.backend_processes()] == ["b"]
        started = time.monotonic()
        server.stop()
        stop_s = time.monotonic() - started
    finally:
        server.stop()
        kept = log_path.is_file()
        if kept:
            log_path.unlink()
            log_path.parent.rmdir()
    assert stop_s < launcher.DEAD_BACKEND_STOP_TIMEOUT_S + launcher.GROUP_EXIT_TIMEOUT_S, stop_s
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [str(dead[0])]
    assert kept and f"its log is kept: {log_path}" in caplog.text
    assert "did not stop in" not in caplog.text  # an expected wait, not a warning


def test_a_stub_that_exits_cleanly_counts_once_it_stays_a_zombie(tmp_path, monkeypatch):
    """Triton waits for a stub it stops, so a zombie with status 0 may be one it is reaping: not dead at the first
    look, dead when still there at the next."""
    server = start(tmp_path, monkeypatch, {"a": EXITS_0, "b": SLEEPS})
    try:
        pid = pid_of(server, "a")
        deadline = time.monotonic() + WAIT_S
        while not is_zombie(pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert server.poll_backends() == []
        assert [(d.backend.model, d.how) for d in server.poll_backends()] == [("a", "exited with code 0")]
    finally:
        server.stop()
        if server.log_path is not None and server.log_path.is_file():  # kept: a backend died
            server.log_path.unlink()
            server.log_path.parent.rmdir()


def test_stop_finds_a_dead_stub_nobody_looked_for(tmp_path, monkeypatch):
    server = start(tmp_path, monkeypatch, {"a": SLEEPS}, stubborn=True, stop_timeout_s=30)
    pid = pid_of(server, "a")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT_S
    while not is_zombie(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    try:
        assert server.stop() == -signal.SIGKILL
    finally:
        stop_s = time.monotonic() - started
        if server.log_path is not None and server.log_path.is_file():
            server.log_path.unlink()
            server.log_path.parent.rmdir()
    assert stop_s < launcher.DEAD_BACKEND_STOP_TIMEOUT_S + launcher.GROUP_EXIT_TIMEOUT_S, stop_s
    assert [d.backend.model for d in server.dead_backends] == ["a"]

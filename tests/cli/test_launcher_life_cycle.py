"""The launcher's life cycle (start, ready, stop, kill, a killed parent) with a fake ``tritonserver``: a small
Python script answering ``/v2/health/ready`` stands in for the binary; real processes, no Triton."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from brats_serve import install, launcher, processes
from brats_serve.errors import ServeError
from brats_serve.launcher import TritonServer
from brats_serve.ports import port_in_use
from brats_serve.server_config import TritonServerConfig
from fake_tritonserver import SERVE_READY

# -- life cycle with a fake tritonserver -------------------------------------------------------------------------

FAKE_SERVER = """\
#!{python}
import http.server, signal, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
mode = "{mode}"
print("fake tritonserver", sys.argv[1:], flush=True)
if mode == "fail":
    print('E1 model_lifecycle.cc:642] "failed to load \\'m\\' version 1: Internal: boom"', flush=True)
    print("error: creating server: Internal - failed to load all models", flush=True)
    sys.exit(1)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "slow":
    time.sleep(60)
if mode == "stub":  # a child like a python backend stub, which watches nothing
    import subprocess
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])

""" + SERVE_READY


def _fake(tmp_path: Path, monkeypatch, mode: str) -> None:
    script = tmp_path / f"fake_tritonserver_{mode}"
    script.write_text(FAKE_SERVER.format(python=sys.executable, mode=mode))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(install, "tritonserver_binary", lambda: script)
    monkeypatch.setattr(install, "build_backend_directory", lambda dest: Path(dest))


def test_start_ready_stop_twice(repo, tmp_path, monkeypatch):
    _fake(tmp_path, monkeypatch, "ok")
    server = TritonServer(TritonServerConfig(repo, grpc_port=0, http_port=0, metrics_port=0, startup_timeout_s=20))
    with server:
        assert server.is_running()
        log_path = server.log_path
        assert log_path.is_file()
        assert len(set(server.ports.values())) == 3 and all(server.ports.values())
        assert port_in_use("127.0.0.1", server.ports["http"])
        workdir = log_path.parent
    assert not server.is_running()
    assert server.stop() is None
    assert server.stop() is None
    assert not workdir.exists()  # the work folder (backends, default log) is removed
    assert not port_in_use("127.0.0.1", server.ports["http"])


def test_stop_kills_a_server_that_ignores_sigterm(repo, tmp_path, monkeypatch):
    _fake(tmp_path, monkeypatch, "stubborn")
    server = TritonServer(TritonServerConfig(repo, grpc_port=0, http_port=0, metrics_port=0, stop_timeout_s=0.5))
    server.start()
    assert server.stop() == -9
    assert server.stop() is None


def test_exit_during_startup_raises_with_reason_and_tail(repo, tmp_path, monkeypatch):
    _fake(tmp_path, monkeypatch, "fail")
    server = TritonServer(TritonServerConfig(
        repo, grpc_port=0, http_port=0, metrics_port=0, log_path=tmp_path / "server.log"
    ))
    with pytest.raises(ServeError) as caught:
        server.start()
    message = str(caught.value)
    assert "exited with code 1" in message
    assert "model 'm' version 1: Internal: boom" in message
    assert "fake tritonserver" in message  # the log's tail
    assert not server.is_running()


@pytest.mark.parametrize("failure", ["backends", "exec"])
def test_failed_launch_leaves_no_work_folder(repo, tmp_path, monkeypatch, failure):
    _fake(tmp_path, monkeypatch, "ok")
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(launcher.tempfile, "tempdir", str(temp))
    if failure == "backends":
        def no_stub(dest):
            raise ServeError("no python backend stub for this Python")

        monkeypatch.setattr(install, "build_backend_directory", no_stub)
    else:
        monkeypatch.setattr(install, "tritonserver_binary", lambda: tmp_path / "not-there")
        monkeypatch.setattr(install, "build_backend_directory", lambda dest: Path(dest))
    server = TritonServer(TritonServerConfig(repo, grpc_port=0, http_port=0, metrics_port=0))
    with pytest.raises(ServeError, match="no python backend stub" if failure == "backends" else "cannot run"):
        server.start()
    assert list(temp.iterdir()) == []
    assert not server.is_running() and server.stop() is None


def test_startup_deadline_stops_the_process(repo, tmp_path, monkeypatch):
    _fake(tmp_path, monkeypatch, "slow")
    server = TritonServer(TritonServerConfig(
        repo, grpc_port=0, http_port=0, metrics_port=0, startup_timeout_s=0.5, stop_timeout_s=5
    ))
    with pytest.raises(ServeError, match=r"not ready after 0.5 s .*startup-timeout-s") as caught:
        server.start()
    assert not server.is_running()
    log_path = server.log_path  # kept after a failed start, for reading
    assert log_path is not None and log_path.is_file()
    assert str(log_path) in str(caught.value)
    shutil.rmtree(log_path.parent)


PARENT = """\
import sys, threading, time
from pathlib import Path
from brats_serve import install, launcher, server_config
install.tritonserver_binary = lambda: Path(sys.argv[2])
install.build_backend_directory = lambda dest: Path(dest)
config = server_config.TritonServerConfig(sys.argv[1], grpc_port=0, http_port=0, metrics_port=0, startup_timeout_s=20)
server = launcher.TritonServer(config)
starter = threading.Thread(target=server.start)  # a thread that ends at once: the server must outlive it
starter.start()
starter.join()
print(server.pid, server.ports["http"], flush=True)
time.sleep(120)
"""


def test_a_killed_parent_takes_the_server_and_its_children_along(repo, tmp_path):
    """SIGKILL to the process that started the server (as an OOM killer would): the supervisor, the server and
    the server's own child end within seconds, and the port is free; the thread that started it ending is not
    enough. PID 1 of these machines does not reap orphans, so this holds without any help from it."""
    import subprocess
    import time

    script = tmp_path / "fake_tritonserver_stub"
    script.write_text(FAKE_SERVER.format(python=sys.executable, mode="stub"))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(repo), str(script)], stdout=subprocess.PIPE,
                              text=True)
    try:
        pgid, http_port = map(int, parent.stdout.readline().split())
        time.sleep(0.5)
        members = processes.running_in_group(pgid)
        assert len(members) == 3, members  # supervisor, fake tritonserver, its child
        assert port_in_use("127.0.0.1", http_port)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while processes.running_in_group(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes.running_in_group(pgid) == [], "processes outlived their parent"
        assert not port_in_use("127.0.0.1", http_port)
    finally:
        parent.kill()
        parent.wait(timeout=10)
        for pid in processes.running_in_group(pgid) if "pgid" in locals() else []:
            os.kill(pid, 9)

"""The launcher and the stand-in backends' shared code, without a Triton server.

A fake ``tritonserver`` (a small Python script answering ``/v2/health/ready``) stands in for the binary where the
life cycle (start, ready, stop, kill) is under test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from brats_serve import launcher
from brats_serve.cli import main
from brats_serve.errors import ServeError
from brats_serve.launcher import (
    BACKENDS_SOURCE,
    STAND_IN_BACKENDS,
    TritonServer,
    build_backend_directory,
    check_repository,
    load_failures,
    port_in_use,
    server_environment,
)


def _load_common():
    spec = importlib.util.spec_from_file_location("brats_backend_common_test", BACKENDS_SOURCE / "_common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


common = _load_common()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository with one model folder, a config and a model file (enough for the pre-flight checks)."""
    (tmp_path / "repo" / "m" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "config.pbtxt").write_text('backend: "onnxruntime"\n')
    (tmp_path / "repo" / "m" / "1" / "model.onnx").write_bytes(b"")
    return tmp_path / "repo"


# -- backend directory -------------------------------------------------------------------------------------------


def test_backend_directory_holds_copies_not_links(tmp_path):
    dest = build_backend_directory(tmp_path / "backends")
    python_files = ["libtriton_python.so", "triton_python_backend_utils.py", "triton_python_backend_stub"]
    for name in python_files:
        path = dest / "python" / name
        assert path.is_file() and not path.is_symlink(), path
    assert os.access(dest / "python" / "triton_python_backend_stub", os.X_OK)
    source_stub = (
        launcher.pytriton_root() / "tritonserver" / "python_backend_stubs"
        / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
    )
    assert (dest / "python" / "triton_python_backend_stub").read_bytes() == source_stub.read_bytes()
    for name in STAND_IN_BACKENDS:
        for file in ("model.py", "_common.py"):
            path = dest / name / file
            assert path.is_file() and not path.is_symlink(), path
        assert (dest / name / "model.py").read_bytes() == (BACKENDS_SOURCE / name / "model.py").read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == sorted(["python", *STAND_IN_BACKENDS])


def test_backend_directory_rebuild_replaces_files(tmp_path):
    dest = build_backend_directory(tmp_path / "b")
    (dest / "onnxruntime" / "model.py").write_text("stale")
    build_backend_directory(dest)
    source = BACKENDS_SOURCE / "onnxruntime" / "model.py"
    assert (dest / "onnxruntime" / "model.py").read_bytes() == source.read_bytes()


def test_backend_directory_unknown_python(tmp_path):
    with pytest.raises(ServeError, match=r"no python backend stub for Python 2\.7 .*3\.11"):
        build_backend_directory(tmp_path / "b", python_version="2.7")


def test_binary_missing_says_to_install_the_serve_extra(monkeypatch):
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ServeError, match=r"install the serve extra"):
        launcher.tritonserver_binary()


def test_environment_points_the_stub_at_this_interpreter():
    env = server_environment({"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    libs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert str(launcher.pytriton_root().parent / "nvidia_pytriton.libs") in libs
    assert libs[-1] == "/opt/lib"


# -- command line and pre-flight checks --------------------------------------------------------------------------


def test_command_binds_loopback_by_default(repo, tmp_path):
    cmd = TritonServer(repo).command(tmp_path / "b")
    assert Path(cmd[0]).name == "tritonserver"
    for flag in ("--grpc-address", "--http-address", "--metrics-address"):
        assert f"{flag}=127.0.0.1" in cmd
    assert {"--grpc-port=8001", "--http-port=8000", "--metrics-port=8002"} <= set(cmd)
    assert "--model-control-mode=none" in cmd
    assert not any(a.startswith("--load-model") for a in cmd)
    assert f"--model-repository={repo.resolve()}" in cmd
    assert f"--backend-directory={(tmp_path / 'b').resolve()}" in cmd


def test_command_explicit_models_config_name_and_extra_args(repo, tmp_path):
    server = TritonServer(
        repo, host="0.0.0.0", models=["a", "b"], model_config_name="gpu", extra_args=["--log-verbose=1"]
    )
    cmd = server.command(tmp_path)
    assert "--grpc-address=0.0.0.0" in cmd
    assert "--model-control-mode=explicit" in cmd
    assert cmd.count("--load-model=a") == 1 and cmd.count("--load-model=b") == 1
    assert "--model-config-name=gpu" in cmd
    assert cmd[-1] == "--log-verbose=1"


def test_urls():
    server = TritonServer("r", grpc_port=1, http_port=2, metrics_port=3)
    assert (server.grpc_url, server.http_url, server.metrics_url) == ("127.0.0.1:1", "127.0.0.1:2", "http://127.0.0.1:3")
    assert server.log_path is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"grpc_port": 70000}, "--grpc-port"), ({"startup_timeout_s": 0}, "startup_timeout_s")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TritonServer("r", **kwargs)


def test_check_repository(tmp_path, repo):
    assert check_repository(repo) == ["m"]
    with pytest.raises(ServeError, match="does not exist"):
        check_repository(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ServeError, match="is not a directory"):
        check_repository(tmp_path / "file")
    (tmp_path / "empty" / "no_config" / "1").mkdir(parents=True)
    with pytest.raises(ServeError, match=r"holds no model \(no <model>/config.pbtxt\)"):
        check_repository(tmp_path / "empty")
    with pytest.raises(ServeError, match=r"\['x'\] not in repository .* holds \['m'\]"):
        check_repository(repo, ["m", "x"])


def test_port_in_use():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


def test_start_refuses_a_busy_port_and_names_the_flag(repo):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = TritonServer(repo, grpc_port=port, http_port=0, metrics_port=0)
        with pytest.raises(ServeError, match=rf"port {port} on 127.0.0.1 \(grpc\) is already in use; .*--grpc-port"):
            server.start()
    assert not server.is_running()


def test_start_refuses_equal_ports(repo, monkeypatch):
    monkeypatch.setattr(launcher, "tritonserver_binary", lambda: Path("/bin/true"))
    with pytest.raises(ServeError, match="the ports must differ"):
        TritonServer(repo, grpc_port=9000, http_port=9000).start()


def test_load_failures_quote_tritons_reason(tmp_path):
    log = tmp_path / "log"
    log.write_text(
        'E1127 06:09:17.552258 8245 server.cc:241] "CudaDriverHelper has not been initialized."\n'
        "E1127 06:09:17.552258 8245 model_lifecycle.cc:642] \"failed to load 'brats_onnx' version 1: Internal: "
        "FileNotFoundError: model file /r/brats_onnx/1/model.onnx not found\\n\\nAt:\\n  x.py(1): f\\n\"\n"
        "I1127 06:09:17.552272 8245 model_lifecycle.cc:777] \"failed to load 'brats_onnx'\"\n"
        "error: creating server: Internal - failed to load all models\n"
    )
    assert load_failures(log) == [
        "model 'brats_onnx' version 1: Internal: FileNotFoundError: model file /r/brats_onnx/1/model.onnx not found",
        "error: creating server: Internal - failed to load all models",
    ]
    assert load_failures(tmp_path / "missing") == []


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

class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *a):
        pass

http.server.HTTPServer((args["http-address"], int(args["http-port"])), Ready).serve_forever()
"""


def _fake(tmp_path: Path, monkeypatch, mode: str) -> None:
    script = tmp_path / f"fake_tritonserver_{mode}"
    script.write_text(FAKE_SERVER.format(python=sys.executable, mode=mode))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(launcher, "tritonserver_binary", lambda: script)
    monkeypatch.setattr(launcher, "build_backend_directory", lambda dest: Path(dest))


def test_start_ready_stop_twice(repo, tmp_path, monkeypatch):
    _fake(tmp_path, monkeypatch, "ok")
    server = TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0, startup_timeout_s=20)
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
    server = TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0, stop_timeout_s=0.5)
    server.start()
    assert server.stop() == -9
    assert server.stop() is None


def test_exit_during_startup_raises_with_reason_and_tail(repo, tmp_path, monkeypatch):
    _fake(tmp_path, monkeypatch, "fail")
    server = TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0, log_path=tmp_path / "server.log")
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

        monkeypatch.setattr(launcher, "build_backend_directory", no_stub)
    else:
        monkeypatch.setattr(launcher, "tritonserver_binary", lambda: tmp_path / "not-there")
        monkeypatch.setattr(launcher, "build_backend_directory", lambda dest: Path(dest))
    server = TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0)
    with pytest.raises(ServeError, match="no python backend stub" if failure == "backends" else "cannot run"):
        server.start()
    assert list(temp.iterdir()) == []
    assert not server.is_running() and server.stop() is None


def test_startup_deadline_stops_the_process(repo, tmp_path, monkeypatch):
    _fake(tmp_path, monkeypatch, "slow")
    server = TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0, startup_timeout_s=0.5, stop_timeout_s=5)
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
from brats_serve import launcher
launcher.tritonserver_binary = lambda: Path(sys.argv[2])
launcher.build_backend_directory = lambda dest: Path(dest)
server = launcher.TritonServer(sys.argv[1], grpc_port=0, http_port=0, metrics_port=0, startup_timeout_s=20)
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
        members = launcher.running_in_group(pgid)
        assert len(members) == 3, members  # supervisor, fake tritonserver, its child
        assert port_in_use("127.0.0.1", http_port)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while launcher.running_in_group(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert launcher.running_in_group(pgid) == [], "processes outlived their parent"
        assert not port_in_use("127.0.0.1", http_port)
    finally:
        parent.kill()
        parent.wait(timeout=10)
        for pid in launcher.running_in_group(pgid) if "pgid" in locals() else []:
            os.kill(pid, 9)


# -- CLI without a server ----------------------------------------------------------------------------------------


def test_cli_missing_repository_exit_code(tmp_path, capsys):
    assert main(["--repository", str(tmp_path / "nope"), "--grpc-port", "0", "--http-port", "0",
                 "--metrics-port", "0"]) == 3
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [[], ["--repository", "r", "--grpc-port", "x"], ["--repository", "r", "--models", ","]]
)
def test_cli_usage_errors(argv):
    assert main(argv) == 2


def test_cli_help_documents_exit_codes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes" in out and "after -- go to tritonserver" in out


# -- the stand-ins' shared code ------------------------------------------------------------------------------------

CONFIG = {
    "name": "m",
    "max_batch_size": 8,
    "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": ["4", "-1", "-1", "-1"]}],
    "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": ["3", "-1", "-1", "-1"]}],
    "parameters": {"intra_op_thread_count": {"string_value": "2"}, "bad": {"string_value": "x"}},
    "default_model_filename": "",
}


def _spec(**changes):
    return common.parse_config(json.loads(json.dumps({**CONFIG, **changes})), "model.onnx")


def _first_three(x: np.ndarray) -> np.ndarray:
    """A predictor like the network's shape contract: 4 channels in, 3 out, times two."""
    return 2 * x[:, :3]


def test_parse_config():
    spec = _spec()
    assert spec.input == common.TensorSpec("INPUT__0", np.float32, (4, -1, -1, -1))
    assert spec.output.dims == (3, -1, -1, -1)
    assert spec.max_batch_size == 8 and spec.model_filename == "model.onnx"
    assert common.int_parameter(spec, "intra_op_thread_count") == 2
    assert common.int_parameter(spec, "absent") is None
    with pytest.raises(ValueError, match="'bad' must be an integer, got 'x'"):
        common.int_parameter(spec, "bad")
    assert _spec(default_model_filename="other.onnx").model_filename == "other.onnx"
    with pytest.raises(ValueError, match="exactly one input"):
        _spec(input=[])
    with pytest.raises(ValueError, match="TYPE_INT8"):
        _spec(output=[{"name": "o", "data_type": "TYPE_INT8", "dims": ["1"]}])


@pytest.mark.parametrize(
    ("shape", "dtype", "problem"),
    [
        ((1, 4, 16, 24, 8), np.float32, None),
        ((1, 4, 16, 24, 8), np.float64, "dtype must be float32"),
        ((4, 16, 16, 16), np.float32, "expected 5 dimensions"),
        ((1, 3, 16, 16, 16), np.float32, "dimension 0 must be 4"),
        ((1, 4, 30, 16, 16), np.float32, "multiples of 8, got [30, 16, 16]"),
        ((9, 4, 8, 8, 8), np.float32, "batch size must be in [1, 8], got 9"),
    ],
)
def test_check_request(shape, dtype, problem):
    message = common.check_request(np.zeros(shape, dtype), _spec())
    if problem is None:
        assert message is None
    else:
        assert problem in message and "INPUT__0" in message


def test_run_batched_groups_by_shape_and_splits_in_order():
    spec = _spec()
    rng = np.random.default_rng(0)
    arrays = [
        rng.random((1, 4, 8, 8, 8), dtype=np.float32),
        rng.random((2, 4, 16, 8, 8), dtype=np.float32),
        rng.random((1, 4, 30, 8, 8), dtype=np.float32),  # bad
        rng.random((3, 4, 8, 8, 8), dtype=np.float32),
    ]
    calls = []

    def predict(x):
        calls.append(x.shape)
        return _first_three(x)

    results = common.run_batched(arrays, spec, predict)
    assert sorted(calls) == [(2, 4, 16, 8, 8), (4, 4, 8, 8, 8)]  # two runs: one per spatial shape
    for i in (0, 1, 3):
        np.testing.assert_array_equal(results[i], _first_three(arrays[i]))
        assert results[i].flags.c_contiguous and results[i].dtype == np.float32
    assert isinstance(results[2], common.Failure) and results[2].invalid


def test_run_batched_single_request_is_not_copied():
    x = np.ones((1, 4, 8, 8, 8), np.float32)
    seen = []
    common.run_batched([x], _spec(), lambda b: (seen.append(b), _first_three(b))[1])
    assert seen[0] is x


def test_run_batched_failure_stays_in_its_group():
    spec = _spec()
    good = np.ones((1, 4, 8, 8, 8), np.float32)
    other = np.ones((1, 4, 16, 16, 16), np.float32)

    def predict(x):
        if x.shape[2] == 16:
            raise RuntimeError("out of memory")
        return _first_three(x)

    results = common.run_batched([good, other, good], spec, predict)
    np.testing.assert_array_equal(results[0], _first_three(good))
    np.testing.assert_array_equal(results[2], _first_three(good))
    assert isinstance(results[1], common.Failure) and not results[1].invalid
    assert "out of memory" in results[1].message


def test_run_batched_wrong_output_batch():
    results = common.run_batched([np.ones((2, 4, 8, 8, 8), np.float32)], _spec(), lambda x: x[:1])
    assert isinstance(results[0], common.Failure) and "for a batch of 2" in results[0].message


def test_run_batched_without_batching_runs_each_alone():
    spec = _spec(max_batch_size=0, input=[{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": ["-1", "4", "-1",
                                                                                                    "-1", "-1"]}])
    arrays = [np.ones((1, 4, 8, 8, 8), np.float32), np.ones((1, 4, 8, 8, 8), np.float32)]
    calls = []
    results = common.run_batched(arrays, spec, lambda x: (calls.append(x.shape), _first_three(x))[1])
    assert len(calls) == 2 and all(r.shape == (1, 3, 8, 8, 8) for r in results)

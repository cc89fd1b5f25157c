"""The launcher's pure parts and the stand-in backends' shared code, without a Triton server or any process
(the life cycle with a fake ``tritonserver``: tests/cli/test_launcher_life_cycle.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from brats_serve import install
from brats_serve.cli import main
from brats_serve.errors import ServeError
from brats_serve.install import BACKENDS_SOURCE, STAND_IN_BACKENDS, build_backend_directory, server_environment
from brats_serve.launcher import TritonServer
from brats_serve.ports import port_in_use
from brats_serve.readiness import load_failures
from brats_serve.repository_check import check_repository
from brats_serve.server_config import TritonServerConfig


def _load_common():
    spec = importlib.util.spec_from_file_location("brats_backend_common_test", BACKENDS_SOURCE / "_common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


common = _load_common()


# -- backend directory -------------------------------------------------------------------------------------------


def test_backend_directory_holds_copies_not_links(tmp_path):
    dest = build_backend_directory(tmp_path / "backends")
    python_files = ["libtriton_python.so", "triton_python_backend_utils.py", "triton_python_backend_stub"]
    for name in python_files:
        path = dest / "python" / name
        assert path.is_file() and not path.is_symlink(), path
    assert os.access(dest / "python" / "triton_python_backend_stub", os.X_OK)
    source_stub = (
        install.pytriton_root() / "tritonserver" / "python_backend_stubs"
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
    monkeypatch.setattr(install.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ServeError, match=r"install the serve extra"):
        install.tritonserver_binary()


def test_environment_points_the_stub_at_this_interpreter():
    env = server_environment({"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    libs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert str(install.pytriton_root().parent / "nvidia_pytriton.libs") in libs
    assert libs[-1] == "/opt/lib"


# -- command line and pre-flight checks --------------------------------------------------------------------------


def test_command_binds_loopback_by_default(repo, tmp_path):
    cmd = TritonServer(TritonServerConfig(repo)).command(tmp_path / "b")
    assert Path(cmd[0]).name == "tritonserver"
    for flag in ("--grpc-address", "--http-address", "--metrics-address"):
        assert f"{flag}=127.0.0.1" in cmd
    assert {"--grpc-port=8001", "--http-port=8000", "--metrics-port=8002"} <= set(cmd)
    assert "--model-control-mode=none" in cmd
    assert not any(a.startswith("--load-model") for a in cmd)
    assert f"--model-repository={repo.resolve()}" in cmd
    assert f"--backend-directory={(tmp_path / 'b').resolve()}" in cmd


def test_command_explicit_models_config_name_and_extra_args(repo, tmp_path):
    server = TritonServer(TritonServerConfig(
        repo, host="0.0.0.0", models=["a", "b"], model_config_name="gpu", extra_args=["--log-verbose=1"]
    ))
    cmd = server.command(tmp_path)
    assert "--grpc-address=0.0.0.0" in cmd
    assert "--model-control-mode=explicit" in cmd
    assert cmd.count("--load-model=a") == 1 and cmd.count("--load-model=b") == 1
    assert "--model-config-name=gpu" in cmd
    assert cmd[-1] == "--log-verbose=1"


def test_urls():
    server = TritonServer(TritonServerConfig("r", grpc_port=1, http_port=2, metrics_port=3))
    assert (server.grpc_url, server.http_url, server.metrics_url) == ("127.0.0.1:1", "127.0.0.1:2", "http://127.0.0.1:3")
    assert server.log_path is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"grpc_port": 70000}, "--grpc-port"), ({"startup_timeout_s": 0}, "startup_timeout_s"),
     ({"stop_timeout_s": -1}, "stop_timeout_s"), ({"models": []}, "at least one model"), ({"host": ""}, "host")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TritonServerConfig("r", **kwargs)


def test_config_is_a_checked_value_and_its_arguments_are_data(tmp_path):
    config = TritonServerConfig(str(tmp_path), models=["a"], log_path="s.log", extra_args=["--x=1"], host="::1")
    assert (config.repository, config.models, config.log_path, config.extra_args) == (
        tmp_path, ("a",), Path("s.log"), ("--x=1",))
    assert hash(config) == hash(TritonServerConfig(tmp_path, models=("a",), log_path=Path("s.log"),
                                                   extra_args=("--x=1",), host="::1"))
    chosen = config.with_ports({"grpc": 1, "http": 2, "metrics": 3})
    assert chosen.ports == {"grpc": 1, "http": 2, "metrics": 3} and config.ports["grpc"] == 8001
    assert chosen.url("grpc") == "[::1]:1"
    args = chosen.to_args_list(backend_directory=tmp_path / "b", cache_directory=tmp_path / "c")
    assert args[:3] == [f"--model-repository={tmp_path}", f"--backend-directory={tmp_path / 'b'}",
                        f"--cache-directory={tmp_path / 'c'}"]
    assert "--grpc-address=::1" in args and "--metrics-port=3" in args
    assert args[-3:] == ["--model-control-mode=explicit", "--load-model=a", "--x=1"]
    with pytest.raises(ValueError, match="--http-port"):
        config.with_ports({"http": -1})


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
        server = TritonServer(TritonServerConfig(repo, grpc_port=port, http_port=0, metrics_port=0))
        with pytest.raises(ServeError, match=rf"port {port} on 127.0.0.1 \(grpc\) is already in use; .*--grpc-port"):
            server.start()
    assert not server.is_running()


def test_start_refuses_equal_ports(repo, monkeypatch):
    monkeypatch.setattr(install, "tritonserver_binary", lambda: Path("/bin/true"))
    with pytest.raises(ServeError, match="the ports must differ"):
        TritonServer(TritonServerConfig(repo, grpc_port=9000, http_port=9000)).start()


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

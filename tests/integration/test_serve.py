"""The real ``tritonserver`` with the Python stand-in backends: answers, batching, bad requests, statistics,
metrics, start-up errors and a clean stop."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient  # noqa: E402
from brats_serve.errors import ServeError
from brats_serve.launcher import TritonServer
from brats_serve.server_config import TritonServerConfig

pytestmark = pytest.mark.integration

MODELS = ("brats_onnx", "brats_torchscript", "brats_openvino")  # conftest.MODELS; parametrize needs it here
ATOL = 1e-4
COMMITTED = Path(__file__).resolve().parents[2] / "model_repository"  # config.pbtxt files only


@pytest.fixture(scope="module")
def infer(serve_helpers):
    return serve_helpers.infer


@pytest.fixture(scope="module")
def model_stats(serve_helpers):
    return serve_helpers.model_stats


@pytest.fixture(scope="module")
def eager(serve_helpers):
    return serve_helpers.eager


@pytest.fixture(scope="module")
def tiles(eager_model, eager) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three random 1x4x64^3 tiles and their eager outputs."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(3):
        x = rng.standard_normal((1, 4, 64, 64, 64), dtype=np.float32)
        out.append((x, eager(eager_model, x)))
    return out


def _stats_after(model_stats, client, model: str, before: dict, inferences: int, timeout_s: float = 10.0) -> dict:
    """Triton's counters once ``inferences`` more have been recorded: the backend reports statistics just after it
    sends the responses, so a client that has all its answers can still read the old counters for a moment."""
    deadline = time.monotonic() + timeout_s
    while model_stats(client, model)["inference_count"] - before["inference_count"] < inferences:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.2)  # the execution (batch) counters follow the per-request ones
    return model_stats(client, model)


def _status(error: grpcclient.InferenceServerException) -> str:
    return str(error.status())


@pytest.mark.parametrize("model", MODELS)
def test_inference_matches_eager_pytorch(grpc_client, infer, tiles, model):
    x, expected = tiles[0]
    got = infer(grpc_client, model, x)
    assert got.dtype == np.float32 and got.shape == (1, 3, 64, 64, 64)
    diff = float(np.abs(got - expected).max())
    assert diff <= ATOL, f"{model}: max |served - eager| = {diff:.2e} > {ATOL}"


@pytest.mark.parametrize("model", MODELS)
def test_concurrent_requests_are_answered_and_batched(grpc_client, infer, model_stats, tiles, model):
    before = model_stats(grpc_client, model)
    with ThreadPoolExecutor(len(tiles)) as pool:
        futures = [pool.submit(infer, grpc_client, model, x) for x, _ in tiles]
        results = [f.result(timeout=120) for f in futures]
    for (_, expected), got in zip(tiles, results, strict=True):
        assert float(np.abs(got - expected).max()) <= ATOL  # each answer belongs to its own request
    after = _stats_after(model_stats, grpc_client, model, before, len(tiles))
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == len(tiles)
    config = grpc_client.get_model_config(model, as_json=True)["config"]
    if "dynamic_batching" in config and config["max_batch_size"] >= 2:
        # The first request occupies the single instance (~0.1-1 s for 64^3 on CPU); the others arrive within
        # milliseconds, wait in the dynamic batcher's queue and reach execute() together.
        assert executions < inferences, f"{model}: {inferences} requests ran in {executions} executions"
        assert max(after["batch_sizes"]) >= 2
    else:  # e.g. brats_openvino: max_batch_size 1, no dynamic batcher: one request per execution
        assert executions == inferences


@pytest.mark.parametrize("model", MODELS)
def test_bad_requests_get_errors_and_the_server_keeps_serving(grpc_client, infer, eager, eager_model, model):
    rng = np.random.default_rng(1)
    three_channels = rng.standard_normal((1, 3, 32, 32, 32), dtype=np.float32)
    with pytest.raises(grpcclient.InferenceServerException) as caught:
        infer(grpc_client, model, three_channels)
    assert _status(caught.value) == "StatusCode.INVALID_ARGUMENT"  # Triton checks dims against config.pbtxt

    not_multiple_of_8 = rng.standard_normal((1, 4, 30, 32, 32), dtype=np.float32)
    with pytest.raises(grpcclient.InferenceServerException) as caught:
        infer(grpc_client, model, not_multiple_of_8)
    assert _status(caught.value) == "StatusCode.INVALID_ARGUMENT"  # the stand-in's own check
    assert "multiples of 8" in caught.value.message() and "30" in caught.value.message()

    good = rng.standard_normal((1, 4, 32, 32, 32), dtype=np.float32)
    with ThreadPoolExecutor(2) as pool:  # a bad and a good request in flight together
        bad_future = pool.submit(infer, grpc_client, model, not_multiple_of_8)
        good_future = pool.submit(infer, grpc_client, model, good)
        with pytest.raises(grpcclient.InferenceServerException):
            bad_future.result(timeout=60)
        assert float(np.abs(good_future.result(timeout=60) - eager(eager_model, good)).max()) <= ATOL
    assert float(np.abs(infer(grpc_client, model, good) - eager(eager_model, good)).max()) <= ATOL


def test_statistics_count_the_requests(grpc_client, infer, model_stats):
    model = "brats_onnx"
    before = model_stats(grpc_client, model)
    x = np.random.default_rng(2).standard_normal((2, 4, 16, 16, 16), dtype=np.float32)  # N = 2 counts twice
    for _ in range(3):
        infer(grpc_client, model, x)
    after = _stats_after(model_stats, grpc_client, model, before, 6)
    assert after["inference_count"] - before["inference_count"] == 6
    assert after["success"] - before["success"] == 3
    assert 1 <= after["execution_count"] - before["execution_count"] <= 3


def test_model_config_as_served(grpc_client, serve_helpers):
    for model in MODELS:
        config = grpc_client.get_model_config(model, as_json=True)["config"]
        assert config["max_batch_size"] > 0
        assert [i["name"] for i in config["input"]] == [serve_helpers.INPUT]
        assert grpc_client.is_model_ready(model)


def test_metrics_endpoint_answers(triton_server, grpc_client, infer, tiles):
    infer(grpc_client, "brats_onnx", tiles[0][0][:, :, :16, :16, :16])
    with urllib.request.urlopen(f"{triton_server.metrics_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "nv_inference_request_success" in text
    assert 'model="brats_onnx"' in text


def _listening(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port``, as the kernel lists them (/proc/net/tcp, tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_server_listens_on_loopback_only(triton_server):
    """The bound sockets themselves, not the URLs: each of the three ports listens on 127.0.0.1 alone."""
    # 127.0.0.1 as /proc/net/tcp writes it (little-endian hex), and as tcp6 writes ::ffff:127.0.0.1 (gRPC's
    # socket); a server bound to all addresses shows 00000000 or 32 zeros instead
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
    for kind, port in triton_server.ports.items():
        bound = _listening(port)
        assert bound and bound <= loopback, f"{kind} port {port} listens on {bound}"


# -- a server of its own: explicit model control, a named config, stop -----------------------------------------


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server restarting here would
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def test_explicit_models_named_config_and_stop_frees_ports(model_repository, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "brats_onnx", repo / "brats_onnx")
    shutil.copytree(model_repository / "brats_openvino", repo / "brats_openvino")  # present, not loaded
    (repo / "brats_onnx" / "configs").mkdir(exist_ok=True)  # brats-export writes configs/gpu.pbtxt
    config = (repo / "brats_onnx" / "config.pbtxt").read_text()
    (repo / "brats_onnx" / "configs" / "small.pbtxt").write_text(
        config.replace("max_batch_size: 4", "max_batch_size: 2").replace("  preferred_batch_size: 4\n", "")
    )
    server = TritonServer(TritonServerConfig(
        repo, grpc_port=0, http_port=0, metrics_port=0, models=["brats_onnx"], model_config_name="small",
        log_path=tmp_path / "server.log"
    ))
    assert server.pid is None
    with server:
        assert os.getpgid(server.pid) == server.pid  # its own process group, which stop() ends
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.get_model_config("brats_onnx", as_json=True)["config"]["max_batch_size"] == 2
        assert not client.is_model_ready("brats_openvino")
        ports = server.ports
        assert all(not _bindable(p) for p in ports.values())
        client.close()
    assert server.stop() is None  # the second stop does nothing
    assert not server.is_running()
    assert all(_bindable(p) for p in ports.values()), f"ports still taken after stop: {ports}"
    assert "successfully unloaded 'brats_onnx'" in (tmp_path / "server.log").read_text()


def test_openvino_bf16_variant_loads_and_answers(model_repository, tmp_path, eager, eager_model):
    """``--model-config-name bf16``: brats_openvino takes configs/bf16.pbtxt (HINT_BF16), brats_onnx has no such
    variant and keeps its config.pbtxt."""
    tile = np.random.default_rng(5).standard_normal((1, 4, 32, 32, 32)).astype(np.float32)
    with TritonServer(TritonServerConfig(
        model_repository, grpc_port=0, http_port=0, metrics_port=0, models=["brats_openvino", "brats_onnx"],
        model_config_name="bf16", log_path=tmp_path / "server.log"
    )) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        params = client.get_model_config("brats_openvino", as_json=True)["config"]["parameters"]
        assert params["HINT_BF16"]["string_value"] == "YES"
        assert "HINT_BF16" not in client.get_model_config("brats_onnx", as_json=True)["config"]["parameters"]
        inp = grpcclient.InferInput("INPUT__0", list(tile.shape), "FP32")
        inp.set_data_from_numpy(tile)
        out = client.infer("brats_openvino", [inp]).as_numpy("OUTPUT__0")
        client.close()
    from brats_export.parity import openvino_host_precision

    diff = float(np.abs(out - eager(eager_model, tile)).max())
    if openvino_host_precision() == "bf16":  # the CPU computes bf16: about 5e-3 from PyTorch, not f32's 1e-6
        assert ATOL < diff < 5e-2, diff
    else:  # OpenVINO ignores the hint without bf16 hardware
        assert diff <= ATOL, diff


# -- start-up errors ---------------------------------------------------------------------------------------------


def test_missing_repository(tmp_path):
    with pytest.raises(ServeError, match="does not exist"):
        TritonServer(TritonServerConfig(tmp_path / "nope", grpc_port=0, http_port=0, metrics_port=0)).start()


def test_empty_repository(tmp_path):
    with pytest.raises(ServeError, match="holds no model"):
        TritonServer(TritonServerConfig(tmp_path, grpc_port=0, http_port=0, metrics_port=0)).start()


def test_port_in_use(model_repository):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeError, match=rf"port {port} .*in use.*--http-port"):
            TritonServer(TritonServerConfig(model_repository, grpc_port=0, http_port=port, metrics_port=0)).start()


def test_model_file_missing_reports_tritons_reason(tmp_path):
    """A version folder with the wrong file (an empty one is refused before Triton starts: test_no_model_files)."""
    repo = tmp_path / "repo"
    (repo / "brats_torchscript" / "1").mkdir(parents=True)
    shutil.copy(COMMITTED / "brats_torchscript" / "config.pbtxt", repo / "brats_torchscript")
    (repo / "brats_torchscript" / "1" / "model.onnx").write_bytes(b"not the TorchScript file")
    server = TritonServer(TritonServerConfig(
        repo, grpc_port=0, http_port=0, metrics_port=0, log_path=tmp_path / "server.log"
    ))
    with pytest.raises(ServeError) as caught:
        server.start()
    message = str(caught.value)
    assert "model 'brats_torchscript' version 1" in message
    assert "model.pt not found" in message
    assert "last lines of" in message
    assert not server.is_running()


def test_no_model_files_is_refused_before_triton_starts(tmp_path):
    repo = tmp_path / "repo"
    (repo / "brats_onnx" / "1").mkdir(parents=True)
    shutil.copy(COMMITTED / "brats_onnx" / "config.pbtxt", repo / "brats_onnx")
    server = TritonServer(TritonServerConfig(repo, models=["brats_onnx"], grpc_port=0, http_port=0, metrics_port=0))
    with pytest.raises(ServeError, match=rf"no model files for brats_onnx in model repository {repo}: .*"
                                         rf"run brats-export --checkpoint CKPT --repository {repo}"):
        server.start()
    assert server.pid is None and server.log_path is None  # nothing was started


def test_models_without_files_are_left_out_and_named_once(tmp_path, caplog):
    """Without --models, a repository where only some models have files (a config-only brats_onnx beside the
    instant model): those with files are served, the others named in one warning; a real server, real gRPC."""
    from brats_serve import instant

    repo = instant.write_repository(tmp_path / "repo")
    (repo / "brats_onnx" / "1").mkdir(parents=True)  # a config and an empty version folder, as in a fresh clone
    (repo / "brats_onnx" / "config.pbtxt").write_text('name: "brats_onnx"\nplatform: "onnxruntime_onnx"\n')
    caplog.set_level(logging.WARNING, logger="brats_serve")
    with TritonServer(TritonServerConfig(repo, grpc_port=0, http_port=0, metrics_port=0)) as server:
        assert server.served_models == [instant.NAME]
        client = grpcclient.InferenceServerClient(server.grpc_url)
        x = np.ones((1, 4, 8, 8, 8), np.float32)
        tensor = grpcclient.InferInput("INPUT__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        assert client.infer(instant.NAME, [tensor]).as_numpy("OUTPUT__0").shape == (1, 3, 8, 8, 8)
        assert not client.is_model_ready("brats_onnx")
        client.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("not serving brats_onnx: no model files"), warnings
    assert f"run brats-export --checkpoint CKPT --repository {repo}" in warnings[0]


def test_startup_deadline(model_repository, tmp_path):
    server = TritonServer(TritonServerConfig(
        model_repository, grpc_port=0, http_port=0, metrics_port=0, models=["brats_torchscript"],
        startup_timeout_s=0.05, log_path=tmp_path / "server.log"
    ))
    with pytest.raises(ServeError, match="not ready after 0.05 s"):
        server.start()
    assert not server.is_running()
    assert all(_bindable(p) for p in server.ports.values())


# -- the CLI, as a user runs it ----------------------------------------------------------------------------------


def test_cli_serves_until_sigterm(model_repository, tmp_path):
    from brats_serve.ports import free_port

    port = free_port()
    log_file = tmp_path / "server.log"
    cmd = [
        sys.executable, "-m", "brats_serve.cli", "--repository", str(model_repository), "--models", "brats_openvino",
        "--grpc-port", str(port), "--http-port", "0", "--metrics-port", "0", "--log-file", str(log_file),
        "--", "--log-verbose=0",
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        banner = []  # serving, gRPC, HTTP, metrics, log, the models ready, Ctrl-C
        while not banner or banner[-1] and not banner[-1].startswith("Ctrl-C to stop"):
            banner.append(process.stdout.readline())
        assert "serving" in banner[0], "".join(banner) + process.stderr.read()
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while not client.is_server_ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.is_model_ready("brats_openvino")
        client.close()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert f"gRPC     127.0.0.1:{port}" in "".join(banner) + out
    assert [line.split()[0] for line in banner[6:-1]] == ["brats_openvino"], banner  # the models ready
    assert "SIGTERM received" in err
    assert _bindable(port)
    assert Path(log_file).is_file()

"""Shared fixtures for tests against a real ``tritonserver``: one exported repository and one running server per
session (starting three models takes seconds; every test that only reads from the server should share it).

    def test_something(grpc_client, serve_helpers):
        out = serve_helpers.infer(grpc_client, "brats_onnx", x)

Fixtures: ``checkpoint`` (the demo checkpoint), ``eager_model`` (that network,
eval), ``model_repository`` (exported by ``brats_export``), ``triton_server`` (a started ``TritonServer`` on free
loopback ports), ``grpc_client`` (a ``tritonclient.grpc`` client of it), ``serve_helpers`` (``MODELS``, ``infer``,
``eager``, ``model_stats`` below; a fixture because test modules should not import a conftest),
``pipeline_repository`` (a repository with the pipeline model over the session's network models). """

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

MODELS = ("brats_onnx", "brats_torchscript", "brats_openvino")
INPUT, OUTPUT = "INPUT__0", "OUTPUT__0"


def infer(client, model: str, x: np.ndarray) -> np.ndarray:
    """One synchronous gRPC inference of ``x`` (N, 4, D, H, W float32) -> the output array."""
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput(INPUT, list(x.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(OUTPUT)])
    return result.as_numpy(OUTPUT)


def eager(model, x: np.ndarray) -> np.ndarray:
    """The eager PyTorch output for ``x``."""
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def model_stats(client, model: str) -> dict[str, int]:
    """Triton's counters for ``model``: inference_count, execution_count, success, fail."""
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    counters = stats.get("inference_stats", {})
    return {
        "inference_count": int(stats.get("inference_count", 0)),
        "execution_count": int(stats.get("execution_count", 0)),
        "success": int(counters.get("success", {}).get("count", 0)),
        "fail": int(counters.get("fail", {}).get("count", 0)),
        "batch_sizes": sorted(int(b["batch_size"]) for b in stats.get("batch_stats", [])),
    }


@pytest.fixture(scope="session")
def serve_helpers() -> SimpleNamespace:
    return SimpleNamespace(MODELS=MODELS, INPUT=INPUT, OUTPUT=OUTPUT, infer=infer, eager=eager, model_stats=model_stats)


DEMO_CHECKPOINT = Path(__file__).resolve().parents[2] / "demo" / "brats_demo_checkpoint.pth"


@pytest.fixture(scope="session")
def checkpoint() -> Path:
    """The committed demo checkpoint (the seed network trained on phantoms, in the seed's own file format), so
    that segmentations are meaningful; ``BRATS_TEST_CHECKPOINT`` points the tests at another one."""
    path = Path(os.environ.get("BRATS_TEST_CHECKPOINT", DEMO_CHECKPOINT))
    assert path.is_file(), f"test checkpoint {path} is missing"
    return path


@pytest.fixture(scope="session")
def eager_model(checkpoint):
    from brats_export.checkpoint import load_model

    return load_model(checkpoint)


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory, checkpoint) -> Path:
    """The three models exported from ``checkpoint`` by ``brats-export``: parity checked on the default full-size
    phantom (144x176x144; test_fidelity.py asserts its rows) and at 32^3 instead of the default small sizes."""
    from brats_export.cli import main

    repo = tmp_path_factory.mktemp("repository") / "model_repository"
    code = main(["--checkpoint", str(checkpoint), "--repository", str(repo), "--check-sizes", "32", "--quiet"])
    assert code == 0, f"brats-export failed with exit code {code}"
    return repo


# The Python of another environment that exports and serves (``.venv`` when the client tests run from
# ``.venv-client``, which has neither torch nor nvidia-pytriton); unset: this environment does both.
SERVER_PYTHON = os.environ.get("BRATS_TEST_SERVER_PYTHON")
EXTERNAL_SERVER_TIMEOUT_S = 900.0  # export (three formats, parity at 32^3) and start, on 2 busy cores


def _external_server(checkpoint: Path, work: Path):
    """Run ``external_server.py`` with ``SERVER_PYTHON``; yield an object with its ``grpc_url`` once it is ready."""
    import queue
    import subprocess
    import threading

    script = Path(__file__).with_name("external_server.py")
    stderr_path = work / "external_server.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen([SERVER_PYTHON, str(script), str(checkpoint), str(work)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        url = None
        while url is None:
            try:
                line = lines.get(timeout=EXTERNAL_SERVER_TIMEOUT_S)
            except queue.Empty:
                raise RuntimeError(
                    f"{script}: no server within {EXTERNAL_SERVER_TIMEOUT_S:.0f} s; see {stderr_path}"
                ) from None
            if line is None:
                tail = stderr_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{script} ended (exit {proc.wait()}) before the server was ready:\n{tail}")
            if line.startswith("{"):
                url = json.loads(line)["grpc_url"]
        yield SimpleNamespace(grpc_url=url)
    finally:
        proc.stdin.close()  # the script stops the server at the end of its stdin
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def triton_server(request, checkpoint, tmp_path_factory):
    """One ``TritonServer`` serving ``model_repository`` on free loopback ports for the whole session (with
    ``BRATS_TEST_SERVER_PYTHON``: a server exported and run by that Python, see ``external_server.py``)."""
    if SERVER_PYTHON:
        yield from _external_server(checkpoint, tmp_path_factory.mktemp("external_server"))
        return
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    model_repository = request.getfixturevalue("model_repository")
    log_path = tmp_path_factory.mktemp("server") / "tritonserver.log"
    server = TritonServer(TritonServerConfig(
        model_repository, grpc_port=0, http_port=0, metrics_port=0, log_path=log_path
    ))
    with server:
        yield server


@pytest.fixture(scope="session")
def grpc_client(triton_server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def pipeline_repository(model_repository, tmp_path_factory):
    """``make(name, networks, settings=None) -> the pipeline model's folder``: a new repository of the session's
    network models (linked, not copied) and the pipeline model ``brats-export --pipeline`` writes beside them."""
    from brats_export import pipeline_model
    from brats_export.catalogue import MODELS as CATALOGUE

    def make(name: str, networks, settings=None) -> Path:
        repo = tmp_path_factory.mktemp(name) / "repository"
        repo.mkdir()
        for key in networks:
            model = CATALOGUE[key].name
            (repo / model).symlink_to(model_repository / model, target_is_directory=True)
        return pipeline_model.write(repo, networks, settings=settings or pipeline_model.PipelineSettings())

    return make


def write_small_phantom_case(root: Path, seed: int, shape=(112, 96, 80)) -> Path:
    """A phantom cut around its tumour (non-cubic), written with a flipped, oblique, anisotropic affine
    (voxels 1 x 1 x 1.2 mm) under BraTS 2019 names, with its ``_seg`` truth."""
    import nibabel as nib
    from brats_export.phantom import make_phantom

    ph = make_phantom(seed)
    centre = np.argwhere(ph.seg > 0).mean(axis=0).round().astype(int)
    start = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, shape, ph.seg.shape, strict=True)]
    box = tuple(slice(a, a + s) for a, s in zip(start, shape, strict=True))
    angle = np.deg2rad(10)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-1.0, 1.0, -1.2])
    affine[:3, 3] = [90.0, -126.0, 72.0]
    case_id = f"Case{seed}"
    folder = root / case_id
    folder.mkdir(parents=True)
    for name, image in ph.images.items():
        nib.save(nib.Nifti1Image(image[box].astype(np.float32), affine), folder / f"{case_id}_{name}.nii.gz")
    nib.save(nib.Nifti1Image(ph.seg[box].astype(np.uint8), affine), folder / f"{case_id}_seg.nii.gz")
    return folder


@pytest.fixture(scope="session")
def small_case_factory(tmp_path_factory):
    """``make(seed, shape=...) -> case folder``: small phantom cases (see ``write_small_phantom_case``)."""
    root = tmp_path_factory.mktemp("phantom_cases")

    def make(seed: int, shape=(112, 96, 80), parent: str = "") -> Path:
        folder = root / parent if parent else root
        folder.mkdir(parents=True, exist_ok=True)
        return write_small_phantom_case(folder, seed, shape)

    return make

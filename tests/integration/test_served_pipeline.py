"""The whole pipeline in the server (``brats_segment``, python backend, BLS to the network models): labels equal to
``brats-client segment``'s, any HTTP client (the documented curl script), a bad file answered with an error while
the model keeps serving. Real ``tritonserver``, real NIfTI files.

The server of this module serves the session's exported ONNX and OpenVINO models (linked, not copied) with
their flip4 companions, and the pipeline model ``brats-export --pipeline`` writes beside them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import SegmentOptions, cli, exit_codes, find_case_files, served_client

pytestmark = pytest.mark.integration

NETWORKS = ("onnx", "onnx_flip4", "openvino", "openvino_flip4")
PIPELINE = "brats_segment"
CURL_SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "segment_with_curl.sh"


@pytest.fixture(scope="module")
def pipeline_server(pipeline_repository, tmp_path_factory):
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    folder = pipeline_repository("pipeline", NETWORKS)
    assert folder.name == PIPELINE
    repo = folder.parent
    log_path = tmp_path_factory.mktemp("pipeline_server") / "tritonserver.log"
    with TritonServer(TritonServerConfig(repo, grpc_port=0, http_port=0, metrics_port=0, log_path=log_path)) as server:
        yield server


def _segment(server, case: Path, out: Path, *options: str) -> dict:
    report = out.with_suffix("").with_suffix(".json")
    code = cli.main(["-q", "segment", str(case), "-o", str(out), "--report", str(report), "--url", server.grpc_url,
                     *options])
    assert code == exit_codes.EXIT_OK
    return json.loads(report.read_text())


def _labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine


@pytest.fixture(scope="module")
def brats_case(tmp_path_factory) -> Path:
    """A whole BraTS-size case: a phantom on the real T1 template, 240 x 240 x 155, BraTS 2019 names."""
    from brats_demo.phantom import write_case
    from brats_export.phantom import make_phantom

    return write_case(make_phantom(9005), tmp_path_factory.mktemp("brats_case"), "Phantom_9005")


def test_a_brats_size_case_equals_the_client_path(pipeline_server, brats_case, tmp_path):
    """Defaults of the command (whole crop, flip4 in the client: the server is on this host) on both paths."""
    client = _segment(pipeline_server, brats_case, tmp_path / "client.nii.gz")
    served = _segment(pipeline_server, brats_case, tmp_path / "served.nii.gz", "--model", PIPELINE)
    (a, affine_a), (b, affine_b) = _labels(tmp_path / "client.nii.gz"), _labels(tmp_path / "served.nii.gz")
    assert a.shape == (240, 240, 155) and set(np.unique(a)) == {0, 1, 2, 4}
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(affine_a, affine_b)
    assert served["server"]["pipeline"]["model"] == PIPELINE
    assert served["server"]["model"] == client["server"]["model"] == "brats_openvino"
    assert served["region_volumes_ml"] == client["region_volumes_ml"]


@pytest.fixture(scope="module")
def oblique_case(small_case_factory) -> Path:
    """112 x 96 x 80, 1 x 1 x 1.2 mm, rotated 10 degrees and flipped (conftest.write_small_phantom_case)."""
    return small_case_factory(9011, parent="pipeline")


@pytest.mark.parametrize("network", ["brats_onnx", "brats_openvino"])
def test_an_oblique_non_brats_case_equals_the_client_path_on_each_backend(pipeline_server, oblique_case, tmp_path,
                                                                          network):
    """Tiled (64^3 tiles), one pass, through each backend: equal labels, and the output keeps the input's geometry."""
    case = oblique_case
    options = ("--tta", "none", "--tile", "64")
    _segment(pipeline_server, case, tmp_path / "client.nii.gz", "--model", network, *options)
    files = find_case_files(case)
    parameters = served_client.request_parameters(files, SegmentOptions(tta="none", tile=64))
    assert parameters["labels"] == "brats2019" and parameters["tile"] == 64
    served = _served_direct(pipeline_server, files, dict(parameters, model=network))
    (tmp_path / "served.nii.gz").write_bytes(served)
    (a, affine_a), (b, affine_b) = _labels(tmp_path / "client.nii.gz"), _labels(tmp_path / "served.nii.gz")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(affine_b, affine_a)
    np.testing.assert_allclose(affine_b, nib.load(files.paths["t1"]).affine, atol=1e-6)
    assert a.shape == (112, 96, 80) and (a > 0).sum() > 1000


def _served_direct(server, files, parameters: dict) -> bytes:
    """One request to the pipeline with ``parameters`` as given (the network model included)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = []
    for ch, path in files.paths.items():
        tensor = grpcclient.InferInput(ch, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([path.read_bytes()], dtype=np.object_))
        inputs.append(tensor)
    try:
        result = client.infer(PIPELINE, inputs, parameters=parameters, client_timeout=600)
    finally:
        client.close()
    return bytes(result.as_numpy("segmentation")[0])


def _curl(server, prefix: Path, out: Path, report: Path | None = None, tta: str = "none"):
    http = server.http_url if server.http_url.startswith("http") else f"http://{server.http_url}"
    args = ["bash", str(CURL_SCRIPT), http, str(prefix), str(out), str(report or ""), tta]
    return subprocess.run(args, capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_documented_curl_script_segments_a_case(pipeline_server, small_case_factory, tmp_path):
    """examples/segment_with_curl.sh as the README runs it: curl and coreutils, no tritonclient."""
    case = small_case_factory(9012, parent="pipeline")
    done = _curl(pipeline_server, case / case.name, tmp_path / "curl.nii.gz", tmp_path / "curl.json")
    assert done.returncode == 0, done.stderr
    _segment(pipeline_server, case, tmp_path / "client.nii.gz", "--tta", "none")
    np.testing.assert_array_equal(_labels(tmp_path / "curl.nii.gz")[0], _labels(tmp_path / "client.nii.gz")[0])
    report = json.loads((tmp_path / "curl.json").read_text())
    assert report["options"]["tta"] == "none" and report["inputs"]["t1"].startswith("request input t1")


def test_a_malformed_file_is_an_error_and_the_model_keeps_serving(pipeline_server, small_case_factory, tmp_path,
                                                                 capsys):
    case = small_case_factory(9013, parent="pipeline")
    bad = tmp_path / "bad"
    shutil.copytree(case, bad / case.name)
    (bad / case.name / f"{case.name}_t1ce.nii.gz").write_bytes(b"\x1f\x8b not a NIfTI file")
    out = tmp_path / "bad.nii.gz"
    code = cli.main(["-q", "segment", str(bad / case.name), "-o", str(out), "--url", pipeline_server.grpc_url,
                     "--model", PIPELINE, "--tta", "none"])
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_INPUT, err
    assert "t1ce file request input t1ce.nii.gz is not a readable NIfTI file" in err and not out.exists()
    done = _curl(pipeline_server, bad / case.name / case.name, tmp_path / "curl.nii.gz")
    assert done.returncode == 1 and "HTTP 400" in done.stderr and "InputError: t1ce file" in done.stderr
    assert not (tmp_path / "curl.nii.gz").exists()
    # the same model answers the next request
    _segment(pipeline_server, case, tmp_path / "good.nii.gz", "--model", PIPELINE, "--tta", "none")
    assert (_labels(tmp_path / "good.nii.gz")[0] > 0).sum() > 1000


def test_a_batch_or_probabilities_with_the_pipeline_are_refused_with_what_to_do(pipeline_server, small_case_factory,
                                                                               tmp_path, capsys):
    case = small_case_factory(9014, parent="pipeline_batch")
    code = cli.main(["-q", "segment", str(case), "-o", str(tmp_path / "s.nii.gz"), "--url", pipeline_server.grpc_url,
                     "--model", PIPELINE, "--probabilities", str(tmp_path / "p.nii.gz")])
    assert code == exit_codes.EXIT_USAGE and "returns labels only" in capsys.readouterr().err
    code = cli.main(["-q", "segment", str(case.parent), "-o", str(tmp_path / "out"), "--url", pipeline_server.grpc_url,
                     "--model", PIPELINE])
    assert code == exit_codes.EXIT_USAGE and "one case at a time" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_perf_analyzer_sweeps_the_pipeline_with_the_case_files(pipeline_server, oblique_case, tmp_path, capsys):
    """brats-client perf on a pipeline model: the case's four files as input data, one whole case per request."""
    out = tmp_path / "perf"
    code = cli.main(["perf", str(oblique_case), "--url", pipeline_server.grpc_url, "--model", PIPELINE,
                     "--concurrency", "1", "--request-count", "2", "--stability-percentage", "10000",
                     "--out", str(out)])
    assert code == exit_codes.EXIT_OK, capsys.readouterr().err
    data = json.loads((out / "input_data.json").read_text())
    assert sorted(data["data"][0]) == ["flair", "t1", "t1ce", "t2"]
    rows = (out / f"perf_{PIPELINE}.csv").read_text().splitlines()
    assert rows[0].startswith("Concurrency,Inferences/Second") and rows[1].startswith("1,")
    assert float(rows[1].split(",")[1]) > 0

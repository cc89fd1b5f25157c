"""Test-time flips on the server (issue 15, item 1), through the real server: the ``<model>_flip4`` companions
give the labels of the client's own four flips, with one request per tile, and the client falls back to its own
flips when the model offers no companion."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import cli, exit_codes

pytestmark = pytest.mark.integration

MODELS = ("brats_openvino", "brats_onnx", "brats_torchscript")


@pytest.fixture(scope="module")
def case(small_case_factory) -> Path:
    return small_case_factory(9201, (96, 80, 112), parent="server_flips")


def _segment(case: Path, folder: Path, url: str, model: str, *extra: str) -> tuple[np.ndarray, np.ndarray, dict]:
    out, prob, report = folder / "seg.nii.gz", folder / "prob.nii.gz", folder / "report.json"
    folder.mkdir(parents=True, exist_ok=True)
    code = cli.main(["--quiet", "segment", str(case), "-o", str(out), "--url", url, "--model", model,
                     "--tile", "64", "--probabilities", str(prob), "--report", str(report), *extra])
    assert code == 0
    return (np.asanyarray(nib.load(str(out)).dataobj), np.asarray(nib.load(str(prob)).dataobj),
            json.loads(report.read_text()))


def test_export_writes_checked_companions(model_repository):
    from brats_export import configs

    manifest = json.loads((model_repository / "manifest.json").read_text())
    for model in MODELS:
        companion = manifest["models"][f"{model}_flip4"]
        assert companion["server_flips"] == "flip4" and companion["max_batch_size"] == 1
        rows = [r for r in companion["parity"] if r["gated"]]
        assert rows and all(r["input"] == "phantom" and r["max_abs_diff"] <= 1e-4 for r in rows)
        plain = configs.parse_config((model_repository / model / "config.pbtxt").read_text())
        assert plain.parameters["brats_server_flips_model"].string_value == f"{model}_flip4"
        flipping = configs.parse_config((model_repository / f"{model}_flip4" / "config.pbtxt").read_text())
        assert flipping.parameters["brats_server_flips"].string_value == "flip4"


@pytest.mark.parametrize("model", MODELS)
def test_server_flips_give_the_labels_of_client_flips(model, case, triton_server, tmp_path):
    served, served_prob, served_report = _segment(case, tmp_path / "server", triton_server.grpc_url, model,
                                                  "--server-flips", "on")
    client, client_prob, client_report = _segment(case, tmp_path / "client", triton_server.grpc_url, model,
                                                  "--server-flips", "off")
    assert served_report["server"]["model"] == f"{model}_flip4"
    assert served_report["server"]["server_flips"] == "flip4"
    assert client_report["server"]["model"] == model and client_report["server"]["server_flips"] is None
    tiles = served_report["tiles"]
    assert tiles > 1 and served_report["requests"] == tiles and client_report["requests"] == 4 * tiles
    assert served_report["voxels_computed"] == client_report["voxels_computed"]
    assert (served > 0).sum() > 1000
    np.testing.assert_array_equal(served, client)
    np.testing.assert_allclose(served_prob, client_prob, atol=1e-5)


def test_client_flips_when_the_model_offers_no_companion(model_repository, case, tmp_path):
    """Only the plain model is loaded: its config names brats_onnx_flip4, which the server does not have."""
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    with TritonServer(TritonServerConfig(
        model_repository, models=["brats_onnx"], grpc_port=0, http_port=0, metrics_port=0,
        log_path=tmp_path / "server.log"
    )) as server:
        labels, _, report = _segment(case, tmp_path / "fallback", server.grpc_url, "brats_onnx")
    assert report["server"]["model"] == "brats_onnx" and report["server"]["server_flips"] is None
    assert report["requests"] == 4 * report["tiles"]
    assert (labels > 0).sum() > 1000


def test_a_flipping_model_refuses_other_tta(case, triton_server, tmp_path):
    out = tmp_path / "seg.nii.gz"
    code = cli.main(["--quiet", "segment", str(case), "-o", str(out), "--url", triton_server.grpc_url,
                     "--model", "brats_onnx_flip4", "--tta", "none"])
    assert code == exit_codes.EXIT_SERVER and not out.exists()


def test_openvino_companion_compiles_as_tritons_backend_loads_it(model_repository):
    """The backend's layout + ov::set_batch(max_batch_size = 1) step: four crops inside, one out."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(model_repository / "brats_openvino_flip4" / "1" / "model.xml"))
    ppp = ov.preprocess.PrePostProcessor(model)
    ppp.input("INPUT__0").tensor().set_layout(ov.Layout("N..."))
    model = ppp.build()
    ov.set_batch(model, 1)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled({"INPUT__0": np.zeros((1, 4, 16, 24, 32), np.float32)})[compiled.output(0)]
    assert out.shape == (1, 3, 16, 24, 32)


def _peak_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


@pytest.mark.parametrize("model", MODELS)
def test_a_companion_needs_about_the_memory_of_its_plain_model(model, model_repository, case, tmp_path):
    """Issue 23: the companion's backend peak stays within 1.3x of the plain model's for the same case (the four
    flips as one batch took 2.3-3.2x). A fresh server, so that each backend's peak is this case's."""
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    companion = f"{model}_flip4"
    with TritonServer(TritonServerConfig(
        model_repository, models=[model, companion], grpc_port=0, http_port=0, metrics_port=0,
        log_path=tmp_path / "server.log", startup_timeout_s=600
    )) as server:
        for name, extra in (("client", ("--server-flips", "off")), ("server", ("--server-flips", "on"))):
            out = tmp_path / f"{name}.nii.gz"
            code = cli.main(["--quiet", "segment", str(case), "-o", str(out), "--url", server.grpc_url,
                             "--model", model, "--tile", "full", *extra])
            assert code == 0
        peaks = {b.model: _peak_bytes(b.pid) for b in server.backend_processes()}
    labels = [np.asanyarray(nib.load(str(tmp_path / f"{name}.nii.gz")).dataobj) for name in ("client", "server")]
    np.testing.assert_array_equal(labels[0], labels[1])
    assert peaks[companion] <= 1.3 * peaks[model], {k: f"{v / 2**20:.0f} MiB" for k, v in peaks.items()}

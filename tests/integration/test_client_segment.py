"""``brats-client segment`` through the real server on phantom cases, against the in-process seed pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import cli, exit_codes
from brats_client.postprocess import dice, region_masks

pytestmark = pytest.mark.integration

MODEL = "brats_onnx"


@pytest.fixture(scope="module")
def cases(small_case_factory) -> list[Path]:
    return [small_case_factory(9001, parent="segment"), small_case_factory(9002, (160, 96, 64), parent="segment")]


def _segment(case: Path, out: Path, server, *extra: str) -> int:
    return cli.main(["--quiet", "segment", str(case), "-o", str(out), "--url", server.grpc_url, "--model", MODEL,
                     *extra])


def _labels(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, dict[str, float]]:
    ma, mb = region_masks(a), region_masks(b)
    scores = {r: dice(ma[r], mb[r]) if (ma[r].any() or mb[r].any()) else 1.0 for r in ma}
    return float(np.mean(a == b)), scores


@pytest.mark.torch
def test_full_tile_flip4_equals_the_seed_pipeline(cases, triton_server, eager_model, tmp_path):
    from brats_client.io import load_case
    from brats_client.modalities import find_case_files
    from brats_export.reference import reference_segment

    case = cases[0]
    out = tmp_path / "seg.nii.gz"
    assert _segment(case, out, triton_server, "--tile", "full", "--tta", "flip4") == 0
    ours = _labels(out)
    volume = load_case(find_case_files(case)).volume
    reference, _ = reference_segment(volume, eager_model, tta="flip4")
    same, scores = _agreement(ours, reference)
    assert (ours > 0).sum() > 1000, "the checkpoint should find the phantom's tumour"
    assert same >= 0.9999, f"labels agree on {same:.6f} of voxels"
    assert all(s >= 0.999 for s in scores.values()), scores


def test_default_tiling_agrees_with_full_tile(cases, triton_server, tmp_path):
    """The default sends a BraTS-size crop whole (docs/tiling.md); small tiles still agree closely."""
    case = cases[1]  # 160 x 96 x 64
    full, default, tiled = tmp_path / "full.nii.gz", tmp_path / "default.nii.gz", tmp_path / "tiled.nii.gz"
    report = tmp_path / "tiled.json"
    assert _segment(case, full, triton_server, "--tile", "full", "--tta", "none") == 0
    assert _segment(case, default, triton_server, "--tta", "none") == 0
    same, scores = _agreement(_labels(default), _labels(full))
    assert all(s >= 0.99 for s in scores.values()), scores
    assert _segment(case, tiled, triton_server, "--tile", "64", "--tta", "none", "--report", str(report)) == 0
    assert json.loads(report.read_text())["tiles"] > 1
    same, scores = _agreement(_labels(tiled), _labels(full))
    assert all(s >= 0.9 for s in scores.values()), scores  # GroupNorm: 64^3 tiles see other statistics


def test_output_keeps_the_input_geometry_and_the_report(cases, triton_server, tmp_path):
    case = cases[0]
    out, probs, report = tmp_path / "seg.nii.gz", tmp_path / "prob.nii.gz", tmp_path / "r.json"
    assert _segment(case, out, triton_server, "--tta", "none", "--probabilities", str(probs),
                    "--report", str(report), "--shared-memory") == 0
    src = nib.load(str(next(case.glob("*_t1.nii.gz"))))
    seg = nib.load(str(out))
    assert seg.get_data_dtype() == np.uint8
    assert seg.shape == src.shape
    np.testing.assert_array_equal(seg.affine, src.affine)
    np.testing.assert_array_equal(seg.header.get_sform(), src.header.get_sform())
    np.testing.assert_array_equal(seg.header.get_qform(), src.header.get_qform())
    assert seg.header.get_zooms() == src.header.get_zooms()
    prob = nib.load(str(probs))
    assert prob.shape == (*src.shape, 3)
    data = json.loads(report.read_text())
    assert data["server"]["model"] == MODEL and data["server"]["url"] == triton_server.grpc_url
    assert set(data["region_volumes_ml"]) == {"WT", "TC", "ET"}
    assert set(data["input_sha256"]) == {"t1", "t1ce", "t2", "flair"}
    assert data["tiles"] >= 1 and data["voxels_computed"] >= data["crop_voxels"]
    # voxel volume 1 x 1 x 1.2 mm: WT mL = voxels * 1.2 / 1000
    wt_voxels = int(np.isin(np.asanyarray(seg.dataobj), (1, 2, 4)).sum())
    assert data["region_volumes_ml"]["WT"] == pytest.approx(wt_voxels * 1.2 / 1000, rel=1e-6)


def test_shared_memory_is_used_by_default_on_loopback_and_gives_the_same_labels(cases, triton_server, tmp_path):
    used = {}
    for mode in ("auto", "off", "on"):
        out, report = tmp_path / f"{mode}.nii.gz", tmp_path / f"{mode}.json"
        args = ("--shared-memory", mode) if mode != "auto" else ()  # auto is the default
        assert _segment(cases[0], out, triton_server, "--tta", "flip4", "--tile", "64", "--report", str(report),
                        *args) == 0
        used[mode] = json.loads(report.read_text())["server"]["shared_memory"]
    assert used == {"auto": True, "off": False, "on": True}
    np.testing.assert_array_equal(_labels(tmp_path / "auto.nii.gz"), _labels(tmp_path / "off.nii.gz"))
    np.testing.assert_array_equal(_labels(tmp_path / "on.nii.gz"), _labels(tmp_path / "off.nii.gz"))


def test_existing_output_is_kept_without_overwrite(cases, triton_server, tmp_path):
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(b"keep me")
    assert _segment(cases[0], out, triton_server, "--tta", "none") == exit_codes.EXIT_OUTPUT
    assert out.read_bytes() == b"keep me"


def test_batch_mode_writes_one_output_per_case_and_skips_finished(cases, triton_server, tmp_path):
    root = cases[0].parent
    out = tmp_path / "out"
    assert _segment(root, out, triton_server, "--tta", "none", "--tile", "64") == 0
    written = sorted(p.name for p in out.glob("*.nii.gz"))
    assert written == sorted(f"{c.name}.nii.gz" for c in cases)
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    summary = tmp_path / "summary.json"
    assert _segment(root, out, triton_server, "--tta", "none", "--report", str(summary)) == 0
    assert json.loads(summary.read_text())["skipped"] == sorted(c.name for c in cases)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == before


def test_no_server_is_a_clear_error_within_the_deadline(cases, tmp_path, capsys):
    from brats_serve.ports import free_port

    out = tmp_path / "seg.nii.gz"
    t0 = time.monotonic()
    code = cli.main(["segment", str(cases[0]), "-o", str(out), "--url", f"127.0.0.1:{free_port()}"])
    assert code == exit_codes.EXIT_SERVER
    assert time.monotonic() - t0 < 30
    assert "no Triton server answers" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_model_names_what_the_server_has(cases, triton_server, tmp_path, capsys):
    out = tmp_path / "seg.nii.gz"
    code = cli.main(["segment", str(cases[0]), "-o", str(out), "--url", triton_server.grpc_url,
                     "--model", "brats_nope"])
    assert code == exit_codes.EXIT_SERVER
    err = capsys.readouterr().err
    assert "brats_nope" in err and MODEL in err
    assert not out.exists()


def _as_brats2023(case: Path, dest: Path) -> Path:
    """A copy of a BraTS 2019-named case folder under BraTS 2023 names (-t1n, -t1c, -t2w, -t2f)."""
    import shutil

    case_id = f"BraTS-GLI-{case.name}-000"
    folder = dest / case_id
    folder.mkdir(parents=True)
    for old, new in (("t1", "t1n"), ("t1ce", "t1c"), ("t2", "t2w"), ("flair", "t2f")):
        shutil.copy(case / f"{case.name}_{old}.nii.gz", folder / f"{case_id}-{new}.nii.gz")
    return folder


def test_brats2023_names_get_brats2023_labels_unless_told(cases, triton_server, tmp_path, capsys):
    case = _as_brats2023(cases[0], tmp_path / "in")
    auto, explicit = tmp_path / "auto.nii.gz", tmp_path / "explicit.nii.gz"
    code = cli.main(["segment", str(case), "-o", str(auto), "--url", triton_server.grpc_url, "--model", MODEL,
                     "--tta", "none", "--tile", "full"])
    assert code == 0
    assert "brats2023 (1 core, 2 edema, 3 enhancing) labels (BraTS 2023 file names)" in capsys.readouterr().err
    assert _segment(case, explicit, triton_server, "--tta", "none", "--tile", "full", "--labels", "brats2019") == 0
    labels_auto, labels_explicit = _labels(auto), _labels(explicit)
    assert set(np.unique(labels_auto)) == {0, 1, 2, 3}, "the checkpoint should find enhancing tumour"
    assert set(np.unique(labels_explicit)) == {0, 1, 2, 4}
    np.testing.assert_array_equal(np.where(labels_explicit == 4, 3, labels_explicit), labels_auto)

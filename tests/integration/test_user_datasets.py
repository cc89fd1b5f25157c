"""The datasets users bring, through the real server and real NIfTI files.

- The Medical Segmentation Decathlon's layout (``imagesTr/`` of 4-D files, ``labelsTr/``, ``dataset.json``), as a
  folder and as one file, segments to exactly the labels of the same case in BraTS files.
- MSD truth is scored in its own convention; a truth whose values fit two conventions is refused.
- A case whose background is not 0 is refused before anything is sent, with nothing written.
- A batch with an invalid case segments the others and exits 6; a rerun resumes.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import cli, exit_codes

pytestmark = pytest.mark.integration

MODEL = "brats_onnx"
FAST = ("--tta", "none", "--tile", "full")  # the options do not matter here: every run uses the same
MSD_MODALITY = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}  # Task01_BrainTumour's dataset.json
MSD_CHANNEL_FILES = ("flair", "t1", "t1ce", "t2")
MSD_LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
BRATS2019_TO_MSD = {0: 0, 1: 2, 2: 1, 4: 3}


@pytest.fixture(scope="module")
def case(small_case_factory) -> Path:
    return small_case_factory(9003, parent="datasets")


def _msd_dataset(case: Path, root: Path) -> tuple[Path, Path]:
    """The BraTS case as an MSD dataset: ``root/imagesTr/<id>.nii.gz`` (4-D, FLAIR, T1w, t1gd, T2w),
    ``root/labelsTr/<id>.nii.gz`` (MSD labels) and ``root/dataset.json``. Returns (image, truth)."""
    case_id = f"BRATS_{case.name}"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({"name": "BRATS", "modality": MSD_MODALITY, "labels": MSD_LABELS}))
    images = [nib.load(case / f"{case.name}_{m}.nii.gz") for m in MSD_CHANNEL_FILES]
    stacked = np.stack([np.asanyarray(img.dataobj) for img in images], axis=-1)
    image = root / "imagesTr" / f"{case_id}.nii.gz"
    nib.save(nib.Nifti1Image(stacked, images[0].affine), image)
    seg = nib.load(case / f"{case.name}_seg.nii.gz")
    brats = np.asanyarray(seg.dataobj)
    msd = np.zeros_like(brats)
    for old, new in BRATS2019_TO_MSD.items():
        msd[brats == old] = new
    truth = root / "labelsTr" / f"{case_id}.nii.gz"
    nib.save(nib.Nifti1Image(msd, seg.affine), truth)
    return image, truth


def _segment(server, *argv) -> int:
    return cli.main(["--quiet", "segment", *map(str, argv), "--url", server.grpc_url, "--model", MODEL, *FAST])


def _image(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))


def _evaluate(*argv) -> int:
    return cli.main(["--quiet", "evaluate", *map(str, argv)])


def _rows(path: Path) -> dict[str, dict[str, str]]:
    return {row["case"]: row for row in csv.DictReader(path.open())}


def test_msd_folder_and_4d_file_give_the_labels_of_the_brats_files(case, triton_server, tmp_path):
    image, truth = _msd_dataset(case, tmp_path / "Task01_BrainTumour")
    brats = tmp_path / "brats.nii.gz"
    assert _segment(triton_server, case, "-o", brats, "--labels", "msd") == 0
    assert _segment(triton_server, image.parent, "-o", tmp_path / "batch") == exit_codes.EXIT_OK
    assert _segment(triton_server, image, "-o", tmp_path / "single.nii.gz") == exit_codes.EXIT_OK
    expected = _image(brats)
    labels = np.asanyarray(expected.dataobj)
    assert set(np.unique(labels)) == {0, 1, 2, 3}, "the checkpoint should find all three MSD labels"
    for out in (tmp_path / "batch" / image.name, tmp_path / "single.nii.gz"):
        got = _image(out)
        np.testing.assert_array_equal(np.asanyarray(got.dataobj), labels)  # MSD labels by default, 3-D
        np.testing.assert_allclose(got.affine, expected.affine, atol=1e-6)
        assert bytes(got.header["descrip"]).startswith(b"brats-triton labels=msd")
    report = json.loads((tmp_path / "batch" / f"{image.name[:-7]}.json").read_text())
    assert report["labels"]["convention"] == "msd" and "dataset.json" in report["labels"]["from"]
    assert report["naming"] == "msd"

    # the MSD truth is scored in its own convention: the scores of the same case in BraTS labels
    assert _segment(triton_server, case, "-o", tmp_path / "brats2019.nii.gz") == 0
    assert _evaluate(tmp_path / "batch", truth.parent, "--out", tmp_path / "msd.csv", "--json",
                     tmp_path / "msd.json") == 0
    assert _evaluate(tmp_path / "brats2019.nii.gz", case / f"{case.name}_seg.nii.gz", "--out",
                     tmp_path / "brats.csv") == 0
    (msd_row,), (brats_row,) = _rows(tmp_path / "msd.csv").values(), _rows(tmp_path / "brats.csv").values()
    for region in ("WT", "TC", "ET"):
        assert float(msd_row[f"dice_{region}"]) == pytest.approx(float(brats_row[f"dice_{region}"]), abs=1e-6)
        assert float(msd_row[f"truth_{region}_ml"]) == pytest.approx(float(brats_row[f"truth_{region}_ml"]))
    assert float(msd_row["dice_TC"]) > 0.8, msd_row  # read as BraTS 2023 the same truth scored TC ~0.1 (issue 22)
    scored = json.loads((tmp_path / "msd.json").read_text())["cases"][0]
    assert scored["labels"] == {"prediction": "msd", "truth": "msd"}


def test_a_truth_that_fits_two_conventions_is_refused(case, tmp_path, capsys):
    _, truth = _msd_dataset(case, tmp_path / "Task01")
    lone = tmp_path / "copied" / truth.name  # no dataset.json beside or above it any more
    lone.parent.mkdir()
    shutil.copy(truth, lone)
    pred = tmp_path / "pred" / truth.name
    pred.parent.mkdir()
    shutil.copy(truth, pred)
    out = tmp_path / "m.csv"
    assert _evaluate(pred, lone, "--out", out, "--pred-labels", "msd") == exit_codes.EXIT_INPUT
    err = capsys.readouterr().err
    assert str(lone) in err and "brats2023" in err and "msd" in err and "--truth-labels" in err
    assert not out.exists()
    assert _evaluate(pred, lone, "--out", out, "--labels", "msd") == exit_codes.EXIT_OK
    (row,) = _rows(out).values()
    assert all(float(row[f"dice_{r}"]) == 1.0 for r in ("WT", "TC", "ET"))


def _with_background(case: Path, dest: Path, background: float) -> Path:
    """The case padded by 8 zero voxels, stored as int16 with ``scl_inter = background``: the zeros read
    ``background``, as in the issue's case."""
    folder = dest / case.name
    folder.mkdir(parents=True)
    for m in ("t1", "t1ce", "t2", "flair"):
        img = nib.load(case / f"{case.name}_{m}.nii.gz")
        data = np.pad(np.asarray(img.dataobj, dtype=np.float32), 8)
        out = nib.Nifti1Image(np.rint(data).astype(np.int16), img.affine)
        out.header.set_slope_inter(1.0, background)
        nib.save(out, folder / f"{case.name}_{m}.nii.gz")
    return folder


def test_a_background_that_is_not_zero_is_refused_before_anything_is_sent(case, triton_server, tmp_path, capsys):
    folder = _with_background(case, tmp_path / "in", 100.0)
    out = tmp_path / "out"
    out.mkdir()
    code = _segment(triton_server, folder, "-o", out / "seg.nii.gz", "--report", out / "seg.json")
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_INPUT, err
    assert "background reads 100" in err and "skull-stripped" in err and "--allow-unprepared-input" in err
    assert list(out.iterdir()) == []
    code = _segment(triton_server, folder, "-o", out / "seg.nii.gz", "--report", out / "seg.json",
                    "--allow-unprepared-input")
    assert code == exit_codes.EXIT_OK
    warnings = json.loads((out / "seg.json").read_text())["warnings"]
    assert len(warnings) == 4 and all("background reads 100" in w for w in warnings)
    # the same case with a zero background is accepted as it is
    assert _segment(triton_server, _with_background(case, tmp_path / "zero", 0.0), "-o", out / "ok.nii.gz") == 0


def test_a_batch_goes_on_past_an_invalid_case(case, triton_server, tmp_path, capsys):
    root = tmp_path / "cases"
    for name in ("A", "B"):
        folder = root / name
        folder.mkdir(parents=True)
        for m in ("t1", "t1ce", "t2", "flair"):
            shutil.copy(case / f"{case.name}_{m}.nii.gz", folder / f"{name}_{m}.nii.gz")
    shutil.copytree(root / "B", root / "C")
    for path in (root / "C").iterdir():
        path.rename(path.with_name(path.name.replace("B_", "C_")))
    (root / "C" / "C_flair.nii.gz").unlink()
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    code = cli.main(["segment", str(root), "-o", str(out), "--report", str(summary), "--url", triton_server.grpc_url,
                     "--model", MODEL, *FAST])  # not --quiet: the log a user keeps
    assert code == exit_codes.EXIT_PARTIAL
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["A.nii.gz", "B.nii.gz"]
    doc = json.loads(summary.read_text())
    assert doc["done"] == ["A", "B"] and [f["case"] for f in doc["failed"]] == ["C"]
    assert "missing flair" in doc["failed"][0]["error"]
    err = capsys.readouterr().err
    assert "missing flair" in err and "batch: 2 done, 0 skipped, 1 failed" in err
    assert "\x1b[" not in err and "100%" not in err, "progress bars in a log that is not a terminal"
    assert _segment(triton_server, root, "-o", out, "--report", summary) == exit_codes.EXIT_PARTIAL  # resumes
    doc = json.loads(summary.read_text())
    assert doc["done"] == [] and doc["skipped"] == ["A", "B"] and [f["case"] for f in doc["failed"]] == ["C"]

"""``brats-client evaluate`` on real NIfTI files: matching by case id, the CSV / JSON / table, refused inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import cli, conventions, exit_codes

pytestmark = pytest.mark.integration

SHAPE = (8, 8, 8)
SPACING = (1.0, 1.0, 2.0)  # mm: 2 mm^3 voxels


def _affine(spacing=SPACING) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    return affine


def _save(path: Path, labels: np.ndarray, affine=None, dtype=np.uint8, mark: str | None = None) -> Path:
    """``mark``: the label convention brats-client segment writes into its outputs' header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(labels.astype(dtype), _affine() if affine is None else affine)
    if mark is not None:
        img.header["descrip"] = conventions.header_mark(mark).encode()
    nib.save(img, path)
    return path


def _truth_a() -> np.ndarray:
    """WT a 2x2x2 cube of edema with a 2x2x1 core (1) of which one voxel enhances (4)."""
    t = np.zeros(SHAPE, np.uint8)
    t[2:4, 2:4, 2:4] = 2
    t[2:4, 2:4, 2] = 1
    t[2, 2, 2] = 4
    return t


def _pred_a() -> np.ndarray:
    """The truth's WT shifted one slice along z (Dice 0.5, HD95 1 slice = 2 mm); no enhancing tumour."""
    p = np.zeros(SHAPE, np.uint8)
    p[2:4, 2:4, 3:5] = 2
    p[2:4, 2:4, 3] = 1
    return p


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """predictions/<case>.nii.gz (as a segment batch writes them) and BraTS case folders with <case>_seg and a
    modality; case B: both empty; case C has no prediction; the prediction Extra has no truth."""
    preds, truths = tmp_path / "predictions", tmp_path / "cases"
    _save(preds / "A.nii.gz", _pred_a(), mark="brats2019")
    _save(preds / "B.nii.gz", np.zeros(SHAPE), mark="brats2019")
    _save(preds / "Extra.nii.gz", _pred_a(), mark="brats2019")
    (preds / "A.json").write_text("{}")  # a segment report, not a segmentation
    for case, labels in (("A", _truth_a()), ("B", np.zeros(SHAPE)), ("C", _truth_a())):
        _save(truths / case / f"{case}_seg.nii.gz", labels)
        _save(truths / case / f"{case}_flair.nii.gz", np.ones(SHAPE), dtype=np.float32)
    return preds, truths


def _evaluate(*argv) -> int:
    return cli.main(["evaluate", *map(str, argv)])


def test_folders_matched_by_case_id_with_hand_computed_scores(dataset, tmp_path, capsys):
    preds, truths = dataset
    out, js = tmp_path / "m.csv", tmp_path / "m.json"
    assert _evaluate(preds, truths, "--out", out, "--json", js) == 0
    captured = capsys.readouterr()
    assert "1 predictions without a match, not scored: Extra" in captured.err
    assert "1 truths without a match, not scored: C" in captured.err
    rows = {row["case"]: row for row in csv.DictReader(out.open())}
    assert sorted(rows) == ["A", "B"]
    a, b = rows["A"], rows["B"]
    # WT: 8 voxels each, 4 shared -> 0.5; HD95 one slice of 2 mm. TC: 4 voxels each (z=2 / z=3) -> 0, 2 mm.
    assert float(a["dice_WT"]) == 0.5 and float(a["hd95_WT_mm"]) == 2.0
    assert float(a["dice_TC"]) == 0.0 and float(a["hd95_TC_mm"]) == 2.0
    # ET: truth has one voxel, the prediction none -> Dice 0, HD95 373.13
    assert float(a["dice_ET"]) == 0.0 and float(a["hd95_ET_mm"]) == 373.13
    assert float(a["truth_WT_ml"]) == pytest.approx(8 * 0.002) and float(a["pred_ET_ml"]) == 0.0
    assert Path(a["truth"]) == truths / "A" / "A_seg.nii.gz" and Path(a["prediction"]) == preds / "A.nii.gz"
    # both empty everywhere -> Dice 1, HD95 0
    assert all(float(b[f"dice_{r}"]) == 1.0 and float(b[f"hd95_{r}_mm"]) == 0.0 for r in ("WT", "ET", "TC"))
    header = next(csv.reader(out.open()))
    assert header[:4] == ["case", "dice_WT", "dice_TC", "dice_ET"]  # contract.REGIONS, as the segment report
    doc = json.loads(js.read_text())
    assert doc["summary"]["mean"]["dice"] == {"WT": 0.75, "ET": 0.5, "TC": 0.5}
    assert doc["summary"]["median"]["hd95_mm"]["ET"] == pytest.approx((373.13 + 0.0) / 2)
    assert doc["cases"][0]["voxel_mm"] == list(SPACING)
    table = captured.out.strip().splitlines()
    assert table[0].split()[:6] == ["2", "case(s)", "Dice", "WT", "Dice", "TC"]
    assert table[1].split() == ["mean", "0.750", "0.500", "0.500", "1.00", "1.00", "186.56"]
    assert table[2].split()[0] == "median"


def test_one_file_against_one_file_and_mixed_conventions(tmp_path, capsys):
    """File names need not match for a single pair; a BraTS 2019 prediction scores against BraTS 2023 truth."""
    truth = np.where(_truth_a() == 4, 3, _truth_a())
    pred = _save(tmp_path / "seg.nii.gz", _truth_a())
    true = _save(tmp_path / "BraTS-GLI-00001-000-seg.nii.gz", truth)
    out = tmp_path / "m.csv"
    assert _evaluate(pred, true, "--out", out, "--quiet") == 0
    (row,) = csv.DictReader(out.open())
    assert all(float(row[f"dice_{r}"]) == 1.0 for r in ("WT", "ET", "TC")), row
    # told that both use BraTS 2019 labels, the truth's 3 is refused by name
    code = _evaluate(pred, true, "--out", tmp_path / "n.csv", "--labels", "brats2019")
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_INPUT and str(true) in err and "--labels brats2019" in err
    assert not (tmp_path / "n.csv").exists()


@pytest.mark.parametrize("defect", ["shape", "affine", "values", "both conventions", "probabilities"])
def test_refused_pairs_name_the_files_and_write_nothing(tmp_path, capsys, defect):
    truth = _save(tmp_path / "t" / "X_seg.nii.gz", _truth_a())
    pred_path = tmp_path / "p" / "X.nii.gz"
    if defect == "shape":
        _save(pred_path, np.zeros((8, 8, 9)))
    elif defect == "affine":
        _save(pred_path, _pred_a(), affine=_affine((1.0, 1.0, 1.0)))
    elif defect == "values":
        _save(pred_path, np.full(SHAPE, 7))
    elif defect == "both conventions":
        both = _pred_a()
        both[0, 0, 0], both[0, 0, 1] = 3, 4
        _save(pred_path, both)
    else:
        _save(pred_path, np.full(SHAPE, 0.4), dtype=np.float32)
    out = tmp_path / "m.csv"
    code = _evaluate(tmp_path / "p", tmp_path / "t", "--out", out, "--json", tmp_path / "m.json")
    err = capsys.readouterr().err.strip()
    assert code == exit_codes.EXIT_INPUT, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(pred_path) in err
    if defect in ("shape", "affine"):
        assert str(truth) in err and "one grid" in err
    assert {"shape": "(8, 8, 9)", "affine": "affines differing", "values": "[7]",
            "both conventions": "fit none of", "probabilities": "non-integer"}[defect] in err
    assert not out.exists() and not (tmp_path / "m.json").exists()


def test_no_matching_case_and_existing_output(dataset, tmp_path, capsys):
    preds, truths = dataset
    other = _save(tmp_path / "other" / "Z.nii.gz", _pred_a()).parent
    assert _evaluate(other, truths, "--out", tmp_path / "m.csv") == exit_codes.EXIT_INPUT
    err = capsys.readouterr().err
    assert "no case id of" in err and "Z" in err and "A, B, C" in err
    out = tmp_path / "exists.csv"
    out.write_text("keep\n")
    assert _evaluate(preds, truths, "--out", out) == exit_codes.EXIT_OUTPUT
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "keep\n"
    assert _evaluate(preds, truths, "--out", out, "--overwrite", "-q") == 0
    assert out.read_text().startswith("case,")
    assert _evaluate(tmp_path / "missing", truths, "--out", out, "--overwrite") == exit_codes.EXIT_INPUT
    assert "prediction" in capsys.readouterr().err


def test_a_case_folder_with_two_segmentations_is_refused(tmp_path, capsys):
    _save(tmp_path / "t" / "X" / "X_seg.nii.gz", _truth_a())
    _save(tmp_path / "t" / "X" / "X-seg.nii.gz", _truth_a())
    _save(tmp_path / "p" / "X.nii.gz", _pred_a())
    assert _evaluate(tmp_path / "p", tmp_path / "t", "--out", tmp_path / "m.csv") == exit_codes.EXIT_INPUT
    assert "several segmentations" in capsys.readouterr().err

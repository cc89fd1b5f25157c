"""The Medical Segmentation Decathlon's layout (4-D files, dataset.json) and the seed's input assumptions, on real
NIfTI files: a 4-D case loads to exactly the volume of the same case in BraTS files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import input_checks, io, modalities
from brats_client.errors import InputError
from brats_client.modalities import CHANNELS

SHAPE = (24, 20, 16)
MSD_ORDER = ("FLAIR", "T1w", "t1gd", "T2w")  # Task01_BrainTumour's dataset.json "modality"
AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def _channels(seed: int = 0) -> dict[str, np.ndarray]:
    """Four different brain-like blobs in a zero background, keyed by CHANNELS."""
    rng = np.random.default_rng(seed)
    out = {}
    for ch in CHANNELS:
        data = np.zeros(SHAPE, dtype=np.float32)
        data[3:-3, 3:-3, 2:-2] = rng.uniform(10, 100, size=(SHAPE[0] - 6, SHAPE[1] - 6, SHAPE[2] - 4))
        out[ch] = data
    return out


def _msd_dataset(root: Path, cases: dict[str, dict[str, np.ndarray]], key: str = "modality") -> Path:
    """``root/dataset.json`` + ``root/imagesTs/<case>.nii.gz`` (4-D, channels in the MSD order)."""
    names = {"FLAIR": "flair", "T1w": "t1", "t1gd": "t1ce", "T2w": "t2"}
    (root / "imagesTs").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "name": "BRATS", key: {str(i): n for i, n in enumerate(MSD_ORDER)},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
    }))
    for case, data in cases.items():
        stacked = np.stack([data[names[n]] for n in MSD_ORDER], axis=-1)
        nib.save(nib.Nifti1Image(stacked, AFFINE), root / "imagesTs" / f"{case}.nii.gz")
    return root / "imagesTs"


def _brats_case(folder: Path, case: str, data: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for ch, array in data.items():
        nib.save(nib.Nifti1Image(array, AFFINE), folder / f"{case}_{ch}.nii.gz")
    return folder


def test_a_4d_case_loads_like_the_same_case_in_brats_files(tmp_path: Path) -> None:
    data = _channels()
    images = _msd_dataset(tmp_path / "Task01", {"BRATS_001": data})
    files = modalities.msd_case(images / "BRATS_001.nii.gz")
    assert files.naming == "msd" and files.case_id == "BRATS_001"
    assert files.channel_index == {"t1": 1, "t1ce": 2, "t2": 3, "flair": 0}
    assert files.dataset == tmp_path / "Task01" / "dataset.json"
    four_d = io.load_case(files)
    brats = io.load_case(modalities.find_case_files(_brats_case(tmp_path / "b", "BRATS_001", data)))
    np.testing.assert_array_equal(four_d.volume, brats.volume)
    np.testing.assert_array_equal(four_d.affine, brats.affine)
    assert four_d.shape == SHAPE and four_d.header.get_data_shape() == SHAPE
    assert modalities.input_convention(files)[0] == "msd"


def test_msd_image_folder_is_a_batch_and_a_folder_of_one_is_one_case(tmp_path: Path) -> None:
    images = _msd_dataset(tmp_path / "Task01", {"BRATS_002": _channels(2), "BRATS_001": _channels(1)})
    (images / "._BRATS_001.nii.gz").write_bytes(b"\0")  # macOS resource forks ship in the MSD tar: ignored
    cases, invalid = modalities.find_cases(images)
    assert [c.case_id for c in cases] == ["BRATS_001", "BRATS_002"] and invalid == []
    listed = r"holds 2 4-D cases \(BRATS_001.nii.gz, BRATS_002.nii.gz\); give an output folder"
    with pytest.raises(InputError, match=listed):
        modalities.find_case_files(images)
    one = _msd_dataset(tmp_path / "One", {"BRATS_003": _channels(3)})
    assert modalities.find_case_files(one).case_id == "BRATS_003"
    with pytest.raises(InputError, match=r"is a dataset folder \(imagesTs\); give the image folder"):
        modalities.find_cases(tmp_path / "Task01")


def test_nnunet_channel_names_from_dataset_json(tmp_path: Path) -> None:
    root = tmp_path / "Dataset137_BraTS2021"
    (root / "imagesTs").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"},
        "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
    }))
    for i in range(4):
        (root / "imagesTs" / f"BraTS2021_00001_000{i}.nii.gz").write_bytes(b"")
    files = modalities.find_case_files(root / "imagesTs")
    assert files.paths["flair"].name.endswith("_0003.nii.gz") and files.dataset == root / "dataset.json"
    assert modalities.input_convention(files) == ("msd", f"the labels of {root / 'dataset.json'}")


def test_without_an_order_a_4d_file_is_refused(tmp_path: Path) -> None:
    data = _channels()
    stacked = np.stack([data[ch] for ch in CHANNELS], axis=-1)
    path = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(stacked, AFFINE), path)
    with pytest.raises(InputError, match="no dataset.json beside or above them; pass --channel-order"):
        modalities.msd_case(path)
    files = modalities.msd_case(path, ["T1", "T1-Gd", "t2w", "T2-FLAIR"])
    np.testing.assert_array_equal(io.load_case(files).volume, np.stack([data[ch] for ch in CHANNELS]))
    with pytest.raises(InputError, match="same file .* 4-D file of channels: pass it alone as INPUT"):
        modalities.explicit_case(path, path, path, path)
    with pytest.raises(InputError, match=r"has shape \(24, 20, 16, 4\); a 3-D label map is needed"):
        io.load_label_map(path, "truth")  # evaluate given an image instead of a label map
    nib.save(nib.Nifti1Image(data["t1"], AFFINE), tmp_path / "t1_only.nii.gz")
    with pytest.raises(InputError, match="is one 3-D volume"):
        modalities.msd_case(tmp_path / "t1_only.nii.gz", list(CHANNELS))


@pytest.mark.parametrize(
    ("spellings", "expected"),
    [(MSD_ORDER, ("flair", "t1", "t1ce", "t2")), (("T1", "T1ce", "T2", "Flair"), CHANNELS),
     (("t1n", "t1c", "t2w", "t2f"), CHANNELS), (("T1wCE", "T1w", "FLAIR", "T2w"), ("t1ce", "t1", "flair", "t2"))],
)
def test_channel_spellings_of_dataset_json_files(spellings, expected) -> None:
    assert modalities.parse_channel_order(spellings) == tuple(expected)


def test_unknown_channel_spelling_is_named() -> None:
    with pytest.raises(InputError, match="unknown name\\(s\\) PD"):
        modalities.parse_channel_order(["T1", "T1ce", "T2", "PD"])


def test_a_background_that_is_not_zero_is_found(tmp_path: Path) -> None:
    """int16 with scl_inter 100: the stored zeros read 100 (the issue's case); a tight crop around the brain has no
    background and passes; a head with its skull is too large to be a brain."""
    raw = np.zeros(SHAPE, dtype=np.int16)
    raw[3:-3, 3:-3, 2:-2] = 50
    img = nib.Nifti1Image(raw, AFFINE)
    img.header.set_slope_inter(1.0, 100.0)
    nib.save(img, tmp_path / "offset.nii.gz")
    offset = np.asarray(nib.load(tmp_path / "offset.nii.gz").dataobj, dtype=np.float32)
    problem = input_checks.background_problem("t1", "offset.nii.gz", offset)
    assert problem is not None and "background reads 100" in problem
    assert input_checks.background_problem("t1", "x", np.where(offset == 100, 0, offset)) is None
    tight = np.random.default_rng(0).uniform(10, 100, SHAPE).astype(np.float32)
    assert input_checks.background_problem("t1", "x", tight) is None
    volume = np.stack([tight] * 4)
    assert input_checks.skull_problem(volume, 1.0, "x") is None  # 7.7 mL
    problem = input_checks.skull_problem(volume, 400.0, "x")  # the same voxels at 400 mm^3: 3,072 mL
    assert problem is not None and "does not look skull-stripped" in problem


def test_a_4d_file_whose_id_ends_in_four_digits_is_not_an_nnunet_channel(tmp_path: Path) -> None:
    """``BRATS_0001.nii.gz`` has nnU-Net's ``_0001`` shape, but a 4-D file is a whole case."""
    images = _msd_dataset(tmp_path / "Task01", {"BRATS_0001": _channels(1), "BRATS_9001": _channels(2)})
    cases, invalid = modalities.find_cases(images)
    assert [c.case_id for c in cases] == ["BRATS_0001", "BRATS_9001"] and invalid == []
    assert all(c.naming == "msd" for c in cases)


def test_a_4d_case_names_the_channel_that_feeds_each_input(tmp_path: Path) -> None:
    images = _msd_dataset(tmp_path / "Task01", {"BRATS_001": _channels()})
    path = images / "BRATS_001.nii.gz"
    files = modalities.msd_case(path)
    assert files.sources() == {"t1": f"{path}[..., 1]", "t1ce": f"{path}[..., 2]", "t2": f"{path}[..., 3]",
                               "flair": f"{path}[..., 0]"}
    assert files.describe() == (f"channels of {path}: t1 <- [..., 1], t1ce <- [..., 2], t2 <- [..., 3], "
                                f"flair <- [..., 0] (order from {tmp_path / 'Task01' / 'dataset.json'})")
    given = modalities.msd_case(path, ["T1w", "t1gd", "T2w", "FLAIR"])
    assert given.sources()["flair"] == f"{path}[..., 3]" and given.describe().endswith("(order from --channel-order)")
    brats = modalities.find_case_files(_brats_case(tmp_path / "b", "B", _channels()))
    assert brats.sources() == {ch: str(p) for ch, p in brats.paths.items()}
    assert "order from" not in brats.describe() and f"t1ce <- {brats.paths['t1ce']}" in brats.describe()

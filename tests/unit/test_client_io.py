"""NIfTI loading checks (one-line InputErrors naming the file) and atomic, header-preserving writes."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import io
from brats_client.errors import InputError, OutputError
from brats_client.modalities import CHANNELS, CaseFiles

SHAPE = (12, 9, 7)  # non-cubic
# flipped x and y (LPS-like), anisotropic voxels, an origin offset
AFFINE = np.array(
    [[-1.0, 0.0, 0.0, 90.5], [0.0, -1.25, 0.0, 120.0], [0.0, 0.0, 2.5, -72.0], [0.0, 0.0, 0.0, 1.0]]
)


def _write(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE, *, codes=(1, 1), slope=None) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_sform(affine, code=codes[0])
    img.header.set_qform(affine, code=codes[1])
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    img.to_filename(str(path))
    return path


def _case(folder: Path, shape=SHAPE, **overrides: np.ndarray) -> CaseFiles:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = {}
    for i, ch in enumerate(CHANNELS):
        data = overrides.get(ch)
        if data is None:
            data = (rng.random(shape) * 100 + i).astype(np.float32)
        paths[ch] = _write(folder / f"c_{ch}.nii.gz", data)
    return CaseFiles("c", paths, "brats2019")


def test_load_case_stacks_in_channel_order(tmp_path: Path) -> None:
    files = _case(tmp_path)
    case = io.load_case(files)
    assert case.volume.shape == (4, *SHAPE) and case.volume.dtype == np.float32
    for i, ch in enumerate(CHANNELS):
        np.testing.assert_array_equal(case.volume[i], nib.load(files.paths[ch]).get_fdata(dtype=np.float32))
        assert case.sha256[ch] == hashlib.sha256(files.paths[ch].read_bytes()).hexdigest()
    np.testing.assert_array_equal(case.affine, AFFINE)
    assert case.reference_path == files.paths["t1"]
    assert case.shape == SHAPE and not case.is_empty
    assert case.voxel_volume_mm3 == pytest.approx(1.0 * 1.25 * 2.5)


def test_int16_with_scaling_and_trailing_singleton_axis(tmp_path: Path) -> None:
    files = _case(tmp_path)
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(*SHAPE, 1)
    _write(files.paths["t2"], data, slope=0.5)
    case = io.load_case(files)
    np.testing.assert_allclose(case.volume[2], data[..., 0] * 0.5)


def test_all_zero_case_loads_and_says_so(tmp_path: Path) -> None:
    zeros = np.zeros(SHAPE, np.float32)
    case = io.load_case(_case(tmp_path, **dict.fromkeys(CHANNELS, zeros)))
    assert case.is_empty


def _error(files: CaseFiles, **kwargs) -> str:
    with pytest.raises(InputError) as e:
        io.load_case(files, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    files = _case(tmp_path)
    files.paths["flair"].unlink()
    assert "flair file" in _error(files) and "does not exist" in _error(files)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    files = _case(tmp_path, shape=(40, 40, 30))
    path = files.paths["t1ce"]
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    message = _error(files)
    assert str(path) in message and "t1ce" in message
    path.write_bytes(raw[:60])  # not even a whole header
    assert str(path) in _error(files)


def test_not_nifti(tmp_path: Path) -> None:
    files = _case(tmp_path)
    files.paths["t2"].write_bytes(b"this is not an image")
    assert "t2 file" in _error(files) and "not a readable NIfTI" in _error(files)
    with gzip.open(files.paths["t2"], "wb") as f:
        f.write(b"\0" * 400)
    assert str(files.paths["t2"]) in _error(files)


@pytest.mark.parametrize("shape", [(12, 9), (12, 9, 7, 2)])
def test_not_3d(tmp_path: Path, shape: tuple[int, ...]) -> None:
    files = _case(tmp_path)
    _write(files.paths["t1"], np.ones(shape, np.float32))
    message = _error(files)
    assert f"has shape {shape}" in message and "3-D" in message and str(files.paths["t1"]) in message


def test_shapes_differ_names_both(tmp_path: Path) -> None:
    files = _case(tmp_path)
    _write(files.paths["flair"], np.ones((12, 9, 8), np.float32))
    message = _error(files)
    assert str(files.paths["flair"]) in message and str(files.paths["t1"]) in message
    assert "(12, 9, 8)" in message and "(12, 9, 7)" in message


def test_affines_differ_names_both(tmp_path: Path) -> None:
    files = _case(tmp_path)
    moved = AFFINE.copy()
    moved[0, 3] += 0.5
    _write(files.paths["t2"], np.ones(SHAPE, np.float32), moved)
    message = _error(files)
    assert str(files.paths["t2"]) in message and str(files.paths["t1"]) in message and "affines" in message
    moved[0, 3] = AFFINE[0, 3] + 1e-4  # within the default tolerance
    _write(files.paths["t2"], np.ones(SHAPE, np.float32), moved)
    io.load_case(files)
    with pytest.raises(InputError):
        io.load_case(files, affine_atol=1e-6)


def test_nan_and_inf_counted(tmp_path: Path) -> None:
    data = np.ones(SHAPE, np.float32)
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    message = _error(_case(tmp_path, t1ce=data))
    assert "4 NaN/Inf voxels" in message and "t1ce" in message


def test_voxel_limit(tmp_path: Path) -> None:
    message = _error(_case(tmp_path), max_voxels=100)
    assert "more than the limit 100" in message


# --------------------------------------------------------------------------------------------------- writing


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("codes", [(1, 1), (0, 2), (4, 0)])
def test_output_keeps_affine_and_header(tmp_path: Path, codes: tuple[int, int]) -> None:
    src = _write(tmp_path / "t1.nii.gz", np.ones(SHAPE, np.int16) * 300, codes=codes, slope=2.0)
    img = nib.load(src)
    img.header["descrip"] = b"scanner X"
    img.header.set_xyzt_units("mm", "sec")
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:5, 1:3, 0:6] = 4
    out = io.save_nifti_atomic(labels, img.affine, img.header, tmp_path / "out" / "seg.nii.gz", overwrite=False)
    back = nib.load(out)
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), labels)  # no scaling carried over from the input
    np.testing.assert_array_equal(back.affine, img.affine)
    assert (int(back.header["sform_code"]), int(back.header["qform_code"])) == codes
    assert back.header["descrip"] == img.header["descrip"]
    assert back.header.get_xyzt_units() == ("mm", "sec")
    assert back.header.get_zooms() == img.header.get_zooms()
    assert back.shape == SHAPE
    assert _leftovers(out.parent) == []


def test_probabilities_float32_4d(tmp_path: Path) -> None:
    src = _write(tmp_path / "t1.nii", np.ones(SHAPE, np.float32))
    img = nib.load(src)
    prob = np.random.default_rng(0).random((*SHAPE, 3)).astype(np.float64)
    out = io.save_nifti_atomic(prob, img.affine, img.header, tmp_path / "prob.nii")
    back = nib.load(out)
    assert back.get_data_dtype() == np.float32 and back.shape == (*SHAPE, 3)
    np.testing.assert_allclose(back.get_fdata(), prob, rtol=1e-6)
    np.testing.assert_array_equal(back.affine, img.affine)


def test_existing_output_kept_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "seg.nii.gz"
    target.write_bytes(b"precious")
    labels = np.ones(SHAPE, np.uint8)
    with pytest.raises(OutputError, match=r"seg.nii.gz exists; pass --overwrite"):
        io.save_nifti_atomic(labels, AFFINE, None, target, overwrite=False)
    assert target.read_bytes() == b"precious"
    assert _leftovers(tmp_path) == []
    io.save_nifti_atomic(labels, AFFINE, None, target, overwrite=True)
    assert nib.load(target).shape == SHAPE
    assert _leftovers(tmp_path) == []


def test_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    class BoomError(Exception):
        pass

    with pytest.raises(ValueError, match="0..255"):
        io.save_nifti_atomic(np.full(SHAPE, 300, np.int16), AFFINE, None, tmp_path / "x.nii.gz")
    with pytest.raises(OutputError), io._atomic_path(tmp_path / "y.json", overwrite=False, suffix=".json") as tmp:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    with pytest.raises(BoomError), io._atomic_path(tmp_path / "z.json", overwrite=False, suffix=".json"):
        raise BoomError
    assert list(tmp_path.iterdir()) == []


def test_unwritable_destination(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="is not a folder"):
        io.save_nifti_atomic(np.ones(SHAPE, np.uint8), AFFINE, None, blocker / "seg.nii.gz")
    with pytest.raises(OutputError, match="is a folder"):
        io.check_writable(tmp_path)
    with pytest.raises(OutputError, match=r"must end in .nii or .nii.gz"):
        io.save_nifti_atomic(np.ones(SHAPE, np.uint8), AFFINE, None, tmp_path / "seg.mha")
    with pytest.raises(OutputError, match="not a folder"):
        io.check_folder_writable(blocker)
    io.check_folder_writable(tmp_path)
    io.check_writable(tmp_path / "new" / "deeper" / "seg.nii.gz")  # parents are created on writing


def test_write_json_atomic(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    obj = {"n": np.int64(3), "x": np.float32(0.5), "a": np.arange(3), "p": Path("/x")}
    io.write_json_atomic(obj, target)
    assert json.loads(target.read_text()) == {"n": 3, "x": 0.5, "a": [0, 1, 2], "p": "/x"}
    with pytest.raises(OutputError, match="--overwrite"):
        io.write_json_atomic({"other": 1}, target)
    assert json.loads(target.read_text())["n"] == 3
    io.write_json_atomic({"other": 1}, target, overwrite=True)
    assert json.loads(target.read_text()) == {"other": 1}
    assert _leftovers(tmp_path) == []


def test_round_trip_through_load_case(tmp_path: Path) -> None:
    """A segmentation written with the loaded t1's geometry lines up with the inputs."""
    case = io.load_case(_case(tmp_path / "in"))
    labels = (case.volume[0] > 50).astype(np.uint8)
    out = io.save_nifti_atomic(labels, case.affine, case.header, tmp_path / "seg.nii.gz")
    back = nib.load(out)
    np.testing.assert_array_equal(back.affine, case.affine)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), labels)


def test_grid_warning_names_what_differs_from_the_brats_grid() -> None:
    path = Path("case/x_t1.nii.gz")
    assert io.grid_warning(path, (240, 240, 155), (1.0, 1.0, 1.0)) is None
    assert io.grid_warning(path, (240, 240, 155), (0.95, 1.0, 1.05)) is None  # "about 1 mm"
    anisotropic = io.grid_warning(path, (240, 240, 155), (0.5, 0.5, 5.0))
    assert anisotropic is not None and str(path) in anisotropic
    assert "voxels of 0.5 x 0.5 x 5 mm" in anisotropic and "shape" not in anisotropic.split(";")[0]
    assert "1 mm isotropic, 240x240x155" in anisotropic and "resample" in anisotropic
    other_shape = io.grid_warning(path, (256, 256, 170), (1.0, 1.0, 1.0))
    assert other_shape is not None and "shape 256x256x170" in other_shape and "voxels of" not in other_shape
    both = io.grid_warning(path, (512, 512, 30), (0.45, 0.45, 5.0))
    assert both is not None and "voxels of 0.45 x 0.45 x 5 mm and shape 512x512x30" in both


def test_output_that_appears_while_writing_is_kept(tmp_path: Path) -> None:
    """Without --overwrite a file that another writer put there meanwhile is not replaced (the final hard link
    fails), and the error is the same as for one that was there before."""
    target = tmp_path / "report.json"
    with pytest.raises(OutputError, match=r"report.json exists; pass --overwrite"), \
            io._atomic_path(target, overwrite=False, suffix=".json") as tmp:
        tmp.write_text("mine")
        target.write_text("theirs")
    assert target.read_text() == "theirs"
    assert _leftovers(tmp_path) == []

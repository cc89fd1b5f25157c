"""Bad inputs and outputs to ``brats-client segment``: one error line naming the file and the problem, the
documented exit code, and nothing written.

Every command points ``--url`` at a loopback port where nothing listens: a request would end in exit 4 (server
error), so exit 3 (input) or 5 (output) proves the check ran before anything was sent. ``test_a_good_case_*`` is
the control: the same small case, untouched, does reach the (missing) server.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import cli, exit_codes, io
from brats_client.errors import InputError
from brats_client.modalities import CHANNELS, find_case_files

SHAPE = (24, 24, 16)
CASE = "Bad1"


@pytest.fixture(scope="module")
def dead_url() -> str:
    from brats_serve.ports import free_port

    return f"127.0.0.1:{free_port()}"


def _volume(seed: int, shape=SHAPE) -> np.ndarray:
    """A nonzero blob in a zero background (something to crop), different per modality."""
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, dtype=np.float32)
    inner = tuple(slice(2, s - 2) for s in shape)
    data[inner] = rng.uniform(10, 100, size=[s - 4 for s in shape]).astype(np.float32)
    return data


def _write_case(root: Path, case_id: str = CASE, **override) -> Path:
    """``root/case_id`` with BraTS 2019 names; ``override[channel]`` = an array (written with the identity affine),
    an (array, affine) pair, bytes (written raw) or None (no file)."""
    folder = root / case_id
    folder.mkdir(parents=True)
    for i, ch in enumerate(CHANNELS):
        value = override.get(ch, _volume(i))
        path = folder / f"{case_id}_{ch}.nii.gz"
        if value is None:
            continue
        if isinstance(value, bytes):
            path.write_bytes(value)
            continue
        data, affine = value if isinstance(value, tuple) else (value, np.eye(4))
        nib.save(nib.Nifti1Image(data, affine), path)
    return folder


def _segment(*argv: str | Path, url: str) -> int:
    return cli.main(["--quiet", "segment", *map(str, argv), "--url", url, "--tta", "none", "--tile", "full"])


def _one_error_line(capsys) -> str:
    """The one line on stderr besides the warning that these small cases are not on the BraTS grid."""
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not _is_grid_warning(line)]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert lines[0].startswith("ERROR"), lines[0]
    assert "Traceback" not in err
    return lines[0]


def _is_grid_warning(line: str) -> bool:
    return line.startswith("WARNING") and "the network was trained only on BraTS data" in line


def _nothing_in(folder: Path) -> None:
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []
    assert left == [], f"written although the run failed: {left}"


def _assert_input_error(capsys, code: int, out: Path, *needles: str | Path) -> str:
    line = _one_error_line(capsys)
    assert code == exit_codes.EXIT_INPUT, f"exit {code}, expected {exit_codes.EXIT_INPUT} (input error): {line}"
    assert "no Triton server answers" not in line  # nothing was sent
    for needle in needles:
        assert str(needle) in line, f"{needle!r} not in: {line}"
    _nothing_in(out)
    return line


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# ------------------------------------------------------------------------------------------------- control


def test_a_good_case_reaches_the_server_check(tmp_path, out, dead_url, capsys):
    """The control: without a defect the same case gets past every check and fails only for want of a server."""
    case = _write_case(tmp_path / "in")
    code = _segment(case, "-o", out / "seg.nii.gz", url=dead_url)
    line = _one_error_line(capsys)
    assert code == exit_codes.EXIT_SERVER
    assert "no Triton server answers" in line and dead_url in line
    _nothing_in(out)


def test_accepted_variants_also_reach_the_server_check(tmp_path, out, dead_url, capsys):
    """A trailing singleton 4th axis and affines within the tolerance are accepted (exit 4, not 3)."""
    flair = _volume(3)[..., None]
    shifted = np.eye(4)
    shifted[0, 3] = io.AFFINE_ATOL / 10
    case = _write_case(tmp_path / "in", flair=flair, t2=(_volume(2), shifted))
    assert _segment(case, "-o", out / "seg.nii.gz", url=dead_url) == exit_codes.EXIT_SERVER
    assert "no Triton server answers" in _one_error_line(capsys)


def test_a_case_off_the_brats_grid_is_segmented_with_a_warning(tmp_path, out, dead_url, capsys):
    """0.5 x 0.5 x 5 mm voxels and a small shape: a warning saying what the network expects, then on to the
    server (exit 4 here, for want of one), not an input error."""
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    case = _write_case(tmp_path / "in", **{ch: (_volume(i), affine) for i, ch in enumerate(CHANNELS)})
    code = _segment(case, "-o", out / "seg.nii.gz", url=dead_url)
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_SERVER, err
    warnings = [line for line in err.splitlines() if _is_grid_warning(line)]
    assert len(warnings) == 1, err
    assert str(case / f"{CASE}_t1.nii.gz") in warnings[0]
    assert "voxels of 0.5 x 0.5 x 5 mm and shape 24x24x16" in warnings[0]
    assert "1 mm isotropic, 240x240x155" in warnings[0] and "resample" in warnings[0]


# -------------------------------------------------------------------------------------------------- inputs


def test_missing_modality_in_a_folder(tmp_path, out, dead_url, capsys):
    case = _write_case(tmp_path / "in", flair=None)
    code = _segment(case, "-o", out / "seg.nii.gz", url=dead_url)
    _assert_input_error(capsys, code, out, case, "missing flair")


def test_missing_explicit_modality(tmp_path, out, dead_url, capsys):
    case = _write_case(tmp_path / "in")
    files = {ch: case / f"{CASE}_{ch}.nii.gz" for ch in CHANNELS}
    code = _segment("--t1", files["t1"], "--t1ce", files["t1ce"], "--t2", files["t2"],
                    "-o", out / "seg.nii.gz", url=dead_url)
    _assert_input_error(capsys, code, out, "missing --flair")


def test_explicit_file_that_does_not_exist(tmp_path, out, dead_url, capsys):
    case = _write_case(tmp_path / "in")
    files = {ch: case / f"{CASE}_{ch}.nii.gz" for ch in CHANNELS}
    files["t2"] = case / "nope_t2.nii.gz"
    code = _segment(*[a for ch in CHANNELS for a in (f"--{ch}", files[ch])], "-o", out / "seg.nii.gz", url=dead_url)
    _assert_input_error(capsys, code, out, files["t2"], "does not exist")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"this is not an image\n", "not a readable NIfTI file"),
        (gzip.compress(b"\0" * 4096), "not a readable NIfTI file"),  # valid gzip, not a NIfTI header
        (b"", "not a readable NIfTI file"),
    ],
    ids=["text", "gzip-of-zeros", "empty"],
)
def test_non_nifti_file(tmp_path, out, dead_url, capsys, content, needle):
    case = _write_case(tmp_path / "in", t1ce=content)
    code = _segment(case, "-o", out / "seg.nii.gz", url=dead_url)
    _assert_input_error(capsys, code, out, case / f"{CASE}_t1ce.nii.gz", needle)


def test_explicit_input_that_is_a_folder_or_not_nifti(tmp_path, out, dead_url, capsys):
    case = _write_case(tmp_path / "in")
    files = {ch: case / f"{CASE}_{ch}.nii.gz" for ch in CHANNELS}
    png = tmp_path / "flair.png"
    png.write_bytes(b"\x89PNG\r\n")
    for bad, needle in ((tmp_path / "in", "is not a file"), (png, "not a .nii or .nii.gz file")):
        args = [a for ch in CHANNELS for a in (f"--{ch}", bad if ch == "flair" else files[ch])]
        code = _segment(*args, "-o", out / "seg.nii.gz", url=dead_url)
        _assert_input_error(capsys, code, out, bad, needle)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_file(tmp_path, out, dead_url, capsys, suffix):
    case = _write_case(tmp_path / "in")
    good = case / f"{CASE}_t2.nii.gz"
    bad = case / f"{CASE}_t2{suffix}"
    img = nib.load(str(good))
    voxels = np.asarray(img.dataobj)
    good.unlink()
    nib.save(nib.Nifti1Image(voxels, img.affine), bad)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) * 2 // 3])  # the header survives, the voxels do not
    code = _segment(case, "-o", out / "seg.nii.gz", url=dead_url)
    _assert_input_error(capsys, code, out, bad, "truncated or corrupt")


@pytest.mark.parametrize("shape", [(24, 24), (24, 24, 16, 2)], ids=["2d", "4d"])
def test_not_a_3d_volume(tmp_path, out, dead_url, capsys, shape):
    case = _write_case(tmp_path / "in", t1=np.ones(shape, dtype=np.float32))
    code = _segment(case, "-o", out / "seg.nii.gz", url=dead_url)
    _assert_input_error(capsys, code, out, case / f"{CASE}_t1.nii.gz", "a 3-D volume (one modality per file",
                        str(shape))


def test_modalities_of_different_shapes(tmp_path, out, dead_url, capsys):
    case = _write_case(tmp_path / "in", flair=_volume(3, (24, 24, 18)))
    code = _segment(case, "-o", out / "seg.nii.gz", url=dead_url)
    _assert_input_error(capsys, code, out, case / f"{CASE}_flair.nii.gz", "(24, 24, 18)", "(24, 24, 16)",
                        "co-registered")


@pytest.mark.parametrize("where", ["translation", "voxel size"])
def test_affines_differing_beyond_the_tolerance(tmp_path, out, dead_url, capsys, where):
    affine = np.eye(4)
    if where == "translation":
        affine[2, 3] = 0.5
    else:
        affine[1, 1] = 1.01
    case = _write_case(tmp_path / "in", t1ce=(_volume(1), affine))
    code = _segment(case, "-o", out / "seg.nii.gz", url=dead_url)
    _assert_input_error(capsys, code, out, case / f"{CASE}_t1ce.nii.gz", case / f"{CASE}_t1.nii.gz",
                        "affines differing")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_nan_or_inf_voxels(tmp_path, out, dead_url, capsys, value):
    data = _volume(2)
    data[5, 6, 7] = value
    data[8, 8, 8] = value
    case = _write_case(tmp_path / "in", t2=data)
    code = _segment(case, "-o", out / "seg.nii.gz", url=dead_url)
    _assert_input_error(capsys, code, out, case / f"{CASE}_t2.nii.gz", "2 NaN/Inf voxels")


def test_all_zero_case_is_an_error(tmp_path, out, dead_url, capsys):
    """The project's decision (README): an all-zero case is refused, exit 3, not an empty segmentation."""
    zeros = np.zeros(SHAPE, dtype=np.float32)
    case = _write_case(tmp_path / "in", **dict.fromkeys(CHANNELS, zeros))
    code = _segment(case, "-o", out / "seg.nii.gz", url=dead_url)
    _assert_input_error(capsys, code, out, CASE, case / f"{CASE}_flair.nii.gz", "every voxel is 0")


def test_one_zero_modality_is_accepted(tmp_path, out, dead_url, capsys):
    """Only a case with no nonzero voxel at all is refused; one empty channel is left as is (preprocess doc)."""
    case = _write_case(tmp_path / "in", t1ce=np.zeros(SHAPE, dtype=np.float32))
    assert _segment(case, "-o", out / "seg.nii.gz", url=dead_url) == exit_codes.EXIT_SERVER
    capsys.readouterr()


def test_volume_over_the_size_limit(tmp_path, out, dead_url, capsys):
    case = _write_case(tmp_path / "in")
    voxels = int(np.prod(SHAPE))
    code = _segment(case, "-o", out / "seg.nii.gz", "--max-voxels", voxels - 1, url=dead_url)
    _assert_input_error(capsys, code, out, case / f"{CASE}_t1.nii.gz", f"{voxels} voxels",
                        f"more than the limit {voxels - 1}")
    assert _segment(case, "-o", out / "seg.nii.gz", "--max-voxels", voxels, url=dead_url) == exit_codes.EXIT_SERVER
    capsys.readouterr()
    assert _segment(case, "-o", out / "seg.nii.gz", "--max-voxels", 0, url=dead_url) == exit_codes.EXIT_USAGE
    assert "--max-voxels" in _one_error_line(capsys)


def test_size_limit_default_and_python_api(tmp_path):
    """The default limit is io.MAX_VOXELS (2**26 per modality, 1 GiB for the four float32 channels), checked on the
    header before any voxel is read."""
    assert io.MAX_VOXELS == 2**26
    files = find_case_files(_write_case(tmp_path / "in"))
    assert io.load_case(files).shape == SHAPE
    with pytest.raises(InputError, match="more than the limit 100; resample it first"):
        io.load_case(files, max_voxels=100)


# ------------------------------------------------------------------------------------------------- outputs


def _assert_output_error(capsys, code: int, *needles: str | Path) -> str:
    line = _one_error_line(capsys)
    assert code == exit_codes.EXIT_OUTPUT, f"exit {code}, expected {exit_codes.EXIT_OUTPUT} (output error): {line}"
    assert "no Triton server answers" not in line
    for needle in needles:
        assert str(needle) in line, f"{needle!r} not in: {line}"
    return line


def test_output_under_a_regular_file(tmp_path, dead_url, capsys):
    """Root ignores permission bits, but nobody can create a file inside a file."""
    case = _write_case(tmp_path / "in")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    for target in (blocker / "seg.nii.gz", blocker / "deeper" / "seg.nii.gz"):
        code = _segment(case, "-o", target, url=dead_url)
        _assert_output_error(capsys, code, target, "is not a folder")
    assert blocker.read_text() == "a file, not a folder"


def test_output_in_a_folder_nobody_can_write(tmp_path, dead_url, capsys):
    """/proc refuses new files even to root; os.access says yes there, so the check must try to create one."""
    case = _write_case(tmp_path / "in")
    target = Path("/proc/brats-test-output/seg.nii.gz")
    code = _segment(case, "-o", target, url=dead_url)
    _assert_output_error(capsys, code, target, "not writable")


def test_report_or_probabilities_not_writable(tmp_path, out, dead_url, capsys):
    case = _write_case(tmp_path / "in")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    for flag in ("--report", "--probabilities"):
        suffix = ".json" if flag == "--report" else ".nii.gz"
        code = _segment(case, "-o", out / "seg.nii.gz", flag, blocker / f"r{suffix}", url=dead_url)
        _assert_output_error(capsys, code, blocker)
    _nothing_in(out)


def test_batch_output_folder_not_usable(tmp_path, dead_url, capsys):
    root = tmp_path / "cases"
    _write_case(root, "BadA")
    _write_case(root, "BadB")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    for target, needle in ((blocker, "is not a folder"), (blocker / "out", "cannot create output folder"),
                           (tmp_path / "out.nii.gz", "holds several cases; give an output folder")):
        code = _segment(root, "-o", target, url=dead_url)
        _assert_output_error(capsys, code, target, needle)
    assert blocker.read_text() == "x"
    assert not (tmp_path / "out.nii.gz").exists()


def test_existing_output_without_overwrite(tmp_path, out, dead_url, capsys):
    case = _write_case(tmp_path / "in")
    seg, report = out / "seg.nii.gz", out / "seg.json"
    seg.write_bytes(b"keep me")
    code = _segment(case, "-o", seg, url=dead_url)
    _assert_output_error(capsys, code, seg, "exists; pass --overwrite")
    seg.unlink()
    report.write_text("{}")
    code = _segment(case, "-o", seg, "--report", report, url=dead_url)
    _assert_output_error(capsys, code, report, "exists; pass --overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["seg.json"] and report.read_text() == "{}"
    # with --overwrite the outputs pass and the run goes on to the (missing) server
    assert _segment(case, "-o", seg, "--report", report, "--overwrite", url=dead_url) == exit_codes.EXIT_SERVER
    assert report.read_text() == "{}"


def test_output_name_must_be_nifti_for_one_case(tmp_path, out, dead_url, capsys):
    case = _write_case(tmp_path / "in")
    code = _segment(case, "-o", out / "seg.png", url=dead_url)
    _assert_output_error(capsys, code, out / "seg.png", ".nii or .nii.gz")
    _nothing_in(out)


# ------------------------------------------------------------------------------------------------- case ids


@pytest.mark.parametrize("case_id", ["evil\\..\\..\\x", "a\\b"])
def test_case_id_with_path_separators_is_refused(tmp_path, out, dead_url, capsys, case_id):
    """A case id becomes the output file name in batch mode: ids with separators or '..' are refused, in a case
    folder, in a batch, and from explicit files."""
    root = tmp_path / "in"
    root.mkdir()
    case = root / "case"
    case.mkdir()
    for i, ch in enumerate(CHANNELS):
        nib.save(nib.Nifti1Image(_volume(i), np.eye(4)), case / f"{case_id}_{ch}.nii.gz")
    code = _segment(case, "-o", out / "seg.nii.gz", url=dead_url)
    _assert_input_error(capsys, code, out, repr(case_id), "cannot be used as a file name")
    code = _segment(root, "-o", out, url=dead_url)  # in a batch: reported as a failed case, nothing sent
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_PARTIAL and "case: not segmented: case id" in err and repr(case_id) in err
    _nothing_in(out)
    args = [a for ch in CHANNELS for a in (f"--{ch}", case / f"{case_id}_{ch}.nii.gz")]
    code = _segment(*args, "-o", out / "seg.nii.gz", url=dead_url)
    _assert_input_error(capsys, code, out, repr(case_id), "cannot be used as a file name")


# -------------------------------------------------------------------------------------------------- usage


def test_usage_errors(tmp_path, out, dead_url, capsys):
    case = _write_case(tmp_path / "in")
    assert _segment(case, "-o", out / "seg.nii.gz", "--overlap", "1.5", url=dead_url) == exit_codes.EXIT_USAGE
    assert "overlap" in _one_error_line(capsys)
    argv = ["--quiet", "segment", str(case), "-o", str(out / "seg.nii.gz"), "--url", dead_url, "--tile", "20"]
    assert cli.main(argv) == exit_codes.EXIT_USAGE  # a code, not SystemExit, as brats-export and brats-serve return
    assert "(--tile) must be a multiple of 16" in capsys.readouterr().err
    _nothing_in(out)


def test_no_output_appears_in_the_input_folder(tmp_path, dead_url, capsys):
    """Failed runs leave the case folder as it was (no probe or temporary files)."""
    case = _write_case(tmp_path / "in", t2=b"junk")
    before = sorted(os.listdir(case))
    assert _segment(case, "-o", case / "seg.nii.gz", url=dead_url) == exit_codes.EXIT_INPUT
    capsys.readouterr()
    assert sorted(os.listdir(case)) == before


def test_a_flat_folder_of_one_nnunet_case_and_an_output_folder_is_a_batch(tmp_path, dead_url, capsys):
    """nnU-Net's imagesTs holding one case, -o a folder: a batch of one (it reaches the server: exit 4), not a
    single case refused for its folder output (exit 5, issue 22)."""
    images = tmp_path / "imagesTs"
    images.mkdir()
    for i in range(4):
        nib.save(nib.Nifti1Image(_volume(i), np.eye(4)), images / f"BRATS_001_000{i}.nii.gz")
    code = _segment(images, "-o", tmp_path / "out", "--channel-order", "FLAIR,T1w,t1gd,T2w", url=dead_url)
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_SERVER and "no Triton server answers" in err, err

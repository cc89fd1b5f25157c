"""Finding the four modalities: BraTS 2019 / 2023 / nnU-Net names, explicit paths, batch folders, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from brats_client import modalities
from brats_client.errors import InputError
from brats_client.modalities import CHANNELS, explicit_case, find_case_files, find_cases, is_case_folder


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def _brats19(folder: Path, case: str = "BraTS19_TCIA_001_1", ext: str = ".nii.gz") -> Path:
    return _touch(folder, *(f"{case}_{m}{ext}" for m in ("flair", "t1ce", "t2", "t1")), f"{case}_seg{ext}")


def test_brats2019_t1_does_not_match_t1ce(tmp_path: Path) -> None:
    files = find_case_files(_brats19(tmp_path / "c"))
    assert files.case_id == "BraTS19_TCIA_001_1"
    assert files.naming == "brats2019"
    assert list(files.paths) == list(CHANNELS)
    assert {ch: p.name for ch, p in files.paths.items()} == {
        "t1": "BraTS19_TCIA_001_1_t1.nii.gz",
        "t1ce": "BraTS19_TCIA_001_1_t1ce.nii.gz",
        "t2": "BraTS19_TCIA_001_1_t2.nii.gz",
        "flair": "BraTS19_TCIA_001_1_flair.nii.gz",
    }


def test_brats2019_uncompressed_and_upper_case(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "c", "x_T1.nii", "x_T1CE.nii", "x_T2.nii", "x_FLAIR.nii", "notes.txt")
    files = find_case_files(folder)
    assert files.case_id == "x" and files.paths["t1ce"].name == "x_T1CE.nii"


def test_brats2023(tmp_path: Path) -> None:
    case = "BraTS-GLI-00001-000"
    folder = _touch(tmp_path / case, *(f"{case}-{m}.nii.gz" for m in ("t1n", "t1c", "t2w", "t2f", "seg")))
    files = find_case_files(folder)
    assert files.naming == "brats2023" and files.case_id == case
    assert files.paths["t1"].name.endswith("-t1n.nii.gz")
    assert files.paths["t1ce"].name.endswith("-t1c.nii.gz")
    assert files.paths["t2"].name.endswith("-t2w.nii.gz")
    assert files.paths["flair"].name.endswith("-t2f.nii.gz")


def test_nnunet_needs_channel_order(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "c", *(f"BRATS_001_000{i}.nii.gz" for i in range(4)))
    with pytest.raises(InputError, match="--channel-order"):
        find_case_files(folder)
    files = find_case_files(folder, nnunet_order=["flair", "t1", "t1ce", "t2"])  # the MSD Task01 order
    assert files.naming == "nnunet" and files.case_id == "BRATS_001"
    assert files.paths["flair"].name == "BRATS_001_0000.nii.gz"
    assert files.paths["t2"].name == "BRATS_001_0003.nii.gz"
    assert find_case_files(folder, nnunet_order=["T1N", "t1c", "t2w", "t2f"]).paths["t1"].name.endswith("_0000.nii.gz")


@pytest.mark.parametrize("order", [["t1", "t1", "t2", "flair"], ["t1", "t1ce", "t2"], ["t1", "t1ce", "t2", "pd"]])
def test_bad_channel_order(tmp_path: Path, order: list[str]) -> None:
    folder = _touch(tmp_path / "c", *(f"a_000{i}.nii.gz" for i in range(4)))
    with pytest.raises(InputError, match="exactly once"):
        find_case_files(folder, nnunet_order=order)


def test_nnunet_fifth_channel(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "c", *(f"a_000{i}.nii.gz" for i in range(5)))
    with pytest.raises(InputError, match="a_0004.nii.gz"):
        find_case_files(folder, nnunet_order=list(CHANNELS))


def test_missing_modalities_named(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "c", "a_t1.nii.gz", "a_t2.nii.gz")
    with pytest.raises(InputError, match=r"missing t1ce, flair") as e:
        find_case_files(folder)
    assert str(folder) in str(e.value)


def test_ambiguous_modality_named(tmp_path: Path) -> None:
    folder = _brats19(tmp_path / "c", case="a")
    _touch(folder, "a_t1.nii")
    with pytest.raises(InputError, match=r"t1 matches several files \(a_t1.nii, a_t1.nii.gz\)"):
        find_case_files(folder)


def test_several_cases_or_schemes_in_one_folder(tmp_path: Path) -> None:
    folder = _brats19(tmp_path / "c", case="a")
    _brats19(folder, case="b")
    with pytest.raises(InputError, match=r"several cases \(a, b\)"):
        find_case_files(folder)
    mixed = _brats19(tmp_path / "m", case="a")
    _touch(mixed, "a-t1n.nii.gz")
    with pytest.raises(InputError, match="mixes naming schemes"):
        find_case_files(mixed)


def test_no_modality_files(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "c", "brain.nii.gz", "a_seg.nii.gz")
    with pytest.raises(InputError, match=r"no modality files in .*found only brain.nii.gz"):
        find_case_files(folder)
    with pytest.raises(InputError, match="does not exist"):
        find_case_files(tmp_path / "nope")


def test_case_id_with_dots_rejected(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "c", *(f"a.._{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")))
    with pytest.raises(InputError, match="cannot be used as a file name"):
        find_case_files(folder)
    for bad in ("", "..", "a/b", "a\\b", "x..y"):
        with pytest.raises(InputError):
            modalities.check_case_id(bad)


def test_explicit_case(tmp_path: Path) -> None:
    folder = _brats19(tmp_path / "c", case="p")
    paths = {m: folder / f"p_{m}.nii.gz" for m in CHANNELS}
    files = explicit_case(**paths)
    assert files.naming == "explicit" and files.case_id == "p" and files.paths == paths
    assert explicit_case(**paths, case_id="patient7").case_id == "patient7"
    with pytest.raises(InputError, match="--t2 .* does not exist"):
        explicit_case(**{**paths, "t2": folder / "missing.nii.gz"})
    with pytest.raises(InputError, match="--t1 and --t2 are the same file"):
        explicit_case(**{**paths, "t2": paths["t1"]})
    with pytest.raises(InputError, match="cannot be used as a file name"):
        explicit_case(**paths, case_id="../escape")


def test_case_files_is_validated_and_ordered(tmp_path: Path) -> None:
    files = modalities.CaseFiles("a", {ch: tmp_path / ch for ch in reversed(CHANNELS)}, "brats2019")
    assert list(files.paths) == list(CHANNELS)
    with pytest.raises(InputError, match="need exactly the channels"):
        modalities.CaseFiles("a", {"t1": tmp_path}, "brats2019")


def test_is_case_folder(tmp_path: Path) -> None:
    case = _brats19(tmp_path / "root" / "a", case="a")
    assert is_case_folder(case)
    assert not is_case_folder(tmp_path / "root")  # a folder of case folders
    assert not is_case_folder(case / "a_t1.nii.gz")
    assert is_case_folder(_touch(tmp_path / "odd", "scan.nii.gz"))  # unrecognised files: a (bad) case folder
    flat = _touch(tmp_path / "flat", *(f"{c}_000{i}.nii.gz" for c in ("x", "y") for i in range(4)))
    assert not is_case_folder(flat)


def test_find_cases_folder_of_case_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _brats19(root / "b", case="b")
    _brats19(root / "a", case="a")
    _touch(root / "b_out")  # empty folders are ignored
    _touch(root, "README.txt")
    cases, invalid = find_cases(root)
    assert [c.case_id for c in cases] == ["a", "b"] and invalid == []


def test_find_cases_flat_nnunet_folder(tmp_path: Path) -> None:
    flat = _touch(tmp_path / "imagesTs", *(f"{c}_000{i}.nii.gz" for c in ("y", "x") for i in range(4)))
    cases, invalid = find_cases(flat, nnunet_order=list(CHANNELS))
    assert [c.case_id for c in cases] == ["x", "y"] and invalid == []
    assert cases[0].paths["flair"].name == "x_0003.nii.gz"


def test_find_cases_errors(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _brats19(root / "a", case="a")
    _touch(root / "bad", "bad_t1.nii.gz")
    cases, invalid = find_cases(root)  # the invalid case is reported, the valid one kept
    assert [c.case_id for c in cases] == ["a"]
    assert [c.name for c in invalid] == ["bad"] and "missing t1ce, t2, flair" in invalid[0].reason
    _brats19(root / "a_copy", case="a")
    with pytest.raises(InputError, match="case id a appears twice"):
        find_cases(root)
    with pytest.raises(InputError, match="no cases"):
        find_cases(_touch(tmp_path / "empty"))


def test_label_convention_follows_the_names(tmp_path: Path) -> None:
    """BraTS 2023 names (in a folder or given explicitly) -> ET = 3; every other naming -> BraTS 2019's ET = 4."""
    case = "BraTS-GLI-00002-000"
    b23 = _touch(tmp_path / case, *(f"{case}-{m}.nii.gz" for m in ("t1n", "t1c", "t2w", "t2f")))
    assert modalities.input_convention(find_case_files(b23)) == ("brats2023", "BraTS 2023 file names")
    explicit23 = {ch: b23 / f"{case}-{m}.nii.gz" for ch, m in zip(CHANNELS, ("t1n", "t1c", "t2w", "t2f"), strict=True)}
    assert modalities.input_convention(explicit_case(**explicit23))[0] == "brats2023"
    assert modalities.input_convention(find_case_files(_brats19(tmp_path / "b19")))[0] == "brats2019"
    nnunet = _touch(tmp_path / "nn", *(f"BRATS_001_000{i}.nii.gz" for i in range(4)))
    assert modalities.input_convention(find_case_files(nnunet, nnunet_order=list(CHANNELS)))[0] == "brats2019"
    # explicit files of which only some carry BraTS 2023 names: not a BraTS 2023 case
    other = _touch(tmp_path / "other", "anat.nii.gz")
    mixed = {**explicit23, "t1": other / "anat.nii.gz"}
    assert modalities.input_convention(explicit_case(**mixed))[0] == "brats2019"

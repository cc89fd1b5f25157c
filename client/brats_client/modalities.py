"""Find the four MRI modalities of a case: BraTS 2019, BraTS 2023 and nnU-Net file names, or explicit paths.

The network takes its channels in the order :data:`CHANNELS` (t1, t1ce, t2, flair). Recognised names
(``.nii`` or ``.nii.gz``; the modality suffix is matched case-insensitively, ``_seg`` / ``-seg`` files are ignored):

=========  ====================================================  ==========================================
naming     files                                                  channels
=========  ====================================================  ==========================================
brats2019  ``<case>_t1``, ``_t1ce``, ``_t2``, ``_flair``            t1, t1ce, t2, flair
brats2023  ``<case>-t1n``, ``-t1c``, ``-t2w``, ``-t2f``             t1, t1ce, t2, flair
nnunet     ``<case>_0000`` .. ``_0003``                             given by ``nnunet_order`` (``--channel-order``)
=========  ====================================================  ==========================================

nnU-Net datasets fix the channel order in their ``dataset.json``, which is not next to the images, so the order
is never guessed: nnU-Net names without ``nnunet_order`` are an :class:`~brats_client.errors.InputError`.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .contract import CHANNELS
from .errors import InputError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NAMINGS = ("brats2019", "brats2023", "nnunet", "explicit")

# Each pattern is anchored at the end of the name (suffix removed), so ``_t1`` never matches ``..._t1ce``.
_PATTERNS = {
    "brats2019": re.compile(r"^(?P<case>.+)_(?P<key>t1|t1ce|t2|flair)$", re.IGNORECASE),
    "brats2023": re.compile(r"^(?P<case>.+)-(?P<key>t1n|t1c|t2w|t2f)$", re.IGNORECASE),
    "nnunet": re.compile(r"^(?P<case>.+)_(?P<key>\d{4})$"),
}
_BRATS2023 = {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"}
_SEGMENTATION = re.compile(r"[_-]seg$", re.IGNORECASE)
_EXPECTED = {
    "brats2019": "<case>_t1, <case>_t1ce, <case>_t2, <case>_flair",
    "brats2023": "<case>-t1n, <case>-t1c, <case>-t2w, <case>-t2f",
    "nnunet": "<case>_0000 .. <case>_0003",
}
# Accepted spellings in ``--channel-order`` besides CHANNELS themselves.
_ALIASES = {
    "t1n": "t1", "t1c": "t1ce", "t1gd": "t1ce", "t1-ce": "t1ce", "t2w": "t2", "t2f": "flair", "t2-flair": "flair"
}


@dataclass(frozen=True)
class CaseFiles:
    """The four modality files of one case, ``paths`` keyed by channel in :data:`CHANNELS` order."""

    case_id: str
    paths: dict[str, Path]
    naming: str

    def __post_init__(self) -> None:
        check_case_id(self.case_id)
        if set(self.paths) != set(CHANNELS):
            raise InputError(
                f"case {self.case_id}: need exactly the channels {', '.join(CHANNELS)}, got {sorted(self.paths)}"
            )
        if self.naming not in NAMINGS:
            raise ValueError(f"naming must be one of {', '.join(NAMINGS)}; got {self.naming!r}")
        object.__setattr__(self, "paths", {ch: Path(self.paths[ch]) for ch in CHANNELS})


def segmentation_case_id(path: str | Path) -> str | None:
    """``<case>_seg.nii.gz`` or ``<case>-seg.nii.gz`` -> ``<case>``; None for any other name."""
    stem = strip_nifti_suffix(Path(path).name)
    if stem is None:
        return None
    m = _SEGMENTATION.search(stem)
    return stem[: m.start()] if m and m.start() > 0 else None


def is_brats_modality(path: str | Path) -> bool:
    """True for a BraTS 2019 or 2023 modality file name (``<case>_t1ce.nii.gz``, ``<case>-t2f.nii``, ...)."""
    m = _match(Path(path))
    return m is not None and m.naming in ("brats2019", "brats2023")


def label_convention(files: CaseFiles) -> str:
    """The output label convention that goes with the input names: ``brats2023`` (ET = 3) when the four files
    carry BraTS 2023 names (found in a folder or given explicitly), else ``brats2019`` (ET = 4)."""
    if files.naming == "brats2023":
        return "brats2023"
    if files.naming == "explicit":
        namings = {m.naming if m else None for m in map(_match, files.paths.values())}
        if namings == {"brats2023"}:
            return "brats2023"
    return "brats2019"


def check_case_id(case_id: str) -> str:
    """A case id becomes an output file name: refuse empty ids, path separators and ``..``."""
    if not case_id or case_id in (".", "..") or any(c in case_id for c in "/\\\0") or ".." in case_id:
        raise InputError(f"case id {case_id!r} cannot be used as a file name (no '/', '\\', '..'); rename the files")
    return case_id


def strip_nifti_suffix(name: str) -> str | None:
    """``"a_t1.nii.gz"`` -> ``"a_t1"``; None when the name is not a NIfTI file name."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def parse_channel_order(order: Sequence[str]) -> tuple[str, ...]:
    """Validate an nnU-Net channel order (the modalities of ``_0000``, ``_0001``, ...): a permutation of CHANNELS."""
    names = tuple(_ALIASES.get(s.strip().lower(), s.strip().lower()) for s in order)
    if sorted(names) != sorted(CHANNELS):
        raise InputError(
            f"--channel-order {','.join(order)} must name each of {','.join(CHANNELS)} exactly once "
            f"(the modalities of _0000.._0003 in the dataset's dataset.json)"
        )
    return names


@dataclass(frozen=True)
class _Match:
    path: Path
    naming: str
    case: str
    key: str  # channel for BraTS names, 4-digit index for nnU-Net


def _nifti_files(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise InputError(f"cannot list {folder}: {e.strerror or e}") from e
    return [p for p in entries if not p.name.startswith(".") and strip_nifti_suffix(p.name) and p.is_file()]


def _match(path: Path) -> _Match | None:
    stem = strip_nifti_suffix(path.name)
    if stem is None or _SEGMENTATION.search(stem):
        return None
    for naming, pattern in _PATTERNS.items():
        m = pattern.match(stem)
        if m is None:
            continue
        key = m["key"].lower()
        if naming == "brats2023":
            key = _BRATS2023[key]
        return _Match(path, naming, m["case"], key)
    return None


def _scan(folder: Path) -> tuple[list[_Match], list[Path]]:
    """Recognised modality files and the other NIfTI files (segmentations excluded from both)."""
    matches, others = [], []
    for path in _nifti_files(folder):
        m = _match(path)
        if m is not None:
            matches.append(m)
        elif not _SEGMENTATION.search(strip_nifti_suffix(path.name) or ""):
            others.append(path)
    return matches, others


def _names(paths: Iterable[Path]) -> str:
    return ", ".join(p.name for p in paths)


def _resolve(folder: Path, matches: list[_Match], nnunet_order: Sequence[str] | None) -> CaseFiles:
    """Build a case from the matches of ONE naming scheme and ONE case id."""
    naming, case = matches[0].naming, matches[0].case
    by_key: dict[str, list[Path]] = defaultdict(list)
    for m in matches:
        by_key[m.key].append(m.path)
    if naming == "nnunet":
        if not nnunet_order:
            raise InputError(
                f"{folder} holds nnU-Net names ({_names(m.path for m in matches)}) whose channel order is set by the "
                f"dataset; pass --channel-order (e.g. --channel-order t1,t1ce,t2,flair) to say which is which"
            )
        order = parse_channel_order(nnunet_order)
        extra = sorted(k for k in by_key if int(k) >= len(CHANNELS))
        if extra:
            raise InputError(
                f"{folder}: the model takes 4 channels (_0000.._0003) but found "
                f"{_names(p for k in extra for p in by_key[k])}; pass the four files with --t1/--t1ce/--t2/--flair"
            )
        by_key = {order[int(k)]: paths for k, paths in by_key.items()}
    missing = [ch for ch in CHANNELS if ch not in by_key]
    ambiguous = {ch: paths for ch, paths in by_key.items() if len(paths) > 1}
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    for ch, paths in ambiguous.items():
        problems.append(f"{ch} matches several files ({_names(paths)})")
    if problems:
        raise InputError(
            f"case {case} in {folder}: {'; '.join(problems)} (expected {_EXPECTED[naming]} .nii.gz); "
            f"or pass the files with --t1/--t1ce/--t2/--flair"
        )
    return CaseFiles(check_case_id(case), {ch: by_key[ch][0] for ch in CHANNELS}, naming)


def _groups(matches: list[_Match]) -> dict[tuple[str, str], list[_Match]]:
    groups: dict[tuple[str, str], list[_Match]] = defaultdict(list)
    for m in matches:
        groups[(m.naming, m.case)].append(m)
    return dict(groups)


def find_case_files(folder: str | Path, *, nnunet_order: Sequence[str] | None = None) -> CaseFiles:
    """The four modalities of the case in ``folder``.

    Raises :class:`InputError` naming the folder and the missing or ambiguous modalities, when the folder mixes
    naming schemes or cases, and for nnU-Net names without ``nnunet_order``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"case folder {folder} does not exist or is not a folder")
    matches, others = _scan(folder)
    if not matches:
        found = f"; found only {_names(others)}" if others else ""
        raise InputError(
            f"no modality files in {folder}{found}: expected {_EXPECTED['brats2019']} (BraTS 2019), "
            f"{_EXPECTED['brats2023']} (BraTS 2023) or {_EXPECTED['nnunet']} (nnU-Net, with --channel-order), "
            f"as .nii or .nii.gz; or pass the files with --t1/--t1ce/--t2/--flair"
        )
    namings = sorted({m.naming for m in matches})
    if len(namings) > 1:
        raise InputError(
            f"{folder} mixes naming schemes ({', '.join(namings)}: {_names(m.path for m in matches)}); "
            f"keep one case per folder or pass the files with --t1/--t1ce/--t2/--flair"
        )
    cases = sorted({m.case for m in matches})
    if len(cases) > 1:
        raise InputError(
            f"{folder} holds files of several cases ({', '.join(cases)}); give the parent folder for batch mode, "
            f"or pass one case's files with --t1/--t1ce/--t2/--flair"
        )
    files = _resolve(folder, matches, nnunet_order)
    if others:
        log.debug("%s: ignored %s", folder, _names(others))
    return files


def explicit_case(
    t1: str | Path, t1ce: str | Path, t2: str | Path, flair: str | Path, case_id: str | None = None
) -> CaseFiles:
    """A case from four explicit paths (``--t1 --t1ce --t2 --flair``); each must be an existing file.

    ``case_id`` defaults to the t1 file name without its NIfTI suffix and modality suffix.
    """
    given = {"t1": Path(t1), "t1ce": Path(t1ce), "t2": Path(t2), "flair": Path(flair)}
    for ch, path in given.items():
        if not path.is_file():
            raise InputError(f"--{ch} {path} does not exist or is not a file")
        if strip_nifti_suffix(path.name) is None:
            raise InputError(f"--{ch} {path} is not a .nii or .nii.gz file")
    seen: dict[Path, str] = {}
    for ch, path in given.items():
        key = path.resolve()
        if key in seen:
            raise InputError(f"--{seen[key]} and --{ch} are the same file {path}; give four different modalities")
        seen[key] = ch
    if case_id is None:
        m = _match(given["t1"])
        case_id = m.case if m is not None else strip_nifti_suffix(given["t1"].name)
    return CaseFiles(check_case_id(str(case_id)), given, "explicit")


def is_case_folder(path: str | Path) -> bool:
    """True for a folder holding one case's NIfTI files (recognised or not); False for a folder of case folders,
    a flat folder of several cases (nnU-Net ``imagesTs``) or a file."""
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        matches, others = _scan(path)
    except InputError:
        return False
    if not matches:
        return bool(others)
    return len({m.case for m in matches}) == 1


def find_cases(
    folder: str | Path, *, nnunet_order: Sequence[str] | None = None, skip_invalid: bool = False
) -> list[CaseFiles]:
    """Batch mode: every case under ``folder``, sorted by case id.

    A case is either a direct sub-folder holding one case, or a group of files sharing a case id directly in
    ``folder`` (the nnU-Net ``imagesTs`` layout). Deeper folders are not searched. Invalid cases raise one
    :class:`InputError` listing all of them, unless ``skip_invalid`` (then each is logged and skipped).
    Two cases with the same id are an error: their outputs would collide.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"input folder {folder} does not exist or is not a folder")
    try:
        subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise InputError(f"cannot list {folder}: {e.strerror or e}") from e
    cases: list[CaseFiles] = []
    problems: list[str] = []
    for sub in subfolders:
        if not is_case_folder(sub):
            if _nifti_files(sub):
                problems.append(f"{sub} holds several cases; nested batches are not searched")
            continue
        try:
            cases.append(find_case_files(sub, nnunet_order=nnunet_order))
        except InputError as e:
            problems.append(str(e))
    matches, _ = _scan(folder)
    for (_naming, _case), group in sorted(_groups(matches).items()):
        try:
            cases.append(_resolve(folder, group, nnunet_order))
        except InputError as e:
            problems.append(str(e))
    if problems and not skip_invalid:
        raise InputError(f"{len(problems)} invalid case(s) under {folder}: " + " | ".join(problems))
    for problem in problems:
        log.warning("skipped: %s", problem)
    seen: dict[str, CaseFiles] = {}
    for case in cases:
        if case.case_id in seen:
            raise InputError(
                f"case id {case.case_id} appears twice under {folder} ({case.paths['t1']} and "
                f"{seen[case.case_id].paths['t1']}); outputs would overwrite each other"
            )
        seen[case.case_id] = case
    if not cases:
        raise InputError(
            f"no cases under {folder}: expected case folders (one case's four modalities each) or nnU-Net files"
        )
    return sorted(cases, key=lambda c: c.case_id)

"""Find the four MRI modalities of a case: BraTS 2019, BraTS 2023 and nnU-Net file names, or explicit paths.

The network takes its channels in the order :data:`CHANNELS` (t1, t1ce, t2, flair). Recognised names
(``.nii`` or ``.nii.gz``; the modality suffix is matched case-insensitively, ``_seg`` / ``-seg`` files are ignored):

=========  ====================================================  ==========================================
naming     files                                                  channels
=========  ====================================================  ==========================================
brats2019  ``<case>_t1``, ``_t1ce``, ``_t2``, ``_flair``            t1, t1ce, t2, flair
brats2023  ``<case>-t1n``, ``-t1c``, ``-t2w``, ``-t2f``             t1, t1ce, t2, flair
nnunet     ``<case>_0000`` .. ``_0003``                             ``--channel-order``, or the dataset.json
msd        ``<case>.nii.gz``, one 4-D file (X, Y, Z, 4)            ``--channel-order``, or the dataset.json
=========  ====================================================  ==========================================

MSD (Medical Segmentation Decathlon, Task01_BrainTumour: ``imagesTr/``, ``imagesTs/``) and nnU-Net datasets fix the
channel order in the ``dataset.json`` beside those folders (:mod:`brats_client.dataset_json`). The order is never
guessed: without ``channel_order`` and without a dataset.json that names the channels, such a case is an
:class:`~brats_client.errors.InputError`.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import dataset_json
from .contract import CHANNELS
from .errors import InputError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NAMINGS = ("brats2019", "brats2023", "nnunet", "msd", "explicit")

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
    "msd": "<case>.nii.gz holding the 4 channels on its 4th axis",
}
# Spellings of each channel in --channel-order and in dataset.json files (MSD, nnU-Net, BraTS, RSNA-MICCAI),
# compared in lower case without separators: "T1-Gd", "t1_gd" and "T1GD" are all "t1gd".
_SPELLINGS = {
    "t1": ("t1", "t1n", "t1w", "t1native", "t1pre", "t1precontrast", "t1weighted"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1wce", "t1post", "t1postcontrast", "t1contrast", "t1cgd", "t1gad"),
    "t2": ("t2", "t2w", "t2weighted"),
    "flair": ("flair", "t2flair", "t2f", "t2wflair"),
}
_CHANNEL_OF = {spelling: channel for channel, spellings in _SPELLINGS.items() for spelling in spellings}


@dataclass(frozen=True)
class CaseFiles:
    """The four modality files of one case, ``paths`` keyed by channel in :data:`CHANNELS` order."""

    case_id: str
    paths: dict[str, Path]
    naming: str
    # a 4-D file (msd): every channel's path is that file, and this is each channel's index on its 4th axis
    channel_index: dict[str, int] | None = None
    dataset: Path | None = None  # the dataset.json that gave the channel order

    def __post_init__(self) -> None:
        check_case_id(self.case_id)
        if set(self.paths) != set(CHANNELS):
            raise InputError(
                f"case {self.case_id}: need exactly the channels {', '.join(CHANNELS)}, got {sorted(self.paths)}"
            )
        if self.naming not in NAMINGS:
            raise ValueError(f"naming must be one of {', '.join(NAMINGS)}; got {self.naming!r}")
        object.__setattr__(self, "paths", {ch: Path(self.paths[ch]) for ch in CHANNELS})
        if (self.naming == "msd") != (self.channel_index is not None):
            raise ValueError("channel_index goes with the msd naming (one 4-D file), and only with it")

    def sources(self) -> dict[str, str]:
        """Where each channel comes from: its file, or for a 4-D file ``FILE[..., i]``, channel ``i`` of its 4th
        axis (what the report's ``inputs`` say)."""
        if self.channel_index is None:
            return {ch: str(self.paths[ch]) for ch in CHANNELS}
        return {ch: f"{self.paths[ch]}[..., {self.channel_index[ch]}]" for ch in CHANNELS}

    def describe(self) -> str:
        """One line: which file, or which channel of the 4-D file, feeds each input, and where the order came from."""
        if self.channel_index is None:
            feeds = ", ".join(f"{ch} <- {path}" for ch, path in self.sources().items())
        else:
            channels = ", ".join(f"{ch} <- [..., {self.channel_index[ch]}]" for ch in CHANNELS)
            feeds = f"channels of {self.paths[CHANNELS[0]]}: {channels}"
        if self.naming in ("msd", "nnunet"):
            feeds += f" (order from {self.dataset or '--channel-order'})"
        return feeds


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


def input_convention(files: CaseFiles) -> tuple[str, str]:
    """The output label convention that goes with the input, and why: the ``labels`` of the case's dataset.json
    (MSD, nnU-Net) when it has one; ``msd`` for a 4-D MSD file; ``brats2023`` (ET = 3) when the four files carry
    BraTS 2023 names (found in a folder or given explicitly); else ``brats2019`` (ET = 4)."""
    if files.naming in ("msd", "nnunet"):
        found = dataset_json.label_convention(files.paths[CHANNELS[0]])
        if found is not None:
            return found[0], f"the labels of {found[1]}"
        if files.naming == "msd":
            return "msd", "a 4-D file of the Medical Segmentation Decathlon layout"
        return "brats2019", "nnU-Net names without a dataset.json that declares labels"
    if files.naming == "brats2023":
        return "brats2023", "BraTS 2023 file names"
    if files.naming == "explicit":
        namings = {m.naming if m else None for m in map(_match, files.paths.values())}
        if namings == {"brats2023"}:
            return "brats2023", "BraTS 2023 file names"
    return "brats2019", f"{files.naming} file names"


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


def channel_name(spelling: str) -> str | None:
    """The channel (one of CHANNELS) a name stands for, in any spelling of :data:`_SPELLINGS`; None if unknown."""
    return _CHANNEL_OF.get(re.sub(r"[^a-z0-9]", "", spelling.lower()))


def parse_channel_order(order: Sequence[str], source: str = "--channel-order") -> tuple[str, ...]:
    """The channels of ``_0000``, ``_0001``, ... (or of a 4-D file's 4th axis) from their names in ``source``
    (``--channel-order`` or a dataset.json): a permutation of CHANNELS, in any spelling of :data:`_SPELLINGS`."""
    names = tuple(channel_name(s) for s in order)
    if None in names or sorted(names) != sorted(CHANNELS):  # type: ignore[type-var]
        unknown = [s for s, n in zip(order, names, strict=True) if n is None]
        why = f"unknown name(s) {', '.join(unknown)}; " if unknown else ""
        spellings = "; ".join(f"{ch}: {', '.join(sp)}" for ch, sp in _SPELLINGS.items())
        raise InputError(
            f"{source} {','.join(order)} must name each of {','.join(CHANNELS)} exactly once ({why}accepted "
            f"spellings, in any case and with any separators: {spellings})"
        )
    return names  # type: ignore[return-value]


def channel_order(where: Path, given: Sequence[str] | None) -> tuple[tuple[str, ...], Path | None] | None:
    """The channel order of nnU-Net or MSD files in ``where``: ``given`` (``--channel-order``) when set, else the
    dataset.json beside or above ``where``; None when neither says it."""
    if given:
        return parse_channel_order(given), None
    found = dataset_json.channel_names(where)
    if found is None:
        return None
    names, path = found
    if len(names) != len(CHANNELS):
        raise InputError(
            f"{path} declares {len(names)} channels ({', '.join(names)}); the network takes the 4 MRI modalities "
            f"{', '.join(CHANNELS)}"
        )
    return parse_channel_order(names, source=f"{path}:"), path


def _order_needed(where: Path, what: str) -> InputError:
    return InputError(
        f"{what} in {where}: their channel order is set by the dataset and there is no dataset.json beside or "
        f"above them; pass --channel-order (e.g. --channel-order flair,t1,t1ce,t2 for the MSD's "
        f"FLAIR, T1w, t1gd, T2w) to say which is which"
    )


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
        if m is not None and m.naming == "nnunet" and _is_four_d(path):
            m = None  # an MSD case whose id ends in 4 digits (BRATS_0001), not channel 0001 of a case
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
    dataset = None
    if naming == "nnunet":
        found = channel_order(folder, nnunet_order)
        if found is None:
            raise _order_needed(folder, f"nnU-Net names ({_names(m.path for m in matches)})")
        order, dataset = found
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
    return CaseFiles(check_case_id(case), {ch: by_key[ch][0] for ch in CHANNELS}, naming, dataset=dataset)


def _groups(matches: list[_Match]) -> dict[tuple[str, str], list[_Match]]:
    groups: dict[tuple[str, str], list[_Match]] = defaultdict(list)
    for m in matches:
        groups[(m.naming, m.case)].append(m)
    return dict(groups)


def _fourth_axis(path: Path) -> int:
    """The number of channels on a NIfTI file's 4th axis: 0 for a 3-D file (trailing axes of length 1 ignored).
    Only the header is read; a file that is not readable NIfTI is an InputError naming it."""
    import nibabel as nib

    try:
        shape = tuple(int(s) for s in nib.load(str(path)).shape)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as e:
        raise InputError(f"{path} is not a readable NIfTI file: {' '.join(str(e).split())}") from e
    extra = [s for s in shape[3:] if s != 1]
    if len(shape) < 3 or len(extra) > 1:
        raise InputError(f"{path} has shape {shape}; expected a 3-D volume or a 4-D file of channels (X, Y, Z, 4)")
    return extra[0] if extra else 0


def msd_case(path: str | Path, channel_order_given: Sequence[str] | None = None) -> CaseFiles:
    """A case from one 4-D file holding the four modalities on its 4th axis (the MSD layout). The channel order
    comes from ``channel_order_given`` (``--channel-order``) or the dataset.json beside or above the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input {path} does not exist or is not a file")
    if strip_nifti_suffix(path.name) is None:
        raise InputError(f"input {path} is not a .nii or .nii.gz file")
    channels = _fourth_axis(path)
    if channels == 0:
        raise InputError(
            f"input {path} is one 3-D volume, but the network needs four modalities: give its case folder, "
            f"or the four files with --t1/--t1ce/--t2/--flair"
        )
    if channels != len(CHANNELS):
        raise InputError(
            f"input {path} holds {channels} channels on its 4th axis; the network takes {len(CHANNELS)} "
            f"({', '.join(CHANNELS)})"
        )
    found = channel_order(path.parent, channel_order_given)
    if found is None:
        raise _order_needed(path.parent, f"the 4-D file {path.name}")
    order, dataset = found
    index = {ch: order.index(ch) for ch in CHANNELS}
    case_id = check_case_id(strip_nifti_suffix(path.name) or path.name)
    return CaseFiles(case_id, {ch: path for ch in CHANNELS}, "msd", channel_index=index, dataset=dataset)


def _is_four_d(path: Path) -> bool:
    """True for a readable NIfTI file with channels on its 4th axis (an unreadable one is reported elsewhere)."""
    try:
        return _fourth_axis(path) > 0
    except InputError:
        return False


def _dataset_root_problem(folder: Path) -> str | None:
    """A message when ``folder`` is the top of an MSD / nnU-Net dataset rather than one of its image folders."""
    image_folders = [name for name in ("imagesTr", "imagesTs") if (folder / name).is_dir()]
    if not image_folders:
        return None
    return (
        f"{folder} is a dataset folder ({', '.join(image_folders)}); give the image folder to segment, "
        f"e.g. {folder / image_folders[-1]}"
    )


def find_case_files(folder: str | Path, *, nnunet_order: Sequence[str] | None = None) -> CaseFiles:
    """The four modalities of the case in ``folder`` (four 3-D files, or one 4-D file).

    Raises :class:`InputError` naming the folder and the missing or ambiguous modalities, when the folder mixes
    naming schemes or cases, and for nnU-Net or 4-D files whose channel order nothing gives.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"case folder {folder} does not exist or is not a folder")
    matches, others = _scan(folder)
    if not matches:
        root = _dataset_root_problem(folder)
        if root is not None:
            raise InputError(root)
        four_d = [p for p in others if _is_four_d(p)]
        if len(four_d) == 1:
            return msd_case(four_d[0], nnunet_order)
        if four_d:
            raise InputError(
                f"{folder} holds {len(four_d)} 4-D cases ({_names(four_d[:3])}{', ...' if len(four_d) > 3 else ''}); "
                f"give an output folder to segment them all, or one file as INPUT"
            )
        found = f"; found only {_names(others)}" if others else ""
        raise InputError(
            f"no modality files in {folder}{found}: expected {_EXPECTED['brats2019']} (BraTS 2019), "
            f"{_EXPECTED['brats2023']} (BraTS 2023), {_EXPECTED['nnunet']} (nnU-Net) or one 4-D file (MSD), "
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
            f"{folder} holds files of several cases ({', '.join(cases)}); give an output folder to segment them "
            f"all, or pass one case's files with --t1/--t1ce/--t2/--flair"
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
            hint = ""
            if _is_four_d(path):
                hint = (" (it is a 4-D file of channels: pass it alone as INPUT, with --channel-order unless a "
                        "dataset.json beside it gives the order)")
            raise InputError(f"--{seen[key]} and --{ch} are the same file {path}; give four different modalities{hint}")
        seen[key] = ch
    if case_id is None:
        m = _match(given["t1"])
        case_id = m.case if m is not None else strip_nifti_suffix(given["t1"].name)
    return CaseFiles(check_case_id(str(case_id)), given, "explicit")


@dataclass(frozen=True)
class InvalidCase:
    """A case of a batch that cannot be segmented: ``name`` (its id, or the folder or file) and why."""

    name: str
    reason: str


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
    folder: str | Path, *, nnunet_order: Sequence[str] | None = None
) -> tuple[list[CaseFiles], list[InvalidCase]]:
    """Batch mode: every case under ``folder`` sorted by case id, and the invalid ones with their reasons.

    A case is a direct sub-folder holding one case, a group of files sharing a case id directly in ``folder``
    (nnU-Net's ``imagesTs``), or a 4-D file directly in ``folder`` (the MSD's ``imagesTr`` / ``imagesTs``).
    Deeper folders are not searched. Raises InputError when nothing is found at all, or when two cases share an
    id (their outputs would collide).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"input folder {folder} does not exist or is not a folder")
    root = _dataset_root_problem(folder)
    if root is not None:
        raise InputError(root)
    try:
        subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise InputError(f"cannot list {folder}: {e.strerror or e}") from e
    cases: list[CaseFiles] = []
    invalid: list[InvalidCase] = []
    for sub in subfolders:
        if not is_case_folder(sub):
            if _nifti_files(sub):
                invalid.append(InvalidCase(sub.name, f"{sub} holds several cases; nested batches are not searched"))
            continue
        try:
            cases.append(find_case_files(sub, nnunet_order=nnunet_order))
        except InputError as e:
            invalid.append(InvalidCase(sub.name, str(e)))
    matches, others = _scan(folder)
    for (_naming, case), group in sorted(_groups(matches).items()):
        try:
            cases.append(_resolve(folder, group, nnunet_order))
        except InputError as e:
            invalid.append(InvalidCase(case, str(e)))
    for path in others:
        try:
            if _fourth_axis(path) > 0:
                cases.append(msd_case(path, nnunet_order))
            else:
                log.debug("%s: not a modality file of a known naming, ignored", path)
        except InputError as e:
            invalid.append(InvalidCase(strip_nifti_suffix(path.name) or path.name, str(e)))
    seen: dict[str, CaseFiles] = {}
    for case in cases:
        if case.case_id in seen:
            raise InputError(
                f"case id {case.case_id} appears twice under {folder} ({case.paths['t1']} and "
                f"{seen[case.case_id].paths['t1']}); outputs would overwrite each other"
            )
        seen[case.case_id] = case
    if not cases and not invalid:
        found = f" (found only {_names(others)})" if others else ""
        raise InputError(
            f"no cases under {folder}{found}: expected case folders (one case's four modalities each), nnU-Net "
            f"files or 4-D MSD files"
        )
    return sorted(cases, key=lambda c: c.case_id), sorted(invalid, key=lambda c: c.name)

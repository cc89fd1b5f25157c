"""Label conventions of brain tumour segmentations, and how to tell which one a file uses without guessing.

=========  =====================  ========  ==================  ===========================================
name       1                      2         enhancing           used by
=========  =====================  ========  ==================  ===========================================
brats2019  necrotic / non-enh.    edema     4                   BraTS 2017-2021 (``<case>_seg``)
brats2023  necrotic core          edema     3                   BraTS 2023+ (``<case>-seg``)
msd        edema                  non-enh.  3                   Medical Segmentation Decathlon Task01, nnU-Net
=========  =====================  ========  ==================  ===========================================

Regions, in every convention: WT = edema + core + enhancing, TC = core + enhancing, ET = enhancing.

Values alone rarely decide: {0, 1, 2, 3} is BraTS 2023 or MSD, and these give different TC masks. So
:func:`decide` takes the convention from, in this order: an option, the header mark that ``brats-client``
writes into its own outputs (:func:`header_mark`), the ``labels`` of a ``dataset.json`` beside or above the file,
the file name (``_seg`` / ``-seg``: a BraTS file), then the values; when the candidates left would score the file
differently it refuses and names the choices.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, UsageError


@dataclass(frozen=True)
class Convention:
    name: str
    edema: int
    core: int  # necrotic / non-enhancing tumour core
    enhancing: int

    @property
    def values(self) -> frozenset[int]:
        return frozenset((self.edema, self.core, self.enhancing))

    def regions_of(self, value: int) -> frozenset[str]:
        """The regions (WT, TC, ET) a label value belongs to."""
        regions = set()
        if value in self.values:
            regions.add("WT")
        if value in (self.core, self.enhancing):
            regions.add("TC")
        if value == self.enhancing:
            regions.add("ET")
        return frozenset(regions)

    def describe(self) -> str:
        names = {self.edema: "edema", self.core: "core", self.enhancing: "enhancing"}
        return f"{self.name} (" + ", ".join(f"{v} {names[v]}" for v in sorted(names)) + ")"


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention("brats2019", edema=2, core=1, enhancing=4),
        Convention("brats2023", edema=2, core=1, enhancing=3),
        Convention("msd", edema=1, core=2, enhancing=3),
    )
}
NAMES = tuple(CONVENTIONS)
MARK_PREFIX = "brats-triton labels="  # in the NIfTI ``descrip`` of segmentations this package writes


def get(name: str) -> Convention:
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise UsageError(f"label convention must be one of {', '.join(NAMES)}; got {name!r}") from None


def header_mark(name: str) -> str:
    """What :mod:`brats_client.io` writes into a segmentation's ``descrip`` (80 bytes at most)."""
    return MARK_PREFIX + get(name).name


def from_header_mark(descrip: str) -> str | None:
    if descrip.startswith(MARK_PREFIX):
        name = descrip[len(MARK_PREFIX):].split()[0] if descrip[len(MARK_PREFIX):].strip() else ""
        return name if name in CONVENTIONS else None
    return None


# --------------------------------------------------------------------------------------- dataset.json labels


def _words(name: str) -> str:
    return " " + re.sub(r"[^a-z0-9]+", " ", name.lower()).strip() + " "


def _kind(name: str) -> str | None:
    """edema / core / enhancing / background for a label name of an MSD or nnU-Net dataset.json."""
    w = _words(name)
    if " background " in w:
        return "background"
    if any(k in w for k in ("edema", "oedema", " ed ", " snfh ", "hyperintens")):
        return "edema"
    if any(k in w for k in ("non enhanc", "nonenhanc", "not enhanc", "necro", " ncr ", " net ", " netc ")):
        return "core"
    if "enhanc" in w or " et " in w:
        return "enhancing"
    return None


def _region(name: str) -> str | None:
    w = _words(name)
    if "whole" in w or " wt " in w:
        return "WT"
    if "core" in w or " tc " in w:
        return "TC"
    if "enhanc" in w or " et " in w:
        return "ET"
    return None


def from_dataset_labels(labels: Mapping[str, object]) -> str | None:
    """The convention of a dataset.json ``labels`` entry, or None when it names none of :data:`CONVENTIONS`.

    Accepts MSD's ``{"1": "edema", ...}`` (value -> name), nnU-Net v2's ``{"edema": 1, ...}`` (name -> value) and
    nnU-Net's region-based ``{"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}``."""
    pairs: list[tuple[str, object]] = []
    for key, value in labels.items():
        if str(key).strip().isdigit() and isinstance(value, str):
            pairs.append((value, int(key)))
        else:
            pairs.append((str(key), value))
    if any(isinstance(v, (list, tuple)) for _, v in pairs):
        regions: dict[str, set[int]] = {}
        for name, value in pairs:
            region = _region(name)
            if region is not None:
                regions[region] = {int(v) for v in (value if isinstance(value, (list, tuple)) else [value])}
        if set(regions) != {"WT", "TC", "ET"} or len(regions["ET"]) != 1:
            return None
        core, edema = regions["TC"] - regions["ET"], regions["WT"] - regions["TC"]
        if len(core) != 1 or len(edema) != 1:
            return None
        found = {"edema": edema.pop(), "core": core.pop(), "enhancing": next(iter(regions["ET"]))}
    else:
        found = {}
        for name, value in pairs:
            kind = _kind(name)
            if kind is None or kind == "background" or not isinstance(value, int) or kind in found:
                continue
            found[kind] = value
    for c in CONVENTIONS.values():
        if found == {"edema": c.edema, "core": c.core, "enhancing": c.enhancing}:
            return c.name
    return None


# ------------------------------------------------------------------------------------------------ deciding


def candidates(values: Iterable[int]) -> list[str]:
    """The conventions whose label values include every nonzero value."""
    present = {int(v) for v in values} - {0}
    return [c.name for c in CONVENTIONS.values() if present <= c.values]


def equivalent(names: Iterable[str], values: Iterable[int]) -> bool:
    """True when every convention in ``names`` puts each present value into the same regions."""
    present = sorted({int(v) for v in values} - {0})
    seen = {tuple(CONVENTIONS[n].regions_of(v) for v in present) for n in names}
    return len(seen) <= 1


@dataclass(frozen=True)
class Decision:
    convention: str
    source: str  # "option", "header", "dataset.json <path>", "file name", "values"


def decide(
    values: Iterable[int],
    *,
    path: Path,
    role: str,
    option: str | None = None,
    option_flag: str = "--labels",
    descrip: str = "",
    dataset: tuple[str, Path] | None = None,
    name_hint: frozenset[str] | None = None,
) -> Decision:
    """The label convention of one label file (see the module docstring for the order of the sources).

    ``dataset`` is ``(convention, dataset.json)`` from :func:`brats_client.dataset_json.label_convention`;
    ``name_hint`` is the set of conventions the file name allows (None: the name says nothing). Refuses
    (InputError) values that fit no allowed convention, and values that fit several which would score differently.
    """
    values = {int(v) for v in values}
    fits = candidates(values)
    if not fits:
        raise InputError(
            f"{role} file {path} holds labels {sorted(values - {0})}, which fit none of "
            f"{'; '.join(c.describe() for c in CONVENTIONS.values())}"
        )

    def checked(name: str, source: str) -> Decision:
        if name not in fits:
            raise InputError(
                f"{role} file {path} holds labels {sorted(values - {0})}, which do not fit "
                f"{get(name).describe()} ({source}); check the file or pass {option_flag}"
            )
        return Decision(name, source)

    if option is not None:
        return checked(get(option).name, f"{option_flag} {option}")
    marked = from_header_mark(descrip)
    if marked is not None:
        return checked(marked, "the mark brats-client wrote into its header")
    if dataset is not None:
        return checked(dataset[0], f"labels of {dataset[1]}")
    left = [n for n in fits if name_hint is None or n in name_hint] or fits
    if equivalent(left, values):
        source = "file name and values" if name_hint is not None else "values"
        return Decision(left[0], source)
    raise InputError(
        f"{role} file {path} holds labels {sorted(values - {0})}, which fit several conventions that score "
        f"differently: {'; '.join(get(n).describe() for n in left)}. Nothing decides (no {option_flag}, no "
        f"dataset.json beside or above it, no brats-client header mark); pass {option_flag} "
        f"{'|'.join(left)}"
    )

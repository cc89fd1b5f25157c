"""The ``dataset.json`` of a Medical Segmentation Decathlon or nnU-Net dataset: channel order and label convention.

Both keep it beside ``imagesTr/``, ``imagesTs/`` and ``labelsTr/``. The MSD writes ``"modality": {"0": "FLAIR",
"1": "T1w", "2": "t1gd", "3": "T2w"}`` and ``"labels": {"0": "background", "1": "edema", ...}``; nnU-Net v2
writes ``"channel_names"`` and ``"labels": {"background": 0, "edema": 1, ...}`` (or region-based lists).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from . import conventions
from .errors import InputError

LEVELS = 2  # the folder of the file (or the folder itself) and the one above it


def find(path: Path, levels: int = LEVELS) -> Path | None:
    """The ``dataset.json`` in ``path`` (a folder) or the folder of ``path`` (a file), or in the folder above."""
    folder = path if path.is_dir() else path.parent
    for _ in range(levels):
        candidate = folder / "dataset.json"
        if candidate.is_file():
            return candidate
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not a readable dataset.json: {e}; fix it or pass the option instead") from e
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a dataset.json (not a JSON object); fix it or pass the option instead")
    return data


def label_convention(path: Path) -> tuple[str, Path] | None:
    """``(convention, dataset.json)`` from the ``labels`` of the dataset.json beside or above ``path``; None when
    there is no dataset.json or it has no ``labels``. Labels that match no known convention are an InputError."""
    found = find(path)
    if found is None:
        return None
    labels = read(found).get("labels")
    if not isinstance(labels, Mapping):
        return None
    name = conventions.from_dataset_labels(labels)
    if name is None:
        raise InputError(
            f"{found} declares labels {json.dumps(labels)}, which match none of "
            f"{'; '.join(c.describe() for c in conventions.CONVENTIONS.values())}; pass the convention as an option"
        )
    return name, found


def channel_names(path: Path) -> tuple[list[str], Path] | None:
    """The channel names, in file order (``_0000``, ``_0001``, ... or the 4th axis of a 4-D file), from the
    ``channel_names`` (nnU-Net v2) or ``modality`` (MSD) of the dataset.json beside or above ``path``."""
    found = find(path)
    if found is None:
        return None
    data = read(found)
    key = "channel_names" if "channel_names" in data else "modality"
    entry = data.get(key)
    if entry is None:
        return None
    if not isinstance(entry, Mapping):
        raise InputError(f"{found}: \"{key}\" must map channel numbers to names, got {json.dumps(entry)}")
    try:
        items = sorted((int(k), str(v)) for k, v in entry.items())
    except ValueError:
        raise InputError(f"{found}: \"{key}\" must map channel numbers to names, got {json.dumps(entry)}") from None
    if [k for k, _ in items] != list(range(len(items))):
        raise InputError(f"{found}: \"{key}\" must number its channels 0, 1, 2, ..., got {json.dumps(entry)}")
    return [name for _, name in items], found

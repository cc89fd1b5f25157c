"""What the seed's pipeline assumes of its input, checked before anything is sent.

The network and the seed's preprocessing were made for what BraTS provides: co-registered, skull-stripped volumes
whose background is exactly 0. The crop keeps the box of voxels != 0 and the z-score counts voxels > 0, so a
background that is not 0 (an intensity offset, raw scanner noise) makes the crop the whole volume and the
normalisation meaningless, and a head with its skull gives labels outside the brain. Both go silently wrong, so
they are refused unless the caller accepts them (the report then records the warning).
"""

from __future__ import annotations

import numpy as np

# A background is the value that covers at least this share of the voxels on the volume's faces. A volume cut
# tightly around the brain has no background there (its border values are all different) and is not refused.
BACKGROUND_MIN_SHARE = 0.25
BRAIN_MAX_ML = 2500.0  # skull-stripped adult brains with tumour are about 1,000-2,000 mL

HOW_TO_PREPARE = (
    "the network expects what BraTS provides: co-registered, skull-stripped volumes whose background is exactly 0. "
    "Prepare the case as BraTS does (skull-strip, e.g. with HD-BET or the BrainLes preprocessing, register the "
    "modalities to one grid) and set the background to 0; --allow-unprepared-input segments it anyway, with a "
    "warning in the report (the labels are then unreliable)"
)


def border_values(volume: np.ndarray) -> np.ndarray:
    """The voxels on the six faces of a 3-D array (edges counted more than once: a weighting that does not matter)."""
    faces = (volume[0], volume[-1], volume[:, 0], volume[:, -1], volume[:, :, 0], volume[:, :, -1])
    return np.concatenate([f.ravel() for f in faces])


def background_problem(channel: str, path: object, volume: np.ndarray) -> str | None:
    """Why the background of one modality is not 0, or None: the most common value on the volume's faces, when it
    covers :data:`BACKGROUND_MIN_SHARE` of them, must be 0."""
    values, counts = np.unique(border_values(volume), return_counts=True)
    mode, share = float(values[np.argmax(counts)]), float(counts.max()) / float(counts.sum())
    if mode == 0 or share < BACKGROUND_MIN_SHARE:
        return None
    return f"{channel} file {path}: its background reads {mode:g} ({share:.0%} of the border voxels), not 0"


def skull_problem(volume: np.ndarray, voxel_volume_mm3: float, paths: str) -> str | None:
    """Why the case does not look skull-stripped, or None: the voxels nonzero in any modality of ``volume
    [C, X, Y, Z]`` must fit in :data:`BRAIN_MAX_ML`."""
    nonzero_ml = float(np.count_nonzero(np.any(volume != 0, axis=0))) * voxel_volume_mm3 / 1000.0
    if nonzero_ml <= BRAIN_MAX_ML:
        return None
    return (
        f"{paths}: {nonzero_ml:,.0f} mL of nonzero voxels, more than a skull-stripped brain ({BRAIN_MAX_ML:,.0f} mL "
        f"at most): the case does not look skull-stripped"
    )


def problems(volume: np.ndarray, paths: dict[str, object], voxel_volume_mm3: float) -> list[str]:
    """Every broken assumption of one case (``volume [C, X, Y, Z]`` in the order of ``paths``); [] when none."""
    found = [background_problem(ch, path, volume[i]) for i, (ch, path) in enumerate(paths.items())]
    names = ", ".join(sorted({str(p) for p in paths.values()}))
    found.append(skull_problem(volume, voxel_volume_mm3, names))
    return [p for p in found if p is not None]

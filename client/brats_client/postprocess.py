"""From the network's probabilities back to a label volume, as the seed does (spec steps 6-9; the test-time flips
of step 5 are :mod:`brats_client.tta`).

- :func:`unpad`: remove the padding added by :func:`brats_client.preprocess.preprocess` (from its record).
- :func:`labels_from_probabilities`: threshold at 0.5 (strictly greater), WT -> edema, TC -> core (overwrites),
  ET -> enhancing only when the ET mask has more than 32 voxels, then drop every 26-connected component of
  label > 0 smaller than 10% of all labelled voxels. The values are those of a convention of
  :mod:`brats_client.conventions`: the seed's BraTS 2019 (2, 1, 4), BraTS 2023 (2, 1, 3) or the MSD's (1, 2, 3).
- :func:`paste`: put the crop back at its place in a zero volume of the original shape.
- :func:`region_masks`, :func:`region_volumes_ml`, :func:`dice`: the nested BraTS regions and their measures.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import conventions
from .contract import OUT_CHANNELS, REGIONS
from .preprocess import PreprocessRecord

CONVENTIONS = conventions.NAMES


def unpad(prob: np.ndarray, record: PreprocessRecord) -> np.ndarray:
    """``[C, *record.padded_shape]`` -> ``[C, *record.crop_shape]`` (a view)."""
    if tuple(prob.shape[1:]) != tuple(record.padded_shape):
        raise ValueError(f"array has spatial shape {tuple(prob.shape[1:])}, the record pads to {record.padded_shape}")
    return prob[(slice(None), *record.unpad_slices)]


def remove_small_components(labels: np.ndarray, min_fraction: float = 0.1) -> np.ndarray:
    """Zero every 26-connected component of ``labels > 0`` with fewer than ``min_fraction`` of all labelled
    voxels (in place; also returned)."""
    components, count = ndimage.label(labels > 0, structure=np.ones((3,) * labels.ndim, dtype=bool))
    if count == 0:
        return labels
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    keep = sizes >= min_fraction * sizes[1:].sum()
    keep[0] = True  # background stays as it is
    labels[~keep[components]] = 0
    return labels


def labels_from_probabilities(
    prob: np.ndarray,
    *,
    threshold: float = 0.5,
    et_min_voxels: int = 32,
    min_component_fraction: float = 0.1,
    convention: str = "brats2019",
) -> np.ndarray:
    """Labels (uint8) from ``prob [3 (WT, TC, ET), X, Y, Z]``: WT -> edema, TC -> core, ET -> enhancing (the
    values of ``convention``) when the ET mask has more than ``et_min_voxels`` voxels, each later region
    overwriting; then small components removed."""
    values = conventions.get(convention)
    if prob.ndim != 4 or prob.shape[0] != OUT_CHANNELS:
        raise ValueError(f"probabilities must be [3 (WT, TC, ET), X, Y, Z], got shape {prob.shape}")
    wt, tc, et = (prob[i] > threshold for i in range(OUT_CHANNELS))
    labels = np.zeros(prob.shape[1:], dtype=np.uint8)
    labels[wt] = values.edema
    labels[tc] = values.core
    if int(np.count_nonzero(et)) > et_min_voxels:
        labels[et] = values.enhancing
    return remove_small_components(labels, min_component_fraction)


def paste(labels_crop: np.ndarray, record: PreprocessRecord) -> np.ndarray:
    """Place ``[*crop_shape]`` (or ``[C, *crop_shape]``) into zeros of ``[*original_shape]`` (or ``[C, ...]``) at
    the crop position."""
    lead = labels_crop.shape[:-3]
    if tuple(labels_crop.shape[-3:]) != tuple(record.crop_shape):
        raise ValueError(f"array has spatial shape {tuple(labels_crop.shape[-3:])}, the crop is {record.crop_shape}")
    out = np.zeros((*lead, *record.original_shape), dtype=labels_crop.dtype)
    out[(Ellipsis, *record.crop_slices)] = labels_crop
    return out


def region_masks(labels: np.ndarray, convention: str = "brats2019") -> dict[str, np.ndarray]:
    """Boolean WT (every tumour label), TC (core + enhancing) and ET (enhancing) masks."""
    values = conventions.get(convention)
    return {
        "WT": np.isin(labels, (values.core, values.edema, values.enhancing)),
        "TC": np.isin(labels, (values.core, values.enhancing)),
        "ET": labels == values.enhancing,
    }


def region_volumes_ml(labels: np.ndarray, voxel_volume_mm3: float, convention: str = "brats2019") -> dict[str, float]:
    """WT, TC and ET volumes in millilitres (1 mL = 1000 mm^3)."""
    return {
        name: float(np.count_nonzero(mask)) * float(voxel_volume_mm3) / 1000.0
        for name, mask in region_masks(labels, convention).items()
    }


def dice(a_mask: np.ndarray, b_mask: np.ndarray) -> float:
    """Dice overlap of two boolean masks; 1.0 when both are empty (the BraTS convention)."""
    a, b = np.asarray(a_mask, dtype=bool), np.asarray(b_mask, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks have different shapes {a.shape} and {b.shape}")
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def region_dice(labels: np.ndarray, truth: np.ndarray, convention: str = "brats2019") -> dict[str, float]:
    """Dice of the WT, TC and ET regions of two label volumes."""
    a, b = region_masks(labels, convention), region_masks(truth, convention)
    return {region: dice(a[region], b[region]) for region in REGIONS}

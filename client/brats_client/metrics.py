"""Segmentation quality as the BraTS challenges report it: Dice and HD95 of the WT, TC and ET regions.

- Dice: ``2 |P & T| / (|P| + |T|)`` of the region masks (:func:`brats_client.postprocess.region_masks`).
- HD95: the surface of a mask is the voxels that an erosion with the 6-neighbourhood removes. For every surface
  voxel of either mask take the Euclidean distance, in mm from the voxel size, to the nearest surface voxel of
  the other; HD95 is the 95th percentile (numpy's linear interpolation) of both directions' distances together,
  as panoptica and medpy's ``hd95`` compute it (nnU-Net's BraTS evaluation uses medpy). The BraTS 2023 scripts
  (DeepMind's ``surface_distance``) instead take the larger of the two directions' percentiles over surface
  elements weighted by area: their values can be somewhat larger.
- Empty regions: both empty -> Dice 1, HD95 0; one empty -> Dice 0 and HD95 :data:`HD95_EMPTY_MM` = 373.13 mm,
  the diagonal of the 240 x 240 x 155 1 mm grid, as nnU-Net's BraTS 2020 evaluation does (the BraTS 2023
  scripts give the same Dice values and 374 mm).

Computed here with scipy rather than with ``panoptica`` (the BraTS 2023+ engine): panoptica 2.1.7 pins
``numpy<2.3`` and pulls pandas, plotly, scikit-image and typer into a client that needs none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .contract import REGIONS
from .postprocess import dice, region_masks

HD95_EMPTY_MM = 373.13  # sqrt(240^2 + 240^2 + 155^2) mm
_SIX_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class RegionScore:
    dice: float
    hd95_mm: float
    pred_ml: float
    truth_ml: float


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 6-neighbour outside it (outside the array counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, structure=_SIX_NEIGHBOURS)


def _around(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of ``a | b`` grown by one voxel (so erosion and distances in it equal the full array's)."""
    (box,) = ndimage.find_objects((a | b).astype(np.uint8))
    return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, a.shape, strict=True))


def hd95(pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float], empty_mm: float = HD95_EMPTY_MM) -> float:
    """The 95th-percentile Hausdorff distance in mm between two boolean masks (module docstring)."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"masks have different shapes {pred.shape} and {truth.shape}")
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return 0.0
    if not has_pred or not has_truth:
        return float(empty_mm)
    box = _around(pred, truth)
    pred_surface, truth_surface = surface(pred[box]), surface(truth[box])
    spacing = tuple(float(s) for s in spacing_mm)
    to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=spacing)[pred_surface]
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[truth_surface]
    return float(np.percentile(np.concatenate([to_truth, to_pred]), 95))


def region_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    pred_convention: str = "brats2019",
    truth_convention: str = "brats2019",
) -> dict[str, RegionScore]:
    """Dice, HD95 (mm) and both volumes (mL) per region of two label maps on one grid, in
    :data:`brats_client.contract.REGIONS` order (the network's channels, as the report's)."""
    if pred.shape != truth.shape:
        raise ValueError(f"label maps have different shapes {pred.shape} and {truth.shape}")
    voxel_ml = float(np.prod([float(s) for s in spacing_mm])) / 1000.0
    p, t = region_masks(pred, pred_convention), region_masks(truth, truth_convention)
    return {
        region: RegionScore(
            dice=dice(p[region], t[region]),
            hd95_mm=hd95(p[region], t[region], spacing_mm),
            pred_ml=int(np.count_nonzero(p[region])) * voxel_ml,
            truth_ml=int(np.count_nonzero(t[region])) * voxel_ml,
        )
        for region in REGIONS
    }

"""The seed's inference pipeline (its test.py, as the spec describes it) in eager PyTorch, in one function.

Written from the spec and the seed's test.py, independently of ``brats_client``, so that tests and benchmarks can
compare two implementations: the client's tiled, served pipeline against this whole-volume one. By default it is
the seed's: the ``[min, max)`` crop drops the last nonzero slice (``keep_last_slice=True`` keeps it), and the
z-score divides sums over all voxels of the padded crop by the number of voxels > 0. Where the seed would produce
NaN or an empty crop, it does not: a channel without voxels > 0, or with a variance that is not positive, is
divided by 1; a one-slice extent keeps its slice.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

PAD_MULTIPLE = 16
THRESHOLD = 0.5
ET_MIN_VOXELS = 32
MIN_COMPONENT_FRACTION = 0.1
ENHANCING = {"brats2019": 4, "brats2023": 3}
TTA_FLIPS = {
    "none": [[]],
    "flip4": [[], [0], [1], [0, 1]],  # the seed: the first two spatial axes
    "flip8": [[], [0], [1], [2], [0, 1], [0, 2], [1, 2], [0, 1, 2]],
}


def _crop_box(volume: np.ndarray, keep_last_slice: bool) -> list[tuple[int, int]]:
    coords = np.argwhere(np.any(volume != 0, axis=0))
    if len(coords) == 0:
        raise ValueError("all-zero volume: no nonzero voxel in any modality")
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    if keep_last_slice:
        return [(int(a), int(b) + 1) for a, b in zip(lo, hi, strict=True)]
    return [(int(a), max(int(b), int(a) + 1)) for a, b in zip(lo, hi, strict=True)]


def _normalise(padded: np.ndarray) -> np.ndarray:
    out = np.empty(padded.shape, dtype=np.float32)
    counts = np.sum(padded > 0, axis=(1, 2, 3))
    for c in range(padded.shape[0]):
        x = padded[c].astype(np.float64)
        mean, std = 0.0, 1.0
        if counts[c]:
            mean = float(np.sum(x / counts[c]))
            mean_square = float(np.sum(x * x / counts[c]))
            variance = mean_square - mean * mean
            std = math.sqrt(variance) if variance > 1e-12 * mean_square else 1.0
        out[c] = (x - mean) / std
    return out


def _labels(prob: np.ndarray, convention: str) -> np.ndarray:
    wt, tc, et = prob[0] > THRESHOLD, prob[1] > THRESHOLD, prob[2] > THRESHOLD
    seg = np.zeros(prob.shape[1:], dtype=np.uint8)
    seg[wt] = 2
    seg[tc] = 1
    if et.sum() > ET_MIN_VOXELS:
        seg[et] = ENHANCING[convention]
    components, n = ndimage.label(seg > 0, structure=np.ones((3, 3, 3)))
    total = np.count_nonzero(seg)
    for k in range(1, n + 1):
        component = components == k
        if component.sum() < MIN_COMPONENT_FRACTION * total:
            seg[component] = 0
    return seg


@torch.no_grad()
def reference_segment(
    volume: np.ndarray,
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    *,
    keep_last_slice: bool = False,
    tta: str = "flip4",
    convention: str = "brats2019",
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Segment ``volume [4 (t1, t1ce, t2, flair), X, Y, Z]`` the seed's way with ``model`` on the whole padded crop.

    Returns ``(labels uint8 [X, Y, Z], probabilities float32 [3, *crop])``. ``keep_last_slice=True`` keeps the
    last nonzero slice that the seed's ``[min, max)`` crop drops. Raises ValueError for an all-zero volume or a
    bad ``tta`` / ``convention``.
    """
    if tta not in TTA_FLIPS:
        raise ValueError(f"tta must be one of {', '.join(TTA_FLIPS)}; got {tta!r}")
    if convention not in ENHANCING:
        raise ValueError(f"convention must be one of {', '.join(ENHANCING)}; got {convention!r}")
    volume = np.asarray(volume, dtype=np.float32)
    box = _crop_box(volume, keep_last_slice)
    crop = volume[(slice(None), *(slice(a, b) for a, b in box))]
    diff = [(-s) % PAD_MULTIPLE for s in crop.shape[1:]]
    widths = [(d // 2, d - d // 2) for d in diff]
    padded = _normalise(np.pad(crop, [(0, 0), *widths], mode="constant", constant_values=0))

    x = torch.from_numpy(padded)[None].to(device)
    total = None
    for axes in TTA_FLIPS[tta]:
        dims = [a + 2 for a in axes]  # [N, C, X, Y, Z]
        inp = torch.flip(x, dims) if dims else x
        out = model(inp)
        out = torch.flip(out, dims) if dims else out
        total = out if total is None else total + out
    prob = (total / len(TTA_FLIPS[tta]))[0].float().cpu().numpy()
    prob = prob[(slice(None), *(slice(lo, lo + n) for (lo, _), n in zip(widths, crop.shape[1:], strict=True)))]
    prob = np.ascontiguousarray(prob, dtype=np.float32)

    labels = np.zeros(volume.shape[1:], dtype=np.uint8)
    labels[tuple(slice(a, b) for a, b in box)] = _labels(prob, convention)
    return labels, prob

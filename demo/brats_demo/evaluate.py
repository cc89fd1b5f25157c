"""Eager-PyTorch evaluation of a network on phantoms, following the seed's reference pipeline.

Preprocessing (:func:`preprocess`): crop to the bounding box of nonzero voxels (keeping the last nonzero slice,
like ``brats_client.preprocess`` by default), zero-pad evenly to multiples of 16, z-score each channel over its
voxels > 0 and apply it to all voxels. Inference (:func:`predict`): the whole padded crop at once, flip4
test-time augmentation (identity, flip x, flip y, flip x and y), outputs flipped back and averaged.
Postprocessing (:func:`postprocess`): threshold 0.5; labels 2 (WT), 1 (TC), 4 (ET, only if more than 32 voxels);
26-connected components of label > 0 smaller than 10% of the total dropped; pasted back into the full volume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

DIVISOR = 16
REGIONS = ("WT", "TC", "ET")
REGION_LABELS = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}


@dataclass(frozen=True)
class Crop:
    """Where the padded network input sits in the original volume."""

    original_shape: tuple[int, int, int]
    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    pad_before: tuple[int, int, int]
    pad_after: tuple[int, int, int]


def preprocess(volume: np.ndarray) -> tuple[np.ndarray, Crop]:
    """``volume [4, X, Y, Z]`` (t1, t1ce, t2, flair) -> z-scored padded crop ``[4, x, y, z]`` float32 and its Crop."""
    nonzero = np.any(volume != 0, axis=0)
    idx = np.argwhere(nonzero)
    start, stop = idx.min(0), idx.max(0) + 1
    crop = volume[:, start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]].astype(np.float32)
    size = np.array(crop.shape[1:])
    target = -(-size // DIVISOR) * DIVISOR
    before = (target - size) // 2
    after = target - size - before
    crop = np.pad(crop, [(0, 0)] + [(int(b), int(a)) for b, a in zip(before, after, strict=True)])
    for c in range(crop.shape[0]):
        fg = crop[c][crop[c] > 0]
        mean = float(fg.mean()) if fg.size else 0.0
        std = float(fg.std()) if fg.size else 1.0
        crop[c] = (crop[c] - mean) / (std if std > 0 else 1.0)
    record = Crop(tuple(volume.shape[1:]), tuple(int(v) for v in start), tuple(int(v) for v in stop),
                  tuple(int(v) for v in before), tuple(int(v) for v in after))
    return crop, record


def seg_crop(seg: np.ndarray, record: Crop) -> np.ndarray:
    """The label volume cut and padded exactly like the images."""
    s, e = record.start, record.stop
    cut = seg[s[0]:e[0], s[1]:e[1], s[2]:e[2]]
    return np.pad(cut, [(b, a) for b, a in zip(record.pad_before, record.pad_after, strict=True)])


def regions(seg: np.ndarray) -> np.ndarray:
    """Labels 0/1/2/4 -> nested binary regions ``[3, ...]`` (WT, TC, ET) as float32."""
    return np.stack([np.isin(seg, REGION_LABELS[r]) for r in REGIONS]).astype(np.float32)


@torch.no_grad()
def predict(net: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, tta: bool = True) -> np.ndarray:
    """Sigmoid probabilities ``[3, x, y, z]`` of the whole padded crop, averaged over flip4 TTA."""
    t = torch.from_numpy(np.ascontiguousarray(x))[None]
    flips = [(), (2,), (3,), (2, 3)] if tta else [()]
    total = None
    for dims in flips:
        inp = torch.flip(t, dims) if dims else t
        out = net(inp)
        out = torch.flip(out, dims) if dims else out
        total = out if total is None else total + out
    return (total / len(flips))[0].numpy()


def postprocess(prob: np.ndarray, record: Crop) -> np.ndarray:
    """Probabilities of the padded crop -> uint8 labels 0/1/2/4 in the original volume."""
    b, a = record.pad_before, record.pad_after
    p = prob[:, b[0]:prob.shape[1] - a[0], b[1]:prob.shape[2] - a[1], b[2]:prob.shape[3] - a[2]]
    wt, tc, et = p[0] > 0.5, p[1] > 0.5, p[2] > 0.5
    labels = np.zeros(wt.shape, dtype=np.uint8)
    labels[wt] = 2
    labels[tc] = 1
    if np.count_nonzero(et) > 32:
        labels[et] = 4
    pieces, n = ndimage.label(labels > 0, structure=np.ones((3, 3, 3)))
    if n:
        sizes = np.bincount(pieces.ravel())[1:]
        small = np.flatnonzero(sizes < 0.1 * sizes.sum()) + 1
        labels[np.isin(pieces, small)] = 0
    out = np.zeros(record.original_shape, dtype=np.uint8)
    s, e = record.start, record.stop
    out[s[0]:e[0], s[1]:e[1], s[2]:e[2]] = labels
    return out


def dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice per region of two label volumes (1.0 when both are empty)."""
    scores = {}
    for r in REGIONS:
        p, t = np.isin(pred, REGION_LABELS[r]), np.isin(truth, REGION_LABELS[r])
        denom = p.sum() + t.sum()
        scores[r] = 1.0 if denom == 0 else float(2 * np.logical_and(p, t).sum() / denom)
    return scores

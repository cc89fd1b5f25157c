"""The seed's preprocessing (crop to the brain, pad to a multiple of 16, z-score), with a record to undo it.

Steps, per case ``volume [C, X, Y, Z]`` (C = 4, CHANNELS order), as the seed's test.py does them:

1. Bounding box of the voxels that are nonzero in any modality.
2. Crop ``[min, max)``: like the seed, the last nonzero slice of every axis is dropped.
   ``keep_last_slice=True`` crops ``[min, max + 1)`` instead (an opt-in, not the seed).
3. Pad with zeros to the next multiple of ``divisor`` per axis, split evenly with the extra voxel on the right.
4. Per channel, with ``n`` the number of voxels > 0 of the padded crop and sums over ALL its voxels:
   ``mean = sum(x) / n``, ``std = sqrt(sum(x**2) / n - mean**2)`` (the seed's formula: with negative intensities
   it is not the mean over voxels > 0); subtract and divide on all voxels, in float64, stored as float32.
   Background and padding become ``-mean / std`` (:attr:`PreprocessRecord.pad_value`).

Guards where the seed would produce NaN, Inf or an empty crop: a channel with no voxel > 0 keeps mean 0, std 1
(left unchanged); a variance that is not positive (at most ``VARIANCE_EPS`` times the mean square) or not
finite gives std 1; a one-slice extent keeps its slice; a channel that is all zero does not move the bounding
box (the seed's box would start at -1). A case without any nonzero voxel cannot be cropped: :func:`preprocess`
raises InputError ("all-zero volume").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .contract import CHANNELS, PAD_MULTIPLE
from .errors import InputError

VARIANCE_EPS = 1e-12  # relative to the mean square: below it, a channel counts as constant (std 1)


@dataclass(frozen=True)
class PreprocessRecord:
    """What :func:`preprocess` did, so that postprocessing can undo it (all tuples are per spatial axis)."""

    original_shape: tuple[int, int, int]
    crop_start: tuple[int, int, int]
    crop_stop: tuple[int, int, int]
    pad_before: tuple[int, int, int]
    pad_after: tuple[int, int, int]
    mean: tuple[float, ...]  # per channel
    std: tuple[float, ...]  # per channel
    keep_last_slice: bool = False

    @property
    def crop_shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.crop_start, self.crop_stop, strict=True))  # type: ignore[return-value]

    @property
    def padded_shape(self) -> tuple[int, int, int]:
        return tuple(
            c + a + b for c, a, b in zip(self.crop_shape, self.pad_before, self.pad_after, strict=True)
        )  # type: ignore[return-value]

    @property
    def crop_slices(self) -> tuple[slice, slice, slice]:
        """Where the crop sits in the original volume."""
        return tuple(slice(a, b) for a, b in zip(self.crop_start, self.crop_stop, strict=True))  # type: ignore[return-value]

    @property
    def unpad_slices(self) -> tuple[slice, slice, slice]:
        """Where the crop sits in the padded volume."""
        return tuple(slice(p, p + c) for p, c in zip(self.pad_before, self.crop_shape, strict=True))  # type: ignore[return-value]

    @property
    def pad_value(self) -> np.ndarray:
        """Per channel, the normalised value of a zero voxel: what the seed's zero padding becomes. Pass it to
        :func:`brats_client.tiling.extract_tile` so that tiles reaching past the volume see the same background."""
        return np.array([-m / s for m, s in zip(self.mean, self.std, strict=True)], dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists, floats, plus the derived shapes) for the report."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        out["crop_shape"] = list(self.crop_shape)
        out["padded_shape"] = list(self.padded_shape)
        out["channels"] = list(CHANNELS)  # what mean and std are per
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessRecord:
        """Inverse of :meth:`to_dict` (derived entries are ignored)."""
        ints = ("original_shape", "crop_start", "crop_stop", "pad_before", "pad_after")
        return cls(
            **{k: tuple(int(v) for v in data[k]) for k in ints},
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            keep_last_slice=bool(data.get("keep_last_slice", False)),
        )


def bounding_box(
    volume: np.ndarray, *, keep_last_slice: bool = False
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(start, stop)`` of the voxels nonzero in any channel of ``volume [C, X, Y, Z]``; InputError if none."""
    nonzero = np.any(volume != 0, axis=0)
    start, stop = [], []
    for axis in range(nonzero.ndim):
        others = tuple(a for a in range(nonzero.ndim) if a != axis)
        idx = np.flatnonzero(np.any(nonzero, axis=others))
        if idx.size == 0:
            raise InputError(
                f"all-zero volume {tuple(volume.shape[1:])}: no nonzero voxel in any modality, nothing to segment"
            )
        lo, hi = int(idx[0]), int(idx[-1])
        start.append(lo)
        stop.append(hi + 1 if keep_last_slice else max(hi, lo + 1))
    return tuple(start), tuple(stop)  # type: ignore[return-value]


def pad_widths(shape: tuple[int, ...], divisor: int = PAD_MULTIPLE) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Zeros before and after each axis to reach the next multiple of ``divisor``; the extra voxel goes after."""
    if divisor < 1:
        raise ValueError(f"divisor must be >= 1, got {divisor}")
    total = [-s % divisor for s in shape]
    before = tuple(t // 2 for t in total)
    after = tuple(t - b for t, b in zip(total, before, strict=True))
    return before, after


def seed_statistics(channel: np.ndarray) -> tuple[float, float]:
    """The seed's ``(mean, std)`` of one padded channel: sums over all voxels divided by the count of voxels > 0
    (float64), with the guards of the module docstring."""
    count = int(np.count_nonzero(channel > 0))
    if count == 0:
        return 0.0, 1.0
    x = channel.astype(np.float64, copy=False)
    mean = float(x.sum() / count)
    mean_square = float(np.square(x).sum() / count)
    variance = mean_square - mean * mean
    # float64 rounding leaves ~1e-16 * mean_square of a constant channel: that is zero, not a tiny std
    constant = not variance > VARIANCE_EPS * mean_square
    return mean, (1.0 if constant or not np.isfinite(variance) else float(np.sqrt(variance)))


def preprocess(
    volume: np.ndarray, *, divisor: int = PAD_MULTIPLE, keep_last_slice: bool = False
) -> tuple[np.ndarray, PreprocessRecord]:
    """Crop, pad and normalise ``volume [C, X, Y, Z]`` (see the module docstring); returns a C-contiguous float32
    ``[C, *record.padded_shape]`` and the record. Raises InputError for an all-zero volume."""
    volume = np.asarray(volume)
    if volume.ndim != 4:
        raise ValueError(f"volume must be [C, X, Y, Z], got shape {volume.shape}")
    start, stop = bounding_box(volume, keep_last_slice=keep_last_slice)
    crop = volume[(slice(None), *(slice(a, b) for a, b in zip(start, stop, strict=True)))]
    before, after = pad_widths(crop.shape[1:], divisor)
    padded_shape = tuple(c + a + b for c, a, b in zip(crop.shape[1:], before, after, strict=True))
    out = np.zeros((volume.shape[0], *padded_shape), dtype=np.float32)
    inner = tuple(slice(b, b + c) for b, c in zip(before, crop.shape[1:], strict=True))
    out[(slice(None), *inner)] = crop
    means, stds = [], []
    for c, channel in enumerate(out):
        mean, std = seed_statistics(channel)
        out[c] = (channel.astype(np.float64) - mean) / std
        means.append(mean)
        stds.append(std)
    record = PreprocessRecord(
        original_shape=tuple(int(s) for s in volume.shape[1:]),  # type: ignore[arg-type]
        crop_start=start,
        crop_stop=stop,
        pad_before=before,  # type: ignore[arg-type]
        pad_after=after,  # type: ignore[arg-type]
        mean=tuple(means),
        std=tuple(stds),
        keep_last_slice=keep_last_slice,
    )
    return out, record

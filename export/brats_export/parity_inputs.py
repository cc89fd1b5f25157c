"""Inputs for the parity check: what the served models will really see, plus random noise.

A real input is a brain MRI crop normalised by the client: a large constant background (``-mean / std`` of each
channel) around the brain, a tumour, and sizes up to a full BraTS crop. Random normal noise has none of that, and
an export can pass on noise while it drifts on real volumes (issue 12: 50-150x the tolerance). So the check feeds
:func:`phantom_input` (a synthetic case on the real T1 template of :mod:`.phantom`, preprocessed by
``brats_client.preprocess`` exactly as ``brats-client segment`` does) and keeps a random row as an extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from brats_client.contract import IN_CHANNELS
from brats_client.preprocess import preprocess

from .phantom import MODALITIES, make_phantom

FULL_SIZE = (144, 176, 144)  # the padded seed crop of a BraTS brain (the demo phantom's, too)
PHANTOM_SEED = 7


@dataclass(frozen=True)
class ParityInput:
    """A named input ``[N, 4, D, H, W]`` float32 for the parity check."""

    name: str  # "phantom" or "random": what the table's input column says
    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


@lru_cache(maxsize=1)
def _normalised_phantom(seed: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The phantom's padded, z-scored crop ``[4, D, H, W]`` and its tumour centre (voxel indices)."""
    phantom = make_phantom(seed)
    volume = np.stack([phantom.images[m] for m in MODALITIES])
    padded, record = preprocess(volume)
    tumour = np.argwhere(phantom.seg > 0).mean(axis=0)
    shift = np.subtract(record.pad_before, record.crop_start)
    centre = tuple(int(round(c + s)) for c, s in zip(tumour, shift, strict=True))
    return padded, centre  # type: ignore[return-value]


def _window(volume: np.ndarray, centre: tuple[int, ...], spatial: tuple[int, int, int]) -> np.ndarray:
    """``spatial`` voxels of ``volume [C, ...]`` around ``centre``; sides longer than the volume are padded with
    each channel's background value (its corner voxel), as the client pads a small case."""
    background = volume[(slice(None), 0, 0, 0)].reshape(-1, 1, 1, 1)
    out = np.broadcast_to(background, (volume.shape[0], *spatial)).astype(np.float32)
    src, dst = [], []
    for c, want, have in zip(centre, spatial, volume.shape[1:], strict=True):
        if want >= have:
            lo = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(lo, lo + have))
        else:
            start = int(np.clip(c - want // 2, 0, have - want))
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    return out


def phantom_input(spatial: tuple[int, int, int], batch: int = 1, seed: int = PHANTOM_SEED) -> ParityInput:
    """A normalised phantom crop of ``spatial`` voxels; in a batch, each item is its flipped predecessor (so
    that the items differ, as a test-time flip batch does)."""
    volume, centre = _normalised_phantom(seed)
    crop = _window(volume, centre, spatial)
    items = [crop]
    for i in range(1, batch):
        items.append(np.flip(items[-1], axis=1 + (i - 1) % 3))
    return ParityInput("phantom", np.ascontiguousarray(np.stack(items), dtype=np.float32))


def random_input(spatial: tuple[int, int, int], batch: int = 1, seed: int = 0) -> ParityInput:
    """Standard normal noise (what the check used alone before; kept as an extra row)."""
    rng = np.random.default_rng(seed)
    return ParityInput("random", rng.standard_normal((batch, IN_CHANNELS, *spatial), dtype=np.float32))

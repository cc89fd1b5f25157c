"""Sliding-window tiling in pure numpy: where the tiles go, how they are weighted, how they are added back.

:func:`plan_tiles` places equal tiles (edges multiples of 16) over a volume, :func:`extract_tile` cuts one out
(padding past the border), :class:`Accumulator` adds predictions back with :func:`tile_weights` and averages;
:func:`brats_client.pipeline.predict` composes them. Nothing here knows about Triton or torch.

Because the network's GroupNorm normalises over what it is given, tiled predictions are not numerically equal
to whole-volume predictions; ``tile=None`` (``--tile full``) sends the whole volume as one tile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from .contract import PAD_MULTIPLE

BLEND_CHOICES = ("constant", "gaussian")
MIN_GAUSSIAN_WEIGHT = 1e-4  # relative to the centre weight: border voxels still count, and every weight is > 0


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _axis_starts(size: int, edge: int, overlap: float) -> tuple[int, ...]:
    """Evenly spaced starts along one axis, the first at 0 and the last flush with the border.

    The number of tiles is the smallest that keeps neighbours at most ``edge * (1 - overlap)`` apart; the actual
    step is then shrunk to ``(size - edge) / (n - 1)`` so that the last tile ends exactly at ``size``. Example,
    size 160, edge 128, overlap 0 -> n = 1 + ceil(32 / 128) = 2, step 32::

        0      32                        128     160
        |=========== tile 0 ============|        |
        .      |=========== tile 1 ==============|   <- flush with the border
                 overlap of 96 voxels: the two predictions are averaged there

    With overlap 0.5 and size 256: step at most 64 -> n = 1 + ceil(128 / 64) = 3, starts 0, 64, 128.
    """
    if edge >= size:  # the tile covers the axis (and is zero-padded past it when edge > size)
        return (0,)
    max_step = max(1.0, edge * (1.0 - overlap))
    n = 1 + math.ceil((size - edge) / max_step - 1e-9)
    span = size - edge
    # i * span / (n - 1), rounded half up in integers
    return tuple((2 * i * span + (n - 1)) // (2 * (n - 1)) for i in range(n))


@dataclass(frozen=True)
class TilePlan:
    """Equal tiles of ``tile_shape`` at ``starts`` covering a volume of ``shape`` (spatial axes only).

    Where ``tile_shape`` exceeds ``shape`` along an axis (a volume smaller than a tile), the single tile along that
    axis starts at 0 and reaches past the border by ``tile_padding``; :func:`extract_tile` fills that part and
    :class:`Accumulator` ignores it.
    """

    shape: tuple[int, ...]
    tile_shape: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]
    overlap: float = 0.0

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def tile_padding(self) -> tuple[int, ...]:
        """Voxels each tile reaches past the volume along each axis (0 where the volume is at least a tile)."""
        return tuple(max(0, t - s) for t, s in zip(self.tile_shape, self.shape, strict=True))

    @property
    def voxels_computed(self) -> int:
        return len(self.starts) * math.prod(self.tile_shape)

    @property
    def waste(self) -> float:
        """Voxels computed per volume voxel (1.0 = no overlap and no padding)."""
        return self.voxels_computed / math.prod(self.shape)

    def slices(self, index: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """``(in_volume, in_tile)``: the part of tile ``index`` inside the volume, in both coordinate frames."""
        return _slices(self.starts[index], self.tile_shape, self.shape)


def _slices(
    start: Sequence[int], tile_shape: Sequence[int], shape: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    if any(s < 0 or s >= size for s, size in zip(start, shape, strict=True)):
        raise ValueError(f"tile start {tuple(start)} is outside the volume {tuple(shape)}")
    stops = [min(s + t, size) for s, t, size in zip(start, tile_shape, shape, strict=True)]
    in_volume = tuple(slice(s, e) for s, e in zip(start, stops, strict=True))
    in_tile = tuple(slice(0, e - s) for s, e in zip(start, stops, strict=True))
    return in_volume, in_tile


def _count(size: int, edge: int, overlap: float) -> int:
    return len(_axis_starts(size, edge, overlap))


def _shrink(size: int, edge: int, overlap: float, multiple: int) -> int:
    """The smallest edge (a multiple of ``multiple``, at most ``edge``) that covers ``size`` with no more tiles
    than ``edge`` needs. Example: size 144, edge 128, overlap 0 -> two tiles either way, so 80 (160 voxels
    computed instead of 256)."""
    needed = _count(size, edge, overlap)
    for candidate in range(multiple, edge, multiple):
        if _count(size, candidate, overlap) <= needed:
            return candidate
    return edge


def plan_tiles(
    shape: Sequence[int],
    tile: int | Sequence[int] | None,
    overlap: float = 0.0,
    multiple: int = PAD_MULTIPLE,
    *,
    shrink: bool = True,
    exact: bool = False,
) -> TilePlan:
    """Plan equal tiles over ``shape``.

    Tile edge per axis = ``min(tile, shape rounded up to multiple)``; ``tile=None`` gives one tile of the whole
    volume rounded up. ``tile`` must be a positive multiple of ``multiple``; ``overlap`` in [0, 1) is the fraction
    of a tile that neighbours share at least. With ``shrink`` (default) each edge is then reduced to the smallest
    multiple that needs no more tiles along that axis, which cuts the voxels computed (``tile`` is a maximum).
    ``exact`` keeps every edge as given (a model with a static input shape), reaching past a smaller volume.
    """
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"shape must be positive sizes, got {shape}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if tile is None:
        if exact:
            raise ValueError("exact tiles need a tile shape")
        tiles = tuple(_round_up(s, multiple) for s in shape)
    else:
        tiles = (int(tile),) * len(shape) if isinstance(tile, (int, np.integer)) else tuple(int(t) for t in tile)
        if len(tiles) != len(shape) or any(t < multiple or t % multiple for t in tiles):
            raise ValueError(
                f"tile must be a positive multiple of {multiple} (or None for the whole volume), got {tile}"
            )
    tile_shape = tiles if exact else tuple(min(t, _round_up(s, multiple)) for t, s in zip(tiles, shape, strict=True))
    if shrink and not exact:
        tile_shape = tuple(_shrink(s, t, overlap, multiple) for s, t in zip(shape, tile_shape, strict=True))
    per_axis = [_axis_starts(s, t, overlap) for s, t in zip(shape, tile_shape, strict=True)]
    return TilePlan(shape, tile_shape, tuple(product(*per_axis)), float(overlap))


def tile_weights(tile_shape: Sequence[int], blend: str = "constant", sigma_scale: float = 0.125) -> np.ndarray:
    """Per-voxel weights of a tile, float32: ones (``constant``) or a Gaussian centred on the tile with sigma
    ``sigma_scale * edge`` per axis, scaled to 1 at the centre and clipped below at :data:`MIN_GAUSSIAN_WEIGHT`
    (never zero, so that every covered voxel gets a defined average)."""
    if blend not in BLEND_CHOICES:
        raise ValueError(f"blend must be one of {', '.join(BLEND_CHOICES)}; got {blend!r}")
    tile_shape = tuple(int(t) for t in tile_shape)
    if blend == "constant":
        return np.ones(tile_shape, dtype=np.float32)
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}")
    weights = np.ones((), dtype=np.float64)
    for n in tile_shape:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        axis = np.exp(-0.5 * (x / (sigma_scale * n)) ** 2)
        weights = np.multiply.outer(weights, axis / axis.max())
    return np.maximum(weights, MIN_GAUSSIAN_WEIGHT).astype(np.float32)


def extract_tile(
    volume: np.ndarray, plan: TilePlan, index: int, *, pad_value: float | Sequence[float] | np.ndarray | None = None
) -> np.ndarray:
    """Tile ``index`` of ``volume [C, *plan.shape]`` as a new C-contiguous ``[C, *plan.tile_shape]``.

    The part past the volume (only when the volume is smaller than a tile along an axis) is filled with
    ``pad_value``, a scalar or one value per channel; default 0. For the normalised volume from
    :func:`brats_client.preprocess.preprocess` pass ``record.pad_value`` (``-mean / std`` per channel): that is what
    the seed's zero padding, applied before normalisation, becomes, so the tile sees the seed's background.
    """
    if tuple(volume.shape[1:]) != plan.shape:
        raise ValueError(f"volume has spatial shape {tuple(volume.shape[1:])}, the plan is for {plan.shape}")
    channels = volume.shape[0]
    in_volume, in_tile = plan.slices(index)
    fill = np.asarray(0 if pad_value is None else pad_value, dtype=volume.dtype)
    if fill.ndim > 1 or fill.size not in (1, channels):
        raise ValueError(f"pad_value must be a scalar or {channels} values (one per channel), got {pad_value!r}")
    out = np.empty((channels, *plan.tile_shape), dtype=volume.dtype)
    if any(s.stop - s.start < t for s, t in zip(in_tile, plan.tile_shape, strict=True)):
        out[...] = np.broadcast_to(fill, (channels,)).reshape((channels,) + (1,) * len(plan.tile_shape))
    out[(slice(None), *in_tile)] = volume[(slice(None), *in_volume)]
    return out


class Accumulator:
    """Adds weighted tile predictions into ``[channels, *shape]`` and averages them (the torchio aggregator idea).

    ``tile_shape`` fixes the tile size in advance (checked on every :meth:`add`); without it weights are made per
    prediction shape. Sums are float32; memory is ``(channels + 1) * prod(shape) * 4`` bytes.
    """

    def __init__(
        self,
        shape: Sequence[int],
        channels: int,
        tile_shape: Sequence[int] | None = None,
        blend: str = "constant",
        *,
        sigma_scale: float = 0.125,
    ) -> None:
        if blend not in BLEND_CHOICES:
            raise ValueError(f"blend must be one of {', '.join(BLEND_CHOICES)}; got {blend!r}")
        self.shape = tuple(int(s) for s in shape)
        self.channels = int(channels)
        self.tile_shape = None if tile_shape is None else tuple(int(t) for t in tile_shape)
        self.blend = blend
        self.sigma_scale = sigma_scale
        self._sum = np.zeros((self.channels, *self.shape), dtype=np.float32)
        self._weight = np.zeros(self.shape, dtype=np.float32)
        self._weights: dict[tuple[int, ...], np.ndarray] = {}

    def _weights_for(self, tile_shape: tuple[int, ...]) -> np.ndarray:
        if tile_shape not in self._weights:
            self._weights[tile_shape] = tile_weights(tile_shape, self.blend, self.sigma_scale)
        return self._weights[tile_shape]

    def add(self, start: Sequence[int], prediction: np.ndarray) -> None:
        """Add ``prediction [channels, *tile]`` whose first voxel sits at ``start``; the part past the volume is
        dropped."""
        tile_shape = tuple(prediction.shape[1:])
        if prediction.shape[0] != self.channels or len(tile_shape) != len(self.shape):
            raise ValueError(
                f"prediction has shape {prediction.shape}; "
                f"expected [{self.channels}, *tile] over {len(self.shape)} axes"
            )
        if self.tile_shape is not None and tile_shape != self.tile_shape:
            raise ValueError(f"prediction tile {tile_shape} differs from the planned tile {self.tile_shape}")
        in_volume, in_tile = _slices(start, tile_shape, self.shape)
        weights = self._weights_for(tile_shape)[in_tile]
        self._sum[(slice(None), *in_volume)] += prediction[(slice(None), *in_tile)] * weights
        self._weight[in_volume] += weights

    def result(self) -> np.ndarray:
        """The weighted average ``[channels, *shape]`` float32; RuntimeError if a voxel was never covered."""
        uncovered = int(np.count_nonzero(self._weight == 0))
        if uncovered:
            raise RuntimeError(f"{uncovered} of {self._weight.size} voxels were covered by no tile")
        return self._sum / self._weight


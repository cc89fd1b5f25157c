"""Test-time flips inside the served graph: one request per tile instead of one per flip.

:class:`ServerFlips` wraps the network: each input ``[N, 4, D, H, W]`` is flipped the client's way
(:func:`brats_client.tta.flips`, the seed's four for ``flip4``), the flipped copies run as one batch of ``4N``,
each output is flipped back, and :class:`brats_client.tta.Mean` sums them in the client's order and divides by
four. Flips are exact and GroupNorm's statistics are per sample, so the result equals the client's four requests
(bit for bit in eager PyTorch). The client sends one crop in and gets one probability map back: 28 bytes per voxel
instead of 112.
"""

from __future__ import annotations

import torch
from brats_client import tta
from brats_client.contract import OUT_CHANNELS
from torch import nn


class ServerFlips(nn.Module):
    """``net`` averaged over the test-time flips ``tta`` (``flip4``: identity, X, Y, X+Y)."""

    def __init__(self, net: nn.Module, flips: str = "flip4") -> None:
        super().__init__()
        self.net = net
        self.dims = [tta.dims(axes, 2) for axes in tta.flips(flips)]  # [N, C, X, Y, Z]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = torch.cat([x.flip(d) if d else x for d in self.dims], 0)
        out = self.net(batch).reshape(len(self.dims), -1, OUT_CHANNELS, *x.shape[2:])
        mean = tta.Mean(len(self.dims))
        for i, d in enumerate(self.dims):
            mean.add(i, out[i].flip(d) if d else out[i])
        return mean.result()

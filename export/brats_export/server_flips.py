"""Test-time flips inside the served graph: one request per tile instead of one per flip.

:class:`ServerFlips` wraps the network: each input ``[N, 4, D, H, W]`` is flipped the client's way
(:func:`brats_client.tta.flips`, the seed's four for ``flip4``) and run through the network one flip after
another; each output is flipped back and :class:`brats_client.tta.Mean` sums them in the client's order and
divides by four. Flips are exact and GroupNorm's statistics are per sample, so the result equals the client's four
requests. The client sends one crop in and gets one probability map back: 28 bytes per voxel instead of 112.

One flip at a time, not the four as one batch: a batch of four holds four passes' activations at once, which took
2.3-3.2 times the plain model's server memory for one BraTS case (issue 23); in turn, the peak is one pass's
activations plus the running sum, and the CPU time is the same (docs/performance-notes.md, bench_companion).
"""

from __future__ import annotations

import torch
from brats_client import tta
from torch import nn


class ServerFlips(nn.Module):
    """``net`` averaged over the test-time flips ``tta`` (``flip4``: identity, X, Y, X+Y)."""

    def __init__(self, net: nn.Module, flips: str = "flip4") -> None:
        super().__init__()
        self.net = net
        self.dims = [tta.dims(axes, 2) for axes in tta.flips(flips)]  # [N, C, X, Y, Z]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = tta.Mean(len(self.dims))
        for i, d in enumerate(self.dims):
            out = self.net(x.flip(d) if d else x)
            mean.add(i, out.flip(d) if d else out)
        return mean.result()

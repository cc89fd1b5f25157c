"""Test-time flips inside the served graph: one request per tile instead of one per flip.

:class:`ServerFlips` wraps the network: each input ``[N, 4, D, H, W]`` is flipped the client's way
(``brats_client.postprocess.flips``, the seed's four for ``flip4``), the flipped copies run as one batch of
``4N``, each output is flipped back, and the four are summed in the client's order and divided by four. Flips are
exact and GroupNorm's statistics are per sample, so the result equals the client's four requests (bit for bit in
eager PyTorch). The client sends one crop in and gets one probability map back: 28 bytes per voxel instead of 112.
"""

from __future__ import annotations

import torch
from brats_client.postprocess import flips
from torch import nn

from .model import OUT_CHANNELS


class ServerFlips(nn.Module):
    """``net`` averaged over the test-time flips ``tta`` (``flip4``: identity, X, Y, X+Y)."""

    def __init__(self, net: nn.Module, tta: str = "flip4") -> None:
        super().__init__()
        self.net = net
        self.dims = [tuple(a + 2 for a in axes) for axes in flips(tta)]  # spatial axis 0 is tensor dim 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = torch.cat([x.flip(d) if d else x for d in self.dims], 0)
        out = self.net(batch).reshape(len(self.dims), -1, OUT_CHANNELS, *x.shape[2:])
        total = None
        for i, d in enumerate(self.dims):
            part = out[i].flip(d) if d else out[i]
            total = part if total is None else total + part
        return total / len(self.dims)

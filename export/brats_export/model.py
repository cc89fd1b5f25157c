"""The seed's 3D residual UNet, rebuilt from its published description.

Module and attribute names follow the seed so that its state dict (93 entries) loads unchanged:
``conv_input``, ``norm_input``, ``conv_first``, ``encoder_convs``, ``upsampling``, ``decoder_convs1x1``,
``decoder_convs``, ``conv_output``. Unlike the seed, ``forward`` takes and returns plain tensors.
"""

from __future__ import annotations

import torch
from brats_client.contract import IN_CHANNELS, OUT_CHANNELS
from torch import nn
from torch.nn import functional as F  # noqa: N812

CHANNELS = (16, 32, 64, 128)
ENCODER_BLOCKS = (1, 2, 2, 4)  # level 0 is ``conv_first``; levels 1..3 are ``encoder_convs.0..2``
DECODER_LEVELS = 4  # the seed stores four decoder stages; only 0..2 are used in forward
GROUPS = 8
SLOPE = 0.01


class ConvUnit(nn.Module):
    """A bias-free 3x3x3 convolution held as ``conv1`` (the seed's ``model.conv``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)


class Residual(nn.Module):
    """conv-GN-LReLU-conv-GN-LReLU plus the input; a stride-2 conv first when the level changes."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.downsample = (
            nn.Sequential(nn.Conv3d(cin, cout, 2, stride=2, bias=False)) if cin != cout else None
        )
        self.conv1 = ConvUnit(cout, cout)
        self.norm1 = nn.GroupNorm(GROUPS, cout)
        self.conv2 = ConvUnit(cout, cout)
        self.norm2 = nn.GroupNorm(GROUPS, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        y = F.leaky_relu(self.norm1(self.conv1(x)), SLOPE)
        y = F.leaky_relu(self.norm2(self.conv2(y)), SLOPE)
        return x + y


class Trilinear(nn.Module):
    """Parameter-free x2 trilinear upsampling (align_corners=False)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)


def _stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(Residual(cin, cout), *(Residual(cout, cout) for _ in range(blocks - 1)))


class UNet(nn.Module):
    """Input ``[N, 4, D, H, W]`` (D, H, W multiples of 8) -> sigmoid probabilities ``[N, 3, D, H, W]``."""

    def __init__(self) -> None:
        super().__init__()
        c = CHANNELS
        self.conv_input = nn.Conv3d(IN_CHANNELS, c[0], 3, padding=1, bias=False)
        self.norm_input = nn.GroupNorm(GROUPS, c[0])
        self.conv_first = _stage(c[0], c[0], ENCODER_BLOCKS[0])
        self.encoder_convs = nn.ModuleList(
            _stage(c[i], c[i + 1], ENCODER_BLOCKS[i + 1]) for i in range(len(c) - 1)
        )
        self.upsampling = nn.ModuleList(
            nn.Sequential(Trilinear(), nn.Conv3d(c[i + 1], c[i], 1, bias=False), nn.LeakyReLU(SLOPE))
            for i in range(len(c) - 1)
        )
        self.decoder_convs1x1 = nn.ModuleList(
            nn.Conv3d(2 * c[i], c[i], 1, bias=False) for i in range(DECODER_LEVELS)
        )
        self.decoder_convs = nn.ModuleList(_stage(c[i], c[i], 1) for i in range(DECODER_LEVELS))
        self.conv_output = nn.Conv3d(c[0], OUT_CHANNELS, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(self.norm_input(self.conv_input(x)))
        skips = []
        for stage in self.encoder_convs:
            skips.append(x)
            x = stage(x)
        for i in range(len(self.upsampling) - 1, -1, -1):
            up = self.upsampling[i](x)
            x = self.decoder_convs1x1[i](torch.cat([skips[i], up], dim=1))
            x = self.decoder_convs[i](x)
        return torch.sigmoid(self.conv_output(x))


def build_model() -> UNet:
    """A fresh network in eval mode (GroupNorm has no running statistics, so eval changes nothing)."""
    return UNet().eval()

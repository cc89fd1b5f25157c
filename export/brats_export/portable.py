"""GroupNorm written out for ONNX and OpenVINO so that both runtimes compute it as exactly as PyTorch does.

The legacy ONNX exporter turns ``nn.GroupNorm`` into Reshape + InstanceNormalization (OpenVINO: MVN). Both
runtimes then sum millions of float32 values per group in one long reduction. On a real normalised volume, whose
background is one constant value, those sums drift: at a BraTS crop of 144x176x144 the network's output moved by
up to 2.5e-2 (ONNX Runtime) and 5e-3 (OpenVINO), against 1e-6 for PyTorch's own kernel.

:class:`PortableGroupNorm` computes the same function with standard ops and short reductions:

1. per channel, the mean over W, then over H, then over D (each reduction at most a few hundred values); the
   group mean is the mean of its channels' means (equal counts, so exact);
2. two passes: the variance is the same hierarchical mean of ``(x - mean)**2``, never ``E[x^2] - E[x]^2``; its
   sums over W come from ReduceL2 (squared afterwards), so no squared copy of the full tensor is written;
3. ``y = (x - mean) * (weight / sqrt(var + eps)) + bias``, with per-channel factors from the small statistics.

OpenVINO merges consecutive reductions into one long one (and loses the precision again); the Reshape between
the W reduction and the others keeps them apart. Rejected variants and their figures: docs/performance-notes.md.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class PortableGroupNorm(nn.Module):
    """``nn.GroupNorm`` over ``[N, C, D, H, W]`` with hierarchical two-pass statistics (a copy of its parameters)."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        if not norm.affine:
            raise ValueError("PortableGroupNorm needs an affine GroupNorm (the seed's all are)")
        self.groups = norm.num_groups
        self.channels = norm.num_channels
        self.eps = norm.eps
        # stored broadcastable ([1, C, 1, 1, 1]): a Reshape of a parameter in the graph, constant-folded, lost its
        # input when several layers hold equal values (fresh networks: all ones) in the legacy exporter
        self.register_buffer("weight", norm.weight.detach().reshape(1, -1, 1, 1, 1).clone())
        self.register_buffer("bias", norm.bias.detach().reshape(1, -1, 1, 1, 1).clone())

    def _channel_mean(self, rows: torch.Tensor) -> torch.Tensor:
        """``[N, C, D, H]`` (values already reduced over W) -> ``[N, C]``: the mean over H, then over D."""
        s = rows.flatten(0, 1).mean(2)  # [N*C, D]; the Reshape keeps OpenVINO from merging the reductions
        return s.reshape(-1, self.channels, rows.shape[2]).mean(2)

    def _group_mean(self, rows: torch.Tensor) -> torch.Tensor:
        """``[N, C, D, H]`` -> ``[N, C, 1, 1, 1]``: the mean of each channel's group, for each of its channels."""
        size = self.channels // self.groups
        means = self._channel_mean(rows).reshape(-1, self.groups, size).mean(2, keepdim=True)
        return means.expand(-1, -1, size).reshape(-1, self.channels, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self._group_mean(x.mean(4))
        norms = torch.linalg.vector_norm(centred, ord=2, dim=4)  # [N, C, D, H]: sqrt of the sum of squares over W
        variance = self._group_mean(norms * norms / x.shape[4])
        return centred * (torch.rsqrt(variance + self.eps) * self.weight) + self.bias


def portable_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.GroupNorm`` replaced by :class:`PortableGroupNorm` (eval mode)."""
    out = copy.deepcopy(model).eval()
    for module in list(out.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(module, name, PortableGroupNorm(child))
    return out

"""Write a trained network in the seed's own checkpoint format (for demos and loader tests).

The seed's published file is a legacy (non-zip) ``torch.save`` of
``{'state': train.TrainingState, 'model': torch.nn.DataParallel(model.UNet)}``: whole module objects pickled, so
the pickle names the globals ``model.UNet``, ``model.Residual``, ``model.conv``, ``model.Trilinear`` and
``train.TrainingState``. This module mirrors those classes (same attribute names, hence the same 93 state-dict
keys), registers throwaway ``model`` and ``train`` modules in ``sys.modules`` only while saving, and pickles
modules with the attributes a torch 1.2 module had (torch 2 adds hook dictionaries and a ``set``, which would
drag ``builtins.set`` into the pickle; ``nn.Module.__setstate__`` restores them on load).

Only :func:`save_seed_checkpoint` and :func:`pickle_globals` are meant to be used from outside.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import pickle
import pickletools
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from brats_export import model as reference
from torch import nn
from torch.nn import functional as F  # noqa: N812

# Module attributes that torch 1.2 pickled; newer ones are dropped on save (Module.__setstate__ fills them in).
_TORCH2_ONLY = frozenset(
    {
        "_backward_pre_hooks",
        "_forward_hooks_always_called",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks_with_kwargs",
        "_is_full_backward_hook",
        "_load_state_dict_post_hooks",
        "_non_persistent_buffers_set",
        "_state_dict_pre_hooks",
    }
)


class conv(nn.Module):  # noqa: N801 - the seed's class name
    __module__ = "model"

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)


class Residual(nn.Module):
    __module__ = "model"

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.downsample = (
            nn.Sequential(nn.Conv3d(cin, cout, 2, stride=2, bias=False)) if cin != cout else None
        )
        self.conv1 = conv(cout, cout)
        self.norm1 = nn.GroupNorm(reference.GROUPS, cout)
        self.conv2 = conv(cout, cout)
        self.norm2 = nn.GroupNorm(reference.GROUPS, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        y = F.leaky_relu(self.norm1(self.conv1(x)), reference.SLOPE)
        y = F.leaky_relu(self.norm2(self.conv2(y)), reference.SLOPE)
        return x + y


class Trilinear(nn.Module):
    __module__ = "model"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)


def _stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(Residual(cin, cout), *(Residual(cout, cout) for _ in range(blocks - 1)))


class UNet(nn.Module):
    """Same attributes as ``brats_export.model.UNet``; the seed's forward takes and returns one-element lists."""

    __module__ = "model"

    def __init__(self) -> None:
        super().__init__()
        c = reference.CHANNELS
        self.conv_input = nn.Conv3d(reference.IN_CHANNELS, c[0], 3, padding=1, bias=False)
        self.norm_input = nn.GroupNorm(reference.GROUPS, c[0])
        self.conv_first = _stage(c[0], c[0], reference.ENCODER_BLOCKS[0])
        self.encoder_convs = nn.ModuleList(
            _stage(c[i], c[i + 1], reference.ENCODER_BLOCKS[i + 1]) for i in range(len(c) - 1)
        )
        self.upsampling = nn.ModuleList(
            nn.Sequential(Trilinear(), nn.Conv3d(c[i + 1], c[i], 1, bias=False), nn.LeakyReLU(reference.SLOPE))
            for i in range(len(c) - 1)
        )
        self.decoder_convs1x1 = nn.ModuleList(
            nn.Conv3d(2 * c[i], c[i], 1, bias=False) for i in range(reference.DECODER_LEVELS)
        )
        self.decoder_convs = nn.ModuleList(_stage(c[i], c[i], 1) for i in range(reference.DECODER_LEVELS))
        self.conv_output = nn.Conv3d(c[0], reference.OUT_CHANNELS, 3, padding=1, bias=True)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        x = self.conv_first(self.norm_input(self.conv_input(inputs[0])))
        skips = []
        for stage in self.encoder_convs:
            skips.append(x)
            x = stage(x)
        for i in range(len(self.upsampling) - 1, -1, -1):
            x = self.decoder_convs1x1[i](torch.cat([skips[i], self.upsampling[i](x)], dim=1))
            x = self.decoder_convs[i](x)
        return [torch.sigmoid(self.conv_output(x))]


class TrainingState:
    """The seed's bookkeeping object stored next to the model."""

    __module__ = "train"

    def __init__(self, epoch: int = 0, train_metric: Any = None, val_metric: Any = None, global_step: int = 0,
                 best_val: float = 0.0, optimizer_state: dict | None = None, cuda: bool = False) -> None:
        self.epoch = epoch
        self.train_metric = train_metric
        self.val_metric = val_metric
        self.global_step = global_step
        self.best_val = best_val
        self.optimizer_state = optimizer_state
        self.cuda = cuda


class _Pickler(pickle.Pickler):
    """Pickles nn.Module instances with torch-1.2 attributes only (protocol 2 NEWOBJ + state dict)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, nn.Module):
            state = {k: v for k, v in obj.__dict__.items() if k not in _TORCH2_ONLY}
            return copyreg.__newobj__, (type(obj),), state
        return NotImplemented


_pickle_module = types.ModuleType("seed_pickle")  # what torch.save needs of a pickle module
_pickle_module.Pickler = _Pickler
_pickle_module.dump = pickle.dump
_pickle_module.HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL


@contextlib.contextmanager
def _seed_modules() -> Iterator[None]:
    """Make ``model`` and ``train`` importable (for pickle's class lookup) while saving; restore afterwards."""
    fake = {
        "model": {"UNet": UNet, "Residual": Residual, "conv": conv, "Trilinear": Trilinear},
        "train": {"TrainingState": TrainingState},
    }
    saved = {name: sys.modules.get(name) for name in fake}
    try:
        for name, members in fake.items():
            module = types.ModuleType(name)
            for key, value in members.items():
                setattr(module, key, value)
            sys.modules[name] = module
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def to_seed_unet(net: reference.UNet) -> UNet:
    """A seed-structured copy of a ``brats_export`` network (strict key-for-key state-dict copy)."""
    seed_net = UNet()
    seed_net.load_state_dict(net.state_dict(), strict=True)
    return seed_net.eval()


def save_seed_checkpoint(net: reference.UNet, path: str | Path, state: TrainingState) -> Path:
    """Write ``{'state': state, 'model': DataParallel(seed UNet)}`` with the legacy serialisation to ``path``."""
    path = Path(path)
    payload = {"state": state, "model": nn.DataParallel(to_seed_unet(net).cpu())}
    tmp = path.with_name(path.name + ".tmp")
    with _seed_modules(), warnings.catch_warnings():
        # legacy torch.save tries to record each module class's source; the throwaway classes have none
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
        torch.save(payload, tmp, pickle_module=_pickle_module, pickle_protocol=2,
                   _use_new_zipfile_serialization=False)
    tmp.replace(path)
    return path


def pickle_globals(path: str | Path) -> set[str]:
    """``module.name`` of every global the main pickle of a legacy checkpoint refers to (read, not executed)."""
    data = Path(path).read_bytes()
    stream = io.BytesIO(data)
    found: set[str] = set()
    for _ in range(4):  # magic number, protocol version, sys info, then the object itself
        strings: list[str] = []
        for opcode, arg, _pos in pickletools.genops(stream):
            if opcode.name == "GLOBAL":
                found.add(str(arg).replace(" ", "."))
            elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(arg)
            elif opcode.name == "STACK_GLOBAL":
                found.add(f"{strings[-2]}.{strings[-1]}")
    return found

"""Write a trained network in the seed's own checkpoint format (for demos and loader tests).

The seed's published file is a legacy (non-zip) ``torch.save`` of
``{'state': train.TrainingState, 'model': torch.nn.DataParallel(model.UNet)}``: whole module objects pickled, so
the pickle names the globals ``model.UNet``, ``model.Residual``, ``model.conv``, ``model.Trilinear`` and
``train.TrainingState``. This module gives ``brats_export``'s classes those names (subclasses living in a
throwaway ``model`` module), registers ``model`` and ``train`` in ``sys.modules`` only while saving, and pickles
modules with the attributes a torch 1.2 module had (torch 2 adds hook dictionaries and a ``set``, which would
drag ``builtins.set`` into the pickle; ``nn.Module.__setstate__`` restores them on load).

Used from outside: :func:`save_seed_checkpoint`; the loader tests also build variants from :func:`seed_modules`,
:func:`to_seed_unet` and :class:`Torch12Pickler`.
"""

from __future__ import annotations

import contextlib
import copyreg
import pickle
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from brats_client.atomic import atomic_path
from brats_export import model as reference
from torch import nn

# Module attributes that torch 1.2 did not have; dropped on save (Module.__setstate__ fills them in on load).
TORCH2_ONLY = frozenset(
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


def _seed_class(name: str, base: type) -> type:
    """A subclass pickled as ``model.<name>``: the seed's class name, this project's code."""
    return type(name, (base,), {"__module__": "model", "__qualname__": name})


# brats_export class -> the seed's class (same attributes, hence the same 93 state-dict keys)
SEED_CLASSES: dict[type, type] = {
    reference.UNet: _seed_class("UNet", reference.UNet),
    reference.Residual: _seed_class("Residual", reference.Residual),
    reference.ConvUnit: _seed_class("conv", reference.ConvUnit),
    reference.Trilinear: _seed_class("Trilinear", reference.Trilinear),
}


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


class Torch12Pickler(pickle.Pickler):
    """Pickles nn.Module instances with torch-1.2 attributes only (protocol 2 NEWOBJ + state dict)."""

    def module_state(self, module: nn.Module) -> dict[str, Any]:
        return {k: v for k, v in module.__dict__.items() if k not in TORCH2_ONLY}

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, nn.Module):
            return copyreg.__newobj__, (type(obj),), self.module_state(obj)
        return NotImplemented


def pickle_module(pickler: type[pickle.Pickler] = Torch12Pickler) -> types.ModuleType:
    """What ``torch.save(pickle_module=...)`` needs of a pickle module, pickling with ``pickler``."""
    module = types.ModuleType("seed_pickle")
    module.Pickler = pickler
    module.dump = pickle.dump
    module.HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL
    return module


@contextlib.contextmanager
def seed_modules() -> Iterator[dict[type, type]]:
    """Make ``model`` and ``train`` importable (for pickle's class lookup) while saving; restore afterwards.

    Yields :data:`SEED_CLASSES`.
    """
    fake = {
        "model": {cls.__name__: cls for cls in SEED_CLASSES.values()},
        "train": {"TrainingState": TrainingState},
    }
    saved = {name: sys.modules.get(name) for name in fake}
    try:
        for name, members in fake.items():
            module = types.ModuleType(name)
            for key, value in members.items():
                setattr(module, key, value)
            sys.modules[name] = module
        yield SEED_CLASSES
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def to_seed_unet(net: reference.UNet) -> reference.UNet:
    """A fresh CPU network in eval mode with ``net``'s weights (strict key-for-key copy; no hooks or other state
    of ``net`` come along) whose modules carry the seed's class names (:data:`SEED_CLASSES`)."""
    seed_net = reference.UNet()
    seed_net.load_state_dict(net.state_dict(), strict=True)
    seed_net.eval()
    for module in seed_net.modules():
        module.__class__ = SEED_CLASSES.get(type(module), type(module))
    return seed_net


def save_seed_checkpoint(net: reference.UNet, path: str | Path, state: TrainingState) -> Path:
    """Write ``{'state': state, 'model': DataParallel(seed UNet)}`` with the legacy serialisation to ``path``."""
    path = Path(path)
    payload = {"state": state, "model": nn.DataParallel(to_seed_unet(net))}
    with atomic_path(path) as tmp, seed_modules(), warnings.catch_warnings():
        # legacy torch.save tries to record each module class's source; the throwaway classes have none
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
        torch.save(payload, tmp, pickle_module=pickle_module(), pickle_protocol=2,
                   _use_new_zipfile_serialization=False)
    return path

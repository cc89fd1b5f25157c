"""Write a trained network in the seed's own checkpoint format (for demos and loader tests).

The seed's published file is a legacy (non-zip) ``torch.save`` of
``{'state': train.TrainingState, 'model': torch.nn.DataParallel(model.UNet)}``: whole module objects pickled, so
the pickle names the globals ``model.UNet``, ``model.Residual``, ``model.conv``, ``model.Trilinear`` and
``train.TrainingState``. This module gives ``brats_export``'s classes those names (subclasses living in a
throwaway ``model`` module), registers ``model`` and ``train`` in ``sys.modules`` only while saving, and pickles
modules with the attributes a torch 1.2 module had (torch 2 adds hook dictionaries and a ``set``, which would
drag ``builtins.set`` into the pickle; ``nn.Module.__setstate__`` restores them on load).

The seed's test.py calls the unpickled module itself, so the tree written here is the one the seed's own
``model.py`` builds and runs (:func:`to_seed_unet`), not just its weights:

- ``UNet`` also carries ``depth``, ``encoder_layers``, ``decoder_layers``, ``number_of_channels``,
  ``number_of_outputs``, ``block`` (the class ``model.Residual``), ``softmax`` (Softmax(dim=1)), ``sigmoid``,
  ``relu`` (LeakyReLU(0.01, inplace)) and the empty ModuleLists ``attention_convs`` and ``upsampling_distance``;
- each ``upsampling`` stage is ``Sequential(Trilinear, Conv3d)``: the seed applies ``UNet.relu`` after the stage in
  its forward, whereas ``brats_export.model`` keeps that LeakyReLU inside the stage (no weights, so the state dict
  is the same 93 keys either way; leaving it in would make the seed's forward apply it twice);
- each ``Residual`` carries ``in_channels``, ``out_channels`` (both its width, as the seed builds them),
  ``downsample`` (None or a Sequential), ``relu1`` and ``relu2`` (LeakyReLU(0.01, inplace)); ``Trilinear`` carries
  ``scale`` (2); ``conv`` wraps one ``conv1`` Conv3d.

The classes here only give the pickle its names. To run such a file, load it with
``brats_export.checkpoint.load_model``; ``tests/unit/test_seed_format.py`` restates the seed's own classes and runs
the unpickled module with them.

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


def _seed_class(name: str, base: type, **members: Any) -> type:
    """A subclass pickled as ``model.<name>``: the seed's class name, this project's code."""
    return type(name, (base,), {"__module__": "model", "__qualname__": name, **members})


def _not_runnable(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    raise TypeError("model.UNet of brats_demo.seedformat only names the pickle's class and has the seed's module "
                    "tree (no LeakyReLU inside the upsampling stages), which brats_export.model.UNet.forward does "
                    "not run; load the file with brats_export.checkpoint.load_model")


# brats_export class -> the seed's class (the same 93 state-dict keys; the seed's extra attributes are added by
# to_seed_unet)
SEED_CLASSES: dict[type, type] = {
    reference.UNet: _seed_class("UNet", reference.UNet, forward=_not_runnable),
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


SLOPE = 0.01  # the seed's LeakyReLU slope (UNet.relu, Residual.relu1/relu2)
UPSAMPLING_SCALE = 2  # Trilinear.scale


def _seed_relu() -> nn.LeakyReLU:
    return nn.LeakyReLU(SLOPE, inplace=True)


def _add_seed_attributes(net: reference.UNet) -> None:
    """Give ``net`` (a ``brats_export`` UNet) the module tree and attributes of the seed's ``model.UNet``."""
    for stage in net.upsampling:  # Trilinear, Conv3d, LeakyReLU -> Trilinear, Conv3d (the seed's UNet.relu follows)
        if len(stage) != 3 or not isinstance(stage[2], nn.LeakyReLU) or stage[2].negative_slope != SLOPE:
            raise ValueError(f"unexpected upsampling stage {stage}: brats_export.model changed, update seedformat")
        del stage[2]
    for module in net.modules():
        if isinstance(module, reference.Residual):
            width = module.conv1.conv1.out_channels  # the seed builds every block with in = out = its width
            module.in_channels = module.out_channels = width
            module.relu1, module.relu2 = _seed_relu(), _seed_relu()
        elif isinstance(module, reference.Trilinear):
            module.scale = UPSAMPLING_SCALE
    net.depth = len(reference.CHANNELS)
    net.encoder_layers = list(reference.ENCODER_BLOCKS)
    net.decoder_layers = [len(stage) for stage in net.decoder_convs]
    net.number_of_channels = list(reference.CHANNELS)
    net.number_of_outputs = net.conv_output.out_channels
    net.block = SEED_CLASSES[reference.Residual]
    net.softmax = nn.Softmax(dim=1)
    net.sigmoid = nn.Sigmoid()
    net.relu = _seed_relu()
    net.attention_convs = nn.ModuleList()
    net.upsampling_distance = nn.ModuleList()


def to_seed_unet(net: reference.UNet) -> reference.UNet:
    """A fresh CPU network in eval mode with ``net``'s weights (strict key-for-key copy; no hooks or other state
    of ``net`` come along), with the seed's module tree and attributes, whose modules carry the seed's class names
    (:data:`SEED_CLASSES`). Its state dict is ``net``'s; it is for pickling, not for running here."""
    seed_net = reference.UNet()
    seed_net.load_state_dict(net.state_dict(), strict=True)
    seed_net.eval()
    _add_seed_attributes(seed_net)
    for module in seed_net.modules():
        module.__class__ = SEED_CLASSES.get(type(module), type(module))
    return seed_net


def cpu_data_parallel(module: nn.Module) -> nn.DataParallel:
    """``torch.nn.DataParallel(module)`` as torch builds it where no GPU is visible (``device_ids == []``: its
    forward calls ``module`` directly), on any machine: with a GPU, DataParallel would move the weights to it and
    the file would hold CUDA tensors."""
    wrapper = nn.DataParallel.__new__(nn.DataParallel)
    nn.Module.__init__(wrapper)
    wrapper.module = module
    wrapper.device_ids = []
    return wrapper


def save_seed_checkpoint(net: reference.UNet, path: str | Path, state: TrainingState) -> Path:
    """Write ``{'state': state, 'model': DataParallel(seed UNet)}`` with the legacy serialisation to ``path``."""
    path = Path(path)
    payload = {"state": state, "model": cpu_data_parallel(to_seed_unet(net))}
    with atomic_path(path) as tmp, seed_modules(), warnings.catch_warnings():
        # legacy torch.save tries to record each module class's source; the throwaway classes have none
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
        torch.save(payload, tmp, pickle_module=pickle_module(), pickle_protocol=2,
                   _use_new_zipfile_serialization=False)
    return path

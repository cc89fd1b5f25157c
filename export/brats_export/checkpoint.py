"""Safe loading of the seed's checkpoint (and of plain state dicts) into :class:`brats_export.model.UNet`.

The published ``brain-tumor-segmentation-0002`` file is a legacy (pre-1.6, non-zip) ``torch.save`` of
``{'state': train.TrainingState, 'model': torch.nn.DataParallel(model.UNet)}``: whole module objects, pickled.
A full unpickler would import the seed's ``model`` and ``train`` modules and run whatever the pickle names. Here
``torch.load`` is given a pickle module whose ``Unpickler.find_class`` resolves only the names in ``_ALLOWED``:

- the seed's classes (``model.UNet``, ``model.Residual``, ``model.conv``, ``model.Trilinear``,
  ``train.TrainingState``) and common ``torch.nn`` module classes (DataParallel, Conv3d, GroupNorm, LeakyReLU,
  Sigmoid, Softmax, Sequential, ModuleList, ...) become *inert* placeholder classes: created with ``__new__``,
  their pickled ``__dict__`` kept by ``__setstate__``; no code of the real class is imported or run;
- torch's tensor rebuild helpers (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``, ...), wrapped to
  return plain tensors (hooks and parameter state dropped); ``torch.Size``, ``torch.device``, torch dtypes,
  ``torch.UntypedStorage`` (the typed ``torch.*Storage`` names are resolved by torch itself);
- ``torch.nn.backends.thnn._get_thnn_function_backend`` (torch 1.x modules pickle ``_backend``): a function
  returning ``None``, the real one is not imported;
- ``collections.OrderedDict``, ``builtins.set``/``frozenset``, ``_codecs.encode`` (bytes in protocol 2, latin-1
  only); numpy scalars, dtypes and arrays (as in TrainingState metrics), rebuilt from raw bytes, never from
  object dtype.

Every other global (``posix.system``, ``builtins.eval``, ``subprocess.Popen``, a custom reducer class, ...) stops
the load with a :class:`CheckpointError` that names it. The state dict is then read from the placeholder tree
(``_parameters``, ``_buffers``, ``_modules``), the ``module.`` prefix stripped, and every one of the 93 keys of
:func:`brats_export.model.build_model` checked by name and shape.

Public API: :func:`load_state_dict`, :func:`load_model`, :func:`load_checkpoint` (the model and the sha256 of the
bytes it came from, the file read once), :func:`checkpoint_sha256`.
"""

from __future__ import annotations

import _compat_pickle
import collections
import functools
import hashlib
import io
import logging
import os
import pickle
import struct
import types
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from . import hashing
from .errors import CheckpointError, ExportError
from .model import UNet, build_model

log = logging.getLogger(__name__)

NETWORK_NAME = "brain-tumor-segmentation-0002"
# Keys under which a dict may hold the weights, tried in this order (also one level deeper, e.g. {'model': {...}}).
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights", "module")
PREFIX = "module."
MAX_FILE_BYTES = 1 << 30  # the published file is ~22 MB; optimizer state can triple that
_MAX_LISTED = 10  # names listed per kind of mismatch
_MAX_DEPTH = 64  # module nesting (the UNet is 5 deep) and container nesting
_HINT = (
    f"Pass the published {NETWORK_NAME} checkpoint, or a state dict of brats_export.model.build_model() "
    f"(keys with or without the '{PREFIX}' prefix)."
)

# ---------------------------------------------------------------------------------------------------------------
# Inert placeholders for the classes a pickled module tree names


class InertObject:
    """Stands in for an instance of a class named by the checkpoint: keeps the pickled state, runs none of its code.

    Subclasses exist per allowlisted name (``pickled_name``). Pickle creates them with ``cls.__new__(cls)`` (NEWOBJ)
    and hands the pickled ``__dict__`` to ``__setstate__`` (BUILD).
    """

    pickled_name: ClassVar[str] = "?"
    dump_patches: ClassVar[bool] = False  # read by torch's legacy loader when recorded module source differs

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise pickle.UnpicklingError(f"{self.pickled_name} may only be rebuilt from its pickled state, not called")

    def __setstate__(self, state: Any) -> None:
        self.pickled_state = state

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The pickled ``__dict__`` (empty when the pickle gave none)."""
        state = getattr(self, "pickled_state", None)
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0]
        return state if isinstance(state, Mapping) else {}

    def __repr__(self) -> str:
        return f"<inert {self.pickled_name}>"


_INERT_MODULE = "brats_export.checkpoint.<inert>"  # not importable: torch's source check gives up at once


def _inert_classes(names: Iterable[str]) -> dict[str, type[InertObject]]:
    classes = {}
    for name in names:
        label = f"Inert[{name}]"
        classes[name] = type(label, (InertObject,), {"pickled_name": name, "__module__": _INERT_MODULE,
                                                     "__qualname__": label})
    return classes


SEED_CLASSES = ("model.UNet", "model.Residual", "model.conv", "model.Trilinear", "train.TrainingState")
TORCH_MODULE_CLASSES = tuple(
    f"torch.nn.{path}"
    for path in (
        "parallel.data_parallel.DataParallel",
        "parallel.distributed.DistributedDataParallel",
        "modules.conv.Conv1d", "modules.conv.Conv2d", "modules.conv.Conv3d",
        "modules.conv.ConvTranspose2d", "modules.conv.ConvTranspose3d",
        "modules.linear.Linear", "modules.linear.Identity",
        "modules.normalization.GroupNorm", "modules.normalization.LayerNorm",
        "modules.batchnorm.BatchNorm2d", "modules.batchnorm.BatchNorm3d",
        "modules.instancenorm.InstanceNorm2d", "modules.instancenorm.InstanceNorm3d",
        "modules.activation.LeakyReLU", "modules.activation.ReLU", "modules.activation.PReLU",
        "modules.activation.ELU", "modules.activation.Sigmoid", "modules.activation.Softmax",
        "modules.activation.Tanh",
        "modules.container.Sequential", "modules.container.ModuleList", "modules.container.ModuleDict",
        "modules.upsampling.Upsample",
        "modules.dropout.Dropout", "modules.dropout.Dropout3d",
        "modules.pooling.MaxPool3d", "modules.pooling.AvgPool3d", "modules.pooling.AdaptiveAvgPool3d",
    )
)

# ---------------------------------------------------------------------------------------------------------------
# Safe stand-ins for the functions a checkpoint may call


def _thnn_function_backend() -> None:
    """torch 1.x modules pickled ``_backend = torch.nn.backends.thnn._get_thnn_function_backend()``."""
    return None


def _storage(storage: Any) -> torch.storage.TypedStorage:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"tensor data is a {type(storage).__name__}, not a torch storage")
    return storage


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any) -> torch.Tensor:
    return torch._utils._rebuild_tensor(_storage(storage), storage_offset, tuple(size), tuple(stride))


def _with_metadata(tensor: torch.Tensor, metadata: Any) -> torch.Tensor:
    if metadata:  # conj / neg bits
        if not isinstance(metadata, dict) or not all(isinstance(v, bool) for v in metadata.values()):
            raise pickle.UnpicklingError("tensor metadata must be a dict of flags")
        torch._utils.set_tensor_metadata(tensor, metadata)
    return tensor


def _rebuild_tensor_v2(storage: Any, storage_offset: int, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    # requires_grad and backward hooks are dropped: we want plain weights, and hooks would be callables
    return _with_metadata(_rebuild_tensor(storage, storage_offset, size, stride), metadata)


def _rebuild_tensor_v3(storage: Any, storage_offset: int, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> torch.Tensor:
    if not isinstance(dtype, torch.dtype):
        raise pickle.UnpicklingError("tensor dtype is not a torch.dtype")
    tensor = torch._utils._rebuild_tensor_v3(_storage(storage), storage_offset, tuple(size), tuple(stride), False,
                                             collections.OrderedDict(), dtype)
    return _with_metadata(tensor, metadata)


def _tensor(data: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"parameter data is a {type(data).__name__}, not a tensor")
    return data


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> torch.Tensor:
    return _tensor(data)  # a plain tensor: the loader only needs the values


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> torch.Tensor:
    return _tensor(data)  # python attributes of the parameter (``state``) are not set


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """How protocol 2 pickles ``bytes`` (``_codecs.encode(str, 'latin1')``)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin-1 bytes")
    return text.encode("latin1")


def _np_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise pickle.UnpicklingError("numpy.dtype is allowed only with a type code string")
    return np.dtype(spec)  # BUILD then calls numpy's own dtype.__setstate__


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalars are allowed only with a plain dtype and raw bytes")
    if len(data) != dtype.itemsize:
        raise pickle.UnpicklingError(f"numpy scalar of {dtype} needs {dtype.itemsize} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


class _NdarrayMarker:
    """What ``numpy.ndarray`` resolves to: accepted only as the first argument of numpy's ``_reconstruct``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("numpy.ndarray may only appear inside numpy's own array pickles")


def _np_reconstruct(subtype: Any, shape: Any = (0,), dtype: Any = b"b") -> np.ndarray:
    if subtype is not _NdarrayMarker:
        raise pickle.UnpicklingError("numpy _reconstruct is allowed only for numpy.ndarray")
    return np.empty((0,), dtype=np.uint8)  # numpy's ndarray.__setstate__ (BUILD) sets shape, dtype and data


def _allowed_globals() -> dict[str, Any]:
    allowed: dict[str, Any] = {}
    allowed.update(_inert_classes(SEED_CLASSES))
    allowed.update(_inert_classes(TORCH_MODULE_CLASSES))
    allowed.update({
        "torch.nn.backends.thnn._get_thnn_function_backend": _thnn_function_backend,
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter_with_state,
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "torch.UntypedStorage": torch.UntypedStorage,
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "_codecs.encode": _codecs_encode,
        "numpy.dtype": _np_dtype,
        "numpy.ndarray": _NdarrayMarker,
    })
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1 and numpy 2 spell it differently
        allowed[f"{core}.scalar"] = _np_scalar
        allowed[f"{core}._reconstruct"] = _np_reconstruct
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[f"torch.{name}"] = getattr(torch, name)
    return allowed


_ALLOWED = _allowed_globals()


def allowed_globals() -> tuple[str, ...]:
    """The ``module.name`` globals a checkpoint may refer to (everything else is refused)."""
    return tuple(sorted(_ALLOWED))


# ---------------------------------------------------------------------------------------------------------------
# The restricted pickle module handed to torch.load


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle names a global outside the allowlist."""

    def __init__(self, qualified_name: str) -> None:
        super().__init__(f"global {qualified_name} is not on the allowlist")
        self.qualified_name = qualified_name


def _canonical(module: str, name: str) -> str:
    """Python 2 names as protocol 0-2 pickles write them (``__builtin__.set``) -> Python 3 names."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals from the allowlist only; never imports a module."""

    def find_class(self, module: str, name: str) -> Any:
        qualified = _canonical(str(module), str(name))
        try:
            return _ALLOWED[qualified]
        except KeyError:
            raise RefusedGlobalError(qualified) from None


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# torch.load needs of a pickle module: ``Unpickler``, ``load`` and ``__name__``.
restricted_pickle = types.ModuleType("brats_export.checkpoint.restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]

# What a corrupt or cut-off file makes pickle, torch's readers and the rebuild helpers raise.
_READ_ERRORS = (
    pickle.UnpicklingError, EOFError, RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError,
    struct.error, OverflowError, zipfile.BadZipFile,
)

# ---------------------------------------------------------------------------------------------------------------
# Reading the file


def _check_path(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist: check the path (download the {NETWORK_NAME} "
                              "checkpoint first, or pass the .pth written by training)")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory: pass the checkpoint file inside it")


def _checked_size(path: Path) -> int:
    _check_path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e.strerror}") from e
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the download or copy did not finish; "
                              "fetch it again")
    if size > MAX_FILE_BYTES:
        raise CheckpointError(f"checkpoint {path} is {size / 2**20:.0f} MiB, far more than this network "
                              f"(5.43 M parameters, ~22 MB): pass the {NETWORK_NAME} checkpoint")
    return size


def _corrupt(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is truncated or corrupt ({detail}): download or copy it again")


def _check_zip(data: bytes, path: Path) -> None:
    """A torch zip checkpoint: complete, CRCs right, and not a TorchScript archive (which torch.load would run)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise _corrupt(path, f"zip archive unreadable: {e}") from e
    if bad is not None:
        raise _corrupt(path, f"CRC mismatch in {bad}")
    if any(n.endswith("constants.pkl") for n in names) or any("/code/" in n for n in names):
        raise CheckpointError(f"checkpoint {path} is a TorchScript archive (torch.jit.save), not weights; it is "
                              f"not loaded because loading runs its code. {_HINT}")
    if not any(n.endswith("data.pkl") for n in names):
        raise CheckpointError(f"checkpoint {path} is a zip archive but not a torch.save checkpoint "
                              f"(no data.pkl among {len(names)} entries). {_HINT}")


def _file_kind(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode
        return "legacy"
    if head[257:262] == b"ustar":
        return "tar"
    if len(head) > 9 and head[8:10] in (b'{"', b"{'"):
        return "safetensors"
    return "unknown"


def _read_bytes(path: Path) -> bytes:
    _checked_size(path)
    try:
        return path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e.strerror}") from e


def _read_object(data: bytes, path: Path) -> Any:
    """Unpickle ``path``'s bytes ``data`` with the restricted pickle module (in memory: no tar detour, no mmap)."""
    kind = _file_kind(data[:512])
    if kind == "zip":
        _check_zip(data, path)
    elif kind == "tar":
        raise CheckpointError(f"checkpoint {path} is in the tar format of PyTorch < 0.4, which is not supported: "
                              f"re-save its state dict with a newer torch. {_HINT}")
    elif kind == "safetensors":
        raise CheckpointError(f"checkpoint {path} looks like a safetensors file: load it with "
                              f"safetensors.torch.load_file and torch.save the resulting state dict. {_HINT}")
    elif kind == "unknown":
        raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint (unrecognised header "
                              f"{data[:8].hex(' ')}). {_HINT}")
    try:
        with warnings.catch_warnings():
            # the legacy loader compares module source recorded in the file with the (inert) class: irrelevant
            warnings.filterwarnings("ignore", category=torch.serialization.SourceChangeWarning)
            warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
            obj = torch.load(io.BytesIO(data), map_location="cpu", pickle_module=restricted_pickle,
                             weights_only=False, mmap=False)
    except RefusedGlobalError as e:
        raise CheckpointError(
            f"checkpoint {path} refers to {e.qualified_name}, which is refused for safety: loading it could run "
            f"code from the file. Only the network's own classes and torch's tensor helpers are allowed. {_HINT}"
        ) from e
    except _READ_ERRORS as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    log.debug("unpickled %s (%s format): %s", path, kind, type(obj).__name__)
    return obj


# ---------------------------------------------------------------------------------------------------------------
# Finding the weights in what was unpickled


def _is_module(obj: Any) -> bool:
    return isinstance(obj, InertObject) and ("_modules" in obj.attributes or "_parameters" in obj.attributes)


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _module_state_dict(module: InertObject, path: Path, prefix: str = "", depth: int = 0,
                       out: dict[str, Any] | None = None) -> dict[str, Any]:
    """``name -> tensor`` of a pickled module tree, as ``nn.Module.state_dict`` would list it."""
    out = {} if out is None else out
    if depth > _MAX_DEPTH:
        raise CheckpointError(f"checkpoint {path}: module tree nested deeper than {_MAX_DEPTH} at {prefix!r}")
    attributes = module.attributes
    skipped = attributes.get("_non_persistent_buffers_set") or ()
    for group in ("_parameters", "_buffers"):
        entries = attributes.get(group) or {}
        if not isinstance(entries, Mapping):
            raise CheckpointError(f"checkpoint {path}: {module.pickled_name} at {prefix or '<root>'!r} has a "
                                  f"malformed {group}. {_HINT}")
        for name, value in entries.items():
            if value is None or (group == "_buffers" and name in skipped):
                continue
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"checkpoint {path}: {prefix}{name} is a {type(value).__name__}, "
                                      f"not a tensor. {_HINT}")
            out[f"{prefix}{name}"] = value
    children = attributes.get("_modules") or {}
    if not isinstance(children, Mapping):
        raise CheckpointError(f"checkpoint {path}: {module.pickled_name} at {prefix or '<root>'!r} has malformed "
                              f"_modules. {_HINT}")
    for name, child in children.items():
        if child is None:
            continue
        if not _is_module(child):
            raise CheckpointError(f"checkpoint {path}: submodule {prefix}{name} is a {type(child).__name__}, "
                                  f"not a module. {_HINT}")
        _module_state_dict(child, path, f"{prefix}{name}.", depth + 1, out)
    return out


def _find_weights(obj: Any, path: Path, depth: int = 0) -> dict[str, Any] | None:
    if _is_module(obj):
        return _module_state_dict(obj, path)
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping) and depth < 3:
        for key in CONTAINER_KEYS:
            if key in obj:
                found = _find_weights(obj[key], path, depth + 1)
                if found is not None:
                    return found
    return None


def _describe(obj: Any) -> str:
    if isinstance(obj, InertObject):
        return f"a {obj.pickled_name} object"
    if isinstance(obj, Mapping):
        keys = [repr(k) for k in list(obj)[:_MAX_LISTED]]
        more = f", ... ({len(obj)} in all)" if len(obj) > _MAX_LISTED else ""
        return f"a dict with keys {', '.join(keys)}{more}" if keys else "an empty dict"
    return f"a {type(obj).__name__}"


def _strip_prefix(weights: dict[str, Any]) -> dict[str, Any]:
    while weights and all(k.startswith(PREFIX) for k in weights):  # DataParallel, possibly twice
        weights = {k[len(PREFIX):]: v for k, v in weights.items()}
    return weights


# ---------------------------------------------------------------------------------------------------------------
# Validation against the network


@functools.lru_cache(maxsize=1)
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """The 93 state-dict names of :func:`build_model` and their shapes (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = build_model()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _listed(names: list[str]) -> str:
    more = f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _validated(weights: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    expected = expected_shapes()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshaped = [k for k in expected if k in weights and tuple(weights[k].shape) != expected[k]]
    not_float = [k for k in expected if k in weights and not weights[k].is_floating_point()]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key{'s' * (len(missing) != 1)}, e.g. {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key{'s' * (len(unexpected) != 1)}, e.g. "
                        f"{_listed(unexpected)}")
    if misshaped:
        shapes = [f"{k} expected {_shape(expected[k])}, got {_shape(tuple(weights[k].shape))}"
                  for k in misshaped]
        problems.append(f"{len(misshaped)} key{'s' * (len(misshaped) != 1)} with the wrong shape: "
                        f"{_listed(shapes)}")
    if not_float:
        kinds = [f"{k} ({weights[k].dtype})" for k in not_float]
        problems.append(f"{len(not_float)} key{'s' * (len(not_float) != 1)} not floating point: {_listed(kinds)}")
    if problems:
        what = "is not" if len(missing) > len(expected) // 2 else "does not match"
        raise CheckpointError(f"checkpoint {path} {what} the {NETWORK_NAME} network (3D residual UNet, "
                              f"{len(expected)} tensors): {'; '.join(problems)}. {_HINT}")
    state = {k: weights[k].detach().to(device="cpu", dtype=torch.float32).contiguous() for k in expected}
    non_finite = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
    if non_finite:
        raise CheckpointError(f"checkpoint {path} holds NaN or infinite values in {len(non_finite)} tensor"
                              f"{'s' * (len(non_finite) != 1)}: {_listed(non_finite)}; the training diverged "
                              "or the file is damaged: use another checkpoint")
    return state


# ---------------------------------------------------------------------------------------------------------------
# Public API


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The network's 93 tensors (float32, CPU, no ``module.`` prefix) from a checkpoint, without running its code.

    Accepts the seed's own file (``{'state': TrainingState, 'model': DataParallel(UNet)}``, legacy or zip
    serialisation), a state dict with or without the ``module.`` prefix, or a dict holding either under one of
    :data:`CONTAINER_KEYS`. Raises :class:`CheckpointError` naming the file and what to do.
    """
    path = Path(path)
    return _state_dict(_read_bytes(path), path)


def _state_dict(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    obj = _read_object(data, path)
    weights = _find_weights(obj, path)
    if weights is None:
        raise CheckpointError(
            f"checkpoint {path} holds {_describe(obj)}, not a network or state dict; expected the {NETWORK_NAME} "
            f"file ({{'state', 'model'}}), a state dict, or a dict with one of the keys {', '.join(CONTAINER_KEYS)}. "
            f"{_HINT}"
        )
    state = _validated(_strip_prefix(weights), path)
    log.info("loaded %d tensors from %s", len(state), path)
    return state


def load_model(path: str | os.PathLike[str]) -> UNet:
    """:func:`build_model` with the weights of ``path`` (strict), in eval mode."""
    return _model(load_state_dict(path), Path(path))


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[UNet, str]:
    """:func:`load_model` and the hex SHA-256 of the same bytes (the file is read once)."""
    path = Path(path)
    data = _read_bytes(path)
    return _model(_state_dict(data, path), path), hashlib.sha256(data).hexdigest()


def _model(state: dict[str, torch.Tensor], path: Path) -> UNet:
    model = build_model()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # cannot happen after validation; kept so that the CLI still reports the file
        raise CheckpointError(f"checkpoint {path} does not fit the network: {e}. {_HINT}") from e
    return model.eval()


def checkpoint_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the checkpoint file's bytes; a :class:`CheckpointError` when it cannot be read."""
    path = Path(path)
    _check_path(path)
    try:
        return hashing.exported_sha256(path, "checkpoint")
    except ExportError as e:
        raise CheckpointError(str(e)) from e.__cause__

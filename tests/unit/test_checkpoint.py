"""Safe checkpoint loading: the seed's own file format, plain state dicts, malicious pickles, broken files.

Seed-format files are written with ``brats_demo.seedformat``: throwaway ``model`` and ``train`` modules are put in
``sys.modules`` only while saving (classes named exactly ``model.UNet``, ``model.Residual``, ``model.conv``,
``model.Trilinear``, ``train.TrainingState``), and are gone again when the loader runs, so a load that worked
imported nothing. Here they come in four variants: legacy or zip serialisation, torch 2 or torch 1.2 module pickles.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from brats_demo import seedformat
from brats_export import checkpoint, hashing
from brats_export import model as net_module
from brats_export.checkpoint import checkpoint_sha256, load_checkpoint, load_model, load_state_dict
from brats_export.errors import CheckpointError, ExportError
from brats_export.hashing import exported_sha256
from torch import nn

SEED_GLOBALS = (b"cmodel\nUNet\n", b"cmodel\nResidual\n", b"cmodel\nconv\n", b"cmodel\nTrilinear\n",
                b"ctrain\nTrainingState\n")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ seed format


class _Torch12ThnnPickler(seedformat.Torch12Pickler):
    """Modules exactly as torch 1.2 wrote them: also ``_backend = _get_thnn_function_backend()``."""

    def module_state(self, module):
        return {**super().module_state(module), "_backend": _THNN_BACKEND}

    def reducer_override(self, obj):
        if obj is _THNN_BACKEND:
            from torch.nn.backends import thnn  # only the test imports it, to name it in the pickle

            return thnn._get_thnn_function_backend, ()
        return super().reducer_override(obj)


_THNN_BACKEND = object()


def save_seed_checkpoint(net: nn.Module, path: Path, legacy: bool, layout: str) -> Path:
    """``torch.save({'state': TrainingState, 'model': DataParallel(model.UNet)})`` in the seed's class names."""
    optimizer_state = {  # what Adam.state_dict() holds (built by hand: constructing an optimizer costs 1.5 s)
        "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.randn(3), "exp_avg_sq": torch.rand(3)}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                          "amsgrad": False, "params": [0]}],
    }
    state = seedformat.TrainingState(
        epoch=7, train_metric={"Dice": [np.array([0.71, 0.62, 0.55]), np.float64(0.6)]},
        val_metric={"Dice": [np.array([0.8, 0.7, 0.6])]}, global_step=1234, best_val=np.float32(0.7),
        optimizer_state=optimizer_state, cuda=True,
    )
    with seedformat.seed_modules() as classes, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
        seed_net = seedformat.to_seed_unet(net)
        for module in seed_net.modules():
            if isinstance(module, net_module.Trilinear):
                module.scale = 2
        # what the seed's UNet also holds: its block class, unused activations, empty module lists, settings
        seed_net.block = classes[net_module.Residual]
        seed_net.softmax, seed_net.sigmoid, seed_net.relu = nn.Softmax(dim=1), nn.Sigmoid(), nn.LeakyReLU(0.01)
        seed_net.attention_convs, seed_net.upsampling_distance = nn.ModuleList(), nn.ModuleList()
        seed_net.number_of_channels, seed_net.depth = [16, 32, 64, 128], 4
        payload = {"state": state, "model": nn.DataParallel(seed_net)}
        kwargs = {"pickle_module": seedformat.pickle_module(_Torch12ThnnPickler)} if layout == "torch1.2" else {}
        torch.save(payload, path, _use_new_zipfile_serialization=not legacy, **kwargs)
    return path


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    model = net_module.build_model()
    with torch.no_grad():
        for p in model.parameters():  # GroupNorm starts at 1 / 0: make every tensor distinctive
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def x_and_y(net):
    torch.manual_seed(1)
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        return x, net(x)


SEED_VARIANTS = [(legacy, layout) for legacy in (True, False) for layout in ("torch2", "torch1.2")]


@pytest.fixture(scope="module")
def seed_files(net, tmp_path_factory) -> dict[tuple[bool, str], Path]:
    folder = tmp_path_factory.mktemp("seed")
    return {
        (legacy, layout): save_seed_checkpoint(
            net, folder / f"seed-{'legacy' if legacy else 'zip'}-{layout}.pth", legacy, layout)
        for legacy, layout in SEED_VARIANTS
    }


@pytest.mark.parametrize(("legacy", "layout"), SEED_VARIANTS)
def test_seed_checkpoint_loads_without_importing_anything(seed_files, x_and_y, legacy, layout):
    path = seed_files[legacy, layout]
    data = path.read_bytes()
    assert data.startswith(b"PK\x03\x04") is not legacy
    for name in SEED_GLOBALS:  # the pickle really refers to the seed's modules
        assert name in data
    assert b"ctorch.nn.modules.activation\nSoftmax\n" in data
    assert (b"ctorch.nn.backends.thnn\n_get_thnn_function_backend\n" in data) is (layout == "torch1.2")
    before = {name: sys.modules.get(name) for name in ("model", "train")}
    assert before == {"model": None, "train": None}

    model = load_model(path)

    assert {name: sys.modules.get(name) for name in ("model", "train")} == before  # nothing was imported
    assert type(model) is net_module.UNet and not model.training
    x, y = x_and_y
    with torch.no_grad():
        torch.testing.assert_close(model(x), y, atol=1e-6, rtol=0)


def test_seed_checkpoint_state_dict_is_exact(seed_files, net):
    state = load_state_dict(seed_files[True, "torch1.2"])
    expected = net.state_dict()
    assert list(state) == list(checkpoint.expected_shapes())
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert all(v.dtype == torch.float32 and not v.requires_grad for v in state.values())


def test_demo_seed_writer_is_read(net, tmp_path):
    training = copy.deepcopy(net)
    training.conv_output.register_forward_hook(lambda _m, _i, out: None)  # as train_demo.py does; not pickled
    path = seedformat.save_seed_checkpoint(training, tmp_path / "demo.pth", seedformat.TrainingState(epoch=1))
    state = load_state_dict(path)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def _spec_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """The 93 names and shapes listed in shared/spec/seed-model-and-pipeline.md, written out from the spec (not
    from the network), so the loader's table is checked against the published checkpoint's layout."""
    c = (16, 32, 64, 128)
    shapes: dict[str, tuple[int, ...]] = {"conv_input.weight": (16, 4, 3, 3, 3)}

    def block(prefix: str, ch: int) -> None:
        for conv in ("conv1", "conv2"):
            shapes[f"{prefix}.{conv}.conv1.weight"] = (ch, ch, 3, 3, 3)
        for norm in ("norm1", "norm2"):
            shapes[f"{prefix}.{norm}.weight"] = shapes[f"{prefix}.{norm}.bias"] = (ch,)

    shapes["norm_input.weight"] = shapes["norm_input.bias"] = (16,)
    block("conv_first.0", 16)
    for level, blocks in enumerate((2, 2, 4)):
        shapes[f"encoder_convs.{level}.0.downsample.0.weight"] = (c[level + 1], c[level], 2, 2, 2)
        for b in range(blocks):
            block(f"encoder_convs.{level}.{b}", c[level + 1])
    for i in range(3):
        shapes[f"upsampling.{i}.1.weight"] = (c[i], c[i + 1], 1, 1, 1)
    for i in range(4):
        block(f"decoder_convs.{i}.0", c[i])
        shapes[f"decoder_convs1x1.{i}.weight"] = (c[i], 2 * c[i], 1, 1, 1)
    shapes["conv_output.weight"], shapes["conv_output.bias"] = (3, 16, 3, 3, 3), (3,)
    return shapes


def test_expected_shapes_are_the_spec_layout(net):
    spec = _spec_state_dict_shapes()
    assert len(spec) == 93
    assert checkpoint.expected_shapes() == spec
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == spec


# ------------------------------------------------------------------------------------------------ plain state dicts


def _prefixed(state: dict, prefix: str = "module.") -> dict:
    return {prefix + k: v for k, v in state.items()}


WRAPPERS = {
    "plain": lambda sd: sd,
    "prefixed": lambda sd: _prefixed(sd),
    "double-prefixed": lambda sd: _prefixed(sd, "module.module."),
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "state_dict-prefixed": lambda sd: {"state_dict": _prefixed(sd), "optimizer": {"lr": 0.1}},
    "model_state_dict": lambda sd: {"model_state_dict": sd},
    "model": lambda sd: {"model": sd},
    "net": lambda sd: {"net": sd},
    "network": lambda sd: {"network": sd},
    "weights": lambda sd: {"weights": _prefixed(sd)},
    "module": lambda sd: {"module": sd},
    "nested": lambda sd: {"checkpoint_meta": 1, "model": {"state_dict": _prefixed(sd)}},
}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_plain_and_wrapped_state_dicts(net, tmp_path, wrapper):
    path = tmp_path / "weights.pt"
    torch.save(WRAPPERS[wrapper](net.state_dict()), path)
    state = load_state_dict(path)
    assert list(state) == list(checkpoint.expected_shapes())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_legacy_plain_state_dict(net, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_prefixed(net.state_dict()), path, _use_new_zipfile_serialization=False)
    state = load_state_dict(path)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_half_precision_weights_become_float32(net, tmp_path):
    path = tmp_path / "half.pt"
    torch.save({k: v.half() for k, v in net.state_dict().items()}, path)
    state = load_state_dict(path)
    assert all(v.dtype == torch.float32 for v in state.values())


# ------------------------------------------------------------------------------------------------ malicious files


class _MakeMarker:
    """A custom class whose construction has a side effect (what a "custom reducer" pickle would call)."""

    def __init__(self, marker: str) -> None:
        Path(marker).write_text("pwned")


class _Trigger:
    """Pickles as ``callable(*args)``: unpickling with a full unpickler calls it."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _attacks(marker: Path) -> dict[str, tuple[str, _Trigger]]:
    m = str(marker)
    return {
        "os.system": (f"{os.system.__module__}.system", _Trigger(os.system, f"touch {m}")),
        "builtins.exec": ("builtins.exec", _Trigger(exec, f"open({m!r}, 'w').close()")),
        "builtins.eval": ("builtins.eval", _Trigger(eval, f"open({m!r}, 'w').close()")),
        "subprocess.Popen": ("subprocess.Popen", _Trigger(subprocess.Popen, ["touch", m])),
        "custom-class": (f"{_MakeMarker.__module__}._MakeMarker", _Trigger(_MakeMarker, m)),
    }


ATTACKS = sorted(_attacks(Path("x")))


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
@pytest.mark.parametrize("attack", ATTACKS)
def test_malicious_checkpoint_is_refused(tmp_path, attack, legacy):
    marker = tmp_path / "marker"
    name, trigger = _attacks(marker)[attack]
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"conv_input.weight": torch.zeros(16, 4, 3, 3, 3)}, "extra": trigger}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError, match="refused for safety") as info:
        load_state_dict(path)
    assert name in str(info.value)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_attack_payload_is_armed(tmp_path):
    """Control: the same file under a full unpickler does run the payload (so the test above means something)."""
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"extra": _attacks(marker)["custom-class"][1]}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_payload_in_the_header_pickle_is_refused(tmp_path):
    """A bare pickle (no torch magic number): the very first read already goes through the allowlist."""
    marker = tmp_path / "marker"
    path = tmp_path / "bare.pkl"
    path.write_bytes(pickle.dumps(_attacks(marker)["os.system"][1], protocol=2))
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_state_dict(path)
    assert not marker.exists()


def test_seed_class_names_cannot_be_called(tmp_path):
    """``model.UNet`` resolves to an inert placeholder: a pickle that calls it with arguments gets nowhere."""
    path = tmp_path / "call.pth"
    with seedformat.seed_modules() as classes:
        torch.save({"model": _Trigger(classes[net_module.UNet], "rm -rf /")}, path)
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_state_dict(path)
    assert "model.UNet" in str(info.value)


def test_allowlist_holds_no_code_runners():
    allowed = checkpoint.allowed_globals()
    for name in ("builtins.eval", "builtins.exec", "builtins.getattr", "builtins.__import__", "os.system",
                 "posix.system", "subprocess.Popen", "torch.load", "pickle.loads", "copyreg._reconstructor"):
        assert name not in allowed
    assert {"model.UNet", "model.Residual", "model.conv", "model.Trilinear", "train.TrainingState",
            "torch._utils._rebuild_tensor_v2", "collections.OrderedDict"} <= set(allowed)


# ------------------------------------------------------------------------------------------------ broken files


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint_sha256(tmp_path / "nope.pth")


def test_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_state_dict(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_state_dict(path)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
@pytest.mark.parametrize("fraction", [0.5, 0.001, 0.999])
def test_truncated_seed_checkpoint(seed_files, tmp_path, legacy, fraction):
    data = seed_files[legacy, "torch2"].read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_state_dict(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is not None


def test_flipped_byte_in_zip_is_caught(net, tmp_path):
    path = tmp_path / "flip.pt"
    torch.save(net.state_dict(), path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside tensor data: only the zip CRC notices
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="CRC mismatch"):
        load_state_dict(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_state_dict(path)


def test_random_bytes_behind_a_pickle_header(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(b"\x80\x02" + random.Random(1).randbytes(4096))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_state_dict(path)


def test_torchscript_archive_is_not_run(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Conv3d(4, 3, 1)), str(path))
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_state_dict(path)


# ------------------------------------------------------------------------------------------------ wrong content


OTHER_NET = nn.Sequential(nn.Conv3d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 3, 1))


@pytest.mark.parametrize("what", ["state_dict", "module"])
def test_another_architecture(tmp_path, what):
    path = tmp_path / "other.pt"
    torch.save(OTHER_NET.state_dict() if what == "state_dict" else OTHER_NET, path)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert "is not the brain-tumor-segmentation-0002 network" in message
    assert "93 missing keys, e.g. conv_input.weight" in message
    assert "4 unexpected keys, e.g. 0.weight, 0.bias, 2.weight, 2.bias" in message
    assert "(83 more)" in message  # at most ten names listed per kind


def test_mis_shaped_key(net, tmp_path):
    state = dict(net.state_dict())
    state["conv_output.weight"] = torch.zeros(2, 16, 3, 3, 3)
    path = tmp_path / "shape.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert "does not match the brain-tumor-segmentation-0002 network" in message
    assert "1 key with the wrong shape: conv_output.weight expected (3, 16, 3, 3, 3), got (2, 16, 3, 3, 3)" in message


def test_missing_unused_decoder_key_is_still_required(net, tmp_path):
    state = dict(net.state_dict())
    del state["decoder_convs.3.0.norm2.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert "1 missing key, e.g. decoder_convs.3.0.norm2.bias" in message
    assert "1 unexpected key, e.g. extra.weight" in message


def test_integer_and_non_finite_tensors(net, tmp_path):
    state = dict(net.state_dict())
    state["norm_input.bias"] = torch.zeros(16, dtype=torch.int64)
    path = tmp_path / "int.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"not floating point: norm_input.bias \(torch.int64\)"):
        load_state_dict(path)
    state["norm_input.bias"] = torch.full((16,), float("nan"))
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="NaN or infinite values in 1 tensor: norm_input.bias"):
        load_state_dict(path)


@pytest.mark.parametrize(("obj", "described"), [
    ([torch.zeros(1)], "holds a list"),
    ({"epoch": 3, "lr": 0.1}, "holds a dict with keys 'epoch', 'lr'"),
    ({}, "holds an empty dict"),
])
def test_no_weights_inside(tmp_path, obj, described):
    path = tmp_path / "odd.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=described):
        load_state_dict(path)


# ------------------------------------------------------------------------------------------------ sha256


def test_checkpoint_sha256(tmp_path):
    path = tmp_path / "blob.bin"
    data = random.Random(2).randbytes(3 << 20)
    path.write_bytes(data)
    assert checkpoint_sha256(path) == hashlib.sha256(data).hexdigest()
    assert checkpoint_sha256(str(path)) == hashlib.sha256(data).hexdigest()


def test_load_checkpoint_gives_the_model_and_the_sha256_of_the_bytes_it_read(seed_files, x_and_y):
    path = seed_files[True, "torch2"]
    model, digest = load_checkpoint(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == checkpoint_sha256(path)
    x, y = x_and_y
    with torch.no_grad():
        torch.testing.assert_close(model(x), y, atol=1e-6, rtol=0)


def test_an_unreadable_exported_file_is_not_called_a_checkpoint(tmp_path, monkeypatch):
    missing = tmp_path / "brats_onnx" / "1" / "model.onnx"
    with pytest.raises(ExportError, match=r"exported file .*model\.onnx cannot be read") as caught:
        exported_sha256(missing, "exported file")
    assert not isinstance(caught.value, CheckpointError)

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    path = tmp_path / "ckpt.pth"
    path.write_bytes(b"weights")
    monkeypatch.setattr(hashing.atomic, "sha256_file", refuse)
    with pytest.raises(CheckpointError, match=r"checkpoint .*ckpt\.pth cannot be read: Permission denied"):
        checkpoint_sha256(path)

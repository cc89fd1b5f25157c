"""Files "in the seed's format" run under the seed's own classes, not only under this project's loader.

The seed's test.py unpickles the checkpoint with a full unpickler and calls the module it gets. Here the seed's
classes (``model.UNet``, ``model.Residual``, ``model.conv``, ``model.Trilinear``, ``train.TrainingState``) are
restated from the seed facts the project works from (``seed-model-and-pipeline.md``, "Network" and "Checkpoint
file format"): their ``__init__`` builds the seed's module tree, and their ``forward`` uses the seed's attributes
(``relu1``/``relu2``, ``UNet.relu`` after each upsampling stage, ``UNet.sigmoid``; a list in, a one-element list
out; ``gc.collect()`` once per pass). They are registered as the modules ``model`` and ``train`` while a test runs,
and the file is unpickled into them with a plain ``torch.load(weights_only=False)`` (our own files: a full
unpickler is fine here). The output must equal the project's network loaded by the safe loader.
"""

from __future__ import annotations

import gc
import sys
import types
from pathlib import Path

import pytest
import torch
from brats_demo import seedformat
from brats_export.checkpoint import load_model
from brats_export.model import build_model
from torch import nn
from torch.nn import functional as F  # noqa: N812

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]

DEMO_CHECKPOINT = Path(__file__).resolve().parents[2] / "demo" / "brats_demo_checkpoint.pth"
SHAPES = [(1, 4, 32, 32, 32), (1, 4, 48, 32, 40)]
TRAINING_STATE_FIELDS = {"epoch", "train_metric", "val_metric", "global_step", "best_val", "optimizer_state", "cuda"}

# ------------------------------------------------------------------------------------------------ the seed's classes


class Trilinear(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.scale, mode="trilinear", align_corners=False)


class conv(nn.Module):  # noqa: N801 (the seed's class name)
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv1(x)


class Residual(nn.Module):
    def __init__(self, in_channels, out_channels, downsample=None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.downsample = downsample
        self.conv1 = conv(out_channels, out_channels)
        self.conv2 = conv(out_channels, out_channels)
        self.relu1 = nn.LeakyReLU(0.01, inplace=True)
        self.relu2 = nn.LeakyReLU(0.01, inplace=True)
        self.norm1 = nn.GroupNorm(8, out_channels)
        self.norm2 = nn.GroupNorm(8, out_channels)

    def forward(self, x):
        if self.downsample is not None:
            x = self.downsample(x)
        out = self.relu1(self.norm1(self.conv1(x)))
        out = self.relu2(self.norm2(self.conv2(out)))
        return x + out


class UNet(nn.Module):
    def __init__(self, depth, encoder_layers, decoder_layers, number_of_channels, number_of_outputs,
                 block=Residual):
        super().__init__()
        c = number_of_channels
        self.depth = depth
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.number_of_channels = number_of_channels
        self.number_of_outputs = number_of_outputs
        self.block = block
        self.conv_input = nn.Conv3d(4, c[0], 3, padding=1, bias=False)
        self.norm_input = nn.GroupNorm(8, c[0])
        self.conv_first = nn.Sequential(*(block(c[0], c[0]) for _ in range(encoder_layers[0])))
        self.encoder_convs = nn.ModuleList(
            nn.Sequential(block(c[i + 1], c[i + 1], nn.Sequential(nn.Conv3d(c[i], c[i + 1], 2, stride=2, bias=False))),
                          *(block(c[i + 1], c[i + 1]) for _ in range(encoder_layers[i + 1] - 1)))
            for i in range(depth - 1)
        )
        self.upsampling = nn.ModuleList(
            nn.Sequential(Trilinear(2), nn.Conv3d(c[i + 1], c[i], 1, bias=False)) for i in range(depth - 1)
        )
        self.decoder_convs = nn.ModuleList(
            nn.Sequential(*(block(c[i], c[i]) for _ in range(decoder_layers[i]))) for i in range(depth)
        )
        self.decoder_convs1x1 = nn.ModuleList(nn.Conv3d(2 * c[i], c[i], 1, bias=False) for i in range(depth))
        self.attention_convs = nn.ModuleList()
        self.upsampling_distance = nn.ModuleList()
        self.conv_output = nn.Conv3d(c[0], number_of_outputs, 3, padding=1, bias=True)
        self.softmax = nn.Softmax(dim=1)
        self.sigmoid = nn.Sigmoid()
        self.relu = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x):
        gc.collect()
        skips = []
        out = self.conv_first(self.norm_input(self.conv_input(x[0])))
        for i in range(self.depth - 1):
            skips.append(out)
            out = self.encoder_convs[i](out)
        for i in reversed(range(self.depth - 1)):
            out = self.relu(self.upsampling[i](out))
            out = self.decoder_convs1x1[i](torch.cat([skips[i], out], dim=1))
            out = self.decoder_convs[i](out)
        return [self.sigmoid(self.conv_output(out))]


class TrainingState:
    def __init__(self):
        self.epoch = 0
        self.train_metric = {}
        self.val_metric = {}
        self.global_step = 0
        self.best_val = 0
        self.optimizer_state = None
        self.cuda = True


def seed_unet() -> UNet:
    """The published configuration, as the seed's main.py builds it."""
    return UNet(depth=4, encoder_layers=[1, 2, 2, 4], decoder_layers=[1, 1, 1, 1],
                number_of_channels=[16, 32, 64, 128], number_of_outputs=3)


@pytest.fixture
def seed_classes(monkeypatch):
    """``model`` and ``train`` importable for the test only, holding the classes above."""
    for name, members in {"model": (UNet, Residual, conv, Trilinear), "train": (TrainingState,)}.items():
        module = types.ModuleType(name)
        for cls in members:
            setattr(module, cls.__name__, cls)
        monkeypatch.setitem(sys.modules, name, module)


def seed_load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


# ------------------------------------------------------------------------------------------------ checks


def _tree(module: nn.Module) -> dict[str, str]:
    """Submodule name -> class name (registration order aside: the seed's forward does not depend on it)."""
    return {name: type(m).__name__ for name, m in module.named_modules()}


def _seed_attributes(unet: nn.Module) -> dict:
    return {
        "depth": unet.depth, "encoder_layers": list(unet.encoder_layers), "decoder_layers": list(unet.decoder_layers),
        "number_of_channels": list(unet.number_of_channels), "number_of_outputs": unet.number_of_outputs,
        "block": unet.block, "softmax.dim": unet.softmax.dim,
        "relu": (unet.relu.negative_slope, unet.relu.inplace),
        "residuals": [(r.in_channels, r.out_channels, r.relu1.negative_slope, r.relu1.inplace,
                       r.relu2.negative_slope, r.relu2.inplace, r.downsample is None)
                      for r in unet.modules() if isinstance(r, Residual)],
        "scales": [t.scale for t in unet.modules() if isinstance(t, Trilinear)],
    }


def check_runs_as_the_seed(path: Path, net: nn.Module) -> dict:
    """Unpickle ``path`` into the seed's classes, run it as the seed's test.py would, compare with ``net``."""
    loaded = seed_load(path)
    assert set(loaded) == {"state", "model"}
    wrapper, state = loaded["model"], loaded["state"]
    assert type(wrapper) is nn.DataParallel and type(wrapper.module) is UNet
    assert type(state) is TrainingState and set(vars(state)) == TRAINING_STATE_FIELDS
    unet = wrapper.module

    reference = seed_unet()
    assert _tree(unet) == _tree(reference)  # the seed's module tree, class for class
    assert _seed_attributes(unet) == _seed_attributes(reference)
    reference.load_state_dict(unet.state_dict(), strict=True)
    assert list(wrapper.state_dict()) == [f"module.{k}" for k in unet.state_dict()]
    expected = net.state_dict()
    assert len(expected) == 93
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in expected.items())

    unet.eval()
    for shape in SHAPES:
        torch.manual_seed(sum(shape))
        x = torch.randn(shape)
        with torch.no_grad():
            out = wrapper([x])  # DataParallel without GPUs calls the UNet, which takes and returns a list
            want = net(x)
        assert isinstance(out, list) and len(out) == 1
        assert out[0].shape == (shape[0], 3, *shape[2:])
        torch.testing.assert_close(out[0], want, atol=1e-5, rtol=0)
    return loaded


def test_demo_checkpoint_runs_under_the_seeds_classes(seed_classes):
    loaded = check_runs_as_the_seed(DEMO_CHECKPOINT, load_model(DEMO_CHECKPOINT))
    state = loaded["state"]
    assert state.cuda is False and state.global_step > 0 and set(state.val_metric) == {"WT", "TC", "ET"}


@pytest.fixture
def random_net() -> nn.Module:
    torch.manual_seed(3)
    net = build_model()
    with torch.no_grad():
        for p in net.parameters():  # GroupNorm starts at 1 / 0: make every tensor distinctive
            p.add_(torch.randn_like(p) * 0.05)
    return net


def test_writer_output_runs_under_the_seeds_classes(random_net, tmp_path, seed_classes):
    state = seedformat.TrainingState(epoch=3, train_metric=0.5, val_metric={"WT": 0.9}, global_step=42,
                                     best_val=0.8, optimizer_state={"state": {}, "param_groups": []}, cuda=False)
    path = seedformat.save_seed_checkpoint(random_net, tmp_path / "random.pth", state)
    assert sys.modules["model"].UNet is UNet  # the writer put back the test's modules
    loaded = check_runs_as_the_seed(path, random_net)
    assert vars(loaded["state"]) == vars(state)
    safe = load_model(path)  # and the project's safe loader reads the same weights
    assert all(torch.equal(safe.state_dict()[k], v) for k, v in random_net.state_dict().items())


def test_seed_tree_is_not_run_by_the_projects_forward(random_net):
    with pytest.raises(TypeError, match="load_model"):
        seedformat.to_seed_unet(random_net)(torch.zeros(1, 4, 8, 8, 8))

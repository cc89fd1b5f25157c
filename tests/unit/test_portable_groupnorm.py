"""brats_export.portable: GroupNorm written out for ONNX and OpenVINO, against ``nn.GroupNorm``.

The input looks like a network activation on a brain crop: a large constant background (the padding and the
skull-stripped outside, where float32 sums drift) around a textured blob, with a channel offset.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from brats_export.portable import PortableGroupNorm, portable_copy
from torch import nn


def _activation(shape: tuple[int, ...], seed: int = 3) -> torch.Tensor:
    n, c, d, h, w = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.full(shape, 0.0).add_(torch.linspace(-3.0, 5.0, c).reshape(1, c, 1, 1, 1))
    zz, yy, xx = torch.meshgrid(*(torch.linspace(-1, 1, s) for s in (d, h, w)), indexing="ij")
    inside = (zz**2 + yy**2 + xx**2) < 0.5
    x[:, :, inside] += torch.randn(n, c, int(inside.sum()), generator=g)
    return x


def _norm(channels: int = 16, seed: int = 0) -> nn.GroupNorm:
    torch.manual_seed(seed)
    norm = nn.GroupNorm(8, channels)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm.eval()


@pytest.mark.parametrize("shape", [(1, 16, 24, 20, 16), (2, 32, 8, 12, 10)])
def test_equals_groupnorm_in_float64(shape):
    norm = _norm(shape[1])
    x = _activation(shape)
    with torch.no_grad():
        expected = norm.double()(x.double())
        got = PortableGroupNorm(norm).double()(x.double())
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


def test_float32_as_close_to_float64_as_torch_is():
    norm = _norm()
    x = _activation((1, 16, 48, 40, 32))
    with torch.no_grad():
        exact = norm.double()(x.double())
        ours = PortableGroupNorm(norm.float())(x)
        torchs = norm.float()(x)
    ours_err = float((ours.double() - exact).abs().max())
    torch_err = float((torchs.double() - exact).abs().max())
    assert ours_err <= max(4 * torch_err, 1e-6), (ours_err, torch_err)


def test_portable_copy_replaces_every_groupnorm_and_keeps_the_original():
    model = nn.Sequential(nn.Conv3d(4, 16, 3, padding=1), _norm(), nn.Sequential(_norm(seed=1)))
    copy = portable_copy(model)
    assert [type(m).__name__ for m in copy.modules()].count("PortableGroupNorm") == 2
    assert not any(isinstance(m, nn.GroupNorm) for m in copy.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == 2
    x = torch.randn(1, 4, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(copy(x), model(x), atol=1e-5)


def test_onnx_graph_has_no_squared_copy_and_matches_in_onnxruntime(tmp_path):
    """Exported: short reductions (ReduceMean, ReduceL2 over W) and no InstanceNormalization; ONNX Runtime agrees."""
    module = PortableGroupNorm(_norm())
    x = _activation((1, 16, 24, 20, 16))
    path = tmp_path / "gn.onnx"
    with torch.no_grad():
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {2: "D", 3: "H", 4: "W"}})
        expected = module(x).numpy()
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "InstanceNormalization" not in ops and "GroupNormalization" not in ops
    assert ops.count("ReduceL2") == 1  # the variance's sums over W
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 16, 24, 20, 16), (1, 16, 16, 8, 24)]:
        xs = _activation(shape, seed=5)
        with torch.no_grad():
            want = module(xs).numpy()
        got = session.run(["y"], {"x": xs.numpy()})[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    np.testing.assert_allclose(session.run(["y"], {"x": x.numpy()})[0], expected, rtol=0, atol=2e-5)

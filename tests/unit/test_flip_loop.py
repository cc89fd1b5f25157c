"""brats_export.flip_loop: the flip companion as an ONNX Loop equals ServerFlips, with one copy of the network."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from brats_export import exporters
from brats_export.flip_loop import loop_companion
from brats_export.model import build_model
from brats_export.server_flips import ServerFlips

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[torch.nn.Module, Path, Path]:
    torch.manual_seed(0)
    model = build_model().eval()
    folder = tmp_path_factory.mktemp("flip_loop")
    plain = exporters.export_onnx(model, folder / "plain.onnx")
    return model, plain, loop_companion(plain, folder / "loop.onnx")


def _input(shape) -> np.ndarray:
    """A normalised blob in a constant background, asymmetric so that every flip changes it."""
    x = np.full(shape, -0.8, dtype=np.float32)
    rng = np.random.default_rng(1)
    n, c, d, h, w = shape
    x[:, :, 2 : d - 5, 3 : h - 2, 1 : w - 4] = rng.standard_normal((n, c, d - 7, h - 5, w - 5))
    return x


def _eager(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return ServerFlips(model).eval()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("shape", [(1, 4, 32, 24, 16), (2, 4, 16, 40, 24)])
def test_loop_equals_the_flips_in_onnx_runtime_and_openvino(exported, shape, tmp_path):
    import openvino as ov

    model, _, loop = exported
    x = _input(shape)
    expected = _eager(model, x)
    got = ort.InferenceSession(str(loop), providers=["CPUExecutionProvider"]).run(None, {"INPUT__0": x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    xml = exporters.export_openvino(loop, tmp_path / "loop.xml")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled.create_infer_request().infer({"INPUT__0": x})[compiled.output(0)]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # a flip that went missing or the wrong way would not be close
    with torch.inference_mode():
        plain = model(torch.from_numpy(x)).numpy()
    assert np.abs(plain - expected).max() > 1e-3


def test_the_network_appears_once(exported):
    _, plain, loop = exported
    ops = Counter(n.op_type for n in onnx.load(str(plain)).graph.node)
    graph = onnx.load(str(loop)).graph
    (node,) = [n for n in graph.node if n.op_type == "Loop"]
    body = Counter(n.op_type for n in node.attribute[0].g.node)
    assert body["Conv"] == ops["Conv"] and not any(n.op_type == "Conv" for n in graph.node)

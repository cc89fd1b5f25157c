"""The openvino stand-in compiles a dynamic-shape IR per request shape (a bounded set), a static one once."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

BACKENDS = Path(__file__).resolve().parents[2] / "serve" / "brats_serve" / "backends"


@pytest.fixture(scope="module")
def standin():
    sys.path.insert(0, str(BACKENDS))  # where model.py finds _common when brats-serve has not copied it yet
    try:
        spec = importlib.util.spec_from_file_location("openvino_standin", BACKENDS / "openvino" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BACKENDS))


class FakeCompiled:
    def __init__(self, shape):
        self.shape = shape

    def create_infer_request(self):
        return self

    def output(self, name):
        return name

    def infer(self, feeds, share_inputs, share_outputs):
        (batch,) = feeds.values()
        return {"OUTPUT__0": np.full(batch.shape, len(self.shape), np.float32)}


def test_requests_compile_each_new_shape_and_keep_the_last_ones(standin):
    compiled = []

    def compile_for(shape):
        compiled.append(shape)
        return FakeCompiled(shape)

    spec = SimpleNamespace(input=SimpleNamespace(name="INPUT__0"), output=SimpleNamespace(name="OUTPUT__0"))
    requests = standin.Requests(compile_for, spec)
    a, b, c = (np.zeros((1, 4, n, n, n), np.float32) for n in (8, 16, 24))
    for batch in (a, a, b, a, c, b, a):
        requests.predict(batch)
    # a, b kept; c evicts b (a was used last); b comes back and evicts a; a again evicts c
    assert [s[2] for s in compiled] == [8, 16, 24, 16, 8]
    assert len(requests.cache) == standin.STATIC_SHAPES


def test_a_dynamic_ir_runs_at_each_shape_and_a_static_one_as_it_is(standin, tmp_path):
    import openvino as ov
    from openvino import opset13 as ops

    def save(shape, name):
        x = ops.parameter(shape, ov.Type.f32, name="INPUT__0")
        x.output(0).get_tensor().set_names({"INPUT__0"})
        y = ops.multiply(x, ops.constant(np.float32(2.0)))
        y.output(0).get_tensor().set_names({"OUTPUT__0"})
        path = tmp_path / f"{name}.xml"
        ov.save_model(ov.Model([y], [x], name), str(path))
        return path

    config = {"input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [4, -1, -1, -1]}],
              "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [4, -1, -1, -1]}],
              "max_batch_size": 1}
    served = standin._common.parse_config(config, "model.xml")
    model = standin.TritonPythonModel()
    predict, device = model.load(save([1, 4, -1, -1, -1], "dynamic"), served, False, 0)
    assert "per request shape" in device
    for n in (8, 16, 8):
        x = np.random.default_rng(n).random((1, 4, n, n, 2 * n), dtype=np.float32)
        np.testing.assert_array_equal(predict(x), 2 * x)
    predict, device = model.load(save([1, 4, 8, 8, 8], "static"), served, False, 0)
    assert "static shape" in device
    x = np.ones((1, 4, 8, 8, 8), np.float32)
    np.testing.assert_array_equal(predict(x), 2 * x)

"""The parity check's bookkeeping (issue 23, item 3): eager references computed once, one runtime loaded at a
time and released before the next, rows in the table's order. Fake runtimes and tiny inputs: no exported file."""

from __future__ import annotations

import copy
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from brats_export import exporters, parity, repository
from brats_export.catalogue import model_keys
from brats_export.errors import ParityError
from brats_export.model import build_model
from brats_export.parity_inputs import ParityInput
from brats_export.server_flips import ServerFlips

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]


class Runtimes:
    """Fake runtimes that record which were loaded and how many were still alive when another one loaded."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []
        self.alive_at_load: list[int] = []
        self.loaded: list[str] = []

    def loader(self, name: str, fn):
        def load():
            self.alive_at_load.append(self.alive())
            self.loaded.append(name)
            runtime = _Runtime(fn)
            self.refs.append(weakref.ref(runtime))
            return runtime

        return load

    def alive(self) -> int:
        return sum(r() is not None for r in self.refs)


class _Runtime:
    def __init__(self, fn) -> None:
        self.fn = fn

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(x)


def _inputs() -> list[ParityInput]:
    return [ParityInput("phantom", np.zeros((1, 4, 8, 8, 8), np.float32)),
            ParityInput("random", np.ones((2, 4, 8, 8, 16), np.float32))]


def test_check_files_releases_each_runtime_before_loading_the_next():
    inputs = _inputs()
    expected = [x.array[:, :3] for x in inputs]
    runtimes = Runtimes()
    loaders = {
        "exact": ("onnx", runtimes.loader("exact", lambda x: x[:, :3].copy())),
        "off": ("torchscript", runtimes.loader("off", lambda x: x[:, :3] + np.float32(0.5))),
        "bf16": ("openvino", runtimes.loader("bf16", lambda x: x[:, :3] - np.float32(0.25))),
    }
    rows = parity.check_files(loaders, inputs, expected, tolerance=0.3, ungated=["bf16"])
    assert runtimes.loaded == ["exact", "off", "bf16"]  # each loaded once
    assert runtimes.alive_at_load == [0, 0, 0]  # the previous one was gone when the next loaded
    assert runtimes.alive() == 0  # and none is kept after the check
    # the table's order: input by input, formats in the loaders' order; each row names its model key
    assert [(r.key, r.label, r.input, r.shape) for r in rows] == [
        (key, label, item.name, item.shape) for item in inputs for label, (key, _) in loaders.items()]
    assert [r.max_abs_diff for r in rows] == [0.0, 0.5, 0.25] * 2
    assert [r.passed for r in rows] == [True, False, True] * 2
    assert [r.gated for r in rows] == [True, True, False] * 2


def test_check_files_refuses_a_wrong_output_shape():
    inputs = _inputs()[:1]
    with pytest.raises(ParityError, match=r"short returned shape \(1, 2, 8, 8, 8\)"):
        parity.check_files({"short": ("onnx", lambda: (lambda x: x[:, :2]))}, inputs, [inputs[0].array[:, :3]])


def test_a_slow_parity_row_says_which_row_it_is_while_it_runs(monkeypatch, caplog):
    """A full-size row takes tens of seconds: a line names it (row k of n) while it runs, not only at its end."""
    import logging
    import threading

    from brats_client import progress

    monkeypatch.setattr(progress, "FIRST_S", 0.0)
    monkeypatch.setattr(progress, "EVERY_S", 0.01)
    inputs = _inputs()
    said = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("parity row 2/2: slow on random 2x4x8x8x16: "):
                said.set()

    def slow(x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 2:
            assert said.wait(30), "no line while the row ran"
        return x[:, :3].copy()

    handler = Seen()
    parity.log.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="brats_export.parity"):
            parity.check_files({"slow": ("onnx", lambda: slow)}, inputs, [x.array[:, :3] for x in inputs])
    finally:
        parity.log.removeHandler(handler)
    assert said.is_set()
    assert any(r.getMessage().startswith("parity row 2/2: slow on random 2x4x8x8x16: ") and "s so far" in
               r.getMessage() for r in caplog.records)


def test_export_formats_computes_references_once_and_holds_one_runtime_at_a_time(monkeypatch, tmp_path):
    torch.manual_seed(0)
    model = build_model().eval()
    twin = copy.deepcopy(model)  # the fake runtimes compute with a copy, so the hook below sees only references
    forward_calls = []
    model.register_forward_hook(lambda module, args, out: forward_calls.append(args[0].shape))
    references = []
    real_eager_outputs = parity.eager_outputs

    def eager_outputs(net, inputs):
        before = len(forward_calls)
        out = real_eager_outputs(net, inputs)
        references.append((type(net).__name__, [i.shape for i in inputs], len(forward_calls) - before))
        return out

    runtimes = Runtimes()

    def fake_loader(path, precision="f32"):
        net = ServerFlips(twin) if "_flip4" in Path(path).name else twin

        def run(x):
            with torch.inference_mode():
                return net(torch.from_numpy(x)).numpy()

        return runtimes.loader(f"{Path(path).name}[{precision}]", run)()

    keys = model_keys(["onnx", "torchscript", "openvino"])
    monkeypatch.setattr(exporters, "eager_outputs", eager_outputs)
    monkeypatch.setattr(exporters, "_export_files", lambda net, folders, fixed, what="": {
        key: (tmp_path / key, tmp_path / f"{key}.bin") for key in folders})
    monkeypatch.setattr(exporters, "openvino_host_precision", lambda: "bf16")
    for fmt in ("onnx", "torchscript", "openvino"):
        monkeypatch.setitem(exporters.LOADERS, fmt, fake_loader)
    monkeypatch.setattr(exporters, "load_openvino", fake_loader)

    full, small = (16, 24, 16), [(8, 8, 8), (16, 8, 8)]
    result = exporters.export_formats(model, {k: tmp_path / k for k in keys}, check_spatial_sizes=small,
                                      full_size=full)

    # eager references: once for each input (the companions' on the small phantoms), and no other eager pass
    plain_shapes = [(1, 4, *full), (1, 4, 8, 8, 8), (2, 4, 16, 8, 8), (1, 4, 8, 8, 8)]
    assert [(name, shapes) for name, shapes, _ in references] == [
        ("UNet", plain_shapes), ("ServerFlips", [(1, 4, 8, 8, 8), (2, 4, 16, 8, 8)])]
    assert sum(passes for *_, passes in references) == len(forward_calls)
    # one runtime at a time, each loaded once
    assert runtimes.loaded == ["onnx[f32]", "torchscript[f32]", "openvino[f32]", "openvino[None]",
                               "onnx_flip4[f32]", "torchscript_flip4[f32]", "openvino_flip4[f32]"]
    assert runtimes.alive_at_load == [0] * 7 and runtimes.alive() == 0
    gated = [r for r in result.parity if r.gated]
    assert len(gated) == 3 * 4 + 3 * 2 and all(r.max_abs_diff == 0 for r in gated)
    assert [(r.key, r.label) for r in result.parity if not r.gated] == [("openvino", "openvino[bf16]")] * 4

    # the manifest files each row under its model key
    manifest = repository.build_manifest(keys, repository.ExportRecord(
        checkpoint=Path("c.pt"), checkpoint_sha256="0" * 64, parity=result.parity, opset=17, versions={},
        tolerance=1e-4,
    ))
    labels = {name: [row["format"] for row in entry["parity"]] for name, entry in manifest["models"].items()}
    assert labels["brats_openvino"] == ["openvino", "openvino[bf16]"] * 4
    assert labels["brats_onnx"] == ["onnx"] * 4 and labels["brats_openvino_flip4"] == ["openvino_flip4"] * 2

"""Exports with real files: parity of all three formats, the CLI end to end, and what it refuses to write.

Small spatial sizes (32^3 at batch 1, 48x32x40 at batch 2) and no full-size row keep this quick on two cores;
the CLI's own defaults (full size 144x176x144, 64^3, 96x112x80) are checked by a parser test here and run by the
session's repository fixture (tests/integration/conftest.py) and test_fidelity.py.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import openvino as ov
import pytest
import torch
from brats_client.exit_codes import EXIT_CHECK, EXIT_INPUT, EXIT_OUTPUT
from brats_client.identity import CHECKPOINT_SHA256_KEY
from brats_export import catalogue, configs, parity, repository
from brats_export.cli import SKIPPED_FULL_SIZE, build_parser, main
from brats_export.model import build_model
from brats_export.parity_inputs import phantom_input, random_input

SIZES = "32,48x32x40"
FAST = ["--check-sizes", SIZES, "--threads", "2", "--skip-full-size-check", "--no-server-flips"]
# TINY: where the check itself is not under test
TINY = ["--check-sizes", "16,24x16x32", "--threads", "2", "--skip-full-size-check", "--no-server-flips"]
ALL_FILES = {
    "brats_onnx": {"config.pbtxt", "configs/gpu.pbtxt", "configs/trt.pbtxt", "1/model.onnx"},
    "brats_torchscript": {"config.pbtxt", "configs/gpu.pbtxt", "1/model.pt"},
    "brats_openvino": {"config.pbtxt", "configs/bf16.pbtxt", "1/model.xml", "1/model.bin"},
}


def _files(root):
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _siblings(path):
    """Everything beside ``path`` (staging folders would show up here)."""
    return sorted(p.name for p in path.parent.iterdir())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "seed0.pt"
    torch.save(build_model().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, checkpoint):
    """One full CLI export (all formats) shared by the tests that only read it."""
    repo = tmp_path_factory.mktemp("out") / "model_repository"
    code = main(["--checkpoint", str(checkpoint), "--repository", str(repo), *FAST])
    assert code == 0
    return repo


def test_cli_defaults_are_the_documented_sizes():
    args = build_parser().parse_args(["--repository", "r"])
    assert args.check_sizes == [(64, 64, 64), (96, 112, 80)]
    assert args.full_size == (144, 176, 144) and not args.skip_full_size_check
    assert args.tolerance == 1e-4 and args.formats == ["onnx", "torchscript", "openvino"]


@pytest.mark.slow
def test_cli_writes_all_files_and_manifest(exported, checkpoint, capsys):
    files = _files(exported)
    for model, expected in ALL_FILES.items():
        assert {f.split("/", 1)[1] for f in files if f.startswith(model + "/")} == expected
    assert "manifest.json" in files
    assert _siblings(exported) == ["model_repository"]  # the staging folder is gone

    manifest = json.loads((exported / "manifest.json").read_text())
    from brats_export.checkpoint import checkpoint_sha256
    from brats_export.hashing import exported_sha256

    assert manifest["checkpoint"]["sha256"] == checkpoint_sha256(checkpoint)
    assert manifest["onnx_opset"] == 17 and manifest["input"]["name"] == "INPUT__0"
    assert set(manifest["libraries"]) >= {"torch", "onnx", "onnxruntime", "openvino"}
    assert set(manifest["models"]) == set(ALL_FILES)
    rows = [r for m in manifest["models"].values() for r in m["parity"] if r["gated"]]
    assert len(rows) == 9 and all(r["max_abs_diff"] <= 1e-4 for r in rows)
    assert {(r["input"], tuple(r["shape"])) for r in rows} == {
        ("phantom", (1, 4, 32, 32, 32)), ("phantom", (2, 4, 48, 32, 40)), ("random", (1, 4, 32, 32, 32))}
    assert manifest["warnings"] == [SKIPPED_FULL_SIZE]
    for model in ALL_FILES:
        cfg = configs.parse_config((exported / model / "config.pbtxt").read_text())
        assert cfg.name == model and cfg.parameters  # threads from --threads 2
        written = configs.render_config(catalogue.FORMATS[list(ALL_FILES).index(model)], threads=2)
        # what --configs-only writes, plus the checkpoint the weights come from
        assert (exported / model / "config.pbtxt").read_text() == repository._with_checkpoint(
            written, manifest["checkpoint"]["sha256"])
        assert cfg.parameters[CHECKPOINT_SHA256_KEY].string_value == manifest["checkpoint"]["sha256"]
    trt = configs.parse_config((exported / "brats_onnx" / "configs" / "trt.pbtxt").read_text())
    prefix = trt.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters["trt_engine_cache_prefix"]
    onnx_sha = exported_sha256(exported / "brats_onnx" / "1" / "model.onnx", "exported file")
    assert manifest["models"]["brats_onnx"]["files_sha256"]["model.onnx"] == onnx_sha
    assert prefix == configs.engine_cache_prefix(manifest["checkpoint"]["sha256"], onnx_sha)


@pytest.mark.slow
def test_written_files_agree_with_eager_at_two_sizes(exported, checkpoint):
    """Independent of the CLI's own check: reload each file and compare (TorchScript traced at 32^3)."""
    model = build_model()
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    predictors = {
        "onnx": parity.load_onnx(exported / "brats_onnx" / "1" / "model.onnx"),
        "torchscript": parity.load_torchscript(exported / "brats_torchscript" / "1" / "model.pt"),
        "openvino": parity.load_openvino(exported / "brats_openvino" / "1" / "model.xml"),
    }
    inputs = [phantom_input((48, 32, 40)), random_input((16, 40, 24), batch=3, seed=5)]
    rows = parity.check_parity(model, predictors, inputs)
    assert len(rows) == 6 and all(r.passed for r in rows), parity.format_parity_table(rows)


@pytest.mark.slow
def test_onnx_graph_matches_config(exported):
    """ORT backend: config dims must equal the model's (-1 for dynamic); standard ops, real trilinear Resize."""
    m = onnx.load(str(exported / "brats_onnx" / "1" / "model.onnx"))
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 17
    cfg = configs.parse_config((exported / "brats_onnx" / "config.pbtxt").read_text())

    def dims(value_info):
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]

    (inp,), (out,) = m.graph.input, m.graph.output
    assert (inp.name, dims(inp)) == ("INPUT__0", [-1, *cfg.input[0].dims])
    assert (out.name, dims(out)) == ("OUTPUT__0", [-1, *cfg.output[0].dims])
    assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)
    assert "GroupNormalization" not in {n.op_type for n in m.graph.node}
    resizes = [n for n in m.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 3
    for node in resizes:
        attrs = {a.name: a.s.decode() for a in node.attribute if a.type == onnx.AttributeProto.STRING}
        assert attrs["mode"] == "linear" and attrs["coordinate_transformation_mode"] == "half_pixel"


@pytest.mark.slow
def test_openvino_ir_as_tritons_backend_loads_it(exported):
    """Names kept, shapes dynamic; the backend's layout + ov::set_batch(max_batch_size) step still compiles."""
    core = ov.Core()
    model = core.read_model(str(exported / "brats_openvino" / "1" / "model.xml"))
    assert "INPUT__0" in model.inputs[0].get_names() and "OUTPUT__0" in model.outputs[0].get_names()
    assert model.inputs[0].get_partial_shape().is_dynamic
    weights = {op.get_element_type().get_type_name() for op in model.get_ops() if op.get_type_name() == "Constant"}
    assert "f16" not in weights and "f32" in weights
    ppp = ov.preprocess.PrePostProcessor(model)
    ppp.input("INPUT__0").tensor().set_layout(ov.Layout("N..."))
    model = ppp.build()
    max_batch = configs.parse_config((exported / "brats_openvino" / "config.pbtxt").read_text()).max_batch_size
    ov.set_batch(model, max_batch)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled({"INPUT__0": np.zeros((max_batch, 4, 16, 24, 32), np.float32)})[compiled.output(0)]
    assert out.shape == (max_batch, 3, 16, 24, 32)


@pytest.mark.slow
def test_existing_version_needs_force_and_force_replaces(tmp_path, checkpoint):
    repo = tmp_path / "repo"
    args = ["--checkpoint", str(checkpoint), "--repository", str(repo), "--formats", "onnx", "--quiet", *TINY]
    assert main(args) == 0
    onnx_file = repo / "brats_onnx" / "1" / "model.onnx"
    before = onnx_file.stat().st_mtime_ns
    marker = repo / "brats_onnx" / "1" / "stale.txt"
    marker.write_text("from the old version")

    assert main(args) == EXIT_OUTPUT
    assert marker.exists() and onnx_file.stat().st_mtime_ns == before

    assert main([*args, "--force"]) == 0
    assert not marker.exists() and onnx_file.stat().st_mtime_ns != before
    assert _siblings(repo) == ["repo"]


def test_existing_version_error_names_path_and_force(tmp_path, checkpoint, capsys):
    (tmp_path / "repo" / "brats_torchscript" / "1").mkdir(parents=True)
    code = main(["--checkpoint", str(checkpoint), "--repository", str(tmp_path / "repo"), *FAST])
    assert code == EXIT_OUTPUT
    err = capsys.readouterr().err
    assert "brats_torchscript/1" in err and "--force" in err


@pytest.mark.slow
def test_parity_failure_writes_nothing(tmp_path, checkpoint, monkeypatch, capsys):
    real = parity.LOADERS["onnx"]

    def perturbed(path):
        predict = real(path)
        return lambda x: predict(x) + 1e-3

    monkeypatch.setitem(parity.LOADERS, "onnx", perturbed)
    repo = tmp_path / "repo"
    code = main(["--checkpoint", str(checkpoint), "--repository", str(repo), "--formats", "onnx,torchscript",
                 *TINY])
    assert code == EXIT_CHECK
    err = capsys.readouterr().err
    assert "onnx" in err and "NO" in err
    assert not repo.exists() and _siblings(repo) == []


@pytest.mark.slow
def test_fixed_size_export(tmp_path, checkpoint):
    repo = tmp_path / "repo"
    code = main(["--checkpoint", str(checkpoint), "--repository", str(repo), "--formats", "onnx,openvino",
                 "--fixed-size", "32", "--quiet", "--threads", "2"])
    assert code == 0
    cfg = configs.parse_config((repo / "brats_openvino" / "config.pbtxt").read_text())
    assert list(cfg.input[0].dims) == [4, 32, 32, 32]
    m = onnx.load(str(repo / "brats_onnx" / "1" / "model.onnx"))
    shape = [d.dim_value or d.dim_param for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert shape == ["N", 4, 32, 32, 32]
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["fixed_size"] == 32 and manifest["input"]["shape"] == [-1, 4, 32, 32, 32]


@pytest.mark.parametrize("case", ["missing", "truncated", "other-architecture"])
def test_bad_checkpoint_exits_3_and_writes_nothing(tmp_path, checkpoint, case, capsys):
    bad = tmp_path / "bad.pt"
    if case == "truncated":
        data = checkpoint.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif case == "other-architecture":
        torch.save(torch.nn.Conv3d(4, 3, 1).state_dict(), bad)
    repo = tmp_path / "out" / "repo"
    repo.parent.mkdir()
    assert main(["--checkpoint", str(bad), "--repository", str(repo), *FAST]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "bad.pt" in err
    assert not repo.exists() and _siblings(repo) == []


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["--repository", str(tmp_path), "--formats", "onnx,tflite"]) == 2
    assert "tflite" in capsys.readouterr().err
    assert main(["--repository", str(tmp_path), "--check-sizes", "30"]) == 2
    assert main(["--repository", str(tmp_path)]) == 2  # no --checkpoint
    assert main(["--help"]) == 0
    assert "exit codes" in capsys.readouterr().out

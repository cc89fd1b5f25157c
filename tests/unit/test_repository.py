"""The config.pbtxt writer and the publisher (layout, manifest): fast, no torch, no exports."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from brats_client.identity import CHECKPOINT_SHA256_KEY
from brats_export import catalogue, configs, repository
from brats_export.errors import RepositoryError
from tritonclient.grpc import model_config_pb2 as mc

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "model_repository"
COMMITTED_THREADS = 2  # model_repository/ is generated with `brats-export --configs-only --threads 2`

EXPECTED = {
    "onnx": ("brats_onnx", "onnxruntime_onnx", "", 4),
    "torchscript": ("brats_torchscript", "pytorch_libtorch", "", 4),
    "openvino": ("brats_openvino", "", "openvino", 1),
}
THREAD_KEYS = {
    "onnx": {"intra_op_thread_count", "inter_op_thread_count"},
    "torchscript": {"INTRA_OP_THREAD_COUNT"},  # no INTER_OP_THREAD_COUNT: aborts a 24.10 server on reload
    "openvino": {"NUM_STREAMS", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT"},
}
CUDA_KEYS = {"cudnn_conv_algo_search", "arena_extend_strategy"}
CKPT_A, CKPT_B = "a" * 64, "b" * 64


def _committed_files() -> list[Path]:
    """The committed configs (trt.pbtxt is git-ignored: only an export, keyed on its checkpoint, writes it)."""
    return sorted(p for p in COMMITTED.rglob("*.pbtxt") if p.name != "trt.pbtxt")


@pytest.mark.parametrize("fmt", catalogue.FORMATS)
@pytest.mark.parametrize("gpu", [False, True])
def test_config_parses_back_with_names_dims_platform(fmt, gpu):
    name, platform, backend, max_batch = EXPECTED[fmt]
    if gpu and fmt == "openvino":
        with pytest.raises(RepositoryError, match="no gpu variant.*CPU only"):
            configs.render_config(fmt, threads=3, variant="gpu")
        return
    cfg = configs.parse_config(configs.render_config(fmt, threads=3, variant="gpu" if gpu else "cpu"))
    assert (cfg.name, cfg.platform, cfg.backend, cfg.max_batch_size) == (name, platform, backend, max_batch)
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("INPUT__0", mc.TYPE_FP32, [4, -1, -1, -1])]
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [("OUTPUT__0", mc.TYPE_FP32, [3, -1, -1, -1])]
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(kind, 1)]
    assert set(cfg.parameters) == THREAD_KEYS[fmt] | (CUDA_KEYS if gpu and fmt == "onnx" else set()) | {
        "brats_precision"}
    assert cfg.parameters["brats_precision"].string_value.startswith("f32")
    thread_key = {"onnx": "intra_op_thread_count", "torchscript": "INTRA_OP_THREAD_COUNT"}.get(
        fmt, "INFERENCE_NUM_THREADS")
    assert cfg.parameters[thread_key].string_value == "3"
    # every model queues in a dynamic batcher with a bounded queue; it batches only where max_batch_size > 1
    assert cfg.dynamic_batching.default_queue_policy.max_queue_size == configs.NETWORK_MAX_QUEUE
    assert list(cfg.dynamic_batching.preferred_batch_size) == ([2, 4] if max_batch > 1 else [])
    (warmup,) = cfg.model_warmup
    tile = warmup.inputs["INPUT__0"]
    assert warmup.batch_size == 1 and tile.zero_data and tile.data_type == mc.TYPE_FP32
    assert list(tile.dims) == [4, *((144, 176, 144) if gpu else (32, 32, 32))]
    assert warmup.count == (2 if gpu and fmt == "torchscript" else 0)  # 0 = once


def test_onnx_gpu_variant_is_cuda_with_heuristic_search_and_exact_arena():
    cfg = configs.build_config("onnx", threads=2, variant="gpu")
    assert not cfg.HasField("optimization")  # no TensorRT: that is the opt-in trt variant
    assert cfg.parameters["cudnn_conv_algo_search"].string_value == "1"  # HEURISTIC
    assert cfg.parameters["arena_extend_strategy"].string_value == "1"  # kSameAsRequested


def test_trt_variant_profile_covers_every_request_the_client_sends():
    from brats_client.pipeline import SegmentOptions
    from brats_client.tta import flips

    prefix = configs.engine_cache_prefix(CKPT_A, "c" * 64)
    cfg = configs.build_config("onnx", threads=2, variant="trt", engine_prefix=prefix)
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP32"
    p = acc.parameters
    assert p["trt_profile_min_shapes"] == "INPUT__0:1x4x16x16x16"
    assert p["trt_profile_opt_shapes"] == "INPUT__0:1x4x144x176x144"
    assert p["trt_profile_max_shapes"] == "INPUT__0:4x4x192x192x192"
    assert SegmentOptions().tile == configs.TRT_MAX_SPATIAL  # the client's default tile bounds every axis
    assert len(flips("flip4")) == catalogue.MAX_BATCH_SIZE  # one case's flips in one request
    assert p["trt_engine_cache_enable"] == "1" and p["trt_timing_cache_enable"] == "1"
    assert p["trt_engine_cache_prefix"] == prefix == f"brats_onnx_{'a' * 16}_{'c' * 16}"
    assert p["trt_engine_cache_path"] == p["trt_timing_cache_path"] == "/tmp/brats_trt_cache"
    (warmup,) = cfg.model_warmup  # at the opt shape, so the first real request finds a built engine
    assert [warmup.batch_size, *warmup.inputs["INPUT__0"].dims] == [1, 4, 144, 176, 144]
    fixed = configs.build_config("onnx", threads=2, fixed_size=128, variant="trt", engine_prefix=prefix)
    fp = fixed.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters
    assert (fp["trt_profile_min_shapes"], fp["trt_profile_opt_shapes"], fp["trt_profile_max_shapes"]) == (
        "INPUT__0:1x4x128x128x128", "INPUT__0:1x4x128x128x128", "INPUT__0:4x4x128x128x128")


def test_trt_variant_needs_a_sha256_prefix():
    with pytest.raises(RepositoryError, match="engine cache prefix"):
        configs.build_config("onnx", variant="trt")
    with pytest.raises(RepositoryError, match="checkpoint sha256 must be 64"):
        configs.engine_cache_prefix("abc", "c" * 64)
    with pytest.raises(RepositoryError, match="no trt variant"):
        configs.build_config("torchscript", variant="trt", engine_prefix="x")
    with pytest.raises(RepositoryError, match="unknown config variant 'tpu'"):
        configs.build_config("onnx", variant="tpu")
    assert "configs/trt.pbtxt" not in configs.config_texts("onnx", threads=2)  # --configs-only: no sha256


def test_no_config_exceeds_batch_4_or_sets_inter_op_threads():
    prefix = configs.engine_cache_prefix(CKPT_A, CKPT_B)
    texts = [t for fmt in catalogue.FORMATS for t in configs.config_texts(fmt, 2, engine_prefix=prefix).values()]
    assert len(texts) == 7
    for text in texts:
        cfg = configs.parse_config(text)
        assert 1 <= cfg.max_batch_size <= 4
        assert "INTER_OP_THREAD_COUNT" not in cfg.parameters


def test_openvino_bf16_variant_differs_only_by_hint_bf16():
    plain = configs.build_config("openvino", threads=2)
    bf16 = configs.build_config("openvino", threads=2, variant="bf16")
    assert bf16.parameters["HINT_BF16"].string_value == "YES"
    assert bf16.parameters["brats_precision"].string_value == "bf16"
    del bf16.parameters["HINT_BF16"]
    bf16.parameters["brats_precision"].string_value = plain.parameters["brats_precision"].string_value
    assert bf16 == plain
    texts = configs.config_texts("openvino", threads=2)
    assert set(texts) == {"config.pbtxt", "configs/bf16.pbtxt"}
    assert "--model-config-name bf16" in texts["configs/bf16.pbtxt"]
    assert "emulate bf16" in texts["configs/bf16.pbtxt"]  # not "else f32": AVX-512 without bf16 emulates it
    with pytest.raises(RepositoryError, match="brats_onnx has no bf16 variant"):
        configs.build_config("onnx", variant="bf16")


def test_fixed_size_fixes_dims_and_warmup():
    cfg = configs.build_config("onnx", threads=2, fixed_size=128)
    assert list(cfg.input[0].dims) == [4, 128, 128, 128] and list(cfg.output[0].dims) == [3, 128, 128, 128]
    assert list(cfg.model_warmup[0].inputs["INPUT__0"].dims) == [4, 128, 128, 128]


def test_threads_default_to_cpu_count(monkeypatch):
    monkeypatch.setattr(configs.os, "cpu_count", lambda: 7)
    cfg = configs.build_config("torchscript")
    assert cfg.parameters["INTRA_OP_THREAD_COUNT"].string_value == "7"


def test_committed_configs_are_what_the_writer_produces():
    """Golden test: regenerate with `brats-export --configs-only --repository model_repository --threads 2`
    (the INT8 model's config depends on its calibration cases: only an export writes it)."""
    expected = {}
    for key in catalogue.model_keys(catalogue.FORMATS):
        spec = catalogue.MODELS[key]
        companion = catalogue.flip_companion(key) in catalogue.MODELS
        for rel, text in configs.config_texts(key, threads=COMMITTED_THREADS, companion=companion).items():
            expected[COMMITTED / spec.name / rel] = text
    assert sorted(expected) == _committed_files()
    for path, text in expected.items():
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: regenerate it"


def test_committed_configs_parse():
    for path in _committed_files():
        cfg = configs.parse_config(path.read_text(encoding="utf-8"))
        assert cfg.name == path.relative_to(COMMITTED).parts[0]


def test_configs_only_cli_reproduces_committed(tmp_path):
    from brats_export.cli import main

    repo = tmp_path / "repo"
    assert main(["--configs-only", "--repository", str(repo), "--threads", "2", "--quiet"]) == 0
    written = sorted(p.relative_to(repo) for p in repo.rglob("*") if p.is_file())
    assert written == [p.relative_to(COMMITTED) for p in _committed_files()]
    for rel in written:
        assert (repo / rel).read_text() == (COMMITTED / rel).read_text()


def _stage_fake(stage: Path, keys, content: bytes = b"new") -> None:
    for key in keys:
        folder = repository.version_dir(stage, key)
        folder.mkdir(parents=True)
        for name in catalogue.MODELS[key].files:
            (folder / name).write_bytes(content)


def _manifest(stage: Path, keys, sha="0" * 64):
    """The manifest of the staged ``keys``, their files' sha256 included (the TensorRT prefix is made of them)."""
    files_sha256 = {key: {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                          for p in repository.version_dir(stage, key).iterdir()} for key in keys}
    return repository.build_manifest(keys, repository.ExportRecord(
        checkpoint=Path("ckpt.pt"), checkpoint_sha256=sha, parity=(), opset=17,
        versions={"torch": "x"}, tolerance=1e-4, files_sha256=files_sha256,
    ))


def test_publish_layout_force_and_manifest_merge(tmp_path):
    repo = tmp_path / "repo"
    with repository.staging(repo) as stage:
        _stage_fake(stage, ["onnx", "openvino"])
        manifest = _manifest(stage, ["onnx", "openvino"])
        repository.publish(stage, repo, ["onnx", "openvino"], threads=2, manifest=manifest)
    assert not stage.exists()
    assert (repo / "brats_onnx" / "1" / "model.onnx").read_bytes() == b"new"
    assert (repo / "brats_onnx" / "configs" / "gpu.pbtxt").is_file()
    first_trt = configs.parse_config((repo / "brats_onnx" / "configs" / "trt.pbtxt").read_text())
    assert [p.name for p in (repo / "brats_openvino" / "configs").iterdir()] == ["bf16.pbtxt"]  # no gpu.pbtxt
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no staging leftovers

    with pytest.raises(RepositoryError, match=r"brats_onnx/1.*--force"):
        repository.check_versions_writable(repo, ["onnx"], force=False)
    with repository.staging(repo) as stage, pytest.raises(RepositoryError, match="--force"):
        _stage_fake(stage, ["onnx"], b"newer")
        repository.publish(stage, repo, ["onnx"], threads=2)
    assert (repo / "brats_onnx" / "1" / "model.onnx").read_bytes() == b"new"

    with repository.staging(repo) as stage:
        _stage_fake(stage, ["onnx"], b"newer")
        repository.publish(stage, repo, ["onnx"], threads=2, force=True, manifest=_manifest(stage, ["onnx"], "1" * 64))
    assert (repo / "brats_onnx" / "1" / "model.onnx").read_bytes() == b"newer"
    second_trt = configs.parse_config((repo / "brats_onnx" / "configs" / "trt.pbtxt").read_text())
    prefixes = [c.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters[
        "trt_engine_cache_prefix"] for c in (first_trt, second_trt)]
    assert prefixes[0].startswith("brats_onnx_" + "0" * 16) and prefixes[1].startswith("brats_onnx_" + "1" * 16)
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["models"]["brats_onnx"]["checkpoint_sha256"] == "1" * 64
    # each config records the checkpoint its weights come from (brats-client --checkpoint-sha256 checks it)
    for path in (repo / "brats_onnx" / "config.pbtxt", repo / "brats_onnx" / "configs" / "gpu.pbtxt"):
        text = path.read_text()
        assert configs.parse_config(text).parameters[CHECKPOINT_SHA256_KEY].string_value == "1" * 64
        assert text.startswith("# brats_onnx: generated by brats-export")
    openvino = configs.parse_config((repo / "brats_openvino" / "config.pbtxt").read_text())
    assert openvino.parameters[CHECKPOINT_SHA256_KEY].string_value == "0" * 64
    assert manifest["models"]["brats_openvino"]["checkpoint_sha256"] == "0" * 64  # kept from the first run
    assert manifest["input"]["channels"] == ["t1", "t1ce", "t2", "flair"]
    assert manifest["output"]["channels"] == ["WT", "TC", "ET"]
    assert manifest["labels"]["4"].startswith("ET")
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]


def _published_prefix(tmp_path, name, checkpoint_sha, onnx_bytes):
    repo = tmp_path / name
    with repository.staging(repo) as stage:
        _stage_fake(stage, ["onnx"], onnx_bytes)
        repository.publish(stage, repo, ["onnx"], threads=2, manifest=_manifest(stage, ["onnx"], checkpoint_sha))
    cfg = configs.parse_config((repo / "brats_onnx" / "configs" / "trt.pbtxt").read_text())
    return cfg.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters["trt_engine_cache_prefix"]


def test_two_checkpoints_never_share_a_tensorrt_engine_name(tmp_path):
    same_graph = _published_prefix(tmp_path, "a", CKPT_A, b"graph"), _published_prefix(tmp_path, "b", CKPT_B, b"graph")
    assert same_graph[0] != same_graph[1]  # the checkpoint's sha256 alone already separates them
    assert _published_prefix(tmp_path, "c", CKPT_A, b"other graph") != same_graph[0]  # and so does model.onnx's
    assert _published_prefix(tmp_path, "d", CKPT_A, b"graph") == same_graph[0]  # same inputs: the cache is reused


def test_publish_without_checkpoint_removes_an_old_trt_config(tmp_path):
    """An old trt.pbtxt beside new weights would point TensorRT at the old weights' engine."""
    repo = tmp_path / "repo"
    _published_prefix(tmp_path, "repo", CKPT_A, b"old")
    with repository.staging(repo) as stage:
        _stage_fake(stage, ["onnx"], b"new")
        repository.publish(stage, repo, ["onnx"], threads=2, force=True)  # no manifest: no sha256
    assert not (repo / "brats_onnx" / "configs" / "trt.pbtxt").exists()
    assert (repo / "brats_onnx" / "configs" / "gpu.pbtxt").is_file()


def test_publish_refuses_incomplete_stage(tmp_path):
    repo = tmp_path / "repo"
    with repository.staging(repo) as stage:
        repository.version_dir(stage, "openvino").mkdir(parents=True)
        (repository.version_dir(stage, "openvino") / "model.xml").write_text("<net/>")
        with pytest.raises(RepositoryError, match="model.bin"):
            repository.publish(stage, repo, ["openvino"])
    assert not repo.exists()


def test_missing_parent_is_a_repository_error(tmp_path):
    with pytest.raises(RepositoryError, match="does not exist"):
        repository.check_versions_writable(tmp_path / "nope" / "repo", ["onnx"])


def test_publish_with_a_malformed_checkpoint_sha256_writes_nothing(tmp_path):
    repo = tmp_path / "repo"
    with repository.staging(repo) as stage, pytest.raises(RepositoryError, match="checkpoint sha256 must be 64"):
        _stage_fake(stage, ["onnx", "torchscript"])
        manifest = _manifest(stage, ["onnx"])
        manifest["checkpoint"]["sha256"] = "XYZ"  # a manifest edited by hand: build_manifest refuses to write one
        repository.publish(stage, repo, ["torchscript", "onnx"], threads=2, manifest=manifest)
    assert not (repo / "brats_torchscript").exists()  # refused before the first model moved


@pytest.mark.parametrize(("change", "match"), [
    ({"checkpoint_sha256": "XYZ"}, "checkpoint_sha256 must be 64"),
    ({"opset": 0}, "opset must be >= 1"),
    ({"tolerance": -1.0}, "tolerance must be >= 0"),
    ({"tolerance": float("nan")}, "tolerance must be >= 0"),
    ({"fixed_size": 20}, "fixed_size must be a positive multiple of 8"),
    ({"files_sha256": {"tensorflow": {}}}, r"unknown model keys \['tensorflow'\]"),
    ({"files_sha256": {"onnx": {"model.onnx": "abc"}}}, "files_sha256 of onnx/model.onnx is not 64"),
])
def test_an_export_record_is_checked_when_made(change, match):
    good = {"checkpoint": "c.pt", "checkpoint_sha256": CKPT_A, "parity": [], "opset": 17, "versions": {},
            "tolerance": 1e-4}
    record = repository.ExportRecord(**good)
    assert record.checkpoint == Path("c.pt") and record.parity == ()
    with pytest.raises(ValueError, match=match):
        repository.ExportRecord(**{**good, **change})


def test_publish_takes_the_onnx_sha256_from_the_manifest(tmp_path):
    """model.onnx is hashed once, for the manifest; a manifest without that hash writes nothing."""
    repo = tmp_path / "repo"
    with repository.staging(repo) as stage:
        _stage_fake(stage, ["onnx"])
        manifest = _manifest(stage, ["onnx"], CKPT_A)
        del manifest["models"]["brats_onnx"]["files_sha256"]["model.onnx"]
        with pytest.raises(RepositoryError, match="model.onnx sha256 must be 64"):
            repository.publish(stage, repo, ["onnx"], threads=2, manifest=manifest)
    assert not repo.exists()


def test_an_unchanged_export_is_reused_and_each_change_says_why_not(tmp_path):
    """brats-demo's decision: the same checkpoint and libraries, files as recorded -> reuse (None); else the reason."""
    repo, keys, libraries = tmp_path / "repo", ["openvino", "openvino_flip4"], {"torch": "x"}
    assert repository.why_export_again(repo, keys, checkpoint_sha256=CKPT_A, libraries=libraries) == \
        f"no manifest.json in {repo} (nothing exported there yet)"
    with repository.staging(repo) as stage:
        _stage_fake(stage, keys)
        repository.publish(stage, repo, keys, threads=2, manifest=_manifest(stage, keys, CKPT_A))

    def why(keys=keys, sha=CKPT_A, libraries=libraries):
        return repository.why_export_again(repo, keys, checkpoint_sha256=sha, libraries=libraries)

    assert why() is None
    assert why(sha=CKPT_B) == ("brats_openvino was exported from another checkpoint (sha256 aaaaaaaaaaaa..., this one "
                               "bbbbbbbbbbbb...)")
    assert why(libraries={"torch": "y"}) == "the libraries changed since the export (torch x -> y)"
    assert why(keys=["onnx"]) == f"brats_onnx is not in {repo / 'manifest.json'}"
    weights = repo / "brats_openvino_flip4" / "1" / "model.bin"
    weights.write_bytes(b"other")
    assert why() == f"{weights} is missing or differs from what manifest.json records"
    weights.unlink()
    assert why() == f"{weights} is missing or differs from what manifest.json records"
    (repo / "manifest.json").write_text("{")
    assert why().startswith(f"{repo / 'manifest.json'} cannot be read")

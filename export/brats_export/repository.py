"""Write the Triton model repository: ``config.pbtxt`` per model, its variants, the model files, a manifest.

Configs are built as ``tritonclient.grpc.model_config_pb2.ModelConfig`` messages (a misspelled field fails at
once) and written with ``google.protobuf.text_format``. Parameters are only those that the native backends of
Triton 24.10 read; ``tests/unit/test_backend_keys.py`` checks every written config against a table taken from
those backends' r24.10 sources. Variants, chosen with ``tritonserver --model-config-name NAME``:

- ``config.pbtxt`` (CPU, every model).
- ``gpu`` (``brats_onnx``, ``brats_torchscript``): ``KIND_GPU``. ONNX runs on ONNX Runtime's CUDA execution
  provider with cuDNN's heuristic algorithm choice (the backend's default, EXHAUSTIVE, benchmarks every 3D
  convolution again for each new crop shape) and an arena that grows by what is asked (not to the next power of
  two: every case has another crop shape). TorchScript warms up twice at a whole-crop shape (the profiling
  executor specialises on the first two runs).
- ``trt`` (``brats_onnx``, opt-in): the TensorRT execution provider with one explicit shape profile covering
  every request the client sends, an engine cache whose file prefix carries the checkpoint's and model.onnx's
  sha256 (so an engine is never reused for other weights), and a timing cache. Written only by an export (the
  checkpoint's sha256 is needed), not by ``--configs-only``.
- ``bf16`` (``brats_openvino``): ``HINT_BF16``.

``max_batch_size`` is 4 (one case's four flips; 8 whole crops would need ~8 GB on CPU, ~27 GB on a GPU) with
preferred batches of 2 and 4. ``brats_openvino`` uses ``max_batch_size: 1`` without a dynamic batcher: Triton's
openvino backend fixes the model's batch to ``max_batch_size`` (``ov::set_batch``) and rejects other batches
unless ``ENABLE_BATCH_PADDING`` pads them (computing the padding); it accepts only ``KIND_CPU`` instances.

Layout written by :func:`publish`::

    <repository>/manifest.json
    <repository>/<model>/config.pbtxt
    <repository>/<model>/configs/gpu.pbtxt        (not for brats_openvino)
    <repository>/brats_onnx/configs/trt.pbtxt
    <repository>/brats_openvino/configs/bf16.pbtxt
    <repository>/<model>/1/<model files>

Everything is built in a staging folder beside the repository and moved into place with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from brats_client.atomic import sha256_file, write_text_atomic
from brats_client.contract import DATATYPE, IN_CHANNELS, INPUT_NAME, OUT_CHANNELS, OUTPUT_NAME
from brats_client.server_flips import COMPANION_KEY, SERVER_FLIPS_KEY
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from .errors import RepositoryError

log = logging.getLogger(__name__)

VERSION = "1"
MAX_BATCH_SIZE = 4  # one case's flip4 in one request (the client caps --flips-per-request at this)
PREFERRED_BATCH_SIZES = (2, 4)  # 2 requests in flight of one flip each, or --flips-per-request 2 / 4
MAX_QUEUE_DELAY_US = 2000
WARMUP_SIZE = 32  # CPU warm-up tile: cheap, runs every code path once
CROP_SPATIAL = (144, 176, 144)  # a typical BraTS 2019 crop padded to 16: GPU warm-up and TensorRT opt shape
TORCHSCRIPT_GPU_WARMUPS = 2  # the profiling executor optimises after two runs of a shape
TRT_MIN_SPATIAL = 16  # the client pads every axis to a multiple of 16
TRT_MAX_SPATIAL = 192  # the client's default --tile: no axis of a request is longer
TRT_WORKSPACE_BYTES = 4 << 30
TRT_CACHE_PATH = "/tmp/brats_trt_cache"  # one level under /tmp: ORT creates only the last folder of the path
CUDNN_CONV_ALGO_SEARCH = "1"  # onnxruntime backend: 0 EXHAUSTIVE (its default), 1 HEURISTIC, 2 DEFAULT
ARENA_EXTEND_STRATEGY = "1"  # onnxruntime backend: 0 kNextPowerOfTwo (its default), 1 kSameAsRequested
MANIFEST = "manifest.json"
CPU_VARIANT = "cpu"  # config.pbtxt
GPU_VARIANT = "gpu"
TRT_VARIANT = "trt"
BF16_VARIANT = "bf16"  # brats_openvino only: HINT_BF16 (about twice as fast on CPUs with AVX512-BF16 or AMX)
VARIANTS = (CPU_VARIANT, GPU_VARIANT, TRT_VARIANT, BF16_VARIANT)
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelSpec:
    format: str  # the file format: onnx, torchscript or openvino
    name: str
    platform: str  # empty where ``backend`` names it
    backend: str
    files: tuple[str, ...]
    max_batch_size: int
    variants: tuple[str, ...]
    server_flips: str | None = None  # "flip4": the graph runs the seed's four flips itself and averages them


MODELS: dict[str, ModelSpec] = {
    "onnx": ModelSpec("onnx", "brats_onnx", "onnxruntime_onnx", "", ("model.onnx",), MAX_BATCH_SIZE,
                      (CPU_VARIANT, GPU_VARIANT, TRT_VARIANT)),
    "torchscript": ModelSpec("torchscript", "brats_torchscript", "pytorch_libtorch", "", ("model.pt",),
                             MAX_BATCH_SIZE, (CPU_VARIANT, GPU_VARIANT)),
    "openvino": ModelSpec("openvino", "brats_openvino", "", "openvino", ("model.xml", "model.bin"), 1,
                          (CPU_VARIANT, BF16_VARIANT)),
}
# Companions that flip on the server (one request per tile instead of four; batch 1: four crops inside)
SERVER_FLIPS = "flip4"
for _fmt, _spec in list(MODELS.items()):
    MODELS[f"{_fmt}_{SERVER_FLIPS}"] = ModelSpec(
        _spec.format, f"{_spec.name}_{SERVER_FLIPS}", _spec.platform, _spec.backend, _spec.files, 1,
        tuple(v for v in _spec.variants if v != TRT_VARIANT), SERVER_FLIPS)
FORMATS = tuple(key for key, spec in MODELS.items() if spec.server_flips is None)  # what --formats names
# The config parameters of brats_client.server_flips (Triton's backends ignore keys they do not read)


def flip_companion(fmt: str) -> str:
    """The model key of ``fmt``'s server-side-flip companion (``onnx`` -> ``onnx_flip4``)."""
    return f"{fmt}_{SERVER_FLIPS}"


def default_threads() -> int:
    return os.cpu_count() or 1


def variant_path(variant: str) -> str:
    """Where a variant lives in the model folder: ``config.pbtxt`` or ``configs/<variant>.pbtxt``."""
    return "config.pbtxt" if variant == CPU_VARIANT else f"configs/{variant}.pbtxt"


def engine_cache_prefix(checkpoint_sha256: str, onnx_sha256: str) -> str:
    """The TensorRT engine file prefix: other weights or another graph never match a cached engine.

    ORT's TensorRT provider names engines by a hash of the model's file name, tensor names and library versions
    (``TRTGenerateId``), not the weights, so without this a re-exported checkpoint would be served by the old
    engine.
    """
    for what, value in (("checkpoint", checkpoint_sha256), ("model.onnx", onnx_sha256)):
        if not _SHA256.fullmatch(value or ""):
            raise RepositoryError(f"the {what} sha256 must be 64 lowercase hex digits, got {value!r}")
    return f"brats_onnx_{checkpoint_sha256[:16]}_{onnx_sha256[:16]}"


def trt_profile(fixed_size: int | None = None) -> dict[str, str]:
    """One TensorRT shape profile covering every request: batch 1..4, each axis 16..192 (or the fixed size)."""
    def shape(batch: int, spatial: Iterable[int]) -> str:
        return f"{INPUT_NAME}:" + "x".join(str(d) for d in (batch, IN_CHANNELS, *spatial))

    low, opt, high = ((fixed_size,) * 3,) * 3 if fixed_size else (
        (TRT_MIN_SPATIAL,) * 3, CROP_SPATIAL, (TRT_MAX_SPATIAL,) * 3)
    return {
        "trt_profile_min_shapes": shape(1, low),
        "trt_profile_opt_shapes": shape(1, opt),
        "trt_profile_max_shapes": shape(MAX_BATCH_SIZE, high),
    }


def _spatial(fixed_size: int | None) -> list[int]:
    return [fixed_size] * 3 if fixed_size else [-1, -1, -1]


def _params(cfg: mc.ModelConfig, values: dict[str, str]) -> None:
    for key, value in values.items():
        cfg.parameters[key].string_value = value


def _check_variant(spec: ModelSpec, variant: str) -> None:
    if variant in spec.variants:
        return
    if variant not in VARIANTS:
        raise RepositoryError(f"unknown config variant {variant!r}; choose from {list(VARIANTS)}")
    why = {"openvino": "Triton's openvino backend runs on CPU only"}.get(spec.format, "")
    raise RepositoryError(f"{spec.name} has no {variant} variant (it has {', '.join(spec.variants)})"
                          + (f": {why}" if why and variant in (GPU_VARIANT, TRT_VARIANT) else ""))


def build_config(fmt: str, threads: int | None = None, fixed_size: int | None = None, variant: str = CPU_VARIANT,
                 engine_prefix: str | None = None, companion: bool = False) -> mc.ModelConfig:
    """The ``ModelConfig`` of one model key and variant (``trt`` needs :func:`engine_cache_prefix`);
    ``companion``: a plain model names its server-side-flip companion (for the client)."""
    if fmt not in MODELS:
        raise RepositoryError(f"unknown format {fmt!r}; choose from {list(MODELS)}")
    spec = MODELS[fmt]
    _check_variant(spec, variant)
    if variant == TRT_VARIANT and not engine_prefix:
        raise RepositoryError("the trt variant needs an engine cache prefix (from the checkpoint's sha256)")
    threads = threads or default_threads()
    if threads < 1:
        raise RepositoryError(f"threads must be >= 1, got {threads}")
    spatial = _spatial(fixed_size)
    gpu = variant in (GPU_VARIANT, TRT_VARIANT)

    cfg = mc.ModelConfig(name=spec.name, max_batch_size=spec.max_batch_size)
    if spec.platform:
        cfg.platform = spec.platform
    else:
        cfg.backend = spec.backend
    cfg.input.add(name=INPUT_NAME, data_type=mc.TYPE_FP32, dims=[IN_CHANNELS, *spatial])
    cfg.output.add(name=OUTPUT_NAME, data_type=mc.TYPE_FP32, dims=[OUT_CHANNELS, *spatial])
    if spec.max_batch_size > 1:
        cfg.dynamic_batching.preferred_batch_size.extend(b for b in PREFERRED_BATCH_SIZES if b <= spec.max_batch_size)
        cfg.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    cfg.instance_group.add(kind=kind, count=1)  # explicit: the onnxruntime backend defaults to 2 on CPU

    if spec.server_flips:
        _params(cfg, {SERVER_FLIPS_KEY: spec.server_flips})
    elif companion:
        _params(cfg, {COMPANION_KEY: MODELS[flip_companion(fmt)].name})
    if spec.format == "onnx":
        _params(cfg, {"intra_op_thread_count": str(threads), "inter_op_thread_count": "1"})
        if gpu:  # read by the CUDA provider, which also runs what TensorRT does not take
            _params(cfg, {"cudnn_conv_algo_search": CUDNN_CONV_ALGO_SEARCH,
                          "arena_extend_strategy": ARENA_EXTEND_STRATEGY})
        if variant == TRT_VARIANT:
            trt = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
            trt.parameters.update({
                "precision_mode": "FP32",
                "max_workspace_size_bytes": str(TRT_WORKSPACE_BYTES),
                "trt_engine_cache_enable": "1",
                "trt_engine_cache_path": TRT_CACHE_PATH,
                "trt_engine_cache_prefix": engine_prefix,
                "trt_timing_cache_enable": "1",
                "trt_timing_cache_path": TRT_CACHE_PATH,
                **trt_profile(fixed_size),
            })
    elif spec.format == "torchscript":
        # No INTER_OP_THREAD_COUNT: the 24.10 backend calls at::set_num_interop_threads, which aborts the
        # server when the model is loaded a second time in one process.
        _params(cfg, {"INTRA_OP_THREAD_COUNT": str(threads)})
    else:
        _params(cfg, {"NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": "LATENCY"})
        if variant == BF16_VARIANT:
            _params(cfg, {"HINT_BF16": "YES"})

    warm = [fixed_size] * 3 if fixed_size else list(CROP_SPATIAL) if gpu else [WARMUP_SIZE] * 3
    count = TORCHSCRIPT_GPU_WARMUPS if gpu and spec.format == "torchscript" else 0  # 0: once
    warmup = cfg.model_warmup.add(name="zero_crop" if gpu else "zero_tile", batch_size=1, count=count)
    warmup.inputs[INPUT_NAME].data_type = mc.TYPE_FP32
    warmup.inputs[INPUT_NAME].dims.extend([IN_CHANNELS, *warm])
    warmup.inputs[INPUT_NAME].zero_data = True
    return cfg


def _header(fmt: str, variant: str) -> str:
    spec = MODELS[fmt]
    lines = [
        f"# {spec.name}: generated by brats-export (brats_export.repository); edit the writer, not this file.",
        "# INPUT__0 [N, 4, D, H, W] float32, channels t1, t1ce, t2, flair (z-scored; D, H, W multiples of 8).",
        "# OUTPUT__0 [N, 3, D, H, W] float32 sigmoid probabilities of WT, TC, ET.",
    ]
    if variant != CPU_VARIANT:
        lines.append(f"# {variant} variant: tritonserver --model-config-name {variant} (models without "
                     "this file keep config.pbtxt).")
    if variant in (GPU_VARIANT, TRT_VARIANT):
        lines.append("# KIND_GPU: fails to load on a host without an NVIDIA GPU.")
    if spec.server_flips:
        lines += [f"# Server-side test-time flips ({spec.server_flips}): the graph runs the seed's four flips of each",
                  "# input as one batch and averages them (brats-client uses it when the plain model names it)."]
    if variant == GPU_VARIANT and spec.format == "onnx":
        lines.append("# CUDA execution provider, FP32 (TF32 convolutions on Ampere and newer); cuDNN heuristic "
                     "algorithms.")
    if variant == GPU_VARIANT and spec.format == "torchscript":
        lines.append("# Warm-up runs twice at a whole-crop shape: the JIT profiling executor optimises after two runs.")
    if variant == TRT_VARIANT:
        lines += [
            "# TensorRT FP32, one shape profile: batch 1-4, each axis 16-192 (the client's default --tile).",
            "# The first load builds the engine (minutes); it is cached in " + TRT_CACHE_PATH + " under a prefix",
            "# made of the checkpoint's and model.onnx's sha256, so other weights never reuse it.",
        ]
    if variant == BF16_VARIANT:
        lines += [
            "# HINT_BF16 YES: native bf16 on CPUs with AVX512_BF16 or AMX (about 2x faster, ~5e-3 from PyTorch);",
            "# other AVX-512 CPUs emulate bf16 (2-3x slower than f32; brats-serve warns), older CPUs keep f32.",
        ]
    if spec.format == "openvino":
        lines += [
            "# max_batch_size 1: Triton's openvino backend fixes the batch to max_batch_size and rejects smaller",
            "# batches (or pads them: ENABLE_BATCH_PADDING). It runs on CPU only, so there is no GPU variant.",
            "# It cannot force FP32: CPUs with AVX512_BF16/AMX compute in bf16 by default (see manifest.json).",
        ]
    return "\n".join(lines) + "\n"


def render_config(fmt: str, threads: int | None = None, fixed_size: int | None = None, variant: str = CPU_VARIANT,
                  engine_prefix: str | None = None, companion: bool = False) -> str:
    """``config.pbtxt`` text: a comment header, then the message in protobuf text format."""
    cfg = build_config(fmt, threads, fixed_size, variant, engine_prefix, companion)
    return _header(fmt, variant) + text_format.MessageToString(cfg)


def config_texts(fmt: str, threads: int | None = None, fixed_size: int | None = None,
                 engine_prefix: str | None = None, companion: bool = False) -> dict[str, str]:
    """Files of one model's configs, keyed by their path relative to the model folder (``trt`` only with a
    prefix)."""
    return {
        variant_path(v): render_config(fmt, threads, fixed_size, v, engine_prefix, companion)
        for v in MODELS[fmt].variants
        if v != TRT_VARIANT or engine_prefix
    }


def parse_config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


# --- writing --------------------------------------------------------------------------------------------------


def write_configs(repository: Path, formats: Iterable[str] = FORMATS, threads: int | None = None,
                  fixed_size: int | None = None, server_flips: bool = True) -> list[Path]:
    """Write only the configs (no model files, no manifest): what is committed under ``model_repository/``.
    ``server_flips``: the flip4 companions too."""
    repository = Path(repository)
    keys = model_keys(formats, server_flips)
    written = []
    try:
        for fmt in keys:
            model_dir = repository / MODELS[fmt].name
            for rel, text in config_texts(fmt, threads, fixed_size, companion=flip_companion(fmt) in keys).items():
                write_text_atomic(text, model_dir / rel)
                written.append(model_dir / rel)
    except OSError as e:
        raise RepositoryError(f"cannot write configs under {repository}: {e}") from e
    return written


def model_keys(formats: Iterable[str], server_flips: bool = True) -> list[str]:
    """The model keys of ``formats``, each followed by its flip4 companion when ``server_flips``."""
    return [k for fmt in formats for k in ((fmt, flip_companion(fmt)) if server_flips else (fmt,))]


def version_dir(root: Path, fmt: str) -> Path:
    return Path(root) / MODELS[fmt].name / VERSION


def check_writable(repository: Path, formats: Iterable[str], force: bool = False) -> None:
    """Refuse early: the repository's parent must exist, and no model version may be replaced without force."""
    repository = Path(repository)
    if not repository.absolute().parent.is_dir():
        raise RepositoryError(f"the folder {repository.absolute().parent} does not exist; create it first")
    if repository.exists() and not repository.is_dir():
        raise RepositoryError(f"{repository} exists and is not a folder; choose another --repository")
    if force:
        return
    existing = [version_dir(repository, fmt) for fmt in formats if version_dir(repository, fmt).exists()]
    if existing:
        one = len(existing) == 1
        raise RepositoryError(
            f"{', '.join(map(str, existing))} already exist{'s' if one else ''}; run brats-export again with "
            f"--force to replace {'it' if one else 'them'} (from Python: force=True)"
        )


@contextlib.contextmanager
def staging(repository: Path) -> Iterator[Path]:
    """A temporary folder beside ``repository`` (same file system, so ``os.replace`` works); removed on exit."""
    parent = Path(repository).absolute().parent
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{Path(repository).name}.staging-", dir=parent))
    except OSError as e:
        raise RepositoryError(f"cannot create a staging folder in {parent}: {e}") from e
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, repository: Path, formats: Iterable[str], *, threads: int | None = None,
            fixed_size: int | None = None, force: bool = False, manifest: dict | None = None) -> list[Path]:
    """Move the staged model versions into ``repository`` with their configs, then merge the manifest.

    ``stage/<model>/1/`` must hold each format's files. An existing ``<model>/1`` is replaced only with
    ``force``; the old one is moved into the stage (deleted with it) before the new one takes its place.
    ``brats_onnx/configs/trt.pbtxt`` is written when the manifest names the checkpoint's sha256; an old one is
    removed before the new weights arrive, so its engine prefix never meets other weights.
    """
    repository, stage = Path(repository), Path(stage)
    formats = list(formats)
    for fmt in formats:
        missing = [f for f in MODELS[fmt].files if not (version_dir(stage, fmt) / f).is_file()]
        if missing:
            raise RepositoryError(f"staged {MODELS[fmt].name} lacks {missing} in {version_dir(stage, fmt)}")
    check_writable(repository, formats, force)
    published = []
    try:
        configs = {fmt: config_texts(fmt, threads, fixed_size, _engine_prefix(stage, fmt, manifest),
                                     companion=flip_companion(fmt) in formats) for fmt in formats}
        for fmt in formats:
            model_stage = stage / MODELS[fmt].name
            texts = configs[fmt]
            for rel, text in texts.items():
                write_text_atomic(text, model_stage / rel)
            target = version_dir(repository, fmt)
            target.parent.mkdir(parents=True, exist_ok=True)
            stale_trt = target.parent / variant_path(TRT_VARIANT)
            if stale_trt.exists():
                os.replace(stale_trt, stage / f"replaced-{MODELS[fmt].name}-trt.pbtxt")
            if target.exists():
                old = stage / f"replaced-{MODELS[fmt].name}"
                os.replace(target, old)
                log.info("replacing %s (--force)", target)
            os.replace(version_dir(stage, fmt), target)
            for rel in texts:
                (target.parent / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(model_stage / rel, target.parent / rel)
            published.append(target)
            log.info("wrote %s", target.parent)
        if manifest is not None:
            merged = _merge_manifest(repository / MANIFEST, manifest)
            write_text_atomic(json.dumps(merged, indent=2, sort_keys=False) + "\n", stage / MANIFEST)
            os.replace(stage / MANIFEST, repository / MANIFEST)
    except OSError as e:
        raise RepositoryError(f"cannot write into {repository}: {e}") from e
    return published


def _engine_prefix(stage: Path, fmt: str, manifest: dict | None) -> str | None:
    """The TensorRT prefix of a staged ONNX export, or None (not ONNX, or no checkpoint sha256 to key it on)."""
    if TRT_VARIANT not in MODELS[fmt].variants:
        return None
    checkpoint_sha256 = ((manifest or {}).get("checkpoint") or {}).get("sha256")
    if not checkpoint_sha256:
        log.info("no checkpoint sha256 in the manifest: %s is not written", variant_path(TRT_VARIANT))
        return None
    return engine_cache_prefix(checkpoint_sha256, sha256_file(version_dir(stage, fmt) / MODELS[fmt].files[0]))


def _merge_manifest(path: Path, new: dict) -> dict:
    """Keep entries of models that this run did not export (an earlier run's); replace the rest."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return new
    models = dict(old.get("models", {})) if isinstance(old, dict) else {}
    models.update(new.get("models", {}))
    return {**new, "models": models}


def build_manifest(
    formats: Iterable[str],
    *,
    checkpoint: Path,
    checkpoint_sha256: str,
    parity: list[dict],
    opset: int,
    versions: dict[str, str],
    tolerance: float,
    fixed_size: int | None = None,
    files_sha256: dict[str, dict[str, str]] | None = None,
    openvino_host_precision: str | None = None,
) -> dict:
    """Everything a reader needs to trust the repository: source, checks, libraries, tensor contract."""
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    spatial = _spatial(fixed_size)
    models = {}
    for fmt in formats:
        spec = MODELS[fmt]
        entry = {
            "format": spec.format,
            "server_flips": spec.server_flips,
            "version": int(VERSION),
            "platform": spec.platform or None,
            "backend": spec.backend or None,
            "files": list(spec.files),
            "files_sha256": (files_sha256 or {}).get(fmt, {}),
            "max_batch_size": spec.max_batch_size,
            "checkpoint_sha256": checkpoint_sha256,
            "created": created,
            "parity": [row for row in parity if row["format"].split("[")[0] == fmt],
        }
        if spec.format == "onnx":
            entry["opset"] = opset
        if spec.format == "openvino":
            entry["parity_precision"] = "f32"
            entry["host_default_precision"] = openvino_host_precision
        models[spec.name] = entry
    return {
        "created": created,
        "generator": "brats-export",
        "checkpoint": {"path": str(checkpoint), "sha256": checkpoint_sha256},
        "libraries": versions,
        "onnx_opset": opset,
        "parity_tolerance": tolerance,
        "fixed_size": fixed_size,
        "input": {"name": INPUT_NAME, "datatype": DATATYPE, "shape": [-1, IN_CHANNELS, *spatial],
                  "channels": ["t1", "t1ce", "t2", "flair"]},
        "output": {"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": [-1, OUT_CHANNELS, *spatial],
                   "channels": ["WT", "TC", "ET"], "activation": "sigmoid"},
        "labels": {"convention": "BraTS 2019", "1": "NCR/NET (necrotic / non-enhancing core)", "2": "ED (edema)",
                   "4": "ET (enhancing tumor)", "regions": {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}},
        "models": models,
    }

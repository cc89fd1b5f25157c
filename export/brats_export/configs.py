"""The ``config.pbtxt`` of each model and variant, and ``--configs-only``'s writer.

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
- ``bf16`` (``brats_openvino``, ``brats_openvino_int8``): ``HINT_BF16``.

Every config names the precision its model computes in (parameter ``brats_precision``; the client's report
copies it). ``brats_openvino_int8`` has fixed spatial dims: its IR is static (:mod:`.int8`), and Triton 24.10's
openvino backend compiles a model once, at load, with the IR's shapes (or the config's dims with
``RESHAPE_IO_LAYERS``), so a dynamic config stays dynamic in the container.

``max_batch_size`` is 4 (one case's four flips; 8 whole crops would need ~8 GB on CPU, ~27 GB on a GPU) with
preferred batches of 2 and 4. ``brats_openvino`` uses ``max_batch_size: 1`` (its dynamic batcher only queues):
Triton's openvino backend fixes the model's batch to ``max_batch_size`` (``ov::set_batch``) and rejects other batches
unless ``ENABLE_BATCH_PADDING`` pads them (computing the padding); it accepts only ``KIND_CPU`` instances.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from brats_client.atomic import write_text_atomic
from brats_client.contract import IN_CHANNELS, INPUT_NAME, OUT_CHANNELS, OUTPUT_NAME, PAD_MULTIPLE
from brats_client.model_info import PRECISION_KEY
from brats_client.server_flips import COMPANION_KEY, SERVER_FLIPS_KEY
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from .catalogue import (
    BF16_VARIANT,
    CPU_VARIANT,
    FORMATS,
    GPU_VARIANT,
    MAX_BATCH_SIZE,
    MODELS,
    TRT_VARIANT,
    VARIANTS,
    ModelSpec,
    flip_companion,
    model_keys,
)
from .errors import RepositoryError

PREFERRED_BATCH_SIZES = (2, 4)  # 2 requests in flight of one flip each, or --flips-per-request 2 / 4
MAX_QUEUE_DELAY_US = 2000
# Every network model's queue is bounded: past this many waiting requests Triton refuses one at once (UNAVAILABLE,
# HTTP 503) and clients retry later (brats-client does; brats_segment answers busy). With max_batch_size 1 the
# dynamic batcher only queues; it also drops a queued request whose gRPC client has gone (request cancellation).
NETWORK_MAX_QUEUE = 16
WARMUP_SIZE = 32  # CPU warm-up tile: cheap, runs every code path once
CROP_SPATIAL = (144, 176, 144)  # a typical BraTS 2019 crop padded to 16: GPU warm-up and TensorRT opt shape
TORCHSCRIPT_GPU_WARMUPS = 2  # the profiling executor optimises after two runs of a shape
TRT_MIN_SPATIAL = PAD_MULTIPLE  # the client pads every axis to a multiple of it
TRT_MAX_SPATIAL = 192  # the client's default --tile: no axis of a request is longer
TRT_WORKSPACE_BYTES = 4 << 30
TRT_CACHE_PATH = "/tmp/brats_trt_cache"  # one level under /tmp: ORT creates only the last folder of the path
CUDNN_CONV_ALGO_SEARCH = "1"  # onnxruntime backend: 0 EXHAUSTIVE (its default), 1 HEURISTIC, 2 DEFAULT
ARENA_EXTEND_STRATEGY = "1"  # onnxruntime backend: 0 kNextPowerOfTwo (its default), 1 kSameAsRequested
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


Fixed = int | Sequence[int] | None  # a static spatial shape: N^3, (D, H, W), or None (dynamic)


def spatial_dims(fixed_size: Fixed) -> list[int]:
    """D, H, W of the tensors: the fixed size (N^3 or D, H, W), or -1 (dynamic)."""
    if not fixed_size:
        return [-1, -1, -1]
    return [int(fixed_size)] * 3 if isinstance(fixed_size, int) else [int(d) for d in fixed_size]


def precision(spec: ModelSpec, variant: str) -> str:
    """What the model computes in, as the config says (the client's report copies it)."""
    if spec.format != "openvino":
        return "f32"
    base = "bf16" if variant == BF16_VARIANT else "f32"
    if spec.quantized:
        return f"int8 convolutions, {base} elsewhere"
    if variant == BF16_VARIANT:
        return base
    return "f32 (Triton 24.10's own openvino backend: bf16 on CPUs with AVX512_BF16 or AMX)"


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


def build_config(key: str, threads: int | None = None, fixed_size: Fixed = None, variant: str = CPU_VARIANT,
                 engine_prefix: str | None = None, companion: bool = False) -> mc.ModelConfig:
    """The ``ModelConfig`` of one model key and variant (``trt`` needs :func:`engine_cache_prefix`);
    ``companion``: a plain model names its server-side-flip companion (for the client)."""
    if key not in MODELS:
        raise RepositoryError(f"unknown model key {key!r}; choose from {list(MODELS)}")
    spec = MODELS[key]
    _check_variant(spec, variant)
    if variant == TRT_VARIANT and not engine_prefix:
        raise RepositoryError("the trt variant needs an engine cache prefix (from the checkpoint's sha256)")
    threads = threads or default_threads()
    if threads < 1:
        raise RepositoryError(f"threads must be >= 1, got {threads}")
    spatial = spatial_dims(fixed_size)
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
    cfg.dynamic_batching.default_queue_policy.max_queue_size = NETWORK_MAX_QUEUE
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    cfg.instance_group.add(kind=kind, count=1)  # explicit: the onnxruntime backend defaults to 2 on CPU

    _params(cfg, {PRECISION_KEY: precision(spec, variant)})
    if spec.server_flips:
        _params(cfg, {SERVER_FLIPS_KEY: spec.server_flips})
    elif companion:
        _params(cfg, {COMPANION_KEY: MODELS[flip_companion(key)].name})
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

    warm = spatial_dims(fixed_size) if fixed_size else list(CROP_SPATIAL) if gpu else [WARMUP_SIZE] * 3
    count = TORCHSCRIPT_GPU_WARMUPS if gpu and spec.format == "torchscript" else 0  # 0: once
    warmup = cfg.model_warmup.add(name="zero_crop" if gpu else "zero_tile", batch_size=1, count=count)
    warmup.inputs[INPUT_NAME].data_type = mc.TYPE_FP32
    warmup.inputs[INPUT_NAME].dims.extend([IN_CHANNELS, *warm])
    warmup.inputs[INPUT_NAME].zero_data = True
    return cfg


def _header(key: str, variant: str) -> str:
    spec = MODELS[key]
    lines = [
        f"# {spec.name}: generated by brats-export (brats_export.configs); edit the writer, not this file.",
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
                  "# input, one after another, and averages them (brats-client uses it when the plain model names it)."]
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
    if spec.quantized:
        lines += [
            "# INT8 convolutions (brats-export --int8: NNCF, checked against the f32 model's labels; manifest.json).",
            "# Static D, H, W: the client pads smaller crops to them and tiles larger ones. Compiled with dynamic",
            "# shapes, OpenVINO computes this graph wrongly without an error, so never make these dims -1.",
        ]
    if spec.format == "openvino":
        lines += [
            "# max_batch_size 1: Triton's openvino backend fixes the batch to max_batch_size and rejects smaller",
            "# batches (or pads them: ENABLE_BATCH_PADDING). It runs on CPU only, so there is no GPU variant.",
            "# It cannot force FP32: CPUs with AVX512_BF16/AMX compute in bf16 by default (see manifest.json).",
        ]
    return "\n".join(lines) + "\n"


def render_config(key: str, threads: int | None = None, fixed_size: Fixed = None, variant: str = CPU_VARIANT,
                  engine_prefix: str | None = None, companion: bool = False) -> str:
    """``config.pbtxt`` text: a comment header, then the message in protobuf text format."""
    cfg = build_config(key, threads, fixed_size, variant, engine_prefix, companion)
    return _header(key, variant) + text_format.MessageToString(cfg)


def config_texts(key: str, threads: int | None = None, fixed_size: Fixed = None,
                 engine_prefix: str | None = None, companion: bool = False) -> dict[str, str]:
    """Files of one model's configs, keyed by their path relative to the model folder (``trt`` only with a
    prefix)."""
    return {
        variant_path(v): render_config(key, threads, fixed_size, v, engine_prefix, companion)
        for v in MODELS[key].variants
        if v != TRT_VARIANT or engine_prefix
    }


def parse_config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def write_configs(repository: Path, formats: Iterable[str] = FORMATS, threads: int | None = None,
                  fixed_size: int | None = None, server_flips: bool = True) -> list[Path]:
    """Write only the configs (no model files, no manifest): what is committed under ``model_repository/``.
    ``server_flips``: the flip4 companions too."""
    repository = Path(repository)
    keys = model_keys(formats, server_flips)
    written = []
    try:
        for key in keys:
            model_dir = repository / MODELS[key].name
            for rel, text in config_texts(key, threads, fixed_size, companion=flip_companion(key) in keys).items():
                write_text_atomic(text, model_dir / rel)
                written.append(model_dir / rel)
    except OSError as e:
        raise RepositoryError(f"cannot write configs under {repository}: {e}") from e
    return written

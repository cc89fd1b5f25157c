"""Write the Triton model repository: ``config.pbtxt`` per model, its variants, the model files, a manifest.

Configs are built as ``tritonclient.grpc.model_config_pb2.ModelConfig`` messages (a misspelled field fails at
once) and written with ``google.protobuf.text_format``. Only keys that the native backends of Triton 24.10
read are used:

- ``onnxruntime_onnx``: parameters ``intra_op_thread_count``, ``inter_op_thread_count``; GPU variant with the
  TensorRT accelerator (``precision_mode``, ``max_workspace_size_bytes``, ``trt_engine_cache_enable``,
  ``trt_engine_cache_path``). Source: triton-inference-server/onnxruntime_backend README.
- ``pytorch_libtorch``: parameters ``INTRA_OP_THREAD_COUNT``, ``INTER_OP_THREAD_COUNT``. Source:
  triton-inference-server/pytorch_backend README (r24.10).
- ``openvino``: parameters ``NUM_STREAMS``, ``INFERENCE_NUM_THREADS``, ``PERFORMANCE_HINT`` (and ``HINT_BF16`` in
  the bf16 variant). Source:
  triton-inference-server/openvino_backend README and ``src/openvino.cc`` (r24.10). That backend accepts
  only ``KIND_CPU`` instances (so there is no GPU variant), and with ``max_batch_size`` > 0 it fixes the
  model's batch to ``max_batch_size`` (``ov::set_batch``) and rejects any other total batch unless
  ``ENABLE_BATCH_PADDING`` pads it (computing the padding). So ``brats_openvino`` uses ``max_batch_size: 1``
  without a dynamic batcher: every request is one tile, computed once.

Layout written by :func:`publish`::

    <repository>/manifest.json
    <repository>/<model>/config.pbtxt
    <repository>/<model>/configs/gpu.pbtxt        (not for brats_openvino)
    <repository>/brats_openvino/configs/bf16.pbtxt
    <repository>/<model>/1/<model files>

Everything is built in a staging folder beside the repository and moved into place with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from .errors import RepositoryError

log = logging.getLogger(__name__)

VERSION = "1"
INPUT_NAME = "INPUT__0"
OUTPUT_NAME = "OUTPUT__0"
IN_CHANNELS = 4
OUT_CHANNELS = 3
MAX_BATCH_SIZE = 8
MAX_QUEUE_DELAY_US = 2000
WARMUP_SIZE = 32  # CPU warm-up tile: cheap, runs every code path once
GPU_WARMUP_SIZE = 128  # GPU warm-up tile: the client's usual tile, so TensorRT / cuDNN tune for it at load
TRT_WORKSPACE_BYTES = 4 << 30
TRT_CACHE_PATH = "/tmp/brats_trt_cache"
MANIFEST = "manifest.json"
GPU_VARIANT = "gpu"
BF16_VARIANT = "bf16"  # brats_openvino only: HINT_BF16 (about twice as fast on CPUs with AVX512-BF16 or AMX)


@dataclass(frozen=True)
class ModelSpec:
    format: str
    name: str
    platform: str  # empty where ``backend`` names it
    backend: str
    files: tuple[str, ...]
    max_batch_size: int
    has_gpu_variant: bool


MODELS: dict[str, ModelSpec] = {
    "onnx": ModelSpec("onnx", "brats_onnx", "onnxruntime_onnx", "", ("model.onnx",), MAX_BATCH_SIZE, True),
    "torchscript": ModelSpec("torchscript", "brats_torchscript", "pytorch_libtorch", "", ("model.pt",),
                             MAX_BATCH_SIZE, True),
    "openvino": ModelSpec("openvino", "brats_openvino", "", "openvino", ("model.xml", "model.bin"), 1, False),
}
FORMATS = tuple(MODELS)


def default_threads() -> int:
    return os.cpu_count() or 1


def _spatial(fixed_size: int | None) -> list[int]:
    return [fixed_size] * 3 if fixed_size else [-1, -1, -1]


def _params(cfg: mc.ModelConfig, values: dict[str, str]) -> None:
    for key, value in values.items():
        cfg.parameters[key].string_value = value


def build_config(
    fmt: str, threads: int | None = None, fixed_size: int | None = None, gpu: bool = False, bf16: bool = False
) -> mc.ModelConfig:
    """The ``ModelConfig`` of one format, CPU (default), GPU or (OpenVINO) bf16 variant."""
    if fmt not in MODELS:
        raise RepositoryError(f"unknown format {fmt!r}; choose from {list(MODELS)}")
    spec = MODELS[fmt]
    if gpu and not spec.has_gpu_variant:
        raise RepositoryError(f"{spec.name} has no GPU variant: Triton's {spec.backend} backend runs on CPU only")
    if bf16 and fmt != "openvino":
        raise RepositoryError(f"only brats_openvino has a bf16 variant, not {spec.name}")
    threads = threads or default_threads()
    if threads < 1:
        raise RepositoryError(f"threads must be >= 1, got {threads}")
    spatial = _spatial(fixed_size)

    cfg = mc.ModelConfig(name=spec.name, max_batch_size=spec.max_batch_size)
    if spec.platform:
        cfg.platform = spec.platform
    else:
        cfg.backend = spec.backend
    cfg.input.add(name=INPUT_NAME, data_type=mc.TYPE_FP32, dims=[IN_CHANNELS, *spatial])
    cfg.output.add(name=OUTPUT_NAME, data_type=mc.TYPE_FP32, dims=[OUT_CHANNELS, *spatial])
    if spec.max_batch_size > 1:
        cfg.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    cfg.instance_group.add(kind=kind, count=1)  # explicit: the onnxruntime backend defaults to 2 on CPU

    if fmt == "onnx":
        _params(cfg, {"intra_op_thread_count": str(threads), "inter_op_thread_count": "1"})
        if gpu:
            trt = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
            trt.parameters["precision_mode"] = "FP32"
            trt.parameters["max_workspace_size_bytes"] = str(TRT_WORKSPACE_BYTES)
            trt.parameters["trt_engine_cache_enable"] = "1"
            trt.parameters["trt_engine_cache_path"] = TRT_CACHE_PATH
    elif fmt == "torchscript":
        _params(cfg, {"INTRA_OP_THREAD_COUNT": str(threads), "INTER_OP_THREAD_COUNT": "1"})
    else:
        _params(cfg, {"NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": "LATENCY"})
        if bf16:
            _params(cfg, {"HINT_BF16": "YES"})

    warm = fixed_size or (GPU_WARMUP_SIZE if gpu else WARMUP_SIZE)
    warmup = cfg.model_warmup.add(name="zero_tile", batch_size=1)
    warmup.inputs[INPUT_NAME].data_type = mc.TYPE_FP32
    warmup.inputs[INPUT_NAME].dims.extend([IN_CHANNELS, warm, warm, warm])
    warmup.inputs[INPUT_NAME].zero_data = True
    return cfg


def _header(fmt: str, gpu: bool, bf16: bool = False) -> str:
    spec = MODELS[fmt]
    lines = [
        f"# {spec.name}: generated by brats-export (brats_export.repository); edit the writer, not this file.",
        "# INPUT__0 [N, 4, D, H, W] float32, channels t1, t1ce, t2, flair (z-scored; D, H, W multiples of 8).",
        "# OUTPUT__0 [N, 3, D, H, W] float32 sigmoid probabilities of WT, TC, ET.",
    ]
    if gpu:
        lines.append(f"# GPU variant: tritonserver --model-config-name {GPU_VARIANT} (KIND_GPU fails on a CPU host).")
        if fmt == "onnx":
            lines.append("# TensorRT FP32 (TF32 math on Ampere and newer); engines cached in " + TRT_CACHE_PATH + ".")
    if bf16:
        lines += [
            f"# bf16 variant: tritonserver --model-config-name {BF16_VARIANT} (other models keep config.pbtxt).",
            "# HINT_BF16 YES: bf16 on CPUs with AVX512-BF16 or AMX (about 2x faster, ~5e-3 from PyTorch), else f32.",
        ]
    if fmt == "openvino":
        lines += [
            "# max_batch_size 1: Triton's openvino backend fixes the batch to max_batch_size and rejects smaller",
            "# batches (or pads them: ENABLE_BATCH_PADDING). It runs on CPU only, so there is no GPU variant.",
            "# It cannot force FP32: CPUs with AVX512_BF16/AMX compute in bf16 by default (see manifest.json).",
        ]
    return "\n".join(lines) + "\n"


def render_config(
    fmt: str, threads: int | None = None, fixed_size: int | None = None, gpu: bool = False, bf16: bool = False
) -> str:
    """``config.pbtxt`` text: a comment header, then the message in protobuf text format."""
    cfg = build_config(fmt, threads, fixed_size, gpu, bf16)
    return _header(fmt, gpu, bf16) + text_format.MessageToString(cfg)


def config_texts(fmt: str, threads: int | None = None, fixed_size: int | None = None) -> dict[str, str]:
    """Files of one model's configs, keyed by their path relative to the model folder."""
    texts = {"config.pbtxt": render_config(fmt, threads, fixed_size)}
    if MODELS[fmt].has_gpu_variant:
        texts[f"configs/{GPU_VARIANT}.pbtxt"] = render_config(fmt, threads, fixed_size, gpu=True)
    if fmt == "openvino":
        texts[f"configs/{BF16_VARIANT}.pbtxt"] = render_config(fmt, threads, fixed_size, bf16=True)
    return texts


def parse_config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


# --- writing --------------------------------------------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_configs(repository: Path, formats: Iterable[str] = FORMATS, threads: int | None = None,
                  fixed_size: int | None = None) -> list[Path]:
    """Write only the configs (no model files, no manifest): what is committed under ``model_repository/``."""
    repository = Path(repository)
    written = []
    try:
        for fmt in formats:
            model_dir = repository / MODELS[fmt].name
            for rel, text in config_texts(fmt, threads, fixed_size).items():
                _atomic_write(model_dir / rel, text)
                written.append(model_dir / rel)
    except OSError as e:
        raise RepositoryError(f"cannot write configs under {repository}: {e}") from e
    return written


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
        raise RepositoryError(
            f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}; "
            "pass --force (force=True) to replace it"
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
        for fmt in formats:
            model_stage = stage / MODELS[fmt].name
            texts = config_texts(fmt, threads, fixed_size)
            for rel, text in texts.items():
                _atomic_write(model_stage / rel, text)
            target = version_dir(repository, fmt)
            target.parent.mkdir(parents=True, exist_ok=True)
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
            _atomic_write(stage / MANIFEST, json.dumps(merged, indent=2, sort_keys=False) + "\n")
            os.replace(stage / MANIFEST, repository / MANIFEST)
    except OSError as e:
        raise RepositoryError(f"cannot write into {repository}: {e}") from e
    return published


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
            "format": fmt,
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
        if fmt == "onnx":
            entry["opset"] = opset
        if fmt == "openvino":
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
        "input": {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, IN_CHANNELS, *spatial],
                  "channels": ["t1", "t1ce", "t2", "flair"]},
        "output": {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, OUT_CHANNELS, *spatial],
                   "channels": ["WT", "TC", "ET"], "activation": "sigmoid"},
        "labels": {"convention": "BraTS 2019", "1": "NCR/NET (necrotic / non-enhancing core)", "2": "ED (edema)",
                   "4": "ET (enhancing tumor)", "regions": {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}},
        "models": models,
    }

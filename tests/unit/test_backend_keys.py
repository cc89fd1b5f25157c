"""Every config the writer produces, checked against the keys and values that Triton 24.10's backends read.

Triton passes a model's ``parameters`` to its backend and does not check them: a key the backend does not read is
ignored, so a misspelt one silently does nothing. The tables below are taken from the r24.10 branches (read
2026-12-01; commit in brackets):

- triton-inference-server/onnxruntime_backend ``src/onnxruntime.cc`` [17e5cb2]. ``ModelState::ModelState`` reads
  ``execution_mode`` (0 or 1, else an error), ``intra_op_thread_count``, ``inter_op_thread_count``,
  ``enable_mem_arena``, ``enable_mem_pattern``; ``ModelInstanceState`` reads ``memory.enable_memory_arena_shrinkage``;
  ``LoadModel`` (GPU instances) reads ``cudnn_conv_algo_search`` (0 EXHAUSTIVE, 1 HEURISTIC, 2 DEFAULT, else an
  error; EXHAUSTIVE when absent), ``gpu_mem_limit``, ``arena_extend_strategy`` (0 kNextPowerOfTwo,
  1 kSameAsRequested, else an error), ``do_copy_in_default_stream``. These model-level CUDA keys are applied
  after the ``cuda`` accelerator's own parameters, so they win. ``gpu_execution_accelerator`` names
  ``tensorrt`` (``kTensorRTExecutionAccelerator``) or ``cuda``, anything else fails ("unknown Execution
  Accelerator"); the TensorRT parameters are an if/else chain whose last branch fails ("unknown parameter ...
  for TensorRT Execution Accelerator"); ``precision_mode`` is FP32, FP16 or INT8.
- triton-inference-server/pytorch_backend ``src/libtorch.cc`` [e97a900] ``ModelState::ParseParameters``: booleans
  ``DISABLE_OPTIMIZED_EXECUTION``, ``ENABLE_CACHE_CLEANING``, ``INFERENCE_MODE``, ``DISABLE_CUDNN``,
  ``ENABLE_TENSOR_FUSER``, ``ENABLE_WEIGHT_SHARING``, ``ENABLE_JIT_PROFILING``, ``ENABLE_JIT_EXECUTOR``; integers
  ``INTRA_OP_THREAD_COUNT`` (``at::set_num_threads``) and ``INTER_OP_THREAD_COUNT``
  (``at::set_num_interop_threads``, which torch allows once per process: a reload aborts the server; the fix,
  commit b5a7410 "fix crash during torch model reload with inter op thread parameter set", 2025-09-30, is not
  in r24.10), so this project never writes the latter.
- triton-inference-server/openvino_backend ``src/openvino.cc`` [ddda22f]: booleans ``SKIP_OV_DYNAMIC_BATCHSIZE``,
  ``ENABLE_BATCH_PADDING``, ``RESHAPE_IO_LAYERS``; ``CPU_EXTENSION_PATH``; in ``ParseParameterHelper`` (values
  lower-cased) ``INFERENCE_NUM_THREADS`` and ``COMPILATION_NUM_THREADS`` (non-negative numbers), ``HINT_BF16``
  (only YES), ``NUM_STREAMS`` (AUTO, NUMA or a number), ``PERFORMANCE_HINT`` (LATENCY, THROUGHPUT,
  CUMULATIVE_THROUGHPUT). It creates only CPU instances.
- triton-inference-server/backend ``src/backend_common.cc`` [ac03a5d]: ``ParseBoolValue`` takes true/on/1 and
  false/off/0 in any case; ``ParseIntValue`` is ``std::stoi``. ``include/triton/backend/backend_common.h``:
  ``kTensorRTExecutionAccelerator`` is "tensorrt".
- triton-inference-server/common ``protobuf/model_config.proto`` [578491f]: ``ModelWarmup.count`` (0 = once).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from brats_export import catalogue, configs
from tritonclient.grpc import model_config_pb2 as mc

ROOT = Path(__file__).resolve().parents[2]
Check = Callable[[str], bool]


def _int(low: int = 0, high: int | None = None) -> Check:
    def check(value: str) -> bool:
        if not re.fullmatch(r"-?\d+", value.strip()):
            return False
        return low <= int(value) and (high is None or int(value) <= high)
    return check


def _bool(value: str) -> bool:
    return value.lower() in {"true", "on", "1", "false", "off", "0"}


def _choice(*allowed: str) -> Check:
    return lambda value: value.lower() in {a.lower() for a in allowed}


def _text(value: str) -> bool:
    return bool(value)


def _streams(value: str) -> bool:
    return value.lower() in {"auto", "numa"} or value.isdigit()


def _profile(value: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][\w.]*:\d+(x\d+)*(,[A-Za-z_][\w.]*:\d+(x\d+)*)*", value))


MODEL_PARAMETERS: dict[str, dict[str, Check]] = {
    "onnxruntime_onnx": {
        "execution_mode": _int(0, 1), "intra_op_thread_count": _int(), "inter_op_thread_count": _int(),
        "enable_mem_arena": _bool, "enable_mem_pattern": _bool, "memory.enable_memory_arena_shrinkage": _text,
        "cudnn_conv_algo_search": _int(0, 2), "gpu_mem_limit": _int(), "arena_extend_strategy": _int(0, 1),
        "do_copy_in_default_stream": _bool,
    },
    "pytorch_libtorch": {
        **{key: _bool for key in ("DISABLE_OPTIMIZED_EXECUTION", "ENABLE_CACHE_CLEANING", "INFERENCE_MODE",
                                  "DISABLE_CUDNN", "ENABLE_TENSOR_FUSER", "ENABLE_WEIGHT_SHARING",
                                  "ENABLE_JIT_PROFILING", "ENABLE_JIT_EXECUTOR")},
        "INTRA_OP_THREAD_COUNT": _int(), "INTER_OP_THREAD_COUNT": _int(),
    },
    "openvino": {
        "SKIP_OV_DYNAMIC_BATCHSIZE": _bool, "ENABLE_BATCH_PADDING": _bool, "RESHAPE_IO_LAYERS": _bool,
        "CPU_EXTENSION_PATH": _text, "INFERENCE_NUM_THREADS": _int(), "COMPILATION_NUM_THREADS": _int(),
        "HINT_BF16": _choice("YES"), "NUM_STREAMS": _streams,
        "PERFORMANCE_HINT": _choice("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"),
    },
}
# Read by brats_client (server_flips, the report's precision; identity: the checkpoint an export's weights come
# from), ignored by every backend (each looks its own keys up by name, above; the openvino backend's
# ModelState::ParseParameters asks for INFERENCE_NUM_THREADS, HINT_BF16, ... one by one).
CLIENT_PARAMETERS: dict[str, Check] = {"brats_server_flips": _choice("flip4"), "brats_server_flips_model": _text,
                                      "brats_precision": _text, "brats_checkpoint_sha256": _text}
NEVER_WRITTEN = {"pytorch_libtorch": {"INTER_OP_THREAD_COUNT"}}  # accepted, but aborts a 24.10 server on reload

TRT_BOOL_KEYS = ("int8_use_native_calibration_table", "trt_dla_enable", "trt_engine_cache_enable",
                 "trt_dump_subgraphs", "trt_force_sequential_engine_build", "trt_context_memory_sharing_enable",
                 "trt_layer_norm_fp32_fallback", "trt_timing_cache_enable", "trt_force_timing_cache",
                 "trt_detailed_build_log", "trt_build_heuristics_enable", "trt_sparsity_enable",
                 "trt_cuda_graph_enable", "trt_dump_ep_context_model")
TRT_INT_KEYS = ("max_workspace_size_bytes", "trt_max_partition_iterations", "trt_min_subgraph_size", "trt_dla_core",
                "trt_builder_optimization_level", "trt_auxiliary_streams", "trt_ep_context_embed_mode")
TRT_TEXT_KEYS = ("int8_calibration_table_name", "trt_engine_cache_path", "trt_engine_cache_prefix",
                 "trt_timing_cache_path", "trt_tactic_sources", "trt_extra_plugin_lib_paths",
                 "trt_ep_context_file_path")
TENSORRT_PARAMETERS: dict[str, Check] = {
    "precision_mode": _choice("FP32", "FP16", "INT8"),
    **{key: _bool for key in TRT_BOOL_KEYS},
    **{key: _int() for key in TRT_INT_KEYS},
    **{key: _text for key in TRT_TEXT_KEYS},
    **{key: _profile for key in ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")},
}
ONNX_GPU_ACCELERATORS = {"tensorrt", "cuda"}


def backend_of(cfg: mc.ModelConfig) -> str:
    return cfg.platform or cfg.backend


def _profile_shapes(text: str) -> dict[str, list[int]]:
    return {name: [int(d) for d in dims.split("x")] for name, dims in (item.split(":") for item in text.split(","))}


def problems(cfg: mc.ModelConfig) -> list[str]:
    """What a 24.10 backend would ignore or refuse in ``cfg`` (empty when it reads every key as meant)."""
    backend = backend_of(cfg)
    if backend not in MODEL_PARAMETERS:
        return [f"{cfg.name}: no backend table for {backend!r}"]
    found = []
    table = {**MODEL_PARAMETERS[backend], **CLIENT_PARAMETERS}
    for key, value in cfg.parameters.items():
        if key not in table:
            found.append(f"{cfg.name}: parameter {key!r} is not read by the {backend} backend")
        elif key in NEVER_WRITTEN.get(backend, ()):
            found.append(f"{cfg.name}: parameter {key!r} must not be written (see the module docstring)")
        elif not table[key](value.string_value):
            found.append(f"{cfg.name}: parameter {key}={value.string_value!r} is refused by the {backend} backend")

    accelerators = cfg.optimization.execution_accelerators
    if backend != "onnxruntime_onnx" and cfg.HasField("optimization"):
        found.append(f"{cfg.name}: the {backend} backend reads no optimization block")
    for acc in accelerators.cpu_execution_accelerator:
        found.append(f"{cfg.name}: CPU accelerator {acc.name!r} is not used by this project")
    for acc in accelerators.gpu_execution_accelerator:
        if acc.name not in ONNX_GPU_ACCELERATORS:
            found.append(f"{cfg.name}: unknown execution accelerator {acc.name!r}")
        if acc.name != "tensorrt":
            continue
        for key, value in acc.parameters.items():
            if key not in TENSORRT_PARAMETERS:
                found.append(f"{cfg.name}: TensorRT parameter {key!r} is unknown to the backend")
            elif not TENSORRT_PARAMETERS[key](value):
                found.append(f"{cfg.name}: TensorRT parameter {key}={value!r} is refused")
        found += _profile_problems(cfg, acc.parameters)

    if backend == "openvino" and any(g.kind != mc.ModelInstanceGroup.KIND_CPU for g in cfg.instance_group):
        found.append(f"{cfg.name}: the openvino backend runs only KIND_CPU instances")
    if any(b > cfg.max_batch_size for b in cfg.dynamic_batching.preferred_batch_size):
        found.append(f"{cfg.name}: a preferred batch size exceeds max_batch_size {cfg.max_batch_size}")
    if any(w.batch_size > max(cfg.max_batch_size, 1) for w in cfg.model_warmup):
        found.append(f"{cfg.name}: a warm-up batch exceeds max_batch_size {cfg.max_batch_size}")
    return found


def _profile_problems(cfg: mc.ModelConfig, params) -> list[str]:
    """A profile must name the input, cover every warm-up, and have min <= opt <= max per axis."""
    keys = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
    present = [k for k in keys if k in params]
    if not present:
        return []
    if len(present) != 3:
        return [f"{cfg.name}: TensorRT needs all three of {keys}, got {present}"]
    if not all(_profile(params[k]) for k in keys):
        return []  # reported above
    low, opt, high = (_profile_shapes(params[k]) for k in keys)
    found = []
    for name in (i.name for i in cfg.input):
        if not all(name in shapes for shapes in (low, opt, high)):
            found.append(f"{cfg.name}: the TensorRT profile does not cover input {name}")
            continue
        if not all(a <= b <= c for a, b, c in zip(low[name], opt[name], high[name], strict=True)):
            found.append(f"{cfg.name}: TensorRT profile of {name} is not min <= opt <= max")
        if high[name][0] != cfg.max_batch_size:
            found.append(f"{cfg.name}: TensorRT profile batch {high[name][0]} != max_batch_size {cfg.max_batch_size}")
        for w in cfg.model_warmup:
            shape = [w.batch_size, *w.inputs[name].dims]
            if not all(a <= s <= c for a, s, c in zip(low[name], shape, high[name], strict=True)):
                found.append(f"{cfg.name}: warm-up {shape} lies outside the TensorRT profile")
    return found


PREFIX = configs.engine_cache_prefix("0" * 64, "f" * 64)


def _written() -> list[tuple[str, str]]:
    """(label, text) of every config the writer can produce: dynamic and fixed shapes, every variant."""
    out = []
    for fixed in (None, 128):
        for fmt in catalogue.FORMATS:
            for rel, text in configs.config_texts(fmt, 2, fixed, engine_prefix=PREFIX).items():
                out.append((f"{fmt}{'' if fixed is None else f'@{fixed}'}:{rel}", text))
    return out


WRITTEN = _written()


def test_every_variant_is_covered():
    labels = {label for label, _ in WRITTEN}
    assert {"onnx:configs/trt.pbtxt", "onnx:configs/gpu.pbtxt", "torchscript:configs/gpu.pbtxt",
            "openvino:configs/bf16.pbtxt", "openvino@128:config.pbtxt"} <= labels
    assert len(WRITTEN) == 14


@pytest.mark.parametrize(("label", "text"), WRITTEN, ids=[label for label, _ in WRITTEN])
def test_written_config_uses_only_what_the_backend_reads(label, text):
    assert problems(configs.parse_config(text)) == []


@pytest.mark.parametrize("path", sorted((ROOT / "model_repository").rglob("*.pbtxt")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_config_uses_only_what_the_backend_reads(path):
    assert problems(configs.parse_config(path.read_text(encoding="utf-8"))) == []


def _with(text: str, mutate) -> mc.ModelConfig:
    cfg = configs.parse_config(text)
    mutate(cfg)
    return cfg


@pytest.mark.parametrize(("fmt", "variant", "mutate", "expected"), [
    ("onnx", "cpu", lambda c: c.parameters["intra_op_threads_count"].MergeFrom(c.parameters["intra_op_thread_count"]),
     "'intra_op_threads_count' is not read"),
    ("onnx", "gpu", lambda c: setattr(c.parameters["cudnn_conv_algo_search"], "string_value", "HEURISTIC"),
     "cudnn_conv_algo_search='HEURISTIC' is refused"),
    ("onnx", "trt", lambda c: c.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters.update(
        {"trt_fp16_enable": "1"}), "'trt_fp16_enable' is unknown"),  # ORT's own name; the backend wants precision_mode
    ("onnx", "trt", lambda c: c.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters.update(
        {"trt_profile_max_shapes": "INPUT__0:4x4x96x96x96"}), "outside the TensorRT profile"),
    ("onnx", "gpu", lambda c: c.optimization.execution_accelerators.gpu_execution_accelerator.add(name="TensorRT"),
     "unknown execution accelerator 'TensorRT'"),
    ("torchscript", "gpu", lambda c: setattr(c.parameters["INTER_OP_THREAD_COUNT"], "string_value", "1"),
     "'INTER_OP_THREAD_COUNT' must not be written"),
    ("torchscript", "cpu", lambda c: setattr(c.parameters["ENABLE_JIT_PROFILING"], "string_value", "maybe"),
     "ENABLE_JIT_PROFILING='maybe' is refused"),
    ("openvino", "bf16", lambda c: setattr(c.parameters["HINT_BF16"], "string_value", "TRUE"),
     "HINT_BF16='TRUE' is refused"),
    ("openvino", "cpu", lambda c: setattr(c.parameters["NUM_THREADS"], "string_value", "2"),
     "'NUM_THREADS' is not read"),
    ("onnx", "cpu", lambda c: c.dynamic_batching.preferred_batch_size.append(8), "exceeds max_batch_size"),
])
def test_checker_catches_a_misspelt_or_unsupported_key(fmt, variant, mutate, expected):
    """The check itself can fail: one wrong key or value per backend."""
    text = configs.render_config(fmt, 2, variant=variant, engine_prefix=PREFIX if variant == "trt" else None)
    found = problems(_with(text, mutate))
    assert any(expected in p for p in found), found

"""Export the network to TorchScript, ONNX and OpenVINO IR, and check each file against eager PyTorch.

Each exporter takes a model (or the ONNX file, for OpenVINO) and writes files; :func:`export_formats` writes every
model key's files, then checks them with :mod:`.parity` and raises :class:`ParityError` before anything leaves the
caller's (temporary) folder.

Tensor names follow Triton's conventions in every format: input ``INPUT__0`` ``[N, 4, D, H, W]`` (t1, t1ce, t2,
flair), output ``OUTPUT__0`` ``[N, 3, D, H, W]`` (sigmoid WT, TC, ET). N, D, H, W are dynamic unless a fixed
spatial size is asked for; N stays dynamic even then, because Triton's batching (``max_batch_size`` >= 1)
needs a dynamic first dimension.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from brats_client.contract import IN_CHANNELS, INPUT_NAME, OUTPUT_NAME
from brats_client.progress import Heartbeat, elapsed

from . import flip_loop
from .catalogue import MODELS, SERVER_FLIPS
from .errors import ExportError, ParityError
from .model import UNet
from .parity import (
    DEFAULT_TOLERANCE,
    LOADERS,
    ParityRow,
    Predictor,
    check_files,
    check_spatial,
    eager_outputs,
    format_parity_table,
    load_openvino,
    openvino_host_precision,
    parity_inputs,
    release_memory,
)
from .parity_inputs import FULL_SIZE
from .portable import portable_copy
from .server_flips import ServerFlips

log = logging.getLogger(__name__)

ONNX_OPSET = 17  # <= 20: ONNX Runtime 1.19.2 (NGC 24.10) lacks the opset-21 GroupNormalization
DEFAULT_CHECK_SHAPES = ((64, 64, 64), (96, 112, 80))
TRACE_SIZE = 32  # spatial size of the tracing example (any multiple of 8 works; small is fast)


def _input_shape(spatial: Sequence[int], batch: int = 1) -> tuple[int, ...]:
    return (batch, IN_CHANNELS, *spatial)


# --- exporters -----------------------------------------------------------------------------------------------


def export_torchscript(model: torch.nn.Module, path: Path, fixed_size: int | None = None) -> Path:
    """Trace ``model`` to a TorchScript file for Triton's PyTorch backend (``INPUT__0`` -> ``OUTPUT__0``).

    Tracing records shapes symbolically here (``F.interpolate(scale_factor=2)`` included), but only
    :func:`check_parity` at several input sizes proves it; run it on the written file.
    """
    size = fixed_size or TRACE_SIZE
    example = torch.zeros(_input_shape((size, size, size)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what Triton's PyTorch backend loads
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
        torch.jit.save(traced, str(path))
    return path


def export_onnx(
    model: torch.nn.Module, path: Path, fixed_size: int | None = None, opset: int = ONNX_OPSET, portable: bool = True
) -> Path:
    """Export with the TorchScript-based exporter (``dynamo=False``) and check the file with ``onnx.checker``.

    Dynamic axes N, D, H, W on input and output (only N with ``fixed_size``); trilinear upsampling becomes a
    standard ``Resize`` (mode linear, half_pixel); GroupNorm is exported as :class:`~.portable.PortableGroupNorm`
    (short ReduceMean and ReduceL2, two passes), which both runtimes compute as exactly as PyTorch;
    ``portable=False`` keeps the exporter's own Reshape + InstanceNormalization (for benchmarks/bench_groupnorm.py
    only: it drifts).
    """
    import onnx

    if opset > 20:
        raise ExportError(f"ONNX opset {opset} is too new for ONNX Runtime 1.19 in Triton 24.10; use <= 20")
    size = fixed_size or TRACE_SIZE
    example = torch.zeros(_input_shape((size, size, size)))
    axes = {0: "N"} if fixed_size else {0: "N", 2: "D", 3: "H", 4: "W"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice and tracer warnings
        torch.onnx.export(
            portable_copy(model) if portable else model.eval(),
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            do_constant_folding=True,
        )
    _inline_shared_initializers(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{path} fails onnx.checker: {e}") from e
    return path


def _inline_shared_initializers(path: Path) -> None:
    """Point the consumers of ``Identity(initializer)`` at the initializer itself and drop those nodes.

    The legacy exporter stores equal parameters once and gives each further user an Identity of it (a fresh
    network: every GroupNorm weight is ones). ONNX Runtime's optimiser (1.19.2 and 1.32) then loses such an
    Identity's output ("Node input ... is not a graph input, initializer, or output of a previous node").
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == "Identity" and n.input[0] in initializers and n.output[0] not in outputs}
    if not alias:
        return
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in keep:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
    del graph.node[:]
    graph.node.extend(keep)
    onnx.save(model, str(path))


def export_openvino(onnx_path: Path, xml_path: Path) -> Path:
    """Convert the ONNX file to OpenVINO IR (``.xml`` + ``.bin``, FP32 weights), keeping its dynamic shapes.

    Converting the ONNX file (rather than the torch module) keeps exactly the graph and tensor names that
    the ONNX model has; the names are checked after saving.
    """
    import openvino as ov

    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov_model = ov.convert_model(str(onnx_path))
    ov.save_model(ov_model, str(xml_path), compress_to_fp16=False)
    saved = ov.Core().read_model(str(xml_path))
    in_names, out_names = saved.inputs[0].get_names(), saved.outputs[0].get_names()
    if INPUT_NAME not in in_names or OUTPUT_NAME not in out_names:
        raise ExportError(
            f"{xml_path}: tensor names {sorted(in_names)} -> {sorted(out_names)} lost {INPUT_NAME} / {OUTPUT_NAME}"
        )
    return xml_path


# --- everything together --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    files: dict[str, tuple[Path, ...]]  # model key -> files written into its folder
    parity: tuple[ParityRow, ...]
    opset: int
    openvino_host_precision: str | None  # the CPU plugin's default precision here (None without openvino)


def export_formats(
    model: UNet,
    folders: dict[str, Path],
    fixed_size: int | None = None,
    check_spatial_sizes: Sequence[Sequence[int]] = DEFAULT_CHECK_SHAPES,
    tolerance: float = DEFAULT_TOLERANCE,
    full_size: Sequence[int] | None = FULL_SIZE,
) -> ExportResult:
    """Export ``model`` into ``folders[key]`` for each model key (a format, or a format's ``_flip4`` companion,
    which gets :class:`ServerFlips` around the network), then check parity on :func:`parity_inputs`
    (``full_size=None`` skips the full-size phantom; a fixed-size export is checked at its size only; companions,
    four passes each, on the small phantom inputs).

    Raises :class:`ParityError` (with the table) when a gated row exceeds ``tolerance``; the caller discards
    the folders. OpenVINO is compared at FP32 (what the IR holds); when this host's default precision is not
    FP32 (bf16 on CPUs with AVX512_BF16 or AMX), the host default is measured as extra, ungated rows, since
    Triton 24.10's openvino backend has no parameter that forces FP32.
    """
    unknown = sorted(set(folders) - set(MODELS))
    if unknown:
        raise ExportError(f"unknown model key(s) {unknown}; choose from {list(MODELS)}")
    if fixed_size is not None:
        check_spatial((fixed_size,) * 3)
        check_spatial_sizes = [(fixed_size,) * 3]
        full_size = None
    model = model.eval()
    plain = {k: f for k, f in folders.items() if not MODELS[k].server_flips}
    flipping = {k: f for k, f in folders.items() if MODELS[k].server_flips}
    files = _export_files(model, plain, fixed_size)
    if flipping:
        files.update(_export_files(ServerFlips(model, SERVER_FLIPS).eval(), flipping, fixed_size, "with server flips"))
    host_precision = openvino_host_precision() if "openvino" in files else None

    inputs = parity_inputs(check_spatial_sizes, full_size)
    # the companions hold the same network (its full-size rows come from the plain models); four passes each, so
    # they are checked on the small phantom inputs
    small = [i for i in inputs if i.name == "phantom" and i.shape[2:] != tuple(full_size or ())] if flipping else []
    log.info("checking parity with eager PyTorch on %s",
             ", ".join(f"{i.name} {'x'.join(map(str, i.shape))}" for i in inputs))
    start = time.perf_counter()
    # eager references first, each computed once; then one runtime at a time (see check_files)
    expected = eager_outputs(model, inputs)
    flip_expected = eager_outputs(ServerFlips(model, SERVER_FLIPS), small)
    release_memory()
    log.info("eager PyTorch references computed (%.1f s)", time.perf_counter() - start)
    loaders = {key: (key, _loader(key, files)) for key in plain}
    ungated = []
    if host_precision is not None and host_precision != "f32":
        label = f"openvino[{host_precision}]"
        loaders[label] = ("openvino", functools.partial(load_openvino, files["openvino"][0], precision=None))
        ungated.append(label)
    rows = check_files(loaders, inputs, expected, tolerance, ungated=ungated)
    if flipping:
        rows += check_files({key: (key, _loader(key, files)) for key in flipping}, small, flip_expected, tolerance)
    log.info("parity check took %.1f s", time.perf_counter() - start)
    failed = [r for r in rows if r.gated and not r.passed]
    if failed:
        labels = sorted({r.label for r in failed})
        raise ParityError(
            f"{', '.join(labels)} differ from eager PyTorch by more than {tolerance:g}; "
            "nothing is written to the repository:\n"
            + format_parity_table(rows)
        )
    if ungated:
        worst = max(r.max_abs_diff for r in rows if not r.gated)
        log.info(
            "note for the official container: this CPU runs OpenVINO in %s by default (max|diff| %.2g here) and "
            "Triton 24.10's native openvino backend cannot force FP32, so probabilities it serves may differ by that "
            "much; brats-serve's local stand-in computes in FP32 (bf16 only with --model-config-name bf16)",
            host_precision, worst,
        )
    return ExportResult(files, tuple(rows), ONNX_OPSET, host_precision)


def _loader(key: str, files: dict[str, tuple[Path, ...]]) -> Callable[[], Predictor]:
    """Load ``key``'s written file with the runtime of its format (when called)."""
    return functools.partial(LOADERS[MODELS[key].format], files[key][0])


def _export_files(model: torch.nn.Module, folders: dict[str, Path], fixed_size: int | None,
                  what: str = "") -> dict[str, tuple[Path, ...]]:
    """Write ``model`` into each folder in its model key's format; the IR is converted from an ONNX file: the
    model's own, or for a flip companion (:class:`ServerFlips`) the loop over the plain network
    (:mod:`brats_export.flip_loop`), which OpenVINO runs in one pass's memory."""
    by_format = {MODELS[key].format: (key, folder) for key, folder in folders.items()}
    files: dict[str, tuple[Path, ...]] = {}
    suffix = f" {what}" if what else ""
    loop = isinstance(model, ServerFlips)
    if "onnx" in by_format:
        key, folder = by_format["onnx"]
        files[key] = (_step(f"ONNX (opset {ONNX_OPSET}){suffix}", export_onnx, model, folder / "model.onnx",
                            fixed_size),)
    if "torchscript" in by_format:
        key, folder = by_format["torchscript"]
        files[key] = (_step(f"TorchScript{suffix}", export_torchscript, model, folder / "model.pt", fixed_size),)
    if "openvino" in by_format:
        key, folder = by_format["openvino"]
        scratch = [folder / "network.onnx", folder / "loop.onnx"] if loop else [folder / "model.onnx"]
        source = _step(f"ONNX (opset {ONNX_OPSET}) for the IR{suffix}", export_onnx,
                       model.net if loop else model, scratch[0], fixed_size)
        if loop:
            source = _step("ONNX Loop over the flips", flip_loop.loop_companion, source, scratch[1], SERVER_FLIPS)
        xml = _step(f"OpenVINO IR{suffix}", export_openvino, source, folder / "model.xml")
        for path in scratch:
            path.unlink()
        files[key] = (xml, xml.with_suffix(".bin"))
    return files


def _step(what: str, fn, *args):
    log.info("exporting %s ...", what)
    start = time.perf_counter()
    try:
        with Heartbeat(elapsed(f"exporting {what}"), logger=log):
            out = fn(*args)
    except ExportError:
        raise
    except (RuntimeError, ValueError, OSError) as e:
        raise ExportError(f"exporting {what} failed: {e}") from e
    log.info("exported %s -> %s (%.1f s)", what, out, time.perf_counter() - start)
    return out


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produced (and checked) the files."""
    import onnx
    import onnxruntime
    import openvino

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.get_version(),
        "numpy": np.__version__,
    }

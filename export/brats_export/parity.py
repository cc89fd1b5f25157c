"""Load the exported files back and check them against eager PyTorch.

:func:`check_files` loads each file with the runtime that will serve it, one runtime at a time, and compares its
outputs with eager PyTorch's (:func:`eager_outputs`, computed once) on :func:`parity_inputs`: a normalised phantom
at a full BraTS crop size and at small sizes (see :mod:`.parity_inputs`), and random noise. Each row names the
model key it checked.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from brats_client.contract import INPUT_NAME, OUTPUT_NAME, spatial_problem
from brats_client.progress import Heartbeat, elapsed

from .errors import ParityError
from .parity_inputs import FULL_SIZE, ParityInput, phantom_input, random_input

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-4

Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ParityRow:
    """One comparison of an exported file with eager PyTorch."""

    key: str  # the model key whose file was checked: onnx, onnx_flip4, ...
    label: str  # the table's name: the key, or key[precision] for a run at another precision
    input: str  # what was fed: "phantom" (a normalised case, as served) or "random" (standard normal noise)
    shape: tuple[int, ...]  # input shape [N, 4, D, H, W]
    max_abs_diff: float
    tolerance: float
    gated: bool = True  # False: measured for information, never fails the export

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def as_dict(self) -> dict:
        """The row as the manifest records it (under its model, so without the key)."""
        return {
            "format": self.label,
            "input": self.input,
            "shape": list(self.shape),
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "gated": self.gated,
        }


def check_spatial(spatial: Sequence[int]) -> tuple[int, int, int]:
    """Validate a spatial size: three positive multiples of 8 (three stride-2 downsamplings)."""
    dims = tuple(int(s) for s in spatial)
    problem = spatial_problem(dims)
    if problem is not None:
        raise ValueError(problem)
    return dims  # type: ignore[return-value]


# --- loading the written files back ---------------------------------------------------------------------------


def load_torchscript(path: Path) -> Predictor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return predict


def load_onnx(path: Path) -> Predictor:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def predict(x: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    return predict


def load_openvino(xml_path: Path, precision: str | None = "f32") -> Predictor:
    """Compile the IR for CPU; ``precision=None`` keeps this host's default (bf16 on CPUs with AVX512_BF16/AMX)."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
    compiled = core.compile_model(core.read_model(str(xml_path)), "CPU", config)

    def predict(x: np.ndarray) -> np.ndarray:
        return compiled({INPUT_NAME: x})[compiled.output(OUTPUT_NAME)]

    return predict


def openvino_host_precision() -> str:
    """The CPU plugin's default inference precision on this host (``f32`` or ``bf16``)."""
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


LOADERS: dict[str, Callable[[Path], Predictor]] = {
    "onnx": load_onnx,
    "torchscript": load_torchscript,
    "openvino": load_openvino,
}


# --- parity ---------------------------------------------------------------------------------------------------


def parity_inputs(
    spatial_sizes: Iterable[Sequence[int]], full_size: Sequence[int] | None = FULL_SIZE
) -> list[ParityInput]:
    """What the check feeds: a normalised phantom at ``full_size`` (batch 1; None skips it) and at each of
    ``spatial_sizes`` (batch 1 for the first, batch 2 after: exercises dynamic N), and random noise at the first
    small size."""
    sizes = [check_spatial(s) for s in spatial_sizes]
    inputs = [phantom_input(check_spatial(full_size))] if full_size is not None else []
    inputs += [phantom_input(s, 1 if i == 0 else 2) for i, s in enumerate(sizes)]
    if sizes:
        inputs.append(random_input(sizes[0]))
    return inputs


def eager_outputs(model: torch.nn.Module, inputs: Sequence[ParityInput]) -> list[np.ndarray]:
    """Eager ``model``'s output for each input: the references of the parity check, computed once."""
    model = model.eval()
    outputs = []
    with torch.inference_mode():
        for n, item in enumerate(inputs, 1):
            what = f"eager PyTorch reference {n}/{len(inputs)}: {item.name} {'x'.join(map(str, item.shape))}"
            with Heartbeat(elapsed(what), logger=log):
                outputs.append(model(torch.from_numpy(item.array)).numpy())
    return outputs


def check_parity(
    model: torch.nn.Module,
    predictors: dict[str, Predictor],
    inputs: Sequence[ParityInput],
    tolerance: float = DEFAULT_TOLERANCE,
    ungated: Iterable[str] = (),
) -> list[ParityRow]:
    """Compare each predictor (by model key) with eager ``model`` on each input (max |diff|), input by input."""
    loaders = {key: (key, lambda predict=predict: predict) for key, predict in predictors.items()}
    return check_files(loaders, inputs, eager_outputs(model, inputs), tolerance, ungated)


def check_files(
    loaders: dict[str, tuple[str, Callable[[], Predictor]]],
    inputs: Sequence[ParityInput],
    expected: Sequence[np.ndarray],
    tolerance: float = DEFAULT_TOLERANCE,
    ungated: Iterable[str] = (),
) -> list[ParityRow]:
    """Compare each loaded predictor with the eager outputs ``expected`` (one per input); rows input by input.

    ``loaders``: label -> (model key, load); ``ungated``: labels measured for information only. One predictor at
    a time: it is loaded, fed every input, and released before the next one loads, so the memory that a runtime
    keeps after a run (ONNX Runtime's arena, OpenVINO's buffers for the largest shape, TorchScript's caches) is
    never held by two runtimes at once.
    """
    if len(expected) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(expected)} expected outputs")
    ungated = set(ungated)
    rows: dict[tuple[int, int], ParityRow] = {}
    total = len(loaders) * len(inputs)
    for p, (label, (key, load)) in enumerate(loaders.items()):
        with Heartbeat(elapsed(f"parity: loading {label}"), logger=log):
            predict = load()
        for i, (item, want) in enumerate(zip(inputs, expected, strict=True)):
            start = time.perf_counter()
            shape = "x".join(map(str, item.shape))
            what = f"parity row {p * len(inputs) + i + 1}/{total}: {label} on {item.name} {shape}"
            with Heartbeat(elapsed(what), logger=log):
                got = np.asarray(predict(item.array))
            if got.shape != want.shape:
                raise ParityError(f"{label} returned shape {got.shape} for input {item.shape}, expected {want.shape}")
            diff = _max_abs_diff(got, want)
            del got
            rows[i, p] = ParityRow(key, label, item.name, item.shape, diff, tolerance, gated=label not in ungated)
            log.info("parity %-16s %-8s %-20s max|diff| %.3g (%.1f s)", label, item.name,
                     "x".join(map(str, item.shape)), diff, time.perf_counter() - start)
        del predict
        release_memory()
    return [rows[index] for index in sorted(rows)]


def _max_abs_diff(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want|, computed in float64 one item at a time (no float64 copy of a whole batch)."""
    return max((float(np.max(np.abs(g.astype(np.float64) - w))) for g, w in zip(got, want, strict=True)),
               default=0.0)


def release_memory() -> None:
    """Collect a released runtime's cycles and hand freed heap pages back to the system (glibc)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the next runtime reuses the freed memory
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def format_parity_table(rows: Sequence[ParityRow]) -> str:
    """A fixed-width table: format (the row's label), input, input shape, max |diff|, pass."""
    lines = [f"{'format':<18} {'input':<8} {'input shape':<20} {'max|diff|':>10}  pass", "-" * 66]
    for r in rows:
        verdict = ("yes" if r.passed else "NO") if r.gated else "info"
        lines.append(f"{r.label:<18} {r.input:<8} {'x'.join(map(str, r.shape)):<20} {r.max_abs_diff:>10.3g}  "
                     f"{verdict}")
    return "\n".join(lines)

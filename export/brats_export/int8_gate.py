"""The INT8 model's accuracy gate: its labels against the f32 model's, per region, on held-out cases, computed the
way each runtime will serve it. Nothing is written unless every row reaches the minimum Dice.

Both labels come from the client's own stages (:func:`brats_client.pipeline.predict` with the default options:
tiles, the seed's four flips, labels and components), so a row measures what a user of ``brats-client segment``
would get. The f32 reference is the plain IR as brats_openvino serves it (whole crop, f32). The INT8 IR is
compiled as Triton's openvino backend compiles it (its own shapes: static for the served shape) in two runtimes:

- this environment's OpenVINO (what ``brats-serve``'s stand-in runs), in this process;
- the Triton 24.10 container's OpenVINO 2024.4, in another Python (``--container-python``; by default
  ``$BRATS_CONTAINER_PYTHON`` or this checkout's ``.venv-ngc``, which ``make setup`` creates), at the precision
  that runtime picks by default (bf16 on CPUs with AVX512_BF16 or AMX, as the container does), by replaying the
  exact requests through ``runtime_check.py --replay``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from brats_client import pipeline, postprocess
from brats_client.contract import REGIONS, output_shape
from brats_client.local import LocalTransport

from .errors import AccuracyError, ExportError
from .parity import load_openvino

log = logging.getLogger(__name__)

MIN_DICE = 0.995  # per region, against the f32 model's labels (MLPerf's 3D-UNet accepts 99.9% of f32 accuracy)
CONTAINER_ENV = "BRATS_CONTAINER_PYTHON"
RUNTIME_CHECK = Path(__file__).resolve().with_name("runtime_check.py")
CHECKOUT_NGC_PYTHON = Path(__file__).resolve().parents[2] / ".venv-ngc" / "bin" / "python"
REPLAY_TIMEOUT_S = 900.0

Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GateRow:
    case: str
    runtime: str
    precision: str
    dice: dict[str, float]
    min_dice: float
    seconds: float

    @property
    def passed(self) -> bool:
        return all(d >= self.min_dice for d in self.dice.values())

    def as_dict(self) -> dict:
        return {"case": self.case, "runtime": self.runtime, "precision": self.precision,
                "dice": {k: round(v, 5) for k, v in self.dice.items()}, "passed": self.passed,
                "seconds": round(self.seconds, 1)}


def container_python(given: Path | None) -> Path | None:
    """The Python with the container's OpenVINO: ``given``, else $BRATS_CONTAINER_PYTHON, else the checkout's
    ``.venv-ngc``; None when there is none."""
    if given is not None:
        if not Path(given).is_file():
            raise ExportError(f"--container-python {given} does not exist; give the python of an environment with "
                              "openvino==2024.4.0 and numpy<2 (make setup creates .venv-ngc)")
        return Path(given)
    env = os.environ.get(CONTAINER_ENV)
    if env:
        return container_python(Path(env))
    return CHECKOUT_NGC_PYTHON if CHECKOUT_NGC_PYTHON.is_file() else None


def case_labels(case: pipeline.PreparedCase, predict: Predictor, shape: Sequence[int] | None) -> np.ndarray:
    """The labels of ``case``'s crop from ``predict`` through the client's stages (tiles of ``shape`` when the
    model's shape is static)."""
    transport = LocalTransport(predict, max_batch_size=1, fixed_spatial=None if shape is None else tuple(shape))
    prediction = pipeline.predict(case.volume, transport, case.options, pad_value=case.record.pad_value)
    probabilities = postprocess.unpad(prediction.probabilities, case.record)
    return postprocess.labels_from_probabilities(probabilities, convention=case.options.labels)


def region_dice(labels: np.ndarray, reference: np.ndarray, convention: str) -> dict[str, float]:
    scores = postprocess.region_dice(labels, reference, convention)
    return {region: scores[region] for region in REGIONS}


class _Recorder:
    """A predictor that keeps each request and answers zeros: the requests of one case, in the client's order."""

    def __init__(self) -> None:
        self.inputs: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.inputs.append(np.array(batch, copy=True))
        return np.zeros(output_shape(batch.shape), np.float32)


class _Replayer:
    """A predictor that answers the recorded requests with the other runtime's outputs, in the same order."""

    def __init__(self, outputs: list[np.ndarray]) -> None:
        self._outputs = iter(outputs)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return next(self._outputs)


def _replay(python: Path, xml: Path, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], dict]:
    """``inputs`` through ``xml`` in the other Python (:func:`brats_export.runtime_check.replay`)."""
    with tempfile.TemporaryDirectory(prefix="brats_int8_gate_") as work:
        src, dst = Path(work) / "in.npz", Path(work) / "out.npz"
        np.savez(src, **{f"r{i:04d}": x for i, x in enumerate(inputs)})
        cmd = [str(python), str(RUNTIME_CHECK), "--replay", str(src), "--out", str(dst), "--openvino", str(xml)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=REPLAY_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise ExportError(f"the container runtime check ({python}) took more than {REPLAY_TIMEOUT_S:.0f} s") from e
        if done.returncode != 0:
            raise ExportError(f"the container runtime check failed ({' '.join(cmd)}): {done.stderr.strip()[-2000:]}")
        meta = json.loads(done.stdout.strip().splitlines()[-1])
        with np.load(dst) as arrays:
            return [arrays[f"r{i:04d}"] for i in range(len(inputs))], meta


def run_gate(
    int8_xml: Path,
    f32_xml: Path,
    cases: Sequence[pipeline.PreparedCase],
    shape: Sequence[int] | None,
    *,
    min_dice: float = MIN_DICE,
    python: Path | None = None,
) -> list[GateRow]:
    """One row per held-out case and runtime; raises :class:`AccuracyError` (with the rows so far) at the first
    row below ``min_dice``. ``python``: the container runtime's interpreter (None: that runtime is not checked)."""
    import openvino as ov

    local_runtime = f"openvino {ov.get_version().split('-')[0]} (brats-serve)"
    reference_model = load_openvino(f32_xml)
    int8_model = load_openvino(int8_xml)
    rows: list[GateRow] = []
    for case in cases:
        start = time.perf_counter()
        reference = case_labels(case, reference_model, None)
        t = time.perf_counter()
        labels = case_labels(case, int8_model, shape)
        rows.append(GateRow(case.files.case_id, local_runtime, "int8 + f32", region_dice(labels, reference,
                            case.options.labels), min_dice, time.perf_counter() - t))
        log.info("INT8 gate: %s, %s: Dice %s (%.0f s)", case.files.case_id, local_runtime,
                 _dice_text(rows[-1].dice), time.perf_counter() - start)
        _stop_if_failed(rows)
        if python is None:
            continue
        t = time.perf_counter()
        recorder = _Recorder()
        case_labels(case, recorder, shape)
        outputs, meta = _replay(python, int8_xml, recorder.inputs)
        labels = case_labels(case, _Replayer(outputs), shape)
        rows.append(GateRow(case.files.case_id, f"{meta['runtime']} (Triton 24.10 container)",
                            f"int8 + {meta['precision']}", region_dice(labels, reference, case.options.labels),
                            min_dice, time.perf_counter() - t))
        log.info("INT8 gate: %s, %s: Dice %s", case.files.case_id, rows[-1].runtime, _dice_text(rows[-1].dice))
        _stop_if_failed(rows)
    return rows


def _dice_text(dice: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in dice.items())


def format_gate_table(rows: Sequence[GateRow]) -> str:
    lines = [f"{'case':<16} {'runtime':<44} {'precision':<12} " + " ".join(f"{r:>7}" for r in REGIONS) + "  ok"]
    for row in rows:
        lines.append(f"{row.case:<16} {row.runtime:<44} {row.precision:<12} "
                     + " ".join(f"{row.dice[r]:>7.4f}" for r in REGIONS) + ("  yes" if row.passed else "  NO"))
    return "\n".join(lines)


def _stop_if_failed(rows: list[GateRow]) -> None:
    if rows and not rows[-1].passed:
        raise AccuracyError(
            f"the INT8 model's labels differ from the f32 model's: Dice below {rows[-1].min_dice} on "
            f"{rows[-1].case} ({rows[-1].runtime}); nothing is written to the repository:\n" + format_gate_table(rows),
            rows,
        )

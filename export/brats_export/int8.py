"""INT8 post-training quantization of the OpenVINO IR with NNCF (``brats-export --int8 CASES``).

Each choice was measured on held-out phantoms against the f32 model's labels (docs/performance-notes.md, "INT8"):

- only the convolutions' inputs are quantized: every other op type (the GroupNorm graph, upsampling,
  concatenation, the activations) is in NNCF's ignored scope and stays in float;
- asymmetric activations (preset ``MIXED``): after GroupNorm and LeakyReLU the values are far from symmetric;
- the overflow fix on every layer (weights in 7 bits): CPUs without VNNI sum int8 products in 16 bits, which
  saturates (an AVX2 EPYC: ET Dice 0.97 against f32 without it, 0.998 with it), and an IR exported on one CPU is
  served on others;
- a static input shape: compiled with a dynamic shape, OpenVINO's CPU plugin computes wrong results for this
  graph and raises no error (2024.4 and 2026.4: WT Dice 0.48-0.66, TC 0.07-0.16), so the IR is saved at the
  shape it is served with and its config fixes that shape (:mod:`.int8_gate` proves it on both runtimes).

The served shape is by default the largest padded crop of the calibration cases: the client pads a smaller case
up to it and tiles a larger one (docs/tiling.md). The calibration inputs are exactly the tiles the client sends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from brats_client import tiling
from brats_client.contract import IN_CHANNELS, PAD_MULTIPLE
from brats_client.pipeline import PreparedCase

from .errors import ExportError

log = logging.getLogger(__name__)

KEEP_FLOAT = ("Parameter", "Result", "Constant", "Convolution")  # op types not in the ignored scope, or no quantizer
SHAPE_AUTO = "auto"
SHAPE_DYNAMIC = "dynamic"  # refused by the gate on every runtime measured; kept to show the trap (tests)
OVERLAP = 0.25  # tiles of a case larger than the served shape (the client's default overlap)


def served_shape(cases: Sequence[PreparedCase]) -> tuple[int, int, int]:
    """The largest padded crop of ``cases`` along each axis (multiples of :data:`PAD_MULTIPLE`)."""
    if not cases:
        raise ExportError("no calibration cases to take the INT8 model's shape from")
    return tuple(max(c.volume.shape[1 + axis] for c in cases) for axis in range(3))


def case_tiles(case: PreparedCase, shape: Sequence[int] | None) -> Iterator[np.ndarray]:
    """The ``[1, 4, *shape]`` tiles the client sends for ``case`` to a model of that static shape (no flips); the
    whole padded crop when ``shape`` is None (a dynamic model)."""
    if shape is None:
        yield case.volume[None]
        return
    plan = tiling.plan_tiles(case.volume.shape[1:], tuple(shape), OVERLAP, multiple=1, exact=True)
    for index in range(len(plan)):
        yield tiling.extract_tile(case.volume, plan, index, pad_value=case.record.pad_value)[None]


def check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s < PAD_MULTIPLE or s % PAD_MULTIPLE for s in shape):
        raise ExportError(f"the INT8 shape must be three multiples of {PAD_MULTIPLE}, got {list(shape)}")
    return shape


def quantize(f32_xml: Path, calibration: Sequence[PreparedCase], shape: Sequence[int] | None, out_xml: Path) -> dict:
    """Quantize the f32 IR at ``f32_xml`` on the calibration cases' tiles and save it to ``out_xml`` (static at
    ``shape``; dynamic when ``shape`` is None). Returns what was done, for the manifest."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    nncf.set_log_level(logging.WARNING)  # NNCF logs one line per op it leaves in float
    core = ov.Core()
    model = core.read_model(str(f32_xml))
    if shape is not None:
        model.reshape([1, IN_CHANNELS, *shape])
    ignored = sorted({op.get_type_name() for op in model.get_ops()} - set(KEEP_FLOAT))
    tiles = [t for case in calibration for t in case_tiles(case, shape)]
    log.info("INT8: calibrating on %d tile(s) of %d case(s) (%s) ...", len(tiles), len(calibration),
             "dynamic shape" if shape is None else "x".join(map(str, shape)))
    quantized = nncf.quantize(
        model, nncf.Dataset(tiles), subset_size=len(tiles), preset=nncf.QuantizationPreset.MIXED,
        ignored_scope=nncf.IgnoredScope(types=ignored),
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE),
    )
    quantizers = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    convolutions = sum(op.get_type_name() == "Convolution" for op in model.get_ops())
    if quantizers == 0:
        raise ExportError(f"NNCF inserted no quantizer into {f32_xml}; nothing would run in INT8")
    out_xml = Path(out_xml)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return {
        "tool": f"nncf {nncf.__version__}",
        "quantized": f"the inputs of the convolutions ({quantizers} activation quantizers, {convolutions} "
                     "convolutions); everything else in float",
        "preset": "mixed (symmetric weights, asymmetric activations)",
        "overflow_fix": "enable (7-bit weights)",
        "calibration_cases": [c.files.case_id for c in calibration],
        "calibration_tiles": len(tiles),
        "shape": None if shape is None else list(shape),
    }


def load_cases(folder: Path, held_out: int | None) -> tuple[list[PreparedCase], list[PreparedCase]]:
    """The cases under ``folder`` (any layout the client reads), prepared as ``brats-client segment`` prepares
    them with its defaults: the first for calibration, the last ``held_out`` (default: a third, at least 1) for
    the accuracy gate. Raises InputError naming what is wrong, before anything slow."""
    from brats_client import modalities, pipeline
    from brats_client.errors import InputError

    cases, invalid = modalities.find_cases(folder)
    if invalid:
        raise InputError(f"--int8 {folder}: " + "; ".join(f"{c.name}: {c.reason}" for c in invalid)
                         + ". Fix or remove these cases")
    held = held_out or max(1, round(len(cases) / 3))
    if len(cases) - held < 1:
        raise InputError(f"--int8 {folder}: {len(cases)} case(s), {held} held out for the accuracy check and none "
                         "left to calibrate on; give at least 2 cases (4 or more is better)")
    log.info("INT8: reading %d case(s) under %s ...", len(cases), folder)
    prepared = [pipeline.prepare_case(c, pipeline.SegmentOptions()) for c in cases]
    return prepared[:-held], prepared[-held:]


def export_int8(f32_xml: Path, folder: Path, calibration: Sequence[PreparedCase], held_out: Sequence[PreparedCase],
                shape: str | Sequence[int], min_dice: float, python: Path | None) -> tuple[dict, list]:
    """Quantize into ``folder/model.xml`` and run the accuracy gate (:mod:`.int8_gate`); returns the manifest's
    ``int8`` entry and the gate's rows. Raises AccuracyError when a held-out case's labels differ too much (the
    caller writes nothing then)."""
    import time

    from . import int8_gate

    start = time.perf_counter()
    static = None if shape == SHAPE_DYNAMIC else check_shape(served_shape(calibration) if shape == SHAPE_AUTO
                                                              else shape)
    xml = Path(folder) / "model.xml"
    info = quantize(f32_xml, calibration, static, xml)
    log.info("INT8: quantized in %.0f s; checking %d held-out case(s) against the f32 model ...",
             time.perf_counter() - start, len(held_out))
    if python is None:
        log.warning("INT8: no Python with the container's OpenVINO 2024.4 (--container-python, $%s or .venv-ngc): "
                    "the model is checked in this OpenVINO only", int8_gate.CONTAINER_ENV)
    rows = int8_gate.run_gate(xml, f32_xml, held_out, static, min_dice=min_dice, python=python)
    info.update({
        "held_out_cases": [c.files.case_id for c in held_out],
        "min_dice": min_dice,
        "gate": [row.as_dict() for row in rows],
        "container_runtime_checked": python is not None,
        "seconds": round(time.perf_counter() - start, 1),
    })
    return info, rows

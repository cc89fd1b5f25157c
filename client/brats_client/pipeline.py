"""Compose the stages: load -> preprocess -> tiles x flips -> Triton -> reassemble -> labels -> write.

The ladder of one case, beneath :func:`brats_client.batch.segment_cases` (what ``brats-client segment`` runs for one
case and many): :func:`prepare_case` (load, check and preprocess, before any request) -> :func:`segment_prepared`
(:func:`infer_case` then :func:`finish_case`) -> :func:`segment_case` (the outputs checked, then both).
:func:`predict` is the one sliding window with test-time flips, over any :class:`Transport`: Triton's, or a
predictor in this process (:mod:`brats_client.local`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import conventions, input_checks, io, modalities, postprocess, preprocess, server_flips, tiling, tta
from .contract import OUT_CHANNELS, PAD_MULTIPLE
from .errors import InputError, UsageError
from .modalities import CaseFiles
from .model_info import ModelInfo
from .protocol import Transport
from .server_options import ServerOptions

log = logging.getLogger(__name__)

TTA_CHOICES = tta.TTA_CHOICES
LABELS_AUTO = "auto"  # the convention that goes with the input (modalities.input_convention)
LABEL_CHOICES = (LABELS_AUTO, *conventions.NAMES)
BLEND_CHOICES = tiling.BLEND_CHOICES


@dataclass(frozen=True)
class SegmentOptions:
    """How to cut, augment and label: the defaults of ``brats-client segment`` (its options are built from these).
    ``tile=None`` sends the whole padded crop as one tile."""

    # Tiles smaller than the crop change the labels (GroupNorm; docs/tiling.md), so the default sends the whole
    # crop of any BraTS-size case (<= 192 per axis) and tiles only larger volumes.
    tile: int | None = 192
    overlap: float = 0.25
    blend: str = "gaussian"
    tta: str = "flip4"
    # output label convention; auto: the input's (BraTS 2023 names -> brats2023, MSD / dataset.json -> theirs,
    # else the seed's brats2019), resolved by prepare_case
    labels: str = LABELS_AUTO
    keep_last_slice: bool = False  # True: keep the last nonzero slice (the seed drops it)
    # One flip per request: while the server computes one, the next is already on its way. Larger values batch
    # a tile's flips into one request (up to the model's max_batch_size), which helps only a GPU.
    flips_per_request: int = 1
    # auto: when the model's config names a companion that applies these flips in its graph, send to it
    # (one request per tile); off: always flip here
    server_flips: str = "auto"
    # True: segment a case whose background is not 0 or that does not look skull-stripped, with a warning
    allow_unprepared: bool = False
    # refuse a modality with more voxels than this (read from the header, before the data)
    max_voxels: int = io.MAX_VOXELS

    def __post_init__(self) -> None:
        if self.tile is not None and (self.tile < PAD_MULTIPLE or self.tile % PAD_MULTIPLE):
            raise UsageError(f"tile (--tile) must be a multiple of {PAD_MULTIPLE} (>= {PAD_MULTIPLE}) or 'full'; "
                             f"got {self.tile}")
        if self.max_voxels < 1:
            raise UsageError(f"max_voxels (--max-voxels) must be >= 1, got {self.max_voxels}")
        if self.flips_per_request < 1:
            raise UsageError(f"flips_per_request must be >= 1, got {self.flips_per_request}")
        if not 0.0 <= self.overlap < 1.0:
            raise UsageError(f"overlap must be in [0, 1), got {self.overlap}")
        for name, value, choices in (
            ("tta", self.tta, TTA_CHOICES),
            ("labels", self.labels, LABEL_CHOICES),
            ("blend", self.blend, BLEND_CHOICES),
            ("server_flips", self.server_flips, server_flips.MODES),
        ):
            if value not in choices:
                raise UsageError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def options_to_parameters(options: SegmentOptions) -> dict[str, Any]:
    """Every option as a request parameter of the served pipeline (``tile`` None as ``"full"``): the one list,
    read back by :func:`options_from_parameters`."""
    return {f.name: "full" if f.name == "tile" and options.tile is None else getattr(options, f.name)
            for f in fields(SegmentOptions)}


def options_from_parameters(parameters: dict[str, Any], max_voxels: int = io.MAX_VOXELS) -> SegmentOptions:
    """SegmentOptions from request parameters named as its fields (strings or JSON values), each converted to its
    default's type; the rest keep the command's defaults. ``max_voxels`` may only lower the server's limit.
    UsageError naming the parameter for an unknown one or a bad value."""
    defaults = SegmentOptions()
    names = [f.name for f in fields(SegmentOptions)]
    unknown = sorted(set(parameters) - set(names))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(names)}")
    given = {name: _parameter(name, value, getattr(defaults, name)) for name, value in parameters.items()}
    if given.get("max_voxels", 0) > max_voxels:
        raise UsageError(f"max_voxels may only lower this server's limit of {max_voxels} voxels per modality, "
                         f"got {given['max_voxels']}")
    return replace(defaults, **given)


def _parameter(name: str, value: Any, default: Any) -> Any:
    if name == "tile" and str(value) == "full":
        return None
    kind = type(default)
    if kind is bool:
        text = str(value).lower()
        if text not in ("true", "false", "1", "0"):
            raise UsageError(f"request parameter {name} must be true or false, got {value!r}")
        return text in ("true", "1")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"request parameter {name} must be a {kind.__name__}, got {value!r}") from None


@dataclass
class Timer:
    """Wall time per stage, in seconds."""

    stages_s: dict[str, float] = field(default_factory=dict)

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.stages_s[self.name] = self.timer.stages_s.get(self.name, 0.0) + time.perf_counter() - self.t0


@dataclass
class Prediction:
    """Probabilities over the padded crop and what it took to compute them."""

    probabilities: np.ndarray  # [3, *padded_shape]
    tiles: int
    requests: int
    voxels_computed: int


def predict(
    volume: np.ndarray,
    transport: Transport,
    options: SegmentOptions,
    *,
    pad_value: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Prediction:
    """Sliding window over ``volume [4, *padded]`` with test-time flips, ``options.flips_per_request`` a batch."""
    plan, chunks = _requests(volume.shape[1:], transport.info, options)
    flips = [axes for chunk in chunks for axes in chunk]
    per_request = len(chunks[0])
    passes = len(tta.flips(options.tta))

    def batches() -> Iterator[tuple[tuple[int, int], np.ndarray]]:
        for index in range(len(plan)):
            patch = tiling.extract_tile(volume, plan, index, pad_value=pad_value)
            for c, axes_list in enumerate(chunks):
                yield (index, c), np.stack([tta.apply(patch, axes) for axes in axes_list])

    accumulator = tiling.Accumulator(plan.shape, OUT_CHANNELS, plan.tile_shape, options.blend)
    means: dict[int, tta.Mean] = {}
    requests = finished = 0
    # closing: an exception here (or in progress) ends the stream at once, its requests in flight cancelled
    with contextlib.closing(transport.infer_stream(batches())) as results:
        for (index, c), output in results:
            requests += 1
            mean = means.setdefault(index, tta.Mean(len(flips)))
            for j, (axes, out) in enumerate(zip(chunks[c], output, strict=True)):
                mean.add(c * per_request + j, tta.undo(out, axes))
            if not mean.done:
                continue
            accumulator.add(plan.starts[index], means.pop(index).result())
            finished += 1
            if progress is not None:
                progress(finished, len(plan))
    return Prediction(accumulator.result(), len(plan), requests, plan.voxels_computed * passes)


def _requests(
    spatial: tuple[int, ...], info: ModelInfo, options: SegmentOptions
) -> tuple[tiling.TilePlan, list[list[tuple[int, ...]]]]:
    """The tiles of a padded crop of ``spatial`` voxels on the model ``info``, and the flips of each request of a
    tile (one ``()`` when the model flips on the server)."""
    if info.fixed_spatial is not None:  # a static-shape export: tiles of exactly its shape (multiples of 8)
        plan = tiling.plan_tiles(spatial, info.fixed_spatial, options.overlap, multiple=1, exact=True)
    else:
        plan = tiling.plan_tiles(spatial, options.tile, options.overlap)
    flips = [()] if server_flips.check_tta(info, options.tta) else tta.flips(options.tta)
    per_request = max(1, min(len(flips), options.flips_per_request, info.max_batch_size or 1))
    return plan, [flips[i : i + per_request] for i in range(0, len(flips), per_request)]


@dataclass(frozen=True)
class RequestCount:
    """What :func:`infer_case` sends for a case: its tiles, requests and batch items, and each item's voxels."""

    tiles: int
    requests: int
    items: int
    item_voxels: int


def count_requests(prepared: PreparedCase, info: ModelInfo) -> RequestCount:
    """What :func:`infer_case` sends for ``prepared`` to the model ``info``."""
    plan, chunks = _requests(prepared.volume.shape[1:], info, prepared.options)
    tiles = len(plan)
    return RequestCount(tiles, tiles * len(chunks), tiles * sum(map(len, chunks)), int(np.prod(plan.tile_shape)))


@dataclass(frozen=True)
class CaseOutputs:
    """Where one case's results go."""

    segmentation: Path
    probabilities: Path | None = None
    report: Path | None = None
    overwrite: bool = False


def check_outputs(outputs: CaseOutputs) -> None:
    for path in (outputs.segmentation, outputs.probabilities, outputs.report):
        if path is not None:
            io.check_writable(path, overwrite=outputs.overwrite)


@dataclass
class PreparedCase:
    """A case loaded, checked and preprocessed with its options: everything that can fail on the input, done
    before any request."""

    files: CaseFiles
    options: SegmentOptions
    case: io.LoadedCase
    volume: np.ndarray  # [4, *record.padded_shape], normalised
    record: preprocess.PreprocessRecord
    time_s: dict[str, float]
    labels_from: str = "--labels"  # why options.labels is what it is
    warnings: tuple[str, ...] = ()  # input problems accepted with options.allow_unprepared


def prepare_case(
    files: CaseFiles, options: SegmentOptions = SegmentOptions()
) -> PreparedCase:
    """Load and check the four modalities (:func:`brats_client.io.load_case`), refuse an all-zero case and one
    that breaks the seed's input assumptions (:mod:`brats_client.input_checks`, unless
    ``options.allow_unprepared``), warn when it is not on the BraTS grid (:func:`brats_client.io.grid_warning`),
    resolve ``labels="auto"`` and preprocess as ``options`` say. Raises InputError naming the file; sends nothing
    to a server. The later stages use these options."""
    timer = Timer()
    labels_from = f"labels={options.labels}"
    if options.labels == LABELS_AUTO:
        labels, labels_from = modalities.input_convention(files)
        options = replace(options, labels=labels)
    log.info("%s: %s", files.case_id, files.describe())
    log.info("%s: %s labels (%s)", files.case_id, conventions.get(options.labels).describe(), labels_from)
    with timer.stage("load"):
        case = io.load_case(files, max_voxels=options.max_voxels)
    if case.is_empty:
        names = ", ".join(sorted({str(p) for p in files.paths.values()}))
        raise InputError(f"case {files.case_id}: every voxel is 0 in all four modalities ({names}); nothing to segment")
    problems = input_checks.problems(case.volume, dict(files.paths), case.voxel_volume_mm3)
    if problems and not options.allow_unprepared:
        raise InputError(f"case {files.case_id}: {'; '.join(problems)}. {input_checks.HOW_TO_PREPARE}")
    for problem in problems:
        log.warning("case %s: segmented anyway (--allow-unprepared-input): %s", files.case_id, problem)
    warning = io.grid_warning(case.reference_path, case.shape, case.header.get_zooms()[:3])
    if warning is not None:
        log.warning("case %s: %s", files.case_id, warning)
    with timer.stage("preprocess"):
        volume, record = preprocess.preprocess(case.volume, keep_last_slice=options.keep_last_slice)
    return PreparedCase(files, options, case, volume, record, dict(timer.stages_s), labels_from, tuple(problems))


@dataclass
class InferredCase:
    """A case's probabilities over its padded crop with what the report and the writer need; the input arrays are
    not kept (a batch holds several cases at once)."""

    files: CaseFiles
    record: preprocess.PreprocessRecord
    affine: np.ndarray
    header: Any
    shape: tuple[int, int, int]
    voxel_volume_mm3: float
    sha256: dict[str, str]
    prediction: Prediction
    options: SegmentOptions
    server: dict[str, Any]
    server_compute_s: float | None
    time_s: dict[str, float]
    labels_from: str = ""
    warnings: tuple[str, ...] = ()


def infer_case(
    prepared: PreparedCase, transport: Transport, *, progress: Callable[[int, int], None] | None = None
) -> InferredCase:
    """The server's part of one case: sliding window and flips over the prepared volume."""
    timer = Timer(dict(prepared.time_s))
    record, case, options = prepared.record, prepared.case, prepared.options
    before = transport.statistics()
    with timer.stage("inference"):
        prediction = predict(prepared.volume, transport, options, pad_value=record.pad_value, progress=progress)
    after = transport.statistics()
    info = transport.info
    server = {
        **transport.describe(),
        "model": info.name,
        "version": info.version,
        "platform": info.platform,
        "server_flips": server_flips.applied_flips(info),
        "precision": info.precision,
    }
    return InferredCase(
        prepared.files, record, case.affine, case.header, case.shape, case.voxel_volume_mm3, case.sha256,
        prediction, options, server, _compute_s(before, after), dict(timer.stages_s), prepared.labels_from,
        prepared.warnings,
    )


def finish_case(inferred: InferredCase, outputs: CaseOutputs) -> dict[str, Any]:
    """The client's part after the server: labels, then the outputs and the report written atomically."""
    timer = Timer(dict(inferred.time_s))
    files, record, options, prediction = inferred.files, inferred.record, inferred.options, inferred.prediction
    with timer.stage("postprocess"):
        probabilities = postprocess.unpad(prediction.probabilities, record)
        labels_crop = postprocess.labels_from_probabilities(probabilities, convention=options.labels)
        labels = postprocess.paste(labels_crop, record)
    voxel_mm3 = inferred.voxel_volume_mm3
    crop_voxels = int(np.prod(record.crop_shape))
    report = {
        "case": files.case_id,
        "inputs": files.sources(),
        "input_sha256": inferred.sha256,
        "naming": files.naming,
        "shape": list(inferred.shape),
        "voxel_volume_mm3": voxel_mm3,
        "preprocess": record.to_dict(),
        "options": asdict(options),
        "labels": {"convention": options.labels, "from": inferred.labels_from},
        "warnings": list(inferred.warnings),
        "server": inferred.server,
        "tiles": prediction.tiles,
        "requests": prediction.requests,
        "voxels_computed": prediction.voxels_computed,
        "crop_voxels": crop_voxels,
        "tiling_waste": prediction.voxels_computed / len(tta.flips(options.tta)) / crop_voxels,
        "region_volumes_ml": postprocess.region_volumes_ml(labels, voxel_mm3, options.labels),
        "server_compute_s": inferred.server_compute_s,
        "outputs": {k: str(v) for k, v in asdict(outputs).items() if isinstance(v, Path)},
    }
    affine, header = inferred.affine, inferred.header
    with timer.stage("write"):
        io.save_nifti_atomic(labels, affine, header, outputs.segmentation, overwrite=outputs.overwrite,
                             descrip=conventions.header_mark(options.labels))
        if outputs.probabilities is not None:
            full = np.moveaxis(postprocess.paste(probabilities, record), 0, -1)
            io.save_nifti_atomic(full, affine, header, outputs.probabilities, overwrite=outputs.overwrite)
    report["time_s"] = {k: round(v, 4) for k, v in timer.stages_s.items()}
    report["time_s"]["total"] = round(sum(timer.stages_s.values()), 4)
    if outputs.report is not None:
        io.write_json_atomic(report, outputs.report, overwrite=outputs.overwrite)
    return report


def segment_prepared(
    prepared: PreparedCase,
    outputs: CaseOutputs,
    transport: Transport,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Segment a prepared case (:func:`prepare_case`) and write its outputs atomically; returns the report.
    Callers check the outputs (:func:`check_outputs`) and prepare before they connect to a server; a batch
    overlaps the stages :func:`prepare_case`, :func:`infer_case` and :func:`finish_case` (:mod:`.batch`)."""
    return finish_case(infer_case(prepared, transport, progress=progress), outputs)


def segment_case(
    files: CaseFiles,
    outputs: CaseOutputs,
    transport: Transport,
    options: SegmentOptions = SegmentOptions(),
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Check the outputs, prepare, segment and write one case; returns the report."""
    check_outputs(outputs)
    return segment_prepared(prepare_case(files, options), outputs, transport, progress=progress)


def _compute_s(before: dict[str, int] | None, after: dict[str, int] | None) -> float | None:
    if before is None or after is None:
        return None
    return (after["compute_infer_ns"] - before["compute_infer_ns"]) / 1e9


def open_transport(server: ServerOptions, options: SegmentOptions | None = None) -> Transport:
    """A checked transport to ``server.model``, or to its server-side-flip companion (:mod:`.server_flips`) when
    ``options`` ask for the flips it applies and allow it."""
    from .transport import TritonTransport  # here: the rest of the pipeline runs without tritonclient (served.py)

    transport: Transport = TritonTransport(server)
    try:
        transport.check_model()
        if options is not None:
            transport = server_flips.open_for(transport, options.tta, options.server_flips)
    except BaseException:
        transport.close()
        raise
    return transport

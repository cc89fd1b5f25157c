"""End-to-end benchmark, all in one run: the seed pipeline, each backend in-process, each backend through Triton.

On a full-size BraTS-grid phantom (240x240x155, seed 9003, held out from training) and one checkpoint:

- ``seed``: the seed's pipeline in eager PyTorch (``brats_export.reference.reference_segment``: whole crop, flip4);
- ``in-process``: the client's own stages (preprocess, ``pipeline.predict`` with the default options, postprocess)
  with each backend loaded in this process (``benchmarks/inprocess.py``), no Triton, the same tiles;
- ``triton``: ``pipeline.segment_case`` (what ``brats-client segment`` runs) against a ``tritonserver`` started here
  on free loopback ports, serving the repository that ``brats-export`` writes into a temporary folder: whole crop,
  the default tiling (run only where its plan differs from the whole crop), and 128^3 tiles with overlap 0.5 for the
  fastest backend; TTA none and flip4, the flips in the client (the default on this host, ``--server-flips auto``)
  and in the model's ``_flip4`` companion (``--server-flips on``); shared memory auto (the CLI default: on for this
  loopback server) and off (as for a server on another host) for the fastest backend.

Per row: wall time (preprocess + inference + postprocess, the span the seed row covers), ratio to the seed row, tiles,
tiling waste (voxels computed / crop voxels), achieved GFLOP/s over the inference stage and its fraction of the
matmul peak measured in the same run, the inference stage over the compute time (server statistics for Triton), and
Dice of the labels against the seed row's. Prints the table and writes Markdown (``--out``):

    .venv/bin/python benchmarks/bench_end_to_end.py                 # full run, writes docs/benchmarks.md
    .venv/bin/python benchmarks/bench_end_to_end.py --quick         # 2-3 minute smoke run (small case, OpenVINO)
    .venv/bin/python benchmarks/bench_end_to_end.py --backends openvino,onnx --no-triton
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from brats_client import io, pipeline, postprocess, preprocess, tiling, tta  # noqa: E402
from brats_client.atomic import write_text_atomic  # noqa: E402
from brats_client.contract import INPUT_NAME  # noqa: E402
from brats_client.local import LocalTransport  # noqa: E402

log = logging.getLogger("bench_end_to_end")

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("torch", "torchscript", "onnx", "openvino", "openvino-bf16")
SERVED = {  # backend -> (Triton model, export format, --model-config-name)
    "torchscript": ("brats_torchscript", "torchscript", None),
    "onnx": ("brats_onnx", "onnx", None),
    "openvino": ("brats_openvino", "openvino", None),
    "openvino-bf16": ("brats_openvino", "openvino", "bf16"),  # configs/bf16.pbtxt: HINT_BF16
}
BF16 = ("openvino-bf16",)
DEFAULT_MODEL = pipeline.ServerOptions().model  # what `brats-client segment` asks for without --model
DEFAULT = pipeline.SegmentOptions()  # and its other defaults
DEFAULT_FLIPS = "flip4/client"  # what --server-flips auto does with flip4 on this (loopback) server
THREADS = os.cpu_count() or 1  # every runtime uses all of them
GFLOP_PER_128 = 300.8  # the network, one 128^3 pass (checked against a FLOP count in every run)
TARGETS = {"client_vs_seed": 0.40, "triton_vs_inprocess": 1.10, "waste": 1.35, "peak_fraction": 0.60,
           "bf16_vs_seed": 0.12, "bf16_dice": 0.999}


# --- measurements -------------------------------------------------------------------------------------------------


class Timed:
    """Wrap a predictor (numpy or torch) and add up the seconds spent inside it."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds = fn, 0.0

    def __call__(self, x):
        t0 = time.perf_counter()
        out = self.fn(x)
        self.seconds += time.perf_counter() - t0
        return out


class CpuMeter:
    """CPU seconds used on this machine by other processes than this one and its descendants (the Triton server
    and its backend stubs included), from /proc: how busy the shared machine was while a row ran."""

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK")
        self.start = self._sample()

    @staticmethod
    def _busy_total() -> int:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        return user + nice + system + irq + softirq + steal  # steal: time the hypervisor gave to other guests

    def _ours(self) -> int:
        me = os.getpid()
        procs: dict[int, tuple[int, int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            ppid, utime, stime, cutime, cstime = (int(fields[i]) for i in (1, 11, 12, 13, 14))
            procs[int(entry)] = (ppid, utime + stime + (cutime + cstime if int(entry) == me else 0))
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        total, stack = 0, [me]
        while stack:
            pid = stack.pop()
            total += procs.get(pid, (0, 0))[1]
            stack.extend(children.get(pid, []))
        return total

    def _sample(self) -> tuple[float, int, int]:
        return time.perf_counter(), self._busy_total(), self._ours()

    def restart(self) -> None:
        self.start = self._sample()

    def others(self) -> float:
        """Share of the machine's CPUs busy with other work since ``restart`` (0 = quiet, 1 = all CPUs)."""
        t1, busy1, ours1 = self._sample()
        t0, busy0, ours0 = self.start
        other_s = max(0, (busy1 - busy0) - (ours1 - ours0)) / self.hz
        return other_s / max(1e-9, (t1 - t0) * (os.cpu_count() or 1))


def has_bf16() -> bool:
    """The CPU has bf16 instructions (AVX512_BF16 or AMX); without them bf16 matmuls are emulated, many times
    slower (torch's 4096^3 took minutes on an AVX2 EPYC) and OpenVINO ignores the bf16 hint."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def gemm_peaks(n: int, repeats: int, threads: int) -> dict[str, float]:
    """Best GFLOP/s of an n x n x n matmul with numpy (OpenBLAS), torch (MKL) and OpenVINO (oneDNN), f32, and bf16
    where the CPU has bf16 instructions."""
    import openvino as ov
    import torch
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flop = 2.0 * n**3

    def best(fn) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return flop / min(times) / 1e9

    out = {"numpy f32": best(lambda: a @ b)}
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out["torch f32"] = best(lambda: ta @ tb)
    bf16 = has_bf16()
    if bf16:
        ha, hb = ta.bfloat16(), tb.bfloat16()
        out["torch bf16"] = best(lambda: ha @ hb)
    p1, p2 = ops.parameter([n, n], np.float32), ops.parameter([n, n], np.float32)
    model = ov.Model([ops.matmul(p1, p2, False, False)], [p1, p2])
    core = ov.Core()
    for precision in ("f32", "bf16") if bf16 else ("f32",):
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                     "INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        out[f"openvino {precision}"] = best(lambda r=request: r.infer([a, b]))
    return out


def gflop_per_128(model) -> float:
    """Convolution FLOPs of one 128^3 pass (2 per multiply-add), counted at 32^3 and scaled (exact: linear)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 4, 32, 32, 32))
    return counter.get_total_flops() * 64 / 1e9


def openvino_profile(xml: Path, volume: np.ndarray, threads: int, precision: str = "f32") -> dict[str, float]:
    """Seconds per executed layer type of one whole-crop OpenVINO pass (PERF_COUNT; the second of two runs)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    for _ in range(2):
        request.infer({INPUT_NAME: volume[None]})
    seconds: dict[str, float] = {}
    for info in request.profiling_info:
        if str(info.status).endswith("EXECUTED"):
            seconds[info.node_type] = seconds.get(info.node_type, 0.0) + info.real_time.total_seconds()
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


def checkpoint_parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    """The options of the small side-by-side benchmarks: ``--checkpoint`` (the demo's) and ``--repeats``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "demo" / "brats_demo_checkpoint.pth")
    p.add_argument("--repeats", type=int, default=repeats, help="interleaved timed rounds (default %(default)s)")
    return p


def machine() -> dict[str, str]:
    info: dict[str, str] = {}
    cpu: dict[str, str] = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            cpu.setdefault(key.strip(), value.strip())
    flags = set(cpu.get("flags", "").split())
    info["cpu"] = f"{cpu.get('model name', platform.processor())} (vendor {cpu.get('vendor_id', '?')}, family " \
                  f"{cpu.get('cpu family', '?')}, model {cpu.get('model', '?')})"
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        lscpu = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}
    except OSError:
        lscpu = {}
    info["cores"] = (f"{os.cpu_count()} logical CPUs; {lscpu.get('Core(s) per socket', '?')} core(s) per socket, "
                     f"{lscpu.get('Thread(s) per core', '?')} thread(s) per core, "
                     f"{lscpu.get('Hypervisor vendor', 'no')} hypervisor; L2 {lscpu.get('L2 cache', '?')}, "
                     f"L3 {lscpu.get('L3 cache', '?')}")
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    info["flags"] = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted)
    with open("/proc/meminfo") as f:
        mem = {k: v.strip() for k, _, v in (line.partition(":") for line in f)}
    info["memory"] = f"{int(mem['MemTotal'].split()[0]) / 2**20:.1f} GiB"
    info["os"] = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return info


def versions() -> dict[str, str]:
    from brats_export import exporters

    out = exporters.library_versions()
    from importlib.metadata import PackageNotFoundError, version

    for name in ("tritonclient", "nvidia-pytriton"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["tritonserver"] = "2.51 (from nvidia-pytriton; Python stand-in backends)"
    return out


# --- the case -----------------------------------------------------------------------------------------------------


def write_phantom(seed: int, work: Path, quick_box: int | None) -> tuple[pipeline.CaseFiles, io.LoadedCase]:
    """Write the phantom as a BraTS 2019 case folder and load it back the way the client does (int16 on disk)."""
    from brats_client.modalities import find_case_files
    from brats_client.preview import tumour_centre
    from brats_demo.phantom import write_case
    from brats_export.phantom import make_phantom

    ph = make_phantom(seed)
    if quick_box:  # keep only a box around the tumour: a small case for the smoke run
        centre = tumour_centre(ph.seg)
        lo = [int(np.clip(c - quick_box // 2, 0, s - quick_box)) for c, s in zip(centre, ph.seg.shape, strict=True)]
        box = tuple(slice(a, a + quick_box) for a in lo)
        for name, image in ph.images.items():
            kept = np.zeros_like(image)
            kept[box] = image[box]
            ph.images[name] = kept
    case_dir = write_case(ph, work / "cases", f"Phantom_{seed}")
    files = find_case_files(case_dir)
    return files, io.load_case(files)


@dataclass
class Case:
    """The phantom as the client loads it, and the tile plans of the rows."""

    files: pipeline.CaseFiles
    raw: np.ndarray  # the loaded 4-channel volume
    volume: np.ndarray  # preprocessed: cropped, normalised, padded
    record: preprocess.PreprocessRecord
    plan_default: tiling.TilePlan  # DEFAULT.tile, DEFAULT.overlap
    plan_tiled: tiling.TilePlan  # --tiled
    default_is_full: bool  # the default plan is the whole-crop plan

    @property
    def crop_voxels(self) -> int:
        return int(np.prod(self.record.crop_shape))

    @property
    def padded_voxels(self) -> int:
        return int(np.prod(self.record.padded_shape))


def prepare_case(args: argparse.Namespace, work: Path) -> Case:
    files, loaded = write_phantom(args.seed, work, 80 if args.quick else None)
    volume, record = preprocess.preprocess(loaded.volume)
    plan_default = tiling.plan_tiles(volume.shape[1:], DEFAULT.tile, DEFAULT.overlap)
    plan_full = tiling.plan_tiles(volume.shape[1:], None, DEFAULT.overlap)
    default_is_full = plan_default.tile_shape == plan_full.tile_shape and plan_default.starts == plan_full.starts
    edge, overlap = args.tiled_options
    case = Case(files, loaded.volume, volume, record, plan_default, tiling.plan_tiles(volume.shape[1:], edge, overlap),
                default_is_full)
    log.info("case Phantom_%d: crop %s, padded %s; default plan %d tile(s) of %s (%s the whole crop); "
             "%d/%g plan %d tiles of %s, waste %.2f", args.seed, record.crop_shape, record.padded_shape,
             len(plan_default), plan_default.tile_shape, "same plan as" if default_is_full else "differs from",
             edge, overlap, len(case.plan_tiled), case.plan_tiled.tile_shape,
             case.plan_tiled.voxels_computed / case.crop_voxels)
    return case


# --- rows ---------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    path: str  # seed | in-process | triton
    backend: str
    tile: str
    tta: str
    shared_memory: str = ""  # on / off: what the transport used
    shm_mode: str = ""  # the client's --shared-memory (auto is the default)
    tiles: int = 1
    requests: int = 1
    voxels_computed: int = 0
    wall_s: float = 0.0  # preprocess + inference + postprocess
    inference_s: float = 0.0
    compute_s: float | None = None  # inside the predictor (in-process) or the server's compute_infer
    e2e_s: float | None = None  # segment_case total, NIfTI load and write included (Triton rows)
    pre_post_s: float = 0.0  # preprocess + postprocess (Triton rows)
    dice: dict[str, float] = field(default_factory=dict)
    note: str = ""
    default_tiling: bool = False  # the plan of the default options (DEFAULT.tile, DEFAULT.overlap)
    flips_mode: str = ""  # the client's --server-flips (Triton rows; auto is the default)
    others: float | None = None  # share of the CPUs other processes used meanwhile (CpuMeter)

    @property
    def precision(self) -> str:
        return "bf16" if self.backend in BF16 else "f32"

    @property
    def passes(self) -> int:
        """Test-time passes per tile (``flip4/client``: flip4, flipped by the client)."""
        return len(tta.flips(self.tta.split("/")[0]))


def run_seed(raw: np.ndarray, model, padded_voxels: int) -> tuple[Row, np.ndarray]:
    from brats_export.reference import reference_segment

    timed = Timed(model)
    t0 = time.perf_counter()
    labels, _ = reference_segment(raw, timed, tta="flip4")
    wall = time.perf_counter() - t0
    row = Row("seed", "torch", "full", "flip4", wall_s=wall, inference_s=timed.seconds, compute_s=timed.seconds,
              voxels_computed=padded_voxels * 4, note="reference_segment; inference = time inside the model")
    return row, labels


def run_inprocess(raw: np.ndarray, backend: str, predictor, max_batch: int, options: pipeline.SegmentOptions,
                  reference: np.ndarray) -> Row:
    timed = Timed(predictor)
    transport = LocalTransport(timed, backend, max_batch_size=max_batch)
    t0 = time.perf_counter()
    volume, record = preprocess.preprocess(raw, keep_last_slice=options.keep_last_slice)
    t1 = time.perf_counter()
    pred = pipeline.predict(volume, transport, options, pad_value=record.pad_value)
    t2 = time.perf_counter()
    labels = postprocess.paste(
        postprocess.labels_from_probabilities(postprocess.unpad(pred.probabilities, record), convention="brats2019"),
        record)
    t3 = time.perf_counter()
    row = Row("in-process", backend, _tile_label(options), options.tta, tiles=pred.tiles, requests=pred.requests,
              voxels_computed=pred.voxels_computed, wall_s=t3 - t0, inference_s=t2 - t1, compute_s=timed.seconds,
              note=f"max batch {max_batch}")
    row.dice = postprocess.region_dice(labels, reference)
    return row


def run_triton(files, transport, backend: str, options: pipeline.SegmentOptions, work: Path,
               reference: np.ndarray, note: str = "") -> Row:
    import nibabel as nib

    label = _tile_label(options).replace("/", "_")
    seg = work / "out" / (f"{backend}_{label}_{options.tta}_{options.server_flips}_shm_"
                          f"{transport.options.shared_memory}.nii.gz")
    seg.parent.mkdir(parents=True, exist_ok=True)
    report = pipeline.segment_case(files, pipeline.CaseOutputs(seg, overwrite=True), transport, options)
    t = report["time_s"]
    tta = options.tta if options.tta == "none" or report["server"]["server_flips"] else f"{options.tta}/client"
    row = Row("triton", backend, _tile_label(options), tta,
              shared_memory="on" if report["server"]["shared_memory"] else "off",
              shm_mode=transport.options.shared_memory, tiles=report["tiles"],
              requests=report["requests"],
              voxels_computed=report["voxels_computed"],
              wall_s=t["preprocess"] + t["inference"] + t["postprocess"], inference_s=t["inference"],
              compute_s=report["server_compute_s"], e2e_s=t["total"], pre_post_s=t["preprocess"] + t["postprocess"],
              note=note)
    row.dice = postprocess.region_dice(np.asanyarray(nib.load(str(seg)).dataobj), reference)
    return row


def _tile_label(options: pipeline.SegmentOptions) -> str:
    return "full" if options.tile is None else f"{options.tile}/{options.overlap:g}"


# --- set-up -------------------------------------------------------------------------------------------------------


def export_repository(checkpoint: Path, repository: Path, formats: list[str]) -> None:
    from brats_export import cli as export_cli

    code = export_cli.main(["--checkpoint", str(checkpoint), "--repository", str(repository),
                            "--formats", ",".join(formats), "--check-sizes", "32", "--quiet"])
    if code != 0:
        raise SystemExit(f"brats-export failed with exit code {code}")


def load_predictor(backend: str, model, repository: Path, work: Path):
    from brats_export import parity
    from inprocess import predictors

    if backend == "torch":
        return predictors(model, ["torch"], work)["torch"]
    if backend == "torchscript":
        return parity.load_torchscript(repository / "brats_torchscript" / "1" / "model.pt")
    if backend == "onnx":
        return parity.load_onnx(repository / "brats_onnx" / "1" / "model.onnx")
    xml = repository / "brats_openvino" / "1" / "model.xml"
    return parity.load_openvino(xml, "bf16" if backend == "openvino-bf16" else "f32")


def max_batch(backend: str) -> int:
    """The served config's max_batch_size, so that in-process and Triton send the same batches."""
    from brats_export.catalogue import MODELS

    return MODELS[SERVED[backend][1]].max_batch_size if backend in SERVED else MODELS["torchscript"].max_batch_size


# --- row plans ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowPlan:
    """One row to measure: the backend, the client's options, and how the table names its tiling."""

    backend: str
    options: pipeline.SegmentOptions
    label: str  # the tile column
    default_tiling: bool  # the plan of the default options
    shm: str = "auto"  # the client's --shared-memory (Triton rows)
    note: str = ""

    @property
    def server_flips(self) -> bool:
        """Sent to the model's ``_flip4`` companion (the server flips) rather than the plain model."""
        return self.options.tta != "none" and self.options.server_flips == "on"


def inprocess_plans(args: argparse.Namespace, case: Case) -> tuple[RowPlan, ...]:
    """Each backend in-process with the default options."""
    label = "full (= default)" if case.default_is_full else _tile_label(DEFAULT)
    return tuple(RowPlan(b, DEFAULT, label, True) for b in args.backend_list)


def triton_plans(args: argparse.Namespace, case: Case, backend: str, fastest: str | None) -> tuple[RowPlan, ...]:
    """One served backend, in table order: whole crop (and the default tiling where its plan differs) with TTA none,
    flip4 and flip4 flipped by the client; for the fastest backend also shared memory off and the tiled rows."""
    full = case.default_is_full

    def plan(options: pipeline.SegmentOptions, shm: str = "auto", note: str = "") -> RowPlan:
        label = "full (= default)" if options.tile is None and full else _tile_label(options)
        default = options.tile == DEFAULT.tile or (options.tile is None and full)
        return RowPlan(backend, options, label, default, shm, note)

    note = "default tiling (192/0.25) = the same plan" if full else ""
    plans = []
    for mode, flips in (("none", "auto"), ("flip4", "auto"), ("flip4", "on")):
        plans.append(plan(pipeline.SegmentOptions(tile=None, tta=mode, server_flips=flips), note=note))
        if not full:
            plans.append(plan(pipeline.SegmentOptions(tta=mode, server_flips=flips)))
    if backend == fastest:
        edge, overlap = args.tiled_options
        plans.append(plan(pipeline.SegmentOptions(tile=None if full else DEFAULT.tile), shm="off"))
        plans += [plan(pipeline.SegmentOptions(tile=edge, overlap=overlap, tta=mode)) for mode in ("none", "flip4")]
    return tuple(plans)


def fastest_backend(args: argparse.Namespace, rows: list[Row]) -> str | None:
    """--tiled-backend, else the served f32 backend fastest in-process (without in-process rows: openvino)."""
    served_f32 = [b for b in args.backend_list if b in SERVED and b not in BF16]
    if args.tiled_backend is not None or not served_f32:
        return args.tiled_backend
    timed = [r for r in rows if r.path == "in-process" and r.backend in served_f32]
    if timed:
        return min(timed, key=lambda r: r.wall_s).backend
    return "openvino" if "openvino" in served_f32 else served_f32[0]


# --- results ------------------------------------------------------------------------------------------------------


@dataclass
class Results:
    """What the table, the targets, the JSON and the Markdown are made of, filled in phase by phase."""

    case: Case
    load_before: tuple[float, float, float]
    peaks_start: dict[str, float]
    others_peaks: list[float]  # CpuMeter.others() while the peaks ran, at the start and at the end
    counted: float  # GFLOP per 128^3 counted by torch's FLOP counter
    checkpoint_sha: str
    rows: list[Row] = field(default_factory=list)
    profile: dict[str, float] = field(default_factory=dict)  # OpenVINO f32 seconds per layer type
    profile_bf16: dict[str, float] = field(default_factory=dict)  # the same compiled with HINT_BF16
    fastest: str | None = None  # the backend of the tiled and shared-memory-off rows
    peaks_end: dict[str, float] = field(default_factory=dict)
    runtime_s: float = 0.0
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    goals: list[str] = field(default_factory=list)
    gflop_voxel: float = GFLOP_PER_128 / 128**3  # the figure; the count (convolutions only) is beside it

    @property
    def seed_s(self) -> float:
        return self.rows[0].wall_s

    @property
    def peaks(self) -> dict[str, float]:
        """The better of the start and end runs."""
        return {k: max(self.peaks_start[k], self.peaks_end[k]) for k in self.peaks_start}

    def peak(self, precision: str) -> tuple[float, str]:
        """The best matmul peak of ``precision`` (f32's where bf16 was not measured: it runs as f32 there)."""
        cands = {k: v for k, v in self.peaks.items() if k.endswith(precision)} or {
            k: v for k, v in self.peaks.items() if k.endswith("f32")}
        name = max(cands, key=cands.get)
        return cands[name], name

    def gflops(self, row: Row) -> float:
        return row.voxels_computed * self.gflop_voxel / row.inference_s

    def waste(self, row: Row) -> float:
        return row.voxels_computed / row.passes / self.case.crop_voxels

    def as_json(self) -> dict:
        case = self.case
        return {"rows": [asdict(r) for r in self.rows], "peaks_start": self.peaks_start, "peaks_end": self.peaks_end,
                "gflop_per_128": GFLOP_PER_128, "gflop_per_128_counted": self.counted, "profile_s": self.profile,
                "profile_bf16_s": self.profile_bf16,
                "crop_voxels": case.crop_voxels, "padded_voxels": case.padded_voxels, "runtime_s": self.runtime_s,
                "targets": self.goals}


# --- phases -------------------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """What the phases share besides the results: options, work folder, model, repository, the seed's labels."""

    args: argparse.Namespace
    work: Path
    model: object  # the eager PyTorch network
    meter: CpuMeter
    case: Case
    repository: Path
    reference: np.ndarray | None = None  # the seed row's labels

    def warm(self, fn, what: str) -> None:
        """One untimed whole-crop pass (not with --no-warmup)."""
        if self.args.no_warmup:
            return
        t0 = time.perf_counter()
        fn(self.case.volume[None])
        log.info("  warm-up %s: %.1f s", what, time.perf_counter() - t0)


def measure_peaks(meter: CpuMeter, repeats: int) -> tuple[dict[str, float], float]:
    meter.restart()
    peaks = gemm_peaks(4096, repeats, THREADS)
    return peaks, meter.others()


def load_counted_model(checkpoint: Path):
    """The model, and its FLOPs per 128^3 as counted (warned about when off the figure used)."""
    from brats_export.checkpoint import load_model

    model = load_model(checkpoint)
    counted = gflop_per_128(model)
    if abs(counted - GFLOP_PER_128) > 0.01 * GFLOP_PER_128:
        log.warning("FLOP count %.1f GFLOP per 128^3 differs from the %.1f used", counted, GFLOP_PER_128)
    return model, counted


def export_models(args: argparse.Namespace, work: Path) -> Path:
    """Export the formats the served backends need into ``work/model_repository``."""
    formats = sorted({SERVED[b][1] for b in args.backend_list if b in SERVED})
    repository = work / "model_repository"
    if formats:
        log.info("exporting %s ...", ", ".join(formats))
        export_repository(args.checkpoint, repository, formats)
    return repository


def seed_phase(bench: Bench, res: Results) -> None:
    import torch

    log.info("seed pipeline (eager PyTorch, whole crop, flip4) ...")
    with torch.inference_mode():
        bench.warm(lambda x: bench.model(torch.from_numpy(x)), "torch eager")
    bench.meter.restart()
    row, bench.reference = run_seed(bench.case.raw, bench.model, bench.case.padded_voxels)
    row.others = bench.meter.others()
    res.rows.append(row)
    log.info("  %.1f s (model %.1f s; other processes %.0f%%)", row.wall_s, row.inference_s, 100 * row.others)


def inprocess_phase(bench: Bench, res: Results, plans: tuple[RowPlan, ...]) -> None:
    for plan in plans:
        log.info("in-process %s ...", plan.backend)
        predictor = load_predictor(plan.backend, bench.model, bench.repository, bench.work)
        bench.warm(predictor, plan.backend)
        bench.meter.restart()
        row = run_inprocess(bench.case.raw, plan.backend, predictor, max_batch(plan.backend), plan.options,
                            bench.reference)
        row.others = bench.meter.others()
        row.tile, row.default_tiling = plan.label, plan.default_tiling
        res.rows.append(row)
        log.info("  %.1f s (inference %.1f s, compute %.1f s; other processes %.0f%%)", row.wall_s,
                 row.inference_s, row.compute_s, 100 * row.others)
        del predictor
        gc.collect()


def profile_phase(bench: Bench, res: Results) -> None:
    if bench.args.no_inprocess:
        return
    xml = bench.repository / "brats_openvino" / "1" / "model.xml"
    if "openvino" in bench.args.backend_list:
        log.info("OpenVINO f32 layer profile (one whole-crop pass) ...")
        res.profile = openvino_profile(xml, bench.case.volume, THREADS)
    if "openvino-bf16" in bench.args.backend_list:
        log.info("OpenVINO bf16 layer profile (one whole-crop pass) ...")
        res.profile_bf16 = openvino_profile(xml, bench.case.volume, THREADS, "bf16")


def triton_phase(bench: Bench, res: Results, backend: str, plans: tuple[RowPlan, ...]) -> None:
    """One server for the backend; per --shared-memory mode a plain and a flipping transport (warmed once)."""
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    name, _, config_name = SERVED[backend]
    log.info("triton %s%s ...", name, f" (--model-config-name {config_name})" if config_name else "")
    with TritonServer(TritonServerConfig(
        bench.repository, models=[name, f"{name}_flip4"], grpc_port=0, http_port=0, metrics_port=0,
        model_config_name=config_name, log_path=bench.work / f"tritonserver_{backend}.log", startup_timeout_s=300
    )) as server:
        for n, shm in enumerate(sorted({p.shm for p in plans})):
            opts = pipeline.ServerOptions(url=server.grpc_url, model=name, shared_memory=shm)
            with pipeline.open_transport(opts) as transport, \
                    pipeline.open_transport(opts, pipeline.SegmentOptions(server_flips="on")) as flipping:
                if n == 0:
                    bench.warm(transport.infer, name)
                    bench.warm(flipping.infer, flipping.info.name)
                for plan in (p for p in plans if p.shm == shm):
                    res.rows.append(triton_row(bench, plan, flipping if plan.server_flips else transport))


def triton_row(bench: Bench, plan: RowPlan, transport) -> Row:
    bench.meter.restart()
    row = run_triton(bench.case.files, transport, plan.backend, plan.options, bench.work, bench.reference, plan.note)
    row.others = bench.meter.others()
    row.tile, row.default_tiling, row.flips_mode = plan.label, plan.default_tiling, plan.options.server_flips
    log.info("  %s %s shm %s: %.1f s (inference %.1f s, server compute %.1f s; other processes %.0f%%)", row.tile,
             row.tta, row.shared_memory, row.wall_s, row.inference_s, row.compute_s or 0, 100 * row.others)
    return row


def report_phase(args: argparse.Namespace, res: Results) -> None:
    """Print the table and the targets; write the JSON and the Markdown, each atomically."""
    print(table(res, markdown=False))
    res.goals = targets(res)
    for line in res.goals:
        print(line)
    log.info("total %.1f s", res.runtime_s)
    write_text_atomic(json.dumps(res.as_json(), indent=1) + "\n", args.json)
    others = other_sections(args.out.read_text()) if args.out.exists() else ""
    write_text_atomic(render(args, res) + ("\n" + others if others else ""), args.out)
    log.info("wrote %s", args.out)


# --- report -------------------------------------------------------------------------------------------------------


def table(res: Results, markdown: bool) -> str:
    head = ["path", "backend", "tile", "TTA", "shm", "tiles", "waste", "wall (s)", "x seed", "e2e (s)", "infer (s)",
            "GFLOP/s", "% peak", "infer/compute", "Dice WT/TC/ET vs seed", "others' CPU"]
    lines = []
    for r in res.rows:
        peak, _ = res.peak(r.precision)
        g = res.gflops(r)
        cells = [
            r.path, r.backend, r.tile, r.tta, r.shared_memory or "-", str(r.tiles), f"{res.waste(r):.2f}",
            f"{r.wall_s:.1f}", f"{r.wall_s / res.seed_s:.2f}", f"{r.e2e_s:.1f}" if r.e2e_s is not None else "-",
            f"{r.inference_s:.1f}", f"{g:.0f}", f"{100 * g / peak:.0f}%" + (" (bf16)" if r.precision == "bf16" else ""),
            f"{r.inference_s / r.compute_s:.3f}" if r.compute_s else "-",
            "/".join(f"{r.dice[k]:.4f}" for k in ("WT", "TC", "ET")) if r.dice else "-",
            f"{100 * r.others:.0f}%" if r.others is not None else "-",
        ]
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*c) for c in lines])


def find(rows: list[Row], **kw) -> Row | None:
    for r in rows:
        if all(getattr(r, k) == v for k, v in kw.items()):
            return r
    return None


def default_row(rows: list[Row], backend: str, shm_mode: str = "auto") -> Row | None:
    """The Triton row of ``brats-client segment``'s defaults (flip4, --server-flips auto) for ``backend``."""
    return find(rows, path="triton", backend=backend, default_tiling=True, flips_mode="auto", tta=DEFAULT_FLIPS,
                shm_mode=shm_mode)


def targets(res: Results) -> list[str]:
    """Each target of issue 6 item 3 and issue 15's bf16 target: met / not met, the measured number; where not met
    the gap and, from the measurements of this run, why."""
    return [target_client(res), target_triton(res), target_waste(res.case), target_peak(res), target_bf16(res)]


def conv_floor(row: Row, profile: dict[str, float], seed_s: float) -> str:
    """The served compute's share spent in convolutions (from the layer profile): a floor for any graph that
    keeps the network's convolutions, as a ratio to the seed."""
    if not profile or not row.compute_s or "Convolution" not in profile:
        return ""
    share = profile["Convolution"] / sum(profile.values())
    floor = share * row.compute_s
    return (f" Floor: the convolutions take {100 * share:.0f}% of the layer profile, so of the server's "
            f"{row.compute_s:.1f} s of compute {floor:.1f} s = **{floor / seed_s:.2f}x the seed** are convolutions "
            f"alone; the other layers take {row.compute_s - floor:.1f} s and everything outside the server "
            f"{row.wall_s - row.compute_s:.1f} s.")


def target_client(res: Results) -> str:
    rows, seed = res.rows, res.rows[0]
    client = default_row(rows, "openvino")
    t = TARGETS["client_vs_seed"]
    if client is None:
        return (f"1. default `brats-client segment` (flip4) <= {t:.2f}x the seed pipeline: **not measured** "
                "(needs the openvino Triton rows)")
    ratio = client.wall_s / res.seed_s
    e2e = client.e2e_s / res.seed_s
    verdict = "**met**" if ratio <= t else f"**not met** (gap {ratio - t:+.3f}x, {ratio / t:.3f} times the target)"
    text = (
        f"1. default `brats-client segment` ({DEFAULT_MODEL}, default tiling = one tile, flip4, 2 requests in "
        f"flight, shared memory auto = {client.shared_memory} here) <= {t:.2f}x the seed pipeline: "
        f"{client.wall_s:.1f} s against "
        f"{res.seed_s:.1f} s = **{ratio:.3f}x** -> {verdict}. Counting the NIfTI load and write as well "
        f"(which the seed row does not), {client.e2e_s:.1f} s = {e2e:.2f}x."
    )
    if ratio > t and client.compute_s:
        budget = t * res.seed_s
        rest = client.wall_s - client.compute_s
        text += (
            f" Why: the server computes the network for {client.compute_s:.1f} s "
            f"({client.compute_s / res.seed_s:.2f}x the seed's time on its own; OpenVINO f32 computes "
            f"{seed.compute_s / client.compute_s:.1f} times as fast as the seed's eager PyTorch, "
            f"{seed.compute_s:.1f} s in the model), so {t:.2f}x ({budget:.1f} s) leaves "
            f"{max(0.0, budget - client.compute_s):.1f} s for everything else, which takes {rest:.1f} s here: "
            f"preprocess + postprocess {client.pre_post_s:.1f} s, the inference stage outside the server's "
            f"compute {client.inference_s - client.compute_s:.1f} s."
        )
        text += conv_floor(client, res.profile, res.seed_s)
    return text


def target_bf16(res: Results) -> str:
    """Issue 15, item 4: the bf16 path <= 0.12x the seed with Dice >= 0.999 against the seed's labels."""
    t, dice_min = TARGETS["bf16_vs_seed"], TARGETS["bf16_dice"]
    bf = default_row(res.rows, "openvino-bf16")
    head = f"5. bf16 path (issue 15, item 4) <= {t:.2f}x the seed with Dice >= {dice_min} against the seed's labels"
    if bf is None or not bf.dice:
        return f"{head}: **not measured** (needs the openvino-bf16 Triton rows)"
    ratio = bf.wall_s / res.seed_s
    dice_ok = min(bf.dice.values()) >= dice_min
    verdict = "**met**" if ratio <= t and dice_ok else "**not met**"
    dice = "/".join(f"{bf.dice[k]:.4f}" for k in ("WT", "TC", "ET"))
    text = (f"{head}: `--model-config-name bf16` (`HINT_BF16`), flip4, {bf.wall_s:.1f} s = "
            f"**{ratio:.3f}x**, Dice WT/TC/ET {dice} -> {verdict}.")
    if ratio > t:
        text += conv_floor(bf, res.profile_bf16, res.seed_s)
    return text


def target_triton(res: Results) -> str:
    rows = res.rows
    t = TARGETS["triton_vs_inprocess"]
    parts, why = [], []
    for backend in SERVED:
        tri = default_row(rows, backend)
        inp = find(rows, path="in-process", backend=backend, tta="flip4")
        if tri is None or inp is None:
            continue
        ratio = tri.wall_s / inp.wall_s
        off = default_row(rows, backend, shm_mode="off")
        extra = f"; shared memory off: {off.wall_s / inp.wall_s:.2f}x" if off and off is not tri else ""
        parts.append(f"{backend} {tri.wall_s:.1f} / {inp.wall_s:.1f} s = **{ratio:.3f}x** "
                     f"({'met' if ratio <= t else f'not met, gap {ratio - t:+.3f}x'}{extra})")
        if ratio > t and tri.compute_s:
            outside_tri, outside_inp = tri.inference_s - tri.compute_s, inp.inference_s - inp.compute_s
            passes = tri.passes
            per_request = tri.tiles * passes // tri.requests  # network passes per request
            batch = 1 if "/" not in tri.tta and passes > 1 else per_request  # the companion flips inside
            tile_voxels = tri.voxels_computed // (tri.tiles * passes)
            mb_in, mb_out = (batch * c * tile_voxels * 4 / 2**20 for c in (4, 3))
            serial = " (one request per tile: its transfer cannot overlap the computation)" \
                if tri.requests == tri.tiles else ""
            why.append(f"{backend}: {tri.requests} request(s) of {per_request} pass(es), tensors of batch {batch}, "
                       f"{mb_in:.0f} MB in and {mb_out:.0f} MB "
                       f"out each{serial}; the server's compute is {tri.compute_s:.1f} s against {inp.compute_s:.1f} s "
                       f"in-process ({tri.compute_s - inp.compute_s:+.1f} s), time outside compute "
                       f"{outside_tri:.1f} s against {outside_inp:.1f} s ({outside_tri - outside_inp:+.1f} s: gRPC, "
                       "serialisation, the Python backend's copies)")
    text = (f"2. Triton path <= {t:.2f}x the same backend in-process (flip4, default tiling, default options, "
            "wall time): "
            + ("; ".join(parts) if parts else "**not measured**") + ".")
    if why:
        text += " Where not met: " + "; ".join(why) + "."
    return text


def target_waste(case: Case) -> str:
    default_plan_waste = case.plan_default.voxels_computed / case.crop_voxels
    plan_text = (f"{len(case.plan_default)} tile(s) of {case.plan_default.tile_shape}"
                 + (", the whole crop padded to multiples of 16" if case.default_is_full else ""))
    t = TARGETS["waste"]
    verdict = "**met**" if default_plan_waste <= t else f"**not met** (gap {default_plan_waste - t:+.2f})"
    return (f"3. tiling waste <= {t:.2f} by default: the default plan (tile {DEFAULT.tile}, overlap "
            f"{DEFAULT.overlap:g}) on this case, {plan_text}, computes **{default_plan_waste:.2f}** x the crop "
            f"voxels -> {verdict}.")


def target_peak(res: Results) -> str:
    rows, fastest, profile = res.rows, res.fastest, res.profile
    t = TARGETS["peak_fraction"]
    r = find(rows, path="in-process", backend=fastest, tta="flip4") if fastest else None
    if r is None:
        return (f"4. fastest CPU backend >= {100 * t:.0f}% of the sgemm peak: **not measured** "
                "(needs the in-process rows)")
    peak, name = res.peak("f32")
    g = res.gflops(r)
    g_compute = r.voxels_computed * res.gflop_voxel / r.compute_s
    frac = g / peak
    verdict = "**met**" if frac >= t else f"**not met** (gap {100 * (frac - t):+.0f} points)"
    text = (f"4. fastest f32 CPU backend >= {100 * t:.0f}% of the sgemm peak: {fastest} in-process, flip4, "
            f"{g:.0f} GFLOP/s over the inference stage ({g_compute:.0f} inside the runtime) against the f32 "
            f"matmul peak {peak:.0f} GFLOP/s ({name}) = **{100 * frac:.0f}%** -> {verdict}.")
    if profile:
        total = sum(profile.values())
        conv = profile.get("Convolution", 0.0)
        pass_gflop = res.case.padded_voxels * res.gflop_voxel
        top = ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in list(profile.items())[:6])
        text += (f" OpenVINO's layer profile of one whole-crop f32 pass ({total:.1f} s): {top}. The counted FLOPs are "
                 f"all convolutions; over the convolution layers alone that is "
                 f"{pass_gflop / conv:.0f} GFLOP/s = {100 * pass_gflop / conv / peak:.0f}% of the peak"
                 if conv else f" OpenVINO's layer profile ({total:.1f} s): {top}")
        if conv:
            text += (f", while the layers without counted FLOPs (GroupNorm's reductions and element-wise layers, "
                     f"upsampling, concatenation, reorders: memory-bound) take "
                     f"{100 * (total - conv) / total:.0f}% of the time.")
        else:
            text += "."
    bf = find(rows, path="in-process", backend="openvino-bf16", tta="flip4")
    if bf is not None:
        bpeak, bname = res.peak("bf16")
        gb = res.gflops(bf)
        text += (f" In bf16 (not the served default): {gb:.0f} GFLOP/s = {100 * gb / peak:.0f}% of the f32 peak, "
                 f"{100 * gb / bpeak:.0f}% of the bf16 matmul peak {bpeak:.0f} GFLOP/s ({bname}).")
    return text


# --- main ---------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "demo" / "brats_demo_checkpoint.pth",
                   help="seed-format checkpoint or plain state dict (default: the demo checkpoint)")
    p.add_argument("--seed", type=int, default=9003, help="phantom seed, held out from training (default 9003)")
    p.add_argument("--backends", default=None,
                   help=f"comma-separated subset of {','.join(BACKENDS)} (default: all; --quick: openvino)")
    p.add_argument("--no-inprocess", action="store_true", help="skip the in-process rows")
    p.add_argument("--no-triton", action="store_true", help="skip the Triton rows")
    p.add_argument("--tiled-backend", default=None,
                   help="backend for the tiled and shared-memory rows (default: the fastest f32 one in-process)")
    p.add_argument("--tiled", default=None, help="tile/overlap of the tiled rows (default 128/0.5; --quick 64/0.5)")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed whole-crop pass before each backend")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: the case cut to a 80^3 box around the tumour, openvino only, fewer repeats")
    p.add_argument("--out", type=Path, default=None,
                   help="Markdown output (default docs/benchmarks.md; --quick: out/bench/benchmarks_quick.md)")
    p.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "bench_end_to_end.json",
                   help="raw results as JSON (default %(default)s)")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    names = (args.backends or ("openvino" if args.quick else ",".join(BACKENDS))).split(",")
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        p.error(f"unknown backend(s) {bad}; choose from {','.join(BACKENDS)}")
    args.backend_list = [b for b in BACKENDS if b in names]
    tiled = args.tiled or ("64/0.5" if args.quick else "128/0.5")
    try:
        edge, overlap = tiled.split("/")
        args.tiled_options = (int(edge), float(overlap))
    except ValueError:
        p.error(f"--tiled takes TILE/OVERLAP like 128/0.5, got {tiled!r}")
    if args.out is None:
        args.out = ROOT / ("out/bench/benchmarks_quick.md" if args.quick else "docs/benchmarks.md")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="brats_bench_"))
    try:
        return run(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    quiet_logs()
    started, load_before = time.perf_counter(), os.getloadavg()
    import torch
    from brats_export.checkpoint import checkpoint_sha256

    torch.set_num_threads(THREADS)
    repeats = 2 if args.quick else 3
    log.info("matmul peaks (4096^3, best of %d) ...", repeats)
    meter = CpuMeter()
    peaks_start, others = measure_peaks(meter, repeats)
    log.info("  %s (other processes: %.0f%% of the CPUs)", ", ".join(f"{k} {v:.0f}" for k, v in peaks_start.items()),
             100 * others)
    model, counted = load_counted_model(args.checkpoint)
    work.mkdir(parents=True, exist_ok=True)
    case = prepare_case(args, work)
    res = Results(case, load_before, peaks_start, [others], counted, checkpoint_sha256(args.checkpoint))
    bench = Bench(args, work, model, meter, case, export_models(args, work))

    seed_phase(bench, res)
    if not args.no_inprocess:
        inprocess_phase(bench, res, inprocess_plans(args, case))
    profile_phase(bench, res)
    res.fastest = fastest_backend(args, res.rows)
    if not args.no_triton:
        for backend in [b for b in args.backend_list if b in SERVED]:
            triton_phase(bench, res, backend, triton_plans(args, case, backend, res.fastest))

    log.info("matmul peaks again ...")
    res.peaks_end, others = measure_peaks(meter, repeats)
    res.others_peaks.append(others)
    res.runtime_s, res.load_after = time.perf_counter() - started, os.getloadavg()
    report_phase(args, res)
    return 0


def quiet_logs() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # tritonclient's shared memory module
    for name in ("brats_client", "brats_serve", "brats_export"):
        logging.getLogger(name).setLevel(logging.WARNING)


# --- Markdown -----------------------------------------------------------------------------------------------------

COLUMNS = (
    "Columns: *wall* = preprocess + inference + postprocess (from the loaded 4-channel volume to labels on the "
    "240x240x155 grid: the span the seed row covers); *x seed* = wall / the seed row's wall; *e2e* = the whole "
    "`segment_case` (NIfTI load and write included), Triton rows only; *infer* = the inference stage (tiles, "
    "flips, requests, reassembly); *GFLOP/s* = network GFLOP computed / infer; *% peak* = GFLOP/s / the matmul "
    "peak of the row's precision; *infer/compute* = infer / time inside the runtime (in-process: the predictor "
    "calls; Triton: the server's `compute_infer` from model statistics, so this is the Triton+gRPC overhead; seed: "
    "1 by definition); *waste* = voxels computed per TTA pass / crop voxels; *Dice* against the seed row's labels. "
    "Triton rows use `pipeline.segment_case` (what `brats-client segment` runs) with its defaults: 2 requests "
    "in flight, shared memory auto (*shm* says what it used), and `--server-flips auto`, which on this loopback "
    "server flips in the client (*flip4/client*: one flip per request, 4 requests per tile); *flip4* rows send to "
    "the model's `_flip4` companion (`--server-flips on`: the server flips, one request per tile); in-process "
    "rows send the client's batches. `openvino-bf16` is "
    "an extra: the same IR compiled with "
    "`INFERENCE_PRECISION_HINT=bf16` (served: `HINT_BF16`), which is what Triton's native openvino backend "
    "does by default on this CPU; the stand-in serves f32. Every backend got one untimed whole-crop pass first."
)
READING_DICE = (
    "Reading the Dice column: every row is compared with the seed row's labels (flip4, whole crop). Whole-crop "
    "flip4 rows in f32 compute the same function and should be ~1; TTA none rows average one pass instead of four "
    "and tiled rows see other GroupNorm statistics (`docs/tiling.md`), so those differ by design, and bf16 rows "
    "differ by bf16 rounding. *x seed* compares times, not equal work, for the TTA none and tiled rows. "
    "*others' CPU*: the share of the machine's CPUs that processes other than this benchmark (and its Triton "
    "server) used while the row ran, from /proc/stat; above a few percent the row's time is inflated."
)


TRIED = "What else was tried for targets 1 and 4, with numbers: `docs/performance-notes.md`."
SECTIONS = ("## Machine", "## Case and model", "## Matmul peak, same run", "## Results", "## Targets (issue 6, item 3)")


def render(args: argparse.Namespace, res: Results) -> str:
    machine_, case, peaks, results, goals = SECTIONS
    return "\n".join([
        *render_header(args, res), "", machine_, "", *render_machine(res), "", case, "", *render_case(args, res), "",
        peaks, "", *render_peaks(res), "", results, "", table(res, markdown=True), "", COLUMNS, "", READING_DICE, "",
        goals, "", *res.goals, "", TRIED, "",
    ])


def other_sections(text: str) -> str:
    """The ``## `` sections of an earlier output that this benchmark does not write (other benchmarks' results,
    added to the same page by hand), to keep them when the page is written again."""
    kept, keep = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            keep = line.rstrip("\n") not in SECTIONS
        if keep:
            kept.append(line)
    return "".join(kept)


def render_header(args: argparse.Namespace, res: Results) -> list[str]:
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    minutes = res.runtime_s / 60
    return [
        "# End-to-end benchmark",
        "",
        ("**Smoke run (`--quick`): a small case, not the benchmark.**\n" if args.quick else "")
        + f"Reproduce (one command, {minutes:.0f} minutes here"
        + ("; `make bench` runs the same" if not args.argv else "") + "):",
        "",
        "```",
        " ".join([".venv/bin/python benchmarks/bench_end_to_end.py", *args.argv]),
        "```",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC at commit `{commit}`, one run, "
        f"{minutes:.1f} min in all.",
    ]


def render_machine(res: Results) -> list[str]:
    m = machine()
    return [
        f"- CPU: {m['cpu']}",
        f"- {m['cores']}",
        f"- flags: {m['flags']}",
        f"- memory: {m['memory']}; {m['os']}",
        "- libraries: " + ", ".join(f"{k} {val}" for k, val in versions().items()),
        f"- load average (1/5/15 min) at start {'/'.join(f'{x:.1f}' for x in res.load_before)}, at end "
        f"{'/'.join(f'{x:.1f}' for x in res.load_after)} (a shared machine: other jobs may run)",
        f"- every runtime uses {os.cpu_count()} threads (torch `set_num_threads`, OpenVINO/ONNX Runtime defaults, the "
        "thread counts `brats-export` writes into the configs)",
    ]


def render_case(args: argparse.Namespace, res: Results) -> list[str]:
    from brats_export.exporters import ONNX_OPSET

    case, record, plan_default, plan_tiled = res.case, res.case.record, res.case.plan_default, res.case.plan_tiled
    try:
        checkpoint = args.checkpoint.resolve().relative_to(ROOT)
    except ValueError:
        checkpoint = args.checkpoint
    return [
        f"- phantom seed {args.seed} (held out from training), BraTS grid {record.original_shape}, written as int16 "
        f"NIfTI and loaded back by the client; crop {record.crop_shape} = {case.crop_voxels:,} voxels, padded to "
        f"{record.padded_shape}",
        f"- checkpoint `{checkpoint}` (sha256 {res.checkpoint_sha[:12]}...); export by `brats-export --check-sizes 32` "
        f"into a temporary repository (ONNX opset {ONNX_OPSET}, TorchScript, OpenVINO IR f32)",
        f"- network cost: {GFLOP_PER_128} GFLOP per 128^3 pass (issue 6; `torch.utils.flop_counter` counts "
        f"{res.counted:.1f} GFLOP in the convolutions, 2 FLOP per multiply-add, in this run), so a row's GFLOP = "
        f"{GFLOP_PER_128} x voxels computed / 128^3 x TTA passes",
        f"- default tiling: tile {DEFAULT.tile}, overlap {DEFAULT.overlap:g} -> plan of {len(plan_default)} tile(s) of "
        f"{plan_default.tile_shape}: " + ("**the same plan as the whole crop**, so it is run once and its rows "
                                          "read `full`" if case.default_is_full else "differs from the whole crop"),
        f"- tiled rows: tile {args.tiled_options[0]}, overlap {args.tiled_options[1]:g} -> {len(plan_tiled)} tiles "
        f"of {plan_tiled.tile_shape} (edges shrunk by the planner), for the fastest f32 backend only ({res.fastest})",
    ]


def render_peaks(res: Results) -> list[str]:
    peak32, name32 = res.peak("f32")
    peak16, name16 = res.peak("bf16")
    return [
        "4096 x 4096 x 4096, best of a few, at the start and at the end of the run (the better one counts); other "
        f"processes used {100 * res.others_peaks[0]:.0f}% and {100 * res.others_peaks[1]:.0f}% of the CPUs meanwhile:",
        "",
        "| library | start GFLOP/s | end GFLOP/s |",
        "| --- | --- | --- |",
        *(f"| {k} | {res.peaks_start[k]:.0f} | {res.peaks_end[k]:.0f} |" for k in res.peaks_start),
        "",
        f"Peak used for f32 rows: **{peak32:.0f} GFLOP/s** ({name32}); for bf16 rows: {peak16:.0f} GFLOP/s ({name16})"
        + ("." if has_bf16() else ": this CPU has no bf16 instructions, so bf16 was not measured and runs as f32."),
    ]


if __name__ == "__main__":
    sys.exit(main())

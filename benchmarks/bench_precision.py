"""Precision and shapes, side by side in one run (issue 28): f32, bf16 and INT8, compiled for a dynamic or a static
input shape, against the seed pipeline on the same BraTS-size phantom, with Dice against the seed's labels.

- ``seed``: the seed's pipeline in eager PyTorch (whole crop, flip4), the reference of every ratio and Dice;
- in-process rows: the client's own stages (preprocess, ``pipeline.predict`` with the default options, labels)
  over the IR compiled in this process: f32 and bf16 with the dynamic shape (compiled once, before the row) and
  compiled for the case's shape (the compilation counted in the row, as the stand-in pays it once per new shape);
  INT8 (``brats-export --int8`` on phantoms of other seeds, static shape) with f32 and bf16 for the float layers;
- served rows (a local ``tritonserver`` on loopback, ``brats-client segment``'s defaults): ``brats_openvino`` with
  the client's flips (the default here) and with its ``_flip4`` companion (``--server-flips on``), and
  ``brats_openvino_int8``;
- OpenVINO's layer profile of one whole-crop pass per precision (static shape).

Prints the table and writes its section of ``docs/benchmarks.md`` (``--out``; other sections are kept)::

    .venv/bin/python benchmarks/bench_precision.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_end_to_end import (  # noqa: E402
    CpuMeter,
    load_counted_model,
    machine,
    quiet_logs,
    run_seed,
    versions,
    write_phantom,
)
from bench_memory import GIB, run_measured  # noqa: E402
from brats_client import pipeline, postprocess, preprocess  # noqa: E402
from brats_client.atomic import write_text_atomic  # noqa: E402
from brats_client.contract import INPUT_NAME, OUTPUT_NAME, REGIONS  # noqa: E402
from brats_client.local import LocalTransport  # noqa: E402

log = logging.getLogger("bench_precision")

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Precision and shapes (issue 28)"
CALIBRATION_SEEDS = (9301, 9302, 9303)  # brats-export --int8: the first two calibrated on, the last held out
THREADS = os.cpu_count() or 1


@dataclass
class Row:
    path: str  # seed | in-process | triton
    what: str
    wall_s: float
    compile_s: float = 0.0
    dice: dict[str, float] = field(default_factory=dict)
    equal: float | None = None  # share of voxels whose label equals the seed's
    others: float = 0.0
    note: str = ""


class StaticPredictor:
    """The IR compiled for each input shape it meets (as brats-serve's openvino stand-in does)."""

    def __init__(self, xml: Path, precision: str) -> None:
        import openvino as ov

        self.core, self.xml, self.precision = ov.Core(), xml, precision
        self.compiled: dict[tuple[int, ...], object] = {}
        self.compile_s = 0.0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        shape = tuple(batch.shape)
        if shape not in self.compiled:
            t0 = time.perf_counter()
            model = self.core.read_model(str(self.xml))
            if not model.inputs[0].get_partial_shape().is_static:
                model.reshape({INPUT_NAME: list(shape)})
            self.compiled[shape] = compile_ir(self.core, model, self.precision)
            self.compile_s += time.perf_counter() - t0
        compiled = self.compiled[shape]
        return compiled({INPUT_NAME: batch})[compiled.output(OUTPUT_NAME)]


def compile_ir(core, model, precision: str, profile: bool = False):
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": THREADS,
                                             "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": profile})


def dynamic_predictor(xml: Path, precision: str):
    import openvino as ov

    core = ov.Core()
    compiled = compile_ir(core, core.read_model(str(xml)), precision)
    return lambda batch: compiled({INPUT_NAME: batch})[compiled.output(OUTPUT_NAME)]


def inprocess_row(what: str, predict, raw: np.ndarray, reference: np.ndarray, fixed: tuple | None,
                  meter: CpuMeter) -> Row:
    meter.restart()
    t0 = time.perf_counter()
    volume, record = preprocess.preprocess(raw)
    transport = LocalTransport(predict, what, max_batch_size=1, fixed_spatial=fixed)
    prediction = pipeline.predict(volume, transport, pipeline.SegmentOptions(), pad_value=record.pad_value)
    labels = postprocess.paste(postprocess.labels_from_probabilities(
        postprocess.unpad(prediction.probabilities, record), convention="brats2019"), record)
    row = Row("in-process", what, time.perf_counter() - t0, getattr(predict, "compile_s", 0.0),
              postprocess.region_dice(labels, reference), equal_share(labels, reference), meter.others())
    log.info("  %s: %.1f s (compile %.1f s) Dice %s", what, row.wall_s, row.compile_s, row.dice)
    return row


def equal_share(labels: np.ndarray, reference: np.ndarray) -> float:
    return float(np.count_nonzero(labels == reference)) / labels.size


def export_int8(checkpoint: Path, work: Path) -> tuple[Path, str]:
    """brats-export of the OpenVINO IR and its INT8 model, calibrated on phantoms of other seeds, in a process of
    its own: the repository and the export's peak memory and time."""
    from brats_demo.phantom import write_case
    from brats_export.phantom import make_phantom

    cases = work / "calibration"
    for seed in CALIBRATION_SEEDS:
        write_case(make_phantom(seed), cases, f"Phantom_{seed}")
    repository = work / "model_repository"
    argv = [sys.executable, "-m", "brats_export.cli", "--checkpoint", str(checkpoint), "--repository",
            str(repository), "--formats", "openvino", "--check-sizes", "32", "--skip-full-size-check", "--int8",
            str(cases), "--quiet"]
    measured = run_measured(argv, work / "export.log")
    if measured.returncode != 0:
        raise SystemExit(f"brats-export --int8 failed with exit code {measured.returncode}: "
                         f"{(work / 'export.log').read_text()[-3000:]}")
    return repository, (f"`brats-export --formats openvino --int8` (3 phantoms, checks at 32^3) "
                        f"{measured.wall_s:.0f} s, peak {measured.own_peak_bytes / GIB:.2f} GiB")


def served_rows(repository: Path, files, reference: np.ndarray, work: Path, meter: CpuMeter) -> list[Row]:
    import nibabel as nib
    from bench_memory import _status_kib
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    rows = []
    with TritonServer(TritonServerConfig(repository, grpc_port=0, http_port=0, metrics_port=0,
                                         log_path=work / "tritonserver.log", startup_timeout_s=300)) as server:
        for model, flips, what in (("brats_openvino", "auto", "brats_openvino, flip4 in the client (default)"),
                                   ("brats_openvino", "on", "brats_openvino_flip4 companion (--server-flips on)"),
                                   ("brats_openvino_int8", "auto", "brats_openvino_int8, flip4 in the client")):
            options = pipeline.SegmentOptions(server_flips=flips)
            with pipeline.open_transport(pipeline.ServerOptions(url=server.grpc_url, model=model), options) as t:
                t.infer(np.zeros((1, 4, *(t.info.fixed_spatial or (32, 32, 32))), np.float32))  # warm
                seg = work / "out" / f"{model}_{flips}.nii.gz"
                meter.restart()
                report = pipeline.segment_case(files, pipeline.CaseOutputs(seg, overwrite=True), t, options)
                others = meter.others()
            s = report["time_s"]
            labels = np.asanyarray(nib.load(str(seg)).dataobj)
            rows.append(Row("triton", what, s["preprocess"] + s["inference"] + s["postprocess"],
                            dice=postprocess.region_dice(labels, reference), equal=equal_share(labels, reference),
                            others=others,
                            note=f"server compute {report['server_compute_s']:.1f} s; {report['server']['precision']}"))
            log.info("  %s: %.1f s Dice %s", what, rows[-1].wall_s, rows[-1].dice)
        peaks = {b.model: (_status_kib(b.pid, "VmHWM") or 0) * 1024 for b in server.backend_processes()}
    for row, model in zip(rows, ("brats_openvino", "brats_openvino_flip4", "brats_openvino_int8"), strict=True):
        row.note += f"; {model} backend peak {peaks.get(model, 0) / GIB:.2f} GiB"
    return rows


def profile(xml: Path, volume: np.ndarray, precision: str) -> dict[str, float]:
    """Seconds per executed layer type of one static whole-crop pass (the second of two)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    if not model.inputs[0].get_partial_shape().is_static:
        model.reshape({INPUT_NAME: [1, *volume.shape]})
    request = compile_ir(core, model, precision, profile=True).create_infer_request()
    for _ in range(2):
        request.infer({INPUT_NAME: volume[None]})
    seconds: dict[str, float] = {}
    for info in request.profiling_info:
        if str(info.status).endswith("EXECUTED"):
            key = f"{info.node_type} ({info.exec_type})" if info.node_type == "Convolution" else info.node_type
            seconds[key] = seconds.get(key, 0.0) + info.real_time.total_seconds()
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


def run(args: argparse.Namespace, work: Path) -> str:
    quiet_logs()
    started = time.perf_counter()
    meter = CpuMeter()
    model, _ = load_counted_model(args.checkpoint)
    files, loaded = write_phantom(args.seed, work, None)
    log.info("exporting the IR and its INT8 model (calibration phantoms %s) ...", CALIBRATION_SEEDS)
    repository, export_note = export_int8(args.checkpoint, work)
    f32_xml = repository / "brats_openvino" / "1" / "model.xml"
    int8_xml = repository / "brats_openvino_int8" / "1" / "model.xml"
    int8_info = json.loads((repository / "manifest.json").read_text())["models"]["brats_openvino_int8"]["int8"]
    fixed = tuple(int8_info["shape"])

    log.info("seed pipeline ...")
    meter.restart()
    seed_row, reference = run_seed(loaded.volume, model, 1)
    seed = Row("seed", "eager PyTorch, whole crop, flip4", seed_row.wall_s, others=meter.others())
    rows = [seed]
    del model
    candidates = [
        ("f32, dynamic shape", lambda: dynamic_predictor(f32_xml, "f32"), None),
        ("f32, static shape", lambda: StaticPredictor(f32_xml, "f32"), None),
        ("bf16, dynamic shape", lambda: dynamic_predictor(f32_xml, "bf16"), None),
        ("bf16, static shape", lambda: StaticPredictor(f32_xml, "bf16"), None),
        ("int8 + f32, static shape", lambda: StaticPredictor(int8_xml, "f32"), fixed),
        ("int8 + bf16, static shape", lambda: StaticPredictor(int8_xml, "bf16"), fixed),
    ]
    for what, make, shape in candidates:
        rows.append(inprocess_row(what, make(), loaded.volume, reference, shape, meter))
    if not args.no_triton:
        rows += served_rows(repository, files, reference, work, meter)
    volume, _ = preprocess.preprocess(loaded.volume)
    profiles = {p: profile(x, volume, h) for p, x, h in (("f32", f32_xml, "f32"), ("bf16", f32_xml, "bf16"),
                                                         ("int8 + f32", int8_xml, "f32"))}
    return render(args, rows, profiles, int8_info, export_note, time.perf_counter() - started)


def render(args: argparse.Namespace, rows: list[Row], profiles: dict, int8_info: dict, export_note: str,
           runtime_s: float) -> str:
    m = machine()
    seed_s = rows[0].wall_s
    lines = [
        SECTION, "",
        f"`.venv/bin/python benchmarks/bench_precision.py` (`make bench` runs it), "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {runtime_s / 60:.1f} min. CPU: {m['cpu']}; {m['cores']}; "
        f"flags: {m['flags']}. OpenVINO {versions()['openvino']}. Phantom seed {args.seed} (BraTS grid, crop padded "
        f"to 144x176x144), demo checkpoint; default client options (whole crop, flip4). INT8: "
        f"`brats-export --int8` on phantoms {', '.join(map(str, CALIBRATION_SEEDS))} ({int8_info['quantized']}; "
        f"served at {'x'.join(map(str, int8_info['shape']))}; gate "
        + "; ".join(f"{g['case']} {g['runtime']} " + "/".join(f"{g['dice'][r]:.4f}" for r in REGIONS)
                    for g in int8_info["gate"]) + f"). Export: {export_note}.",
        "",
        "| path | what | wall (s) | x seed | compile (s) | Dice WT/TC/ET vs seed | voxels equal to seed | others' CPU "
        "| note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        dice = "/".join(f"{r.dice[k]:.4f}" for k in REGIONS) if r.dice else "-"
        equal = "-" if r.equal is None else f"{100 * r.equal:.4f}%"
        lines.append(f"| {r.path} | {r.what} | {r.wall_s:.1f} | {r.wall_s / seed_s:.2f} | "
                     f"{r.compile_s:.1f} | {dice} | {equal} | {100 * r.others:.0f}% | {r.note} |")
    lines += ["", "Wall = preprocess + inference + postprocess (the span of the seed row); in-process static rows "
              "include their compilation (once per new shape). Layer profile of one whole-crop pass, static shape "
              "(share of the pass, top 6):", ""]
    for name, prof in profiles.items():
        total = sum(prof.values())
        top = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in list(prof.items())[:6])
        lines.append(f"- {name}: {total:.2f} s; {top}")
    return "\n".join(lines) + "\n"


def write_section(out: Path, section: str) -> None:
    """Replace this benchmark's section of ``out`` (appended when absent); the other sections stay."""
    text = out.read_text() if out.exists() else ""
    kept, skip = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            skip = line.rstrip("\n") == SECTION
        if not skip:
            kept.append(line)
    body = "".join(kept).rstrip("\n")
    write_text_atomic((body + "\n\n" if body else "") + section, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "demo" / "brats_demo_checkpoint.pth")
    p.add_argument("--seed", type=int, default=9003, help="phantom seed, held out from training (default 9003)")
    p.add_argument("--no-triton", action="store_true", help="skip the served rows")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="brats_bench_precision_"))
    try:
        section = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.write(section)
    write_section(args.out, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

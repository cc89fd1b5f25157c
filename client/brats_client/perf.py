"""Load testing with perf_analyzer on real tiles of a case: concurrency sweep, CSV, table and plot.

perf_analyzer 2.51 ships in the ``tritonclient[all]==2.51.0`` wheel (the venv's ``bin/``). It needs Debian's
``libb64-0d`` and ``libcudart.so.12`` (PyPI ``nvidia-cuda-runtime-cu12``), put on ``LD_LIBRARY_PATH`` here.
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import io, modalities, preprocess, tiling
from .atomic import atomic_path
from .contract import INPUT_NAME
from .errors import BratsError, InputError, ServerError
from .modalities import CaseFiles
from .server_options import ServerOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PerfRow:
    concurrency: int
    throughput_per_s: float  # inferences (tiles) per second
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    server_compute_ms: float
    server_queue_ms: float


def find_perf_analyzer() -> tuple[str, dict[str, str]]:
    """The binary and the environment it needs."""
    binary = shutil.which("perf_analyzer") or str(Path(sys.executable).parent / "perf_analyzer")
    if not Path(binary).exists():
        raise BratsError("perf_analyzer not found: install the perf extra (`make setup` does)")
    env = dict(os.environ)
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec is not None and spec.submodule_search_locations:
        lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p)
    return binary, env


def write_real_tile(case_dir: Path, out_dir: Path, tile: int, *, nnunet_order: list[str] | None = None) -> tuple:
    """Write the ``tile``-edged tile nearest the centre of a preprocessed case as ``out_dir/INPUT__0``; returns its
    shape ``(4, tile, tile, tile)``.

    The tile is exactly ``tile`` on every axis (the shape perf_analyzer is told to send): the plan is ``exact``, not
    shrunk as the segmentation's plans are. Along an axis where the padded crop is smaller than ``tile`` the tile
    reaches past it and that part is filled with the normalised background (``record.pad_value``), as in
    segmentation; a log line says so.
    """
    files = modalities.find_case_files(case_dir, nnunet_order=nnunet_order)
    volume, record = preprocess.preprocess(io.load_case(files).volume)
    plan = tiling.plan_tiles(volume.shape[1:], tile, 0.0, exact=True)
    if any(plan.tile_padding):
        log.info(
            "the padded crop of %s is %s voxels, smaller than the tile %s along some axis: the tile is padded with "
            "the background value past it",
            case_dir, "x".join(map(str, plan.shape)), "x".join(map(str, plan.tile_shape)),
        )
    centre = np.array(volume.shape[1:]) / 2
    index = min(range(len(plan)), key=lambda i: np.abs(np.array(plan.starts[i]) + np.array(plan.tile_shape) / 2
                                                         - centre).sum())
    patch = np.ascontiguousarray(tiling.extract_tile(volume, plan, index, pad_value=record.pad_value), dtype=np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    patch.tofile(out_dir / INPUT_NAME)
    return patch.shape


def tile_inputs(data_dir: Path, shape: tuple) -> list[str]:
    """perf_analyzer's arguments for the tile :func:`write_real_tile` wrote (a network model)."""
    return ["--input-data", str(data_dir), "--shape", f"{INPUT_NAME}:{','.join(str(s) for s in shape)}"]


def write_case_files(files: CaseFiles, path: Path) -> list[str]:
    """Write the case's four files as perf_analyzer input data for the served pipeline (``brats_segment``: one
    BYTES element each, as the files are on disk) to the JSON file ``path``; returns perf_analyzer's arguments."""
    if files.channel_index is not None:
        raise InputError(f"{files.paths['t1']} holds the four channels in one file; the served pipeline takes "
                         "one file per modality")
    entry = {}
    for ch, file in files.paths.items():
        data = file.read_bytes()  # a BYTES tensor's raw form: each element behind its 32-bit little-endian length
        entry[ch] = {"b64": base64.b64encode(struct.pack("<I", len(data)) + data).decode("ascii"), "shape": [1]}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"data": [entry]}))
    return ["--input-data", str(path)]


def server_args(server: ServerOptions) -> list[str]:
    """perf_analyzer's options for ``server``: model, version, URL (the first), gRPC and TLS."""
    args = ["-m", server.model, "-u", server.urls[0], "-i", "grpc"]
    if server.model_version:
        args += ["-x", server.model_version]
    if server.ssl:
        args += ["--ssl-grpc-use-ssl", "true"]
        for flag, path in (("--ssl-grpc-root-certifications-file", server.root_certificates),
                           ("--ssl-grpc-private-key-file", server.private_key),
                           ("--ssl-grpc-certificate-chain-file", server.certificate_chain)):
            if path:
                args += [flag, path]
    return args


def run_sweep(
    *, server: ServerOptions, inputs: list[str], concurrency: list[int], csv_path: Path,
    request_count: int = 10, timeout_s: float = 1800.0, stability_percentage: float = 50.0,
) -> list[PerfRow]:
    """Run perf_analyzer once per concurrency level (a level that does not stabilise would otherwise end the
    whole sweep early), merge the rows into ``csv_path`` and parse them. A level is measured in windows of
    ``request_count`` requests until two consecutive windows agree within ``stability_percentage`` percent, at
    most 6; a busy machine may need a larger percentage."""
    binary, env = find_perf_analyzer()
    header: list[str] = []
    records: list[dict] = []
    for level in concurrency:
        level_csv = csv_path.with_name(f"{csv_path.stem}_c{level}.csv")
        cmd = [
            binary, *server_args(server), "-b", "1", *inputs,
            "--concurrency-range", f"{level}:{level}:1",
            "--measurement-mode", "count_windows", "--measurement-request-count", str(request_count),
            "--max-trials", "6", "--stability-percentage", f"{stability_percentage:g}", "-f", str(level_csv),
        ]
        log.info("running %s", " ".join(cmd))
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            raise ServerError(f"perf_analyzer did not finish within {timeout_s:g} s at concurrency {level}") from e
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        if done.returncode != 0 or not level_csv.exists():
            raise ServerError(
                f"perf_analyzer failed (exit {done.returncode}) against {server.model} at {server.url}, concurrency "
                f"{level}:\n{tail}"
            )
        with open(level_csv, newline="") as f:
            reader = csv.DictReader(f)
            header = header or list(reader.fieldnames or [])
            rows = list(reader)
        level_csv.unlink()
        if not rows:
            raise ServerError(f"perf_analyzer measured nothing at concurrency {level}:\n{tail}")
        records.extend(rows)
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(records)
    return parse_csv(csv_path)


def parse_csv(path: Path) -> list[PerfRow]:
    with open(path, newline="") as f:
        records = list(csv.DictReader(f))
    if not records:
        raise InputError(f"perf_analyzer wrote no rows to {path}")
    us = 1e-3
    return sorted(
        (
            PerfRow(
                concurrency=int(r["Concurrency"]),
                throughput_per_s=float(r["Inferences/Second"]),
                p50_ms=float(r["p50 latency"]) * us,
                p90_ms=float(r["p90 latency"]) * us,
                p95_ms=float(r["p95 latency"]) * us,
                p99_ms=float(r["p99 latency"]) * us,
                server_compute_ms=float(r["Server Compute Infer"]) * us,
                server_queue_ms=float(r["Server Queue"]) * us,
            )
            for r in records
        ),
        key=lambda r: r.concurrency,
    )


def table(rows: list[PerfRow]) -> str:
    head = f"{'conc':>4} {'tiles/s':>8} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'compute ms':>11} {'queue ms':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.concurrency:>4} {r.throughput_per_s:>8.3f} {r.p50_ms:>9.1f} {r.p90_ms:>9.1f} {r.p99_ms:>9.1f} "
            f"{r.server_compute_ms:>11.1f} {r.server_queue_ms:>9.1f}"
        )
    return "\n".join(lines)


def plot(rows: list[PerfRow], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = [r.concurrency for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(conc, [r.throughput_per_s for r in rows], "o-")
    a.set(xlabel="concurrency", ylabel="tiles / s", title="throughput")
    for name in ("p50_ms", "p90_ms", "p95_ms", "p99_ms"):
        b.plot(conc, [getattr(r, name) for r in rows], "o-", label=name.split("_")[0])
    b.set(xlabel="concurrency", ylabel="latency (ms)", title="latency percentiles")
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return path

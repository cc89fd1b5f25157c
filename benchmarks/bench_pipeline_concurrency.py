"""The served pipeline (brats_segment) under concurrent clients against the tensor path: cases/s, p50/p95
latency and the server's peak memory at concurrency 1, 2 and 4, on one server.

- pipeline: perf_analyzer (``brats-client perf CASE --model brats_segment``: the case's four files as input data,
  one case per request, the pipeline's defaults: whole crop, flip4 on the OpenVINO companion);
- tensors: N ``brats-client segment`` processes at once, one case each, ``rounds`` times (the command's
  defaults: the same network and companion, shared memory auto).

The two paths run one after the other at each level, so that both see the same load; the load average (1 min)
around each row is printed: on a shared machine compare rows of similar load. Memory: the peak resident set
(VmHWM) of each process of the server (tritonserver and its backend stubs), reset before each row
(``/proc/PID/clear_refs``) and summed: an upper bound of the server's peak. The pipeline instances' own peak (the
largest stub of brats_segment) is the memory per instance its config is chosen from.

Uses ``--repository`` (exported with ``--pipeline``) or exports ONNX + OpenVINO with the pipeline (demo
checkpoint) into a temporary folder first. Run it on an otherwise quiet machine; it takes a few minutes with the
default small case.

    .venv/bin/python benchmarks/bench_pipeline_concurrency.py [--repository out/repo] [--shape 112,96,80]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_end_to_end import machine  # noqa: E402
from bench_pipeline import export_pipeline_repository  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "integration"
MIB = 2**20
PIPELINE = "brats_segment"


def _stub_model(pid: int) -> str:
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if cmd and cmd[0].endswith(b"triton_python_backend_stub"):
        return cmd[1].decode().split(os.sep)[-3]  # <repository>/<model>/<version>/model.py
    return Path(cmd[0].decode()).name if cmd and cmd[0] else "?"


def reset_peaks(pgid: int) -> None:
    from brats_serve.processes import running_in_group

    for pid in running_in_group(pgid):
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak resident set size


def peaks(pgid: int) -> dict[str, list[float]]:
    """VmHWM in MiB of each process of the server's group, by model (tritonserver itself by its name)."""
    from brats_serve.processes import running_in_group

    found: dict[str, list[float]] = {}
    for pid in running_in_group(pgid):
        try:
            name = _stub_model(pid)
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
        found.setdefault(name, []).append(hwm / 1024)
    return found


def tensor_level(url: str, cases: list[Path], level: int, rounds: int, out: Path) -> tuple[float, list[float]]:
    """``level`` brats-client processes at once, ``rounds`` times: (cases/s, latencies in s)."""
    latencies: list[float] = []
    start = time.perf_counter()
    for r in range(rounds):
        procs = []
        for i in range(level):
            case = cases[(r * level + i) % len(cases)]
            cmd = [sys.executable, "-m", "brats_client.cli", "--quiet", "segment", str(case), "-o",
                   str(out / f"t{level}_{r}_{i}.nii.gz"), "--url", url, "--overwrite"]
            procs.append((time.perf_counter(), subprocess.Popen(cmd)))
        for t0, proc in procs:
            if proc.wait(timeout=1800) != 0:
                raise SystemExit(f"brats-client exited {proc.returncode}")
            latencies.append(time.perf_counter() - t0)
    return level * rounds / (time.perf_counter() - start), latencies


def brats_memory(repo: Path, tmp: Path) -> int:
    """One whole BraTS-size phantom case through the pipeline; the largest brats_segment stub's VmHWM."""
    from brats_demo.phantom import write_case
    from brats_export.phantom import make_phantom
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    case = write_case(make_phantom(9005), tmp / "brats", "Phantom_9005")
    config = TritonServerConfig(repo, grpc_port=0, http_port=0, metrics_port=0, log_path=tmp / "server.log")
    with TritonServer(config) as server:
        idle = max(peaks(server.pid).get(PIPELINE, [0]))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "brats_client.cli", "--quiet", "segment", str(case), "-o",
                        str(tmp / "brats.nii.gz"), "--url", server.grpc_url, "--model", PIPELINE, "--tta", "none"],
                       check=True)
        seconds = time.perf_counter() - start
        found = peaks(server.pid).get(PIPELINE, [0])
    print(f"BraTS-size case (240x240x155), tta none, {seconds:.1f} s: brats_segment instances' VmHWM "
          f"{', '.join(f'{v:.0f}' for v in found)} MiB (loaded, before the case: {idle:.0f} MiB)")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, help="an exported repository with brats_segment (default: export)")
    p.add_argument("--checkpoint", type=Path, default=ROOT / "demo" / "brats_demo_checkpoint.pth")
    p.add_argument("--shape", default="112,96,80", help="phantom case shape (default %(default)s: the tests' "
                   "small case; 160,176,128 is a medium one)")
    p.add_argument("--concurrency", default="1,2,4")
    p.add_argument("--request-count", type=int, default=3, help="perf_analyzer requests per window")
    p.add_argument("--rounds", type=int, default=2, help="tensor path: rounds of N cases at once")
    p.add_argument("--brats-memory", action="store_true",
                   help="only measure one pipeline instance's peak memory for a whole BraTS-size phantom case "
                   "(240x240x155, tta none: the flips run in the network's process)")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    shape = tuple(int(s) for s in args.shape.split(","))

    from brats_client import ServerOptions, perf
    from brats_client.modalities import find_case_files
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    sys.path.insert(0, str(TESTS))
    from conftest import write_small_phantom_case

    for key, value in machine().items():
        print(f"{key}: {value}")
    with tempfile.TemporaryDirectory(prefix="brats_concurrency_") as tmp:
        tmp = Path(tmp)
        repo = args.repository
        if repo is None:
            repo = tmp / "model_repository"
            code = export_pipeline_repository(args.checkpoint, repo)
            if code:
                return code
        if args.brats_memory:
            return brats_memory(repo, tmp)
        cases = [write_small_phantom_case(tmp / "cases", seed, shape) for seed in (9401, 9402)]
        print(f"cases: {', '.join(c.name for c in cases)}, {'x'.join(map(str, shape))} voxels (phantoms, "
              f"1 x 1 x 1.2 mm), four .nii.gz files of {sum(f.stat().st_size for f in cases[0].glob('*_[tf]*')):,} "
              "bytes")
        rows = []
        config = TritonServerConfig(repo, grpc_port=0, http_port=0, metrics_port=0, log_path=tmp / "server.log")
        with TritonServer(config) as server:
            pgid = server.pid
            inputs = perf.write_case_files(find_case_files(cases[0]), tmp / "input_data.json")
            subprocess.run([sys.executable, "-m", "brats_client.cli", "--quiet", "segment", str(cases[0]), "-o",
                            str(tmp / "warm.nii.gz"), "--url", server.grpc_url, "--model", PIPELINE], check=True)
            for level in levels:  # the two paths one after the other at each level: the same load around both
                reset_peaks(pgid)
                load = os.getloadavg()[0]
                row = perf.run_sweep(server=ServerOptions(url=server.grpc_url, model=PIPELINE), inputs=inputs,
                                     concurrency=[level], csv_path=tmp / f"perf_{level}.csv",
                                     request_count=args.request_count, stability_percentage=1000)[0]
                mem = peaks(pgid)
                rows.append(("pipeline", level, row.throughput_per_s, row.p50_ms / 1e3, row.p95_ms / 1e3,
                             sum(map(sum, mem.values())), max(mem.get(PIPELINE, [0])),
                             (load + os.getloadavg()[0]) / 2))
                print(rows[-1], flush=True)
                reset_peaks(pgid)
                load = os.getloadavg()[0]
                rate, latencies = tensor_level(server.grpc_url, cases, level, args.rounds, tmp)
                mem = peaks(pgid)
                rows.append(("tensors", level, rate, float(np.percentile(latencies, 50)),
                             float(np.percentile(latencies, 95)), sum(map(sum, mem.values())), 0.0,
                             (load + os.getloadavg()[0]) / 2))
                print(rows[-1], flush=True)
            final = peaks(pgid)
    print(f"\n{'path':<9} {'N':>2} {'cases/s':>8} {'p50 s':>7} {'p95 s':>7} {'server peak MiB':>16} "
          f"{'per instance MiB':>17} {'load':>5}")
    for path, level, rate, p50, p95, total, instance, load in rows:
        print(f"{path:<9} {level:>2} {rate:>8.4f} {p50:>7.1f} {p95:>7.1f} {total:>16.0f} "
              f"{instance:>17.0f} {load:>5.1f}")
    print("\nprocesses at the end (VmHWM since the last reset, MiB):")
    for name, values in sorted(final.items()):
        print(f"  {name:<24} {', '.join(f'{v:.0f}' for v in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

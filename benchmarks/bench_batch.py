"""The client's ceiling on a batch: ``brats-client segment FOLDER`` against an instant stand-in model, one case
after another (``--cases-in-memory 1``) and overlapped (the default, 3), on BraTS-grid phantoms.

The model (benchmarks/instant_model.py) is served by the real ``tritonserver`` on free loopback ports and answers
at once, so what is measured is the client: loading, preprocessing, the tensors to and from the server (shared
memory, the default on loopback), the flips and blending, labels and the gzip writes, plus the server's own handling
of the tensors. Each run is a fresh process (its peak RSS is its own); every run writes its own output folder and
the labels of all runs must be equal. Defaults as users run them (whole-crop tile, four flips, 2 requests in flight).

    .venv/bin/python benchmarks/bench_batch.py                      # 6 cases, 3 rounds: writes out/bench_batch.md
    .venv/bin/python benchmarks/bench_batch.py --cases 3 --rounds 1 # quicker

Figures: wall time of the batch (from ``cli.main`` called to returned, imports done before); the sum of the
per-case times in the reports (``time_s.total``: load + preprocess + inference + postprocess + write); their
ratio; cases/s; CPU seconds per case of the client (after its imports) and of the server; how many CPUs those
kept busy on average; peak RSS of the client process; the share of the CPUs that other processes used meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import instant_model  # noqa: E402
from bench_end_to_end import CpuMeter, machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SLOW = "brats_slow"  # the instant model with --server-delay-s per request

# Runs brats-client in a fresh interpreter and reports its wall time and peak RSS as one JSON line.
CHILD = """
import json, resource, sys, time
from brats_client import batch, cli, commands, pipeline, transport  # imported before the clock starts

def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

cpu0, t0 = cpu_s(), time.perf_counter()
code = cli.main(sys.argv[1:])
wall_s, cpu1 = time.perf_counter() - t0, cpu_s()
print(json.dumps({"code": code, "wall_s": wall_s, "client_cpu_s": cpu1 - cpu0, "child_cpu_s": cpu1,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


class TreeMeter(CpuMeter):
    """Also the CPU seconds of this process's tree since ``restart``: the client run and the server with its stubs."""

    def ours_s(self) -> float:
        _, _, ours = self._sample()
        return (ours - self.start[2]) / self.hz


def write_cases(root: Path, count: int, first_seed: int) -> list[str]:
    from brats_demo.phantom import make_phantom, write_case

    ids = []
    for seed in range(first_seed, first_seed + count):
        case_id = f"Phantom_{seed}"
        write_case(make_phantom(seed), root, case_id)
        ids.append(case_id)
    return ids


def run_batch(cases: Path, out: Path, url: str, in_memory: int, model: str = instant_model.NAME) -> dict:
    argv = ["--quiet", "segment", str(cases), "-o", str(out), "--url", url, "--model", model,
            "--cases-in-memory", str(in_memory), "--report", str(out.with_suffix(".summary.json"))]
    meter = TreeMeter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, timeout=1800,
                          env=os.environ.copy(), check=False)
    others, cpu_s = meter.others(), meter.ours_s()
    if proc.returncode != 0:
        raise RuntimeError(f"brats-client failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        raise RuntimeError(f"brats-client exited {result['code']}:\n{proc.stderr[-3000:]}")
    reports = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    stages = {}
    for r in reports:
        for k, v in r["time_s"].items():
            stages[k] = stages.get(k, 0.0) + v
    server_cpu_s = cpu_s - result.pop("child_cpu_s")  # the tree: this process (idle), the child, the server
    result.update(model=model, in_memory=in_memory, cases=len(reports), summed_s=stages.pop("total"), stages_s=stages,
                  others=others, cpu_s=result["client_cpu_s"] + server_cpu_s, server_cpu_s=server_cpu_s,
                  shared_memory=all(r["server"]["shared_memory"] for r in reports))
    return result


def labels_of(out: Path) -> dict[str, np.ndarray]:
    import nibabel as nib

    return {p.name: np.asanyarray(nib.load(str(p)).dataobj) for p in sorted(out.glob("*.nii.gz"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=6, help="BraTS-grid phantom cases in the batch (default 6)")
    p.add_argument("--first-seed", type=int, default=9301)
    p.add_argument("--in-memory", default="1,2,3", help="--cases-in-memory values to compare (default 1,2,3)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each value, interleaved (default 3)")
    p.add_argument("--server-delay-s", type=float, default=0.5,
                   help="also runs against a model that waits this long per request, like a remote GPU server "
                   "(default 0.5; 0: not)")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_batch.md")
    args = p.parse_args(argv)
    from brats_serve.launcher import TritonServer

    values = [int(v) for v in args.in_memory.split(",")]
    started = datetime.now(timezone.utc)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        work = Path(tmp)
        write_cases(work / "cases", args.cases, args.first_seed)
        repo = instant_model.write_repository(work / "repository")
        models = [instant_model.NAME]
        if args.server_delay_s > 0:
            models.append(SLOW)
            instant_model.write_repository(repo, SLOW, delay_s=args.server_delay_s)
        runs: list[dict] = []
        with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0) as server:
            run_batch(work / "cases", work / "warm", server.grpc_url, 1)  # first-touch costs of the server
            reference = None
            for model in models:
                for r in range(args.rounds):
                    for n in values:
                        out = work / f"out_{model}_{n}_{r}"
                        runs.append(run_batch(work / "cases", out, server.grpc_url, n, model))
                        labels = labels_of(out)
                        reference = reference or labels
                        assert labels.keys() == reference.keys() and all(
                            np.array_equal(labels[k], reference[k]) for k in labels
                        ), f"{model}, --cases-in-memory {n}: other labels than the first run"
                        print(json.dumps(runs[-1]), file=sys.stderr)
    load_end = os.getloadavg()
    text = render(args, len(values), runs, machine(), started, load_start, load_end)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


def _row(label: str, r: dict, seq_sum_s: float | None) -> str:
    vs_seq = f"{r['wall_s'] / seq_sum_s:.2f}x" if seq_sum_s else "-"
    return (
        f"| {label} | {r['wall_s']:.2f} | {r['cases'] / r['wall_s']:.2f} | {r['summed_s']:.2f} | "
        f"{r['wall_s'] / r['summed_s']:.2f}x | {vs_seq} | {r['client_cpu_s'] / r['cases']:.2f} + "
        f"{r['server_cpu_s'] / r['cases']:.2f} | {r['cpu_s'] / r['wall_s']:.2f} | {r['peak_rss_mib']:.0f} | "
        f"{r['others']:.0%} |"
    )


def render(args, per_round: int, runs: list[dict], mach: dict, started, load_start, load_end) -> str:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() or "?"
    header = [
        "| --cases-in-memory | batch wall s | cases/s | summed per-case s | wall / own sum | wall / sequential sum "
        "| CPU s per case, client + server | CPUs busy (ours) | peak RSS MiB | others |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines = [
        "## Batch throughput: cases overlapped, the client's ceiling (`benchmarks/bench_batch.py`)",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC at commit `{commit}`: `.venv/bin/python benchmarks/bench_batch.py "
        f"--cases {args.cases} --rounds {args.rounds} --in-memory {args.in_memory}`, {len(runs)} measured runs "
        "(the values interleaved, round after round) after one warm-up run.",
        "",
        f"- CPU: {mach['cpu']}; {mach['cores']}",
        f"- flags: {mach['flags']}; memory {mach['memory']}; {mach['os']}",
        f"- load average (1/5/15 min) at start {'/'.join(f'{x:.1f}' for x in load_start)}, at end "
        f"{'/'.join(f'{x:.1f}' for x in load_end)} (a shared machine); 'others' is the share of the CPUs that "
        "other processes used during the run",
        f"- {args.cases} BraTS-grid phantoms (240x240x155, int16 NIfTI, seeds {args.first_seed}..) in one folder; "
        f"the instant model `{instant_model.NAME}` (python backend, `INPUT__0[:, :3] > 0`) on the real "
        "tritonserver 2.51 of nvidia-pytriton, loopback, shared memory "
        f"{'on' if all(r['shared_memory'] for r in runs) else 'not always on'} (the default there); client defaults "
        "(whole-crop tile, flip4, 2 requests in flight). The labels of every run are equal.",
        "- wall / sequential sum: the batch's wall time over the summed per-case times of the sequential run of the "
        "same round",
    ]
    if any(r["model"] == SLOW for r in runs):
        lines.append(f"- `{SLOW}`: the same model waiting {args.server_delay_s:g} s per request (one at a time) "
                     "without using a CPU, like a remote GPU server's compute and transfer time")
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == model]
        lines += ["", f"`{model}`, every run:", "", *header]
        for i, r in enumerate(mine):
            first = i - i % per_round
            seq = next((x for x in mine[first:first + per_round] if x["in_memory"] == 1), None)
            lines.append(_row(f"{r['in_memory']} (round {i // per_round + 1})", r, seq and seq["summed_s"]))
        lines += ["", f"`{model}`: per-case stage times summed over the batch (s):", "",
                  "| --cases-in-memory | " + " | ".join(mine[0]["stages_s"]) + " |",
                  "| --- |" + " --- |" * len(mine[0]["stages_s"])]
        for i, r in enumerate(mine):
            lines.append(f"| {r['in_memory']} (round {i // per_round + 1}) | "
                         + " | ".join(f"{v:.2f}" for v in r["stages_s"].values()) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

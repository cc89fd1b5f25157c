"""The client on a batch: ``brats-client segment FOLDER`` one case after another (``--cases-in-memory 1``) and
overlapped (the default, 3), with the client's own test-time flips (``--server-flips off``) and with the server's
(``on``: the plain model's flip4 companion, one request per tile), on BraTS-grid phantoms.

By default against instant stand-in models (benchmarks/instant.py, each with its flip4 companion): served by
the real ``tritonserver`` on free loopback ports, they answer at once, so what is measured is the client's ceiling:
loading, preprocessing, the tensors to and from the server (shared memory, the default on loopback), the flips and
blending, labels and the gzip writes, plus the server's own handling of the tensors. With ``--repository`` the same
batches run against the real network of an exported repository (``brats-export``) in the same local server: cases/s
of the whole local set-up. Each run is a fresh process (its peak RSS is its own); every run writes its own output
folder. Against the instant models the labels of all runs must be equal; against the network the voxels that differ
from the first run are counted. Defaults as users run them (whole-crop tile, flip4, 2 requests in flight).

    .venv/bin/python benchmarks/bench_batch.py                       # 6 cases, 3 rounds: writes out/bench_batch.md
    .venv/bin/python benchmarks/bench_batch.py --cases 2 --rounds 1 --in-memory 1,3 --server-delay-s 0  # smoke
    .venv/bin/brats-export --checkpoint demo/brats_demo_checkpoint.pth --repository /tmp/brats_repo --formats openvino
    .venv/bin/python benchmarks/bench_batch.py --repository /tmp/brats_repo --model brats_openvino \\
        --rounds 1 --in-memory 1,3                                   # the network: out/bench_batch_brats_openvino.md

Figures: wall time of the batch (from ``cli.main`` called to returned, imports done before); the sum of the
per-case times in the reports (``time_s.total``: load + preprocess + inference + postprocess + write); their
ratio, and the ratio to the summed per-case times of the sequential run of the same round and flips (issue 15's
goal: the overlapped batch <= 0.6x those); cases/s; requests per case; CPU seconds per case of the client (after its
imports) and of the server; how many CPUs those kept busy on average; peak RSS of the client process; the share of
the CPUs that other processes used meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_end_to_end import CpuMeter, machine  # noqa: E402
from brats_client.atomic import write_text_atomic  # noqa: E402
from brats_client.server_flips import COMPANION_KEY  # noqa: E402
from brats_serve import instant  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SLOW = "brats_slow"  # the instant model with --server-delay-s per request
FLIP_MODES = ("off", "on")  # --server-flips: the client flips; the companion flips (when the model names one)
FLIPS_LABEL = {"off": "client", "on": "server"}

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
    from brats_demo.phantom import write_case
    from brats_export.phantom import make_phantom

    ids = []
    for seed in range(first_seed, first_seed + count):
        case_id = f"Phantom_{seed}"
        write_case(make_phantom(seed), root, case_id)
        ids.append(case_id)
    return ids


def companion_of(repository: Path, model: str) -> str | None:
    """The server-side-flip companion that ``model``'s config names (parameter ``brats_server_flips_model``)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = text_format.Parse((repository / model / "config.pbtxt").read_text(), mc.ModelConfig())
    name = config.parameters[COMPANION_KEY].string_value if COMPANION_KEY in config.parameters else ""
    return name or None


def check_weights(repository: Path, models: list[str]) -> None:
    """Each model's version folder holds files: an exported repository, not only the committed configs."""
    for model in models:
        version = repository / model / "1"
        if not version.is_dir() or not any(version.iterdir()):
            raise SystemExit(f"{version} holds no model files: export them first, e.g. .venv/bin/brats-export "
                             f"--checkpoint demo/brats_demo_checkpoint.pth --repository {repository} --formats "
                             f"{model.removeprefix('brats_')}")


def run_batch(cases: Path, out: Path, url: str, in_memory: int, model: str = instant.NAME,
              server_flips: str = "on") -> dict:
    argv = ["--quiet", "segment", str(cases), "-o", str(out), "--url", url, "--model", model,
            "--cases-in-memory", str(in_memory), "--server-flips", server_flips,
            "--report", str(out.with_suffix(".summary.json"))]
    meter = TreeMeter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, timeout=3600,
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
    computes = [r["server_compute_s"] for r in reports]
    server_cpu_s = cpu_s - result.pop("child_cpu_s")  # the tree: this process (idle), the child, the server
    result.update(model=model, flips=server_flips, in_memory=in_memory, cases=len(reports),
                  summed_s=stages.pop("total"), stages_s=stages,
                  server_compute_s=None if None in computes else sum(computes),
                  others=others, cpu_s=result["client_cpu_s"] + server_cpu_s, server_cpu_s=server_cpu_s,
                  shared_memory=all(r["server"]["shared_memory"] for r in reports),
                  served=sorted({r["server"]["model"] for r in reports}),
                  server_flips=sorted({str(r["server"]["server_flips"]) for r in reports}),
                  tiles=sum(r["tiles"] for r in reports), requests=sum(r["requests"] for r in reports),
                  one_request_per_tile=all(r["requests"] == r["tiles"] for r in reports))
    return result


def check_flips(run: dict, companion: str | None) -> None:
    """The run used what its row says: the companion and one request per tile (on), the client's flips (off)."""
    what = f"{run['model']} --server-flips {run['flips']} --cases-in-memory {run['in_memory']}"
    if run["flips"] == "on" and companion:
        assert run["served"] == [companion] and run["server_flips"] == [instant.SERVER_FLIPS], (what, run)
        assert run["one_request_per_tile"], (what, run)
    else:
        assert run["served"] == [run["model"]] and run["server_flips"] == ["None"], (what, run)
        assert run["requests"] > run["tiles"], (what, run)  # flip4 in requests of max_batch_size flips or fewer


def labels_of(out: Path) -> dict[str, np.ndarray]:
    import nibabel as nib

    return {p.name: np.asanyarray(nib.load(str(p)).dataobj) for p in sorted(out.glob("*.nii.gz"))}


def differing_voxels(labels: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> int:
    assert labels.keys() == reference.keys(), (sorted(labels), sorted(reference))
    return int(sum(np.count_nonzero(labels[k] != reference[k]) for k in labels))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=6, help="BraTS-grid phantom cases in the batch (default 6)")
    p.add_argument("--first-seed", type=int, default=9301)
    p.add_argument("--in-memory", default="1,2,3", help="--cases-in-memory values to compare (default 1,2,3)")
    p.add_argument("--server-flips", default=",".join(FLIP_MODES),
                   help="--server-flips values to compare: off (the client flips), on (the companion does, one "
                   "request per tile) (default off,on)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each pair of values, interleaved (default 3)")
    p.add_argument("--server-delay-s", type=float, default=0.5,
                   help="instant models: also runs against a model that waits this long per request, like a remote "
                   "GPU server (its companion waits four times that: four passes in one request) (default 0.5; 0: "
                   "not)")
    p.add_argument("--repository", type=Path, default=None,
                   help="serve this exported repository (brats-export, weights in <model>/1/) instead of the instant "
                   "models: the real network in the local server")
    p.add_argument("--model", default="brats_openvino",
                   help="with --repository: the plain model; its companion, named in its config, is served too "
                   "(default brats_openvino)")
    p.add_argument("--model-config-name", default=None,
                   help="with --repository: tritonserver --model-config-name (a variant: bf16, gpu)")
    p.add_argument("--out", type=Path, default=None,
                   help="Markdown written (default out/bench_batch.md; with --repository out/bench_batch_MODEL.md)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.values = [int(v) for v in args.in_memory.split(",")]
    args.modes = [m.strip() for m in args.server_flips.split(",")]
    if not args.values or min(args.values) < 1:
        p.error(f"--in-memory: values >= 1, got {args.in_memory!r}")
    if not args.modes or set(args.modes) - set(FLIP_MODES):
        p.error(f"--server-flips: values among {', '.join(FLIP_MODES)}, got {args.server_flips!r}")
    if args.repository is None and args.model_config_name:
        p.error("--model-config-name goes with --repository")
    if args.out is None:
        args.out = ROOT / "out" / ("bench_batch.md" if args.repository is None else f"bench_batch_{args.model}.md")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    if args.repository is not None:  # checked before anything is written
        repo, models, exact = args.repository.resolve(), [args.model], False
        companions = {args.model: companion_of(repo, args.model)}
        check_weights(repo, [n for n in (args.model, companions[args.model]) if n])
    started = datetime.now(timezone.utc)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        work = Path(tmp)
        ids = write_cases(work / "cases", args.cases, args.first_seed)
        shutil.copytree(work / "cases" / ids[0], work / "warm_cases" / ids[0])  # a one-case batch, for warm-ups
        if args.repository is None:
            repo = instant.write_repository(work / "repository", server_flips=True)
            models = [instant.NAME]
            if args.server_delay_s > 0:
                models.append(SLOW)
                instant.write_repository(repo, SLOW, delay_s=args.server_delay_s, server_flips=True,
                                               companion_delay_s=4 * args.server_delay_s)
            exact = True
            companions = {m: companion_of(repo, m) for m in models}
        served = [n for m in models for n in (m, companions[m]) if n]
        runs: list[dict] = []
        with TritonServer(TritonServerConfig(
            repo, models=served, grpc_port=0, http_port=0, metrics_port=0, model_config_name=args.model_config_name,
            log_path=work / "tritonserver.log", startup_timeout_s=300
        )) as server:
            reference = None
            for model in models:
                for flips in args.modes:  # first-touch costs of the server, the model and the companion
                    run_batch(work / "warm_cases", work / f"warm_{model}_{flips}", server.grpc_url, 1, model, flips)
                for r in range(args.rounds):
                    for flips in args.modes:
                        for n in args.values:
                            out = work / f"out_{model}_{flips}_{n}_{r}"
                            run = run_batch(work / "cases", out, server.grpc_url, n, model, flips)
                            check_flips(run, companions[model])
                            labels = labels_of(out)
                            reference = reference or labels
                            run.update(round=r, differing_voxels=differing_voxels(labels, reference))
                            assert not exact or run["differing_voxels"] == 0, \
                                f"{model}, --server-flips {flips}, --cases-in-memory {n}: other labels than run 1"
                            runs.append(run)
                            print(json.dumps(runs[-1]), file=sys.stderr)
    load_end = os.getloadavg()
    text = render(args, runs, companions, exact, machine(), started, load_start, load_end)
    write_text_atomic(text, args.out)
    print(text)
    return 0


def sequential_sum(runs: list[dict], run: dict) -> float | None:
    """The summed per-case times of the sequential run of ``run``'s model, flips and round."""
    seq = next((x for x in runs if x["in_memory"] == 1 and all(x[k] == run[k] for k in ("model", "flips", "round"))),
               None)
    return seq and seq["summed_s"]


def _row(label: str, r: dict, seq_sum_s: float | None, exact: bool) -> str:
    vs_seq = f"{r['wall_s'] / seq_sum_s:.2f}x" if seq_sum_s else "-"
    cells = [
        label, f"{r['wall_s']:.2f}", f"{r['cases'] / r['wall_s']:.3f}", f"{r['summed_s']:.2f}",
        f"{r['wall_s'] / r['summed_s']:.2f}x", vs_seq, f"{r['requests'] / r['cases']:g}",
        f"{r['client_cpu_s'] / r['cases']:.2f} + {r['server_cpu_s'] / r['cases']:.2f}",
        f"{r['cpu_s'] / r['wall_s']:.2f}", f"{r['peak_rss_mib']:.0f}", f"{r['others']:.0%}",
    ]
    if not exact:
        cells.append(f"{r['differing_voxels']}")
    return "| " + " | ".join(cells) + " |"


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def summary(runs: list[dict], models: list[str], modes: list[str], values: list[int], rounds: int) -> list[str]:
    """Medians over the rounds, per model, flips and --cases-in-memory."""
    lines = [
        f"Medians over {rounds} round(s):",
        "",
        "| model | flips | --cases-in-memory | batch wall s | cases/s | wall / own sum | wall / sequential sum "
        "| requests per case |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model in models:
        for flips in modes:
            for n in values:
                mine = [r for r in runs if r["model"] == model and r["flips"] == flips and r["in_memory"] == n]
                if not mine:
                    continue
                seq = [r["wall_s"] / s for r in mine if (s := sequential_sum(runs, r))]
                lines.append(
                    f"| `{model}` | {FLIPS_LABEL[flips]} (`--server-flips {flips}`) | {n} | "
                    f"{_median([r['wall_s'] for r in mine])} | "
                    f"{statistics.median(r['cases'] / r['wall_s'] for r in mine):.3f} | "
                    f"{_median([r['wall_s'] / r['summed_s'] for r in mine])}x | "
                    f"{_median(seq) + 'x' if seq else '-'} | "
                    f"{statistics.median(r['requests'] / r['cases'] for r in mine):g} |")
    return lines


def render(args, runs: list[dict], companions: dict[str, str | None], exact: bool, mach: dict, started, load_start,
           load_end) -> str:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() or "?"
    models = list(dict.fromkeys(r["model"] for r in runs))
    header = [
        "| flips, --cases-in-memory | batch wall s | cases/s | summed per-case s | wall / own sum "
        "| wall / sequential sum | requests per case | CPU s per case, client + server | CPUs busy (ours) "
        "| peak RSS MiB | others |" + ("" if exact else " voxels != first run |"),
        "| --- |" + " --- |" * (10 if exact else 11),
    ]
    if args.repository is None:
        title = "## Batch throughput: cases overlapped, the client's ceiling (`benchmarks/bench_batch.py`)"
        served = (f"the instant model `{instant.NAME}` (python backend, `INPUT__0[:, :3] > 0`) and its "
                  f"companion `{companions[instant.NAME]}` (the same map, batch 1, config parameter "
                  "`brats_server_flips: flip4`: the flip average of a 0/1 map that commutes with flips is the map)")
        labels = "The labels of every run are equal (checked)."
    else:
        title = f"## Batch throughput: cases overlapped, the network `{args.model}` (`benchmarks/bench_batch.py`)"
        try:
            manifest = json.loads((args.repository / "manifest.json").read_text())
            source = f", exported from `{manifest['checkpoint']['path']}` (sha256 " \
                     f"{manifest['checkpoint']['sha256'][:12]}...)"
        except (OSError, ValueError, KeyError, TypeError):
            source = ""
        companion = (f"its companion `{companions[args.model]}`" if companions[args.model]
                     else "no companion (its config names none: `on` flips on the client too)")
        served = (f"`{args.model}` and {companion} from `{args.repository}`{source}"
                  + (f", `--model-config-name {args.model_config_name}`" if args.model_config_name else ""))
        labels = ("'voxels != first run': label voxels (all cases) that differ from the first measured run "
                  "(client and server flips average in another order, and batching may differ).")
    lines = [
        title,
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC at commit `{commit}`: `.venv/bin/python benchmarks/bench_batch.py "
        f"{' '.join(args.argv)}`, {len(runs)} measured runs (flips and --cases-in-memory {args.in_memory} "
        "interleaved, round after round) after one one-case warm-up run per model and flips.",
        "",
        f"- CPU: {mach['cpu']}; {mach['cores']}",
        f"- flags: {mach['flags']}; memory {mach['memory']}; {mach['os']}",
        f"- load average (1/5/15 min) at start {'/'.join(f'{x:.1f}' for x in load_start)}, at end "
        f"{'/'.join(f'{x:.1f}' for x in load_end)} (a shared machine); 'others' is the share of the CPUs that "
        "other processes used during the run",
        f"- {args.cases} BraTS-grid phantoms (240x240x155, int16 NIfTI, seeds {args.first_seed}..) in one folder; "
        f"{served}; on the real tritonserver 2.51 of nvidia-pytriton, loopback, shared memory "
        f"{'on' if all(r['shared_memory'] for r in runs) else 'not always on'} (the default there); client defaults "
        "(whole-crop tile, flip4, 2 requests in flight). " + labels,
        "- flips: client = `--server-flips off` (the client sends the four flips and averages them); server = "
        "`--server-flips on` (the companion flips: one request per tile, checked in every report)",
        "- wall / sequential sum: the batch's wall time over the summed per-case times of the sequential run "
        "(`--cases-in-memory 1`) of the same round and flips; issue 15's goal: <= 0.6x for the overlapped batch",
    ]
    if SLOW in models:
        lines.append(f"- `{SLOW}`: the same model waiting {args.server_delay_s:g} s per request (one at a time) "
                     "without using a CPU, like a remote GPU server's compute and transfer time; its companion waits "
                     f"{4 * args.server_delay_s:g} s (four passes in one request)")
    lines += ["", *summary(runs, models, args.modes, args.values, args.rounds)]
    for model in models:
        mine = [r for r in runs if r["model"] == model]
        lines += ["", f"`{model}`, every run:", "", *header]
        for r in mine:
            label = f"{FLIPS_LABEL[r['flips']]}, {r['in_memory']} (round {r['round'] + 1})"
            lines.append(_row(label, r, sequential_sum(runs, r), exact))
        stages = list(mine[0]["stages_s"])
        lines += ["", f"`{model}`: per-case stage times summed over the batch, and the server's compute time (s):",
                  "", "| flips, --cases-in-memory | " + " | ".join(stages) + " | server compute |",
                  "| --- |" + " --- |" * (len(stages) + 1)]
        for r in mine:
            compute = "-" if r["server_compute_s"] is None else f"{r['server_compute_s']:.2f}"
            lines.append(f"| {FLIPS_LABEL[r['flips']]}, {r['in_memory']} (round {r['round'] + 1}) | "
                         + " | ".join(f"{r['stages_s'][k]:.2f}" for k in stages) + f" | {compute} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

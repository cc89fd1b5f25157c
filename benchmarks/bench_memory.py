"""Peak resident memory, measured (issue 23): what a machine needs to run each part.

- Each served model's backend process for one BraTS case through the real local server: the plain model with the
  client's four flips (``--server-flips off``, two requests in flight as users run it; the default on this host)
  and its ``_flip4`` companion (``--server-flips on``; the default for a server on another host), every format;
  the labels of the two are compared voxel by voxel.
- ``brats-export`` (every format and companion, every parity row), ``brats-client segment`` for one case and for a
  batch of three (the default three cases in memory), and ``make demo`` (``brats-demo run``).

Linux only (/proc). A process's own peak is the kernel's ``VmHWM`` (backend processes, read before the server
stops) or ``ru_maxrss`` from ``wait4`` (commands: the largest single process of the command and what it waited
for); a command's whole tree (a demo's server and backends included) is the peak of the sum of ``VmRSS`` over
its processes, sampled every 0.2 s.

    .venv/bin/python benchmarks/bench_memory.py                     # ~25 min on 2 cores: out/bench_memory.md
    .venv/bin/python benchmarks/bench_memory.py --repository R      # reuse an export (no export row)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_end_to_end import machine  # noqa: E402

FORMATS = ("onnx", "torchscript", "openvino")
SAMPLE_S = 0.2
GIB = 2**30


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_rss_bytes(root: int) -> int:
    """The summed VmRSS of ``root`` and every descendant now."""
    tree, total, todo = _children(), 0, [root]
    while todo:
        pid = todo.pop()
        total += (_status_kib(pid, "VmRSS") or 0) * 1024
        todo += tree.get(pid, [])
    return total


@dataclass
class Measured:
    wall_s: float
    own_peak_bytes: int  # ru_maxrss of the command's largest process (wait4)
    tree_peak_bytes: int  # the peak of the tree's summed RSS (sampled)
    returncode: int


def run_measured(argv: list[str], log: Path) -> Measured:
    """Run ``argv`` to its end (its output into ``log``), sampling the RSS of its process tree."""
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_bytes(proc.pid))
            done.wait(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(time.perf_counter() - start, usage.ru_maxrss * 1024, peak[0], proc.returncode)


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f} GiB"


def _segment(url: str, model: str, case: Path, out: Path, *extra: str) -> Measured:
    argv = [str(BIN / "brats-client"), "--quiet", "segment", str(case), "-o", str(out), "--url", url,
            "--model", model, *extra]
    measured = run_measured(argv, log=out.with_suffix(".log"))
    if measured.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {measured.returncode}: {out.with_suffix('.log').read_text()}")
    return measured


def served_rows(repository: Path, case: Path, work: Path) -> list[dict]:
    """Per format: the plain model with client flips, then the companion; backend VmHWM and label agreement."""
    import nibabel as nib
    import numpy as np
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    rows = []
    for fmt in FORMATS:
        plain, companion = f"brats_{fmt}", f"brats_{fmt}_flip4"
        labels = {}
        for name, models, extra in ((plain, [plain], ("--server-flips", "off")),
                                    (companion, [plain, companion], ("--server-flips", "on"))):
            out = work / f"{name}.nii.gz"
            with TritonServer(TritonServerConfig(
                repository, models=models, grpc_port=0, http_port=0, metrics_port=0, startup_timeout_s=600
            )) as server:
                client = _segment(server.grpc_url, plain, case, out, *extra)
                peaks = {b.model: _status_kib(b.pid, "VmHWM") for b in server.backend_processes()}
            labels[name] = np.asanyarray(nib.load(str(out)).dataobj)
            rows.append({"model": name, "flips": "client" if extra[-1] == "off" else "server",
                         "backend_peak": (peaks.get(name) or 0) * 1024, "client": client})
            print(f"{name}: backend {_gib(rows[-1]['backend_peak'])}, client {_gib(client.own_peak_bytes)}, "
                  f"{client.wall_s:.1f} s", flush=True)
        differ = int(np.count_nonzero(labels[plain] != labels[companion]))
        rows[-1]["ratio"] = rows[-1]["backend_peak"] / rows[-2]["backend_peak"]
        rows[-1]["voxels_differ"] = differ
    return rows


def batch_row(repository: Path, case: Path, work: Path) -> Measured:
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    cases = work / "batch_cases"
    for i in range(3):
        shutil.copytree(case, cases / f"{case.name}_{i}")
        for path in (cases / f"{case.name}_{i}").iterdir():
            path.rename(path.with_name(path.name.replace(case.name, f"{case.name}_{i}")))
    with TritonServer(TritonServerConfig(
        repository, models=["brats_openvino", "brats_openvino_flip4"], grpc_port=0, http_port=0, metrics_port=0,
        startup_timeout_s=600
    )) as server:
        return _segment(server.grpc_url, "brats_openvino", cases, work / "batch_out")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, help="an exported repository (skips the export row)")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "demo" / "brats_demo_checkpoint.pth")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench_memory.md")
    parser.add_argument("--skip-demo", action="store_true", help="no make-demo row")
    args = parser.parse_args()
    from brats_demo.phantom import case_id, write_case
    from brats_export.phantom import make_phantom

    lines = ["| machine | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in machine().items()), ""]
    work = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    case = write_case(make_phantom(9001), work / "cases", case_id(9001))
    commands: list[tuple[str, Measured]] = []
    repository = args.repository
    if repository is None:
        repository = work / "model_repository"
        measured = run_measured([str(BIN / "brats-export"), "--checkpoint", str(args.checkpoint), "--repository",
                                 str(repository)], log=work / "export.log")
        if measured.returncode != 0:
            raise RuntimeError(f"brats-export failed: {(work / 'export.log').read_text()[-3000:]}")
        commands.append(("brats-export (three formats and companions, every parity row)", measured))
        print(f"export: {_gib(measured.own_peak_bytes)} in {measured.wall_s:.0f} s", flush=True)
    rows = served_rows(repository, case, work)
    companion_client = next(r["client"] for r in rows if r["model"] == "brats_openvino_flip4")
    commands.append(("brats-client segment, one case (openvino companion, defaults)", companion_client))
    commands.append(("brats-client segment, a batch of 3 cases (defaults, 3 in memory)", batch_row(repository, case,
                                                                                                  work)))
    if not args.skip_demo:
        measured = run_measured([str(BIN / "brats-demo"), "run", "--out", str(work / "demo")],
                                log=work / "demo.log")
        commands.append(("make demo (brats-demo run: phantom, export, server, segment, preview)", measured))

    lines += ["One BraTS case (phantom 9001, 240 x 240 x 155; padded crop 144 x 176 x 144), local server; backend "
              "process peak (VmHWM):", "",
              "| model | flips | backend process peak | vs plain | voxels differing from plain |",
              "| --- | --- | --- | --- | --- |"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
        differ = str(r.get("voxels_differ", ""))
        lines.append(f"| `{r['model']}` | {r['flips']} | {_gib(r['backend_peak'])} | {ratio} | {differ} |")
    lines += ["", "| command | wall | largest process peak | whole tree peak |", "| --- | --- | --- | --- |"]
    for name, m in commands:
        lines.append(f"| {name} | {m.wall_s:.0f} s | {_gib(m.own_peak_bytes)} | {_gib(m.tree_peak_bytes)} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

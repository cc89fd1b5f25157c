"""The served pipeline (brats_segment) against the tensor path: bytes on the wire per case, cases per second and
the pipeline model's memory, measured side by side on one server.

Exports ONNX and OpenVINO with their flip4 companions and the pipeline model (demo checkpoint), starts the local
Triton server, and segments one full-size phantom case several times on each path, one case after another:

- tensors: ``brats-client segment`` with the command's defaults (OpenVINO, flip4 on its companion), tensors
  inside gRPC (``--shared-memory off``, as for a remote server);
- pipeline, gRPC: ``brats-client segment --model brats_segment`` (the four files go as they are);
- pipeline, HTTP: ``examples/segment_with_curl.sh`` (curl, the binary tensor extension).

Bytes are the loopback interface's transmit counter (``/sys/class/net/lo/statistics/tx_bytes``: both ways, with
gRPC/HTTP and TCP framing) around each case: run it on an otherwise quiet machine. Memory is the peak resident
set (VmHWM) of each model's backend process at the end. The labels of every run are checked equal.

    .venv/bin/python benchmarks/bench_pipeline.py [--seed 9003] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_end_to_end import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK_TX = Path("/sys/class/net/lo/statistics/tx_bytes")
CURL_SCRIPT = ROOT / "examples" / "segment_with_curl.sh"
MIB = 2**20


def _tx() -> int:
    return int(LOOPBACK_TX.read_text())


def _stub_peaks(pgid: int) -> dict[str, float]:
    """VmHWM in MiB of each python backend stub of the server's process group, by model."""
    from brats_serve.processes import running_in_group

    peaks = {}
    for pid in running_in_group(pgid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if not cmd or not cmd[0].endswith(b"triton_python_backend_stub"):
            continue
        model = cmd[1].decode().split(os.sep)[-3]  # <repository>/<model>/<version>/model.py
        hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        peaks[model] = max(peaks.get(model, 0.0), hwm / 1024)
    return peaks


def export_pipeline_repository(checkpoint: Path, repo: Path) -> int:
    """brats-export of ONNX and OpenVINO (their flip4 companions too) and the pipeline model; its exit code."""
    from brats_export import cli as export_cli

    return export_cli.main(["--checkpoint", str(checkpoint), "--repository", str(repo), "--formats", "onnx,openvino",
                            "--check-sizes", "32", "--skip-full-size-check", "--pipeline", "--quiet"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "demo" / "brats_demo_checkpoint.pth")
    p.add_argument("--seed", type=int, default=9003, help="phantom seed")
    p.add_argument("--repeats", type=int, default=2, help="cases per path (default %(default)s)")
    args = p.parse_args()

    from brats_client import cli
    from brats_demo.phantom import write_case
    from brats_export.phantom import make_phantom
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    for key, value in machine().items():
        print(f"{key}: {value}")
    with tempfile.TemporaryDirectory(prefix="brats_pipeline_") as tmp:
        tmp = Path(tmp)
        repo = tmp / "model_repository"
        code = export_pipeline_repository(args.checkpoint, repo)
        if code:
            return code
        case = write_case(make_phantom(args.seed), tmp / "cases", f"Phantom_{args.seed}")
        files_bytes = sum(f.stat().st_size for f in case.glob("*.nii.gz") if not f.name.endswith("_seg.nii.gz"))
        rows, labels = [], []
        with TritonServer(TritonServerConfig(
            repo, grpc_port=0, http_port=0, metrics_port=0, log_path=tmp / "server.log"
        )) as server:
            http = server.http_url if server.http_url.startswith("http") else f"http://{server.http_url}"
            paths = {
                "tensors (gRPC)": lambda out: cli.main(["--quiet", "segment", str(case), "-o", str(out), "--url",
                                                        server.grpc_url, "--shared-memory", "off"]),
                "pipeline (gRPC)": lambda out: cli.main(["--quiet", "segment", str(case), "-o", str(out), "--url",
                                                         server.grpc_url, "--model", "brats_segment"]),
                "pipeline (HTTP, curl)": lambda out: subprocess.run(
                    ["bash", str(CURL_SCRIPT), http, str(case / case.name), str(out)], capture_output=True).returncode,
            }
            for label, run in paths.items():
                for i in range(args.repeats):
                    out = tmp / f"{len(labels)}.nii.gz"
                    before, start = _tx(), time.perf_counter()
                    code = run(out)
                    seconds, sent = time.perf_counter() - start, _tx() - before
                    if code:
                        print(f"{label}: exit {code}", file=sys.stderr)
                        return 1
                    rows.append((label, i, sent, seconds))
                    labels.append(np.asarray(nib.load(out).dataobj))
            peaks = _stub_peaks(server.pid)
    same = all(np.array_equal(labels[0], other) for other in labels[1:])
    print(f"\ncase Phantom_{args.seed} (240x240x155), its four files {files_bytes} bytes; labels of every run "
          f"identical: {same}")
    print(f"{'path':<24} {'run':>3} {'bytes on the wire':>18} {'s':>7}")
    for label, i, sent, seconds in rows:
        print(f"{label:<24} {i:>3} {sent:>18} {seconds:>7.1f}")
    print(f"\n{'path':<24} {'bytes/case':>12} {'cases/s':>8} {'vs tensors':>11}")
    base = None
    for label in paths:
        mine = [r for r in rows if r[0] == label]
        sent = np.mean([r[2] for r in mine])
        rate = len(mine) / sum(r[3] for r in mine)
        base = base or (sent, rate)
        print(f"{label:<24} {sent:>12.0f} {rate:>8.4f} {f'{sent / base[0]:.4f}x B, {rate / base[1]:.2f}x c/s':>11}")
    print("\npeak resident memory (VmHWM) of each model's backend process, MiB:")
    for model, mib in sorted(peaks.items()):
        print(f"  {model:<22} {mib:8.0f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

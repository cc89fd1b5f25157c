"""Bytes on the wire per case, measured: client-side flips (four requests per tile) against server-side flips.

Exports ONNX with its flip4 companion (demo checkpoint), starts the local Triton server, and segments one
full-size phantom with tensors inside gRPC (``--shared-memory off``, as for a remote server), once with
``--server-flips off`` and once with the default. The bytes are the loopback interface's transmit counter
(``/sys/class/net/lo/statistics/tx_bytes``: every byte between client and server, both ways, with gRPC and TCP
framing) before and after each case; run it on an otherwise quiet machine, since other loopback traffic counts too.

    .venv/bin/python benchmarks/bench_wire_bytes.py [--seed 9003]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_end_to_end import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK_TX = Path("/sys/class/net/lo/statistics/tx_bytes")


def _tx() -> int:
    return int(LOOPBACK_TX.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "demo" / "brats_demo_checkpoint.pth")
    p.add_argument("--seed", type=int, default=9003, help="phantom seed")
    args = p.parse_args()

    from brats_client import cli
    from brats_demo.phantom import write_case
    from brats_export import cli as export_cli
    from brats_export.phantom import make_phantom
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    for key, value in machine().items():
        print(f"{key}: {value}")
    with tempfile.TemporaryDirectory(prefix="brats_bytes_") as tmp:
        tmp = Path(tmp)
        repo = tmp / "model_repository"
        code = export_cli.main(["--checkpoint", str(args.checkpoint), "--repository", str(repo), "--formats", "onnx",
                                "--check-sizes", "32", "--skip-full-size-check", "--quiet"])
        if code:
            return code
        case = write_case(make_phantom(args.seed), tmp / "cases", f"Phantom_{args.seed}")
        rows = []
        with TritonServer(TritonServerConfig(
            repo, grpc_port=0, http_port=0, metrics_port=0, log_path=tmp / "server.log"
        )) as server:
            for label, extra in (("client-side flips", ["--server-flips", "off"]), ("server-side flips", [])):
                report = tmp / f"{len(rows)}.json"
                before, start = _tx(), time.perf_counter()
                code = cli.main(["--quiet", "segment", str(case), "-o", str(tmp / f"{len(rows)}.nii.gz"),
                                 "--url", server.grpc_url, "--model", "brats_onnx", "--shared-memory", "off",
                                 "--report", str(report), *extra])
                sent, seconds = _tx() - before, time.perf_counter() - start
                if code:
                    return code
                data = json.loads(report.read_text())
                voxels = int(np.prod(data["preprocess"]["padded_shape"]))
                rows.append((label, data["server"]["model"], data["requests"], sent, sent / voxels, seconds))
    print(f"\ncase Phantom_{args.seed}, padded crop {data['preprocess']['padded_shape']} ({voxels} voxels), "
          "tensors inside gRPC")
    print(f"{'path':<18} {'model':<16} {'requests':>8} {'bytes':>12} {'B/voxel':>8} {'s':>6}")
    for label, model, requests, sent, per_voxel, seconds in rows:
        print(f"{label:<18} {model:<16} {requests:>8} {sent:>12} {per_voxel:>8.1f} {seconds:>6.1f}")
    print(f"server-side / client-side bytes: {rows[1][3] / rows[0][3]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

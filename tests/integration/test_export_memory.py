"""Peak memory of an export (issue 23, item 3): the parity check holds one runtime at a time.

The check used to load every exported file at once and keep each runtime's memory (ONNX Runtime's arena,
OpenVINO's buffers for the largest shape) alive until the end: 6.7 GiB peak for the default export (10.3 GiB while
the companions ran their flips as one batch), whereas its heaviest single step (OpenVINO at the full-size input)
needs under 2.8 GiB. Here a smaller export runs in a subprocess and its peak resident
memory (``VmHWM``) is compared with the peaks of single steps, each run alone in a subprocess of the same
interpreter with the same libraries imported: a ratio, so neither the machine's speed nor its allocator's
baseline decides the verdict.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from brats_export.model import build_model

pytestmark = [pytest.mark.torch, pytest.mark.slow]

FULL = "112x128x112"  # the parity check's largest input here; its runtimes' buffers dwarf the fixed overhead
# export peak / the heaviest single step: 1.10-1.15 when runtimes are released between formats, 1.76-1.82 when
# they all stay loaded (the code before this test); measured on 2 cores, Intel Xeon with AMX, bf16 host default
MAX_RATIO = 1.4

SCRIPT = r'''
import json, sys
import numpy as np
import onnx, onnxruntime, openvino, torch  # every run imports the same libraries

def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

mode, args = sys.argv[1], sys.argv[2:]
if mode == "export":
    from brats_export.cli import main
    rc = main(args)
else:
    from brats_export import parity
    from brats_export.checkpoint import load_model
    from brats_export.parity_inputs import phantom_input
    checkpoint, spatial, path = args[0], tuple(int(d) for d in args[1].split("x")), args[2:]
    x = phantom_input(spatial).array
    if mode == "eager":
        with torch.inference_mode():
            load_model(checkpoint).eval()(torch.from_numpy(x))
    else:
        np.asarray(parity.LOADERS[mode](path[0])(x))
    rc = 0
print(json.dumps({"rc": rc, "peak_kib": peak_kib()}))
'''


def _peak_kib(*args: str) -> int:
    done = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, done.stderr[-3000:]
    return result["peak_kib"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_export_peak_stays_near_its_heaviest_single_step(tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "seed0.pt"
    torch.save(build_model().state_dict(), checkpoint)
    repo = tmp_path / "repo"
    export_peak = _peak_kib("export", "--checkpoint", str(checkpoint), "--repository", str(repo),
                            "--formats", "onnx,openvino", "--full-size", FULL, "--check-sizes", "16,24x16x32",
                            "--threads", "2", "--quiet")
    steps = {
        "eager": _peak_kib("eager", str(checkpoint), FULL),
        "onnx": _peak_kib("onnx", str(checkpoint), FULL, str(repo / "brats_onnx" / "1" / "model.onnx")),
        "openvino": _peak_kib("openvino", str(checkpoint), FULL, str(repo / "brats_openvino" / "1" / "model.xml")),
    }
    heaviest = max(steps.values())
    figures = f"export {export_peak / 2**20:.2f} GiB; alone: " + ", ".join(
        f"{k} {v / 2**20:.2f} GiB" for k, v in steps.items())
    assert export_peak <= MAX_RATIO * heaviest, figures

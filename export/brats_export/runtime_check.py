"""Run exported files in other runtimes (e.g. those of the NGC Triton container) and compare with an expected output.

Imports only numpy, onnxruntime, openvino and ``brats_client.contract`` (plain Python, found beside this file in a
checkout when the package is not installed), so it runs in an environment without torch or this package::

    .venv-ngc/bin/python export/brats_export/runtime_check.py --input x.npy --expected y.npy \\
        --onnx model_repository/brats_onnx/1/model.onnx --openvino model_repository/brats_openvino/1/model.xml

``x.npy`` is an input ``[N, 4, D, H, W]`` float32 and ``y.npy`` eager PyTorch's output for it. Prints one JSON
object: each runtime's version, max |diff| and seconds; exits 1 when a diff exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

try:
    from brats_client.contract import INPUT_NAME, OUTPUT_NAME
except ImportError:  # run as a file from a checkout, in an environment without this package
    sys.path.append(str(Path(__file__).resolve().parents[2] / "client"))
    from brats_client.contract import INPUT_NAME, OUTPUT_NAME


def run_onnx(path: str, x: np.ndarray) -> tuple[np.ndarray, str]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0], f"onnxruntime {ort.__version__}"


def run_openvino(path: str, x: np.ndarray) -> tuple[np.ndarray, str]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled({INPUT_NAME: x})[compiled.output(OUTPUT_NAME)], f"openvino {ov.get_version()} (f32)"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="input .npy [N, 4, D, H, W] float32")
    p.add_argument("--expected", required=True, help="eager PyTorch output .npy for that input")
    p.add_argument("--onnx", help="model.onnx to run with onnxruntime")
    p.add_argument("--openvino", help="model.xml to run with openvino (CPU, f32)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed max |diff| (default 1e-4)")
    args = p.parse_args(argv)
    x = np.load(args.input)
    expected = np.load(args.expected)
    results = {}
    for fmt, path, runner in (("onnx", args.onnx, run_onnx), ("openvino", args.openvino, run_openvino)):
        if not path:
            continue
        start = time.perf_counter()
        got, runtime = runner(path, x)
        if got.shape != expected.shape:
            results[fmt] = {"runtime": runtime, "error": f"shape {list(got.shape)}, expected {list(expected.shape)}"}
            continue
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        results[fmt] = {"runtime": runtime, "max_abs_diff": diff, "passed": diff <= args.tolerance,
                        "seconds": round(time.perf_counter() - start, 2)}
    sys.stdout.write(json.dumps({"input_shape": list(x.shape), "tolerance": args.tolerance, "results": results})
                     + "\n")
    return 0 if results and all(r.get("passed") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

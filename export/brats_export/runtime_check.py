"""Run exported files in other runtimes (e.g. those of the NGC Triton container) and compare with an expected output.

Imports only numpy, onnxruntime, openvino and ``brats_client.contract`` (plain Python, found beside this file in a
checkout when the package is not installed), so it runs in an environment without torch or this package::

    .venv-ngc/bin/python export/brats_export/runtime_check.py --input x.npy --expected y.npy \\
        --onnx model_repository/brats_onnx/1/model.onnx --openvino model_repository/brats_openvino/1/model.xml

``x.npy`` is an input ``[N, 4, D, H, W]`` float32 and ``y.npy`` eager PyTorch's output for it. Prints one JSON
object: each runtime's version, max |diff| and seconds; exits 1 when a diff exceeds ``--tolerance``.

``--replay IN.npz --out OUT.npz --openvino model.xml`` runs every array of ``IN.npz`` through the IR compiled as
Triton's openvino backend compiles it (the IR's own shapes, the runtime's default precision) and saves the outputs
under the same names (the INT8 accuracy gate, :mod:`brats_export.int8_gate`).
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


def replay(path: str, inputs: str, out: str) -> dict:
    """Run each array of ``inputs`` through the IR as the openvino backend compiles it; save the outputs to ``out``."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(path), "CPU", {})
    precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    start = time.perf_counter()
    with np.load(inputs) as arrays:
        outputs = {name: compiled({INPUT_NAME: arrays[name]})[compiled.output(OUTPUT_NAME)] for name in arrays.files}
    np.savez(out, **outputs)
    return {"runtime": f"openvino {ov.get_version().split('-')[0]}", "precision": precision,
            "arrays": len(outputs), "seconds": round(time.perf_counter() - start, 2)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", help="input .npy [N, 4, D, H, W] float32")
    p.add_argument("--expected", help="eager PyTorch output .npy for that input")
    p.add_argument("--replay", metavar="IN.npz", help="run these inputs through --openvino and save to --out")
    p.add_argument("--out", metavar="OUT.npz", help="where --replay saves the outputs")
    p.add_argument("--onnx", help="model.onnx to run with onnxruntime")
    p.add_argument("--openvino", help="model.xml to run with openvino (CPU, f32)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed max |diff| (default 1e-4)")
    args = p.parse_args(argv)
    if args.replay:
        if not (args.openvino and args.out):
            p.error("--replay needs --openvino and --out")
        sys.stdout.write(json.dumps(replay(args.openvino, args.replay, args.out)) + "\n")
        return 0
    if not (args.input and args.expected):
        p.error("--input and --expected are required (or --replay)")
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

"""GroupNorm graphs side by side (issue 12): the exporter's own Reshape + InstanceNormalization against
brats_export.portable, at a full BraTS crop on a normalised phantom, in ONNX Runtime and OpenVINO (f32, bf16).

    .venv/bin/python benchmarks/bench_groupnorm.py [--checkpoint demo/brats_demo_checkpoint.pth] [--repeats 3]

Prints the machine, then per graph and runtime: max |diff| against eager PyTorch, voxels whose 0.5 threshold
flips, the best and median wall seconds of interleaved repeats and the best CPU seconds (all threads of this
process: less sensitive to other jobs on a shared machine), with new/old ratios measured in the same run.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_end_to_end import checkpoint_parser, machine  # noqa: E402


def main() -> int:
    args = checkpoint_parser(__doc__, repeats=3).parse_args()

    import torch
    from brats_export import exporters, parity
    from brats_export.checkpoint import load_model
    from brats_export.parity_inputs import FULL_SIZE, phantom_input

    for key, value in machine().items():
        print(f"{key}: {value}")
    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    model = load_model(args.checkpoint)
    x = phantom_input(FULL_SIZE).array
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    print(f"input: normalised phantom {list(x.shape)}; versions {exporters.library_versions()}")

    predictors = {}
    with tempfile.TemporaryDirectory() as tmp:
        for graph, portable in (("old", False), ("new", True)):
            onnx_path = exporters.export_onnx(model, Path(tmp) / f"{graph}.onnx", portable=portable)
            xml = exporters.export_openvino(onnx_path, Path(tmp) / f"{graph}.xml")
            predictors[(graph, "onnxruntime")] = parity.load_onnx(onnx_path)
            predictors[(graph, "openvino f32")] = parity.load_openvino(xml, "f32")
            predictors[(graph, "openvino bf16")] = parity.load_openvino(xml, "bf16")
        times: dict[tuple[str, str], list[float]] = {k: [] for k in predictors}
        cpu: dict[tuple[str, str], list[float]] = {k: [] for k in predictors}
        accuracy = {}
        for key, predict in predictors.items():  # first run: warm-up and accuracy
            got = predict(x)
            accuracy[key] = (float(np.abs(got - expected).max()), int(((got > 0.5) != (expected > 0.5)).sum()))
        for _ in range(args.repeats):
            for key, predict in predictors.items():
                start, cpu_start = time.perf_counter(), time.process_time()
                predict(x)
                times[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - cpu_start)

    print(f"\n{'runtime':<14} {'graph':<5} {'max|diff|':>10} {'flips':>7} {'best s':>7} {'median s':>9} "
          f"{'new/old':>8} {'cpu s':>7} {'new/old':>8}")
    for key in predictors:
        graph, runtime = key
        best, best_cpu = min(times[key]), min(cpu[key])
        ratio = best / min(times[("old", runtime)])
        cpu_ratio = best_cpu / min(cpu[("old", runtime)])
        print(f"{runtime:<14} {graph:<5} {accuracy[key][0]:>10.3g} {accuracy[key][1]:>7} {best:>7.2f} "
              f"{statistics.median(times[key]):>9.2f} {ratio:>8.3f} {best_cpu:>7.2f} {cpu_ratio:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

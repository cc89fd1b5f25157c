"""OpenVINO f32, the seed's four flips of one full BraTS crop, computed four ways side by side (issues 15 and 23):
the plain model four times as the client sends it, with and without ``CPU_DENORMALS_OPTIMIZATION``, and the flip4
companion's graph as exported now (the four passes one after another: an ONNX Loop over the plain graph) and as
it was before issue 23 (one batch of four, which held four passes' activations at once).

    .venv/bin/python benchmarks/bench_companion.py [--checkpoint demo/brats_demo_checkpoint.pth] [--repeats 2]

Prints the machine, each way's max |diff| against the first and the voxels whose 0.5 threshold flips, then best
and median wall seconds of interleaved repeats and the ratio to the companion as exported. Memory:
benchmarks/bench_memory.py.
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
    args = checkpoint_parser(__doc__, repeats=2).parse_args()

    import torch
    from brats_client import tta
    from brats_client.contract import OUT_CHANNELS
    from brats_export import exporters, flip_loop
    from brats_export.checkpoint import load_model
    from brats_export.parity_inputs import FULL_SIZE, phantom_input
    from brats_export.server_flips import ServerFlips

    class BatchFlips(ServerFlips):
        """The companion before issue 23: the four flipped copies as one batch of four."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch = torch.cat([x.flip(d) if d else x for d in self.dims], 0)
            out = self.net(batch).reshape(len(self.dims), -1, OUT_CHANNELS, *x.shape[2:])
            mean = tta.Mean(len(self.dims))
            for i, d in enumerate(self.dims):
                mean.add(i, out[i].flip(d) if d else out[i])
            return mean.result()

    for key, value in machine().items():
        print(f"{key}: {value}")
    model = load_model(args.checkpoint)
    x = phantom_input(FULL_SIZE).array
    with tempfile.TemporaryDirectory() as tmp:
        onnx = {name: exporters.export_onnx(net, Path(tmp) / f"{name}.onnx")
                for name, net in (("plain", model), ("batch4", BatchFlips(model).eval()))}
        onnx["seq"] = flip_loop.loop_companion(onnx["plain"], Path(tmp) / "seq.onnx")  # as brats-export writes it
        xml = {name: exporters.export_openvino(path, Path(tmp) / f"{name}.xml") for name, path in onnx.items()}
        ways = {
            "plain x4 (client flips)": client_flips(compiled(xml["plain"]), tta),
            "plain x4, denormals flushed": client_flips(compiled(xml["plain"], CPU_DENORMALS_OPTIMIZATION=True), tta),
            "companion now, 4 passes in turn": compiled(xml["seq"]),
            "companion before, batch of 4": compiled(xml["batch4"]),
        }
        first = None
        for name, run in ways.items():  # warm-up and agreement
            out = run(x)
            first = out if first is None else first
            print(f"{name}: max|diff| {np.abs(out - first).max():.3g}, flips {int(((out > .5) != (first > .5)).sum())}")
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, run in ways.items():
                start = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - start)
    base = min(times["companion now, 4 passes in turn"])
    for name, t in times.items():
        print(f"{name:<32} best {min(t):6.2f} s  median {statistics.median(t):6.2f} s  "
              f"vs companion {min(t) / base:.3f}")
    return 0


def compiled(xml: Path, **extra):
    """A synchronous f32 predictor as the openvino stand-in compiles it (unpinned threads)."""
    import openvino as ov
    from brats_client.contract import INPUT_NAME, OUTPUT_NAME

    core = ov.Core()
    model = core.compile_model(core.read_model(str(xml)), "CPU",
                               {"INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False, **extra})
    request, output = model.create_infer_request(), model.output(OUTPUT_NAME)
    return lambda a: request.infer({INPUT_NAME: a}, share_inputs=True, share_outputs=False)[output]


def client_flips(predict, tta):
    """The client's four requests of one tile, flipped and averaged as brats_client.pipeline.predict does."""
    def run(a: np.ndarray) -> np.ndarray:
        mean = tta.Mean(4)
        for i, axes in enumerate(tta.flips("flip4")):
            out = predict(np.ascontiguousarray(tta.apply(a[0], axes))[None])
            mean.add(i, tta.undo(out[0], axes)[None])
        return mean.result()
    return run


if __name__ == "__main__":
    sys.exit(main())

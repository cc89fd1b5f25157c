"""Checks for a machine with an NVIDIA GPU and PyTorch, no Triton: what the GPU configs rely on, in one table.

On the whole padded crop of a BraTS-size phantom (seed 9003, 240x240x155) with a checkpoint:

- TorchScript traced as ``brats-export`` traces it, loaded on the device, against eager PyTorch on the device
  (max |diff| of the probabilities, batch 1);
- latency per case with flip4 (TorchScript, after two warm-up runs as ``configs/gpu.pbtxt`` does): four requests
  of one flip (the client's default) and one request of four (``--flips-per-request 4``);
- peak device memory of one forward pass per batch size (CUDA only);
- FP16 and BF16 autocast against FP32: max |diff| and region Dice of the flip4 labels.

    .venv/bin/python benchmarks/gpu_check.py                          # cuda, the phantom's whole crop
    .venv/bin/python benchmarks/gpu_check.py --device cpu --size 32   # seconds: the path the tests run

``--size N`` takes the central N^3 of the crop instead (zero-padded where the crop is smaller). Takes well under
five minutes on a data-centre GPU; prints one Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = ROOT / "demo" / "brats_demo_checkpoint.pth"
PHANTOM_SEED = 9003  # held out from the demo training, as in bench_end_to_end.py
DEFAULT_BATCHES = (1, 2, 4)  # the sizes a case's flips make (configs: max_batch_size 4)


@dataclass(frozen=True)
class Row:
    check: str
    setting: str
    result: str


def phantom_crop(size: int | None) -> np.ndarray:
    """The preprocessed (cropped, padded, z-scored) phantom ``[4, X, Y, Z]``, or its central ``size``^3."""
    from brats_client import preprocess
    from brats_export.phantom import MODALITIES, make_phantom

    phantom = make_phantom(PHANTOM_SEED)
    volume, _ = preprocess.preprocess(np.stack([phantom.images[m] for m in MODALITIES]))
    if size is None:
        return volume
    out = np.zeros((volume.shape[0], size, size, size), dtype=np.float32)
    src, dst = [], []
    for n in volume.shape[1:]:
        take = min(n, size)
        a, b = (n - take) // 2, (size - take) // 2
        src.append(slice(a, a + take))
        dst.append(slice(b, b + take))
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    return out


def _flip_batch(x, flips: Sequence[tuple[int, ...]]):
    import torch

    return torch.cat([torch.flip(x, dims=[a + 2 for a in axes]) if axes else x for axes in flips])


def _unflip_mean(y, flips: Sequence[tuple[int, ...]]):
    import torch

    parts = [torch.flip(y[i : i + 1], dims=[a + 2 for a in axes]) if axes else y[i : i + 1]
             for i, axes in enumerate(flips)]
    return torch.cat(parts).mean(0)


def _timed(fn: Callable[[], object], sync: Callable[[], None], repeats: int) -> float:
    """Median seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_checks(device: str, volume: np.ndarray, checkpoint: Path, batches: Sequence[int] = DEFAULT_BATCHES,
               repeats: int = 3) -> list[Row]:
    import torch
    from brats_client import postprocess, tta
    from brats_export import exporters
    from brats_export.checkpoint import load_model

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    flips = tta.flips("flip4")
    shape = "x".join(map(str, volume.shape[1:]))
    model = load_model(checkpoint).to(dev)
    x = torch.from_numpy(volume[None]).to(dev)
    rows = []

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        path = exporters.export_torchscript(model.cpu(), Path(tmp) / "model.pt")
        model.to(dev)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what Triton's backend loads
            scripted = torch.jit.load(str(path), map_location=dev).eval()
        for _ in range(2):  # the profiling executor optimises after two runs of a shape, as the warm-up does
            scripted(x)
        eager = model(x)
        diff = float((scripted(x) - eager).abs().max())
        rows.append(Row("TorchScript vs eager", f"{device}, 1x4x{shape}", f"max abs diff {diff:.2e}"))

        one_by_one = _timed(lambda: [scripted(_flip_batch(x, [f])) for f in flips], sync, repeats)
        rows.append(Row("latency per case, flip4", "4 requests of 1 flip", f"{one_by_one:.3f} s"))
        batched = _flip_batch(x, flips)
        scripted(batched)
        scripted(batched)
        together = _timed(lambda: scripted(batched), sync, repeats)
        rows.append(Row("latency per case, flip4", "1 request of 4 flips", f"{together:.3f} s"))

        for n in batches:
            xb = x.expand(n, *x.shape[1:]).contiguous()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.max_memory_allocated(dev)
                scripted(xb)
                sync()
                peak = f"{(torch.cuda.max_memory_allocated(dev) - base) / 2**30:.2f} GiB"
            else:
                peak = "- (CUDA only)"
            rows.append(Row("peak memory, one forward", f"batch {n}", peak))

        reference = _unflip_mean(model(batched), flips)
        ref_labels = postprocess.labels_from_probabilities(reference.float().cpu().numpy())
        for name, dtype in (("FP16", torch.float16), ("BF16", torch.bfloat16)):
            try:
                with torch.autocast(device_type=dev.type, dtype=dtype):
                    low = _unflip_mean(model(batched), flips).float()
            except RuntimeError as e:  # autocast of this dtype is not implemented on this device
                rows.append(Row(f"{name} vs FP32 labels", "flip4, autocast", f"unsupported: {e}"[:80]))
                continue
            labels = postprocess.labels_from_probabilities(low.cpu().numpy())
            dice = postprocess.region_dice(labels, ref_labels)
            diff = float((low - reference).abs().max())
            rows.append(Row(f"{name} vs FP32 labels", "flip4, autocast",
                            f"max abs diff {diff:.1e}; Dice WT/TC/ET " + "/".join(f"{d:.4f}" for d in dice.values())))
    return rows


def format_table(rows: Sequence[Row], header: str) -> str:
    lines = [header, "", "| check | setting | result |", "| --- | --- | --- |"]
    lines += [f"| {r.check} | {r.setting} | {r.result} |" for r in rows]
    return "\n".join(lines)


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    return f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="torch device (default %(default)s; cpu for a quick run)")
    p.add_argument("--size", type=int, help="central N^3 of the crop instead of the whole crop (multiple of 16)")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="weights (default: the demo's)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per latency (median; default %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.size is not None and (args.size < 16 or args.size % 16):
        sys.stderr.write(f"gpu_check: --size must be a multiple of 16 and >= 16, got {args.size}\n")
        return 2
    if args.repeats < 1:
        sys.stderr.write(f"gpu_check: --repeats must be >= 1, got {args.repeats}\n")
        return 2
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.stderr.write("gpu_check: CUDA is not available to this PyTorch; pass --device cpu for the quick check\n")
        return 2
    start = time.perf_counter()
    rows = run_checks(args.device, phantom_crop(args.size), args.checkpoint, repeats=args.repeats)
    header = f"gpu_check on {_device_name(args.device)}: {time.perf_counter() - start:.0f} s"
    sys.stdout.write(format_table(rows, header) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How much tiling changes the labels: GroupNorm sees each tile's statistics, not the whole crop's.

For a BraTS-size phantom (240x240x155) and a trained checkpoint, run the client's own pipeline stages in-process
(OpenVINO f32, no Triton) with ``--tile full`` and with several tile sizes and overlaps, and report Dice per region
against the full-tile labels, the voxels computed per crop voxel and the time. Writes a Markdown table.

    .venv/bin/python benchmarks/tiling_agreement.py --out docs/tiling.md
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from brats_client import pipeline, postprocess, preprocess, tta  # noqa: E402
from brats_client.local import LocalTransport  # noqa: E402
from inprocess import predictors  # noqa: E402

log = logging.getLogger("tiling_agreement")

CONFIGS = [(None, 0.0), (192, 0.0), (160, 0.0), (160, 0.25), (128, 0.0), (128, 0.25), (128, 0.5), (96, 0.0),
           (96, 0.25), (64, 0.25), (64, 0.5)]


def labels_for(volume, record, transport, options) -> tuple[np.ndarray, pipeline.Prediction, float]:
    t0 = time.perf_counter()
    pred = pipeline.predict(volume, transport, options, pad_value=record.pad_value)
    seconds = time.perf_counter() - t0
    prob = postprocess.unpad(pred.probabilities, record)
    return postprocess.labels_from_probabilities(prob, convention="brats2019"), pred, seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="demo/brats_demo_checkpoint.pth")
    p.add_argument("--seeds", default="9001,9002", help="phantom seeds (held out from training)")
    p.add_argument("--tta", default="none", choices=("none", "flip4"))
    p.add_argument("--out", type=Path, default=Path("docs/tiling.md"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from brats_export.checkpoint import checkpoint_sha256, load_model
    from brats_export.phantom import MODALITIES, make_phantom

    model = load_model(args.checkpoint)
    work = tempfile.TemporaryDirectory(prefix="brats_tiling_")
    transport = LocalTransport(predictors(model, ["openvino"], Path(work.name))["openvino"], "openvino")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        ph = make_phantom(seed)
        raw = np.stack([ph.images[c] for c in MODALITIES]).astype(np.float32)
        volume, record = preprocess.preprocess(raw)
        crop_voxels = int(np.prod(record.crop_shape))
        full_opts = pipeline.SegmentOptions(tile=None, tta=args.tta)
        full, pred, secs = labels_for(volume, record, transport, full_opts)
        full_masks = postprocess.region_masks(full)
        truth_masks = postprocess.region_masks(ph.seg[record.crop_slices])
        for tile, overlap in CONFIGS:
            opts = pipeline.SegmentOptions(tile=tile, overlap=overlap, tta=args.tta, blend="gaussian")
            if tile is None:
                labels, p_, s_ = full, pred, secs
            else:
                labels, p_, s_ = labels_for(volume, record, transport, opts)
            masks = postprocess.region_masks(labels)
            row = {
                "seed": seed, "crop": "x".join(map(str, record.crop_shape)),
                "tile": "full" if tile is None else tile, "overlap": overlap, "tiles": p_.tiles,
                "waste": p_.voxels_computed / len(tta.flips(args.tta)) / crop_voxels,
                "seconds": s_,
                **{f"vs_full_{r}": postprocess.dice(masks[r], full_masks[r]) for r in masks},
                **{f"vs_truth_{r}": postprocess.dice(masks[r], truth_masks[r]) for r in masks},
            }
            rows.append(row)
            log.info("seed %d tile %s overlap %.2f: %d tiles, waste %.2f, %.1f s, Dice vs full %s", seed,
                     row["tile"], overlap, p_.tiles, row["waste"], s_,
                     " ".join(f"{r} {row[f'vs_full_{r}']:.4f}" for r in masks))
    lines = [
        "# Tiling against the whole crop",
        "",
        "GroupNorm normalises over what the network is given, so a tile sees other statistics than the whole crop",
        "and tiled labels differ from `--tile full`. Measured with `benchmarks/tiling_agreement.py` on BraTS-size",
        f"phantoms (240x240x155, seeds {args.seeds}, held out from training), checkpoint `{args.checkpoint}`",
        f"(sha256 {checkpoint_sha256(args.checkpoint)[:12]}...), TTA {args.tta}, Gaussian blending, OpenVINO f32",
        f"in-process; {platform.machine()}, {os.cpu_count()} cores. Dice of each setting's labels against the",
        "full-crop labels (and against the phantom's truth); waste = voxels computed / crop voxels.",
        "",
        "| seed | crop | tile | overlap | tiles | waste | time (s) | Dice vs full WT / TC / ET |"
        " Dice vs truth WT / TC / ET |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['crop']} | {r['tile']} | {r['overlap']:.2f} | {r['tiles']} | {r['waste']:.2f} | "
            f"{r['seconds']:.1f} | {r['vs_full_WT']:.4f} / {r['vs_full_TC']:.4f} / {r['vs_full_ET']:.4f} | "
            f"{r['vs_truth_WT']:.3f} / {r['vs_truth_TC']:.3f} / {r['vs_truth_ET']:.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    log.info("wrote %s", args.out)
    work.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What ``--keep-last-slice`` changes: labels of the seed's crop ``[min, max)`` against ``[min, max]``.

For full-size phantoms (240x240x155) and a trained checkpoint, run the eager reference pipeline
(``brats_export.reference``, flip4, whole crop) both ways and print, per case, the voxels whose label differs,
Dice per region between the two, and each against the phantom's truth.

    .venv/bin/python benchmarks/crop_agreement.py [--seeds 9001,9002]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="demo/brats_demo_checkpoint.pth")
    p.add_argument("--seeds", default="9001,9002", help="phantom seeds (held out from training)")
    args = p.parse_args(argv)

    from brats_client.postprocess import region_dice
    from brats_export.checkpoint import load_model
    from brats_export.phantom import MODALITIES, make_phantom
    from brats_export.reference import reference_segment

    model = load_model(args.checkpoint)
    print(f"{'case':<8} {'differing voxels':>17} {'tumour voxels':>14}  Dice seed vs kept (WT/TC/ET)   "
          f"vs truth seed | kept (WT)")
    for seed in (int(s) for s in args.seeds.split(",")):
        ph = make_phantom(seed)
        volume = np.stack([ph.images[m] for m in MODALITIES])
        seed_labels, _ = reference_segment(volume, model)
        kept_labels, _ = reference_segment(volume, model, keep_last_slice=True)
        between = region_dice(kept_labels, seed_labels)
        truth_seed, truth_kept = region_dice(seed_labels, ph.seg)["WT"], region_dice(kept_labels, ph.seg)["WT"]
        print(f"{seed:<8} {int((seed_labels != kept_labels).sum()):>17} {int((seed_labels > 0).sum()):>14}  "
              f"{between['WT']:.4f} / {between['TC']:.4f} / {between['ET']:.4f}   "
              f"{truth_seed:.4f} | {truth_kept:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the seed network on phantoms, on the CPU, and write a demo checkpoint in the seed's file format.

Reproducible: fixed seeds for phantoms, data order, crops, augmentation and weights (``torch.manual_seed``); the
per-step randomness comes from ``numpy.random.default_rng([seed, step])``, so a resumed run draws the same crops.

    nice -n 10 .venv/bin/python demo/train_demo.py --out demo/brats_demo_checkpoint.pth

Two phases: random crops of ``--crop1`` containing tumour most of the time, then larger crops ``--crop2`` so that
GroupNorm sees statistics closer to those of the whole-volume inference. Targets are the nested regions WT, TC,
ET as three sigmoid channels; loss = BCE + soft Dice; Adam with linear warm-up and cosine decay. At the end the
network is evaluated on held-out phantoms the way the seed's test.py runs (``brats_export.reference``: whole crop,
flip4 TTA, threshold, labels, ET > 32 rule, 10% component filter) and saved with ``brats_demo.seedformat``. Inputs
are preprocessed by ``brats_client.preprocess``, as the client does.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from brats_client import postprocess, preprocess
from brats_demo.seedformat import TrainingState, save_seed_checkpoint
from brats_export.model import build_model
from brats_export.phantom import MODALITIES, make_phantom
from brats_export.reference import reference_segment
from torch.nn import functional as F  # noqa: N812

log = logging.getLogger("train_demo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo/brats_demo_checkpoint.pth", help="seed-format checkpoint to write")
    p.add_argument("--cache", default=".cache/brats_demo", help="phantom arrays and training snapshots")
    p.add_argument("--seed", type=int, default=0, help="torch / data-order / augmentation seed")
    p.add_argument("--train-seeds", type=int, nargs=2, default=(1000, 32), metavar=("FIRST", "COUNT"))
    p.add_argument("--eval-seeds", type=int, nargs=2, default=(9001, 5), metavar=("FIRST", "COUNT"))
    p.add_argument("--steps1", type=int, default=450)
    p.add_argument("--crop1", type=int, nargs=3, default=(96, 96, 96))
    p.add_argument("--steps2", type=int, default=100)
    p.add_argument("--crop2", type=int, nargs=3, default=(128, 160, 128))
    p.add_argument("--tumour-prob", type=float, default=0.85, help="share of crops centred on tumour")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-min", type=float, default=5e-5)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--snapshot-every", type=int, default=25)
    p.add_argument("--init", default=None, help="start from the weights of this training snapshot (.pt)")
    p.add_argument("--resume", action="store_true", help="continue from <cache>/snapshot.pt of this run")
    p.add_argument("--stop-after", type=int, default=None,
                   help="leave after this step (snapshot written, no evaluation); continue later with --resume")
    p.add_argument("--log-csv", default="demo/training_log.csv", help="per-step loss log")
    p.add_argument("--summary", default="demo/training_summary.json", help="config, timings and held-out Dice")
    return p.parse_args(argv)


def load_cases(seeds: list[int], cache: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Preprocessed (x float16 [4, ...], seg uint8 [...]) per seed, generated once and cached as .npy."""
    cache.mkdir(parents=True, exist_ok=True)
    cases = []
    for seed in seeds:
        fx, fy = cache / f"x_{seed}.npy", cache / f"y_{seed}.npy"
        if not (fx.exists() and fy.exists()):
            ph = make_phantom(seed)
            x, record = preprocess.preprocess(np.stack([ph.images[m] for m in MODALITIES]))
            pads = list(zip(record.pad_before, record.pad_after, strict=True))
            np.save(fy, np.pad(ph.seg[record.crop_slices], pads))  # cut and padded like the images
            np.save(fx, x.astype(np.float16))
        cases.append((np.load(fx), np.load(fy)))
    return cases


def sample(case: tuple[np.ndarray, np.ndarray], crop: tuple[int, int, int], rng: np.random.Generator,
           tumour_prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    x, seg = case
    shape = np.array(seg.shape)
    size = np.minimum(np.array(crop), shape)
    if rng.random() < tumour_prob:
        fg = np.argwhere(seg > 0)
        centre = fg[rng.integers(len(fg))] + rng.integers(-size // 4, size // 4 + 1)
        start = np.clip(centre - size // 2, 0, shape - size)
    else:
        start = np.array([rng.integers(0, s - c + 1) for s, c in zip(shape, size, strict=True)])
    sl = tuple(slice(int(a), int(a + c)) for a, c in zip(start, size, strict=True))
    xc = x[(slice(None), *sl)].astype(np.float32)
    yc = np.stack(list(postprocess.region_masks(seg[sl]).values())).astype(np.float32)  # WT, TC, ET
    for axis in range(3):
        if rng.random() < 0.5:
            xc, yc = np.flip(xc, axis + 1), np.flip(yc, axis + 1)
    scale = rng.normal(1.0, 0.1, size=(4, 1, 1, 1)).astype(np.float32)
    shift = rng.normal(0.0, 0.1, size=(4, 1, 1, 1)).astype(np.float32)
    xc = xc * scale + shift
    return torch.from_numpy(np.ascontiguousarray(xc))[None], torch.from_numpy(np.ascontiguousarray(yc))[None]


def lr_at(step: int, total: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, total - args.warmup)
    return args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * min(1.0, t)))


def evaluate_holdout(net: torch.nn.Module, seeds: list[int]) -> dict:
    net.eval()
    per_case = {}
    for seed in seeds:
        ph = make_phantom(seed)
        t0 = time.time()
        pred, _ = reference_segment(np.stack([ph.images[m] for m in MODALITIES]), net, tta="flip4")
        per_case[seed] = postprocess.region_dice(pred, ph.seg)
        log.info("held-out seed %d: %s (%.1f s)", seed, {k: round(v, 4) for k, v in per_case[seed].items()},
                 time.time() - t0)
    mean = {r: float(np.mean([d[r] for d in per_case.values()])) for r in postprocess.REGIONS}
    log.info("held-out mean Dice: %s", {k: round(v, 4) for k, v in mean.items()})
    return {"per_case": per_case, "mean": mean}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cache = Path(args.cache)
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    config["torch"] = torch.__version__
    log.info("config %s", json.dumps(config))

    t_start = time.time()
    train_seeds = list(range(args.train_seeds[0], args.train_seeds[0] + args.train_seeds[1]))
    eval_seeds = list(range(args.eval_seeds[0], args.eval_seeds[0] + args.eval_seeds[1]))
    cases = load_cases(train_seeds, cache)
    log.info("%d training phantoms ready, padded shape %s (%.0f s)", len(cases), cases[0][1].shape,
             time.time() - t_start)

    net = build_model().train()
    logits: list[torch.Tensor] = []
    net.conv_output.register_forward_hook(lambda _m, _i, out: logits.__setitem__(slice(None), [out]))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    total = args.steps1 + args.steps2
    first_step = 0
    snapshot = cache / "snapshot.pt"
    if args.init:
        net.load_state_dict(torch.load(args.init, weights_only=True)["model"])
        log.info("initialised weights from %s", args.init)
    if args.resume and snapshot.exists():
        snap = torch.load(snapshot, weights_only=True)
        net.load_state_dict(snap["model"])
        opt.load_state_dict(snap["opt"])
        first_step = snap["step"]
        log.info("resumed from %s at step %d", snapshot, first_step)
    order = np.random.default_rng(args.seed).permutation(np.resize(np.arange(len(cases)), total + len(cases)))

    csv_path = Path(args.log_csv)
    csv = csv_path.open("a" if first_step else "w")
    if not first_step:
        csv.write("step,crop,lr,loss,bce,soft_dice_loss,dice_wt,dice_tc,dice_et,seconds\n")
    t_train = time.time()
    losses = []
    for step in range(first_step, total):
        crop = tuple(args.crop1) if step < args.steps1 else tuple(args.crop2)
        rng = np.random.default_rng([args.seed, step])
        x, y = sample(cases[order[step]], crop, rng, args.tumour_prob)
        lr = lr_at(step, total, args)
        for group in opt.param_groups:
            group["lr"] = lr
        t0 = time.time()
        p = net(x)  # sigmoid of the logits the hook keeps for the numerically stable BCE
        z = logits[0]
        bce = F.binary_cross_entropy_with_logits(z, y)
        dims = (0, 2, 3, 4)
        soft = 1 - ((2 * (p * y).sum(dims) + 1) / (p.sum(dims) + y.sum(dims) + 1)).mean()
        loss = bce + soft
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt = time.time() - t0
        with torch.no_grad():
            hard = (p > 0.5).float()
            d = ((2 * (hard * y).sum(dims) + 1e-6) / (hard.sum(dims) + y.sum(dims) + 1e-6)).tolist()
        losses.append(loss.item())
        csv.write(f"{step + 1},{'x'.join(map(str, crop))},{lr:.6g},{float(loss):.5f},{float(bce):.5f},"
                  f"{float(soft):.5f},{d[0]:.4f},{d[1]:.4f},{d[2]:.4f},{dt:.2f}\n")
        csv.flush()
        log.info("step %d/%d crop %s lr %.2e loss %.4f (bce %.4f dice %.4f) train-dice WT %.3f TC %.3f ET %.3f %.1fs",
                 step + 1, total, crop, lr, float(loss), float(bce), float(soft), *d, dt)
        if (step + 1) % args.snapshot_every == 0 or step + 1 == total or step + 1 == args.stop_after:
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step + 1}, snapshot)
        if step + 1 == args.stop_after:
            log.info("stopping after step %d as asked; snapshot %s", step + 1, snapshot)
            csv.close()
            return 0
    csv.close()
    train_s = time.time() - t_train
    log.info("training: %d steps in %.0f s", total - first_step, train_s)

    t_eval = time.time()
    result = evaluate_holdout(net, eval_seeds)
    eval_s = time.time() - t_eval

    optimizer_state = opt.state_dict()
    # Adam's moments would triple the file (to ~58 MB); keep the hyper-parameters and drop the per-parameter state.
    optimizer_state = {"state": {}, "param_groups": optimizer_state["param_groups"]}
    state = TrainingState(
        epoch=total // len(cases), train_metric=float(np.mean(losses[-50:])) if losses else None,
        val_metric=result["mean"], global_step=total, best_val=float(np.mean(list(result["mean"].values()))),
        optimizer_state=optimizer_state, cuda=False,
    )
    save_seed_checkpoint(net, args.out, state)
    log.info("wrote %s", args.out)
    summary = {
        "config": config, "train_seeds": train_seeds, "eval_seeds": eval_seeds, "steps": total,
        "train_seconds_this_run": round(train_s, 1), "eval_seconds": round(eval_s, 1),
        "wall_seconds_this_run": round(time.time() - t_start, 1),
        "final_loss_mean_last_50": state.train_metric, "heldout": result,
    }
    Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``brats-demo``: demo data for the serving pipeline.

Subcommands:
  phantoms   write synthetic BraTS 2019 case folders (see ``brats_demo.phantom``)
  run        the whole pipeline on a held-out phantom: export, local Triton, segmentation, summary, preview PNG
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from brats_client.errors import BratsError
from brats_serve.errors import ServeError

log = logging.getLogger(__name__)


def _cmd_phantoms(args: argparse.Namespace) -> int:
    from brats_export.phantom import make_phantom

    from brats_demo.phantom import case_id, write_case

    out = Path(args.out)
    for i in range(args.n):
        seed = args.seed + i
        cid = case_id(seed)
        write_case(make_phantom(seed), out, cid)
        log.info("%s: seed %d", cid, seed)
    log.info("wrote %d phantom case(s) under %s", args.n, out)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from brats_demo.run import run_demo

    run_demo(Path(args.out), checkpoint=Path(args.checkpoint), seed=args.seed, model_format=args.format)
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brats-demo", description="Demo data for the serving pipeline, and the whole pipeline on a phantom "
        "case (research use only, not for clinical use).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    defaults = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("phantoms", help="write synthetic BraTS 2019 case folders", formatter_class=defaults)
    p.add_argument("--out", required=True, help="output folder; case <seed> goes to <out>/Phantom_<seed>/")
    p.add_argument("--n", type=_positive_int, default=1, help="number of cases")
    p.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the first case; case i (from 0) uses seed + i and is named Phantom_<seed + i>")
    p.set_defaults(func=_cmd_phantoms)

    from brats_demo.run import DEFAULT_CHECKPOINT, HELD_OUT_SEED

    r = sub.add_parser("run", help="phantom -> export -> local Triton -> segmentation -> summary and preview PNG",
                       formatter_class=defaults)
    r.add_argument("--out", default="out/demo", help="output folder")
    r.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="seed-format checkpoint to export")
    r.add_argument("--seed", type=_non_negative_int, default=HELD_OUT_SEED,
                   help="phantom seed (the default is held out from training)")
    r.add_argument("--format", choices=("openvino", "onnx", "torchscript"), default="openvino",
                   help="which export to serve")
    r.set_defaults(func=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except OSError as e:
        log.error("cannot write: %s; check that the output folder is writable", e)
        return 1
    except (BratsError, ServeError, RuntimeError) as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

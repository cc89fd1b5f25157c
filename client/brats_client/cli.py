"""``brats-client``: segment cases through Triton, preview a segmentation, score it against the truth, load-test
a model.

Exit codes: the table brats-client, brats-export and brats-serve share (:mod:`brats_client.exit_codes`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import exit_codes, report_fields
from .errors import BratsError, UsageError
from .exit_codes import EXIT_OK, exit_code

log = logging.getLogger("brats_client")

EPILOG = exit_codes.epilog() + "\n"

SEGMENT_EXAMPLES = """\
examples:
  brats-client segment out/demo/cases/Phantom_9001 -o out/Phantom_9001.nii.gz
  brats-client segment cases/ -o out/                      # every case under cases/
  brats-client segment cases/ -o out/ --num-parts 4 --part-id 0   # the first of 4 machines
  brats-client segment Task01_BrainTumour/imagesTs -o out/       # MSD: 4-D files, order from its dataset.json
  brats-client segment imagesTs/BRATS_485.nii.gz -o BRATS_485.nii.gz
  brats-client segment --t1 a.nii.gz --t1ce b.nii.gz --t2 c.nii.gz --flair d.nii.gz -o seg.nii.gz
  brats-client segment case/ -o seg.nii.gz --tile full --tta flip4 --report seg.json

Inputs: BraTS 2019 names (<case>_t1, _t1ce, _t2, _flair), BraTS 2023 names (-t1n, -t1c, -t2w, -t2f), nnU-Net
names (<case>_0000.._0003) or MSD 4-D files (<case>.nii.gz with the four channels on the 4th axis); the channel
order of the last two comes from --channel-order or the dataset.json beside or above them. -o ending in .nii or
.nii.gz: one case; any other -o: a batch into that folder. Output labels (--labels auto): the input's convention
(brats2023 for BraTS 2023 names, msd for MSD files, the labels of a dataset.json), else the seed's brats2019.
Cases must be skull-stripped with a zero background, as BraTS provides them; others are refused.
"""


def _tile(value: str) -> int | None:
    """``full`` or an integer; its value is checked by SegmentOptions."""
    if value == "full":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tile takes a multiple of 16 or 'full', got {value!r}") from None


def _add_global_args(p: argparse.ArgumentParser, default: bool | str) -> None:
    p.add_argument("--quiet", "-q", action="store_true", default=default,
                   help="only warnings and errors, no progress lines")
    p.add_argument("--verbose", "-v", action="store_true", default=default, help="debug logging")


def _add_server_args(p: argparse.ArgumentParser, transfer: bool = True) -> None:
    """The server options; ``transfer=False`` (perf): only where the server is and how to reach it."""
    from .server_options import SHARED_MEMORY_CHOICES, ServerOptions

    d = ServerOptions()
    g = p.add_argument_group("server")
    g.add_argument("--url", default=d.url, help="Triton gRPC endpoint HOST:PORT (default %(default)s)")
    g.add_argument("--model", default=d.model, help="model name in the repository (default %(default)s)")
    g.add_argument("--model-version", default="", help="model version (default: the server's choice)")
    g.add_argument("--ssl", action="store_true", help="use TLS for gRPC")
    g.add_argument("--root-certificates", help="PEM file of the CA that signed the server's certificate")
    g.add_argument("--private-key", help="client private key (PEM) for mutual TLS")
    g.add_argument("--certificate-chain", help="client certificate chain (PEM) for mutual TLS")
    if not transfer:
        return
    g.add_argument("--concurrency", type=int, default=d.concurrency,
                   help="requests in flight (default %(default)s)")
    g.add_argument("--timeout-s", type=float, default=d.timeout_s,
                   help="deadline per request in seconds (default %(default)s)")
    g.add_argument("--retries", type=int, default=d.retries, help="retries on UNAVAILABLE (default %(default)s)")
    g.add_argument("--shared-memory", nargs="?", const="on", default=d.shared_memory, choices=SHARED_MEMORY_CHOICES,
                   help="pass tensors through system shared memory: auto (default) when the server is on a loopback "
                   "URL and can open this host's /dev/shm, else inside the gRPC messages; on: required")


def _add_batch_args(p: argparse.ArgumentParser) -> None:
    from .batch import CASES_IN_MEMORY

    g = p.add_argument_group("batch (a folder of cases)")
    g.add_argument("--cases-in-memory", type=int, default=CASES_IN_MEMORY, metavar="N",
                   help="cases held at once: the next ones load and finished ones are written while the server "
                   "computes (default %(default)s; 1: one case after another; about 0.25 GB per extra BraTS case)")
    g.add_argument("--num-parts", type=int, metavar="N",
                   help="split the cases into N parts (every N-th case id in sorted order), e.g. one per machine")
    g.add_argument("--part-id", type=int, metavar="K", help="the part this run segments, 0 .. N-1")


def _server_options(args: argparse.Namespace):
    """The server options of ``args``: the one mapping from the command line; ServerOptions checks the values
    (perf has no transfer options: their defaults)."""
    from .server_options import ServerOptions

    transfer = ({k: getattr(args, k) for k in ("concurrency", "timeout_s", "retries", "shared_memory")}
                if hasattr(args, "shared_memory") else {})  # perf's --concurrency is its sweep's levels
    return ServerOptions(
        url=args.url, model=args.model, model_version=args.model_version, ssl=args.ssl,
        root_certificates=args.root_certificates, private_key=args.private_key,
        certificate_chain=args.certificate_chain, **transfer,
    )


def _segment_options(args: argparse.Namespace):
    """``segment``'s SegmentOptions and BatchOptions from ``args``: the one mapping; the objects check the values."""
    from .batch import BatchOptions
    from .pipeline import SegmentOptions

    if args.seed_crop:
        log.warning("--seed-crop is deprecated and does nothing: the seed's crop is the default now "
                    "(--keep-last-slice opts out)")
    options = SegmentOptions(
        tile=args.tile, overlap=args.overlap, blend=args.blend, tta=args.tta, labels=args.labels,
        keep_last_slice=args.keep_last_slice, flips_per_request=args.flips_per_request,
        server_flips=args.server_flips, allow_unprepared=args.allow_unprepared_input, max_voxels=args.max_voxels,
    )
    return options, BatchOptions(args.cases_in_memory, args.num_parts, args.part_id)


def build_parser() -> argparse.ArgumentParser:
    from . import server_flips
    from .pipeline import BLEND_CHOICES, LABEL_CHOICES, TTA_CHOICES, SegmentOptions

    d = SegmentOptions()
    parser = argparse.ArgumentParser(
        prog="brats-client",
        description="Brain tumour segmentation through a Triton server (research use only, not for clinical use).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_args(parser, False)
    # Each subcommand accepts the global options too (``segment ... --quiet``); SUPPRESS keeps one given before
    # the subcommand when it is not repeated after it.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_args(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser(
        "segment", help="segment one case folder, explicit files, or a folder of case folders", parents=[common],
        description="Read the four MRI modalities, preprocess as the seed did, send tiles to Triton, reassemble, "
        "post-process and write a uint8 NIfTI with the input's geometry.",
        epilog=SEGMENT_EXAMPLES + "\n" + report_fields.help_text() + "\n\n" + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    seg.add_argument("input", nargs="?", type=Path,
                     help="case folder, folder of cases (case folders, nnU-Net or MSD files), or one 4-D case file")
    seg.add_argument("-o", "--output", type=Path, required=True,
                     help="output NIfTI (one case) or output folder (batch)")
    for ch in ("t1", "t1ce", "t2", "flair"):
        seg.add_argument(f"--{ch}", type=Path, help=f"explicit {ch} file (instead of INPUT)")
    seg.add_argument("--channel-order",
                     help="nnU-Net and MSD inputs: the modalities of _0000.._0003 or of the 4-D file's channels, "
                     "e.g. FLAIR,T1w,t1gd,T2w (any dataset.json spelling; default: the dataset.json beside or "
                     "above the input)")
    seg.add_argument("--tile", type=_tile, default=d.tile,
                     help="largest tile edge (multiple of 16) or 'full' (default 192: the whole crop of a BraTS case)")
    seg.add_argument("--overlap", type=float, default=d.overlap,
                     help="tile overlap fraction in [0, 1) (default %(default)s)")
    seg.add_argument("--blend", choices=BLEND_CHOICES, default=d.blend,
                     help="how overlapping tiles are averaged (default %(default)s)")
    seg.add_argument("--tta", choices=TTA_CHOICES, default=d.tta,
                     help="test-time flips: none, flip4 (the seed's four: none, X, Y, XY; default), flip8 (every "
                     "subset of X, Y, Z)")
    seg.add_argument("--flips-per-request", type=int, default=d.flips_per_request, metavar="N",
                     help="flips of a tile batched into one request (default 1: requests overlap on the wire; "
                     "a GPU server may prefer 4)")
    seg.add_argument("--server-flips", choices=server_flips.MODES, default=d.server_flips,
                     help="the model's config may name a companion that applies the test-time flips in its graph "
                     "(brats-export writes <model>_flip4): one request per tile instead of one per flip, 4x fewer "
                     "bytes, the same labels. auto (default): use it when the server is on another host (it saves "
                     "network bytes; on this host four plain requests are faster); on: whenever offered; off: never")
    seg.add_argument("--labels", choices=LABEL_CHOICES, default=d.labels,
                     help="label convention of the output: brats2019 (1 core, 2 edema, 4 enhancing), brats2023 "
                     "(enhancing 3), msd (1 edema, 2 non-enhancing, 3 enhancing); auto (default): the input's "
                     "(brats2023 for BraTS 2023 names, msd for MSD files, a dataset.json's labels), else brats2019")
    seg.add_argument("--allow-unprepared-input", action="store_true",
                     help="segment a case whose background is not 0 or that does not look skull-stripped "
                     "(refused by default: the network expects BraTS-prepared volumes); the report records it")
    seg.add_argument("--keep-last-slice", action="store_true",
                     help="crop [min, max] instead of the seed's [min, max), which drops the last nonzero slice "
                     "per axis (not the seed's pipeline; see README)")
    seg.add_argument("--seed-crop", action="store_true",
                     help="deprecated, does nothing: the seed's crop is the default")
    seg.add_argument("--probabilities", type=Path, help="also write WT/TC/ET probabilities (one case)")
    seg.add_argument("--report", type=Path, help="write a JSON report (one case; a batch writes one per case, and "
                     "this file is its summary); its fields are explained below")
    seg.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    seg.add_argument("--checkpoint-sha256", metavar="SHA",
                     help="warn when the network model was exported from another checkpoint than this one "
                     "(its sha256, or the first 12+ hex digits; brats-export records it in each config)")
    seg.add_argument("--max-voxels", type=int, default=d.max_voxels, metavar="N",
                     help="refuse modalities of more than N voxels (default %(default)s = 2**26, about 400^3)")
    _add_batch_args(seg)
    _add_server_args(seg)

    prev = sub.add_parser("preview", help="PNG of axial, coronal and sagittal slices with the labels overlaid",
                          parents=[common])
    prev.add_argument("image", type=Path, help="background NIfTI (FLAIR or T1ce)")
    prev.add_argument("seg", type=Path, help="segmentation NIfTI")
    prev.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    prev.add_argument("--truth", type=Path, help="optional ground-truth segmentation, drawn as contours")
    prev.add_argument("--labels", choices=LABEL_CHOICES[1:],
                      help="label convention of the segmentation (default: the mark brats-client writes, a "
                      "dataset.json beside or above it, else its values; refused when they fit several)")
    prev.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    perf = sub.add_parser(
        "perf", help="perf_analyzer concurrency sweep on real tiles of a case: CSV, table and plot", parents=[common],
        description="Write a real tile of CASE as perf_analyzer input data, sweep concurrency against MODEL at URL, "
        "keep the CSV, print a summary table and write a plot of throughput and latency percentiles. When MODEL "
        "is a served pipeline (its config says brats_pipeline: segment), the input data is CASE's four files and "
        "each request segments the whole case (--tile does not apply).",
        epilog="example (after make demo and brats-serve --repository out/demo/model_repository):\n"
        "  brats-client perf out/demo/cases/Phantom_9001 --model brats_openvino --concurrency 1,2,4 "
        "--out out/perf\n\n" + EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    perf.add_argument("case", type=Path, help="case folder whose tiles are sent")
    _add_server_args(perf, transfer=False)
    perf.add_argument("--tile", type=_tile, default=128, help="tile edge, multiple of 16 (default 128)")
    perf.add_argument("--concurrency", default="1,2,4", help="comma-separated concurrency values (default 1,2,4)")
    perf.add_argument("--request-count", type=int, default=10,
                      help="requests per measurement window (default %(default)s)")
    perf.add_argument("--stability-percentage", type=float, default=50.0,
                      help="windows must agree within this percentage before a level counts (perf_analyzer's "
                      "stability check, at most 6 windows; raise it on a busy machine; default %(default)s)")
    perf.add_argument("--channel-order", help="nnU-Net and MSD inputs: modalities of _0000.._0003 / the 4th axis")
    perf.add_argument("--out", type=Path, default=Path("out/perf"), help="folder for data, CSV and PNG")
    from .evaluate import add_parser as add_evaluate_parser

    add_evaluate_parser(sub, [common], EPILOG)
    return parser


def _run_perf(args: argparse.Namespace) -> int:
    from . import modalities, perf, served_client
    from .pipeline import SegmentOptions

    try:
        levels = sorted({int(v) for v in args.concurrency.split(",")})
    except ValueError:
        raise UsageError(f"--concurrency takes integers like 1,2,4; got {args.concurrency!r}") from None
    if not levels or levels[0] < 1:
        raise UsageError(f"--concurrency values must be >= 1; got {args.concurrency!r}")
    order = args.channel_order.split(",") if args.channel_order else None
    server = _server_options(args)
    if served_client.is_pipeline(server):  # from its live config
        files = modalities.find_case_files(args.case, nnunet_order=order)
        args.out.mkdir(parents=True, exist_ok=True)
        inputs = perf.write_case_files(files, args.out / "input_data.json")
        title = f"{args.model}, the whole case {files.case_id} (its four files)"
    else:
        if args.tile is None:
            raise UsageError("perf needs a fixed tile edge, not 'full'")
        SegmentOptions(tile=args.tile)  # the one check of a tile edge
        args.out.mkdir(parents=True, exist_ok=True)
        shape = perf.write_real_tile(args.case, args.out / "input_data", args.tile, nnunet_order=order)
        inputs = perf.tile_inputs(args.out / "input_data", shape)
        title = f"{args.model}, tile {shape[1:]}"
    csv_path = args.out / f"perf_{args.model}.csv"
    rows = perf.run_sweep(server=server, inputs=inputs, concurrency=levels, csv_path=csv_path,
                          request_count=args.request_count, stability_percentage=args.stability_percentage)
    png = perf.plot(rows, args.out / f"perf_{args.model}.png", title)
    sys.stdout.write(perf.table(rows) + "\n")
    log.info("CSV %s, plot %s", csv_path, png)
    return EXIT_OK


def _configure_logging(args: argparse.Namespace) -> logging.Handler:
    """A stderr handler for this call of ``main`` (removed again at its end, so repeated calls don't stack)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    return handler


def main(argv: list[str] | None = None) -> int:
    # gRPC's C core writes its own log lines to stderr (e.g. each failed TLS handshake) unless told otherwise:
    # keep one error line per problem. Set before the first import of grpc (build_parser imports the transport).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed the help or the problem; a code, not an exception, to the caller
        return exit_code(e)
    handler = _configure_logging(args)
    try:
        if args.command == "segment":
            from .commands import run_segment

            options, batch_options = _segment_options(args)
            return run_segment(args, _server_options(args), options, batch_options)
        if args.command == "preview":
            from .preview import write_preview

            written = write_preview(args.image, args.seg, args.output, truth=args.truth, labels=args.labels,
                                    overwrite=args.overwrite)
            log.info("wrote %s", written)
            return EXIT_OK
        if args.command == "perf":
            return _run_perf(args)
        if args.command == "evaluate":
            from .evaluate import run_evaluate

            return run_evaluate(args)
    except BratsError as e:  # UsageError (exit 2) included; any other exception is a bug: a traceback, exit 1
        log.error("%s", e)
        return exit_code(e)
    except KeyboardInterrupt as e:
        log.error("interrupted; nothing half-written was kept")
        return exit_code(e)
    finally:
        logging.getLogger().removeHandler(handler)
    raise AssertionError(f"no handler for command {args.command!r}")  # argparse allows only the commands above


if __name__ == "__main__":
    sys.exit(main())

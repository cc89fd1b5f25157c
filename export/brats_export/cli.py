"""``brats-export``: turn a trained checkpoint into a Triton model repository (ONNX, TorchScript, OpenVINO)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from brats_client import exit_codes
from brats_client.contract import SPATIAL_DIVISOR
from brats_client.errors import BratsError, UsageError
from brats_client.exit_codes import EXIT_OK, exit_code

from .catalogue import FORMATS, INT8, MODELS, model_keys
from .errors import ExportError, MissingDependencyError

log = logging.getLogger("brats_export")

DEFAULT_CHECK_SIZES = "64,96x112x80"
DEFAULT_FULL_SIZE = "144x176x144"
SKIPPED_FULL_SIZE = ("the full-size parity check was skipped (--skip-full-size-check): these files were not "
                     "compared with PyTorch on a realistic input at a full BraTS crop size")
DEFAULT_TOLERANCE = 1e-4
# measured on the 2-core Intel Xeon here (2026-12-05, `/usr/bin/time -v`); keep the README's figures in step
FULL_SIZE_COST = ("Measured on 2 cores (Intel Xeon): the full-size rows add about 35-50 s and 0.3 GiB; a whole "
                  "default export (all formats and companions) took 2-3 min at a peak of 2.8 GiB (3.0 GB) resident.")
# what an export imports: the `export` extra of pyproject.toml (a client-only install has none of them)
EXPORT_MODULES = ("torch", "onnx", "onnxruntime", "openvino")
INSTALL_HINT = ("Install the export extra: pip install torch==2.13.0, then pip install '.[export]' in the brats-triton "
                "checkout (torch first and pinned, as the Makefile does: an open range pulls a multi-GB CUDA build). "
                "brats-export --configs-only needs none of them.")

DESCRIPTION = """\
Export the BraTS 2019 3D residual UNet from a PyTorch checkpoint to the formats Triton serves, check that
every exported file computes what PyTorch computes, and write a Triton model repository:

  DIR/brats_onnx/1/model.onnx            platform onnxruntime_onnx (ONNX opset 17)
  DIR/brats_torchscript/1/model.pt       platform pytorch_libtorch (traced TorchScript)
  DIR/brats_openvino/1/model.{xml,bin}   backend openvino (IR, FP32)
  DIR/<model>/config.pbtxt               CPU config; DIR/<model>/configs/gpu.pbtxt is the GPU variant,
                                         DIR/brats_onnx/configs/trt.pbtxt the TensorRT one (engine cache
                                         keyed on the checkpoint's sha256; not with --configs-only),
                                         DIR/brats_openvino/configs/bf16.pbtxt serves OpenVINO in bf16
  DIR/<model>_flip4/...                  the same network with the seed's four test-time flips inside the
                                         graph (one request per tile; skipped with --no-server-flips)
  DIR/brats_openvino_int8/...            with --int8 CASES only: the IR quantized to INT8 (convolutions), at a
                                         static shape, written only if its labels on held-out cases match the
                                         f32 model's (Dice >= 0.995 per region, in both OpenVINO runtimes)
  DIR/manifest.json                      checkpoint sha256, parity table, library versions, tensor contract

Every model takes INPUT__0 float32 [N, 4, D, H, W] (channels t1, t1ce, t2, flair; D, H, W multiples of 8)
and returns OUTPUT__0 float32 [N, 3, D, H, W] (sigmoid probabilities of WT, TC, ET).
Parity is checked on a normalised phantom case at a full BraTS crop and at small sizes, and on noise.
Nothing is written unless every format passes the parity check; files are built in a temporary folder
beside DIR and moved into place. The checkpoint may be the published brain-tumor-segmentation-0002 file
or a plain state dict; it is loaded without running code from it.
"""

EPILOG = f"""\
examples:
  brats-export --checkpoint brain-tumor-segmentation-0002 --repository model_repository
  brats-export --checkpoint model.pth --repository model_repository --formats onnx --force
  brats-export --configs-only --repository model_repository --threads 2
  brats-export --checkpoint model.pth --repository model_repository --formats openvino --int8 cases/ --force

{exit_codes.epilog()}
"""


def _formats(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(map(repr, unknown)) or repr(text)}; choose from {','.join(FORMATS)}"
        )
    return list(dict.fromkeys(names))


def _sizes(text: str) -> list[tuple[int, int, int]]:
    sizes = []
    for item in (t.strip() for t in text.split(",")):
        if not re.fullmatch(r"\d+(x\d+x\d+)?", item):
            raise argparse.ArgumentTypeError(f"size {item!r} is not N or DxHxW (e.g. 64 or 96x112x80)")
        dims = tuple(int(d) for d in item.split("x"))
        dims = dims * 3 if len(dims) == 1 else dims
        if any(d <= 0 or d % SPATIAL_DIVISOR for d in dims):
            raise argparse.ArgumentTypeError(
                f"size {item!r}: every side must be a positive multiple of {SPATIAL_DIVISOR}"
            )
        sizes.append(dims)
    return sizes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _fixed(text: str) -> int:
    value = _positive_int(text)
    if value % SPATIAL_DIVISOR:
        raise argparse.ArgumentTypeError(f"--fixed-size must be a multiple of {SPATIAL_DIVISOR}, got {value}")
    return value


def _int8_shape(text: str) -> str | tuple[int, int, int]:
    from .int8 import SHAPE_AUTO, SHAPE_DYNAMIC

    if text in (SHAPE_AUTO, SHAPE_DYNAMIC):
        return text
    return _sizes(text)[0]


def _fraction(text: str) -> float:
    value = _tolerance(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"tolerance must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="brats-export", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="trained weights: the published checkpoint or a (DataParallel) state dict (required, "
                        "except with --configs-only)")
    p.add_argument("--repository", type=Path, required=True, metavar="DIR",
                   help="Triton model repository to write (required; its parent folder must exist)")
    p.add_argument("--formats", type=_formats, default=list(FORMATS), metavar="LIST",
                   help=f"comma-separated subset of {','.join(FORMATS)} (default: all)")
    p.add_argument("--no-server-flips", action="store_true",
                   help="do not write the <model>_flip4 companions (graphs that run the seed's four test-time flips "
                        "themselves: one request per tile instead of four, which the client uses when offered; "
                        "default: written beside each model)")
    p.add_argument("--force", action="store_true",
                   help="replace model versions that already exist in DIR (default: refuse them, exit code 5)")
    p.add_argument("--fixed-size", type=_fixed, metavar="N",
                   help="export a static N^3 spatial shape (batch stays dynamic) for servers that need static "
                        "shapes; configs then carry fixed dims and parity is checked at N^3 only (default: none, "
                        "D, H and W dynamic)")
    p.add_argument("--check-sizes", type=_sizes, default=_sizes(DEFAULT_CHECK_SIZES), metavar="LIST",
                   help=f"small spatial sizes of the parity check, N or DxHxW, comma-separated (default: "
                        f"{DEFAULT_CHECK_SIZES}): crops of a normalised phantom, the first at batch 1, the others "
                        f"at batch 2, and random noise at the first size")
    p.add_argument("--full-size", type=lambda t: _sizes(t)[0], default=_sizes(DEFAULT_FULL_SIZE)[0],
                   metavar="DxHxW",
                   help=f"size of the realistic full-size parity input, a normalised phantom case (default: "
                        f"{DEFAULT_FULL_SIZE}, a whole BraTS crop). {FULL_SIZE_COST}")
    p.add_argument("--skip-full-size-check", action="store_true",
                   help="skip the full-size check (only the --check-sizes rows run); a warning is logged and "
                        "recorded in manifest.json (default: the check runs)")
    p.add_argument("--tolerance", type=_tolerance, default=DEFAULT_TOLERANCE, metavar="X",
                   help=f"largest allowed max |exported - PyTorch| (default: {DEFAULT_TOLERANCE:g})")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="CPU threads per model instance written into the configs (default: this machine's cores)")
    p.add_argument("--configs-only", action="store_true",
                   help="write only config.pbtxt files (no checkpoint, no torch needed): what model_repository/ "
                        "commits (default: export the models and write their configs)")
    p.add_argument("--pipeline", action="store_true",
                   help="also write brats_segment, the whole pipeline as one model (python backend: four NIfTI files "
                        "in, the segmentation out; needs numpy, scipy and nibabel in the backend's Python, which "
                        "the NGC container lacks; docs/pipeline.md) (default: not written)")
    p.add_argument("--pipeline-instances", type=_positive_int, metavar="N",
                   help="brats_segment requests run side by side (default: 2; about 0.7 GiB each; docs/pipeline.md)")
    p.add_argument("--pipeline-queue", type=_positive_int, metavar="N",
                   help="brats_segment requests that may wait; more are refused at once as busy (default: 4)")
    p.add_argument("--pipeline-queue-timeout-s", type=float, metavar="S",
                   help="a brats_segment request waiting longer is refused as busy (default: 120)")
    int8 = p.add_argument_group(
        "INT8 (opt-in; OpenVINO, CPU)",
        "Quantize brats_openvino's IR with NNCF on calibration cases and write brats_openvino_int8. It is written "
        "only if its labels on held-out cases (never calibrated on) match the f32 model's labels, per region, in "
        "this OpenVINO and in the Triton 24.10 container's (2024.4). Needs the nncf package (pip install "
        "'.[int8]'). Measured: docs/performance-notes.md.")
    int8.add_argument("--int8", type=Path, metavar="CASES",
                      help="folder of cases in any layout brats-client reads (BraTS folders, nnU-Net, MSD 4-D "
                           "files); the first are calibrated on, the last held out for the accuracy check "
                           "(default: no INT8 model)")
    int8.add_argument("--int8-held-out", type=_positive_int, metavar="N",
                      help="cases held out for the accuracy check (default: a third of CASES, at least 1)")
    int8.add_argument("--int8-shape", type=_int8_shape, default="auto", metavar="DxHxW",
                      help="the static input shape it is served at: auto (the largest padded crop of the "
                           "calibration cases; smaller crops are padded, larger ones tiled) or DxHxW (default: "
                           "auto). 'dynamic' quantizes a dynamic-shape IR, which OpenVINO computes wrongly: the "
                           "check refuses it (it exists to show the check works)")
    int8.add_argument("--int8-min-dice", type=_fraction, default=0.995, metavar="X",
                      help="smallest Dice per region (WT, TC, ET) against the f32 model's labels (default: 0.995)")
    int8.add_argument("--container-python", type=Path, metavar="PYTHON",
                      help="python of an environment with openvino==2024.4.0 (the container's runtime) for the "
                           "check (default: $BRATS_CONTAINER_PYTHON, else this checkout's .venv-ngc; without one "
                           "that runtime is not checked, and the manifest says so)")
    p.add_argument("--quiet", action="store_true",
                   help="log warnings and errors only, no parity table (default: progress and the table)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not args.configs_only and args.checkpoint is None:
            parser.error("--checkpoint FILE is required (or pass --configs-only)")
        if args.configs_only and args.int8 is not None:
            parser.error("--int8 quantizes an exported model: give --checkpoint instead of --configs-only")
    except SystemExit as e:  # argparse exits 2 on usage errors and 0 for --help
        return exit_code(e)
    handler = _configure_logging(args.quiet)
    try:
        if args.configs_only:
            _configs_only(args)
        else:
            _export(args)
    except (ExportError, BratsError) as e:
        sys.stderr.write(f"brats-export: error: {e}\n")
        return exit_code(e)
    finally:
        if handler is not None:
            log.removeHandler(handler)
    return EXIT_OK


def _configure_logging(quiet: bool) -> logging.Handler | None:
    """A stderr handler for this call, unless the caller (e.g. brats-demo) already logs through the root logger."""
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    if logging.getLogger().handlers:
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    return handler


def _configs_only(args: argparse.Namespace) -> None:
    from .configs import write_configs

    written = write_configs(args.repository, args.formats, args.threads, args.fixed_size,
                            server_flips=not args.no_server_flips)
    for path in written:
        log.info("wrote %s", path)
    if args.pipeline:
        _write_pipeline(args)


def _write_pipeline(args: argparse.Namespace) -> None:
    from . import pipeline_model

    given = {"instances": args.pipeline_instances, "max_queue": args.pipeline_queue,
             "queue_timeout_s": args.pipeline_queue_timeout_s}
    settings = pipeline_model.PipelineSettings(**{k: v for k, v in given.items() if v is not None})
    keys = model_keys(args.formats, server_flips=not args.no_server_flips)
    if args.int8 is not None:  # the pipeline may call the INT8 model too (request parameter model)
        keys.append(INT8)
    folder = pipeline_model.write(args.repository, keys, force=args.force, settings=settings)
    log.info("wrote the pipeline model %s", folder)


def missing_export_modules() -> list[str]:
    """Those of :data:`EXPORT_MODULES` that cannot be imported here (found without importing them)."""
    missing = []
    for name in EXPORT_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # an import hook refuses it
            found = False
        except ValueError:  # imported already, without a spec
            found = True
        if not found:
            missing.append(name)
    return missing


def _require_export_modules() -> None:
    missing = missing_export_modules()
    if missing:
        one = len(missing) == 1
        raise MissingDependencyError(
            f"{', '.join(missing)} {'is' if one else 'are'} not installed here (a client-only install?) and exporting "
            f"needs {'it' if one else 'them'}. {INSTALL_HINT}"
        )


def _export(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    _require_export_modules()  # before anything slow: a client-only install has no torch
    from . import repository
    from .hashing import exported_sha256

    keys = model_keys(args.formats, server_flips=not args.no_server_flips)
    int8_cases = _int8_cases(args) if args.int8 is not None else None  # fail before the slow part
    if int8_cases is not None:
        keys.append(INT8)
    repository.check_versions_writable(args.repository, keys, args.force)

    log.info("loading checkpoint %s", args.checkpoint)
    try:
        from . import exporters, parity
        from .checkpoint import load_checkpoint  # imports torch
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in EXPORT_MODULES:
            raise
        raise MissingDependencyError(f"exporting needs {e.name}, which cannot be imported here. {INSTALL_HINT}") from e

    model, digest = load_checkpoint(args.checkpoint)
    log.info("checkpoint sha256 %s", digest)

    warnings = []
    if args.skip_full_size_check and args.fixed_size is None:
        log.warning("%s", SKIPPED_FULL_SIZE)
        warnings.append(SKIPPED_FULL_SIZE)
    full_size = None if args.skip_full_size_check else args.full_size
    with repository.staging(args.repository) as stage:
        folders = {key: repository.version_dir(stage, key) for key in keys}
        for folder in folders.values():
            folder.mkdir(parents=True)
        result = exporters.export_formats(
            model, {k: f for k, f in folders.items() if k != INT8}, fixed_size=args.fixed_size,
            check_spatial_sizes=args.check_sizes, tolerance=args.tolerance, full_size=full_size,
        )
        table = parity.format_parity_table(result.parity)
        if not args.quiet:
            sys.stdout.write(table + "\n")
        files = dict(result.files)
        int8_info = None
        if int8_cases is not None:
            int8_info = _int8_export(args, files["openvino"][0], folders[INT8], int8_cases)
            files[INT8] = (folders[INT8] / "model.xml", folders[INT8] / "model.bin")
        files_sha = {key: {p.name: exported_sha256(p, "exported file") for p in paths}
                     for key, paths in files.items()}
        manifest = repository.build_manifest(keys, repository.ExportRecord(
            checkpoint=args.checkpoint, checkpoint_sha256=digest, parity=result.parity, opset=result.opset,
            versions=exporters.library_versions(), tolerance=args.tolerance, fixed_size=args.fixed_size,
            files_sha256=files_sha, openvino_host_precision=result.openvino_host_precision,
        ))
        manifest["warnings"] = warnings
        shapes = {}
        if int8_info is not None:
            manifest["models"][MODELS[INT8].name]["int8"] = int8_info
            shapes[INT8] = tuple(int8_info["shape"])
        repository.publish(stage, args.repository, keys, threads=args.threads, fixed_size=args.fixed_size,
                           force=args.force, manifest=manifest, shapes=shapes)
    if args.pipeline:
        _write_pipeline(args)
    log.info("repository %s ready (%s) in %.1f s", args.repository, ", ".join(args.formats),
             time.perf_counter() - start)


def _int8_cases(args: argparse.Namespace) -> tuple[list, list]:
    """The INT8 calibration and held-out cases, prepared (brats_export.int8.load_cases)."""
    if "openvino" not in args.formats:
        raise UsageError("--int8 quantizes the OpenVINO IR: add openvino to --formats")
    if args.fixed_size is not None:
        raise UsageError("--int8 takes its static shape from --int8-shape, not --fixed-size; drop one of them")
    if importlib.util.find_spec("nncf") is None:
        raise MissingDependencyError("--int8 needs NNCF, which is not installed here: pip install '.[int8]' in the "
                                     "brats-triton checkout (or pip install nncf==3.4.0)")
    from . import int8

    return int8.load_cases(args.int8, args.int8_held_out)


def _int8_export(args: argparse.Namespace, f32_xml: Path, folder: Path, cases: tuple[list, list]) -> dict:
    from . import int8, int8_gate

    info, rows = int8.export_int8(f32_xml, folder, *cases, shape=args.int8_shape, min_dice=args.int8_min_dice,
                                  python=int8_gate.container_python(args.container_python))
    if not args.quiet:
        sys.stdout.write(int8_gate.format_gate_table(rows) + "\n")
    return info


if __name__ == "__main__":
    sys.exit(main())

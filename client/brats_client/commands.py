"""The ``segment`` command: resolve inputs and outputs, then one case or a batch through
:func:`brats_client.batch.segment_cases` (or one case through a served pipeline model)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import batch, identity, io, modalities, pipeline, progress, served_client
from .errors import InputError, OutputError, UsageError
from .exit_codes import EXIT_OK, EXIT_PARTIAL
from .served import NETWORK_KEY
from .server_options import ServerOptions

log = logging.getLogger(__name__)


def _explicit(args: argparse.Namespace) -> modalities.CaseFiles | None:
    given = {ch: getattr(args, ch) for ch in modalities.CHANNELS}
    if not any(given.values()):
        return None
    missing = [f"--{ch}" for ch, p in given.items() if p is None]
    if missing:
        raise InputError(f"explicit inputs need all four modalities; missing {', '.join(missing)}")
    if args.input is not None:
        raise InputError(f"give either INPUT ({args.input}) or --t1/--t1ce/--t2/--flair, not both")
    return modalities.explicit_case(**given)


def _order(args: argparse.Namespace) -> list[str] | None:
    return [s.strip() for s in args.channel_order.split(",")] if args.channel_order else None


@contextlib.contextmanager
def _served_progress(files: modalities.CaseFiles, server: ServerOptions) -> Iterator[None]:
    """Lines while a served pipeline model computes a case, with an estimate from that model's statistics."""
    from .transport import TritonTransport

    with TritonTransport(server) as transport:
        wait = progress.InferenceWait(files.case_id, server.model, "the four files in one request", 1,
                                      transport.statistics)
        if log.isEnabledFor(logging.INFO):
            log.info("%s", wait.start_message())
        with progress.Heartbeat(wait.message, logger=log):
            yield


def _check_tls_files(server: ServerOptions) -> None:
    """The certificate and key files exist (tritonclient would raise a bare OSError)."""
    given = {
        "--root-certificates": server.root_certificates,
        "--private-key": server.private_key,
        "--certificate-chain": server.certificate_chain,
    }
    for flag, path in given.items():
        if path is not None and not Path(path).is_file():
            raise InputError(f"{flag} {path} does not exist or is not a file")


def _is_nifti_name(path: Path) -> bool:
    return modalities.strip_nifti_suffix(path.name) is not None


def _is_folder_name(path: Path) -> bool:
    """An output folder: an existing folder, or a new name without a suffix (``out``, ``out/``)."""
    return path.is_dir() or (not path.exists() and not path.suffix)


def _run_served(files: modalities.CaseFiles, outputs: pipeline.CaseOutputs, server: ServerOptions,
                options: pipeline.SegmentOptions) -> int:
    """One case through a served pipeline model: the four files go as they are, the segmentation comes back."""
    from . import atomic

    if outputs.probabilities is not None:
        raise UsageError(f"model {server.model!r} is a served pipeline, which returns labels only; "
                         "--probabilities needs a network model (e.g. --model brats_openvino)")
    log.info("%s: %s", files.case_id, files.describe())
    log.info("%s: model %s is a served pipeline: sending the four files", files.case_id, server.model)
    with _served_progress(files, server):
        segmentation, report = served_client.segment(files, server, options)
    gzipped = outputs.segmentation.name.lower().endswith(".gz")
    try:
        atomic.write_bytes_atomic(served_client.nifti_bytes(segmentation, gzipped), outputs.segmentation,
                                  overwrite=outputs.overwrite)
    except (OSError, atomic.TargetExistsError) as e:
        raise OutputError(f"cannot write {outputs.segmentation}: {e}") from e
    report["inputs"] = files.sources()
    report["outputs"] = {"segmentation": str(outputs.segmentation)}
    report["case"] = files.case_id
    report["server"]["pipeline"] = {"url": server.url, "model": server.model}
    if outputs.report is not None:
        io.write_json_atomic(report, outputs.report, overwrite=outputs.overwrite)
    vols = report["region_volumes_ml"]
    log.info("%s: WT %.1f mL, TC %.1f mL, ET %.1f mL in %.1f s (served pipeline) -> %s", files.case_id,
             vols["WT"], vols["TC"], vols["ET"], report["time_s"]["total"], outputs.segmentation)
    return EXIT_OK


def _check_checkpoint(expected: str | None, server: ServerOptions, model: str) -> None:
    """With ``--checkpoint-sha256``: warn when the network ``model`` records another checkpoint in its live config
    (its companion, exported with it, records the same). Nothing when the config cannot be read: connecting
    says why."""
    if expected is None:
        return
    parameters = served_client.model_parameters(server, model)
    warning = None if parameters is None else identity.checkpoint_mismatch(parameters, model, expected)
    if warning is not None:
        log.warning("%s", warning)


def run_segment(
    args: argparse.Namespace, server: ServerOptions, options: pipeline.SegmentOptions,
    batch_options: batch.BatchOptions,
) -> int:
    """Check every input and output, then connect: a bad input or output is reported before any request.

    A batch of every case under INPUT into the folder ``-o`` when INPUT is a folder of cases, or any folder and
    ``-o`` a folder name (a folder holding one case is then a batch of one); else one case (explicit files, a 4-D
    file, or a case folder) written to the NIfTI file ``-o``."""
    _check_tls_files(server)
    checkpoint = identity.checked_sha256(args.checkpoint_sha256) if args.checkpoint_sha256 else None
    explicit = _explicit(args)
    if explicit is None and args.input is None:
        raise InputError("give a case folder, a folder of cases, a 4-D case file, or --t1/--t1ce/--t2/--flair")
    if explicit is None and not args.input.exists():
        raise InputError(f"input {args.input} does not exist")
    folder = explicit is None and args.input.is_dir()
    if folder and not _is_nifti_name(args.output) and (
        _is_folder_name(args.output) or not modalities.is_case_folder(args.input)
    ):
        cases, invalid = modalities.find_cases(args.input, nnunet_order=_order(args))
        if batch_options.is_part:
            total = len(cases) + len(invalid)
            cases = batch_options.split(cases, key=lambda c: c.case_id)
            invalid = batch_options.split(invalid, key=lambda c: c.name)
            log.info("part %d of %d: %d of the %d cases", batch_options.part_id, batch_options.num_parts,
                     len(cases) + len(invalid), total)
        return _run_batch(cases, invalid, args, server, options, batch_options, checkpoint)
    if batch_options.is_part:
        raise UsageError("--num-parts and --part-id split a folder of cases; the input is one case")
    if not _is_nifti_name(args.output):
        raise OutputError(f"output {args.output} must end in .nii or .nii.gz for one case")
    if explicit is not None:
        files = explicit
    elif args.input.is_file():
        files = modalities.msd_case(args.input, _order(args))
    elif modalities.is_case_folder(args.input):
        files = modalities.find_case_files(args.input, nnunet_order=_order(args))
    else:
        raise OutputError(
            f"{args.input} holds several cases; give an output folder (-o out/) to segment them all, "
            f"or one case as INPUT for the file {args.output}"
        )
    outputs = pipeline.CaseOutputs(args.output, args.probabilities, args.report, args.overwrite)
    pipeline.check_outputs(outputs)  # before is_pipeline's request
    served = served_client.pipeline_parameters(server)
    if served is not None:
        served_client.check_code(served, server)
        _check_checkpoint(checkpoint, server, served.get(NETWORK_KEY, ""))
        return _run_served(files, outputs, server, options)
    _check_checkpoint(checkpoint, server, server.model)
    [outcome] = batch.segment_cases([(files, outputs)], server, options)  # prepared before it connects
    report = outcome.report
    vols = report["region_volumes_ml"]
    log.info(
        "%s: WT %.1f mL, TC %.1f mL, ET %.1f mL in %.1f s -> %s",
        files.case_id, vols["WT"], vols["TC"], vols["ET"], report["time_s"]["total"], args.output,
    )
    return EXIT_OK


def _run_batch(
    cases: list[modalities.CaseFiles], invalid: list[modalities.InvalidCase], args: argparse.Namespace,
    server: ServerOptions, options: pipeline.SegmentOptions, batch_options: batch.BatchOptions,
    checkpoint: str | None = None,
) -> int:
    """Segment ``cases`` into the output folder; ``invalid`` ones are reported as failed (exit 6) with their
    reason, and the others go on."""
    _check_batch_outputs(args, server)
    _check_checkpoint(checkpoint, server, server.model)
    todo, skipped = _batch_jobs(cases, args.output, args.overwrite)
    for case in invalid:
        log.warning("%s: not segmented: %s", case.name, case.reason)
    bar = tqdm(total=len(cases), initial=len(skipped), desc="cases", unit="case",
               disable=True if args.quiet else None, file=sys.stderr)

    def ended(outcome: batch.Outcome) -> None:
        bar.update(1)
        if outcome.error is not None:
            log.error("%s failed: %s", todo[outcome.index][0].case_id, outcome.error)

    try:
        with logging_redirect_tqdm():
            outcomes = batch.segment_cases(todo, server, options, batch_options, keep_going=True, on_outcome=ended)
    finally:
        bar.close()
    done = [todo[o.index][0].case_id for o in outcomes if o.error is None]
    failed = [(case.name, case.reason) for case in invalid]
    failed += [(todo[o.index][0].case_id, o.error) for o in outcomes if o.error is not None]
    summary = {"done": done, "skipped": skipped, "failed": [{"case": c, "error": m} for c, m in failed]}
    if batch_options.is_part:
        summary["part"] = {"id": batch_options.part_id, "of": batch_options.num_parts, "cases": len(cases)}
    if args.report is not None:
        io.write_json_atomic(summary, args.report, overwrite=True)
    log.info("batch: %d done, %d skipped, %d failed", len(done), len(skipped), len(failed))
    for case_id, message in failed:
        log.error("failed: %s: %s", case_id, message)
    return EXIT_PARTIAL if failed else EXIT_OK


def _check_batch_outputs(args: argparse.Namespace, server: ServerOptions) -> None:
    """What a batch refuses before it reads a case: a served pipeline, a file as the output folder, one case's
    options; then the output folder is made and checked."""
    out_dir: Path = args.output
    if served_client.is_pipeline(server):
        raise UsageError(f"model {server.model!r} is a served pipeline, which this command sends one case at a time; "
                         f"segment the folder with a network model (e.g. --model brats_openvino) or each case alone")
    if _is_nifti_name(out_dir):
        raise OutputError(f"a folder of cases needs an output folder, got the file name {out_dir}")
    if args.probabilities is not None:
        raise InputError("--probabilities is for one case; a batch writes segmentations and reports only")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output folder {out_dir} exists and is not a folder")
    if args.report is not None:
        io.check_writable(args.report, overwrite=True)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder {out_dir}: {e.strerror or e}") from e
    io.check_folder_writable(out_dir)


def _batch_jobs(
    cases: list[modalities.CaseFiles], out_dir: Path, overwrite: bool,
) -> tuple[list[tuple[modalities.CaseFiles, pipeline.CaseOutputs]], list[str]]:
    """Each case and its outputs in ``out_dir``, and the ids of the cases skipped (segmented already)."""
    todo, skipped = [], []
    for files in cases:
        seg = out_dir / f"{files.case_id}.nii.gz"
        if seg.exists() and not overwrite:
            skipped.append(files.case_id)
            log.info("%s: %s exists, skipped (use --overwrite to redo)", files.case_id, seg)
            continue
        todo.append((files, pipeline.CaseOutputs(seg, None, out_dir / f"{files.case_id}.json", overwrite)))
    return todo, skipped

"""The ``evaluate`` command: Dice and HD95 of predicted segmentations against their ground truth, per case.

PRED and TRUTH are each a NIfTI file or a folder. A folder holds flat files (``<case>.nii.gz``, as
``brats-client segment`` writes a batch, or ``<case>_seg.nii.gz``) and/or case folders with one
``<case>_seg.nii.gz`` / ``<case>-seg.nii.gz`` each (the BraTS layout; modality files are ignored). Cases are
matched by id. The metrics and the empty-region rule are those of :mod:`brats_client.metrics`.

Labels: each file's convention is decided on its own (:func:`brats_client.conventions.decide`), so a BraTS
2019-labelled prediction scores against BraTS 2023 or MSD truth: ``--pred-labels`` / ``--truth-labels`` (or
``--labels`` for both), else the mark ``brats-client segment`` writes into its outputs, else the labels of a
``dataset.json`` beside or above the file (MSD, nnU-Net), else the file name (``_seg`` / ``-seg``: BraTS) and the
values. A file whose values fit conventions that would score it differently ({1, 2, 3}: BraTS 2023 or MSD) with
nothing to decide is refused, naming the choices.
"""

from __future__ import annotations

import argparse
import csv
import io as text_io
import logging
import statistics
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import conventions, dataset_json, io, modalities
from .contract import REGIONS
from .errors import InputError, OutputError
from .exit_codes import EXIT_OK

log = logging.getLogger(__name__)

EXAMPLES = """\
examples:
  brats-client evaluate out/ cases/ --out metrics.csv             # batch outputs against BraTS case folders
  brats-client evaluate seg.nii.gz cases/X/X_seg.nii.gz --out x.csv --json x.json
  brats-client evaluate out/ Task01_BrainTumour/labelsTr --out msd.csv   # MSD labels, from its dataset.json

label conventions (each file decided on its own): brats2019 (1 necrotic/non-enhancing core, 2 edema,
4 enhancing), brats2023 (1 necrotic core, 2 edema, 3 enhancing), msd (1 edema, 2 non-enhancing, 3 enhancing).
The rule: --pred-labels / --truth-labels (or --labels for both); else the mark brats-client segment writes into
its outputs; else the "labels" of a dataset.json beside or above the file (MSD, nnU-Net); else the file name
(<case>_seg / <case>-seg: a BraTS file) and the values. Values that fit conventions which score differently
({1, 2, 3}: BraTS 2023 or MSD; {1, 2}: BraTS or MSD) with nothing to decide are refused, naming the choices.
"""


@dataclass(frozen=True)
class Pair:
    case_id: str
    prediction: Path
    truth: Path


def add_parser(sub, parents: list[argparse.ArgumentParser], epilog: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate", help="Dice and HD95 (WT, TC, ET) of predictions against ground truth, per case", parents=parents,
        description="Score predicted segmentations against ground-truth segmentations, matched by case id: Dice,\n"
        "HD95 in mm (voxel size from the header) and volumes of WT, TC and ET; write a CSV (and JSON) and print\n"
        "the mean and median. A region empty in both: Dice 1, HD95 0; empty in one: Dice 0, HD95 373.13 mm.",
        epilog=EXAMPLES + "\n" + epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prediction", type=Path, help="predicted segmentation file, or folder of them")
    p.add_argument("truth", type=Path, help="ground-truth segmentation file, or folder (BraTS case folders)")
    p.add_argument("--labels", choices=conventions.NAMES, help="label convention of both files (see below)")
    p.add_argument("--pred-labels", choices=conventions.NAMES, help="label convention of the predictions")
    p.add_argument("--truth-labels", choices=conventions.NAMES, help="label convention of the truth")
    p.add_argument("--out", type=Path, required=True, help="CSV to write, one row per case")
    p.add_argument("--json", type=Path, help="also write per-case scores and the summary as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


# ------------------------------------------------------------------------------------------------- matching


def _case_id(path: Path, folder: Path | None = None) -> str:
    """``<case>_seg`` -> case; ``seg`` inside a case folder -> the folder name; any other name -> its stem."""
    stem = modalities.strip_nifti_suffix(path.name) or path.name
    case = modalities.segmentation_case_id(path)
    if case is None:
        case = folder.name if folder is not None and stem.lower() == "seg" else stem
    return modalities.check_case_id(case)


def _is_segmentation_name(path: Path) -> bool:
    stem = modalities.strip_nifti_suffix(path.name) or ""
    return modalities.segmentation_case_id(path) is not None or stem.lower() == "seg"


def _nifti_files(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise InputError(f"cannot list {folder}: {e.strerror or e}") from e
    return [p for p in entries if not p.name.startswith(".") and modalities.strip_nifti_suffix(p.name)]


def find_segmentations(path: Path, role: str) -> dict[str, Path]:
    """Case id -> segmentation file under ``path`` (a file or a folder); ``role`` names it in errors."""
    if path.is_file():
        if modalities.strip_nifti_suffix(path.name) is None:
            raise InputError(f"{role} {path} is not a .nii or .nii.gz file")
        return {_case_id(path): path}
    if not path.is_dir():
        raise InputError(f"{role} {path} does not exist")
    found: dict[str, Path] = {}

    def add(case: str, file: Path) -> None:
        if case in found:
            raise InputError(f"{role} case {case} appears twice: {found[case]} and {file}; keep one")
        found[case] = file

    for entry in _nifti_files(path):
        if entry.is_file() and not modalities.is_brats_modality(entry):
            add(_case_id(entry), entry)
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        segs = [p for p in _nifti_files(sub) if p.is_file() and _is_segmentation_name(p)]
        if len(segs) > 1:
            raise InputError(f"{sub} holds several segmentations ({', '.join(p.name for p in segs)}); "
                             f"keep one <case>_seg.nii.gz per case folder")
        if segs:
            add(_case_id(segs[0], sub), segs[0])
    if not found:
        raise InputError(f"no segmentation under {role} folder {path}: expected <case>.nii.gz or <case>_seg.nii.gz "
                         f"files, or case folders holding <case>_seg.nii.gz")
    return found


def match_cases(prediction: Path, truth: Path) -> list[Pair]:
    """The cases found under both, by case id (one file against one file always pairs); the rest is logged."""
    preds, truths = find_segmentations(prediction, "prediction"), find_segmentations(truth, "truth")
    if prediction.is_file() and truth.is_file():
        ((case, pred_file),), (truth_file,) = preds.items(), truths.values()
        return [Pair(case, pred_file, truth_file)]
    common = sorted(set(preds) & set(truths))
    if not common:
        raise InputError(
            f"no case id of {prediction} ({_some(preds)}) matches one of {truth} ({_some(truths)}); name predictions "
            f"<case>.nii.gz after the truth's case ids"
        )
    for role, only in (("predictions", set(preds) - set(truths)), ("truths", set(truths) - set(preds))):
        if only:
            log.warning("%d %s without a match, not scored: %s", len(only), role, _some(only))
    return [Pair(case, preds[case], truths[case]) for case in common]


def _some(names: Iterable[str], limit: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ------------------------------------------------------------------------------------------------- scoring


_BRATS_NAMES = frozenset({"brats2019", "brats2023"})  # what a <case>_seg / <case>-seg name allows


def file_convention(labels: io.LabelMap, option: str | None, role: str, flag: str) -> conventions.Decision:
    """The convention of one label map, decided as the module docstring says (``flag`` is the option that sets
    it, named in errors); refuses labels it cannot place."""
    hint = _BRATS_NAMES if _is_segmentation_name(labels.path) else None
    return conventions.decide(
        np.unique(labels.labels), path=labels.path, role=role, option=option, option_flag=flag,
        descrip=labels.descrip, dataset=dataset_json.label_convention(labels.path), name_hint=hint,
    )


def _check_grid(pred: io.LabelMap, truth: io.LabelMap) -> None:
    if problem := io.grid_problem(pred.labels.shape, pred.affine, truth.labels.shape, truth.affine):
        raise InputError(f"prediction {pred.path} and truth {truth.path} have {problem}; both must be on one "
                         f"grid (segment the truth's own images)")


def score_pair(
    pair: Pair, pred_labels: str | None = None, truth_labels: str | None = None,
    *, flags: tuple[str, str] = ("--pred-labels", "--truth-labels"),
) -> dict:
    """One case's row: per region Dice, HD95 (mm), predicted and true volume (mL); the ``*_labels`` conventions
    (None: decided per file, see the module docstring), set by the options ``flags``."""
    from . import metrics

    pred = io.load_label_map(pair.prediction, "prediction")
    truth = io.load_label_map(pair.truth, "truth")
    _check_grid(pred, truth)
    pred_convention = file_convention(pred, pred_labels, "prediction", flags[0])
    truth_convention = file_convention(truth, truth_labels, "truth", flags[1])
    scores = metrics.region_scores(pred.labels, truth.labels, truth.zooms,
                                   pred_convention=pred_convention.convention,
                                   truth_convention=truth_convention.convention)
    return {
        "case": pair.case_id,
        "regions": {region: asdict(score) for region, score in scores.items()},
        "labels": {"prediction": pred_convention.convention, "truth": truth_convention.convention},
        "labels_from": {"prediction": pred_convention.source, "truth": truth_convention.source},
        "voxel_mm": list(truth.zooms),
        "prediction": str(pair.prediction),
        "truth": str(pair.truth),
    }


def summarise(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and median over cases of each region's Dice and HD95."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for stat, fn in (("mean", statistics.fmean), ("median", statistics.median)):
        out[stat] = {
            measure: {r: float(fn([row["regions"][r][measure] for row in rows])) for r in REGIONS}
            for measure in ("dice", "hd95_mm")
        }
    return out


def format_table(summary: dict, cases: int) -> str:
    """Dice of each region (WT, TC, ET: :data:`brats_client.contract.REGIONS`), then HD95 (mm); one line per
    statistic."""
    head = f"{f'{cases} case(s)':<12}" + "".join(f"{'Dice ' + r:>9}" for r in REGIONS)
    head += "".join(f"{'HD95 ' + r:>9}" for r in REGIONS) + "  (HD95 in mm)"
    lines = [head]
    for stat, values in summary.items():
        line = f"{stat:<12}" + "".join(f"{values['dice'][r]:>9.3f}" for r in REGIONS)
        lines.append(line + "".join(f"{values['hd95_mm'][r]:>9.2f}" for r in REGIONS))
    return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
    columns = [("dice", "dice_{}"), ("hd95_mm", "hd95_{}_mm"), ("pred_ml", "pred_{}_ml"), ("truth_ml", "truth_{}_ml")]
    header = ["case", *(name.format(r) for _, name in columns for r in REGIONS), "prediction", "truth"]
    buffer = text_io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        values = [f"{row['regions'][r][key]:.6g}" for key, _ in columns for r in REGIONS]
        writer.writerow([row["case"], *values, row["prediction"], row["truth"]])
    return buffer.getvalue()


def run_evaluate(args: argparse.Namespace) -> int:
    """Check outputs, match, score every case, then write the CSV (and JSON) and print the table."""
    from .metrics import HD95_EMPTY_MM

    outputs = [p for p in (args.out, args.json) if p is not None]
    if args.json is not None and args.json.resolve() == args.out.resolve():
        raise OutputError(f"--out and --json are the same file {args.out}")
    for path in outputs:
        io.check_writable(path, overwrite=args.overwrite)
    pairs = match_cases(args.prediction, args.truth)
    pred_labels, truth_labels = args.pred_labels or args.labels, args.truth_labels or args.labels
    flags = ("--pred-labels" if args.pred_labels or not args.labels else "--labels",
             "--truth-labels" if args.truth_labels or not args.labels else "--labels")
    rows = []
    for pair in pairs:
        rows.append(score_pair(pair, pred_labels, truth_labels, flags=flags))
        log.debug("%s: %s", pair.case_id, rows[-1]["regions"])
    for role in ("prediction", "truth"):
        used = Counter((row["labels"][role], row["labels_from"][role]) for row in rows)
        for (name, source), count in sorted(used.items()):
            log.info("%s labels of %d case(s): %s (from %s)", role, count, name, source)
    summary = summarise(rows)
    io.save_text_atomic(to_csv(rows), args.out, overwrite=args.overwrite)
    if args.json is not None:
        doc = {"cases": rows, "summary": summary, "hd95_one_empty_mm": HD95_EMPTY_MM}
        io.write_json_atomic(doc, args.json, overwrite=args.overwrite)
    sys.stdout.write(format_table(summary, len(rows)) + "\n")
    log.info("wrote %s", ", ".join(map(str, outputs)))
    return EXIT_OK

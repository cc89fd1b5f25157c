"""``brats-client`` argument handling: global options anywhere, the label convention from the input names."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from brats_client import cli, commands, modalities, pipeline

SUBCOMMANDS = {
    "segment": ["case", "-o", "seg.nii.gz"],
    "preview": ["flair.nii.gz", "seg.nii.gz", "-o", "p.png"],
    "perf": ["case"],
    "evaluate": ["pred", "truth", "--out", "m.csv"],
}


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_global_options_before_or_after_the_subcommand(command: str) -> None:
    parser = cli.build_parser()
    rest = SUBCOMMANDS[command]
    plain = parser.parse_args([command, *rest])
    assert (plain.quiet, plain.verbose) == (False, False)
    for argv in (["--quiet", command, *rest], [command, *rest, "--quiet"], [command, "-q", *rest]):
        args = parser.parse_args(argv)
        assert (args.quiet, args.verbose) == (True, False), argv
    # given before the subcommand and not repeated after it: kept
    args = parser.parse_args(["-v", command, *rest, "-q"])
    assert (args.quiet, args.verbose) == (True, True)


def test_quiet_after_the_subcommand_sets_the_log_level() -> None:
    args = cli.build_parser().parse_args(["segment", "case", "-o", "seg.nii.gz", "--quiet"])
    handler = cli._configure_logging(args)
    try:
        assert logging.getLogger().level == logging.WARNING
    finally:
        logging.getLogger().removeHandler(handler)


def _files(tmp_path: Path, naming: str) -> modalities.CaseFiles:
    return modalities.CaseFiles("c", {ch: tmp_path / f"{ch}.nii.gz" for ch in modalities.CHANNELS}, naming)


def test_labels_follow_the_naming_unless_given(tmp_path: Path, caplog) -> None:
    parser = cli.build_parser()
    auto = parser.parse_args(["segment", "case", "-o", "seg.nii.gz"])
    assert auto.labels is None
    options = commands._options(auto)
    assert options.labels == pipeline.SegmentOptions().labels
    with caplog.at_level(logging.INFO, logger="brats_client"):
        assert commands._case_options(_files(tmp_path, "brats2023"), auto, options).labels == "brats2023"
    assert "brats2023 labels (ET = 3) for brats2023 file names" in caplog.text
    assert commands._case_options(_files(tmp_path, "brats2019"), auto, options).labels == "brats2019"
    assert commands._case_options(_files(tmp_path, "nnunet"), auto, options).labels == "brats2019"
    for given in ("brats2019", "brats2023"):
        explicit = parser.parse_args(["segment", "case", "-o", "seg.nii.gz", "--labels", given])
        for naming in ("brats2019", "brats2023"):
            resolved = commands._case_options(_files(tmp_path, naming), explicit, commands._options(explicit))
            assert resolved.labels == given

"""``brats-client`` argument handling: global options anywhere, the command's defaults are the API's."""

from __future__ import annotations

import logging

import pytest
from brats_client import BatchOptions, ServerOptions, cli, commands, pipeline

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


def test_segment_defaults_are_the_api_defaults() -> None:
    """The command's options and ``SegmentOptions()`` are one definition: parsing nothing gives the API's defaults."""
    args = cli.build_parser().parse_args(["segment", "case", "-o", "seg.nii.gz"])
    assert cli._segment_options(args) == (pipeline.SegmentOptions(), BatchOptions())
    assert cli._server_options(args) == ServerOptions()
    assert pipeline.SegmentOptions().labels == "auto"
    for given in ("brats2019", "brats2023", "msd"):
        explicit = cli.build_parser().parse_args(["segment", "case", "-o", "seg.nii.gz", "--labels", given])
        assert cli._segment_options(explicit)[0].labels == given


def test_usage_errors_exit_2_and_internal_errors_are_not_usage_errors(monkeypatch, capsys) -> None:
    """Exit 2 means the options were wrong (UsageError); a ValueError from inside is a bug and surfaces as one."""
    from brats_client.errors import UsageError
    from brats_client.exit_codes import EXIT_USAGE

    def broken(args, server, options, batch_options):
        raise ValueError("an internal invariant")

    assert cli.main(["segment", "case", "-o", "seg.nii.gz", "--overlap", "1.5"]) == EXIT_USAGE
    assert "overlap must be in [0, 1)" in capsys.readouterr().err
    assert issubclass(UsageError, ValueError)  # callers of the Python API may still catch ValueError
    monkeypatch.setattr(commands, "run_segment", broken)
    with pytest.raises(ValueError, match="an internal invariant"):
        cli.main(["segment", "case", "-o", "seg.nii.gz"])

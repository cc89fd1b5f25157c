"""One exit-code table for the three commands: each --help prints it, and each code has one meaning."""

from __future__ import annotations

import pytest
from brats_client import exit_codes


def test_codes_are_distinct_and_each_has_one_row():
    codes = [code for code, _, _ in exit_codes.TABLE]
    assert len(codes) == len(set(codes))
    named = {v for k, v in vars(exit_codes).items() if k.startswith("EXIT_")}
    assert named == set(codes)


@pytest.mark.parametrize("module", ["brats_client.cli", "brats_export.cli", "brats_serve.cli"])
def test_every_command_prints_the_table_and_returns_an_int(module, capsys):
    import importlib

    cli = importlib.import_module(module)
    assert cli.main(["--help"]) == exit_codes.EXIT_OK
    assert exit_codes.epilog() in capsys.readouterr().out
    assert cli.main(["--no-such-option"]) == exit_codes.EXIT_USAGE  # returned, not raised as SystemExit

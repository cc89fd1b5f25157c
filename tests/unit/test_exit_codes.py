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


ERROR_MODULES = ("brats_client.errors", "brats_export.errors", "brats_serve.errors")

# every error type of the three commands and its code (brats_client.exit_codes.ERRORS is the one map)
EXPECTED = {
    "builtins.KeyboardInterrupt": exit_codes.EXIT_INTERRUPTED,
    "brats_client.errors.BratsError": exit_codes.EXIT_UNEXPECTED,
    "brats_client.errors.UsageError": exit_codes.EXIT_USAGE,
    "brats_client.errors.InputError": exit_codes.EXIT_INPUT,
    "brats_client.errors.ServerError": exit_codes.EXIT_SERVER,
    "brats_client.errors.ServerUnavailableError": exit_codes.EXIT_SERVER,
    "brats_client.errors.DeadlineError": exit_codes.EXIT_SERVER,
    "brats_client.errors.ModelNotReadyError": exit_codes.EXIT_SERVER,
    "brats_client.errors.BackendLostError": exit_codes.EXIT_SERVER,
    "brats_client.errors.OutputError": exit_codes.EXIT_OUTPUT,
    "brats_export.errors.ExportError": exit_codes.EXIT_UNEXPECTED,
    "brats_export.errors.MissingDependencyError": exit_codes.EXIT_UNEXPECTED,
    "brats_export.errors.CheckpointError": exit_codes.EXIT_INPUT,
    "brats_export.errors.RepositoryError": exit_codes.EXIT_OUTPUT,
    "brats_export.errors.ParityError": exit_codes.EXIT_CHECK,
    "brats_export.errors.AccuracyError": exit_codes.EXIT_CHECK,
    "brats_serve.errors.ServeError": exit_codes.EXIT_SERVER,
    "brats_serve.errors.ServeRepositoryError": exit_codes.EXIT_INPUT,
    "brats_serve.errors.ServerExitedError": exit_codes.EXIT_SERVER,
    "brats_serve.errors.BackendDiedError": exit_codes.EXIT_PARTIAL,
    "brats_serve.errors.StopRequested": exit_codes.EXIT_OK,
}


def _error_types() -> dict[str, type[BaseException]]:
    """Every exception class defined in the three packages' errors modules."""
    import importlib

    found = {}
    for name in ERROR_MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{value.__qualname__}"] = value
    return found


def test_every_error_type_is_in_the_one_map_with_its_code():
    defined = _error_types()
    assert set(defined) | {"builtins.KeyboardInterrupt"} == set(exit_codes.ERRORS) == set(EXPECTED)
    assert exit_codes.ERRORS == EXPECTED
    for name, cls in defined.items():
        error = cls(2) if name.endswith("StopRequested") else cls("x")
        assert exit_codes.exit_code(error) == EXPECTED[name], name


@pytest.mark.parametrize(("error", "code"), [
    (KeyboardInterrupt(), exit_codes.EXIT_INTERRUPTED),
    (SystemExit(0), exit_codes.EXIT_OK),  # argparse's --help
    (SystemExit(None), exit_codes.EXIT_OK),
    (SystemExit(2), exit_codes.EXIT_USAGE),  # argparse's usage error
    (RuntimeError("a bug"), exit_codes.EXIT_UNEXPECTED),
    (ValueError("a bug"), exit_codes.EXIT_UNEXPECTED),  # UsageError is a ValueError, not the other way round
])
def test_other_exceptions(error, code):
    assert exit_codes.exit_code(error) == code


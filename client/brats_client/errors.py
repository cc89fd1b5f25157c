"""Errors of the client; each message names the file or value and says what to do.

Each class has its own exit code (:data:`EXIT_CODES`, :func:`exit_code`), from the table that brats-client,
brats-export and brats-serve share (:mod:`brats_client.exit_codes`).
"""

from .exit_codes import EXIT_INPUT, EXIT_OUTPUT, EXIT_SERVER, EXIT_UNEXPECTED, EXIT_USAGE


class BratsError(Exception):
    """Base class of every error the client raises on purpose."""


class UsageError(BratsError, ValueError):
    """An option value that no command accepts (exit 2); a ValueError too, for callers of the Python API.
    Internal invariants raise plain ValueError: they are bugs, not usage errors."""


class InputError(BratsError):
    """An input file or option is missing, unreadable or inconsistent."""


class OutputError(BratsError):
    """An output cannot be written (exists without --overwrite, folder not writable, ...)."""


class ServerError(BratsError):
    """The Triton server is unreachable, does not serve the model, or answered with an error."""


EXIT_CODES: dict[type[BratsError], int] = {
    UsageError: EXIT_USAGE, InputError: EXIT_INPUT, ServerError: EXIT_SERVER, OutputError: EXIT_OUTPUT,
}


def exit_code(error: BratsError) -> int:
    """The exit code of ``error``'s class (:data:`EXIT_CODES`), :data:`EXIT_UNEXPECTED` for any other."""
    return next((code for cls, code in EXIT_CODES.items() if isinstance(error, cls)), EXIT_UNEXPECTED)

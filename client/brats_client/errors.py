"""Errors of the client; each message names the file or value and says what to do.

Each class has its own exit code of ``brats-client`` (:data:`EXIT_CODES`, :func:`exit_code`); every exit code of
the client is defined here and only here.
"""


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


# Exit codes of brats-client: 0 success; 1 unexpected error; 2 usage error (UsageError: option values);
# 3 bad input; 4 server error; 5 output error; 6 a batch finished with failed cases; 130 interrupted (Ctrl-C, as a
# shell reports SIGINT).
EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_INPUT, EXIT_SERVER, EXIT_OUTPUT, EXIT_BATCH_FAILED = range(7)
EXIT_INTERRUPTED = 130
EXIT_CODES: dict[type[BratsError], int] = {
    UsageError: EXIT_USAGE, InputError: EXIT_INPUT, ServerError: EXIT_SERVER, OutputError: EXIT_OUTPUT,
}


def exit_code(error: BratsError) -> int:
    """The exit code of ``error``'s class (:data:`EXIT_CODES`), :data:`EXIT_UNEXPECTED` for any other."""
    return next((code for cls, code in EXIT_CODES.items() if isinstance(error, cls)), EXIT_UNEXPECTED)

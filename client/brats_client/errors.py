"""Errors of the client; each message names the file or value and says what to do.

Each class has its exit code in the one map of the three commands, :data:`brats_client.exit_codes.ERRORS`.
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


"""Errors of the client; each message names the file or value and says what to do.

The CLI maps each class to its own exit code (see ``brats_client.cli``).
"""


class BratsError(Exception):
    """Base class of every error the client raises on purpose."""


class InputError(BratsError):
    """An input file or option is missing, unreadable or inconsistent."""


class OutputError(BratsError):
    """An output cannot be written (exists without --overwrite, folder not writable, ...)."""


class ServerError(BratsError):
    """The Triton server is unreachable, does not serve the model, or answered with an error."""

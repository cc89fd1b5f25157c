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


# What went wrong on the server, told apart by the gRPC status code (brats_client.endpoints.error_type)
class ServerUnavailableError(ServerError):
    """Unreachable, or the request was refused as busy (UNAVAILABLE, RESOURCE_EXHAUSTED): try again later."""


class DeadlineError(ServerError):
    """No answer within the deadline (DEADLINE_EXCEEDED, or none at all in time)."""


class ModelNotReadyError(ServerError):
    """The server has no such model ready (NOT_FOUND)."""


class BackendLostError(ServerError):
    """The model's backend process stalled or died (INTERNAL; Triton's python backend says so only in its
    message, ``Stub process ... is not healthy``)."""


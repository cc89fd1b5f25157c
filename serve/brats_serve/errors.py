"""Errors of the local Triton launcher."""


class ServeError(Exception):
    """The server could not be started or stopped; the message carries the reason and the log's tail."""


class RepositoryError(ServeError):
    """The model repository is missing, holds no model, or its models have no model files (exit 3, bad input)."""

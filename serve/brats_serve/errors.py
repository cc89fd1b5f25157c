"""Errors of the local Triton launcher."""


class ServeError(Exception):
    """The server could not be started or stopped; the message carries the reason and the log's tail."""

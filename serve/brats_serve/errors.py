"""Errors of the local Triton launcher and brats-serve (exit codes: :data:`brats_client.exit_codes.ERRORS`)."""

import signal


class ServeError(Exception):
    """The server could not be started or stopped; the message carries the reason and the log's tail."""


class ServeRepositoryError(ServeError):
    """The model repository is missing, holds no model, or its models have no model files (bad input)."""


class ServerExitedError(ServeError):
    """tritonserver exited by itself while it served."""


class BackendDiedError(ServeError):
    """A model's backend process died while the server ran; the server is stopped and its log kept."""


class StopRequested(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived (a KeyboardInterrupt, so no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"{signal.Signals(self.signum).name} received, stopping"

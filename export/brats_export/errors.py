"""Errors of the export package; each message names the file or value and says what to do."""


class ExportError(Exception):
    """Base class: the CLI maps it to a non-zero exit with its message."""


class CheckpointError(ExportError):
    """The checkpoint is missing, unreadable, unsafe, or not this network."""


class ParityError(ExportError):
    """An export does not compute what eager PyTorch computes."""


class RepositoryError(ExportError):
    """The model repository cannot be written as asked."""


class MissingDependencyError(ExportError):
    """A library of the ``export`` extra (torch, onnx, onnxruntime, openvino) is not installed."""


class AccuracyError(ParityError):
    """A reduced-precision model (INT8) labels the held-out cases too differently from the f32 model."""

    def __init__(self, message: str, rows: list | None = None) -> None:
        super().__init__(message)
        self.rows = rows or []

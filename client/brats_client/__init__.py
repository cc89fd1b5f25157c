"""brats-triton's client: segment brain MRI cases with a Triton server, torch-free.

The public API, one import path per name (``from brats_client import SegmentOptions, segment_cases``); the
modules behind it load on first use. :func:`segment_cases` segments one case or many (``brats-client segment``
does): each case's files (:func:`find_case_files`) and outputs (:class:`CaseOutputs`), a server
(:class:`ServerOptions`) or an open :class:`Transport`, :class:`SegmentOptions` and :class:`BatchOptions`; one
:class:`Outcome` per case. The ladder beneath it: :func:`prepare_case` -> :func:`open_transport` ->
:func:`segment_prepared` (:func:`infer_case` then :func:`finish_case`), or :func:`segment_case` for one case on an
open transport. Any :class:`Transport` runs it: :class:`TritonTransport` (a server) or :class:`LocalTransport` (a
predictor here).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "BratsError": "errors", "InputError": "errors", "OutputError": "errors", "ServerError": "errors",
    "UsageError": "errors",
    "CaseFiles": "modalities", "find_case_files": "modalities", "explicit_case": "modalities",
    "msd_case": "modalities",
    "ServerOptions": "server_options",
    "BatchOptions": "batch", "Outcome": "batch", "segment_cases": "batch",
    "ModelInfo": "model_info",
    "Transport": "protocol",
    "TritonTransport": "transport",
    "LocalTransport": "local",
    "SegmentOptions": "pipeline", "CaseOutputs": "pipeline", "PreparedCase": "pipeline", "Prediction": "pipeline",
    "check_outputs": "pipeline", "prepare_case": "pipeline", "infer_case": "pipeline", "finish_case": "pipeline",
    "segment_prepared": "pipeline", "segment_case": "pipeline", "open_transport": "pipeline", "predict": "pipeline",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'brats_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""The client's side of the served pipeline (:mod:`brats_client.served`): is a model one, and segment a case by
sending its four files as they are on disk, in one request.

A model is a pipeline when its live config says so (parameter ``brats_pipeline: segment``), never because of its
name. The request carries the options as request parameters, with ``labels`` resolved here from the input's file
names (the server sees its own names). The server's error messages start with the error's kind (``InputError:``);
it is raised here as that error, so the exit codes match the local pipeline's. Busy refusals (the pipeline's
queue is full) are retried with a bounded backoff; every request carries the client's deadline. The client code
the pipeline carries is compared with this client's (:mod:`brats_client.identity`).
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from . import errors, identity, modalities
from .endpoints import connect, describe, error_type, status
from .errors import DeadlineError, InputError, ServerError, ServerUnavailableError, UsageError
from .modalities import CaseFiles
from .pipeline import LABELS_AUTO, SegmentOptions, options_to_parameters
from .served import OUTPUT_REPORT, OUTPUT_SEGMENTATION, PIPELINE, PIPELINE_KEY
from .server_options import ServerOptions

log = logging.getLogger(__name__)

KINDS = {cls.__name__: cls for cls in (InputError, UsageError, errors.OutputError, ServerError)}


def model_parameters(server: ServerOptions, model: str, version: str = "") -> dict[str, str] | None:
    """The live config parameters of ``model`` at the first URL, or None when its config cannot be read."""
    client = connect(server, server.urls[0])
    try:
        config = client.get_model_config(model, version, client_timeout=server.connect_timeout_s)
    except InferenceServerException:
        return None
    finally:
        client.close()
    return {key: value.string_value for key, value in config.config.parameters.items()}


def pipeline_parameters(server: ServerOptions) -> dict[str, str] | None:
    """The live config parameters of ``server.model`` when it is a served pipeline, else None (also when they
    cannot be read: the network path then says why, no server or no such model, with its own checks)."""
    parameters = model_parameters(server, server.model, server.model_version)
    return parameters if parameters is not None and parameters.get(PIPELINE_KEY) == PIPELINE else None


def is_pipeline(server: ServerOptions) -> bool:
    """Whether ``server.model`` is a served pipeline, from the live config (:func:`pipeline_parameters`)."""
    return pipeline_parameters(server) is not None


def check_code(parameters: dict[str, str], server: ServerOptions) -> str | None:
    """Warn (and return the warning) when the pipeline's recorded client code differs from this client's."""
    warning = identity.mismatch(parameters, server.model)
    if warning is not None:
        log.warning("%s at %s: %s", server.model, server.urls[0], warning.removeprefix(f"model {server.model!r} "))
    return warning


def request_parameters(files: CaseFiles, options: SegmentOptions) -> dict[str, Any]:
    """The request's parameters for ``options``, ``labels`` resolved from the input's names."""
    labels = modalities.input_convention(files)[0] if options.labels == LABELS_AUTO else options.labels
    return {**options_to_parameters(options), "labels": labels}


def segment(files: CaseFiles, server: ServerOptions, options: SegmentOptions) -> tuple[bytes, dict[str, Any]]:
    """Send ``files`` to the pipeline model; returns the segmentation (gzipped NIfTI bytes) and the report."""
    import tritonclient.grpc as grpcclient

    if files.channel_index is not None:
        raise InputError(f"{files.case_id}: the served pipeline takes one file per modality; "
                         f"{files.paths['t1']} holds all four (segment it with a network model instead)")
    inputs = []
    for ch, path in files.paths.items():
        tensor = grpcclient.InferInput(ch, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([path.read_bytes()], dtype=np.object_))
        inputs.append(tensor)
    client = connect(server, server.urls[0])
    try:
        result = _infer_retrying_busy(client, files.case_id, inputs, server, request_parameters(files, options))
    finally:
        client.close()
    report = json.loads(result.as_numpy(OUTPUT_REPORT).reshape(-1)[0])
    return bytes(result.as_numpy(OUTPUT_SEGMENTATION).reshape(-1)[0]), report


def _infer_retrying_busy(client: Any, case_id: str, inputs: list, server: ServerOptions,
                         parameters: dict[str, Any]) -> Any:
    """One request with the deadline ``server.timeout_s`` (the gRPC deadline, which cancels the request in the
    server when it passes, and the request's ``timeout``, which bounds its wait in the server's queue); a busy
    refusal (UNAVAILABLE, RESOURCE_EXHAUSTED) is retried ``server.retries`` times after ``server.backoff_s``,
    doubling, and each retry is logged. Errors are raised as the client's own."""
    where = f"model {server.model!r} at {server.urls[0]}"
    for attempt in range(server.retries + 1):
        try:
            return client.infer(server.model, inputs, model_version=server.model_version, parameters=parameters,
                                timeout=round(server.timeout_s * 1e6), client_timeout=server.timeout_s)
        except InferenceServerException as e:
            if error_type(e) is ServerUnavailableError and attempt < server.retries:  # refused as busy
                delay_s = server.backoff_s * 2**attempt
                log.warning("%s: %s is busy (%s); retry %d of %d in %.1f s", case_id, where, describe(e),
                            attempt + 1, server.retries, delay_s)
                time.sleep(delay_s)
                continue
            raise _client_error(e, case_id, where, server, attempt) from e
    raise AssertionError("unreachable")  # the loop returns or raises


def _client_error(e: InferenceServerException, case_id: str, where: str, server: ServerOptions,
                  attempt: int) -> errors.BratsError:
    """The server's error as the client's: its own kinds by the message's prefix (the server wrote it), busy and
    deadline by their status code."""
    kind, _, message = (e.message() or "").partition(": ")
    server_kind = error_type(e)
    if status(e) == "StatusCode.INVALID_ARGUMENT" and kind in KINDS:
        return KINDS[kind](f"{case_id}: {message}")
    if server_kind is ServerUnavailableError:
        return server_kind(f"{where} is busy ({describe(e)}) after {attempt + 1} tries; try again later, or "
                           f"raise --retries (now {server.retries})")
    if server_kind is DeadlineError:
        return server_kind(f"{where}: no answer within --timeout-s {server.timeout_s:g} s ({describe(e)}); the "
                           "server stops the request; raise --timeout-s for larger cases or a busy server")
    if kind in KINDS:
        return KINDS[kind](f"{case_id}: {message}")
    return server_kind(f"{where}: {describe(e)}")


def nifti_bytes(segmentation: bytes, gzipped: bool) -> bytes:
    """The server's ``.nii.gz`` bytes as the output's suffix wants them."""
    return segmentation if gzipped else gzip.decompress(segmentation)

"""The client's side of the served pipeline (:mod:`brats_client.served`): is a model one, and segment a case by
sending its four files as they are on disk, in one request.

A model is a pipeline when its live config says so (parameter ``brats_pipeline: segment``), never because of its
name. The request carries the options as request parameters, with ``labels`` resolved here from the input's file
names (the server sees its own names). The server's error messages start with the error's kind (``InputError:``);
it is raised here as that error, so the exit codes match the local pipeline's.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from . import errors, modalities
from .endpoints import connect, describe
from .errors import InputError, ServerError, UsageError
from .modalities import CaseFiles
from .pipeline import LABELS_AUTO, SegmentOptions
from .served import OUTPUT_REPORT, OUTPUT_SEGMENTATION, PIPELINE, PIPELINE_KEY
from .server_options import ServerOptions

KINDS = {cls.__name__: cls for cls in (InputError, UsageError, errors.OutputError, ServerError)}


def is_pipeline(server: ServerOptions) -> bool:
    """Whether ``server.model`` is a served pipeline, from the live config at the first URL. False when it
    cannot be read: the network path then says why (no server, no such model) with its own checks."""
    client = connect(server, server.urls[0])
    try:
        config = client.get_model_config(server.model, server.model_version, client_timeout=server.connect_timeout_s)
    except InferenceServerException:
        return False
    finally:
        client.close()
    parameter = config.config.parameters.get(PIPELINE_KEY)
    return parameter is not None and parameter.string_value == PIPELINE


def request_parameters(files: CaseFiles, options: SegmentOptions) -> dict[str, Any]:
    """The request's parameters for ``options``, ``labels`` resolved from the input's names."""
    labels = modalities.input_convention(files)[0] if options.labels == LABELS_AUTO else options.labels
    return {
        "labels": labels, "tta": options.tta, "tile": "full" if options.tile is None else options.tile,
        "overlap": options.overlap, "blend": options.blend, "server_flips": options.server_flips,
        "allow_unprepared": options.allow_unprepared, "keep_last_slice": options.keep_last_slice,
    }


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
        result = client.infer(server.model, inputs, model_version=server.model_version,
                              parameters=request_parameters(files, options), client_timeout=server.timeout_s)
    except InferenceServerException as e:
        kind, _, message = (e.message() or "").partition(": ")
        if kind in KINDS:
            raise KINDS[kind](f"{files.case_id}: {message}") from e
        raise ServerError(f"model {server.model!r} at {server.urls[0]}: {describe(e)}") from e
    finally:
        client.close()
    report = json.loads(result.as_numpy(OUTPUT_REPORT).reshape(-1)[0])
    return bytes(result.as_numpy(OUTPUT_SEGMENTATION).reshape(-1)[0]), report


def nifti_bytes(segmentation: bytes, gzipped: bool) -> bytes:
    """The server's ``.nii.gz`` bytes as the output's suffix wants them."""
    return segmentation if gzipped else gzip.decompress(segmentation)

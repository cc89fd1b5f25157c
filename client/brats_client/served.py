"""The whole pipeline inside Triton: a python-backend model (``brats_segment``) that takes the four modality files
as bytes and answers with the segmentation as NIfTI bytes and the JSON report.

Its stages are the client's own, not a copy: the request's files are written to a private temporary folder and
go through :func:`brats_client.pipeline.prepare_case`, :func:`~brats_client.pipeline.infer_case` and
:func:`~brats_client.pipeline.finish_case`, exactly as ``brats-client segment`` runs them; only the transport
differs: :class:`BlsTransport` calls the network model in the same server through business-logic scripting
(BLS), so the network runs in its native backend. ``triton_python_backend_utils`` exists only inside Triton: it
is imported in :meth:`TritonPythonModel.initialize` and handed to the transport.

The model's config says what it is (parameter ``brats_pipeline: segment``); clients detect it from there, never
from the model's name. ``brats-export --pipeline`` writes it (:mod:`brats_export.pipeline_model`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Generator, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import modalities, pipeline, server_flips
from .contract import CHANNELS, INPUT_NAME, OUTPUT_NAME, output_shape
from .errors import BratsError, InputError, ServerError, UsageError
from .model_info import ModelInfo

log = logging.getLogger(__name__)

PIPELINE_KEY = "brats_pipeline"  # config parameter of a pipeline model; its value says what it does
PIPELINE = "segment"
NETWORK_KEY = "brats_network_model"  # the network model it calls by default
NETWORKS_KEY = "brats_networks"  # JSON: {model: {"max_batch_size": N, "companion": M} | {"server_flips": F}}
OUTPUT_SEGMENTATION = "segmentation"
OUTPUT_REPORT = "report"
# request parameters and what they set; the rest of SegmentOptions keeps the command's defaults
PARAMETERS = ("model", "labels", "tta", "tile", "overlap", "blend", "server_flips", "allow_unprepared",
              "keep_last_slice")
GZIP_MAGIC = b"\x1f\x8b"


def options_from_parameters(parameters: Mapping[str, Any]) -> tuple[pipeline.SegmentOptions, str | None]:
    """SegmentOptions and the network model asked for by a request's parameters; UsageError naming the
    parameter for an unknown one or a bad value."""
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise UsageError(f"unknown request parameter(s) {', '.join(unknown)}; known: {', '.join(PARAMETERS)}")
    given = dict(parameters)
    model = given.pop("model", None)
    if "tile" in given:
        given["tile"] = None if str(given["tile"]) == "full" else _number(given, "tile", int)
    if "overlap" in given:
        given["overlap"] = _number(given, "overlap", float)
    for flag in ("allow_unprepared", "keep_last_slice"):
        if flag in given and not isinstance(given[flag], bool):
            given[flag] = _flag(flag, given[flag])
    return replace(pipeline.SegmentOptions(), **given), None if model is None else str(model)


def _number(given: Mapping[str, Any], name: str, kind: type) -> Any:
    try:
        return kind(given[name])
    except (TypeError, ValueError):
        raise UsageError(f"request parameter {name} must be a {kind.__name__}, got {given[name]!r}") from None


def _flag(name: str, value: Any) -> bool:
    text = str(value).lower()
    if text not in ("true", "false", "1", "0"):
        raise UsageError(f"request parameter {name} must be true or false, got {value!r}")
    return text in ("true", "1")


def segment_files(
    data: Mapping[str, bytes], options: pipeline.SegmentOptions, transport: Any, workdir: Path
) -> tuple[bytes, dict[str, Any]]:
    """Segment the four modalities given as NIfTI bytes (``.nii`` or gzipped) with the client's stages; returns the
    segmentation's bytes (``.nii.gz``, the input's geometry) and the report. Files live in ``workdir``."""
    missing = [ch for ch in CHANNELS if not data.get(ch)]
    if missing:
        raise InputError(f"request input(s) {', '.join(missing)} missing or empty; send all of "
                         f"{', '.join(CHANNELS)} as BYTES, each one NIfTI file (.nii or .nii.gz)")
    paths = {}
    for ch in CHANNELS:
        paths[ch] = workdir / f"{ch}.nii{'.gz' if data[ch][:2] == GZIP_MAGIC else ''}"
        paths[ch].write_bytes(data[ch])
    files = modalities.explicit_case(**paths, case_id="case")
    outputs = pipeline.CaseOutputs(workdir / "segmentation.nii.gz")
    try:
        prepared = pipeline.prepare_case(files, options)
        report = pipeline.finish_case(pipeline.infer_case(prepared, transport), outputs)
    except BratsError as e:  # name the request's inputs, not this folder
        raise type(e)(str(e).replace(f"{workdir}{os.sep}", "request input ")) from e
    report["inputs"] = {ch: f"request input {ch} ({len(data[ch])} bytes)" for ch in CHANNELS}
    report["outputs"] = {"segmentation": f"response output {OUTPUT_SEGMENTATION}"}
    report.pop("case", None)
    return outputs.segmentation.read_bytes(), report


class BlsTransport:
    """A :class:`brats_client.protocol.Transport` to a network model of the same server, through BLS: one
    request at a time. ``networks`` is the pipeline config's :data:`NETWORKS_KEY` table."""

    def __init__(self, pb_utils: Any, model: str, networks: Mapping[str, Mapping[str, Any]]) -> None:
        if model not in networks:
            raise UsageError(f"model {model!r} is not a network this pipeline calls; choose from "
                             f"{', '.join(sorted(networks))}")
        self._pb, self._model, self._networks = pb_utils, model, networks
        entry = networks[model]
        parameters = {}
        if entry.get("companion"):
            parameters[server_flips.COMPANION_KEY] = entry["companion"]
        if entry.get("server_flips"):
            parameters[server_flips.SERVER_FLIPS_KEY] = entry["server_flips"]
        self._info = ModelInfo(model, "", INPUT_NAME, OUTPUT_NAME, int(entry.get("max_batch_size", 1)), "bls",
                               parameters=parameters)

    def __enter__(self) -> BlsTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    crosses_network = False  # BLS: the network model runs in this server

    @property
    def info(self) -> ModelInfo:
        if not self._pb.is_model_ready(model_name=self._model):
            raise ServerError(f"model {self._model!r} is not ready in this server")
        return self._info

    def infer_stream(
        self, batches: Iterable[tuple[Any, np.ndarray]]
    ) -> Generator[tuple[Any, np.ndarray], None, None]:
        pb = self._pb
        for key, batch in batches:
            request = pb.InferenceRequest(model_name=self._model, requested_output_names=[OUTPUT_NAME],
                                          inputs=[pb.Tensor(INPUT_NAME, np.ascontiguousarray(batch))])
            response = request.exec()
            if response.has_error():
                raise ServerError(f"model {self._model!r}: {response.error().message()}")
            output = pb.get_output_tensor_by_name(response, OUTPUT_NAME).as_numpy()
            if output.shape != output_shape(batch.shape):
                raise ServerError(f"model {self._model!r} returned shape {output.shape} for input {batch.shape}")
            yield key, output

    def describe(self) -> dict[str, Any]:
        return {"url": "this server (BLS)", "shared_memory": False, "concurrency": 1}

    def statistics(self) -> None:
        return None

    def open_model(self, name: str) -> BlsTransport:
        return BlsTransport(self._pb, name, self._networks)

    def close(self) -> None:
        pass


def _input_bytes(pb_utils: Any, request: Any, name: str) -> bytes | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise InputError(f"request input {name} holds {values.size} elements; send one file as one BYTES element")
    return bytes(values[0])


class TritonPythonModel:
    """The ``brats_segment`` model of Triton's python backend: each request segments one case; a bad input or
    option answers that request with an error (the command's message) and the model goes on serving."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self._network = parameters[NETWORK_KEY]
        self._networks = json.loads(parameters[NETWORKS_KEY])

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        pb = self._pb
        try:
            data = {ch: _input_bytes(pb, request, ch) for ch in CHANNELS}
            options, model = options_from_parameters(json.loads(request.parameters() or "{}"))
            transport = server_flips.open_for(BlsTransport(pb, model or self._network, self._networks),
                                              options.tta, options.server_flips)
            with tempfile.TemporaryDirectory(prefix="brats_segment_") as tmp:
                segmentation, report = segment_files(data, options, transport, Path(tmp))
        except BratsError as e:  # the kind first: brats-client raises the same error (brats_client.served_client)
            code = pb.TritonError.INVALID_ARG if isinstance(e, (InputError, UsageError)) else pb.TritonError.INTERNAL
            return pb.InferenceResponse(error=pb.TritonError(f"{type(e).__name__}: {e}", code))
        except Exception as e:  # a bug: this request fails, the model keeps serving
            log.exception("brats_segment: unexpected error")
            return pb.InferenceResponse(error=pb.TritonError(f"unexpected error ({type(e).__name__}: {e})"))
        return pb.InferenceResponse(output_tensors=[
            pb.Tensor(OUTPUT_SEGMENTATION, np.array([segmentation], dtype=np.object_)),
            pb.Tensor(OUTPUT_REPORT, np.array([json.dumps(report).encode()], dtype=np.object_)),
        ])

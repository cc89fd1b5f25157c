"""The whole pipeline inside Triton: a python-backend model (``brats_segment``) that takes the four modality files
as bytes and answers with the segmentation as NIfTI bytes and the JSON report.

Its stages are the client's own, not a copy: the request's files are written to a private temporary folder and
go through :func:`brats_client.pipeline.prepare_case`, :func:`~brats_client.pipeline.infer_case` and
:func:`~brats_client.pipeline.finish_case`, exactly as ``brats-client segment`` runs them; only the transport
differs: :class:`BlsTransport` calls the network model in the same server through business-logic scripting
(BLS), so the network runs in its native backend. ``triton_python_backend_utils`` exists only inside Triton: it
is imported in :meth:`TritonPythonModel.initialize` and handed to the transport.

The model's config says what it is (parameter ``brats_pipeline: segment``); clients detect it from there, never
from the model's name, and compare the client code it records (:mod:`brats_client.identity`) with their own. The
network models it calls are read as the server loaded them, at load time (:mod:`brats_client.served_networks`).
``brats-export --pipeline`` writes it (:mod:`brats_export.pipeline_model`).

Many clients: several instances run requests side by side, the dynamic batcher's queue policy bounds those
waiting (refused at once past it: UNAVAILABLE / HTTP 503, busy, retry), and a request whose client cancelled it
(a gRPC client gone or past its deadline) or whose ``timeout`` passed stops between tiles (:class:`RequestWatch`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import identity, modalities, pipeline, served_networks, server_flips
from .contract import CHANNELS, output_shape
from .errors import BratsError, InputError, ServerError, UsageError
from .model_info import ModelInfo

log = logging.getLogger(__name__)

PIPELINE_KEY = "brats_pipeline"  # config parameter of a pipeline model; its value says what it does
PIPELINE = "segment"
NETWORK_KEY = "brats_network_model"  # the network model it calls by default
# JSON list: the network models it may call; their configs are read from the repository at load time
NETWORKS_KEY = "brats_network_models"
OUTPUT_SEGMENTATION = "segmentation"
OUTPUT_REPORT = "report"
# request parameters: the network model, then SegmentOptions' fields (pipeline.options_from_parameters)
NETWORK_PARAMETER = "model"
GZIP_MAGIC = b"\x1f\x8b"


def options_from_parameters(parameters: Mapping[str, Any]) -> tuple[pipeline.SegmentOptions, str | None]:
    """SegmentOptions and the network model asked for by a request's parameters; UsageError naming the
    parameter for an unknown one or a bad value."""
    given = dict(parameters)
    model = given.pop(NETWORK_PARAMETER, None)
    try:
        options = pipeline.options_from_parameters(given)
    except UsageError as e:
        raise UsageError(f"{e} (request parameters: {NETWORK_PARAMETER} and the options)") from None
    return options, None if model is None else str(model)


def segment_files(
    data: Mapping[str, bytes], options: pipeline.SegmentOptions, transport: Any, workdir: Path,
    watch: RequestWatch | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Segment the four modalities given as NIfTI bytes (``.nii`` or gzipped) with the client's stages; returns the
    segmentation's bytes (``.nii.gz``, the input's geometry) and the report. Files live in ``workdir``; ``watch``
    is checked between the stages (and by the transport between tiles)."""
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
        inferred = pipeline.infer_case(prepared, transport)
        if watch is not None:
            watch.check("before writing the labels")
        report = pipeline.finish_case(inferred, outputs)
    except BratsError as e:  # name the request's inputs, not this folder
        raise type(e)(str(e).replace(f"{workdir}{os.sep}", "request input ")) from e
    report["inputs"] = {ch: f"request input {ch} ({len(data[ch])} bytes)" for ch in CHANNELS}
    report["outputs"] = {"segmentation": f"response output {OUTPUT_SEGMENTATION}"}
    report.pop("case", None)
    return outputs.segmentation.read_bytes(), report


class CancelledError(BratsError):
    """The request's client cancelled it (gone, or past its gRPC deadline) or its timeout passed: stop."""


class BusyError(ServerError):
    """A network model refused a tile because its queue is full: the pipeline answers busy too."""


class RequestWatch:
    """Whether a request should stop: its client cancelled it (Triton's request cancellation: a gRPC client
    that is gone or past its deadline), or its own ``timeout`` (microseconds, the KServe ``timeout`` parameter;
    0: none), counted from the start of its execution, has passed. Checked between tiles."""

    def __init__(self, is_cancelled: Callable[[], bool], timeout_us: int = 0) -> None:
        self._is_cancelled = is_cancelled
        self._deadline = time.monotonic() + timeout_us / 1e6 if timeout_us else None
        self._timeout_us = timeout_us

    def check(self, where: str) -> None:
        if self._is_cancelled():
            raise CancelledError(f"the request was cancelled by its client (gone, or past its deadline) {where}")
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise CancelledError(f"the request's timeout of {self._timeout_us / 1e6:g} s passed {where}")


class BlsTransport:
    """A :class:`brats_client.protocol.Transport` to a network model of the same server, through BLS: one
    request at a time. ``networks``: the network models this pipeline may call, as the server loaded them
    (:func:`brats_client.served_networks.live_networks`). ``watch``: checked before each network request."""

    def __init__(self, pb_utils: Any, model: str, networks: Mapping[str, ModelInfo],
                 watch: RequestWatch | None = None) -> None:
        if model not in networks:
            raise UsageError(f"model {model!r} is not a network this pipeline calls; choose from "
                             f"{', '.join(sorted(networks)) or 'none (see the server log)'}")
        self._pb, self._model, self._networks, self._watch = pb_utils, model, networks, watch
        self._info = networks[model]
        self._sent = 0

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
        pb, info = self._pb, self._info
        for key, batch in batches:
            if self._watch is not None:
                self._watch.check(f"after {self._sent} network request(s)")
            request = pb.InferenceRequest(model_name=self._model, requested_output_names=[info.output_name],
                                          inputs=[pb.Tensor(info.input_name, np.ascontiguousarray(batch))])
            response = request.exec()
            self._sent += 1
            if response.has_error():
                error = response.error()
                code = error.code() if hasattr(error, "code") else None
                if code is not None and code == getattr(pb.TritonError, "UNAVAILABLE", None):
                    raise BusyError(f"model {self._model!r} is busy: {error.message()}")
                raise ServerError(f"model {self._model!r}: {error.message()}")
            output = pb.get_output_tensor_by_name(response, info.output_name).as_numpy()
            if output.shape != output_shape(batch.shape):
                raise ServerError(f"model {self._model!r} returned shape {output.shape} for input {batch.shape}")
            yield key, output

    def describe(self) -> dict[str, Any]:
        return {"url": "this server (BLS)", "shared_memory": False, "concurrency": 1}

    def statistics(self) -> None:
        return None

    def open_model(self, name: str) -> BlsTransport:
        return BlsTransport(self._pb, name, self._networks, self._watch)

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
    option answers that request with an error (the command's message) and the model goes on serving. Several
    instances (the config's instance_group) run requests side by side; the dynamic batcher's queue policy bounds
    the requests waiting for one (refused at once past it: busy, retry)."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self._network = parameters[NETWORK_KEY]
        repository = Path(args["model_repository"]).parent  # args: <repository>/<this model>
        config_name = served_networks.server_config_name()
        self._networks, problems = served_networks.live_networks(repository, json.loads(parameters[NETWORKS_KEY]),
                                                                 config_name)
        for name, why in problems.items():
            log.warning("%s: network model %s cannot be called: %s", config.get("name"), name, why)
        carried = identity.package_sha256(Path(__file__).resolve().parent)
        if carried != parameters.get(identity.CLIENT_SHA256_KEY, carried):
            log.warning("%s: the brats_client code in %s has sha256 %s, but the config records %s (%s); re-export "
                        "the pipeline (brats-export --configs-only --pipeline --force)", config.get("name"),
                        Path(__file__).resolve().parent, carried[:12],
                        parameters[identity.CLIENT_SHA256_KEY][:12], parameters.get(identity.VERSION_KEY))
        self._code_identity = {key: parameters.get(key, "") for key in (identity.VERSION_KEY,
                                                                        identity.CLIENT_SHA256_KEY)}

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        pb = self._pb
        try:
            watch = RequestWatch(request.is_cancelled, int(request.timeout() or 0))
            data = {ch: _input_bytes(pb, request, ch) for ch in CHANNELS}
            options, model = options_from_parameters(json.loads(request.parameters() or "{}"))
            transport = server_flips.open_for(BlsTransport(pb, model or self._network, self._networks, watch),
                                              options.tta, options.server_flips)
            with tempfile.TemporaryDirectory(prefix="brats_segment_") as tmp:
                segmentation, report = segment_files(data, options, transport, Path(tmp), watch)
            report["server"]["code"] = self._code_identity
        except BratsError as e:  # the kind first: brats-client raises the same error (brats_client.served_client)
            if isinstance(e, CancelledError):
                log.info("brats_segment: stopped: %s", e)
            return pb.InferenceResponse(error=pb.TritonError(f"{type(e).__name__}: {e}", self._code(e)))
        except Exception as e:  # a bug: this request fails, the model keeps serving
            log.exception("brats_segment: unexpected error")
            return pb.InferenceResponse(error=pb.TritonError(f"unexpected error ({type(e).__name__}: {e})"))
        return pb.InferenceResponse(output_tensors=[
            pb.Tensor(OUTPUT_SEGMENTATION, np.array([segmentation], dtype=np.object_)),
            pb.Tensor(OUTPUT_REPORT, np.array([json.dumps(report).encode()], dtype=np.object_)),
        ])

    def _code(self, error: BratsError) -> Any:
        """The status of the error's answer: 400 / INVALID_ARGUMENT for the input's and the options' errors, 503 /
        UNAVAILABLE for busy (retry), CANCELLED for a request stopped early, 500 / INTERNAL for the rest."""
        codes = self._pb.TritonError
        if isinstance(error, (InputError, UsageError)):
            return codes.INVALID_ARG
        if isinstance(error, BusyError):
            return codes.UNAVAILABLE
        if isinstance(error, CancelledError):
            return codes.CANCELLED
        return codes.INTERNAL

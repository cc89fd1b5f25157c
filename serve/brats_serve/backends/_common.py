"""Code shared by the Python stand-ins for Triton's native ``onnxruntime``, ``pytorch`` and ``openvino`` backends.

``brats_serve.install`` copies this file next to each ``<backend>/model.py``; the model files load it by path, so
it must stay importable without ``brats_serve`` and without ``triton_python_backend_utils`` (imported only where a
Triton object is built); it imports the tensor contract from ``brats_client.contract`` (plain Python, installed
with brats-serve). Everything that is not a Triton object is plain numpy and unit-tested.

What the stand-ins honour from ``config.pbtxt`` (the configs ``brats_export`` writes): one input and one output
(name, ``data_type``, ``dims``), ``max_batch_size``, ``default_model_filename``, the instance kind (onnxruntime and
pytorch: ``KIND_GPU`` runs on CUDA when the runtime sees a GPU, else on the CPU; openvino refuses it) and string
``parameters`` (each backend reads its own keys). Requests in one ``execute`` call that share a shape (after N)
are concatenated along N and run once; the results are split back. A request the model cannot take (dtype, rank,
channels, spatial size not a multiple of ``SPATIAL_DIVISOR``) gets an error response; the other requests are still
answered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from brats_client.contract import SPATIAL_DIVISOR

log = logging.getLogger(__name__)

DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_FP64": np.float64}

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Failure:
    """Why one request got no output; ``invalid`` marks the client's fault (INVALID_ARG), else INTERNAL."""

    message: str
    invalid: bool


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the config: ``dims`` exclude the batch dimension when ``max_batch_size > 0``."""

    name: str
    dtype: type
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ServedConfig:
    """What a stand-in reads from the model config."""

    input: TensorSpec
    output: TensorSpec
    max_batch_size: int
    model_filename: str
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def full_rank(self) -> int:
        """Rank of a request's tensor (batch dimension included when the model batches)."""
        return len(self.input.dims) + (1 if self.max_batch_size > 0 else 0)


def _tensor_spec(entries: list[dict], kind: str) -> TensorSpec:
    if len(entries) != 1:
        names = [e.get("name") for e in entries]
        raise ValueError(f"the stand-in backends serve models with exactly one {kind}; the config has {names}")
    entry = entries[0]
    data_type = entry.get("data_type", "")
    if data_type not in DTYPES:
        raise ValueError(f"{kind} {entry['name']!r}: data_type {data_type!r} is not supported; use TYPE_FP32")
    return TensorSpec(entry["name"], DTYPES[data_type], tuple(int(d) for d in entry.get("dims", [])))


def parse_config(config: dict, default_filename: str) -> ServedConfig:
    """Read the fields the stand-ins honour from Triton's JSON model config (``args["model_config"]``)."""
    parameters = {key: str(value.get("string_value", "")) for key, value in config.get("parameters", {}).items()}
    return ServedConfig(
        input=_tensor_spec(config.get("input", []), "input"),
        output=_tensor_spec(config.get("output", []), "output"),
        max_batch_size=int(config.get("max_batch_size", 0)),
        model_filename=config.get("default_model_filename") or default_filename,
        parameters=parameters,
    )


def int_parameter(spec: ServedConfig, key: str) -> int | None:
    """An integer config parameter, ``None`` when absent or empty; a clear error when not an integer."""
    value = spec.parameters.get(key, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"config parameter {key!r} must be an integer, got {value!r}") from None


def check_names(path, spec: ServedConfig, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """The model file must have the tensors the config names."""
    if spec.input.name not in inputs or spec.output.name not in outputs:
        raise ValueError(
            f"{path}: the config names input {spec.input.name!r} and output {spec.output.name!r}, "
            f"the model has inputs {list(inputs)} and outputs {list(outputs)}; re-export or fix config.pbtxt"
        )


def check_request(array: np.ndarray, spec: ServedConfig) -> str | None:
    """Why the model cannot take ``array`` (a message naming the value), or ``None`` when it can."""
    name = spec.input.name
    if array.dtype != spec.input.dtype:
        return f"{name}: dtype must be {np.dtype(spec.input.dtype).name}, got {array.dtype.name}"
    if array.ndim != spec.full_rank:
        return f"{name}: expected {spec.full_rank} dimensions, got shape {list(array.shape)}"
    shape = array.shape[1:] if spec.max_batch_size > 0 else array.shape
    if spec.max_batch_size > 0 and not 1 <= array.shape[0] <= spec.max_batch_size:
        return f"{name}: batch size must be in [1, {spec.max_batch_size}], got {array.shape[0]}"
    for axis, (size, want) in enumerate(zip(shape, spec.input.dims, strict=True)):
        if want > 0 and size != want:
            return f"{name}: dimension {axis} must be {want}, got shape {list(array.shape)}"
    spatial = array.shape[-3:]
    if any(size <= 0 or size % SPATIAL_DIVISOR for size in spatial):
        return (
            f"{name}: spatial sizes must be positive multiples of {SPATIAL_DIVISOR}, got {list(spatial)}; "
            f"pad the volume (shape {list(array.shape)})"
        )
    return None


def run_batched(arrays: Sequence[np.ndarray], spec: ServedConfig, predict: Predict) -> list[np.ndarray | Failure]:
    """Answer each request: its output array, or a ``Failure``.

    Valid requests with the same shape after N are concatenated along N and run in one ``predict`` call; a model
    without batching (``max_batch_size == 0``) runs each request alone. A failing ``predict`` fails its group only.
    """
    results: list[np.ndarray | Failure] = [Failure("not run", invalid=False)] * len(arrays)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, array in enumerate(arrays):
        problem = check_request(array, spec)
        if problem is not None:
            results[i] = Failure(problem, invalid=True)
        elif spec.max_batch_size > 0:
            groups.setdefault(tuple(array.shape[1:]), []).append(i)
        else:
            groups[(i,)] = [i]
    for members in groups.values():
        batch = arrays[members[0]] if len(members) == 1 else np.concatenate([arrays[i] for i in members])
        try:
            out = np.asarray(predict(batch), dtype=spec.output.dtype)
        except Exception as e:  # noqa: BLE001 - the runtime's error goes back to the client; the server keeps serving
            log.exception("inference failed for a batch of shape %s", list(batch.shape))
            for i in members:
                results[i] = Failure(f"inference failed on a batch of shape {list(batch.shape)}: {e}", invalid=False)
            continue
        if spec.max_batch_size <= 0:
            results[members[0]] = np.ascontiguousarray(out)
            continue
        if out.ndim == 0 or out.shape[0] != batch.shape[0]:
            for i in members:
                results[i] = Failure(f"model returned shape {list(out.shape)} for a batch of {batch.shape[0]}", False)
            continue
        start = 0
        for i in members:
            n = arrays[i].shape[0]
            results[i] = np.ascontiguousarray(out[start : start + n])  # a view: slices along N are contiguous
            start += n
    return results


class StandInModel:
    """The ``TritonPythonModel`` protocol for one-input, one-output models; subclasses implement ``load``."""

    backend = ""  # the native backend this stands in for
    default_filename = ""

    def load(self, path: Path, spec: ServedConfig, use_gpu: bool, device_id: int) -> tuple[Predict, str]:
        """Load the model file; return a function from a batch to its output, and the device it runs on."""
        raise NotImplementedError

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.spec = parse_config(config, self.default_filename)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        path = version_dir / self.spec.model_filename
        if not path.is_file():
            raise FileNotFoundError(
                f"model file {path} not found; export it with brats-export (files in {version_dir}: "
                f"{sorted(p.name for p in version_dir.iterdir()) if version_dir.is_dir() else 'none'})"
            )
        use_gpu = args.get("model_instance_kind", "CPU") == "GPU"
        device_id = int(args.get("model_instance_device_id", 0) or 0)
        self.predict, device = self.load(path, self.spec, use_gpu, device_id)
        import triton_python_backend_utils as pb_utils

        name = args.get("model_name")
        pb_utils.Logger.log_info(f"{name}: Python stand-in for {self.backend} runs {path} on {device}")

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        tensors = [pb_utils.get_input_tensor_by_name(r, self.spec.input.name) for r in requests]
        present = [i for i, t in enumerate(tensors) if t is not None]
        results: list[np.ndarray | Failure] = [Failure(f"missing input {self.spec.input.name!r}", True)] * len(requests)
        answered = run_batched([tensors[i].as_numpy() for i in present], self.spec, self.predict)
        for i, result in zip(present, answered, strict=True):
            results[i] = result
        responses = []
        for result in results:
            if isinstance(result, Failure):
                code = pb_utils.TritonError.INVALID_ARG if result.invalid else pb_utils.TritonError.INTERNAL
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(result.message, code)))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.spec.output.name, result)]))
        return responses

    def finalize(self) -> None:
        self.predict = None

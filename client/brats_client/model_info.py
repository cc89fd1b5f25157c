"""What the live server says about the model (``ModelInfo``), checked against what this client sends and gets.
No tritonclient here: the served pipeline (:mod:`brats_client.served`) uses it inside Triton too; the gRPC reads
are in :mod:`brats_client.endpoints`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .contract import DATATYPE, IN_CHANNELS, OUT_CHANNELS
from .errors import ServerError

PRECISION_KEY = "brats_precision"  # config parameter: what the model computes in (brats-export writes it)


@dataclass(frozen=True)
class ModelInfo:
    """What the live server says about the model, checked against what the client sends."""

    name: str
    version: str
    input_name: str
    output_name: str
    max_batch_size: int
    platform: str
    fixed_spatial: tuple[int, ...] | None = None  # a static-shape export insists on this tile shape
    parameters: dict[str, str] = field(default_factory=dict)  # the config's parameters (server_flips reads them)
    # the config's warm-up: (batch items, voxels per item) of each entry; Triton counts them in the statistics
    warmup: tuple[tuple[int, int], ...] = ()

    @property
    def precision(self) -> str:
        """What the model computes in, as its config says (``brats_precision``)."""
        return self.parameters.get(PRECISION_KEY) or "not stated by the model's config (an older export?)"


def validate_metadata(meta: Any, config: Any, where: str) -> ModelInfo:
    """Compare the live metadata with what the client sends: one FP32 input of 4 channels, 3 out."""
    if len(meta.inputs) != 1 or len(meta.outputs) != 1:
        raise ServerError(f"{where} has {len(meta.inputs)} inputs and {len(meta.outputs)} outputs; expected 1 and 1")
    inp, out = meta.inputs[0], meta.outputs[0]
    batched = config.max_batch_size > 0
    want_rank = 5 if batched else 4
    problems = []
    if inp.datatype != DATATYPE or out.datatype != DATATYPE:
        problems.append(f"datatypes {inp.datatype} -> {out.datatype} (expected FP32 -> FP32)")
    if len(inp.shape) != want_rank or inp.shape[-4] != IN_CHANNELS:
        problems.append(f"input {inp.name} shape {list(inp.shape)} (expected [-1, 4, -1, -1, -1])")
    if len(out.shape) != want_rank or out.shape[-4] != OUT_CHANNELS:
        problems.append(f"output {out.name} shape {list(out.shape)} (expected [-1, 3, -1, -1, -1])")
    if not batched:
        problems.append("max_batch_size is 0; this client sends batched requests (max_batch_size >= 1)")
    spatial = tuple(int(d) for d in inp.shape[-3:])
    if problems:
        raise ServerError(f"{where} does not take what this client sends: " + "; ".join(problems))
    return ModelInfo(
        name=meta.name,
        version=meta.versions[-1] if meta.versions else "",
        input_name=inp.name,
        output_name=out.name,
        max_batch_size=config.max_batch_size,
        platform=meta.platform or config.backend,
        fixed_spatial=None if -1 in spatial else spatial,
        parameters={k: v.string_value for k, v in config.parameters.items()},
        warmup=tuple(_warmup(config)),
    )


def _warmup(config: Any) -> list[tuple[int, int]]:
    """(batch items, voxels per item) of each ``model_warmup`` entry of ``config``."""
    out = []
    for entry in config.model_warmup:
        dims = [int(d) for value in entry.inputs.values() for d in value.dims][-3:]
        if len(dims) == 3:
            out.append((max(entry.batch_size, 1) * max(entry.count, 1), dims[0] * dims[1] * dims[2]))
    return out


def check_output(result: Any, info: ModelInfo, expected: tuple[int, ...], where: str) -> None:
    """The response names the output with datatype FP32 and shape ``expected``; the same check whether the data
    came inside the message or through shared memory."""
    meta = result.get_output(info.output_name)
    if meta is None:
        raise ServerError(f"{where} returned no output {info.output_name!r}; expected FP32 {list(expected)}")
    got = tuple(int(d) for d in meta.shape)
    if meta.datatype != DATATYPE or got != expected:
        raise ServerError(
            f"{where} returned output {info.output_name!r} as {meta.datatype} {list(got)}, expected FP32 "
            f"{list(expected)}; check that the server runs the model brats-export wrote"
        )

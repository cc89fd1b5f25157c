"""What the live server says about the model (``ModelInfo``), checked against what this client sends and gets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tritonclient.utils import InferenceServerException

from .contract import DATATYPE, IN_CHANNELS, OUT_CHANNELS
from .endpoints import Endpoint, describe
from .errors import ServerError
from .server_options import ServerOptions


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


def read_model_info(endpoint: Endpoint, o: ServerOptions) -> ModelInfo:
    """Check that ``endpoint`` answers and serves ``o.model`` in a form this client can use."""
    client, url = endpoint.client, endpoint.url
    where = f"model {o.model!r} at {url}"
    try:
        live = client.is_server_live(client_timeout=o.connect_timeout_s)
    except InferenceServerException as e:
        raise ServerError(unreachable(url, o, e)) from e
    if not live:
        raise ServerError(f"the Triton server at {url} is not live")
    try:
        if not client.is_model_ready(o.model, o.model_version, client_timeout=o.connect_timeout_s):
            index = client.get_model_repository_index(client_timeout=o.connect_timeout_s)
            names = sorted({m.name for m in index.models})
            raise ServerError(f"{where} is not ready; the server knows: {', '.join(names) or 'no models'}")
        meta = client.get_model_metadata(o.model, o.model_version, client_timeout=o.connect_timeout_s)
        config = client.get_model_config(o.model, o.model_version, client_timeout=o.connect_timeout_s).config
    except InferenceServerException as e:
        raise ServerError(f"cannot read {where}: {describe(e)}") from e
    return validate_metadata(meta, config, where)


def unreachable(url: str, o: ServerOptions, error: InferenceServerException) -> str:
    """Why the first call to ``url`` failed, with what to do: TLS problems are told apart from no server."""
    desc = describe(error)
    text = desc.lower()
    if o.ssl and any(word in text for word in ("handshake", "certificate", "ssl_error")):
        return (
            f"the TLS handshake with {url} failed ({desc}); pass the CA that signed the server's certificate with "
            "--root-certificates (and for mutual TLS a client certificate the server trusts: --private-key, "
            "--certificate-chain)"
        )
    if "socket closed" in text:
        hint = (
            "it may want a client certificate signed by its CA (mutual TLS): pass --private-key and "
            "--certificate-chain" if o.ssl else "it may expect TLS: pass --ssl --root-certificates CA.pem"
        )
        return f"the server at {url} closed the connection ({desc}); {hint}"
    return (
        f"no Triton server answers at {url} within {o.connect_timeout_s:g} s ({desc}); "
        "start one on a repository that brats-export wrote (`make demo` writes out/demo/model_repository: "
        "`.venv/bin/brats-serve --repository out/demo/model_repository`) or pass --url HOST:PORT"
    )


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
    )


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

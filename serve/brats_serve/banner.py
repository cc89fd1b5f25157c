"""What ``brats-serve`` prints once the server is ready: its addresses and the models it serves, each with what it is
and how to reach it. The models are asked of the running server (its repository index over HTTP), so the list is
what Triton loaded, not what the command line hoped for."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ServeError

TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServedModel:
    name: str
    role: str  # what it is, for the banner: "network", "flip4 companion", "the whole pipeline ..."


def _http_json(url: str, body: bytes | None = None) -> object:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 - our own server
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ServeError(f"cannot read {url} from the server that just started: {e}") from e


def role(config: dict) -> str:
    """What a model is, from its config's parameters (brats-export writes them): the served pipeline, a flip
    companion, or a network."""
    from brats_client.model_info import PRECISION_KEY
    from brats_client.served import PIPELINE_KEY
    from brats_client.server_flips import SERVER_FLIPS_KEY

    parameters = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    if PIPELINE_KEY in parameters:
        return "the whole pipeline: the four NIfTI files in, the segmentation out (brats-client or curl)"
    if parameters.get(SERVER_FLIPS_KEY):
        return (f"network with {parameters[SERVER_FLIPS_KEY]} test-time flips inside (brats-client uses it from "
                "another host, or with --server-flips on)")
    if parameters.get(PRECISION_KEY, "").startswith("int8"):
        return f"network, {parameters[PRECISION_KEY]} (brats-client --model)"
    return "network (brats-client --model)"


def ready_models(http_url: str) -> list[ServedModel]:
    """The models the server at ``http_url`` (``HOST:PORT``) has ready, by name, with their :func:`role`."""
    index = _http_json(f"http://{http_url}/v2/repository/index", json.dumps({"ready": True}).encode())
    names = sorted({entry["name"] for entry in index if isinstance(entry, dict) and entry.get("state") == "READY"})
    return [ServedModel(name, role(_http_json(f"http://{http_url}/v2/models/{name}/config"))) for name in names]


def banner(repository: str, grpc_url: str, http_url: str, metrics_url: str, log_path: object,
           models: Sequence[ServedModel]) -> str:
    """The lines printed when the server is ready."""
    http = f"http://{http_url}"
    column = max(len(grpc_url), len(http)) + 2
    width = max((len(m.name) for m in models), default=0)
    listed = [f"    {m.name:<{width}}  {m.role}" for m in models] or ["    (none)"]
    return "\n".join([
        f"brats-serve: serving {repository}",
        f"  gRPC     {grpc_url:<{column}}brats-client segment ... --url {grpc_url}",
        f"  HTTP     {http:<{column}}curl, examples/segment_with_curl.sh {http} ...",
        f"  metrics  {metrics_url}/metrics",
        f"  log      {log_path}",
        f"  models ready (gRPC {grpc_url} --model NAME; HTTP {http}/v2/models/NAME):",
        *listed,
        "Ctrl-C to stop.",
    ])

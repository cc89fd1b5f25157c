"""The servers one transport talks to: a gRPC client each, which one takes the next request, and which are dead.

An endpoint that stops answering (with several URLs) is marked dead; its requests go to the others. A dead
endpoint is probed again (``is_model_ready``, short deadline) at the start of later streams, at growing intervals,
and takes requests again once it answers. When every endpoint has failed, the stream backs off and revives them
all (``revive_all``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .errors import BackendLostError, DeadlineError, ModelNotReadyError, ServerError, ServerUnavailableError
from .model_info import ModelInfo, validate_metadata
from .server_options import GRPC_SCHEMES, ServerOptions, http_port_message, speaks_http

log = logging.getLogger(__name__)

# Passing channel_args replaces tritonclient's defaults (2 GiB messages) with gRPC's 4 MiB: restate them.
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1
RECONNECT_BACKOFF_MAX_MS = 2000
PROBE_TIMEOUT_S = 1.0
PROBE_INTERVAL_S = (1.0, 30.0)  # first and longest wait between two probes of a dead endpoint


def channel_args(url: str = "") -> list[tuple[str, Any]]:
    """Message-size limits restated; ``dns:///NAME:PORT`` (or ``ipv4:A:P,B:P``) targets spread requests over every
    address the name resolves to (client-side round robin)."""
    extra = [("grpc.lb_policy_name", "round_robin")] if url.startswith(GRPC_SCHEMES) else []
    return extra + [
        ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 2**31 - 1),
        ("grpc.keepalive_timeout_ms", 20000),
        ("grpc.keepalive_permit_without_calls", False),
        ("grpc.http2.max_pings_without_data", 2),
        # After a server restart, reconnect within RECONNECT_BACKOFF_MAX_MS: gRPC's default backoff grows to 120 s,
        # and while it waits every request fails at once, so the client's own retries (1, 2, 4 s) would all miss
        # a server that is back.
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
        # Channels with equal arguments share their connections (and reconnect backoff) process-wide; a probe's
        # new channel must make its own connection.
        ("grpc.use_local_subchannel_pool", 1),
    ]


def status(error: InferenceServerException) -> str:
    return str(error.status() or "")


ERROR_TYPES = {
    "StatusCode.UNAVAILABLE": ServerUnavailableError,
    "StatusCode.RESOURCE_EXHAUSTED": ServerUnavailableError,
    "StatusCode.DEADLINE_EXCEEDED": DeadlineError,
    "StatusCode.NOT_FOUND": ModelNotReadyError,
}


def error_type(error: InferenceServerException) -> type[ServerError]:
    """The client's error class for a failed call, from its gRPC status code; a lost backend process is INTERNAL,
    as any backend error, and only its message tells it apart."""
    message = error.message() or ""
    if status(error) == "StatusCode.INTERNAL" and "Stub process" in message and "is not healthy" in message:
        return BackendLostError
    return ERROR_TYPES.get(status(error), ServerError)


def describe(error: InferenceServerException) -> str:
    return f"{status(error) or 'error'}: {error.message()}"


@dataclass(eq=False)
class Endpoint:
    url: str
    client: Any  # tritonclient.grpc.InferenceServerClient (a fake in unit tests)
    alive: bool = True
    in_flight: int = 0
    probe_at: float = 0.0  # time.monotonic() of the next probe while dead
    probe_interval_s: float = PROBE_INTERVAL_S[0]
    broken: str = ""  # why it must get no request again (its answers cannot be trusted)


def connect(options: ServerOptions, url: str) -> grpcclient.InferenceServerClient:
    """A gRPC client (its own channel) of ``url`` with the options' TLS settings."""
    return grpcclient.InferenceServerClient(
        url,
        ssl=options.ssl,
        root_certificates=options.root_certificates,
        private_key=options.private_key,
        certificate_chain=options.certificate_chain,
        channel_args=channel_args(url),
    )


class Endpoints:
    """Every endpoint of ``options``, in the order given. ``connect(options, url)`` makes a client (a fake in unit
    tests)."""

    def __init__(
        self, options: ServerOptions, connect: Callable[[ServerOptions, str], Any] = connect
    ) -> None:
        self.options = options
        self._connect = connect
        self.all = [Endpoint(url, connect(options, url)) for url in options.urls]

    def __len__(self) -> int:
        return len(self.all)

    @property
    def first(self) -> Endpoint:
        return self.all[0]

    def any_alive(self) -> bool:
        return any(e.alive and not e.broken for e in self.all)

    def check_usable(self) -> None:
        """A ``ServerError`` saying why when every endpoint is broken."""
        if all(e.broken for e in self.all):
            raise ServerError("; ".join(e.broken for e in self.all))

    def choose(self) -> Endpoint:
        """The live endpoint with the fewest requests in flight (any unbroken one when none is live)."""
        self.check_usable()
        usable = [e for e in self.all if not e.broken]
        live = [e for e in usable if e.alive] or usable[:1]
        return min(live, key=lambda e: e.in_flight)

    def mark_broken(self, endpoint: Endpoint, why: str) -> None:
        endpoint.broken, endpoint.alive = why, False

    def mark_dead(self, endpoint: Endpoint, why: str) -> None:
        if endpoint.alive:
            log.warning("%s stopped answering (%s); sending its requests elsewhere", endpoint.url, why)
        endpoint.alive = False
        endpoint.probe_interval_s = PROBE_INTERVAL_S[0]
        endpoint.probe_at = time.monotonic() + endpoint.probe_interval_s

    def revive_all(self) -> None:
        """Every endpoint failed: give each another chance (not the broken ones)."""
        for e in self.all:
            e.alive = not e.broken

    def probe(self) -> None:
        """Ask each dead endpoint whose probe is due whether the model is ready; take it back if it is.

        The probe uses a new channel: the old one may be waiting out gRPC's reconnect backoff, failing every call
        at once. When the model is ready, the new channel replaces the old one.
        """
        o = self.options
        now = time.monotonic()
        for e in self.all:
            if e.alive or e.broken or now < e.probe_at:
                continue
            client = self._connect(o, e.url)
            try:
                ready = client.is_model_ready(o.model, o.model_version, client_timeout=PROBE_TIMEOUT_S)
            except InferenceServerException as error:
                log.debug("%s not back yet: %s", e.url, describe(error))
                ready = False
            if ready:
                e.client.close()
                e.client, e.alive = client, True
                log.warning("%s answers again; sending it requests", e.url)
            else:
                client.close()
                e.probe_interval_s = min(2 * e.probe_interval_s, PROBE_INTERVAL_S[1])
                e.probe_at = now + e.probe_interval_s

    def close(self) -> None:
        for e in self.all:
            e.client.close()


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
    """Why the first call to ``url`` failed, with what to do: TLS problems and an HTTP port are told apart from no
    server."""
    desc = describe(error)
    text = desc.lower()
    if not o.ssl and not url.startswith(GRPC_SCHEMES) and speaks_http(url):
        return f"{http_port_message(url)} ({desc})"
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

"""gRPC transport to Triton: with :mod:`brats_client.shm`, the only modules of the client that import tritonclient.

Tensors travel as binary (raw) contents, or through system shared memory when the server runs on this host
(``shared_memory="auto"``: when :func:`brats_client.shm.problem` finds nothing in the way).
Requests are asynchronous with a bounded number in flight; the caller's iterator is consumed lazily, so the
next batches are prepared while earlier ones compute. Failed requests whose status is retryable are sent
again with exponential backoff.
"""

from __future__ import annotations

import itertools
import logging
import queue
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from . import shm
from .errors import ServerError

log = logging.getLogger(__name__)

# Passing channel_args replaces tritonclient's defaults (2 GiB messages) with gRPC's 4 MiB: restate them.
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1
RETRYABLE = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED"})
INPUT_CHANNELS = 4
OUTPUT_CHANNELS = 3


RECONNECT_BACKOFF_MAX_MS = 2000
GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:")  # gRPC name-resolver targets that may stand for several servers


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
    ]


@dataclass(frozen=True)
class ServerOptions:
    """Where and how to reach the model."""

    url: str = "127.0.0.1:8001"  # HOST:PORT, a comma-separated list of them, or a gRPC target (dns:///NAME:PORT)
    model: str = "brats_openvino"
    model_version: str = ""
    concurrency: int = 2
    timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 1.0
    shared_memory: str = "auto"  # auto: when the server is on this host and can use it (brats_client.shm)
    ssl: bool = False
    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if not self.urls or any(not u for u in self.urls):
            raise ValueError(
                f"url must be HOST:PORT, a comma-separated list of them, or dns:///NAME:PORT; got {self.url!r}"
            )
        if self.shared_memory not in shm.CHOICES:
            raise ValueError(f"shared_memory must be one of {', '.join(shm.CHOICES)}; got {self.shared_memory!r}")
        if self.shared_memory == "on" and len(self.urls) > 1:
            raise ValueError("--shared-memory on needs one server on this host; it cannot be used with several URLs")

    @property
    def urls(self) -> tuple[str, ...]:
        """One target per endpoint; a gRPC resolver target (``dns:``, ``ipv4:``, ``ipv6:``) is one endpoint."""
        if self.url.startswith(GRPC_SCHEMES):
            return (self.url.strip(),)
        return tuple(u.strip() for u in self.url.split(","))


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


def _status(error: InferenceServerException) -> str:
    return str(error.status() or "")


def _describe(error: InferenceServerException) -> str:
    return f"{_status(error) or 'error'}: {error.message()}"


@dataclass
class _Pending:
    key: Any
    batch: np.ndarray
    attempt: int = 0
    slot: int | None = None
    endpoint: _Endpoint | None = None


@dataclass(eq=False)
class _Endpoint:
    url: str
    client: grpcclient.InferenceServerClient
    alive: bool = True
    in_flight: int = 0


class TritonTransport:
    """Sends FP32 batches ``[N, 4, D, H, W]`` to one model and yields ``[N, 3, D, H, W]`` results."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self._endpoints = [
            _Endpoint(url, grpcclient.InferenceServerClient(
                url,
                ssl=options.ssl,
                root_certificates=options.root_certificates,
                private_key=options.private_key,
                certificate_chain=options.certificate_chain,
                channel_args=channel_args(url),
            ))
            for url in options.urls
        ]
        self._client = self._endpoints[0].client
        self._info: ModelInfo | None = None
        self._slots: shm.Slots | None = None
        self._shm_decided = False

    def __enter__(self) -> TritonTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._slots is not None:
            self._slots.close()
            self._slots = None
        for endpoint in self._endpoints:
            endpoint.client.close()

    # -- checks ---------------------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"model {self.options.model!r} at {self.options.url}"

    def check_model(self) -> ModelInfo:
        """Check that the servers answer and that the live model takes what this client sends.

        With several URLs, endpoints that fail the check are left out (with a warning) while one passes.
        """
        infos, failures = [], []
        for endpoint in self._endpoints:
            try:
                infos.append(self._check_endpoint(endpoint))
            except ServerError as e:
                endpoint.alive = False
                failures.append(e)
        if not infos:
            raise failures[0] if len(failures) == 1 else ServerError("; ".join(str(e) for e in failures))
        for e in failures:
            log.warning("left out: %s", e)
        first = infos[0]
        for other in infos[1:]:
            if (other.input_name, other.output_name, other.max_batch_size) != (
                first.input_name, first.output_name, first.max_batch_size
            ):
                raise ServerError(f"the servers in {self.options.url} serve different {self.options.model!r} models")
        self._info = first
        log.info(
            "model %s version %s (%s) on %s: %s -> %s, max batch %d",
            first.name, first.version, first.platform, self.options.url,
            first.input_name, first.output_name, first.max_batch_size,
        )
        return first

    def _check_endpoint(self, endpoint: _Endpoint) -> ModelInfo:
        o = self.options
        client, url = endpoint.client, endpoint.url
        where = f"model {o.model!r} at {url}"
        try:
            live = client.is_server_live(client_timeout=o.connect_timeout_s)
        except InferenceServerException as e:
            raise ServerError(_unreachable(url, o, e)) from e
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
            raise ServerError(f"cannot read {where}: {_describe(e)}") from e
        return _validate_metadata(meta, config, where)

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            self._info = self.check_model()
        return self._info

    def inference_statistics(self) -> dict[str, int]:
        """Cumulative server-side counters of the model (nanoseconds and counts)."""
        o = self.options
        out = {"inference_count": 0, "execution_count": 0, "compute_infer_ns": 0, "queue_ns": 0}
        for endpoint in self._endpoints:
            try:
                stats = endpoint.client.get_inference_statistics(
                    o.model, o.model_version, client_timeout=o.connect_timeout_s
                )
            except InferenceServerException as e:
                raise ServerError(f"cannot read statistics of {o.model!r} at {endpoint.url}: {_describe(e)}") from e
            for s in stats.model_stats:
                out["inference_count"] += s.inference_count
                out["execution_count"] += s.execution_count
                out["compute_infer_ns"] += s.inference_stats.compute_infer.ns
                out["queue_ns"] += s.inference_stats.queue.ns
        return out

    # -- inference ------------------------------------------------------------------------------------------

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """One batch, synchronously."""
        for _, out in self.infer_stream([(None, batch)]):
            return out
        raise AssertionError("unreachable")

    def infer_stream(self, batches: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray]]:
        """Yield ``(key, output)`` in completion order, at most ``concurrency`` requests in flight."""
        info = self.info
        o = self.options
        source = iter(batches)
        first = next(source, None)
        if first is None:
            return
        self._decide_shared_memory(first[1])
        source = itertools.chain([first], source)
        done: queue.SimpleQueue[tuple[_Pending, Any, Any]] = queue.SimpleQueue()
        in_flight = 0
        exhausted = False
        while True:
            while not exhausted and in_flight < o.concurrency:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                key, batch = item
                self._check_batch(batch, info)
                self._submit(_Pending(key, batch), done)
                in_flight += 1
            if in_flight == 0:
                return
            pending, result, error = done.get()
            endpoint = pending.endpoint
            if endpoint is not None:
                endpoint.in_flight -= 1
            if error is not None:
                if self._resubmit(pending, error, done):
                    continue
                self._free_slot(pending)
                where = endpoint.url if endpoint is not None else o.url
                raise ServerError(f"inference of {o.model!r} at {where} failed: {_describe(error)}")
            in_flight -= 1
            output = self._read_output(pending, result, info)
            self._free_slot(pending)
            yield pending.key, output

    @property
    def shared_memory_active(self) -> bool:
        return self._slots is not None

    def _decide_shared_memory(self, batch: np.ndarray) -> None:
        """Once per transport, on the first batch: set up shared memory if the options ask for it and it works."""
        if self._shm_decided:
            return
        self._shm_decided = True
        o = self.options
        if o.shared_memory == "off" or len(self._endpoints) > 1:
            return
        if o.shared_memory == "auto" and not shm.is_loopback(o.url):  # also False for dns:/ipv4:/ipv6: targets
            return
        need = o.concurrency * batch.nbytes * (INPUT_CHANNELS + OUTPUT_CHANNELS) // INPUT_CHANNELS
        problem = shm.problem(self._client, need)
        if problem is None:
            self._slots = shm.Slots(self._client, o.concurrency)
        elif o.shared_memory == "on":
            raise ServerError(f"--shared-memory on: {problem}; use --shared-memory off")
        else:
            log.info("shared memory not used (%s); tensors go inside the gRPC messages", problem)

    def _resubmit(self, pending: _Pending, error: InferenceServerException, done: queue.SimpleQueue) -> bool:
        """Send a failed request again: at once to another live server, else after a backoff; False to give up."""
        if _status(error) not in RETRYABLE:
            return False
        failed = pending.endpoint
        if failed is not None and failed.alive and len(self._endpoints) > 1:
            failed.alive = False
            log.warning("%s stopped answering (%s); sending its requests elsewhere", failed.url, _describe(error))
        if len(self._endpoints) > 1 and any(e.alive for e in self._endpoints):
            self._submit(pending, done)
            return True
        if pending.attempt >= self.options.retries:
            return False
        delay_s = self.options.backoff_s * 2**pending.attempt
        log.warning("%s: %s; retrying in %.1f s", self.options.url, _describe(error), delay_s)
        time.sleep(delay_s)
        for e in self._endpoints:  # every server failed: give each another chance
            e.alive = True
        if self._slots is not None:
            self._slots.server_restarted()
        pending.attempt += 1
        self._submit(pending, done)
        return True

    def _check_batch(self, batch: np.ndarray, info: ModelInfo) -> None:
        if batch.dtype != np.float32 or batch.ndim != 5 or batch.shape[1] != INPUT_CHANNELS:
            raise ValueError(f"batches must be float32 [N, 4, D, H, W], got {batch.dtype} {batch.shape}")
        if info.max_batch_size and batch.shape[0] > info.max_batch_size:
            raise ValueError(f"batch of {batch.shape[0]} exceeds the model's max_batch_size {info.max_batch_size}")

    def _submit(self, pending: _Pending, done: queue.SimpleQueue) -> None:
        info = self.info
        o = self.options
        batch = pending.batch

        def callback(result: Any, error: Any) -> None:
            done.put((pending, result, error))

        endpoint = min((e for e in self._endpoints if e.alive), key=lambda e: e.in_flight)
        endpoint.in_flight += 1
        pending.endpoint = endpoint
        try:  # a region registration fails like a request would (e.g. UNAVAILABLE: retried)
            inp = grpcclient.InferInput(info.input_name, list(batch.shape), "FP32")
            out = grpcclient.InferRequestedOutput(info.output_name)
            if self._slots is not None:
                if pending.slot is None:
                    pending.slot = self._slots.free.get()
                in_name, in_handle = self._slots.region(pending.slot, "in", batch.nbytes)
                out_bytes = batch.nbytes // INPUT_CHANNELS * OUTPUT_CHANNELS
                out_name, _ = self._slots.region(pending.slot, "out", out_bytes)
                self._slots.write(in_handle, np.ascontiguousarray(batch))
                inp.set_shared_memory(in_name, batch.nbytes)
                out.set_shared_memory(out_name, out_bytes)
            else:
                inp.set_data_from_numpy(np.ascontiguousarray(batch))
            endpoint.client.async_infer(
                o.model, [inp], callback, model_version=o.model_version, outputs=[out],
                client_timeout=o.timeout_s,
            )
        except InferenceServerException as e:
            callback(None, e)

    def _read_output(self, pending: _Pending, result: Any, info: ModelInfo) -> np.ndarray:
        shape = (pending.batch.shape[0], OUTPUT_CHANNELS, *pending.batch.shape[2:])
        if self._slots is not None and pending.slot is not None:
            return np.array(self._slots.read(pending.slot, np.float32, shape))
        output = result.as_numpy(info.output_name)
        if output is None or output.shape != shape:
            got = None if output is None else output.shape
            raise ServerError(f"{self._where()} returned output of shape {got}, expected {shape}")
        return output

    def _free_slot(self, pending: _Pending) -> None:
        if self._slots is not None and pending.slot is not None:
            self._slots.free.put(pending.slot)
            pending.slot = None


def _unreachable(url: str, o: ServerOptions, error: InferenceServerException) -> str:
    """Why the first call to ``url`` failed, with what to do: TLS problems are told apart from no server."""
    desc = _describe(error)
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
        "start one with `brats-serve --repository model_repository` or pass --url HOST:PORT"
    )


def _validate_metadata(meta: Any, config: Any, where: str) -> ModelInfo:
    """Compare the live metadata with what the client sends: one FP32 input of 4 channels, 3 out."""
    if len(meta.inputs) != 1 or len(meta.outputs) != 1:
        raise ServerError(f"{where} has {len(meta.inputs)} inputs and {len(meta.outputs)} outputs; expected 1 and 1")
    inp, out = meta.inputs[0], meta.outputs[0]
    batched = config.max_batch_size > 0
    want_rank = 5 if batched else 4
    problems = []
    if inp.datatype != "FP32" or out.datatype != "FP32":
        problems.append(f"datatypes {inp.datatype} -> {out.datatype} (expected FP32 -> FP32)")
    if len(inp.shape) != want_rank or inp.shape[-4] != INPUT_CHANNELS:
        problems.append(f"input {inp.name} shape {list(inp.shape)} (expected [-1, 4, -1, -1, -1])")
    if len(out.shape) != want_rank or out.shape[-4] != OUTPUT_CHANNELS:
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

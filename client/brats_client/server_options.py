"""What the client needs to know to reach a model: a small value object, checked when it is made."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from .errors import UsageError

SHARED_MEMORY_CHOICES = ("auto", "on", "off")
GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:")  # gRPC name-resolver targets that may stand for several servers
HTTP_SCHEMES = ("http://", "https://")
# Triton's default ports (brats-serve's too): gRPC is what brats-client speaks; HTTP is curl's
TRITON_HTTP_PORT, TRITON_GRPC_PORT = 8000, 8001


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
            raise UsageError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.timeout_s <= 0:
            raise UsageError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise UsageError(f"retries must be >= 0, got {self.retries}")
        for url in self.urls:
            if url.lower().startswith(HTTP_SCHEMES):
                raise UsageError(http_scheme_message(url))
        if not self.urls or any(not u for u in self.urls):
            raise UsageError(
                f"url must be HOST:PORT, a comma-separated list of them, or dns:///NAME:PORT; got {self.url!r}"
            )
        if self.shared_memory not in SHARED_MEMORY_CHOICES:
            raise UsageError(f"shared_memory must be one of {', '.join(SHARED_MEMORY_CHOICES)}; "
                             f"got {self.shared_memory!r}")
        if self.shared_memory == "on" and len(self.urls) > 1:
            raise UsageError("--shared-memory on needs one server on this host; it cannot be used with several URLs")
        tls_files = {"--root-certificates": self.root_certificates, "--private-key": self.private_key,
                     "--certificate-chain": self.certificate_chain}
        given = [flag for flag, path in tls_files.items() if path is not None]
        if given and not self.ssl:
            raise UsageError(f"{', '.join(given)} given without --ssl: the connection would not use TLS; add --ssl")
        if (self.private_key is None) != (self.certificate_chain is None):
            raise UsageError("mutual TLS needs both --private-key and --certificate-chain")

    @property
    def urls(self) -> tuple[str, ...]:
        """One target per endpoint; a gRPC resolver target (``dns:``, ``ipv4:``, ``ipv6:``) is one endpoint."""
        if self.url.startswith(GRPC_SCHEMES):
            return (self.url.strip(),)
        return tuple(u.strip() for u in self.url.split(","))


def split_host_port(url: str) -> tuple[str, int | None]:
    """``"127.0.0.1:8000"`` -> ``("127.0.0.1", 8000)`` (a scheme, ``[...]`` around IPv6 and a path are dropped);
    the port is None when there is none or it is not a number."""
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep or "]" in port:
        host, port = rest, ""
    return host.strip("[]") or "127.0.0.1", int(port) if port.isdigit() else None


def grpc_url_hint(url: str) -> str:
    """What to pass instead of ``url``, an HTTP address of a Triton server: its gRPC address."""
    host, port = split_host_port(url)
    host = f"[{host}]" if ":" in host else host
    if port in (None, TRITON_HTTP_PORT):
        return (f"pass --url {host}:{TRITON_GRPC_PORT} (Triton's gRPC port beside HTTP {TRITON_HTTP_PORT}; "
                "brats-serve prints both when it is ready)")
    return (f"pass --url {host}:GRPC_PORT with the server's gRPC port (brats-serve prints it as 'gRPC' when it is "
            f"ready; Triton's default is {TRITON_GRPC_PORT})")


def http_scheme_message(url: str) -> str:
    tls = " and --ssl --root-certificates CA.pem for TLS" if url.lower().startswith("https://") else ""
    return (f"--url {url} is an HTTP address, but brats-client talks to Triton over gRPC (HOST:PORT, no scheme): "
            f"{grpc_url_hint(url)}{tls}")


def speaks_http(url: str, timeout_s: float = 1.0) -> bool:
    """True when ``url`` (``HOST:PORT``) answers a plain HTTP request with an HTTP status line: an HTTP port
    (Triton's HTTP or metrics endpoint) given where a gRPC one belongs. False on any connection problem."""
    host, port = split_host_port(url)
    if port is None:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(f"GET /v2/health/live HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            return sock.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def http_port_message(url: str) -> str:
    return (f"{url} answers HTTP, not gRPC: it is the server's HTTP port (what curl and "
            f"examples/segment_with_curl.sh use), and brats-client talks gRPC; {grpc_url_hint(url)}")

"""What the client needs to know to reach a model: a small value object, checked when it is made."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

SHARED_MEMORY_CHOICES = ("auto", "on", "off")
GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:")  # gRPC name-resolver targets that may stand for several servers


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

"""The server's ports: refused when taken, chosen free when asked for 0, and waited for after a stop."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Mapping, Sequence

from .errors import ServeError

FLAGS = {"grpc": "--grpc-port", "http": "--http-port", "metrics": "--metrics-port"}


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not listen on ``host:port`` (bound like servers do, with ``SO_REUSEADDR``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise ServeError(f"cannot listen on {host}:{port}: {e}; check --host and the port") from e
    return False


def free_port(host: str = "127.0.0.1", exclude: Sequence[int] = ()) -> int:
    """A port on ``host`` that nobody listens on now (the kernel's choice), not in ``exclude``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in exclude:
            return port
    raise ServeError(f"no free port found on {host}")


def choose_ports(host: str, requested: Mapping[str, int]) -> dict[str, int]:
    """``requested`` (kind -> port, 0 for any free one) with free ports filled in; a ``ServeError`` naming the flag
    when two ports are equal or one is taken."""
    chosen = {kind: port for kind, port in requested.items() if port}
    if len(set(chosen.values())) != len(chosen):
        raise ServeError(f"the ports must differ, got {chosen}; change --grpc-port, --http-port or --metrics-port")
    for kind, port in chosen.items():
        if port_in_use(host, port):
            raise ServeError(
                f"port {port} on {host} ({kind}) is already in use; pass another with {FLAGS[kind]} "
                f"(or {kind}_port=...; 0 picks a free port) or stop the process listening there"
            )
    ports = {}
    for kind, port in requested.items():
        ports[kind] = port or free_port(host, exclude=list(chosen.values()))
        chosen[kind] = ports[kind]
    return ports


def wait_ports_free(host: str, ports: Sequence[int], timeout_s: float) -> bool:
    """Wait until nothing listens on ``ports`` of ``host`` (0s are skipped); False on timeout. The kernel may close
    a killed process's sockets a moment after the process itself is gone."""
    deadline = time.monotonic() + timeout_s
    while any(port and port_in_use(host, port) for port in ports):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True

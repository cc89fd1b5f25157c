"""An HTTP address given to the gRPC client (``--url http://...`` or the HTTP port) is named as such, with the gRPC
address to use; the real server's HTTP port is tried in tests/integration/test_first_hour.py."""

from __future__ import annotations

import socket
import threading

import pytest
from brats_client.errors import UsageError
from brats_client.server_options import (
    ServerOptions,
    grpc_url_hint,
    http_port_message,
    speaks_http,
    split_host_port,
)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "HTTP://127.0.0.1:8000/", "127.0.0.1:8001,http://a:8000"])
def test_an_http_url_is_refused_with_the_grpc_address(url: str) -> None:
    with pytest.raises(UsageError) as info:
        ServerOptions(url=url)
    message = str(info.value)
    assert "is an HTTP address" in message and "gRPC" in message
    assert "--url 127.0.0.1:8001" in message or "--url a:8001" in message
    assert "--ssl" not in message


def test_an_https_url_also_says_how_to_use_tls() -> None:
    with pytest.raises(UsageError, match=r"--url server\.example:8001 .*--ssl --root-certificates"):
        ServerOptions(url="https://server.example:8000")


@pytest.mark.parametrize(
    ("url", "expected"),
    [("127.0.0.1:8000", ("127.0.0.1", 8000)), ("http://h:9000/v2", ("h", 9000)), ("[::1]:8000", ("::1", 8000)),
     ("localhost", ("localhost", None))],
)
def test_split_host_port(url: str, expected: tuple) -> None:
    assert split_host_port(url) == expected


def test_the_hint_names_the_grpc_port_beside_the_default_http_port_and_asks_for_another() -> None:
    assert "--url 10.0.0.5:8001" in grpc_url_hint("10.0.0.5:8000")
    assert "--url [::1]:8001" in grpc_url_hint("[::1]:8000")
    other = grpc_url_hint("10.0.0.5:9000")
    assert "--url 10.0.0.5:GRPC_PORT" in other and "8001" in other


def _serve_once(reply: bytes) -> tuple[str, threading.Thread]:
    """A loopback listener that answers one connection with ``reply`` (b"": closes it at once)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                if reply:
                    conn.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return f"127.0.0.1:{listener.getsockname()[1]}", thread


def test_speaks_http_tells_an_http_listener_from_others() -> None:
    url, thread = _serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert speaks_http(url)
    thread.join(5)
    url, thread = _serve_once(b"")
    assert not speaks_http(url)
    thread.join(5)
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    assert not speaks_http(f"127.0.0.1:{port}")  # nothing listens
    assert not speaks_http("127.0.0.1")  # no port


def test_the_http_port_message_names_the_file_of_the_curl_example_and_the_grpc_address() -> None:
    message = http_port_message("127.0.0.1:8000")
    assert "answers HTTP, not gRPC" in message and "--url 127.0.0.1:8001" in message

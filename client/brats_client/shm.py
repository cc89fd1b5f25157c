"""System shared memory for tensors when client and server share a host.

``auto`` (the default) uses it only when it works: one server, a loopback URL, room in ``/dev/shm`` for every
request in flight, and a server that can open a region this client made (a server in a container with its own
``/dev/shm`` cannot). Anything else falls back to sending tensors inside the gRPC messages.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import uuid
import warnings
from typing import Any

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

log = logging.getLogger(__name__)

CHOICES = ("auto", "on", "off")
SHM_DIR = "/dev/shm"
MiB = 1 << 20


def _shm_module():
    with warnings.catch_warnings():  # it imports the deprecated pkg_resources
        warnings.simplefilter("ignore", UserWarning)
        from tritonclient.utils import shared_memory

    return shared_memory


def is_loopback(url: str) -> bool:
    """``HOST:PORT`` with HOST ``localhost``, ``127.x.x.x`` or ``[::1]``."""
    host = url.rsplit(":", 1)[0].strip("[]") if ":" in url else url
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_bytes(folder: str = SHM_DIR) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def problem(client: grpcclient.InferenceServerClient, need_bytes: int) -> str | None:
    """Why shared memory cannot carry ``need_bytes`` between this client and the server; ``None`` if it can."""
    try:
        free = free_bytes()
    except OSError as e:
        return f"{SHM_DIR} is not usable here ({e})"
    if free < need_bytes:
        return f"{SHM_DIR} has {free // MiB} MiB free, the requests in flight need {need_bytes // MiB} MiB"
    shm = _shm_module()
    name = f"brats_probe_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    handle = shm.create_shared_memory_region(name, "/" + name, 64)
    try:
        client.register_system_shared_memory(name, "/" + name, 64)
    except InferenceServerException as e:
        return f"the server cannot open this host's shared memory (is it in a container or on another host?): {e}"
    else:
        try:
            client.unregister_system_shared_memory(name)
        except InferenceServerException as e:
            log.debug("could not unregister the probe region: %s", e)
    finally:
        shm.destroy_shared_memory_region(handle)
    return None


class Slots:
    """One input and one output region per request in flight, grown as batches need and registered lazily."""

    def __init__(self, client: grpcclient.InferenceServerClient, count: int) -> None:
        self._shm = _shm_module()
        self._client = client
        self._prefix = f"brats_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._regions: dict[str, tuple[Any, int]] = {}
        self._registered: set[str] = set()
        self.free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(count):
            self.free.put(i)

    def region(self, slot: int, kind: str, byte_size: int) -> tuple[str, Any]:
        name = f"{self._prefix}_{kind}{slot}"
        held = self._regions.get(name)
        if held is not None and held[1] < byte_size:
            self._release(name)
            held = None
        if held is None:
            held = (self._shm.create_shared_memory_region(name, "/" + name, byte_size), byte_size)
            self._regions[name] = held
        if name not in self._registered:
            try:
                self._client.register_system_shared_memory(name, "/" + name, held[1])
            except InferenceServerException as e:
                if "already in manager" not in str(e):  # the server was not restarted after all
                    raise
            self._registered.add(name)
        return name, held[0]

    def write(self, handle: Any, array: Any) -> None:
        self._shm.set_shared_memory_region(handle, [array])

    def read(self, slot: int, dtype: Any, shape: tuple[int, ...]) -> Any:
        handle = self._regions[f"{self._prefix}_out{slot}"][0]
        return self._shm.get_contents_as_numpy(handle, dtype, shape)

    def server_restarted(self) -> None:
        """A restarted server knows none of our regions: register them again on next use."""
        self._registered.clear()

    def _release(self, name: str) -> None:
        handle, _ = self._regions.pop(name)
        try:
            if name in self._registered:
                self._registered.discard(name)
                self._client.unregister_system_shared_memory(name)
        finally:
            self._shm.destroy_shared_memory_region(handle)

    def close(self) -> None:
        for name in list(self._regions):
            try:
                self._release(name)
            except InferenceServerException as e:  # the server may be gone; the local region is still freed
                log.debug("could not unregister %s: %s", name, e)

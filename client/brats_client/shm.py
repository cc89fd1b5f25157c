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

from .errors import ServerError

log = logging.getLogger(__name__)

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


def problem(client: grpcclient.InferenceServerClient, need_bytes: int, timeout_s: float = 10.0) -> str | None:
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
        client.register_system_shared_memory(name, "/" + name, 64, client_timeout=timeout_s)
    except InferenceServerException as e:
        return f"the server cannot open this host's shared memory (is it in a container or on another host?): {e}"
    else:
        try:
            client.unregister_system_shared_memory(name, client_timeout=timeout_s)
        except InferenceServerException as e:
            log.debug("could not unregister the probe region: %s", e)
    finally:
        shm.destroy_shared_memory_region(handle)
    return None


class Slots:
    """One input and one output region per request in flight, grown as batches need and registered lazily.

    A slot goes back to the pool (``release``) only when its request was never sent or was answered: the server
    is done with it. A slot whose request failed, was cancelled or was abandoned may still be read or written by
    the server, so ``retire`` drops it and puts a new slot (new regions) in its place; the pool keeps ``count``
    slots. Retired regions are unregistered from the server at ``close``.
    """

    def __init__(self, client: grpcclient.InferenceServerClient, count: int, timeout_s: float = 10.0) -> None:
        self._shm = _shm_module()
        self._client = client
        self._timeout_s = timeout_s  # deadline of each call to the server
        self._prefix = f"brats_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._regions: dict[str, tuple[Any, int]] = {}
        self._registered: set[str] = set()
        self._retired: set[str] = set()  # registered names whose local region is gone
        self._next = count
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(count):
            self._free.put(i)

    def acquire(self, wait_s: float) -> int:
        """A free slot; a ``ServerError`` after ``wait_s`` when every slot is taken (never an endless wait)."""
        try:
            return self._free.get(timeout=wait_s)
        except queue.Empty:
            raise ServerError(
                f"no shared-memory slot came free within {wait_s:g} s (is one transport used by several threads "
                "at once? give each thread its own, or use --shared-memory off)"
            ) from None

    def release(self, slot: int) -> None:
        self._free.put(slot)

    def retire(self, slot: int) -> None:
        """Drop ``slot`` (the server may still use its regions) and add a new one to the pool."""
        for kind in ("in", "out"):
            name = self._name(slot, kind)
            held = self._regions.pop(name, None)
            if held is not None:
                self._shm.destroy_shared_memory_region(held[0])  # the server's own mapping stays valid
            if name in self._registered:
                self._registered.discard(name)
                self._retired.add(name)
        self._free.put(self._next)
        self._next += 1

    def _name(self, slot: int, kind: str) -> str:
        return f"{self._prefix}_{kind}{slot}"

    def region(self, slot: int, kind: str, byte_size: int) -> tuple[str, Any]:
        name = self._name(slot, kind)
        held = self._regions.get(name)
        if held is not None and held[1] < byte_size:
            self._release(name)
            held = None
        if held is None:
            held = (self._shm.create_shared_memory_region(name, "/" + name, byte_size), byte_size)
            self._regions[name] = held
        if name not in self._registered:
            try:
                self._client.register_system_shared_memory(
                    name, "/" + name, held[1], client_timeout=self._timeout_s
                )
            except InferenceServerException as e:
                if "already in manager" not in str(e):  # the server was not restarted after all
                    raise
            self._registered.add(name)
        return name, held[0]

    def write(self, handle: Any, array: Any) -> None:
        self._shm.set_shared_memory_region(handle, [array])

    def read(self, slot: int, dtype: Any, shape: tuple[int, ...]) -> Any:
        handle = self._regions[self._name(slot, "out")][0]
        return self._shm.get_contents_as_numpy(handle, dtype, shape)

    def sync(self) -> None:
        """Ask the server which of our regions it knows: a restarted server knows none, and those are registered
        again on their next use. When the server does not answer, every region is registered again."""
        try:
            status = self._client.get_system_shared_memory_status(client_timeout=self._timeout_s)
        except InferenceServerException as e:
            log.debug("shared-memory status not read (%s): registering the regions again", e)
            self._registered.clear()
            return
        known = set(status.regions)
        self._registered &= known
        self._retired &= known

    def server_restarted(self) -> None:
        """A restarted server knows none of our regions: register them again on next use."""
        self._registered.clear()
        self._retired.clear()

    def _release(self, name: str) -> None:
        handle, _ = self._regions.pop(name)
        try:
            if name in self._registered:
                self._registered.discard(name)
                self._client.unregister_system_shared_memory(name, client_timeout=self._timeout_s)
        finally:
            self._shm.destroy_shared_memory_region(handle)

    def close(self) -> None:
        for name in list(self._regions):
            try:
                self._release(name)
            except InferenceServerException as e:  # the server may be gone; the local region is still freed
                log.debug("could not unregister %s: %s", name, e)
        for name in sorted(self._retired):
            try:
                self._client.unregister_system_shared_memory(name, client_timeout=self._timeout_s)
            except InferenceServerException as e:
                log.debug("could not unregister %s: %s", name, e)
        self._retired.clear()

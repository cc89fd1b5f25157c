"""The server's processes as Linux ``/proc`` shows them: its process group, and its python backend stubs, alive or
dead (:class:`BackendWatch`).

Each model instance runs in a python backend stub, a child process of ``tritonserver`` whose command line names the
model's version folder and the instance (``triton_python_backend_stub <repo>/<model>/1/model.onnx ... <model>_0_0
...``). When a stub dies (the kernel's OOM killer, a crash), Triton 24.10 neither restarts it nor marks the model
unready: it answers every request of that model with ``Stub process '<model>_0_0' is not healthy.`` and, on
SIGTERM, waits its whole exit timeout (30 s) for the model to unload. :class:`BackendWatch` finds such stubs (a dead
child stays a zombie, its wait status readable in ``/proc/PID/stat``) and says which model died and how.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STUB_EXECUTABLE = "triton_python_backend_stub"
COMM_LENGTH = 15  # Linux keeps this many characters of a process's name in /proc/PID/stat (zombies too)


@dataclass(frozen=True)
class ProcessStat:
    """What ``/proc/PID/stat`` says of one process (``man 5 proc``)."""

    pid: int
    name: str  # the first COMM_LENGTH characters of the executable's name ("comm")
    state: str  # "R", "S", ... "Z" a zombie: ended, not yet waited for by its parent
    ppid: int
    pgrp: int
    wait_status: int  # of an ended process, as waitpid(2) reports it (field 52, "exit_code"); 0 while it runs

    @property
    def ended(self) -> bool:
        return self.state in ("Z", "X")


def process_stats() -> list[ProcessStat]:
    """Every process of this machine (Linux ``/proc``; none where there is no ``/proc``)."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name, rest = text[text.find("(") + 1 : text.rfind(")")], text[text.rfind(")") + 1 :].split()
        status = int(rest[49]) if len(rest) > 49 else 0
        found.append(ProcessStat(int(entry), name, rest[0], int(rest[1]), int(rest[2]), status))
    return found


def running_in_group(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that still run (Linux ``/proc``). Zombies are left out: they hold no
    memory or port, and where PID 1 does not reap orphans they never go away."""
    return [p.pid for p in process_stats() if p.pgrp == pgid and not p.ended]


def wait_group_gone(pgid: int, timeout_s: float) -> bool:
    """Wait until no process of group ``pgid`` runs; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while running_in_group(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def describe_wait_status(status: int) -> str:
    """``killed by SIGKILL`` or ``exited with code 1``, from a waitpid(2) status."""
    try:
        code = os.waitstatus_to_exitcode(status)
    except ValueError:
        return f"ended with wait status {status:#x}"
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name}" + (" (core dumped)" if status & 0x80 else "")


@dataclass(frozen=True)
class BackendProcess:
    """A python backend stub of a running ``tritonserver``: one model instance."""

    pid: int
    model: str
    instance: str  # Triton's instance name, "<model>_<group>_<index>" by default


@dataclass(frozen=True)
class DeadBackend:
    """A stub that died while its server ran."""

    backend: BackendProcess
    wait_status: int  # as waitpid(2) reports it

    @property
    def how(self) -> str:
        """``killed by SIGKILL``, ``exited with code 1``, ..."""
        return describe_wait_status(self.wait_status)

    def __str__(self) -> str:
        b = self.backend
        oom = os.WIFSIGNALED(self.wait_status) and os.WTERMSIG(self.wait_status) == signal.SIGKILL
        return (f"model {b.model!r} lost its backend process (instance {b.instance}, pid {b.pid}): {self.how}"
                + (" (as by the kernel's out-of-memory killer: see dmesg or journalctl -k)" if oom else ""))


def stub_identity(pid: int) -> BackendProcess | None:
    """The model and instance of a running python backend stub, from its command line (``stub <repo>/<model>/<version>/
    <file> <shm region> ... <instance> <backend dir>``); ``None`` for any other process or one that is gone."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if len(argv) < 2 or Path(os.fsdecode(argv[0])).name != STUB_EXECUTABLE:
        return None
    model = Path(os.fsdecode(argv[1])).parent.parent.name
    instance = os.fsdecode(argv[8]) if len(argv) > 8 else ""
    return BackendProcess(pid, model or instance, instance or model)


class BackendWatch:
    """The python backend stubs of one server, seen at each :meth:`look`: those running (:attr:`running`) and
    those that died on their own (:attr:`dead`). Not thread-safe: its owner holds a lock."""

    def __init__(self, supervisor_pid: int) -> None:
        self.supervisor_pid = supervisor_pid  # tritonserver is its child, the stubs are tritonserver's
        self.running: dict[int, BackendProcess] = {}  # pid -> the stub seen running there
        self.dead: dict[int, DeadBackend] = {}
        self._ended: set[int] = set()  # stubs seen ended (zombies) at the last look

    def look(self) -> list[DeadBackend]:
        """Stubs found dead since the last look, each logged once as an error naming its model and how it ended."""
        stats = process_stats()
        servers = {p.pid for p in stats if p.ppid == self.supervisor_pid}
        ended, new = set(), []
        for p in stats:
            if p.ppid not in servers:
                continue
            if not p.ended:
                identity = stub_identity(p.pid)  # read each time: a pid may be reused
                if identity is not None:
                    self.running[p.pid] = identity
                continue
            if p.name != STUB_EXECUTABLE[:COMM_LENGTH] or p.pid in self.dead:
                continue
            ended.add(p.pid)
            # Triton waits for a stub it stops at once; a zombie that stays, or one that failed, died on its own.
            if p.wait_status == 0 and p.pid not in self._ended:
                continue
            backend = self.running.pop(p.pid, None) or BackendProcess(p.pid, "(unknown)", "(unknown)")
            dead = DeadBackend(backend, p.wait_status)
            self.dead[p.pid] = dead
            new.append(dead)
            log.error("%s", dead)
        self._ended = ended
        return new

"""Run a command that ends, with everything it started, when the process that started the supervisor ends.

    python -I supervisor.py FD -- COMMAND [ARG...]

``brats_serve.launcher`` starts ``tritonserver`` this way, in a new session (this process leads its process group;
the server and the python backend stubs it forks belong to it). ``FD`` is the read end of a pipe whose write end
only the parent holds, in no other process: when the parent exits, however it dies (SIGKILL, the OOM killer), the
pipe reads end-of-file and the supervisor SIGKILLs its whole process group. A signal to the parent's thread is not
needed, so it works whichever thread started the server, and also where PID 1 does not reap orphans (there a
stub waits for its dead server's zombie to vanish, which never happens). The command itself gets the parent-death
signal SIGKILL (Linux), so it dies too if the supervisor is killed alone.

SIGTERM and SIGINT are passed on to the command; the supervisor exits as the command did (a signal death is
reproduced). Standard library only, and no imports from this package: it runs as a plain script.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
POLL_S = 0.5  # without pidfd_open: how often the command's exit is checked


def _die_with_parent(parent: int):
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork; only called in the child

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before the call above
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: supervisor.py FD -- COMMAND [ARG...]\n")
        return 2
    watch = int(argv[0])
    child = subprocess.Popen(argv[2:], preexec_fn=_die_with_parent(os.getpid()))

    def forward(signum: int, _frame) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, forward)
    try:
        exited = os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        exited = None
    while child.poll() is None:
        ready, _, _ = select.select([watch] + ([exited] if exited is not None else []), [], [],
                                    None if exited is not None else POLL_S)
        if watch in ready and not os.read(watch, 1):  # the parent is gone: end the group, this process too
            os.killpg(0, signal.SIGKILL)
    code = child.returncode
    if code < 0:  # die of the same signal, so the parent sees what the command saw
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

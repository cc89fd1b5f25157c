"""Waiting for a starting ``tritonserver`` to be ready, and saying why it did not start: the process's exit, the
deadline, Triton's reasons for the models it could not load, the log's last lines."""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .errors import ServeError

LOG_TAIL_LINES = 30
POLL_INTERVAL_S = 0.25
_FAILED_LOAD = re.compile(r"failed to load '(?P<model>[^']+)' version (?P<version>\d+): (?P<reason>.*)")


def log_tail(path: str | os.PathLike, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def load_failures(path: str | os.PathLike) -> list[str]:
    """What Triton's log says went wrong at start-up: each model's load failure (first line of the reason),
    repository errors, and the server's final ``error:`` line."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        match = _FAILED_LOAD.search(line)
        if match:
            reason = match["reason"].split("\\n")[0].rstrip('"')
            entry = f"model '{match['model']}' version {match['version']}: {reason}"
        elif line.startswith("error:") or (line.startswith("E") and "model_repository_manager" in line):
            entry = line.strip()
        else:
            continue
        if entry not in found:
            found.append(entry)
    return found


def start_failure(cause: str, log_path: Path | None) -> ServeError:
    """The error of a server that did not start: ``cause``, Triton's reasons and the last lines of its log."""
    failures = load_failures(log_path) if log_path else []
    reasons = "".join(f"\n  {line}" for line in failures[-10:])
    tail = log_tail(log_path) if log_path else ""
    return ServeError(
        f"tritonserver did not start: {cause}"
        + (f"\nTriton says:{reasons}" if reasons else "")
        + f"\nlast lines of {log_path}:\n{tail}"
    )


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 - our own loopback endpoint
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(process: subprocess.Popen, http_url: str, models: Sequence[str] | None, timeout_s: float,
               log_path: Path | None) -> None:
    """Poll the server at ``http_url`` (``HOST:PORT``) until it and each of ``models`` are ready; a ``ServeError``
    (:func:`start_failure`) when ``process`` exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    paths = ["/v2/health/ready", *(f"/v2/models/{name}/ready" for name in models or ())]
    while True:
        code = process.poll()
        if code is not None:
            raise start_failure(f"the process exited with code {code}", log_path)
        if all(_ready(f"http://{http_url}{path}") for path in paths):
            return
        if time.monotonic() > deadline:
            raise start_failure(
                f"not ready after {timeout_s:g} s (raise startup_timeout_s / --startup-timeout-s)", log_path
            )
        time.sleep(POLL_INTERVAL_S)

"""Progress on long waits: a log line every few seconds while something runs, with the elapsed time and, where the
server has measured the model, an estimate.

:class:`Heartbeat` is the ticker (a thread that logs ``message(elapsed_s)`` after :data:`FIRST_S`, then every
:data:`EVERY_S`); :class:`InferenceWait` says what a case's requests are doing, with an estimate from the model's own
statistics on the server (Triton's compute time per inference, ``compute_infer``), so that a case of one tile, which
finishes nothing until its single request returns, does not look frozen. Standard library only: ``brats_export``
(the parity check) and ``brats_demo`` use the ticker too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

FIRST_S = 5.0  # the first line after this long: shorter waits say nothing
EVERY_S = 10.0  # then one line this often


class Heartbeat:
    """While the ``with`` block runs, log ``message(elapsed_s)`` after ``first_s`` (default :data:`FIRST_S`), then
    every ``every_s`` (default :data:`EVERY_S`); nothing when ``logger`` would drop the level anyway."""

    def __init__(self, message: Callable[[float], str], *, logger: logging.Logger = log, level: int = logging.INFO,
                 first_s: float | None = None, every_s: float | None = None) -> None:
        self.message, self.logger, self.level = message, logger, level
        self.first_s = FIRST_S if first_s is None else first_s
        self.every_s = EVERY_S if every_s is None else every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start = time.monotonic()

    def __enter__(self) -> Heartbeat:
        self.start = time.monotonic()
        if self.logger.isEnabledFor(self.level):
            self._thread = threading.Thread(target=self._run, name="brats-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        wait_s = self.first_s
        while not self._stop.wait(wait_s):
            self.logger.log(self.level, "%s", self.message(time.monotonic() - self.start))
            wait_s = self.every_s


def elapsed(what: str) -> Callable[[float], str]:
    """The plain message of a wait without an estimate: ``"<what>: 25 s so far"``."""
    return lambda elapsed_s: f"{what}: {elapsed_s:.0f} s so far"


def mean_compute_s(statistics: dict[str, int] | None) -> float | None:
    """Seconds of compute per inference (one item of a batch) from a model's cumulative server statistics; None
    when it has computed nothing (a fresh server) or gives no statistics."""
    if not statistics or not statistics.get("inference_count"):
        return None
    return statistics["compute_infer_ns"] / statistics["inference_count"] / 1e9


@dataclass
class InferenceWait:
    """What a case's inference is doing, for :class:`Heartbeat`: ``work`` (what was sent to ``model``, e.g. "1 tile
    in 4 requests") made of ``items`` batch items in all; ``statistics`` reads the model's cumulative server
    statistics (None where there are none); ``tiles`` and ``done`` (set by the pipeline's progress callback,
    :meth:`update`) count finished tiles, when the client tiles."""

    case_id: str
    model: str
    work: str
    items: int
    statistics: Callable[[], dict[str, int] | None]
    tiles: int | None = None
    done: int = 0

    def update(self, done: int, total: int) -> None:
        self.done, self.tiles = done, total

    def estimate(self) -> tuple[float, int] | str:
        """Seconds the ``items`` take at the model's mean compute per inference on this server, and how many
        inferences that mean is made of; or why there is no estimate."""
        stats = self.statistics()
        mean_s = mean_compute_s(stats)
        if mean_s is not None:
            return mean_s * self.items, stats["inference_count"]
        if stats is None:
            return f"no estimate ({self.model} gives no statistics)"
        return (f"no estimate yet ({self.model} has not finished an inference since the server started; the next case "
                "gets one)")

    def start_message(self) -> str:
        return f"{self.case_id}: {self.work} to {self.model}; {self._estimate_text(0.0)}"

    def message(self, elapsed_s: float) -> str:
        done = f", {self.done}/{plural(self.tiles, 'tile')} done" if self.tiles is not None else ""
        return f"{self.case_id}: {elapsed_s:.0f} s elapsed{done}; {self._estimate_text(elapsed_s)}"

    def _estimate_text(self, elapsed_s: float) -> str:
        found = self.estimate()
        if isinstance(found, str):
            return found
        total_s, count = found
        source = f"the server's mean compute of {self.model} over {plural(count, 'inference')}"
        if elapsed_s <= 0:
            return f"estimate about {total_s:.0f} s ({source})"
        if elapsed_s < total_s:
            return f"estimate about {total_s:.0f} s, {total_s - elapsed_s:.0f} s left ({source})"
        return f"over the estimate of {total_s:.0f} s ({source}; a busy server or a larger case takes longer)"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def infer_case(prepared, transport, logger: logging.Logger = log):
    """:func:`brats_client.pipeline.infer_case` with a line when it starts (the work and the estimate) and one every
    few seconds while it runs (elapsed, tiles done, time left), logged to ``logger``."""
    from . import pipeline

    info = transport.info
    tiles, requests, items = pipeline.count_requests(prepared, info)
    work = f"{plural(tiles, 'tile')} in {plural(requests, 'request')}"
    wait = InferenceWait(prepared.files.case_id, info.name, work, items, transport.statistics, tiles)
    if logger.isEnabledFor(logging.INFO):
        logger.info("%s", wait.start_message())
    with Heartbeat(wait.message, logger=logger):
        return pipeline.infer_case(prepared, transport, progress=wait.update)

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
from collections.abc import Callable, Sequence
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


def mean_compute_s(statistics: dict[str, int] | None, voxels: int = 1,
                   warmup: Sequence[tuple[int, int]] = ()) -> float | None:
    """Seconds of compute for one inference (a batch item) of ``voxels`` voxels, from a model's cumulative server
    statistics, taking the cost as proportional to the voxels. Triton counts the config's warm-up (``warmup``:
    batch items and voxels per item of each entry) in the statistics: those inferences weigh by their own size, and
    earlier requests are taken as the size of this one. None when nothing but the warm-up has run, or without
    statistics."""
    if not statistics:
        return None
    warm = sum(n for n, _ in warmup)
    real = statistics.get("inference_count", 0) - warm
    if real <= 0:
        return None
    weighted_voxels = sum(n * v for n, v in warmup) + real * voxels
    return statistics["compute_infer_ns"] / 1e9 * voxels / weighted_voxels


@dataclass
class InferenceWait:
    """What a case's inference is doing, for :class:`Heartbeat`: ``work`` (what was sent to ``model``, e.g. "1 tile
    in 4 requests") made of ``items`` batch items of ``voxels`` voxels each; ``statistics`` reads the model's
    cumulative server statistics (None where there are none), ``warmup`` is its config's warm-up
    (:func:`mean_compute_s`); ``tiles`` and ``done`` (set by the pipeline's progress callback, :meth:`update`) count
    finished tiles, when the client tiles."""

    case_id: str
    model: str
    work: str
    items: int
    statistics: Callable[[], dict[str, int] | None]
    voxels: int = 1
    warmup: Sequence[tuple[int, int]] = ()
    tiles: int | None = None
    done: int = 0

    def update(self, done: int, total: int) -> None:
        self.done, self.tiles = done, total

    def estimate(self) -> tuple[float, int] | str:
        """Seconds the ``items`` take at the model's mean compute on this server, and how many inferences (besides
        the warm-up) that mean comes from; or why there is no estimate."""
        stats = self.statistics()
        mean_s = mean_compute_s(stats, self.voxels, self.warmup)
        if mean_s is not None:
            return mean_s * self.items, stats["inference_count"] - sum(n for n, _ in self.warmup)
        if stats is None:
            return f"no estimate ({self.model} gives no statistics)"
        what = "nothing but its warm-up" if self.warmup else "nothing"
        return f"no estimate yet ({self.model} has computed {what} since the server started; the next case gets one)"

    def start_message(self) -> str:
        found = self.estimate()
        if isinstance(found, str):
            return f"{self.case_id}: {self.work} to {self.model}; {found}"
        total_s, count = found
        return (f"{self.case_id}: {self.work} to {self.model}; estimate about {total_s:.0f} s (the server's mean "
                f"compute of {self.model} over {plural(count, 'inference')})")

    def message(self, elapsed_s: float) -> str:
        done = f", {self.done}/{plural(self.tiles, 'tile')} done" if self.tiles is not None else ""
        found = self.estimate()
        if isinstance(found, str):
            estimate = found.partition(" (")[0]
        elif elapsed_s < found[0]:
            estimate = f"about {found[0] - elapsed_s:.0f} s left of about {found[0]:.0f} s"
        else:
            estimate = f"over the estimate of {found[0]:.0f} s (a busy server or a larger case takes longer)"
        return f"{self.case_id}: {elapsed_s:.0f} s elapsed{done}; {estimate}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def infer_case(prepared, transport, logger: logging.Logger = log):
    """:func:`brats_client.pipeline.infer_case` with a line when it starts (the work and the estimate) and one every
    few seconds while it runs (elapsed, tiles done, time left), logged to ``logger``."""
    from . import pipeline

    info = transport.info
    count = pipeline.count_requests(prepared, info)
    work = f"{plural(count.tiles, 'tile')} in {plural(count.requests, 'request')}"
    wait = InferenceWait(prepared.files.case_id, info.name, work, count.items, transport.statistics,
                         count.item_voxels, info.warmup, count.tiles)
    if logger.isEnabledFor(logging.INFO):
        logger.info("%s", wait.start_message())
    with Heartbeat(wait.message, logger=logger):
        return pipeline.infer_case(prepared, transport, progress=wait.update)

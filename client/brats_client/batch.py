"""Overlapping the cases of a batch, and splitting a batch into parts for several machines.

Three stages per case, each on its own thread, in case order::

    loader thread:  prepare(job)            load + preprocess case k+1   (waits for a place in memory)
    calling thread: infer(job, prepared)    case k's requests to the server
    writer thread:  finish(job, inferred)   labels + atomic writes of case k-1

``BatchOptions.cases_in_memory`` bounds the cases between the start of their loading and the end of their writing
(1 runs one case after another). A case whose stage raises one of ``errors`` is a failed case and the batch goes
on; any other exception stops the batch and is raised in the calling thread once the other threads have stopped
(a write under way is finished, the cases waiting to be written are dropped). The transport is used by the
calling thread only.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import UsageError

log = logging.getLogger(__name__)

Job = TypeVar("Job")

CASES_IN_MEMORY = 3  # one loading, one at the server, one being written
POLL_S = 0.5  # how often a waiting thread checks that the batch is still running


@dataclass(frozen=True)
class Outcome:
    """One case's end: ``error`` is the message of a failed case, ``None`` when it was written."""

    index: int
    error: str | None = None


@dataclass(frozen=True)
class _Crash:
    error: BaseException


_END = object()


@dataclass(frozen=True)
class BatchOptions:
    """How a folder of cases runs: the cases held at once (``--cases-in-memory``) and the part of a split this
    run takes (``--num-parts``, ``--part-id``; both or neither). Checked here, once."""

    cases_in_memory: int = CASES_IN_MEMORY
    num_parts: int | None = None
    part_id: int | None = None

    def __post_init__(self) -> None:
        if self.cases_in_memory < 1:
            raise UsageError(f"--cases-in-memory must be >= 1, got {self.cases_in_memory}")
        if (self.num_parts is None) != (self.part_id is None):
            raise UsageError("--num-parts and --part-id go together (e.g. --num-parts 4 --part-id 0 .. 3)")
        if self.num_parts is not None and self.part_id is not None:
            if self.num_parts < 1:
                raise UsageError(f"--num-parts must be >= 1, got {self.num_parts}")
            if not 0 <= self.part_id < self.num_parts:
                raise UsageError(f"--part-id must be in [0, {self.num_parts - 1}] for --num-parts {self.num_parts}, "
                                 f"got {self.part_id}")

    @property
    def is_part(self) -> bool:
        return self.num_parts is not None

    def split(self, items: Sequence[Job], key: Callable[[Job], str]) -> list[Job]:
        """This run's part of ``items``: every ``num_parts``-th item in the order of ``key`` from the
        ``part_id``-th on (all of them when there is no split). The parts are disjoint, cover every item and
        differ in size by at most one, provided every part sees the same items."""
        ordered = sorted(items, key=key)
        return ordered if self.num_parts is None else ordered[self.part_id :: self.num_parts]


class _Run(Generic[Job]):
    def __init__(self, jobs, prepare, infer, finish, errors, in_memory, on_outcome) -> None:
        self.jobs, self.prepare, self.infer, self.finish = jobs, prepare, infer, finish
        self.errors, self.on_outcome = errors, on_outcome
        self.places = threading.Semaphore(in_memory)
        self.stop = threading.Event()
        self.loaded: queue.Queue = queue.Queue()  # bounded by the places
        self.inferred: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.writer_crash: BaseException | None = None

    def record(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)
            self.on_outcome(outcome)

    def fail(self, index: int, error: BaseException) -> None:
        self.places.release()
        self.record(Outcome(index, str(error)))

    def load_all(self) -> None:
        try:
            for index, job in enumerate(self.jobs):
                while not self.places.acquire(timeout=POLL_S):
                    if self.stop.is_set():
                        return
                if self.stop.is_set():
                    self.places.release()
                    return
                try:
                    self.loaded.put((index, job, self.prepare(job)))
                except self.errors as e:
                    self.loaded.put((index, job, e))
        except BaseException as e:  # handed to the calling thread, which raises it
            self.loaded.put(_Crash(e))
        else:
            self.loaded.put(_END)

    def write_all(self) -> None:
        while True:
            item = self.inferred.get()
            if item is _END:
                return
            index, job, inferred = item
            del item
            if self.stop.is_set():  # dropped: nothing of it was written
                del inferred
                self.places.release()
                continue
            try:
                self.finish(job, inferred)
            except self.errors as e:
                del inferred
                self.fail(index, e)
                continue
            except BaseException as e:
                self.writer_crash = e
                self.stop.set()
                self.places.release()
                continue
            del inferred  # before its place is given to the next case
            self.places.release()
            self.record(Outcome(index))

    def next_loaded(self, loader: threading.Thread) -> Any:
        while True:
            try:
                return self.loaded.get(timeout=POLL_S)
            except queue.Empty:
                if self.writer_crash is not None:
                    raise self.writer_crash from None
                if not loader.is_alive() and self.loaded.empty():
                    raise RuntimeError("the loader thread ended without a word") from None

    def infer_all(self, loader: threading.Thread) -> None:
        while True:
            item = self.next_loaded(loader)
            if item is _END:
                return
            if isinstance(item, _Crash):
                raise item.error
            if self.writer_crash is not None:
                raise self.writer_crash
            index, job, prepared = item
            if isinstance(prepared, BaseException):
                self.fail(index, prepared)
                continue
            try:
                inferred = self.infer(job, prepared)
            except self.errors as e:
                self.fail(index, e)
                continue
            del prepared, item  # the input arrays go once the inference is done
            self.inferred.put((index, job, inferred))
            del inferred


def run(
    jobs: Sequence[Job],
    prepare: Callable[[Job], Any],
    infer: Callable[[Job, Any], Any],
    finish: Callable[[Job, Any], None],
    *,
    errors: tuple[type[BaseException], ...],
    options: BatchOptions = BatchOptions(),
    on_outcome: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """Run every job through ``prepare`` -> ``infer`` -> ``finish`` (see the module docstring); returns one
    outcome per job, in job order. ``on_outcome`` is called as each case ends, from the thread that ended it."""
    state = _Run(jobs, prepare, infer, finish, errors, options.cases_in_memory, on_outcome)
    loader = threading.Thread(target=state.load_all, name="brats-loader", daemon=True)
    writer = threading.Thread(target=state.write_all, name="brats-writer", daemon=True)
    loader.start()
    writer.start()
    try:
        state.infer_all(loader)
    except BaseException:
        state.stop.set()
        raise
    finally:
        state.inferred.put(_END)
        writer.join()
        loader.join()
    if state.writer_crash is not None:
        raise state.writer_crash
    return sorted(state.outcomes, key=lambda o: o.index)

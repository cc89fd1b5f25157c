"""Segmenting cases (:func:`segment_cases`, the one path for one case and many), overlapping the cases of a batch
(:func:`run`), and splitting a batch into parts for several machines.

Three stages per case, each on its own thread, in case order::

    loader thread:  prepare(job)            load + preprocess case k+1   (waits for a place in memory)
    calling thread: infer(job, prepared)    case k's requests to the server
    writer thread:  finish(job, inferred)   labels + atomic writes of case k-1

``BatchOptions.cases_in_memory`` bounds the cases between the start of their loading and the end of their writing
(1 runs one case after another). A case whose stage raises one of ``errors`` is a failed case and the batch goes
on; any other exception stops the batch and is raised in the calling thread once the other threads have stopped
(a write under way is finished, the cases waiting to be written are dropped; Ctrl-C too). The transport is used by
the calling thread only.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from . import pipeline, progress
from .errors import InputError, OutputError, ServerError, UsageError
from .modalities import CaseFiles
from .protocol import Transport
from .server_options import ServerOptions

log = logging.getLogger(__name__)

Job = TypeVar("Job")

CASES_IN_MEMORY = 3  # one loading, one at the server, one being written
POLL_S = 0.5  # how often a waiting thread checks that the batch is still running
CASE_ERRORS = (InputError, OutputError, ServerError)  # what fails one case of a batch, not the batch


@dataclass(frozen=True)
class Outcome:
    """One case's end: ``error`` is the message of a failed case, ``None`` when it was written; ``report`` what
    its ``finish`` returned (a segmented case's report)."""

    index: int
    error: str | None = None
    report: dict[str, Any] | None = None


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
                report = self.finish(job, inferred)
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
            self.record(Outcome(index, report=report))

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
    finish: Callable[[Job, Any], Any],
    *,
    errors: tuple[type[BaseException], ...],
    options: BatchOptions = BatchOptions(),
    on_outcome: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """Run every job through ``prepare`` -> ``infer`` -> ``finish`` (see the module docstring); returns one
    outcome per job, in job order. ``on_outcome`` is called as each case ends, from the thread that ended it."""
    state = _Run(jobs, prepare, infer, finish, errors, options.cases_in_memory, on_outcome)
    loader, loaded_all = _start(state.load_all, "brats-loader")
    writer, wrote_all = _start(state.write_all, "brats-writer")
    try:
        state.infer_all(loader)
    except BaseException:
        state.stop.set()
        raise
    finally:
        state.inferred.put(_END)
        _join(writer, wrote_all, state)
        _join(loader, loaded_all, state)
    if state.writer_crash is not None:
        raise state.writer_crash
    return sorted(state.outcomes, key=lambda o: o.index)


def _start(target: Callable[[], None], name: str) -> tuple[threading.Thread, threading.Event]:
    """A daemon thread running ``target``, and an event set when it ends."""
    ended = threading.Event()

    def body() -> None:
        try:
            target()
        finally:
            ended.set()

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread, ended


def _join(thread: threading.Thread, ended: threading.Event, state: _Run) -> None:
    """Wait for ``thread``; Ctrl-C meanwhile stops the batch, lets a write under way end and is then raised. (It
    waits on ``ended``: a ``Thread.join`` that Ctrl-C interrupts marks the thread as ended on Python 3.11.)"""
    interrupted = None
    while not ended.is_set():
        try:
            ended.wait()
        except KeyboardInterrupt as e:
            state.stop.set()
            interrupted = e
    thread.join()
    if interrupted is not None:
        raise interrupted


def segment_cases(
    jobs: Sequence[tuple[CaseFiles, pipeline.CaseOutputs]],
    server: ServerOptions | Transport,
    options: pipeline.SegmentOptions | None = None,
    batch: BatchOptions = BatchOptions(),
    *,
    keep_going: bool = False,
    on_outcome: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """Segment each case of ``jobs`` (its files, where its outputs go): check the outputs, load and preprocess,
    send the tiles (a log line every few seconds, :mod:`.progress`), write; the one path of one case and of many.

    The first case is checked and prepared before the server is connected: a bad first input or output fails
    before anything is sent. The next cases load, and finished ones are written, while the server computes
    (``batch``, :func:`run`). ``keep_going``: a case whose input, output or request fails (:data:`CASE_ERRORS`)
    becomes a failed :class:`Outcome` and the others go on; without it that error is raised. A server that cannot
    be connected raises either way. ``server``: where to connect (:func:`pipeline.open_transport`), or a
    :class:`Transport` that is open already (used, not closed). One outcome per job, in job order; a written
    case's carries its report. ``options``: default :class:`~.pipeline.SegmentOptions`."""
    if not jobs:
        return []
    options = options or pipeline.SegmentOptions()
    errors = CASE_ERRORS if keep_going else ()
    first: list[Any] = []
    try:
        first.append(_prepare(jobs[0], options))
    except errors as e:
        first.append(e)

    def prepare(job: tuple[CaseFiles, pipeline.CaseOutputs]) -> pipeline.PreparedCase:
        if first:  # the loader prepares in job order: its first call is the first job, prepared above
            prepared = first.pop()
            if isinstance(prepared, BaseException):
                raise prepared
            return prepared
        return _prepare(job, options)

    opened = (contextlib.nullcontext(server) if not isinstance(server, ServerOptions)
              else pipeline.open_transport(server, options))
    with opened as transport:
        return run(
            jobs, prepare, lambda job, prepared: progress.infer_case(prepared, transport, log),
            lambda job, inferred: pipeline.finish_case(inferred, job[1]),
            errors=errors, options=batch, on_outcome=on_outcome,
        )


def _prepare(job: tuple[CaseFiles, pipeline.CaseOutputs], options: pipeline.SegmentOptions) -> pipeline.PreparedCase:
    pipeline.check_outputs(job[1])
    return pipeline.prepare_case(job[0], options)

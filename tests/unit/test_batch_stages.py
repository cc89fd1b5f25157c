"""``brats_client.batch``: the three stages overlap, stay within the bound on cases in memory, end in job order,
keep failed cases apart, and stop cleanly on an unexpected error; the part split covers every case once."""

from __future__ import annotations

import threading
import time

import pytest
from brats_client import batch
from hypothesis import given
from hypothesis import strategies as st


class CaseError(Exception):
    pass


class Stages:
    """Fake stages that sleep, record which thread ran what and count the cases alive at once."""

    def __init__(self, sleep_s: float = 0.0, fail: dict[str, set[int]] | None = None) -> None:
        self.sleep_s, self.fail = sleep_s, fail or {}
        self.lock = threading.Lock()
        self.alive = self.peak = 0
        self.threads: dict[str, set[str]] = {"prepare": set(), "infer": set(), "finish": set()}
        self.written: list[int] = []
        self.spans: dict[tuple[str, int], tuple[float, float]] = {}

    def _stage(self, name: str, job: int) -> None:
        self.threads[name].add(threading.current_thread().name)
        t0 = time.perf_counter()
        time.sleep(self.sleep_s)
        self.spans[name, job] = (t0, time.perf_counter())
        if job in self.fail.get(name, set()):
            raise CaseError(f"case {job} failed in {name}")

    def prepare(self, job: int) -> str:
        with self.lock:
            self.alive += 1
            self.peak = max(self.peak, self.alive)
        try:
            self._stage("prepare", job)
        except CaseError:
            with self.lock:
                self.alive -= 1
            raise
        return f"prepared {job}"

    def infer(self, job: int, prepared: str) -> str:
        assert prepared == f"prepared {job}"
        try:
            self._stage("infer", job)
        except CaseError:
            with self.lock:
                self.alive -= 1
            raise
        return f"inferred {job}"

    def finish(self, job: int, inferred: str) -> None:
        assert inferred == f"inferred {job}"
        try:
            self._stage("finish", job)
            self.written.append(job)
        finally:
            with self.lock:
                self.alive -= 1

    def run(self, jobs, **kwargs) -> list[batch.Outcome]:
        return batch.run(jobs, self.prepare, self.infer, self.finish, errors=(CaseError,), **kwargs)


def test_stages_overlap_on_their_own_threads_within_the_bound():
    stages = Stages(sleep_s=0.05)
    outcomes = stages.run(list(range(8)), options=batch.BatchOptions(3))
    assert outcomes == [batch.Outcome(i) for i in range(8)]
    assert stages.written == list(range(8)), "cases are written in order"
    assert stages.threads["infer"] == {threading.current_thread().name}, "the transport stays on the caller's thread"
    assert stages.threads["prepare"] == {"brats-loader"} and stages.threads["finish"] == {"brats-writer"}
    assert stages.peak <= 3
    load_next, infer_now = stages.spans["prepare", 4], stages.spans["infer", 3]
    assert load_next[0] < infer_now[1] and infer_now[0] < load_next[1], "case 4 loads while case 3 is inferred"


def test_one_case_in_memory_is_one_case_after_another():
    stages = Stages(sleep_s=0.01)
    assert stages.run(list(range(4)), options=batch.BatchOptions(1)) == [batch.Outcome(i) for i in range(4)]
    assert stages.peak == 1
    for job in range(3):
        assert stages.spans["finish", job][1] <= stages.spans["prepare", job + 1][0]


def test_failed_cases_are_reported_in_order_and_the_rest_is_written():
    stages = Stages(sleep_s=0.01, fail={"prepare": {1}, "infer": {3}, "finish": {4}})
    seen: list[batch.Outcome] = []
    outcomes = stages.run(list(range(6)), options=batch.BatchOptions(2), on_outcome=seen.append)
    assert [o.index for o in outcomes] == list(range(6))
    assert {o.index: o.error for o in outcomes if o.error} == {
        1: "case 1 failed in prepare", 3: "case 3 failed in infer", 4: "case 4 failed in finish"
    }
    assert stages.written == [0, 2, 5]
    assert sorted(seen, key=lambda o: o.index) == outcomes, "every end is announced once"
    assert stages.peak <= 2 and stages.alive == 0, "a failed case gives its place back"


@pytest.mark.parametrize("stage", ["prepare", "infer", "finish"])
def test_an_unexpected_error_stops_the_batch_and_is_raised(stage):
    stages = Stages(sleep_s=0.01)
    original = getattr(stages, stage)

    def broken(job, *rest):
        if job == 2:
            raise KeyError(f"bug in {stage}")
        return original(job, *rest)

    setattr(stages, stage, broken)
    before = set(threading.enumerate())
    with pytest.raises(KeyError, match=f"bug in {stage}"):
        stages.run(list(range(20)), options=batch.BatchOptions(3))
    assert set(threading.enumerate()) <= before, "the loader and writer threads have ended"
    assert 2 not in stages.written and len(stages.written) < 20


def test_an_interrupt_in_the_calling_thread_ends_the_threads():
    stages = Stages(sleep_s=0.01)
    original = stages.infer

    def interrupted(job, prepared):
        if job == 1:
            raise KeyboardInterrupt
        return original(job, prepared)

    stages.infer = interrupted
    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        stages.run(list(range(10)), options=batch.BatchOptions(3))
    assert set(threading.enumerate()) <= before
    assert stages.written in ([], [0]), "at most the case already handed to the writer is finished"


def test_ctrl_c_while_the_last_case_is_written_lets_the_write_end():
    """Ctrl-C reaches the calling thread while it waits for the writer: the write under way ends (no half-written
    output), then the interrupt is raised."""
    import signal

    written = []
    caller = threading.get_ident()

    def finish(job, inferred):
        time.sleep(0.2)  # the calling thread has nothing left to infer: it waits for this thread
        signal.pthread_kill(caller, signal.SIGINT)  # Ctrl-C, delivered to the waiting thread
        time.sleep(0.3)
        written.append(job)

    # Ctrl-C as a user's terminal delivers it, whatever an earlier test in this process left behind
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    before = set(threading.enumerate())
    try:
        batch.run([0], lambda job: job, lambda job, prepared: prepared, finish, errors=())
        raised = False
    except KeyboardInterrupt:
        raised = True
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    assert raised, f"no KeyboardInterrupt (before this test: SIGINT handler {handler!r}, blocked signals {mask})"
    assert written == [0] and set(threading.enumerate()) <= before


def test_no_jobs_and_bad_bounds():
    assert Stages().run([]) == []
    with pytest.raises(ValueError, match="--cases-in-memory must be >= 1, got 0"):
        batch.BatchOptions(0)


# ------------------------------------------------------------------------------------------------ the split


@given(
    names=st.lists(st.text("abcdefghij_0123456789", min_size=1, max_size=8), unique=True, max_size=60),
    num_parts=st.integers(1, 12),
)
def test_parts_cover_every_case_exactly_once_and_are_balanced(names, num_parts):
    parts = [batch.BatchOptions(num_parts=num_parts, part_id=k).split(names, key=str) for k in range(num_parts)]
    flat = [name for part in parts for name in part]
    assert sorted(flat) == sorted(names) and len(flat) == len(names)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    # the same part whatever order the cases were listed in
    shuffled = list(reversed(names))
    split = [batch.BatchOptions(num_parts=num_parts, part_id=k).split(shuffled, key=str) for k in range(num_parts)]
    assert split == parts


@pytest.mark.parametrize(("num_parts", "part_id", "message"), [
    (0, 0, "--num-parts must be >= 1, got 0"),
    (4, 4, r"--part-id must be in \[0, 3\] for --num-parts 4, got 4"),
    (4, -1, r"--part-id must be in \[0, 3\] for --num-parts 4, got -1"),
])
def test_bad_part_values_are_named(num_parts, part_id, message):
    with pytest.raises(ValueError, match=message):
        batch.BatchOptions(num_parts=num_parts, part_id=part_id)


@pytest.mark.parametrize(("num_parts", "part_id"), [(4, None), (None, 0)])
def test_parts_go_together(num_parts, part_id):
    with pytest.raises(ValueError, match="go together"):
        batch.BatchOptions(num_parts=num_parts, part_id=part_id)


def test_no_split_is_every_case_in_order():
    assert batch.BatchOptions().split(["b", "a", "c"], key=str) == ["a", "b", "c"]

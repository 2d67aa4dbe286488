"""BatchWorkerPool: batching of pending work, bounded pending, per-thread state, error isolation."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from bot.pipeline.pools import (
    BatchWorkerPool,
    PoolClosed,
    PoolFull,
    charge_thread_cpu,
    lower_thread_priority,
    thread_nice,
)


class Recorder:
    """A process function that records each batch and can be held at a gate."""

    def __init__(self, fail_on: object = None) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.batches: list[list[Any]] = []
        self.threads: set[int] = set()
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, state: Any, requests: Sequence[Any]) -> list[Any]:
        self.started.set()
        self.gate.wait(10)
        with self._lock:
            self.batches.append(list(requests))
            self.threads.add(threading.get_ident())
        if self.fail_on is not None and self.fail_on in requests:
            raise ValueError(f"bad request {self.fail_on!r}")
        return [(state, r) for r in requests]


async def _hold_first(pool: BatchWorkerPool[Any, Any], rec: Recorder) -> asyncio.Future[Any]:
    """Occupy the (single) worker so that later submissions pile up."""
    rec.gate.clear()
    fut = pool.submit("first")
    assert await asyncio.to_thread(rec.started.wait, 10)
    return fut


async def test_pending_requests_are_drained_into_one_batch() -> None:
    rec = Recorder()
    pool: BatchWorkerPool[Any, Any] = BatchWorkerPool("t", rec, threads=1, max_batch=4, max_pending=16)
    try:
        first = await _hold_first(pool, rec)
        rest = [pool.submit(i) for i in range(6)]
        assert pool.pending == 6 and pool.depth == 7
        rec.gate.set()
        await asyncio.gather(first, *rest)
        # A single request is never held back for a batch to fill; the backlog goes out 4 + 2.
        assert [len(b) for b in rec.batches] == [1, 4, 2]
        assert pool.stats.batch_sizes == {1: 1, 4: 1, 2: 1}
        assert [f.result()[1] for f in rest] == list(range(6))
        snap = pool.snapshot()
        assert snap["batchSizes"] == {"1": 1, "2": 1, "4": 1} and snap["completed"] == 7
    finally:
        pool.close()


async def test_submit_many_runs_together_and_splits_at_max_batch() -> None:
    rec = Recorder()
    pool: BatchWorkerPool[Any, Any] = BatchWorkerPool("t", rec, threads=2, max_batch=3, max_pending=16)
    try:
        futs = pool.submit_many(["a", "b", "c", "d", "e"])
        results = await asyncio.gather(*futs)
        assert [r[1] for r in results] == ["a", "b", "c", "d", "e"]
        assert sorted(len(b) for b in rec.batches) == [2, 3]
        assert sorted(x for b in rec.batches for x in b) == ["a", "b", "c", "d", "e"]
    finally:
        pool.close()


async def test_pending_is_bounded_and_rejections_are_counted() -> None:
    rec = Recorder()
    pool: BatchWorkerPool[Any, Any] = BatchWorkerPool("t", rec, threads=1, max_batch=2, max_pending=3)
    try:
        first = await _hold_first(pool, rec)
        queued = [pool.submit(i) for i in range(3)]
        with pytest.raises(PoolFull):
            pool.submit(99)
        with pytest.raises(PoolFull):
            pool.submit_many([100, 101])  # all or nothing
        assert pool.pending == 3 and pool.stats.rejected == 3
        rec.gate.set()
        await asyncio.gather(first, *queued)
        assert pool.depth == 0
        assert all(99 not in b and 100 not in b for b in rec.batches)
    finally:
        pool.close()


async def test_an_error_fails_only_its_own_batch() -> None:
    rec = Recorder(fail_on="bad")
    pool: BatchWorkerPool[Any, Any] = BatchWorkerPool("t", rec, threads=1, max_batch=2, max_pending=16)
    try:
        first = await _hold_first(pool, rec)
        bad_batch = pool.submit_many(["ok-1", "bad"])
        good_batch = pool.submit_many(["ok-2", "ok-3"])
        rec.gate.set()
        await first
        for fut in bad_batch:
            with pytest.raises(ValueError, match="bad request"):
                await fut
        assert [r[1] for r in await asyncio.gather(*good_batch)] == ["ok-2", "ok-3"]
        assert pool.stats.failed == 2 and pool.stats.completed == 3
        # The worker survived the error.
        assert (await pool.submit("after"))[1] == "after"
    finally:
        pool.close()


async def test_each_thread_builds_and_tears_down_its_own_state() -> None:
    built: list[int] = []
    torn: list[int] = []
    lock = threading.Lock()

    def init() -> int:
        with lock:
            built.append(threading.get_ident())
        return threading.get_ident()

    def teardown(state: int) -> None:
        with lock:
            torn.append(state)

    def process(state: int, requests: Sequence[Any]) -> list[bool]:
        return [state == threading.get_ident() for _ in requests]

    pool: BatchWorkerPool[Any, bool] = BatchWorkerPool("t", process, threads=2, init=init, teardown=teardown)
    assert len(set(built)) == 2
    assert all(await asyncio.gather(*(pool.submit(i) for i in range(20))))
    await asyncio.to_thread(pool.close)
    assert sorted(torn) == sorted(built)
    with pytest.raises(PoolClosed):
        pool.submit(1)


def test_an_init_failure_is_reported_by_the_constructor() -> None:
    def init() -> None:
        raise OSError("no model here")

    with pytest.raises(RuntimeError, match="no model here"):
        BatchWorkerPool("t", lambda s, r: list(r), threads=2, init=init)


async def test_cancelled_requests_are_skipped() -> None:
    rec = Recorder()
    pool: BatchWorkerPool[Any, Any] = BatchWorkerPool("t", rec, threads=1, max_batch=8, max_pending=16)
    try:
        first = await _hold_first(pool, rec)
        keep = pool.submit("keep")
        drop = pool.submit("drop")
        drop.cancel()
        rec.gate.set()
        await asyncio.gather(first, keep)
        assert ["drop"] not in rec.batches and all("drop" not in b for b in rec.batches)
    finally:
        pool.close()


def test_bad_sizes_are_rejected() -> None:
    with pytest.raises(ValueError):
        BatchWorkerPool("t", lambda s, r: list(r), threads=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
async def test_pool_threads_and_the_threads_they_start_run_below_the_caller() -> None:
    """``nice`` lowers the pool threads' OS priority before ``init`` runs, so the threads a model
    starts there (MediaPipe's, torch's) inherit it; the caller (the asyncio loop) keeps its own."""
    base = thread_nice()
    assert base is not None
    started: list[int | None] = []

    def init() -> None:
        # A model's own worker thread, started from init like MediaPipe's dispatcher.
        t = threading.Thread(target=lambda: started.append(thread_nice()))
        t.start()
        t.join()

    pool: BatchWorkerPool[Any, int | None] = BatchWorkerPool(
        "niced", lambda _s, reqs: [thread_nice() for _ in reqs], threads=2, init=init, nice=5
    )
    try:
        seen = await asyncio.gather(*(pool.submit(i) for i in range(4)))
    finally:
        pool.close()
    expected = min(19, base + 5)
    assert set(seen) == {expected}
    assert started == [expected, expected]
    assert set(pool.thread_nice.values()) == {expected}
    assert pool.snapshot()["nice"] == expected
    assert thread_nice() == base  # the caller's thread is untouched


def test_lowering_priority_is_a_no_op_at_zero() -> None:
    assert lower_thread_priority(0) is None


async def test_cpu_spent_elsewhere_for_a_batch_counts_as_the_pools() -> None:
    # A stage whose work runs in a child process charges the child's CPU time to the calling
    # thread (bot.pipeline.remote), so the pool's cpuS is what the stage costs wherever it runs.
    def elsewhere(_state: Any, requests: Sequence[Any]) -> list[Any]:
        charge_thread_cpu(0.5 * len(requests))
        return list(requests)

    pool: BatchWorkerPool[int, int] = BatchWorkerPool("elsewhere", elsewhere, max_batch=4)
    try:
        assert await pool.submit(1) == 1
        assert await asyncio.gather(*pool.submit_many([2, 3])) == [2, 3]
        assert 1.5 <= pool.stats.cpu_s < 1.6
        assert pool.snapshot()["cpuS"] >= 1.5
    finally:
        pool.close()

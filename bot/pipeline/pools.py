"""Executor pools whose threads batch whatever work is pending into one call.

The asyncio loop only submits references and awaits futures; the compute happens here. Each
thread owns its own state (a MediaPipe landmarker, say, which is not thread-safe), built by the
pool's ``init`` in that thread. A thread takes the first pending request, then drains up to
``max_batch - 1`` more without waiting, so a single request is never delayed for a batch to
fill, while a burst from several participants becomes one Wav2Vec2 or predictor forward.
``submit_many`` queues several requests as one item, so a thread can never pick up the first
of them before the others are queued: they run in one batch (split only at ``max_batch``).

Pending work is bounded: ``submit`` raises :class:`PoolFull` instead of queueing without limit,
and the caller counts the drop.

``nice`` lowers the OS priority of a pool's threads (and of the threads their ``init`` starts,
MediaPipe's and torch's, which inherit it): the live engine runs its compute below the asyncio
loop, so that above capacity compute slows down instead of the loop that keeps peers connected
(docs/engine.md, "Overload that stays connected").
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bot.pipeline.cpu import name_native_thread

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")

_STOP = object()
# The busy fraction covers this much recent time, from at most this many recent batches.
BUSY_WINDOW_S = 5.0
RECENT_BATCHES = 2048


def lower_thread_priority(nice: int) -> int | None:
    """Raise the calling thread's nice value by ``nice`` (capped at 19); return the new value.

    Linux schedules threads, so ``setpriority`` on the native thread id acts on this thread alone.
    None where there is no per-thread priority (not Linux) or ``nice`` is 0. Raising a nice value
    needs no privilege but can't be undone, which is why only threads that do nothing but compute
    call this.
    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return None
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError as exc:  # a sandbox without setpriority: run at the normal priority
        log.warning("could not lower the priority of %s: %s", threading.current_thread().name, exc)
        return None


def thread_nice() -> int | None:
    """The calling thread's nice value (None off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


_charged = threading.local()


def charge_thread_cpu(seconds: float) -> None:
    """Count CPU time spent elsewhere on this thread's behalf (a child process computing for it),
    so that a pool's ``cpuS`` is what its stage costs wherever the stage runs."""
    _charged.seconds = getattr(_charged, "seconds", 0.0) + seconds


def thread_cpu_time() -> float:
    """This thread's CPU time plus what was charged to it (:func:`charge_thread_cpu`)."""
    return time.thread_time() + getattr(_charged, "seconds", 0.0)


class PoolFull(RuntimeError):
    """The pool already holds its maximum of pending requests."""


class PoolClosed(RuntimeError):
    """The pool was closed before the request ran."""


@dataclass
class PoolStats:
    """Counters of one pool; ``batch_sizes`` maps a batch size to how many batches had it."""

    submitted: int = 0
    completed: int = 0
    failed: int = 0
    rejected: int = 0
    batches: int = 0
    busy_s: float = 0.0
    cpu_s: float = 0.0
    wait_s: float = 0.0
    max_wait_s: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted,
            "completed": self.completed,
            "failed": self.failed,
            "rejected": self.rejected,
            "batches": self.batches,
            "busyS": round(self.busy_s, 3),
            "cpuS": round(self.cpu_s, 3),
            "meanWaitMs": round(1000 * self.wait_s / self.completed, 2) if self.completed else 0.0,
            "maxWaitMs": round(1000 * self.max_wait_s, 2),
            "batchSizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


@dataclass
class _Job(Generic[Req]):
    request: Req
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    submitted_at: float


class BatchWorkerPool(Generic[Req, Res]):
    """``threads`` workers running ``process(state, requests) -> results`` on batches."""

    def __init__(
        self,
        name: str,
        process: Callable[[Any, Sequence[Req]], Sequence[Res]],
        *,
        threads: int = 1,
        max_batch: int = 1,
        max_pending: int = 64,
        init: Callable[[], Any] | None = None,
        teardown: Callable[[Any], None] | None = None,
        nice: int = 0,
    ) -> None:
        if threads < 1 or max_batch < 1 or max_pending < 1:
            raise ValueError("threads, max_batch and max_pending must be >= 1")
        self.name = name
        self._process = process
        self._init = init
        self._teardown = teardown
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._in_flight = 0
        # (start, end) of recent batches, for the busy fraction; bounded like everything else.
        self._recent: deque[tuple[float, float]] = deque(maxlen=RECENT_BATCHES)
        self._lock = threading.Lock()
        self._closed = False
        self.stats = PoolStats()
        self.nice = nice
        # The nice value each thread ended up with (None: unchanged), for telemetry and tests.
        self.thread_nice: dict[str, int | None] = {}
        self._ready = threading.Barrier(threads + 1)
        self._init_errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()
        self._ready.wait()
        if self._init_errors:
            self.close()
            raise RuntimeError(f"{name} pool failed to start: {self._init_errors[0]}") from self._init_errors[0]

    @property
    def depth(self) -> int:
        """Requests waiting plus requests running."""
        return self._pending + self._in_flight

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, request: Req) -> asyncio.Future[Res]:
        """Queue one request from the event loop; the future resolves on the loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise PoolClosed(self.name)
            if self._pending >= self.max_pending:
                self.stats.rejected += 1
                raise PoolFull(f"{self.name}: {self._pending} requests pending")
            self._pending += 1
            self.stats.submitted += 1
        fut: asyncio.Future[Res] = loop.create_future()
        self._queue.put(_Job(request, fut, loop, time.perf_counter()))
        return fut

    def submit_many(self, requests: Sequence[Req]) -> list[asyncio.Future[Res]]:
        """Queue requests that must run together (one batch, split only at ``max_batch``).

        All or nothing: when they do not all fit under ``max_pending``, none is queued.
        """
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        n = len(requests)
        with self._lock:
            if self._closed:
                raise PoolClosed(self.name)
            if self._pending + n > self.max_pending:
                self.stats.rejected += n
                raise PoolFull(f"{self.name}: {self._pending} requests pending, {n} more do not fit")
            self._pending += n
            self.stats.submitted += n
        now = time.perf_counter()
        jobs = [_Job(r, loop.create_future(), loop, now) for r in requests]
        self._queue.put(jobs)
        return [job.future for job in jobs]

    def busy_fraction(self, window_s: float = BUSY_WINDOW_S) -> float:
        """Share of the last ``window_s`` its threads spent computing (1.0 = every thread saturated)."""
        now = time.perf_counter()
        since = now - window_s
        with self._lock:
            spans = list(self._recent)
        busy = sum(max(0.0, min(t1, now) - max(t0, since)) for t0, t1 in spans if t1 > since)
        return round(min(1.0, busy / (window_s * max(1, len(self._threads)))), 3)

    def snapshot(self) -> dict[str, Any]:
        """Depth and counters, for telemetry."""
        busy = self.busy_fraction()
        with self._lock:
            out = self.stats.to_dict()
            out["busyFraction"] = busy
            out.update(
                {
                    "threads": len(self._threads),
                    "nice": max((n for n in self.thread_nice.values() if n is not None), default=None),
                    "maxBatch": self.max_batch,
                    "maxPending": self.max_pending,
                    "pending": self._pending,
                    "inFlight": self._in_flight,
                }
            )
        return out

    def run_sync(self, requests: Sequence[Req]) -> Sequence[Res]:
        """Run a batch on the caller's thread with a fresh state (replay, tests, benchmarks)."""
        state = self._init() if self._init else None
        try:
            return self._process(state, requests)
        finally:
            if self._teardown:
                self._teardown(state)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)

    # -- worker side ---------------------------------------------------------------------------

    def _run(self) -> None:
        state: Any = None
        # Before init, so that the threads init starts (MediaPipe's, torch's) inherit the priority
        # and the name (which is how bot.pipeline.cpu tells whose CPU they spend).
        self.thread_nice[threading.current_thread().name] = lower_thread_priority(self.nice)
        name_native_thread(threading.current_thread().name)
        try:
            state = self._init() if self._init else None
        except BaseException as exc:  # reported to the constructor
            self._init_errors.append(exc)
        self._ready.wait()
        if self._init_errors:
            return
        # Jobs of a submit_many group that did not fit in the previous batch run first.
        carry: list[_Job[Req]] = []
        try:
            while True:
                if carry:
                    batch, carry = carry[: self.max_batch], carry[self.max_batch :]
                else:
                    first = self._queue.get()
                    if first is _STOP:
                        return
                    items = first if isinstance(first, list) else [first]
                    batch, carry = items[: self.max_batch], items[self.max_batch :]
                stop = False
                while len(batch) < self.max_batch and not carry:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    items = nxt if isinstance(nxt, list) else [nxt]
                    room = self.max_batch - len(batch)
                    batch.extend(items[:room])
                    carry = items[room:]
                self._run_batch(state, batch)
                if stop:
                    # Work queued before close still runs; its futures must not hang.
                    while carry:
                        batch, carry = carry[: self.max_batch], carry[self.max_batch :]
                        self._run_batch(state, batch)
                    return
        finally:
            if self._teardown is not None and state is not None:
                try:
                    self._teardown(state)
                except Exception:
                    log.exception("%s: teardown failed", self.name)

    def _run_batch(self, state: Any, batch: list[_Job[Req]]) -> None:
        with self._lock:
            self._pending -= len(batch)
            self._in_flight += len(batch)
        live = [job for job in batch if not job.future.cancelled()]
        t0 = time.perf_counter()
        c0 = thread_cpu_time()
        waited = [t0 - job.submitted_at for job in live]
        try:
            results: Sequence[Any] = self._process(state, [job.request for job in live]) if live else []
            if len(results) != len(live):
                raise RuntimeError(f"{self.name}: {len(live)} requests gave {len(results)} results")
            error: BaseException | None = None
        except Exception as exc:
            log.exception("%s: batch of %d failed", self.name, len(live))
            results, error = [], exc
        t1 = time.perf_counter()
        elapsed = t1 - t0
        # CPU time of this thread (and of a child process computing for it): what the stage costs,
        # whatever else competes for the cores.
        cpu = thread_cpu_time() - c0
        with self._lock:
            self._in_flight -= len(batch)
            self.stats.batches += 1
            self.stats.busy_s += elapsed
            self.stats.cpu_s += cpu
            self._recent.append((t0, t1))
            if waited:
                self.stats.wait_s += sum(waited)
                self.stats.max_wait_s = max(self.stats.max_wait_s, max(waited))
            self.stats.batch_sizes[len(live)] = self.stats.batch_sizes.get(len(live), 0) + 1
            if error is None:
                self.stats.completed += len(live)
            else:
                self.stats.failed += len(live)
        for i, job in enumerate(live):
            if error is None:
                job.loop.call_soon_threadsafe(_resolve, job.future, results[i], None)
            else:
                job.loop.call_soon_threadsafe(_resolve, job.future, None, error)


def _resolve(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


def chain_future(src: asyncio.Future[Any], dst: asyncio.Future[Any]) -> None:
    """Copy ``src``'s outcome (result, exception or cancellation) into ``dst`` unless ``dst`` is done.

    Used as a done callback, to hand a pool's future to whoever waits on a batch or a chunk.
    """
    if dst.done():
        return
    if src.cancelled():
        dst.cancel()
    elif src.exception() is not None:
        dst.set_exception(src.exception())  # type: ignore[arg-type]
    else:
        dst.set_result(src.result())

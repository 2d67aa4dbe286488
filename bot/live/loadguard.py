"""Keeping the asyncio loop responsive under overload: loop-lag measurement and compute priority.

Why this exists. The loop thread runs everything that keeps the meeting connected: aiortc's RTP and
RTCP, DTLS, and aioice's consent-freshness checks (RFC 7675), which expect a STUN answer within
0.5 s (no retransmission) and close the connection after six failures in a row. Above capacity
the compute threads (face, audio, inference, and the threads MediaPipe and torch start from them)
want more CPU than two cores have; at the same OS priority they share it evenly with the loop,
and the loop also waits for the GIL every time it comes back from ``select()`` or a socket call.
The loop then falls behind its sockets, consent answers come late, and peers are closed
(docs/engine.md, "Overload that stays connected").

What the engine does about it, from here:

* its pools lower their threads' OS priority (:func:`bot.pipeline.pools.lower_thread_priority`,
  ``COMPUTE_NICE``): above capacity, compute gets what the loop leaves, instead of the loop
  getting what compute leaves; below capacity nothing changes (an idle core runs a niced thread
  as fast as any other);
* :func:`shorten_gil_switch_interval`: the loop waits at most 1 ms, not 5, for the GIL after each
  call that released it;
* :class:`LoopLagMonitor` measures how late the loop wakes a timer; the engine treats a lagging
  loop as overload like a late step, so the throttle lowers the sampling rate for everyone;
* :func:`udp_receive_backlog` shows what timer lag misses, the sockets' unread bytes and drops,
  on /stats and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Nice value the engine's pools add to their threads (0 = the loop's priority, 19 = the lowest).
COMPUTE_NICE = 10
# The loop counts as lagging when a timer fired this much late within the last LAG_SPAN_S.
LOOP_LAG_LIMIT_S = 0.1
LAG_SPAN_S = 1.0
# How often the monitor wakes, and how long a history /stats sees.
LAG_PERIOD_S = 0.05
LAG_WINDOW_S = 5.0
# The GIL hand-off interval: a thread that wants the GIL waits at most this long for a running
# Python thread to drop it. CPython's default, 5 ms, is paid by the loop on every wake-up.
SWITCH_INTERVAL_S = 0.001


def shorten_gil_switch_interval(interval_s: float = SWITCH_INTERVAL_S) -> float:
    """Make a running Python thread hand the GIL over sooner; returns the previous interval.

    Process-wide, and only ever shortened: the loop thread wakes hundreds of times a second (every
    UDP datagram, every timer) and each wake-up waits for the GIL up to this interval while a
    compute thread runs Python code.
    """
    previous = sys.getswitchinterval()
    if interval_s < previous:
        sys.setswitchinterval(interval_s)
    return previous


class LoopLagMonitor:
    """How late the asyncio loop runs a timer, sampled every ``period_s``.

    ``record`` is the measurement (tests call it with made-up lags); ``lag`` is the largest lag
    within the last ``span_s``, which the engine compares with its limit; ``snapshot`` is for
    /stats. Times are on ``clock`` (the engine's monotonic clock).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        period_s: float = LAG_PERIOD_S,
        span_s: float = LAG_SPAN_S,
        window_s: float = LAG_WINDOW_S,
        limit_s: float = LOOP_LAG_LIMIT_S,
    ) -> None:
        self.clock = clock
        self.period_s = period_s
        self.span_s = span_s
        self.window_s = window_s
        self.limit_s = limit_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=max(16, int(4 * window_s / period_s)))
        self.max_lag_s = 0.0
        self.lagging_samples = 0
        self._task: asyncio.Task[None] | None = None

    def record(self, lag_s: float, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        lag_s = max(0.0, lag_s)
        self._samples.append((now, lag_s))
        self.max_lag_s = max(self.max_lag_s, lag_s)
        if lag_s > self.limit_s:
            self.lagging_samples += 1

    def lag(self, now: float | None = None) -> float:
        """The largest lag recorded within the last ``span_s``."""
        now = self.clock() if now is None else now
        return max((lag for t, lag in self._samples if now - t <= self.span_s), default=0.0)

    def lagging(self, now: float | None = None) -> bool:
        return self.lag(now) > self.limit_s

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = self.clock() if now is None else now
        recent = sorted(lag for t, lag in self._samples if now - t <= self.window_s)
        p95 = recent[min(len(recent) - 1, int(0.95 * len(recent)))] if recent else 0.0
        return {
            "lagMs": round(1000 * self.lag(now), 1),
            "p95Ms": round(1000 * p95, 1),
            "windowMaxMs": round(1000 * (recent[-1] if recent else 0.0), 1),
            "maxMs": round(1000 * self.max_lag_s, 1),
            "limitMs": round(1000 * self.limit_s, 1),
            "lagging": self.lag(now) > self.limit_s,
            "laggingSamples": self.lagging_samples,
        }

    async def run(self) -> None:
        """Sleep ``period_s`` over and over; how much later than asked the loop woke is the lag."""
        while True:
            t0 = self.clock()
            await asyncio.sleep(self.period_s)
            self.record(self.clock() - t0 - self.period_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def udp_receive_backlog(pid: int | None = None) -> dict[str, int] | None:
    """What this process's UDP sockets hold unread, and how many datagrams the kernel dropped for
    them because they were full (Linux: ``/proc/<pid>/net/udp{,6}``, matched by socket inode).

    This is the overload signal that timer lag misses: asyncio reads one datagram per socket per
    loop turn, so a loop that still runs its timers on time can fall seconds behind its sockets,
    and an ICE consent answer queued behind media arrives too late (or is dropped). Read at
    scrape time only; None where there is no ``/proc``.
    """
    base = f"/proc/{pid or 'self'}"
    try:
        inodes = set()
        for fd in os.listdir(f"{base}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"{base}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    except OSError:
        return None
    out = {"sockets": 0, "queuedBytes": 0, "maxQueuedBytes": 0, "drops": 0}
    for table in ("udp", "udp6"):
        try:
            with open(f"{base}/net/{table}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 13 or cols[9] not in inodes:
                continue
            queued = int(cols[4].split(":")[1], 16)
            out["sockets"] += 1
            out["queuedBytes"] += queued
            out["maxQueuedBytes"] = max(out["maxQueuedBytes"], queued)
            out["drops"] += int(cols[12])
    return out

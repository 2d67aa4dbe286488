"""Drain on real processes: SIGTERM a worker that runs meetings.

It stops claiming, hands its meetings back to the queue and stays in each until the next worker's
bot has taken it over; the participants' results never pause longer than the failover bound, no
room ever holds two bots, and the worker exits cleanly.
"""

from __future__ import annotations

import itertools
import signal
import time

import pytest
from cluster_env import Cluster

pytestmark = pytest.mark.timeout(600)

FAILOVER_BOUND_S = 10.0


def max_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch without a result within [start, end]."""
    inside = [t for t in times if start <= t <= end]
    points = [start, *inside, end]
    return max(b - a for a, b in itertools.pairwise(points))


async def test_sigterm_hands_meetings_over_without_a_long_gap(cluster: Cluster) -> None:
    workers, before, rooms, victim, moved = await cluster.run_meetings(2, min_results=3)

    workers[victim].proc.send_signal(signal.SIGTERM)
    term_at = time.time()
    rc = await workers[victim].proc.wait()
    exited_at = time.time()
    assert rc == 0, workers[victim].tail()
    assert "draining" in workers[victim].tail()

    for i in moved:
        v = await cluster.job(i)
        assert v["state"] == "running" and v["worker"] not in (None, victim), (v, cluster.logs())
        assert v["failovers"] == before[i]["failovers"], "a hand-off is not a failover"
    # The worker left only after the others took over: it exited well before its grace period.
    assert exited_at - term_at < 20.0
    # Results kept coming: no gap longer than the failover bound for anyone, across the hand-off.
    settle = time.time() + 8.0
    await cluster.wait_for(lambda: time.time() > settle, 20, "results after the hand-off")
    for i in moved:
        times = cluster.participants[rooms[i]].result_times()
        gap = max_gap(times, term_at - 1.0, settle)
        print(f"job {i}: longest result gap across the hand-off {gap:.2f} s")
        assert gap <= FAILOVER_BOUND_S, (i, gap)
    for room in rooms.values():
        assert cluster.bots_in(room) == 1
    assert cluster.max_bots_seen() == 1, "a room held two bots at once"

"""Scheduling on real processes: three workers, six meetings with a streaming participant each.

The jobs spread across the workers, no worker ever runs more than its capacity (a seventh job waits
in the queue until a slot frees), every participant gets results, and ``dispatch status`` shows it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import pytest
from cluster_env import RUN_WORKER, Cluster

pytestmark = pytest.mark.timeout(600)


async def test_six_meetings_spread_over_three_workers_within_capacity(cluster: Cluster) -> None:
    await cluster.start_dispatcher()
    workers = [await cluster.start_worker(f"w{i}", 2) for i in range(3)]
    await cluster.wait_ready(*workers)
    meetings = [await cluster.meeting(f"m{i}", clip=i) for i in range(6)]
    ids = [await cluster.submit(room, token) for room, token in meetings]

    peak: Counter[str] = Counter()

    async def all_running() -> bool:
        views = [await cluster.job(i) for i in ids]
        for worker, n in Counter(v["worker"] for v in views if v["worker"]).items():
            peak[worker] = max(peak[worker], n)
        return all(v["state"] == "running" for v in views)

    await cluster.wait_async(all_running, 90, "all six jobs to run")
    views = [await cluster.job(i) for i in ids]
    per_worker = Counter(v["worker"] for v in views)
    assert per_worker == {"w0": 2, "w1": 2, "w2": 2}, per_worker
    assert max(peak.values()) <= 2, peak
    for v in views:
        assert v["since"] is not None and v["lastHeartbeat"] is not None and v["meeting"]["room"]
        assert "token" not in json.dumps(v)

    # Every participant gets results from its meeting's bot.
    await cluster.wait_for(
        lambda: all(len(p.result_times()) > 0 for p in cluster.participants.values()), 90, "results for everyone"
    )
    for room, _ in meetings:
        assert cluster.bots_in(room) == 1

    # Full: a seventh meeting waits in the queue rather than overloading a worker.
    room7, token7 = await cluster.meeting("m6", clip=0)
    id7 = await cluster.submit(room7, token7)
    await asyncio.sleep(4.0)
    assert (await cluster.job(id7))["state"] == "queued"
    status = await asyncio.create_subprocess_exec(
        sys.executable,
        str(RUN_WORKER),
        "dispatch",
        "status",
        "--redis",
        cluster.redis.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out = (await status.communicate())[0].decode()
    assert status.returncode == 0, out
    assert "queue: 1 waiting" in out, out
    for name in ("w0", "w1", "w2"):
        assert f"{name} " in out and "2/2" in out, out
    metrics = await cluster.text("/metrics")
    assert "hoovik_cluster_queue_depth 1.0" in metrics
    assert 'hoovik_cluster_worker_jobs{worker="w0"} 2.0' in metrics
    assert (
        "hoovik_cluster_claim_latency_p50_seconds" in metrics
        and "hoovik_cluster_worker_heartbeat_age_seconds" in metrics
    )

    # DELETE one job: its worker leaves, and the queued job takes the freed slot.
    code, body = await cluster.delete(ids[0])
    assert code == 202, body
    freed = views[0]["worker"]

    async def moved() -> bool:
        return (await cluster.job(ids[0]))["state"] == "exited" and (await cluster.job(id7))["state"] == "running"

    await cluster.wait_async(moved, 30, "the stopped job to end and the queued one to run")
    assert (await cluster.job(id7))["worker"] == freed
    assert (await cluster.job(ids[0]))["reason"] == "stopped by request"
    await cluster.wait_for(lambda: cluster.bots_in(meetings[0][0]) == 0, 10, "the stopped bot to leave")

"""Redis restarts under a running cluster: SIGKILL ``redis-server``, start it again on the same
port and folder (AOF, ``appendfsync always``).

While Redis is down the meetings go on (workers keep their bots; the dispatcher answers 503). Once
it is back, workers and dispatcher reconnect on their own, every job is still there and still
running, heartbeats resume, and a job submitted afterwards is claimed as usual.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from cluster_env import Cluster

pytestmark = pytest.mark.timeout(600)


async def test_redis_restart_loses_no_job(cluster: Cluster) -> None:
    await cluster.start_dispatcher()
    workers = [await cluster.start_worker(f"w{i}", 2) for i in range(2)]
    await cluster.wait_ready(*workers)
    meetings = [await cluster.meeting(f"m{i}", clip=i) for i in range(2)]
    ids = [await cluster.submit(room, token) for room, token in meetings]
    cluster.start_bot_sampler()

    async def running(job_ids: list[str]) -> bool:
        states = [(await cluster.job(i))["state"] for i in job_ids]
        return all(s == "running" for s in states)

    await cluster.wait_async(lambda: running(ids), 90, "all jobs to run")
    await cluster.wait_for(
        lambda: all(len(p.result_times()) > 0 for p in cluster.participants.values()), 90, "first results"
    )

    before = {i: await cluster.job(i) for i in ids}
    cluster.redis.kill()
    down_at = time.time()
    status, body = await cluster.post({"signaling": cluster.server.ws_url, "room": "r", "token": "t"})
    assert status == 503 and body["error"] == "redis_unavailable", body
    await asyncio.sleep(4.0)  # longer than a lease: every lease expires while Redis is away
    cluster.redis.start()

    # Everything comes back: the jobs, their workers, the heartbeats.
    await cluster.wait_async(lambda: running(ids), 30, "the jobs to be running after the restart")
    for room, _ in meetings:
        assert cluster.bots_in(room) == 1
    for i in ids:  # the owners renewed first: no job moved, nothing failed over
        after = await cluster.job(i)
        assert after["worker"] == before[i]["worker"] and after["fence"] == before[i]["fence"], (after, before[i])
    await cluster.wait_for(
        lambda: all(any(t > down_at + 4.0 for t in p.result_times()) for p in cluster.participants.values()),
        30,
        "results after the restart",
    )

    async def workers_back() -> bool:
        snap = await cluster.text("/status")
        return '"id": "w0"' in snap.replace('":"', '": "') and '"id": "w1"' in snap.replace('":"', '": "')

    await cluster.wait_async(workers_back, 30, "both workers' heartbeats")
    room3, token3 = await cluster.meeting("m3", clip=2)
    new_id = await cluster.submit(room3, token3)
    await cluster.wait_async(lambda: running([new_id]), 60, "a job submitted after the restart to run")
    assert cluster.max_bots_seen() == 1
    for w in workers:
        assert w.alive, w.tail()

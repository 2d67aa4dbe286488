"""The lease and fencing rules on a real Redis, step by step (no processes, no media): a worker that
lost its job can no longer change it, a live worker keeps its entry fresh, and a dead worker's
entry is taken over with XAUTOCLAIM once idle."""

from __future__ import annotations

import asyncio

from cluster_env import RedisServer

from bot.cluster.jobs import JobSpec
from bot.cluster.store import Claim, Lease, Store, connect

SPEC = JobSpec(signaling="ws://127.0.0.1:1/ws", room="r1", token="t")


async def test_fencing_leases_and_autoclaim(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t:")
    try:
        await store.ensure_group()
        created, job_id = await store.submit(SPEC)
        assert created
        assert await store.submit(SPEC) == (False, job_id)  # one active job per meeting

        [claim] = await store.read_new("a", 1, 100)
        assert claim.job_id == job_id
        fence_a, failover = await store.acquire(claim, "a", 300, 5)
        assert (fence_a, failover) == (1, "0")
        a = Lease(job_id, "a", fence_a, claim.entry)
        # Someone else holding the entry cannot take the job while A's lease lives.
        assert (await store.acquire(Claim(claim.entry, job_id), "b", 300, 5))[0] == 0
        assert await store.renew(a, 300, 1) == (True, False)

        # A goes quiet: its lease expires and its entry goes idle; B takes both over.
        await asyncio.sleep(0.5)
        _, claims = await store.autoclaim("b", 400, 10)
        assert [c.job_id for c in claims] == [job_id]
        fence_b, failover = await store.acquire(claims[0], "b", 5000, 5)
        assert (fence_b, failover) == (2, "1")
        b = Lease(job_id, "b", fence_b, claims[0].entry)

        # A's writes are fenced off; B's go through.
        assert await store.renew(a, 300, 1) == (False, False)
        assert not await store.update(a, state="running")
        assert not await store.finish(job_id, a.fence, "exited", "stale", a.entry)
        assert await store.requeue(a, "stale", handoff=False) == ""
        assert await store.update(b, state="running")
        job = await store.job(job_id)
        assert job is not None and job["worker"] == "b" and job["failovers"] == "1" and job["state"] == "running"

        # A live owner's renewals keep the entry fresh: nobody can autoclaim it.
        for _ in range(3):
            await asyncio.sleep(0.2)
            assert (await store.renew(b, 5000, 2))[0]
        assert (await store.autoclaim("c", 400, 10))[1] == []

        # DELETE of a running job: the owner learns it on its next renewal.
        assert await store.request_stop(job_id) == "stopping"
        assert await store.renew(b, 5000, 2) == (True, True)
        assert await store.finish(job_id, b.fence, "exited", "stopped by request", b.entry)
        assert (await store.queue_stats())["pending"] == 0
        assert await store.active_jobs() == []
        created, _ = await store.submit(SPEC)  # the meeting is free again
        assert created
    finally:
        await redis.aclose()


async def test_attempts_are_bounded(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t:")
    try:
        await store.ensure_group()
        _, job_id = await store.submit(SPEC)
        for attempt in range(1, 4):
            [claim] = await store.read_new("a", 1, 100)
            fence, _ = await store.acquire(claim, "a", 5000, 3)
            assert fence == attempt
            assert await store.requeue(Lease(job_id, "a", fence, claim.entry), "transient", handoff=False)
        [claim] = await store.read_new("a", 1, 100)
        assert await store.acquire(claim, "a", 5000, 3) == (-2, "attempts")
    finally:
        await redis.aclose()


async def test_dispatcher_api_token(redis_server: RedisServer) -> None:
    """With an API token, every call but /health needs ``Authorization: Bearer`` (jobs hold tokens)."""
    from aiohttp.test_utils import TestClient, TestServer

    from bot.cluster.dispatcher import create_dispatcher_app

    redis = connect(redis_server.url)
    client = TestClient(TestServer(create_dispatcher_app(Store(redis, "t:"), "s3cret")))
    await client.start_server()
    try:
        body = {"signaling": "ws://127.0.0.1:1/ws", "room": "r1", "token": "t"}
        assert (await client.post("/bots", json=body)).status == 401
        assert (await client.get("/status")).status == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer nope"})).status == 401
        assert (await client.get("/health")).status == 200
        resp = await client.post("/bots", json=body, headers={"Authorization": "Bearer s3cret"})
        assert resp.status == 202, await resp.text()
        job_id = (await resp.json())["id"]
        resp = await client.get(f"/bots/{job_id}", headers={"Authorization": "Bearer s3cret"})
        view = await resp.json()
        assert view["state"] == "queued" and view["meeting"]["room"] == "r1" and "token" not in view["meeting"]
    finally:
        await client.close()
        await redis.aclose()

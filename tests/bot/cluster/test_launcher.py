"""``hoovik-bot serve --redis``: the web app's "Add the bot" goes through the cluster.

A real signaling server built with :func:`bot.cluster.launcher.redis_launcher_factory` answers
``POST /rooms/{room}/bot`` by queueing a job; a worker process claims it and its bot joins the room;
``GET`` follows the job (starting → joined) and ``DELETE`` makes the worker leave.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from cluster_env import Cluster

from bot.cluster.launcher import redis_launcher_factory
from signaling.server import SignalingServer

pytestmark = pytest.mark.timeout(600)


async def test_add_the_bot_queues_a_cluster_job(cluster: Cluster) -> None:
    await cluster.server.stop()
    cluster.server = SignalingServer(secrets.token_bytes(32), bot_launcher=redis_launcher_factory(cluster.redis.url))
    await cluster.server.start("127.0.0.1", 0)
    await cluster.start_dispatcher()
    worker = await cluster.start_worker("w0", 2)
    room, _ = await cluster.meeting("web")
    host = cluster.host_tokens[room]
    assert cluster.http is not None
    url = f"{cluster.server.url}/rooms/{room}/bot"
    headers = {"Authorization": f"Bearer {host}"}

    async def call(method: str) -> tuple[int, dict[str, Any]]:
        assert cluster.http is not None
        async with cluster.http.request(method, url, headers=headers) as resp:
            return resp.status, await resp.json()

    status, body = await call("POST")
    assert status == 202 and body["state"] == "starting" and body["launched"], body
    job_id = body["jobId"]
    status, again = await call("POST")
    assert status == 409 and again["error"] == "bot_running", again

    await cluster.wait_ready(worker)

    async def joined() -> bool:
        return (await call("GET"))[1]["state"] == "joined"

    await cluster.wait_async(joined, 60, "the cluster's bot to join")
    assert cluster.bots_in(room) == 1
    view = await cluster.job(job_id)
    assert view["state"] == "running" and view["worker"] == "w0" and view["meeting"]["room"] == room
    await cluster.wait_for(lambda: len(cluster.participants[room].result_times()) > 0, 60, "results")

    status, body = await call("DELETE")
    assert status == 200 and body["state"] in ("stopping", "exited"), body

    async def exited() -> bool:
        return (await call("GET"))[1]["state"] == "exited"

    await cluster.wait_async(exited, 30, "the bot to leave")
    assert cluster.bots_in(room) == 0
    assert (await cluster.job(job_id))["reason"] == "stopped by request"


async def test_serve_with_redis_queues_the_job_from_the_cli(cluster: Cluster) -> None:
    """``hoovik-bot serve --redis URL`` (the real command line) hands "Add the bot" to the cluster."""
    import asyncio
    import subprocess
    import sys

    from cluster_env import free_port

    from signaling.client import create_room

    port = free_port()
    cmd = [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    both = await asyncio.create_subprocess_exec(
        *cmd, "--redis", cluster.redis.url, "--bot-command", "hoovik-bot join", stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(both.communicate(), 60)
    assert both.returncode != 0 and b"give --redis or --bot-command, not both" in err

    log = cluster.folder / "serve.log"
    with log.open("wb") as fh:
        proc = await asyncio.create_subprocess_exec(
            *cmd, "--redis", cluster.redis.url, stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        await cluster.wait_for(lambda: "queues a job" in log.read_text(), 60, "serve --redis to start")
        room, host = await create_room(url, "cli")
        assert cluster.http is not None
        async with cluster.http.post(f"{url}/rooms/{room}/bot", headers={"Authorization": f"Bearer {host}"}) as r:
            status, body = r.status, await r.json()
        assert status == 202 and body["state"] == "starting" and body["jobId"], body
        await cluster.start_dispatcher()
        view = await cluster.job(body["jobId"])
        assert view["state"] == "queued" and view["meeting"]["room"] == room, view  # no worker runs here
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)

"""Bad input: malformed requests are refused with a 400 and the reason (nothing is queued); a
request for a meeting that does not exist, or with a token the server refuses, ends as ``failed``
with the reason after one attempt; an unreachable server is retried a bounded number of times."""

from __future__ import annotations

import asyncio

import pytest
from cluster_env import Cluster, free_port

pytestmark = pytest.mark.timeout(600)


async def test_malformed_requests_get_400_with_the_reason(cluster: Cluster) -> None:
    await cluster.start_dispatcher()
    ws = cluster.server.ws_url
    cases: list[tuple[object, str]] = [
        ([1, 2], "JSON object"),
        ({}, "say which meeting"),
        ({"signaling": ws, "room": "r1"}, "signaling, room and token"),
        ({"signaling": "ftp://x", "room": "r1", "token": "t"}, "signaling: expected"),
        ({"signaling": ws, "room": "bad room!", "token": "t"}, "room: not a room id"),
        ({"signaling": ws, "room": "r1", "token": "t", "hoovik": "http://h", "meeting": "ABC"}, "not both"),
        ({"hoovik": "http://h:1", "meeting": "no spaces!"}, "meeting:"),
        ({"hoovik": "http://h:1"}, "hoovik and meeting"),
        ({"signaling": ws, "room": "r1", "token": "t", "maxParticipants": 0}, "maxParticipants"),
        ({"signaling": ws, "room": "r1", "token": "t", "participantId": "a b"}, "participantId"),
        ({"signaling": ws, "room": "r1", "token": "t", "colour": "red"}, "unknown field(s): colour"),
        ({"signaling": ws, "room": "r1", "token": 5}, "token: expected a non-empty string"),
    ]
    for body, reason in cases:
        status, answer = await cluster.post(body)
        assert status == 400, (body, answer)
        assert answer["error"] == "bad_request" and reason in answer["message"], (body, answer)
    status, answer = await cluster.post_raw(b"{not json")
    assert status == 400 and "not JSON" in answer["message"]
    status, answer = await cluster.post_raw(b"x" * (70 * 1024))
    assert status == 413, answer
    assert "hoovik_cluster_queue_depth 0.0" in await cluster.text("/metrics")
    assert '"jobs": []' in (await cluster.text("/status")).replace('":[', '": [')
    assert cluster.http is not None
    async with cluster.http.get(f"{cluster.dispatcher_url}/bots/nope") as resp:
        assert resp.status == 404


async def test_meetings_that_cannot_be_joined_fail_with_the_reason_and_are_not_retried_forever(
    cluster: Cluster,
) -> None:
    await cluster.start_dispatcher()
    # A queued job can be cancelled before any worker exists.
    room, token = await cluster.meeting("m0")
    first = await cluster.submit(room, token)
    status, body = await cluster.post({"signaling": cluster.server.ws_url, "room": room, "token": token})
    assert status == 409 and body["id"] == first, body  # one active job per meeting
    status, body = await cluster.delete(first)
    assert status == 202 and body["state"] == "exited", body

    worker = await cluster.start_worker("w0", 4, "--give-up-s", "1", "--max-attempts", "2")
    await cluster.wait_ready(worker)
    ws = cluster.server.ws_url
    # A valid bot token for a room that does not exist (a meeting that ended, say).
    gone = await cluster.submit("no-such-room", cluster.server.hub.mint_bot_token("no-such-room", 600))
    status, answer = await cluster.post({"signaling": ws, "room": room, "token": "forged.token.value"})
    assert status == 202
    forged = answer["id"]
    dead_port = free_port()
    dead = f"ws://127.0.0.1:{dead_port}/ws"
    status, answer = await cluster.post({"signaling": dead, "room": room, "token": token})
    assert status == 202
    unreachable = answer["id"]

    async def ended() -> bool:
        states = [(await cluster.job(i))["state"] for i in (gone, forged, unreachable)]
        return all(s in ("exited", "failed") for s in states)

    await cluster.wait_async(ended, 120, "the three jobs to end")
    v = await cluster.job(gone)
    assert v["state"] == "failed" and "room_not_found" in v["reason"] and v["attempts"] == 1, v
    v = await cluster.job(forged)
    assert v["state"] == "failed" and "token_" in v["reason"] and v["attempts"] == 1, v
    v = await cluster.job(unreachable)
    assert v["state"] == "failed" and "gave up after 2 attempts" in v["reason"], v
    assert "unreachable" in v["reason"], v
    await asyncio.sleep(3.0)  # and they stay failed: nothing picks them up again
    for i in (gone, forged, unreachable):
        assert (await cluster.job(i))["state"] == "failed"
    assert worker.alive

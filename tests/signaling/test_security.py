"""The security probe's findings, each reproduced against a real server on 127.0.0.1 (docs/security.md).

1. one invitee's message flood must not disconnect anyone else;
2. a shared invite link must not let one invitee evict another;
3. the bot's id is reserved for bot tokens;
4. room creation and bot launches are rate limited per address; a room key can be required;
5. slowloris: connections are capped per address and must send their headers in time;
6. a peer can tell an offerer that its offer was rejected, and why.

No test asserts a duration; waits are "until X", bounded only so that a bug fails instead of hanging.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from signaling.base import (
    Event,
    JoinRejected,
    MediaState,
    PeerJoined,
    PeerLeft,
    RemoteCandidate,
    RemoteOffer,
    SignalingError,
)
from signaling.client import SignalingClient, SignalingHTTPError, create_room

from .conftest import WAIT_S, wait_until

CAND = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}


class Watcher:
    """Consumes one client's events in the background (as a real client would) and keeps them."""

    def __init__(self, events: Any, client: SignalingClient) -> None:
        self.client = client
        self.seen: list[Event] = []
        self._task = asyncio.create_task(self._run(events))

    async def _run(self, events: Any) -> None:
        with contextlib.suppress(TimeoutError, StopAsyncIteration):
            while True:
                self.seen.append(await events.next(self.client))

    async def fence(self, sender: SignalingClient, tag: str, allowed: Callable[[Event], bool]) -> None:
        """``sender`` offers us a marker; it must arrive, and everything before it must be ``allowed``."""
        sdp = f"v=0 fence {tag}"
        await sender.send_offer(self.client.self_id, sdp)
        await wait_until(lambda: RemoteOffer(sender.self_id, sdp) in self.seen)
        unexpected = [e for e in self.seen if not (allowed(e) or (isinstance(e, RemoteOffer) and "fence" in e.sdp))]
        assert not unexpected, unexpected[:5]

    def stop(self) -> None:
        self._task.cancel()


def from_mallory(event: Event) -> bool:
    match event:
        case MediaState(peer_id="mallory") | RemoteCandidate(peer_id="mallory") | PeerLeft("mallory"):
            return True
    return False


async def raw_member(http: aiohttp.ClientSession, room: Any, pid: str, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(room.server.ws_url)
    await ws.send_str(
        json.dumps({"type": "join", "room": room.id, "participantId": pid, "role": "participant", "token": token})
    )
    welcome = await ws.receive_json(timeout=WAIT_S)
    assert welcome["type"] == "welcome", welcome
    return ws


async def read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[dict[str, Any]], str]:
    """Every message the server sends until it closes the socket, and the close reason."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                got.append(json.loads(msg.data))
            else:
                return got, str(msg.extra or "")


# --- 1. floods ----------------------------------------------------------------------------------

MALLORY_JOINED = PeerJoined("mallory", "", "participant", False, False)
MEDIA = json.dumps({"type": "media", "mic": True, "camera": False})
TO_BOT = json.dumps({"type": "candidate", "to": "hoovik-bot", "candidate": CAND})


@pytest.mark.parametrize("limited", [True, False], ids=["rate_limit", "yield_only"])
@pytest.mark.parametrize(
    ("flood", "count"), [(MEDIA, 600), (TO_BOT, 2000), (MEDIA + TO_BOT, 1300)], ids=["media", "candidates", "both"]
)
async def test_a_flood_from_one_invitee_disconnects_nobody_else(
    make_server: Any,
    make_room: Any,
    join: Any,
    events: Any,
    http: aiohttp.ClientSession,
    limited: bool,
    flood: str,
    count: int,
) -> None:
    # With the rate limit off, this shows the cooperative reading alone protects the others.
    server = await make_server(**({} if limited else {"msg_rate_per_s": None}))
    stats = server.hub.stats
    room = await make_room(server)
    host = await join(room, "host", "host")
    bot = await join(room, "hoovik-bot", "bot")
    alice = await join(room, "alice", "participant")
    for client, joined in ((host, 2), (bot, 2), (alice, 2)):
        for _ in range(joined):
            await events.expect(client, PeerJoined)
    watchers = [Watcher(events, c) for c in (host, bot, alice)]
    mallory = await raw_member(http, room, "mallory", await room.invite("participant"))
    await wait_until(lambda: all(MALLORY_JOINED in w.seen for w in watchers))

    before = stats.messages_received
    frames = [MEDIA, TO_BOT] if flood == MEDIA + TO_BOT else [flood]
    total = count * len(frames)
    for _ in range(count):  # client and server share this loop: the frames pile up unread
        for frame in frames:
            await mallory.send_str(frame)
    await mallory.send_str(json.dumps({"type": "ping"}))
    # Until the server has read the whole flood, or cut the flooder off for it.
    await wait_until(lambda: stats.messages_received - before > total or stats.rate_limit_closed > 0)

    for watcher, sender in zip(watchers, (alice, host, host), strict=True):
        await watcher.fence(
            sender,
            "after the flood",
            lambda e: from_mallory(e) or e == MALLORY_JOINED,
        )
    assert stats.slow_consumers_closed == 0
    assert {"host", "hoovik-bot", "alice"} <= set(server.hub.member_ids(room.id))
    if "candidate" in flood:
        assert any(isinstance(e, RemoteCandidate) for e in watchers[1].seen)  # relayed, within limits
    if limited:
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(WAIT_S):
            while not any(m.get("code") == "rate_limited" for m in got):
                msg = await mallory.receive()
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                got.append(json.loads(msg.data))
        assert stats.messages_rate_limited > 0
    for w in watchers:
        w.stop()
    await mallory.close()


async def test_sustained_flooding_closes_only_the_flooder(
    make_server: Any, make_room: Any, join: Any, events: Any, http: aiohttp.ClientSession
) -> None:
    server = await make_server(msg_burst=50, msg_abuse_close_after=300)
    room = await make_room(server)
    alice = await join(room, "alice", "participant")
    mallory = await raw_member(http, room, "mallory", await room.invite("participant"))
    await events.expect(alice, PeerJoined)
    for _ in range(1000):
        await mallory.send_str(MEDIA)
    got, reason = await read_until_closed(mallory)
    assert reason == "rate_limited"
    assert [m["code"] for m in got if m["type"] == "error"][-1] == "rate_limited"
    assert server.hub.stats.rate_limit_closed == 1
    while (event := await events.next(alice)) != PeerLeft("mallory"):
        assert isinstance(event, MediaState), event
    bob = await join(room, "bob", "participant")
    await events.expect(alice, PeerJoined)
    await alice.send_offer("bob", "v=0 still here")
    assert await events.expect(bob, RemoteOffer, skip=(PeerJoined,)) == RemoteOffer("alice", "v=0 still here")


# --- 2. impersonation with a shared invite ------------------------------------------------------


async def test_a_shared_invite_cannot_evict_another_invitee(room: Any, join: Any, events: Any) -> None:
    host = await join(room, "host", "host")
    shared = await room.invite("participant")  # one link, pasted into the team chat
    alice = await join(room, "alice", "participant", token=shared)
    await events.expect(host, PeerJoined)
    await events.expect(alice, PeerJoined)
    assert alice.resume_key

    for key in (None, "x" * 32):
        with pytest.raises(JoinRejected) as err:
            await join(room, "alice", "participant", token=shared, resume_key=key)
        assert err.value.code == "id_taken"
    assert room.server.hub.stats.replaced_total == 0
    await host.send_offer("alice", "v=0 alice is still alice")
    assert await events.next(alice) == RemoteOffer("host", "v=0 alice is still alice")

    # Alice herself (a reload, a reconnect) presents her resume key and replaces her old socket.
    again = await join(room, "alice", "participant", token=shared, resume_key=alice.resume_key)
    assert (await events.next(alice)).code == "replaced"  # type: ignore[union-attr]
    assert again.resume_key and again.resume_key != alice.resume_key
    assert room.server.hub.stats.replaced_total == 1


async def test_hosts_still_replace_with_their_own_token(room: Any, join: Any, events: Any) -> None:
    old = await join(room, "host", "host")
    await join(room, "host", "host")  # hosts are trusted within their room: the host token suffices
    assert (await events.next(old)).code == "replaced"  # type: ignore[union-attr]


# --- 3. the bot's id ----------------------------------------------------------------------------


async def test_the_bot_id_is_reserved_for_bot_tokens(room: Any, join: Any, events: Any) -> None:
    bound = await room.invite("participant", participant_id="hoovik-bot")
    for role, token in (("participant", None), ("participant", bound), ("host", None)):
        with pytest.raises(JoinRejected) as err:
            await join(room, "hoovik-bot", role, token=token)
        assert err.value.code == "id_reserved"
    bot = await join(room, "hoovik-bot", "bot")
    assert bot.self_id == "hoovik-bot"
    # Any bot token of the room takes the id over (a restarted bot process has a fresh token).
    await join(room, "hoovik-bot", "bot")
    assert (await events.next(bot)).code == "replaced"  # type: ignore[union-attr]


async def test_reserved_bot_ids_are_configurable(make_server: Any, make_room: Any, join: Any) -> None:
    server = await make_server(bot_ids=frozenset({"hoovik"}))
    room = await make_room(server)
    with pytest.raises(JoinRejected) as err:
        await join(room, "hoovik", "participant")
    assert err.value.code == "id_reserved"
    await join(room, "hoovik-bot", "participant")  # no longer reserved on this server


# --- 4. room creation and bot launches ----------------------------------------------------------


async def test_room_creation_is_rate_limited_per_address(make_server: Any, http: aiohttp.ClientSession) -> None:
    server = await make_server(rooms_burst_per_ip=5, rooms_per_ip_per_s=0.001)
    for _ in range(5):
        await create_room(server.url, "ok")
    async with http.post(f"{server.url}/rooms", json={}) as resp:
        assert resp.status == 429
        assert (await resp.json())["error"] == "rate_limited"
        assert int(resp.headers["Retry-After"]) >= 1
    assert server.hub.room_count == 5
    assert server.hub.stats.http_rate_limited == 1
    async with http.get(f"{server.url}/health") as resp:
        assert resp.status == 200  # other endpoints are not affected


async def test_bot_launches_are_rate_limited_per_address(room: Any, http: aiohttp.ClientSession) -> None:
    auth = {"Authorization": f"Bearer {room.host_token}"}
    statuses = []
    for _ in range(6):
        async with http.post(f"{room.server.url}/rooms/{room.id}/bot", headers=auth) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                assert int(resp.headers["Retry-After"]) >= 1
    # No launcher is configured (501), but the limit is checked first: 5 at once per address.
    assert statuses == [501] * 5 + [429]


async def test_room_key_is_required_when_configured(make_server: Any) -> None:
    server = await make_server(create_room_key="k-0123456789")
    for key in (None, "wrong"):
        with pytest.raises(SignalingHTTPError) as err:
            await create_room(server.url, "x", room_key=key)
        assert err.value.status == 401
    room_id, _ = await create_room(server.url, "x", room_key="k-0123456789")
    assert server.hub.room_exists(room_id)


def test_serve_takes_a_room_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.cli import serve_config  # only the serve handler's helper: no models are imported

    monkeypatch.delenv("HOOVIK_ROOM_KEY", raising=False)
    assert serve_config(argparse.Namespace(room_key="from-flag")).create_room_key == "from-flag"
    assert serve_config(argparse.Namespace(room_key=None)).create_room_key is None
    monkeypatch.setenv("HOOVIK_ROOM_KEY", "from-env")
    assert serve_config(argparse.Namespace(room_key=None)).create_room_key == "from-env"
    assert serve_config(argparse.Namespace(room_key="flag-wins")).create_room_key == "flag-wins"


# --- 5. slowloris -------------------------------------------------------------------------------


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(WAIT_S):
        return await reader.read()


async def test_slowloris_is_capped_per_address_and_timed_out(make_server: Any, make_room: Any, events: Any) -> None:
    server = await make_server(max_connections_per_ip=20, header_timeout_s=1.0)
    conns = []
    for _ in range(60):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        conns.append((reader, writer))

    # A client from another address is unaffected while the flooder's connections are held.
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        room_id, host_token = await create_room(server.url, "still works", session=other)
        client = await SignalingClient.connect(server.ws_url, room_id, host_token, "host", "", "host", session=other)
        assert client.self_id == "host"
        await client.close()

    answers = await asyncio.gather(*(_read_all(r) for r, _ in conns))
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 429")]
    timed_out = [a for a in answers if a == b""]
    assert (len(refused), len(timed_out)) == (40, 20), answers
    assert server.hub.stats.connections_refused == 40
    for _, writer in conns:
        writer.close()
    room_id, _ = await create_room(server.url, "and from the flooder's address again")  # slots are free
    assert server.hub.room_exists(room_id)


async def test_total_connection_cap(make_server: Any) -> None:
    server = await make_server(max_connections=5, header_timeout_s=1.0)
    conns = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(8)]
    answers = await asyncio.gather(*(_read_all(r) for r, _ in conns))
    assert sum(a.startswith(b"HTTP/1.1 503") for a in answers) == 3
    for _, writer in conns:
        writer.close()


async def test_a_trickled_body_times_out(make_server: Any) -> None:
    server = await make_server(body_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /rooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    async with asyncio.timeout(WAIT_S):
        status = await reader.readline()
    assert status.startswith(b"HTTP/1.1 408"), status
    writer.close()
    assert server.hub.room_count == 0


# --- 6. offer rejected --------------------------------------------------------------------------


async def test_the_offerer_is_told_when_its_offer_is_rejected(
    room: Any, join: Any, events: Any, http: aiohttp.ClientSession
) -> None:
    bot = await join(room, "hoovik-bot", "bot")
    alice = await join(room, "alice", "participant")
    await events.expect(bot, PeerJoined)
    await events.expect(alice, PeerJoined)
    await alice.send_offer("hoovik-bot", "v=0 with a codec the bot cannot decode")
    assert isinstance(await events.next(bot), RemoteOffer)
    await bot.send_offer_rejected("alice", "no supported video codec (offered: AV1)")
    assert await events.next(alice) == SignalingError("offer_rejected", "no supported video codec (offered: AV1)")

    # On the wire it is an ``error`` that names who rejected it.
    raw = await raw_member(http, room, "carol", await room.invite("participant"))
    await bot.send_offer_rejected("carol", "busy")
    async with asyncio.timeout(WAIT_S):
        while (msg := await raw.receive_json())["type"] != "error":
            pass
    assert msg == {"type": "error", "code": "offer_rejected", "message": "busy", "from": "hoovik-bot"}
    await raw.close()

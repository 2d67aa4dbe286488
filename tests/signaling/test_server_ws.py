"""The WebSocket protocol against a real server: presence, relay, isolation, bad input, lifecycle."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from signaling.base import (
    Disconnected,
    JoinRejected,
    MediaState,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    RemoteAnswer,
    RemoteCandidate,
    RemoteOffer,
    ResultRelay,
    SignalingError,
)
from signaling.client import SignalingClient
from signaling.tokens import TokenSigner

SECRET = b"hoovik-test-secret-0123456789-padded-to-32+"  # the conftest's server secret
CAND = {
    "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


async def fence(events: Any, sender: SignalingClient, receiver: SignalingClient, tag: str) -> None:
    """Prove ``receiver`` got nothing else in between: its very next event is this marker offer."""
    await sender.send_offer(receiver.self_id, f"v=0 fence {tag}")
    event = await events.next(receiver)
    assert event == RemoteOffer(sender.self_id, f"v=0 fence {tag}"), event


async def raw_join(http: aiohttp.ClientSession, room: Any, message: dict[str, Any]) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(room.server.ws_url)
    await ws.send_str(json.dumps({"type": "join", "room": room.id, **message}))
    return ws


async def error_then_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[str, int | None, str]:
    """Read an ``error`` message followed by the close; return (code, close code, close reason)."""
    first = await ws.receive(timeout=10)
    assert first.type == aiohttp.WSMsgType.TEXT, first
    body = json.loads(first.data)
    assert body["type"] == "error"
    closing = await ws.receive(timeout=10)
    assert closing.type == aiohttp.WSMsgType.CLOSE, closing
    return body["code"], closing.data, closing.extra


# --- presence -----------------------------------------------------------------------------------


async def test_presence_welcome_joined_left(room: Any, join: Any, events: Any) -> None:
    host = await join(room, "host", "host", name="Hostess")
    assert host.self_id == "host"
    assert host.role == "host"
    assert host.peers == {}

    alice = await join(room, "alice", "participant", name="Alice")
    assert await events.next(host) == PeerJoined("alice", "Alice", "participant", False, False)
    # The welcome's member list arrives as PeerJoined events and as `peers`.
    assert await events.next(alice) == PeerJoined("host", "Hostess", "host", False, False)
    assert alice.peers == {"host": PeerInfo("host", "Hostess", "host")}

    bot = await join(room, "hoovik", "bot", name="Hoovik")
    assert {(await events.next(bot)).peer_id for _ in range(2)} == {"host", "alice"}  # type: ignore[attr-defined]
    assert await events.next(host) == PeerJoined("hoovik", "Hoovik", "bot", False, False)
    assert await events.next(alice) == PeerJoined("hoovik", "Hoovik", "bot", False, False)
    assert set(host.peers) == {"alice", "hoovik"}

    await alice.close()
    assert await events.next(host) == PeerLeft("alice")
    assert await events.next(bot) == PeerLeft("alice")
    assert set(bot.peers) == {"host"}


async def test_media_state_is_broadcast_to_the_others(room: Any, join: Any, events: Any) -> None:
    host = await join(room, "host", "host")
    alice = await join(room, "alice", "participant")
    bot = await join(room, "bot", "bot")
    await events.expect(host, PeerJoined)
    await events.expect(host, PeerJoined)
    await events.expect(alice, PeerJoined)
    await events.expect(alice, PeerJoined)
    await events.expect(bot, PeerJoined)
    await events.expect(bot, PeerJoined)

    await alice.announce_media(mic=True, camera=False)
    assert await events.next(host) == MediaState("alice", True, False)
    assert await events.next(bot) == MediaState("alice", True, False)
    assert bot.peers["alice"] == PeerInfo("alice", "alice", "participant", True, False)
    await fence(events, bot, alice, "no echo to the sender")

    # A later joiner learns the current media state from its welcome.
    late = await join(room, "late", "participant")
    present = {e.peer_id: e for e in [await events.next(late) for _ in range(3)]}  # type: ignore[attr-defined]
    assert present["alice"] == PeerJoined("alice", "alice", "participant", True, False)


async def test_leave_message_leaves(room: Any, join: Any, events: Any) -> None:
    host = await join(room, "host", "host")
    alice = await join(room, "alice", "participant")
    await events.expect(host, PeerJoined)
    await alice.send_raw('{"type": "leave"}')
    assert await events.next(host) == PeerLeft("alice")
    assert await events.expect(alice, Disconnected, skip=(PeerJoined,)) == Disconnected("closed")


# --- relay --------------------------------------------------------------------------------------


async def test_relay_offer_answer_candidate(room: Any, join: Any, events: Any) -> None:
    alice = await join(room, "alice", "participant")
    bot = await join(room, "bot", "bot")
    await events.expect(alice, PeerJoined)
    await events.expect(bot, PeerJoined)

    await alice.send_offer("bot", "v=0 offer")
    assert await events.next(bot) == RemoteOffer("alice", "v=0 offer")
    await bot.send_answer("alice", "v=0 answer")
    assert await events.next(alice) == RemoteAnswer("bot", "v=0 answer")
    await alice.send_candidate("bot", CAND)
    assert await events.next(bot) == RemoteCandidate("alice", CAND)
    await bot.send_candidate("alice", None)
    assert await events.next(alice) == RemoteCandidate("bot", None)


async def test_relay_to_unknown_peer(room: Any, join: Any, events: Any) -> None:
    alice = await join(room, "alice", "participant")
    await alice.send_offer("nobody", "v=0")
    error = await events.next(alice)
    assert isinstance(error, SignalingError)
    assert error.code == "unknown_peer"
    await alice.send_offer("alice", "v=0")  # yourself is not a peer either
    assert (await events.expect(alice, SignalingError)).code == "unknown_peer"
    bob = await join(room, "bob", "participant")
    await events.expect(alice, PeerJoined)
    await events.expect(bob, PeerJoined)
    await fence(events, alice, bob, "still works")  # the connection was kept


async def test_rooms_are_isolated(server: Any, make_room: Any, join: Any, events: Any) -> None:
    room_a, room_b = await make_room(server, "A"), await make_room(server, "B")
    a = await join(room_a, "a", "participant")
    b = await join(room_b, "b", "participant")
    b2 = await join(room_b, "b2", "participant")
    await events.expect(b, PeerJoined)
    await events.expect(b2, PeerJoined)
    for send in (a.send_offer, a.send_answer):
        await send("b", "v=0 intruder")
        assert (await events.next(a)).code == "unknown_peer"  # type: ignore[union-attr]
    await a.send_candidate("b", CAND)
    assert (await events.next(a)).code == "unknown_peer"  # type: ignore[union-attr]
    await fence(events, b2, b, "nothing from room A")
    # A token for room A cannot be used to enter room B either.
    token_a = await room_a.invite("participant")
    with pytest.raises(JoinRejected) as err:
        await SignalingClient.connect(server.ws_url, room_b.id, token_a, "sneaky", "", "participant")
    assert err.value.code == "token_wrong_room"


async def test_results_go_to_the_target_and_hosts_only(room: Any, join: Any, events: Any) -> None:
    host = await join(room, "host", "host")
    cohost = await join(room, "cohost", "host", token=room.host_token)
    p1 = await join(room, "p1", "participant")
    p2 = await join(room, "p2", "participant")
    bot = await join(room, "bot", "bot")
    for client, n in ((host, 4), (cohost, 4), (p1, 4), (p2, 4), (bot, 4)):
        for _ in range(n):
            await events.expect(client, PeerJoined)

    payload = {"emotion": "joy", "confidence": 0.9}
    await bot.send_result("p1", payload)
    assert await events.next(p1) == ResultRelay("bot", "p1", payload)
    assert await events.next(host) == ResultRelay("bot", "p1", payload)
    assert await events.next(cohost) == ResultRelay("bot", "p1", payload)
    await fence(events, p1, p2, "p2 saw no result")
    await fence(events, p1, bot, "the bot got no echo")

    # About a host: the host gets it once, the other host too.
    await bot.send_result("host", payload)
    assert await events.next(host) == ResultRelay("bot", "host", payload)
    assert await events.next(cohost) == ResultRelay("bot", "host", payload)
    await fence(events, bot, host, "exactly once")

    # Only bots may send results.
    await p1.send_result("p2", {"fake": True})
    error = await events.next(p1)
    assert isinstance(error, SignalingError)
    assert error.code == "forbidden"
    await fence(events, p1, p2, "nothing relayed")
    await bot.send_result("ghost", payload)
    assert (await events.next(bot)).code == "unknown_peer"  # type: ignore[union-attr]


# --- joining: tokens, roles, ids ----------------------------------------------------------------


async def test_token_problems_reject_the_join(room: Any, join: Any, events: Any) -> None:
    host = await join(room, "host", "host")
    signer = TokenSigner(SECRET, clock=lambda: 1_000_000.0)
    expired = signer.mint(room.id, "participant", 10)
    forged = TokenSigner(b"not-the-server-secret-but-32-bytes-long").mint(room.id, "participant", 60)
    cases = [("garbage", "token_malformed"), (forged, "token_bad_signature"), (expired, "token_expired")]
    for token, code in cases:
        with pytest.raises(JoinRejected) as err:
            await SignalingClient.connect(room.server.ws_url, room.id, token, "x", "", "participant")
        assert err.value.code == code
    bob = await join(room, "bob", "participant")
    assert await events.next(host) == PeerJoined("bob", "bob", "participant", False, False)
    await events.expect(bob, PeerJoined)
    await fence(events, host, bob, "others unaffected")


async def test_bad_token_closes_with_a_clear_code(room: Any, http: aiohttp.ClientSession) -> None:
    ws = await raw_join(http, room, {"role": "participant", "token": "garbage", "participantId": "x"})
    assert await error_then_close(ws) == ("token_malformed", 4001, "token_malformed")


@pytest.mark.parametrize(
    ("token_role", "join_role"), [("participant", "host"), ("participant", "bot"), ("bot", "participant")]
)
async def test_role_must_match_the_token(
    room: Any, http: aiohttp.ClientSession, token_role: str, join_role: str
) -> None:
    token = await room.invite(token_role)
    ws = await raw_join(http, room, {"role": join_role, "token": token, "participantId": "x"})
    assert await error_then_close(ws) == ("role_mismatch", 4003, "role_mismatch")


async def test_host_token_cannot_join_as_participant(room: Any) -> None:
    with pytest.raises(JoinRejected) as err:
        await SignalingClient.connect(room.server.ws_url, room.id, room.host_token, "h", "", "participant")
    assert err.value.code == "role_mismatch"


async def test_token_bound_participant_id(room: Any, join: Any) -> None:
    token = await room.invite("bot", participant_id="hoovik")
    with pytest.raises(JoinRejected) as err:
        await SignalingClient.connect(room.server.ws_url, room.id, token, "someone-else", "", "bot")
    assert err.value.code == "participant_mismatch"
    bot = await join(room, None, "bot", token=token)  # no id given: the token's id is used
    assert bot.self_id == "hoovik"


async def test_server_assigns_an_id_when_none_is_given(room: Any, join: Any) -> None:
    a = await join(room, None, "participant")
    b = await join(room, None, "participant")
    assert a.self_id and b.self_id and a.self_id != b.self_id


async def test_room_must_exist(server: Any) -> None:
    token = TokenSigner(SECRET).mint("never-created", "participant", 60)
    with pytest.raises(JoinRejected) as err:
        await SignalingClient.connect(server.ws_url, "never-created", token, "x", "", "participant")
    assert err.value.code == "room_not_found"


async def test_room_full(make_server: Any, make_room: Any, join: Any) -> None:
    server = await make_server(max_members_per_room=2)
    room = await make_room(server)
    token = await room.invite("participant")
    a = await join(room, "a", "participant", token=token)
    await join(room, "b", "participant")
    with pytest.raises(JoinRejected) as err:
        await join(room, "c", "participant")
    assert err.value.code == "room_full"
    # Replacing an existing id (a reconnect, proven by the resume key) is not growth.
    await join(room, "a", "participant", token=token, resume_key=a.resume_key)


async def test_first_message_must_be_join(room: Any, http: aiohttp.ClientSession) -> None:
    ws = await http.ws_connect(room.server.ws_url)
    await ws.send_str('{"type": "ping"}')
    assert json.loads((await ws.receive(timeout=10)).data)["code"] == "join_required"
    await ws.send_str("{broken")
    assert json.loads((await ws.receive(timeout=10)).data)["code"] == "bad_json"
    token = await room.invite("participant")
    await ws.send_str(json.dumps({"type": "join", "room": room.id, "role": "participant", "token": token}))
    welcome = json.loads((await ws.receive(timeout=10)).data)
    assert welcome["type"] == "welcome"
    await ws.send_str(json.dumps({"type": "join", "room": room.id, "role": "participant", "token": token}))
    assert json.loads((await ws.receive(timeout=10)).data)["code"] == "already_joined"
    await ws.send_str('{"type": "ping"}')
    assert json.loads((await ws.receive(timeout=10)).data) == {"type": "pong"}
    await ws.close()


async def test_join_timeout(
    make_server: Any, make_room: Any, http: aiohttp.ClientSession, join: Any, events: Any
) -> None:
    server = await make_server(join_timeout_s=0.2)
    room = await make_room(server)
    host = await join(room, "host", "host")
    ws = await http.ws_connect(server.ws_url)
    assert await error_then_close(ws) == ("join_timeout", 4008, "join_timeout")
    bob = await join(room, "bob", "participant")
    await events.expect(host, PeerJoined)
    await events.expect(bob, PeerJoined)
    await fence(events, host, bob, "server fine")


# --- bad input from joined members --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "bad_json"),
        ('{"type": "teleport"}', "unknown_type"),
        ('{"type": "offer", "to": "bob"}', "missing_field"),
        ('{"type": "media", "mic": "yes", "camera": false}', "bad_field"),
        ("[]", "bad_message"),
    ],
)
async def test_malformed_messages_keep_the_connection(room: Any, join: Any, events: Any, text: str, code: str) -> None:
    alice = await join(room, "alice", "participant")
    bob = await join(room, "bob", "participant")
    await events.expect(alice, PeerJoined)
    await events.expect(bob, PeerJoined)
    await alice.send_raw(text)
    error = await events.next(alice)
    assert isinstance(error, SignalingError)
    assert error.code == code
    await fence(events, alice, bob, "alice still connected")
    await fence(events, bob, alice, "and reachable")


async def test_oversized_message_closes_only_that_connection(
    make_server: Any, make_room: Any, join: Any, events: Any
) -> None:
    server = await make_server(max_message_bytes=4096)
    room = await make_room(server)
    alice = await join(room, "alice", "participant")
    bob = await join(room, "bob", "participant")
    carol = await join(room, "carol", "participant")
    for client in (alice, alice, bob, bob, carol, carol):
        await events.expect(client, PeerJoined)
    await alice.send_offer("bob", "v=0 " + "a" * 5000)
    error = await events.next(alice)
    assert isinstance(error, SignalingError)
    assert error.code == "too_large"
    assert await events.next(alice) == Disconnected("too_large")
    assert await events.next(bob) == PeerLeft("alice")
    assert await events.next(carol) == PeerLeft("alice")
    await fence(events, bob, carol, "others fine")


async def test_message_beyond_the_hard_limit_is_cut_by_aiohttp(
    make_server: Any, make_room: Any, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_message_bytes=1024, hard_message_bytes=2048)
    room = await make_room(server)
    token = await room.invite("participant")
    ws = await raw_join(http, room, {"role": "participant", "token": token, "participantId": "x"})
    assert json.loads((await ws.receive(timeout=10)).data)["type"] == "welcome"
    await ws.send_str(json.dumps({"type": "offer", "to": "y", "sdp": "a" * 4096}))
    closing = await ws.receive(timeout=10)
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1009)
    await ws.close()


# --- replacement, slow consumers, lifecycle ------------------------------------------------------


async def test_duplicate_participant_id_replaces_the_old_connection(room: Any, join: Any, events: Any) -> None:
    host = await join(room, "host", "host")
    token = await room.invite("participant")  # a reload reuses its token
    old = await join(room, "alice", "participant", name="Alice (tab 1)", token=token)
    await events.expect(host, PeerJoined)
    await events.expect(old, PeerJoined)

    # ... and presents the resume key its first welcome gave it (the token alone is not enough).
    key = old.resume_key
    new = await join(room, "alice", "participant", name="Alice (tab 2)", token=token, resume_key=key)
    replaced = await events.next(old)
    assert isinstance(replaced, SignalingError)
    assert replaced.code == "replaced"
    assert await events.next(old) == Disconnected("replaced")
    assert await events.next(host) == PeerLeft("alice")
    assert await events.next(host) == PeerJoined("alice", "Alice (tab 2)", "participant", False, False)
    assert await events.next(new) == PeerJoined("host", "host", "host", False, False)
    await fence(events, host, new, "the new connection is the live one")
    assert room.server.hub.member_ids(room.id) == ["host", "alice"]
    assert room.server.hub.stats.replaced_total == 1


async def test_slow_consumer_is_cut_off_and_counted(
    make_server: Any, make_room: Any, http: aiohttp.ClientSession, join: Any, events: Any, until: Any
) -> None:
    # The inbound rate limit is off here: this test floods on purpose to fill the *reader's* outbox.
    server = await make_server(
        send_queue_messages=4, send_queue_bytes=1 << 20, close_timeout_s=1.0, msg_rate_per_s=None
    )
    room = await make_room(server)
    host = await join(room, "host", "host")
    token = await room.invite("participant")
    # A raw client that joins and then never reads again: aiohttp pauses the socket once its
    # buffer is full, so the server's writes back up into the outbox.
    stalled = await raw_join(http, room, {"role": "participant", "token": token, "participantId": "stalled"})
    await events.expect(host, PeerJoined)
    sdp = "v=0 " + "x" * 200_000
    for _ in range(2000):
        if server.hub.stats.slow_consumers_closed:
            break
        await host.send_offer("stalled", sdp)
        await asyncio.sleep(0)
    await until(lambda: server.hub.stats.slow_consumers_closed == 1)
    # Offers still in flight now bounce with unknown_peer; a marker error tells us the host's
    # backlog is through, and PeerLeft tells us the server dropped the stalled member.
    await host.send_offer("marker", "v=0")
    seen_left = seen_marker = False
    while not (seen_left and seen_marker):
        event = await events.next(host)
        if event == PeerLeft("stalled"):
            seen_left = True
        else:
            assert isinstance(event, SignalingError) and event.code == "unknown_peer", event
            seen_marker = seen_marker or "marker" in event.message
    bob = await join(room, "bob", "participant")
    await events.expect(host, PeerJoined)
    await events.expect(bob, PeerJoined)
    await fence(events, host, bob, "the room carries on")
    await stalled.close()


async def test_room_is_freed_when_everyone_left(room: Any, join: Any, until: Any, http: aiohttp.ClientSession) -> None:
    hub = room.server.hub
    host = await join(room, "host", "host")
    alice = await join(room, "alice", "participant")
    await alice.close()
    assert hub.room_exists(room.id)  # the host is still there
    await host.close()
    await until(lambda: not hub.room_exists(room.id))
    assert hub.room_count == 0
    assert hub.stats.rooms_freed == 1
    async with http.get(
        f"{room.server.url}/rooms/{room.id}", headers={"Authorization": f"Bearer {room.host_token}"}
    ) as resp:
        assert resp.status == 404
    with pytest.raises(JoinRejected) as err:
        await join(room, "host", "host")
    assert err.value.code == "room_not_found"


async def test_empty_room_waits_out_the_grace_period(make_server: Any, make_room: Any, join: Any) -> None:
    server = await make_server(empty_room_grace_s=3600.0)
    room = await make_room(server)
    host = await join(room, "host", "host")
    await host.close()
    await join(room, "host", "host")  # a reconnect within the grace period finds the room
    assert server.hub.room_exists(room.id)


async def test_unjoined_room_expires_after_room_ttl(make_server: Any, make_room: Any, until: Any) -> None:
    server = await make_server(room_ttl_s=0.05)
    room = await make_room(server)
    await until(lambda: not server.hub.room_exists(room.id))


async def test_server_shutdown_tells_clients(make_server: Any, make_room: Any, join: Any, events: Any) -> None:
    server = await make_server()
    room = await make_room(server)
    alice = await join(room, "alice", "participant")
    await server.stop()
    error = await events.next(alice)
    assert isinstance(error, SignalingError)
    assert error.code == "shutting_down"
    assert await events.next(alice) == Disconnected("shutting_down")
    with pytest.raises(ConnectionError):
        await alice.send_offer("x", "v=0")


async def test_token_bound_id_replaces_even_with_a_fresh_token(room: Any, join: Any, events: Any) -> None:
    old = await join(room, None, "bot", token=await room.invite("bot", participant_id="hoovik"))
    new = await join(room, None, "bot", token=await room.invite("bot", participant_id="hoovik"))
    assert old.self_id == new.self_id == "hoovik"
    assert (await events.next(old)).code == "replaced"  # type: ignore[union-attr]
    assert await events.next(old) == Disconnected("replaced")


async def test_someone_else_cannot_take_over_an_id(room: Any, join: Any, events: Any) -> None:
    host = await join(room, "host", "host")
    alice = await join(room, "alice", "participant")
    await events.expect(host, PeerJoined)
    await events.expect(alice, PeerJoined)
    for pid, role in (("host", "participant"), ("alice", "participant"), ("alice", "bot")):
        with pytest.raises(JoinRejected) as err:
            await join(room, pid, role)  # a fresh, unbound invite: a different identity
        assert err.value.code == "id_taken"
    await fence(events, host, alice, "nobody was kicked")
    assert room.server.hub.stats.replaced_total == 0

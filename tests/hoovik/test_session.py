"""HoovikSession against a relay with Hoovik's backend semantics: join, presence, signals, rejoin."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from hoovik_browser import RawMember, wait_until
from hoovik_relay import HoovikRelay

from signaling.base import (
    Disconnected,
    Event,
    JoinRejected,
    MediaState,
    PeerJoined,
    PeerLeft,
    RemoteAnswer,
    RemoteCandidate,
    RemoteOffer,
    SignalingError,
    SignalingSession,
)
from signaling.hoovik import (
    MIRROR_META_KEY,
    HoovikOptions,
    HoovikSession,
    encode_candidate,
    encode_description,
    parse_signal,
)

CAND = "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host"


class Collector:
    """Consumes a session's events in the background, like the bot does."""

    def __init__(self, session: HoovikSession) -> None:
        import asyncio

        self.session = session
        self.events: list[Event] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for ev in self.session.events():
            self.events.append(ev)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def until(self, cond: Any, what: str) -> None:
        await wait_until(cond, what, info=lambda: self.events)


async def member(relay: HoovikRelay, code: str, user_id: str, name: str) -> RawMember:
    m = RawMember(relay.url, code, user_id, name)
    await m.join()
    await m.joined()
    return m


# --- pure parsing -------------------------------------------------------------------------------


def test_parse_signal_shapes() -> None:
    offer = parse_signal("p", json.dumps({"description": {"type": "offer", "sdp": "v=0\r\n"}}))
    assert offer == RemoteOffer("p", "v=0\r\n")
    assert parse_signal("p", {"description": {"type": "answer", "sdp": "x"}}) == RemoteAnswer("p", "x")
    cand = {"candidate": CAND, "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}
    assert parse_signal("p", json.dumps({"candidate": cand})) == RemoteCandidate("p", cand)
    assert parse_signal("p", json.dumps({"candidate": None})) == RemoteCandidate("p", None)
    assert parse_signal("p", json.dumps({"candidate": {"candidate": ""}})) == RemoteCandidate("p", None)
    assert parse_signal("p", json.dumps({"description": {"type": "rollback"}})) is None
    for bad in ("not json", json.dumps([1]), json.dumps({"other": 1}), json.dumps({"candidate": 5}), 42):
        with pytest.raises(ValueError):
            parse_signal("p", bad)
    # What we send is what a browser's JSON.parse expects.
    assert json.loads(encode_description("answer", "v=0")) == {"description": {"type": "answer", "sdp": "v=0"}}
    assert json.loads(encode_candidate(cand)) == {"candidate": cand}


async def test_state_rules_without_a_server() -> None:
    """Replacement by userId, mute changes, self-exclusion and the two-snapshot rule."""
    s = HoovikSession("http://unused", "ROOM1", HoovikOptions(user_id="bot-1"))
    s._sid = "bot-sid"
    s._upsert({"id": "a1", "meta": {"name": "Alice", "userId": "u-a"}})
    s._upsert({"id": "bot-sid", "meta": {"userId": "bot-1"}})  # ourselves
    s._upsert({"id": "old-bot", "meta": {"userId": "bot-1"}})  # our stale entry after a restart
    s._upsert({"id": "b1", "meta": {"name": "Bot2", "userId": "u-b", "bot": True, "muted": True, "video": False}})
    assert set(s.peers) == {"a1", "b1"}
    assert s.peers["b1"].role == "bot" and not s.peers["b1"].mic and not s.peers["b1"].camera
    s._upsert({"id": "a2", "meta": {"name": "Alice", "userId": "u-a"}})  # Alice from a new socket
    s._on_participant_state({"peerId": "a2", "muted": True})
    s._on_participant_state({"peerId": "a2", "muted": True})  # no change, no event
    s._on_participant_state({"peerId": "zz", "muted": True})  # unknown: ignored
    s._on_participants_updated([{"id": "a2", "meta": {"userId": "u-a", "muted": True}}])  # b1 missing once
    assert "b1" in s.peers
    s._on_participants_updated([{"id": "a2", "meta": {"userId": "u-a", "muted": False}}])  # missing twice
    events = []
    while not s._queue.empty():
        events.append(s._queue.get_nowait())
    assert events == [
        PeerJoined("a1", "Alice", "participant", True, True, "u-a"),
        PeerJoined("b1", "Bot2", "bot", False, False, "u-b"),
        PeerLeft("a1"),
        PeerJoined("a2", "Alice", "participant", True, True, "u-a"),
        MediaState("a2", False, True),
        MediaState("a2", True, True),
        PeerLeft("b1"),
    ]


# --- against the relay --------------------------------------------------------------------------


async def test_join_presence_signals_and_leave(relay: HoovikRelay, fast_options: Any) -> None:
    code = relay.create_room()
    alice = await member(relay, code, "u-alice", "Alice")
    session = await HoovikSession.connect(relay.url, f"  {code.lower()} ", fast_options(user_id="bot-1"))
    assert isinstance(session, SignalingSession)
    events = Collector(session)
    try:
        # Two arguments (a tuple, not a list) and the bot's meta exactly.
        (_, join_args) = relay.events_of("join-call")[-1]
        assert join_args == (
            code,
            {"name": "Hoovik Bot", "userId": "bot-1", "bot": True, "muted": True, "video": False},
        )
        # Our id is the Socket.IO id the backend knows (get_sid), not the Engine.IO id.
        assert session.self_id == relay.entries(code)["bot-1"]["socketId"]
        assert session.self_id != session._client.sid  # type: ignore[union-attr]
        await events.until(lambda: events.of(PeerJoined), "alice announced")
        assert events.of(PeerJoined)[0] == PeerJoined(alice.sid, "Alice", "participant", True, True, "u-alice")
        assert session.peers[alice.sid].user_id == "u-alice"

        bob = await member(relay, code, "u-bob", "<b>Bob</b>")
        bob_sid = bob.sid
        await events.until(lambda: len(events.of(PeerJoined)) == 2, "bob announced")
        assert events.of(PeerJoined)[1] == PeerJoined(bob_sid, "Bob", "participant", True, True, "u-bob")

        # Mute state: only changes of {muted} matter; {video} is broadcast as {peerId, muted} unchanged.
        await alice.emit("update-participant-state", {"muted": True})
        await alice.emit("update-participant-state", {"video": False})
        await alice.emit("update-participant-state", {"muted": False})
        await events.until(lambda: len(events.of(MediaState)) == 2, "two mute changes")
        assert events.of(MediaState) == [MediaState(alice.sid, False, True), MediaState(alice.sid, True, True)]

        # Signals in: JSON strings, trickled candidates with the "candidate:" prefix.
        offer_sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        await alice.emit("signal", (session.self_id, encode_description("offer", offer_sdp)))
        cand = {"candidate": CAND, "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "uf"}
        await alice.emit("signal", (session.self_id, json.dumps({"candidate": cand})))
        await alice.emit("signal", (session.self_id, "{broken"))
        await events.until(lambda: events.of(RemoteCandidate), "candidate relayed")
        assert events.of(RemoteOffer) == [RemoteOffer(alice.sid, offer_sdp)]
        assert events.of(RemoteCandidate) == [RemoteCandidate(alice.sid, cand)]
        assert session.counters.get("bad_signals") == 1

        # Signals out: JSON strings addressed by socket id.
        await session.send_answer(alice.sid, "v=0\r\nanswer\r\n")
        await session.send_candidate(alice.sid, cand)
        await session.send_candidate(alice.sid, None)  # never sent: browsers would choke on it
        await wait_until(lambda: len(alice.of("signal")) == 2, "bot signals at alice")
        (from_1, msg_1), (from_2, msg_2) = alice.of("signal")
        assert from_1 == from_2 == session.self_id
        assert isinstance(msg_1, str) and json.loads(msg_1) == {
            "description": {"type": "answer", "sdp": "v=0\r\nanswer\r\n"}
        }
        assert json.loads(msg_2) == {"candidate": cand}
        assert not relay.rejected_signals

        # Our own media announcement.
        await session.announce_media(False, False)
        await wait_until(lambda: relay.events_of("update-participant-state")[-1][0] == session.self_id, "announce")
        assert relay.events_of("update-participant-state")[-1][1] == ({"muted": True, "video": False},)

        # Leave: user-left. Bob from a new socket without leaving: replaced, no user-left for the old one.
        await alice.emit("leave-call", code)
        await events.until(lambda: PeerLeft(alice.sid) in events.events, "alice left")
        bob2 = await member(relay, code, "u-bob", "Bob")
        await events.until(lambda: PeerLeft(bob_sid) in events.events, "old bob dropped")
        assert events.of(PeerJoined)[-1] == PeerJoined(bob2.sid, "Bob", "participant", True, True, "u-bob")
        assert events.events.index(PeerLeft(bob_sid)) < events.events.index(events.of(PeerJoined)[-1])
        assert set(session.peers) == {bob2.sid}
        assert (bob_sid, bob2.sid) in relay.replacements
        await wait_until(lambda: not bob.client.connected, "old bob kicked")
        assert bob2.of("user-left") == []

        # Closing leaves the meeting at once.
        bot_sid = session.self_id
        await session.close()
        await wait_until(lambda: (bot_sid,) in bob2.of("user-left"), "bot user-left")
        await events.until(lambda: events.of(Disconnected), "final event")
        assert events.events[-1] == Disconnected("client_closed")
        assert "bot-1" not in relay.entries(code)
    finally:
        await session.close()
        for m in (alice,):
            await m.close()


async def test_join_errors_are_join_rejected(relay: HoovikRelay, fast_options: Any) -> None:
    with pytest.raises(JoinRejected) as exc:
        await HoovikSession.connect(relay.url, "no", fast_options())
    assert exc.value.code == "invalid_code"
    with pytest.raises(JoinRejected) as exc:
        await HoovikSession.connect(relay.url, "NOSUCHROOM", fast_options())
    assert (exc.value.code, exc.value.message) == ("room_not_found", "Room does not exist. Please create it first.")
    code = relay.create_room()
    relay.unavailable = True
    with pytest.raises(JoinRejected) as exc:
        await HoovikSession.connect(relay.url, code, fast_options())
    assert exc.value.code == "unavailable"
    relay.unavailable = False
    relay.max_participants = 1
    alice = await member(relay, code, "u-alice", "Alice")
    with pytest.raises(JoinRejected) as exc:
        await HoovikSession.connect(relay.url, code, fast_options())
    assert exc.value.code == "room_full"
    await alice.close()
    with pytest.raises(JoinRejected) as exc:
        await HoovikSession.connect("http://127.0.0.1:9", code, fast_options(join_timeout_s=2.0))
    assert exc.value.code == "connect_failed"


async def test_errors_after_join_are_events(relay: HoovikRelay, fast_options: Any) -> None:
    code = relay.create_room()
    session = await HoovikSession.connect(relay.url, code, fast_options())
    events = Collector(session)
    try:
        await relay.sio.emit("error", "Failed to join call", to=session.self_id)
        await events.until(lambda: events.of(SignalingError), "error event")
        assert events.of(SignalingError) == [SignalingError("join_failed", "Failed to join call")]
    finally:
        await session.close()


async def test_backend_restart_rejoins_under_the_same_user_id_without_a_ghost(
    relay: HoovikRelay, fast_options: Any
) -> None:
    code = relay.create_room()
    alice = await member(relay, code, "u-alice", "Alice")
    session = await HoovikSession.connect(relay.url, code, fast_options(user_id="bot-1"))
    events = Collector(session)
    restarted: HoovikRelay | None = None
    try:
        await events.until(lambda: events.of(PeerJoined), "alice")
        old_bot_sid, alice_sid = session.self_id, alice.sid
        # The backend dies (Redis keeps its entries) and comes back on the same port.
        port, store = relay.port, relay.store
        await relay.stop(crash=True)
        restarted = HoovikRelay(store)
        await restarted.start(port)
        await wait_until(lambda: session.joins == 2, "rejoin", info=lambda: session.counters)
        new_bot_sid = session.self_id
        assert new_bot_sid != old_bot_sid
        # Exactly one entry for the bot, on the new socket: the backend replaced the stale one.
        entries = restarted.entries(code)
        assert entries["bot-1"]["socketId"] == new_bot_sid
        assert [e for e in entries.values() if e["meta"].get("bot")] == [entries["bot-1"]]
        assert old_bot_sid not in restarted.store.state[code]
        # Peers the new existing-participants still lists are kept as they are (a stock browser
        # never re-joins, so its old connection is all there is): no PeerLeft, no second PeerJoined.
        await asyncio.sleep(0.5)  # past the debounced participants-updated snapshot
        assert set(session.peers) == {alice_sid}
        assert not events.of(PeerLeft)
        assert [e.peer_id for e in events.of(PeerJoined)] == [alice_sid]
        # Alice comes back from a new socket: her stale entry is replaced for the bot too.
        alice2 = RawMember(restarted.url, code, "u-alice", "Alice")
        await alice2.join()
        await alice2.joined()
        await events.until(lambda: alice2.sid in session.peers, "alice again")
        assert set(session.peers) == {alice2.sid}
        assert events.of(PeerLeft) == [PeerLeft(alice_sid)]
        assert events.of(PeerJoined)[-1].user_id == "u-alice"
        # And signals reach the bot on its new socket.
        await alice2.emit("signal", (new_bot_sid, encode_description("offer", "v=0\r\n")))
        await events.until(lambda: events.of(RemoteOffer), "offer after restart")
        assert not restarted.rejected_signals
        assert not events.of(Disconnected)
        await alice2.close()
    finally:
        await session.close()
        await alice.close()
        if restarted is not None:
            await restarted.stop()


async def test_a_second_bot_with_our_user_id_replaces_us(relay: HoovikRelay, fast_options: Any) -> None:
    code = relay.create_room()
    first = await HoovikSession.connect(relay.url, code, fast_options(user_id="bot-1"))
    events = Collector(first)
    second = await HoovikSession.connect(relay.url, code, fast_options(user_id="bot-1"))
    try:
        await events.until(lambda: events.of(Disconnected), "first session ended")
        assert events.events[-1] == Disconnected("replaced")
        assert first.joins == 1 and first.closed
        assert relay.entries(code)["bot-1"]["socketId"] == second.self_id
        with pytest.raises(Exception, match="closed"):
            await first.send_answer("x", "v=0")
    finally:
        await first.close()
        await second.close()


async def test_result_mirroring_is_off_by_default_and_throttled_when_on(relay: HoovikRelay, fast_options: Any) -> None:
    code = relay.create_room()
    alice = await member(relay, code, "u-alice", "Alice")
    payload = {"participantId": "x", "result": {"emotion": "happy", "confidence": 0.9, "modality": "both"}, "ts": 1}
    off = await HoovikSession.connect(relay.url, code, fast_options(user_id="bot-off"))
    await wait_until(lambda: alice.sid in off.peers, "alice known")
    await off.send_result(alice.sid, payload)
    assert off.counters.get("results_not_relayed") == 1
    await off.close()

    on = await HoovikSession.connect(
        relay.url, code, fast_options(user_id="bot-on", mirror_results=True, mirror_interval_s=0.3)
    )
    try:
        await wait_until(lambda: alice.sid in on.peers, "alice known")
        for i in range(20):
            await on.send_result(alice.sid, {**payload, "ts": i})
        await wait_until(lambda: relay.events_of("update-meta"), "update-meta")
        await wait_until(lambda: on._mirror_task is not None and on._mirror_task.done(), "mirror idle")
        sent = list(on.mirror_sent_at)
        assert 1 <= len(sent) <= 2  # coalesced, not 20
        assert all(b - a >= 0.3 for a, b in itertools.pairwise(sent))
        (sid, (meta,)) = relay.events_of("update-meta")[-1]
        assert sid == on.self_id
        assert meta[MIRROR_META_KEY]["u-alice"] == {"emotion": "happy", "confidence": 0.9, "modality": "both", "ts": 19}
        # Everyone in the room sees it in the bot's meta.
        await wait_until(
            lambda: any(a[0]["id"] == on.self_id for a in alice.of("participant-meta-updated")), "meta broadcast"
        )
        assert not [name for name, _ in relay.events_of("update-meta") if name == "bot-off"]
    finally:
        await on.close()
        await alice.close()

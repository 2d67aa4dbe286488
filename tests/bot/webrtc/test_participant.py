"""The bot as a participant, against an in-memory signaling session and engine (tests/bot/webrtc/fakes.py).

The remote side is a real aiortc peer connection in this process (offer/answer need no network);
nothing else runs: no server, no models.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiortc import RTCPeerConnection

from bot.webrtc.ice import use_loopback_ice
from bot.webrtc.participant import BotParticipant
from bot.webrtc.router import ResultRouter
from signaling.base import Disconnected, MediaState, PeerInfo, PeerLeft, RemoteCandidate, RemoteOffer
from tests.bot.webrtc.fakes import FakeEngine, FakeSession

CANDIDATE = {
    "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def browser_offer() -> tuple[RTCPeerConnection, str]:
    """A peer that opens a data channel and offers to receive nothing: what a camera-less page sends."""
    pc = RTCPeerConnection()
    pc.createDataChannel("results")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


class Room:
    def __init__(self, session: FakeSession, engine: FakeEngine, participant: BotParticipant) -> None:
        self.session, self.engine, self.participant = session, engine, participant


@pytest_asyncio.fixture
async def room() -> AsyncIterator[Room]:
    use_loopback_ice()
    session = FakeSession(
        peers={
            "alice": PeerInfo("alice", "Alice", "participant", mic=True, camera=True, user_id="u-alice"),
            "host": PeerInfo("host", "Host", "host"),
            "bot2": PeerInfo("bot2", "Other bot", "bot"),
        }
    )
    engine = FakeEngine()
    router = ResultRouter(session)
    participant = BotParticipant(session, engine, [], router=router)  # type: ignore[arg-type]
    task = asyncio.create_task(participant.run())
    try:
        yield Room(session, engine, participant)
    finally:
        session.push(Disconnected("test_over"))
        await asyncio.wait_for(task, 10)
        use_loopback_ice(False)


async def test_present_peers_join_the_engine_and_the_route(room: Room) -> None:
    await until(lambda: "alice" in room.engine.participants, "alice in the engine")
    assert set(room.engine.participants) == {"alice", "host"}  # bots are not analysed
    assert room.participant.router.hosts() == ["host"]
    assert room.participant.result_id("alice") == "u-alice"


async def test_an_offer_is_answered(room: Room) -> None:
    pc, sdp = await browser_offer()
    try:
        room.session.push(RemoteOffer("alice", sdp))
        await until(lambda: bool(room.session.answers), "an answer")
        peer_id, answer = room.session.answers[0]
        assert peer_id == "alice" and answer.startswith("v=0")
        assert "m=application" in answer
        assert room.session.rejections == []
    finally:
        await pc.close()


async def test_candidates_before_the_offer_wait_for_it(room: Room) -> None:
    room.session.push(RemoteCandidate("alice", CANDIDATE))
    await until(lambda: "alice" in room.participant.peers, "a pending peer")
    assert room.participant.peers["alice"].pending_candidates == [CANDIDATE]
    pc, sdp = await browser_offer()
    try:
        room.session.push(RemoteOffer("alice", sdp))
        await until(lambda: bool(room.session.answers), "an answer")
        assert room.participant.peers["alice"].pending_candidates == []
    finally:
        await pc.close()


async def test_end_of_candidates_is_not_queued(room: Room) -> None:
    room.session.push(RemoteCandidate("alice", None))
    room.session.push(MediaState("alice", mic=False, camera=True))  # processed after the candidate
    await until(lambda: ("media", "alice", False, True) in room.engine.calls, "the media state")
    assert "alice" not in room.participant.peers


async def test_an_unusable_offer_is_refused_with_a_reason(room: Room) -> None:
    room.session.push(RemoteOffer("alice", "hello"))
    await until(lambda: bool(room.session.rejections), "a rejection")
    assert room.session.rejections[0][0] == "alice"
    assert "v=0" in room.session.rejections[0][1]
    assert room.session.answers == []
    assert room.participant.errors.get("bad_offer") == 1


async def test_an_offer_from_another_bot_is_ignored(room: Room) -> None:
    pc, sdp = await browser_offer()
    try:
        room.session.push(RemoteOffer("bot2", sdp))
        await until(lambda: room.participant.errors.get("offer_from_bot") == 1, "the bot's offer refused")
        assert room.session.answers == [] and "bot2" not in room.engine.participants
    finally:
        await pc.close()


async def test_a_peer_that_leaves_is_forgotten(room: Room) -> None:
    await until(lambda: "host" in room.engine.participants, "the host")
    room.session.push(PeerLeft("host"))
    await until(lambda: "host" not in room.engine.participants, "the host removed")
    assert room.participant.router.hosts() == []


async def test_analysis_opt_out_over_the_data_channel(room: Room) -> None:
    messages: list[Any] = [
        json.dumps({"type": "analysis", "enabled": False}),
        json.dumps({"type": "analysis", "enabled": "no"}),  # not a bool: ignored
        "not json",
        b"bytes",
    ]
    for m in messages:
        room.participant._on_channel_message("alice", m)
    assert [c for c in room.engine.calls if c[0] == "analysis"] == [("analysis", "alice", False)]

"""The client library: helpers, candidate conversion, event flow, and a real aiortc handshake."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCIceCandidate, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from bot.webrtc.ice import candidate_from_json, candidate_to_json
from signaling.base import (
    Disconnected,
    PeerJoined,
    RemoteAnswer,
    RemoteCandidate,
    RemoteOffer,
    SessionClosed,
    SignalingSession,
)
from signaling.client import (
    SignalingClient,
    SignalingHTTPError,
    create_room,
    mint_invite,
)

BROWSER_CANDIDATE = {
    "candidate": ("candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.2 rport 46154"),
    "sdpMid": "0",
    "sdpMLineIndex": 0,
    "usernameFragment": "aB3d",
}


# --- candidate conversion -----------------------------------------------------------------------


def test_candidate_from_browser_json() -> None:
    c = candidate_from_json(BROWSER_CANDIDATE)
    assert c is not None
    assert (c.foundation, c.component, c.protocol, c.priority) == ("842163049", 1, "udp", 1677729535)
    assert (c.ip, c.port, c.type) == ("203.0.113.7", 46154, "srflx")
    assert (c.relatedAddress, c.relatedPort) == ("10.0.0.2", 46154)
    assert (c.sdpMid, c.sdpMLineIndex) == ("0", 0)


def test_candidate_roundtrip() -> None:
    c = candidate_from_sdp("1 1 UDP 2130706431 127.0.0.1 50000 typ host")
    c.sdpMid, c.sdpMLineIndex = "0", 0
    wire = candidate_to_json(c)
    assert wire == {
        "candidate": "candidate:1 1 UDP 2130706431 127.0.0.1 50000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    assert candidate_from_json(wire) == c


@pytest.mark.parametrize("wire", [None, {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}])
def test_end_of_candidates(wire: Any) -> None:
    assert candidate_from_json(wire) is None


def test_garbage_candidate_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        candidate_from_json({"candidate": "candidate:1 2 3", "sdpMid": "0"})


# --- helpers and session behaviour -------------------------------------------------------------


async def test_rest_helpers_raise_http_errors(server: Any) -> None:
    room_id, host_token = await create_room(server.url, "r")
    with pytest.raises(SignalingHTTPError) as err:
        await mint_invite(server.url, room_id, host_token, "host")  # type: ignore[arg-type]
    assert (err.value.status, err.value.code) == (400, "bad_field")
    with pytest.raises(SignalingHTTPError) as err:
        await mint_invite(server.ws_url, "other-room", host_token, "bot")  # ws:// base is accepted too
    assert err.value.code == "token_wrong_room"


async def test_client_is_a_signaling_session(room: Any) -> None:
    # The http:// base works as well as ws://…/ws.
    client = await SignalingClient.connect(room.server.url, room.id, room.host_token, "h", "H", "host")
    try:
        assert isinstance(client, SignalingSession)
        assert client.room == room.id
    finally:
        await client.close()


async def test_events_end_with_disconnected_and_sends_then_fail(room: Any, join: Any, events: Any) -> None:
    alice = await join(room, "alice", "participant")
    await alice.close()
    assert await events.next(alice) == Disconnected("client_closed")
    with pytest.raises(SessionClosed):
        await alice.send_offer("x", "v=0")
    with pytest.raises(StopAsyncIteration):
        await events.next(alice)


async def test_small_event_queue_applies_backpressure_without_dropping(room: Any, join: Any, events: Any) -> None:
    alice = await join(room, "alice", "participant")
    token = await room.invite("bot")
    bot = await SignalingClient.connect(room.server.ws_url, room.id, token, "bot", "", "bot", queue_size=2)
    try:
        assert await events.next(bot) == PeerJoined("alice", "alice", "participant", False, False)
        for i in range(50):
            await alice.send_offer("bot", f"v=0 #{i}")
        for i in range(50):
            assert await events.next(bot) == RemoteOffer("alice", f"v=0 #{i}")
    finally:
        await bot.close()


# --- a real WebRTC handshake through the server --------------------------------------------------


def split_candidates(sdp: str) -> tuple[str, list[RTCIceCandidate]]:
    """Take the candidates out of an aiortc SDP so that they can be trickled like a browser does."""
    kept: list[str] = []
    found: list[RTCIceCandidate] = []
    mid: str | None = None
    index = -1
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        if line.startswith("a=candidate:"):
            c = candidate_from_sdp(line[len("a=candidate:") :])
            c.sdpMid, c.sdpMLineIndex = mid, index
            found.append(c)
        elif line != "a=end-of-candidates":
            kept.append(line)
    return "\r\n".join(kept) + "\r\n", found


async def trickle(pc: RTCPeerConnection, events: Any, client: SignalingClient) -> None:
    """Apply the peer's trickled candidates until its end-of-candidates."""
    while True:
        event = await events.expect(client, RemoteCandidate)
        candidate = candidate_from_json(event.candidate)
        await pc.addIceCandidate(candidate)
        if candidate is None:
            return


async def test_aiortc_datachannel_through_the_server(
    room: Any, join: Any, events: Any, loopback_ice: RTCConfiguration
) -> None:
    host = await join(room, "host", "host")
    bot = await join(room, "bot", "bot")
    await events.expect(host, PeerJoined)
    await events.expect(bot, PeerJoined)

    caller, callee = RTCPeerConnection(loopback_ice), RTCPeerConnection(loopback_ice)
    try:
        channel = caller.createDataChannel("results")
        reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        @channel.on("open")
        def on_open() -> None:
            channel.send("hello bot")

        @channel.on("message")
        def on_reply(message: str) -> None:
            if not reply.done():
                reply.set_result(message)

        @callee.on("datachannel")
        def on_datachannel(remote: Any) -> None:
            @remote.on("message")
            def on_message(message: str) -> None:
                remote.send(f"echo: {message}")

        # Caller (host side): offer without candidates, then trickle them over the signaling server.
        await caller.setLocalDescription(await caller.createOffer())
        offer_sdp, offer_candidates = split_candidates(caller.localDescription.sdp)
        assert offer_candidates and all(c.ip == "127.0.0.1" for c in offer_candidates)
        await host.send_offer("bot", offer_sdp)
        for c in offer_candidates:
            await host.send_candidate("bot", candidate_to_json(c))
        await host.send_candidate("bot", None)

        # Callee (bot side): answer-only, as the bot does.
        offer = await events.expect(bot, RemoteOffer)
        assert offer.peer_id == "host"
        await callee.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        await trickle(callee, events, bot)
        await callee.setLocalDescription(await callee.createAnswer())
        answer_sdp, answer_candidates = split_candidates(callee.localDescription.sdp)
        await bot.send_answer("host", answer_sdp)
        for c in answer_candidates:
            await bot.send_candidate("host", candidate_to_json(c))
        await bot.send_candidate("host", None)

        answer = await events.expect(host, RemoteAnswer)
        await caller.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
        await trickle(caller, events, host)

        async with asyncio.timeout(30):
            assert await reply == "echo: hello bot"
        assert caller.connectionState == "connected"
    finally:
        await caller.close()
        await callee.close()

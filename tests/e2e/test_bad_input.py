"""Bad input gets a clear error and leaves everyone else unharmed."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from bot.contrib.simulated import SimulatedParticipant
from signaling.base import JoinRejected, SignalingError
from signaling.client import SignalingClient
from signaling.tokens import TokenSigner


def own(sim: SimulatedParticipant) -> list:
    return [r for r in sim.results if r.message.get("participantId") == sim.participant_id]


async def keeps_getting_results(meeting, sim: SimulatedParticipant, n: int = 3) -> None:
    start = len(own(sim))
    await meeting.wait_for(
        lambda: len(own(sim)) >= start + n, timeout=10, what=f"{sim.participant_id} keeps getting results"
    )


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda m, signer: TokenSigner(m.secret, clock=lambda: time.time() - 3600).mint(m.room, "bot", 60), "expired"),
        (lambda m, signer: TokenSigner(b"another-secret-of-32-bytes......").mint(m.room, "bot", 60), "bad_signature"),
        (lambda m, signer: "not-a-token", "malformed"),
        (lambda m, signer: signer.mint("some-other-room", "bot", 60), "wrong_room"),
    ],
)
async def test_bot_with_a_bad_token_is_refused_clearly(meeting, make_token, code) -> None:
    token = make_token(meeting, TokenSigner(meeting.secret))
    with pytest.raises(JoinRejected) as err:
        await SignalingClient.connect(meeting.server.ws_url, meeting.room, token, "bot-2", "Bot", "bot")
    assert code in str(err.value)


async def test_malformed_and_oversized_signaling_messages_harm_no_one(meeting) -> None:
    good = await meeting.add("alice", clip=0)
    await meeting.wait_for(lambda: len(own(good)) >= 2, what="alice's results")
    rogue = await SignalingClient.connect(
        meeting.server.ws_url,
        meeting.room,
        await _invite(meeting),
        "mallory",
        "Mallory",
        "participant",
    )
    await rogue.send_raw("{not json")
    await rogue.send_raw('{"type":"offer","to":"bot"}')  # missing sdp
    errors = []
    async for ev in rogue.events():
        if isinstance(ev, SignalingError):
            errors.append(ev.code)
        if len(errors) == 2:
            break
    assert len(errors) == 2
    await rogue.send_raw('{"type":"ping","pad":"' + "x" * 400_000 + '"}')  # oversized: the server closes it
    await keeps_getting_results(meeting, good)
    with contextlib.suppress(Exception):
        await rogue.close()


async def test_garbage_sdp_is_rejected_and_the_sender_can_retry(meeting) -> None:
    good = await meeting.add("alice", clip=0)
    await meeting.wait_for(lambda: len(own(good)) >= 2, what="alice's results")
    rogue = await SignalingClient.connect(
        meeting.server.ws_url, meeting.room, await _invite(meeting), "mallory", "M", "participant"
    )
    await rogue.send_offer("bot", "v=0\r\nthis is not an SDP\r\n")
    participant = meeting.service.participant
    await meeting.wait_for(lambda: participant.errors.get("bad_offer", 0) >= 1, what="the bad offer to be counted")
    # The offerer is told why, instead of waiting for an answer that never comes.
    told = None
    async with asyncio.timeout(20):
        async for ev in rogue.events():
            if isinstance(ev, SignalingError) and ev.code == "offer_rejected":
                told = ev
                break
    assert told is not None and told.message
    await keeps_getting_results(meeting, good)
    await rogue.close()
    # A participant whose first offer was garbage can still join properly afterwards.
    retry = await meeting.add("mallory", clip=1)
    await meeting.wait_for(lambda: len(own(retry)) >= 2, what="results after a proper offer")


async def test_a_peer_that_vanishes_mid_stream_does_not_stop_the_others(meeting) -> None:
    stay = await meeting.add("alice", clip=0)
    gone = await meeting.add("bob", clip=1)
    await meeting.wait_for(lambda: len(own(gone)) >= 2 and len(own(stay)) >= 2, what="results")
    # Crash: the media connection and the signaling socket die without a goodbye.
    assert gone.pc is not None and gone.session is not None
    await gone.pc.close()
    await gone.session._ws.close()  # simulate an abrupt disconnect
    engine = meeting.service.engine
    await meeting.wait_for(lambda: "bob" not in engine.participants, timeout=10, what="bob's state to be freed")
    await keeps_getting_results(meeting, stay)


async def test_an_undecodable_frame_is_counted_and_harms_nothing(meeting) -> None:
    sim = await meeting.add("alice", clip=0)
    await meeting.wait_for(lambda: len(own(sim)) >= 2, what="results")
    engine = meeting.service.engine
    for _ in range(5):
        engine.on_video_frame("alice", object(), 0.0)  # not a frame at all
        await asyncio.sleep(0.25)
    st = engine.participants["alice"]
    assert st.counters.get("face_bad_frame", 0) >= 1
    await keeps_getting_results(meeting, sim)


async def test_renegotiation_adds_the_camera_later(meeting) -> None:
    sim = await meeting.add("alice", clip=0, send_video=False)
    await meeting.wait_for(lambda: len(own(sim)) >= 2, what="audio-only results")
    assert all(r.message["result"]["modality"] == "audio_only" for r in own(sim))
    t = time.time()
    await sim.add_video()
    await meeting.wait_for(
        lambda: any(r.arrived_wall > t and r.message["result"]["modality"] == "both" for r in own(sim)),
        timeout=10,
        what="profile both after adding the camera",
    )


async def _invite(meeting) -> str:
    from signaling.client import mint_invite

    return await mint_invite(meeting.server.url, meeting.room, meeting.host_token, "participant")

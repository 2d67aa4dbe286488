"""The product's main job over real aiortc peers on loopback: join, analyse, route results back."""

from __future__ import annotations

import asyncio
import time

from bot.contrib.simulated import ReceivedResult, SimulatedParticipant


def own(sim: SimulatedParticipant) -> list[ReceivedResult]:
    return [r for r in sim.results if r.message.get("participantId") == sim.participant_id]


def rate(results: list[ReceivedResult], since: float) -> float:
    window = [r for r in results if r.arrived_wall >= since]
    if len(window) < 2:
        return 0.0
    return (len(window) - 1) / (window[-1].arrived_wall - window[0].arrived_wall)


async def test_three_participants_get_their_own_results_and_the_host_sees_all(meeting) -> None:
    host = await meeting.add("alice", role="host", clip=0)
    bob = await meeting.add("bob", clip=1)
    carol = await meeting.add("carol", clip=2)
    sims = [host, bob, carol]
    await meeting.wait_for(lambda: all(len(own(s)) >= 3 for s in sims), what="first results for everyone")
    start = time.time()
    await asyncio.sleep(6.0)
    for sim in sims:
        results = own(sim)
        assert rate(results, start) >= 3.0, (
            sim.participant_id,
            rate(results, start),
            meeting.service.telemetry.stats(),
        )
        assert all(r.via == "datachannel" for r in results)
        msg = results[-1].message
        assert msg["event"] == "emotion.result" and msg["participantId"] == sim.participant_id
        assert set(msg["result"]) == {"emotion", "confidence", "probs", "modality", "anomaly", "anomalyScore"}
        assert msg["result"]["modality"] in ("both", "audio_only", "video_only")
        assert isinstance(msg["seq"], int) and msg["bundleId"].startswith("hb-") and isinstance(msg["trained"], bool)
        assert msg["mediaTime"] is not None and msg["capturedAt"] <= msg["ts"]
        seqs = [r.message["seq"] for r in results]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # A non-host never sees anyone else's results; the host sees everyone's.
    for sim in (bob, carol):
        assert {r.message["participantId"] for r in sim.results} == {sim.participant_id}
    assert {r.message["participantId"] for r in host.results} == {"alice", "bob", "carol"}
    # Faces were found in the real clips and both modalities were used.
    stats = meeting.service.telemetry.stats()
    for p in stats["participants"]:
        assert p["counters"].get("faces", 0) > 0, p
    assert any(r.message["result"]["modality"] == "both" for r in own(bob))


async def test_camera_toggle_switches_profile_within_a_second(meeting) -> None:
    sim = await meeting.add("dave", clip=0)
    await meeting.wait_for(
        lambda: any(r.message["result"]["modality"] == "both" for r in own(sim)), what="profile both"
    )
    t_off = time.time()
    await sim.set_camera(False)
    await meeting.wait_for(
        lambda: any(r.arrived_wall > t_off and r.message["result"]["modality"] == "audio_only" for r in own(sim)),
        timeout=5,
        what="audio_only after camera off",
    )
    first_audio_only = next(
        r for r in own(sim) if r.arrived_wall > t_off and r.message["result"]["modality"] == "audio_only"
    )
    assert first_audio_only.arrived_wall - t_off <= 1.0
    # No result after the switch may still claim the face.
    later = [r for r in own(sim) if r.arrived_wall > first_audio_only.arrived_wall]
    assert all(r.message["result"]["modality"] == "audio_only" for r in later)
    t_on = time.time()
    await sim.set_camera(True)
    await meeting.wait_for(
        lambda: any(r.arrived_wall > t_on and r.message["result"]["modality"] == "both" for r in own(sim)),
        timeout=5,
        what="both after camera on",
    )


async def test_video_that_stops_without_notice_goes_audio_only(meeting) -> None:
    sim = await meeting.add("erin", clip=1)
    await meeting.wait_for(
        lambda: any(r.message["result"]["modality"] == "both" for r in own(sim)), what="profile both"
    )
    t_stop = time.time()
    await sim.set_camera(False, announce=False)  # frames stop; nothing is announced
    await meeting.wait_for(
        lambda: any(r.arrived_wall > t_stop and r.message["result"]["modality"] == "audio_only" for r in own(sim)),
        timeout=5,
        what="audio_only after the video stopped",
    )
    switch = next(r for r in own(sim) if r.arrived_wall > t_stop and r.message["result"]["modality"] == "audio_only")
    # 0.4 s staleness + one 0.3 s result period, plus loopback delivery and scheduling slack.
    assert switch.arrived_wall - t_stop <= 0.4 + 0.3 + 0.3


async def test_leaving_frees_the_participant_state(meeting) -> None:
    stay = await meeting.add("frank", clip=0)
    leave = await meeting.add("grace", clip=1)
    await meeting.wait_for(lambda: len(own(leave)) >= 2 and len(own(stay)) >= 2, what="results")
    engine = meeting.service.engine
    participant = meeting.service.participant
    assert "grace" in engine.participants and "grace" in participant.peers
    await leave.stop()
    await meeting.wait_for(
        lambda: (
            "grace" not in engine.participants
            and "grace" not in participant.peers
            and not participant.router.has_channel("grace")
        ),
        timeout=5,
        what="grace's state to be freed",
    )
    n = len(own(stay))
    await meeting.wait_for(lambda: len(own(stay)) >= n + 3, timeout=5, what="frank's results to continue")

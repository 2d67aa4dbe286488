"""The bot in a Hoovik meeting: real aiortc browser-like peers, the relay, and a host UI client.

The bot joins through :class:`signaling.hoovik.HoovikSession`, answers each peer's offer, analyses the
media it receives, and publishes results on its emotion-service endpoint, where a client playing
Hoovik's host UI (``auth.participantId = userId``) receives them.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import aiohttp
from hoovik_browser import HostUI
from hoovik_relay import HoovikRelay

from models.constants import CLASS_NAMES

RESULT_KEYS = {"emotion", "confidence", "probs", "modality", "anomaly", "anomalyScore"}
MODALITIES = {"both", "audio_only", "video_only"}


def check_shape(msg: dict[str, Any], user_id: str) -> None:
    """``emotion.result`` exactly as the original emits it (spec 2.3), plus our documented additions."""
    assert msg["participantId"] == user_id
    assert list(msg)[:4] == ["participantId", "result", "latencyMs", "ts"]
    assert "event" not in msg
    result = msg["result"]
    assert set(result) == RESULT_KEYS
    assert isinstance(result["emotion"], str) and result["emotion"] in CLASS_NAMES
    assert isinstance(result["confidence"], float) and 0.0 <= result["confidence"] <= 1.0
    assert set(result["probs"]) == set(CLASS_NAMES)
    assert result["modality"] in MODALITIES
    assert isinstance(result["anomaly"], bool)
    assert result["anomalyScore"] is None or isinstance(result["anomalyScore"], float)
    assert isinstance(msg["latencyMs"], int | float) and isinstance(msg["ts"], int)
    assert isinstance(msg["seq"], int) and msg["bundleId"].startswith("hb-")


def since(ui: HostUI, t: float, modality: str | None = None) -> list[dict[str, Any]]:
    return [m for at, m in ui.results if at > t and (modality is None or m["result"]["modality"] == modality)]


async def test_bot_analyses_every_peer_and_the_host_ui_gets_results_by_user_id(hoovik_meeting: Any) -> None:
    m = await hoovik_meeting()
    alice = await m.add_peer("u-alice", clip=0)
    # Bob sends his candidates before his offer: the bot must queue them until the offer is applied.
    bob = await m.add_peer("u-bob", clip=1, candidates_first=True)
    ui_alice = await m.host_ui("u-alice")
    ui_bob = await m.host_ui("u-bob")
    ui_bob_2 = await m.host_ui("u-bob")  # the original sends a pid's results to all of its sockets
    ui_nobody = await m.host_ui("u-nobody")
    uis = (ui_alice, ui_bob, ui_bob_2)
    await m.wait(lambda: all(len(ui.results) >= 3 for ui in uis), "results for every participant")
    await m.wait(lambda: any(r["result"]["modality"] == "both" for r in ui_alice.messages()), "both modalities")

    for ui, user_id in ((ui_alice, "u-alice"), (ui_bob, "u-bob"), (ui_bob_2, "u-bob")):
        assert ui.status[0]["participantId"] == user_id
        for msg in ui.messages():
            check_shape(msg, user_id)
    status = ui_alice.status[0]
    assert status["status"] == "connected" and status["seqLen"] == 10 and status["targetFps"] == 5
    assert status["modalityStaleSec"] == 0.4 and status["modalities"] == ["video_only", "audio_only", "both"]
    assert status["device"] in ("cpu", "cuda", "mps") and isinstance(status["ts"], int)
    assert ui_nobody.results == []

    # WebRTC is keyed by socket id; results are reported under the userId.
    engine, participant = m.service.engine, m.service.participant
    assert set(engine.participants) == {alice.sid, bob.sid}
    assert participant.result_ids == {alice.sid: "u-alice", bob.sid: "u-bob"}
    assert set(participant.peers) == {alice.sid, bob.sid}
    # Candidates were trickled as JSON strings and all of them were usable.
    bot_sid = m.session.self_id
    trickled = [msg for frm, to, msg in m.relay.relayed_signals if to == bot_sid and '"candidate"' in msg]
    assert trickled and all(isinstance(t, str) for t in trickled)
    assert "bad_candidate" not in participant.errors and "candidates_dropped" not in participant.errors
    # The bot answered with JSON strings and never offered.
    from_bot = [msg for frm, to, msg in m.relay.relayed_signals if frm == bot_sid]
    assert from_bot and all('"type":"answer"' in msg for msg in from_bot)
    assert not m.relay.rejected_signals
    # Telemetry lives on the same HTTP server.
    async with aiohttp.ClientSession() as http:
        for path, status_code in (("/health", 200), ("/ready", 200), ("/stats/json", 200), ("/stats", 200)):
            async with http.get(m.bot_url + path) as resp:
                assert resp.status == status_code, path
        async with http.get(m.bot_url + "/stats/json") as resp:
            stats = await resp.json()
    assert stats["active_participants"] == 2
    assert set(stats["emotionService"]["participantIds"]) >= {"u-alice", "u-bob", "u-nobody"}


async def test_mute_unmute_leave_rejoin_and_new_connections(hoovik_meeting: Any) -> None:
    m = await hoovik_meeting()
    carol = await m.add_peer("u-carol", clip=0)
    ui = await m.host_ui("u-carol")
    engine, participant = m.service.engine, m.service.participant
    await m.wait(lambda: any(r["result"]["modality"] == "both" for r in ui.messages()), "profile both")

    # Mute: audio transceiver recvonly + re-offer + update-participant-state → video_only.
    t_mute = time.time()
    await carol.mute()
    await m.wait(lambda: since(ui, t_mute, "video_only"), "video_only after mute")
    assert engine.participants[carol.sid].mic_on is False
    first_at = next(at for at, r in ui.results if at > t_mute and r["result"]["modality"] == "video_only")
    assert all(r["result"]["modality"] == "video_only" for r in since(ui, first_at))  # no audio once muted
    # Unmute: a new track, sendrecv, re-offer → both again.
    t_unmute = time.time()
    await carol.unmute()
    await m.wait(lambda: since(ui, t_unmute, "both"), "both after unmute")
    assert engine.participants[carol.sid].mic_on is True
    assert "bad_offer" not in participant.errors

    # Leave: everything held for her is freed.
    old_sid = carol.sid
    await carol.leave()
    await m.wait(
        lambda: old_sid not in engine.participants and old_sid not in participant.peers and not participant.result_ids,
        "state freed on leave",
    )
    # Rejoin with the same userId: a new socket id, results again under the same userId.
    await carol.join()
    assert carol.sid != old_sid
    t_rejoin = time.time()
    await m.wait(lambda: len(since(ui, t_rejoin)) >= 3, "results after rejoin")
    assert participant.result_ids == {carol.sid: "u-carol"}

    # Same userId from a new socket without leaving (a reloaded page): the old socket is replaced
    # without user-left, and the bot frees it anyway.
    old_sid = carol.sid
    await carol.rejoin(leave_first=False)
    t_replaced = time.time()
    await m.wait(lambda: old_sid not in engine.participants and carol.sid in participant.peers, "replacement")
    await m.wait(lambda: len(since(ui, t_replaced)) >= 3, "results after replacement")
    assert set(engine.participants) == {carol.sid}

    # A brand-new peer connection from the same socket (new ICE credentials and DTLS certificate, as
    # after an ICE restart or a teardown): the bot builds a new connection instead of failing.
    t_new = time.time()
    link = await carol.replace_connection(m.session.self_id)
    await m.wait(link.connected.is_set, "new connection up")
    await m.wait(lambda: len(since(ui, t_new)) >= 3, "results on the new connection")
    assert participant.errors.get("session_replaced", 0) >= 1
    assert set(engine.participants) == {carol.sid}


async def test_bot_rejoins_after_a_backend_restart_and_keeps_serving(hoovik_meeting: Any) -> None:
    m = await hoovik_meeting()
    dave = await m.add_peer("u-dave", clip=1)
    ui = await m.host_ui("u-dave")
    await m.wait(lambda: len(ui.results) >= 3, "results before the restart")
    old_bot_sid = m.session.self_id
    port, store = m.relay.port, m.relay.store
    await m.relay.stop(crash=True)
    restarted = HoovikRelay(store)
    await restarted.start(port)
    m.relay = restarted
    await m.wait(lambda: m.session.joins == 2, "bot rejoined")
    t_restart = time.time()
    # The bot's entry was replaced, not duplicated: no ghost bot in the meeting.
    bots = [e for e in restarted.entries(m.code).values() if e["meta"].get("bot")]
    assert [e["socketId"] for e in bots] == [m.session.self_id]
    assert old_bot_sid not in restarted.store.state[m.code]
    # The browser rejoined too and connected to the bot's new socket; results continue.
    await m.wait(lambda: dave.sid in m.service.participant.peers, "dave connected to the new bot socket")
    await m.wait(lambda: len(since(ui, t_restart)) >= 3, "results after the restart")
    assert set(m.service.engine.participants) == {dave.sid}
    for msg in ui.messages():
        check_shape(msg, "u-dave")


async def test_a_stock_browser_that_never_rejoins_keeps_getting_results_through_a_backend_restart(
    hoovik_meeting: Any,
) -> None:
    """Hoovik's frontend emits join-call once per page load: after a backend restart its socket
    reconnects, but it neither joins nor offers again. Its peer connection to the bot still works,
    so the bot must keep it (and keep analysing) instead of dropping every peer on its rejoin."""
    m = await hoovik_meeting()
    erin = await m.add_peer("u-erin", clip=0, rejoin_on_reconnect=False)
    ui = await m.host_ui("u-erin")
    await m.wait(lambda: len(ui.results) >= 3, "results before the restart")
    participant = m.service.participant
    old_sid = erin.sid
    link = erin.links[m.session.self_id]
    pc_before = participant.peers[old_sid].pc
    port, store = m.relay.port, m.relay.store
    t_crash = time.time()
    await m.relay.stop(crash=True)
    restarted = HoovikRelay(store)
    await restarted.start(port)
    m.relay = restarted
    await m.wait(lambda: m.session.joins == 2, "bot rejoined")
    await m.wait(lambda: erin.connects >= 2, "the browser's socket reconnected")
    t_rejoin = time.time()
    await m.wait(lambda: len(since(ui, t_rejoin + 1.0)) >= 5, "results keep coming after the restart")
    # The browser never re-joined nor re-offered: the same connection carries on.
    assert [sid for sid, _ in restarted.events_of("join-call")] == [m.session.self_id]
    assert not [s for s, _t, _m in restarted.relayed_signals if s != m.session.self_id]
    assert participant.peers[old_sid].pc is pc_before and link.pc.connectionState == "connected"
    assert set(m.service.engine.participants) == {old_sid}
    assert participant.result_ids == {old_sid: "u-erin"}
    times = [at for at, _ in ui.results if at > t_crash - 2.0]
    assert max(b - a for a, b in itertools.pairwise(times)) < 5.0

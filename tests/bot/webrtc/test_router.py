"""The result route: results about X go to X and to the room's hosts, to no one else, exactly once."""

from __future__ import annotations

import asyncio
import json

from bot.pipeline.results import EmotionResult
from bot.webrtc.router import MAX_BUFFERED_BYTES, ResultRouter
from tests.bot.webrtc.fakes import FakeChannel, FakeSession


def _result(pid: str, seq: int = 1) -> EmotionResult:
    return EmotionResult(
        participant_id=pid,
        seq=seq,
        emotion="happy",
        confidence=0.8,
        probs=(0.1, 0.5, 0.1, 0.1, 0.1, 0.1),
        modality="both",
        anomaly=False,
        anomaly_score=0.1,
        latency_ms=50.0,
        ts_ms=1000,
        media_time=1.0,
        captured_at_ms=950,
        bundle_id="test",
        trained=False,
    )


def _room(session: FakeSession | None = None) -> tuple[ResultRouter, dict[str, FakeChannel]]:
    router = ResultRouter(session)
    channels = {pid: FakeChannel() for pid in ("alice", "bob", "host1", "host2")}
    for pid, ch in channels.items():
        router.set_role(pid, "host" if pid.startswith("host") else "participant")
        router.attach(pid, ch)
    return router, channels


def _about(ch: FakeChannel) -> list[str]:
    return [json.loads(m)["participantId"] for m in ch.sent]


def test_a_result_goes_to_its_subject_and_the_hosts_only() -> None:
    router, ch = _room()
    router.route(_result("alice"))
    assert _about(ch["alice"]) == ["alice"]
    assert _about(ch["host1"]) == ["alice"] and _about(ch["host2"]) == ["alice"]
    assert ch["bob"].sent == []  # another participant never sees alice's result
    assert router.sent == 3


def test_a_host_gets_its_own_result_once() -> None:
    router, ch = _room()
    router.route(_result("host1"))
    assert _about(ch["host1"]) == ["host1"]
    assert _about(ch["host2"]) == ["host1"]
    assert ch["alice"].sent == [] and ch["bob"].sent == []


def test_the_message_carries_reduced_rate() -> None:
    router, ch = _room()
    router.route(_result("alice"))
    assert json.loads(ch["alice"].sent[0])["reducedRate"] is False


async def test_without_a_channel_the_subject_gets_it_through_signaling_and_hosts_on_theirs() -> None:
    session = FakeSession(result_relay_reaches_hosts=False)
    router, ch = _room(session)
    router.detach("alice")
    router.route(_result("alice"))
    await asyncio.sleep(0)
    assert [pid for pid, _ in session.results] == ["alice"]
    assert _about(ch["host1"]) == ["alice"] and _about(ch["host2"]) == ["alice"]
    assert ch["bob"].sent == []
    assert router.fallback_sent == 1


async def test_a_relay_that_reaches_the_hosts_is_not_doubled_on_their_channels() -> None:
    session = FakeSession(result_relay_reaches_hosts=True)
    router, ch = _room(session)
    ch["alice"].readyState = "closed"
    router.route(_result("alice"))
    await asyncio.sleep(0)
    assert [pid for pid, _ in session.results] == ["alice"]
    assert ch["host1"].sent == [] and ch["host2"].sent == []  # the server relays it to them


async def test_a_disconnected_relay_does_not_count_as_reaching_the_hosts() -> None:
    session = FakeSession(result_relay_reaches_hosts=True)
    session.connected = False
    router, ch = _room(session)
    router.detach("alice")
    router.route(_result("alice"))
    await asyncio.sleep(0)
    assert _about(ch["host1"]) == ["alice"]


def test_no_session_and_no_channel_drops_the_result() -> None:
    router, ch = _room(None)
    router.forget("alice")
    router.route(_result("alice"))
    assert router.dropped == 1
    assert _about(ch["host1"]) == ["alice"]  # the hosts still get it
    assert not router.has_channel("alice")


def test_a_congested_channel_drops_instead_of_queueing() -> None:
    router, ch = _room()
    ch["alice"].bufferedAmount = MAX_BUFFERED_BYTES + 1
    router.route(_result("alice"))
    assert ch["alice"].sent == [] and router.dropped == 1
    assert _about(ch["host1"]) == ["alice"]


def test_forgetting_a_host_stops_its_copies() -> None:
    router, ch = _room()
    router.forget("host2")
    router.route(_result("bob"))
    assert ch["host2"].sent == []
    assert router.hosts() == ["host1"]

"""A real meeting on the shipped starter bundle: trained results, the clips' emotions, telemetry."""

from __future__ import annotations

from collections import Counter

import aiohttp

from bot.contrib.simulated import SimulatedParticipant


def own(sim: SimulatedParticipant) -> list[dict]:
    return [r.message for r in sim.results if r.message.get("participantId") == sim.participant_id]


def _labels(sim: SimulatedParticipant) -> Counter[str]:
    return Counter(str(m["result"]["emotion"]) for m in own(sim))


async def test_a_starter_meeting_shows_the_clips_emotions_and_says_trained(starter_meeting) -> None:
    m = starter_meeting
    angry = await m.add("alice", role="host", clip=0)  # CREMA-D angry
    happy = await m.add("bob", clip=1)  # CREMA-D happy
    await m.wait_for(lambda: len(own(angry)) >= 25 and len(own(happy)) >= 25, timeout=60, what="25 results each")
    for sim in (angry, happy):
        for msg in own(sim):
            assert msg["trained"] is True and msg["bundleId"].startswith("hb-starter-"), msg
            assert set(msg["result"]["probs"]) == {"angry", "fearful", "disgust", "happy", "sad", "neutral/calm"}
    # The clip's emotion is the most frequent headline (the "most of the time").
    assert _labels(angry).most_common(1)[0][0] == "angry", _labels(angry)
    assert _labels(happy).most_common(1)[0][0] == "happy", _labels(happy)
    # Hosts see everyone's: the host received bob's results too.
    assert any(r.message.get("participantId") == "bob" for r in angry.results)

    port = m.service.http_port
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/stats/json") as resp:
            stats = await resp.json()
        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            metrics = await resp.text()
    model = stats["model"] if "model" in stats else stats.get("extra", {}).get("model")
    assert model is not None, stats
    assert model["family"] == "starter" and model["trained"] is True
    assert model["extractors"]["audio"]["name"] == "logmel-stats"
    assert "hoovik" in metrics and "alice" in metrics

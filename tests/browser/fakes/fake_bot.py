"""A stand-in for ``hoovik-bot join`` in the meeting-page tests: no models, no WebRTC.

It joins as the bot (argv as the launcher passes it: ``--signaling URL --room ID --http-port 0``,
token in ``$HOOVIK_BOT_TOKEN``) and sends scripted ``emotion.result`` messages through signaling
(the documented fallback path) about every person whose camera or microphone is on. What it sends
for each person is read, by name, from the JSON file ``$HOOVIK_FAKE_BOT_SCRIPT`` on every round,
so a test can change it while the bot runs. Offers are rejected: this bot receives no media.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from signaling.base import MediaState, PeerJoined, PeerLeft, RemoteOffer
from signaling.client import SignalingClient

CLASSES = ("angry", "fearful", "disgust", "happy", "sad", "neutral/calm")
KINDS: dict[str, dict[str, Any]] = {
    # The example: fearful highest at 29 %, neutral at 12 %, and the bot's neutral fallback.
    "fallback": {"emotion": "neutral/calm", "confidence": 0.29, "probs": [0.2, 0.29, 0.13, 0.14, 0.12, 0.12]},
    "happy": {"emotion": "happy", "confidence": 0.71, "probs": [0.05, 0.04, 0.03, 0.71, 0.06, 0.11]},
    # Smoothed label sad while this moment's scores lead with angry.
    "smoothed": {"emotion": "sad", "confidence": 0.52, "probs": [0.48, 0.05, 0.04, 0.03, 0.3, 0.1]},
}


def load_script() -> dict[str, Any]:
    path = os.environ.get("HOOVIK_FAKE_BOT_SCRIPT")
    if path and Path(path).exists():
        try:
            return dict(json.loads(Path(path).read_text()))
        except ValueError:
            return {}
    return {}


def result(pid: str, seq: int, spec: dict[str, Any], trained: bool) -> dict[str, Any]:
    kind = KINDS[spec.get("kind", "happy")]
    return {
        "event": "emotion.result",
        "participantId": pid,
        "result": {
            "emotion": kind["emotion"],
            "confidence": kind["confidence"],
            "probs": dict(zip(CLASSES, kind["probs"], strict=True)),
            "modality": spec.get("modality", "both"),
            "anomaly": False,
            "anomalyScore": 0.1,
        },
        "latencyMs": 50.0,
        "ts": int(time.time() * 1000),
        "seq": seq,
        "mediaTime": None,
        "capturedAt": int(time.time() * 1000),
        "bundleId": "hb-fake",
        "trained": trained,
        "reducedRate": bool(spec.get("reducedRate", False)),
        "fallback": kind is KINDS["fallback"],
    }


async def main() -> None:
    args = dict(zip(sys.argv[1::2], sys.argv[2::2], strict=False))
    session = await SignalingClient.connect(
        args["--signaling"], args["--room"], os.environ["HOOVIK_BOT_TOKEN"], "hoovik-bot", "Fake bot", "bot"
    )
    print("telemetry on http://127.0.0.1:1/stats", flush=True)
    people: dict[str, dict[str, Any]] = {}

    async def read() -> None:
        async for event in session.events():
            if isinstance(event, PeerJoined) and event.role != "bot":
                people[event.peer_id] = {"name": event.name, "media": event.mic or event.camera, "next": 0.0, "seq": 0}
            elif isinstance(event, PeerLeft):
                people.pop(event.peer_id, None)
            elif isinstance(event, MediaState) and event.peer_id in people:
                people[event.peer_id]["media"] = event.mic or event.camera
            elif isinstance(event, RemoteOffer):
                await session.send_offer_rejected(event.peer_id, "fake bot: no media")

    reader = asyncio.create_task(read())
    while not reader.done():
        script = load_script()
        now = time.monotonic()
        for pid, person in list(people.items()):
            spec = script.get("people", {}).get(person["name"], {})
            if not person["media"] or now < person["next"]:
                continue
            person["seq"] += 1
            person["next"] = now + 1.0 / float(spec.get("rate", 3.3))
            await session.send_result(pid, result(pid, person["seq"], spec, bool(script.get("trained", True))))
        await asyncio.sleep(0.02)


asyncio.run(main())

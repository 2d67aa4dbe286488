"""The result message the bot sends: the original ``emotion.result`` shape plus our additions.

Field names of the original are kept exactly (spec 2.3, including the camelCase ``anomalyScore``)
so that Hoovik's UI code can read our results; the additions are documented in docs/results.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from models.constants import CLASS_NAMES


@dataclass(frozen=True)
class EmotionResult:
    participant_id: str
    seq: int
    emotion: str
    confidence: float
    probs: tuple[float, ...] | None
    modality: str
    anomaly: bool | None
    anomaly_score: float | None
    latency_ms: float
    ts_ms: int
    media_time: float | None
    captured_at_ms: int | None
    bundle_id: str
    trained: bool
    error: str | None = None

    def to_message(self) -> dict[str, Any]:
        """The JSON object sent on the data channel (and through signaling as a fallback)."""
        probs = (
            {name: round(float(p), 4) for name, p in zip(CLASS_NAMES, self.probs, strict=True)}
            if self.probs is not None
            else None
        )
        msg: dict[str, Any] = {
            "event": "emotion.result",
            "participantId": self.participant_id,
            "result": {
                "emotion": self.emotion,
                "confidence": round(float(self.confidence), 4),
                "probs": probs,
                "modality": self.modality,
                "anomaly": self.anomaly,
                "anomalyScore": None if self.anomaly_score is None else round(float(self.anomaly_score), 6),
            },
            "latencyMs": round(float(self.latency_ms), 2),
            "ts": self.ts_ms,
            "seq": self.seq,
            "mediaTime": None if self.media_time is None else round(float(self.media_time), 4),
            "capturedAt": self.captured_at_ms,
            "bundleId": self.bundle_id,
            "trained": self.trained,
        }
        if self.error is not None:
            msg["error"] = self.error
        return msg

    def to_json(self) -> str:
        return json.dumps(self.to_message(), separators=(",", ":"))

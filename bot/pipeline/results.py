"""Result building: the result message the bot sends, and the one place that builds it from a prediction.

The message is the original ``emotion.result`` shape plus our additions. Field names of the
original are kept exactly (docs/results.md, "Message", including the camelCase ``anomalyScore``)
so that Hoovik's UI code can read our results; the additions are documented there too.

:class:`ResultStream` is one participant's sequence of results: EMA smoothing of the 4-dp
probabilities, ``seq`` numbers and the time fields. The live engine and replay both build their
results through it; they differ only in their clocks (wall clock and epoch ms live, the media clock
plus the file's offset in replay), which they pass in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.constants import CLASS_NAMES, NEUTRAL_LABEL
from models.predictor import Prediction
from models.smoothing import EmaSmoother


@dataclass
class BundleInfo:
    """What every result says about the models that produced it."""

    bundle_id: str
    trained: bool


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
    # The live engine had this participant below its target result rate (throttled or skipped
    # steps) when the result was emitted; replay never falls behind, so it is always false there.
    reduced_rate: bool = False
    # The label is the neutral fallback: the smoothed top score was below the bundle's confidence
    # threshold (the page says "too uncertain" instead of contradicting the bars).
    fallback: bool = False
    # Live only: the step's start to the result (features + inference), the original's "latencyMs"
    # definition; ``latency_ms`` here also counts the newest input's age at the step's start.
    processing_ms: float | None = None

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
            "reducedRate": self.reduced_rate,
            "fallback": self.fallback,
        }
        if self.processing_ms is not None:
            msg["processingMs"] = round(float(self.processing_ms), 2)
        if self.error is not None:
            msg["error"] = self.error
        return msg

    def to_json(self) -> str:
        return json.dumps(self.to_message(), separators=(",", ":"))


def ms_truncated(t: float) -> int:
    """Seconds to integer ms, truncating (the live engine's epoch timestamps)."""
    return int(t * 1000)


def ms_rounded(t: float) -> int:
    """Seconds to integer ms, rounding (replay's media-clock timestamps)."""
    return round(t * 1000.0)


class ResultStream:
    """One participant's results: EMA smoothing, ``seq`` numbers and the message's time fields.

    ``offset`` is added to every time before it goes into the message (replay: the file's session
    offset; live: 0), and ``to_ms`` turns seconds into the integer ms of ``ts`` and ``capturedAt``.
    """

    def __init__(
        self,
        participant_id: str,
        smoother: EmaSmoother,
        bundle: BundleInfo,
        *,
        offset: float = 0.0,
        to_ms: Callable[[float], int] = ms_truncated,
    ) -> None:
        self.participant_id = participant_id
        self.smoother = smoother
        self.bundle = bundle
        self.offset = offset
        self.to_ms = to_ms
        self.seq = 0

    def build(
        self,
        pred: Prediction,
        profile: str,
        used: tuple[tuple[float, float], ...],
        *,
        now: float,
        smooth_at: float,
        reduced_rate: bool = False,
        processing_s: float | None = None,
    ) -> EmotionResult:
        """The result of one prediction.

        ``profile``: the modalities used; ``used``: ``(captured, media)`` of the newest input of each
        (the newest pair is reported); ``now``: the emission time on the result clock (latency is
        ``now`` minus the newest input's capture); ``smooth_at``: the time the EMA sees.
        """
        ok = pred.status == "ok" and pred.probs is not None
        # The original smooths the 4-dp probabilities it emits; so do we (golden EMA parity).
        probs = [round(float(p), 4) for p in pred.probs] if ok and pred.probs is not None else None
        smoothed = self.smoother.update(probs, smooth_at)
        self.seq += 1
        newest_captured, newest_media = max(used) if used else (now, None)
        anomaly = pred.anomaly if ok else None
        return EmotionResult(
            participant_id=self.participant_id,
            seq=self.seq,
            emotion=smoothed.label if ok else NEUTRAL_LABEL,
            confidence=smoothed.score if ok else 0.0,
            probs=tuple(float(p) for p in pred.probs) if ok and pred.probs is not None else None,
            modality=profile,
            anomaly=bool(anomaly.is_anomaly) if anomaly is not None else None,
            anomaly_score=float(anomaly.score) if anomaly is not None else None,
            latency_ms=max(0.0, (now - newest_captured) * 1000.0),
            ts_ms=self.to_ms(self.offset + now),
            media_time=None if newest_media is None else self.offset + newest_media,
            captured_at_ms=self.to_ms(self.offset + newest_captured),
            bundle_id=self.bundle.bundle_id,
            trained=self.bundle.trained,
            error=None if ok else (pred.error or "prediction failed"),
            reduced_rate=reduced_rate,
            fallback=ok and smoothed.score < self.smoother.confidence_threshold,
            processing_ms=None if processing_s is None else processing_s * 1000.0,
        )

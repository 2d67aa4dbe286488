"""The live engine's statistics: per participant (for /stats and the pages) and for the whole engine.

Rates are computed over the last ``RATE_WINDOW_S``; a participant below ``BELOW_TARGET`` of the
step rate is shown as "reduced rate", on /stats and in every result it is sent (``reducedRate``,
docs/results.md).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.live.state import ParticipantState
from bot.pipeline.cpu import cpu_by_stage

if TYPE_CHECKING:
    from bot.live.engine import Engine

# Window over which per-participant rates are computed for telemetry.
RATE_WINDOW_S = 5.0
# A participant below this share of the step rate is shown as "reduced rate" (telemetry, pages).
BELOW_TARGET = 0.9


def below_target(st: ParticipantState, now: float, interval: float) -> bool:
    """Analysed, with a live modality, present for a whole rate window, yet under 90 % of the
    step rate: the engine is throttling or skipping this participant's steps."""
    if not st.analysed or st.profile is None or now - st.added_at < RATE_WINDOW_S:
        return False
    return rate(st.result_times, now) < BELOW_TARGET * (1.0 / interval)


def participant_stats(engine: Engine, st: ParticipantState) -> dict[str, Any]:
    now = engine.clock()
    lat = np.asarray(st.latencies_ms, dtype=np.float64)
    drops = {k: v for k, v in st.counters.items() if k.endswith("_dropped") or k == "frames_skipped"}
    return {
        "participantId": st.pid,
        "name": st.name,
        "role": st.role,
        "profile": st.profile,
        "profilesSeen": sorted(st.profiles_seen),
        "mic": st.mic_on,
        "camera": st.camera_on,
        "analysed": st.analysed,
        "phaseSlot": st.slot,
        "samplingFps": round(engine.throttle.fps, 3),
        "sampledFps": rate(st.sample_times, now),
        "queues": {
            "face": st.face_in_flight,
            "audio": st.audio_in_flight,
            "inference": st.inference_in_flight,
        },
        "faceInFlight": st.face_in_flight,
        "faceSeq": len(st.features.face_seq),
        "audioSeq": len(st.features.audio_seq),
        "speechProb": None if st.speech_prob is None else round(st.speech_prob, 3),
        "vadGated": st.counters.get("vad_gated", 0),
        "drops": drops,
        "resultsPerSecond": rate(st.result_times, now),
        "reducedRate": below_target(st, now, engine.interval),
        "latencyMs": percentiles(lat),
        "counters": dict(st.counters),
    }


def engine_snapshot(engine: Engine) -> dict[str, Any]:
    t = engine.throttle
    now = engine.clock()
    participants = [participant_stats(engine, st) for st in engine.participants.values()]
    return {
        "participants": participants,
        "participantsBelowTarget": sum(1 for p in participants if p["reducedRate"]),
        "targetResultsPerSecond": round(1.0 / engine.interval, 3),
        "queues": {
            "face": engine.face_pool.depth,
            "audio": engine.audio_pool.depth,
            "inference": engine.inference_pool.depth,
        },
        "pools": {
            "face": engine.face_pool.snapshot(),
            "audio": engine.audio_pool.snapshot(),
            "inference": engine.inference_pool.snapshot(),
        },
        # CPU seconds of the bot process's threads by stage, their library threads included
        # (the predictor's child process is in pools.inference.cpuS).
        "cpuByStage": cpu_by_stage(),
        "samplingFps": t.fps,
        "throttle": {
            "fps": round(t.fps, 3),
            "ceilingFps": round(t.target_fps, 3),
            "floorFps": t.min_fps,
            "queueLimit": t.queue_limit,
            "throttled": t.throttled,
            "decreases": t.decreases,
            "decreaseCauses": dict(t.causes),
            "recoveries": t.recoveries,
            "events": [e.to_dict() for e in list(t.events)[-20:]],
        },
        # How late the asyncio loop (WebRTC, consent checks, the tick) runs its timers.
        "loop": engine.loop_lag.snapshot(now),
        "vad": {"enabled": engine.vad_enabled, "threshold": engine.config.vad_threshold},
        # Torch threads a Wav2Vec2 forward may use now (every core while the bot is light).
        "intraOp": engine.intra_op.snapshot() if engine.intra_op is not None else None,
        "counters": dict(engine.counters),
    }


def rate(times: deque[float], now: float) -> float:
    """Events per second over the last RATE_WINDOW_S, from the event times."""
    recent = [t for t in times if now - t <= RATE_WINDOW_S]
    if len(recent) < 2:
        return 0.0
    span = recent[-1] - recent[0]
    return round((len(recent) - 1) / span, 3) if span > 0 else 0.0


def percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {
        "n": int(values.size),
        "p50": round(float(np.percentile(values, 50)), 1),
        "p95": round(float(np.percentile(values, 95)), 1),
        "max": round(float(values.max()), 1),
    }

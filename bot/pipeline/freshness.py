"""Which modalities are live: the one freshness rule shared by the live engine and replay.

A modality is live when it is announced on, its stream delivered a frame within
``modality_stale_s`` (0.4 s, docs/engine.md, "Freshness and profiles"), and it has a recent enough feature. The
profile follows:
``both``, ``audio_only``, ``video_only``, or none (no result).
"""

from __future__ import annotations


def stream_fresh(enabled: bool, last_frame: float | None, now: float, stale_s: float) -> bool:
    """The stream is announced on and delivered a frame within ``stale_s``."""
    return enabled and last_frame is not None and now - last_frame <= stale_s


def modality_live(
    enabled: bool,
    last_frame: float | None,
    last_feature: float | None,
    n_features: int,
    now: float,
    stale_s: float,
    max_age: float,
) -> bool:
    """A modality is live when its stream is fresh and its newest feature is at most ``max_age`` old
    (:func:`face_max_age`, :func:`audio_max_age`)."""
    if not stream_fresh(enabled, last_frame, now, stale_s) or n_features == 0 or last_feature is None:
        return False
    return now - last_feature <= max_age


def face_max_age(stale_s: float, sampling_fps: float) -> float:
    """Under throttling a sampled face vector arrives only every 1/fps s, so the face vector may be
    ``max(stale_s, 2.5 / fps)`` old; the stream itself must still be fresh within ``stale_s``."""
    return max(stale_s, 2.5 / sampling_fps)


def audio_max_age(stale_s: float, interval_s: float) -> float:
    """An embedding (of speech) may be one step older than the stream. A window skipped as silence
    (or by the VAD) makes no embedding, so a silent participant's audio goes stale exactly like a
    dropped stream."""
    return stale_s + interval_s


def profile_of(face: bool, audio: bool) -> str | None:
    if face and audio:
        return "both"
    if audio:
        return "audio_only"
    if face:
        return "video_only"
    return None

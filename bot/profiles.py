"""Which modalities are live: the one freshness rule shared by the live engine and replay.

A modality is live when it is announced on, its stream delivered a frame within
``modality_stale_s`` (0.4 s, spec 2.4), and it has a recent enough feature. The profile follows:
``both``, ``audio_only``, ``video_only``, or none (no result).
"""

from __future__ import annotations


def stream_fresh(enabled: bool, last_frame: float | None, now: float, stale_s: float) -> bool:
    """The stream is announced on and delivered a frame within ``stale_s``."""
    return enabled and last_frame is not None and now - last_frame <= stale_s


def face_live(
    enabled: bool,
    last_frame: float | None,
    last_feature: float | None,
    n_features: int,
    now: float,
    stale_s: float,
    sampling_fps: float,
) -> bool:
    """Face is live when its stream is fresh and a face vector arrived recently.

    Under throttling a sampled face vector arrives only every 1/fps s, so the feature age
    allowed is ``max(stale_s, 2.5 / fps)``; the stream itself must still be fresh within ``stale_s``.
    """
    if not stream_fresh(enabled, last_frame, now, stale_s) or n_features == 0 or last_feature is None:
        return False
    return now - last_feature <= max(stale_s, 2.5 / sampling_fps)


def audio_live(
    enabled: bool,
    last_frame: float | None,
    last_feature: float | None,
    n_features: int,
    now: float,
    stale_s: float,
    interval_s: float,
) -> bool:
    """Audio is live when its stream is fresh and an embedding (of speech) is recent.

    A window skipped as silence (or by the VAD) makes no embedding, so a silent participant's audio
    goes stale exactly like a dropped stream.
    """
    if not stream_fresh(enabled, last_frame, now, stale_s) or n_features == 0 or last_feature is None:
        return False
    return now - last_feature <= stale_s + interval_s


def profile_of(face: bool, audio: bool) -> str | None:
    if face and audio:
        return "both"
    if audio:
        return "audio_only"
    if face:
        return "video_only"
    return None

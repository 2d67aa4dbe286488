"""Which modalities are live: the one freshness rule shared by the live engine and replay.

A modality is live when it is announced on, its stream delivered a frame within
``modality_stale_s`` (0.4 s, docs/engine.md, "Freshness and profiles"), and its newest feature
still stands for the stream. The profile follows: ``both``, ``audio_only``, ``video_only``, or
none (no result).

Whether the newest feature still stands is judged by what the engine has *seen*, never by how late
a step runs (docs/engine.md, "Profiles and speakers under load"): a feature is current until an
attempt made after it came back without one (the VAD gated the window, the window was digital
silence, no face in the frame, an error). A step that was skipped, a face the throttle did not
sample, a window or a face still in flight: none of them is evidence that the stream stopped
carrying a voice or a face, so none of them ages the feature. Only once misses have been seen does
time count, by the same limits as before (so at normal load, with an attempt at every step, the
rule is exactly the old age rule).
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
    max_age: float,
    missed: bool,
) -> bool:
    """The stream is fresh and the newest face vector is current (no attempt since came back
    without a face: ``missed`` false), or at most ``max_age`` old (:func:`face_max_age`).

    The age limit only matters after a miss: a throttled or skipped step takes no frame, and a face
    still in flight is no evidence that the face left the picture.
    """
    if not stream_fresh(enabled, last_frame, now, stale_s) or n_features == 0 or last_feature is None:
        return False
    return not missed or now - last_feature <= max_age


def audio_live(
    enabled: bool,
    last_frame: float | None,
    n_features: int,
    now: float,
    stale_s: float,
    first_miss: float | None,
    last_miss: float | None,
) -> bool:
    """The stream is fresh, there is an embedding, and the windows seen since it without speech
    (``first_miss``..``last_miss``, step times) span at most ``stale_s``.

    At an attempt every period this equals "the newest embedding is at most ``stale_s`` + one
    period old" (:func:`audio_max_age`), the first miss being one period after the embedding. When
    steps run late or are skipped, or the current window is still in flight, it judges only the
    windows that came back: one window without speech among sparse steps is a pause, not silence.
    """
    if not stream_fresh(enabled, last_frame, now, stale_s) or n_features == 0:
        return False
    return first_miss is None or last_miss is None or last_miss - first_miss <= stale_s


def face_max_age(stale_s: float, sampling_fps: float) -> float:
    """Under throttling a sampled face vector arrives only every 1/fps s, so once a frame without
    a face was seen, the face vector may be ``max(stale_s, 2.5 / fps)`` old; the stream itself must
    still be fresh within ``stale_s``."""
    return max(stale_s, 2.5 / sampling_fps)


def audio_max_age(stale_s: float, interval_s: float) -> float:
    """At an attempt every period, an embedding (of speech) may be one step older than the stream:
    windows without speech (VAD, digital silence) make none, so a participant who stopped speaking
    goes to ``video_only`` like a dropped stream, ``stale_s`` after the first silent window."""
    return stale_s + interval_s


def profile_of(face: bool, audio: bool) -> str | None:
    if face and audio:
        return "both"
    if audio:
        return "audio_only"
    if face:
        return "video_only"
    return None

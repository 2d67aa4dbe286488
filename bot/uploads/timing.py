"""Per-participant timing of uploads: the frame gate and the one media clock of both streams.

Pure state machines driven by the caller's monotonic time, so tests run them with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# A frame is admitted when a token is available; tokens accrue at the target rate up to this many,
# so a client sending at exactly the target rate keeps every frame despite arrival jitter (up to
# 0.4 s is absorbed; the stock UI shuffles its participants with 80 ms gaps between them), while a
# faster client is held to the target rate over any window (plus this burst once).
FRAME_BURST = 3.0
# How far the audio timeline (advanced by sample count) may lag the arrival time of its chunks
# before it is re-anchored: more than this is a gap (mic off, a stalled client), not jitter.
AUDIO_MAX_LAG_S = 0.1
_EPS = 1e-6


@dataclass
class FrameGate:
    """A token bucket at ``fps`` with a burst of ``burst`` frames (the original's 0.2 s gate,
    ``accept_after = now + 1/fps``, dropped ~36 % of a client sending at exactly 5 fps)."""

    fps: float
    burst: float = FRAME_BURST
    tokens: float = FRAME_BURST
    last: float | None = None

    def admit(self, now: float) -> bool:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.fps)
        else:
            self.tokens = self.burst
        self.last = now
        if self.tokens >= 1.0 - _EPS:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class MediaClock:
    """One timeline for a participant's two upload streams, in seconds since its first upload.

    Video frames are stamped with their arrival time. Audio advances by its sample count, anchored
    to the arrival time of the chunks: it never runs ahead of arrival (a client sending faster than
    real time, or a burst after a stall, is pulled back to arrival time) and is re-anchored to
    arrival when it lags by more than ``max_lag_s`` (a gap). Both streams are monotonic, and the
    audio lags the video timeline by at most ``max_lag_s``.
    """

    max_lag_s: float = AUDIO_MAX_LAG_S
    origin: float | None = None
    audio_end: float | None = None
    video_last: float | None = None

    def since_origin(self, now: float) -> float:
        if self.origin is None:
            self.origin = now
        return max(0.0, now - self.origin)

    def video_time(self, arrived: float) -> float:
        """Media time of a frame that arrived at ``arrived`` (monotonic clock)."""
        return self.since_origin(arrived)

    def accept_video(self, media_time: float) -> bool:
        """Whether a decoded frame is newer than the last one fed (decodes may finish out of order)."""
        if self.video_last is not None and media_time < self.video_last:
            return False
        self.video_last = media_time
        return True

    def audio_time(self, arrived: float, duration_s: float) -> float:
        """Media time of the *end* of an audio chunk of ``duration_s`` that arrived at ``arrived``."""
        t = self.since_origin(arrived)
        if self.audio_end is None:
            end = t
        else:
            end = min(self.audio_end + duration_s, t)
            if end < t - self.max_lag_s:
                end = t
            end = max(end, self.audio_end)
        self.audio_end = end
        return end

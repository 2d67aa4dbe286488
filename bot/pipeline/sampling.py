"""Sampling at a step: whether the step takes a frame for the face pool, and which audio window it embeds.

Both rules are the same for the live engine (wall clock) and replay (media clock):

* **face**: a step takes the newest frame when the video stream is fresh and the sampling credit
  allows it. The credit grows by ``fps x period`` per step, up to one frame, and a frame costs one
  unit, so at the ceiling (one frame per step) every step samples and under throttling only some do.
* **audio**: a step takes the newest window of the ring (the bundle's window, 0.6 s for the
  reference family) when the audio stream is fresh, the ring holds at least ``min_samples`` and the
  window is not digital silence; the rule itself is :func:`models.audio.window_skip_reason`, the
  one training applies. The audio pool's VAD may still gate the window.
"""

from __future__ import annotations

from enum import Enum

from bot.config import EngineConfig
from bot.pipeline.freshness import stream_fresh
from bot.pipeline.slots import AudioRing, AudioWindow
from models.audio import window_skip_reason


def sampling_fps(config: EngineConfig) -> float:
    """The face sampling ceiling: the target fps, but at most one frame per step."""
    return min(config.target_fps, 1.0 / config.result_interval_s)


class FaceDecision(Enum):
    TAKE = "take"
    STALE = "stale"  # the video stream delivered no frame within modality_stale_s
    THROTTLED = "throttled"  # not enough sampling credit at this step (counted as face_throttled)


class FaceCredit:
    """One participant's face sampling credit (see the module docstring)."""

    __slots__ = ("credit",)

    def __init__(self) -> None:
        self.credit = 1.0

    def decide(
        self, video_last: float | None, now: float, stale_s: float, fps: float, interval_s: float
    ) -> FaceDecision:
        """Whether the step at ``now`` takes a frame; accrues this step's credit when the stream is fresh."""
        if not stream_fresh(True, video_last, now, stale_s):
            return FaceDecision.STALE
        self.credit = min(1.0, self.credit + fps * interval_s)
        if self.credit < 1.0 - 1e-9:
            return FaceDecision.THROTTLED
        return FaceDecision.TAKE

    def spend(self) -> None:
        """A frame was taken (submitted to the face pool)."""
        self.credit -= 1.0


def take_audio_window(ring: AudioRing, min_samples: int, window_samples: int) -> tuple[AudioWindow | None, bool]:
    """``(window, silent)``: the newest ``window_samples`` of the ring when it may be embedded.

    ``(None, False)`` while the ring holds fewer than ``min_samples``; ``(None, True)`` for digital
    silence (callers count it as ``audio_silent``). Stream freshness is the caller's check.
    """
    if len(ring) < min_samples:
        return None, False
    window = ring.window(window_samples)
    reason = window_skip_reason(window.samples, min_samples)
    if reason is not None:
        return None, reason == "silent"
    return window, False

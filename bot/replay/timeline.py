"""The live engine's per-participant bookkeeping, ticked by media time instead of the wall clock.

The live engine (``bot/live/``) puts each received video frame in a newest-frame slot and each
audio chunk in a ring buffer, and every ``result_interval_s`` runs a step that samples the newest
frame for the face pool (when the video stream is fresh and the sampling credit allows: at most
one frame per step), takes the newest 0.6 s of audio for the audio pool (when the audio stream is
fresh, the ring holds enough and it is not digital silence; the pool's VAD may still gate it),
waits for both, decides which modalities are live and predicts. Replay keeps exactly that
bookkeeping, with two substitutions that make it deterministic:

* the clock is media time: a video frame arrives at its pts, an audio chunk at its end;
* feature work has zero latency: the face a step samples and the audio window it takes both count
  for that step (live, the step waits up to ``face_wait_s`` for its face, which the face pool
  normally meets).

:class:`Timeline` only *plans*: it decides which frames are sampled and which audio windows are
embedded, and records what each step knows about stream freshness. It holds no model and no
future, so it is pure and cheap (it runs on the event loop); :mod:`bot.replay.driver` runs the
plans through the executor pools and the rest of the step core. The sampling rules themselves are the
step core's (:mod:`bot.pipeline.sampling`), the very code the live engine runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.config import EngineConfig
from bot.pipeline.freshness import stream_fresh
from bot.pipeline.sampling import FaceCredit, FaceDecision, sampling_fps, take_audio_window
from bot.pipeline.slots import AudioRing, LatestSlot
from bot.replay.decode import AudioEvent, Event, VideoEvent
from models.constants import AUDIO_MIN_SAMPLES, AUDIO_WINDOW_SAMPLES, SAMPLE_RATE


@dataclass(frozen=True)
class FaceSample:
    """The frame a step sampled for the face pool (``media_time`` is its pts)."""

    frame: Any
    media_time: float


@dataclass(frozen=True)
class AudioWindowPlan:
    """The newest 0.6 s of the ring at a step; ``end_media_time`` is its last sample's time."""

    samples: np.ndarray
    end_media_time: float


@dataclass(frozen=True)
class StepPlan:
    """One engine step at media time ``time``: what it sampled and the stream freshness inputs."""

    index: int
    time: float
    face: FaceSample | None
    window: AudioWindowPlan | None
    silent: bool
    video_last: float | None
    audio_last: float | None


@dataclass
class Timeline:
    """Buffers frames and audio and plans the steps of one participant, by media time.

    ``origin`` is the participant's time zero (the first frame's pts, not below 0): the live engine
    schedules a new participant's first step one interval after it is added.
    """

    config: EngineConfig
    origin: float
    # The bundle's audio window and the shortest buffer that gets one (see models.family.FeaturePlan).
    window_samples: int = AUDIO_WINDOW_SAMPLES
    min_samples: int = AUDIO_MIN_SAMPLES
    next_due: float = field(init=False)
    video_last: float | None = field(init=False, default=None)
    audio_last: float | None = field(init=False, default=None)
    steps: int = field(init=False, default=0)
    counters: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.next_due = self.origin + self.config.result_interval_s
        self._slot: LatestSlot[tuple[Any, float]] = LatestSlot()
        self._ring = AudioRing(max(int(self.config.audio_buffer_s * SAMPLE_RATE), self.window_samples))
        # Replay never falls behind, so the engine's throttle would never lower the rate below this.
        self._fps = sampling_fps(self.config)
        self._face_credit = FaceCredit()

    def feed(self, event: Event) -> list[StepPlan]:
        """Apply one arrival; returns the steps that were due before it, in order."""
        out = self._steps_until(event.arrival, inclusive=False)
        if isinstance(event, VideoEvent):
            self.video_last = event.arrival
            if self._slot.peek() is not None:
                self._count("frames_skipped")
            self._slot.put((event.frame, event.arrival))
        elif isinstance(event, AudioEvent):
            self.audio_last = event.arrival
            self._ring.append(event.samples, event.arrival, event.arrival)
        return out

    def finish(self, end: float) -> list[StepPlan]:
        """The steps up to the end of the recording (the last arrival); none after it."""
        return self._steps_until(end, inclusive=True)

    def _steps_until(self, t: float, *, inclusive: bool) -> list[StepPlan]:
        out: list[StepPlan] = []
        while self.next_due < t or (inclusive and self.next_due <= t):
            out.append(self._step(self.next_due))
            # The live engine keeps a participant on its phase, due times being offset + k x interval
            # (a product, not a running sum, so rounding never drifts); replay's offset is the origin.
            self.next_due = self.origin + (self.steps + 1) * self.config.result_interval_s
        return out

    def _sample_face(self, now: float) -> FaceSample | None:
        """The step core's face rule: the newest frame, if the stream is fresh and credit allows."""
        decision = self._face_credit.decide(
            self.video_last, now, self.config.modality_stale_s, self._fps, self.config.result_interval_s
        )
        if decision is FaceDecision.THROTTLED:
            self._count("face_throttled")
        if decision is not FaceDecision.TAKE:
            return None
        item = self._slot.take()
        if item is None:
            return None
        self._face_credit.spend()
        self._count("frames_sampled")
        return FaceSample(item[0], item[1])

    def _step(self, now: float) -> StepPlan:
        """What the engine's step would sample and embed at ``now``, and the freshness inputs."""
        face = self._sample_face(now)
        window = None
        silent = False
        if stream_fresh(True, self.audio_last, now, self.config.modality_stale_s):
            w, silent = take_audio_window(self._ring, self.min_samples, self.window_samples)
            if silent:
                self._count("audio_silent")
            if w is not None:
                window = AudioWindowPlan(w.samples, w.end_media_time)
        plan = StepPlan(self.steps, now, face, window, silent, self.video_last, self.audio_last)
        self.steps += 1
        return plan

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

"""What the live engine holds for one remote participant; dropped whole on leave."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from bot.pipeline.features import Features
from bot.pipeline.results import ResultStream
from bot.pipeline.sampling import FaceCredit
from bot.pipeline.slots import AudioRing, FrameBox


def _int_dict() -> dict[str, int]:
    return {}


@dataclass
class ParticipantState:
    """Everything the engine holds for one remote participant; dropped whole on leave.

    Every container is bounded: sequences hold ``seq_len`` vectors, the ring ``audio_buffer_s`` of
    samples, the slot one frame, the deques fixed maxlens; counters are a fixed set of keys.
    ``features`` and ``results`` are the step core's per-participant state (:mod:`bot.pipeline`);
    the rest is the scheduler's.
    """

    pid: str
    name: str
    role: str
    mic_on: bool
    camera_on: bool
    analysed: bool
    features: Features
    results: ResultStream
    audio_ring: AudioRing
    slot: int = 0
    speaker: bool = False
    speech_last: float | None = None
    video_slot: FrameBox = field(default_factory=FrameBox)
    video_last_wall: float | None = None
    audio_last_wall: float | None = None
    speech_prob: float | None = None
    face_credit: FaceCredit = field(default_factory=FaceCredit)
    next_due: float = 0.0
    late_due: float | None = None
    step_running: bool = False
    # Place among the steps its last tick started (-1: none yet): the next tick turns the order by one.
    start_order: int = -1
    profile: str | None = None
    profiles_seen: set[str] = field(default_factory=set)
    face_in_flight: int = 0
    audio_in_flight: int = 0
    inference_in_flight: int = 0
    counters: dict[str, int] = field(default_factory=_int_dict)
    added_at: float = 0.0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    result_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    sample_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

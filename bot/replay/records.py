"""What a replay runs (its models) and what it learns (per file, per step)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.pipeline.features import feature_plan
from bot.pipeline.results import BundleInfo, EmotionResult
from bot.replay.decode import MediaInfo
from bot.replay.inputs import ReplayInput
from models.constants import AUDIO_MIN_SAMPLES
from models.extractors import AudioExtractor, FaceExtractor
from models.family import BatchPredictor, FeaturePlan
from models.sequence import NormStats
from models.vad import SpeechDetector

if TYPE_CHECKING:
    from bot.runtime import Runtime


@dataclass(frozen=True)
class ReplayModels:
    """The models a replay runs: the same objects the live bot loads (see ``bot.runtime``)."""

    predictor: BatchPredictor
    norm: NormStats | None
    audio: AudioExtractor
    make_face_extractor: Callable[[], FaceExtractor]
    bundle: BundleInfo
    description: dict[str, Any] = field(default_factory=dict)
    # None: Silero VAD at engine.vad_threshold, as the live engine (tests may inject a fake).
    make_speech_detector: Callable[[], SpeechDetector] | None = None
    # What the bundle declares (dims, audio window, per-participant normaliser); None: the
    # reference family with ``norm``.
    features: FeaturePlan | None = None

    @property
    def plan(self) -> FeaturePlan:
        return feature_plan(self.features, self.norm, AUDIO_MIN_SAMPLES)

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> ReplayModels:
        return cls(
            runtime.predictor,
            None,
            runtime.audio,
            runtime.make_face_extractor,
            runtime.info,
            runtime.describe(),
            features=runtime.features,
        )


@dataclass(frozen=True)
class StepRecord:
    """One step of one participant: its media time, the profile (None = no result) and any error."""

    time: float
    profile: str | None
    result: EmotionResult | None
    error: str | None = None


@dataclass
class ParticipantReplay:
    """Everything replay learned about one file. ``status``: ok, partial (an error after some
    results) or error (nothing usable)."""

    input: ReplayInput
    info: MediaInfo | None = None
    origin: float = 0.0
    end_s: float = 0.0
    steps: list[StepRecord] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def participant_id(self) -> str:
        return self.input.participant_id

    @property
    def results(self) -> list[EmotionResult]:
        return [s.result for s in self.steps if s.result is not None]

    @property
    def status(self) -> str:
        if self.error is None:
            return "ok"
        return "partial" if self.results else "error"

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

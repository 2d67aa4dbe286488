"""One participant's features between steps: the rolling sequences, freshness stamps and assembly.

The live engine and replay both keep a :class:`Features` per participant. A face vector or an audio
embedding that comes back from its pool is applied with :meth:`Features.add_face` /
:meth:`Features.add_audio`, stamped with the step that sampled it (so that a late result never
looks fresher than the step that took its input). At each step :meth:`Features.activity` applies
the freshness rules of :mod:`bot.pipeline.freshness` and :meth:`Features.job` assembles the
predictor inputs (:func:`models.sequence.assemble_inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import EngineConfig
from bot.pipeline.freshness import audio_max_age, face_max_age, modality_live
from bot.pipeline.stages import AudioOutput, FaceOutput, InferenceJob
from models.extractors import REFERENCE_AUDIO, REFERENCE_FACE
from models.family import FeaturePlan
from models.sequence import Normaliser, NormStats, RollingSequence, assemble_inputs
from models.smoothing import EmaSmoother


def feature_plan(features: FeaturePlan | None, norm: NormStats | None, min_samples: int) -> FeaturePlan:
    """The bundle's feature plan; without one, the reference family with fixed ``norm`` statistics."""
    if features is not None:
        return features
    if norm is None:
        raise ValueError("pass the bundle's feature plan (or, for the reference family, its norm stats)")
    fixed = norm
    return FeaturePlan(REFERENCE_FACE, REFERENCE_AUDIO, min_samples, lambda: fixed)


def new_smoother(config: EngineConfig, plan: FeaturePlan) -> EmaSmoother:
    """The EMA smoother of one participant's results, at the bundle's neutral-fallback threshold."""
    return EmaSmoother(
        alpha=config.ema_alpha,
        confidence_threshold=plan.threshold(config.confidence_threshold),
        ttl=config.ema_ttl_s,
        reset=config.ema_reset,
    )


@dataclass
class Features:
    """Rolling face and audio sequences of one participant and when their newest entries were taken.

    ``*_step``: the time of the step that sampled the newest vector (freshness); ``*_media``: its
    media time; ``*_captured``: when its input was received (wall clock live, media time in replay).
    """

    face_seq: RollingSequence
    audio_seq: RollingSequence
    norm: Normaliser
    face_step: float | None = None
    face_media: float = 0.0
    face_captured: float = 0.0
    audio_step: float | None = None
    audio_media: float = 0.0
    audio_captured: float = 0.0

    @classmethod
    def new(cls, plan: FeaturePlan, seq_len: int) -> Features:
        return cls(
            RollingSequence(plan.face_dim, seq_len), RollingSequence(plan.audio_dim, seq_len), plan.new_normaliser()
        )

    def add_face(self, out: FaceOutput, media_time: float, captured: float, step: float) -> str:
        """Apply a face-pool output; returns the counter to bump (``faces`` or ``face_<reason>``).

        The output's own frame times win over the job's (a face job with a frame source learns
        which frame it analysed only on the face thread).
        """
        if out.vector is None:
            return f"face_{out.reason or 'none'}"
        media = media_time if out.media_time is None else out.media_time
        self.face_seq.append(out.vector, media)
        self.face_step = step
        self.face_media = media
        self.face_captured = captured if out.wall_time is None else out.wall_time
        return "faces"

    def add_audio(self, out: AudioOutput, end_media: float, end_captured: float, step: float) -> str:
        """Apply an audio-pool output; returns ``audio_embedded`` or ``vad_gated`` (no speech: nothing
        is embedded, so the audio modality ages like a dropped stream)."""
        if out.vector is None:
            return "vad_gated"
        self.norm.observe_audio(out.vector)
        self.audio_seq.append(out.vector, end_media)
        self.audio_step = step
        self.audio_media = end_media
        self.audio_captured = end_captured
        return "audio_embedded"

    def clear_face(self) -> None:
        self.face_seq.clear()
        self.face_step = None

    def clear_audio(self) -> None:
        self.audio_seq.clear()
        self.audio_step = None

    def activity(
        self,
        now: float,
        *,
        camera_on: bool,
        mic_on: bool,
        video_last: float | None,
        audio_last: float | None,
        config: EngineConfig,
        sampling_fps: float,
    ) -> tuple[bool, bool]:
        """``(face_active, audio_active)`` at the step starting at ``now``."""
        stale = config.modality_stale_s
        face = modality_live(
            camera_on, video_last, self.face_step, len(self.face_seq), now, stale, face_max_age(stale, sampling_fps)
        )
        audio = modality_live(
            mic_on,
            audio_last,
            self.audio_step,
            len(self.audio_seq),
            now,
            stale,
            audio_max_age(stale, config.result_interval_s),
        )
        return face, audio

    def job(self, participant_id: str, face_active: bool, audio_active: bool) -> InferenceJob:
        """The predictor inputs of this step (an inactive modality is a zero window with a zero mask)."""
        xf, xa, fm, am = assemble_inputs(self.face_seq, self.audio_seq, face_active, audio_active, self.norm)
        return InferenceJob(participant_id, xf, xa, fm, am)

    def used(self, face_active: bool, audio_active: bool) -> tuple[tuple[float, float], ...]:
        """``(captured, media)`` of the newest input of each active modality, as the result reports them."""
        out: list[tuple[float, float]] = []
        if face_active:
            out.append((self.face_captured, self.face_media))
        if audio_active:
            out.append((self.audio_captured, self.audio_media))
        return tuple(out)

"""One participant's features between steps: the rolling sequences, freshness stamps and assembly.

The live engine and replay both keep a :class:`Features` per participant. A face vector or an audio
embedding that comes back from its pool is applied with :meth:`Features.add_face` /
:meth:`Features.add_audio`, stamped with the step that sampled it (so that a late result never
looks fresher than the step that took its input); an attempt that came back without one is a
*miss* (:meth:`Features.miss_audio` for windows never sent). At each step :meth:`Features.activity` applies
the freshness rules of :mod:`bot.pipeline.freshness` and :meth:`Features.job` assembles the
predictor inputs (:func:`models.sequence.assemble_inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import EngineConfig
from bot.pipeline.freshness import audio_live, face_live, face_max_age
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
    ``face_missed``: whether an attempt since the newest face vector came back without a face;
    ``audio_first_miss`` / ``audio_last_miss``: the steps of the first and the newest window since
    the newest embedding that made none (VAD, digital silence, an error). Only misses age a feature
    (:mod:`bot.pipeline.freshness`); a late, skipped or in-flight step does not.
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
    face_missed: bool = False
    audio_first_miss: float | None = None
    audio_last_miss: float | None = None

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
            self.miss_face(step)
            return f"face_{out.reason or 'none'}"
        media = media_time if out.media_time is None else out.media_time
        self.face_seq.append(out.vector, media)
        self.face_step = step
        self.face_missed = False
        self.face_media = media
        self.face_captured = captured if out.wall_time is None else out.wall_time
        return "faces"

    def add_audio(self, out: AudioOutput, end_media: float, end_captured: float, step: float) -> str:
        """Apply an audio-pool output; returns ``audio_embedded`` or ``vad_gated`` (no speech: nothing
        is embedded, so the audio modality ages like a dropped stream)."""
        if out.vector is None:
            self.miss_audio(step)
            return "vad_gated"
        self.norm.observe_audio(out.vector)
        self.audio_seq.append(out.vector, end_media)
        self.audio_step = step
        self.audio_first_miss = self.audio_last_miss = None
        self.audio_media = end_media
        self.audio_captured = end_captured
        return "audio_embedded"

    def miss_face(self, step: float) -> None:
        """The face job of the step at ``step`` came back without a face (or failed)."""
        if self.face_step is None or step >= self.face_step:
            self.face_missed = True

    def miss_audio(self, step: float) -> None:
        """The window of the step at ``step`` made no embedding (no speech, digital silence, an
        error); a miss older than the newest embedding says nothing."""
        if self.audio_step is not None and step < self.audio_step:
            return
        if self.audio_first_miss is None:
            self.audio_first_miss = step
        self.audio_last_miss = max(step, self.audio_last_miss or step)

    def clear_face(self) -> None:
        self.face_seq.clear()
        self.face_step = None
        self.face_missed = False

    def clear_audio(self) -> None:
        self.audio_seq.clear()
        self.audio_step = None
        self.audio_first_miss = self.audio_last_miss = None

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
        """``(face_active, audio_active)`` at the step starting at ``now``, on what has come back."""
        stale = config.modality_stale_s
        face = face_live(
            camera_on,
            video_last,
            self.face_step,
            len(self.face_seq),
            now,
            stale,
            face_max_age(stale, sampling_fps),
            self.face_missed,
        )
        audio = audio_live(
            mic_on, audio_last, len(self.audio_seq), now, stale, self.audio_first_miss, self.audio_last_miss
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

"""The step core's rules, which the live engine and replay both run (bot/pipeline/)."""

from __future__ import annotations

import numpy as np
import pytest

from bot.config import EngineConfig
from bot.pipeline.features import Features, feature_plan, new_smoother
from bot.pipeline.results import BundleInfo, ResultStream, ms_rounded
from bot.pipeline.sampling import FaceCredit, FaceDecision, sampling_fps, take_audio_window
from bot.pipeline.slots import AudioRing
from bot.pipeline.stages import AudioOutput, FaceOutput
from models.extractors import REFERENCE_AUDIO, REFERENCE_FACE
from models.family import FeaturePlan
from models.predictor import Prediction
from models.sequence import NormStats

CFG = EngineConfig()


def _plan() -> FeaturePlan:
    norm = NormStats(
        np.zeros(REFERENCE_FACE.dim, np.float32),
        np.ones(REFERENCE_FACE.dim, np.float32),
        np.zeros(REFERENCE_AUDIO.dim, np.float32),
        np.ones(REFERENCE_AUDIO.dim, np.float32),
    )
    return feature_plan(None, norm, CFG.min_live_samples)


def test_the_credit_samples_every_step_at_the_ceiling_and_some_steps_below_it() -> None:
    credit = FaceCredit()
    fps = sampling_fps(CFG)
    assert fps == pytest.approx(1 / CFG.result_interval_s)
    for k in range(5):
        assert credit.decide(k * 0.3, k * 0.3, 0.4, fps, 0.3) is FaceDecision.TAKE
        credit.spend()
    slow, taken = FaceCredit(), 0
    for k in range(12):
        if slow.decide(k * 0.3, k * 0.3, 0.4, 1.0, 0.3) is FaceDecision.TAKE:
            slow.spend()
            taken += 1
    assert taken == 3  # 1 fps x 0.3 s per step: a frame on every fourth step (steps 0, 4, 8)


def test_a_stale_stream_is_not_sampled_and_earns_no_credit() -> None:
    credit = FaceCredit()
    credit.credit = 0.0
    assert credit.decide(0.0, 1.0, 0.4, 3.0, 0.3) is FaceDecision.STALE
    assert credit.credit == 0.0
    assert credit.decide(None, 1.0, 0.4, 3.0, 0.3) is FaceDecision.STALE


def test_the_audio_window_rule_is_the_training_rule() -> None:
    ring = AudioRing(32000)
    ring.append(np.full(2399, 0.1, np.float32) + np.linspace(0, 0.1, 2399, dtype=np.float32), 0.15, 0.15)
    assert take_audio_window(ring, 2400, 9600) == (None, False)  # too short: not counted as silence
    ring.clear()
    ring.append(np.zeros(9600, np.float32), 0.6, 0.6)
    assert take_audio_window(ring, 2400, 9600) == (None, True)  # digital silence
    ring.append(np.random.default_rng(0).standard_normal(16000).astype(np.float32), 1.6, 1.6)
    window, silent = take_audio_window(ring, 2400, 9600)
    assert window is not None and not silent and window.samples.shape == (9600,) and window.end_media_time == 1.6


def test_features_stamp_the_step_that_sampled_them() -> None:
    plan = _plan()
    f = Features.new(plan, CFG.seq_len)
    assert f.add_face(FaceOutput(None, "no_face"), 1.0, 1.0, 1.2) == "face_no_face"
    face = np.ones(plan.face_dim, np.float32)
    assert f.add_face(FaceOutput(face, None, 1.0, 5.0), 0.0, 0.0, 1.2) == "faces"
    assert (f.face_step, f.face_media, f.face_captured) == (1.2, 1.0, 5.0)
    assert f.add_audio(AudioOutput(None, "no_speech", 0.1), 1.1, 1.1, 1.2) == "vad_gated"
    assert f.audio_step is None
    audio = np.ones(plan.audio_dim, np.float32)
    assert f.add_audio(AudioOutput(audio, None, 0.9), 1.1, 6.0, 1.2) == "audio_embedded"
    active = f.activity(
        1.3, camera_on=True, mic_on=True, video_last=1.25, audio_last=1.25, config=CFG, sampling_fps=3.33
    )
    assert active == (True, True)
    assert f.used(*active) == ((5.0, 1.0), (6.0, 1.1))
    job = f.job("p", *active)
    assert job.xf.shape == (CFG.seq_len, plan.face_dim) and job.am.sum() == 1.0
    # A stale audio stream drops the modality; turning the camera off clears the face.
    assert f.activity(
        1.3, camera_on=True, mic_on=True, video_last=1.25, audio_last=0.5, config=CFG, sampling_fps=3.33
    ) == (True, False)
    f.clear_face()
    assert len(f.face_seq) == 0 and f.face_step is None


def _live(
    f: Features, now: float, video_last: float | None = None, audio_last: float | None = None
) -> tuple[bool, bool]:
    """Activity at ``now`` with both streams delivering up to ``now`` unless told otherwise."""
    return f.activity(
        now,
        camera_on=True,
        mic_on=True,
        video_last=now if video_last is None else video_last,
        audio_last=now if audio_last is None else audio_last,
        config=CFG,
        sampling_fps=1.0,
    )


def test_only_misses_age_a_feature_never_late_skipped_or_in_flight_steps() -> None:
    """docs/engine.md, "Profiles and speakers under load": judged by what came back."""
    plan = _plan()
    f = Features.new(plan, CFG.seq_len)
    face, audio = np.ones(plan.face_dim, np.float32), np.ones(plan.audio_dim, np.float32)
    f.add_face(FaceOutput(face, None, 0.0, 0.0), 0.0, 0.0, 0.0)
    f.add_audio(AudioOutput(audio, None, 0.9), 0.0, 0.0, 0.0)
    # Steps skipped, faces throttled (1 fps: max age 2.5 s), windows in flight: 10 s later, both.
    assert _live(f, 10.0) == (True, True)
    # Steps 0.9 s apart (an engine running late): one window without speech is a pause...
    f.miss_audio(0.9)
    assert _live(f, 0.9) == (True, True)
    # ...two of them 0.9 s apart are silence (they span more than modality_stale_s).
    f.miss_audio(1.8)
    assert _live(f, 1.8) == (True, False)
    f.add_audio(AudioOutput(audio, None, 0.9), 2.1, 2.1, 2.1)
    assert _live(f, 2.1) == (True, True)
    # A miss older than the newest embedding says nothing.
    f.miss_audio(1.9)
    assert f.audio_first_miss is None
    # A frame without a face: from then on the face vector ages as before (2.5 s at 1 fps).
    f.add_face(FaceOutput(None, "no_face"), 0.0, 0.0, 2.4)
    assert _live(f, 2.4) == (True, True)
    assert _live(f, 2.6) == (False, True)
    # A stream that stops arriving drops out within modality_stale_s, whatever its features.
    f.add_face(FaceOutput(face, None, 3.0, 3.0), 0.0, 0.0, 3.0)
    assert _live(f, 3.5, video_last=3.0) == (False, True)
    assert _live(f, 3.5, audio_last=3.0) == (True, False)


def test_at_an_attempt_every_period_the_rule_is_the_old_age_rule() -> None:
    """Normal load and replay: the first miss comes one period after the embedding, and the audio
    drops exactly when the embedding is older than modality_stale_s + one period (0.7 s)."""
    plan = _plan()
    f = Features.new(plan, CFG.seq_len)
    f.add_face(FaceOutput(np.ones(plan.face_dim, np.float32), None, 0.0, 0.0), 0.0, 0.0, 0.0)
    f.add_audio(AudioOutput(np.ones(plan.audio_dim, np.float32), None, 0.9), 0.0, 0.0, 0.0)
    seen = []
    for k in range(1, 5):
        now = round(k * CFG.result_interval_s, 6)
        f.add_audio(AudioOutput(None, "no_speech", 0.1), now, now, now)
        seen.append(_live(f, now)[1])
        assert seen[-1] == (now <= CFG.modality_stale_s + CFG.result_interval_s)
    assert seen == [True, True, False, False]


def _prediction(probs: list[float] | None) -> Prediction:
    arr = None if probs is None else np.asarray(probs, np.float32)
    status = "ok" if probs is not None else "error"
    return Prediction(status, None if probs else "bad row", None, arr, None, None, None, None, None, None, None)


def test_results_count_smooth_and_carry_their_clock() -> None:
    stream = ResultStream("p", new_smoother(CFG, _plan()), BundleInfo("b", True), offset=10.0, to_ms=ms_rounded)
    r1 = stream.build(_prediction([0.1, 0.1, 0.1, 0.5, 0.1, 0.1]), "both", ((1.0, 1.0),), now=1.3, smooth_at=1.3)
    r2 = stream.build(_prediction(None), "video_only", ((1.2, 1.2),), now=1.6, smooth_at=1.6, reduced_rate=True)
    assert (r1.seq, r2.seq) == (1, 2)
    assert r1.emotion == "happy" and r1.latency_ms == pytest.approx(300.0)
    assert (r1.ts_ms, r1.captured_at_ms, r1.media_time) == (11300, 11000, 11.0)
    assert r2.error == "bad row" and r2.probs is None and r2.confidence == 0.0
    assert r1.to_message()["reducedRate"] is False and r2.to_message()["reducedRate"] is True

"""Voice activity gating with the real Silero model: speech windows reach Wav2Vec2, silence does not."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from bot.pipeline.stages import AudioJob, audio_stage, audio_stage_init
from models.constants import AUDIO_DIM, AUDIO_WINDOW_SAMPLES, SAMPLE_RATE
from models.vad import MIN_BATCH, SpeechDetector, load_silero_model


def load_16k(path: Path) -> np.ndarray:
    """Decode and resample to 16 kHz mono float32 with PyAV (as the bot's track reader does)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32)


@pytest.fixture(scope="module")
def speech_files(media_dir: Path) -> list[np.ndarray]:
    paths = sorted((media_dir / "ravdess" / "audio").glob("*.wav"))
    assert paths, f"no RAVDESS wavs under {media_dir / 'ravdess' / 'audio'}"
    return [load_16k(p) for p in paths[:6]]


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector(0.5)


def window(signal: np.ndarray, start_s: float) -> np.ndarray:
    start = int(start_s * SAMPLE_RATE)
    return signal[start : start + AUDIO_WINDOW_SAMPLES]


def silences() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        np.zeros(AUDIO_WINDOW_SAMPLES, np.float32),
        rng.uniform(-1e-3, 1e-3, AUDIO_WINDOW_SAMPLES).astype(np.float32),  # a quiet room
        rng.normal(0, 0.01, AUDIO_WINDOW_SAMPLES).astype(np.float32),  # hiss
    ]


def test_speech_windows_are_speech_and_silence_is_not(detector: SpeechDetector, speech_files: list[np.ndarray]) -> None:
    # RAVDESS sentences: ~0.9 s of silence, then speech from ~1 s to ~2.5 s.
    speech = [window(x, 1.2) for x in speech_files]
    leading = [window(x, 0.0) for x in speech_files]
    is_speech, probs = detector.is_speech(speech)
    assert is_speech.all(), probs
    is_speech, probs = detector.is_speech(leading + silences())
    assert not is_speech.any(), probs
    assert detector.windows == 2 * len(speech_files) + 3


def test_batched_and_single_windows_agree(detector: SpeechDetector, speech_files: list[np.ndarray]) -> None:
    windows = [window(x, s) for x in speech_files for s in (0.0, 1.2)]
    assert len(windows) >= MIN_BATCH
    batched = detector.speech_probs(windows)
    single = np.array([detector.speech_probs([w])[0] for w in windows])
    np.testing.assert_allclose(batched, single, atol=1e-4)
    # Short windows (just after a join) are judged too, grouped by length.
    mixed = detector.speech_probs([windows[1][:2400], windows[1]])
    assert mixed.shape == (2,) and mixed[1] == pytest.approx(single[1], abs=1e-4)


class CountingEmbedder:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        self.calls.append(len(windows))
        return np.ones((len(windows), AUDIO_DIM), np.float32)


def test_the_audio_stage_embeds_only_speech_in_one_forward(speech_files: list[np.ndarray]) -> None:
    embedder = CountingEmbedder()
    process = audio_stage(embedder)
    state = audio_stage_init(0.5)()
    assert isinstance(state, SpeechDetector)
    speech = [window(x, 1.2) for x in speech_files[:3]]
    jobs = [AudioJob(f"s{i}", w, 1.0, 1.0) for i, w in enumerate(speech)]
    jobs += [AudioJob(f"q{i}", w, 1.0, 1.0) for i, w in enumerate(silences())]
    out = process(state, jobs)
    assert embedder.calls == [3]  # one Wav2Vec2 forward, for the three speech windows only
    assert [o.vector is not None for o in out] == [True] * 3 + [False] * 3
    assert all(o.reason == "no_speech" and o.speech_prob is not None and o.speech_prob < 0.5 for o in out[3:])
    assert all(o.speech_prob is not None and o.speech_prob >= 0.5 for o in out[:3])
    # Gating off: everything is embedded, no probability.
    embedder.calls.clear()
    out = process(audio_stage_init(None)(), jobs)
    assert embedder.calls == [6] and all(o.vector is not None and o.speech_prob is None for o in out)


def test_a_silent_batch_never_reaches_the_embedder() -> None:
    embedder = CountingEmbedder()
    out = audio_stage(embedder)(SpeechDetector(0.5), [AudioJob("q", w, 0.0, 0.0) for w in silences()])
    assert embedder.calls == [] and all(o.vector is None for o in out)


def test_loading_the_model_keeps_the_process_thread_setting() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        load_silero_model()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_detectors_are_per_thread(speech_files: list[np.ndarray]) -> None:
    """Two threads with their own detectors judge the same windows identically."""
    windows = [window(x, s) for x in speech_files[:3] for s in (0.0, 1.2)]
    out: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        det = SpeechDetector(0.5)
        out[i] = np.concatenate([det.speech_probs([w]) for w in windows * 3])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)


def test_bad_threshold_is_rejected() -> None:
    with pytest.raises(ValueError):
        SpeechDetector(1.5, model=object())

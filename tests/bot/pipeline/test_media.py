"""Audio conversion (bot/pipeline/media.py): the digital-silence shortcut gives exactly what the
resampler gives, and only skips the resampler where that is provably so."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from bot.pipeline.media import AudioConverter


def frame(samples: np.ndarray, pts: int, rate: int = 48000, layout: str = "stereo") -> av.AudioFrame:
    channels = 2 if layout == "stereo" else 1
    f = av.AudioFrame.from_ndarray(samples.astype(np.int16).reshape(1, -1), format="s16", layout=layout)
    f.sample_rate = rate
    f.pts = pts
    f.time_base = Fraction(1, rate)
    assert f.samples * channels == samples.size
    return f


def speech_and_silence(rate: int = 48000, per_frame: int = 960, layout: str = "stereo") -> list[av.AudioFrame]:
    """Speech, a long muted stretch, speech again, a short silence, speech (20 ms frames)."""
    rng = np.random.default_rng(7)
    channels = 2 if layout == "stereo" else 1
    kinds = ["s"] * 5 + ["z"] * 12 + ["s"] * 4 + ["z"] + ["s"] * 3
    out = []
    for i, kind in enumerate(kinds):
        n = per_frame * channels
        data = rng.standard_normal(n) * 4000 if kind == "s" else np.zeros(n)
        out.append(frame(data, i * per_frame, rate, layout))
    return out


def resampled(frames: list[av.AudioFrame]) -> np.ndarray:
    """What PyAV's resampler alone gives for every frame (no shortcut)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
    return np.concatenate([out.to_ndarray().reshape(-1) for f in frames for out in resampler.resample(f)])


@pytest.mark.parametrize(
    ("rate", "per_frame", "layout"), [(48000, 960, "stereo"), (48000, 480, "mono"), (16000, 320, "mono")]
)
def test_the_silence_shortcut_gives_exactly_the_resampler_s_samples(rate: int, per_frame: int, layout: str) -> None:
    frames = speech_and_silence(rate, per_frame, layout)
    converter = AudioConverter()
    fast = np.concatenate([converter.convert(f) for f in frames])
    slow = resampled(speech_and_silence(rate, per_frame, layout))
    # 12 silent frames in a row: the first primes the resampler's history, 11 skip it.
    assert converter.shortcuts == 11
    assert fast.shape == slow.shape
    np.testing.assert_array_equal(fast, slow)


def test_a_rate_that_does_not_divide_evenly_always_uses_the_resampler() -> None:
    # 44.1 kHz, 441 samples (10 ms): 160 output samples exactly; 440 samples would not be whole.
    silent = [frame(np.zeros(440), i * 440, rate=44100, layout="mono") for i in range(5)]
    converter = AudioConverter()
    for f in silent:
        converter.convert(f)
    assert converter.shortcuts == 0


def test_a_frame_with_one_nonzero_sample_is_not_silence() -> None:
    converter = AudioConverter()
    zeros = np.zeros(1920)
    converter.convert(frame(zeros, 0))
    almost = zeros.copy()
    almost[1001] = 1
    out = converter.convert(frame(almost, 960))
    assert converter.shortcuts == 0
    assert out.size > 0

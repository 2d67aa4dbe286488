"""The starter family's audio features: cheap prosodic and spectral statistics of one speech window.

Why: the reference family's Wav2Vec2 costs ~100 ms per window and needs weights we do not ship;
the starter family needs something that runs in about a millisecond per window on one core and
is trained on RAVDESS speech. Emotion in acted speech shows mostly in prosody (pitch level, range
and movement, loudness and its dynamics, voice quality) and in the spectral envelope, so each
window becomes statistics of those over 10 ms frames:

* log-mel spectrum, 40 bands (25 ms Hann frames, 10 ms hop): mean and std per band;
* MFCC 1-19 (DCT of the log-mel frames; c0 is the energy, below): std, and std of their deltas;
* log frame energy: mean, std, 10th/90th percentiles, slope, mean |delta|;
* pitch (normalised autocorrelation of 40 ms frames, 70-400 Hz, voiced when the peak is ≥ 0.45):
  voiced fraction, mean periodicity, and over the voiced frames log2 F0 mean, std, 10th/90th
  percentiles, slope and mean |delta| (zeros when no frame is voiced);
* spectral centroid, 85 % roll-off, flatness, high/low band energy ratio and zero-crossing rate:
  mean and std.

The features are only meaningful after the per-speaker normalisation
(:mod:`models.starter.speaker_norm`), which removes who is speaking (voice pitch, timbre, level,
microphone) and keeps how they speak now. All arithmetic is numpy on fixed shapes (the mel filter
bank is built once by librosa at construction), so the output is deterministic, and a window costs
~1 ms on one core (``bench/bench_starter_audio.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

from models.constants import SAMPLE_RATE

EXTRACTOR_NAME: Final[str] = "logmel-stats"
EXTRACTOR_VERSION: Final[int] = 1
FEATURE_VERSION: Final[str] = f"{EXTRACTOR_NAME}-v{EXTRACTOR_VERSION}"
# The window the live bot feeds the extractor every 0.3 s step (newest audio of the participant).
WINDOW_S: Final[float] = 0.6
WINDOW_SAMPLES: Final[int] = round(WINDOW_S * SAMPLE_RATE)

N_FFT: Final[int] = 512
FRAME: Final[int] = 400  # 25 ms analysis frame (zero-padded to N_FFT)
HOP: Final[int] = 160  # 10 ms
N_MELS: Final[int] = 40
N_MFCC: Final[int] = 20
PITCH_FRAME: Final[int] = 640  # 40 ms: two periods at 50 Hz
PITCH_HOP: Final[int] = 320  # 20 ms
PITCH_FFT: Final[int] = 1024  # >= PITCH_FRAME + longest lag: the autocorrelation is not circular
F0_MIN: Final[float] = 70.0
F0_MAX: Final[float] = 400.0
VOICED_PERIODICITY: Final[float] = 0.45
_EPS: Final[float] = 1e-10

_GROUPS: Final[tuple[tuple[str, int], ...]] = (
    ("logmel_mean", N_MELS),
    ("logmel_std", N_MELS),
    ("mfcc_std", N_MFCC - 1),
    ("dmfcc_std", N_MFCC - 1),
    ("energy", 6),
    ("pitch", 8),
    ("spectral", 10),
)
FEATURE_DIM: Final[int] = sum(n for _, n in _GROUPS)


def feature_names() -> list[str]:
    """One name per output dimension, in order (for reports and debugging)."""
    names: list[str] = []
    for group, n in _GROUPS:
        names.extend(f"{group}[{i}]" for i in range(n))
    return names


def librosa_version() -> str:
    from importlib.metadata import version

    return version("librosa")


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II rows 0..n_out-1 (what librosa's MFCC uses), as an (n_in, n_out) matrix."""
    k = np.arange(n_out)[None, :]
    n = np.arange(n_in)[:, None]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    m[:, 0] *= np.sqrt(0.5)
    return m.astype(np.float32)


def _slope(y: np.ndarray) -> float:
    """Least-squares slope of ``y`` per frame index (0 for fewer than 2 frames)."""
    n = y.shape[0]
    if n < 2:
        return 0.0
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    return float(np.dot(t, y - y.mean()) / np.dot(t, t))


def _percentiles(x: np.ndarray, q: tuple[float, ...]) -> list[float]:
    """Linear-interpolated percentiles (numpy's default method), without np.percentile's overhead."""
    s = np.sort(x)
    pos = np.asarray(q, dtype=np.float64) / 100.0 * (s.shape[0] - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, s.shape[0] - 1)
    return [float(v) for v in s[lo] + (s[hi] - s[lo]) * (pos - lo)]


def _mean_std(x: np.ndarray) -> list[float]:
    return [float(x.mean()), float(x.std())]


class LogMelStatsExtractor:
    """Per-window prosodic/spectral statistics, ``(N, FEATURE_DIM)`` float32. Thread-safe (no state)."""

    name = EXTRACTOR_NAME
    version = EXTRACTOR_VERSION

    def __init__(self, window_s: float = WINDOW_S) -> None:
        import librosa

        self.window_s = float(window_s)
        self.window_samples = round(self.window_s * SAMPLE_RATE)
        if self.window_samples < 2 * PITCH_FRAME:
            raise ValueError(f"window of {window_s} s is too short for the extractor")
        self.dim = FEATURE_DIM
        mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=50.0, fmax=8000.0)
        # The filter bank as (bin, weight) runs per band, applied with np.add.reduceat: the 40 mel
        # sums then never go through BLAS, whose threaded sgemm stalls for ~10 ms on a busy 2-core
        # box at this size, and whose results may depend on the thread count.
        bins: list[np.ndarray] = []
        starts: list[int] = []
        for band in mel:
            nz = np.nonzero(band > 0)[0]
            starts.append(sum(len(b) for b in bins))
            bins.append(nz)
        self._mel_bins = np.concatenate(bins)
        self._mel_weights = np.concatenate([mel[i, b] for i, b in enumerate(bins)]).astype(np.float32)
        self._mel_starts = np.asarray(starts, dtype=np.intp)
        self._dct = _dct_matrix(N_MELS, N_MFCC)
        self._win = np.hanning(FRAME + 2)[1:-1].astype(np.float32)
        self._pwin = np.hanning(PITCH_FRAME + 2)[1:-1].astype(np.float32)
        self._freqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE).astype(np.float32)
        self._hi = self._freqs >= 2000.0
        # Autocorrelation of the pitch window itself, to unbias the frames' normalised autocorrelation.
        w_ac = np.fft.irfft(np.abs(np.fft.rfft(self._pwin, PITCH_FFT)) ** 2)[:PITCH_FRAME]
        self._wac = (w_ac / w_ac[0]).astype(np.float32)
        self._lag_lo = int(SAMPLE_RATE // F0_MAX)
        self._lag_hi = int(np.ceil(SAMPLE_RATE / F0_MIN))

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(windows), self.dim), dtype=np.float32)
        for i, w in enumerate(windows):
            out[i] = self.features(w)
        return out

    def features(self, window: np.ndarray) -> np.ndarray:
        """The feature vector of one window; only its last ``window_samples`` samples are used."""
        x = np.asarray(window, dtype=np.float32).reshape(-1)
        if x.shape[0] < self.window_samples:
            raise ValueError(f"audio window has {x.shape[0]} samples, the extractor needs {self.window_samples}")
        x = x[-self.window_samples :]
        if not np.all(np.isfinite(x)):
            raise ValueError("audio window contains NaN or Inf")
        x = x - x.mean()

        # -- spectral frames: 25 ms Hann, 10 ms hop -------------------------------------------
        frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP]
        spec = np.abs(np.fft.rfft(frames * self._win, N_FFT, axis=1)).astype(np.float32)
        power = spec * spec  # (T, 257)
        mel = np.add.reduceat(power[:, self._mel_bins] * self._mel_weights, self._mel_starts, axis=1)
        logmel = np.log(mel + _EPS)  # (T, 40)
        mfcc = np.einsum("tm,mc->tc", logmel, self._dct)  # (T, 20)
        dmfcc = mfcc[2:] - mfcc[:-2]
        frame_power = power.sum(axis=1) + _EPS
        log_e = np.log(frame_power).astype(np.float64)
        centroid = (power * self._freqs).sum(axis=1) / frame_power / 1000.0
        cum = np.cumsum(power, axis=1)
        rolloff = self._freqs[np.argmax(cum >= 0.85 * cum[:, -1:], axis=1)] / 1000.0
        log_p = np.log(power + _EPS)
        flatness = log_p.mean(axis=1) - np.log(power.mean(axis=1) + _EPS)
        hi_lo = np.log(power[:, self._hi].sum(axis=1) + _EPS) - np.log(power[:, ~self._hi].sum(axis=1) + _EPS)
        signs = np.signbit(frames)
        zcr = (signs[:, 1:] != signs[:, :-1]).mean(axis=1)

        # -- pitch: normalised autocorrelation of 40 ms frames, 20 ms hop ---------------------
        pframes = np.lib.stride_tricks.sliding_window_view(x, PITCH_FRAME)[::PITCH_HOP] * self._pwin
        ac = np.fft.irfft(np.abs(np.fft.rfft(pframes, PITCH_FFT, axis=1)) ** 2, PITCH_FFT, axis=1)
        ac = ac[:, : self._lag_hi + 1] / self._wac[: self._lag_hi + 1]
        energy0 = ac[:, :1]
        nac = ac / np.maximum(energy0, 1e-9)
        band = nac[:, self._lag_lo : self._lag_hi + 1]
        peak = band.argmax(axis=1)
        periodicity = band[np.arange(band.shape[0]), peak]
        lag = (peak + self._lag_lo).astype(np.float64)
        # Parabolic interpolation of the peak for sub-sample lags.
        inner = (peak > 0) & (peak < band.shape[1] - 1)
        if inner.any():
            rows = np.nonzero(inner)[0]
            a, b, c = band[rows, peak[rows] - 1], band[rows, peak[rows]], band[rows, peak[rows] + 1]
            den = a - 2 * b + c
            shift = np.where(np.abs(den) > 1e-9, 0.5 * (a - c) / np.where(np.abs(den) > 1e-9, den, 1.0), 0.0)
            lag[rows] += np.clip(shift, -0.5, 0.5)
        loud = energy0[:, 0] > 1e-6 * max(float(energy0.max()), 1e-12)
        voiced = (periodicity >= VOICED_PERIODICITY) & loud
        f0 = np.log2(SAMPLE_RATE / lag[voiced])
        if f0.shape[0] > 0:
            pitch = [
                float(f0.mean()),
                float(f0.std()),
                *_percentiles(f0, (10.0, 90.0)),
                _slope(f0),
                float(np.abs(np.diff(f0)).mean()) if f0.shape[0] > 1 else 0.0,
            ]
        else:
            pitch = [0.0] * 6
        pitch += [float(voiced.mean()), float(np.clip(periodicity, 0.0, 1.0).mean())]

        energy = [
            float(log_e.mean()),
            float(log_e.std()),
            *_percentiles(log_e, (10.0, 90.0)),
            _slope(log_e),
            float(np.abs(np.diff(log_e)).mean()),
        ]
        spectral = _mean_std(centroid) + _mean_std(rolloff) + _mean_std(flatness) + _mean_std(hi_lo) + _mean_std(zcr)
        vec = np.concatenate(
            [
                logmel.mean(axis=0),
                logmel.std(axis=0),
                mfcc[:, 1:].std(axis=0),
                dmfcc[:, 1:].std(axis=0),
                np.asarray(energy + pitch + spectral, dtype=np.float32),
            ]
        ).astype(np.float32)
        return vec

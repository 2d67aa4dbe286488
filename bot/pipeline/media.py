"""Media conversion shared by the live track readers (``bot.webrtc.tracks``) and replay's decoder
(``bot.replay.decode``): a frame's media time from its pts, and audio to 16 kHz mono float32.
Both run the same resampler, so live and replay feed the ring buffer the same samples.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from models.constants import SAMPLE_RATE


def frame_media_time(frame: Any) -> float:
    """Media time in seconds from the frame's pts (0.0 when the frame carries none)."""
    if frame.pts is None or frame.time_base is None:
        return 0.0
    return float(frame.pts * frame.time_base)


class AudioConverter:
    """Resample any decoded audio frame to 16 kHz mono float32 with PyAV (one per track).

    Digital silence skips the resampler. A muted browser microphone sends frames of exact zeros
    (50 a second per muted participant, most of a meeting), and resampling them was ~12 % of the
    asyncio loop's time at 10 participants. Once the resampler has been fed a silent frame, its
    filter history is all zeros, so a further silent frame of a whole number of output samples
    would come out as exactly that many zeros: the shortcut returns them without the call, and its
    output is identical to the resampler's (``tests/bot/pipeline/test_media.py``).
    """

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self.rate = rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        self._history_silent = False  # the resampler's last input frame was all zeros
        self.shortcuts = 0  # silent frames converted without the resampler

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        silent = _is_digital_silence(frame)
        if silent and self._history_silent:
            out_samples, rest = divmod(frame.samples * self.rate, frame.sample_rate or self.rate)
            if rest == 0:
                self.shortcuts += 1
                return np.zeros(out_samples, dtype=np.float32)
        self._history_silent = silent
        chunks = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)


def _is_digital_silence(frame: av.AudioFrame) -> bool:
    """Every sample of every plane is exactly zero (cheap: a byte scan, no conversion)."""
    return not any(np.frombuffer(memoryview(plane), np.uint8).any() for plane in frame.planes)

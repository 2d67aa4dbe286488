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
    """Resample any decoded audio frame to 16 kHz mono float32 with PyAV (one per track)."""

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        chunks = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)

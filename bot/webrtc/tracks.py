"""Track readers: drain every received track continuously and hand the engine only what it needs.

aiortc's receive queues are unbounded, so a track nobody reads grows memory and latency without
limit. Each reader therefore loops on ``recv()`` for as long as the track lives, whatever the
engine is doing: video frames go into the engine's newest-frame slot (a reference, no
conversion), audio is resampled by PyAV to 16 kHz mono float32 and appended to a ring buffer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bot.pipeline.media import AudioConverter, frame_media_time
from models.constants import SAMPLE_RATE

log = logging.getLogger(__name__)


async def _received(track: MediaStreamTrack, kind: str, on_error: Callable[[str], None]) -> AsyncIterator[Any]:
    """Every frame the track delivers, until it ends; a failed ``recv()`` is reported, not fatal."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a decode error must not end the reader
            on_error(f"{kind} recv failed: {exc}")
            continue
        yield frame


async def read_video(
    track: MediaStreamTrack, on_frame: Callable[[Any, float], None], on_error: Callable[[str], None]
) -> None:
    """Receive every video frame; pass each by reference to ``on_frame(frame, media_time)``."""
    async for frame in _received(track, "video", on_error):
        try:
            on_frame(frame, frame_media_time(frame))
        except Exception:
            log.exception("video frame handler failed")


async def read_audio(
    track: MediaStreamTrack,
    on_samples: Callable[[np.ndarray, float], None],
    on_error: Callable[[str], None],
) -> None:
    """Receive every audio frame, resample to 16 kHz mono float32, pass samples on."""
    converter = AudioConverter()
    async for frame in _received(track, "audio", on_error):
        if not isinstance(frame, av.AudioFrame):
            on_error("audio track delivered a non-audio frame")
            continue
        try:
            samples = converter.convert(frame)
            end = frame_media_time(frame) + frame.samples / float(frame.sample_rate or SAMPLE_RATE)
        except Exception as exc:  # an undecodable frame harms only itself
            on_error(f"audio frame could not be resampled: {exc}")
            continue
        if samples.size:
            on_samples(samples, end)

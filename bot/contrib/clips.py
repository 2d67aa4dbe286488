"""Media sources for simulated participants: real clips decoded once, or generated audio/video.

A simulated participant (demo, tests, load generator) streams 640x480 video at 15 fps and 48 kHz
audio, looping its clip. Clips are decoded with PyAV once into memory so that looping costs no
decode work; the tracks pace themselves on the wall clock like a camera and a microphone would.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

VIDEO_CLOCK = 90000
AUDIO_RATE = 48000
AUDIO_PTIME = 0.02


@dataclass
class ClipMedia:
    """Decoded frames of one clip, ready to loop."""

    video: list[av.VideoFrame]
    audio: np.ndarray | None  # int16 mono at 48 kHz
    fps: float
    source: str


def load_clip(
    path: str | Path, width: int = 640, height: int = 480, fps: float = 15.0, max_s: float = 10.0
) -> ClipMedia:
    """Decode a media file into yuv420p frames at ``fps`` and 48 kHz mono int16 audio."""
    path = Path(path)
    frames: list[av.VideoFrame] = []
    audio_chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        has_video = bool(container.streams.video)
        has_audio = bool(container.streams.audio)
        if not (has_video or has_audio):
            raise ValueError(f"{path}: no audio or video stream")
        if has_video:
            next_t = 0.0
            for frame in container.decode(video=0):
                t = float(frame.time) if frame.time is not None else next_t
                if t > max_s:
                    break
                if t + 1e-6 < next_t:
                    continue
                frames.append(frame.reformat(width=width, height=height, format="yuv420p"))
                next_t += 1.0 / fps
                while t + 1e-6 >= next_t:  # source slower than fps: repeat
                    frames.append(frames[-1])
                    next_t += 1.0 / fps
    if has_audio:
        with av.open(str(path)) as container:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
            for aframe in container.decode(audio=0):
                for out in resampler.resample(aframe):
                    audio_chunks.append(out.to_ndarray().reshape(-1))
                if sum(c.size for c in audio_chunks) > max_s * AUDIO_RATE:
                    break
    audio = np.concatenate(audio_chunks).astype(np.int16) if audio_chunks else None
    return ClipMedia(frames, audio, fps, str(path))


def generated_clip(
    seconds: float = 2.0, fps: float = 15.0, width: int = 640, height: int = 480, tone_hz: float = 220.0
) -> ClipMedia:
    """Moving colour bars and a warbling tone: media with no face and a non-silent signal."""
    n = int(seconds * fps)
    frames = []
    for i in range(n):
        img = np.zeros((height, width, 3), dtype=np.uint8)
        x = np.arange(width)
        img[:, :, 0] = ((x + i * 8) % 256).astype(np.uint8)
        img[:, :, 1] = (i * 5) % 256
        img[:, :, 2] = 128
        frames.append(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p"))
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    wave = 0.3 * np.sin(2 * math.pi * tone_hz * t * (1 + 0.1 * np.sin(2 * math.pi * 3 * t)))
    return ClipMedia(frames, (wave * 32767).astype(np.int16), fps, "generated")


class ClipVideoTrack(MediaStreamTrack):
    """Loops decoded frames at the clip's fps; ``paused`` stops sending (as a frozen camera would)."""

    kind = "video"

    def __init__(self, clip: ClipMedia) -> None:
        super().__init__()
        if not clip.video:
            raise ValueError(f"{clip.source}: no video frames")
        self._clip = clip
        self._index = 0
        self._start: float | None = None
        self._count = 0
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.sent_wall: dict[int, float] = {}

    def pause(self) -> None:
        self.resumed.clear()

    def resume(self) -> None:
        self.resumed.set()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if not self.resumed.is_set():
            await self.resumed.wait()
            self._start = None
        now = time.time()
        if self._start is None:
            self._start = now - self._count / self._clip.fps
        target = self._start + self._count / self._clip.fps
        if target > now:
            await asyncio.sleep(target - now)
        frame = self._clip.video[self._index]
        self._index = (self._index + 1) % len(self._clip.video)
        pts = int(self._count * VIDEO_CLOCK / self._clip.fps)
        self._count += 1
        out = frame.reformat(format="yuv420p")
        out.pts = pts
        out.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return out


class ClipAudioTrack(MediaStreamTrack):
    """Loops 48 kHz mono audio in 20 ms frames; ``silent`` sends zeros (a muted-but-live mic)."""

    kind = "audio"

    def __init__(self, samples: np.ndarray | None, silent: bool = False) -> None:
        super().__init__()
        self._samples = samples if samples is not None and samples.size else np.zeros(AUDIO_RATE, np.int16)
        self.silent = silent or samples is None
        self._pos = 0
        self._count = 0
        self._start: float | None = None
        self.resumed = asyncio.Event()
        self.resumed.set()

    def pause(self) -> None:
        self.resumed.clear()

    def resume(self) -> None:
        self.resumed.set()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if not self.resumed.is_set():
            await self.resumed.wait()
            self._start = None
        n = int(AUDIO_RATE * AUDIO_PTIME)
        now = time.time()
        if self._start is None:
            self._start = now - self._count * AUDIO_PTIME
        target = self._start + self._count * AUDIO_PTIME
        if target > now:
            await asyncio.sleep(target - now)
        if self.silent:
            chunk = np.zeros(n, dtype=np.int16)
        else:
            idx = (self._pos + np.arange(n)) % self._samples.size
            chunk = self._samples[idx]
            self._pos = (self._pos + n) % self._samples.size
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._count * n
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._count += 1
        return frame

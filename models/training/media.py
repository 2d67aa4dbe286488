"""Decoding labelled clips with PyAV: which streams a file has, frames at given times, 16 kHz audio.

Offline extraction needs three things from a file and nothing else: its video duration (the frame
times are spread over it), the RGB frames shown at those times, and the whole soundtrack as 16 kHz
mono float32 (the rate Wav2Vec2 and the live bot use). Frames are picked in one decoding pass and
only the picked ones are converted to RGB, so a 720p clip never sits in memory as a whole.

Every failure surfaces as :class:`ClipError` with the path and the cause; the extractor turns it
into a skipped clip with that reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from models.constants import SAMPLE_RATE

_TIME_EPS = 1e-6


class ClipError(Exception):
    """A clip that cannot be used; the message says why."""


@dataclass(frozen=True)
class StreamInfo:
    """What a file holds: usable video / audio streams and the video duration in seconds."""

    has_video: bool
    has_audio: bool
    video_duration_s: float | None


def _open(path: Path) -> Any:
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise ClipError(f"not a readable media file ({exc})") from exc


def _video_streams(container: Any) -> list[Any]:
    """Video streams that are a camera, not cover art attached to an audio file."""
    attached = getattr(getattr(av.stream, "Disposition", None), "attached_pic", None)
    out = []
    for s in container.streams.video:
        disposition = getattr(s, "disposition", None)
        if disposition is not None and attached is not None and disposition & attached:
            continue
        out.append(s)
    return out


def probe(path: Path) -> StreamInfo:
    """Read the header: usable streams and the video duration (stream, then container duration)."""
    with _open(path) as container:
        fmt = str(container.format.name)
        if fmt == "image2" or fmt.endswith("_pipe"):
            raise ClipError(f"is a still image ({fmt}), not a recording")
        videos = _video_streams(container)
        has_audio = len(container.streams.audio) > 0
        duration = None
        if videos:
            vs = videos[0]
            if vs.duration is not None and vs.time_base is not None:
                duration = float(vs.duration * vs.time_base)
            elif container.duration:
                duration = float(container.duration) / 1e6
        return StreamInfo(has_video=bool(videos), has_audio=has_audio, video_duration_s=duration)


def _frame_period(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 1.0 / 30.0


def measure_video_duration(path: Path) -> float:
    """Decode timestamps only (no conversion) when the header states no duration."""
    with _open(path) as container:
        videos = _video_streams(container)
        if not videos:
            raise ClipError("no video stream")
        stream = videos[0]
        period = _frame_period(stream)
        first = last = None
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                first = float(frame.time) if first is None else first
                last = float(frame.time)
        except av.FFmpegError as exc:
            raise ClipError(f"video decoding failed: {exc}") from exc
        if first is None or last is None:
            raise ClipError("no video frame could be decoded")
        return last - first + period


def frames_at(path: Path, times_s: Sequence[float]) -> list[np.ndarray]:
    """RGB uint8 frames shown at each time (seconds from the first frame), in one decoding pass.

    The frame shown at ``t`` is the last one whose timestamp is ≤ ``t``; times after the last frame
    get the last frame, times before the first frame get the first. ``times_s`` must be sorted.
    """
    targets = [float(t) for t in times_s]
    if any(b < a for a, b in itertools.pairwise(targets)):
        raise ValueError("frame times must be sorted")
    out: list[np.ndarray] = []
    with _open(path) as container:
        videos = _video_streams(container)
        if not videos:
            raise ClipError("no video stream")
        stream = videos[0]
        stream.thread_type = "AUTO"
        period = _frame_period(stream)
        origin: float | None = None
        previous: Any = None
        index = 0
        try:
            for frame in container.decode(stream):
                t_abs = float(frame.time) if frame.time is not None else None
                if origin is None:
                    origin = t_abs if t_abs is not None else 0.0
                t = (t_abs - origin) if t_abs is not None else index * period
                index += 1
                while len(out) < len(targets) and targets[len(out)] < t - _TIME_EPS:
                    out.append(_rgb(previous if previous is not None else frame))
                if len(out) == len(targets):
                    break
                previous = frame
        except av.FFmpegError as exc:
            raise ClipError(f"video decoding failed after {len(out)} of {len(targets)} frames: {exc}") from exc
        if previous is None and not out:
            raise ClipError("no video frame could be decoded")
        while len(out) < len(targets):
            out.append(_rgb(previous))
    return out


def _rgb(frame: Any) -> np.ndarray:
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))


def decode_audio(path: Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream resampled to ``rate`` Hz mono float32 (PyAV's resampler, as live)."""
    with _open(path) as container:
        if not container.streams.audio:
            raise ClipError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        except av.FFmpegError as exc:
            raise ClipError(f"audio decoding failed: {exc}") from exc
    if not chunks:
        raise ClipError("audio stream holds no samples")
    return np.concatenate(chunks).astype(np.float32, copy=False)

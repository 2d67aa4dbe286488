"""Reading a recording with PyAV: the file-reader stand-in for ``track.recv()``.

A live track hands the engine video frames at their pts and 16 kHz audio chunks when a chunk is
complete. :class:`MediaReader` produces the same two kinds of event from a file, merged into one
stream ordered by *arrival* media time (a video frame arrives at its pts, an audio chunk at its
end), so that the replay timeline sees the inputs in the order a live bot would have. Audio goes
through the live reader's own resampler (:class:`bot.pipeline.media.AudioConverter`).

Everything that can be wrong with a file surfaces as :class:`MediaError` with the path and what
to do: unreadable or mis-named files, files without an audio or video stream, still images,
decoding errors, and containers that end well before the duration their header declares
(truncated copies). Decoding is lazy, so a long recording is never held in memory.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from bot.pipeline.media import AudioConverter, frame_media_time
from models.constants import SAMPLE_RATE

# Containers whose header states the duration reliably; elsewhere (mp3, wav, ogg) FFmpeg estimates
# it from the file size or bit rate, so a shortfall there says nothing about truncation.
_DECLARED_DURATION_FORMATS = ("matroska", "webm", "flv", "mov", "mp4", "avi")
_TRUNCATION_SLACK_S = 0.5
_TRUNCATION_SLACK_FRACTION = 0.05


class MediaError(Exception):
    """A recording that cannot be (fully) replayed; the message names the file and the cause."""


@dataclass(frozen=True)
class VideoStreamInfo:
    index: int
    codec: str
    width: int
    height: int
    fps: float | None


@dataclass(frozen=True)
class AudioStreamInfo:
    index: int
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds, read from its header before any decoding."""

    path: Path
    format_name: str
    duration_s: float | None
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None

    def describe(self) -> dict[str, Any]:
        return {
            "format": self.format_name,
            "durationS": None if self.duration_s is None else round(self.duration_s, 3),
            "video": None
            if self.video is None
            else {
                "codec": self.video.codec,
                "width": self.video.width,
                "height": self.video.height,
                "fps": None if self.video.fps is None else round(self.video.fps, 3),
            },
            "audio": None
            if self.audio is None
            else {"codec": self.audio.codec, "sampleRate": self.audio.sample_rate, "channels": self.audio.channels},
        }


@dataclass(frozen=True)
class VideoEvent:
    """A decoded frame; it arrives at its pts. Conversion to RGB happens later, on a face thread."""

    arrival: float
    frame: av.VideoFrame


@dataclass(frozen=True)
class AudioEvent:
    """16 kHz mono float32 samples of one decoded audio frame; they arrive when the frame ends."""

    arrival: float
    samples: np.ndarray
    start: float


Event = VideoEvent | AudioEvent


def _open(path: Path) -> Any:
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError(
            f"{path}: not a readable media file ({_reason(exc)}); check that the file is complete and its "
            f"extension matches its content"
        ) from exc


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words without the path it repeats (``[Errno n] message: 'path'``)."""
    return str(getattr(exc, "strerror", None) or exc)


def _usable_video(stream: Any) -> bool:
    """Cover art in audio files is a one-picture 'video' stream; it is not a camera."""
    disposition = getattr(stream, "disposition", None)
    attached = getattr(getattr(av.stream, "Disposition", None), "attached_pic", None)
    return not (disposition is not None and attached is not None and disposition & attached)


def probe(path: Path) -> MediaInfo:
    """Read the header: which streams the file has and how long it says it is."""
    with _open(path) as container:
        fmt = str(container.format.name)
        if fmt == "image2" or fmt.endswith("_pipe"):
            raise MediaError(f"{path}: is a still image ({fmt}), not a recording")
        videos = [s for s in container.streams.video if _usable_video(s)]
        audios = list(container.streams.audio)
        if not videos and not audios:
            kinds = ", ".join(sorted({str(s.type) for s in container.streams})) or "none"
            raise MediaError(f"{path}: no usable stream: it has no audio or video stream (streams: {kinds})")
        video = None
        if videos:
            vs = videos[0]
            rate = vs.average_rate or vs.guessed_rate
            video = VideoStreamInfo(
                vs.index,
                str(vs.codec_context.name),
                int(vs.codec_context.width or 0),
                int(vs.codec_context.height or 0),
                float(rate) if rate else None,
            )
        audio = None
        if audios:
            a = audios[0]
            audio = AudioStreamInfo(
                a.index, str(a.codec_context.name), int(a.codec_context.sample_rate or 0), int(a.codec_context.channels)
            )
        duration = float(container.duration) / 1e6 if container.duration else None
        return MediaInfo(path, fmt, duration, video, audio)


class MediaReader:
    """Lazily decodes one file into arrival-ordered :data:`Event` values.

    Video and audio are decoded from two independent demuxers of the same file, so neither stream
    has to be buffered while the other catches up. After :meth:`events` is exhausted, ``end_s``
    is the media time the recording reached and :meth:`check_complete` says whether that falls
    short of the header's duration.
    """

    def __init__(self, info: MediaInfo) -> None:
        self.info = info
        self.video_frames = 0
        self.audio_samples = 0
        self.first_time: float | None = None
        self.end_s = 0.0

    def events(self) -> Iterator[Event]:
        streams: list[Iterator[Event]] = []
        firsts: list[float] = []
        # Pull the first event of each stream so the timeline's origin is known before any step.
        for gen in (self._audio(), self._video()):
            first = next(gen, None)
            if first is None:
                continue
            firsts.append(first.start if isinstance(first, AudioEvent) else first.arrival)
            streams.append(itertools.chain([first], gen))
        if not streams:
            raise MediaError(f"{self.info.path}: no usable stream: no audio or video frame could be decoded")
        self.first_time = min(firsts)
        # Ties: audio (stream 0) first, so that a step sees everything that arrived at its time.
        yield from heapq.merge(*streams, key=lambda e: e.arrival)

    def check_complete(self) -> None:
        """Raise :class:`MediaError` when the file ends well before its declared duration."""
        declared = self.info.duration_s
        if declared is None or not any(f in self.info.format_name for f in _DECLARED_DURATION_FORMATS):
            return
        if declared - self.end_s > max(_TRUNCATION_SLACK_S, _TRUNCATION_SLACK_FRACTION * declared):
            raise MediaError(
                f"{self.info.path}: truncated: media ends at {self.end_s:.2f} s but the header says "
                f"{declared:.2f} s; results cover the first {self.end_s:.2f} s"
            )

    def _decoded(self, container: Any, index: int, kind: str) -> Iterator[Any]:
        """The decoded frames of one stream; a decoding error names the file and how far it got."""
        frames = container.decode(container.streams[index])
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                raise MediaError(
                    f"{self.info.path}: {kind} decoding failed after {self.end_s:.2f} s: {_reason(exc)}"
                ) from exc
            yield frame

    def _video(self) -> Iterator[Event]:
        vinfo = self.info.video
        if vinfo is None:
            return
        period = 1.0 / vinfo.fps if vinfo.fps else 1.0 / 30.0
        last = None
        with _open(self.info.path) as container:
            for frame in self._decoded(container, vinfo.index, "video"):
                t = float(frame.time) if frame.time is not None else (0.0 if last is None else last + period)
                if last is not None and t < last:
                    t = last  # never let media time run backwards
                last = t
                self.video_frames += 1
                self.end_s = max(self.end_s, t + period)
                yield VideoEvent(t, frame)

    def _audio(self) -> Iterator[Event]:
        ainfo = self.info.audio
        if ainfo is None:
            return
        converter = AudioConverter(SAMPLE_RATE)
        end = None
        with _open(self.info.path) as container:
            for frame in self._decoded(container, ainfo.index, "audio"):
                rate = float(frame.sample_rate or SAMPLE_RATE)
                start = frame_media_time(frame) if frame.pts is not None else (end or 0.0)
                frame_end = start + frame.samples / rate
                if end is not None and frame_end < end:
                    frame_end = end
                end = frame_end
                try:
                    samples = converter.convert(frame)
                except (av.FFmpegError, ValueError) as exc:
                    raise MediaError(
                        f"{self.info.path}: audio frame at {start:.2f} s could not be resampled: {_reason(exc)}"
                    ) from exc
                self.end_s = max(self.end_s, frame_end)
                if samples.size == 0:
                    continue
                self.audio_samples += int(samples.size)
                yield AudioEvent(frame_end, samples, start)

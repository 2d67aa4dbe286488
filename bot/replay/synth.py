"""Writing test recordings with PyAV: re-encode a clip at a size, drop a stream, or cut a gap.

The tests and the benchmark need recordings that the shared media does not contain: a 640x480
clip, a video-only file, a file whose audio (or video) stops for a while and comes back. They are
made from a real clip so that faces and speech stay real. The container follows the extension:
``.mp4`` (H.264 + AAC), ``.mkv``/``.webm`` (VP8 + Opus), ``.wav`` (PCM, audio only).
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

_CODECS = {
    ".mp4": ("libx264", "aac", None),
    ".mov": ("libx264", "aac", None),
    ".mkv": ("libvpx", "libopus", None),
    ".webm": ("libvpx", "libopus", "webm"),
    ".wav": (None, "pcm_s16le", None),
}
AUDIO_RATE = 48000


@dataclass(frozen=True)
class Gap:
    """A stretch of media time [start_s, end_s) in which a stream sends nothing."""

    start_s: float
    end_s: float

    def covers(self, t: float) -> bool:
        return self.start_s <= t < self.end_s


def _read(
    source: Path, width: int, height: int, max_s: float | None
) -> tuple[list[tuple[float, np.ndarray]], np.ndarray]:
    frames: list[tuple[float, np.ndarray]] = []
    with av.open(str(source)) as container:
        if container.streams.video:
            for frame in container.decode(video=0):
                t = float(frame.time or 0.0)
                if max_s is not None and t >= max_s:
                    break
                frames.append((t, frame.to_ndarray(width=width, height=height, format="rgb24")))
    chunks: list[np.ndarray] = []
    with av.open(str(source)) as container:
        if container.streams.audio:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
            for aframe in container.decode(audio=0):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(aframe))
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if max_s is not None:
        audio = audio[: int(max_s * AUDIO_RATE)]
    return frames, audio


def write_recording(
    source: Path,
    dest: Path,
    *,
    width: int = 640,
    height: int = 480,
    fps: float = 30.0,
    video: bool = True,
    audio: bool = True,
    video_gap: Gap | None = None,
    audio_gap: Gap | None = None,
    loops: int = 1,
    max_s: float | None = None,
) -> Path:
    """Re-encode ``source`` into ``dest`` (format from its extension) with the chosen streams.

    ``loops`` plays the clip that many times back to back; a gap removes every frame (or audio
    packet) whose start falls inside it, as a stalled camera or microphone would.
    """
    suffix = dest.suffix.lower()
    if suffix not in _CODECS:
        raise ValueError(f"cannot write {suffix!r}; use one of {sorted(_CODECS)}")
    vcodec, acodec, fmt = _CODECS[suffix]
    video = video and vcodec is not None
    frames, samples = _read(source, width, height, max_s)
    if video and not frames:
        raise ValueError(f"{source} has no video to copy")
    if audio and samples.size == 0:
        raise ValueError(f"{source} has no audio to copy")
    clip_s = max(frames[-1][0] + 1.0 / fps if frames else 0.0, samples.size / AUDIO_RATE)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(dest), "w", format=fmt) as out:
        # Every stream must exist before the first packet is muxed (the header is written then).
        vstream = _video_stream(out, vcodec, width, height, fps) if video and vcodec else None
        astream = cast(AudioStream, out.add_stream(acodec, rate=AUDIO_RATE, layout="mono")) if audio else None
        if vstream is not None:
            _write_video(out, vstream, frames, fps, clip_s * loops, clip_s, video_gap)
        if astream is not None:
            total = max(0, round(clip_s * AUDIO_RATE) - samples.size)
            _write_audio(out, astream, np.tile(np.pad(samples, (0, total)), max(1, loops)), audio_gap)
    return dest


def _video_stream(out: Any, codec: str, width: int, height: int, fps: float) -> VideoStream:
    stream = cast(VideoStream, out.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001)))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if codec == "libx264":
        stream.codec_context.options = {"preset": "veryfast"}
    return stream


def _write_video(
    out: Any,
    stream: VideoStream,
    frames: list[tuple[float, np.ndarray]],
    fps: float,
    total_s: float,
    clip_s: float,
    gap: Gap | None,
) -> None:
    time_base = 1 / fractions.Fraction(fps).limit_denominator(1001)
    src = 0
    for j in range(int(total_s * fps)):
        t = j / fps
        local = t % clip_s
        if local < frames[src][0] - 1e-9:
            src = 0  # the clip starts over
        while src + 1 < len(frames) and frames[src + 1][0] <= local + 1e-9:
            src += 1
        if gap is not None and gap.covers(t):
            continue
        vf = av.VideoFrame.from_ndarray(frames[src][1], format="rgb24").reformat(format="yuv420p")
        vf.pts = j
        vf.time_base = time_base
        for packet in stream.encode(vf):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def _write_audio(out: Any, stream: AudioStream, samples: np.ndarray, gap: Gap | None) -> None:
    n = stream.codec_context.frame_size or 1024
    fmt_name = stream.codec_context.format.name if stream.codec_context.format else "s16"
    for k in range(0, samples.size - n + 1, n):
        if gap is not None and gap.covers(k / AUDIO_RATE):
            continue
        chunk = samples[k : k + n].reshape(1, -1)
        if fmt_name.startswith("s16"):
            chunk = (np.clip(chunk, -1.0, 1.0) * 32767).astype(np.int16)
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt_name, layout="mono")
        af.sample_rate = AUDIO_RATE
        af.pts = k
        af.time_base = fractions.Fraction(1, AUDIO_RATE)
        for packet in stream.encode(af):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)

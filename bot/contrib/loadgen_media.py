"""The load generator's media: send-time logs, pre-encoded VP8/Opus tracks, and the clips they play.

See :mod:`bot.contrib.loadgen` for how the send-time logs give the end-to-end latency.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bot.contrib.clips import AUDIO_RATE, ClipMedia, load_clip

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
AUDIO_FRAME = 960  # 20 ms at 48 kHz
MEDIA_EXTENSIONS = (".flv", ".mp4", ".mkv", ".webm", ".mov", ".avi")

Sender = Literal["preencoded", "live"]


# -- send-time logs ------------------------------------------------------------------------------


class SendLog:
    """Wall time at which frame k of one stream left its track; the newest ``maxlen`` only."""

    def __init__(self, frame_s: float, end_stamped: bool, maxlen: int) -> None:
        self.frame_s = frame_s
        self.end_stamped = end_stamped  # the bot stamps audio frames with their end time
        self.maxlen = maxlen
        self._walls: OrderedDict[int, float] = OrderedDict()

    def record(self, index: int, wall: float) -> None:
        self._walls[index] = wall
        if len(self._walls) > self.maxlen:
            self._walls.popitem(last=False)

    def lookup(self, media_time: float) -> float | None:
        """Send time of the frame whose (start or end) media time is ``media_time``."""
        k = media_time / self.frame_s
        index = round(k) - (1 if self.end_stamped else 0)
        if abs(k - round(k)) > 0.02:  # not on this stream's frame grid
            return None
        return self._walls.get(index)

    def __len__(self) -> int:
        return len(self._walls)


class _Paced:
    """Wall-clock pacing shared by the tracks: frame k is due at start + k·period."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.count = 0
        self._start: float | None = None

    async def wait(self) -> float:
        now = time.time()
        if self._start is None:
            self._start = now
        target = self._start + self.count * self.period
        if target > now:
            await asyncio.sleep(target - now)
            now = time.time()
        return now


class _EncodedTrack(MediaStreamTrack):
    """Loops pre-encoded packets on the wall clock, one per ``period``; ``pts(k)`` stamps packet k."""

    def __init__(
        self,
        packets: list[bytes],
        period: float,
        pts: Callable[[int], int],
        time_base: fractions.Fraction,
        log_: SendLog,
    ) -> None:
        super().__init__()
        if not packets:
            raise ValueError(f"no encoded {self.kind} frames")
        self._packets = packets
        self._pts = pts
        self._time_base = time_base
        self._pace = _Paced(period)
        self._log = log_

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        now = await self._pace.wait()
        k = self._pace.count
        self._pace.count += 1
        packet = av.Packet(self._packets[k % len(self._packets)])
        packet.pts = self._pts(k)
        packet.time_base = self._time_base
        self._log.record(k, now)
        return packet


class EncodedVideoTrack(_EncodedTrack):
    """Loops pre-encoded VP8 packets at ``fps``; aiortc only packetises them."""

    kind = "video"

    def __init__(self, packets: list[bytes], fps: float, log_: SendLog) -> None:
        super().__init__(
            packets, 1.0 / fps, lambda k: round(k * VIDEO_CLOCK / fps), fractions.Fraction(1, VIDEO_CLOCK), log_
        )


class EncodedAudioTrack(_EncodedTrack):
    """Loops pre-encoded 20 ms Opus packets."""

    kind = "audio"

    def __init__(self, packets: list[bytes], log_: SendLog) -> None:
        super().__init__(
            packets, AUDIO_FRAME / AUDIO_RATE, lambda k: k * AUDIO_FRAME, fractions.Fraction(1, AUDIO_RATE), log_
        )


class LoggedTrack(MediaStreamTrack):
    """Wraps a raw-frame track (``--sender live``) and logs when each frame left it."""

    def __init__(self, inner: MediaStreamTrack, frame_s: float, log_: SendLog) -> None:
        super().__init__()
        self.kind = inner.kind
        self._inner = inner
        self._frame_s = frame_s
        self._log = log_

    async def recv(self) -> Any:
        frame = await self._inner.recv()
        if frame.pts is not None and frame.time_base is not None:
            k = round(float(frame.pts * frame.time_base) / self._frame_s)
            self._log.record(k, time.time())
        return frame

    def stop(self) -> None:
        self._inner.stop()
        super().stop()


# -- clips, encoded once ---------------------------------------------------------------------------


@dataclass
class EncodedClip:
    """One clip decoded once and (for ``preencoded``) encoded once, shared by participants."""

    clip: ClipMedia
    video: list[bytes]
    speech: list[bytes]
    silence: list[bytes]


def encode_vp8(frames: Sequence[av.VideoFrame], fps: float, bitrate: int = 500_000, keyint: int = 30) -> list[bytes]:
    """VP8-encode frames once: one packet per frame, a keyframe every ``keyint`` frames (and at 0,
    so the loop restarts on a keyframe and a receiver that lost a packet recovers within 2 s).

    500 kbit/s is aiortc's own starting bitrate for a video sender, i.e. what the bot receives from
    a simulated participant with ``--sender live`` too."""
    ctx = av.CodecContext.create("libvpx", "w")
    ctx.width = frames[0].width
    ctx.height = frames[0].height
    ctx.pix_fmt = "yuv420p"
    ctx.bit_rate = bitrate
    rate = fractions.Fraction(fps).limit_denominator(1000)
    ctx.time_base = 1 / rate
    ctx.framerate = rate
    ctx.gop_size = keyint
    ctx.options = {"deadline": "good", "cpu-used": "2", "lag-in-frames": "0", "qmin": "4", "qmax": "48"}
    out: list[bytes] = []
    for i, frame in enumerate(frames):
        f = frame.reformat(format="yuv420p")
        f.pts = i
        f.time_base = 1 / rate
        data = b"".join(bytes(p) for p in ctx.encode(f))
        if data:
            out.append(data)
    for p in ctx.encode(None):
        out.append(bytes(p))
    return out


def encode_opus(samples: np.ndarray | None, n_frames: int | None = None) -> list[bytes]:
    """Opus-encode 48 kHz mono int16 (stereo on the wire, as aiortc's encoder) in 20 ms packets;
    ``None`` encodes ``n_frames`` of digital silence."""
    ctx = av.CodecContext.create("libopus", "w")
    ctx.bit_rate = 64000
    ctx.format = "s16"
    ctx.layout = "stereo"
    ctx.sample_rate = AUDIO_RATE
    ctx.time_base = fractions.Fraction(1, AUDIO_RATE)
    ctx.options = {"application": "voip"}
    if samples is None:
        samples = np.zeros(AUDIO_FRAME * (n_frames or 50), dtype=np.int16)
    n = len(samples) // AUDIO_FRAME
    out: list[bytes] = []
    for k in range(n + 1):  # one extra frame flushes the encoder's look-ahead
        chunk = samples[(k % n) * AUDIO_FRAME : (k % n + 1) * AUDIO_FRAME]
        frame = av.AudioFrame.from_ndarray(np.repeat(chunk, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = k * AUDIO_FRAME
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        out.extend(bytes(p) for p in ctx.encode(frame))
    return out[:n]


def find_media(sources: Sequence[str] | None) -> list[Path]:
    """Media files from the given files/directories, or the shared clips (crema-d, ravdess)."""
    roots: list[Path] = [Path(s) for s in sources] if sources else _default_media_roots()
    found: list[Path] = []
    for root in roots:
        if root.is_dir():
            found.extend(sorted(p for p in root.rglob("*") if p.suffix.lower() in MEDIA_EXTENSIONS))
        elif root.is_file():
            found.append(root)
    return found


def _default_media_roots() -> list[Path]:
    from models.assets import shared_dir

    for base in (shared_dir() / "media",):
        roots = [base / "crema-d", base / "ravdess"]
        if any(r.is_dir() for r in roots):
            return roots
    return []


def prepare_clips(paths: Sequence[Path], width: int, height: int, fps: float, sender: Sender) -> list[EncodedClip]:
    clips: list[EncodedClip] = []
    for path in paths:
        clip = load_clip(path, width=width, height=height, fps=fps)
        if not clip.video:
            log.warning("%s has no video; skipped", path)
            continue
        if sender == "preencoded":
            n_audio = max(1, int(len(clip.video) / fps / (AUDIO_FRAME / AUDIO_RATE)))
            speech = encode_opus(clip.audio) if clip.audio is not None else encode_opus(None, n_audio)
            clips.append(EncodedClip(clip, encode_vp8(clip.video, fps), speech, encode_opus(None, 50)))
        else:
            clips.append(EncodedClip(clip, [], [], []))
    if not clips:
        raise RuntimeError("no usable media (pass --media FILE/DIR)")
    return clips

"""``hoovik-bot loadgen``: N real WebRTC participants in one process, to load a running bot.

Each participant joins a room through the signaling server, offers to the bot with a data channel,
a 640x480 15 fps VP8 video track and an Opus audio track made from a real clip (looping), and
receives its own results on its data channel. The first ``--speaking`` participants send the
clip's speech; the others send digital silence (a live, unmuted microphone with nothing said).

Senders. By default the clips are encoded once at start-up (VP8 and Opus, with PyAV) and the
tracks hand aiortc the encoded packets, which it only packetises: the load generator then costs
a small fraction of a core for 10 participants, so on a 2-core machine the bot, not the load
generator, gets the CPU. ``--sender live`` uses ``bot.media``'s clip tracks and aiortc's own
encoders instead (one VP8 encode per frame per participant, as a browser would do; ~0.5-1 core
for 10 participants here), which is more realistic on the wire but steals CPU from the bot.

Latency. A result carries ``capturedAt`` (wall ms when the bot received the newest frame it used)
and ``mediaTime`` (that frame's media time). Two numbers are reported per result:

* **bot-side** = arrival − ``capturedAt``: receive → features → inference → data channel;
* **end-to-end** = arrival − the wall time at which the sender's track produced that frame. The
  tracks here log the wall time of every frame they produce by frame index. aiortc's receiver
  rebases RTP timestamps so that the first frame it receives is media time 0 (its
  ``TimestampMapper``); the sender's first frame also has pts 0, and on loopback nothing is lost,
  so the bot's media time equals the sender's (checked: ``capturedAt`` − send time, the transport
  part, is reported and must be small and non-negative). ``mediaTime`` of a video frame is k/fps;
  of audio, the end of a 20 ms frame ((k+1)·0.02 s); a result's modality says which streams it
  used and the stream whose send time is consistent with ``capturedAt`` is taken.

Both processes share the machine's wall clock, so no clock offset is involved. Bot CPU% and RSS
come from psutil on ``--bot-pid`` (sampled every second); throttle events, drops and pool batch
histograms from the bot's ``/stats/json`` (``--bot-stats``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import itertools
import json
import logging
import math
import os
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import aiohttp
import av
import numpy as np
import psutil
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bot.media import AUDIO_RATE, ClipAudioTrack, ClipMedia, ClipVideoTrack, load_clip
from signaling.base import Disconnected, PeerJoined, PeerLeft, RemoteAnswer, RemoteCandidate, ResultRelay, Role
from signaling.client import SignalingClient, candidate_from_json, mint_invite

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
AUDIO_FRAME = 960  # 20 ms at 48 kHz
MEDIA_EXTENSIONS = (".flv", ".mp4", ".mkv", ".webm", ".mov", ".avi")
SEND_LOG_S = 120.0  # how far back send times are kept (results arrive well within this)
POOL_KEYS = ("batchSizes", "completed", "failed", "rejected", "meanWaitMs", "busyS", "cpuS", "busyFraction")

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


class EncodedVideoTrack(MediaStreamTrack):
    """Loops pre-encoded VP8 frames at ``fps``; aiortc only packetises them (no encode per frame)."""

    kind = "video"

    def __init__(self, packets: list[bytes], fps: float, log_: SendLog) -> None:
        super().__init__()
        if not packets:
            raise ValueError("no encoded video frames")
        self._packets = packets
        self._fps = fps
        self._pace = _Paced(1.0 / fps)
        self._log = log_

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        now = await self._pace.wait()
        k = self._pace.count
        self._pace.count += 1
        packet = av.Packet(self._packets[k % len(self._packets)])
        packet.pts = round(k * VIDEO_CLOCK / self._fps)
        packet.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._log.record(k, now)
        return packet


class EncodedAudioTrack(MediaStreamTrack):
    """Loops pre-encoded 20 ms Opus packets."""

    kind = "audio"

    def __init__(self, packets: list[bytes], log_: SendLog) -> None:
        super().__init__()
        if not packets:
            raise ValueError("no encoded audio frames")
        self._packets = packets
        self._pace = _Paced(AUDIO_FRAME / AUDIO_RATE)
        self._log = log_

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        now = await self._pace.wait()
        k = self._pace.count
        self._pace.count += 1
        packet = av.Packet(self._packets[k % len(self._packets)])
        packet.pts = k * AUDIO_FRAME
        packet.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._log.record(k, now)
        return packet


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
    bases = []
    if os.environ.get("HOOVIK_SHARED"):
        bases.append(Path(os.environ["HOOVIK_SHARED"]) / "media")
    bases.append(Path(__file__).resolve().parents[2] / "shared" / "media")
    for base in bases:
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


# -- one participant ---------------------------------------------------------------------------------


@dataclass
class Arrival:
    """A result as it arrived; ``sent`` is the send time of the newest frame it used, looked up on
    arrival (the send logs only keep the last ``SEND_LOG_S`` seconds)."""

    wall: float
    message: dict[str, Any]
    sent: float | None = None


@dataclass
class LoadParticipant:
    """A meeting participant that streams one clip to the bot and records its results."""

    signaling_url: str
    room: str
    token: str
    participant_id: str
    clip: EncodedClip
    speaking: bool
    sender: Sender
    role: Role = "participant"
    results: deque[Arrival] = field(default_factory=lambda: deque(maxlen=50_000))
    others: int = 0
    via_signaling: int = 0
    video_log: SendLog = field(init=False)
    audio_log: SendLog = field(init=False)
    session: SignalingClient | None = None
    pc: RTCPeerConnection | None = None
    bot_id: str | None = None
    connected_at: float | None = None
    _task: asyncio.Task[None] | None = None
    _tracks: list[MediaStreamTrack] = field(default_factory=list)

    def __post_init__(self) -> None:
        fps = self.clip.clip.fps
        self.video_log = SendLog(1.0 / fps, False, int(SEND_LOG_S * fps))
        self.audio_log = SendLog(AUDIO_FRAME / AUDIO_RATE, True, int(SEND_LOG_S * AUDIO_RATE / AUDIO_FRAME))

    async def start(self) -> None:
        self.session = await SignalingClient.connect(
            self.signaling_url, self.room, self.token, self.participant_id, self.participant_id, self.role
        )
        await self.session.announce_media(True, True)
        self._task = asyncio.create_task(self._events(), name=f"loadgen-{self.participant_id}")
        for info in self.session.peers.values():
            if info.role == "bot":
                await self._offer_to(info.peer_id)
                break

    async def _events(self) -> None:
        assert self.session is not None
        async for ev in self.session.events():
            try:
                if isinstance(ev, PeerJoined) and ev.role == "bot" and self.bot_id is None:
                    await self._offer_to(ev.peer_id)
                elif isinstance(ev, RemoteAnswer) and ev.peer_id == self.bot_id and self.pc is not None:
                    await self.pc.setRemoteDescription(RTCSessionDescription(sdp=ev.sdp, type="answer"))
                elif (
                    isinstance(ev, RemoteCandidate)
                    and ev.peer_id == self.bot_id
                    and self.pc is not None
                    and ev.candidate
                ):
                    await self.pc.addIceCandidate(candidate_from_json(ev.candidate))
                elif isinstance(ev, ResultRelay):
                    # The bot's fallback when our data channel is not open: counted, so it shows.
                    self.via_signaling += 1
                    self._record(ev.payload)
                elif isinstance(ev, PeerLeft) and ev.peer_id == self.bot_id:
                    await self._close_pc()
                elif isinstance(ev, Disconnected):
                    return
            except Exception:
                log.exception("%s: handling %s failed", self.participant_id, type(ev).__name__)

    def _make_tracks(self) -> tuple[MediaStreamTrack, MediaStreamTrack]:
        if self.sender == "preencoded":
            video: MediaStreamTrack = EncodedVideoTrack(self.clip.video, self.clip.clip.fps, self.video_log)
            packets = self.clip.speech if self.speaking else self.clip.silence
            audio: MediaStreamTrack = EncodedAudioTrack(packets, self.audio_log)
        else:
            video = LoggedTrack(ClipVideoTrack(self.clip.clip), 1.0 / self.clip.clip.fps, self.video_log)
            inner = ClipAudioTrack(self.clip.clip.audio, silent=not self.speaking)
            audio = LoggedTrack(inner, AUDIO_FRAME / AUDIO_RATE, self.audio_log)
        return video, audio

    async def _offer_to(self, bot_id: str) -> None:
        await self._close_pc()
        self.bot_id = bot_id
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        channel = pc.createDataChannel("results")

        @channel.on("message")
        def on_message(message: Any) -> None:
            if isinstance(message, str):
                with contextlib.suppress(ValueError):
                    self._record(json.loads(message))

        video, audio = self._make_tracks()
        self._tracks = [video, audio]
        for track, mime in ((video, "video/VP8"), (audio, "audio/opus")):
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if self.sender == "preencoded":
                # Pre-encoded packets are VP8/Opus: negotiate exactly those codecs.
                codecs = RTCRtpSender.getCapabilities(track.kind).codecs
                transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() == mime.lower()])

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected" and self.connected_at is None:
                self.connected_at = time.time()

        await pc.setLocalDescription(await pc.createOffer())
        assert self.session is not None
        await self.session.send_offer(bot_id, pc.localDescription.sdp)

    def _record(self, message: Any) -> None:
        if not isinstance(message, dict) or message.get("event") != "emotion.result":
            return
        if message.get("participantId") != self.participant_id:
            self.others += 1  # a host also receives everyone else's results
            return
        self.results.append(Arrival(time.time(), message, self.send_time(message)))

    def send_time(self, message: dict[str, Any]) -> float | None:
        """When the newest frame this result used left our track (see the module docstring)."""
        media_time = message.get("mediaTime")
        captured = message.get("capturedAt")
        if media_time is None or captured is None:
            return None
        modality = (message.get("result") or {}).get("modality")
        logs = {"video_only": [self.video_log], "audio_only": [self.audio_log]}.get(
            str(modality), [self.video_log, self.audio_log]
        )
        cands = [t for lg in logs if (t := lg.lookup(float(media_time))) is not None]
        if not cands:
            return None
        cap = float(captured) / 1000.0
        # The right stream sent the frame shortly before the bot received it.
        return min(cands, key=lambda t: abs(cap - t))

    async def _close_pc(self) -> None:
        if self.pc is not None:
            pc, self.pc = self.pc, None
            with contextlib.suppress(Exception):
                await pc.close()

    async def stop(self) -> None:
        await self._close_pc()
        if self.session is not None:
            with contextlib.suppress(Exception):
                await self.session.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


# -- monitoring ------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the measurement start
    bot_cpu: float | None
    bot_rss: int | None
    loadgen_cpu: float
    system_cpu: float  # the whole machine, 100 = one core (so others = system - bot - loadgen)
    load1: float


@dataclass
class Monitor:
    """Samples the bot process (psutil) every second and its /stats/json every few seconds."""

    bot_pid: int | None
    stats_url: str | None
    interval: float = 1.0
    stats_every: float = 5.0
    samples: list[Sample] = field(default_factory=list)
    stats: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    last_stats: dict[str, Any] | None = None
    t0: float = 0.0
    max_samples: int = 36_000

    async def run(self) -> None:
        bot = psutil.Process(self.bot_pid) if self.bot_pid else None
        me = psutil.Process()
        if bot is not None:
            bot.cpu_percent(None)
        me.cpu_percent(None)
        psutil.cpu_percent(None)
        ncpu = psutil.cpu_count() or 1
        self.t0 = time.time()
        next_stats = 0.0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while True:
                await asyncio.sleep(self.interval)
                now = time.time() - self.t0
                cpu = rss = None
                if bot is not None:
                    try:
                        with bot.oneshot():
                            cpu, rss = bot.cpu_percent(None), int(bot.memory_info().rss)
                    except psutil.Error:
                        bot = None
                if len(self.samples) < self.max_samples:
                    system = psutil.cpu_percent(None) * ncpu
                    self.samples.append(Sample(now, cpu, rss, me.cpu_percent(None), system, os.getloadavg()[0]))
                if self.stats_url and now >= next_stats:
                    next_stats = now + self.stats_every
                    stats = await self.fetch(http)
                    if stats is not None:
                        self.last_stats = stats
                        keep = {k: stats.get(k) for k in ("throttle", "queues", "counters", "samplingFps")}
                        if len(self.stats) < self.max_samples:
                            self.stats.append((now, keep))

    async def fetch(self, http: aiohttp.ClientSession | None = None) -> dict[str, Any] | None:
        if not self.stats_url:
            return None
        own = http is None
        session = http or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with session.get(self.stats_url) as resp:
                data = await resp.json()
                return data if isinstance(data, dict) else None
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        finally:
            if own:
                await session.close()


# -- the run -------------------------------------------------------------------------------------------


@dataclass
class LoadgenOptions:
    signaling: str
    room: str
    host_token: str
    participants: int = 10
    speaking: int = 2
    duration: float = 60.0
    warmup: float = 10.0
    media: list[str] | None = None
    width: int = 640
    height: int = 480
    fps: float = 15.0
    sender: Sender = "preencoded"
    bot_pid: int | None = None
    bot_stats: str | None = None
    json_path: str | None = None
    with_host: bool = False
    quiet: bool = False
    connect_timeout: float = 60.0
    join_interval: float = 0.5


async def run_loadgen(opts: LoadgenOptions, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Start the participants, measure for ``warmup + duration`` seconds, return the summary."""
    if opts.participants < 1 or not 0 <= opts.speaking <= opts.participants:
        raise ValueError("need participants >= 1 and 0 <= speaking <= participants")
    paths = find_media(opts.media)
    t_prep = time.time()
    clips = await asyncio.to_thread(prepare_clips, paths, opts.width, opts.height, opts.fps, opts.sender)
    print(
        f"loadgen: {len(clips)} clips prepared in {time.time() - t_prep:.1f} s ({opts.sender}); "
        f"{opts.participants} participants, {opts.speaking} speaking",
        file=out,
        flush=True,
    )
    bot_pid = opts.bot_pid
    if bot_pid is None and opts.bot_stats:
        # Discovered from the bot's own telemetry (same machine).
        stats = await Monitor(None, opts.bot_stats).fetch()
        bot_pid = ((stats or {}).get("process") or {}).get("pid")
    monitor = Monitor(bot_pid, opts.bot_stats)
    parts: list[LoadParticipant] = []
    mon_task: asyncio.Task[None] | None = None
    load_start = os.getloadavg()
    try:
        for i in range(opts.participants):
            role: Role = "host" if (opts.with_host and i == 0) else "participant"
            token = (
                opts.host_token
                if role == "host"
                else await mint_invite(opts.signaling, opts.room, opts.host_token, "participant")
            )
            part = LoadParticipant(
                opts.signaling,
                opts.room,
                token,
                f"p{i + 1:02d}",
                clips[i % len(clips)],
                speaking=i < opts.speaking,
                sender=opts.sender,
                role=role,
            )
            await part.start()
            parts.append(part)
            # People join a meeting one after another; N DTLS handshakes at once on a small
            # machine would be a start-up burst no meeting produces.
            if i + 1 < opts.participants and opts.join_interval > 0:
                await asyncio.sleep(opts.join_interval)
        deadline = time.time() + opts.connect_timeout
        while not all(p.connected_at for p in parts):
            if time.time() > deadline:
                missing = [p.participant_id for p in parts if not p.connected_at]
                raise RuntimeError(f"not connected to the bot after {opts.connect_timeout} s: {missing}")
            await asyncio.sleep(0.1)
        mon_task = asyncio.create_task(monitor.run())
        started = time.time()
        measure_from = started + opts.warmup
        end = measure_from + opts.duration
        while time.time() < end:
            await asyncio.sleep(min(5.0, max(0.0, end - time.time())))
            if not opts.quiet:
                print(_progress(parts, started, measure_from), file=out, flush=True)
        final_stats = await monitor.fetch()
        summary = summarise(parts, monitor, started, measure_from, time.time(), opts, final_stats)
        summary["machineLoad"] = {
            "start": [round(x, 2) for x in load_start],
            "end": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        if mon_task is not None:
            mon_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mon_task
        for part in parts:
            await part.stop()
    print(format_summary(summary), file=out, flush=True)
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps(summary, indent=1) + "\n")
        print(f"loadgen: summary written to {opts.json_path}", file=out, flush=True)
    return summary


def _progress(parts: list[LoadParticipant], started: float, measure_from: float) -> str:
    now = time.time()
    phase = "warm-up" if now < measure_from else "measuring"
    rates = []
    for p in parts:
        recent = [a for a in p.results if now - a.wall <= 5.0]
        rates.append(len(recent) / 5.0)
    lat = [a.wall * 1000 - a.message["capturedAt"] for p in parts for a in p.results if now - a.wall <= 5.0]
    p50 = f"{np.percentile(lat, 50):.0f}" if lat else "-"
    return (
        f"t={now - started:6.1f}s {phase:<9} rate/s min {min(rates):.2f} mean {sum(rates) / len(rates):.2f} "
        f"bot-side p50 {p50} ms"
    )


def _pct(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p95": round(float(np.percentile(a, 95)), 1),
        "max": round(float(a.max()), 1),
    }


def _drift(times: Sequence[float], values: Sequence[float]) -> dict[str, float]:
    """Latency trend: least-squares slope (ms per minute) and p50 of the first vs last third."""
    if len(values) < 30:
        return {}
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    slope = float(np.polyfit(t - t[0], v, 1)[0]) * 60.0
    order = np.argsort(t)
    thirds = np.array_split(v[order], 3)
    return {
        "slopeMsPerMin": round(slope, 2),
        "p50FirstThird": round(float(np.percentile(thirds[0], 50)), 1),
        "p50LastThird": round(float(np.percentile(thirds[-1], 50)), 1),
    }


def summarise(
    parts: list[LoadParticipant],
    monitor: Monitor,
    started: float,
    measure_from: float,
    ended: float,
    opts: LoadgenOptions,
    final_stats: dict[str, Any] | None,
) -> dict[str, Any]:
    window = max(1e-9, ended - measure_from)
    rows: list[dict[str, Any]] = []
    all_bot: list[float] = []
    all_e2e: list[float] = []
    e2e_times: list[float] = []
    transport: list[float] = []
    unmapped = 0
    for p in parts:
        arrivals = [a for a in p.results if a.wall >= measure_from]
        bot_side = [a.wall * 1000 - a.message["capturedAt"] for a in arrivals if a.message.get("capturedAt")]
        e2e = []
        for a in arrivals:
            sent = a.sent
            if sent is None:
                unmapped += 1
                continue
            e2e.append((a.wall - sent) * 1000)
            e2e_times.append(a.wall - measure_from)
            transport.append(a.message["capturedAt"] - sent * 1000)
        all_bot.extend(bot_side)
        all_e2e.extend(e2e)
        profiles: dict[str, int] = {}
        for a in arrivals:
            m = str((a.message.get("result") or {}).get("modality"))
            profiles[m] = profiles.get(m, 0) + 1
        seqs = [a.message.get("seq", 0) for a in arrivals]
        rows.append(
            {
                "participantId": p.participant_id,
                "speaking": p.speaking,
                "clip": Path(p.clip.clip.source).name,
                "results": len(arrivals),
                "resultsPerSecond": round(len(arrivals) / window, 3),
                "profiles": profiles,
                "botSideMs": _pct(bot_side),
                "e2eMs": _pct(e2e),
                "seqGaps": int(sum(1 for a, b in itertools.pairwise(seqs) if b != a + 1)),
                "viaSignaling": p.via_signaling,
                "connectedAt": None if p.connected_at is None else round(p.connected_at - started, 2),
                "pcState": None if p.pc is None else p.pc.connectionState,
            }
        )
    samples = [s for s in monitor.samples if s.t + monitor.t0 >= measure_from]
    cpu = [s.bot_cpu for s in samples if s.bot_cpu is not None]
    rss = [s.bot_rss for s in samples if s.bot_rss is not None]
    resources: dict[str, Any] = {}
    if cpu:
        resources["botCpuPercent"] = {
            "mean": round(float(np.mean(cpu)), 1),
            "p95": round(float(np.percentile(cpu, 95)), 1),
            "max": round(float(np.max(cpu)), 1),
        }
    if rss:
        base = rss[0]
        resources["botRssMiB"] = {
            "start": round(base / 2**20, 1),
            "end": round(rss[-1] / 2**20, 1),
            "max": round(max(rss) / 2**20, 1),
            "min": round(min(rss) / 2**20, 1),
            "growthPct": round(100.0 * (rss[-1] - base) / base, 2),
            "maxDeviationPct": round(100.0 * max(abs(r - base) for r in rss) / base, 2),
        }
    lg = [s.loadgen_cpu for s in samples]
    if lg:
        resources["loadgenCpuPercent"] = {"mean": round(float(np.mean(lg)), 1), "max": round(float(np.max(lg)), 1)}
    resources["load1"] = {"mean": round(float(np.mean([s.load1 for s in samples])), 2)} if samples else {}
    if samples:
        # CPU used by everything else on the machine (other users, the signaling server), 100 = one core.
        others = [max(0.0, s.system_cpu - (s.bot_cpu or 0.0) - s.loadgen_cpu) for s in samples]
        resources["systemCpuPercent"] = {"mean": round(float(np.mean([s.system_cpu for s in samples])), 1)}
        resources["otherCpuPercent"] = {
            "mean": round(float(np.mean(others)), 1),
            "p95": round(float(np.percentile(others, 95)), 1),
        }
    rates = [float(r["resultsPerSecond"]) for r in rows]
    bot: dict[str, Any] = {}
    if final_stats:
        bot = {
            "throttle": final_stats.get("throttle"),
            "counters": final_stats.get("counters"),
            "pools": {k: {kk: v.get(kk) for kk in POOL_KEYS} for k, v in (final_stats.get("pools") or {}).items()},
            "overall": final_stats.get("overall"),
            "model": final_stats.get("model"),
            "participantDrops": {p["participantId"]: p.get("drops", {}) for p in final_stats.get("participants", [])},
            "participants": {
                p["participantId"]: {k: p.get(k) for k in ("profile", "resultsPerSecond", "latencyMs", "counters")}
                for p in final_stats.get("participants", [])
            },
        }
    return {
        "options": {
            "participants": opts.participants,
            "speaking": opts.speaking,
            "durationS": opts.duration,
            "warmupS": opts.warmup,
            "sender": opts.sender,
            "resolution": f"{opts.width}x{opts.height}@{opts.fps:g}",
        },
        "measuredS": round(window, 1),
        "participants": rows,
        "rate": {"min": round(min(rates), 3), "mean": round(float(np.mean(rates)), 3)} if rates else {},
        "botSideMs": _pct(all_bot),
        "e2eMs": _pct(all_e2e),
        "e2eDrift": _drift(e2e_times, all_e2e),
        "transportMs": _pct(transport),
        "unmappedResults": unmapped,
        "resources": resources,
        "resourceSeries": [
            {
                "t": round(s.t, 1),
                "botCpu": s.bot_cpu,
                "botRssMiB": None if s.bot_rss is None else round(s.bot_rss / 2**20, 1),
            }
            for s in monitor.samples[:: max(1, len(monitor.samples) // 120)]
        ],
        "throttleSeries": [
            {"t": round(t, 1), "fps": (s.get("throttle") or {}).get("fps"), "queues": s.get("queues")}
            for t, s in monitor.stats
        ],
        "bot": bot,
    }


def format_summary(s: dict[str, Any]) -> str:
    o = s["options"]
    lines = [
        f"loadgen summary: {o['participants']} participants ({o['speaking']} speaking), {o['resolution']}, "
        f"{s['measuredS']} s measured after {o['warmupS']} s warm-up, sender={o['sender']}",
        f"{'participant':<12}{'speak':>6}{'results':>8}{'rate/s':>8}{'bot p50':>9}{'bot p95':>9}"
        f"{'e2e p50':>9}{'e2e p95':>9}{'e2e max':>9}  profiles",
    ]
    for r in s["participants"]:
        b, e = r["botSideMs"], r["e2eMs"]
        prof = ",".join(f"{k}:{v}" for k, v in sorted(r["profiles"].items()))
        lines.append(
            f"{r['participantId']:<12}{'yes' if r['speaking'] else 'no':>6}"
            f"{r['results']:>8}{r['resultsPerSecond']:>8.2f}"
            f"{b.get('p50', math.nan):>9.1f}{b.get('p95', math.nan):>9.1f}"
            f"{e.get('p50', math.nan):>9.1f}{e.get('p95', math.nan):>9.1f}{e.get('max', math.nan):>9.1f}  {prof}"
        )
    b, e, d = s["botSideMs"], s["e2eMs"], s["e2eDrift"]
    lines.append(
        f"{'all':<12}{'':>6}{sum(r['results'] for r in s['participants']):>8}"
        f"{s['rate'].get('min', math.nan):>8.2f}{b.get('p50', math.nan):>9.1f}{b.get('p95', math.nan):>9.1f}"
        f"{e.get('p50', math.nan):>9.1f}{e.get('p95', math.nan):>9.1f}{e.get('max', math.nan):>9.1f}"
        "  (rate column: min)"
    )
    res = s["resources"]
    cpu, rss = res.get("botCpuPercent", {}), res.get("botRssMiB", {})
    lines.append(
        f"e2e drift: {d.get('slopeMsPerMin', math.nan)} ms/min (p50 first third {d.get('p50FirstThird', math.nan)}, "
        f"last third {d.get('p50LastThird', math.nan)}); transport (send→bot receive) "
        f"p50 {s['transportMs'].get('p50', math.nan)} ms; unmapped results {s['unmappedResults']}"
    )
    lines.append(
        f"bot CPU mean {cpu.get('mean', math.nan)}% p95 {cpu.get('p95', math.nan)}% (100% = one core); "
        f"RSS {rss.get('start', math.nan)} -> {rss.get('end', math.nan)} MiB "
        f"(max dev {rss.get('maxDeviationPct', math.nan)}%); "
        f"loadgen CPU mean {res.get('loadgenCpuPercent', {}).get('mean', math.nan)}%; "
        f"other processes CPU mean {res.get('otherCpuPercent', {}).get('mean', math.nan)}%; "
        f"load1 {res.get('load1', {}).get('mean')}"
    )
    bot = s.get("bot") or {}
    if bot:
        t = bot.get("throttle") or {}
        c = bot.get("counters") or {}
        drops = {k: v for k, v in c.items() if k.endswith("_dropped")}
        lines.append(
            f"throttle: fps {t.get('fps')} decreases {t.get('decreases')} recoveries {t.get('recoveries')}; "
            f"drops {drops or 0}; vad gated {c.get('vad_gated', 0)}, silent {c.get('audio_silent', 0)}"
        )
        for name, p in (bot.get("pools") or {}).items():
            lines.append(
                f"pool {name:<9} batches {p.get('batchSizes')} mean wait {p.get('meanWaitMs')} ms "
                f"busy {p.get('busyS')} s, CPU {p.get('cpuS')} s"
            )
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "loadgen", help="N simulated WebRTC participants that load a running bot and measure it"
    )
    p.add_argument("--signaling", required=True, help="signaling server URL (http://host:port or ws://host:port/ws)")
    p.add_argument("--room", required=True)
    p.add_argument("--host-token", required=True, help="the room's host token (participant invites are minted with it)")
    p.add_argument("--participants", type=int, default=10)
    p.add_argument("--speaking", type=int, default=2, help="how many participants send speech (the rest silence)")
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds (after the warm-up)")
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--media", action="append", help="clip file or directory (repeatable; default: ../shared/media)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--sender", choices=["preencoded", "live"], default="preencoded")
    p.add_argument("--bot-pid", type=int, help="the bot's process id (CPU and RSS via psutil)")
    p.add_argument("--bot-stats", help="the bot's /stats/json URL (throttle, drops, batches)")
    p.add_argument("--with-host", action="store_true", help="the first participant joins as the host")
    p.add_argument("--join-interval", type=float, default=0.5, help="seconds between two participants joining")
    p.add_argument("--json", help="write the summary as JSON to this file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    opts = LoadgenOptions(
        signaling=args.signaling,
        room=args.room,
        host_token=args.host_token,
        participants=args.participants,
        speaking=args.speaking,
        duration=args.duration,
        warmup=args.warmup,
        media=args.media,
        width=args.width,
        height=args.height,
        fps=args.fps,
        sender=args.sender,
        bot_pid=args.bot_pid,
        bot_stats=args.bot_stats,
        json_path=args.json,
        with_host=args.with_host,
        quiet=args.quiet,
        join_interval=args.join_interval,
    )
    asyncio.run(run_loadgen(opts))
    return 0

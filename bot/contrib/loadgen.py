"""``hoovik-bot loadgen``: N real WebRTC participants in one process, to load a running bot.

Each participant joins a room through the signaling server, offers to the bot with a data channel,
a 640x480 15 fps VP8 video track and an Opus audio track made from a real clip (looping), and
receives its own results on its data channel. The first ``--speaking`` participants send the
clip's speech; the others send digital silence (a live, unmuted microphone with nothing said).

Senders. By default the clips are encoded once at start-up (VP8 and Opus, with PyAV) and the
tracks hand aiortc the encoded packets, which it only packetises: the load generator then costs
a small fraction of a core for 10 participants, so on a 2-core machine the bot, not the load
generator, gets the CPU. ``--sender live`` uses ``bot.contrib.clips``'s clip tracks and aiortc's own
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
import json
import logging
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamTrack

from bot.contrib.clips import AUDIO_RATE, ClipAudioTrack, ClipVideoTrack
from bot.contrib.loadgen_media import (
    AUDIO_FRAME,
    EncodedAudioTrack,
    EncodedClip,
    EncodedVideoTrack,
    LoggedTrack,
    Sender,
    SendLog,
    find_media,
    prepare_clips,
)
from bot.contrib.loadgen_summary import Monitor, format_summary, progress_line, summarise
from bot.contrib.simulated import SimulatedParticipant
from bot.webrtc.consent import tolerate_late_consent
from signaling.base import Role
from signaling.client import mint_invite

log = logging.getLogger(__name__)

SEND_LOG_S = 120.0  # how far back send times are kept (results arrive well within this)


# -- one participant ---------------------------------------------------------------------------------


@dataclass
class Arrival:
    """A result as it arrived; ``sent`` is the send time of the newest frame it used, looked up on
    arrival (the send logs only keep the last ``SEND_LOG_S`` seconds)."""

    wall: float
    message: dict[str, Any]
    sent: float | None = None


@dataclass(kw_only=True)
class LoadParticipant(SimulatedParticipant):
    """A simulated participant that sends ``encoded``'s media with logged send times and records
    its own results as :class:`Arrival` (the rest is :class:`SimulatedParticipant`'s)."""

    encoded: EncodedClip
    sender: Sender
    arrivals: deque[Arrival] = field(default_factory=lambda: deque(maxlen=50_000))
    others: int = 0
    via_signaling: int = 0
    video_log: SendLog = field(init=False)
    audio_log: SendLog = field(init=False)
    _tracks: list[MediaStreamTrack] = field(default_factory=list)

    def __post_init__(self) -> None:
        fps = self.encoded.clip.fps
        self.video_log = SendLog(1.0 / fps, False, int(SEND_LOG_S * fps))
        self.audio_log = SendLog(AUDIO_FRAME / AUDIO_RATE, True, int(SEND_LOG_S * AUDIO_RATE / AUDIO_FRAME))

    def _make_tracks(self) -> tuple[MediaStreamTrack, MediaStreamTrack]:
        if self.sender == "preencoded":
            video: MediaStreamTrack = EncodedVideoTrack(self.encoded.video, self.encoded.clip.fps, self.video_log)
            packets = self.encoded.speech if self.speaking else self.encoded.silence
            audio: MediaStreamTrack = EncodedAudioTrack(packets, self.audio_log)
        else:
            video = LoggedTrack(ClipVideoTrack(self.encoded.clip), 1.0 / self.encoded.clip.fps, self.video_log)
            inner = ClipAudioTrack(self.encoded.clip.audio, silent=not self.speaking)
            audio = LoggedTrack(inner, AUDIO_FRAME / AUDIO_RATE, self.audio_log)
        return video, audio

    def _add_tracks(self, pc: RTCPeerConnection) -> None:
        video, audio = self._make_tracks()
        self._tracks = [video, audio]
        for track, mime in ((video, "video/VP8"), (audio, "audio/opus")):
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if self.sender == "preencoded":
                # Pre-encoded packets are VP8/Opus: negotiate exactly those codecs.
                codecs = RTCRtpSender.getCapabilities(track.kind).codecs
                transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() == mime.lower()])
        # Like a browser, a simulated participant waits seconds for a consent answer, not aioice's
        # 0.5 s: the benchmark measures the bot, not the strictness of the senders' ICE library.
        tolerate_late_consent(pc)

    def _record(self, message: Any, via: str) -> None:
        if via == "signaling":
            self.via_signaling += 1  # the bot's fallback when our data channel is not open: shown
        if not isinstance(message, dict) or message.get("event") != "emotion.result":
            return
        if message.get("participantId") != self.participant_id:
            self.others += 1  # a host also receives everyone else's results
            return
        self.arrivals.append(Arrival(time.time(), message, self.send_time(message)))

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
            pid = f"p{i + 1:02d}"
            encoded = clips[i % len(clips)]
            part = LoadParticipant(
                opts.signaling,
                opts.room,
                token,
                pid,
                pid,
                encoded.clip,
                role=role,
                speaking=i < opts.speaking,
                encoded=encoded,
                sender=opts.sender,
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
                print(progress_line(parts, started, measure_from), file=out, flush=True)
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

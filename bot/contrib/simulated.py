"""A simulated meeting participant: a real aiortc peer that streams a clip and reads its results.

Used by ``hoovik-bot demo``, the load generator and the end-to-end tests. It behaves like a
browser in one of our rooms: it joins through signaling, opens a data channel, adds its camera and
microphone tracks, offers to the bot, and receives its emotion results on that channel (or through
signaling when it has no channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bot.contrib.clips import ClipAudioTrack, ClipMedia, ClipVideoTrack
from bot.webrtc.ice import candidate_from_json
from signaling.base import (
    Disconnected,
    PeerJoined,
    PeerLeft,
    RemoteAnswer,
    RemoteCandidate,
    ResultRelay,
    Role,
)
from signaling.client import SignalingClient

log = logging.getLogger(__name__)


@dataclass
class ReceivedResult:
    message: dict[str, Any]
    arrived_wall: float
    via: str  # "datachannel" | "signaling"


@dataclass
class SimulatedParticipant:
    """One participant; ``results`` holds everything it received, newest last (bounded)."""

    signaling_url: str
    room: str
    token: str
    participant_id: str
    name: str
    clip: ClipMedia
    role: Role = "participant"
    send_audio: bool = True
    send_video: bool = True
    speaking: bool = True
    data_channel: bool = True
    on_result: Callable[[ReceivedResult], None] | None = None
    results: deque[ReceivedResult] = field(default_factory=lambda: deque(maxlen=10000))
    session: SignalingClient | None = None
    pc: RTCPeerConnection | None = None
    bot_id: str | None = None
    video: ClipVideoTrack | None = None
    audio: ClipAudioTrack | None = None
    mic: bool = True
    camera: bool = True
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    connected_at: float | None = None
    """Wall time of the first connection to the bot."""
    _task: asyncio.Task[None] | None = None
    _channel: Any = None

    async def start(self) -> None:
        self.mic = self.send_audio
        self.camera = self.send_video
        self.session = await SignalingClient.connect(
            self.signaling_url, self.room, self.token, self.participant_id, self.name, self.role
        )
        await self.session.announce_media(self.mic, self.camera)
        self._task = asyncio.create_task(self._events(), name=f"sim-{self.participant_id}")
        for info in self.session.peers.values():
            if info.role == "bot":
                await self._offer_to(info.peer_id)

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
                    # The bot's fallback when our data channel is not open.
                    self._record(ev.payload, "signaling")
                elif isinstance(ev, PeerLeft) and ev.peer_id == self.bot_id:
                    # Offer again when a bot comes back (a restart, or a cluster failover under the
                    # same id), as the meeting page does.
                    await self._close_pc()
                    self.bot_id = None
                elif isinstance(ev, Disconnected):
                    return
            except Exception:
                log.exception("%s: handling %s failed", self.participant_id, type(ev).__name__)

    async def _offer_to(self, bot_id: str) -> None:
        await self._close_pc()
        self.bot_id = bot_id
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        if self.data_channel:
            channel = pc.createDataChannel("results")
            self._channel = channel

            @channel.on("message")
            def on_message(message: Any) -> None:
                if isinstance(message, str):
                    with contextlib.suppress(ValueError):
                        self._record(json.loads(message), "datachannel")

        self._add_tracks(pc)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                if self.connected_at is None:
                    self.connected_at = time.time()
                self.connected.set()

        await pc.setLocalDescription(await pc.createOffer())
        assert self.session is not None
        await self.session.send_offer(bot_id, pc.localDescription.sdp)

    def _add_tracks(self, pc: RTCPeerConnection) -> None:
        """The camera and microphone this participant sends (the load generator sends its own)."""
        if self.send_video and self.clip.video:
            self.video = ClipVideoTrack(self.clip)
            pc.addTrack(self.video)
        if self.send_audio:
            self.audio = ClipAudioTrack(self.clip.audio, silent=not self.speaking)
            pc.addTrack(self.audio)

    async def add_video(self) -> None:
        """Start the camera on a connection that had none: add a track and re-offer (renegotiation)."""
        if self.pc is None or self.bot_id is None or not self.clip.video:
            raise RuntimeError("no connection to the bot, or no video in the clip")
        self.video = ClipVideoTrack(self.clip)
        self.pc.addTrack(self.video)
        self.send_video = self.camera = True
        if self.session is not None:
            await self.session.announce_media(self.mic, True)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        assert self.session is not None
        await self.session.send_offer(self.bot_id, self.pc.localDescription.sdp)

    def _record(self, message: Any, via: str) -> None:
        """A message from the bot, on the data channel or through signaling."""
        if not isinstance(message, dict):
            return
        item = ReceivedResult(message, time.time(), via)
        self.results.append(item)
        if self.on_result is not None:
            self.on_result(item)

    def send_control(self, message: dict[str, Any]) -> None:
        if self._channel is not None and self._channel.readyState == "open":
            self._channel.send(json.dumps(message))

    async def set_camera(self, on: bool, announce: bool = True) -> None:
        """Camera off/on; with ``announce=False`` the video just stops, as a dropped stream would."""
        self.camera = on
        if self.video is not None:
            (self.video.resume if on else self.video.pause)()
        if announce and self.session is not None:
            await self.session.announce_media(self.mic, on)

    async def set_mic(self, on: bool, announce: bool = True) -> None:
        self.mic = on
        if self.audio is not None:
            (self.audio.resume if on else self.audio.pause)()
        if announce and self.session is not None:
            await self.session.announce_media(on, self.camera)

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

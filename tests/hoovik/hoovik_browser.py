"""Browser-like Hoovik participants (real aiortc peers) and a host-UI emotion-service client.

:class:`BrowserPeer` does what Hoovik's frontend does towards the bot (spec 1.5/1.6): joins with
``{name, userId}``, creates a peer connection with its camera and mic tracks for every participant
it learns about (``existing-participants``, ``user-joined``, ``participants-updated``) and offers;
sends signals as JSON *strings*; trickles candidates (aiortc puts them all in the SDP, so they are
cut out of the offer and sent one by one as ``{"candidate": {candidate, sdpMid, sdpMLineIndex,
usernameFragment}}``); mutes by ``replaceTrack(null)`` + audio transceiver ``recvonly`` + re-offer and
unmutes with a new track + ``sendrecv`` + re-offer, announcing both with ``update-participant-state``;
leaves with ``leave-call``; rejoins under the same userId; re-joins after its socket reconnects —
unless ``rejoin_on_reconnect=False``, which is what the stock frontend does: it emits ``join-call``
once per page load, so after a backend restart its socket reconnects but it never joins (or offers)
again, and only its existing peer connections keep working.

To keep two cores enough, peers only connect to bots (``meta.bot``) unless ``mesh=True``.

:class:`HostUI` is one emotion-service socket as the host UI opens it: ``auth.participantId`` = the
participant's userId, websocket transport; it records ``server.status`` and ``emotion.result``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription

from bot.contrib.clips import ClipAudioTrack, ClipMedia, ClipVideoTrack
from bot.webrtc.ice import candidate_from_json

log = logging.getLogger("hoovik_browser")

WAIT_S = 20.0
"""Upper bound of every "until" wait: a bug fails the test instead of hanging it (never a speed check)."""


async def wait_until(cond: Any, what: str, timeout: float = WAIT_S, info: Any = None) -> None:
    """Poll ``cond()`` until true; fail with ``what`` (and ``info()``) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            detail = info() if callable(info) else info
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; {detail}")
        await asyncio.sleep(0.05)


def split_candidates(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """Remove candidate lines from an SDP; return them in ``RTCIceCandidate.toJSON()`` shape for the
    first (bundled) m-section, the way a browser trickles them."""
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    out: list[str] = []
    candidates: list[dict[str, Any]] = []
    for index, lines in enumerate(sections):
        mid = next((ln[6:] for ln in lines if ln.startswith("a=mid:")), None)
        ufrag = next((ln[12:] for ln in lines if ln.startswith("a=ice-ufrag:")), None)
        for line in lines:
            if line.startswith("a=candidate:"):
                if index == 1:
                    candidates.append(
                        {"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": 0, "usernameFragment": ufrag}
                    )
                continue
            if line.startswith("a=end-of-candidates"):
                continue
            out.append(line)
    return "\r\n".join(out) + "\r\n", candidates


@dataclass
class Link:
    """One peer connection to one remote participant."""

    peer_id: str
    pc: RTCPeerConnection
    audio: RTCRtpTransceiver
    video: RTCRtpTransceiver | None
    audio_track: ClipAudioTrack | None
    pending: list[dict[str, Any]] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)


class BrowserPeer:
    def __init__(
        self,
        url: str,
        code: str,
        user_id: str,
        clip: ClipMedia,
        *,
        name: str | None = None,
        trickle: bool = True,
        candidates_first: bool = False,
        send_video: bool = True,
        mesh: bool = False,
        rejoin_on_reconnect: bool = True,
    ) -> None:
        self.url = url
        self.code = code
        self.user_id = user_id
        self.name = name or user_id
        self.clip = clip
        self.trickle = trickle
        self.candidates_first = candidates_first
        self.send_video = send_video
        self.mesh = mesh
        self.rejoin_on_reconnect = rejoin_on_reconnect
        self.connects = 0
        self.muted = False
        self.client: socketio.AsyncClient | None = None
        self.sid = ""
        self.links: dict[str, Link] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.state_updates: list[dict[str, Any]] = []
        self.joined = asyncio.Event()
        self._lock = asyncio.Lock()

    # -- joining ---------------------------------------------------------------------------------

    async def join(self, timeout: float = 10.0) -> None:
        """Open a new socket and join (a page load, or a second tab with the same userId)."""
        self.joined = asyncio.Event()
        client = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2, reconnection_delay_max=1.0)
        self.client = client

        def on(event: str, fn: Any) -> None:
            async def handler(*args: Any) -> None:
                if client is not self.client:
                    return
                async with self._lock:
                    try:
                        await fn(*args)
                    except Exception:
                        log.exception("%s: %s handler failed", self.user_id, event)

            client.on(event, handler)

        first = True

        async def on_connect() -> None:
            nonlocal first
            if client is not self.client:
                return
            self.connects += 1
            # First connect, or an automatic reconnect if this browser re-joins on reconnect (the
            # stock frontend does not: join-call is emitted once per page load).
            if first or self.rejoin_on_reconnect:
                await client.emit("join-call", (self.code, {"name": self.name, "userId": self.user_id}))
            first = False

        client.on("connect", on_connect)
        on("existing-participants", self._on_list)
        on("participants-updated", self._on_list)
        on("user-joined", self._on_joined)
        on("user-left", self._on_left)
        on("signal", self._on_signal)
        on("update-participant-state", self._on_state)
        on("error", self._on_error)
        await client.connect(self.url, transports=["websocket"])
        await asyncio.wait_for(self.joined.wait(), timeout)

    async def leave(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.emit("leave-call", self.code)
            await client.disconnect()
        await self._close_links()

    async def rejoin(self, *, leave_first: bool) -> None:
        """Join again with the same userId: after leaving, or from a new socket while the old one
        is still connected (the backend then kicks the old socket without ``user-left``)."""
        old = self.client
        if leave_first:
            await self.leave()
        else:
            self.client = None
            await self._close_links()
        await self.join()
        if old is not None and not leave_first:
            # The backend disconnects it; make sure it does not linger if it did not.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_until(lambda: not old.connected), 5.0)
            if old.connected:
                await old.disconnect()

    async def stop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()
        await self._close_links()

    # -- events ----------------------------------------------------------------------------------

    async def _on_list(self, entries: Any = None) -> None:
        assert self.client is not None
        self.sid = self.client.get_sid("/") or self.sid
        for entry in entries or []:
            await self._learn(entry)
        self.joined.set()

    async def _on_joined(self, entry: Any = None) -> None:
        await self._learn(entry)

    async def _learn(self, entry: Any) -> None:
        if not isinstance(entry, dict) or entry.get("id") in (None, self.sid):
            return
        peer_id = entry["id"]
        meta = entry.get("meta") or {}
        self.meta[peer_id] = meta
        if peer_id not in self.links and (self.mesh or meta.get("bot")):
            await self._connect_to(peer_id)

    async def _on_left(self, peer_id: Any = None) -> None:
        link = self.links.pop(peer_id, None) if isinstance(peer_id, str) else None
        if link is not None:
            await link.pc.close()

    async def _on_state(self, data: Any = None) -> None:
        if isinstance(data, dict):
            self.state_updates.append(data)

    async def _on_error(self, message: Any = None) -> None:
        self.errors.append(str(message))

    async def _on_signal(self, from_id: Any = None, message: Any = None) -> None:
        msg = json.loads(message) if isinstance(message, str) else message
        link = self.links.get(from_id)
        if link is None or not isinstance(msg, dict):
            return
        if "description" in msg:
            desc = msg["description"]
            if desc.get("type") == "answer" and link.pc.signalingState == "have-local-offer":
                await link.pc.setRemoteDescription(RTCSessionDescription(sdp=desc["sdp"], type="answer"))
                for cand in link.pending:
                    await link.pc.addIceCandidate(candidate_from_json(cand))
                link.pending.clear()
        elif msg.get("candidate"):
            if link.pc.remoteDescription is None:
                link.pending.append(msg["candidate"])
            else:
                await link.pc.addIceCandidate(candidate_from_json(msg["candidate"]))

    # -- negotiation -----------------------------------------------------------------------------

    async def _connect_to(self, peer_id: str) -> Link:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        audio_track = None if self.muted else ClipAudioTrack(self.clip.audio)
        audio = pc.addTransceiver(audio_track or "audio", direction="recvonly" if self.muted else "sendrecv")
        video = None
        if self.send_video and self.clip.video:
            video = pc.addTransceiver(ClipVideoTrack(self.clip), direction="sendrecv")
        link = Link(peer_id, pc, audio, video, audio_track)
        self.links[peer_id] = link

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "connected":
                link.connected.set()
            elif pc.connectionState == "failed" and self.links.get(peer_id) is link:
                self.links.pop(peer_id, None)
                await pc.close()

        await self._offer(link)
        return link

    async def _offer(self, link: Link) -> None:
        pc = link.pc
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        candidates: list[dict[str, Any]] = []
        if self.trickle:
            sdp, candidates = split_candidates(sdp)
        offer = json.dumps({"description": {"type": "offer", "sdp": sdp}})
        signals = [json.dumps({"candidate": c}) for c in candidates]
        ordered = [*signals, offer] if self.candidates_first else [offer, *signals]
        for message in ordered:
            await self._send(link.peer_id, message)

    async def _send(self, peer_id: str, message: str) -> None:
        if self.client is not None and self.client.connected:
            await self.client.emit("signal", (peer_id, message))

    async def replace_connection(self, peer_id: str) -> Link:
        """Tear the connection down and build a new one under the same ids (what the browser does
        after a failure, and what an ICE restart looks like to an answerer: new ufrag/credentials)."""
        async with self._lock:
            old = self.links.pop(peer_id, None)
            if old is not None:
                await old.pc.close()
            return await self._connect_to(peer_id)

    async def mute(self) -> None:
        async with self._lock:
            self.muted = True
            for link in self.links.values():
                track, link.audio_track = link.audio_track, None
                link.audio.sender.replaceTrack(None)
                if track is not None:
                    track.stop()
                link.audio.direction = "recvonly"
                await self._offer(link)
        assert self.client is not None
        await self.client.emit("update-participant-state", {"muted": True})

    async def unmute(self) -> None:
        async with self._lock:
            self.muted = False
            for link in self.links.values():
                link.audio_track = ClipAudioTrack(self.clip.audio)
                link.audio.sender.replaceTrack(link.audio_track)
                link.audio.direction = "sendrecv"
                await self._offer(link)
        assert self.client is not None
        await self.client.emit("update-participant-state", {"muted": False})

    async def _close_links(self) -> None:
        links, self.links = self.links, {}
        for link in links.values():
            with contextlib.suppress(Exception):
                await link.pc.close()


async def _until(cond: Any, step: float = 0.05) -> None:
    while not cond():
        await asyncio.sleep(step)


@dataclass
class HostUI:
    """One emotion-service socket of Hoovik's host UI, for one participant's userId."""

    url: str
    participant_id: str
    auth_extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    client: socketio.AsyncClient | None = None
    status: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    backpressure: list[dict[str, Any]] = field(default_factory=list)
    pongs: list[dict[str, Any]] = field(default_factory=list)

    async def connect(self) -> None:
        client = socketio.AsyncClient(reconnection=False)
        self.client = client
        client.on("server.status", lambda data: self.status.append(data))
        client.on("emotion.result", lambda data: self.results.append((time.time(), data)))
        client.on("emotion.error", lambda data: self.errors.append(data))
        client.on("backpressure", lambda data: self.backpressure.append(data))
        client.on("pong", lambda data: self.pongs.append(data))
        await client.connect(
            self.url,
            transports=["websocket"],
            auth={"participantId": self.participant_id, **self.auth_extra},
            headers=self.headers,
            wait_timeout=10,
        )

    def messages(self) -> list[dict[str, Any]]:
        return [m for _, m in self.results]

    async def emit(self, event: str, data: Any = None) -> None:
        assert self.client is not None
        await self.client.emit(event, data)

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.disconnect()


class RawMember:
    """A bare Socket.IO meeting member (no WebRTC) that records every event it receives, in order."""

    EVENTS = (
        "existing-participants",
        "assigned-role",
        "chat-history",
        "user-joined",
        "participants-updated",
        "participant-meta-updated",
        "update-participant-state",
        "user-left",
        "signal",
        "error",
    )

    def __init__(self, url: str, code: str, user_id: str | None, name: str = "Guest") -> None:
        self.url = url
        self.code = code
        self.user_id = user_id
        self.name = name
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.disconnect_reasons: list[str] = []
        for event in self.EVENTS:
            self.client.on(event, self._recorder(event))
        self.client.on("disconnect", lambda reason=None: self.disconnect_reasons.append(str(reason)))

    def _recorder(self, event: str) -> Any:
        def record(*args: Any) -> None:
            self.events.append((event, args))

        return record

    @property
    def sid(self) -> str:
        return str(self.client.get_sid("/"))

    async def connect(self) -> None:
        await self.client.connect(self.url, transports=["websocket"])

    async def join(self, meta: dict[str, Any] | None = None, code: str | None = None) -> None:
        if not self.client.connected:
            await self.connect()
        if meta is None:
            meta = {"name": self.name, **({"userId": self.user_id} if self.user_id else {})}
        await self.client.emit("join-call", (self.code if code is None else code, meta))

    async def joined(self) -> None:
        await wait_until(lambda: bool(self.of("existing-participants")) or bool(self.of("error")), "join reply")

    def of(self, event: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.events if name == event]

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    async def emit(self, event: str, data: Any = None) -> None:
        await self.client.emit(event, data)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.disconnect()

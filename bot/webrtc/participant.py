"""The bot as a meeting participant: answer-only WebRTC, one peer connection per remote person.

The bot never offers and never sends media (aiortc cannot roll back an offer, docs/hoovik.md, "Negotiation"). Each
remote participant offers to it with their tracks and a data channel they opened; the bot answers,
reads every track continuously, and feeds the engine. Candidates that arrive before the remote
description are queued (bounded) and applied once it is set.

A re-offer that starts a new ICE/DTLS session (different ``ice-ufrag`` or DTLS fingerprint: an ICE
restart, or a peer that tore its connection down and built a new one under the same id) gets a
fresh peer connection: aiortc cannot restart ICE on an existing one, and a new remote certificate
would never complete the old DTLS association. Re-offers within the same session (mute/unmute
direction changes) are applied to the existing connection.

Losing signaling is not losing the meeting: the session implementations reconnect on their own
(:class:`signaling.client.ReconnectingClient`, :class:`signaling.hoovik.HoovikSession`) and only end —
with :class:`Disconnected` — when the meeting is really over for the bot. Peer connections do not
depend on signaling once up, so they are kept (and results keep flowing on their data channels)
until the peer leaves or its connection fails. :meth:`BotParticipant.run` returns the end reason.

A loop that falls behind its sockets under overload must not lose peers that still answer: each
connection's ICE consent check follows RFC 7675's 30 s expiry (:mod:`bot.webrtc.consent`) instead
of aioice's 0.5 s single-shot check.

Engine participants are keyed by ``peer_id``; :meth:`BotParticipant.result_id` gives the identity
results are reported under (``PeerJoined.user_id`` when the signaling layer has one, as Hoovik does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from bot.live.engine import Engine
from bot.pipeline.cpu import name_python_threads
from bot.webrtc.consent import tolerate_late_consent
from bot.webrtc.ice import candidate_from_json
from bot.webrtc.jitter import use_low_latency_jitter_buffers
from bot.webrtc.router import ResultRouter
from bot.webrtc.tracks import read_audio, read_video
from signaling.base import (
    Disconnected,
    MediaState,
    PeerJoined,
    PeerLeft,
    RemoteAnswer,
    RemoteCandidate,
    RemoteOffer,
    ResultRelay,
    SignalingError,
    SignalingSession,
)

log = logging.getLogger(__name__)

MAX_QUEUED_CANDIDATES = 64
MAX_SDP_BYTES = 200_000


def session_identity(sdp: str) -> tuple[str | None, str | None]:
    """The first ``ice-ufrag`` and DTLS ``fingerprint`` of an SDP: what changes when the remote side
    restarts ICE or replaces its peer connection."""
    ufrag = fingerprint = None
    for line in sdp.splitlines():
        if ufrag is None and line.startswith("a=ice-ufrag:"):
            ufrag = line[len("a=ice-ufrag:") :].strip()
        elif fingerprint is None and line.startswith("a=fingerprint:"):
            fingerprint = line[len("a=fingerprint:") :].strip().lower()
        if ufrag is not None and fingerprint is not None:
            break
    return ufrag, fingerprint


def offer_problem(sdp: str) -> str | None:
    """Why an offer cannot be used, before it reaches aiortc (which accepts an SDP with no media)."""
    if len(sdp.encode()) > MAX_SDP_BYTES:
        return f"SDP larger than {MAX_SDP_BYTES} bytes"
    lines = sdp.splitlines()
    if not lines or lines[0].strip() != "v=0":
        return "not an SDP (no v=0 line)"
    if not any(line.startswith("m=") for line in lines):
        return "SDP offers no media or data channel"
    return None


@dataclass
class RemotePeer:
    pid: str
    pc: RTCPeerConnection
    pending_candidates: list[dict[str, Any]] = field(default_factory=list)
    readers: set[asyncio.Task[None]] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class BotParticipant:
    """Drives one signaling session: negotiates with every peer and wires media to the engine."""

    def __init__(
        self,
        session: SignalingSession,
        engine: Engine,
        ice_servers: list[str] | None = None,
        *,
        router: ResultRouter | None = None,
    ) -> None:
        self.session = session
        self.engine = engine
        self.ice_servers = [RTCIceServer(urls=u) for u in (ice_servers or [])]
        self.peers: dict[str, RemotePeer] = {}
        # Who is in the room and which channel is whose; the router alone sends results.
        self.router = router if router is not None else ResultRouter(session)
        self.errors: dict[str, int] = {}
        self.result_ids: dict[str, str] = {}
        self._closed = asyncio.Event()
        self.end_reason: str | None = None

    # -- main loop -------------------------------------------------------------------------------

    async def run(self) -> str:
        """Handle signaling events until the session ends; return its ``Disconnected`` reason."""
        for info in self.session.peers.values():
            self._on_joined(PeerJoined(info.peer_id, info.name, info.role, info.mic, info.camera, info.user_id))
        try:
            async for event in self.session.events():
                try:
                    await self._handle(event)
                except Exception:
                    self._error("event_failed")
                    log.exception("handling %s failed", type(event).__name__)
                if isinstance(event, Disconnected):
                    self.end_reason = event.reason
                    break
        finally:
            await self.close()
        return self.end_reason or "closed"

    async def _handle(self, event: Any) -> None:
        if isinstance(event, PeerJoined):
            self._on_joined(event)
        elif isinstance(event, PeerLeft):
            await self._drop_peer(event.peer_id, forget=True)
        elif isinstance(event, MediaState):
            self.engine.set_media(event.peer_id, mic=event.mic, camera=event.camera)
        elif isinstance(event, RemoteOffer):
            await self._on_offer(event)
        elif isinstance(event, RemoteCandidate):
            await self._on_candidate(event)
        elif isinstance(event, RemoteAnswer):
            self._error("unexpected_answer")  # the bot never offers
        elif isinstance(event, ResultRelay):
            pass  # results relayed by other bots are not ours to handle
        elif isinstance(event, SignalingError):
            log.warning("signaling error %s: %s", event.code, event.message)
            self._error(f"signaling_{event.code}")
        elif isinstance(event, Disconnected):
            log.warning("signaling session ended: %s", event.reason)

    def _on_joined(self, ev: PeerJoined) -> None:
        if ev.role == "bot":
            return
        if ev.user_id:
            self.result_ids[ev.peer_id] = ev.user_id
        self.router.set_role(ev.peer_id, ev.role)
        self.engine.add_participant(ev.peer_id, ev.name, ev.role, mic=ev.mic, camera=ev.camera)

    # -- negotiation -----------------------------------------------------------------------------

    def _new_peer(self, pid: str) -> RemotePeer:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        peer = RemotePeer(pid, pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._start_reader(peer, track)

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            self.router.attach(pid, channel)

            @channel.on("message")
            def on_message(message: Any) -> None:
                self._on_channel_message(pid, message)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "failed" and self.peers.get(pid) is peer:
                # A peer that signaling no longer lists (it left while signaling was down) is
                # forgotten; one still in the room keeps its engine state for its next offer.
                gone = pid not in self.session.peers
                log.info("connection to %s failed; closing it", pid)
                await self._drop_peer(pid, forget=gone)

        self.peers[pid] = peer
        return peer

    async def _on_offer(self, ev: RemoteOffer) -> None:
        pid = ev.peer_id
        if pid not in self.engine.participants:
            info = self.session.peers.get(pid)
            if info is not None and info.role == "bot":
                self._error("offer_from_bot")
                return
            self.engine.add_participant(pid, info.name if info else "", info.role if info else "participant")
            if info is not None:
                self.router.set_role(pid, info.role)
                if info.user_id:
                    self.result_ids[pid] = info.user_id
        problem = offer_problem(ev.sdp)
        if problem is not None:
            log.warning("offer from %s rejected: %s", pid, problem)
            self._error("bad_offer")
            await self._tell_rejected(pid, problem)
            return
        peer = self.peers.get(pid)
        if peer is not None and self._is_new_session(peer, ev.sdp):
            log.info("offer from %s starts a new ICE/DTLS session; replacing its peer connection", pid)
            self._error("session_replaced")
            await self._drop_peer(pid, forget=False)
            peer = None
        if peer is None:
            peer = self._new_peer(pid)
        async with peer.lock:
            try:
                await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=ev.sdp, type="offer"))
                # Before ICE connects: a loop that runs late must not close peers that still answer.
                tolerate_late_consent(peer.pc)
                # Before media flows: frames reach the engine when complete, not one frame later.
                use_low_latency_jitter_buffers(peer.pc)
                # Before the first frame: the decoders' codec threads inherit the decoder's name, so
                # /stats can tell decoding from the loop (bot.pipeline.cpu).
                name_python_threads()
                for cand in peer.pending_candidates:
                    await self._add_candidate(peer, cand)
                peer.pending_candidates.clear()
                answer = await peer.pc.createAnswer()
                await peer.pc.setLocalDescription(answer)
            except Exception as exc:
                log.warning("offer from %s rejected: %s", pid, exc)
                self._error("bad_offer")
                if peer.pc.remoteDescription is None or peer.pc.signalingState == "closed":
                    await self._drop_peer(pid, forget=False)
                await self._tell_rejected(pid, f"the bot could not use this offer: {exc}")
                return
        await self.session.send_answer(pid, peer.pc.localDescription.sdp)

    async def _tell_rejected(self, pid: str, reason: str) -> None:
        """The offerer learns why (a refused offer must not look like a bot that never answers)."""
        try:
            await self.session.send_offer_rejected(pid, reason[:500])
        except Exception as exc:  # signaling trouble must not break the peer loop
            log.warning("could not tell %s that its offer was rejected: %s", pid, exc)

    @staticmethod
    def _is_new_session(peer: RemotePeer, sdp: str) -> bool:
        current = peer.pc.remoteDescription
        if current is None:
            return False
        old_ufrag, old_fp = session_identity(current.sdp)
        new_ufrag, new_fp = session_identity(sdp)
        return (old_ufrag, old_fp) != (new_ufrag, new_fp)

    def result_id(self, pid: str) -> str:
        """The id results about ``pid`` are reported under (its user id when signaling gave one)."""
        return self.result_ids.get(pid, pid)

    async def _on_candidate(self, ev: RemoteCandidate) -> None:
        peer = self.peers.get(ev.peer_id)
        if ev.candidate is None:
            return
        if peer is None or peer.pc.remoteDescription is None:
            if peer is None:
                peer = self._new_peer(ev.peer_id)
            if len(peer.pending_candidates) >= MAX_QUEUED_CANDIDATES:
                self._error("candidates_dropped")
                return
            peer.pending_candidates.append(ev.candidate)
            return
        await self._add_candidate(peer, ev.candidate)

    async def _add_candidate(self, peer: RemotePeer, cand: dict[str, Any]) -> None:
        try:
            await peer.pc.addIceCandidate(candidate_from_json(cand))
        except Exception as exc:
            log.info("bad candidate from %s: %s", peer.pid, exc)
            self._error("bad_candidate")

    # -- media -----------------------------------------------------------------------------------

    def _start_reader(self, peer: RemotePeer, track: MediaStreamTrack) -> None:
        pid = peer.pid

        def on_error(msg: str) -> None:
            self._error("media_error")
            log.info("%s: %s", pid, msg)

        if track.kind == "video":
            coro = read_video(track, lambda f, t: self.engine.on_video_frame(pid, f, t), on_error)
        elif track.kind == "audio":
            coro = read_audio(track, lambda s, t: self.engine.on_audio(pid, s, t), on_error)
        else:
            return
        task = asyncio.create_task(coro, name=f"read-{track.kind}-{pid}")
        peer.readers.add(task)
        task.add_done_callback(peer.readers.discard)

    def _on_channel_message(self, pid: str, message: Any) -> None:
        """Participants may opt out of (or back into) analysis over their data channel."""
        if not isinstance(message, str) or len(message) > 4096:
            return
        try:
            data = json.loads(message)
        except ValueError:
            return
        if isinstance(data, dict) and data.get("type") == "analysis" and isinstance(data.get("enabled"), bool):
            self.engine.set_analysis(pid, data["enabled"])

    # -- teardown --------------------------------------------------------------------------------

    async def _drop_peer(self, pid: str, *, forget: bool) -> None:
        peer = self.peers.pop(pid, None)
        if forget:
            self.engine.remove_participant(pid)
            self.router.forget(pid)
            self.result_ids.pop(pid, None)
        else:
            self.router.detach(pid)
        if peer is None:
            return
        for task in list(peer.readers):
            task.cancel()
        with contextlib.suppress(Exception):
            await peer.pc.close()

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for pid in list(self.peers):
            await self._drop_peer(pid, forget=True)
        with contextlib.suppress(Exception):
            await self.session.close()

    def _error(self, key: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1

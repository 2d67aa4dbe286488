"""One joined membership of a room on the native signaling server (:class:`SignalingClient`).

The wire format is :mod:`signaling.messages`; the protocol is in docs/signaling.md. Candidates
travel as plain dicts in the browser's ``RTCIceCandidate.toJSON()`` shape; the conversion to and
from aiortc's ``RTCIceCandidate`` lives in ``bot/webrtc/ice.py`` (``signaling`` needs no aiortc).
:mod:`signaling.client` adds reconnecting on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

from signaling.base import (
    Disconnected,
    Event,
    EventQueue,
    JoinRejected,
    MediaState,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    RemoteAnswer,
    RemoteCandidate,
    RemoteOffer,
    ResultRelay,
    Role,
    SessionClosed,
    SignalingError,
)
from signaling.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_REASON_CHARS,
    AnswerFrom,
    AnswerTo,
    CandidateFrom,
    CandidateTo,
    ClientMessage,
    ErrorMessage,
    Join,
    Joined,
    Left,
    MediaAnnounce,
    MediaUpdate,
    OfferFrom,
    OfferRejectedTo,
    OfferTo,
    ProtocolError,
    ResultFrom,
    ResultTo,
    ServerMessage,
    Welcome,
    parse_server_message,
    to_json,
)

log = logging.getLogger(__name__)

# Relayed messages are a little larger than what the sender sent; never refuse what the server sends.
_CLIENT_MAX_MSG_BYTES = 4 * DEFAULT_MAX_MESSAGE_BYTES


def _ws_url(url: str) -> URL:
    """Accept ``ws(s)://host/ws`` as is; turn ``http(s)://host`` into ``ws(s)://host/ws``."""
    u = URL(url)
    if u.scheme in ("http", "https"):
        u = u.with_scheme("ws" if u.scheme == "http" else "wss")
    if u.path in ("", "/"):
        u = u.with_path("/ws")
    return u


class SignalingClient(EventQueue):
    """One joined membership of a room on the native signaling server.

    Events go through a bounded queue read by a single consumer via :meth:`events`. When the
    consumer stalls and the queue is full, the reader stops reading the socket rather than drop
    anything; the server then closes us as a slow consumer, and the consumer sees
    :class:`Disconnected` once it catches up. ``peers`` is updated as messages arrive, so it may
    be slightly ahead of the events not yet consumed.
    """

    def __init__(
        self,
        *,
        ws: aiohttp.ClientWebSocketResponse,
        session: aiohttp.ClientSession,
        owns_session: bool,
        welcome: Welcome,
        queue_size: int,
    ) -> None:
        self._ws = ws
        self._session = session
        self._owns_session = owns_session
        self.room = welcome.room
        self.role: Role = welcome.role
        self._self_id = welcome.participant_id
        self.resume_key: str | None = welcome.resume_key
        """Pass to a later :meth:`connect` to replace this connection (a reconnect of the same person)."""
        self._peers: dict[str, PeerInfo] = {}
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=max(queue_size, len(welcome.participants) + 1))
        self._final: Disconnected | None = None
        self._final_pending = False
        self._closing = False
        self._closed = False
        self._send_lock = asyncio.Lock()
        for p in welcome.participants:
            self._peers[p.participant_id] = PeerInfo(p.participant_id, p.name, p.role, p.mic, p.camera)
            # Members already present look exactly like later joiners, so the bot has one code path.
            self._queue.put_nowait(PeerJoined(p.participant_id, p.name, p.role, p.mic, p.camera))
        self._reader = asyncio.create_task(self._read_loop(), name=f"signaling-reader-{self._self_id}")

    @classmethod
    async def connect(
        cls,
        url: str,
        room: str,
        token: str,
        participant_id: str | None = None,
        name: str = "",
        role: Role = "participant",
        *,
        session: aiohttp.ClientSession | None = None,
        join_timeout_s: float = 10.0,
        queue_size: int = 1024,
        heartbeat_s: float | None = 20.0,
        resume_key: str | None = None,
    ) -> SignalingClient:
        """Open the WebSocket, send ``join`` and return once ``welcome`` arrived.

        ``url`` is the server's ``ws://host:port/ws`` (or its ``http://host:port`` base). Raises
        :class:`JoinRejected` when the server refuses the join or does not answer in time.
        ``resume_key`` is the :attr:`resume_key` of an earlier connection of ours: with it, this
        join replaces that connection if it is still in the room (without it: ``id_taken``).
        """
        owns = session is None
        http = session if session is not None else aiohttp.ClientSession()
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            ws = await http.ws_connect(_ws_url(url), max_msg_size=_CLIENT_MAX_MSG_BYTES, heartbeat=heartbeat_s)
            join = Join(
                room=room, role=role, token=token, participant_id=participant_id, name=name, resume_key=resume_key
            )
            await ws.send_str(to_json(join))
            try:
                async with asyncio.timeout(join_timeout_s):
                    welcome = await _await_welcome(ws)
            except TimeoutError as exc:
                raise JoinRejected("timeout", "no welcome from the server in time") from exc
            return cls(ws=ws, session=http, owns_session=owns, welcome=welcome, queue_size=queue_size)
        except BaseException:
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
            if owns:
                await http.close()
            raise

    # -- SignalingSession --

    @property
    def self_id(self) -> str:
        return self._self_id

    @property
    def peers(self) -> Mapping[str, PeerInfo]:
        return dict(self._peers)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connected(self) -> bool:
        return not (self._closed or self._closing)

    result_relay_reaches_hosts = True
    """``send_result`` goes to its subject *and* every host of the room (the server fans it out)."""

    async def send_offer(self, peer_id: str, sdp: str) -> None:
        await self._send(OfferTo(to=peer_id, sdp=sdp))

    async def send_answer(self, peer_id: str, sdp: str) -> None:
        await self._send(AnswerTo(to=peer_id, sdp=sdp))

    async def send_candidate(self, peer_id: str, candidate: dict[str, Any] | None) -> None:
        await self._send(CandidateTo(to=peer_id, candidate=candidate))

    async def send_result(self, peer_id: str, payload: dict[str, Any]) -> None:
        await self._send(ResultTo(to=peer_id, payload=payload))

    async def send_offer_rejected(self, peer_id: str, reason: str) -> None:
        """Tell ``peer_id`` its offer was refused; it gets ``error {code: "offer_rejected"}``."""
        await self._send(OfferRejectedTo(to=peer_id, reason=reason[:MAX_REASON_CHARS]))

    async def announce_media(self, mic: bool, camera: bool) -> None:
        await self._send(MediaAnnounce(mic=mic, camera=camera))

    async def close(self) -> None:
        """Leave the room and release the socket (and the HTTP session if we created it)."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            await self._ws.close()
        _, pending = await asyncio.wait({self._reader}, timeout=5.0)
        for task in pending:
            task.cancel()
        if self._owns_session:
            await self._session.close()

    async def __aenter__(self) -> SignalingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals --

    async def send_raw(self, text: str) -> None:
        """Send an arbitrary text frame (tests use it to exercise the server's validation)."""
        if self._closed or self._closing:
            raise SessionClosed("signaling session is closed")
        try:
            async with self._send_lock:
                await self._ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:
            raise SessionClosed(str(exc)) from exc

    async def _send(self, msg: ClientMessage) -> None:
        await self.send_raw(to_json(msg))

    async def _read_loop(self) -> None:
        reason = "connection_lost"
        try:
            while True:
                msg = await self._ws.receive()
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    try:
                        parsed = parse_server_message(msg.data, _CLIENT_MAX_MSG_BYTES)
                    except ProtocolError as exc:
                        log.warning("ignoring bad server message: %s", exc)
                        continue
                    event = self._apply(parsed)
                    if event is not None:
                        await self._queue.put(event)
                    continue
                if self._closing:
                    reason = "client_closed"
                elif msg.type == aiohttp.WSMsgType.CLOSE:
                    reason = _close_reason(msg.data, msg.extra)
                elif msg.type == aiohttp.WSMsgType.CLOSED and self._ws.close_code is not None:
                    reason = _close_reason(self._ws.close_code, "")
                break
        finally:
            self._closed = True
            self._finish(reason)

    def _apply(self, msg: ServerMessage) -> Event | None:
        """Update ``peers`` from one server message and turn it into an event."""
        match msg:
            case Joined(participant=p):
                self._peers[p.participant_id] = PeerInfo(p.participant_id, p.name, p.role, p.mic, p.camera)
                return PeerJoined(p.participant_id, p.name, p.role, p.mic, p.camera)
            case Left(participant_id=pid):
                self._peers.pop(pid, None)
                return PeerLeft(pid)
            case MediaUpdate(participant_id=pid, mic=mic, camera=camera):
                known = self._peers.get(pid)
                if known is not None:
                    self._peers[pid] = PeerInfo(pid, known.name, known.role, mic, camera)
                return MediaState(pid, mic, camera)
            case OfferFrom(from_=pid, sdp=sdp):
                return RemoteOffer(pid, sdp)
            case AnswerFrom(from_=pid, sdp=sdp):
                return RemoteAnswer(pid, sdp)
            case CandidateFrom(from_=pid, candidate=candidate):
                return RemoteCandidate(pid, candidate)
            case ResultFrom(from_=pid, about=about, payload=payload):
                return ResultRelay(pid, about, payload)
            case ErrorMessage(code=code, message=message):
                return SignalingError(code, message)
        return None  # pong, or a stray welcome


def _close_reason(code: int | None, extra: Any) -> str:
    """The server's close reason text is the error code (e.g. ``replaced``); else name the code."""
    if isinstance(extra, str) and extra:
        return extra
    return "closed" if code in (None, 1000) else f"close_{code}"


async def _await_welcome(ws: aiohttp.ClientWebSocketResponse) -> Welcome:
    while True:
        msg = await ws.receive()
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            code = ws.close_code if msg.type != aiohttp.WSMsgType.CLOSE else msg.data
            reason = _close_reason(code, msg.extra)
            raise JoinRejected(reason, f"connection closed before welcome (code {code})")
        try:
            parsed = parse_server_message(msg.data, _CLIENT_MAX_MSG_BYTES)
        except ProtocolError as exc:
            raise JoinRejected("bad_message", str(exc)) from exc
        if isinstance(parsed, ErrorMessage):
            raise JoinRejected(parsed.code, parsed.message)
        if isinstance(parsed, Welcome):
            return parsed

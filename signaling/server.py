"""The native signaling server: rooms, tokens, presence and relay over aiohttp.

One asyncio loop owns all state; nothing here blocks or computes, it only moves small messages
between sockets. Each connection has one writer task draining a bounded outbox, so a slow reader
can never stall the room: when its outbox overflows it is cut off (see :class:`_Outbox`).

Rooms live only in memory. They exist from ``POST /rooms`` until they have been empty for a grace
period (or were never joined within ``room_ttl_s``); then every trace of them is dropped. Tokens are
self-contained (:mod:`signaling.tokens`), so the server keeps no token table.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from signaling.base import Role
from signaling.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ID_PATTERN,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    AnswerFrom,
    AnswerTo,
    CandidateFrom,
    CandidateTo,
    ClientMessage,
    CloseCode,
    ErrorCode,
    ErrorMessage,
    Join,
    Joined,
    Leave,
    Left,
    MediaAnnounce,
    MediaUpdate,
    OfferFrom,
    OfferTo,
    ParticipantInfo,
    Ping,
    Pong,
    ProtocolError,
    ResultFrom,
    ResultTo,
    ServerMessage,
    Welcome,
    parse_client_message,
    to_json,
)
from signaling.tokens import TokenClaims, TokenError, TokenSigner
from signaling.web import BotLauncherConfig, mount_web

log = logging.getLogger(__name__)

_TOKEN_ERRORS = {
    "malformed": ErrorCode.TOKEN_MALFORMED,
    "bad_signature": ErrorCode.TOKEN_BAD_SIGNATURE,
    "expired": ErrorCode.TOKEN_EXPIRED,
    "wrong_room": ErrorCode.TOKEN_WRONG_ROOM,
}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Every limit of the server in one place; the defaults are the production values."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """Largest accepted client message; larger ones get ``too_large`` and the socket is closed."""
    hard_message_bytes: int | None = None
    """aiohttp's own frame limit (default 2x the above). Between the two limits the server still
    answers with an ``error`` before closing; beyond it aiohttp closes with 1009 straight away."""
    room_ttl_s: float = 3600.0
    """How long a created room waits for its first member."""
    empty_room_grace_s: float = 30.0
    """How long a room survives after its last member left (covers a reconnect)."""
    join_timeout_s: float = 10.0
    host_token_ttl_s: float = 24 * 3600.0
    default_invite_ttl_s: float = 3600.0
    max_invite_ttl_s: float = 7 * 24 * 3600.0
    send_queue_messages: int = 256
    send_queue_bytes: int = 4 * 1024 * 1024
    close_timeout_s: float = 5.0
    heartbeat_s: float | None = 20.0
    max_rooms: int = 10_000
    max_members_per_room: int = 64
    allow_origins: frozenset[str] | None = None
    """None: no CORS headers and any WebSocket Origin. A set: only these origins ("*" = any)."""
    create_room_key: str | None = None
    """If set, ``POST /rooms`` needs ``Authorization: Bearer <key>``."""
    public_url: str | None = None
    """Base used for ``joinUrl``/``wsUrl`` in ``POST /rooms``; default: the request's own host."""


@dataclass(slots=True)
class ServerStats:
    """Counters for /health and tests (``connections_open`` is a gauge). Every cut-off is counted."""

    connections_open: int = 0
    connections_total: int = 0
    joins_total: int = 0
    joins_rejected: int = 0
    replaced_total: int = 0
    relayed_total: int = 0
    errors_sent: int = 0
    slow_consumers_closed: int = 0
    rooms_created: int = 0
    rooms_freed: int = 0


@dataclass(frozen=True, slots=True)
class _CloseRequest:
    code: int
    reason: str


class _Outbox:
    """The only writer of one WebSocket.

    Bounded by message count *and* bytes. Overflow means the reader is not keeping up; dropping a
    signaling message (an offer, a candidate) would silently wedge a peer connection, so instead
    the connection is aborted and counted. The client then sees a dropped socket and can rejoin
    with the same participant id, receiving a fresh ``welcome``.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        config: ServerConfig,
        stats: ServerStats,
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._config = config
        self._stats = stats
        self._queue: asyncio.Queue[str | _CloseRequest] = asyncio.Queue()
        self._queued_bytes = 0
        self.closing = False
        self._task = asyncio.create_task(self._run(), name="signaling-outbox")

    def send(self, msg: ServerMessage) -> bool:
        """Queue a message without waiting; False when the connection is (now) going away."""
        if self.closing:
            return False
        text = to_json(msg)
        backlog = self._queue.qsize()
        # A single message larger than the byte bound still goes through when nothing is queued.
        if backlog >= self._config.send_queue_messages or (
            backlog and self._queued_bytes + len(text) > self._config.send_queue_bytes
        ):
            self._stats.slow_consumers_closed += 1
            log.warning("closing slow consumer (%d messages, %d bytes queued)", backlog, self._queued_bytes)
            self.abort()
            return False
        if isinstance(msg, ErrorMessage):
            self._stats.errors_sent += 1
        self._queued_bytes += len(text)
        self._queue.put_nowait(text)
        return True

    def error(self, code: str, message: str) -> None:
        self.send(ErrorMessage(code=str(code), message=message))

    def close(self, code: int, reason: str = "") -> None:
        """Close after everything already queued has been written."""
        if not self.closing:
            self.closing = True
            self._queue.put_nowait(_CloseRequest(code, reason))

    def abort(self) -> None:
        """Drop the connection now, unsent messages included."""
        self.closing = True
        self._task.cancel()
        if self._transport is not None:
            self._transport.abort()

    async def finish(self) -> None:
        """Called when the handler ends: flush, close, and never wait past ``close_timeout_s``."""
        self.close(CloseCode.NORMAL)
        try:
            done, _ = await asyncio.wait({self._task}, timeout=self._config.close_timeout_s)
        except asyncio.CancelledError:
            self.abort()
            raise
        if not done:
            self.abort()

    async def _run(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _CloseRequest):
                    async with asyncio.timeout(self._config.close_timeout_s):
                        await self._ws.close(code=item.code, message=item.reason.encode())
                    return
                self._queued_bytes -= len(item)
                await self._ws.send_str(item)
        except TimeoutError:
            self.abort()
        except (ConnectionError, RuntimeError) as exc:  # peer vanished mid-write
            log.debug("outbox stopped: %r", exc)
            self.closing = True


@dataclass(eq=False, slots=True)
class _Member:
    pid: str
    name: str
    role: Role
    token_id: str
    room: _Room
    out: _Outbox
    mic: bool = False
    camera: bool = False
    analysis: bool = True
    detached: bool = False

    def info(self) -> ParticipantInfo:
        return ParticipantInfo(self.pid, self.name, self.role, self.mic, self.camera, self.analysis)


@dataclass(eq=False, slots=True)
class _Room:
    id: str
    name: str
    created_at: float
    members: dict[str, _Member] = field(default_factory=dict)
    expiry: asyncio.TimerHandle | None = None

    def broadcast(self, msg: ServerMessage, *, exclude: _Member | None = None) -> None:
        for member in list(self.members.values()):
            if member is not exclude:
                member.out.send(msg)

    def summary(self) -> dict[str, Any]:
        return {
            "roomId": self.id,
            "name": self.name,
            "createdAt": int(self.created_at),
            "participants": [
                {
                    "participantId": m.pid,
                    "name": m.name,
                    "role": m.role,
                    "mic": m.mic,
                    "camera": m.camera,
                    **({} if m.analysis else {"analysis": False}),
                }
                for m in self.members.values()
            ],
        }


class Hub:
    """All rooms and live connections of one server; the WebSocket and REST handlers call it."""

    def __init__(self, signer: TokenSigner, config: ServerConfig) -> None:
        self.signer = signer
        self.config = config
        self.stats = ServerStats()
        self._rooms: dict[str, _Room] = {}
        self._outboxes: set[_Outbox] = set()

    # -- inspection (tests, /health) --

    @property
    def room_count(self) -> int:
        return len(self._rooms)

    def has_room(self, room_id: str) -> bool:
        return room_id in self._rooms

    def member_ids(self, room_id: str) -> list[str]:
        room = self._rooms.get(room_id)
        return list(room.members) if room else []

    # -- room lifecycle --

    def create_room(self, name: str) -> _Room | None:
        if len(self._rooms) >= self.config.max_rooms:
            return None
        room = _Room(id=secrets.token_urlsafe(9), name=name, created_at=time.time())
        self._rooms[room.id] = room
        self.stats.rooms_created += 1
        self._schedule_expiry(room, self.config.room_ttl_s)
        log.info("room %s created", room.id)
        return room

    def get_room(self, room_id: str) -> _Room | None:
        return self._rooms.get(room_id)

    def _schedule_expiry(self, room: _Room, delay_s: float) -> None:
        if room.expiry is not None:
            room.expiry.cancel()
        room.expiry = asyncio.get_running_loop().call_later(delay_s, self._expire, room)

    def _expire(self, room: _Room) -> None:
        room.expiry = None
        if not room.members and self._rooms.get(room.id) is room:
            del self._rooms[room.id]
            self.stats.rooms_freed += 1
            log.info("room %s freed", room.id)

    # -- connections --

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """The ``GET /ws`` handler: wait for ``join``, then serve the member until it goes."""
        if not _origin_allowed(self.config, request.headers.get("Origin")):
            return _http_error(403, "origin_not_allowed", "this Origin may not open the WebSocket")
        hard_limit = max(
            self.config.hard_message_bytes or 2 * self.config.max_message_bytes, self.config.max_message_bytes
        )
        ws = web.WebSocketResponse(max_msg_size=hard_limit, heartbeat=self.config.heartbeat_s)
        await ws.prepare(request)
        out = _Outbox(ws, request.transport, self.config, self.stats)
        self._outboxes.add(out)
        self.stats.connections_open += 1
        self.stats.connections_total += 1
        member: _Member | None = None
        try:
            member = await self._await_join(ws, out)
            if member is not None:
                await self._serve_member(ws, member)
        finally:
            if member is not None:
                self._detach(member)
            self.stats.connections_open -= 1
            try:
                await out.finish()
            finally:
                self._outboxes.discard(out)
        return ws

    async def _receive(
        self, ws: web.WebSocketResponse, out: _Outbox, timeout: float | None
    ) -> ClientMessage | None:
        """Next parsed client message; None when the socket is done (closed, error, too large)."""
        while True:
            msg = await ws.receive(timeout=timeout)
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return None
            try:
                return parse_client_message(msg.data, self.config.max_message_bytes)
            except ProtocolError as exc:
                out.error(exc.code, exc.detail)
                if exc.code == ErrorCode.TOO_LARGE:
                    out.close(CloseCode.TOO_LARGE, ErrorCode.TOO_LARGE)
                    return None

    async def _await_join(self, ws: web.WebSocketResponse, out: _Outbox) -> _Member | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.join_timeout_s
        while True:
            # aiohttp treats timeout=0 as "no timeout", hence the small floor.
            remaining = max(deadline - loop.time(), 0.001)
            try:
                msg = await self._receive(ws, out, remaining)
            except TimeoutError:
                msg_text = "no join within the time limit"
                self._reject(out, ErrorCode.JOIN_TIMEOUT, msg_text, CloseCode.JOIN_TIMEOUT)
                return None
            if msg is None:
                return None
            if isinstance(msg, Join):
                return self._admit(msg, out)
            out.error(ErrorCode.JOIN_REQUIRED, "the first message must be 'join'")

    def _reject(self, out: _Outbox, code: ErrorCode, message: str, close_code: CloseCode) -> None:
        self.stats.joins_rejected += 1
        out.error(code, message)
        out.close(close_code, code)

    def _admit(self, join: Join, out: _Outbox) -> _Member | None:
        try:
            claims: TokenClaims = self.signer.verify(join.token, room=join.room)
        except TokenError as exc:
            self._reject(out, _TOKEN_ERRORS[exc.code], f"token refused: {exc.code}", CloseCode.BAD_TOKEN)
            return None
        if claims.role != join.role:
            msg = f"a {claims.role} token cannot join as {join.role}"
            self._reject(out, ErrorCode.ROLE_MISMATCH, msg, CloseCode.FORBIDDEN)
            return None
        if claims.pid is not None and join.participant_id not in (None, claims.pid):
            msg = "this token is bound to another participantId"
            self._reject(out, ErrorCode.PARTICIPANT_MISMATCH, msg, CloseCode.FORBIDDEN)
            return None
        room = self._rooms.get(join.room)
        if room is None:
            msg = "the room does not exist (any more)"
            self._reject(out, ErrorCode.ROOM_NOT_FOUND, msg, CloseCode.ROOM_NOT_FOUND)
            return None
        pid = join.participant_id or claims.pid or f"p-{secrets.token_urlsafe(8)}"
        if pid not in room.members and len(room.members) >= self.config.max_members_per_room:
            self._reject(out, ErrorCode.ROOM_FULL, "the room is full", CloseCode.ROOM_FULL)
            return None

        old = room.members.get(pid)
        if old is not None and not _may_replace(old, join, claims, pid):
            msg = "another member holds this participantId"
            self._reject(out, ErrorCode.ID_TAKEN, msg, CloseCode.FORBIDDEN)
            return None
        if old is not None:
            # Replacement: the newest connection wins (a reloaded tab, a reconnecting bot).
            del room.members[pid]
            old.detached = True
            old.out.error(ErrorCode.REPLACED, "a newer connection joined with this participantId")
            old.out.close(CloseCode.REPLACED, ErrorCode.REPLACED)
            room.broadcast(Left(participant_id=pid))
            self.stats.replaced_total += 1

        member = _Member(pid=pid, name=join.name, role=join.role, token_id=claims.jti, room=room, out=out)
        others = tuple(m.info() for m in room.members.values())
        room.members[pid] = member
        if room.expiry is not None:
            room.expiry.cancel()
            room.expiry = None
        self.stats.joins_total += 1
        out.send(Welcome(room=room.id, participant_id=pid, role=join.role, participants=others))
        room.broadcast(Joined(participant=member.info()), exclude=member)
        log.info("room %s: %s joined as %s", room.id, pid, join.role)
        return member

    def _detach(self, member: _Member) -> None:
        room = member.room
        if member.detached or room.members.get(member.pid) is not member:
            return
        member.detached = True
        del room.members[member.pid]
        room.broadcast(Left(participant_id=member.pid))
        log.info("room %s: %s left", room.id, member.pid)
        if not room.members:
            self._schedule_expiry(room, self.config.empty_room_grace_s)

    async def _serve_member(self, ws: web.WebSocketResponse, member: _Member) -> None:
        while not member.detached:
            msg = await self._receive(ws, member.out, None)
            if msg is None or member.detached or not self._dispatch(member, msg):
                return

    def _dispatch(self, member: _Member, msg: ClientMessage) -> bool:
        """Act on one message from a joined member; False means the member is leaving."""
        room, out = member.room, member.out
        match msg:
            case OfferTo(to=to, sdp=sdp):
                self._relay(member, to, OfferFrom(from_=member.pid, sdp=sdp))
            case AnswerTo(to=to, sdp=sdp):
                self._relay(member, to, AnswerFrom(from_=member.pid, sdp=sdp))
            case CandidateTo(to=to, candidate=candidate):
                self._relay(member, to, CandidateFrom(from_=member.pid, candidate=candidate))
            case MediaAnnounce(mic=mic, camera=camera, analysis=analysis):
                member.mic, member.camera, member.analysis = mic, camera, analysis
                update = MediaUpdate(participant_id=member.pid, mic=mic, camera=camera, analysis=analysis)
                room.broadcast(update, exclude=member)
            case ResultTo(to=to, payload=payload):
                self._relay_result(member, to, payload)
            case Ping():
                out.send(Pong())
            case Leave():
                return False
            case Join():
                out.error(ErrorCode.ALREADY_JOINED, "this connection has already joined")
        return True

    def _target(self, member: _Member, to: str) -> _Member | None:
        target = member.room.members.get(to)
        if target is None or target is member:
            member.out.error(ErrorCode.UNKNOWN_PEER, f"no other participant {to!r} in this room")
            return None
        return target

    def _relay(self, member: _Member, to: str, msg: ServerMessage) -> None:
        target = self._target(member, to)
        if target is not None:
            target.out.send(msg)
            self.stats.relayed_total += 1

    def _relay_result(self, member: _Member, to: str, payload: dict[str, Any]) -> None:
        """Results go to the participant they describe and to every host, never to anyone else."""
        if member.role != "bot":
            member.out.error(ErrorCode.FORBIDDEN, "only a bot may send results")
            return
        target = self._target(member, to)
        if target is None:
            return
        msg = ResultFrom(from_=member.pid, about=to, payload=payload)
        hosts = [m for m in member.room.members.values() if m.role == "host" and m is not target]
        for recipient in [target, *hosts]:
            if recipient is not member:
                recipient.out.send(msg)
        self.stats.relayed_total += 1

    # -- shutdown --

    async def shutdown(self) -> None:
        """Tell every connection the server is going away and close it (aiohttp ``on_shutdown``)."""
        for out in list(self._outboxes):
            out.error(ErrorCode.SHUTTING_DOWN, "the server is shutting down")
            out.close(CloseCode.GOING_AWAY, ErrorCode.SHUTTING_DOWN)
        for room in self._rooms.values():
            if room.expiry is not None:
                room.expiry.cancel()


def _may_replace(old: _Member, join: Join, claims: TokenClaims, pid: str) -> bool:
    """Only the same identity may take over a participantId: same role, and either a token bound
    to this id or the very token the current holder joined with (a reload or reconnect). Without
    this, any invitee could kick the host out by joining under the host's id."""
    return old.role == join.role and (claims.pid == pid or old.token_id == claims.jti)


# --- HTTP ---------------------------------------------------------------------------------------

HUB_KEY = web.AppKey("hoovik_signaling_hub", Hub)


def _http_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _origin_allowed(config: ServerConfig, origin: str | None) -> bool:
    if config.allow_origins is None or origin is None:
        return True  # non-browser clients send no Origin; tokens authenticate them
    return "*" in config.allow_origins or origin in config.allow_origins


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object (an empty body counts as ``{}``), or the 400 to send back."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return _http_error(400, ErrorCode.BAD_JSON, "body is not JSON")
    if not isinstance(body, dict):
        return _http_error(400, ErrorCode.BAD_JSON, "body must be a JSON object")
    return body


def _require_host(request: web.Request, hub: Hub, room_id: str) -> TokenClaims | web.Response:
    token = _bearer(request)
    if token is None:
        return _http_error(401, "unauthorized", "Authorization: Bearer <host token> is required")
    try:
        claims = hub.signer.verify(token, room=room_id)
    except TokenError as exc:
        status = 403 if exc.code == "wrong_room" else 401
        return _http_error(status, _TOKEN_ERRORS[exc.code], f"token refused: {exc.code}")
    if claims.role != "host":
        return _http_error(403, ErrorCode.FORBIDDEN, "only a host token may do this")
    return claims


def _base_urls(request: web.Request, config: ServerConfig) -> tuple[str, str]:
    base = (config.public_url or f"{request.scheme}://{request.host}").rstrip("/")
    if base.startswith("https://"):
        ws_base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        ws_base = "ws://" + base[len("http://") :]
    else:
        ws_base = base
    return base, f"{ws_base}/ws"


async def _create_room(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    key = hub.config.create_room_key
    if key is not None and not hmac.compare_digest((_bearer(request) or "").encode(), key.encode()):
        return _http_error(401, "unauthorized", "creating rooms needs the server's room key")
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    name = body.get("name") or ""
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        why = f"'name' must be a string of at most {MAX_NAME_CHARS} characters"
        return _http_error(400, ErrorCode.BAD_FIELD, why)
    room = hub.create_room(name)
    if room is None:
        return _http_error(503, "too_many_rooms", "the server holds its maximum number of rooms")
    host_token = hub.signer.mint(room.id, "host", hub.config.host_token_ttl_s)
    base, ws_url = _base_urls(request, hub.config)
    return web.json_response(
        {
            "roomId": room.id,
            "name": room.name,
            "hostToken": host_token,
            "joinUrl": f"{base}/?room={room.id}",
            "wsUrl": ws_url,
        },
        status=201,
    )


async def _mint_invite(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    room_id = request.match_info["room"]
    auth = _require_host(request, hub, room_id)
    if isinstance(auth, web.Response):
        return auth
    if hub.get_room(room_id) is None:
        return _http_error(404, ErrorCode.ROOM_NOT_FOUND, "the room does not exist (any more)")
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    role = body.get("role")
    if role not in ("participant", "bot"):
        return _http_error(400, ErrorCode.BAD_FIELD, "'role' must be 'participant' or 'bot'")
    ttl = body.get("ttlSeconds", hub.config.default_invite_ttl_s)
    max_ttl = hub.config.max_invite_ttl_s
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= max_ttl:
        why = f"'ttlSeconds' must be a number from 1 to {int(max_ttl)}"
        return _http_error(400, ErrorCode.BAD_FIELD, why)
    pid = body.get("participantId")
    if pid is not None and not (isinstance(pid, str) and ID_PATTERN.match(pid)):
        why = f"'participantId' must be 1..{MAX_ID_CHARS} characters of [A-Za-z0-9_.:@-]"
        return _http_error(400, ErrorCode.BAD_FIELD, why)
    token = hub.signer.mint(room_id, role, float(ttl), pid=pid)
    claims = hub.signer.verify(token)
    return web.json_response(
        {"token": token, "role": role, "participantId": pid, "expiresAt": claims.exp}, status=201
    )


async def _get_room(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    room_id = request.match_info["room"]
    auth = _require_host(request, hub, room_id)
    if isinstance(auth, web.Response):
        return auth
    room = hub.get_room(room_id)
    if room is None:
        return _http_error(404, ErrorCode.ROOM_NOT_FOUND, "the room does not exist (any more)")
    return web.json_response(room.summary())


async def _health(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    return web.json_response(
        {"status": "ok", "rooms": hub.room_count, "stats": dataclasses.asdict(hub.stats)}
    )


async def _ws(request: web.Request) -> web.StreamResponse:
    return await request.app[HUB_KEY].serve(request)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _cors_middleware(config: ServerConfig) -> Any:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and config.allow_origins is not None and _origin_allowed(config, origin)
        if request.method == "OPTIONS" and allowed:
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        if allowed and origin is not None and not isinstance(response, web.WebSocketResponse):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Vary"] = "Origin"
        return response

    return cors


def create_app(
    secret: bytes,
    config: ServerConfig | None = None,
    *,
    max_message_bytes: int | None = None,
    room_ttl_s: float | None = None,
    allow_origins: list[str] | frozenset[str] | None = None,
    bot_launcher: BotLauncherConfig | None = None,
) -> web.Application:
    """Build the signaling application, with the web app (:mod:`signaling.web`) mounted.

    ``config`` carries every limit; the keyword shortcuts override single fields of it.
    ``bot_launcher`` enables "add the bot" (off by default: it starts processes).
    """
    cfg = config or ServerConfig()
    if max_message_bytes is not None:
        cfg = dataclasses.replace(cfg, max_message_bytes=max_message_bytes)
    if room_ttl_s is not None:
        cfg = dataclasses.replace(cfg, room_ttl_s=room_ttl_s)
    if allow_origins is not None:
        cfg = dataclasses.replace(cfg, allow_origins=frozenset(allow_origins))
    hub = Hub(TokenSigner(secret), cfg)
    app = web.Application(middlewares=[_cors_middleware(cfg)], client_max_size=64 * 1024)
    app[HUB_KEY] = hub

    async def on_shutdown(_: web.Application) -> None:
        await hub.shutdown()

    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/rooms", _create_room)
    app.router.add_post("/rooms/{room}/invites", _mint_invite)
    app.router.add_get("/rooms/{room}", _get_room)
    app.router.add_get("/health", _health)
    app.router.add_get("/ws", _ws)
    mount_web(app, hub, bot_launcher)
    return app


class SignalingServer:
    """A running :func:`create_app` on one TCP port, for tests and ``hoovik-bot serve``."""

    def __init__(
        self,
        secret: bytes,
        config: ServerConfig | None = None,
        *,
        max_message_bytes: int | None = None,
        room_ttl_s: float | None = None,
        allow_origins: list[str] | frozenset[str] | None = None,
        bot_launcher: BotLauncherConfig | None = None,
    ) -> None:
        self.app = create_app(
            secret,
            config,
            max_message_bytes=max_message_bytes,
            room_ttl_s=room_ttl_s,
            allow_origins=allow_origins,
            bot_launcher=bot_launcher,
        )
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None

    @property
    def hub(self) -> Hub:
        return self.app[HUB_KEY]

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` (REST base)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:] + "/ws"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port``; port 0 picks a free port, readable from :attr:`port`."""
        runner = web.AppRunner(self.app, shutdown_timeout=self.hub.config.close_timeout_s, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        self._host = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self._port = int(runner.addresses[0][1])
        log.info("signaling server listening on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            with contextlib.suppress(Exception):
                await runner.cleanup()

    async def __aenter__(self) -> SignalingServer:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

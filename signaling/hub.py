"""The hub: every room and live connection of one signaling server, and the ``GET /ws`` handler.

One asyncio loop owns all state; nothing here blocks or computes, it only moves small messages
between sockets. Each connection has one writer task draining a bounded outbox, so a slow reader
can never stall the room: when its outbox overflows it is cut off (see :class:`Outbox`).

Rooms live in memory. They exist from ``POST /rooms`` until they have been empty for a grace
period (or were never joined within ``room_ttl_s``); then every trace of them is dropped. Tokens are
self-contained (:mod:`signaling.tokens`), so the server keeps no token table. With
``ServerConfig.state_file`` the list of rooms (never their members) is also written to a JSON file
and read back at start, so a restarted server (same secret) still knows its rooms and everyone
can rejoin; a restored room is freed like a new one if nobody rejoins within ``room_ttl_s``.

The hub is also the :class:`signaling.launcher.RoomView` a bot launcher sees rooms through.
The protocol is in docs/signaling.md; the limits in docs/security.md.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from signaling.base import Role
from signaling.config import ServerConfig, ServerStats
from signaling.connection import Inbox, Outbox
from signaling.messages import (
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
    OfferRejectedTo,
    OfferTo,
    ParticipantInfo,
    Ping,
    Pong,
    ResultFrom,
    ResultTo,
    ServerMessage,
    Welcome,
)
from signaling.tokens import TokenClaims, TokenError, TokenSigner


def room_id() -> str:
    """A random room id (72 bits, URL-safe) that never starts with ``-``.

    Why: people paste room ids into command lines, and ``hoovik-bot join --room -Xa3...`` is read
    as an unknown option. One ``token_urlsafe`` in 64 starts with ``-``; the benchmark hit it.
    """
    while True:
        rid = secrets.token_urlsafe(9)
        if not rid.startswith("-"):
            return rid


__all__ = ["TOKEN_ERRORS", "Hub", "http_error", "origin_allowed"]

log = logging.getLogger(__name__)

TOKEN_ERRORS = {
    "malformed": ErrorCode.TOKEN_MALFORMED,
    "bad_signature": ErrorCode.TOKEN_BAD_SIGNATURE,
    "expired": ErrorCode.TOKEN_EXPIRED,
    "wrong_room": ErrorCode.TOKEN_WRONG_ROOM,
}
"""A :class:`TokenError` code → the error code every HTTP and WebSocket answer uses."""


def http_error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The JSON error body of every REST and page endpoint: ``{"error", "message", ...extra}``."""
    return web.json_response({"error": code, "message": message, **extra}, status=status)


def origin_allowed(config: ServerConfig, origin: str | None) -> bool:
    if config.allow_origins is None or origin is None:
        return True  # non-browser clients send no Origin; tokens authenticate them
    return "*" in config.allow_origins or origin in config.allow_origins


@dataclass(eq=False, slots=True)
class _Member:
    pid: str
    name: str
    role: Role
    token_id: str
    room: _Room
    out: Outbox
    resume_key: str
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
        self._outboxes: set[Outbox] = set()

    # -- inspection (tests, /health) --

    @property
    def room_count(self) -> int:
        return len(self._rooms)

    def member_ids(self, room_id: str) -> list[str]:
        room = self._rooms.get(room_id)
        return list(room.members) if room else []

    # -- the RoomView a bot launcher sees (signaling.launcher) --

    def room_exists(self, room: str) -> bool:
        return room in self._rooms

    def bot_in_room(self, room: str) -> bool:
        r = self._rooms.get(room)
        return r is not None and any(m.role == "bot" for m in r.members.values())

    def humans_in_room(self, room: str) -> bool:
        r = self._rooms.get(room)
        return r is not None and any(m.role != "bot" for m in r.members.values())

    def mint_bot_token(self, room: str, ttl_s: float) -> str:
        return self.signer.mint(room, "bot", ttl_s)

    # -- room lifecycle --

    def create_room(self, name: str) -> _Room | None:
        if len(self._rooms) >= self.config.max_rooms:
            return None
        room = _Room(id=room_id(), name=name, created_at=time.time())
        self._rooms[room.id] = room
        self.stats.rooms_created += 1
        self._schedule_expiry(room, self.config.room_ttl_s)
        self._save_state()
        log.info("room %s created", room.id)
        return room

    # -- the optional room store (ServerConfig.state_file) --

    def restore_state(self) -> int:
        """Read the rooms back from ``state_file`` (at start); return how many were restored."""
        path = self.config.state_file
        if path is None or not Path(path).exists():
            return 0
        try:
            data = json.loads(Path(path).read_text())
            entries = [r for r in data.get("rooms", []) if isinstance(r, dict) and isinstance(r.get("id"), str)]
        except (OSError, ValueError, AttributeError) as exc:
            log.error("ignoring unreadable room state %s: %s", path, exc)
            return 0
        for entry in entries[: self.config.max_rooms]:
            if entry["id"] in self._rooms:
                continue
            room = _Room(id=entry["id"], name=str(entry.get("name", "")), created_at=float(entry.get("createdAt", 0)))
            self._rooms[room.id] = room
            self._schedule_expiry(room, self.config.room_ttl_s)
        log.info("restored %d rooms from %s", len(entries), path)
        return len(entries)

    def _save_state(self) -> None:
        path = self.config.state_file
        if path is None:
            return
        rooms = [{"id": r.id, "name": r.name, "createdAt": r.created_at} for r in self._rooms.values()]
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump({"rooms": rooms}, f)
            os.replace(tmp, path)  # atomic: a crash mid-write leaves the previous file
        except OSError as exc:
            log.error("could not write room state %s: %s", path, exc)

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
            self._save_state()
            log.info("room %s freed", room.id)

    # -- connections --

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """The ``GET /ws`` handler: wait for ``join``, then serve the member until it goes."""
        if not origin_allowed(self.config, request.headers.get("Origin")):
            return http_error(403, "origin_not_allowed", "this Origin may not open the WebSocket")
        hard_limit = max(
            self.config.hard_message_bytes or 2 * self.config.max_message_bytes, self.config.max_message_bytes
        )
        ws = web.WebSocketResponse(max_msg_size=hard_limit, heartbeat=self.config.heartbeat_s)
        await ws.prepare(request)
        out = Outbox(ws, request.transport, self.config, self.stats)
        inbox = Inbox(ws, out, self.config, self.stats)
        self._outboxes.add(out)
        self.stats.connections_open += 1
        self.stats.connections_total += 1
        member: _Member | None = None
        try:
            member = await self._await_join(inbox, out)
            if member is not None:
                await self._serve_member(inbox, member)
        finally:
            if member is not None:
                self._detach(member)
            self.stats.connections_open -= 1
            try:
                await out.finish()
            finally:
                self._outboxes.discard(out)
        return ws

    async def _await_join(self, inbox: Inbox, out: Outbox) -> _Member | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.join_timeout_s
        while True:
            # aiohttp treats timeout=0 as "no timeout", hence the small floor.
            remaining = max(deadline - loop.time(), 0.001)
            try:
                msg = await inbox.next(remaining)
            except TimeoutError:
                msg_text = "no join within the time limit"
                self._reject(out, ErrorCode.JOIN_TIMEOUT, msg_text, CloseCode.JOIN_TIMEOUT)
                return None
            if msg is None:
                return None
            if isinstance(msg, Join):
                return self._admit(msg, out)
            out.error(ErrorCode.JOIN_REQUIRED, "the first message must be 'join'")

    def _reject(self, out: Outbox, code: ErrorCode, message: str, close_code: CloseCode) -> None:
        self.stats.joins_rejected += 1
        out.error(code, message)
        out.close(close_code, code)

    def _admit(self, join: Join, out: Outbox) -> _Member | None:
        try:
            claims: TokenClaims = self.signer.verify(join.token, room=join.room)
        except TokenError as exc:
            self._reject(out, TOKEN_ERRORS[exc.code], f"token refused: {exc.code}", CloseCode.BAD_TOKEN)
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
        if pid in self.config.bot_ids and claims.role != "bot":
            msg = "this participantId is reserved for the bot"
            self._reject(out, ErrorCode.ID_RESERVED, msg, CloseCode.FORBIDDEN)
            return None
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

        key = secrets.token_urlsafe(24)
        member = _Member(
            pid=pid, name=join.name, role=join.role, token_id=claims.jti, room=room, out=out, resume_key=key
        )
        others = tuple(m.info() for m in room.members.values())
        room.members[pid] = member
        if room.expiry is not None:
            room.expiry.cancel()
            room.expiry = None
        self.stats.joins_total += 1
        out.send(Welcome(room=room.id, participant_id=pid, role=join.role, participants=others, resume_key=key))
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

    async def _serve_member(self, inbox: Inbox, member: _Member) -> None:
        while not member.detached:
            msg = await inbox.next(None)
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
            case OfferRejectedTo(to=to, reason=reason):
                why = reason or "the offer was rejected"
                self._relay(member, to, ErrorMessage(code=ErrorCode.OFFER_REJECTED, message=why, from_=member.pid))
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
    """Who may take over a participantId in use (docs/signaling.md, "Replacement semantics"): a bot
    token a bot's id; else the same role plus a token bound to the id, the holder's ``resumeKey``,
    or (hosts only, trusted in their room) the holder's token. A shared invite is no identity."""
    if claims.role == "bot":
        return old.role == "bot"
    if old.role != join.role:
        return False
    if claims.pid == pid:
        return True
    if join.resume_key is not None and hmac.compare_digest(join.resume_key, old.resume_key):
        return True
    return join.role == "host" and old.token_id == claims.jti

"""A stand-in for Hoovik's meeting backend: a python-socketio relay with its semantics (spec 1.2-1.4).

What it reproduces, because the bot depends on it:

* ``join-call(code, meta)``: code trimmed + upper-cased and checked against ``^[A-Z0-9-]{3,32}$``, the
  meeting must exist, room cap; replies to the joiner in the order ``existing-participants``,
  ``assigned-role``, ``chat-history``; ``user-joined`` to the others; a per-room debounced
  ``participants-updated`` (150 ms) to everyone, the joiner included.
* ``userId = meta.userId || auth.userId || socket id``. A second join with a known userId replaces
  the old socket: it leaves the room and is force-disconnected (a Socket.IO ``disconnect`` packet)
  **without** ``user-left``.
* ``update-participant-state``: only ``muted``/``screen`` are stored; ``{peerId, muted}`` goes to the
  whole room, the sender included, even for ``{video: ...}``.
* ``update-meta``: merged into the sender's meta; ``participant-meta-updated {id, meta}`` to the room
  plus a debounced ``participants-updated``.
* ``signal(targetId, message)``: relayed verbatim as ``signal(fromId, message)`` only when the sender
  has joined and the target is a live socket of the same meeting; otherwise dropped and logged as
  "signal rejected: target not in room" (recorded in :attr:`HoovikRelay.rejected_signals`).
* ``leave-call`` / disconnect: ``user-left(socketId)`` to the others, then ``participants-updated``;
  skipped for replaced sockets and sockets that never joined.
* Error strings exactly as the backend sends them (``error`` event, one string).
* :class:`Store` plays Redis + Mongo: it survives :meth:`HoovikRelay.stop` with ``crash=True``, so a
  new relay on the same port with the same store behaves like a restarted backend (stale entries
  included).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiohttp import web

log = logging.getLogger("hoovik_relay")

CODE_RE = re.compile(r"^[A-Z0-9-]{3,32}$")
ERR_INVALID_CODE = "Invalid meeting code"
ERR_NO_ROOM = "Room does not exist. Please create it first."
ERR_FULL = "Room is full"
ERR_UNAVAILABLE = "Meeting service temporarily unavailable. Please try again."
ERR_FAILED = "Failed to join call"
_TAG_RE = re.compile(r"<[^>]*>")


def sanitize_name(value: Any) -> str:
    text = _TAG_RE.sub("", str(value or "")).strip()[:200]
    return text or "Guest"


@dataclass
class Store:
    """What Redis and Mongo hold; outlives a relay process."""

    rooms: dict[str, str] = field(default_factory=dict)  # code -> sha256(hostSecret)
    participants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # code -> userId -> entry
    state: dict[str, list[str]] = field(default_factory=dict)  # code -> socket ids in join order

    def create_room(self, code: str | None = None) -> tuple[str, str]:
        code = code or secrets.token_hex(4).upper()
        secret = secrets.token_hex(32)
        self.rooms[code] = hashlib.sha256(secret.encode()).hexdigest()
        return code, secret


@dataclass
class SocketData:
    code: str | None = None
    user_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    replaced: bool = False


class HoovikRelay:
    def __init__(self, store: Store | None = None, *, max_participants: int = 50, debounce_s: float = 0.15) -> None:
        self.store = store or Store()
        self.max_participants = max_participants
        self.debounce_s = debounce_s
        self.unavailable = False
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp", cors_allowed_origins="*", async_handlers=False, logger=False, engineio_logger=False
        )
        self.app = web.Application()
        self.sio.attach(self.app)
        self.app.add_routes([web.post("/api/v1/rooms", self._create_room), web.get("/api/v1/rooms/{code}", self._room)])
        self.sockets: dict[str, SocketData] = {}
        self.auth_user: dict[str, str | None] = {}
        self.members: dict[str, set[str]] = {}
        self.rejected_signals: list[tuple[str, str]] = []
        self.relayed_signals: list[tuple[str, str, Any]] = []
        self.received: list[tuple[float, str, str, tuple[Any, ...]]] = []
        self.replacements: list[tuple[str, str]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._debounce: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._crashing = False
        self._runner: web.AppRunner | None = None
        self.port = 0
        for event, handler in (
            ("connect", self._on_connect),
            ("disconnect", self._on_disconnect),
            ("join-call", self._on_join),
            ("update-participant-state", self._on_participant_state),
            ("update-meta", self._on_update_meta),
            ("signal", self._on_signal),
            ("leave-call", self._on_leave),
        ):
            self.sio.on(event, handler)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        # A short shutdown: open websockets are cut rather than waited for, as when a process dies.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def stop(self, *, crash: bool = False) -> None:
        """Shut down. ``crash=True`` is a killed process: connections just drop, nothing is cleaned
        up in the store (no ``user-left``), as when the Node backend restarts over a live Redis."""
        self._crashing = crash
        for handle in self._debounce.values():
            handle.cancel()
        self._debounce.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            if not crash:
                await self.sio.shutdown()
            await self._runner.cleanup()
            self._runner = None

    def create_room(self, code: str | None = None) -> str:
        return self.store.create_room(code)[0]

    def entries(self, code: str) -> dict[str, dict[str, Any]]:
        return self.store.participants.get(code, {})

    def events_of(self, event: str) -> list[tuple[str, tuple[Any, ...]]]:
        return [(sid, args) for _, name, sid, args in self.received if name == event]

    # -- REST (spec 1.2) -------------------------------------------------------------------------

    async def _create_room(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("hostName"), str) or not body["hostName"].strip():
            return web.json_response({"error": "hostName is required"}, status=400)
        code, secret = self.store.create_room()
        return web.json_response(
            {"message": "Room created successfully", "roomCode": code, "hostSecret": secret, "owner": False},
            status=201,
        )

    async def _room(self, request: web.Request) -> web.Response:
        code = request.match_info["code"].strip().upper()
        if code not in self.store.rooms:
            return web.json_response({"error": "Room not found"}, status=404)
        count = len(self.store.participants.get(code, {}))
        return web.json_response({"roomCode": code, "createdAt": None, "participantsCount": count, "hasOwner": False})

    # -- socket events ---------------------------------------------------------------------------

    def _record(self, name: str, sid: str, args: tuple[Any, ...]) -> None:
        self.received.append((time.monotonic(), name, sid, args))

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        uid = auth.get("userId") if isinstance(auth, dict) else None
        self.auth_user[sid] = str(uid) if uid else None
        self.sockets[sid] = SocketData()

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        if self._crashing:
            return  # the process died: Redis keeps everything
        data = self.sockets.get(sid)
        if data is not None and not data.replaced and data.code is not None and data.user_id is not None:
            await self._leave(sid, data)
        self.sockets.pop(sid, None)
        self.auth_user.pop(sid, None)

    async def _error(self, sid: str, message: str) -> None:
        await self.sio.emit("error", message, to=sid)

    async def _on_join(self, sid: str, code: Any = None, meta: Any = None, *rest: Any) -> None:
        self._record("join-call", sid, (code, meta, *rest))
        code = code.strip().upper() if isinstance(code, str) else ""
        if not CODE_RE.match(code):
            await self._error(sid, ERR_INVALID_CODE)
            return
        if self.unavailable:
            await self._error(sid, ERR_UNAVAILABLE)
            return
        if code not in self.store.rooms:
            await self._error(sid, ERR_NO_ROOM)
            return
        meta = dict(meta) if isinstance(meta, dict) else {}
        user_id = str(meta.get("userId") or self.auth_user.get(sid) or sid)
        lock = self._locks.setdefault(code, asyncio.Lock())
        async with lock:
            table = self.store.participants.setdefault(code, {})
            order = self.store.state.setdefault(code, [])
            members = self.members.setdefault(code, set())
            old = table.get(user_id)
            if old is None and len(table) >= self.max_participants:
                await self._error(sid, ERR_FULL)
                return
            if old is not None and old["socketId"] != sid:
                await self._replace(code, old["socketId"], sid)
            stored = {**meta, "name": sanitize_name(meta.get("name"))}
            table[user_id] = {"socketId": sid, "userId": user_id, "meta": stored}
            if sid not in order:
                order.append(sid)
            # socket.data is replaced wholesale at join (spec 1.3).
            self.sockets[sid] = SocketData(code=code, user_id=user_id, meta=stored)
            members.add(sid)
            await self.sio.enter_room(sid, code)
            existing = [
                {"id": e["socketId"], "meta": e["meta"], "polite": self._polite(order, e["socketId"])}
                for e in table.values()
                if e["socketId"] != sid
            ]
            await self.sio.emit("existing-participants", existing, to=sid)
            await self.sio.emit("assigned-role", {"polite": self._polite(order, sid)}, to=sid)
            await self.sio.emit("chat-history", [], to=sid)
            await self.sio.emit(
                "user-joined", {"id": sid, "meta": stored, "polite": self._polite(order, sid)}, room=code, skip_sid=sid
            )
        self._schedule_update(code)

    @staticmethod
    def _polite(order: list[str], sid: str) -> bool:
        return not (order and order[0] == sid)

    async def _replace(self, code: str, old_sid: str, new_sid: str) -> None:
        """Same userId joined again: drop the old socket without telling anyone."""
        self.replacements.append((old_sid, new_sid))
        order = self.store.state.get(code, [])
        if old_sid in order:
            order.remove(old_sid)
        self.members.get(code, set()).discard(old_sid)
        data = self.sockets.get(old_sid)
        if data is not None:
            data.replaced = True
            await self.sio.leave_room(old_sid, code)
            await self.sio.disconnect(old_sid)

    async def _on_leave(self, sid: str, code: Any = None, *rest: Any) -> None:
        self._record("leave-call", sid, (code, *rest))
        data = self.sockets.get(sid)
        if data is not None and data.code is not None and not data.replaced:
            await self._leave(sid, data)

    async def _leave(self, sid: str, data: SocketData) -> None:
        code = data.code
        assert code is not None
        table = self.store.participants.get(code, {})
        if data.user_id is not None and table.get(data.user_id, {}).get("socketId") == sid:
            del table[data.user_id]
        if not table:
            self.store.participants.pop(code, None)
        order = self.store.state.get(code, [])
        if sid in order:
            order.remove(sid)
        if not order:
            self.store.state.pop(code, None)
        self.members.get(code, set()).discard(sid)
        data.code = None
        await self.sio.leave_room(sid, code)
        await self.sio.emit("user-left", sid, room=code, skip_sid=sid)
        self._schedule_update(code)

    async def _on_participant_state(self, sid: str, data: Any = None, *rest: Any) -> None:
        self._record("update-participant-state", sid, (data, *rest))
        sock = self.sockets.get(sid)
        if sock is None or sock.code is None:
            return
        if isinstance(data, dict):
            # Only muted and screen are stored; video is ignored (spec 1.3).
            for key in ("muted", "screen"):
                if key in data:
                    sock.meta[key] = bool(data[key])
        await self.sio.emit(
            "update-participant-state", {"peerId": sid, "muted": sock.meta.get("muted") is True}, room=sock.code
        )

    async def _on_update_meta(self, sid: str, obj: Any = None, *rest: Any) -> None:
        self._record("update-meta", sid, (obj, *rest))
        sock = self.sockets.get(sid)
        if sock is None or sock.code is None or not isinstance(obj, dict):
            return
        for key, value in obj.items():
            if key == "name":
                sock.meta["name"] = sanitize_name(value)
            elif key in ("muted", "video", "screen"):
                sock.meta[key] = bool(value)
            else:
                sock.meta[key] = value
        await self.sio.emit("participant-meta-updated", {"id": sid, "meta": sock.meta}, room=sock.code)
        self._schedule_update(sock.code)

    async def _on_signal(self, sid: str, target: Any = None, message: Any = None, *rest: Any) -> None:
        self._record("signal", sid, (target, message, *rest))
        sock = self.sockets.get(sid)
        if sock is None or sock.code is None:
            log.info("signal rejected: sender not in a meeting")
            self.rejected_signals.append((sid, str(target)))
            return
        if not isinstance(target, str) or target not in self.members.get(sock.code, set()):
            log.info("signal rejected: target not in room")
            self.rejected_signals.append((sid, str(target)))
            return
        self.relayed_signals.append((sid, target, message))
        await self.sio.emit("signal", (sid, message), to=target)

    # -- debounced participants-updated ----------------------------------------------------------

    def _schedule_update(self, code: str) -> None:
        handle = self._debounce.pop(code, None)
        if handle is not None:
            handle.cancel()
        loop = asyncio.get_running_loop()
        self._debounce[code] = loop.call_later(self.debounce_s, self._fire_update, code)

    def _fire_update(self, code: str) -> None:
        self._debounce.pop(code, None)
        task = asyncio.get_running_loop().create_task(self._send_update(code))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_update(self, code: str) -> None:
        everyone = [{"id": e["socketId"], "meta": e["meta"]} for e in self.store.participants.get(code, {}).values()]
        await self.sio.emit("participants-updated", everyone, room=code)

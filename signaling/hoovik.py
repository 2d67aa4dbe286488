"""Hoovik's meeting signaling (docs/hoovik.md) behind :class:`signaling.base.SignalingSession`.

Hoovik meetings are a full mesh relayed by a Socket.IO backend: every browser opens one
``RTCPeerConnection`` per remote participant and the backend only relays ``signal(targetId,
message)`` between sockets of the same meeting. This adapter lets the bot join such a meeting as one
more (track-less) participant without any change to Hoovik:

* It joins with ``join-call(code, meta)`` where ``meta = {name, userId, bot: true, muted: true,
  video: false}``, and keeps :attr:`HoovikSession.peers` from ``existing-participants``,
  ``user-joined``, ``participants-updated``, ``participant-meta-updated`` and ``user-left``.
* Identity: ``PeerJoined.peer_id`` is the Socket.IO id (signals are addressed to sockets); the
  participant's ``meta.userId`` (what Hoovik's host UI keys emotions by) travels as
  ``PeerJoined.user_id``. Mute state, camera state and replacement by ``userId`` follow the rules
  in :mod:`signaling.hoovik_roster`; signals are JSON strings (:mod:`signaling.hoovik_protocol`).
* After a backend restart it reconnects with exponential backoff (jitter, capped; it gives up after
  ``give_up_s``: ``Disconnected("unreachable")``) and joins again under the *same* ``userId``, so the
  backend replaces (not duplicates) the bot's entry. Peers ``existing-participants`` still lists are
  *kept* with their peer connections (a stock frontend never rejoins or re-offers after its socket
  reconnects, and its connection to the bot does not need the backend once up); only peers the list
  no longer has are dropped (``PeerLeft``).
* A Socket.IO ``disconnect`` packet means another socket joined with our ``userId`` (Hoovik's
  replacement): the session ends with ``Disconnected("replaced")``, not a fight over the identity.

python-socketio pitfalls handled here: multiple event arguments go as a *tuple* (a list is one
array argument and the join would fail as an invalid code), and our socket id is
``client.get_sid()``, not ``client.sid`` (the Engine.IO id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import socketio

from signaling.base import (
    Disconnected,
    Event,
    EventQueue,
    JoinRejected,
    PeerInfo,
    SessionClosed,
    SignalingError,
)
from signaling.hoovik_protocol import (
    JOIN_ERROR_CODES,
    MAX_SIGNAL_CHARS,
    MEETING_CODE_RE,
    MIRROR_META_KEY,
    RETRYABLE_JOIN_CODES,
    HoovikOptions,
    encode_candidate,
    encode_description,
    join_error_code,
    normalize_meeting_code,
    parse_signal,
)
from signaling.hoovik_roster import HoovikRoster

__all__ = [
    "JOIN_ERROR_CODES",
    "MAX_SIGNAL_CHARS",
    "MEETING_CODE_RE",
    "MIRROR_META_KEY",
    "RETRYABLE_JOIN_CODES",
    "HoovikOptions",
    "HoovikSession",
    "encode_candidate",
    "encode_description",
    "join_error_code",
    "normalize_meeting_code",
    "parse_signal",
]

log = logging.getLogger(__name__)


class _Client(socketio.AsyncClient):
    """An ``AsyncClient`` that remembers whether the server sent a Socket.IO ``disconnect`` packet.

    python-socketio reports both that packet and an Engine.IO close as ``"server disconnect"``; only
    the first means Hoovik kicked this socket (another socket joined with our userId), while the
    second is what a restarting backend can look like and must lead to a reconnect.
    """

    kicked = False

    async def _handle_disconnect(self, namespace: str) -> None:
        self.kicked = True
        await super()._handle_disconnect(namespace)


class HoovikSession(HoovikRoster, EventQueue):
    """One bot membership of one Hoovik meeting; survives backend restarts by rejoining.

    Socket.IO handlers only update state and queue events (they never await), so events keep the
    order the backend sent them in. ``events()`` is for a single consumer and ends with
    :class:`Disconnected`. The queue is bounded; a consumer that falls ``queue_size`` events behind
    ends the session with ``Disconnected("slow_consumer")`` rather than losing signals silently.
    """

    def __init__(self, url: str, code: str, options: HoovikOptions) -> None:
        self.url = url
        self.code = code
        self.options = options
        self._client: _Client | None = None
        self._sid = ""
        self._peers: dict[str, PeerInfo] = {}
        self._missing: dict[str, int] = {}
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=max(16, options.queue_size))
        self._final: Disconnected | None = None
        self._final_pending = False
        self._closing = False
        self._join_waiter: asyncio.Future[None] | None = None
        self._joined = False
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._mirror: dict[str, dict[str, Any]] = {}
        self._mirror_dirty = False
        self._mirror_task: asyncio.Task[None] | None = None
        self._mirror_last = -float("inf")
        self.mirror_sent_at: deque[float] = deque(maxlen=64)
        self.counters: dict[str, int] = {}
        self.joins = 0

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    async def connect(cls, url: str, meeting: str, options: HoovikOptions | None = None) -> HoovikSession:
        """Connect to the backend at ``url`` (its HTTP base), join ``meeting`` and return once
        ``existing-participants`` arrived. Raises :class:`JoinRejected` (``code`` is one of
        :data:`JOIN_ERROR_CODES`' values, ``timeout`` or ``connect_failed``)."""
        session = cls(url, normalize_meeting_code(meeting), options or HoovikOptions())
        try:
            await session._open()
        except BaseException:
            await session._drop_client()
            raise
        session._supervisor = asyncio.create_task(session._supervise(), name=f"hoovik-{session.code}")
        return session

    async def close(self) -> None:
        """Leave the meeting (``leave-call``, so others get ``user-left`` at once) and disconnect."""
        if self._closing:
            return
        self._closing = True
        client = self._client
        if client is not None and client.connected:
            with contextlib.suppress(Exception):
                await client.emit("leave-call", self.code)
                # python-engineio closes the websocket without flushing its send queue; give the
                # queued leave-call a moment to go out (the disconnect alone also removes us).
                await asyncio.wait_for(client.eio.queue.join(), 1.0)
        await self._drop_client()
        for task in (self._supervisor, self._mirror_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._finish("client_closed")

    async def __aenter__(self) -> HoovikSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- SignalingSession ------------------------------------------------------------------------

    @property
    def self_id(self) -> str:
        """Our current Socket.IO id (it changes when the session rejoins after a reconnect)."""
        return self._sid

    @property
    def user_id(self) -> str:
        return self.options.user_id

    @property
    def peers(self) -> Mapping[str, PeerInfo]:
        return dict(self._peers)

    @property
    def connected(self) -> bool:
        client = self._client
        return client is not None and bool(client.connected) and self._final is None

    @property
    def closed(self) -> bool:
        return self._final is not None

    async def send_offer(self, peer_id: str, sdp: str) -> None:
        await self._signal(peer_id, encode_description("offer", sdp))

    async def send_answer(self, peer_id: str, sdp: str) -> None:
        await self._signal(peer_id, encode_description("answer", sdp))

    async def send_candidate(self, peer_id: str, candidate: dict[str, Any] | None) -> None:
        # Browsers never send end-of-candidates on Hoovik (and would choke on a null candidate).
        if candidate is not None:
            await self._signal(peer_id, encode_candidate(candidate))

    async def send_result(self, peer_id: str, payload: dict[str, Any]) -> None:
        """Hoovik has no result relay; results reach its UI through the emotion-service endpoint.

        With ``mirror_results`` the latest result per participant is written into the bot's meta,
        coalesced to at most one ``update-meta`` per ``mirror_interval_s`` for all participants.
        """
        if not self.options.mirror_results:
            self._count("results_not_relayed")
            return
        peer = self._peers.get(peer_id)
        uid = peer.user_id if peer is not None and peer.user_id else str(payload.get("participantId") or peer_id)
        raw = payload.get("result")
        result: dict[str, Any] = raw if isinstance(raw, dict) else {}
        self._mirror[uid] = {
            "emotion": result.get("emotion"),
            "confidence": result.get("confidence"),
            "modality": result.get("modality"),
            "ts": payload.get("ts"),
        }
        self._mark_mirror_dirty()

    async def send_offer_rejected(self, peer_id: str, reason: str) -> None:
        """Hoovik's protocol has no way to refuse an offer: the stock frontend would ignore it, so
        the refusal is only counted (and logged by the bot); see docs/hoovik.md."""
        self._count("offers_rejected")

    async def announce_media(self, mic: bool, camera: bool) -> None:
        await self._emit("update-participant-state", {"muted": not mic, "video": camera})

    # -- sending ---------------------------------------------------------------------------------

    async def _signal(self, peer_id: str, message: str) -> None:
        await self._emit("signal", (peer_id, message))

    async def _emit(self, event: str, data: Any) -> bool:
        """Emit on the current socket; while reconnecting, drop (the rejoin renegotiates anyway)."""
        if self._final is not None:
            raise SessionClosed("Hoovik session is closed")
        client = self._client
        if client is None or not client.connected or not self._joined:
            self._count("sends_dropped_reconnecting")
            return False
        try:
            await client.emit(event, data)
        except socketio.exceptions.BadNamespaceError:
            self._count("sends_dropped_reconnecting")
            return False
        return True

    # -- connecting and rejoining ----------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {"name": self.options.name, "userId": self.options.user_id, "bot": True, "muted": True, "video": False}

    async def _open(self) -> None:
        """One connection attempt: connect, ``join-call``, wait for ``existing-participants``."""
        loop = asyncio.get_running_loop()
        client = _Client(reconnection=False, handle_sigint=False, logger=False, engineio_logger=False)
        self._client = client
        self._joined = False
        self._join_waiter = loop.create_future()
        self._register(client)
        opts = self.options
        auth = {"userId": opts.user_id, **dict(opts.auth or {})}
        try:
            async with asyncio.timeout(opts.join_timeout_s):
                await client.connect(
                    self.url,
                    headers=dict(opts.headers or {}),
                    auth=auth,
                    transports=list(opts.transports),
                    socketio_path=opts.socketio_path,
                    wait_timeout=opts.join_timeout_s,
                )
        except (socketio.exceptions.ConnectionError, TimeoutError) as exc:
            raise JoinRejected("connect_failed", str(exc) or "could not connect in time") from exc
        # A tuple: two arguments. A list would arrive as one array argument (see the module docstring).
        await client.emit("join-call", (self.code, self._meta()))
        try:
            async with asyncio.timeout(opts.join_timeout_s):
                await self._join_waiter
        except TimeoutError as exc:
            raise JoinRejected("timeout", "no existing-participants from the backend in time") from exc
        self._joined = True
        self.joins += 1
        log.info("joined Hoovik meeting %s as %s (socket %s)", self.code, opts.user_id, self._sid)

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def _supervise(self) -> None:
        """Wait for the connection to drop; then end the session or rejoin with backoff."""
        while True:
            await self._lost.wait()
            if self._closing:
                return
            client = self._client
            kicked = client is not None and client.kicked
            await self._drop_client()
            self._lost.clear()
            if kicked:
                log.warning("Hoovik disconnected this socket: another connection joined as %s", self.options.user_id)
                self._finish("replaced")
                return
            if not self.options.reconnect:
                self._finish("connection_lost")
                return
            if not await self._rejoin():
                return

    async def _rejoin(self) -> bool:
        delay = self.options.reconnect_delay_s
        attempt = 0
        loop = asyncio.get_running_loop()
        give_up = self.options.give_up_s
        deadline = None if give_up is None else loop.time() + give_up
        while not self._closing:
            if deadline is not None and loop.time() >= deadline:
                log.warning("Hoovik backend unreachable for %.0f s; giving up", give_up)
                self._finish("unreachable")
                return False
            attempt += 1
            # Full jitter around the delay, so that many bots do not reconnect in lockstep.
            wait = delay * random.uniform(0.5, 1.5)
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - loop.time()))
            await asyncio.sleep(wait)
            if self._closing:
                return False
            try:
                self._lost.clear()
                await self._open()
                self._count("rejoins")
                return True
            except JoinRejected as exc:
                await self._drop_client()
                log.info("rejoin attempt %d failed: %s", attempt, exc)
                if exc.code not in RETRYABLE_JOIN_CODES:
                    self._finish(exc.code)
                    return False
            except Exception as exc:
                await self._drop_client()
                log.info("rejoin attempt %d failed: %r", attempt, exc)
            delay = min(delay * 2, self.options.reconnect_delay_max_s)
        return False

    # -- incoming events -------------------------------------------------------------------------

    def _register(self, client: _Client) -> None:
        def guarded(fn: Callable[..., None]) -> Callable[..., None]:
            def handler(*args: Any) -> None:
                if client is not self._client or self._final is not None:
                    return  # a socket we already replaced, or a finished session
                try:
                    fn(*args)
                except Exception:
                    self._count("handler_errors")
                    log.exception("handling a Hoovik event failed")

            return handler

        client.on("existing-participants", guarded(self._on_existing))
        client.on("user-joined", guarded(self._on_user_joined))
        client.on("participants-updated", guarded(self._on_participants_updated))
        client.on("participant-meta-updated", guarded(self._on_meta_updated))
        client.on("update-participant-state", guarded(self._on_participant_state))
        client.on("user-left", guarded(self._on_user_left))
        client.on("signal", guarded(self._on_signal))
        client.on("error", guarded(self._on_error))
        client.on("disconnect", guarded(self._on_disconnect))

    def _on_existing(self, entries: Any = None, *_: Any) -> None:
        client = self._client
        assert client is not None
        waiter = self._join_waiter
        if waiter is None or waiter.done():
            self._on_participants_updated(entries)  # a repeated list: merge it like a snapshot
            return
        self._sid = str(client.get_sid("/") or "")
        # A (re)join. Peers still listed keep their state and their peer connection (a stock
        # browser does not re-join after a reconnect, so its old connection is all there is);
        # peers no longer listed left during the outage. A browser that re-joined appears under a
        # new socket id with a known userId, which _upsert treats as a replacement.
        seen: set[str] = set()
        for entry in entries if isinstance(entries, list) else []:
            sid = self._upsert(entry)
            if sid is not None:
                seen.add(sid)
        for sid in list(self._peers):
            if sid not in seen:
                self._remove_peer(sid)
        self._missing.clear()
        waiter.set_result(None)

    def _on_user_joined(self, entry: Any = None, *_: Any) -> None:
        self._upsert(entry)

    def _on_meta_updated(self, entry: Any = None, *_: Any) -> None:
        self._upsert(entry)

    def _on_user_left(self, sid: Any = None, *_: Any) -> None:
        if isinstance(sid, dict):  # tolerate {id} although the backend sends the bare id
            sid = sid.get("id")
        if isinstance(sid, str):
            self._remove_peer(sid)

    def _on_signal(self, from_id: Any = None, message: Any = None, *_: Any) -> None:
        if not isinstance(from_id, str) or not from_id or from_id == self._sid:
            self._count("signals_ignored")
            return
        try:
            event = parse_signal(from_id, message)
        except ValueError as exc:
            self._count("bad_signals")
            log.info("ignoring bad signal from %s: %s", from_id, exc)
            return
        if event is not None:
            self._put(event)

    def _on_error(self, message: Any = None, *_: Any) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        code = join_error_code(text)
        waiter = self._join_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(JoinRejected(code, text))
            return
        self._put(SignalingError(code, text))

    def _on_disconnect(self, reason: Any = None, *_: Any) -> None:
        waiter = self._join_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(JoinRejected("disconnected", f"disconnected while joining ({reason})"))
        if not self._closing:
            log.info("Hoovik connection lost (%s)", reason)
            self._lost.set()

    # -- peer bookkeeping (HoovikRoster's hooks) --------------------------------------------------

    def _peer_removed(self, peer: PeerInfo) -> None:
        if peer.user_id is not None and self._mirror.pop(peer.user_id, None) is not None:
            self._mark_mirror_dirty()

    def _put(self, event: Event) -> None:
        if self._final is not None:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._count("queue_overflow")
            log.error("signaling consumer is %d events behind; ending the session", self._queue.qsize())
            self._finish("slow_consumer")
            asyncio.get_running_loop().create_task(self._drop_client())

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    # -- update-meta mirroring -------------------------------------------------------------------

    def _mark_mirror_dirty(self) -> None:
        self._mirror_dirty = True
        if self._mirror_task is None or self._mirror_task.done():
            self._mirror_task = asyncio.get_running_loop().create_task(self._mirror_loop())

    async def _mirror_loop(self) -> None:
        """Coalesce: one ``update-meta`` with every participant's latest result per interval."""
        while self._mirror_dirty and not self._closing:
            wait = self._mirror_last + self.options.mirror_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._mirror_dirty = False
            self._mirror_last = time.monotonic()
            try:
                sent = await self._emit("update-meta", {MIRROR_META_KEY: dict(self._mirror)})
            except SessionClosed:
                return
            if sent:
                self.mirror_sent_at.append(self._mirror_last)
                self._count("mirror_updates")

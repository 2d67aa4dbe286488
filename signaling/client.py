"""Client for the native signaling protocol: a :class:`~signaling.base.SignalingSession` over aiohttp.

Besides the session this module holds the two REST helpers (create a room, mint an invite) and the
conversion between aiortc's ``RTCIceCandidate`` and the browser's ``RTCIceCandidate.toJSON()`` dict
that travels on the wire, so that browsers and the bot can trickle candidates to each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp
from yarl import URL

from signaling.base import (
    JOIN_REFUSED_CODES,
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


class SignalingHTTPError(Exception):
    """A REST call was refused; ``code`` is the server's ``error`` field."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _ws_url(url: str) -> URL:
    """Accept ``ws(s)://host/ws`` as is; turn ``http(s)://host`` into ``ws(s)://host/ws``."""
    u = URL(url)
    if u.scheme in ("http", "https"):
        u = u.with_scheme("ws" if u.scheme == "http" else "wss")
    if u.path in ("", "/"):
        u = u.with_path("/ws")
    return u


def _http_base(url: str) -> URL:
    u = URL(url)
    if u.scheme in ("ws", "wss"):
        u = u.with_scheme("http" if u.scheme == "ws" else "https")
    return u.with_path("/").with_query(None)


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
            self._final = Disconnected(reason)
            try:
                self._queue.put_nowait(self._final)
            except asyncio.QueueFull:
                self._final_pending = True

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


# --- REST helpers -------------------------------------------------------------------------------


async def _rest(
    session: aiohttp.ClientSession | None,
    method: str,
    url: URL,
    *,
    body: dict[str, Any] | None = None,
    bearer: str | None = None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    http = session if session is not None else aiohttp.ClientSession()
    try:
        async with http.request(method, url, json=body, headers=headers) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = None
            if resp.status >= 400 or not isinstance(data, dict):
                info = data if isinstance(data, dict) else {}
                raise SignalingHTTPError(
                    resp.status, str(info.get("error", "http_error")), str(info.get("message", resp.reason))
                )
            return data
    finally:
        if session is None:
            await http.close()


async def create_room(
    http_url: str,
    name: str | None = None,
    *,
    session: aiohttp.ClientSession | None = None,
    room_key: str | None = None,
) -> tuple[str, str]:
    """``POST /rooms``; return ``(room_id, host_token)``."""
    data = await _rest(session, "POST", _http_base(http_url) / "rooms", body={"name": name or ""}, bearer=room_key)
    return str(data["roomId"]), str(data["hostToken"])


async def mint_invite(
    http_url: str,
    room: str,
    host_token: str,
    role: Role,
    ttl_s: float = 3600.0,
    participant_id: str | None = None,
    *,
    session: aiohttp.ClientSession | None = None,
) -> str:
    """``POST /rooms/{room}/invites`` with the host token; return the new token."""
    body: dict[str, Any] = {"role": role, "ttlSeconds": ttl_s}
    if participant_id is not None:
        body["participantId"] = participant_id
    url = _http_base(http_url) / "rooms" / room / "invites"
    data = await _rest(session, "POST", url, body=body, bearer=host_token)
    return str(data["token"])


# --- ICE candidates on the wire -----------------------------------------------------------------


def candidate_to_json(candidate: RTCIceCandidate) -> dict[str, Any]:
    """aiortc candidate → the browser's ``RTCIceCandidate.toJSON()`` shape."""
    return {
        "candidate": "candidate:" + candidate_to_sdp(candidate),
        "sdpMid": candidate.sdpMid,
        "sdpMLineIndex": candidate.sdpMLineIndex,
    }


def candidate_from_json(data: Mapping[str, Any] | None) -> RTCIceCandidate | None:
    """Wire dict → aiortc candidate; ``None`` for end-of-candidates (``null`` or an empty
    ``candidate`` string, which is how browsers spell it). Raises ``ValueError`` on garbage."""
    if data is None:
        return None
    line = data.get("candidate") or ""
    if not isinstance(line, str):
        raise ValueError("candidate must be a string")
    line = line.strip().removeprefix("a=").removeprefix("candidate:")
    if not line:
        return None
    try:
        candidate = candidate_from_sdp(line)
    except (AssertionError, ValueError, IndexError) as exc:
        raise ValueError(f"not an ICE candidate line: {line[:80]!r}") from exc
    candidate.sdpMid = data.get("sdpMid")
    candidate.sdpMLineIndex = data.get("sdpMLineIndex")
    return candidate


# --- staying in the room ------------------------------------------------------------------------

TERMINAL_REASONS = JOIN_REFUSED_CODES | {"client_closed", "replaced", "room_not_found"}
"""Ends of a connection (close reasons or join refusals) that reconnecting cannot fix: someone took
our id over, the room is gone, or the token will never be accepted. Anything else (a lost socket,
``shutting_down``, a refused TCP connection, ``room_full``, ``rate_limited``…) is retried."""


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff with jitter for rejoining after the signaling connection dropped."""

    delay_s: float = 1.0
    """The first wait; doubled after each failed attempt up to ``delay_max_s``."""
    delay_max_s: float = 30.0
    jitter: float = 0.5
    """Each wait is drawn from ``delay * [1 - jitter, 1 + jitter]`` so bots do not retry in lockstep."""
    give_up_s: float | None = 300.0
    """End the session with ``Disconnected("unreachable")`` after this long without a connection
    (``None``: retry forever)."""

    def delays(self) -> Iterator[float]:
        delay = self.delay_s
        while True:
            yield max(0.0, delay * random.uniform(1.0 - self.jitter, 1.0 + self.jitter))
            delay = min(delay * 2, self.delay_max_s)


class ReconnectingClient(EventQueue):
    """A :class:`~signaling.base.SignalingSession` that survives losing the signaling server.

    It wraps one :class:`SignalingClient` at a time. When the connection drops for a reason that
    may heal (the server was killed or restarted, the network broke), it reconnects with
    :class:`ReconnectPolicy`'s backoff and joins again under the same participant id with the last
    ``resumeKey``, so the rejoin replaces its own stale membership. Meanwhile nothing is torn down:
    peers known before stay known (no :class:`PeerLeft` for a member the new ``welcome`` does not
    list — it may not have reconnected yet, and its peer connection may still work), and sends are
    dropped and counted (``counters["sends_dropped_reconnecting"]``) instead of raising.

    The session ends — one :class:`Disconnected` — only for a reason in :data:`TERMINAL_REASONS`,
    ``unreachable`` (``give_up_s`` passed without a connection), or ``client_closed``.
    """

    def __init__(
        self,
        connect: Callable[[str | None], Awaitable[SignalingClient]],
        policy: ReconnectPolicy | None = None,
        queue_size: int = 1024,
    ) -> None:
        self._connect = connect
        self.policy = policy or ReconnectPolicy()
        self._client: SignalingClient | None = None
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self._final: Disconnected | None = None
        self._final_pending = False
        self._closing = False
        self._pump: asyncio.Task[None] | None = None
        self.counters: dict[str, int] = {}
        self.joins = 0

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
        policy: ReconnectPolicy | None = None,
        **kwargs: Any,
    ) -> ReconnectingClient:
        """Join like :meth:`SignalingClient.connect`; a first join that fails for a retryable reason
        is retried with the policy's backoff until ``give_up_s`` (then ``JoinRejected("unreachable")``).
        Terminal refusals (a bad token, an unknown room) raise :class:`JoinRejected` at once."""

        async def connect(resume_key: str | None) -> SignalingClient:
            return await SignalingClient.connect(
                url, room, token, participant_id, name, role, resume_key=resume_key, **kwargs
            )

        self = cls(connect, policy)
        client = await self._attempt_until_connected(None)
        if client is None:
            raise JoinRejected("unreachable", f"could not join within {self.policy.give_up_s} s")
        self._adopt(client)
        self._pump = asyncio.create_task(self._run(), name=f"signaling-reconnect-{client.self_id}")
        return self

    # -- SignalingSession --

    @property
    def self_id(self) -> str:
        return self._client.self_id if self._client is not None else ""

    @property
    def peers(self) -> Mapping[str, PeerInfo]:
        return self._client.peers if self._client is not None else {}

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._client.closed and self._final is None

    result_relay_reaches_hosts = True
    """As :attr:`SignalingClient.result_relay_reaches_hosts` (while :attr:`connected`)."""

    @property
    def resume_key(self) -> str | None:
        return self._client.resume_key if self._client is not None else None

    async def send_offer(self, peer_id: str, sdp: str) -> None:
        await self._send("send_offer", peer_id, sdp)

    async def send_answer(self, peer_id: str, sdp: str) -> None:
        await self._send("send_answer", peer_id, sdp)

    async def send_candidate(self, peer_id: str, candidate: dict[str, Any] | None) -> None:
        await self._send("send_candidate", peer_id, candidate)

    async def send_result(self, peer_id: str, payload: dict[str, Any]) -> None:
        await self._send("send_result", peer_id, payload)

    async def send_offer_rejected(self, peer_id: str, reason: str) -> None:
        await self._send("send_offer_rejected", peer_id, reason)

    async def announce_media(self, mic: bool, camera: bool) -> None:
        await self._send("announce_media", mic, camera)

    async def close(self) -> None:
        """Leave the room for good (no reconnect) and end the events with ``client_closed``."""
        if self._closing:
            return
        self._closing = True
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
        if self._client is not None:
            await self._client.close()
        self._finish("client_closed")

    async def __aenter__(self) -> ReconnectingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals --

    async def _send(self, method: str, *args: Any) -> None:
        if self._final is not None:
            raise SessionClosed("signaling session is closed")
        client = self._client
        if client is None or client.closed:
            self._count("sends_dropped_reconnecting")
            return
        try:
            await getattr(client, method)(*args)
        except SessionClosed:
            self._count("sends_dropped_reconnecting")

    def _adopt(self, client: SignalingClient) -> None:
        self._client = client
        self.joins += 1

    async def _run(self) -> None:
        while True:
            client = self._client
            assert client is not None
            reason = "connection_lost"
            async for event in client.events():
                if isinstance(event, Disconnected):
                    reason = event.reason
                    break
                await self._queue.put(event)  # a stalled consumer stalls the reader (backpressure)
            if self._closing:
                return
            await client.close()
            if reason in TERMINAL_REASONS:
                log.warning("signaling session ended: %s", reason)
                self._finish(reason)
                return
            log.warning("signaling connection lost (%s); reconnecting", reason)
            self._count("disconnects")
            new = await self._attempt_until_connected(client.resume_key)
            if new is None:
                return
            self._adopt(new)
            self._count("rejoins")
            log.warning("signaling: rejoined room %s as %s", new.room, new.self_id)

    async def _attempt_until_connected(self, resume_key: str | None) -> SignalingClient | None:
        """Connect with backoff; ``None`` after a terminal refusal or the give-up time (the session
        has then been finished with that reason)."""
        loop = asyncio.get_running_loop()
        give_up = self.policy.give_up_s
        deadline = None if give_up is None else loop.time() + give_up
        delays = self.policy.delays()
        first = resume_key is None and self.joins == 0
        attempt = 0
        while not self._closing:
            if not first or attempt > 0:
                wait = next(delays)
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - loop.time()))
                await asyncio.sleep(wait)
            attempt += 1
            try:
                return await self._connect(resume_key)
            except JoinRejected as exc:
                if exc.code in TERMINAL_REASONS:
                    if first:
                        raise
                    log.warning("signaling: rejoin refused: %s", exc)
                    self._finish(exc.code)
                    return None
                log.info("signaling: join attempt %d failed: %s", attempt, exc)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("signaling: connection attempt %d failed: %r", attempt, exc)
            if deadline is not None and loop.time() >= deadline:
                log.warning("signaling: no connection for %.0f s; giving up", give_up)
                self._finish("unreachable")
                return None
        return None

    def _finish(self, reason: str) -> None:
        if self._final is None:
            self._final = Disconnected(reason)
            try:
                self._queue.put_nowait(self._final)
            except asyncio.QueueFull:
                self._final_pending = True

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

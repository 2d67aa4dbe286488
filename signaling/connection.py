"""One WebSocket connection's two halves: the bounded :class:`Outbox` (its only writer) and the
:class:`Inbox` (rate limit, cooperative reading, parsing). Split out of :mod:`signaling.server`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from signaling.config import ServerConfig, ServerStats
from signaling.limits import MessageLimiter, Verdict
from signaling.messages import (
    ClientMessage,
    CloseCode,
    ErrorCode,
    ErrorMessage,
    ProtocolError,
    ServerMessage,
    parse_client_message,
    to_json,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _CloseRequest:
    code: int
    reason: str


class Outbox:
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


class Inbox:
    """Reads one connection: rate limit first, then parse; lets other connections run in bursts.

    aiohttp hands out frames already buffered without suspending, so a client that pipelines
    thousands of messages would otherwise be served in one go while the writers of everyone it
    sends to never run, and their outboxes overflow. Every ``yield_every_messages`` frames this
    yields to the loop; the rate limit bounds what one connection can make the server relay.
    """

    def __init__(self, ws: web.WebSocketResponse, out: Outbox, config: ServerConfig, stats: ServerStats) -> None:
        self._ws = ws
        self._out = out
        self._config = config
        self._stats = stats
        self._since_yield = 0
        self._limiter = None
        if config.msg_rate_per_s is not None:
            self._limiter = MessageLimiter(
                config.msg_rate_per_s,
                config.msg_burst,
                config.msg_bytes_per_s,
                max(config.msg_bytes_burst, config.max_message_bytes),
                config.msg_abuse_close_after,
                config.rate_limited_notice_s,
            )

    async def next(self, timeout: float | None) -> ClientMessage | None:
        """Next accepted client message; None when the socket is done (closed, error, too large)."""
        out = self._out
        while True:
            self._since_yield += 1
            if self._since_yield >= self._config.yield_every_messages:
                self._since_yield = 0
                await asyncio.sleep(0)
            msg = await self._ws.receive(timeout=timeout)
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return None
            self._stats.messages_received += 1
            if out.closing:
                continue  # already being closed: read and discard until the close completes
            if self._limiter is not None:
                verdict = self._limiter.admit(len(msg.data))
                if verdict is not Verdict.ACCEPT:
                    self._stats.messages_rate_limited += 1
                    if verdict is Verdict.DROP_AND_TELL:
                        out.error(ErrorCode.RATE_LIMITED, "too many messages: this one and any more are dropped")
                    elif verdict is Verdict.CLOSE:
                        self._stats.rate_limit_closed += 1
                        out.error(ErrorCode.RATE_LIMITED, "too many messages for too long: closing")
                        out.close(CloseCode.RATE_LIMITED, ErrorCode.RATE_LIMITED)
                        return None
                    continue
            try:
                return parse_client_message(msg.data, self._config.max_message_bytes)
            except ProtocolError as exc:
                out.error(exc.code, exc.detail)
                if exc.code == ErrorCode.TOO_LARGE:
                    out.close(CloseCode.TOO_LARGE, ErrorCode.TOO_LARGE)
                    return None

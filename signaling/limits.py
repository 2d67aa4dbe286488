"""Abuse limits of the signaling server: token buckets, per-address connection caps, a guarded site.

- :class:`MessageLimiter` — one per WebSocket: a message bucket and a byte bucket; over-limit
  messages are dropped (with a ``rate_limited`` notice), and a sender that keeps flooding is closed.
- :class:`KeyedLimiter` — per client address, for ``POST /rooms`` and bot launches (429).
- :class:`ConnectionGuard` + :class:`GuardedSite` — caps open TCP connections in all and per
  address *before* aiohttp parses anything, and closes connections whose request headers do not
  arrive within ``header_timeout_s`` (aiohttp's keep-alive timer, armed at connection start).

``docs/security.md`` lists every limit and its default.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; starts full."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float, n: float = 1.0) -> bool:
        self.refill(now)
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def retry_after(self, now: float, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are available."""
        self.refill(now)
        missing = n - self.tokens
        return 0.0 if missing <= 0 else (math.inf if self.rate <= 0 else missing / self.rate)


class Verdict(Enum):
    ACCEPT = "accept"
    DROP = "drop"
    DROP_AND_TELL = "drop_and_tell"
    CLOSE = "close"


class MessageLimiter:
    """Inbound rate limit of one connection.

    A message is accepted when both the message bucket and the byte bucket have room. Otherwise it
    is dropped; the first drop (and then at most one per ``notice_s``) is ``DROP_AND_TELL`` so the
    sender learns why. Drops add to a debt that is forgiven at the sustained rate; once the debt
    exceeds ``close_after`` the verdict is ``CLOSE`` — a client that merely bursts is slowed down,
    one that keeps flooding long after being told is cut off.
    """

    __slots__ = ("_bytes", "_clock", "_close_after", "_debt", "_debt_at", "_forgive", "_msgs", "_notice_s", "_told_at")

    def __init__(
        self,
        rate: float,
        burst: int,
        bytes_rate: float,
        bytes_burst: int,
        close_after: int,
        notice_s: float,
        clock: Clock = time.monotonic,
    ) -> None:
        now = clock()
        self._msgs = TokenBucket(rate, burst, now)
        self._bytes = TokenBucket(bytes_rate, bytes_burst, now)
        self._close_after = close_after
        self._notice_s = notice_s
        self._forgive = rate
        self._debt = 0.0
        self._debt_at = now
        self._told_at = -math.inf
        self._clock = clock

    def admit(self, size: int) -> Verdict:
        now = self._clock()
        self._msgs.refill(now)
        self._bytes.refill(now)
        if self._msgs.tokens >= 1 and self._bytes.tokens >= min(size, self._bytes.capacity):
            self._msgs.tokens -= 1
            self._bytes.tokens -= min(size, self._bytes.capacity)
            return Verdict.ACCEPT
        self._debt = max(0.0, self._debt - (now - self._debt_at) * self._forgive) + 1
        self._debt_at = now
        if self._debt > self._close_after:
            return Verdict.CLOSE
        if now - self._told_at >= self._notice_s:
            self._told_at = now
            return Verdict.DROP_AND_TELL
        return Verdict.DROP


def client_key(peer: Any) -> str:
    """The address a limit is kept for: the IPv4 address, or the IPv6 /64 (one subscriber)."""
    host = peer[0] if isinstance(peer, tuple) and peer else peer
    if not isinstance(host, str):
        return "unknown"
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def request_key(request: web.Request) -> str:
    transport = request.transport
    return client_key(transport.get_extra_info("peername") if transport is not None else None)


class KeyedLimiter:
    """One :class:`TokenBucket` per key (client address), at most ``max_keys`` remembered."""

    def __init__(self, rate: float, burst: int, max_keys: int, clock: Clock = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._max_keys = max(1, max_keys)
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, key: str) -> float | None:
        """Take one token for ``key``: None when allowed, else the seconds to wait."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.take(now):
            return None
        return max(bucket.retry_after(now), 0.001)


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(min(seconds, 86400.0))))


class ConnectionGuard:
    """Counts open TCP connections in all and per client address."""

    def __init__(self, max_total: int, max_per_key: int, on_refuse: Callable[[], None] | None = None) -> None:
        self.max_total = max_total
        self.max_per_key = max_per_key
        self.total = 0
        self.per_key: dict[str, int] = {}
        self._on_refuse = on_refuse

    def acquire(self, key: str) -> int | None:
        """None when admitted; else the HTTP status to refuse with (429 per address, 503 in all)."""
        if self.total >= self.max_total:
            status: int | None = 503
        elif self.per_key.get(key, 0) >= self.max_per_key:
            status = 429
        else:
            self.total += 1
            self.per_key[key] = self.per_key.get(key, 0) + 1
            return None
        if self._on_refuse is not None:
            self._on_refuse()
        return status

    def release(self, key: str) -> None:
        self.total -= 1
        left = self.per_key.get(key, 1) - 1
        if left > 0:
            self.per_key[key] = left
        else:
            self.per_key.pop(key, None)


_REFUSALS = {
    429: b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 10\r\n",
    503: b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\n",
}


class _GuardedHandler(RequestHandler):
    """aiohttp's protocol, admitted by a :class:`ConnectionGuard` before it sees a byte."""

    __slots__ = ("_guard", "_guard_key")

    def __init__(self, manager: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._guard_key: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        key = client_key(transport.get_extra_info("peername"))
        refused = self._guard.acquire(key)
        if refused is not None:
            log.warning("refusing a connection from %s (%d)", key, refused)
            assert isinstance(transport, asyncio.Transport)
            transport.write(_REFUSALS[refused] + b"Connection: close\r\nContent-Length: 0\r\n\r\n")
            transport.close()
            return
        self._guard_key = key
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        key, self._guard_key = self._guard_key, None
        if key is None:
            return  # refused: aiohttp never saw this connection
        self._guard.release(key)
        super().connection_lost(exc)


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionGuard`.

    ``keepalive_timeout`` is aiohttp's timer that closes a connection waiting for a request; it is
    armed when the connection opens, so it is also the header (slowloris) timeout.
    """

    __slots__ = ("_guard", "_handler_kwargs", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, guard: ConnectionGuard, **handler_kwargs: Any
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._guard = guard
        self._handler_kwargs = handler_kwargs

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        manager = self._runner.server
        assert manager is not None
        guard, kwargs = self._guard, self._handler_kwargs

        def protocol() -> _GuardedHandler:
            return _GuardedHandler(manager, guard=guard, loop=loop, **kwargs)

        self._server = await loop.create_server(protocol, self._host, self._port, reuse_address=True)


def file_limit_cap(requested: int, reserve: int = 64) -> int:
    """``requested``, lowered so that open connections never exhaust the process's file limit."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return requested
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return requested
    return max(1, min(requested, soft - reserve))

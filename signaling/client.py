"""Client for the native signaling protocol: a :class:`~signaling.base.SignalingSession` over aiohttp.

:class:`SignalingClient` (one membership, :mod:`signaling.session`) and the REST helpers
(:mod:`signaling.rest_client`) are re-exported here; this module adds :class:`ReconnectingClient`,
which is what ``hoovik-bot join`` uses to survive signaling restarts.
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

from signaling.base import (
    JOIN_REFUSED_CODES,
    Disconnected,
    Event,
    EventQueue,
    JoinRejected,
    PeerInfo,
    Role,
    SessionClosed,
)
from signaling.rest_client import SignalingHTTPError, create_room, mint_invite
from signaling.session import SignalingClient

__all__ = [
    "TERMINAL_REASONS",
    "ReconnectPolicy",
    "ReconnectingClient",
    "SignalingClient",
    "SignalingHTTPError",
    "create_room",
    "mint_invite",
]

log = logging.getLogger(__name__)

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

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

"""The signaling server's limits and counters (re-exported by :mod:`signaling.server`).

Every default is the production value; ``docs/security.md`` explains what each limit defends.
"""

from __future__ import annotations

from dataclasses import dataclass

from signaling.messages import DEFAULT_MAX_MESSAGE_BYTES

DEFAULT_BOT_IDS = frozenset({"hoovik-bot"})


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
    state_file: str | None = None
    """If set, the rooms (id, name, creation time; never members or tokens) are kept in this JSON
    file, so a restarted server with the same secret still knows them (``serve --state FILE``)."""

    # -- identity --
    bot_ids: frozenset[str] = DEFAULT_BOT_IDS
    """Participant ids only a bot token may join as (``id_reserved`` for anyone else)."""

    # -- per-connection inbound WebSocket rate limit (token buckets) --
    msg_rate_per_s: float | None = 50.0
    """Sustained messages per second a connection may send; None disables the limit."""
    msg_burst: int = 200
    """Messages a connection may send at once (a joiner's offers and trickled candidates)."""
    msg_bytes_per_s: float = 512 * 1024
    msg_bytes_burst: int = 2 * 1024 * 1024
    """Byte budget next to the message budget (must hold at least one ``max_message_bytes``)."""
    msg_abuse_close_after: int = 1000
    """Over-limit messages (forgiven at ``msg_rate_per_s``) after which the sender is closed."""
    rate_limited_notice_s: float = 1.0
    """At most one ``rate_limited`` error per this interval (the notice must not become a flood)."""
    yield_every_messages: int = 16
    """Let the other connections' writers run after this many frames read back to back."""

    # -- per client address (IPv4 address or IPv6 /64) --
    rooms_burst_per_ip: int = 30
    rooms_per_ip_per_s: float = 0.5
    """``POST /rooms``: 30 at once, then one every 2 s per address; beyond: 429 + Retry-After."""
    bot_launches_burst_per_ip: int = 5
    bot_launches_per_ip_per_s: float = 1 / 30
    """``POST /rooms/{room}/bot``: 5 at once, then one every 30 s per address."""
    rate_limit_tracked_ips: int = 10_000
    """Addresses remembered by each HTTP limiter (least recently seen forgotten first)."""

    # -- connections --
    max_connections: int = 1000
    """Open TCP connections in all (also lowered to the process's file limit minus a reserve)."""
    max_connections_per_ip: int = 100
    header_timeout_s: float = 10.0
    """A connection must complete its request headers within this; also the keep-alive idle time."""
    body_timeout_s: float = 10.0
    """A request body (``POST``) must arrive completely within this (else 408)."""


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
    messages_received: int = 0
    messages_rate_limited: int = 0
    rate_limit_closed: int = 0
    http_rate_limited: int = 0
    connections_refused: int = 0

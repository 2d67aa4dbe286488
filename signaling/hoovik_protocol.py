"""Hoovik's meeting protocol on the wire: meeting codes, the backend's error strings, the JSON
signals browsers exchange, and the options of a :class:`~signaling.hoovik.HoovikSession`.

Signals are JSON *strings* (``{"description": {type, sdp}}`` or ``{"candidate": {...}}``), both
ways, because the browser ``JSON.parse``-s them. Pure functions, no I/O; docs/hoovik.md describes
the protocol.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from signaling.base import Event, JoinRejected, RemoteAnswer, RemoteCandidate, RemoteOffer

__all__ = [
    "JOIN_ERROR_CODES",
    "MAX_SIGNAL_CHARS",
    "MEETING_CODE_RE",
    "MIRROR_META_KEY",
    "RETRYABLE_JOIN_CODES",
    "HoovikOptions",
    "encode_candidate",
    "encode_description",
    "join_error_code",
    "normalize_meeting_code",
    "parse_signal",
]

MEETING_CODE_RE = re.compile(r"^[A-Z0-9-]{3,32}$")

# The backend's error strings (the ``error`` event's text; docs/hoovik.md, "Joining and presence")
# and the short codes the bot reports them under.
JOIN_ERROR_CODES: dict[str, str] = {
    "Invalid meeting code": "invalid_code",
    "Room does not exist. Please create it first.": "room_not_found",
    "Room is full": "room_full",
    "Meeting service temporarily unavailable. Please try again.": "unavailable",
    "Failed to join call": "join_failed",
}
# Join failures worth retrying during a reconnect (a backend that is still starting up answers
# "temporarily unavailable"); the others will not change by waiting.
RETRYABLE_JOIN_CODES = frozenset({"unavailable", "join_failed", "timeout", "connect_failed", "disconnected"})

MAX_SIGNAL_CHARS = 1_000_000
"""Signals larger than this are dropped before parsing; a real SDP is a few kilobytes."""

MIRROR_META_KEY = "emotions"
"""The bot's own ``meta`` key that ``update-meta`` mirroring writes (``{userId: latest result}``)."""


def normalize_meeting_code(code: str) -> str:
    """Trim and upper-case like the backend does; raise :class:`JoinRejected` when it cannot be valid."""
    normalized = code.strip().upper()
    if not MEETING_CODE_RE.match(normalized):
        raise JoinRejected("invalid_code", "Invalid meeting code")
    return normalized


def join_error_code(message: str) -> str:
    """The short code for one of the backend's ``error`` strings (``server_error`` for others)."""
    return JOIN_ERROR_CODES.get(message.strip(), "server_error")


def encode_description(kind: str, sdp: str) -> str:
    """A session description as the JSON string the browser's ``handleSignal`` parses."""
    return json.dumps({"description": {"type": kind, "sdp": sdp}}, separators=(",", ":"))


def encode_candidate(candidate: Mapping[str, Any]) -> str:
    """A candidate in ``RTCIceCandidate.toJSON()`` shape as the JSON string browsers send."""
    return json.dumps({"candidate": dict(candidate)}, separators=(",", ":"))


def parse_signal(from_id: str, message: Any) -> Event | None:
    """One relayed ``signal`` message → an event; ``None`` for what the bot does not act on.

    Raises ``ValueError`` on a message that is not a signal at all. Browsers send JSON strings; a
    decoded object is accepted too, so that a client that skips ``JSON.stringify`` still works.
    """
    if isinstance(message, str):
        if len(message) > MAX_SIGNAL_CHARS:
            raise ValueError(f"signal larger than {MAX_SIGNAL_CHARS} characters")
        try:
            message = json.loads(message)
        except ValueError as exc:
            raise ValueError(f"signal is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ValueError("signal is not an object")
    if "description" in message:
        desc = message["description"]
        if not isinstance(desc, dict) or not isinstance(desc.get("sdp", ""), str):
            raise ValueError("description must be {type, sdp}")
        kind, sdp = desc.get("type"), desc.get("sdp") or ""
        if kind == "offer":
            return RemoteOffer(from_id, sdp)
        if kind == "answer":
            return RemoteAnswer(from_id, sdp)
        return None  # rollback / pranswer: nothing for an answer-only peer to do
    if "candidate" in message:
        cand = message["candidate"]
        if cand is None:
            return RemoteCandidate(from_id, None)
        if not isinstance(cand, dict):
            raise ValueError("candidate must be an object")
        line = cand.get("candidate")
        if line is not None and not isinstance(line, str):
            raise ValueError("candidate.candidate must be a string")
        return RemoteCandidate(from_id, None if not line else dict(cand))
    raise ValueError("signal has neither description nor candidate")


@dataclass(frozen=True)
class HoovikOptions:
    """How the bot appears in, and stays in, a Hoovik meeting."""

    user_id: str = "hoovik-bot"
    name: str = "Hoovik Bot"
    socketio_path: str = "socket.io"
    transports: tuple[str, ...] = ("websocket",)
    join_timeout_s: float = 10.0
    reconnect: bool = True
    reconnect_delay_s: float = 1.0
    reconnect_delay_max_s: float = 30.0
    give_up_s: float | None = 300.0
    """End the session with ``Disconnected("unreachable")`` after this long without rejoining
    (``None``: keep trying forever)."""
    mirror_results: bool = False
    """Write each participant's latest result into the bot's meta (``update-meta``); off by default
    because every update is broadcast to the whole room (``participant-meta-updated`` plus a debounced
    ``participants-updated`` carrying every member's meta) and persisted in Mongo and Redis."""
    mirror_interval_s: float = 1.0
    queue_size: int = 4096
    auth: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None

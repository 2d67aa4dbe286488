"""The signaling interface the bot talks to, independent of any wire protocol.

The bot must not care whether it reached a room through our native WebSocket protocol
(:mod:`signaling.client`) or through Hoovik's Socket.IO protocol (:mod:`signaling.hoovik`). Both produce the
same event dataclasses and implement :class:`SignalingSession`, so ``bot/`` depends only on this
module. Nothing here imports aiohttp, aiortc or any model code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

Role: TypeAlias = Literal["host", "participant", "bot"]
"""Who a member is. Hosts create rooms and see every result; bots never send media."""

ROLES: tuple[Role, ...] = ("host", "participant", "bot")


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the session currently knows about one other member of the room."""

    peer_id: str
    name: str
    role: Role
    mic: bool = False
    camera: bool = False
    user_id: str | None = None
    """The member's stable identity when it differs from ``peer_id`` (Hoovik: ``meta.userId``, while
    ``peer_id`` is the Socket.IO id that signals are addressed to). ``None``: ``peer_id`` is stable."""


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerJoined:
    """A member entered the room (also emitted once per member already present at join time).

    ``user_id`` (optional, added for Hoovik) is the identity results are reported under; ``peer_id``
    stays the address for WebRTC signaling. ``None`` means the two are the same.
    """

    peer_id: str
    name: str
    role: Role
    mic: bool
    camera: bool
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class PeerLeft:
    """A member left, disconnected, or was replaced by a newer connection with the same id."""

    peer_id: str


@dataclass(frozen=True, slots=True)
class MediaState:
    """A member announced whether its microphone and camera are on."""

    peer_id: str
    mic: bool
    camera: bool


@dataclass(frozen=True, slots=True)
class RemoteOffer:
    """An SDP offer addressed to us."""

    peer_id: str
    sdp: str


@dataclass(frozen=True, slots=True)
class RemoteAnswer:
    """An SDP answer addressed to us."""

    peer_id: str
    sdp: str


@dataclass(frozen=True, slots=True)
class RemoteCandidate:
    """A trickled ICE candidate in the browser's ``RTCIceCandidate.toJSON()`` shape.

    ``None`` means end-of-candidates.
    """

    peer_id: str
    candidate: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ResultRelay:
    """A bot's result routed through the signaling server (the fallback for peers without a data
    channel). ``about`` is the participant the result describes."""

    from_id: str
    about: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SignalingError:
    """The server refused something we sent; the session stays open."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The session ended. Always the last event; ``reason`` is a short code such as ``replaced``."""

    reason: str


Event: TypeAlias = (
    PeerJoined
    | PeerLeft
    | MediaState
    | RemoteOffer
    | RemoteAnswer
    | RemoteCandidate
    | ResultRelay
    | SignalingError
    | Disconnected
)


# --- errors -------------------------------------------------------------------------------------


class JoinRejected(Exception):
    """The server refused the join (bad token, wrong role, unknown room, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SessionClosed(ConnectionError):
    """A send was attempted on a session that has already ended."""


# --- the interface ------------------------------------------------------------------------------


class EventQueue:
    """The one event stream every session implementation shares (native, reconnecting, Hoovik).

    Subclasses put events on ``_queue`` and end the stream with :meth:`_finish`; ``events()`` then
    drains what is queued first.
    """

    _queue: asyncio.Queue[Event]
    _final: Disconnected | None
    _final_pending: bool

    async def events(self) -> AsyncIterator[Event]:
        """Yield events until (and including) :class:`Disconnected`. One consumer only."""
        while True:
            if self._final_pending and self._queue.empty():
                self._final_pending = False
                assert self._final is not None
                yield self._final
                return
            event = await self._queue.get()
            yield event
            if isinstance(event, Disconnected):
                return

    def _finish(self, reason: str) -> None:
        """End the stream with ``Disconnected(reason)``, once; what is queued is delivered first."""
        if self._final is not None:
            return
        self._final = Disconnected(reason)
        try:
            self._queue.put_nowait(self._final)
        except asyncio.QueueFull:
            self._final_pending = True


# Join refusals that retrying cannot cure: a bad token or an identity the server will not give.
JOIN_REFUSED_CODES = frozenset(
    {
        "token_malformed",
        "token_bad_signature",
        "token_expired",
        "token_wrong_room",
        "role_mismatch",
        "participant_mismatch",
        "id_taken",
        "id_reserved",
    }
)


@runtime_checkable
class SignalingSession(Protocol):
    """One joined membership of one room.

    ``events()`` is meant for a single consumer; it ends after yielding :class:`Disconnected`.
    It is declared as a plain method returning an async iterator so that implementations may be
    ``async def`` generators.
    """

    @property
    def self_id(self) -> str:
        """Our participant id in the room, as the server confirmed it."""
        ...

    @property
    def peers(self) -> Mapping[str, PeerInfo]:
        """Other members currently in the room, keyed by id (never includes ourselves)."""
        ...

    def events(self) -> AsyncIterator[Event]: ...

    async def send_offer(self, peer_id: str, sdp: str) -> None: ...

    async def send_answer(self, peer_id: str, sdp: str) -> None: ...

    async def send_candidate(self, peer_id: str, candidate: dict[str, Any] | None) -> None: ...

    async def send_result(self, peer_id: str, payload: dict[str, Any]) -> None: ...

    async def send_offer_rejected(self, peer_id: str, reason: str) -> None:
        """Tell an offerer why its offer was refused (the native protocol's ``offer_rejected``)."""
        ...

    async def announce_media(self, mic: bool, camera: bool) -> None: ...

    async def close(self) -> None: ...

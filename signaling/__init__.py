"""Signaling: rooms, tokens, presence and relay, and the clients the bot joins rooms with.

The bot depends only on :mod:`signaling.base` (events and the :class:`SignalingSession`
interface); :mod:`signaling.client` is the native-protocol implementation and
:mod:`signaling.server` the matching aiohttp server. Nothing here knows models or media decoding.
"""

from signaling.base import (
    Disconnected,
    Event,
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
    SignalingSession,
)
from signaling.tokens import TokenClaims, TokenError, TokenSigner

__all__ = [
    "Disconnected",
    "Event",
    "JoinRejected",
    "MediaState",
    "PeerInfo",
    "PeerJoined",
    "PeerLeft",
    "RemoteAnswer",
    "RemoteCandidate",
    "RemoteOffer",
    "ResultRelay",
    "Role",
    "SessionClosed",
    "SignalingError",
    "SignalingSession",
    "TokenClaims",
    "TokenError",
    "TokenSigner",
]

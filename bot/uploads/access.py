"""Options, per-pid state and access rules of the emotion-service endpoint (docs/hoovik.md, *Access control*).

The original service had no access control. Here a token is required on connections that arrive on
a non-loopback address unless ``open_access`` is set; a pid is bound to the credentials of its
first socket; the number of sockets is capped.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from bot.uploads.timing import FrameGate, MediaClock

MAX_HTTP_BUFFER = 8 * 1024 * 1024
MAX_CONCURRENT_DECODES = 8
MAX_UPLOAD_STATES = 1024
MAX_PENDING_EMITS = 1024
# A refused upload is answered with ``emotion.error`` at most this often per socket.
LIMIT_NOTICE_INTERVAL_S = 5.0
PID_KEYS = ("participantId", "participant_id", "pid")
CREDENTIAL_KEYS = ("secret", "token")
MODALITIES = ["video_only", "audio_only", "both"]


# --- options and state --------------------------------------------------------------------------


@dataclass(frozen=True)
class EmotionServiceOptions:
    """Access control, limits and features of the emotion-service endpoint."""

    token: str | None = None
    """Require ``auth.token`` to equal this on every connection; the stock Hoovik UI cannot send it."""
    allowed_origins: tuple[str, ...] | None = None
    """Browser origins allowed to connect (``None``: any, as the original)."""
    uploads: bool = True
    """Accept ``audio_chunk`` / ``emotion.frame`` / ``av_chunk`` for pids not analysed from a meeting."""
    path: str = "socket.io"
    open_access: bool = False
    """Without a ``token``, accept connections arriving on non-loopback addresses too (the stock UI,
    like the original). Off: only loopback connections are accepted without a token."""
    max_upload_participants: int = 16
    """At most this many pids analysed from uploads at once; more are refused with ``emotion.error``."""
    upload_share: float = 0.5
    """While the engine analyses meeting participants, uploads may take at most this share of its
    participants (0.5: no more upload pids than meeting participants)."""
    max_sockets: int = 256
    """Connections beyond this many are refused."""


@dataclass
class UploadState:
    """One upload-mode pid: media state, frame gate and the media clock of its uploads."""

    pid: str
    gate: FrameGate
    mic: bool = True
    camera: bool = True
    in_engine: bool = False
    clock: MediaClock = field(default_factory=MediaClock)
    audio_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def pid_room(pid: str) -> str:
    # Prefixed so that a chosen participantId can never name another socket's own sid room.
    return f"pid:{pid}"


def credential(auth: dict[str, Any]) -> str | None:
    """The secret a socket presents for its pid: ``auth.secret``, else ``auth.token``, else none."""
    for key in CREDENTIAL_KEYS:
        value = auth.get(key)
        if isinstance(value, str) and value:
            return value[:1024]
    return None


def same_credential(bound: str | None, given: str | None) -> bool:
    if bound is None or given is None:
        return bound is None and given is None
    return hmac.compare_digest(bound.encode(), given.encode())


def connection_is_loopback(environ: dict[str, Any]) -> bool:
    """Whether the connection arrived on a loopback address (the local end of its TCP socket).

    python-engineio's aiohttp driver reports ``REMOTE_ADDR`` as 127.0.0.1 always, so the socket
    itself is asked. Unknown means no (fail closed).
    """
    request = environ.get("aiohttp.request")
    transport = getattr(request, "transport", None)
    if transport is None:
        return False
    sockname = transport.get_extra_info("sockname")
    if not isinstance(sockname, tuple | list) or not sockname:
        return False
    try:
        addr = ipaddress.ip_address(str(sockname[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
    except Exception:
        pass
    return "cpu"

"""ICE helpers: candidate JSON on the wire, and loopback-only ICE for the local demo and tests.

Signaling sessions carry candidates as plain dicts in the browser's ``RTCIceCandidate.toJSON()``
shape (``signaling/`` knows nothing of aiortc); this module converts them to and from aiortc's
``RTCIceCandidate``, so that browsers and the bot can trickle candidates to each other.

aioice never offers 127.0.0.1 host candidates, so two aiortc peers in one process on a machine
with no other usable interface cannot connect. For the demo (everything runs on this machine by
design) and the tests, :func:`use_loopback_ice` replaces aioice's host-address hook so that peers
gather exactly one host candidate on loopback; no traffic then leaves the machine. Real
deployments leave it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aioice.ice
from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp

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


# --- loopback-only ICE (demo, tests) ------------------------------------------------------------

_original = aioice.ice.get_host_addresses


def _loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else ["::1"]


def use_loopback_ice(enabled: bool = True) -> None:
    """Make every aiortc peer in this process gather only loopback host candidates."""
    aioice.ice.get_host_addresses = _loopback_addresses if enabled else _original

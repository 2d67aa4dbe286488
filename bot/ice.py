"""Loopback-only ICE for the all-local demo and tests.

aioice never offers 127.0.0.1 host candidates, so two aiortc peers in one process on a machine
with no other usable interface cannot connect. For the demo (everything runs on this machine by
design) and the tests, we replace aioice's host-address hook so that peers gather exactly one host
candidate on loopback; no traffic then leaves the machine. Real deployments leave it alone.
"""

from __future__ import annotations

import aioice.ice

_original = aioice.ice.get_host_addresses


def _loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else ["::1"]


def use_loopback_ice(enabled: bool = True) -> None:
    """Make every aiortc peer in this process gather only loopback host candidates."""
    aioice.ice.get_host_addresses = _loopback_addresses if enabled else _original

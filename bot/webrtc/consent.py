"""ICE consent freshness as RFC 7675 means it: consent expires 30 s after the last answer.

Why this exists. aioice checks consent every ~5 s with a single STUN request that must be
answered within 0.5 s (no retransmission), and closes the connection after six failed checks in
a row. An answer that arrives later than 0.5 s is discarded, however alive the peer is. Above
capacity the bot's asyncio loop falls behind its UDP sockets (asyncio reads one datagram per socket
per loop turn, and aiortc does all its per-packet work there): an answer that waits behind a
second of media in the socket buffer is answered "too late" every time, and a peer that is still
there, still sending and still answering is closed after ~30 s (docs/engine.md, "Overload that
stays connected"; measured: the bot's own ``Consent to send expired`` for 10 of 16 connections).

RFC 7675 (section 5.1) asks for something else: a check is a STUN transaction with its usual
retransmissions, and consent expires when no check was answered for 30 s. :func:`tolerate_late_consent`
installs that on one aiortc peer connection's ICE connections: each check listens for up to
7.5 s (retransmissions at 0.5, 1, 2 and 4 s), and the connection closes only when nothing was
answered for ``CONSENT_EXPIRY_S``. A peer that really left still goes away within ~35 s, and
within 0 s when it says so (DTLS close, signaling).
"""

from __future__ import annotations

import asyncio
import logging
import random
import types
from typing import Any

from aioice import stun
from aioice.ice import CONSENT_INTERVAL, Connection
from aiortc import RTCPeerConnection

log = logging.getLogger(__name__)

# A check every 4-6 s, as aioice's (RFC 7675: randomised around 5 s).
CHECK_INTERVAL_S = float(CONSENT_INTERVAL)
# RFC 7675: consent expires this long after the last answered check.
CONSENT_EXPIRY_S = 30.0
# Retransmissions of each check (RTO 0.5 s doubling: it listens 0.5 + 1 + 2 + 4 = 7.5 s).
CHECK_RETRANSMISSIONS = 3


async def _query_consent(self: Connection) -> None:
    """``Connection.query_consent`` with RFC 7675's expiry (replaces aioice's on one connection)."""
    assert self.remote_password is not None
    loop = asyncio.get_running_loop()
    answered = loop.time()
    while True:
        await asyncio.sleep(CHECK_INTERVAL_S * (0.8 + 0.4 * random.random()))
        for pair in list(self._nominated.values()):
            request = self.build_request(pair, nominate=False)
            try:
                await pair.protocol.request(
                    request,
                    pair.remote_addr,
                    integrity_key=self.remote_password.encode("utf8"),
                    retransmissions=CHECK_RETRANSMISSIONS,
                )
                answered = loop.time()
            except stun.TransactionError:
                since = loop.time() - answered
                log.info("consent check to %s unanswered (%.1f s since the last answer)", pair.remote_addr, since)
        if loop.time() - answered > CONSENT_EXPIRY_S:
            log.info("consent to send expired: no answer for %.0f s", loop.time() - answered)
            self._query_consent_task = None
            await self.close()
            return


def ice_connections(pc: RTCPeerConnection) -> list[Connection]:
    """The aioice connections under ``pc``'s ICE transports (one with BUNDLE)."""
    out: list[Connection] = []
    transports: list[Any] = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        conn = getattr(getattr(getattr(dtls, "transport", None), "iceGatherer", None), "_connection", None)
        if isinstance(conn, Connection) and conn not in out:
            out.append(conn)
    return out


def tolerate_late_consent(pc: RTCPeerConnection) -> int:
    """Give ``pc``'s ICE connections RFC 7675's consent expiry; returns how many were changed.

    Call it after ``setRemoteDescription`` (which creates the transports) and before ICE has
    connected (the consent task starts when it does): in aiortc both happen in the same loop turn
    sequence as the answer, so the offer handler is the place.
    """
    changed = 0
    for conn in ice_connections(pc):
        if getattr(conn, "_hoovik_consent", False):
            continue
        conn.query_consent = types.MethodType(_query_consent, conn)  # type: ignore[method-assign]
        conn._hoovik_consent = True  # type: ignore[attr-defined]
        changed += 1
    return changed

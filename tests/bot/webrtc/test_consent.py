"""ICE consent with RFC 7675's expiry (bot/webrtc/consent.py): late answers keep a peer, silence
for the whole expiry closes it, and the bot's peer connections get the check before ICE connects.

The check's interval and expiry are shortened for the tests; what is asserted is the outcome
(closed or not, and after how many unanswered checks), never a speed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aioice import stun
from aiortc import RTCPeerConnection

from bot.webrtc import consent


class Protocol:
    """A pair's STUN protocol whose checks fail ``fail_first`` times, then are answered."""

    def __init__(self, fail_first: int, then_answer: bool = True) -> None:
        self.fail_first = fail_first
        self.then_answer = then_answer
        self.calls: list[int | None] = []

    async def request(self, request: Any, addr: Any, integrity_key: bytes, retransmissions: int | None) -> Any:
        self.calls.append(retransmissions)
        if len(self.calls) <= self.fail_first or not self.then_answer:
            raise stun.TransactionTimeout()
        return None


class FakeConnection:
    def __init__(self, protocol: Protocol) -> None:
        self.remote_password = "pw"
        self._nominated = {1: type("Pair", (), {"protocol": protocol, "remote_addr": ("127.0.0.1", 9)})()}
        self._query_consent_task: Any = object()
        self.closed = asyncio.Event()

    def build_request(self, pair: Any, nominate: bool) -> object:
        return object()

    async def close(self) -> None:
        self.closed.set()


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consent, "CHECK_INTERVAL_S", 0.01)
    monkeypatch.setattr(consent, "CONSENT_EXPIRY_S", 0.2)


async def test_unanswered_checks_close_only_after_the_expiry(fast: None) -> None:
    proto = Protocol(fail_first=0, then_answer=False)
    conn = FakeConnection(proto)
    await asyncio.wait_for(consent._query_consent(conn), 10)  # type: ignore[arg-type]
    assert conn.closed.is_set() and conn._query_consent_task is None
    # Many checks failed before it gave up (aioice gives up after 6 single-shot ones): the expiry
    # is a time without any answer, not a count; each check retransmits.
    assert len(proto.calls) > 6
    assert set(proto.calls) == {consent.CHECK_RETRANSMISSIONS}


async def test_an_answer_before_the_expiry_keeps_the_connection(fast: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Six failed checks in a row would close an aioice connection; here the seventh is answered.
    proto = Protocol(fail_first=6)
    conn = FakeConnection(proto)
    monkeypatch.setattr(consent, "CONSENT_EXPIRY_S", 1e9)  # only the count matters in this test
    task = asyncio.create_task(consent._query_consent(conn))  # type: ignore[arg-type]
    try:
        while len(proto.calls) < 12:
            await asyncio.sleep(0.01)
        assert not conn.closed.is_set()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_offer_handler_s_connections_get_the_check_before_ice_connects() -> None:
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    try:
        offerer.createDataChannel("emotions")
        offerer.addTransceiver("audio", direction="sendonly")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        assert consent.tolerate_late_consent(answerer) >= 1
        conns = consent.ice_connections(answerer)
        assert conns and all(c.query_consent.__func__ is consent._query_consent for c in conns)  # type: ignore[attr-defined]
        assert consent.tolerate_late_consent(answerer) == 0  # once only
    finally:
        await offerer.close()
        await answerer.close()

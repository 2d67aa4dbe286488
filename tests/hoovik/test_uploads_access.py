"""Upload participants are bounded, pids are bound to their first socket's credentials, and a token
is required on non-loopback addresses unless the endpoint is explicitly open.

The probe: 50 anonymous sockets took a meeting's participants from 3.4 to 0.4 results/s (every
socket became an engine participant), and any socket could claim any ``participantId`` and read its
results. These tests run against a real Socket.IO endpoint on 127.0.0.1 (and, where the machine
has one, a non-loopback address) with a recording stand-in for the engine.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import socketio
from aiohttp import web
from hoovik_browser import HostUI, wait_until
from test_uploads import StubEngine, client, endpoint  # noqa: F401  (fixture)

from bot.pipeline.results import EmotionResult
from bot.uploads.access import EmotionServiceOptions, connection_is_loopback
from bot.uploads.endpoint import EmotionService

CHUNK = (np.zeros(1600, dtype=np.float32) + 0.01).tobytes()


def a_result(pid: str) -> EmotionResult:
    return EmotionResult(
        participant_id=pid,
        seq=1,
        emotion="happy",
        confidence=0.9,
        probs=(0.0, 0.0, 0.0, 1.0, 0.0, 0.0),
        modality="both",
        anomaly=False,
        anomaly_score=0.1,
        latency_ms=1.0,
        ts_ms=1_700_000_000_000,
        media_time=1.0,
        captured_at_ms=1_700_000_000_000,
        bundle_id="hb-test",
        trained=False,
    )


async def refused(url: str, pid: str, **auth: Any) -> dict[str, Any]:
    """Connect and expect a refusal; return the server's ``connect_error`` payload."""
    got: list[Any] = []
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("connect_error", lambda data=None: got.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(url, transports=["websocket"], auth={"participantId": pid, **auth}, wait_timeout=10)
    await wait_until(lambda: got, "connect_error")
    await sio.disconnect()
    assert isinstance(got[0], dict)
    return got[0]


def limit_errors(ui: HostUI) -> list[dict[str, Any]]:
    return [e for e in ui.errors if e.get("code") == "UPLOAD_LIMIT"]


# --- upload participants are capped -------------------------------------------------------------


async def test_forty_sockets_are_held_to_the_upload_cap(endpoint: Any) -> None:  # noqa: F811
    service, url, engine, _ = await endpoint(EmotionServiceOptions(max_upload_participants=16))
    uis = [await client(url, f"u-{i:02d}") for i in range(40)]
    try:
        for ui in uis:
            await ui.emit("audio_chunk", CHUNK)
        await wait_until(
            lambda: len(engine.of("audio")) == 16 and sum(len(limit_errors(u)) for u in uis) == 24,
            "16 admitted, 24 refused",
            info=lambda: service.counters,
        )
        admitted = {c[1] for c in engine.of("add")}
        assert len(admitted) == 16 and set(service.admitted) == admitted
        refused_uis = [u for u in uis if u.participant_id not in admitted]
        assert all(
            limit_errors(u) == [{"code": "UPLOAD_LIMIT", "reason": "too_many_participants", "maxParticipants": 16}]
            for u in refused_uis
        )
        # Refused sockets keep sending: no engine state, and the notice is not repeated every chunk.
        for u in refused_uis:
            await u.emit("audio_chunk", CHUNK)
        await wait_until(lambda: service.counters.get("uploads_refused_too_many_participants") == 48, "refused again")
        assert len(engine.of("add")) == 16 and all(len(limit_errors(u)) == 1 for u in refused_uis)
        # A freed place goes to the next client that uploads.
        first = next(u for u in uis if u.participant_id in admitted)
        await first.close()
        await wait_until(lambda: len(service.admitted) == 15, "freed")
        await refused_uis[0].emit("audio_chunk", CHUNK)
        await wait_until(lambda: refused_uis[0].participant_id in service.admitted, "admitted after a leave")
    finally:
        for ui in uis:
            await ui.close()
    await wait_until(lambda: not service.admitted and not service.sid_pid, "all freed")
    assert len(engine.participants) == 0


async def test_uploads_take_at_most_their_share_of_a_meeting(endpoint: Any) -> None:  # noqa: F811
    service, url, engine, _ = await endpoint(EmotionServiceOptions(max_upload_participants=16, upload_share=0.5))
    # Three meeting participants analysed from the bot's own media (engine keys = socket ids).
    for sid in ("sock-1", "sock-2", "sock-3"):
        engine.participants[sid] = SimpleNamespace()
    assert service.upload_allowance() == 3
    uis = [await client(url, f"u-{i}") for i in range(6)]
    try:
        for ui in uis:
            await ui.emit("audio_chunk", CHUNK)
        await wait_until(
            lambda: len(service.admitted) == 3 and sum(len(limit_errors(u)) for u in uis) == 3, "3 admitted"
        )
        assert {e["reason"] for u in uis for e in limit_errors(u)} == {"meeting_share"}
        # A pid that is a meeting participant's engine key is never fed (nor freed) from uploads.
        squatter = await client(url, "sock-2")
        await squatter.emit("audio_chunk", CHUNK)
        await wait_until(lambda: limit_errors(squatter), "refused")
        assert limit_errors(squatter)[0]["reason"] == "participant_in_use"
        await squatter.close()
        assert "sock-2" in engine.participants and ("remove", "sock-2") not in engine.calls
        # The meeting shrinks to one participant: the newest uploads make room on their next upload.
        del engine.participants["sock-2"], engine.participants["sock-3"]
        by_pid = {u.participant_id: u for u in uis}
        newest = [by_pid[pid] for pid in service.admitted]  # in admission order
        for ui in newest:
            await ui.emit("audio_chunk", CHUNK)
        await wait_until(lambda: len(service.admitted) == 1, "evicted down to the share")
        assert list(service.admitted) == [newest[0].participant_id]
        assert {c[1] for c in engine.of("remove")} == {u.participant_id for u in newest[1:]}
    finally:
        for ui in uis:
            await ui.close()


async def test_sockets_are_capped(endpoint: Any) -> None:  # noqa: F811
    service, url, _, _ = await endpoint(EmotionServiceOptions(max_sockets=5))
    uis = [await client(url, f"u-{i}") for i in range(5)]
    try:
        err = await refused(url, "u-extra")
        assert err["data"] == {"code": "too_many_sockets"} and "too many connections" in err["message"]
        await uis[0].close()
        await wait_until(lambda: len(service.sid_pid) == 4, "a place freed")
        ok = await client(url, "u-extra")
        await wait_until(lambda: ok.status, "status")
        uis.append(ok)
    finally:
        for ui in uis:
            await ui.close()


# --- a pid is bound to its first socket's credentials -------------------------------------------


async def test_a_participant_id_is_bound_to_its_first_sockets_credentials(endpoint: Any) -> None:  # noqa: F811
    service, url, _, _ = await endpoint()
    owner = await client(url, "u-private", auth_extra={"secret": "s1"})
    try:
        for auth in ({}, {"secret": "s2"}, {"token": "guess"}):
            err = await refused(url, "u-private", **auth)
            assert err["data"] == {"code": "participant_in_use"}, auth
        second = await client(url, "u-private", auth_extra={"secret": "s1"})  # the owner's second tab
        service.publish("u-private", a_result("u-private"))
        await wait_until(lambda: owner.results and second.results, "both of the owner's sockets")
        # Another socket cannot set the bound pid's media state through the relay path.
        intruder = await client(url, "u-intruder")
        await intruder.emit("participant.media_state", {"participantId": "u-private", "micEnabled": False})
        await wait_until(lambda: service.counters.get("media_state_refused") == 1, "refused")
        assert "u-private" not in service.uploads or service.uploads["u-private"].mic is True
        await intruder.close()
        await second.close()
    finally:
        await owner.close()
    # Free again once its last socket is gone.
    await wait_until(lambda: "u-private" not in service.pid_sids, "unbound")
    taker = await client(url, "u-private")
    await wait_until(lambda: taker.status, "status")
    # Without credentials (the stock UI) sockets share the pid as in the original, but a socket
    # presenting a secret cannot join a credential-less pid.
    tab = await client(url, "u-private")
    await wait_until(lambda: tab.status, "status")
    err = await refused(url, "u-private", secret="s1")
    assert err["data"] == {"code": "participant_in_use"}
    await tab.close()
    await taker.close()


# --- a token is required on non-loopback addresses ----------------------------------------------


@pytest.fixture(scope="module")
def test_host_address() -> Iterator[str]:
    """A non-loopback address that belongs to this test: our end of a veth pair into a network
    namespace the test creates (the browser tests' helper), removed afterwards."""
    spec = importlib.util.spec_from_file_location(
        "browser_env", Path(__file__).resolve().parents[1] / "browser" / "browser_env.py"
    )
    assert spec is not None and spec.loader is not None
    env = sys.modules.get("browser_env") or importlib.util.module_from_spec(spec)
    sys.modules["browser_env"] = env  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(env)
    problem = env.environment_problem()
    if problem is not None:
        pytest.fail(problem)
    ns = env.NetNamespace.create(tag="u")  # not the browser tests' namespace of this same process
    try:
        yield str(ns.host_ip)
    finally:
        ns.close()


async def serve(options: EmotionServiceOptions, host: str) -> tuple[EmotionService, str, web.AppRunner]:
    engine = StubEngine()
    service = EmotionService(options, engine=lambda: engine)  # type: ignore[arg-type,return-value]
    app = web.Application()
    service.attach(app)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return service, f"http://{host}:{port}", runner


async def test_a_token_is_required_on_non_loopback_addresses_unless_open(test_host_address: str) -> None:
    host = test_host_address
    for options, auth, ok in (
        (EmotionServiceOptions(), {}, False),
        (EmotionServiceOptions(allowed_origins=("https://meet.example",)), {}, False),
        (EmotionServiceOptions(open_access=True), {}, True),
        (EmotionServiceOptions(token="s3cret"), {"token": "s3cret"}, True),
        (EmotionServiceOptions(token="s3cret", open_access=True), {}, False),
    ):
        service, url, runner = await serve(options, host)
        try:
            if ok:
                ui = await client(url, "u-remote", auth_extra=auth)
                await wait_until(lambda ui=ui: ui.status, "status")
                await ui.close()
            else:
                err = await refused(url, "u-remote", **auth)
                assert err["data"]["code"] in ("token_required", "unauthorized"), options
                if options.token is None:
                    assert err["data"] == {"code": "token_required"}
                    assert "token required" in err["message"]
        finally:
            await service.close()
            await runner.cleanup()


async def test_loopback_connections_need_no_token(endpoint: Any) -> None:  # noqa: F811
    service, url, _, _ = await endpoint()  # default options, 127.0.0.1
    ui = await client(url, "u-local")
    await wait_until(lambda: ui.status, "status")
    await ui.close()
    assert "refused_token_required" not in service.counters


def test_loopback_detection() -> None:
    def environ(sockname: Any) -> dict[str, Any]:
        transport = SimpleNamespace(get_extra_info=lambda key: sockname if key == "sockname" else None)
        return {"aiohttp.request": SimpleNamespace(transport=transport), "REMOTE_ADDR": "127.0.0.1"}

    assert connection_is_loopback(environ(("127.0.0.1", 5002)))
    assert connection_is_loopback(environ(("::1", 5002, 0, 0)))
    assert connection_is_loopback(environ(("::ffff:127.0.0.1", 5002, 0, 0)))
    assert not connection_is_loopback(environ(("192.0.2.2", 5002)))
    assert not connection_is_loopback(environ(("fe80::1%eth0", 5002, 0, 2)))
    assert not connection_is_loopback(environ(None))
    assert not connection_is_loopback({"REMOTE_ADDR": "127.0.0.1"})  # engineio's constant is not trusted


# --- the real bot in a meeting ------------------------------------------------------------------


async def test_uploads_cannot_crowd_out_a_meeting(hoovik_meeting: Any) -> None:
    """A meeting participant analysed from WebRTC, then 12 anonymous upload sockets: one is admitted
    (upload_share 0.5), the rest are refused, and the meeting participant keeps its results."""
    m = await hoovik_meeting()
    await m.add_peer("u-alice", clip=0)
    ui_alice = await m.host_ui("u-alice")
    await m.wait(lambda: len(ui_alice.results) >= 2, "meeting results")
    emotion = m.service.emotion
    assert emotion is not None and emotion.upload_allowance() == 1
    anonymous = [HostUI(m.bot_url, "") for _ in range(12)]  # no participantId: pid = the socket id
    for ui in anonymous:
        await ui.connect()
        m.uis.append(ui)
    for ui in anonymous:
        await ui.emit("audio_chunk", CHUNK)
    await m.wait(lambda: sum(len(limit_errors(u)) for u in anonymous) == 11, "11 refused")
    assert len(emotion.admitted) == 1 and len(m.service.engine.participants) == 2
    assert {e["reason"] for u in anonymous for e in limit_errors(u)} == {"meeting_share"}
    n = len(ui_alice.results)
    await m.wait(lambda: len(ui_alice.results) >= n + 3, "meeting results go on")

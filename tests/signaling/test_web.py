"""The web app's server side, without a browser: pages, the invite check, the bot launcher, and the
optional ``analysis`` flag of the ``media`` message.

The launcher runs stand-in bots (small Python scripts that join through the real signaling client
or fail on purpose), so these tests check process handling, not models.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling.client import SignalingClient, create_room, mint_invite
from signaling.launcher import BotLauncherConfig, LocalBotLauncher, local_launcher
from signaling.server import SignalingServer
from signaling.tokens import TokenSigner
from signaling.web import LAUNCHER_KEY

SECRET = b"web-tests-secret-0123456789-padded-to-32+"

FAKE_BOT = textwrap.dedent(
    """
    import asyncio, os, sys
    from signaling.client import SignalingClient

    async def main() -> None:
        args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
        assert "--token" not in args  # the launcher passes the token in the environment only
        print("telemetry on http://127.0.0.1:4321/stats", flush=True)
        session = await SignalingClient.connect(
            args["--signaling"], args["--room"], os.environ["HOOVIK_BOT_TOKEN"], "fake-bot", "Fake", "bot"
        )
        async for _ in session.events():
            pass

    asyncio.run(main())
    """
)


async def until(cond: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    """Poll ``cond()`` (plain or async) until true; fail after ``timeout`` (never a speed check)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def bot_state(http: aiohttp.ClientSession, url: str, token: str) -> dict[str, Any]:
    status, body = await call(http, "GET", url, token=token)
    assert status == 200, body
    return dict(body)


@pytest.fixture
def fake_bot(tmp_path: Path) -> tuple[str, ...]:
    script = tmp_path / "fake_bot.py"
    script.write_text(FAKE_BOT)
    return (sys.executable, str(script))


Serve = Callable[..., Awaitable[SignalingServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[SignalingServer] = []

    async def start(launcher: BotLauncherConfig | None = None) -> SignalingServer:
        server = SignalingServer(SECRET, bot_launcher=None if launcher is None else local_launcher(launcher))
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


# --- pages and the invite check -----------------------------------------------------------------


async def test_pages_and_modules_are_served_with_a_strict_policy(serve: Serve, http: aiohttp.ClientSession) -> None:
    server = await serve()
    for path, marker in (("/", "landing.js"), ("/meet", "meeting.js")):
        async with http.get(server.url + path) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            assert marker in await resp.text()
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "connect-src 'self'" in csp
            assert resp.headers["Referrer-Policy"] == "no-referrer"
    for name in ("meeting.js", "peers.js", "panels.js", "app.css"):
        async with http.get(f"{server.url}/static/{name}") as resp:
            assert resp.status == 200, name
            assert resp.content_type in ("text/javascript", "application/javascript", "text/css"), name
    async with http.get(f"{server.url}/static/../web.py") as resp:
        assert resp.status in (403, 404)
    status, body = await call(http, "GET", f"{server.url}/api/web")
    assert (status, body["botLauncher"]) == (200, False)


async def test_invite_check_explains_every_refusal(serve: Serve, http: aiohttp.ClientSession) -> None:
    server = await serve()
    room, host_token = await create_room(server.url, "Standup")
    other, _ = await create_room(server.url, "Other")
    token = await mint_invite(server.url, room, host_token, "participant", participant_id="pat")
    url = f"{server.url}/api/invite"
    status, body = await call(http, "POST", url, {"room": room, "token": token})
    assert status == 200
    assert body["room"] == room and body["roomName"] == "Standup"
    assert body["role"] == "participant" and body["participantId"] == "pat"
    past = TokenSigner(SECRET, clock=lambda: time.time() - 7200)
    cases = [
        ({"room": room, "token": past.mint(room, "participant", 60)}, 401, "token_expired"),
        ({"room": room, "token": TokenSigner(b"x" * 32).mint(room, "participant", 60)}, 401, "token_bad_signature"),
        ({"room": room, "token": "garbage"}, 401, "token_malformed"),
        ({"room": room, "token": TokenSigner(SECRET).mint(other, "participant", 60)}, 403, "token_wrong_room"),
        ({"room": "gone", "token": TokenSigner(SECRET).mint("gone", "participant", 60)}, 404, "room_not_found"),
        ({"room": room}, 400, "bad_field"),
        ({"room": "bad room!", "token": token}, 400, "bad_field"),
    ]
    for payload, want_status, want_code in cases:
        status, body = await call(http, "POST", url, payload)
        assert (status, body["error"]) == (want_status, want_code), payload
        assert body["message"]
    async with http.post(url, data=b"{not json") as resp:
        assert resp.status == 400


# --- the "analysis" flag on the wire -------------------------------------------------------------


async def test_opt_out_travels_with_media_and_reaches_later_joiners(serve: Serve, http: aiohttp.ClientSession) -> None:
    server = await serve()
    room, host_token = await create_room(server.url, "")
    token = await mint_invite(server.url, room, host_token, "participant")

    async def raw_join(pid: str, role: str, tok: str) -> aiohttp.ClientWebSocketResponse:
        ws = await http.ws_connect(server.ws_url)
        await ws.send_json({"type": "join", "room": room, "participantId": pid, "role": role, "token": tok})
        assert (await ws.receive_json())["type"] == "welcome"
        return ws

    host = await raw_join("host", "host", host_token)
    pat = await raw_join("pat", "participant", token)
    assert (await host.receive_json())["type"] == "joined"
    await pat.send_json({"type": "media", "mic": True, "camera": True, "analysis": False})
    assert await host.receive_json() == {
        "type": "media",
        "participantId": "pat",
        "mic": True,
        "camera": True,
        "analysis": False,
    }
    # Old clients see no new field while it has its default.
    await pat.send_json({"type": "media", "mic": True, "camera": False})
    assert await host.receive_json() == {"type": "media", "participantId": "pat", "mic": True, "camera": False}
    await pat.send_json({"type": "media", "mic": True, "camera": False, "analysis": False})
    await host.receive_json()
    late = await http.ws_connect(server.ws_url)
    await late.send_json({"type": "join", "room": room, "participantId": "late", "role": "participant", "token": token})
    welcome = await late.receive_json()
    listed = {p["participantId"]: p for p in welcome["participants"]}
    assert listed["pat"]["analysis"] is False and "analysis" not in listed["host"]
    status, summary = await call(http, "GET", f"{server.url}/rooms/{room}", token=host_token)
    assert status == 200 and {p["participantId"]: p.get("analysis", True) for p in summary["participants"]} == {
        "host": True,
        "pat": False,
        "late": True,
    }
    await pat.send_json({"type": "media", "mic": True, "camera": False, "analysis": "no"})
    assert (await pat.receive_json())["type"] == "joined"  # "late"
    assert (await pat.receive_json())["code"] == "bad_field"
    for ws in (host, pat, late):
        await ws.close()


# --- the bot launcher ----------------------------------------------------------------------------


async def host_in(server: SignalingServer, room: str, host_token: str) -> SignalingClient:
    return await SignalingClient.connect(server.ws_url, room, host_token, "host", "Host", "host")


async def test_launcher_starts_one_bot_per_room_within_its_limit(
    serve: Serve, http: aiohttp.ClientSession, fake_bot: tuple[str, ...]
) -> None:
    server = await serve(BotLauncherConfig(command=fake_bot, max_bots=1, poll_s=0.1))
    room, host_token = await create_room(server.url, "")
    host = await host_in(server, room, host_token)
    bot_url = f"{server.url}/rooms/{room}/bot"
    status, body = await call(http, "POST", bot_url)
    assert (status, body["error"], body["state"]) == (401, "unauthorized", "none")
    participant = await mint_invite(server.url, room, host_token, "participant")
    status, body = await call(http, "POST", bot_url, token=participant)
    assert (status, body["error"], body["state"]) == (403, "forbidden", "none")

    status, body = await call(http, "POST", bot_url, token=host_token)
    assert status == 202 and body["state"] == "starting" and body["pid"]

    async def joined() -> bool:
        return (await bot_state(http, bot_url, host_token))["state"] == "joined"

    await until(joined, "the launched bot to join")
    assert "fake-bot" in server.hub.member_ids(room)
    status, body = await call(http, "GET", bot_url, token=host_token)
    assert body["telemetryUrl"] == "http://127.0.0.1:4321/stats" and body["launched"] is True
    assert not any(host_token in line or "--token" in line for line in body["log"])
    status, body = await call(http, "POST", bot_url, token=host_token)
    assert (status, body["error"], body["state"]) == (409, "bot_running", "joined")

    other, other_host = await create_room(server.url, "")
    status, body = await call(http, "POST", f"{server.url}/rooms/{other}/bot", token=other_host)
    assert (status, body["error"], body["state"]) == (429, "too_many_bots", "none")

    status, body = await call(http, "DELETE", bot_url, token=host_token)
    assert status == 200 and body["state"] == "exited" and body["message"] == "stopped by the host"
    await until(lambda: "fake-bot" not in server.hub.member_ids(room), "the bot to leave")
    await host.close()


async def test_launcher_reports_failures(serve: Serve, http: aiohttp.ClientSession) -> None:
    failing = (sys.executable, "-c", "import sys; print('no models in this folder', flush=True); sys.exit(3)")
    server = await serve(BotLauncherConfig(command=failing, poll_s=0.1))
    room, host_token = await create_room(server.url, "")
    bot_url = f"{server.url}/rooms/{room}/bot"
    assert (await call(http, "POST", bot_url, token=host_token))[0] == 202

    async def failed(url: str, token: str) -> bool:
        return (await bot_state(http, url, token))["state"] == "failed"

    await until(lambda: failed(bot_url, host_token), "the failure to be reported")
    body = await bot_state(http, bot_url, host_token)
    assert body["exitCode"] == 3
    assert body["message"] == "the bot exited with code 3: no models in this folder"
    # A failed bot can be started again (here it fails again).
    assert (await call(http, "POST", bot_url, token=host_token))[0] == 202

    missing = await serve(BotLauncherConfig(command=("/nonexistent/hoovik-bot", "join")))
    room, host_token = await create_room(missing.url, "")
    status, body = await call(http, "POST", f"{missing.url}/rooms/{room}/bot", token=host_token)
    assert (status, body["error"], body["state"]) == (500, "bot_launch_failed", "failed")
    assert "could not start the bot" in body["message"]

    silent = (sys.executable, "-c", "import time; time.sleep(60)")
    slow = await serve(BotLauncherConfig(command=silent, startup_timeout_s=0.5, poll_s=0.1, stop_timeout_s=2))
    room, host_token = await create_room(slow.url, "")
    bot_url = f"{slow.url}/rooms/{room}/bot"
    assert (await call(http, "POST", bot_url, token=host_token))[0] == 202
    await until(lambda: failed(bot_url, host_token), "the startup timeout")
    assert (await bot_state(http, bot_url, host_token))["message"].startswith("the bot did not join within")


async def test_launcher_stops_a_bot_left_alone_and_all_bots_on_shutdown(
    serve: Serve, http: aiohttp.ClientSession, fake_bot: tuple[str, ...]
) -> None:
    server = await serve(BotLauncherConfig(command=fake_bot, idle_stop_s=0.3, wait_for_people_s=1.5, poll_s=0.1))
    room, host_token = await create_room(server.url, "")
    host = await host_in(server, room, host_token)
    bot_url = f"{server.url}/rooms/{room}/bot"
    assert (await call(http, "POST", bot_url, token=host_token))[0] == 202

    async def state_is(want: str) -> bool:
        return (await bot_state(http, bot_url, host_token))["state"] == want

    await until(lambda: state_is("joined"), "the bot to join")
    await asyncio.sleep(0.6)
    assert await state_is("joined"), "a bot with company must not be stopped"
    await host.close()
    await until(lambda: state_is("exited"), "the lonely bot to be stopped")
    assert (await bot_state(http, bot_url, host_token))["message"] == "stopped: nobody was left in the meeting"

    # Added before anyone came: it waits longer for the first person, then gives up.
    early, early_host = await create_room(server.url, "")
    early_url = f"{server.url}/rooms/{early}/bot"
    assert (await call(http, "POST", early_url, token=early_host))[0] == 202
    await until(lambda: "fake-bot" in server.hub.member_ids(early), "the early bot to join")
    await asyncio.sleep(0.6)
    assert (await bot_state(http, early_url, early_host))["state"] == "joined", "stopped before anyone could come"
    await until(lambda: _state(http, early_url, early_host, "exited"), "the early bot to give up", timeout=20)
    assert (await bot_state(http, early_url, early_host))["message"] == "stopped: nobody came to the meeting"

    room2, host2 = await create_room(server.url, "")
    keep = await host_in(server, room2, host2)
    assert (await call(http, "POST", f"{server.url}/rooms/{room2}/bot", token=host2))[0] == 202
    await until(lambda: "fake-bot" in server.hub.member_ids(room2), "the second bot")
    launcher = server.app[LAUNCHER_KEY]
    assert isinstance(launcher, LocalBotLauncher)
    process = launcher.bots[room2].process
    assert process is not None
    await keep.close()
    await server.stop()
    assert process.returncode is not None, "server shutdown left a bot running"


async def _state(http: aiohttp.ClientSession, url: str, token: str, want: str) -> bool:
    return (await bot_state(http, url, token))["state"] == want


def test_serve_has_the_launcher_options() -> None:
    from bot.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--bot-command", "hoovik-bot join --bundle 'my bundle'", "--max-bots", "3", "--bot-idle-s", "5"]
    )
    assert args.bot_command == "hoovik-bot join --bundle 'my bundle'"
    assert (args.max_bots, args.bot_idle_s) == (3, 5.0)


async def test_every_launch_refusal_says_what_the_bot_is_doing(
    serve: Serve, http: aiohttp.ClientSession, fake_bot: tuple[str, ...]
) -> None:
    """The page shows ``state`` from every answer (issue: "Add the bot" went blank on 409 bot_present)."""
    server = await serve(BotLauncherConfig(command=fake_bot, poll_s=0.1))
    room, host_token = await create_room(server.url, "")
    bot_url = f"{server.url}/rooms/{room}/bot"
    # A bot that joined by the command line, not through the launcher.
    bot_token = await mint_invite(server.url, room, host_token, "bot")
    bot = await SignalingClient.connect(server.ws_url, room, bot_token, "hand-bot", "Bot", "bot")
    status, body = await call(http, "POST", bot_url, token=host_token)
    assert (status, body["error"], body["state"]) == (409, "bot_present", "joined")
    assert (await bot_state(http, bot_url, host_token))["state"] == "joined"
    # It cannot be stopped from here (the server did not start it), and the answer says so.
    status, body = await call(http, "DELETE", bot_url, token=host_token)
    assert (status, body["error"], body["state"]) == (404, "no_bot", "joined")
    await bot.close()
    status, body = await call(http, "POST", f"{server.url}/rooms/NoSuchRoom/bot", token=host_token)
    assert status in (403, 404) and body["state"] == "none"

    plain = await serve()
    room, host_token = await create_room(plain.url, "")
    status, body = await call(http, "POST", f"{plain.url}/rooms/{room}/bot", token=host_token)
    assert (status, body["error"], body["state"]) == (501, "bot_launcher_disabled", "none")


async def test_serve_says_where_it_listens() -> None:
    """Listening on every interface, it does not claim to be on 127.0.0.1 only."""
    server = SignalingServer(SECRET)
    await server.start("0.0.0.0", 0)
    try:
        lines = server.listening_lines()
        assert lines[0] == f"listening on 0.0.0.0:{server.port} (every interface)"
        assert any("from other machines" in line for line in lines)
        assert server.url == f"http://127.0.0.1:{server.port}"  # the local form, for this machine
    finally:
        await server.stop()
    local = SignalingServer(SECRET)
    await local.start("127.0.0.1", 0)
    try:
        assert local.listening_lines()[0] == f"signaling server on {local.ws_url} (REST at {local.url})"
    finally:
        await local.stop()

"""The web app the signaling server serves, and the optional bot launcher behind "add the bot".

People use the product from a browser, so the server that already owns rooms and tokens also hands
out the pages: ``/`` (create a room, copy links, add the bot) and ``/meet`` (the meeting). They are
plain HTML and ES modules from :file:`signaling/static/` — no build step, no CDN — and they speak the
same REST and WebSocket protocol as every other client (docs/signaling.md, docs/web.md).

Two small JSON endpoints exist only for the pages:

- ``POST /api/invite`` checks an invite link *before* the page asks for camera and microphone, so a
  wrong or expired link gets a clear page instead of a failed join after a permission prompt.
- ``GET /api/web`` tells the landing page whether this server can start bots.

The bot launcher (off unless configured, e.g. ``hoovik-bot serve --bot-command "hoovik-bot join
--bundle B"``) runs one ``hoovik-bot join`` subprocess per room on a host's request. It mints the
bot's invite itself, bounds how many bots run at once, reports each bot's state (starting, joined,
exited, failed — with the tail of its output), stops a bot whose room has had no person in it for a
while, and stops every bot when the server shuts down. It never runs a shell: the command is an
argument vector.

This module knows nothing about models or media; it only starts a process by its command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from signaling.messages import ID_PATTERN, MAX_TOKEN_CHARS
from signaling.tokens import TokenClaims, TokenError

if TYPE_CHECKING:
    from signaling.server import Hub

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

_TOKEN_ERRORS = {
    "malformed": ("token_malformed", 401, "This link's token is damaged or incomplete."),
    "bad_signature": ("token_bad_signature", 401, "This link was not issued by this server."),
    "expired": ("token_expired", 401, "This invite link has expired."),
    "wrong_room": ("token_wrong_room", 403, "This link belongs to a different room."),
}

# Pages may talk only to their own origin; the meeting needs camera/mic and nothing else.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
    "Permissions-Policy": "camera=(self), microphone=(self), geolocation=()",
}

_TELEMETRY_LINE = re.compile(r"telemetry on (https?://\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True, slots=True)
class BotLauncherConfig:
    """How ``POST /rooms/{room}/bot`` starts a bot. ``command`` is the argument vector before the
    per-room arguments the launcher appends (``--signaling URL --room ID``; the token goes in
    ``$HOOVIK_BOT_TOKEN``) and, unless
    ``command`` sets it, ``--http-port 0`` so several bots never fight over one telemetry port)."""

    command: tuple[str, ...]
    max_bots: int = 2
    """Bots running at once (each loads its own models: memory and CPU bound this, not rooms)."""
    signaling_url: str | None = None
    """The WebSocket URL the bot dials; default ``ws://<the address the request came in on>/ws``,
    which is this server as seen from this machine."""
    token_ttl_s: float = 24 * 3600.0
    startup_timeout_s: float = 300.0
    """A bot that has not joined its room by then is stopped and reported as failed."""
    idle_stop_s: float = 120.0
    """A bot alone in its room (no host or participant) this long after people were there is stopped."""
    wait_for_people_s: float = 900.0
    """How long a bot waits alone for the first person (a host may add it before opening the meeting)."""
    stop_timeout_s: float = 10.0
    """SIGTERM, then SIGKILL after this long."""
    log_lines: int = 40
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for the bot process (on top of the server's own)."""
    poll_s: float = 1.0


@dataclass(eq=False)
class _BotProcess:
    room: str
    argv_display: str
    started_at: float
    process: asyncio.subprocess.Process | None = None
    state: str = "starting"
    """starting → joined → exited | failed; ``stopping`` while being stopped."""
    exit_code: int | None = None
    message: str = ""
    telemetry_url: str | None = None
    joined_at: float | None = None
    idle_since: float | None = None
    seen_people: bool = False
    stop_reason: str | None = None
    log: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "pid": None if self.process is None else self.process.pid,
            "startedAt": int(self.started_at),
            "joinedAt": None if self.joined_at is None else int(self.joined_at),
            "exitCode": self.exit_code,
            "message": self.message,
            "telemetryUrl": self.telemetry_url,
            "log": list(self.log)[-12:],
        }


class BotLauncher:
    """Starts, watches and stops ``hoovik-bot join`` processes, one per room at most."""

    def __init__(self, hub: Hub, config: BotLauncherConfig) -> None:
        if not config.command:
            raise ValueError("the bot command is empty")
        self.hub = hub
        self.config = config
        self.bots: dict[str, _BotProcess] = {}
        self.launched_total = 0
        self.failed_total = 0
        self._watchdog: asyncio.Task[None] | None = None

    def running(self) -> int:
        return sum(1 for b in self.bots.values() if b.alive or (b.state == "starting" and b.process is None))

    def status(self, room: str) -> dict[str, Any]:
        bot = self.bots.get(room)
        if bot is None:
            return {"state": "joined" if self._bot_in_room(room) else "none", "launched": False}
        self._refresh(bot, time.time())
        return {**bot.to_json(), "launched": True}

    def _refresh(self, bot: _BotProcess, now: float) -> None:
        """Follow a live bot between ``starting`` and ``joined`` by looking at its room."""
        if not bot.alive or bot.state not in ("starting", "joined"):
            return
        if self._bot_in_room(bot.room):
            if bot.state == "starting":
                bot.state, bot.joined_at, bot.message = "joined", now, "the bot is in the meeting"
        elif bot.state == "joined":
            bot.state, bot.message = "starting", "the bot left the room; waiting for it to return"

    def _forget_finished(self) -> None:
        """Drop the record of finished bots whose room is gone: memory stays bounded by live rooms."""
        for room, bot in list(self.bots.items()):
            if bot.state in ("exited", "failed") and not bot.alive and self.hub.get_room(room) is None:
                del self.bots[room]

    def _bot_in_room(self, room_id: str) -> bool:
        room = self.hub.get_room(room_id)
        return room is not None and any(m.role == "bot" for m in room.members.values())

    def _humans_in_room(self, room_id: str) -> bool:
        room = self.hub.get_room(room_id)
        return room is not None and any(m.role != "bot" for m in room.members.values())

    async def launch(self, room: str, signaling_url: str) -> tuple[int, dict[str, Any]]:
        """Start a bot for ``room``; the HTTP status and body to answer with."""
        self._forget_finished()
        current = self.bots.get(room)
        if current is not None and (current.alive or current.state == "starting"):
            why = "a bot is already running for this room"
            return 409, {"error": "bot_running", "message": why, **current.to_json()}
        if self._bot_in_room(room):
            return 409, {"error": "bot_present", "message": "a bot is already in this room"}
        if self.running() >= self.config.max_bots:
            why = f"this server runs at most {self.config.max_bots} bots at once; try again later"
            return 429, {"error": "too_many_bots", "message": why}
        token = self.hub.signer.mint(room, "bot", self.config.token_ttl_s)
        cmd = list(self.config.command)
        # The token travels in the environment ($HOOVIK_BOT_TOKEN), never on the command line,
        # where every user of the machine could read it in `ps`.
        extra = ["--signaling", self.config.signaling_url or signaling_url, "--room", room]
        if not any(a == "--http-port" or a.startswith("--http-port=") for a in cmd):
            extra += ["--http-port", "0"]
        argv = cmd + extra
        shown = " ".join([*cmd, *extra[:4]])
        bot = _BotProcess(room, shown, time.time(), log=deque(maxlen=self.config.log_lines))
        self.bots[room] = bot  # registered before the await: a double click cannot start two
        env = {**os.environ, **self.config.env, "HOOVIK_BOT_TOKEN": token}
        try:
            bot.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: signals reach its children too
            )
        except OSError as exc:
            bot.state, bot.message = "failed", f"could not start the bot: {exc}"
            self.failed_total += 1
            log.warning("room %s: bot launch failed: %s", room, exc)
            return 500, {"error": "bot_launch_failed", "message": bot.message, **bot.to_json()}
        self.launched_total += 1
        bot.reader = asyncio.create_task(self._read(bot), name=f"bot-log-{room}")
        self._ensure_watchdog()
        log.info("room %s: started bot pid %d: %s", room, bot.process.pid, bot.argv_display)
        return 202, bot.to_json()

    async def _read(self, bot: _BotProcess) -> None:
        """Keep the tail of the bot's output and notice its telemetry URL; then record its exit."""
        proc = bot.process
        assert proc is not None and proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue  # an over-long line: skip it
            if not raw:
                break
            line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()[:500]
            if line:
                bot.log.append(line)
                match = _TELEMETRY_LINE.search(line)
                if match and bot.telemetry_url is None:
                    bot.telemetry_url = match.group(1)
        code = await proc.wait()
        bot.exit_code = code
        if bot.stop_reason is not None:
            bot.state, bot.message = "exited", bot.stop_reason
        elif code == 0:
            bot.state, bot.message = "exited", "the bot left"
        else:
            bot.state = "failed"
            last = next((ln for ln in reversed(bot.log) if ln.strip()), "")
            bot.message = f"the bot exited with code {code}" + (f": {last}" if last else "")
            self.failed_total += 1
        log.info("room %s: bot exited with %s (%s)", bot.room, code, bot.message)

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch(), name="bot-launcher-watchdog")

    async def _watch(self) -> None:
        """Track joins; stop bots that never join, wait alone for nobody, or were left alone."""
        while any(b.alive for b in self.bots.values()):
            now = time.time()
            for bot in list(self.bots.values()):
                if not bot.alive:
                    continue
                self._refresh(bot, now)
                never_joined = bot.state == "starting" and bot.joined_at is None
                if never_joined and now - bot.started_at > self.config.startup_timeout_s:
                    why = f"the bot did not join within {self.config.startup_timeout_s:.0f} s"
                    await self._stop(bot, why, failed=True)
                    continue
                if self._humans_in_room(bot.room):
                    bot.idle_since, bot.seen_people = None, True
                    continue
                if bot.idle_since is None:
                    bot.idle_since = now if bot.state == "joined" else None
                    continue
                if bot.seen_people and now - bot.idle_since > self.config.idle_stop_s:
                    await self._stop(bot, "stopped: nobody was left in the meeting")
                elif not bot.seen_people and now - bot.idle_since > self.config.wait_for_people_s:
                    await self._stop(bot, "stopped: nobody came to the meeting")
            await asyncio.sleep(self.config.poll_s)

    async def _stop(self, bot: _BotProcess, reason: str, *, failed: bool = False) -> None:
        proc = bot.process
        if proc is None or proc.returncode is not None:
            return
        bot.stop_reason = reason
        bot.state = "stopping"
        if failed:
            self.failed_total += 1
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.config.stop_timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if bot.reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bot.reader, 2.0)
        bot.state = "failed" if failed else "exited"
        bot.message = reason

    async def stop_room(self, room: str, reason: str) -> bool:
        bot = self.bots.get(room)
        if bot is None or not bot.alive:
            return False
        await self._stop(bot, reason)
        return True

    async def close(self) -> None:
        """Stop every bot (server shutdown)."""
        await asyncio.gather(
            *(self._stop(b, "stopped: the server shut down") for b in self.bots.values() if b.alive),
            return_exceptions=True,
        )
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watchdog


WEB_HUB_KEY: web.AppKey[Hub] = web.AppKey("hoovik_web_hub")
LAUNCHER_KEY: web.AppKey[BotLauncher] = web.AppKey("hoovik_bot_launcher")


def _hub(request: web.Request) -> Hub:
    return request.app[WEB_HUB_KEY]


def _launcher(request: web.Request) -> BotLauncher | None:
    return request.app.get(LAUNCHER_KEY)


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


def _page(name: str) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / name, headers=_PAGE_HEADERS)


async def _landing(_: web.Request) -> web.StreamResponse:
    return _page("index.html")


async def _meeting(_: web.Request) -> web.StreamResponse:
    return _page("meeting.html")


async def _web_config(request: web.Request) -> web.Response:
    launcher = _launcher(request)
    return web.json_response(
        {
            "botLauncher": launcher is not None,
            "maxBots": launcher.config.max_bots if launcher else 0,
            "wsPath": "/ws",
        }
    )


async def _check_invite(request: web.Request) -> web.Response:
    """Would this (room, token) be let in? Answers the questions the meeting page must ask before
    it requests camera and microphone: which room, which role, and if not, why not."""
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, RecursionError):
        return _error(400, "bad_json", "body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "bad_json", "body must be a JSON object")
    room_id, token = body.get("room"), body.get("token")
    if not isinstance(room_id, str) or not ID_PATTERN.match(room_id):
        return _error(400, "bad_field", "This link has no valid room in it.")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        return _error(400, "bad_field", "This link has no invite token in it.")
    hub = _hub(request)
    try:
        claims = hub.signer.verify(token, room=room_id)
    except TokenError as exc:
        code, status, message = _TOKEN_ERRORS[exc.code]
        return _error(status, code, message)
    room = hub.get_room(room_id)
    if room is None:
        return _error(404, "room_not_found", "This meeting has ended or never existed.")
    return web.json_response(
        {
            "room": room.id,
            "roomName": room.name,
            "role": claims.role,
            "participantId": claims.pid,
            "expiresAt": claims.exp,
        }
    )


def _host_claims(request: web.Request, room_id: str) -> TokenClaims | web.Response:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "unauthorized", "Authorization: Bearer <host token> is required")
    try:
        claims = _hub(request).signer.verify(token.strip(), room=room_id)
    except TokenError as exc:
        code, status, _ = _TOKEN_ERRORS[exc.code]
        return _error(status, code, f"token refused: {exc.code}")
    if claims.role != "host":
        return _error(403, "forbidden", "only the host may do this")
    return claims


def _local_ws_url(request: web.Request) -> str:
    """The server as this machine reaches it: the local address this request came in on."""
    sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
    host, port = ("127.0.0.1", 8765) if not sock else (str(sock[0]), int(sock[1]))
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{port}/ws"


async def _launch_bot(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    auth = _host_claims(request, room_id)
    if isinstance(auth, web.Response):
        return auth
    launcher = _launcher(request)
    if launcher is None:
        why = "this server does not start bots (run it with --bot-command); use the command line instead"
        return _error(501, "bot_launcher_disabled", why)
    if _hub(request).get_room(room_id) is None:
        return _error(404, "room_not_found", "the room does not exist (any more)")
    status, body = await launcher.launch(room_id, _local_ws_url(request))
    return web.json_response(body, status=status)


async def _bot_status(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    auth = _host_claims(request, room_id)
    if isinstance(auth, web.Response):
        return auth
    launcher = _launcher(request)
    if launcher is None:
        present = False
        room = _hub(request).get_room(room_id)
        if room is not None:
            present = any(m.role == "bot" for m in room.members.values())
        return web.json_response({"state": "joined" if present else "none", "launched": False, "launcher": False})
    return web.json_response({**launcher.status(room_id), "launcher": True})


async def _stop_bot(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    auth = _host_claims(request, room_id)
    if isinstance(auth, web.Response):
        return auth
    launcher = _launcher(request)
    if launcher is None or not await launcher.stop_room(room_id, "stopped by the host"):
        return _error(404, "no_bot", "no bot started by this server is running for this room")
    return web.json_response(launcher.status(room_id))


def mount_web(app: web.Application, hub: Hub, launcher: BotLauncherConfig | None = None) -> None:
    """Add the pages, their static files, the page API and (if configured) the bot launcher."""
    app[WEB_HUB_KEY] = hub
    app.router.add_get("/", _landing)
    app.router.add_get("/meet", _meeting)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    app.router.add_get("/api/web", _web_config)
    app.router.add_post("/api/invite", _check_invite)
    app.router.add_post("/rooms/{room}/bot", _launch_bot)
    app.router.add_get("/rooms/{room}/bot", _bot_status)
    app.router.add_delete("/rooms/{room}/bot", _stop_bot)
    if launcher is not None:
        bots = BotLauncher(hub, launcher)
        app[LAUNCHER_KEY] = bots

        async def stop_bots(_: web.Application) -> None:
            await bots.close()

        app.on_shutdown.append(stop_bots)

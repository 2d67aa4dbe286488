"""Bot launchers: what starts a bot for a room when a host presses "Add the bot".

The web endpoints (:mod:`signaling.web`) talk to a :class:`BotLauncher`; a launcher sees rooms only
through a :class:`RoomView` (the hub implements it), so neither imports the other's module.
``SignalingServer(bot_launcher=factory)`` takes a :data:`LauncherFactory`, called once with the
hub when the app is built.

:class:`LocalBotLauncher` (``hoovik-bot serve --bot-command "hoovik-bot join --bundle B"``) runs one
``hoovik-bot join`` subprocess per room. It mints the bot's invite itself, bounds how many bots run
at once, reports each bot's state (starting, joined, exited, failed, with the tail of its output),
stops a bot whose room has had no person in it for a while, and stops every bot when the server
shuts down. It never runs a shell: the command is an argument vector. It knows nothing about models
or media; it only starts a process by its command line. docs/web.md ("Adding the bot") documents
the endpoints and states.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "BotLauncher",
    "BotLauncherConfig",
    "LauncherFactory",
    "LocalBotLauncher",
    "RoomView",
    "local_launcher",
]

log = logging.getLogger(__name__)


class RoomView(Protocol):
    def room_exists(self, room: str) -> bool: ...
    def bot_in_room(self, room: str) -> bool: ...
    def humans_in_room(self, room: str) -> bool: ...
    def mint_bot_token(self, room: str, ttl_s: float) -> str: ...


class BotLauncher(Protocol):
    async def launch(self, room: str, signaling_url: str) -> tuple[int, dict[str, Any]]: ...  # HTTP status + JSON body
    # {"state": "none"|"starting"|"joined"|"exited"|"failed"|"stopping", "message": str, "launched": bool, ...}
    async def status(self, room: str) -> dict[str, Any]: ...
    async def stop_room(self, room: str, reason: str) -> bool: ...
    async def close(self) -> None: ...
    def running(self) -> int: ...


LauncherFactory = Callable[[RoomView], BotLauncher]
"""Builds the server's launcher from the hub's :class:`RoomView` (``SignalingServer(bot_launcher=…)``).

Every answer of :meth:`BotLauncher.launch` other than 202 carries a ``state`` (what the page
should show: ``joined`` when a bot is already in the room, ``none`` when nothing runs) and
``error``/``message``."""


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


class LocalBotLauncher:
    """Starts, watches and stops ``hoovik-bot join`` processes, one per room at most."""

    def __init__(self, rooms: RoomView, config: BotLauncherConfig) -> None:
        if not config.command:
            raise ValueError("the bot command is empty")
        self.rooms = rooms
        self.config = config
        self.bots: dict[str, _BotProcess] = {}
        self.launched_total = 0
        self.failed_total = 0
        self._watchdog: asyncio.Task[None] | None = None

    def running(self) -> int:
        return sum(1 for b in self.bots.values() if b.alive or (b.state == "starting" and b.process is None))

    async def status(self, room: str) -> dict[str, Any]:
        return self._status(room)

    def _status(self, room: str) -> dict[str, Any]:
        bot = self.bots.get(room)
        if bot is None or (not bot.alive and self.rooms.bot_in_room(room)):
            # Nothing of ours runs there; a bot may have joined by the command line.
            present = self.rooms.bot_in_room(room)
            message = "a bot is in the meeting (not started by this server)" if present else ""
            return {"state": "joined" if present else "none", "message": message, "launched": False}
        self._refresh(bot, time.time())
        return {**bot.to_json(), "launched": True}

    def _refresh(self, bot: _BotProcess, now: float) -> None:
        """Follow a live bot between ``starting`` and ``joined`` by looking at its room."""
        if not bot.alive or bot.state not in ("starting", "joined"):
            return
        if self.rooms.bot_in_room(bot.room):
            if bot.state == "starting":
                bot.state, bot.joined_at, bot.message = "joined", now, "the bot is in the meeting"
        elif bot.state == "joined":
            bot.state, bot.message = "starting", "the bot left the room; waiting for it to return"

    def _forget_finished(self) -> None:
        """Drop the record of finished bots whose room is gone: memory stays bounded by live rooms."""
        for room, bot in list(self.bots.items()):
            if bot.state in ("exited", "failed") and not bot.alive and not self.rooms.room_exists(room):
                del self.bots[room]

    async def launch(self, room: str, signaling_url: str) -> tuple[int, dict[str, Any]]:
        """Start a bot for ``room``; the HTTP status and body to answer with."""
        self._forget_finished()
        current = self.bots.get(room)
        if current is not None and (current.alive or current.state == "starting"):
            why = "a bot is already running for this room"
            return 409, {"error": "bot_running", "message": why, **current.to_json()}
        if self.rooms.bot_in_room(room):
            why = "a bot is already in this room"
            return 409, {"error": "bot_present", "message": why, "state": "joined", "launched": False}
        if self.running() >= self.config.max_bots:
            why = f"this server runs at most {self.config.max_bots} bots at once; try again later"
            return 429, {"error": "too_many_bots", **self._status(room), "message": why}
        token = self.rooms.mint_bot_token(room, self.config.token_ttl_s)
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
                if self.rooms.humans_in_room(bot.room):
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


def local_launcher(config: BotLauncherConfig) -> LauncherFactory:
    """The factory ``SignalingServer(bot_launcher=...)`` takes, for subprocess bots."""

    def build(rooms: RoomView) -> BotLauncher:
        return LocalBotLauncher(rooms, config)

    return build

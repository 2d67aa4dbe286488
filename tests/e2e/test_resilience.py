"""The bot survives losing its signaling server: a real ``hoovik-bot serve`` process, SIGKILLed.

The server runs as a subprocess (so it can be killed hard) with ``--state FILE`` and a fixed
secret, the real bot runs in this process behind :class:`signaling.client.ReconnectingClient`, and
a real aiortc participant streams a clip to it. While the server is dead, results keep arriving over
the data channel; once it is back on the same port, the bot rejoins the same room under the same id
and results go on without a gap of more than a few seconds. Also: each host gets each result exactly
once when the subject has no data channel (fallback relay + host data channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from bot.config import BotConfig
from bot.contrib.clips import ClipMedia
from bot.contrib.simulated import SimulatedParticipant
from bot.runtime import Runtime
from bot.service import BotService
from bot.webrtc.ice import use_loopback_ice
from signaling.client import ReconnectingClient, ReconnectPolicy, create_room, mint_invite

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """``hoovik-bot serve`` in a subprocess on a fixed port, secret and (optionally) state file."""

    port: int
    secret: str
    log_dir: Path
    state: Path | None = None
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"server-{self.starts}.log"
        args = ["-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.state is not None:
            args += ["--state", str(self.state)]
        with log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "HOOVIK_SECRET": self.secret, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 60
        while "signaling server on" not in log.read_text(errors="replace"):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{log.read_text(errors='replace')}")
            await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: no close frames, no cleanup, exactly a crashed process."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def presence(self, room: str, host_token: str) -> list[str]:
        """Participant ids the server lists in ``room`` now (``GET /rooms/{room}`` as the host)."""
        headers = {"Authorization": f"Bearer {host_token}"}
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/rooms/{room}", headers=headers) as resp:
            if resp.status != 200:
                return []
            data = await resp.json()
        return [p["participantId"] for p in data["participants"]]


async def until(cond: Any, what: str, timeout: float = 30.0, info: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; {info() if info else ''}")
        await asyncio.sleep(0.05)


FAST = ReconnectPolicy(delay_s=0.2, delay_max_s=1.0, give_up_s=60.0)


@dataclass
class Stack:
    server: ServerProcess
    service: BotService
    room: str
    host_token: str
    session: ReconnectingClient | None = None
    bot_task: asyncio.Task[None] | None = None
    sims: list[SimulatedParticipant] = field(default_factory=list)

    async def start_bot(self) -> None:
        token = await mint_invite(self.server.url, self.room, self.host_token, "bot")
        self.session = await ReconnectingClient.connect(
            self.server.ws_url, self.room, token, "hoovik-bot", "Hoovik Bot", "bot", policy=FAST
        )
        self.bot_task = asyncio.create_task(self.service.run_session(self.session))

    async def add(self, pid: str, clip: ClipMedia, role: str = "participant", **kw: Any) -> SimulatedParticipant:
        token = (
            self.host_token
            if role == "host"
            else await mint_invite(self.server.url, self.room, self.host_token, "participant")
        )
        sim = SimulatedParticipant(self.server.ws_url, self.room, token, pid, pid, clip, role=role, **kw)  # type: ignore[arg-type]
        await sim.start()
        self.sims.append(sim)
        return sim

    def info(self) -> dict[str, Any]:
        p = self.service.participant
        return {
            "bot": self.service.telemetry.stats()["counters"],
            "session": self.session.counters if self.session else None,
            "errors": p.errors if p else None,
            "peers": list(p.peers) if p else None,
        }


@pytest_asyncio.fixture
async def stack(bot_config: BotConfig, runtime: Runtime, tmp_path: Path) -> AsyncIterator[Stack]:
    use_loopback_ice()
    server = ServerProcess(free_port(), secrets.token_hex(32), tmp_path, state=tmp_path / "rooms.json")
    await server.start()
    service = BotService(bot_config)
    await service.start_http()
    await service.load(runtime)
    room, host_token = await create_room(server.url, "resilience")
    s = Stack(server, service, room, host_token)
    try:
        yield s
    finally:
        for sim in s.sims:
            await sim.stop()
        if s.session is not None:
            await s.session.close()
        if s.bot_task is not None:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(s.bot_task), 10.0)
            s.bot_task.cancel()
        await service.stop()
        await server.kill()


def max_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


async def test_results_keep_flowing_while_signaling_is_killed_and_the_bot_rejoins(
    stack: Stack, clips: list[ClipMedia]
) -> None:
    await stack.start_bot()
    alice = await stack.add("alice", clips[0])
    await until(lambda: len(alice.results) >= 5, "results before the crash", info=stack.info)
    assert await stack.server.presence(stack.room, stack.host_token) == ["hoovik-bot", "alice"]
    participant = stack.service.participant
    assert participant is not None and stack.session is not None
    pc_before = participant.peers["alice"].pc

    t_kill = time.time()
    await stack.server.kill()
    # Signaling is gone; the peer connection is not, and neither is the bot.
    await until(lambda: stack.session is not None and not stack.session.connected, "bot notices", info=stack.info)
    await until(
        lambda: sum(r.arrived_wall > t_kill + 1.0 for r in alice.results) >= 5,
        "results over the data channel while signaling is down",
        info=stack.info,
    )
    assert stack.bot_task is not None and not stack.bot_task.done()
    assert participant.peers["alice"].pc is pc_before and pc_before.connectionState == "connected"
    await asyncio.sleep(2.0)  # stay down across several reconnect attempts (backoff capped at 1 s)

    await stack.server.start()  # same port, same secret, same state file: the room is known
    t_back = time.time()
    await until(lambda: stack.session is not None and stack.session.joins >= 2, "the bot rejoined", info=stack.info)
    assert "hoovik-bot" in await stack.server.presence(stack.room, stack.host_token)
    await until(
        lambda: sum(r.arrived_wall > t_back + 1.0 for r in alice.results) >= 5,
        "results after the restart",
        info=stack.info,
    )
    assert stack.service.participant is participant and participant.peers["alice"].pc is pc_before
    # One stream of results across the whole outage: never a gap of more than a few seconds.
    times = [r.arrived_wall for r in alice.results if r.arrived_wall > t_kill - 2.0]
    assert max_gap(times) < 3.0, max_gap(times)
    assert all(r.via == "datachannel" for r in alice.results)
    assert stack.session.counters.get("rejoins", 0) == 1
    assert stack.service.end_reason is None  # still running


async def test_a_host_gets_each_result_exactly_once_for_a_participant_without_a_data_channel(
    stack: Stack, clips: list[ClipMedia]
) -> None:
    await stack.start_bot()
    host = await stack.add("hostess", clips[1], role="host")
    bob = await stack.add("bob", clips[0], data_channel=False)
    await until(lambda: sum(r.message["participantId"] == "bob" for r in host.results) >= 8, "host gets bob's")
    await until(lambda: len(bob.results) >= 8, "bob gets his through signaling", info=stack.info)
    await asyncio.sleep(1.0)
    about_bob = [r for r in host.results if r.message["participantId"] == "bob"]
    seqs = [r.message["seq"] for r in about_bob]
    assert len(seqs) == len(set(seqs)), f"duplicates: {len(seqs) - len(set(seqs))} of {len(seqs)}"
    assert {r.via for r in about_bob} == {"signaling"}
    assert all(r.via == "signaling" for r in bob.results)
    # The host's own results still come on its own channel, once each.
    own = [r.message["seq"] for r in host.results if r.message["participantId"] == "hostess"]
    assert own and len(own) == len(set(own))
    assert {r.via for r in host.results if r.message["participantId"] == "hostess"} == {"datachannel"}

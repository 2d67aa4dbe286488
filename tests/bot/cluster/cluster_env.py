"""The cluster test stage (imported by conftest.py and the tests): a real ``redis-server`` that can
be killed and restarted on its port, the dispatcher and workers as real processes, a native
signaling server and simulated participants that offer again when the bot comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.contrib.clips import ClipMedia
from bot.contrib.simulated import SimulatedParticipant
from signaling.client import create_room, mint_invite
from signaling.server import SignalingServer

REPO = Path(__file__).resolve().parents[3]
RUN_WORKER = Path(__file__).resolve().parent / "run_worker.py"
CLIPS = ("crema-d/1001_DFA_ANG_XX.flv", "crema-d/1001_DFA_HAP_XX.flv", "ravdess/01-01-01-01-01-01-01.mp4")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """``redis-server`` on a fixed port and folder, so that it can be killed and started again."""

    port: int
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is missing: run scripts/setup-system.sh (Debian's redis-server)")
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise AssertionError(f"redis-server did not start: {(self.folder / 'redis.log').read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class RejoiningParticipant(SimulatedParticipant):
    """A simulated participant (which offers again when the bot comes back after a failover) with
    the arrival times of its results."""

    def result_times(self) -> list[float]:
        return [r.arrived_wall for r in list(self.results)]


@dataclass
class Proc:
    name: str
    proc: asyncio.subprocess.Process
    log: Path

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


@dataclass
class Cluster:
    redis: RedisServer
    server: SignalingServer
    host_tokens: dict[str, str]
    folder: Path
    face_asset: Path
    clips: list[ClipMedia]
    dispatcher_url: str = ""
    procs: list[Proc] = field(default_factory=list)
    participants: dict[str, RejoiningParticipant] = field(default_factory=dict)
    http: aiohttp.ClientSession | None = None
    bot_samples: list[dict[str, int]] = field(default_factory=list)
    _sampler: asyncio.Task[None] | None = None

    # -- processes --

    async def spawn(self, name: str, *argv: str) -> Proc:
        log = self.folder / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOOVIK_SHARED": str(self.face_asset.parents[1])}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        fh = open(log, "wb")  # noqa: SIM115 - handed to the process
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(RUN_WORKER), *argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(REPO)
        )
        fh.close()
        p = Proc(name, proc, log)
        self.procs.append(p)
        return p

    async def start_dispatcher(self) -> Proc:
        port = free_port()
        p = await self.spawn("dispatcher", "dispatch", "--redis", self.redis.url, "--port", str(port))
        self.dispatcher_url = f"http://127.0.0.1:{port}"
        await self.wait_for(lambda: "dispatcher on" in p.tail(), 30, "the dispatcher to start", proc=p)
        return p

    async def start_worker(self, name: str, capacity: int = 2, *extra: str) -> Proc:
        argv = ["worker", "--redis", self.redis.url, "--capacity", str(capacity), "--worker-id", name]
        argv += ["--face-asset", str(self.face_asset), "--max-cpu", "1.5", *extra]
        return await self.spawn(name, *argv)

    async def wait_ready(self, *workers: Proc, timeout: float = 120.0) -> None:
        for w in workers:
            await self.wait_for(lambda w=w: ": ready" in w.tail(), timeout, f"{w.name} to load its models", proc=w)

    async def run_meetings(
        self, n_workers: int, min_results: int
    ) -> tuple[dict[str, Proc], dict[str, dict[str, Any]], dict[str, str], str, list[str]]:
        """``n_workers`` workers (capacity 2) running one meeting each, with results flowing.

        Returns (workers by name, each job's record, room by job id, the worker with the most jobs, its jobs):
        the set-up of the failover and drain tests, which then take that worker away.
        """
        await self.start_dispatcher()
        workers = {f"w{i}": await self.start_worker(f"w{i}", 2) for i in range(n_workers)}
        await self.wait_ready(*workers.values())
        meetings = [await self.meeting(f"m{i}", clip=i) for i in range(n_workers)]
        ids = [await self.submit(room, token) for room, token in meetings]
        self.start_bot_sampler()

        async def all_running() -> bool:
            states = [(await self.job(i))["state"] for i in ids]
            return all(s == "running" for s in states)

        await self.wait_async(all_running, 90, "all jobs to run")
        await self.wait_for(
            lambda: all(len(p.result_times()) >= min_results for p in self.participants.values()), 90, "results"
        )
        before = {i: await self.job(i) for i in ids}
        victim = Counter(v["worker"] for v in before.values()).most_common(1)[0][0]
        moved = [i for i, v in before.items() if v["worker"] == victim]
        rooms = {i: room for i, (room, _) in zip(ids, meetings, strict=True)}
        return workers, before, rooms, victim, moved

    # -- REST --

    async def post(self, body: Any) -> tuple[int, dict[str, Any]]:
        assert self.http is not None
        async with self.http.post(f"{self.dispatcher_url}/bots", json=body) as resp:
            return resp.status, await resp.json()

    async def post_raw(self, data: bytes) -> tuple[int, dict[str, Any]]:
        assert self.http is not None
        async with self.http.post(f"{self.dispatcher_url}/bots", data=data) as resp:
            return resp.status, await resp.json()

    async def job(self, job_id: str) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.get(f"{self.dispatcher_url}/bots/{job_id}") as resp:
            assert resp.status == 200, await resp.text()
            data: dict[str, Any] = await resp.json()
            return data

    async def delete(self, job_id: str) -> tuple[int, dict[str, Any]]:
        assert self.http is not None
        async with self.http.delete(f"{self.dispatcher_url}/bots/{job_id}") as resp:
            return resp.status, await resp.json()

    async def text(self, path: str) -> str:
        assert self.http is not None
        async with self.http.get(f"{self.dispatcher_url}{path}") as resp:
            assert resp.status == 200, await resp.text()
            return await resp.text()

    # -- meetings --

    async def meeting(self, name: str, clip: int = 0, video: bool = True) -> tuple[str, str]:
        """A room with one streaming participant; returns (room, bot token)."""
        room, host = await create_room(self.server.url, name)
        self.host_tokens[room] = host
        token = await mint_invite(self.server.url, room, host, "participant")
        sim = RejoiningParticipant(
            self.server.ws_url, room, token, f"p-{name}", name, self.clips[clip % len(self.clips)], send_video=video
        )
        await sim.start()
        self.participants[room] = sim
        bot_token = await mint_invite(self.server.url, room, host, "bot", ttl_s=3600)
        return room, bot_token

    async def submit(self, room: str, bot_token: str) -> str:
        status, body = await self.post({"signaling": self.server.ws_url, "room": room, "token": bot_token})
        assert status == 202, body
        return str(body["id"])

    def bots_in(self, room: str) -> int:
        r = self.server.hub.get_room(room)
        return 0 if r is None else sum(1 for m in r.members.values() if m.role == "bot")

    def bot_ids(self, room: str) -> list[str]:
        r = self.server.hub.get_room(room)
        return [] if r is None else [m.pid for m in r.members.values() if m.role == "bot"]

    def start_bot_sampler(self) -> None:
        """Record how many bots each room has, every 50 ms (never more than one, says the issue)."""

        async def sample() -> None:
            while True:
                self.bot_samples.append({room: self.bots_in(room) for room in self.participants})
                await asyncio.sleep(0.05)

        self._sampler = asyncio.create_task(sample())

    def max_bots_seen(self) -> int:
        return max((max(s.values(), default=0) for s in self.bot_samples), default=0)

    async def wait_for(self, cond: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.logs(proc)}")
            if proc is not None and not proc.alive:
                raise AssertionError(
                    f"{proc.name} exited with {proc.proc.returncode} waiting for {what}\n{proc.tail()}"
                )
            await asyncio.sleep(0.1)

    async def wait_async(self, cond: Callable[[], Any], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not await cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")
            await asyncio.sleep(0.2)

    def logs(self, only: Proc | None = None) -> str:
        procs = [only] if only is not None else self.procs
        now = time.time()
        people = "\n".join(
            f"{room}: bots {self.bot_ids(room)}, {len(p.result_times())} results, last "
            f"{now - max(p.result_times(), default=now):.1f} s ago, pc {p.pc.connectionState if p.pc else None}"
            for room, p in self.participants.items()
        )
        tails = "\n".join(f"--- {p.name} (rc={p.proc.returncode}) ---\n{p.tail(2500)}" for p in procs)
        return f"{people}\n{tails}"

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        for sim in self.participants.values():
            with contextlib.suppress(Exception):
                await sim.stop()
        for p in self.procs:
            if p.alive:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.send_signal(signal.SIGKILL)
                await p.proc.wait()
        if self.http is not None:
            await self.http.close()
        await self.server.stop()

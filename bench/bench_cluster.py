"""Cluster benchmark: failover time, claim latency and throughput versus workers (docs/scale.md).

Usage:

    .venv/bin/python bench/bench_cluster.py                  # everything (about 6 minutes)
    .venv/bin/python bench/bench_cluster.py --kills 10 --claims 10 --workers 1,2,3 --window 20
    .venv/bin/python bench/bench_cluster.py --only failover  # or claim, throughput

What runs: a private ``redis-server`` (Debian's) on a free port, a native signaling server and the
simulated participants in this process (real aiortc peers streaming 160x120 clips from
``../shared/media``), and ``hoovik-bot worker`` processes with the shipped starter bundle (loopback
ICE, as in the tests). It prints medians and ratios:

* **Failover time**: ``kill -9`` the worker that runs a one-participant meeting, and time from the
  kill to the participant's first result from the new worker; ``--kills`` times; median and max
  (goal: max <= 10 s). The killed worker is replaced before the next round.
* **Claim latency**: from the job's creation (``POST /bots``) to its bot having joined the meeting,
  with idle workers (the job's ``claimLatency``: both ends are wall-clock stamps on this machine);
  p50 (goal <= 1 s).
* **Throughput**: for 1, 2, 3 workers (capacity 2 each), 2 meetings per worker, each with one
  participant, for ``--window`` seconds: results per second delivered, meetings served at >= 90 %
  of the engine's target rate, and each worker's CPU (cores) per meeting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.cluster.dispatcher import create_dispatcher_app  # noqa: E402
from bot.cluster.store import Store, connect  # noqa: E402
from bot.contrib.clips import ClipMedia, load_clip  # noqa: E402
from bot.contrib.simulated import SimulatedParticipant  # noqa: E402
from bot.webrtc.ice import use_loopback_ice  # noqa: E402
from signaling.client import create_room, mint_invite  # noqa: E402
from signaling.server import SignalingServer  # noqa: E402

SHARED = Path(os.environ.get("HOOVIK_SHARED", REPO.parent / "shared"))
CLIPS = ("crema-d/1001_DFA_ANG_XX.flv", "crema-d/1001_DFA_HAP_XX.flv", "ravdess/01-01-01-01-01-01-01.mp4")
WORKER_MAIN = (
    "import sys; from bot.webrtc.ice import use_loopback_ice; use_loopback_ice(); "
    "from bot.cluster.cli import main; sys.exit(main(sys.argv[1:]))"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rejoining(SimulatedParticipant):
    """Offers again when the bot comes back after a failover (as the meeting page does)."""

    async def _close_pc(self) -> None:
        await super()._close_pc()
        self.bot_id = None


@dataclass
class Stage:
    folder: Path
    clips: list[ClipMedia]
    redis_port: int = 0
    redis: subprocess.Popen[bytes] | None = None
    server: SignalingServer | None = None
    http: aiohttp.ClientSession | None = None
    api: str = ""
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    participants: list[Rejoining] = field(default_factory=list)
    _runner: Any = None
    _store_redis: Any = None

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    async def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is missing: run scripts/setup-system.sh")
        self.redis_port = free_port()
        self.redis = subprocess.Popen(
            [exe, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.folder), "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)
        use_loopback_ice()
        self.server = SignalingServer(secrets.token_bytes(32))
        await self.server.start("127.0.0.1", 0)
        from aiohttp import web

        self._store_redis = connect(self.redis_url)
        store = Store(self._store_redis)
        await store.ensure_group()
        self._runner = web.AppRunner(create_dispatcher_app(store), access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.api = f"http://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession()

    def spawn_worker(self, name: str, capacity: int = 2) -> None:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - handed to the process
        argv = [sys.executable, "-c", WORKER_MAIN, "worker", "--redis", self.redis_url, "--worker-id", name]
        argv += [
            "--capacity",
            str(capacity),
            "--max-cpu",
            "1.5",
            "--face-asset",
            str(SHARED / "models/face_landmarker.task"),
        ]
        self.workers[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))

    async def wait_ready(self, names: list[str], timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            while ": ready" not in (self.folder / f"{name}.log").read_text(errors="replace"):
                if time.monotonic() > deadline or self.workers[name].poll() is not None:
                    raise RuntimeError(f"{name} did not start:\n{(self.folder / f'{name}.log').read_text()[-2000:]}")
                await asyncio.sleep(0.2)

    def stop_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.workers.pop(name)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        proc.wait()

    async def meeting(self, name: str, clip: int) -> tuple[str, str, Rejoining]:
        assert self.server is not None
        room, host = await create_room(self.server.url, name)
        token = await mint_invite(self.server.url, room, host, "participant")
        sim = Rejoining(self.server.ws_url, room, token, f"p-{name}", name, self.clips[clip % len(self.clips)])
        await sim.start()
        self.participants.append(sim)
        return room, await mint_invite(self.server.url, room, host, "bot", ttl_s=3600), sim

    async def submit(self, room: str, token: str) -> str:
        assert self.http is not None and self.server is not None
        body = {"signaling": self.server.ws_url, "room": room, "token": token}
        async with self.http.post(f"{self.api}/bots", json=body) as resp:
            data = await resp.json()
            assert resp.status == 202, data
            return str(data["id"])

    async def job(self, job_id: str) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.get(f"{self.api}/bots/{job_id}") as resp:
            data: dict[str, Any] = await resp.json()
            return data

    async def delete(self, job_id: str) -> None:
        assert self.http is not None
        async with self.http.delete(f"{self.api}/bots/{job_id}") as resp:
            await resp.read()

    async def until(self, job_id: str, states: tuple[str, ...], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = await self.job(job_id)
            if view["state"] in states:
                return view
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} stuck in {view}")
            await asyncio.sleep(0.05)

    async def drop_participants(self) -> None:
        for sim in self.participants:
            with contextlib.suppress(Exception):
                await sim.stop()
        self.participants.clear()

    async def close(self) -> None:
        await self.drop_participants()
        for name in list(self.workers):
            self.stop_worker(name)
        if self.http is not None:
            await self.http.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._store_redis is not None:
            await self._store_redis.aclose()
        if self.server is not None:
            await self.server.stop()
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()


async def bench_failover(stage: Stage, kills: int) -> dict[str, Any]:
    names = ["f0", "f1", "f2"]
    for n in names:
        stage.spawn_worker(n)
    await stage.wait_ready(names)
    times: list[float] = []
    moves: list[float] = []
    spare = 3
    for k in range(kills):
        room, token, sim = await stage.meeting(f"fail{k}", k)
        job_id = await stage.submit(room, token)
        view = await stage.until(job_id, ("running",))
        while not sim.results:
            await asyncio.sleep(0.05)
        victim = view["worker"]
        stage.stop_worker(victim)
        killed = time.time()
        while not any(r.arrived_wall > killed + 0.2 for r in list(sim.results)):
            if time.time() - killed > 60:
                raise RuntimeError("no result within 60 s of the kill")
            await asyncio.sleep(0.02)
        first = min(r.arrived_wall for r in sim.results if r.arrived_wall > killed + 0.2)
        times.append(first - killed)
        moved = await stage.job(job_id)
        moves.append(float(moved["since"]) - killed)
        print(
            f"  kill {k + 1}: moved to {moved['worker']} after {moves[-1]:.2f} s, results again after {times[-1]:.2f} s"
        )
        await stage.delete(job_id)
        await stage.until(job_id, ("exited", "failed"))
        await stage.drop_participants()
        name = f"f{spare}"
        spare += 1
        stage.spawn_worker(name)
        await stage.wait_ready([name])
    for n in list(stage.workers):
        stage.stop_worker(n, signal.SIGTERM)
    return {
        "kills": kills,
        "resultsAgainMedianS": statistics.median(times),
        "resultsAgainMaxS": max(times),
        "claimedElsewhereMedianS": statistics.median(moves),
    }


async def bench_claim(stage: Stage, claims: int) -> dict[str, Any]:
    stage.spawn_worker("c0", capacity=4)
    await stage.wait_ready(["c0"])
    room, token, _ = await stage.meeting("claim", 0)
    latencies: list[float] = []
    for _ in range(claims):
        job_id = await stage.submit(room, token)
        view = await stage.until(job_id, ("running",))
        data = await stage._store_redis.hget(f"hoovik:job:{job_id}", "claimLatency")
        latencies.append(float(data) if data else float(view["joinedAt"]) - float(view["createdAt"]))
        await stage.delete(job_id)
        await stage.until(job_id, ("exited",))
        await asyncio.sleep(0.5)
    await stage.drop_participants()
    stage.stop_worker("c0", signal.SIGTERM)
    q = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) > 1 else latencies * 19
    return {"claims": claims, "p50S": statistics.median(latencies), "p95S": q[18], "maxS": max(latencies)}


async def bench_throughput(stage: Stage, counts: list[int], window: float) -> list[dict[str, Any]]:
    rows = []
    for n in counts:
        names = [f"t{n}-{i}" for i in range(n)]
        for name in names:
            stage.spawn_worker(name, capacity=2)
        await stage.wait_ready(names)
        jobs = []
        sims = []
        for m in range(2 * n):
            room, token, sim = await stage.meeting(f"tp{n}-{m}", m)
            jobs.append(await stage.submit(room, token))
            sims.append(sim)
        for job_id in jobs:
            await stage.until(job_id, ("running",), 120)
        await asyncio.sleep(5.0)  # warm-up: ICE, first sequences
        procs = {name: psutil.Process(stage.workers[name].pid) for name in names}
        me = psutil.Process()
        cpu0 = {name: p.cpu_times() for name, p in procs.items()}
        me0 = me.cpu_times()
        counts0 = [len(s.results) for s in sims]
        t0 = time.monotonic()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - t0
        rates = [(len(s.results) - c) / elapsed for s, c in zip(sims, counts0, strict=True)]
        cpu = {
            name: (p.cpu_times().user + p.cpu_times().system - cpu0[name].user - cpu0[name].system) / elapsed
            for name, p in procs.items()
        }
        me_cpu = (me.cpu_times().user + me.cpu_times().system - me0.user - me0.system) / elapsed
        target = max(rates) if rates else 0.0
        rows.append(
            {
                "workers": n,
                "meetings": len(jobs),
                "resultsPerS": sum(rates),
                "perMeetingMedian": statistics.median(rates),
                "served90": sum(1 for r in rates if r >= 0.9 * target),
                "workerCpuCores": cpu,
                "participantsProcessCpuCores": me_cpu,
                "loadAvg1m": os.getloadavg()[0],
            }
        )
        for job_id in jobs:
            await stage.delete(job_id)
        for job_id in jobs:
            await stage.until(job_id, ("exited",), 60)
        await stage.drop_participants()
        for name in names:
            stage.stop_worker(name, signal.SIGTERM)
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--claims", type=int, default=10)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--only", choices=["failover", "claim", "throughput"])
    args = parser.parse_args()
    clips = [load_clip(SHARED / "media" / c, width=160, height=120, max_s=4.0) for c in CLIPS]
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        stage = Stage(Path(tmp), clips)
        await stage.start()
        try:
            print(f"machine: {os.cpu_count()} cores; workers: starter bundle; participants: 160x120 clips")
            if args.only in (None, "claim"):
                c = await bench_claim(stage, args.claims)
                print(
                    f"claim latency (POST /bots -> bot joined, idle worker, n={c['claims']}): "
                    f"p50 {c['p50S']:.3f} s, p95 {c['p95S']:.3f} s, max {c['maxS']:.3f} s  (goal p50 <= 1 s: "
                    f"{'met' if c['p50S'] <= 1.0 else 'MISSED'}; p50/goal = {c['p50S']:.2f})"
                )
            if args.only in (None, "failover"):
                f = await bench_failover(stage, args.kills)
                worst = f["resultsAgainMaxS"]
                print(
                    f"failover (kill -9 -> first result again, n={f['kills']}): "
                    f"median {f['resultsAgainMedianS']:.2f} s, max {worst:.2f} s "
                    f"(goal max <= 10 s: {'met' if worst <= 10 else 'MISSED'}; max/goal = {worst / 10:.2f}); "
                    f"claimed elsewhere after a median {f['claimedElsewhereMedianS']:.2f} s"
                )
            if args.only in (None, "throughput"):
                rows = await bench_throughput(stage, [int(x) for x in args.workers.split(",")], args.window)
                base = rows[0]["resultsPerS"] or 1.0
                print("throughput (2 meetings per worker, 1 participant each):")
                print(f"  {'workers':>7} {'meetings':>8} {'results/s':>9} {'x1':>5} {'served':>6}  worker CPU (cores)")
                for r in rows:
                    cpus = " ".join(f"{v:.2f}" for v in r["workerCpuCores"].values())
                    per = statistics.mean(r["workerCpuCores"].values()) / 2
                    ratio = r["resultsPerS"] / base
                    print(
                        f"  {r['workers']:>7} {r['meetings']:>8} {r['resultsPerS']:>9.2f} {ratio:>5.2f} "
                        f"{r['served90']:>3}/{r['meetings']:<2}  {cpus}  (~{per:.2f} cores/meeting; participants "
                        f"process {r['participantsProcessCpuCores']:.2f} cores; load {r['loadAvg1m']:.1f})"
                    )
        finally:
            await stage.close()


if __name__ == "__main__":
    asyncio.run(main())

"""The load generator's measurements: the bot process and its /stats/json, and the run's summary."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
import psutil

if TYPE_CHECKING:
    from bot.contrib.loadgen import LoadgenOptions, LoadParticipant

POOL_KEYS = ("batchSizes", "completed", "failed", "rejected", "meanWaitMs", "busyS", "cpuS", "busyFraction")


# -- monitoring ------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the measurement start
    bot_cpu: float | None  # the bot and its child processes (predictor, embedder, faces)
    bot_rss: int | None  # the same
    loadgen_cpu: float
    system_cpu: float  # the whole machine, 100 = one core (so others = system - bot - loadgen)
    load1: float


@dataclass
class Monitor:
    """Samples the bot process (psutil) every second and its /stats/json every few seconds."""

    bot_pid: int | None
    stats_url: str | None
    interval: float = 1.0
    stats_every: float = 5.0
    samples: list[Sample] = field(default_factory=list)
    stats: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    last_stats: dict[str, Any] | None = None
    t0: float = 0.0
    max_samples: int = 36_000

    async def run(self) -> None:
        bot = psutil.Process(self.bot_pid) if self.bot_pid else None
        tree = BotTree(bot)
        me = psutil.Process()
        me.cpu_percent(None)
        psutil.cpu_percent(None)
        ncpu = psutil.cpu_count() or 1
        self.t0 = time.time()
        next_stats = 0.0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while True:
                await asyncio.sleep(self.interval)
                now = time.time() - self.t0
                cpu, rss = tree.sample()
                if len(self.samples) < self.max_samples:
                    system = psutil.cpu_percent(None) * ncpu
                    self.samples.append(Sample(now, cpu, rss, me.cpu_percent(None), system, os.getloadavg()[0]))
                if self.stats_url and now >= next_stats:
                    next_stats = now + self.stats_every
                    stats = await self.fetch(http)
                    if stats is not None:
                        self.last_stats = stats
                        keep = {k: stats.get(k) for k in ("throttle", "queues", "counters", "samplingFps")}
                        if len(self.stats) < self.max_samples:
                            self.stats.append((now, keep))

    async def fetch(self, http: aiohttp.ClientSession | None = None) -> dict[str, Any] | None:
        if not self.stats_url:
            return None
        own = http is None
        session = http or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with session.get(self.stats_url) as resp:
                data = await resp.json()
                return data if isinstance(data, dict) else None
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        finally:
            if own:
                await session.close()


class BotTree:
    """CPU and RSS of the bot process plus its children: its compute runs in child processes.

    psutil's ``cpu_percent`` measures since its previous call on the same object, so the objects
    are kept; a child seen for the first time counts from the next sample.
    """

    def __init__(self, bot: psutil.Process | None) -> None:
        self.bot = bot
        self.procs: dict[int, psutil.Process] = {}
        if bot is not None:
            self._track(bot)

    def _track(self, proc: psutil.Process) -> None:
        try:
            proc.cpu_percent(None)
            self.procs[proc.pid] = proc
        except psutil.Error:
            pass

    def sample(self) -> tuple[float | None, int | None]:
        """(CPU %, 100 = one core; RSS bytes) of the tree, or (None, None) once the bot is gone."""
        if self.bot is None:
            return None, None
        try:
            children = self.bot.children(recursive=True)
        except psutil.Error:
            self.bot = None
            return None, None
        for child in children:
            if child.pid not in self.procs:
                self._track(child)
        cpu, rss = 0.0, 0
        for pid, proc in list(self.procs.items()):
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += int(proc.memory_info().rss)
            except psutil.Error:
                del self.procs[pid]  # a child that exited; its last interval is lost
        return cpu, rss


def progress_line(parts: list[LoadParticipant], started: float, measure_from: float) -> str:
    now = time.time()
    phase = "warm-up" if now < measure_from else "measuring"
    rates = []
    for p in parts:
        recent = [a for a in p.arrivals if now - a.wall <= 5.0]
        rates.append(len(recent) / 5.0)
    lat = [a.wall * 1000 - a.message["capturedAt"] for p in parts for a in p.arrivals if now - a.wall <= 5.0]
    p50 = f"{np.percentile(lat, 50):.0f}" if lat else "-"
    return (
        f"t={now - started:6.1f}s {phase:<9} rate/s min {min(rates):.2f} mean {sum(rates) / len(rates):.2f} "
        f"bot-side p50 {p50} ms"
    )


def _pct(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p95": round(float(np.percentile(a, 95)), 1),
        "max": round(float(a.max()), 1),
    }


def _drift(times: Sequence[float], values: Sequence[float]) -> dict[str, float]:
    """Latency trend: least-squares slope (ms per minute) and p50 of the first vs last third."""
    if len(values) < 30:
        return {}
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    slope = float(np.polyfit(t - t[0], v, 1)[0]) * 60.0
    order = np.argsort(t)
    thirds = np.array_split(v[order], 3)
    return {
        "slopeMsPerMin": round(slope, 2),
        "p50FirstThird": round(float(np.percentile(thirds[0], 50)), 1),
        "p50LastThird": round(float(np.percentile(thirds[-1], 50)), 1),
    }


def summarise(
    parts: list[LoadParticipant],
    monitor: Monitor,
    started: float,
    measure_from: float,
    ended: float,
    opts: LoadgenOptions,
    final_stats: dict[str, Any] | None,
) -> dict[str, Any]:
    window = max(1e-9, ended - measure_from)
    rows: list[dict[str, Any]] = []
    all_bot: list[float] = []
    all_e2e: list[float] = []
    e2e_times: list[float] = []
    transport: list[float] = []
    unmapped = 0
    for p in parts:
        arrivals = [a for a in p.arrivals if a.wall >= measure_from]
        bot_side = [a.wall * 1000 - a.message["capturedAt"] for a in arrivals if a.message.get("capturedAt")]
        e2e = []
        for a in arrivals:
            sent = a.sent
            if sent is None:
                unmapped += 1
                continue
            e2e.append((a.wall - sent) * 1000)
            e2e_times.append(a.wall - measure_from)
            transport.append(a.message["capturedAt"] - sent * 1000)
        all_bot.extend(bot_side)
        all_e2e.extend(e2e)
        profiles: dict[str, int] = {}
        for a in arrivals:
            m = str((a.message.get("result") or {}).get("modality"))
            profiles[m] = profiles.get(m, 0) + 1
        seqs = [a.message.get("seq", 0) for a in arrivals]
        rows.append(
            {
                "participantId": p.participant_id,
                "speaking": p.speaking,
                "clip": Path(p.encoded.clip.source).name,
                "results": len(arrivals),
                "resultsPerSecond": round(len(arrivals) / window, 3),
                "profiles": profiles,
                "botSideMs": _pct(bot_side),
                "e2eMs": _pct(e2e),
                "seqGaps": int(sum(1 for a, b in itertools.pairwise(seqs) if b != a + 1)),
                "viaSignaling": p.via_signaling,
                "connectedAt": None if p.connected_at is None else round(p.connected_at - started, 2),
                "pcState": None if p.pc is None else p.pc.connectionState,
            }
        )
    samples = [s for s in monitor.samples if s.t + monitor.t0 >= measure_from]
    cpu = [s.bot_cpu for s in samples if s.bot_cpu is not None]
    rss = [s.bot_rss for s in samples if s.bot_rss is not None]
    resources: dict[str, Any] = {}
    if cpu:
        resources["botCpuPercent"] = {
            "mean": round(float(np.mean(cpu)), 1),
            "p95": round(float(np.percentile(cpu, 95)), 1),
            "max": round(float(np.max(cpu)), 1),
        }
    if rss:
        base = rss[0]
        resources["botRssMiB"] = {
            "start": round(base / 2**20, 1),
            "end": round(rss[-1] / 2**20, 1),
            "max": round(max(rss) / 2**20, 1),
            "min": round(min(rss) / 2**20, 1),
            "growthPct": round(100.0 * (rss[-1] - base) / base, 2),
            "maxDeviationPct": round(100.0 * max(abs(r - base) for r in rss) / base, 2),
        }
    lg = [s.loadgen_cpu for s in samples]
    if lg:
        resources["loadgenCpuPercent"] = {"mean": round(float(np.mean(lg)), 1), "max": round(float(np.max(lg)), 1)}
    resources["load1"] = {"mean": round(float(np.mean([s.load1 for s in samples])), 2)} if samples else {}
    if samples:
        # CPU used by everything else on the machine (other users, the signaling server), 100 = one core.
        others = [max(0.0, s.system_cpu - (s.bot_cpu or 0.0) - s.loadgen_cpu) for s in samples]
        resources["systemCpuPercent"] = {"mean": round(float(np.mean([s.system_cpu for s in samples])), 1)}
        resources["otherCpuPercent"] = {
            "mean": round(float(np.mean(others)), 1),
            "p95": round(float(np.percentile(others, 95)), 1),
        }
    rates = [float(r["resultsPerSecond"]) for r in rows]
    bot: dict[str, Any] = {}
    if final_stats:
        bot = {
            "throttle": final_stats.get("throttle"),
            "counters": final_stats.get("counters"),
            "pools": {k: {kk: v.get(kk) for kk in POOL_KEYS} for k, v in (final_stats.get("pools") or {}).items()},
            "overall": final_stats.get("overall"),
            "model": final_stats.get("model"),
            "loop": final_stats.get("loop"),
            "cpuByStage": final_stats.get("cpuByStage"),
            "udp": (final_stats.get("process") or {}).get("udp"),
            "participantsBelowTarget": final_stats.get("participantsBelowTarget"),
            "participantDrops": {p["participantId"]: p.get("drops", {}) for p in final_stats.get("participants", [])},
            "participants": {
                p["participantId"]: {k: p.get(k) for k in ("profile", "resultsPerSecond", "latencyMs", "counters")}
                for p in final_stats.get("participants", [])
            },
        }
    return {
        "options": {
            "participants": opts.participants,
            "speaking": opts.speaking,
            "durationS": opts.duration,
            "warmupS": opts.warmup,
            "sender": opts.sender,
            "resolution": f"{opts.width}x{opts.height}@{opts.fps:g}",
        },
        "measuredS": round(window, 1),
        "participants": rows,
        "rate": {"min": round(min(rates), 3), "mean": round(float(np.mean(rates)), 3)} if rates else {},
        # Peer connections not "connected" when the run ended (closed by ICE consent, DTLS, ...).
        "connectionsLost": sum(1 for r in rows if r["pcState"] != "connected"),
        "botSideMs": _pct(all_bot),
        "e2eMs": _pct(all_e2e),
        "e2eDrift": _drift(e2e_times, all_e2e),
        "transportMs": _pct(transport),
        "unmappedResults": unmapped,
        "resources": resources,
        "resourceSeries": [
            {
                "t": round(s.t, 1),
                "botCpu": s.bot_cpu,
                "botRssMiB": None if s.bot_rss is None else round(s.bot_rss / 2**20, 1),
            }
            for s in monitor.samples[:: max(1, len(monitor.samples) // 120)]
        ],
        "throttleSeries": [
            {
                "t": round(t, 1),
                "fps": (s.get("throttle") or {}).get("fps"),
                "queues": s.get("queues"),
                "loopLagMs": (s.get("loop") or {}).get("windowMaxMs"),
                "belowTarget": s.get("participantsBelowTarget"),
                "udpQueuedBytes": ((s.get("process") or {}).get("udp") or {}).get("queuedBytes"),
            }
            for t, s in monitor.stats
        ],
        "bot": bot,
    }


def format_summary(s: dict[str, Any]) -> str:
    o = s["options"]
    lines = [
        f"loadgen summary: {o['participants']} participants ({o['speaking']} speaking), {o['resolution']}, "
        f"{s['measuredS']} s measured after {o['warmupS']} s warm-up, sender={o['sender']}",
        f"{'participant':<12}{'speak':>6}{'results':>8}{'rate/s':>8}{'bot p50':>9}{'bot p95':>9}"
        f"{'e2e p50':>9}{'e2e p95':>9}{'e2e max':>9}  profiles",
    ]
    for r in s["participants"]:
        b, e = r["botSideMs"], r["e2eMs"]
        prof = ",".join(f"{k}:{v}" for k, v in sorted(r["profiles"].items()))
        lines.append(
            f"{r['participantId']:<12}{'yes' if r['speaking'] else 'no':>6}"
            f"{r['results']:>8}{r['resultsPerSecond']:>8.2f}"
            f"{b.get('p50', math.nan):>9.1f}{b.get('p95', math.nan):>9.1f}"
            f"{e.get('p50', math.nan):>9.1f}{e.get('p95', math.nan):>9.1f}{e.get('max', math.nan):>9.1f}  {prof}"
        )
    b, e, d = s["botSideMs"], s["e2eMs"], s["e2eDrift"]
    lines.append(
        f"{'all':<12}{'':>6}{sum(r['results'] for r in s['participants']):>8}"
        f"{s['rate'].get('min', math.nan):>8.2f}{b.get('p50', math.nan):>9.1f}{b.get('p95', math.nan):>9.1f}"
        f"{e.get('p50', math.nan):>9.1f}{e.get('p95', math.nan):>9.1f}{e.get('max', math.nan):>9.1f}"
        "  (rate column: min)"
    )
    res = s["resources"]
    cpu, rss = res.get("botCpuPercent", {}), res.get("botRssMiB", {})
    lines.append(
        f"e2e drift: {d.get('slopeMsPerMin', math.nan)} ms/min (p50 first third {d.get('p50FirstThird', math.nan)}, "
        f"last third {d.get('p50LastThird', math.nan)}); transport (send→bot receive) "
        f"p50 {s['transportMs'].get('p50', math.nan)} ms; unmapped results {s['unmappedResults']}"
    )
    lines.append(
        f"bot CPU mean {cpu.get('mean', math.nan)}% p95 {cpu.get('p95', math.nan)}% (100% = one core); "
        f"RSS {rss.get('start', math.nan)} -> {rss.get('end', math.nan)} MiB "
        f"(max dev {rss.get('maxDeviationPct', math.nan)}%); "
        f"loadgen CPU mean {res.get('loadgenCpuPercent', {}).get('mean', math.nan)}%; "
        f"other processes CPU mean {res.get('otherCpuPercent', {}).get('mean', math.nan)}%; "
        f"load1 {res.get('load1', {}).get('mean')}"
    )
    bot = s.get("bot") or {}
    if bot:
        t = bot.get("throttle") or {}
        c = bot.get("counters") or {}
        drops = {k: v for k, v in c.items() if k.endswith("_dropped")}
        loop = bot.get("loop") or {}
        lines.append(
            f"connections lost {s.get('connectionsLost')}; event-loop lag max {loop.get('maxMs')} ms, "
            f"last 5 s p95 {loop.get('p95Ms')} ms; participants below target {bot.get('participantsBelowTarget')}; "
            f"UDP receive drops {(bot.get('udp') or {}).get('drops')}"
        )
        lines.append(
            f"throttle: fps {t.get('fps')} decreases {t.get('decreases')} {t.get('decreaseCauses') or ''} "
            f"recoveries {t.get('recoveries')}; "
            f"drops {drops or 0}; vad gated {c.get('vad_gated', 0)}, silent {c.get('audio_silent', 0)}"
        )
        for name, p in (bot.get("pools") or {}).items():
            lines.append(
                f"pool {name:<9} batches {p.get('batchSizes')} mean wait {p.get('meanWaitMs')} ms "
                f"busy {p.get('busyS')} s, CPU {p.get('cpuS')} s"
            )
    return "\n".join(lines)

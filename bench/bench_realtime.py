"""Real-time benchmark: signaling server, bot and load generator, each in its own process.

Usage (one command; see docs/engine.md for the measured table):

    .venv/bin/python bench/bench_realtime.py                       # 10 participants, 2 speaking, 300 s
    .venv/bin/python bench/bench_realtime.py --duration 60         # a short run
    .venv/bin/python bench/bench_realtime.py --duration 60 --sweep 10,12,14,16   # largest N at >= 2/s
    .venv/bin/python bench/bench_realtime.py --precision fp32 --json out.json
    .venv/bin/python bench/bench_realtime.py --bundle starter --duration 60 --sweep 10,20,30   # the shipped starter

What runs: ``hoovik-bot serve``; ``hoovik-bot join`` with production-size models (the seeded,
untrained 12-layer Wav2Vec2 ``untrained:production`` and the untrained production-size bundle of
``models.untrained.ensure_production_bundle``: 18,900 XGBoost trees, 200-tree forests), so it pays
the real inference cost; and ``hoovik-bot loadgen``: N participants streaming 640x480 at 15 fps
from the shared clips, the first ``--speaking`` with speech, the others silence. Every run gets a
fresh room and a fresh bot. The load generator measures; this script checks the targets:

* every participant >= 3 results/s (2/s for the ``--sweep`` capacity search);
* end-to-end latency p50 <= 150 ms and p95 <= 400 ms;
* no upward latency drift: the p50 of the last third of the run is at most max(20 ms, 10 %) above
  the first third's (the least-squares slope is reported too; over a short run it is mostly noise);
* bot RSS flat within 5 % after the warm-up.

The machine's load average is recorded before and during each run; with ``--wait-load`` the run
waits (up to 10 min) for the 1-minute load to fall below that value first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.assets import cache_dir, locate_face_asset  # noqa: E402
from models.starter.shipped import starter_bundle_dir  # noqa: E402
from models.untrained import ensure_production_bundle  # noqa: E402
from signaling.client import create_room, mint_invite  # noqa: E402

TARGET_RATE = 3.0
SWEEP_RATE = 2.0
TARGET_P50_MS = 150.0
TARGET_P95_MS = 400.0
MAX_THIRDS_RISE_MS = 20.0
MAX_THIRDS_RISE_FRACTION = 0.10
MAX_RSS_DEVIATION_PCT = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, verbose: bool = False) -> list[str]:
    return [sys.executable, "-m", "bot.cli", *(["-v"] if verbose else []), *args]


async def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.time() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.time() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for_load(limit: float | None) -> None:
    if limit is None:
        return
    deadline = time.time() + 600
    while os.getloadavg()[0] > limit and time.time() < deadline:
        print(f"waiting for load1 {os.getloadavg()[0]:.2f} to fall below {limit}", flush=True)
        time.sleep(15)


async def run_once(
    args: argparse.Namespace, participants: int, bundle: Path, face: Path, log_dir: Path
) -> dict[str, Any]:
    """One fresh room, bot and load generator; returns the load generator's summary plus context."""
    _wait_for_load(args.wait_load)
    load_before = os.getloadavg()
    sig_port, http_port = _free_port(), _free_port()
    serve = bot = None
    try:
        serve = subprocess.Popen(
            _cli("serve", "--port", str(sig_port)), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{sig_port}"
        await _wait_http(f"{base}/health", 30, serve)
        room, host_token = await create_room(base, f"bench-{participants}")
        bot_token = await mint_invite(base, room, host_token, "bot")
        bot_log = open(log_dir / f"bot-{participants}.log", "wb")  # noqa: SIM115 - closed by the process end
        join = [
            "join",
            "--signaling",
            f"ws://127.0.0.1:{sig_port}/ws",
            f"--room={room}",  # one form that never reads an id as an option
            "--token",
            bot_token,
            "--http-port",
            str(http_port),
            "--bundle",
            str(bundle),
            "--audio-model",
            args.audio_model,
            "--precision",
            args.precision,
            "--face-asset",
            str(face),
        ]
        if args.config:
            join += ["--config", args.config]
        t_load = time.time()
        bot = subprocess.Popen(_cli(*join, verbose=args.verbose), cwd=REPO, stdout=bot_log, stderr=subprocess.STDOUT)
        await _wait_http(f"http://127.0.0.1:{http_port}/ready", 300, bot)
        print(f"[N={participants}] bot pid {bot.pid} ready in {time.time() - t_load:.1f} s", flush=True)
        out_json = log_dir / f"loadgen-{participants}.json"
        loadgen = _cli(
            "loadgen",
            "--signaling",
            base,
            f"--room={room}",  # one form that never reads an id as an option
            "--host-token",
            host_token,
            "--participants",
            str(participants),
            "--speaking",
            str(min(args.speaking, participants)),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--sender",
            args.sender,
            "--bot-pid",
            str(bot.pid),
            "--bot-stats",
            f"http://127.0.0.1:{http_port}/stats/json",
            "--json",
            str(out_json),
        )
        if args.quiet:
            loadgen.append("--quiet")
        rc = await asyncio.to_thread(subprocess.call, loadgen, cwd=REPO)
        if rc != 0:
            raise RuntimeError(f"loadgen exited with {rc}; bot log: {log_dir / f'bot-{participants}.log'}")
        summary: dict[str, Any] = json.loads(out_json.read_text())
    finally:
        _stop(bot)
        _stop(serve)
    summary["loadBefore"] = [round(x, 2) for x in load_before]
    summary["precision"] = args.precision
    summary["audioModel"] = args.audio_model
    return summary


def check(summary: dict[str, Any], min_rate: float) -> dict[str, Any]:
    """Each target with its measured value and whether it was met."""
    e2e = summary.get("e2eMs", {})
    drift = summary.get("e2eDrift", {})
    rss = summary.get("resources", {}).get("botRssMiB", {})
    rate = summary.get("rate", {}).get("min", 0.0)
    mean_rate = summary.get("rate", {}).get("mean", 0.0)
    first = drift.get("p50FirstThird", 0.0)
    rise = drift.get("p50LastThird", 0.0) - first
    allowed = max(MAX_THIRDS_RISE_MS, MAX_THIRDS_RISE_FRACTION * first)
    return {
        f"every participant >= {min_rate:g} results/s": (rate, rate >= min_rate),
        f"e2e p50 <= {TARGET_P50_MS:g} ms": (e2e.get("p50"), e2e.get("p50", 1e9) <= TARGET_P50_MS),
        f"e2e p95 <= {TARGET_P95_MS:g} ms": (e2e.get("p95"), e2e.get("p95", 1e9) <= TARGET_P95_MS),
        "no upward latency drift": (
            f"last third {rise:+.1f} ms vs first (allowed +{allowed:.0f}); slope {drift.get('slopeMsPerMin')} ms/min",
            bool(drift) and rise <= allowed,
        ),
        f"RSS flat within {MAX_RSS_DEVIATION_PCT:g} %": (
            f"{rss.get('maxDeviationPct')} %",
            rss.get("maxDeviationPct", 1e9) <= MAX_RSS_DEVIATION_PCT,
        ),
        # Overload must be graceful: nobody disconnected, nobody below half the mean rate.
        "no peer connection lost": (summary.get("connectionsLost"), summary.get("connectionsLost") == 0),
        "slowest >= half the mean rate": (
            f"{rate} vs mean {mean_rate}",
            mean_rate > 0 and rate >= 0.5 * mean_rate,
        ),
    }


def report(runs: list[dict[str, Any]]) -> str:
    lines = [
        f"{'N':>3} {'spk':>3} {'prec':>5} {'s':>5} {'min/s':>6} {'mean/s':>6} {'e2e p50':>8} {'e2e p95':>8} "
        f"{'e2e max':>8} {'bot p50':>8} {'drift':>7} {'RSS dev':>7} {'CPU%':>6} {'oth%':>5} {'thr-':>4} {'drops':>5} "
        f"{'load1':>6} {'lost':>4} {'lag max':>7} {'udp drops':>9}",
    ]
    for s in runs:
        o = s["options"]
        e, b = s.get("e2eMs", {}), s.get("botSideMs", {})
        res = s.get("resources", {})
        counters = (s.get("bot") or {}).get("counters") or {}
        drops = sum(v for k, v in counters.items() if k.endswith("_dropped"))
        thr = ((s.get("bot") or {}).get("throttle") or {}).get("decreases", 0)
        lines.append(
            f"{o['participants']:>3} {o['speaking']:>3} {s['precision']:>5} {s['measuredS']:>5.0f} "
            f"{s['rate'].get('min', 0):>6.2f} {s['rate'].get('mean', 0):>6.2f} {e.get('p50', float('nan')):>8.1f} "
            f"{e.get('p95', float('nan')):>8.1f} {e.get('max', float('nan')):>8.1f} {b.get('p50', float('nan')):>8.1f} "
            f"{s.get('e2eDrift', {}).get('slopeMsPerMin', float('nan')):>7.2f} "
            f"{res.get('botRssMiB', {}).get('maxDeviationPct', float('nan')):>6.2f}% "
            f"{res.get('botCpuPercent', {}).get('mean', float('nan')):>6.1f} "
            f"{res.get('otherCpuPercent', {}).get('mean', float('nan')):>5.1f} {thr:>4} {drops:>5} "
            f"{res.get('load1', {}).get('mean', float('nan')):>6.2f} {s.get('connectionsLost', '?'):>4} "
            f"{((s.get('bot') or {}).get('loop') or {}).get('maxMs', float('nan')):>7} "
            f"{((s.get('bot') or {}).get('udp') or {}).get('drops', '?'):>9}"
        )
    return "\n".join(lines)


def breakdown(runs: list[dict[str, Any]]) -> str:
    """Where each run's CPU went and which pool saturated.

    By stage from the bot's ``cpuByStage`` (its threads by name, the threads MediaPipe and torch
    start under a pool thread included), inference from the pool's ``cpuS`` (its child process
    included), "other" the rest of the bot and its children. Older bots without ``cpuByStage``:
    the pools' own threads, and the rest as "decode+loop".
    """
    lines = ["N    saturated (busy share, last 5 s)        CPU share:  face  audio  inference  decode   loop  other"]
    for s in runs:
        bot = s.get("bot") or {}
        pools = bot.get("pools") or {}
        cpu = {name: float(p.get("cpuS") or 0.0) for name, p in pools.items()}
        stages = bot.get("cpuByStage") or {}
        seconds = float(s.get("measuredS", 0.0)) + float(s["options"].get("warmupS", 0.0))
        total = float(s.get("resources", {}).get("botCpuPercent", {}).get("mean", 0.0)) / 100.0 * seconds
        if stages:
            parts = {k: float(stages.get(k, 0.0)) for k in ("face", "audio", "decode", "loop")}
            parts["inference"] = cpu.get("inference", 0.0)
            known = sum(parts.values())
            parts["other"] = max(0.0, total - known)
        else:
            parts = {k: cpu.get(k, 0.0) for k in ("face", "audio", "inference")}
            parts["loop"] = max(0.0, total - sum(parts.values()))  # decode+loop
            parts["decode"] = parts["other"] = float("nan")
        denom = max(total, sum(v for v in parts.values() if v == v), 1e-9)
        busy = {name: p.get("busyFraction") for name, p in pools.items()}
        top = max(busy, key=lambda k: busy[k] or 0.0) if busy else "-"
        shares = "".join(
            f"{100 * parts[k] / denom:>{w}.0f}%"
            for k, w in (("face", 16), ("audio", 6), ("inference", 10), ("decode", 7), ("loop", 6), ("other", 6))
        )
        lines.append(f"{s['options']['participants']:<4} {top:<10} {json.dumps(busy):<29}{shares}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    cache = cache_dir()
    t0 = time.time()
    if args.bundle == "reference":
        bundle = await asyncio.to_thread(ensure_production_bundle, cache / "bundles")
        print(f"production-size bundle: {bundle} ({time.time() - t0:.1f} s)", flush=True)
    elif args.bundle == "starter":
        bundle = starter_bundle_dir()
        print(f"starter bundle: {bundle}", flush=True)
    else:
        bundle = Path(args.bundle)
    face = locate_face_asset(args.face_asset or None)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="bench-realtime-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"logs and per-run JSON in {log_dir}", flush=True)
    sweep = [int(x) for x in args.sweep.split(",")] if args.sweep else []
    runs: list[dict[str, Any]] = []
    results: dict[str, Any] = {"runs": runs}
    counts = sweep or [args.participants]
    ok_all = True
    for n in counts:
        summary = await run_once(args, n, bundle, face, log_dir)
        runs.append(summary)
        targets = check(summary, SWEEP_RATE if sweep else TARGET_RATE)
        summary["targets"] = {k: {"value": v, "met": m} for k, (v, m) in targets.items()}
        print(f"\n[N={n}] targets:", flush=True)
        for name, (value, met) in targets.items():
            print(f"  {'PASS' if met else 'MISS'}  {name}: {value}", flush=True)
            ok_all &= bool(met) or bool(sweep)
        if sweep and not targets[f"every participant >= {SWEEP_RATE:g} results/s"][1]:
            print(f"[N={n}] below {SWEEP_RATE:g} results/s; stopping the sweep", flush=True)
            break
    if sweep:
        passing = [
            s["options"]["participants"]
            for s in runs
            if s["targets"][f"every participant >= {SWEEP_RATE:g} results/s"]["met"]
        ]
        results["largestAtSweepRate"] = max(passing) if passing else None
        print(
            f"\nlargest participant count with every participant >= {SWEEP_RATE:g} results/s: "
            f"{results['largestAtSweepRate']}",
            flush=True,
        )
    print("\n" + report(runs), flush=True)
    print("\n" + breakdown(runs), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
        print(f"written to {args.json}", flush=True)
    return 0 if ok_all else 1


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--participants", type=int, default=10)
    p.add_argument("--speaking", type=int, default=2)
    p.add_argument("--duration", type=float, default=300.0, help="measured seconds per run (after the warm-up)")
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--sweep", help="comma-separated participant counts: find the largest at >= 2 results/s")
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="bf16")
    p.add_argument("--audio-model", default="untrained:production")
    p.add_argument(
        "--bundle",
        default="reference",
        help="reference (production-size untrained reference bundle, default), starter (the shipped one) or a DIR",
    )
    p.add_argument("--sender", choices=["preencoded", "live"], default="preencoded")
    p.add_argument("--config", help="TOML config for the bot (engine settings)")
    p.add_argument("--face-asset")
    p.add_argument("--wait-load", type=float, help="wait until the 1-minute load average is below this")
    p.add_argument("--log-dir")
    p.add_argument("--json")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--verbose", action="store_true", help="INFO logs from the bot (aiortc/aioice connection events) in its log"
    )
    args = p.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())

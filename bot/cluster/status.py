"""The cluster at a glance, read from Redis: for ``hoovik-bot dispatch status``, the dispatcher's
``GET /status`` and its metrics. Everything comes from Redis, so any process can show it."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

from bot.cluster.jobs import QUEUED
from bot.cluster.store import Store, job_view


async def snapshot(store: Store) -> dict[str, Any]:
    now = time.time()
    jobs = [job_view(row, now) for row in await store.active_jobs()]
    workers = await store.workers()
    for w in workers:
        w["heartbeatAgeS"] = round(max(0.0, now - float(w.get("heartbeat") or now)), 3)
    by_state = Counter(j["state"] for j in jobs)
    latencies = [j["claimLatencyS"] for j in jobs if j["claimLatencyS"] is not None]
    return {
        "at": round(now, 3),
        "queueDepth": by_state.get(QUEUED, 0),
        "stream": await store.queue_stats(),
        "jobsByState": dict(by_state),
        "failovers": sum(j["failovers"] for j in jobs),
        "claimLatencyP50S": statistics.median(latencies) if latencies else None,
        "workers": workers,
        "jobs": jobs,
    }


def render(snap: dict[str, Any]) -> str:
    """A plain-text table for a terminal."""
    lines = []
    states = ", ".join(f"{k} {v}" for k, v in sorted(snap["jobsByState"].items())) or "none"
    s = snap["stream"]
    lines.append(
        f"queue: {snap['queueDepth']} waiting (stream: {s['length']} entries, {s['lag']} undelivered, "
        f"{s['pending']} pending) · active jobs: {states} · failovers: {snap['failovers']}"
    )
    if snap["claimLatencyP50S"] is not None:
        lines.append(f"claim latency (request to joined), median of active jobs: {snap['claimLatencyP50S']:.2f} s")
    lines.append("")
    lines.append(f"{'worker':<36} {'jobs':>9} {'people':>6} {'cpu':>6} {'beat':>6}  state")
    for w in sorted(snap["workers"], key=lambda w: w["id"]):
        jobs = f"{len(w.get('jobs') or [])}/{w.get('capacity', '?')}"
        state = "draining" if w.get("draining") else ("accepting" if w.get("accepting") else "full")
        lines.append(
            f"{w['id'][:36]:<36} {jobs:>9} {w.get('participants', 0):>6} {w.get('cpuCores', 0):>6.2f} "
            f"{w['heartbeatAgeS']:>5.1f}s  {state}"
        )
    if not snap["workers"]:
        lines.append("(no live workers)")
    lines.append("")
    lines.append(f"{'job':<17} {'state':<9} {'worker':<36} {'people':>6} {'fails':>5}  meeting")
    for j in sorted(snap["jobs"], key=lambda j: j.get("createdAt") or 0):
        m = j.get("meeting") or {}
        where = m.get("room") or m.get("meeting") or "?"
        lines.append(
            f"{j['id']:<17} {j['state']:<9} {(j['worker'] or '-')[:36]:<36} {j['participants']:>6} "
            f"{j['failovers']:>5}  {where}"
        )
    if not snap["jobs"]:
        lines.append("(no active jobs)")
    return "\n".join(lines)

"""The bot's HTTP telemetry: /health, /ready, /stats/json, /stats and Prometheus /metrics.

``/stats/json`` keeps the original emotion service's shape (spec 2.6: generated_at,
active_participants, per-modality and overall latency summaries) and adds per-participant detail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot.engine import Engine
from bot.results import EmotionResult

MODALITIES = ("audio_only", "video_only", "both")


class LatencyTracker:
    """The last 500 latencies per modality and overall (the original's LatencyTracker)."""

    def __init__(self, size: int = 500) -> None:
        self.size = size
        self.values: dict[str, list[float]] = {m: [] for m in (*MODALITIES, "overall")}

    def add(self, modality: str, ms: float) -> None:
        for key in (modality, "overall"):
            bucket = self.values.setdefault(key, [])
            bucket.append(ms)
            if len(bucket) > self.size:
                del bucket[0]

    def summary(self, key: str) -> dict[str, Any]:
        vals = np.asarray(self.values.get(key, []), dtype=np.float64)
        if vals.size == 0:
            return {}
        return {
            "n": int(vals.size),
            "min": round(float(vals.min()), 1),
            "mean": round(float(vals.mean()), 1),
            "p50": round(float(np.percentile(vals, 50)), 1),
            "p90": round(float(np.percentile(vals, 90)), 1),
            "p95": round(float(np.percentile(vals, 95)), 1),
            "max": round(float(vals.max()), 1),
        }


class Telemetry:
    """Collects result metrics and serves them; ``ready`` flips once models are loaded."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.ready = False
        self.latency = LatencyTracker()
        self.registry = CollectorRegistry()
        self.m_results = Counter("hoovik_results", "Results emitted", ["modality"], registry=self.registry)
        self.m_latency = Histogram(
            "hoovik_result_latency_seconds",
            "Newest frame received to result sent",
            ["modality"],
            buckets=(0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0, 2.0),
            registry=self.registry,
        )
        self.m_participants = Gauge("hoovik_participants", "Participants tracked", registry=self.registry)
        self.m_queue = Gauge("hoovik_queue_depth", "Pool queue depth", ["pool"], registry=self.registry)
        self.m_fps = Gauge("hoovik_sampling_fps", "Current face sampling rate", registry=self.registry)
        self.m_drops = Gauge("hoovik_drops", "Dropped work items by kind", ["kind"], registry=self.registry)
        self.m_ready = Gauge("hoovik_ready", "1 when models are loaded", registry=self.registry)
        self.extra: Callable[[], dict[str, Any]] | None = None

    def observe(self, result: EmotionResult) -> None:
        self.latency.add(result.modality, result.latency_ms)
        self.m_results.labels(result.modality).inc()
        self.m_latency.labels(result.modality).observe(result.latency_ms / 1000.0)

    def stats(self) -> dict[str, Any]:
        snap = self.engine.snapshot() if self.engine is not None else {"participants": []}
        out: dict[str, Any] = {
            "generated_at": time.time(),
            "active_participants": len(snap["participants"]),
            "modalities": {m: self.latency.summary(m) for m in MODALITIES},
            "overall": self.latency.summary("overall"),
            "ready": self.ready,
            "participants": snap["participants"],
            "queues": snap.get("queues", {}),
            "samplingFps": snap.get("samplingFps"),
            "throttle": snap.get("throttle", {}),
            "counters": snap.get("counters", {}),
        }
        if self.extra is not None:
            out.update(self.extra())
        return out

    def _refresh_gauges(self) -> None:
        self.m_ready.set(1 if self.ready else 0)
        if self.engine is None:
            return
        snap = self.engine.snapshot()
        self.m_participants.set(len(snap["participants"]))
        for pool, depth in snap["queues"].items():
            self.m_queue.labels(pool).set(depth)
        self.m_fps.set(snap["samplingFps"])
        for kind, value in snap["counters"].items():
            if kind.endswith("dropped"):
                self.m_drops.labels(kind).set(value)

    def routes(self) -> list[web.RouteDef]:
        async def health(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def ready(_: web.Request) -> web.Response:
            if self.ready:
                return web.json_response({"status": "ready"})
            return web.json_response({"detail": {"status": "not_ready"}}, status=503)

        async def stats_json(_: web.Request) -> web.Response:
            return web.json_response(self.stats())

        async def stats_html(_: web.Request) -> web.Response:
            return web.Response(text=STATS_HTML, content_type="text/html")

        async def metrics(_: web.Request) -> web.Response:
            self._refresh_gauges()
            body = generate_latest(self.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        return [
            web.get("/health", health),
            web.get("/ready", ready),
            web.get("/stats/json", stats_json),
            web.get("/stats", stats_html),
            web.get("/metrics", metrics),
        ]


STATS_HTML = (Path(__file__).parent / "static" / "stats.html").read_text()

"""The bot's HTTP telemetry: /health, /ready, /stats/json, /stats and Prometheus /metrics.

``/stats/json`` keeps the original emotion service's shape (docs/engine.md, "Telemetry": ``generated_at``,
``active_participants``, per-modality and ``overall`` latency summaries in ms) and adds the
engine's view: per participant its profile, sampling rate, queue depths, drops, VAD-gated windows,
results per second and latency percentiles; per pool its depth and batch-size histogram; the
throttle's rate and recent events; the process's RSS and CPU.

``/metrics`` is read from the engine at scrape time by a collector, so every counter there is the
engine's own count (nothing is double-booked), and per-participant series exist only for the
participants present now (series of departed participants disappear instead of piling up).

Access: every endpoint is read-only (GET/HEAD; anything else is 405). ``/stats*`` and ``/metrics``
show participant names and media state, so with a ``token`` they need ``Authorization: Bearer
<token>`` (401 otherwise); ``/health`` and ``/ready`` always stay open for probes. The bot binds the
server to 127.0.0.1 unless told otherwise (``--http-host``); see docs/security.md.
"""

from __future__ import annotations

import hmac
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from bot.live.engine import Engine
from bot.live.loadguard import udp_receive_backlog
from bot.pipeline.results import EmotionResult

MODALITIES = ("audio_only", "video_only", "both")


class LatencyTracker:
    """The last 500 latencies per modality and overall (the original's LatencyTracker)."""

    def __init__(self, size: int = 500) -> None:
        self.size = size
        self.values: dict[str, deque[float]] = {m: deque(maxlen=size) for m in (*MODALITIES, "overall")}

    def add(self, modality: str, ms: float) -> None:
        for key in (modality, "overall"):
            bucket = self.values.get(key)
            if bucket is None:
                bucket = self.values[key] = deque(maxlen=self.size)
            bucket.append(ms)

    def summary(self, key: str) -> dict[str, Any]:
        """n, min, mean, p50, p90, p95, max in ms (1 dp, linear interpolation); {} when empty."""
        vals = np.asarray(self.values.get(key, ()), dtype=np.float64)
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


class EngineCollector(Collector):
    """Prometheus view of the engine's counters, read at scrape time."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        engine = self.telemetry.engine
        ready = GaugeMetricFamily("hoovik_ready", "1 when models are loaded and the engine runs")
        ready.add_metric([], 1.0 if self.telemetry.ready else 0.0)
        yield ready
        if engine is None:
            return
        snap = engine.snapshot()
        counters: dict[str, int] = snap["counters"]

        participants = GaugeMetricFamily("hoovik_participants", "Participants tracked by the engine")
        participants.add_metric([], len(snap["participants"]))
        yield participants

        depth = GaugeMetricFamily("hoovik_queue_depth", "Requests queued or running per pool", labels=["pool"])
        batches = CounterMetricFamily(
            "hoovik_pool_batches", "Batches run per pool, by batch size", labels=["pool", "size"]
        )
        completed = CounterMetricFamily(
            "hoovik_pool_requests", "Requests per pool by outcome", labels=["pool", "outcome"]
        )
        busy = CounterMetricFamily("hoovik_pool_busy_seconds", "Seconds pool threads spent computing", labels=["pool"])
        busy_frac = GaugeMetricFamily(
            "hoovik_pool_busy_fraction", "Share of the last 5 s the pool's threads spent computing", labels=["pool"]
        )
        for pool, p in snap["pools"].items():
            depth.add_metric([pool], p["pending"] + p["inFlight"])
            for size, n in p["batchSizes"].items():
                batches.add_metric([pool, size], n)
            for outcome in ("completed", "failed", "rejected"):
                completed.add_metric([pool, outcome], p[outcome])
            busy.add_metric([pool], p["busyS"])
            busy_frac.add_metric([pool], p.get("busyFraction", 0.0))
        yield from (depth, batches, completed, busy, busy_frac)
        below = GaugeMetricFamily(
            "hoovik_participants_below_target",
            "Participants with a live modality getting under 90 % of the step rate (reduced rate)",
        )
        below.add_metric([], snap.get("participantsBelowTarget", 0))
        yield below

        fps = GaugeMetricFamily(
            "hoovik_sampling_fps", "Face sampling rate set by the throttle (frames/s per participant)"
        )
        fps.add_metric([], snap["throttle"]["fps"])
        yield fps
        events = CounterMetricFamily("hoovik_throttle_events", "Sampling-rate changes by kind", labels=["kind"])
        events.add_metric(["decrease"], snap["throttle"]["decreases"])
        events.add_metric(["recover"], snap["throttle"]["recoveries"])
        yield events
        causes = CounterMetricFamily("hoovik_throttle_decreases", "Sampling-rate decreases by cause", labels=["cause"])
        seen = snap["throttle"].get("decreaseCauses", {})
        for cause in sorted({"face_queue", "late_steps", "loop_lag", *seen}):
            causes.add_metric([cause], seen.get(cause, 0))
        yield causes
        loop = snap.get("loop") or {}
        lag = GaugeMetricFamily(
            "hoovik_event_loop_lag_seconds",
            "How late the asyncio loop (WebRTC, ICE consent, the engine's tick) ran a timer, worst of the last second",
        )
        lag.add_metric([], float(loop.get("lagMs", 0.0)) / 1000)
        yield lag
        intra_op = snap.get("intraOp")
        if intra_op is not None:
            threads = GaugeMetricFamily(
                "hoovik_torch_intraop_threads", "Torch threads a Wav2Vec2 forward may use now (every core while light)"
            )
            threads.add_metric([], float(intra_op["threads"]))
            yield threads
        by_stage = snap.get("cpuByStage") or {}
        if by_stage:
            cpu = CounterMetricFamily(
                "hoovik_stage_cpu_seconds",
                "CPU seconds of the bot process's live threads by stage, library threads included",
                labels=["stage"],
            )
            for stage, seconds in by_stage.items():
                cpu.add_metric([stage], float(seconds))
            yield cpu
        udp = udp_receive_backlog()
        if udp is not None:
            queued = GaugeMetricFamily(
                "hoovik_udp_receive_queue_bytes", "Bytes waiting unread on the bot's UDP sockets (WebRTC media, ICE)"
            )
            queued.add_metric([], udp["queuedBytes"])
            yield queued
            dropped = CounterMetricFamily(
                "hoovik_udp_receive_drops", "Datagrams the kernel dropped because a bot UDP socket was full"
            )
            dropped.add_metric([], udp["drops"])
            yield dropped

        drops = CounterMetricFamily("hoovik_dropped", "Work dropped because a bounded queue was full", labels=["kind"])
        for kind in ("face_dropped", "audio_dropped", "inference_dropped"):
            drops.add_metric([kind.removesuffix("_dropped")], counters.get(kind, 0))
        yield drops
        gated = CounterMetricFamily(
            "hoovik_audio_gated_windows", "Audio windows not embedded, by reason", labels=["reason"]
        )
        gated.add_metric(["no_speech"], counters.get("vad_gated", 0))
        gated.add_metric(["silence"], counters.get("audio_silent", 0))
        yield gated

        p_results = CounterMetricFamily("hoovik_participant_results", "Results per participant", labels=["participant"])
        p_gated = CounterMetricFamily(
            "hoovik_participant_vad_gated_windows", "Windows the VAD gated, per participant", labels=["participant"]
        )
        p_frames = CounterMetricFamily(
            "hoovik_participant_frames_skipped",
            "Received frames never sampled (newest-frame slot)",
            labels=["participant"],
        )
        p_rate = GaugeMetricFamily(
            "hoovik_participant_results_per_second", "Result rate over the last 5 s", labels=["participant"]
        )
        p_sampled = GaugeMetricFamily(
            "hoovik_participant_sampled_fps",
            "Frames sampled for the face model over the last 5 s",
            labels=["participant"],
        )
        p_reduced = GaugeMetricFamily(
            "hoovik_participant_reduced_rate",
            "1 while the participant gets under 90 % of the step rate",
            labels=["participant"],
        )
        for p in snap["participants"]:
            pid = p["participantId"]
            c = p["counters"]
            p_results.add_metric([pid], c.get("results", 0))
            p_gated.add_metric([pid], c.get("vad_gated", 0))
            p_frames.add_metric([pid], c.get("frames_skipped", 0))
            p_rate.add_metric([pid], p["resultsPerSecond"])
            p_sampled.add_metric([pid], p["sampledFps"])
            p_reduced.add_metric([pid], 1.0 if p.get("reducedRate") else 0.0)
        yield from (p_results, p_gated, p_frames, p_rate, p_sampled, p_reduced)


class Telemetry:
    """Collects result metrics and serves them; ``ready`` flips once models are loaded.

    ``engine`` returns the engine once models are loaded (None before: the HTTP server starts
    first); ``extra`` adds keys to ``/stats/json`` (the service's model description, say).
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        engine: Callable[[], Engine | None] = lambda: None,
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.token = token or None
        """If set, ``/stats*`` and ``/metrics`` need ``Authorization: Bearer <token>``."""
        self._engine = engine
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
        self.m_up = Gauge("hoovik_start_time_seconds", "When this telemetry started (epoch s)", registry=self.registry)
        self.m_up.set(time.time())
        self.registry.register(EngineCollector(self))
        ProcessCollector(registry=self.registry)
        self.extra = extra
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # prime: the next call measures since now

    @property
    def engine(self) -> Engine | None:
        return self._engine()

    def observe(self, result: EmotionResult) -> None:
        self.latency.add(result.modality, result.latency_ms)
        self.m_results.labels(result.modality).inc()
        self.m_latency.labels(result.modality).observe(result.latency_ms / 1000.0)

    def process_stats(self) -> dict[str, Any]:
        """This process's RSS and CPU% since the previous call (100 = one core)."""
        with self._process.oneshot():
            return {
                "pid": self._process.pid,
                "rssBytes": int(self._process.memory_info().rss),
                "cpuPercent": round(self._process.cpu_percent(None), 1),
                "threads": self._process.num_threads(),
                # Unread bytes on this process's UDP sockets and the datagrams dropped when full:
                # a loop behind its sockets, which is what makes ICE consent checks fail.
                "udp": udp_receive_backlog(),
            }

    def stats(self) -> dict[str, Any]:
        engine = self.engine
        snap = engine.snapshot() if engine is not None else {"participants": []}
        out: dict[str, Any] = {
            "generated_at": time.time(),
            "active_participants": len(snap["participants"]),
            "modalities": {m: self.latency.summary(m) for m in MODALITIES},
            "overall": self.latency.summary("overall"),
            "ready": self.ready,
            "participants": snap["participants"],
            "participantsBelowTarget": snap.get("participantsBelowTarget", 0),
            "targetResultsPerSecond": snap.get("targetResultsPerSecond"),
            "queues": snap.get("queues", {}),
            "pools": snap.get("pools", {}),
            "samplingFps": snap.get("samplingFps"),
            "throttle": snap.get("throttle", {}),
            # How late the asyncio loop runs its timers (the loop that keeps peers connected).
            "loop": snap.get("loop", {}),
            "vad": snap.get("vad", {}),
            # Torch threads a Wav2Vec2 forward may use now (every core while the bot is light).
            "intraOp": snap.get("intraOp"),
            # CPU seconds by stage (loop, decode, face, audio, inference, other), library threads included.
            "cpuByStage": snap.get("cpuByStage", {}),
            "counters": snap.get("counters", {}),
            "process": self.process_stats(),
        }
        if self.extra is not None:
            out.update(self.extra())
        return out

    def authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    def routes(self) -> list[web.RouteDef]:
        def protected(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
            async def guarded(request: web.Request) -> web.StreamResponse:
                if not self.authorized(request):
                    return web.json_response(
                        {"detail": "unauthorized"}, status=401, headers={"WWW-Authenticate": 'Bearer realm="telemetry"'}
                    )
                return await handler(request)

            return guarded

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
            body = generate_latest(self.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        return [
            web.get("/health", health),
            web.get("/ready", ready),
            web.get("/stats/json", protected(stats_json)),
            web.get("/stats", protected(stats_html)),
            web.get("/metrics", protected(metrics)),
        ]


STATS_HTML = (Path(__file__).parent / "static" / "stats.html").read_text()

"""Prometheus metrics of the cluster: one registry per process, never the global one (tests run
several dispatchers and workers in one interpreter).

The worker counts what it does (claims, failovers it performed, hand-offs, lost leases, claim
latency). The dispatcher reads the cluster's state from Redis at scrape time (queue depth, jobs per
state and per worker, heartbeat age per worker), so its numbers are true even after a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from bot.cluster.worker import Worker

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class WorkerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.jobs = Gauge("hoovik_worker_jobs", "Meetings this worker runs now", registry=r)
        self.capacity = Gauge("hoovik_worker_capacity", "Meetings this worker may run at once", registry=r)
        self.participants = Gauge("hoovik_worker_participants", "People in this worker's meetings", registry=r)
        self.cpu = Gauge("hoovik_worker_cpu_cores", "CPU cores this worker process uses", registry=r)
        self.draining = Gauge("hoovik_worker_draining", "1 while the worker drains", registry=r)
        self.claims = Counter("hoovik_worker_claims", "Jobs claimed", ["kind"], registry=r)
        self.failovers = Counter(
            "hoovik_worker_failovers", "Jobs taken over from a worker that stopped renewing", registry=r
        )
        self.handoffs = Counter("hoovik_worker_handoffs", "Jobs handed back while draining", registry=r)
        self.lease_lost = Counter("hoovik_worker_leases_lost", "Jobs left because the lease was lost", registry=r)
        self.finished = Counter("hoovik_worker_jobs_settled", "Jobs ended or re-queued", ["state"], registry=r)
        self.redis_errors = Counter("hoovik_worker_redis_outages", "Times Redis became unreachable", registry=r)
        self.claim_latency = Histogram(
            "hoovik_worker_claim_latency_seconds",
            "From the request to the bot joining the meeting (first claim of a job)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def observe(self, worker: Worker) -> None:
        self.jobs.set(len(worker.jobs))
        self.capacity.set(worker.options.capacity)
        self.participants.set(worker.participants())
        self.cpu.set(worker.info()["cpuCores"])
        self.draining.set(1 if worker.draining else 0)


class DispatcherMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.queue_depth = Gauge("hoovik_cluster_queue_depth", "Jobs waiting for a worker", registry=r)
        self.stream_lag = Gauge("hoovik_cluster_stream_lag", "Stream entries not yet delivered", registry=r)
        self.stream_pending = Gauge(
            "hoovik_cluster_stream_pending", "Stream entries delivered and not acknowledged", registry=r
        )
        self.jobs = Gauge("hoovik_cluster_jobs", "Active jobs by state", ["state"], registry=r)
        self.workers = Gauge("hoovik_cluster_workers", "Workers with a live heartbeat", registry=r)
        self.jobs_per_worker = Gauge("hoovik_cluster_worker_jobs", "Jobs per worker", ["worker"], registry=r)
        self.heartbeat_age = Gauge(
            "hoovik_cluster_worker_heartbeat_age_seconds", "Age of each worker's last heartbeat", ["worker"], registry=r
        )
        self.failovers = Gauge("hoovik_cluster_job_failovers", "Failovers of the active jobs, summed", registry=r)
        self.claim_latency = Gauge(
            "hoovik_cluster_claim_latency_p50_seconds",
            "Median request-to-joined time of the active jobs",
            registry=r,
        )
        self.submitted = Counter("hoovik_dispatcher_jobs_submitted", "Jobs accepted by POST /bots", registry=r)
        self.rejected = Counter("hoovik_dispatcher_requests_rejected", "Requests refused", ["reason"], registry=r)

    def update(self, snapshot: dict[str, Any]) -> None:
        """Set the gauges from :func:`bot.cluster.status.snapshot`."""
        self.queue_depth.set(snapshot["queueDepth"])
        self.stream_lag.set(snapshot["stream"]["lag"])
        self.stream_pending.set(snapshot["stream"]["pending"])
        self.jobs.clear()
        for state, n in snapshot["jobsByState"].items():
            self.jobs.labels(state).set(n)
        self.workers.set(len(snapshot["workers"]))
        self.jobs_per_worker.clear()
        self.heartbeat_age.clear()
        for w in snapshot["workers"]:
            self.jobs_per_worker.labels(w["id"]).set(len(w.get("jobs") or []))
            self.heartbeat_age.labels(w["id"]).set(w["heartbeatAgeS"])
        self.failovers.set(snapshot["failovers"])
        if snapshot["claimLatencyP50S"] is not None:
            self.claim_latency.set(snapshot["claimLatencyP50S"])


def metrics_response(registry: CollectorRegistry) -> web.Response:
    resp = web.Response(body=generate_latest(registry))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp

"""``hoovik-bot worker``: claims meeting jobs from the consumer group and runs their bots.

One loop claims: while the worker has room (capacity, CPU), it first takes over an orphaned entry
(``XAUTOCLAIM``: idle past the claim timeout, i.e. its worker stopped renewing) and then reads a new
one (``XREADGROUP``). Taking a job means acquiring its lease (a new fencing token); a job whose lease
is still held by a live worker is left alone. One loop renews every lease and re-``XCLAIM``s the
entries (so they never look idle while we run them), and learns of stop requests. One loop publishes
the worker's heartbeat and load with a TTL.

The models load once per worker; every meeting gets its own engine over that shared runtime.

SIGTERM drains: stop claiming, re-queue every job as a *hand-off* (lease released, a new entry),
and stay in each meeting until the next worker's bot replaces ours (same participant id) or the
grace period ends. Failure handling and its windows are in docs/scale.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil
from redis.exceptions import ResponseError

from bot.cluster.jobs import EXITED, FAILED, RUNNING, JobSpec
from bot.cluster.meeting import Meeting, MeetingOptions, Outcome
from bot.cluster.metrics import WorkerMetrics
from bot.cluster.store import ANY_REDIS_ERROR, REDIS_ERRORS, Claim, Lease, Store
from bot.config import BotConfig

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from signaling.base import SignalingSession

log = logging.getLogger(__name__)


@dataclass
class WorkerOptions:
    worker_id: str = ""
    """Consumer name; unique per process (default: host-pid-random)."""
    capacity: int = 4
    """Meetings at once; above it the worker claims nothing."""
    max_participants: int | None = None
    """Stop claiming at this many people in all meetings (a job's maxParticipants hint counts)."""
    max_cpu: float = 0.9
    """Stop claiming while this process uses more than this fraction of the machine's cores."""
    stop_when_throttled: bool = False
    """Stop claiming while any meeting's engine is throttled (its pools are saturated)."""
    lease_ms: int = 3000
    renew_s: float = 0.75
    claim_idle_ms: int = 3500
    """An entry idle this long is orphaned; keep it above ``lease_ms`` so its lease has expired too."""
    autoclaim_s: float = 0.5
    heartbeat_s: float = 1.0
    heartbeat_ttl_ms: int = 5000
    max_attempts: int = 5
    """Claims in a row without a successful join before the job fails (never retried forever)."""
    self_fence_s: float = 30.0
    """Leave every meeting when Redis has been unreachable this long (docs/scale.md, windows)."""
    drain_grace_s: float = 20.0
    prefix: str = "hoovik:"
    meeting: MeetingOptions = field(default_factory=MeetingOptions)


@dataclass(eq=False)
class _Job:
    lease: Lease
    spec: JobSpec
    meeting: Meeting
    created: float
    task: asyncio.Task[None] | None = None
    last_renew: float = field(default_factory=time.monotonic)
    stop_requested: bool = False
    lost: bool = False
    handed_off: bool = False
    failover: bool = False


class Worker:
    def __init__(
        self,
        store: Store,
        cfg: BotConfig,
        options: WorkerOptions,
        *,
        runtime: Runtime | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.options = options
        self.id = options.worker_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.runtime = runtime
        self._owns_runtime = False
        self.metrics = metrics or WorkerMetrics()
        self.jobs: dict[str, _Job] = {}
        self.draining = False
        self.started = time.time()
        self._process = psutil.Process()
        self._process.cpu_percent(None)
        self._cpu = 0.0
        self._redis_down_since: float | None = None
        self._redis_back_at = 0.0
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._updates: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps weak refs)

    # -- lifecycle --

    async def start(self) -> None:
        if self.runtime is None:
            from bot.runtime import build_runtime

            self.runtime = await asyncio.to_thread(build_runtime, self.cfg)
            self._owns_runtime = True
        await self._until_redis(self.store.ensure_group)
        await self._publish()
        for name, loop in (("claim", self._claim_loop), ("renew", self._renew_loop), ("heartbeat", self._beat_loop)):
            self._tasks.append(asyncio.create_task(loop(), name=f"worker-{name}"))
        log.info("worker %s: claiming (capacity %d)", self.id, self.options.capacity)

    async def drain(self) -> None:
        """Stop claiming, hand every meeting back and leave each once another worker took it over
        (its bot replaced ours) or after the grace period."""
        self.draining = True
        with contextlib.suppress(*ANY_REDIS_ERROR):
            await self._publish()
        for job in list(self.jobs.values()):
            if job.lost or job.stop_requested:
                continue
            try:
                why = f"handed off by draining worker {self.id}"
                entry = await self.store.requeue(job.lease, why, handoff=True, reset_attempts=True)
            except ANY_REDIS_ERROR as exc:
                log.warning("job %s: hand-off failed (%r); leaving after the grace period", job.lease.job_id, exc)
                continue
            if entry:
                job.handed_off = True
                self.metrics.handoffs.inc()
        deadline = time.monotonic() + self.options.drain_grace_s
        next_check = 0.0
        while self.jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if time.monotonic() >= next_check:  # DELETE during a hand-off: leave now, not at the deadline
                next_check = time.monotonic() + 0.5
                await self._leave_stopped_handoffs()
        for job in list(self.jobs.values()):
            job.meeting.leave("the worker is shutting down")
        await self._wait_jobs(15.0)

    async def _leave_stopped_handoffs(self) -> None:
        for job in list(self.jobs.values()):
            if not job.handed_off:
                continue
            with contextlib.suppress(*ANY_REDIS_ERROR):
                data = await self.store.job(job.lease.job_id)
                if data is None or data.get("stop") == "1":
                    job.meeting.leave("stopped by request during the hand-off")

    async def stop(self) -> None:
        """Leave every meeting now (after :meth:`drain`, or on a hard shutdown)."""
        self.draining = True
        for job in list(self.jobs.values()):
            job.meeting.leave("the worker stopped")
        await self._wait_jobs(15.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(*ANY_REDIS_ERROR):
            await self.store.remove_worker(self.id)
        if self._owns_runtime and self.runtime is not None:
            await asyncio.to_thread(self.runtime.close)
        self._stopped.set()

    async def _wait_jobs(self, timeout: float) -> None:
        tasks = [j.task for j in self.jobs.values() if j.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    # -- load --

    def participants(self) -> int:
        return sum(max(j.meeting.participants(), j.spec.max_participants or 0) for j in self.jobs.values())

    def has_room(self) -> bool:
        o = self.options
        if self.draining or len(self.jobs) >= o.capacity:
            return False
        if o.max_participants is not None and self.participants() >= o.max_participants:
            return False
        if self._cpu > o.max_cpu:
            return False
        return not (o.stop_when_throttled and any(j.meeting.throttled() for j in self.jobs.values()))

    def info(self) -> dict[str, Any]:
        throttled = sum(1 for j in self.jobs.values() if j.meeting.throttled())
        return {
            "id": self.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "capacity": self.options.capacity,
            "jobs": sorted(self.jobs),
            "participants": self.participants(),
            "cpu": round(self._cpu, 3),
            "cpuCores": round(self._cpu * (os.cpu_count() or 1), 3),
            "saturation": round(throttled / len(self.jobs), 3) if self.jobs else 0.0,
            "draining": self.draining,
            "accepting": self.has_room(),
            "startedAt": round(self.started, 3),
            "heartbeat": round(time.time(), 3),
        }

    # -- loops --

    async def _claim_loop(self) -> None:
        next_autoclaim = 0.0
        cursor = "0-0"
        while not self.draining:
            if not self.has_room():
                await asyncio.sleep(0.2)
                continue
            try:
                now = time.monotonic()
                # After an outage every entry looks idle: give live owners time to renew first.
                settled = now - self._redis_back_at > self.options.claim_idle_ms / 1000
                if now >= next_autoclaim and settled:
                    next_autoclaim = now + self.options.autoclaim_s
                    cursor, claims = await self.store.autoclaim(self.id, self.options.claim_idle_ms, 1, cursor)
                    for claim in claims:
                        await self._take(claim, orphan=True)
                    if not self.has_room():
                        continue
                claims = await self.store.read_new(self.id, 1, 500)
                self._redis_ok()
                for claim in claims:
                    await self._take(claim, orphan=False)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    await self._until_redis(self.store.ensure_group)
                else:
                    log.warning("worker %s: claim failed: %s", self.id, exc)
                    await asyncio.sleep(0.5)
            except REDIS_ERRORS as exc:
                self._redis_failed(exc)
                await asyncio.sleep(0.5)

    async def _take(self, claim: Claim, *, orphan: bool) -> None:
        if claim.job_id in self.jobs:
            return
        o = self.options
        code, detail = await self.store.acquire(claim, self.id, o.lease_ms, o.max_attempts)
        if code == -1:
            await self.store.drop_entry(claim.entry)
            return
        if code == -2:
            record = await self.store.job(claim.job_id) or {}
            if detail == "stop":
                state, why = EXITED, "stopped before a worker took the job"
            else:
                last = record.get("reason") or "no reason recorded"
                state, why = FAILED, f"gave up after {o.max_attempts} attempts; last: {last}"
            await self.store.finish(claim.job_id, None, state, why, claim.entry)
            self.metrics.finished.labels(state).inc()
            return
        if code == 0:
            log.info("job %s: lease held by %s; leaving it", claim.job_id, detail)
            return
        data = await self.store.job(claim.job_id)
        if not data or not data.get("spec"):
            return
        spec = JobSpec.from_json(data["spec"])
        lease = Lease(claim.job_id, self.id, code, claim.entry)
        assert self.runtime is not None
        meeting = Meeting(claim.job_id, spec, self.cfg, self.runtime, o.meeting)
        job = _Job(lease, spec, meeting, float(data.get("created") or time.time()), failover=detail == "1")
        meeting.on_joined = lambda session: self._joined(job, session)
        self.jobs[claim.job_id] = job
        self.metrics.claims.labels("orphan" if orphan else "new").inc()
        if job.failover:
            self.metrics.failovers.inc()
        job.task = asyncio.create_task(self._run(job), name=f"job-{claim.job_id}")
        how = ", failover" if job.failover else ""
        log.info("job %s: claimed (fence %d%s): %s", claim.job_id, code, how, spec.describe())

    def _joined(self, job: _Job, session: SignalingSession) -> None:
        now = time.time()
        if job.lease.fence == 1:
            self.metrics.claim_latency.observe(max(0.0, now - job.created))
        fields: dict[str, str | int | float] = {"state": RUNNING, "joined": f"{now:.3f}", "attempts": 0}
        resume = getattr(session, "resume_key", None)
        if resume:
            fields["resumeKey"] = resume
        if job.lease.fence == 1:
            fields["claimLatency"] = f"{now - job.created:.3f}"
        task = asyncio.get_running_loop().create_task(self._update(job, fields))
        self._updates.add(task)
        task.add_done_callback(self._updates.discard)
        log.info("job %s: joined as %s", job.lease.job_id, session.self_id)

    async def _update(self, job: _Job, fields: dict[str, str | int | float]) -> None:
        with contextlib.suppress(*ANY_REDIS_ERROR):
            await self.store.update(job.lease, **fields)

    async def _run(self, job: _Job) -> None:
        try:
            outcome = await job.meeting.run()
            await self._settle(job, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s: settling failed", job.lease.job_id)
        finally:
            self.jobs.pop(job.lease.job_id, None)

    async def _settle(self, job: _Job, outcome: Outcome) -> None:
        """Turn how the meeting ended into the job's next state (only while the job is ours)."""
        job_id = job.lease.job_id
        log.info("job %s: %s (%s)", job_id, outcome.kind, outcome.reason)
        if job.lost or job.handed_off:
            return  # another worker owns it now; nothing of ours may change it
        for _ in range(20):  # Redis may be restarting: keep trying for a while
            try:
                fence, entry = job.lease.fence, job.lease.entry
                if job.stop_requested:
                    done = await self.store.finish(job_id, fence, EXITED, "stopped by request", entry)
                    state = EXITED
                elif outcome.kind == "refused":
                    done = await self.store.finish(job_id, fence, FAILED, outcome.reason, entry)
                    state = FAILED
                elif outcome.kind in ("over", "left"):
                    done = await self.store.finish(job_id, fence, EXITED, outcome.reason, entry)
                    state = EXITED
                else:
                    done, state = bool(await self.store.requeue(job.lease, outcome.reason, handoff=False)), "requeued"
                if done:
                    self.metrics.finished.labels(state).inc()
                return
            except REDIS_ERRORS as exc:
                self._redis_failed(exc)
                await asyncio.sleep(1.0)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.renew_s)
            jobs = [j for j in self.jobs.values() if not (j.lost or j.handed_off)]
            if jobs:
                await asyncio.gather(*(self._renew(j) for j in jobs))

    async def _renew(self, job: _Job) -> None:
        sent = time.monotonic()
        try:
            ours, stop = await self.store.renew(job.lease, self.options.lease_ms, job.meeting.participants())
        except ANY_REDIS_ERROR as exc:
            if isinstance(exc, REDIS_ERRORS):
                self._redis_failed(exc)
            if time.monotonic() - job.last_renew > self.options.self_fence_s and not job.lost:
                job.lost = True
                job.meeting.leave(f"no lease renewal for {self.options.self_fence_s:.0f} s")
                self.metrics.lease_lost.inc()
            return
        self._redis_ok()
        if not ours:
            if not job.lost and not job.handed_off:
                log.warning("job %s: lease lost (another worker holds it); leaving", job.lease.job_id)
                job.lost = True
                job.meeting.leave("lease lost")
                self.metrics.lease_lost.inc()
            return
        job.last_renew = sent
        if stop and not job.stop_requested:
            job.stop_requested = True
            job.meeting.leave("stopped by request")

    async def _beat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat_s)
            self._cpu = self._process.cpu_percent(None) / 100.0 / (os.cpu_count() or 1)
            self.metrics.observe(self)
            try:
                await self._publish()
                self._redis_ok()
            except REDIS_ERRORS as exc:
                self._redis_failed(exc)
            except ResponseError as exc:
                log.warning("worker %s: heartbeat failed: %s", self.id, exc)

    async def _publish(self) -> None:
        await self.store.publish_worker(self.id, self.info(), self.options.heartbeat_ttl_ms)

    # -- Redis health --

    def _redis_failed(self, exc: BaseException) -> None:
        if self._redis_down_since is None:
            self._redis_down_since = time.monotonic()
            log.warning("worker %s: Redis unreachable (%r); retrying", self.id, exc)
            self.metrics.redis_errors.inc()

    def _redis_ok(self) -> None:
        if self._redis_down_since is not None:
            log.warning("worker %s: Redis is back after %.1f s", self.id, time.monotonic() - self._redis_down_since)
            self._redis_down_since = None
            self._redis_back_at = time.monotonic()

    async def _until_redis(self, fn: Any) -> None:
        while True:
            try:
                await fn()
                self._redis_ok()
                return
            except REDIS_ERRORS as exc:
                self._redis_failed(exc)
                await asyncio.sleep(0.5)

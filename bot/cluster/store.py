"""Every Redis key and command of the cluster, in one place: jobs, the stream, leases, heartbeats.

Why these primitives (docs/scale.md, "Design"):

- **The queue** is one Redis Stream (``{p}:jobs``) read by one consumer group (``workers``). An
  entry stays *pending* on the worker that runs its job for the job's whole life; that worker
  re-``XCLAIM``s it to itself (min-idle 0) on every lease renewal, which keeps its idle time near
  zero. A worker that dies stops doing so; once the entry is idle past the claim timeout another
  worker takes it with ``XAUTOCLAIM``. An entry is acknowledged (and deleted) only when the job
  ends or is re-queued under a new entry.
- **The lease** (``{p}:lease:{id}``, ``SET PX``) says which worker runs a job now; its value is
  ``worker|fence``. The **fencing token** is ``HINCRBY job fence``: every acquisition raises it, and
  every write a worker makes about a job (renew, running, finish, requeue) is a Lua script that first
  checks the fence, so a worker that lost its job can no longer change it.
- **Job records** are hashes (``{p}:job:{id}``): the spec (with the bot token), state, worker, fence,
  attempts, heartbeat, participants. **Workers** publish ``{p}:worker:{id}`` (JSON, with a TTL) and
  are listed in the sorted set ``{p}:workers``.

Scripts are atomic, so each state change is one step; no other locking exists.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.cluster.jobs import ACTIVE_STATES, EXITED, FAILED, QUEUED, RUNNING, STOPPING, JobSpec

GROUP = "workers"
FINISHED_JOB_TTL_S = 24 * 3600
"""How long a finished job's record stays readable (GET /bots/{id})."""

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a lost or restarting Redis looks like to a caller: retry later, don't crash."""
ANY_REDIS_ERROR = (RedisConnectionError, RedisTimeoutError, OSError, ResponseError)
"""The above plus a refused command (e.g. a script or group missing during a restart)."""


def connect(url: str) -> aioredis.Redis:
    """A client that reconnects on its own: each command retries a few times with backoff, and the
    callers' loops retry beyond that (a Redis restart takes seconds)."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2.0,
        socket_timeout=10.0,
        health_check_interval=5,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


_SUBMIT = """
local existing = redis.call('GET', KEYS[1])
if existing then
  local st = redis.call('HGET', ARGV[5] .. 'job:' .. existing, 'state')
  if st and st ~= 'exited' and st ~= 'failed' then return {0, existing} end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'spec', ARGV[2], 'state', 'queued', 'created', ARGV[3],
  'fence', 0, 'attempts', 0, 'failovers', 0, 'meetingKey', KEYS[1], 'participants', 0)
local entry = redis.call('XADD', KEYS[3], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[2], 'entry', entry)
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
return {1, entry}
"""

# KEYS: job, lease. ARGV: worker, lease_ms, now, max_attempts, entry.
# Returns {fence, failover(0/1)} on success; {0, holder} when the lease is held; {-1, why} when the
# entry should be dropped (no such job, finished) and {-2, why} when the job must fail now.
_ACQUIRE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {-1, 'missing'} end
if state == 'exited' or state == 'failed' then return {-1, state} end
local holder = redis.call('GET', KEYS[2])
if holder then return {0, holder} end
if redis.call('HGET', KEYS[1], 'stop') == '1' then return {-2, 'stop'} end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > tonumber(ARGV[4]) then return {-2, 'attempts'} end
local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('SET', KEYS[2], ARGV[1] .. '|' .. fence, 'PX', ARGV[2])
local prev = redis.call('HGET', KEYS[1], 'worker')
local failover = 0
if prev and prev ~= '' and prev ~= ARGV[1] then
  failover = 1
  redis.call('HINCRBY', KEYS[1], 'failovers', 1)
end
redis.call('HSET', KEYS[1], 'state', 'starting', 'worker', ARGV[1], 'since', ARGV[3], 'heartbeat', ARGV[3],
  'entry', ARGV[5], 'participants', 0)
redis.call('HDEL', KEYS[1], 'handoffFrom')
return {fence, failover}
"""

# KEYS: job, lease, stream. ARGV: worker|fence, lease_ms, now, participants, fence, group, worker, entry.
# Returns {1, stop flag} while the job is ours, {0, ''} once it is not.
_RENEW = """
local cur = redis.call('GET', KEYS[2])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
elseif (not cur) and redis.call('HGET', KEYS[1], 'fence') == ARGV[5] then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
else
  return {0, ''}
end
redis.call('HSET', KEYS[1], 'heartbeat', ARGV[3], 'participants', ARGV[4])
pcall(redis.call, 'XCLAIM', KEYS[3], ARGV[6], ARGV[7], 0, ARGV[8], 'JUSTID')
return {1, redis.call('HGET', KEYS[1], 'stop') or ''}
"""

# KEYS: job. ARGV: fence, field, value, field, value, ... Sets fields only while the fence matches.
_UPDATE = """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS: job, lease, stream, active. ARGV: fence, state, reason, now, group, entry, ttl_s, prefix.
_FINISH = """
if ARGV[1] ~= '*' and redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return 0 end
local last = redis.call('HGET', KEYS[1], 'worker') or ''
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'reason', ARGV[3], 'ended', ARGV[4], 'worker', '', 'lastWorker', last)
redis.call('DEL', KEYS[2])
if ARGV[6] ~= '' then
  redis.call('XACK', KEYS[3], ARGV[5], ARGV[6])
  redis.call('XDEL', KEYS[3], ARGV[6])
end
redis.call('SREM', KEYS[4], redis.call('HGET', KEYS[1], 'id'))
local mk = redis.call('HGET', KEYS[1], 'meetingKey')
if mk and redis.call('GET', mk) == redis.call('HGET', KEYS[1], 'id') then redis.call('DEL', mk) end
redis.call('EXPIRE', KEYS[1], ARGV[7])
return 1
"""

# KEYS: job, lease, stream. ARGV: fence, group, old entry, reason, worker, handoff (0/1), reset attempts (0/1).
# Puts the job back in the queue under a new entry; returns the new entry id or '' if not ours.
_REQUEUE = """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return '' end
redis.call('DEL', KEYS[2])
local entry = redis.call('XADD', KEYS[3], '*', 'job', redis.call('HGET', KEYS[1], 'id'))
if ARGV[3] ~= '' then
  redis.call('XACK', KEYS[3], ARGV[2], ARGV[3])
  redis.call('XDEL', KEYS[3], ARGV[3])
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'worker', '', 'entry', entry, 'reason', ARGV[4], 'lastWorker', ARGV[5])
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'handoffFrom', ARGV[5]) end
if ARGV[7] == '1' then redis.call('HSET', KEYS[1], 'attempts', 0) end
return entry
"""

# KEYS: job, stream, active. ARGV: now, group, ttl_s. DELETE: a queued job ends at once; a running one
# is flagged and its worker leaves on its next renewal.
_STOP = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'exited' or state == 'failed' then return state end
redis.call('HSET', KEYS[1], 'stop', '1')
if state == 'queued' and (redis.call('HGET', KEYS[1], 'handoffFrom') or '') == '' then
  local entry = redis.call('HGET', KEYS[1], 'entry') or ''
  if entry ~= '' then
    redis.call('XACK', KEYS[2], ARGV[2], entry)
    redis.call('XDEL', KEYS[2], entry)
  end
  redis.call('HSET', KEYS[1], 'state', 'exited', 'reason', 'stopped before a worker took the job', 'ended', ARGV[1])
  redis.call('SREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
  local mk = redis.call('HGET', KEYS[1], 'meetingKey')
  if mk and redis.call('GET', mk) == redis.call('HGET', KEYS[1], 'id') then redis.call('DEL', mk) end
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return 'exited'
end
redis.call('HSET', KEYS[1], 'state', 'stopping')
return 'stopping'
"""


@dataclass
class Claim:
    """A stream entry this worker now owns (pending on its consumer)."""

    entry: str
    job_id: str


@dataclass
class Lease:
    """This worker's hold on a job: the fence every later write is checked against."""

    job_id: str
    worker: str
    fence: int
    entry: str

    @property
    def value(self) -> str:
        return f"{self.worker}|{self.fence}"


class Store:
    """The cluster's Redis schema under ``prefix``; one instance per process."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "hoovik:") -> None:
        # Any: with decode_responses=True every reply is str, which redis-py's types cannot say.
        self.r: Any = redis
        self.prefix = prefix
        self.stream = f"{prefix}jobs"
        self.active = f"{prefix}active"
        self.index = f"{prefix}jobs:index"
        self.workers_key = f"{prefix}workers"
        self._submit = redis.register_script(_SUBMIT)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._update = redis.register_script(_UPDATE)
        self._finish = redis.register_script(_FINISH)
        self._requeue = redis.register_script(_REQUEUE)
        self._stop = redis.register_script(_STOP)

    # -- keys --

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def lease_key(self, job_id: str) -> str:
        return f"{self.prefix}lease:{job_id}"

    def worker_key(self, worker: str) -> str:
        return f"{self.prefix}worker:{worker}"

    def meeting_key(self, spec: JobSpec) -> str:
        return f"{self.prefix}meeting:{hashlib.sha1(spec.meeting_key.encode()).hexdigest()[:20]}"

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group (from the start: nothing queued is skipped)."""
        try:
            await self.r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- dispatcher --

    async def submit(self, spec: JobSpec) -> tuple[bool, str]:
        """Queue a job; ``(True, id)``, or ``(False, id of the active job for that meeting)``."""
        job_id = secrets.token_hex(8)
        now = f"{time.time():.3f}"
        keys = [self.meeting_key(spec), self.job_key(job_id), self.stream, self.active, self.index]
        ok, value = await self._submit(keys=keys, args=[job_id, spec.to_json(), now, GROUP, self.prefix])
        return (True, job_id) if int(ok) == 1 else (False, str(value))

    async def job(self, job_id: str) -> dict[str, str] | None:
        data = await self.r.hgetall(self.job_key(job_id))
        return dict(data) if data else None

    async def request_stop(self, job_id: str) -> str:
        keys = [self.job_key(job_id), self.stream, self.active]
        return str(await self._stop(keys=keys, args=[f"{time.time():.3f}", GROUP, FINISHED_JOB_TTL_S]))

    async def active_jobs(self) -> list[dict[str, str]]:
        ids = sorted(await self.r.smembers(self.active))
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.job_key(job_id))
        rows = await pipe.execute()
        return [dict(row) for row in rows if row]

    async def queue_stats(self) -> dict[str, int]:
        """Stream length, entries not yet delivered (lag) and pending (delivered, not acknowledged)."""
        out = {"length": 0, "lag": 0, "pending": 0}
        try:
            out["length"] = int(await self.r.xlen(self.stream))
            for group in await self.r.xinfo_groups(self.stream):
                if group.get("name") == GROUP:
                    out["pending"] = int(group.get("pending") or 0)
                    out["lag"] = int(group.get("lag") or 0)
        except ResponseError:
            pass  # no stream yet
        return out

    async def workers(self) -> list[dict[str, Any]]:
        """Live workers (their heartbeat key exists), each with its published load."""
        names = await self.r.zrange(self.workers_key, 0, -1)
        if not names:
            return []
        values = await self.r.mget([self.worker_key(n) for n in names])
        out: list[dict[str, Any]] = []
        gone: list[str] = []
        for name, value in zip(names, values, strict=True):
            if value is None:
                gone.append(name)
                continue
            out.append(json.loads(value))
        if gone:  # heartbeat expired: the worker is gone; keep the set bounded
            await self.r.zrem(self.workers_key, *gone)
        return out

    # -- worker --

    async def read_new(self, worker: str, count: int, block_ms: int) -> list[Claim]:
        resp = await self.r.xreadgroup(GROUP, worker, {self.stream: ">"}, count=count, block=block_ms)
        return [Claim(entry, fields.get("job", "")) for _, entries in resp or [] for entry, fields in entries]

    async def autoclaim(self, worker: str, min_idle_ms: int, count: int, start: str = "0-0") -> tuple[str, list[Claim]]:
        """Take over entries idle longer than ``min_idle_ms`` (their worker stopped renewing)."""
        resp = await self.r.xautoclaim(self.stream, GROUP, worker, min_idle_ms, start_id=start, count=count)
        cursor, entries = str(resp[0]), resp[1]
        claims = [Claim(entry, fields.get("job", "")) for entry, fields in entries if fields is not None]
        return cursor, claims

    async def drop_entry(self, entry: str) -> None:
        """An entry whose job is gone or finished: acknowledge and delete it."""
        await self.r.xack(self.stream, GROUP, entry)
        await self.r.xdel(self.stream, entry)

    async def acquire(self, claim: Claim, worker: str, lease_ms: int, max_attempts: int) -> tuple[int, str]:
        keys = [self.job_key(claim.job_id), self.lease_key(claim.job_id)]
        now = f"{time.time():.3f}"
        code, detail = await self._acquire(keys=keys, args=[worker, lease_ms, now, max_attempts, claim.entry])
        return int(code), str(detail)

    async def renew(self, lease: Lease, lease_ms: int, participants: int) -> tuple[bool, bool]:
        """Extend the lease and keep the entry fresh; ``(still ours, stop requested)``."""
        keys = [self.job_key(lease.job_id), self.lease_key(lease.job_id), self.stream]
        now = f"{time.time():.3f}"
        args: list[str | int] = [
            lease.value,
            lease_ms,
            now,
            participants,
            lease.fence,
            GROUP,
            lease.worker,
            lease.entry,
        ]
        ok, stop = await self._renew(keys=keys, args=args)
        return int(ok) == 1, stop == "1"

    async def update(self, lease: Lease, **fields: str | int | float) -> bool:
        args: list[str | int | float] = [lease.fence]
        for k, v in fields.items():
            args += [k, v]
        return int(await self._update(keys=[self.job_key(lease.job_id)], args=args)) == 1

    async def finish(self, job_id: str, fence: int | None, state: str, reason: str, entry: str) -> bool:
        """End a job (``fence=None``: regardless of owner, for entries no worker holds)."""
        assert state in (EXITED, FAILED)
        keys = [self.job_key(job_id), self.lease_key(job_id), self.stream, self.active]
        args: list[str | int] = ["*" if fence is None else fence, state, reason, f"{time.time():.3f}", GROUP, entry]
        return int(await self._finish(keys=keys, args=[*args, FINISHED_JOB_TTL_S, self.prefix])) == 1

    async def requeue(self, lease: Lease, reason: str, *, handoff: bool, reset_attempts: bool = False) -> str:
        keys = [self.job_key(lease.job_id), self.lease_key(lease.job_id), self.stream]
        args: list[str | int] = [
            lease.fence,
            GROUP,
            lease.entry,
            reason,
            lease.worker,
            int(handoff),
            int(reset_attempts),
        ]
        return str(await self._requeue(keys=keys, args=args))

    async def publish_worker(self, worker: str, info: dict[str, Any], ttl_ms: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self.worker_key(worker), json.dumps(info, separators=(",", ":")), px=ttl_ms)
        pipe.zadd(self.workers_key, {worker: time.time()})
        await pipe.execute()

    async def remove_worker(self, worker: str) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(self.worker_key(worker))
        pipe.zrem(self.workers_key, worker)
        await pipe.execute()
        try:
            # Only a consumer without pending entries: its entries must stay claimable.
            for consumer in await self.r.xinfo_consumers(self.stream, GROUP):
                if consumer.get("name") == worker and int(consumer.get("pending") or 0) == 0:
                    await self.r.xgroup_delconsumer(self.stream, GROUP, worker)
        except ResponseError:
            pass


def job_view(data: dict[str, str], now: float | None = None) -> dict[str, Any]:
    """A job hash as the REST API shows it (never the token)."""
    now = time.time() if now is None else now
    spec = JobSpec.from_json(data["spec"]) if data.get("spec") else None

    def num(key: str) -> float | None:
        value = data.get(key)
        return float(value) if value not in (None, "") else None

    heartbeat = num("heartbeat")
    out: dict[str, Any] = {
        "id": data.get("id"),
        "state": data.get("state"),
        "worker": data.get("worker") or None,
        "since": num("since"),
        "createdAt": num("created"),
        "endedAt": num("ended"),
        "participants": int(data.get("participants") or 0),
        "lastHeartbeat": heartbeat,
        "heartbeatAgeS": (
            None if heartbeat is None or data.get("state") not in ACTIVE_STATES else round(now - heartbeat, 3)
        ),
        "fence": int(data.get("fence") or 0),
        "attempts": int(data.get("attempts") or 0),
        "failovers": int(data.get("failovers") or 0),
        "reason": data.get("reason") or None,
        "stopRequested": data.get("stop") == "1",
        "joinedAt": num("joined"),
        "claimLatencyS": num("claimLatency"),
    }
    if data.get("handoffFrom"):
        out["handoffFrom"] = data["handoffFrom"]
    if spec is not None:
        out["meeting"] = spec.public()
    return out


__all__ = [
    "ANY_REDIS_ERROR",
    "GROUP",
    "QUEUED",
    "REDIS_ERRORS",
    "RUNNING",
    "STOPPING",
    "Claim",
    "Lease",
    "Store",
    "connect",
    "job_view",
]

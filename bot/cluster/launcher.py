"""``hoovik-bot serve --redis URL``: "Add the bot" submits a job to the cluster instead of starting
a local process.

:class:`RedisBotLauncher` implements :class:`signaling.launcher.BotLauncher`: it mints the bot's
invite through the hub's :class:`~signaling.launcher.RoomView`, queues a job with the same code the
dispatcher uses (:meth:`bot.cluster.store.Store.submit`, straight to Redis: one hop fewer, same
validation and the same one-job-per-meeting rule) and maps the job's state to the page's states.
Jobs outlive the signaling server: closing the launcher leaves them running (the bots rejoin a
restarted server that keeps its rooms with ``--state``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.cluster.jobs import ACTIVE_STATES, EXITED, FAILED, QUEUED, RUNNING, STARTING, STOPPING, JobSpec
from bot.cluster.store import ANY_REDIS_ERROR, Store, connect, job_view

if TYPE_CHECKING:
    from signaling.launcher import BotLauncher, RoomView

log = logging.getLogger(__name__)

DEFAULT_TOKEN_TTL_S = 24 * 3600.0
"""The bot's invite must outlive the meeting: every failover rejoins with it."""

_PAGE_STATE = {QUEUED: "starting", STARTING: "starting", RUNNING: "joined", STOPPING: "stopping", EXITED: "exited"}


class RedisBotLauncher:
    """Queues one cluster job per room; ``status`` reads it back from Redis."""

    def __init__(
        self,
        rooms: RoomView,
        store: Store,
        *,
        signaling_url: str | None = None,
        token_ttl_s: float = DEFAULT_TOKEN_TTL_S,
        bundle: str | None = None,
        owns_redis: bool = True,
    ) -> None:
        self.rooms = rooms
        self.store = store
        self.signaling_url = signaling_url
        self.token_ttl_s = token_ttl_s
        self.bundle = bundle
        self.owns_redis = owns_redis
        self.jobs: dict[str, str] = {}
        """room → the id of the last job this launcher queued for it."""
        self._active: set[str] = set()

    async def launch(self, room: str, signaling_url: str) -> tuple[int, dict[str, Any]]:
        current = await self.status(room)
        if current.get("launched") and current["state"] in ("starting", "joined", "stopping"):
            return 409, {**current, "error": "bot_running", "message": "a bot is already running for this room"}
        if self.rooms.bot_in_room(room):
            why = "a bot is already in this room"
            return 409, {"error": "bot_present", "message": why, "state": "joined", "launched": False}
        token = self.rooms.mint_bot_token(room, self.token_ttl_s)
        spec = JobSpec(signaling=self.signaling_url or signaling_url, room=room, token=token, bundle=self.bundle)
        try:
            created, job_id = await self.store.submit(spec)
        except ANY_REDIS_ERROR as exc:
            why = f"the bot cluster is unreachable (Redis): {exc}"
            return 503, {"error": "cluster_unavailable", "message": why, "state": "none", "launched": False}
        self.jobs[room] = job_id
        if not created:
            body = await self.status(room)
            return 409, {**body, "error": "bot_running", "message": "a bot job is already active for this room"}
        self._active.add(room)
        log.info("room %s: queued bot job %s", room, job_id)
        return 202, {
            "state": "starting",
            "message": "queued: waiting for a bot worker",
            "launched": True,
            "jobId": job_id,
        }

    async def status(self, room: str) -> dict[str, Any]:
        job_id = self.jobs.get(room)
        data = None
        if job_id is not None:
            try:
                data = await self.store.job(job_id)
            except ANY_REDIS_ERROR as exc:
                return {"state": "starting", "message": f"the bot cluster is unreachable: {exc}", "launched": True}
        if data is None:
            present = self.rooms.bot_in_room(room)
            message = "a bot is in the meeting" if present else "no bot"
            return {"state": "joined" if present else "none", "message": message, "launched": False}
        view = job_view(data)
        state = view["state"]
        if state not in ACTIVE_STATES:
            self._active.discard(room)
        page = "failed" if state == FAILED else _PAGE_STATE.get(state, "starting")
        if page == "joined" and not self.rooms.bot_in_room(room):
            page = "starting"  # failing over: the next worker is joining
        return {
            "state": page,
            "message": _message(view),
            "launched": True,
            "jobId": job_id,
            "worker": view["worker"],
            "since": view["since"],
            "participants": view["participants"],
            "failovers": view["failovers"],
        }

    async def stop_room(self, room: str, reason: str) -> bool:
        job_id = self.jobs.get(room)
        if job_id is None:
            return False
        try:
            outcome = await self.store.request_stop(job_id)
        except ANY_REDIS_ERROR:
            return False
        return outcome in ("stopping", "exited") and outcome != "missing"

    async def close(self) -> None:
        if self.owns_redis:
            await self.store.r.aclose()

    def running(self) -> int:
        return len(self._active)


def _message(view: dict[str, Any]) -> str:
    state = view["state"]
    if state == QUEUED:
        return "queued: waiting for a bot worker"
    if state == STARTING:
        return f"worker {view['worker']} is joining the meeting"
    if state == RUNNING:
        return f"the bot is in the meeting (worker {view['worker']})"
    if state == STOPPING:
        return "the bot is leaving"
    return str(view.get("reason") or state)


def redis_launcher_factory(
    redis_url: str,
    *,
    prefix: str = "hoovik:",
    signaling_url: str | None = None,
    token_ttl_s: float = DEFAULT_TOKEN_TTL_S,
    bundle: str | None = None,
) -> Callable[[RoomView], BotLauncher]:
    """The :data:`signaling.launcher.LauncherFactory` for ``serve --redis URL``. ``signaling_url``:
    the server's address as the workers reach it (default: the address the host's request came in
    on, which is right only when workers run on the same machine)."""

    def build(rooms: RoomView) -> BotLauncher:
        store = Store(connect(redis_url), prefix)
        return RedisBotLauncher(rooms, store, signaling_url=signaling_url, token_ttl_s=token_ttl_s, bundle=bundle)

    return build

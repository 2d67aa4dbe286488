"""One meeting's bot inside a worker: the same :class:`~bot.service.BotService` that ``hoovik-bot
join`` runs, fed the worker's shared :class:`~bot.runtime.Runtime` so that no model loads per job.

It follows ``bot/cli.py``'s ``_join`` (connect, run the session, leave on request) without the
process around it: no HTTP server (the worker has one), no signal handling (the worker decides when
a meeting leaves: DELETE, a lost lease, a drain). How the session ended is returned as an
:class:`Outcome` for the worker to turn into a job state; this module knows nothing of Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.cluster.jobs import JobSpec
from bot.config import BotConfig
from bot.service import BotService
from signaling.base import JOIN_REFUSED_CODES, JoinRejected, SignalingSession

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

UNRECOVERABLE_JOIN = JOIN_REFUSED_CODES | {"room_not_found", "invalid_code", "forbidden"}
"""Join refusals that no retry can fix: the job fails at once with the reason."""

MEETING_OVER = frozenset({"room_not_found", "meeting_ended"})
"""Ends of a joined session that mean the meeting itself is over (the job exits, no retry)."""


@dataclass(frozen=True)
class Outcome:
    """How a meeting ended. ``kind``: ``left`` (we left on request: ``why`` says whose), ``refused``
    (the join was refused for good), ``over`` (the meeting ended, or someone else's bot replaced
    ours), ``retry`` (something transient: another attempt may work)."""

    kind: str
    reason: str
    joined: bool


@dataclass
class MeetingOptions:
    give_up_s: float = 60.0
    """Signaling unreachable this long: the session ends and the job is retried (bounded)."""
    idle_stop_s: float = 120.0
    """Leave a meeting that had people and has had none for this long."""
    wait_for_people_s: float = 600.0
    """Leave a meeting nobody came to within this long."""


class Meeting:
    """Runs one job's bot until it ends or :meth:`leave` is called."""

    def __init__(
        self,
        job_id: str,
        spec: JobSpec,
        cfg: BotConfig,
        runtime: Runtime,
        options: MeetingOptions,
        on_joined: Callable[[SignalingSession], None] | None = None,
    ) -> None:
        self.job_id = job_id
        self.spec = spec
        self.cfg = cfg
        self.runtime = runtime
        self.options = options
        self.on_joined = on_joined
        self.service: BotService | None = None
        self.session: SignalingSession | None = None
        self.joined_at: float | None = None
        self.results = 0
        self._leave = asyncio.Event()
        self._leave_reason = ""

    def participants(self) -> int:
        """People (not bots) in the meeting now."""
        s = self.session
        if s is None or not getattr(s, "connected", True):
            return 0
        return sum(1 for p in s.peers.values() if p.role != "bot")

    def throttled(self) -> bool:
        engine = self.service.engine if self.service is not None else None
        return bool(engine is not None and engine.throttle.throttled)

    def leave(self, reason: str) -> None:
        """Ask the meeting to leave now (idempotent; the first reason wins)."""
        if not self._leave.is_set():
            self._leave_reason = reason
            self._leave.set()

    async def run(self) -> Outcome:
        service = BotService(self.cfg)
        self.service = service
        service.result_listeners.append(self._count_result)
        try:
            await service.load(runtime=self.runtime)
            try:
                session = await self._connect()
            except JoinRejected as exc:
                kind = "refused" if exc.code in UNRECOVERABLE_JOIN else "retry"
                return Outcome(kind, f"join refused ({exc.code}): {exc.message}", False)
            self.session = session
            self.joined_at = time.time()
            if self.on_joined is not None:
                self.on_joined(session)
            if self._leave.is_set():
                await _close_quietly(session)
                return Outcome("left", self._leave_reason, True)
            return await self._run_session(service, session)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s: the bot failed", self.job_id)
            return Outcome("retry", f"the bot failed: {exc!r}", self.joined_at is not None)
        finally:
            with contextlib.suppress(Exception):
                await service.stop()

    async def _connect(self) -> SignalingSession:
        spec = self.spec
        if spec.native:
            from signaling.client import ReconnectingClient, ReconnectPolicy

            assert spec.signaling and spec.room and spec.token
            return await ReconnectingClient.connect(
                spec.signaling,
                spec.room,
                spec.token,
                spec.participant_id,
                spec.name,
                "bot",
                policy=ReconnectPolicy(give_up_s=self.options.give_up_s),
            )
        from signaling.hoovik import HoovikOptions, HoovikSession

        assert spec.hoovik and spec.meeting
        options = HoovikOptions(user_id=spec.participant_id, name=spec.name, give_up_s=self.options.give_up_s)
        return await HoovikSession.connect(spec.hoovik, spec.meeting, options)

    async def _run_session(self, service: BotService, session: SignalingSession) -> Outcome:
        task = asyncio.create_task(service.run_session(session), name=f"meeting-{self.job_id}")
        leave = asyncio.create_task(self._leave.wait())
        idle = asyncio.create_task(self._watch_people())
        try:
            await asyncio.wait({task, leave, idle}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leave.cancel()
            idle.cancel()
        if not task.done():
            # As ``join`` does: leave first (nobody keeps a ghost of the bot), then let the
            # participant wind down; cancelling it mid-close can be swallowed by aiortc.
            await _close_quietly(session)
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 10.0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(task, 5.0)
            return Outcome("left", self._leave_reason or "left", True)
        with contextlib.suppress(Exception):
            task.result()
        reason = service.end_reason or "closed"
        if reason in MEETING_OVER:
            return Outcome("over", f"the meeting is over ({reason})", True)
        if reason == "replaced":
            return Outcome("over", "replaced: another bot joined with the same participant id", True)
        if reason in ("client_closed", "stopped") and self._leave.is_set():
            return Outcome("left", self._leave_reason, True)
        return Outcome("retry", f"the signaling session ended ({reason})", True)

    async def _watch_people(self) -> None:
        """Leave a meeting nobody came to, or everybody left (like the embedded launcher does)."""
        started = time.monotonic()
        seen = False
        alone_since: float | None = None
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if self.participants() > 0:
                seen, alone_since = True, None
                continue
            if seen:
                alone_since = now if alone_since is None else alone_since
                if now - alone_since > self.options.idle_stop_s:
                    self.leave("nobody was left in the meeting")
                    return
            elif now - started > self.options.wait_for_people_s:
                self.leave("nobody came to the meeting")
                return

    def _count_result(self, _result: object) -> None:
        self.results += 1


async def _close_quietly(session: SignalingSession) -> None:
    with contextlib.suppress(Exception):
        await session.close()

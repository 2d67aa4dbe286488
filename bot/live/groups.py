"""Grouping and batching of the live scheduler: phase slots, groups of a kind, cohort batches.

Participants are placed on ``phase_slots`` phases of the result period in groups of at most
``group_size``: the steps of a group start on the same tick, submit their audio windows together
(one Wav2Vec2 forward) and their predictor inputs together (one predictor call per group). Speakers
are grouped with speakers. Groups are spread farthest-first over the grid, so that the work of the
period arrives evenly (docs/engine.md, "Scheduling").
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Iterable
from typing import Any

from bot.live.state import ParticipantState
from bot.pipeline.pools import BatchWorkerPool, PoolClosed, PoolFull, chain_future


class PhaseGrid:
    """``slots`` phases of a period of ``interval`` seconds starting at ``origin``, groups of ``group_size``."""

    def __init__(self, origin: float, interval: float, slots: int, group_size: int) -> None:
        if slots < 1:
            raise ValueError("phase_slots must be >= 1")
        self.origin = origin
        self.interval = interval
        self.slots = slots
        self.group_size = max(1, group_size)

    def choose(self, everyone: Iterable[ParticipantState], me: ParticipantState | None, speaker: bool) -> int:
        """A slot for a participant of this kind (speaker or not): join the fullest group of the
        same kind that has room; else open the free slot farthest from the occupied ones; else
        (more than slots x group size participants) the least-loaded slot."""
        members: dict[int, list[ParticipantState]] = {}
        for other in everyone:
            if other is not me:
                members.setdefault(other.slot, []).append(other)
        same = [
            k
            for k, group in members.items()
            if len(group) < self.group_size and all(o.speaker == speaker for o in group)
        ]
        if same:
            return max(same, key=lambda k: (len(members[k]), -k))
        free = [k for k in range(self.slots) if k not in members]
        if free:
            if not members:
                return 0
            n = self.slots
            return max(free, key=lambda k: (min(min((k - o) % n, (o - k) % n) for o in members), -k))
        return min(range(self.slots), key=lambda k: (len(members.get(k, ())), k))

    def consolidate(self, everyone: Iterable[ParticipantState], st: ParticipantState) -> None:
        """Move into a group of the same kind that is at least as large as this one (and has room).

        Groups shrink when members leave or change kind; merging small groups keeps one predictor
        call per group few. Moving only towards a group at least as large as one's own never
        oscillates.
        """
        everyone = list(everyone)
        sizes: dict[int, int] = {}
        for other in everyone:
            if other is not st and other.speaker == st.speaker:
                sizes[other.slot] = sizes.get(other.slot, 0) + 1
        own = sizes.get(st.slot, 0) + 1
        targets = [
            k
            for k, n in sizes.items()
            if k != st.slot
            and n >= own
            and n < self.group_size
            and not any(o.slot == k and o.speaker != st.speaker for o in everyone)
        ]
        if targets:
            st.slot = max(targets, key=lambda k: (sizes[k], -k))
            st.count("regrouped")

    def time_after(self, slot: int, t: float) -> float:
        """The first time strictly after ``t`` (by at most one period) on ``slot``'s phase."""
        offset = self.origin + slot * self.interval / self.slots
        k = math.floor((t - offset) / self.interval + 1e-6) + 1
        return offset + k * self.interval


class Batch:
    """Requests of one cohort for one pool, submitted together in one ``submit_many``.

    Members ``join`` when their step starts (synchronously, so every member of a cohort has joined
    before any of them can be ready), then either ``add`` a request or ``leave``. The batch goes out
    once every member is accounted for, or ``hold_s`` after the first request, whichever is first;
    after the hold, late requests go out on their own. The check runs one loop turn after a change,
    so members that become ready in the same turn share the batch.
    """

    def __init__(self, pool: BatchWorkerPool[Any, Any], hold_s: float) -> None:
        self.pool = pool
        self.hold_s = hold_s
        self.members = 0
        self.accounted: set[int] = set()
        self.items: list[tuple[Any, asyncio.Future[Any]]] = []
        self.expired = False
        self._check_soon = False
        self._timer: asyncio.TimerHandle | None = None

    def join(self) -> int:
        self.members += 1
        return self.members

    def add(self, member: int, request: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.items.append((request, fut))
        self.accounted.add(member)
        self._schedule()
        return fut

    def leave(self, member: int) -> None:
        if member not in self.accounted:
            self.accounted.add(member)
            self._schedule()

    def _schedule(self) -> None:
        if not self._check_soon:
            self._check_soon = True
            asyncio.get_running_loop().call_soon(self._check)

    def _check(self) -> None:
        self._check_soon = False
        if not self.items:
            return
        if self.expired or len(self.accounted) >= self.members:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.hold_s, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self.expired = True
        self._flush()

    def _flush(self) -> None:
        if self._timer is not None and len(self.accounted) >= self.members:
            self._timer.cancel()
            self._timer = None
        items, self.items = [(r, f) for r, f in self.items if not f.done()], []
        if not items:
            return
        try:
            futs = self.pool.submit_many([r for r, _ in items])
        except (PoolFull, PoolClosed) as exc:
            for _, fut in items:
                fut.set_exception(type(exc)(str(exc)))
            return
        for (_, fut), pool_fut in zip(items, futs, strict=True):
            pool_fut.add_done_callback(functools.partial(chain_future, dst=fut))


class Cohort:
    """The steps one tick started: one audio batch, and two predictor batches (steps that wait for
    an audio window become ready later than steps that do not, so they do not hold them up)."""

    def __init__(self, audio_pool: BatchWorkerPool[Any, Any], inference_pool: BatchWorkerPool[Any, Any], hold_s: float):
        self.audio = Batch(audio_pool, hold_s)
        self.infer_audio = Batch(inference_pool, hold_s)
        self.infer_plain = Batch(inference_pool, hold_s)

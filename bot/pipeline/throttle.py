"""Self-throttling of the frame samplers (AIMD), instead of asking clients to slow down.

The original told the host browser to send fewer frames (``backpressure``). A bot participant
receives whatever the meeting sends, so it lowers how often it *samples* frames instead:
multiplicative decrease when the face queue is deeper than the limit, additive recovery once it
has drained for a while, never below a floor so no participant starves.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass
class ThrottleEvent:
    """One change of the sampling rate; ``time`` is on the engine's (monotonic) clock."""

    time: float
    kind: str  # "decrease" | "recover"
    fps: float
    queue_depth: int
    cause: str | None = None  # of a decrease: "face_queue", or the caller's ("late_steps", "loop_lag")

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.time, 3),
            "kind": self.kind,
            "fps": round(self.fps, 3),
            "queueDepth": self.queue_depth,
            "cause": self.cause,
        }


class SamplingThrottle:
    """One shared sampling rate for all participants' face samplers.

    Decrease: when the face queue (queued + running jobs) is deeper than ``queue_limit``, the rate
    is multiplied by ``decrease``, at most once per ``recover_after_s / 2`` so that one burst does
    not floor it. Recovery: once the queue has stayed at or below half the limit for
    ``recover_after_s`` (and as long since the last change), the rate grows by ``recover_step``,
    one step at a time, up to ``target_fps``. The rate never leaves ``[min_fps, target_fps]``.
    Nothing is sent to clients: a bot cannot make a meeting send less, it samples less.
    """

    def __init__(
        self,
        target_fps: float,
        min_fps: float,
        queue_limit: int,
        decrease: float = 0.5,
        recover_step: float = 0.5,
        recover_after_s: float = 1.0,
        max_events: int = 256,
    ) -> None:
        if not 0 < min_fps <= target_fps:
            raise ValueError("need 0 < min_fps <= target_fps")
        self.target_fps = target_fps
        self.min_fps = min_fps
        self.queue_limit = queue_limit
        self.decrease = decrease
        self.recover_step = recover_step
        self.recover_after_s = recover_after_s
        self.fps = target_fps
        self._last_change = -math.inf
        self._calm_since: float | None = None
        self.events: deque[ThrottleEvent] = deque(maxlen=max_events)
        self.decreases = 0
        self.recoveries = 0
        # Decreases by cause, so that /stats says why the rate came down.
        self.causes: dict[str, int] = {}

    def observe(self, queue_depth: int, now: float, *, overloaded: bool = False, cause: str | None = None) -> float:
        """Feed the current face-queue depth; returns the sampling rate to use.

        ``overloaded``: the engine fell behind elsewhere (a step still running when the next one was
        due, or the asyncio loop running late; ``cause`` names it), which counts like a face queue
        over the limit: fewer frames leave more CPU to the rest.
        """
        if overloaded or queue_depth > self.queue_limit:
            why = (cause or "overloaded") if overloaded else "face_queue"
            self._calm_since = None
            # One decrease per recovery interval, so a single burst does not floor the rate.
            if self.fps > self.min_fps and now - self._last_change >= self.recover_after_s / 2:
                self.fps = max(self.min_fps, self.fps * self.decrease)
                self._last_change = now
                self.decreases += 1
                self.causes[why] = self.causes.get(why, 0) + 1
                self._record(ThrottleEvent(now, "decrease", self.fps, queue_depth, why))
            return self.fps
        if queue_depth <= self.queue_limit // 2:
            if self._calm_since is None:
                self._calm_since = now
            if self.fps < self.target_fps and now - max(self._calm_since, self._last_change) >= self.recover_after_s:
                self.fps = min(self.target_fps, self.fps + self.recover_step)
                self._last_change = now
                self.recoveries += 1
                self._record(ThrottleEvent(now, "recover", self.fps, queue_depth))
        else:
            self._calm_since = None  # between half the limit and the limit: neither calm nor overloaded
        return self.fps

    @property
    def throttled(self) -> bool:
        return self.fps < self.target_fps

    def _record(self, event: ThrottleEvent) -> None:
        self.events.append(event)

"""SamplingThrottle (AIMD) on a synthetic clock: decrease under a deep face queue, stepwise recovery."""

from __future__ import annotations

import itertools

import pytest

from bot.pipeline.throttle import SamplingThrottle


def feed(t: SamplingThrottle, depth: int, start: float, seconds: float, tick: float = 0.02) -> float:
    now = start
    for _ in range(round(seconds / tick)):
        now += tick
        t.observe(depth, now)
    return now


def test_deep_queue_halves_the_rate_at_most_twice_a_second_down_to_the_floor() -> None:
    t = SamplingThrottle(10.0, 1.0, queue_limit=3)
    assert t.observe(4, 0.0) == 5.0  # first overload acts at once
    assert t.observe(9, 0.1) == 5.0  # one burst does not floor the rate
    now = feed(t, 4, 0.1, 3.0)
    assert t.fps == 1.0 and t.throttled
    assert [e.fps for e in t.events] == [5.0, 2.5, 1.25, 1.0]
    assert all(b.time - a.time >= 0.5 - 1e-9 for a, b in zip(t.events, list(t.events)[1:], strict=False))
    feed(t, 50, now, 5.0)
    assert t.fps == 1.0 and t.decreases == 4  # never below the floor


def test_recovery_is_additive_after_a_calm_second_each() -> None:
    t = SamplingThrottle(3.0, 1.0, queue_limit=3, recover_step=0.5, recover_after_s=1.0)
    now = feed(t, 10, 0.0, 2.0)
    assert t.fps == 1.0
    now = feed(t, 0, now, 0.9)
    assert t.fps == 1.0  # not calm for long enough yet
    now = feed(t, 0, now, 10.0)
    recoveries = [e for e in t.events if e.kind == "recover"]
    assert [e.fps for e in recoveries] == [1.5, 2.0, 2.5, 3.0]
    assert all(b.time - a.time >= 1.0 - 1e-9 for a, b in itertools.pairwise(recoveries))
    assert t.fps == 3.0 and not t.throttled


def test_a_half_full_queue_neither_decreases_nor_recovers() -> None:
    t = SamplingThrottle(4.0, 1.0, queue_limit=4)
    now = feed(t, 5, 0.0, 0.1)
    assert t.fps == 2.0
    now = feed(t, 3, now, 5.0)  # between limit/2 and the limit
    assert t.fps == 2.0
    feed(t, 2, now, 1.1)
    assert t.fps == 2.5


def test_events_are_bounded() -> None:
    t = SamplingThrottle(100.0, 1.0, queue_limit=1, recover_after_s=0.02, max_events=16)
    now = 0.0
    for _ in range(200):
        now = feed(t, 5, now, 0.05)
        now = feed(t, 0, now, 0.1)
    assert len(t.events) == 16 and t.decreases + t.recoveries > 16


def test_bad_rates_are_rejected() -> None:
    with pytest.raises(ValueError):
        SamplingThrottle(1.0, 2.0, queue_limit=3)
    with pytest.raises(ValueError):
        SamplingThrottle(1.0, 0.0, queue_limit=3)

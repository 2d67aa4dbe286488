"""Bounded hand-off structures between the receive loops and the engine.

Only the newest video frame matters to the sampler, so video uses a one-value slot that
overwrites (and counts what it overwrote) instead of a queue that would grow with latency.
Audio must stay contiguous for 0.6 s windows, so it goes into a fixed-size ring of samples.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")

FrameItem = tuple[Any, float, float]  # (frame, media time, receive wall time)


class LatestSlot(Generic[T]):
    """Holds at most one value; a new value replaces an untaken one and counts a drop."""

    __slots__ = ("_value", "dropped", "version")

    def __init__(self) -> None:
        self._value: T | None = None
        self.version = 0
        self.dropped = 0

    def put(self, value: T) -> None:
        if self._value is not None:
            self.dropped += 1
        self._value = value
        self.version += 1

    def take(self) -> T | None:
        value, self._value = self._value, None
        return value

    def peek(self) -> T | None:
        return self._value

    def clear(self) -> None:
        self._value = None


class FrameBox:
    """The newest received frame of one participant, handed from the loop to a face thread.

    The loop puts every received frame (a reference; an untaken older one is replaced and counted
    by the caller); the face thread takes it when it *starts* the job, so queueing in the face
    pool never makes the analysed frame older. A lock makes put/take/clear atomic across threads.
    """

    __slots__ = ("_item", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: FrameItem | None = None

    def put(self, item: FrameItem) -> None:
        with self._lock:
            self._item = item

    def take(self) -> FrameItem | None:
        with self._lock:
            item, self._item = self._item, None
        return item

    def peek(self) -> FrameItem | None:
        return self._item

    def clear(self) -> None:
        with self._lock:
            self._item = None


@dataclass
class AudioWindow:
    """A copy of the newest samples with the media time of its last sample."""

    samples: np.ndarray
    end_media_time: float
    end_wall_time: float


class AudioRing:
    """Fixed-capacity float32 ring of 16 kHz mono samples; the oldest samples fall off."""

    def __init__(self, capacity: int) -> None:
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._filled = 0
        self._pos = 0
        self.end_media_time = 0.0
        self.end_wall_time = 0.0
        self.total_samples = 0

    @property
    def capacity(self) -> int:
        return int(self._buf.shape[0])

    def __len__(self) -> int:
        return self._filled

    def append(self, samples: np.ndarray, end_media_time: float, end_wall_time: float) -> None:
        data = np.asarray(samples, dtype=np.float32).reshape(-1)
        cap = self.capacity
        if data.shape[0] >= cap:
            self._buf[:] = data[-cap:]
            self._pos = 0
            self._filled = cap
        else:
            n = data.shape[0]
            first = min(n, cap - self._pos)
            self._buf[self._pos : self._pos + first] = data[:first]
            self._buf[: n - first] = data[first:]
            self._pos = (self._pos + n) % cap
            self._filled = min(cap, self._filled + n)
        self.total_samples += data.shape[0]
        self.end_media_time = end_media_time
        self.end_wall_time = end_wall_time

    def latest(self, n: int) -> np.ndarray:
        """The newest ``n`` samples (fewer if not filled yet), oldest first, as a copy."""
        n = min(n, self._filled)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        start = (self._pos - n) % self.capacity
        if start + n <= self.capacity:
            return self._buf[start : start + n].copy()
        return np.concatenate([self._buf[start:], self._buf[: (start + n) % self.capacity]])

    def window(self, n: int) -> AudioWindow:
        return AudioWindow(self.latest(n), self.end_media_time, self.end_wall_time)

    def clear(self) -> None:
        self._filled = 0
        self._pos = 0

"""Per-participant EMA smoothing of the ensemble probabilities, with the neutral fallback (docs/results.md, "Shape").

s = alpha·p + (1 − alpha)·prev, renormalised by (Σs + 1e-9); the label is argmax s (first maximum
wins, as Python's ``max`` over the class-ordered dict did), its score is s[label], and a score below
the confidence threshold shows as ``neutral/calm`` while keeping that score.

When is the history dropped? Two policies:

* ``"periodic"`` reproduces the reference exactly. Its reset clock only moves when a reset fires,
  so the history is thrown away every time more than ``ttl`` seconds have passed since the previous
  *reset*, even while results arrive steadily every 0.3 s (docs/results.md, "Differences from the original, on
  purpose"). That makes the smoothed label
  jump back to the raw prediction every ~2 s. Use it to compare against the original.
* ``"inactivity"`` (the default) is the fix the TTL was evidently meant to be: the history expires
  only when more than ``ttl`` seconds passed since the last *update*, i.e. after the participant
  went quiet, so a steady stream is smoothed continuously while a stale history from a previous
  burst never leaks into a new one.

A ``None`` step (the predictor returned its error dict) yields ``neutral/calm`` with score 0.0 and
touches neither the history nor any clock, as in the original.

Arithmetic is plain Python floats in class order, so the values equal the reference's to the bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from models.constants import CLASS_NAMES, NEUTRAL_LABEL

__all__ = ["EmaSmoother", "ResetPolicy", "SmoothedLabel"]

ResetPolicy = Literal["inactivity", "periodic"]


@dataclass(frozen=True)
class SmoothedLabel:
    """One post-processed result.

    ``label_index`` is the index of ``label`` in the class order (the neutral index after a
    fallback); ``smoothed`` is the stored EMA vector (None on an error step); ``reset`` is True
    when this step started a fresh history (prev = p).
    """

    label: str
    label_index: int
    score: float
    smoothed: tuple[float, ...] | None
    reset: bool


class EmaSmoother:
    """EMA + neutral fallback for one participant. Not thread-safe; one owner calls :meth:`update`."""

    def __init__(
        self,
        alpha: float = 0.65,
        confidence_threshold: float = 0.45,
        neutral_label: str = NEUTRAL_LABEL,
        ttl: float = 2.0,
        reset: ResetPolicy = "inactivity",
        class_names: Sequence[str] = CLASS_NAMES,
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if reset not in ("inactivity", "periodic"):
            raise ValueError(f"reset must be 'inactivity' or 'periodic', got {reset!r}")
        if neutral_label not in class_names:
            raise ValueError(f"neutral label {neutral_label!r} is not a class")
        self.alpha = float(alpha)
        self.confidence_threshold = float(confidence_threshold)
        self.neutral_label = neutral_label
        self.ttl = float(ttl)
        self.reset_policy: ResetPolicy = reset
        self.class_names = tuple(class_names)
        self._neutral_index = self.class_names.index(neutral_label)
        self._history: tuple[float, ...] | None = None
        # The reference keeps the last reset per pid, defaulting to 0 when absent.
        self._last_reset = 0.0
        self._last_update: float | None = None

    @property
    def history(self) -> tuple[float, ...] | None:
        return self._history

    def clear(self) -> None:
        """Forget everything, as when the participant's state is purged."""
        self._history = None
        self._last_reset = 0.0
        self._last_update = None

    def _expire(self, now: float) -> bool:
        """Apply the reset policy; True when the history was dropped at this step."""
        if self.reset_policy == "periodic":
            if now - self._last_reset > self.ttl:
                self._history = None
                self._last_reset = now
                return True
            return False
        if self._last_update is None or now - self._last_update > self.ttl:
            self._history = None
            return True
        return False

    def update(self, probs: Sequence[float] | None, now: float) -> SmoothedLabel:
        """Smooth one result taken at monotonic time ``now`` (seconds); ``None`` = predictor error."""
        if probs is None:
            return SmoothedLabel(self.neutral_label, self._neutral_index, 0.0, None, False)
        p = [float(v) for v in probs]
        if len(p) != len(self.class_names):
            raise ValueError(f"expected {len(self.class_names)} probabilities, got {len(p)}")
        if not all(math.isfinite(v) for v in p):
            raise ValueError("probabilities must be finite")

        reset = self._expire(now)
        prev = self._history if self._history is not None else p
        a = self.alpha
        b = 1.0 - a
        raw = [a * pk + b * qk for pk, qk in zip(p, prev, strict=True)]
        total = 0.0
        for v in raw:
            total += v
        total += 1e-9
        smoothed = tuple(v / total for v in raw)
        self._history = smoothed
        self._last_update = now

        index = 0
        for k in range(1, len(smoothed)):
            if smoothed[k] > smoothed[index]:
                index = k
        score = smoothed[index]
        if score < self.confidence_threshold:
            index = self._neutral_index
        return SmoothedLabel(self.class_names[index], index, score, smoothed, reset)

"""Run plumbing shared by the trainers: device choice, seeding and the JSON-lines metrics log."""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` → cuda if available, else mps, else cpu; anything else is passed to ``torch.device``."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's legacy global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars → Python, NaN/Inf → None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_safe(value: Any) -> Any:
    """Public alias of the cleaner, for reports and component metadata."""
    return _clean(value)


class MetricsLog:
    """Appends one JSON object per event (epoch, boosting result, calibration …) to a file.

    Each line carries ``event`` and ``time`` (seconds since the log was opened); with no path the
    events are only kept in memory (``records``), which the trainers also return.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._start = time.monotonic()
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.monotonic() - self._start, 3), **_clean(fields)}
        with self._lock:
            self.records.append(record)
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record, sort_keys=True) + "\n")
        log.info("%s %s", event, {k: v for k, v in record.items() if k not in ("event",)})

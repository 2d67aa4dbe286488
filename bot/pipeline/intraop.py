"""How many threads one torch forward may use: one under load, every core when the bot is light.

Why. The pools provide the parallelism, so torch runs one intra-op thread per pool thread: under
load, extra torch threads spin against the other pools (measured on the 2-vCPU machine at load
~2.5: a 0.6 s Wav2Vec2 window took 279 ms with 1 thread and 526-1,386 ms with 2). But with one or
two participants that left the second core idle while a speaker's result waited for its forward:
Wav2Vec2-large on a 0.6 s window takes 131 ms in bf16 and 251 ms in fp32 on one thread here, 75
and 172 ms on two (``docs/engine.md``, "One participant on every core").

So the engine chooses: every core while at most ``boost_max_participants`` are analysed and the
loop is not lagging, one thread otherwise. ``torch.set_num_threads`` is process-wide (checked: a
value set on one thread is what every other thread reads), so the engine never calls it from the
loop. The audio pool's threads call :meth:`IntraOpThreads.apply` before each Wav2Vec2 forward, so a
change lands between forwards. The inference thread keeps pinning its own count (the transformer's
``num_threads``, for float-order fidelity); it runs after a step's audio, so at one or two
participants the two hardly overlap, and ``apply`` re-checks torch's count every time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _torch_get_num_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _torch_set_num_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


class IntraOpThreads:
    """The engine's choice of torch intra-op threads, applied by the pool threads that run torch.

    ``base`` is the thread count under load (the config's ``torch_threads``), ``boost`` the count
    when light (0: every available core). ``getter``/``setter`` are torch's (tests pass their own).
    """

    def __init__(
        self,
        base: int,
        boost: int = 0,
        *,
        getter: Callable[[], int] = _torch_get_num_threads,
        setter: Callable[[int], None] = _torch_set_num_threads,
    ) -> None:
        self.base = max(1, base)
        self.boost = max(self.base, boost if boost > 0 else available_cores())
        self._getter = getter
        self._setter = setter
        self._chosen = self.base
        self._lock = threading.Lock()
        self.changes = 0  # times a pool thread changed torch's count

    @property
    def chosen(self) -> int:
        return self._chosen

    @property
    def boosted(self) -> bool:
        return self._chosen > self.base

    def choose(self, light: bool) -> int:
        """Called by the engine (on the loop): every core when ``light``, else ``base``."""
        self._chosen = self.boost if light else self.base
        return self._chosen

    def apply(self) -> int:
        """Called on a pool thread before a forward: set torch's count to the choice if it differs."""
        want = self._chosen
        with self._lock:
            if self._getter() != want:  # another thread may have pinned its own count meanwhile
                self._setter(want)
                self.changes += 1
        return want

    def snapshot(self) -> dict[str, int | bool]:
        return {"threads": self._chosen, "base": self.base, "boost": self.boost, "changes": self.changes}

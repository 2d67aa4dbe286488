"""One call that replays inputs and writes the outputs: used by the CLI, the tests and the bench."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import EngineConfig
from bot.pipeline.results import EmotionResult
from bot.replay.decode import MediaError, probe
from bot.replay.driver import Replayer
from bot.replay.inputs import InputError, ReplayInput
from bot.replay.outputs import ReplayOutputs, write_outputs
from bot.replay.records import ParticipantReplay, ReplayModels


@dataclass
class ReplayRun:
    """The outcome of a replay; ``wall_s`` and ``speed`` are for humans, never written to files."""

    participants: list[ParticipantReplay]
    input_errors: list[InputError] = field(default_factory=list)
    outputs: ReplayOutputs | None = None
    wall_s: float = 0.0

    @property
    def media_s(self) -> float:
        """Media seconds replayed (each file from its first frame to its end)."""
        return sum(max(0.0, p.end_s - p.origin) for p in self.participants)

    @property
    def speed(self) -> float:
        """Replay speed as a multiple of real time."""
        return self.media_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def errors(self) -> list[str]:
        return [e.message for e in self.input_errors] + [p.error for p in self.participants if p.error is not None]

    @property
    def results(self) -> int:
        return sum(len(p.results) for p in self.participants)


async def replay_async(
    inputs: Sequence[ReplayInput],
    config: EngineConfig,
    models: ReplayModels,
    *,
    out_dir: Path | None = None,
    input_errors: Sequence[InputError] = (),
    jobs: int = 2,
    realtime: bool = False,
    progress: bool = False,
    on_result: Callable[[EmotionResult], None] | None = None,
) -> ReplayRun:
    """Replay ``inputs`` and, with ``out_dir``, write timeline.jsonl/.csv, summary.json, report.html."""
    with ExitStack() as stack:
        bar: Any = None
        if progress:
            from tqdm import tqdm

            total = sum(await asyncio.gather(*(asyncio.to_thread(_duration, i.path) for i in inputs)))
            bar = stack.enter_context(
                tqdm(total=round(total, 1) or None, unit="s", desc="replay", unit_scale=False, dynamic_ncols=True)
            )
            bar.bar_format = "{l_bar}{bar}| {n:.1f}/{total:.1f} media s [{elapsed}<{remaining}]"

        def advance(seconds: float) -> None:
            if bar is not None:
                bar.update(seconds)

        started = time.perf_counter()
        async with Replayer(
            config, models, jobs=jobs, realtime=realtime, on_result=on_result, progress=advance
        ) as replayer:
            participants = await replayer.run(inputs)
        wall = time.perf_counter() - started
    run = ReplayRun(participants, list(input_errors), None, wall)
    if out_dir is not None:
        run.outputs = await asyncio.to_thread(write_outputs, out_dir, participants, input_errors, config, models)
    return run


def replay(
    inputs: Sequence[ReplayInput],
    config: EngineConfig,
    models: ReplayModels,
    **kwargs: Any,
) -> ReplayRun:
    """Synchronous :func:`replay_async` (runs its own event loop)."""
    return asyncio.run(replay_async(inputs, config, models, **kwargs))


def _duration(path: Path) -> float:
    try:
        return probe(path).duration_s or 0.0
    except MediaError:
        return 0.0

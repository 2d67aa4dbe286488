"""Recorded-session replay: the live pipeline over files, on the media clock (docs/replay.md).

Replay is the live picture with a file reader in place of ``track.recv()`` and the media clock in
place of the wall clock: the same stages and pools, the freshness rules of :mod:`bot.pipeline.freshness`,
the same sequence assembly, predictor, EMA smoothing and result message.
"""

from bot.replay.driver import Replayer
from bot.replay.inputs import InputError, ReplayInput, resolve_inputs
from bot.replay.records import ParticipantReplay, ReplayModels, StepRecord
from bot.replay.run import ReplayRun, replay, replay_async

__all__ = [
    "InputError",
    "ParticipantReplay",
    "ReplayInput",
    "ReplayModels",
    "ReplayRun",
    "Replayer",
    "StepRecord",
    "replay",
    "replay_async",
    "resolve_inputs",
]

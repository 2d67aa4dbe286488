"""One typed configuration object for the bot, with the reference system's values as defaults.

Values come, in increasing priority, from the dataclass defaults (the reference system's values), an optional TOML
file, ``HOOVIK_*`` environment variables and command-line flags. Keeping every knob in one place
means the engine, replay and the demo can never run with different constants by accident.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

Precision = Literal["fp32", "bf16", "int8"]


@dataclass
class EngineConfig:
    """Timing, pool sizes and limits of the real-time engine (docs/engine.md)."""

    result_interval_s: float = 0.30
    modality_stale_s: float = 0.4
    target_fps: float = 5.0
    min_fps: float = 1.0
    # Face jobs (queued + running) a group may find left by earlier groups before sampling slows;
    # 0: one group's worth (group_size). A group submits its faces in one burst, so a fixed 3 read
    # every burst not yet drained as overload (docs/engine.md, "Self-throttling").
    face_queue_limit: int = 0
    throttle_decrease: float = 0.5
    throttle_recover_step: float = 0.5
    throttle_recover_after_s: float = 1.0
    seq_len: int = 10
    audio_threads: int = 2
    face_threads: int = 2
    inference_threads: int = 1
    audio_max_batch: int = 8
    inference_max_batch: int = 16
    audio_buffer_s: float = 2.0
    ema_alpha: float = 0.65
    confidence_threshold: float = 0.45
    ema_ttl_s: float = 2.0
    ema_reset: Literal["inactivity", "periodic"] = "inactivity"
    vad: bool = True
    vad_threshold: float = 0.5
    torch_threads: int = 1
    # While at most this many participants are analysed (and the loop keeps up), a Wav2Vec2 forward
    # may use boost_torch_threads (0: every core) instead of torch_threads; 0 turns the boost off
    # (docs/engine.md, "One participant on every core").
    boost_max_participants: int = 2
    boost_torch_threads: int = 0
    # While light (as above), a step waits this long for its audio window instead of the face's
    # bound: nobody is starved by a speaker's wait then, and a result whose forward takes 150-250 ms
    # (fp32 on a small CPU) carries the fresh window instead of the one before it.
    audio_wait_light_s: float = 0.25
    # The predictor runs in a child process (bot/pipeline/remote.py): its Python work then shares no
    # GIL with the asyncio loop (docs/engine.md). Replay always predicts in-process.
    inference_process: bool = True
    # Scheduler tunables of the live engine (docs/engine.md, "Scheduling"):
    # phases per result period on which groups of participants are placed;
    phase_slots: int = 12
    # participants per group (one audio forward and one predictor call per group and step);
    group_size: int = 8
    # a participant counts as a speaker for this long after its last window with speech (so that
    # it is not regrouped at every pause between words);
    speech_hold_s: float = 2.0
    # how long a group's first ready predictor input may wait for the rest, beyond the face wait
    # (members are bounded by the face wait anyway; this only covers scheduling slack);
    batch_hold_slack_s: float = 0.05
    # live windows shorter than this are not embedded for the reference family (the original
    # required >= 1200 samples live and >= 2400 offline; we use the offline rule so serving matches
    # training). A bundle's feature plan declares its own minimum.
    min_live_samples: int = 2400


@dataclass
class ModelConfig:
    """Where the models come from."""

    bundle: str = (
        ""  # a bundle directory; empty or "starter" = the shipped starter bundle; "untrained" = the demo bundle (tests)
    )
    audio_model: str = "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim"
    audio_precision: Precision = "fp32"
    face_asset: str = ""  # empty = located by models.assets (config, cache, ../shared/models)
    cache_dir: str = ""
    offline: bool = False


@dataclass
class ServerConfig:
    """The bot's own HTTP server (telemetry) and the signaling connection."""

    http_host: str = "127.0.0.1"
    http_port: int = 0
    ice_servers: list[str] = field(default_factory=list)


@dataclass
class BotConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    models: ModelConfig = field(default_factory=ModelConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    @classmethod
    def load(cls, path: str | Path | None = None, env: dict[str, str] | None = None) -> BotConfig:
        """Defaults, then the TOML file, then ``HOOVIK_<SECTION>_<KEY>`` environment variables."""
        cfg = cls()
        if path:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
            for section, values in data.items():
                if not isinstance(values, dict):
                    raise ValueError(f"{path}: [{section}] must be a table")
                cfg.update(section, values, origin=str(path))
        environ = os.environ if env is None else env
        for section in ("engine", "models", "server"):
            prefix = f"HOOVIK_{section.upper()}_"
            values = {k[len(prefix) :].lower(): v for k, v in environ.items() if k.startswith(prefix)}
            if values:
                cfg.update(section, values, origin="environment")
        return cfg

    def update(self, section: str, values: dict[str, Any], origin: str = "flags") -> None:
        """Set keys of one section, converting strings to the field's type; unknown keys are errors."""
        target = getattr(self, section, None)
        if target is None or not dataclasses.is_dataclass(target):
            raise ValueError(f"{origin}: unknown config section {section!r}")
        known = {f.name: f for f in fields(target)}
        for key, raw in values.items():
            if key not in known:
                raise ValueError(f"{origin}: unknown key {section}.{key}")
            current = getattr(target, key)
            setattr(target, key, _coerce(raw, current, f"{section}.{key}"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_args(args: argparse.Namespace) -> BotConfig:
    """The config of a CLI command: ``--config`` file and environment (:meth:`BotConfig.load`), then flags."""
    cfg = BotConfig.load(getattr(args, "config", None))
    if getattr(args, "bundle", None):
        cfg.models.bundle = args.bundle
    if getattr(args, "audio_model", None):
        cfg.models.audio_model = args.audio_model
    if getattr(args, "precision", None):
        cfg.models.audio_precision = args.precision
    if getattr(args, "face_asset", None):
        cfg.models.face_asset = args.face_asset
    if getattr(args, "http_port", None) is not None:
        cfg.server.http_port = args.http_port
    if getattr(args, "http_host", None):
        cfg.server.http_host = args.http_host
    if getattr(args, "ice_server", None):
        cfg.server.ice_servers = list(args.ice_server)
    return cfg


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """The flags every model-loading subcommand takes (read back by :func:`config_from_args`)."""
    p.add_argument("--config", help="TOML config file")
    p.add_argument(
        "--bundle",
        help="model bundle directory (default: the shipped starter bundle; 'untrained': the untrained demo "
        "bundle, for tests)",
    )
    p.add_argument("--audio-model", help="Wav2Vec2 hub id or local directory ('untrained' for a stand-in)")
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], help="Wav2Vec2 precision")
    p.add_argument("--face-asset", help="path to face_landmarker.task")


def _coerce(raw: Any, current: Any, name: str) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        if isinstance(current, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, list):
            return [s for s in raw.split(",") if s]
    except ValueError as exc:
        raise ValueError(f"{name}: cannot read {raw!r} as {type(current).__name__}") from exc
    return raw

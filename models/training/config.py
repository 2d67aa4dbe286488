"""Training configuration: typed dataclasses whose defaults are the reference production values.

One :class:`TrainConfig` drives every ``hoovik-bot train`` command. It loads from TOML or JSON
(:func:`load_config`), takes dotted ``section.key=value`` overrides (:func:`apply_overrides`) and
rejects unknown keys, so a typo fails loudly instead of silently training with a default. The
values come from docs/training.md, "The recipe"; where we deliberately differ from the original the field says so.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class ExtractConfig:
    """Offline feature extraction (docs/training.md, "Extraction")."""

    audio_clip_s: float | None = 4.0  # pad/truncate the soundtrack to 4 s, as the original did (None: keep all)
    audio_only_duration_s: float = 4.0  # frame-time span D for clips without video (docs/training.md, "Extraction")
    workers: int = 2  # clips extracted in parallel (threads; each owns its MediaPipe graph)
    audio_batch: int = 32  # Wav2Vec2 windows per forward
    seed: int = 42  # split seed
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    min_actors: int = 1  # actors every split must get from every corpus


@dataclass
class PhaseConfig:
    """One phase of the transformer recipe (docs/training.md, "Transformer")."""

    epochs: int
    lr: float
    warmup: int
    patience: int
    min_delta: float
    data: str = "all"  # "both": only clips with face and audio (phase A); "all": every clip
    mixup: bool = False
    mixup_start: int = 5  # first phase epoch with mixup
    swa_start: int | None = None  # first phase epoch averaged into the SWA model (None: no SWA)
    ravdess_weight: float = 1.432926  # sampling weight of RAVDESS clips (other corpora 1.0)


def _phase_a() -> PhaseConfig:
    return PhaseConfig(epochs=15, lr=1.66e-4, warmup=2, patience=12, min_delta=1e-3, data="both", ravdess_weight=1.2)


def _phase_b() -> PhaseConfig:
    return PhaseConfig(epochs=40, lr=1.97e-4, warmup=5, patience=12, min_delta=1e-3, mixup=True, mixup_start=5)


def _phase_c() -> PhaseConfig:
    return PhaseConfig(epochs=35, lr=7.2e-6, warmup=2, patience=6, min_delta=5e-4, swa_start=31)


@dataclass
class AugmentConfig:
    """Per-sample augmentation of the train loader (docs/training.md, "Transformer")."""

    static_std: float = 0.01  # below this mean temporal std a sequence counts as static
    face_noise: tuple[float, float] = (0.025, 0.06)  # σ for (static, moving) face sequences
    audio_noise: tuple[float, float] = (0.01, 0.02)
    drop_face_p: float = 0.02
    drop_audio_p: float = 0.02
    roll_p: float = 0.3
    roll_max: int = 3
    zero_frame_p: float = 0.3


@dataclass
class LossConfig:
    """Focal CE, auxiliary heads, SupCon, triplet and separation terms (docs/training.md, "Transformer")."""

    focal_gamma: float = 1.0
    label_smoothing: float = 0.077662
    class_boost: tuple[float, ...] = (1.053513, 3.285075, 1.859025, 1.376399, 3.092464, 0.561607)
    w_fusion: float = 0.70
    w_face: float = 0.15
    w_audio: float = 0.15
    supcon_max: float = 0.15
    supcon_start: int = 2
    supcon_ramp: int = 15
    supcon_tau: float = 0.1
    supcon_tau_decay: float = 0.0015
    supcon_tau_min: float = 0.07
    triplet_weight: float = 0.025
    triplet_margin: float = 0.5
    sep_sad: tuple[float, float] = (0.290365, 0.060703)  # (margin, weight): p_sad − p_neutral
    sep_fear: tuple[float, float] = (0.15, 0.02024)  # p_fearful − p_sad
    sep_disgust: tuple[float, float] = (0.162435, 0.034217)  # p_disgust − p_sad


@dataclass
class TransformerTrainConfig:
    """The EmotionTransformer recipe: architecture overrides, three phases, losses, augmentation."""

    architecture: dict[str, Any] = field(default_factory=dict)  # TransformerConfig overrides ({} = production)
    batch_size: int = 64
    eval_batch_size: int = 256
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    mixup_p: float = 0.220746
    mixup_alpha: float = 0.166792
    select_metric: str = "accuracy"  # early stopping / checkpoint metric on val: accuracy | balanced_accuracy
    device: str = "auto"  # auto (cuda, mps, cpu) or a torch device string
    threads: int = 0  # torch intra-op CPU threads while training (0: torch's default)
    phase_a: PhaseConfig = field(default_factory=_phase_a)
    phase_b: PhaseConfig = field(default_factory=_phase_b)
    phase_c: PhaseConfig = field(default_factory=_phase_c)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class XGBConfig:
    """Median fill → PCA → XGBoost (docs/training.md, "XGBoost")."""

    pca_components: int = 512  # clamped to min(512, train rows, 8149): PCA cannot have more
    n_estimators: int = 3150
    max_depth: int = 5
    learning_rate: float = 0.030834
    subsample: float = 0.759195
    colsample_bytree: float = 0.409213
    colsample_bylevel: float = 0.577997
    min_child_weight: float = 10.0
    gamma: float = 1.463988
    reg_alpha: float = 1.7074e-4
    reg_lambda: float = 5.399484
    early_stopping_rounds: int = 150
    fearful_boost: float = 1.5
    nthread: int = 0  # 0: all cores


@dataclass
class AnomalyConfig:
    """Per-profile IsolationForest detectors (docs/training.md, "Anomaly detectors")."""

    pca: dict[str, int] = field(
        default_factory=lambda: {"both": 256, "audio_only": 384, "video_only": 64, "global_fallback": 256}
    )
    n_estimators: int = 200
    target_fpr: float = 0.10  # threshold = this quantile of the val scores of the profile
    min_rows: int = 20  # fewer train rows → no detector of its own (the global fallback serves it)


@dataclass
class CalibrateConfig:
    """Temperature and fusion weight (docs/training.md, "Calibration", with the temperature actually fitted)."""

    temperature: str = "nll"  # "nll": minimise val NLL; "fixed": use fixed_temperature
    fixed_temperature: float = 1.0
    temperature_bounds: tuple[float, float] = (0.05, 20.0)
    weight_grid: int = 201
    weight_rows: str = "both"  # val rows the weight is fitted on: "both" (where it applies) or "all"
    optuna_trials: int = 0  # > 0: search the weight with Optuna TPE instead of the grid (optional dependency)


@dataclass
class TrainConfig:
    """Everything ``hoovik-bot train`` needs besides the dataset."""

    seed: int = 42
    transformer: TransformerTrainConfig = field(default_factory=TransformerTrainConfig)
    xgb: XGBConfig = field(default_factory=XGBConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    eval_batch_size: int = 256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses; unknown keys fail."""
    if not isinstance(data, Mapping):
        raise ValueError(f"config {where or 'root'}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"config {where or 'root'}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"config {where or 'root'}: {exc}") from exc


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Convert TOML/JSON values to the annotated type (nested dataclasses, tuples, floats)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ValueError(f"config {where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ValueError(f"config {where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"config {where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config {where}: expected an integer, got {value!r}")
        return value
    if hint is bool and not isinstance(value, bool):
        raise ValueError(f"config {where}: expected true/false, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise ValueError(f"config {where}: expected a string, got {value!r}")
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML (``.toml``) or JSON (anything else) file as a plain mapping."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: not valid {'TOML' if p.suffix.lower() == '.toml' else 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a table at the top level")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings; the value is parsed as JSON when it can be, else taken as text."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a table")
        node[parts[-1]] = value
    return out


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` laid over it, table by table (a partial table keeps the other defaults)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults, then the file (if any), then the overrides; unknown keys anywhere are an error."""
    data = deep_merge(TrainConfig().to_dict(), read_config_file(path) if path else {})
    return from_dict(TrainConfig, apply_overrides(data, overrides))

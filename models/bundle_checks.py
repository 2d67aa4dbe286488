"""Field checks for one section of a bundle manifest each: pure, and they allocate nothing.

Kept apart from :mod:`models.bundle` (which reads, writes and verifies whole bundles) so that each
check reads as the rule it enforces. Every failure is a :class:`BundleError` naming the manifest.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from models.anomaly import DETECTOR_NAMES
from models.constants import ANOMALY_DIM, AUDIO_DIM, FACE_DIM, NUM_CLASSES, SEQ_LEN, TABULAR_DIM
from models.forest import MAX_TREES
from models.transformer import TransformerConfig

MAX_BOOSTED_ROUNDS = 100_000


class BundleError(ValueError):
    """A bundle could not be used; the message names the file and what is wrong with it."""


def fail(mpath: Path, message: str) -> BundleError:
    return BundleError(f"{mpath}: {message}")


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def validate_transformer_config(mpath: Path, section: Any) -> TransformerConfig:
    if not isinstance(section, dict) or not isinstance(section.get("config"), dict):
        raise fail(mpath, "'transformer.config' must be an object")
    try:
        cfg = TransformerConfig.from_dict(section["config"])
        cfg.check_limits()
    except (TypeError, ValueError) as exc:
        raise fail(mpath, f"transformer config: {exc}") from exc
    for name, need in (("face_dim", FACE_DIM), ("audio_dim", AUDIO_DIM), ("num_classes", NUM_CLASSES)):
        if getattr(cfg, name) != need:
            raise fail(mpath, f"transformer config {name} {getattr(cfg, name)}, this build needs {need}")
    if cfg.max_len < SEQ_LEN:
        raise fail(mpath, f"transformer config max_len {cfg.max_len} is shorter than the sequence ({SEQ_LEN})")
    return cfg


def validate_tabular_meta(mpath: Path, meta: Any) -> None:
    if not isinstance(meta, dict):
        raise fail(mpath, "'tabular' must be an object")
    if not int_in(meta.get("pca_components"), 1, TABULAR_DIM):
        raise fail(mpath, f"tabular.pca_components {meta.get('pca_components')!r} outside [1, {TABULAR_DIM}]")
    rounds = meta.get("num_boosted_rounds", MAX_BOOSTED_ROUNDS)
    if not int_in(rounds, 1, MAX_BOOSTED_ROUNDS):
        raise fail(mpath, f"tabular.num_boosted_rounds {rounds!r} outside [1, {MAX_BOOSTED_ROUNDS}]")
    if not int_in(meta.get("n_iterations"), 1, rounds):
        raise fail(mpath, f"tabular.n_iterations {meta.get('n_iterations')!r} outside [1, {rounds}]")
    if meta.get("num_classes", NUM_CLASSES) != NUM_CLASSES:
        raise fail(mpath, f"tabular.num_classes {meta.get('num_classes')!r}, this build needs {NUM_CLASSES}")
    if meta.get("tabular_dim", TABULAR_DIM) != TABULAR_DIM:
        raise fail(mpath, f"tabular.tabular_dim {meta.get('tabular_dim')!r}, this build needs {TABULAR_DIM}")


def validate_anomaly_meta(mpath: Path, meta: Any) -> None:
    if not isinstance(meta, dict) or not isinstance(meta.get("detectors"), dict) or not meta["detectors"]:
        raise fail(mpath, "'anomaly.detectors' must name at least one detector")
    if meta.get("anomaly_dim", ANOMALY_DIM) != ANOMALY_DIM:
        raise fail(mpath, f"anomaly.anomaly_dim {meta.get('anomaly_dim')!r}, this build needs {ANOMALY_DIM}")
    for name, det in meta["detectors"].items():
        where = f"anomaly.detectors.{name}"
        if name not in DETECTOR_NAMES or not isinstance(det, dict) or det.get("name") != name:
            raise fail(mpath, f"{where}: unknown detector or name mismatch (known: {list(DETECTOR_NAMES)})")
        if not finite(det.get("threshold")):
            raise fail(mpath, f"{where}.threshold {det.get('threshold')!r} is not a finite number")
        n_components = det.get("n_components")
        if n_components is not None and not int_in(n_components, 1, ANOMALY_DIM):
            raise fail(mpath, f"{where}.n_components {n_components!r} outside [1, {ANOMALY_DIM}] (or null)")
        if "n_trees" in det and not int_in(det["n_trees"], 1, MAX_TREES):
            raise fail(mpath, f"{where}.n_trees {det['n_trees']!r} outside [1, {MAX_TREES}]")

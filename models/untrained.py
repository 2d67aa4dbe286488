"""Untrained but valid models, for offline demos and tests; always marked ``trained: false``.

No trained weights can be downloaded on an offline machine, yet the demo must run the real
pipeline end to end. These builders make every component with its production shapes from a seed
(random transformer weights, random orthonormal PCA bases, boosters and forests fitted on noise),
so every code path runs for real while the bundle and each result say that nothing was learned.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import xgboost
from sklearn.ensemble import IsolationForest
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from models.anomaly import AnomalyDetector, AnomalyModel
from models.bundle import Bundle, BundleError, EnsembleParams, load_bundle, save_bundle
from models.constants import ANOMALY_DIM, AUDIO_DIM, DEFAULT_WAV2VEC2_ID, FACE_DIM, NUM_CLASSES, TABULAR_DIM
from models.forest import IsolationForestArrays
from models.sequence import NormStats
from models.tabular import TabularModel
from models.transformer import EmotionTransformer, TransformerConfig

log = logging.getLogger(__name__)

_ANOMALY_GROUPS = ("both", "audio_only", "video_only", "global_fallback")

DEMO_BUNDLE_NAME = "demo-untrained-v1"
PRODUCTION_BUNDLE_NAME = "production-untrained-v1"

BundleSize = Literal["demo", "production"]


@dataclass(frozen=True)
class _Sizes:
    """The knobs that set what an untrained bundle costs at inference time."""

    xgb_rounds: int
    xgb_depth: int
    xgb_rows: int
    tabular_pca: int
    forest_trees: int
    anomaly_pca: dict[str, int]
    anomaly_rows: int


# "demo" keeps the offline demo quick to build; "production" has the original's serving cost
# (docs/training.md, "XGBoost" and "Anomaly detectors"): 3150 rounds x 6 classes of depth-5 trees = 18,900 trees,
# PCA 512 before XGBoost,
# IsolationForests of 200 trees behind PCA 256 / 384 / 64 / 256. Benchmarks need the latter:
# XGBoost and the forests dominate the predictor's cost, and the demo sizes hide that.
_SIZES: dict[str, _Sizes] = {
    "demo": _Sizes(10, 3, 360, 512, 50, dict.fromkeys(_ANOMALY_GROUPS, 64), 512),
    "production": _Sizes(
        3150,
        5,
        2000,
        512,
        200,
        {"both": 256, "audio_only": 384, "video_only": 64, "global_fallback": 256},
        1024,
    ),
}


def production_wav2vec2_config() -> Wav2Vec2Config:
    """The architecture of audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim (12 layers)."""
    return Wav2Vec2Config(
        hidden_size=1024,
        num_hidden_layers=12,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        feat_extract_activation="gelu",
        hidden_act="gelu",
    )


def small_wav2vec2_config() -> Wav2Vec2Config:
    """A cheap stand-in with the production output width (1024) for offline demos and tests."""
    return Wav2Vec2Config(
        hidden_size=AUDIO_DIM,
        num_hidden_layers=2,
        num_attention_heads=8,
        intermediate_size=1024,
        conv_dim=(128, 128, 128, 128, 128, 128, 128),
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=8,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
    )


def untrained_wav2vec2(size: str = "small", seed: int = 0) -> tuple[Wav2Vec2FeatureExtractor, Wav2Vec2Model]:
    """A seeded random Wav2Vec2 ("small" or "production") plus its feature extractor."""
    if size not in ("small", "production"):
        raise ValueError(f"unknown untrained Wav2Vec2 size {size!r} (small | production)")
    config = production_wav2vec2_config() if size == "production" else small_wav2vec2_config()
    torch.manual_seed(seed)
    model = Wav2Vec2Model(config).eval()
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )
    return extractor, model


def _orthonormal(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, k)).astype(np.float64))
    return np.ascontiguousarray(q.T.astype(np.float32))


def _untrained_tabular(rng: np.random.Generator, seed: int, sizes: _Sizes) -> TabularModel:
    k = sizes.tabular_pca
    components = _orthonormal(rng, k, TABULAR_DIM)
    x = rng.standard_normal((sizes.xgb_rows, k)).astype(np.float32)
    y = np.arange(sizes.xgb_rows) % NUM_CLASSES
    dtrain = xgboost.DMatrix(x, label=y, missing=np.nan)
    params = {
        "objective": "multi:softprob",
        "num_class": NUM_CLASSES,
        "max_depth": sizes.xgb_depth,
        "eta": 0.1,
        "seed": seed,
        "nthread": 1,
    }
    if sizes.xgb_rounds > 100:
        # Production size: no pruning, so that trees fitted on noise still grow to full depth like
        # the original's, and its column sampling (which also shortens the build).
        params.update({"tree_method": "hist", "gamma": 0.0, "min_child_weight": 0.0, "colsample_bytree": 0.41})
    booster = xgboost.train(params, dtrain, num_boost_round=sizes.xgb_rounds)
    return TabularModel(
        col_medians=np.zeros(TABULAR_DIM, np.float32),
        pca_components=components,
        pca_mean=np.zeros(TABULAR_DIM, np.float32),
        booster=booster,
        n_iterations=sizes.xgb_rounds,
    )


def _untrained_anomaly(rng: np.random.Generator, seed: int, sizes: _Sizes) -> AnomalyModel:
    detectors: dict[str, AnomalyDetector] = {}
    for name in _ANOMALY_GROUPS:
        k = sizes.anomaly_pca[name]
        components = _orthonormal(rng, k, ANOMALY_DIM)
        fit_rows = rng.standard_normal((sizes.anomaly_rows, k)).astype(np.float32)
        iso = IsolationForest(n_estimators=sizes.forest_trees, max_samples=256, random_state=seed).fit(fit_rows)
        forest = IsolationForestArrays.from_sklearn(iso)
        val = rng.standard_normal((200, k)).astype(np.float32)
        threshold = float(np.percentile(forest.decision_function(val), 10))
        detectors[name] = AnomalyDetector(
            name=name,
            scaler_mean=np.zeros(ANOMALY_DIM),
            scaler_scale=np.ones(ANOMALY_DIM),
            pca_components=components,
            pca_mean=np.zeros(ANOMALY_DIM, np.float32),
            forest=forest,
            threshold=threshold,
        )
    return AnomalyModel(detectors)


def make_untrained_bundle(seed: int = 0, size: BundleSize = "demo") -> Bundle:
    """Every component with production shapes, nothing learned; ``trained`` is False.

    ``size="demo"`` (default) has small boosters and forests so it builds in seconds;
    ``size="production"`` has the original's model sizes (minutes to build: 18,900 trees) so that
    benchmarks pay the real inference cost.
    """
    if size not in _SIZES:
        raise ValueError(f"unknown bundle size {size!r} (demo | production)")
    sizes = _SIZES[size]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    config = TransformerConfig()
    model = EmotionTransformer(config)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    norm = NormStats(
        face_mean=np.zeros(FACE_DIM, np.float32),
        face_std=np.ones(FACE_DIM, np.float32),
        audio_mean=np.zeros(AUDIO_DIM, np.float32),
        audio_std=np.ones(AUDIO_DIM, np.float32),
    )
    return Bundle(
        transformer_config=config,
        transformer_state=state,
        norm=norm,
        tabular=_untrained_tabular(rng, seed, sizes),
        anomaly=_untrained_anomaly(rng, seed, sizes),
        ensemble=EnsembleParams(),
        trained=False,
        provenance={
            "kind": "untrained-demo" if size == "demo" else "untrained-production-size",
            "seed": seed,
            "size": size,
            "note": "random weights and models fitted on noise; results are not emotions",
            "created_at": _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC).isoformat(),
        },
        audio_model={"source": DEFAULT_WAV2VEC2_ID, "hidden_size": AUDIO_DIM, "window_s": 0.6},
    )


def ensure_demo_bundle(parent: Path, seed: int = 0) -> Path:
    """The cached untrained demo bundle, written on first use (a few seconds)."""
    return _ensure_bundle(Path(parent) / DEMO_BUNDLE_NAME, seed, "demo")


def ensure_production_bundle(parent: Path, seed: int = 0) -> Path:
    """The cached untrained production-size bundle (benchmarks), written on first use (2-8 min)."""
    return _ensure_bundle(Path(parent) / PRODUCTION_BUNDLE_NAME, seed, "production")


def _ensure_bundle(path: Path, seed: int, size: BundleSize) -> Path:
    if (path / "manifest.json").is_file():
        try:
            load_bundle(path)
            return path
        except BundleError as exc:
            log.warning("cached %s bundle is unusable (%s); rebuilding it", size, exc)
    log.info("writing the untrained %s bundle to %s", size, path)
    save_bundle(make_untrained_bundle(seed, size), path)
    return path

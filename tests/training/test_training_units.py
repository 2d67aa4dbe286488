"""Recipe pieces in isolation: config, schedule, losses, augmentation, calibration, metrics, projections."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.constants import NUM_CLASSES
from models.tabular import TabularModel
from models.training.augment import augment_batch, mixup_batch
from models.training.calibrate import calibrate, fit_temperature
from models.training.config import AugmentConfig, CalibrateConfig, TrainConfig, load_config
from models.training.losses import class_weights, focal_ce, separation_loss, supcon_loss, supcon_schedule, triplet_loss
from models.training.metrics import balanced_accuracy, confusion_matrix, per_class_recall
from models.training.runtime import select_device
from models.training.transformer_train import lr_at
from models.training.xgb_train import column_medians, project, sample_weights


def test_config_defaults_are_the_reference_values(tmp_path: Path) -> None:
    cfg = TrainConfig()
    assert cfg.seed == 42 and cfg.transformer.phase_a.epochs == 15 and cfg.transformer.phase_b.lr == 1.97e-4
    assert cfg.transformer.phase_c.swa_start == 31 and cfg.xgb.n_estimators == 3150 and cfg.xgb.pca_components == 512
    assert cfg.anomaly.pca == {"both": 256, "audio_only": 384, "video_only": 64, "global_fallback": 256}
    path = tmp_path / "c.toml"
    path.write_text("seed = 3\n[transformer.phase_b]\nepochs = 2\n[anomaly.pca]\nboth = 8\n")
    cfg = load_config(path, ["xgb.n_estimators=7", "transformer.loss.sep_sad=[0.1, 0.2]"])
    assert cfg.seed == 3 and cfg.transformer.phase_b.epochs == 2 and cfg.transformer.phase_b.lr == 1.97e-4
    assert cfg.anomaly.pca["both"] == 8 and cfg.anomaly.pca["video_only"] == 64
    assert cfg.xgb.n_estimators == 7 and cfg.transformer.loss.sep_sad == (0.1, 0.2)
    json_path = tmp_path / "c.json"
    json_path.write_text('{"calibrate": {"weight_grid": 11}}')
    assert load_config(json_path).calibrate.weight_grid == 11
    with pytest.raises(ValueError, match="unknown key"):
        load_config(None, ["xgb.n_estimator=7"])
    with pytest.raises(ValueError, match="expected an integer"):
        load_config(None, ["xgb.n_estimators=1.5"])


def test_lr_schedule() -> None:
    assert lr_at(0, 1.0, 2, 10) == 0.5 and lr_at(1, 1.0, 2, 10) == 1.0
    assert lr_at(2, 1.0, 2, 10) == 1.0 and math.isclose(lr_at(6, 1.0, 2, 10), 0.5)
    assert lr_at(9, 1.0, 2, 10) < 0.05 and lr_at(0, 1.0, 0, 5) == 1.0


def test_device_selection() -> None:
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda", "mps")


def test_class_weights_and_focal() -> None:
    w = class_weights([100, 25, 100, 100, 100, 100], [1.0] * 6)
    assert math.isclose(float(np.mean(w)), 1.0, rel_tol=1e-6) and w[1] == pytest.approx(2 * w[0])
    logits = torch.randn(8, NUM_CLASSES)
    y = torch.randint(0, NUM_CLASSES, (8,))
    assert torch.isclose(focal_ce(logits, y, None, 0.0, 0.0), F.cross_entropy(logits, y))
    assert focal_ce(logits, y, None, 0.1, 1.0) < focal_ce(logits, y, None, 0.1, 0.0)


def test_contrastive_terms_prefer_clustered_embeddings() -> None:
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    centres = torch.eye(3) * 5
    clustered = centres[y] + 0.01 * torch.randn(6, 3)
    scrambled = torch.randn(6, 3)
    assert supcon_loss(clustered, y, 0.1) < supcon_loss(scrambled, y, 0.1)
    assert triplet_loss(clustered, y, 0.5) == 0.0
    assert triplet_loss(torch.randn(3, 4), torch.tensor([0, 1, 2]), 0.5) == 0.0  # no positives: no term
    assert supcon_schedule(0, 2, 15, 0.15, 0.1, 0.0015, 0.07) == (0.0, 0.1)
    weight, tau = supcon_schedule(40, 2, 15, 0.15, 0.1, 0.0015, 0.07)
    assert weight == 0.15 and tau == 0.07


def test_separation_hinges() -> None:
    sad, neutral = 4, 5
    confident = torch.full((2, NUM_CLASSES), -10.0)
    confident[:, sad] = 10.0
    confused = torch.zeros(2, NUM_CLASSES)
    confused[:, neutral] = 3.0
    y = torch.tensor([sad, sad])
    args = ((0.29, 0.06), (0.15, 0.02), (0.16, 0.03))
    assert separation_loss(confident, y, *args) == 0.0
    assert separation_loss(confused, y, *args) > 0.0
    assert separation_loss(confused, torch.tensor([0, 3]), *args) == 0.0  # only sad/fear/disgust rows


def test_augment_keeps_shapes_masks_and_a_modality() -> None:
    gen = torch.Generator().manual_seed(0)
    b, t = 64, 10
    xf, xa = torch.randn(b, t, 6), torch.randn(b, t, 8)
    fm, am = torch.ones(b, t), torch.ones(b, t)
    am[:8] = 0  # video-only rows can never lose their face
    xa[:8] = 0
    cfg = AugmentConfig(drop_face_p=0.5, drop_audio_p=0.5)
    f2, a2, fm2, am2 = augment_batch(xf, xa, fm, am, cfg, gen)
    assert f2.shape == xf.shape and a2.shape == xa.shape
    assert torch.all((fm2.sum(1) > 0) | (am2.sum(1) > 0))
    assert torch.all(fm2[:8].sum(1) == t)
    assert torch.all(f2[fm2 == 0] == 0)
    mixed = mixup_batch(xf, xa, fm, am2, 0.7, gen)
    assert mixed[3].min() >= 0 and mixed[3].max() <= 1 and mixed[4].shape == (b,)


def test_temperature_fit_recovers_the_true_temperature() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0, 2, (4000, NUM_CLASSES)).astype(np.float32)
    p = np.exp(base) / np.exp(base).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(NUM_CLASSES, p=row) for row in p])
    t = fit_temperature(base * 2.5, y, (0.05, 20.0))  # logits 2.5× too confident
    assert abs(t - 2.5) < 0.25


def test_calibrate_weight_and_rows() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, NUM_CLASSES, 300)
    good = np.eye(NUM_CLASSES)[y] * 4 + rng.normal(0, 1, (300, NUM_CLASSES))
    noise = rng.dirichlet(np.ones(NUM_CLASSES), 300).astype(np.float32)
    params, metrics = calibrate(good, noise, np.array(["both"] * 300), y, CalibrateConfig(weight_grid=21), 0)
    assert params.w_modal > 0.5 and math.isclose(params.w_modal + params.w_xgb, 1.0)
    assert metrics["val_nll_fitted"] <= metrics["val_nll_t1"]
    params, metrics = calibrate(good, noise, np.array(["video_only"] * 300), y, CalibrateConfig(), 0)
    assert metrics["weight_fit"]["method"] == "default" and params.w_modal == 0.455
    # Optuna is optional: used when installed, a clear message when it is not.
    optuna_cfg = CalibrateConfig(optuna_trials=5)
    if importlib.util.find_spec("optuna") is None:
        with pytest.raises(RuntimeError, match="pip install optuna"):
            calibrate(good, noise, np.array(["both"] * 300), y, optuna_cfg, 0)
    else:
        params, metrics = calibrate(good, noise, np.array(["both"] * 300), y, optuna_cfg, 0)
        assert metrics["weight_fit"]["method"] == "optuna" and 0.0 <= params.w_modal <= 1.0


def test_metrics() -> None:
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    assert confusion_matrix(y, p)[0].tolist() == [1, 1, 0, 0, 0, 0]
    rec = per_class_recall(y, p)
    assert rec["angry"] == 0.5 and rec["fearful"] == 1.0 and rec["disgust"] == 0.0 and rec["happy"] is None
    assert math.isclose(balanced_accuracy(y, p), 0.5)


def test_xgb_helpers_match_the_serving_model() -> None:
    import xgboost

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8149)).astype(np.float32)
    x[:, 5] = np.nan
    med = column_medians(x)
    assert med[5] == 0 and np.isfinite(med).all()
    filled = np.where(np.isnan(x), med, x)
    comps = np.linalg.qr(rng.normal(size=(8149, 4)))[0].T.astype(np.float32)
    mean = filled.mean(axis=0)
    booster = xgboost.train(
        {"num_class": 6, "objective": "multi:softprob"},
        xgboost.DMatrix(rng.normal(size=(12, 4)), label=np.arange(12) % 6),
        2,
    )
    model = TabularModel(col_medians=med, pca_components=comps, pca_mean=mean, booster=booster, n_iterations=2)
    np.testing.assert_array_equal(model.transform(x)[1], project(filled, comps, mean))
    w = sample_weights(np.array([0, 0, 0, 1, 2, 2]), 1.5)
    assert w[3] > w[4] > w[0]

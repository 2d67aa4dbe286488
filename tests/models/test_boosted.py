"""The booster as numpy arrays (``models.boosted``) equals XGBoost's ``inplace_predict``."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost

from models.boosted import BoostedTreesArrays
from models.bundle import load_bundle
from models.constants import NUM_CLASSES, TABULAR_DIM
from models.tabular import TabularModel, build_tabular_features

ATOL = 1e-6


def _train(depth: int, rounds: int, seed: int, n_features: int = 12, **params: Any) -> xgboost.Booster:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((400, n_features)).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan
    y = rng.integers(0, NUM_CLASSES, 400)
    base = {"objective": "multi:softprob", "num_class": NUM_CLASSES, "max_depth": depth, "nthread": 1, "eta": 0.2}
    return xgboost.train({**base, **params}, xgboost.DMatrix(x, label=y, missing=np.nan), num_boost_round=rounds)


def _rows(arrays: BoostedTreesArrays, n_features: int, seed: int) -> np.ndarray:
    """Random rows with NaNs, ±inf, all-NaN rows and values exactly on the model's thresholds."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((200, n_features)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    x[0], x[1], x[2] = np.inf, -np.inf, np.nan
    x[3:6, ::2] = np.inf
    x[3:6, 1::2] = -np.inf
    feats = np.concatenate(arrays.feature)
    thrs = np.concatenate(arrays.threshold)
    split = np.isfinite(thrs)
    feats, thrs = feats[split], thrs[split]
    for i in range(6, 120):
        k = rng.integers(0, feats.size, n_features)
        x[i, feats[k]] = thrs[k]
    for i in range(120, 160):  # one ulp either side of thresholds
        k = rng.integers(0, feats.size, n_features)
        x[i, feats[k]] = np.nextafter(thrs[k], np.float32(np.inf if i % 2 else -np.inf))
    roots = np.flatnonzero(np.isfinite(arrays.threshold[0])) if arrays.feature else np.zeros(0, np.intp)
    for i in range(160, 200):  # on the roots' thresholds, which every row reaches
        if roots.size:
            t = rng.choice(roots, n_features)
            x[i, arrays.feature[0][t]] = arrays.threshold[0][t]
    return x


@pytest.mark.parametrize(
    ("depth", "rounds", "n_iterations", "params"),
    [
        (3, 20, 20, {}),
        (4, 60, 25, {"tree_method": "approx"}),
        (5, 50, 50, {"tree_method": "exact", "gamma": 1.0}),  # pruned trees keep deleted nodes
        (6, 200, 200, {}),
        (6, 200, 1, {}),
    ],
)
def test_probabilities_equal_inplace_predict(
    depth: int, rounds: int, n_iterations: int, params: dict[str, Any]
) -> None:
    booster = _train(depth, rounds, seed=depth + rounds, **params)
    arrays = BoostedTreesArrays.from_booster(booster, n_iterations)
    assert arrays.n_iterations == n_iterations and arrays.n_classes == NUM_CLASSES and len(arrays.feature) <= depth
    x = _rows(arrays, 12, seed=rounds)
    for batch in (x[:1], x[:2], x[:10], x):
        want = booster.inplace_predict(batch, iteration_range=(0, n_iterations), missing=np.nan)
        got = arrays.predict_proba(batch)
        assert got.shape == (len(batch), NUM_CLASSES) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
        margin = booster.inplace_predict(
            batch, iteration_range=(0, n_iterations), missing=np.nan, predict_type="margin"
        )
        np.testing.assert_array_equal(arrays.predict_margin(batch), margin)  # the margins are bit-exact


def test_early_stopped_booster_uses_best_iteration() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, 300)
    dtrain = xgboost.DMatrix(x[:200], label=y[:200])
    dval = xgboost.DMatrix(x[200:], label=y[200:])
    params = {"objective": "multi:softprob", "num_class": NUM_CLASSES, "max_depth": 4, "eta": 0.5, "nthread": 1}
    booster = xgboost.train(params, dtrain, 100, evals=[(dval, "val")], early_stopping_rounds=3, verbose_eval=False)
    n_iter = booster.best_iteration + 1
    assert n_iter < booster.num_boosted_rounds()
    arrays = BoostedTreesArrays.from_booster(booster, n_iter)
    q = _rows(arrays, 8, seed=5)
    want = booster.inplace_predict(q, iteration_range=(0, n_iter), missing=np.nan)
    np.testing.assert_allclose(arrays.predict_proba(q), want, rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- golden model


@pytest.fixture(scope="module")
def golden_tabular(golden_bundle_dir: Path) -> TabularModel:
    return load_bundle(golden_bundle_dir).tabular


def _golden_features(golden_dir: Path) -> np.ndarray:
    cases = sorted(p for p in (golden_dir / "cases").iterdir() if (p / "p_xgb.npy").is_file())
    assert cases
    inputs = [
        np.stack(a)
        for a in zip(
            *(tuple(np.load(c / f"input_{k}.npy") for k in ("xf", "xa", "fm", "am")) for c in cases), strict=True
        )
    ]
    return build_tabular_features(*inputs)


def test_golden_fast_path_equals_xgboost(golden_dir: Path, golden_tabular: TabularModel) -> None:
    assert golden_tabular.fast_trees and golden_tabular.prepare() is not None
    slow = TabularModel(
        golden_tabular.col_medians,
        golden_tabular.pca_components,
        golden_tabular.pca_mean,
        golden_tabular.booster,
        golden_tabular.n_iterations,
        fast_trees=False,
    )
    assert slow.prepare() is None
    features = _golden_features(golden_dir)
    rng = np.random.default_rng(0)
    noisy = features + rng.normal(scale=0.5, size=features.shape).astype(np.float32)
    for batch in (features, features[:1], noisy, noisy[:2]):
        np.testing.assert_allclose(golden_tabular.predict_proba(batch), slow.predict_proba(batch), rtol=0, atol=ATOL)
    trees = golden_tabular.prepare()
    assert trees is not None
    for case in sorted(p for p in (golden_dir / "cases").iterdir() if (p / "xgb_pca.npy").is_file()):
        pca = np.load(case / "xgb_pca.npy").reshape(1, -1).astype(np.float32)
        want = golden_tabular.booster.inplace_predict(pca, iteration_range=(0, 50), missing=np.nan)
        np.testing.assert_allclose(trees.predict_proba(pca), want, rtol=0, atol=ATOL, err_msg=case.name)


# ----------------------------------------------------------------------------- unsupported / malformed


def _tabular(booster: xgboost.Booster, k: int, n_iterations: int) -> TabularModel:
    rng = np.random.default_rng(0)
    comps = np.linalg.qr(rng.standard_normal((TABULAR_DIM, k)))[0].T.astype(np.float32)
    return TabularModel(
        np.zeros(TABULAR_DIM, np.float32), comps, np.zeros(TABULAR_DIM, np.float32), booster, n_iterations
    )


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"booster": "dart", "rate_drop": 0.1}, "dart"),
        ({"num_parallel_tree": 2}, "num_parallel_tree"),
        ({"objective": "multi:softmax"}, "objective"),
    ],
)
def test_unsupported_boosters_fall_back(params: dict[str, Any], match: str, caplog: pytest.LogCaptureFixture) -> None:
    booster = _train(3, 5, seed=2, n_features=8, **params)
    with pytest.raises(ValueError, match=match):
        BoostedTreesArrays.from_booster(booster, 5)
    model = _tabular(booster, 8, 5)
    with caplog.at_level(logging.INFO, logger="models.tabular"):
        assert model.prepare() is None
    assert "predicting with XGBoost" in caplog.text
    features = np.random.default_rng(1).standard_normal((3, TABULAR_DIM)).astype(np.float32)
    _, pca = model.transform(features)
    want = np.asarray(booster.inplace_predict(pca, iteration_range=(0, 5), missing=np.nan), np.float32)
    if want.ndim == 1:  # multi:softmax predicts a class id, not probabilities; only checks it still runs
        return
    np.testing.assert_array_equal(model.predict_proba(features), want)


def test_binary_and_categorical_boosters_refused() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 4)).astype(np.float32)
    binary = xgboost.train({"objective": "binary:logistic"}, xgboost.DMatrix(x, label=rng.integers(0, 2, 200)), 3)
    with pytest.raises(ValueError, match="binary:logistic"):
        BoostedTreesArrays.from_booster(binary, 3)
    x[:, 0] = rng.integers(0, 5, 200)
    dcat = xgboost.DMatrix(
        x, label=rng.integers(0, 6, 200), feature_types=["c", "q", "q", "q"], enable_categorical=True
    )
    params = {"objective": "multi:softprob", "num_class": 6, "max_cat_to_onehot": 1, "max_depth": 4}
    categorical = xgboost.train(params, dcat, 5)
    assert any(
        "split_type" in t and any(t["split_type"])
        for t in json.loads(bytes(categorical.save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"]
    )
    with pytest.raises(ValueError, match="categorical"):
        BoostedTreesArrays.from_booster(categorical, 5)


def test_malformed_trees_refused() -> None:
    model = json.loads(bytes(_train(4, 3, seed=4).save_raw("json")))
    BoostedTreesArrays.from_json(model, 3)

    def broken(edit: Any) -> dict[str, Any]:
        m = copy.deepcopy(model)
        edit(m["learner"]["gradient_booster"]["model"]["trees"][1])
        return m

    def set_(key: str, i: int, v: Any) -> Any:
        return lambda t: t[key].__setitem__(i, v)

    cases = [
        (set_("left_children", 0, 10_000), "outside its tree"),
        (set_("right_children", 0, -5), "outside its tree|one child -1"),
        (set_("left_children", 1, 0), "cycle|two parents"),  # back to the root
        (set_("right_children", 0, 1), "cycle|two parents"),  # both children the same node
        (set_("split_indices", 0, 99), "feature outside"),
        (set_("split_conditions", 0, float("nan")), "NaN"),
        (lambda t: t["left_children"].pop(), "differ in length"),
        (set_("split_type", 0, 1), "categorical"),
        (lambda t: t.pop("split_indices"), "malformed"),
        (set_("split_conditions", 0, "x"), "holds"),
    ]
    for edit, match in cases:
        with pytest.raises(ValueError, match=match):
            BoostedTreesArrays.from_json(broken(edit), 3)

    # A chain deeper than the bound: internal node i has left child i + 1 and a leaf on the right.
    deep = copy.deepcopy(model)
    tree = deep["learner"]["gradient_booster"]["model"]["trees"][0]
    n = 40
    tree["left_children"] = [i + 1 for i in range(n)] + [-1] * (n + 1)
    tree["right_children"] = [n + 1 + i for i in range(n)] + [-1] * (n + 1)
    for key in ("split_indices", "split_conditions", "default_left", "split_type"):
        tree[key] = [0] * (2 * n + 1)
    with pytest.raises(ValueError, match="too deep"):
        BoostedTreesArrays.from_json(deep, 3)
    tree["left_children"][2] = 0  # a cycle back to the root, at level 3
    with pytest.raises(ValueError, match=r"cycle|two parents"):
        BoostedTreesArrays.from_json(deep, 3)

    for n_iterations in (0, 4):
        with pytest.raises(ValueError, match="n_iterations"):
            BoostedTreesArrays.from_json(model, n_iterations)
    bad = copy.deepcopy(model)
    bad["learner"]["gradient_booster"]["model"]["tree_info"] = [0] * 18
    with pytest.raises(ValueError, match="tree_info"):
        BoostedTreesArrays.from_json(bad, 3)
    bad = copy.deepcopy(model)
    bad["learner"]["learner_model_param"]["base_score"] = "[1,2]"
    with pytest.raises(ValueError, match="base_score"):
        BoostedTreesArrays.from_json(bad, 3)

"""Vectorised IsolationForest scoring equals scikit-learn's ``decision_function``."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length

from models.forest import IsolationForestArrays, average_path_length
from models.hoovik_pickles import load_restricted

DETECTORS = ("both", "audio_only", "video_only", "global_fallback")


@pytest.fixture(scope="module")
def golden_forests(golden_dir: Path) -> dict[str, IsolationForest]:
    anomaly_dir = golden_dir / "artifacts" / "models" / "anomaly"
    return {name: load_restricted(anomaly_dir / f"iso_{name}.joblib").iso for name in DETECTORS}


def test_golden_forests_random_rows(golden_forests: dict[str, IsolationForest]) -> None:
    rng = np.random.default_rng(0)
    for name, iso in golden_forests.items():
        arrays = IsolationForestArrays.from_sklearn(iso)
        assert arrays.n_trees == len(iso.estimators_) == 50
        for rows in (1, 2, 10, 257):
            x = (rng.normal(size=(rows, iso.n_features_in_)) * rng.uniform(0.1, 4)).astype(np.float32)
            np.testing.assert_allclose(
                arrays.decision_function(x), iso.decision_function(x), rtol=0, atol=1e-6, err_msg=name
            )


def test_golden_forests_on_golden_inputs(golden_dir: Path, golden_forests: dict[str, IsolationForest]) -> None:
    import json

    cases = sorted(p for p in (golden_dir / "cases").iterdir() if (p / "anomaly_transformed.npy").is_file())
    assert cases
    for case in cases:
        name = json.loads((case / "result.json").read_text())["anomaly"]["detector"]
        x = np.load(case / "anomaly_transformed.npy")
        iso = golden_forests[name]
        got = IsolationForestArrays.from_sklearn(iso).decision_function(x)
        np.testing.assert_allclose(got, iso.decision_function(x[None]), rtol=0, atol=1e-6, err_msg=case.name)


@pytest.mark.parametrize(
    "params",
    [
        {"max_features": 1.0},
        {"max_features": 0.5},  # per-tree feature subsets are applied
        {"max_features": 3, "bootstrap": True},
        {"max_samples": 16},
        {"max_samples": 1.0, "contamination": 0.1},  # offset_ from a percentile, max_samples = n
    ],
)
def test_fresh_forests_with_nan_and_float64_input(params: dict) -> None:
    rng = np.random.default_rng(42)
    train = rng.normal(size=(300, 12))
    train[rng.random(train.shape) < 0.05] = np.nan  # trees learn missing_go_to_left
    iso = IsolationForest(n_estimators=25, random_state=1, **params).fit(train)
    arrays = IsolationForestArrays.from_sklearn(iso)
    x = rng.normal(size=(64, 12)) * 2  # float64: both sides cast to float32
    x[rng.random(x.shape) < 0.1] = np.nan
    np.testing.assert_allclose(arrays.decision_function(x), iso.decision_function(x), rtol=0, atol=1e-6)
    np.testing.assert_allclose(arrays.score_samples(x), iso.score_samples(x), rtol=0, atol=1e-6)
    # A single 1-D row is one sample.
    np.testing.assert_allclose(arrays.decision_function(x[0]), iso.decision_function(x[:1]), rtol=0, atol=1e-6)


def test_pickles_without_cached_path_lengths(golden_forests: dict[str, IsolationForest]) -> None:
    """Older scikit-learn pickles lack the cached per-node path lengths; they are rebuilt identically."""
    iso = golden_forests["video_only"]
    legacy = copy.copy(iso)
    del legacy._decision_path_lengths
    del legacy._average_path_length_per_tree
    x = np.random.default_rng(5).normal(size=(20, iso.n_features_in_)).astype(np.float32)
    a = IsolationForestArrays.from_sklearn(iso)
    b = IsolationForestArrays.from_sklearn(legacy)
    np.testing.assert_array_equal(a.decision_function(x), b.decision_function(x))


def test_average_path_length_matches_sklearn() -> None:
    n = np.array([0, 1, 2, 3, 4, 5, 17, 100, 256, 1000])
    np.testing.assert_array_equal(average_path_length(n), _average_path_length(n))


def test_round_trip(golden_forests: dict[str, IsolationForest]) -> None:
    iso = golden_forests["both"]
    arrays = IsolationForestArrays.from_sklearn(iso)
    stored = {k: v.copy() for k, v in arrays.to_arrays().items()}
    assert all(isinstance(v, np.ndarray) for v in stored.values())
    again = IsolationForestArrays.from_arrays(stored)
    x = np.random.default_rng(9).normal(size=(10, iso.n_features_in_)).astype(np.float32)
    np.testing.assert_array_equal(again.decision_function(x), arrays.decision_function(x))
    assert again.max_samples == 256 and again.offset == -0.5 and again.n_trees == 50


def test_rejects_bad_arrays_and_inputs(golden_forests: dict[str, IsolationForest]) -> None:
    arrays = IsolationForestArrays.from_sklearn(golden_forests["video_only"]).to_arrays()
    broken = dict(arrays, left=arrays["left"] + 10**6)
    with pytest.raises(ValueError, match="left"):
        IsolationForestArrays.from_arrays(broken)
    with pytest.raises(KeyError, match="threshold"):
        IsolationForestArrays.from_arrays({k: v for k, v in arrays.items() if k != "threshold"})
    forest = IsolationForestArrays.from_arrays(arrays)
    with pytest.raises(ValueError, match="64"):
        forest.decision_function(np.zeros((2, 65), np.float32))
    assert forest.decision_function(np.zeros((0, 64), np.float32)).shape == (0,)

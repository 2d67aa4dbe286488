"""Anomaly branch: 9,452-d features, scaler + PCA, detector choice and scores against the goldens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.anomaly import (
    GLOBAL_FALLBACK,
    AnomalyDetector,
    AnomalyModel,
    AnomalyResult,
    build_anomaly_features,
    profile_from_masks,
    profiles_from_masks,
)
from models.constants import ANOMALY_DIM, ANOMALY_FEATURE_VERSION, AUDIO_DIM, FACE_DIM, SEQ_LEN
from models.hoovik_pickles import load_anomaly_dir, load_restricted

FEATURE_TOL = {"rtol": 1e-5, "atol": 1e-5}


def _cases_with(golden_dir: Path, filename: str) -> list[Path]:
    cases = sorted(p for p in (golden_dir / "cases").iterdir() if (p / filename).is_file())
    assert cases, f"no golden case under {golden_dir / 'cases'} has {filename}"
    return cases


def _inputs(case: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.load(case / f"input_{k}.npy") for k in ("xf", "xa", "fm", "am"))  # type: ignore[return-value]


def _anomaly_json(case: Path) -> dict:
    return json.loads((case / "result.json").read_text())["anomaly"]


@pytest.fixture(scope="module")
def anomaly_dir(golden_dir: Path) -> Path:
    return golden_dir / "artifacts" / "models" / "anomaly"


@pytest.fixture(scope="module")
def model(anomaly_dir: Path) -> AnomalyModel:
    return load_anomaly_dir(anomaly_dir)


def _edge_case_batch(seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    patterns = [
        ([1] * 10, [1] * 10),
        ([0] * 10, [1] * 10),
        ([1] * 10, [0] * 10),
        ([0, 0, 0, 0, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0, 1, 0, 0]),
        ([0, 0, 1, 0, 0, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]),
        ([1, 0, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        ([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]),
        ([1, 1, 0, 1, 0, 1, 1, 0, 1, 1], [0, 1, 1, 0, 1, 0, 1, 1, 0, 1]),
    ]
    b = len(patterns)
    fm = np.asarray([p[0] for p in patterns], np.float32)
    am = np.asarray([p[1] for p in patterns], np.float32)
    xf = rng.normal(size=(b, SEQ_LEN, FACE_DIM)).astype(np.float32) * fm[:, :, None]
    xa = rng.normal(size=(b, SEQ_LEN, AUDIO_DIM)).astype(np.float32) * am[:, :, None]
    return xf, xa, fm, am


# ----------------------------------------------------------------------------- features


def test_features_match_golden(golden_dir: Path) -> None:
    for case in _cases_with(golden_dir, "anomaly_features.npy"):
        got = build_anomaly_features(*_inputs(case))
        assert got.shape == (ANOMALY_DIM,) and got.dtype == np.float32, case.name
        np.testing.assert_allclose(got, np.load(case / "anomaly_features.npy"), **FEATURE_TOL, err_msg=case.name)


def _reference_features(xf: np.ndarray, xa: np.ndarray, fm: np.ndarray, am: np.ndarray) -> np.ndarray:
    """Spec 3.6 restated as a plain per-sample loop."""

    def block(x: np.ndarray, m: np.ndarray) -> np.ndarray:
        t, d = x.shape
        idx = np.flatnonzero(m == 1)
        n = len(idx)
        if n == 0:
            return np.zeros(6 * d + 1, np.float32)
        v = x[idx]
        zeros = np.zeros(d, np.float32)
        std = v.std(0) if n > 1 else zeros
        iqr = (np.percentile(v, 75, axis=0) - np.percentile(v, 25, axis=0)) if n >= 3 else zeros
        jitter = np.diff(v, axis=0).std(0) if n >= 3 else zeros
        return np.concatenate([v.mean(0), std, v.min(0), v.max(0), iqr, [n / t], jitter]).astype(np.float32)

    def delta(x: np.ndarray, m: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(m == 1)
        return x[idx[-1]] - x[idx[0]] if len(idx) >= 2 else np.zeros(x.shape[1], np.float32)

    return np.concatenate([block(xf, fm), block(xa, am), delta(xf, fm), delta(xa, am)]).astype(np.float32)


def test_edge_masks_match_reference_loop_and_batch_equals_single(golden_dir: Path) -> None:
    cases = _cases_with(golden_dir, "anomaly_features.npy")
    golden = [np.stack(a) for a in zip(*(_inputs(c) for c in cases), strict=True)]
    for xf, xa, fm, am in (golden, _edge_case_batch()):
        batch = build_anomaly_features(xf, xa, fm, am)
        assert batch.shape == (len(fm), ANOMALY_DIM)
        for i in range(len(fm)):
            single = build_anomaly_features(xf[i], xa[i], fm[i], am[i])
            np.testing.assert_array_equal(batch[i], single, err_msg=f"row {i}")
            np.testing.assert_allclose(single, _reference_features(xf[i], xa[i], fm[i], am[i]), **FEATURE_TOL)
    # Absent blocks are zeros (not NaN); ratio is n/T.
    xf, xa, fm, am = _edge_case_batch()
    feats = build_anomaly_features(xf, xa, fm, am)
    assert not np.isnan(feats).any()
    assert (feats[1, :1957] == 0).all()
    np.testing.assert_allclose(feats[:, 1630], fm.sum(1) / SEQ_LEN)
    np.testing.assert_allclose(feats[:, 7077], am.sum(1) / SEQ_LEN)


def test_profile_from_masks() -> None:
    ones, zeros = np.ones(SEQ_LEN), np.zeros(SEQ_LEN)
    assert profile_from_masks(ones, ones) == "both"
    assert profile_from_masks(zeros, ones) == "audio_only"
    assert profile_from_masks(ones, zeros) == "video_only"
    assert profile_from_masks(zeros, zeros) == "video_only"  # unreachable in serving; original's choice
    _, _, fm, am = _edge_case_batch()
    assert profiles_from_masks(fm, am) == [profile_from_masks(f, a) for f, a in zip(fm, am, strict=True)]


# ----------------------------------------------------------------------------- detectors vs goldens


def test_detector_choice_transform_and_score_match_golden(golden_dir: Path, model: AnomalyModel) -> None:
    cases = _cases_with(golden_dir, "anomaly_transformed.npy")
    for case in cases:
        xf, xa, fm, am = _inputs(case)
        expected = _anomaly_json(case)
        profile = profile_from_masks(fm, am)
        det = model.detector_for(profile)
        assert det.name == expected["detector"], case.name
        assert det.threshold == expected["threshold"], case.name
        assert det.n_components == expected["n_components"], case.name
        feats = build_anomaly_features(xf, xa, fm, am)
        transformed = det.transform(feats)
        assert transformed.dtype == np.float32
        np.testing.assert_allclose(
            transformed[0], np.load(case / "anomaly_transformed.npy"), rtol=0, atol=2e-4, err_msg=case.name
        )
        scores, flags = det.score(feats)
        assert scores.dtype == np.float64 and flags.dtype == np.bool_
        assert abs(float(scores[0]) - expected["score_raw"]) <= 1e-6, case.name
        assert bool(flags[0]) == expected["is_anomaly"], case.name


def test_score_batch_mixed_profiles_matches_golden(golden_dir: Path, model: AnomalyModel) -> None:
    cases = _cases_with(golden_dir, "anomaly_features.npy")
    inputs = [_inputs(c) for c in cases]
    batch = [np.stack(a) for a in zip(*inputs, strict=True)]
    feats = build_anomaly_features(*batch)
    profiles = profiles_from_masks(batch[2], batch[3])
    assert len(set(profiles)) == 3  # the goldens cover every profile, so grouping is exercised
    results = model.score_batch(feats, profiles)
    assert len(results) == len(cases)
    for case, res in zip(cases, results, strict=True):
        expected = _anomaly_json(case)
        assert isinstance(res, AnomalyResult)
        assert res.detector == expected["detector"], case.name
        assert res.is_anomaly == expected["is_anomaly"], case.name
        assert res.threshold == expected["threshold"], case.name
        assert abs(res.score - expected["score_raw"]) <= 1e-6, case.name
        assert round(res.score, 6) == expected["score_rounded_6dp"], case.name


def test_transform_matches_sklearn_on_random_rows(anomaly_dir: Path, model: AnomalyModel) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, ANOMALY_DIM)).astype(np.float32)
    for name, det in model.detectors.items():
        original = load_restricted(anomaly_dir / f"iso_{name}.joblib")
        want = original.scaler.transform(x)
        if original.pca is not None:
            want = original.pca.transform(want)
        np.testing.assert_allclose(det.transform(x), want, rtol=0, atol=2e-4, err_msg=name)
        scores, flags = det.score(x)
        ref = original.iso.decision_function(want)
        np.testing.assert_allclose(scores, ref, rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(flags, ref < original.threshold)


# ----------------------------------------------------------------------------- fallback and errors


def test_missing_profile_falls_back_to_global(golden_dir: Path, model: AnomalyModel) -> None:
    partial = AnomalyModel({k: v for k, v in model.detectors.items() if k != "audio_only"})
    assert partial.detector_for("audio_only").name == GLOBAL_FALLBACK
    assert partial.detector_for("both").name == "both"
    feats = build_anomaly_features(*_edge_case_batch())
    results = partial.score_batch(feats, ["audio_only", "both"] * 4)
    assert [r.detector for r in results[:2]] == [GLOBAL_FALLBACK, "both"]
    fallback = model.detectors[GLOBAL_FALLBACK]
    scores, _ = fallback.score(feats[0:1])
    assert results[0].score == float(scores[0]) and results[0].threshold == fallback.threshold

    no_fallback = AnomalyModel({"both": model.detectors["both"]})
    with pytest.raises(KeyError, match="global_fallback"):
        no_fallback.detector_for("video_only")
    with pytest.raises(ValueError, match="profile"):
        model.detector_for("neither")
    with pytest.raises(ValueError):
        model.score_batch(feats, ["both"])  # row/profile count mismatch


# ----------------------------------------------------------------------------- serialisation


def test_round_trip_gives_identical_outputs(tmp_path: Path, model: AnomalyModel) -> None:
    from safetensors.numpy import load_file, save_file

    arrays = model.to_arrays()
    meta = json.loads(json.dumps(model.meta()))
    assert meta["feature_version"] == ANOMALY_FEATURE_VERSION
    assert set(meta["detectors"]) == {"both", "audio_only", "video_only", GLOBAL_FALLBACK}
    assert all(k.split(".", 1)[0] in meta["detectors"] for k in arrays)
    path = tmp_path / "anomaly.safetensors"
    save_file(arrays, str(path))
    copy = AnomalyModel.from_arrays(load_file(str(path)), meta)
    feats = build_anomaly_features(*_edge_case_batch())
    profiles = ["both", "audio_only", "video_only", "both", "audio_only", "video_only", "both", "both"]
    assert copy.score_batch(feats, profiles) == model.score_batch(feats, profiles)
    for name, det in model.detectors.items():
        other = copy.detectors[name]
        np.testing.assert_array_equal(other.transform(feats), det.transform(feats))
        assert other.threshold == det.threshold and other.n_components == det.n_components


def test_detector_without_pca_round_trips(model: AnomalyModel) -> None:
    base = model.detectors["video_only"]
    # A detector scoring scaled features directly needs a forest of width 9452; reuse the structure
    # of a real forest with its columns spread over the wider input.
    arrays = base.forest.to_arrays()
    arrays["feature"] = arrays["feature"] * 100
    arrays["n_features_in"] = np.asarray([ANOMALY_DIM])
    from models.forest import IsolationForestArrays

    det = AnomalyDetector(
        name="video_only",
        scaler_mean=base.scaler_mean,
        scaler_scale=base.scaler_scale,
        pca_components=None,
        pca_mean=None,
        forest=IsolationForestArrays.from_arrays(arrays),
        threshold=base.threshold,
    )
    feats = build_anomaly_features(*_edge_case_batch())
    assert det.transform(feats).shape == (len(feats), ANOMALY_DIM)
    copy = AnomalyDetector.from_arrays(det.to_arrays(), json.loads(json.dumps(det.meta())))
    assert copy.n_components is None
    np.testing.assert_array_equal(copy.score(feats)[0], det.score(feats)[0])


def test_from_arrays_refuses_other_feature_version(model: AnomalyModel) -> None:
    meta = dict(model.meta(), feature_version="v1")
    with pytest.raises(ValueError, match="feature_version"):
        AnomalyModel.from_arrays(model.to_arrays(), meta)

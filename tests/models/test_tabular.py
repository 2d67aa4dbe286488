"""Tabular branch: 8,149-d features, median fill, PCA and booster against the original's goldens.

Golden cases come from ``reference/golden/cases/<case>/``; every case that has the file under test
is checked. A per-sample loop restating spec 3.5 checks the vectorised builder on mask patterns the
goldens do not cover (1 valid frame, 2 valid frames, gaps, silent audio).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xgboost

from models.constants import AUDIO_DIM, FACE_DIM, SEQ_LEN, TABULAR_DIM, TABULAR_FEATURE_VERSION
from models.hoovik_pickles import load_tabular
from models.tabular import TabularModel, build_tabular_features

FEATURE_TOL = {"rtol": 1e-5, "atol": 1e-5}


def _cases_with(golden_dir: Path, filename: str) -> list[Path]:
    cases = sorted(p for p in (golden_dir / "cases").iterdir() if (p / filename).is_file())
    assert cases, f"no golden case under {golden_dir / 'cases'} has {filename}"
    return cases


def _inputs(case: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.load(case / f"input_{k}.npy") for k in ("xf", "xa", "fm", "am"))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def tabular(golden_dir: Path) -> TabularModel:
    return load_tabular(golden_dir / "artifacts" / "models" / "xgb")


# ----------------------------------------------------------------------------- golden comparisons


def test_features_match_golden(golden_dir: Path) -> None:
    cases = _cases_with(golden_dir, "xgb_features.npy")
    for case in cases:
        got = build_tabular_features(*_inputs(case))
        want = np.load(case / "xgb_features.npy")
        assert got.shape == (TABULAR_DIM,) and got.dtype == np.float32, case.name
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"NaN positions: {case.name}")
        np.testing.assert_allclose(got, want, **FEATURE_TOL, err_msg=case.name)


def test_filled_pca_and_probabilities_match_golden(golden_dir: Path, tabular: TabularModel) -> None:
    cases = _cases_with(golden_dir, "p_xgb.npy")
    for case in cases:
        features = build_tabular_features(*_inputs(case))
        filled, pca = tabular.transform(features)
        np.testing.assert_allclose(
            filled[0], np.load(case / "xgb_features_filled.npy"), **FEATURE_TOL, err_msg=case.name
        )
        assert pca.dtype == np.float32
        np.testing.assert_allclose(pca[0], np.load(case / "xgb_pca.npy"), rtol=0, atol=1e-4, err_msg=case.name)
        probs = tabular.predict_proba(features)
        assert probs.shape == (1, 6) and probs.dtype == np.float32
        np.testing.assert_allclose(probs[0], np.load(case / "p_xgb.npy"), rtol=0, atol=1e-5, err_msg=case.name)
        result = json.loads((case / "result.json").read_text())
        np.testing.assert_allclose(probs[0], result["p_xgb"], rtol=0, atol=1e-5, err_msg=case.name)


def test_batched_prediction_matches_golden(golden_dir: Path, tabular: TabularModel) -> None:
    cases = _cases_with(golden_dir, "p_xgb.npy")
    batch = [np.stack(a) for a in zip(*(_inputs(c) for c in cases), strict=True)]
    probs = tabular.predict_proba(build_tabular_features(*batch))
    want = np.stack([np.load(c / "p_xgb.npy") for c in cases])
    np.testing.assert_allclose(probs, want, rtol=0, atol=1e-5)


def test_booster_json_gives_same_probabilities(golden_dir: Path, tabular: TabularModel) -> None:
    booster = xgboost.Booster(model_file=str(golden_dir / "artifacts_aux" / "xgb_model.booster.json"))
    best = booster.attr("best_iteration")
    n_iter = int(best) + 1 if best is not None else booster.num_boosted_rounds()
    assert n_iter == tabular.n_iterations == 50
    from_json = TabularModel(
        col_medians=tabular.col_medians,
        pca_components=tabular.pca_components,
        pca_mean=tabular.pca_mean,
        booster=booster,
        n_iterations=n_iter,
    )
    for case in _cases_with(golden_dir, "p_xgb.npy"):
        probs = from_json.predict_proba(np.load(case / "xgb_features.npy"))
        np.testing.assert_allclose(probs[0], np.load(case / "p_xgb.npy"), rtol=0, atol=1e-5, err_msg=case.name)


# ----------------------------------------------------------------------------- batch vs per-sample


def _edge_case_batch(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mask patterns covering every branch: n = 0, 1, 2, 3, gaps, full, trailing, silent audio."""
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
        ([1, 1, 1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]),
    ]
    b = len(patterns) + 1
    fm = np.zeros((b, SEQ_LEN), np.float32)
    am = np.zeros((b, SEQ_LEN), np.float32)
    for i, (f, a) in enumerate(patterns):
        fm[i], am[i] = f, a
    fm[-1], am[-1] = 1, 1  # silent audio: valid frames whose embeddings are all zero
    xf = rng.normal(size=(b, SEQ_LEN, FACE_DIM)).astype(np.float32) * fm[:, :, None]
    xa = rng.normal(size=(b, SEQ_LEN, AUDIO_DIM)).astype(np.float32) * am[:, :, None]
    xa[-1] = 0.0
    return xf, xa, fm, am


def test_batch_equals_per_sample(golden_dir: Path) -> None:
    cases = _cases_with(golden_dir, "xgb_features.npy")
    golden = [np.stack(a) for a in zip(*(_inputs(c) for c in cases), strict=True)]
    for xf, xa, fm, am in (golden, _edge_case_batch()):
        batch = build_tabular_features(xf, xa, fm, am)
        assert batch.shape == (len(fm), TABULAR_DIM)
        singles = np.stack([build_tabular_features(xf[i], xa[i], fm[i], am[i]) for i in range(len(fm))])
        np.testing.assert_array_equal(batch, singles)  # NaN == NaN here


def _reference_features(xf: np.ndarray, xa: np.ndarray, fm: np.ndarray, am: np.ndarray) -> np.ndarray:
    """Spec 3.5 restated as a plain per-sample loop (independent of the vectorised builder)."""
    nan = np.float32(np.nan)

    def agg(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        d = x.shape[1]
        if len(idx) == 0:
            return np.full(4 * d, nan, np.float32)
        v = x[idx]
        return np.concatenate([v.mean(0), v.std(0), v.min(0), v.max(0)])

    def delta(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        if len(idx) < 2:
            return np.full(x.shape[1], nan, np.float32)
        return x[idx[-1]] - x[idx[0]]

    def slope(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        if len(idx) < 2:
            return np.full(x.shape[1], nan, np.float32)
        t = idx.astype(np.float32)
        t = (t - t.mean()) / (t.std() + 1e-6)
        return (t[:, None] * x[idx]).sum(0) / ((t * t).sum() + 1e-6)

    fi = np.flatnonzero(fm == 1)
    ai = np.flatnonzero(am == 1)
    blend_dims = [315, 316, 301, 302, 272, 273, 274, 296, 321, 322, 292, 293, 277, 309, 303]
    blend = np.full(32, nan, np.float32)
    pose = np.full(6, nan, np.float32)
    motion = np.full(1, nan, np.float32)
    if len(fi):
        v = xf[fi]
        blend[:15] = v[:, blend_dims].mean(0)
        blend[15:30] = v[:, blend_dims].max(0)
        blend[30] = np.abs(v[:, 315] - v[:, 316]).mean()
        blend[31] = np.abs(v[:, 272] - v[:, 273]).mean()
        pose[:3] = v[:, 323:].mean(0)
        pose[3:] = v[:, 323:].std(0)
        if len(fi) >= 2:
            motion[0] = (np.diff(v[:, :272], axis=0) ** 2).mean()
    rhythm = np.full(3, nan, np.float32)
    if len(ai):
        norms = np.linalg.norm(xa[ai], axis=1)
        if norms.mean() >= 1e-6:
            rel = norms / norms.mean()
            rhythm[0] = rel.std()
            if len(ai) >= 2:
                t = (ai - ai[0]).astype(np.float32)
                ts = t / (t.std() + 1e-6)
                rhythm[1] = (ts * rel).sum() / ((ts**2).sum() + 1e-6)
            rhythm[2] = float(ai[norms.argmax()]) / len(am)
    has_f, has_a = float(fm.sum() > 0), float(am.sum() > 0)
    one_hot = [has_a * (1 - has_f), 1.0 - has_a, has_f * has_a]
    return np.concatenate(
        [
            agg(xf, fi),
            agg(xa, ai),
            delta(xf, fi),
            delta(xa, ai),
            slope(xf, fi),
            slope(xa, ai),
            blend,
            pose,
            rhythm,
            motion,
            np.asarray([has_f, has_a, fm.mean(), am.mean(), *one_hot], np.float32),
        ]
    ).astype(np.float32)


def test_edge_masks_match_reference_loop() -> None:
    xf, xa, fm, am = _edge_case_batch()
    got = build_tabular_features(xf, xa, fm, am)
    for i in range(len(fm)):
        want = _reference_features(xf[i], xa[i], fm[i], am[i])
        assert want.shape == (TABULAR_DIM,)
        np.testing.assert_array_equal(np.isnan(got[i]), np.isnan(want), err_msg=f"row {i}")
        np.testing.assert_allclose(got[i], want, **FEATURE_TOL, err_msg=f"row {i}")
    # Spot-check the NaN rules themselves on row 3 (1 face frame, 2 audio frames).
    row = got[3]
    assert not np.isnan(row[0:1304]).any()  # face agg present with one frame
    assert np.isnan(row[5400:5726]).all() and np.isnan(row[6750:7076]).all() and np.isnan(row[8141])
    assert not np.isnan(row[5726:6750]).any() and not np.isnan(row[7076:8100]).any()
    assert np.isnan(got[-1, 8138:8141]).all()  # silent audio → whole rhythm triple NaN
    assert np.isnan(got[1, 0:1304]).all() and np.isnan(got[1, 8100:8138]).all()  # no face


def test_modality_one_hot_and_flags_follow_masks() -> None:
    xf, xa, fm, am = _edge_case_batch()
    got = build_tabular_features(xf, xa, fm, am)
    has_f, has_a = fm.sum(1) > 0, am.sum(1) > 0
    np.testing.assert_array_equal(got[:, 8142], has_f)
    np.testing.assert_array_equal(got[:, 8143], has_a)
    np.testing.assert_allclose(got[:, 8144], fm.mean(1))
    np.testing.assert_array_equal(got[:, 8146], has_a & ~has_f)
    np.testing.assert_array_equal(got[:, 8147], ~has_a)
    np.testing.assert_array_equal(got[:, 8148], has_a & has_f)
    assert (got[:, 8146:8149].sum(1) == 1).all()


def test_rejects_bad_shapes() -> None:
    xf, xa, fm, am = (a[0] for a in _edge_case_batch())
    with pytest.raises(ValueError):
        build_tabular_features(xf[:, :100], xa, fm, am)
    with pytest.raises(ValueError):
        build_tabular_features(xf, xa, fm[:5], am)
    with pytest.raises(ValueError):
        build_tabular_features(xf[None], xa, fm, am)


# ----------------------------------------------------------------------------- serialisation


def test_round_trip_gives_identical_outputs(golden_dir: Path, tabular: TabularModel) -> None:
    arrays, meta, raw = tabular.to_arrays(), tabular.meta(), tabular.booster_bytes()
    meta = json.loads(json.dumps(meta))  # must be JSON-able
    assert meta["feature_version"] == TABULAR_FEATURE_VERSION
    assert meta["n_iterations"] == 50 and meta["pca_components"] == 512
    assert {k: v.dtype for k, v in arrays.items()} == {
        "col_medians": np.float32,
        "pca_components": np.float32,
        "pca_mean": np.float32,
    }
    copy = TabularModel.from_arrays({k: v.copy() for k, v in arrays.items()}, meta, raw)
    xf, xa, fm, am = _edge_case_batch()
    features = build_tabular_features(xf, xa, fm, am)
    np.testing.assert_array_equal(copy.predict_proba(features), tabular.predict_proba(features))
    cases = _cases_with(golden_dir, "xgb_features.npy")
    golden = np.stack([np.load(c / "xgb_features.npy") for c in cases])
    np.testing.assert_array_equal(copy.predict_proba(golden), tabular.predict_proba(golden))


def test_round_trip_through_safetensors(tmp_path: Path, tabular: TabularModel) -> None:
    from safetensors.numpy import load_file, save_file

    path = tmp_path / "tabular.safetensors"
    save_file(tabular.to_arrays(), str(path))
    copy = TabularModel.from_arrays(load_file(str(path)), tabular.meta(), tabular.booster_bytes())
    features = build_tabular_features(*_edge_case_batch())
    np.testing.assert_array_equal(copy.predict_proba(features), tabular.predict_proba(features))


def test_from_arrays_refuses_other_feature_version(tabular: TabularModel) -> None:
    meta = dict(tabular.meta(), feature_version="something-else")
    with pytest.raises(ValueError, match="feature_version"):
        TabularModel.from_arrays(tabular.to_arrays(), meta, tabular.booster_bytes())


def test_rejects_bad_iteration_count(tabular: TabularModel) -> None:
    with pytest.raises(ValueError, match="n_iterations"):
        TabularModel(tabular.col_medians, tabular.pca_components, tabular.pca_mean, tabular.booster, 51)

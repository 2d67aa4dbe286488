"""The restricted unpickler reads Hoovik's pickles and refuses everything else without running it."""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import types
from pathlib import Path

import joblib
import numpy as np
import pytest

from models.anomaly import AnomalyDetector
from models.constants import ANOMALY_DIM, TABULAR_DIM
from models.hoovik_pickles import (
    ALLOWED_GLOBALS,
    HoovikArtifactError,
    PickledModalityAnomalyModel,
    UnsafePickleError,
    load_anomaly,
    load_anomaly_dir,
    load_pca,
    load_restricted,
    load_tabular,
    load_xgb,
)


@pytest.fixture(scope="module")
def models_dir(golden_dir: Path) -> Path:
    return golden_dir / "artifacts" / "models"


def _inventory(golden_dir: Path) -> dict:
    return json.loads((golden_dir / "artifacts_aux" / "pickle_inventory.json").read_text())


# ----------------------------------------------------------------------------- allow-list


def test_allow_list_covers_every_inventoried_global(golden_dir: Path) -> None:
    for name, entry in _inventory(golden_dir).items():
        if name.endswith(".joblib"):
            missing = set(entry["pickle_globals"]) - ALLOWED_GLOBALS
            assert not missing, f"{name}: {missing}"
    assert "numpy.core.multiarray.scalar" in ALLOWED_GLOBALS
    assert "anomaly.train_anomaly.ModalityAnomalyModel" in ALLOWED_GLOBALS


class _RunsShell:
    """Unpickling this would call os.system(cmd)."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self) -> tuple:
        return (os.system, (self.cmd,))


class _CallsEval:
    def __reduce__(self) -> tuple:
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("use_joblib", [True, False])
def test_refuses_os_system_without_executing(tmp_path: Path, use_joblib: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.joblib"
    payload = {"model": _RunsShell(f"touch {marker}"), "arr": np.arange(3)}
    if use_joblib:
        joblib.dump(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UnsafePickleError) as info:
        load_restricted(path)
    assert not marker.exists(), "the refused global was executed"
    message = str(info.value)
    assert str(path) in message and ("os.system" in message or "posix.system" in message)
    assert info.value.refused in ("os.system", "posix.system")
    # Refusals are also plain unpickling errors / artefact errors for callers that catch broadly.
    assert isinstance(info.value, pickle.UnpicklingError) and isinstance(info.value, HoovikArtifactError)


def test_refuses_other_builtins_and_object_arrays(tmp_path: Path) -> None:
    evil = tmp_path / "eval.joblib"
    joblib.dump([_CallsEval()], evil)
    with pytest.raises(UnsafePickleError, match=re.escape("builtins.eval")):
        load_restricted(evil)
    obj_array = tmp_path / "objects.joblib"
    joblib.dump(np.array([1, "a", None], dtype=object), obj_array)
    with pytest.raises(UnsafePickleError, match="object"):
        load_restricted(obj_array)
    # A real sklearn class that is not on the list is refused too.
    from sklearn.linear_model import LinearRegression

    other = tmp_path / "linreg.joblib"
    joblib.dump(LinearRegression(), other)
    with pytest.raises(UnsafePickleError, match="LinearRegression"):
        load_restricted(other)


def test_numpy1_scalar_spelling_is_accepted(tmp_path: Path) -> None:
    raw = pickle.dumps(np.float64(1.25), protocol=3)  # protocol 3: GLOBAL opcode, newline-separated
    assert b"numpy._core.multiarray\nscalar" in raw
    path = tmp_path / "np1.pkl"
    path.write_bytes(raw.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    value = load_restricted(path)
    assert value == 1.25 and isinstance(value, np.float64)


@pytest.mark.parametrize("module_name", ["__main__", "anomaly.train_anomaly"])
def test_modality_anomaly_model_maps_to_attribute_bag(tmp_path: Path, module_name: str) -> None:
    """Both spellings Hoovik's files may carry load as the local attribute bag, arrays included."""
    cls = type("ModalityAnomalyModel", (), {"__module__": module_name})
    # Pickling needs the class importable under that name; register throwaway modules for the dump.
    parts = module_name.split(".")
    added: list[str] = []
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    module = sys.modules[module_name]
    previous = getattr(module, "ModalityAnomalyModel", None)
    module.ModalityAnomalyModel = cls  # type: ignore[attr-defined]
    try:
        obj = cls()
        obj.name = "both"
        obj.threshold = 0.5
        obj.arr = np.arange(4, dtype=np.float32)
        path = tmp_path / "m.joblib"
        joblib.dump(obj, path)
    finally:
        if previous is None:
            delattr(module, "ModalityAnomalyModel")
        else:
            module.ModalityAnomalyModel = previous  # type: ignore[attr-defined]
        for name in added:
            del sys.modules[name]
    raw = path.read_bytes()
    assert module_name.encode() in raw and b"ModalityAnomalyModel" in raw
    loaded = load_restricted(path)
    assert type(loaded) is PickledModalityAnomalyModel
    assert loaded.name == "both" and loaded.threshold == 0.5
    np.testing.assert_array_equal(loaded.arr, np.arange(4, dtype=np.float32))


# ----------------------------------------------------------------------------- golden artefacts


def test_load_pca(models_dir: Path) -> None:
    components, mean, k = load_pca(models_dir / "xgb" / "pca.joblib")
    assert k == 512
    assert components.shape == (512, TABULAR_DIM) and components.dtype == np.float32
    assert mean.shape == (TABULAR_DIM,) and mean.dtype == np.float32
    reference = load_restricted(models_dir / "xgb" / "pca.joblib")
    np.testing.assert_array_equal(components, reference.components_)


def test_load_xgb_and_golden_probabilities(golden_dir: Path, models_dir: Path) -> None:
    booster, n_iterations = load_xgb(models_dir / "xgb" / "xgb_model.joblib")
    assert n_iterations == 50 and booster.num_boosted_rounds() == 50
    import xgboost

    cases = sorted(p for p in (golden_dir / "cases").iterdir() if (p / "xgb_pca.npy").is_file())
    assert cases
    x = np.stack([np.load(c / "xgb_pca.npy") for c in cases])
    probs = booster.predict(xgboost.DMatrix(x, missing=np.nan), iteration_range=(0, n_iterations))
    want = np.stack([np.load(c / "p_xgb.npy") for c in cases])
    np.testing.assert_allclose(probs, want, rtol=0, atol=1e-5)


def test_load_tabular(models_dir: Path) -> None:
    model = load_tabular(models_dir / "xgb")
    assert model.n_components == 512 and model.n_iterations == 50
    np.testing.assert_array_equal(model.col_medians, np.load(models_dir / "xgb" / "col_medians.npy"))


def test_load_anomaly_detectors(golden_dir: Path, models_dir: Path) -> None:
    meta = json.loads((models_dir / "anomaly" / "meta.json").read_text())
    expected_k = {"both": 256, "audio_only": 384, "video_only": 64, "global_fallback": 256}
    for name, k in expected_k.items():
        det = load_anomaly(models_dir / "anomaly" / f"iso_{name}.joblib")
        assert isinstance(det, AnomalyDetector)
        assert det.name == name and det.n_components == k
        assert det.scaler_mean.shape == (ANOMALY_DIM,) and det.scaler_mean.dtype == np.float64
        threshold = meta["global_fallback" if name == "global_fallback" else "per_modality"]
        threshold = threshold["threshold"] if name == "global_fallback" else threshold[name]["threshold"]
        assert det.threshold == threshold
        assert det.forest.n_trees == 50 and det.forest.max_samples == 256 and det.forest.offset == -0.5
    model = load_anomaly_dir(models_dir / "anomaly")
    assert set(model.detectors) == set(expected_k)


# ----------------------------------------------------------------------------- missing / corrupt


def test_missing_files_name_the_file(tmp_path: Path, models_dir: Path) -> None:
    for loader in (load_restricted, load_pca, load_xgb, load_anomaly):
        with pytest.raises(FileNotFoundError, match=re.escape("nope.joblib")):
            loader(tmp_path / "nope.joblib")
    with pytest.raises(FileNotFoundError, match=re.escape("col_medians.npy")):
        load_tabular(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape("iso_global_fallback.joblib")):
        load_anomaly_dir(tmp_path)


def test_corrupt_files_name_the_file(tmp_path: Path, models_dir: Path) -> None:
    truncated = tmp_path / "truncated.joblib"
    truncated.write_bytes((models_dir / "xgb" / "xgb_model.joblib").read_bytes()[:5000])
    with pytest.raises(HoovikArtifactError, match=re.escape("truncated.joblib")):
        load_xgb(truncated)
    garbage = tmp_path / "garbage.joblib"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(HoovikArtifactError, match=re.escape("garbage.joblib")):
        load_anomaly(garbage)
    # Well-formed pickles of the wrong kind.
    with pytest.raises(HoovikArtifactError, match=re.escape("pca.joblib")):
        load_xgb(models_dir / "xgb" / "pca.joblib")
    with pytest.raises(HoovikArtifactError, match=re.escape("xgb_model.joblib")):
        load_pca(models_dir / "xgb" / "xgb_model.joblib")
    with pytest.raises(HoovikArtifactError, match=re.escape("pca.joblib")):
        load_anomaly(models_dir / "xgb" / "pca.joblib")
    bad_dir = tmp_path / "xgb"
    bad_dir.mkdir()
    np.save(bad_dir / "col_medians.npy", np.zeros(10, np.float32))
    with pytest.raises(HoovikArtifactError, match=re.escape("col_medians.npy")):
        load_tabular(bad_dir)


@pytest.mark.parametrize("best_iteration", [None, 6])
def test_xgb_iteration_range_follows_best_iteration(tmp_path: Path, best_iteration: int | None) -> None:
    """``n_iterations`` is best_iteration + 1 when early stopping recorded one, else every round."""
    import xgboost

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    y = np.arange(120) % 6
    clf = xgboost.XGBClassifier(n_estimators=12, max_depth=2, n_jobs=1, objective="multi:softprob")
    clf.fit(x, y)
    if best_iteration is not None:
        clf.get_booster().set_attr(best_iteration=str(best_iteration))
    path = tmp_path / "clf.joblib"
    joblib.dump(clf, path)
    booster, n_iterations = load_xgb(path)
    assert n_iterations == (12 if best_iteration is None else best_iteration + 1)
    got = booster.predict(xgboost.DMatrix(x, missing=np.nan), iteration_range=(0, n_iterations))
    np.testing.assert_allclose(got, clf.predict_proba(x), rtol=0, atol=1e-6)

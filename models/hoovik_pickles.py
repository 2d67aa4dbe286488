"""Read the original Hoovik's joblib pickles without trusting them.

Hoovik ships its PCA, XGBoost and anomaly models as joblib pickles. ``joblib.load`` would execute
whatever a tampered file asks for, so this module unpickles them with a restricted unpickler: a
subclass of joblib's own ``NumpyUnpickler`` (so joblib's array storage, ``NumpyArrayWrapper``, reads
exactly as joblib reads it) whose ``find_class`` admits only the globals those files are known to
reference (golden README §2 "joblib pickles", ``pickle_inventory.json``). Any other global, e.g.
``os.system``, raises :class:`UnsafePickleError` *before* it is looked up, so nothing runs.

Two original classes are not importable here and are mapped to local attribute bags that only
receive a ``__dict__``:

* ``__main__.ModalityAnomalyModel`` / ``anomaly.train_anomaly.ModalityAnomalyModel`` — the
  anomaly detector wrapper (pickled from a script, hence ``__main__``);
* ``xgboost.sklearn.XGBClassifier`` and ``xgboost.core.Booster`` — only the Booster's raw
  serialised bytes are used; a fresh ``xgboost.Booster`` is built from them, so no XGBoost Python
  object state from the file is trusted.

The scikit-learn classes (StandardScaler, PCA, IsolationForest, ExtraTreeRegressor, Tree) are
reconstructed as the real classes: their pickle protocol only assigns attributes and arrays. The
loaders then copy out plain numpy arrays into the bot's own model types
(:class:`~models.tabular.TabularModel`, :class:`~models.anomaly.AnomalyDetector`), so nothing
pickled survives into serving.

Every loader raises ``FileNotFoundError`` for a missing file and :class:`HoovikArtifactError` for a
file that is corrupt or has an unexpected structure; both name the file.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any, Final

import numpy as np
import xgboost
from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

from models.anomaly import DETECTOR_NAMES, GLOBAL_FALLBACK, AnomalyDetector, AnomalyModel
from models.constants import ANOMALY_DIM, TABULAR_DIM
from models.forest import IsolationForestArrays
from models.tabular import TabularModel

__all__ = [
    "ALLOWED_GLOBALS",
    "HoovikArtifactError",
    "PickledBooster",
    "PickledModalityAnomalyModel",
    "PickledXGBClassifier",
    "UnsafePickleError",
    "booster_from_raw",
    "load_anomaly",
    "load_anomaly_dir",
    "load_pca",
    "load_restricted",
    "load_tabular",
    "load_xgb",
]


class HoovikArtifactError(RuntimeError):
    """An artefact file exists but cannot be used (corrupt, truncated, unexpected content)."""


class UnsafePickleError(HoovikArtifactError, pickle.UnpicklingError):
    """A pickle referenced a global outside the allow-list; it was refused without being loaded."""

    def __init__(self, path: str, refused: str, reason: str = "not in the Hoovik artefact allow-list") -> None:
        self.path = path
        self.refused = refused
        super().__init__(f"{path}: refused pickle global {refused!r} ({reason})")


class PickledModalityAnomalyModel:
    """Attribute bag standing in for Hoovik's ``ModalityAnomalyModel`` (receives its ``__dict__``)."""


class PickledXGBClassifier:
    """Attribute bag standing in for ``xgboost.sklearn.XGBClassifier``."""


class PickledBooster:
    """Attribute bag standing in for ``xgboost.core.Booster``; ``handle`` holds the raw bytes."""


# (module, name) -> a local stand-in class, or None: import the real object from that module.
_LOCAL: dict[tuple[str, str], type] = {
    ("__main__", "ModalityAnomalyModel"): PickledModalityAnomalyModel,
    ("anomaly.train_anomaly", "ModalityAnomalyModel"): PickledModalityAnomalyModel,
    ("xgboost.sklearn", "XGBClassifier"): PickledXGBClassifier,
    ("xgboost.core", "Booster"): PickledBooster,
}
# (module, name) as written in the pickle -> where the real object is imported from.
_REAL: dict[tuple[str, str], tuple[str, str]] = {
    ("sklearn.preprocessing._data", "StandardScaler"): ("sklearn.preprocessing._data", "StandardScaler"),
    ("sklearn.decomposition._pca", "PCA"): ("sklearn.decomposition._pca", "PCA"),
    ("sklearn.ensemble._iforest", "IsolationForest"): ("sklearn.ensemble._iforest", "IsolationForest"),
    ("sklearn.tree._classes", "ExtraTreeRegressor"): ("sklearn.tree._classes", "ExtraTreeRegressor"),
    ("sklearn.tree._tree", "Tree"): ("sklearn.tree._tree", "Tree"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    # numpy 1.x (Hoovik's pin, 1.26.4) spells the same function numpy.core.multiarray.scalar.
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("builtins", "bytearray"): ("builtins", "bytearray"),
    ("collections", "OrderedDict"): ("collections", "OrderedDict"),
}
ALLOWED_GLOBALS: Final[frozenset[str]] = frozenset(f"{m}.{n}" for m, n in (*_LOCAL, *_REAL))


class _RestrictedUnpickler(NumpyUnpickler):
    """joblib's unpickler with an allow-listed ``find_class`` and no object-dtype arrays."""

    dispatch = NumpyUnpickler.dispatch.copy()

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        local = _LOCAL.get(key)
        if local is not None:
            return local
        real = _REAL.get(key)
        if real is None:
            raise UnsafePickleError(self.filename, f"{module}.{name}")
        return getattr(importlib.import_module(real[0]), real[1])

    def load_build(self) -> None:
        # BUILD on a NumpyArrayWrapper is where joblib reads the array that follows in the stream.
        # Object-dtype arrays would be read as a nested pickle; Hoovik's files have none, so refuse
        # them (and any array subclass) rather than widen what the file may construct.
        inst = self.stack[-2] if len(self.stack) >= 2 else None
        if isinstance(inst, NumpyArrayWrapper):
            state = self.stack[-1]
            dtype = state.get("dtype") if isinstance(state, dict) else None
            subclass = state.get("subclass") if isinstance(state, dict) else None
            if not isinstance(dtype, np.dtype) or dtype.hasobject:
                raise UnsafePickleError(self.filename, f"array of dtype {dtype!r}", "object arrays refused")
            if subclass is not np.ndarray:
                raise UnsafePickleError(self.filename, f"array subclass {subclass!r}", "only numpy.ndarray")
        NumpyUnpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build


def load_restricted(path: str | Path) -> Any:
    """Unpickle a joblib file admitting only :data:`ALLOWED_GLOBALS`.

    Raises ``FileNotFoundError`` if the file is missing, :class:`UnsafePickleError` if it references
    any other global, and :class:`HoovikArtifactError` if it is not a readable joblib pickle.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Hoovik artefact not found: {p}")
    # joblib's helper transparently handles its compressed containers (zlib, gzip, lzma, ...).
    from joblib.numpy_pickle import _validate_fileobject_and_memmap

    try:
        with p.open("rb") as f, _validate_fileobject_and_memmap(f, str(p), None) as (fobj, _):
            if isinstance(fobj, str):
                raise HoovikArtifactError(f"{p}: pre-0.10 joblib format is not supported")
            unpickler = _RestrictedUnpickler(str(p), fobj, ensure_native_byte_order=True)
            return unpickler.load()
    except (HoovikArtifactError, FileNotFoundError):
        raise
    except Exception as exc:  # corrupt or truncated files raise anything from EOFError to KeyError
        raise HoovikArtifactError(f"{p}: not a readable joblib pickle ({type(exc).__name__}: {exc})") from exc


def _require_type(obj: Any, expected: type | tuple[type, ...], path: Path, what: str) -> None:
    if not isinstance(obj, expected):
        raise HoovikArtifactError(f"{path}: expected {what}, found {type(obj).__module__}.{type(obj).__name__}")


def _pca_arrays(pca: Any, path: Path, n_features: int) -> tuple[np.ndarray, np.ndarray, int]:
    from sklearn.decomposition import PCA

    _require_type(pca, PCA, path, "a fitted sklearn PCA")
    if getattr(pca, "whiten", False):
        raise HoovikArtifactError(f"{path}: whitened PCA is not supported (Hoovik never whitens)")
    try:
        components = np.asarray(pca.components_, dtype=np.float32)
        mean = np.asarray(pca.mean_, dtype=np.float32)
        n_components = int(pca.n_components_)
    except AttributeError as exc:
        raise HoovikArtifactError(f"{path}: PCA is not fitted ({exc})") from exc
    if components.shape != (n_components, n_features) or mean.shape != (n_features,):
        raise HoovikArtifactError(
            f"{path}: PCA components {components.shape} / mean {mean.shape}, expected "
            f"({n_components}, {n_features}) / ({n_features},)"
        )
    return components, mean, n_components


def load_pca(path: str | Path, n_features: int = TABULAR_DIM) -> tuple[np.ndarray, np.ndarray, int]:
    """``(components float32 (k, n_features), mean float32 (n_features,), k)`` from a PCA pickle."""
    p = Path(path)
    return _pca_arrays(load_restricted(p), p, n_features)


def booster_from_raw(raw: bytes | bytearray, source: str = "<bytes>") -> xgboost.Booster:
    """A fresh Booster from XGBoost's serialised memory snapshot (what ``Booster`` pickles hold).

    The snapshot (UBJSON ``{"Config", "Model"}``) goes through the same C call unpickling uses
    (``XGBoosterUnserializeFromBuffer``); the result is re-saved as a plain model (``save_raw``) and
    reloaded, so the returned booster carries the model and its attributes only, no training config.
    """
    snapshot = xgboost.Booster.__new__(xgboost.Booster)
    try:
        snapshot.__setstate__({"handle": bytearray(raw)})
        return xgboost.Booster(model_file=snapshot.save_raw("ubj"))
    except xgboost.core.XGBoostError as exc:
        raise HoovikArtifactError(f"{source}: XGBoost could not read the booster ({exc})") from exc


def _n_iterations(booster: xgboost.Booster) -> int:
    """``best_iteration + 1`` when early stopping recorded one (what ``predict_proba`` uses), else all."""
    best = booster.attr("best_iteration")
    return int(best) + 1 if best is not None else int(booster.num_boosted_rounds())


def load_xgb(path: str | Path) -> tuple[xgboost.Booster, int]:
    """``(booster, n_iterations)`` from an ``XGBClassifier`` joblib pickle (or a pickled Booster)."""
    p = Path(path)
    obj = load_restricted(p)
    booster_state = obj.__dict__.get("_Booster") if isinstance(obj, PickledXGBClassifier) else obj
    _require_type(booster_state, PickledBooster, p, "an XGBClassifier holding a Booster")
    raw = booster_state.__dict__.get("handle")
    if not isinstance(raw, (bytes, bytearray)) or not raw:
        raise HoovikArtifactError(f"{p}: the pickled Booster holds no model bytes")
    booster = booster_from_raw(raw, str(p))
    if isinstance(obj, PickledXGBClassifier):
        objective = obj.__dict__.get("objective")
        if objective not in (None, "multi:softprob"):
            raise HoovikArtifactError(f"{p}: objective {objective!r}; only multi:softprob is supported")
    return booster, _n_iterations(booster)


def load_tabular(xgb_dir: str | Path) -> TabularModel:
    """The tabular model from Hoovik's ``models/xgb/`` (pca.joblib, xgb_model.joblib, col_medians.npy)."""
    d = Path(xgb_dir)
    medians_path = d / "col_medians.npy"
    if not medians_path.is_file():
        raise FileNotFoundError(f"Hoovik artefact not found: {medians_path}")
    try:
        medians = np.load(medians_path, allow_pickle=False)
    except Exception as exc:
        raise HoovikArtifactError(f"{medians_path}: not a readable .npy file ({exc})") from exc
    if medians.shape != (TABULAR_DIM,):
        raise HoovikArtifactError(f"{medians_path}: shape {medians.shape}, expected ({TABULAR_DIM},)")
    components, mean, _ = load_pca(d / "pca.joblib")
    booster, n_iterations = load_xgb(d / "xgb_model.joblib")
    try:
        return TabularModel(
            col_medians=medians.astype(np.float32),
            pca_components=components,
            pca_mean=mean,
            booster=booster,
            n_iterations=n_iterations,
        )
    except ValueError as exc:
        raise HoovikArtifactError(f"{d}: inconsistent tabular artefacts ({exc})") from exc


def load_anomaly(path: str | Path) -> AnomalyDetector:
    """One ``iso_<name>.joblib`` (a pickled ``ModalityAnomalyModel``) as an :class:`AnomalyDetector`.

    Uses the global scaler (the one Hoovik applies at inference, where no actor id exists), the
    optional PCA and the IsolationForest; the per-source training scalers are ignored.
    """
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import StandardScaler

    p = Path(path)
    obj = load_restricted(p)
    _require_type(obj, PickledModalityAnomalyModel, p, "a pickled ModalityAnomalyModel")
    state = obj.__dict__
    missing = [k for k in ("name", "scaler", "pca", "iso", "threshold") if k not in state]
    if missing:
        raise HoovikArtifactError(f"{p}: ModalityAnomalyModel lacks {missing}")
    scaler, pca, iso = state["scaler"], state["pca"], state["iso"]
    _require_type(scaler, StandardScaler, p, "a StandardScaler in .scaler")
    _require_type(iso, IsolationForest, p, "an IsolationForest in .iso")
    try:
        n_in = int(scaler.n_features_in_)
        mean = np.asarray(scaler.mean_, np.float64) if scaler.with_mean else np.zeros(n_in)
        scale = np.asarray(scaler.scale_, np.float64) if scaler.with_std else np.ones(n_in)
    except AttributeError as exc:
        raise HoovikArtifactError(f"{p}: StandardScaler is not fitted ({exc})") from exc
    if n_in != ANOMALY_DIM:
        raise HoovikArtifactError(f"{p}: scaler expects {n_in} features, the anomaly vector has {ANOMALY_DIM}")
    components: np.ndarray | None = None
    pca_mean: np.ndarray | None = None
    if pca is not None:
        components, pca_mean, _ = _pca_arrays(pca, p, ANOMALY_DIM)
    try:
        forest = IsolationForestArrays.from_sklearn(iso)
        return AnomalyDetector(
            name=str(state["name"]),
            scaler_mean=mean,
            scaler_scale=scale,
            pca_components=components,
            pca_mean=pca_mean,
            forest=forest,
            threshold=float(state["threshold"]),
        )
    except (AttributeError, ValueError, IndexError) as exc:
        raise HoovikArtifactError(f"{p}: unusable anomaly detector ({exc})") from exc


def load_anomaly_dir(anomaly_dir: str | Path) -> AnomalyModel:
    """All detectors from Hoovik's ``models/anomaly/``: ``iso_<profile>.joblib`` where present.

    ``iso_global_fallback.joblib`` is required, as in the original, since it serves every profile
    whose own file is missing.
    """
    d = Path(anomaly_dir)
    if not (d / f"iso_{GLOBAL_FALLBACK}.joblib").is_file():
        raise FileNotFoundError(f"Hoovik artefact not found: {d / f'iso_{GLOBAL_FALLBACK}.joblib'}")
    detectors: dict[str, AnomalyDetector] = {}
    for name in DETECTOR_NAMES:
        path = d / f"iso_{name}.joblib"
        if path.is_file():
            det = load_anomaly(path)
            if det.name != name:
                raise HoovikArtifactError(f"{path}: detector is named {det.name!r}, expected {name!r}")
            detectors[name] = det
    return AnomalyModel(detectors=detectors)

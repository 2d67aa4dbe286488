"""Read the original Hoovik's joblib pickles without trusting them.

Hoovik ships its PCA, XGBoost and anomaly models as joblib pickles. ``joblib.load`` would execute
whatever a tampered file asks for, so this module unpickles them with a restricted unpickler: a
subclass of joblib's own ``NumpyUnpickler`` (so joblib's array storage, ``NumpyArrayWrapper``, reads
exactly as joblib reads it) whose ``find_class`` admits only the globals those files are known to
reference (docs/models.md, "Safe artefacts"; ``pickle_inventory.json``). Any other global, e.g.
``os.system``, raises :class:`UnsafePickleError` *before* it is looked up, so nothing runs.

Allow-listed classes can still be handed corrupt data. scikit-learn's ``Tree`` is Cython that
trusts its pickled node records (a child index out of range makes ``compute_node_depths`` write out
of bounds), so the unpickler builds it only through :func:`_make_tree`, which checks the
constructor's arguments, and validates every tree's state dict (:func:`check_tree_state`) in BUILD,
*before* ``Tree.__setstate__`` runs. Arrays are limited to :data:`MAX_ARRAY_BYTES` each, checked
from the header before joblib allocates them.

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
from models.forest import MAX_FEATURES, MAX_TREE_NODES, IsolationForestArrays, check_tree_structure
from models.tabular import TabularModel

__all__ = [
    "ALLOWED_GLOBALS",
    "HoovikArtifactError",
    "PickledBooster",
    "PickledModalityAnomalyModel",
    "PickledXGBClassifier",
    "UnsafePickleError",
    "booster_from_raw",
    "check_tree_state",
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
_TREE: Final = ("sklearn.tree._tree", "Tree")
# No single array in Hoovik's files comes near this (the largest, a PCA, is ~35 MB); a larger header
# would make joblib allocate the whole array before reading a byte of it.
MAX_ARRAY_BYTES: Final = 1 << 30
# Fields of scikit-learn's Node record that the checks below read.
_NODE_FIELDS: Final = ("left_child", "right_child", "feature", "threshold", "n_node_samples")
_TREE_STATE_KEYS: Final = frozenset({"max_depth", "node_count", "nodes", "values"})


class _TreeArgsError(ValueError):
    """Raised by the Tree factory; the unpickler turns it into an UnsafePickleError naming the file."""


def _make_tree(n_features: Any, n_classes: Any, n_outputs: Any) -> Any:
    """Build a scikit-learn ``Tree`` only from the arguments an isolation tree pickles with.

    ``Tree.__cinit__`` (Cython) sizes its buffers from these, so they are checked first: an integer
    ``n_features`` in ``[1, MAX_FEATURES]``, one output, one "class" (regression trees).
    """
    from sklearn.tree._tree import Tree

    if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)):
        raise _TreeArgsError(f"Tree n_features is {type(n_features).__name__}, expected an integer")
    if not 1 <= int(n_features) <= MAX_FEATURES:
        raise _TreeArgsError(f"Tree n_features {int(n_features)} outside [1, {MAX_FEATURES}]")
    if isinstance(n_outputs, bool) or not isinstance(n_outputs, (int, np.integer)) or int(n_outputs) != 1:
        raise _TreeArgsError(f"Tree n_outputs {n_outputs!r}; isolation trees have exactly 1")
    if (
        not isinstance(n_classes, np.ndarray)
        or n_classes.shape != (1,)
        or n_classes.dtype.kind not in "iu"
        or int(n_classes[0]) != 1
    ):
        raise _TreeArgsError(f"Tree n_classes {n_classes!r}; regression trees have [1]")
    return Tree(int(n_features), n_classes, 1)


def check_tree_state(tree: Any, state: Any) -> None:
    """Validate a pickled ``Tree``'s state dict before ``Tree.__setstate__`` (Cython) copies it in.

    ``__setstate__`` trusts ``node_count`` and the node records; the tree methods scikit-learn and
    :meth:`IsolationForestArrays.from_sklearn` call later index with them unchecked. Raises
    ``ValueError`` naming the problem (see :func:`models.forest.check_tree_structure`).
    """
    if not isinstance(state, dict) or set(state) != _TREE_STATE_KEYS:
        keys = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"Tree state has keys {keys}, expected {sorted(_TREE_STATE_KEYS)}")
    nodes, values = state["nodes"], state["values"]
    if not isinstance(nodes, np.ndarray) or nodes.ndim != 1 or nodes.dtype.names is None:
        raise ValueError("Tree state 'nodes' is not a 1-D structured node array")
    missing = [f for f in _NODE_FIELDS if f not in nodes.dtype.names]
    if missing:
        raise ValueError(f"Tree node records lack {missing}")
    n = int(nodes.shape[0])
    if not 1 <= n <= MAX_TREE_NODES:
        raise ValueError(f"Tree has {n} nodes, expected 1..{MAX_TREE_NODES}")
    for key in ("node_count", "max_depth"):
        v = state[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"Tree {key} is {type(v).__name__}, expected an integer")
    if int(state["node_count"]) != n:
        raise ValueError(f"Tree node_count {int(state['node_count'])} differs from its {n} node records")
    if not isinstance(values, np.ndarray) or values.shape != (n, 1, 1) or values.dtype.kind != "f":
        shape = getattr(values, "shape", None)
        raise ValueError(f"Tree values have shape {shape}, expected ({n}, 1, 1) floats")
    mgl = nodes["missing_go_to_left"] if "missing_go_to_left" in nodes.dtype.names else None
    depths = check_tree_structure(
        nodes["left_child"],
        nodes["right_child"],
        nodes["feature"],
        nodes["threshold"],
        int(tree.n_features),
        nodes["n_node_samples"],
        mgl,
    )
    if int(state["max_depth"]) != int(depths.max()) - 1:
        raise ValueError(f"Tree max_depth {int(state['max_depth'])} differs from its depth {int(depths.max()) - 1}")


def _is_tree(obj: Any) -> bool:
    from sklearn.tree._tree import Tree

    return isinstance(obj, Tree)


class _RestrictedUnpickler(NumpyUnpickler):
    """joblib's unpickler with an allow-listed ``find_class`` and no object-dtype arrays."""

    dispatch = NumpyUnpickler.dispatch.copy()

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key == _TREE:
            # Every way a pickle can construct from a global (REDUCE, INST, OBJ) calls this factory,
            # which checks the Cython constructor's arguments; NEWOBJ on it fails (not a class).
            return _make_tree
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
            shape = state.get("shape")
            if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise UnsafePickleError(self.filename, f"array of shape {shape!r}", "malformed shape")
            if np.prod(shape, dtype=object) * dtype.itemsize > MAX_ARRAY_BYTES:
                raise UnsafePickleError(self.filename, f"array of shape {shape}", f"over {MAX_ARRAY_BYTES} bytes")
        elif inst is not None and _is_tree(inst):
            # Tree.__setstate__ is Cython and copies node records it does not check; validate them
            # here, while they are still plain arrays.
            try:
                check_tree_state(inst, self.stack[-1])
            except ValueError as exc:
                raise UnsafePickleError(self.filename, "sklearn.tree._tree.Tree state", str(exc)) from exc
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
    except _TreeArgsError as exc:
        raise UnsafePickleError(str(p), "sklearn.tree._tree.Tree", str(exc)) from exc
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

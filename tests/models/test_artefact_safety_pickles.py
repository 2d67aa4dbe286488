"""Allow-listed pickles with corrupt scikit-learn trees are refused before any Cython code sees them.

A pickled ``sklearn.tree._tree.Tree`` is rebuilt by Cython that trusts its node records: a child
index out of range made ``compute_node_depths`` write out of bounds and crash ``import-hoovik``.
The crafted files here start from a real fitted IsolationForest and corrupt one tree's state. The
loads run in a child process, so that a regression shows up as a failing test, not as a crash of
the test session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.preprocessing import StandardScaler
from sklearn.tree._tree import Tree

from models.constants import ANOMALY_DIM
from models.forest import IsolationForestArrays, check_tree_structure
from models.hoovik_pickles import PickledModalityAnomalyModel, load_restricted

ROOT = Path(__file__).resolve().parents[2]


class _TreeStandIn:
    """Pickles as ``Tree(*args)`` + ``BUILD(state)``, exactly like a real Tree, but with our state."""

    def __init__(self, args: tuple[Any, ...], state: dict[str, Any]) -> None:
        self.args, self.state = args, state

    def __reduce__(self) -> tuple[Any, ...]:
        return (Tree, self.args, self.state)


def _fitted(n_features: int = 4, seed: int = 0) -> IsolationForest:
    rng = np.random.default_rng(seed)
    return IsolationForest(n_estimators=3, max_samples=32, random_state=seed).fit(rng.normal(size=(64, n_features)))


def _corrupt(iso: IsolationForest, edit: Callable[[list[Any], dict[str, Any]], None]) -> IsolationForest:
    """Replace tree 0 with a stand-in carrying an edited copy of its args and state.

    The cached depths are dropped, as in pickles from scikit-learn < 1.4, so that the unguarded
    path would call ``Tree.compute_node_depths`` on the corrupt tree.
    """
    tree = iso.estimators_[0].tree_
    fn, args, state = tree.__reduce__()
    assert fn is Tree
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    arg_list = list(args)
    edit(arg_list, state)
    iso.estimators_[0].__dict__["tree_"] = _TreeStandIn(tuple(arg_list), state)
    iso.__dict__.pop("_decision_path_lengths", None)
    iso.__dict__.pop("_average_path_length_per_tree", None)
    return iso


def _internal(state: dict[str, Any]) -> np.ndarray:
    return np.flatnonzero(state["nodes"]["left_child"] != -1)


def _child_out_of_range(args: list[Any], s: dict[str, Any]) -> None:
    s["nodes"]["left_child"][0] = 1 << 40  # far outside: the old loader segfaulted


def _cycle(args: list[Any], s: dict[str, Any]) -> None:
    k = _internal(s)[1]
    s["nodes"]["right_child"][k] = 0  # back to the root


def _self_loop(args: list[Any], s: dict[str, Any]) -> None:
    k = _internal(s)[1]
    s["nodes"]["left_child"][k] = k


def _negative_feature(args: list[Any], s: dict[str, Any]) -> None:
    s["nodes"]["feature"][0] = -5


def _feature_too_large(args: list[Any], s: dict[str, Any]) -> None:
    s["nodes"]["feature"][0] = 4


def _nan_threshold(args: list[Any], s: dict[str, Any]) -> None:
    s["nodes"]["threshold"][0] = np.nan


def _huge_node_count(args: list[Any], s: dict[str, Any]) -> None:
    s["node_count"] = 10**9


def _half_leaf(args: list[Any], s: dict[str, Any]) -> None:
    leaf = np.flatnonzero(s["nodes"]["left_child"] == -1)[0]
    s["nodes"]["right_child"][leaf] = 1


def _two_parents(args: list[Any], s: dict[str, Any]) -> None:
    nodes = s["nodes"]
    b = _internal(s)[-1]  # the last split; some later node belongs to another parent
    other = next(c for c in range(b + 1, len(nodes)) if c not in (nodes["left_child"][b], nodes["right_child"][b]))
    nodes["left_child"][b] = other


def _wrong_max_depth(args: list[Any], s: dict[str, Any]) -> None:
    s["max_depth"] = 500


def _short_values(args: list[Any], s: dict[str, Any]) -> None:
    s["values"] = s["values"][:1].copy()


def _huge_n_features(args: list[Any], s: dict[str, Any]) -> None:
    args[0] = 1 << 40


def _many_outputs(args: list[Any], s: dict[str, Any]) -> None:
    args[1] = np.ones(1_000_000, dtype=np.intp)
    args[2] = 1_000_000


CASES: dict[str, Callable[[list[Any], dict[str, Any]], None]] = {
    "child_out_of_range": _child_out_of_range,
    "cycle": _cycle,
    "self_loop": _self_loop,
    "negative_feature": _negative_feature,
    "feature_too_large": _feature_too_large,
    "nan_threshold": _nan_threshold,
    "huge_node_count": _huge_node_count,
    "half_leaf": _half_leaf,
    "two_parents": _two_parents,
    "wrong_max_depth": _wrong_max_depth,
    "short_values": _short_values,
    "huge_n_features": _huge_n_features,
    "many_outputs": _many_outputs,
}
EXPECTED = {
    "child_out_of_range": f"left child {1 << 40}",
    "cycle": "right child 0",
    "self_loop": "left child",
    "negative_feature": "feature -5",
    "feature_too_large": "feature 4",
    "nan_threshold": "non-finite threshold",
    "huge_node_count": "node_count 1000000000",
    "half_leaf": "one child marked leaf",
    "two_parents": "single tree",
    "wrong_max_depth": "max_depth 500",
    "short_values": "values",
    "huge_n_features": "n_features",
    "many_outputs": "n_outputs",
}

# Load every file in a child process: the old code segfaulted on these.
_CHILD = textwrap.dedent(
    """
    import json, sys
    from models.forest import IsolationForestArrays
    from models.hoovik_pickles import UnsafePickleError, load_restricted
    out = {}
    for name, path in json.loads(sys.argv[1]).items():
        try:
            IsolationForestArrays.from_sklearn(load_restricted(path))
            out[name] = ["accepted", ""]
        except Exception as exc:
            out[name] = [type(exc).__name__, str(exc)]
        print(name, out[name][0], file=sys.stderr, flush=True)
    print(json.dumps(out))
    """
)


def _run_child(code: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    d = tmp_path_factory.mktemp("corrupt_trees")
    paths = {}
    for name, edit in CASES.items():
        paths[name] = str(d / f"{name}.joblib")
        joblib.dump(_corrupt(_fitted(), edit), paths[name])
    proc = _run_child(_CHILD, json.dumps(paths))
    assert proc.returncode == 0, f"loader crashed (rc {proc.returncode}); last case reached:\n{proc.stderr[-3000:]}"
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_tree_is_refused_without_crashing(refused: dict[str, list[str]], case: str) -> None:
    kind, message = refused[case]
    assert kind == "UnsafePickleError", (kind, message)
    assert case + ".joblib" in message  # names the file
    assert "sklearn.tree._tree.Tree" in message
    assert EXPECTED[case] in message, message


def test_intact_forest_still_loads_exactly(tmp_path: Path) -> None:
    iso = _fitted()
    path = tmp_path / "ok.joblib"
    joblib.dump(iso, path)
    forest = IsolationForestArrays.from_sklearn(load_restricted(path))
    x = np.random.default_rng(1).normal(size=(20, 4))
    np.testing.assert_allclose(forest.decision_function(x), iso.decision_function(x), rtol=0, atol=1e-12)
    # The depths computed in numpy equal scikit-learn's own.
    for est, start in zip(iso.estimators_, forest.roots, strict=True):
        t = est.tree_
        depths = check_tree_structure(t.children_left, t.children_right, t.feature, t.threshold, t.n_features)
        np.testing.assert_array_equal(depths, t.compute_node_depths())
        np.testing.assert_array_equal(forest.node_depth[start : start + t.node_count], depths)


def test_forest_level_inconsistencies_are_refused(tmp_path: Path) -> None:
    iso = _fitted()
    iso.estimators_features_ = iso.estimators_features_[:2]
    with pytest.raises(ValueError, match="feature subsets"):
        IsolationForestArrays.from_sklearn(iso)
    iso = _fitted()
    iso.estimators_features_ = [np.array([0, 1, 2, 99]) for _ in iso.estimators_]
    with pytest.raises(ValueError, match="feature subset"):
        IsolationForestArrays.from_sklearn(iso)
    iso = _fitted()
    iso._decision_path_lengths = [d + 1 for d in iso._decision_path_lengths]
    with pytest.raises(ValueError, match="cached node depths"):
        IsolationForestArrays.from_sklearn(iso)


def test_oversized_array_header_is_refused_before_allocation(tmp_path: Path) -> None:
    path = tmp_path / "big.joblib"
    joblib.dump({"a": np.zeros(4)}, path, protocol=2)  # protocol 2: no frames to keep consistent
    raw = path.read_bytes()
    # joblib pickles the wrapper's shape as a tuple; make it claim 2**40 float64 values.
    small = b"K\x04\x85"  # BININT1 4, TUPLE1
    big = b"\x8a\x06" + (1 << 40).to_bytes(6, "little") + b"\x85"  # LONG1 2**40, TUPLE1
    assert raw.count(small) == 1
    path.write_bytes(raw.replace(small, big))
    proc = _run_child(
        "import sys\nfrom models.hoovik_pickles import load_restricted\n"
        "try:\n    load_restricted(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n",
        str(path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("UnsafePickleError") and "over 1073741824 bytes" in proc.stdout, proc.stdout


def test_import_hoovik_refuses_a_corrupt_anomaly_forest(
    golden_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: the original's layout with one detector's tree corrupted fails cleanly, naming it."""
    src = golden_dir / "artifacts"
    art = tmp_path / "art"
    (art / "models" / "anomaly").mkdir(parents=True)
    (art / "extracted_dataset").symlink_to(src / "extracted_dataset")
    for sub in ("modal", "xgb", "ensemble"):
        (art / "models" / sub).symlink_to(src / "models" / sub)
    for f in (src / "models" / "anomaly").iterdir():
        (art / "models" / "anomaly" / f.name).symlink_to(f)
    target = art / "models" / "anomaly" / "iso_both.joblib"
    model = load_restricted(target)
    assert isinstance(model, PickledModalityAnomalyModel)
    _corrupt(model.__dict__["iso"], _child_out_of_range)
    # Write it back as the original does: a ``__main__.ModalityAnomalyModel`` holding the forest.
    original = type("ModalityAnomalyModel", (), {"__module__": "__main__"})
    monkeypatch.setattr(sys.modules["__main__"], "ModalityAnomalyModel", original, raising=False)
    obj = original()
    obj.__dict__.update(model.__dict__)
    target.unlink()
    joblib.dump(obj, target)
    code = (
        "import sys\nfrom models.hoovik_import import import_hoovik\n"
        "try:\n    import_hoovik(sys.argv[1], sys.argv[2])\nexcept Exception as e:\n"
        "    print(type(e).__name__, e)\n    sys.exit(3)\n"
    )
    proc = _run_child(code, str(art), str(tmp_path / "bundle"))
    assert proc.returncode == 3, f"rc {proc.returncode}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    assert proc.stdout.startswith("UnsafePickleError"), proc.stdout
    assert "iso_both.joblib" in proc.stdout and f"left child {1 << 40}" in proc.stdout
    assert not (tmp_path / "bundle" / "manifest.json").exists()


def test_golden_anomaly_pickles_pass_the_tree_checks(golden_dir: Path) -> None:
    for path in sorted((golden_dir / "artifacts" / "models" / "anomaly").glob("iso_*.joblib")):
        model = load_restricted(path)
        iso = model.__dict__["iso"]
        assert len(iso.estimators_) >= 1 and all(isinstance(e.tree_, Tree) for e in iso.estimators_)
        assert IsolationForestArrays.from_sklearn(iso).n_features_in == (
            ANOMALY_DIM if model.__dict__["pca"] is None else iso.n_features_in_
        )
        assert isinstance(model.__dict__["scaler"], StandardScaler)

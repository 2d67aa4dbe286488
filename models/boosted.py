"""XGBoost ``multi:softprob`` prediction on plain numpy arrays, without XGBoost's per-tree overhead.

The production booster has 3,150 rounds × 6 classes of depth-5 trees (18,900 trees) and a serving
call scores 1 to 10 rows. ``Booster.inplace_predict`` then costs ~25–35 ms whatever the row count:
per-tree overhead dominates, while the real work is five comparisons per tree and row (it was
~42 % of the inference thread). As :mod:`models.forest` does for IsolationForest,
:class:`BoostedTreesArrays` walks all ``(tree, row)`` pairs one depth level at a time with numpy
fancy indexing. Each tree of ``iteration_range(0, n_iterations)`` is laid out as a *perfect* binary
tree of the booster's depth ``D``, level by level, tree-major: node ``i`` of level ``l`` has its
children at ``2i`` and ``2i + 1`` of level ``l + 1``, so the walk needs no child lookup and reads
each level almost in order; a leaf above level ``D`` passes itself down to every slot below it.

The arithmetic is XGBoost 3.2's CPU predictor (margins bit-identical, probabilities to the last
bit or within 1 ulp; tests hold 1e-6):

* a node sends ``x`` left iff ``x < split_condition`` (float32); NaN goes the ``default_left``
  way; ±inf compare like any other value; a leaf's value is its ``split_conditions`` entry;
* the margin of class ``c`` starts at ``base_score`` (a margin for ``multi:softprob``: one per
  class in XGBoost ≥ 3, one scalar before) and adds class ``c``'s trees in tree order in float32;
* softmax as ``common::Softmax``: ``expf(x - max)`` (evaluated in float64 and rounded, as numpy's
  float32 ``exp`` is off by an ulp in ~1/3 of the outputs), summed in float64, divided in float32.

Only what :class:`models.tabular.TabularModel` trains is supported (gbtree, ``multi:softprob``,
one tree per class per round, scalar leaves, numerical splits, bounded padded size); anything else
raises ``ValueError`` at construction, so the caller keeps XGBoost. The model comes from a bundle
file, so it is bounds-checked first (indices in range, one parent per node, depth and sizes
bounded). It is read from ``save_raw("json")`` with orjson: the standard library's ``json.loads``
of the production booster's 71 MB JSON took 3.6 s, orjson ~1 s.

``bench/bench_boosted.py``, production-size bundle, 1 thread, median ms per call (2-core AMD EPYC
shared with another benchmark, so ±20 %); probabilities bit-identical (max |Δp| 0):

=====================================  =====  =====  =====  =====
batch                                    1      2      4     10
=====================================  =====  =====  =====  =====
``predict_proba`` (PCA + XGBoost)       24.8   34.1   32.2   38.7
``predict_proba`` (PCA + arrays)         2.0    6.2    7.0    9.6
booster step: ``inplace_predict``       27.8   27.9   29.2   33.1
booster step: arrays                    0.89   1.49   2.09   4.97
=====================================  =====  =====  =====  =====

Building the arrays (JSON export and parse, checks, layout, one probe against XGBoost) adds ~2.8 s
to loading the production bundle, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

__all__ = ["MAX_BOOSTED_DEPTH", "MAX_BOOSTED_NODES", "MAX_PADDED_NODES", "BoostedTreesArrays"]

# Bounds on what a loaded booster may be. The production booster has 18,900 trees of ≤ 63 nodes,
# 1.2M nodes padded.
MAX_BOOSTED_NODES = 1 << 26
MAX_BOOSTED_DEPTH = 32
MAX_PADDED_NODES = 1 << 23
MAX_FEATURES = 1 << 24
MAX_CLASSES = 1 << 10


def _param_int(params: Any, key: str, default: str | None = None) -> int:
    value = params.get(key, default) if isinstance(params, dict) else None
    try:
        return int(str(value))
    except ValueError:
        raise ValueError(f"booster parameter {key}={value!r} is not an integer") from None


def _flat(trees: list[Any], key: str, kinds: str) -> np.ndarray:
    parts = [np.asarray(tree.get(key, ()) if key == "split_type" else tree[key]).reshape(-1) for tree in trees]
    arr = np.concatenate(parts) if parts else np.zeros(0)
    if arr.size and arr.dtype.kind not in kinds:
        raise ValueError(f"booster {key} holds {arr.dtype} values")
    return arr


@dataclass(frozen=True, eq=False)
class BoostedTreesArrays:
    """The first ``n_iterations`` rounds of a ``multi:softprob`` gbtree as perfect-tree level arrays.

    Attributes:
        feature: per level ``l < D``, intp (n_trees · 2**l,) column tested (0 at padding).
        threshold: per level, float32 split condition (``x < threshold`` goes left); +inf at padding.
        default_right: per level, bool, True where a NaN goes right.
        leaf_value: float32 (n_trees · 2**D,) the value each path ends on. Trees are round-major
            (tree ``r * n_classes + c`` is class ``c`` of round ``r``).
        base_margin: float32 (n_classes,) initial margin of each class.
        n_trees, n_features: tree count and input width.
    """

    feature: tuple[np.ndarray, ...]
    threshold: tuple[np.ndarray, ...]
    default_right: tuple[np.ndarray, ...]
    leaf_value: np.ndarray
    base_margin: np.ndarray
    n_trees: int
    n_features: int

    @property
    def n_classes(self) -> int:
        return int(self.base_margin.shape[0])

    @property
    def n_iterations(self) -> int:
        return self.n_trees // self.n_classes

    @classmethod
    def from_booster(cls, booster: Any, n_iterations: int) -> BoostedTreesArrays:
        """Flatten ``booster`` (an ``xgboost.Booster``) for ``iteration_range=(0, n_iterations)``."""
        return cls.from_json(orjson.loads(booster.save_raw("json")), n_iterations)

    @classmethod
    def from_json(cls, model: Any, n_iterations: int) -> BoostedTreesArrays:
        """Flatten a parsed model (``save_raw`` JSON or UBJSON); ``ValueError`` if unsupported/malformed."""
        try:
            return cls._from_model(model, int(n_iterations))
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ValueError(f"booster model is malformed: {type(exc).__name__} {exc}") from None

    @classmethod
    def _from_model(cls, model: Any, n_iterations: int) -> BoostedTreesArrays:
        learner = model["learner"]
        objective = learner["objective"]["name"]
        gbm = learner["gradient_booster"]
        lparam = learner["learner_model_param"]
        if gbm.get("name") != "gbtree":
            raise ValueError(f"booster is {gbm.get('name')!r}, only 'gbtree' is supported")
        trees, tree_info = gbm["model"]["trees"], np.asarray(gbm["model"]["tree_info"])
        n_parallel = _param_int(gbm["model"]["gbtree_model_param"], "num_parallel_tree", "1")
        if objective != "multi:softprob":
            raise ValueError(f"booster objective is {objective!r}, only 'multi:softprob' is supported")
        n_classes, n_features = _param_int(lparam, "num_class"), _param_int(lparam, "num_feature")
        if _param_int(lparam, "num_target", "1") != 1 or n_parallel != 1:
            raise ValueError("booster has several targets or num_parallel_tree > 1; unsupported")
        if not 2 <= n_classes <= MAX_CLASSES or not 1 <= n_features <= MAX_FEATURES:
            raise ValueError(f"booster num_class={n_classes} / num_feature={n_features} out of bounds")
        n_trees = n_iterations * n_classes
        if not 1 <= n_trees <= len(trees) or len(tree_info) != len(trees):
            raise ValueError(f"n_iterations={n_iterations} outside the booster's {len(trees)} trees")
        trees = list(trees[:n_trees])
        if not np.array_equal(tree_info[:n_trees], np.arange(n_trees) % n_classes):
            raise ValueError("booster trees are not one tree per class per round (tree_info)")
        base = np.asarray(str(lparam.get("base_score", "0")).strip("[]").split(","), dtype=np.float32)
        base = np.repeat(base, n_classes) if base.size == 1 else base
        if base.shape != (n_classes,) or not np.all(np.isfinite(base)):
            raise ValueError(f"booster base_score {lparam.get('base_score')!r} is not {n_classes} finite values")

        keys = ("left_children", "right_children", "split_indices", "split_conditions", "default_left")
        sizes = np.asarray([len(tree["left_children"]) for tree in trees], dtype=np.int64)
        for key in keys[1:]:
            if not np.array_equal([len(tree[key]) for tree in trees], sizes):
                raise ValueError(f"booster tree {key} and left_children differ in length")
        if _flat(trees, "split_type", "iub").any() or any(len(t.get("categories_nodes", ())) for t in trees):
            raise ValueError("booster has categorical splits; only numerical ones are supported")
        if any(_param_int(t.get("tree_param", {}), "size_leaf_vector", "1") > 1 for t in trees):
            raise ValueError("booster has vector leaves; only scalar ones are supported")
        if sizes.min() < 1 or sizes.sum() > MAX_BOOSTED_NODES:
            raise ValueError(f"booster has an empty tree or more than {MAX_BOOSTED_NODES} nodes")
        left, right = _flat(trees, keys[0], "iu").astype(np.int64), _flat(trees, keys[1], "iu").astype(np.int64)
        feature, default_left = _flat(trees, keys[2], "iu").astype(np.int64), _flat(trees, keys[4], "iub")
        cond = _flat(trees, keys[3], "iuf").astype(np.float32)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        tree_of = np.repeat(np.arange(n_trees), sizes)
        leaf = left == -1
        if np.any(leaf != (right == -1)):
            raise ValueError("booster tree node has one child -1 and the other not")
        for name, child in (("left", left), ("right", right)):
            if np.any(~leaf & ((child < 0) | (child >= sizes[tree_of]))):
                raise ValueError(f"booster tree node has a {name} child outside its tree")
        if np.any(~leaf & ((feature < 0) | (feature >= n_features))) or np.any(~leaf & np.isnan(cond)):
            raise ValueError(f"booster tree node tests a feature outside [0, {n_features}) or against NaN")
        gleft, gright = left + offsets[tree_of], right + offsets[tree_of]

        # Level walk from every root: each node reached once (no cycle, no shared node), depth
        # bounded. XGBoost keeps pruned ("deleted") nodes in the arrays; they are never reached.
        visited = np.zeros(leaf.size, dtype=bool)
        frontier, depth = offsets, 0
        visited[frontier] = True
        while np.any(~leaf[frontier]):
            depth += 1
            if depth > MAX_BOOSTED_DEPTH or n_trees * ((2 << depth) - 1) > MAX_PADDED_NODES:
                raise ValueError(f"booster trees are too deep ({depth}+ levels for {n_trees} trees)")
            inner = frontier[~leaf[frontier]]
            frontier = np.concatenate([gleft[inner], gright[inner]])
            before = int(np.count_nonzero(visited))
            visited[frontier] = True
            if np.count_nonzero(visited) - before != frontier.size:
                raise ValueError("booster tree nodes do not form trees (a cycle or a node with two parents)")
        if not np.all(np.isfinite(cond[visited & leaf])):
            raise ValueError("booster tree has a non-finite leaf value")

        # Perfect layout: slot i of level l holds node[i]; a leaf passes itself down to both slots.
        node = offsets
        feats, thrs, rights = [], [], []
        for _ in range(depth):
            is_leaf = leaf[node]
            feats.append(np.where(is_leaf, 0, feature[node]).astype(np.intp))
            thrs.append(np.where(is_leaf, np.float32(np.inf), cond[node]).astype(np.float32))
            rights.append(~is_leaf & (default_left[node] == 0))
            node = np.stack([np.where(is_leaf, node, gleft[node]), np.where(is_leaf, node, gright[node])], 1).ravel()
        return cls(
            feature=tuple(feats),
            threshold=tuple(thrs),
            default_right=tuple(rights),
            leaf_value=cond[node].astype(np.float32),
            base_margin=base,
            n_trees=n_trees,
            n_features=n_features,
        )

    def predict_margin(self, X: npt.ArrayLike) -> np.ndarray:
        """Per-class margins (B, n_classes) float32, as ``predict(..., output_margin=True)``."""
        x = np.asarray(X, dtype=np.float32)
        x = x.reshape(1, -1) if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"booster expects (B, {self.n_features}) rows, got shape {np.shape(X)}")
        n_rows = x.shape[0]
        flat = np.ascontiguousarray(x).reshape(-1)
        has_nan = bool(np.isnan(flat).any())
        row_base = (np.arange(n_rows, dtype=np.intp) * self.n_features)[None, :]
        # In-place ops on preallocated (n_trees, n_rows) buffers. mode="clip" skips take's bounds
        # checks and output buffering: every index is in range by construction.
        node = np.repeat(np.arange(self.n_trees, dtype=np.intp)[:, None], n_rows, axis=1)
        col = np.empty_like(node)
        value = np.empty(node.shape, np.float32)
        thr = np.empty(node.shape, np.float32)
        went_right = np.empty(node.shape, bool)
        for feature, threshold, default_right in zip(self.feature, self.threshold, self.default_right, strict=True):
            np.take(feature, node, out=col, mode="clip")
            if n_rows > 1:
                col += row_base
            np.take(flat, col, out=value, mode="clip")
            np.take(threshold, node, out=thr, mode="clip")
            np.greater_equal(value, thr, out=went_right)  # False for NaN, as x < c is
            if has_nan:
                went_right |= np.isnan(value) & np.take(default_right, node, mode="clip")
            node <<= 1
            node += went_right
        # XGBoost starts from the base margin and adds the trees one by one in float32. numpy reduces
        # the outer (round) axis of a C-contiguous array row by row, i.e. in that same order (its
        # pairwise summation applies only along the contiguous axis); tests check the bits.
        acc = np.empty((self.n_iterations + 1, self.n_classes, n_rows), np.float32)
        acc[0] = self.base_margin[:, None]
        np.take(self.leaf_value, node, out=acc[1:].reshape(self.n_trees, n_rows), mode="clip")
        return np.ascontiguousarray(np.add.reduce(acc, axis=0).T)

    def predict_proba(self, X: npt.ArrayLike) -> np.ndarray:
        """Class probabilities (B, n_classes) float32, as ``inplace_predict`` for ``multi:softprob``."""
        margin = self.predict_margin(X)
        e = np.exp((margin - margin.max(axis=1, keepdims=True)).astype(np.float64)).astype(np.float32)
        total = np.add.accumulate(e.astype(np.float64), axis=1)[:, -1:]
        return np.asarray(e / total.astype(np.float32), dtype=np.float32)

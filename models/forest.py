"""IsolationForest scoring on plain numpy arrays, without scikit-learn's per-call overhead.

scikit-learn's ``IsolationForest.decision_function`` validates its input, chunks it, and then walks
each of the trees through a joblib ``Parallel`` call plus one Cython ``tree.apply`` per tree. For the
one to ten rows the bot scores per inference step that fixed overhead dominates (about 7 ms a call
for 50 trees here), while the real work is a few hundred comparisons.

:class:`IsolationForestArrays` flattens every tree into one set of node arrays (all trees
concatenated, global node indices) and walks all ``(tree, sample)`` pairs one depth level at a time
with numpy fancy indexing. Isolation trees are shallow (``ceil(log2(max_samples))`` = 8 levels for
``max_samples`` 256), so scoring is a handful of vector operations over ``n_trees × n_rows``
elements. The arithmetic after the walk is the one scikit-learn 1.9.1 does, in the same order, so
the scores agree to the last bit or very nearly (tests hold it to 1e-6):

* input cast to float32; a node sends ``x`` left iff ``x <= threshold`` (float32 promoted to float64)
  and a NaN left iff the node's ``missing_go_to_left`` flag is set;
* per-tree leaf value = ``node_depth + c(n_node_samples) - 1`` (``_decision_path_lengths`` and
  ``_average_path_length_per_tree``), accumulated tree by tree in float64;
* ``score = -2 ** (-depth_sum / (n_trees * c(max_samples))) - offset_``.

The arrays round-trip through :meth:`IsolationForestArrays.to_arrays` /
:meth:`IsolationForestArrays.from_arrays`, so a bundle never needs a pickle or scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_FOREST_NODES",
    "MAX_TREES",
    "MAX_TREE_DEPTH",
    "MAX_TREE_NODES",
    "IsolationForestArrays",
    "average_path_length",
    "check_tree_structure",
]

# Bounds on what an imported or loaded forest may be. An isolation tree over ``max_samples`` rows has
# at most ``2 * max_samples - 1`` nodes and depth ``ceil(log2(max_samples))`` (8 for the default
# 256), so these admit any forest fitted on up to ~500k samples per tree with a wide margin, while
# refusing a file that would make the loader allocate or walk without limit.
MAX_TREE_NODES = 1 << 20
MAX_TREE_DEPTH = 64
MAX_TREES = 10_000
MAX_FOREST_NODES = 1 << 24
MAX_FEATURES = 1 << 20
TREE_LEAF = -1  # scikit-learn's _tree.TREE_LEAF


def check_tree_structure(
    left: npt.ArrayLike,
    right: npt.ArrayLike,
    feature: npt.ArrayLike,
    threshold: npt.ArrayLike,
    n_features: int,
    n_node_samples: npt.ArrayLike | None = None,
    missing_left: npt.ArrayLike | None = None,
) -> np.ndarray:
    """Validate one scikit-learn tree given as raw node arrays; return its node depths (root = 1).

    Pure numpy: meant to run on a pickled ``Tree``'s state *before* any scikit-learn Cython code
    (``Tree.__setstate__``, ``compute_node_depths``, ``apply``) sees it, since those index with
    bounds checks off and a corrupt child or feature index writes or reads out of bounds.

    Checks, raising ``ValueError`` naming the problem: 1-D arrays of one length ``n`` in
    ``[1, MAX_TREE_NODES]``; a node is a leaf iff its left child is -1, and then its right child is
    -1 too; an internal node's children are distinct, in range and *after* it (scikit-learn appends
    children after their parent, which rules out cycles); every node but the root has exactly one
    parent (so the nodes form one tree); depth at most ``MAX_TREE_DEPTH``; internal nodes test a
    feature in ``[0, n_features)`` against a finite threshold; sample counts >= 1; the missing-value
    flags are 0/1.
    """
    cl = np.asarray(left)
    cr = np.asarray(right)
    ft = np.asarray(feature)
    th = np.asarray(threshold)
    n = int(cl.shape[0]) if cl.ndim == 1 else -1
    if n < 1 or n > MAX_TREE_NODES:
        raise ValueError(f"tree has {n if n >= 0 else 'non 1-D'} nodes, expected 1..{MAX_TREE_NODES}")
    for name, arr in (("right_child", cr), ("feature", ft), ("threshold", th)):
        if arr.shape != (n,):
            raise ValueError(f"tree {name} has shape {arr.shape}, expected ({n},)")
    for name, arr in (("left_child", cl), ("right_child", cr), ("feature", ft)):
        if arr.dtype.kind not in "iu":
            raise ValueError(f"tree {name} has dtype {arr.dtype}, expected integers")
    if th.dtype.kind != "f":
        raise ValueError(f"tree threshold has dtype {th.dtype}, expected floats")
    if not 1 <= int(n_features) <= MAX_FEATURES:
        raise ValueError(f"tree n_features {n_features} outside [1, {MAX_FEATURES}]")
    cl = cl.astype(np.int64)
    cr = cr.astype(np.int64)
    ft = ft.astype(np.int64)
    leaf = cl == TREE_LEAF
    if np.any(leaf != (cr == TREE_LEAF)):
        bad = int(np.flatnonzero(leaf != (cr == TREE_LEAF))[0])
        raise ValueError(f"tree node {bad} has one child marked leaf (-1) and the other not")
    internal = ~leaf
    idx = np.arange(n, dtype=np.int64)
    for name, child in (("left", cl), ("right", cr)):
        bad_mask = internal & ((child <= idx) | (child >= n))
        if np.any(bad_mask):
            bad = int(np.flatnonzero(bad_mask)[0])
            raise ValueError(
                f"tree node {bad} has {name} child {int(child[bad])}, expected an index in ({bad}, {n}) or -1"
            )
    if np.any(internal & (cl == cr)):
        raise ValueError(
            f"tree node {int(np.flatnonzero(internal & (cl == cr))[0])} has the same node as both children"
        )
    children = np.concatenate([cl[internal], cr[internal]])
    if children.size != n - 1 or np.unique(children).size != n - 1:
        raise ValueError("tree nodes do not form a single tree (a node has several parents or none)")
    bad_feature = internal & ((ft < 0) | (ft >= int(n_features)))
    if np.any(bad_feature):
        bad = int(np.flatnonzero(bad_feature)[0])
        raise ValueError(f"tree node {bad} tests feature {int(ft[bad])}, outside [0, {int(n_features)})")
    if not np.all(np.isfinite(th[internal])):
        raise ValueError(f"tree node {int(np.flatnonzero(internal & ~np.isfinite(th))[0])} has a non-finite threshold")
    if n_node_samples is not None:
        ns = np.asarray(n_node_samples)
        if ns.shape != (n,) or ns.dtype.kind not in "iu" or np.any(ns < 1):
            raise ValueError("tree n_node_samples must hold one count >= 1 per node")
    if missing_left is not None:
        ml = np.asarray(missing_left)
        if ml.shape != (n,) or ml.dtype.kind not in "iub" or np.any((ml != 0) & (ml != 1)):
            raise ValueError("tree missing_go_to_left must hold one 0/1 flag per node")
    # Children come after their parent and each node has one parent: a level walk from the root
    # visits every node exactly once, in at most MAX_TREE_DEPTH levels.
    depths = np.zeros(n, dtype=np.int64)
    frontier = np.zeros(1, dtype=np.int64)
    level = 1
    while frontier.size:
        if level > MAX_TREE_DEPTH + 1:
            raise ValueError(f"tree is deeper than {MAX_TREE_DEPTH} levels")
        depths[frontier] = level
        inner = frontier[internal[frontier]]
        frontier = np.concatenate([cl[inner], cr[inner]])
        level += 1
    if np.any(depths == 0):
        raise ValueError("tree has nodes unreachable from the root")
    return depths


_ARRAY_KEYS: tuple[str, ...] = (
    "feature",
    "threshold",
    "left",
    "right",
    "missing_left",
    "node_depth",
    "leaf_path_length",
    "roots",
    "estimators_features",
    "max_samples",
    "offset",
    "n_features_in",
)


def average_path_length(n_samples: npt.ArrayLike) -> np.ndarray:
    """``c(n)``: the average path length of an unsuccessful BST search among ``n`` points.

    Same formula and float64 arithmetic as scikit-learn's private ``_average_path_length``: 0 for
    n <= 1, 1 for n == 2, else ``2 (ln(n-1) + γ) - 2 (n-1)/n``. Needed to normalise depths and to
    rebuild per-leaf values for pickles whose forest lacks ``_average_path_length_per_tree``.
    """
    n = np.asarray(n_samples, dtype=np.float64)
    out = np.zeros(n.shape, dtype=np.float64)
    out[n == 2] = 1.0
    big = n > 2
    nb = n[big]
    out[big] = 2.0 * (np.log(nb - 1.0) + np.euler_gamma) - 2.0 * (nb - 1.0) / nb
    return out


def _bounded_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"IsolationForest {name} is {type(value).__name__}, expected an integer")
    if not low <= int(value) <= high:
        raise ValueError(f"IsolationForest {name} is {int(value)}, expected {low}..{high}")
    return int(value)


@dataclass(frozen=True, eq=False)
class IsolationForestArrays:
    """A fitted IsolationForest as flat numpy arrays over all trees concatenated.

    Node arrays have one entry per node of every tree (global index = tree root offset + local
    index). Leaves point to themselves on both sides, so walking a fixed number of levels is safe:
    a pair that reached its leaf early simply stays there.

    Attributes:
        feature: int64 (N,) column of the *scored matrix* tested at each node. When scikit-learn
            fitted each tree on a feature subset, the subset is already folded in here. 0 at leaves.
        threshold: float64 (N,) split threshold (``x <= threshold`` goes left). 0 at leaves.
        left, right: int64 (N,) global child indices; a leaf's children are itself.
        missing_left: uint8 (N,) 1 where a NaN goes left (scikit-learn's ``missing_go_to_left``).
        node_depth: int64 (N,) depth of each node, root = 1 (``Tree.compute_node_depths``).
        leaf_path_length: float64 (N,) ``c(n_node_samples)`` of each node.
        roots: int64 (n_trees,) global index of each tree's root.
        estimators_features: int64 (n_trees, n_sub) the per-tree feature subsets
            (``estimators_features_``), kept for provenance; ``feature`` already accounts for them.
        max_samples: the forest's ``_max_samples`` (the ``c(max_samples)`` normaliser).
        offset: ``offset_`` (-0.5 for ``contamination="auto"``).
        n_features_in: width of the matrix the forest scores.
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    node_depth: np.ndarray
    leaf_path_length: np.ndarray
    roots: np.ndarray
    estimators_features: np.ndarray
    max_samples: int
    offset: float
    n_features_in: int
    # Derived in __post_init__ (not part of the serialised form).
    _children: np.ndarray = field(init=False, repr=False)
    _leaf_value: np.ndarray = field(init=False, repr=False)
    _n_levels: int = field(init=False, repr=False)
    _denominator: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n_nodes = int(self.feature.shape[0])
        set_ = object.__setattr__
        set_(self, "feature", np.ascontiguousarray(self.feature, dtype=np.int64))
        set_(self, "threshold", np.ascontiguousarray(self.threshold, dtype=np.float64))
        set_(self, "left", np.ascontiguousarray(self.left, dtype=np.int64))
        set_(self, "right", np.ascontiguousarray(self.right, dtype=np.int64))
        set_(self, "missing_left", np.ascontiguousarray(self.missing_left, dtype=np.uint8))
        set_(self, "node_depth", np.ascontiguousarray(self.node_depth, dtype=np.int64))
        set_(self, "leaf_path_length", np.ascontiguousarray(self.leaf_path_length, dtype=np.float64))
        set_(self, "roots", np.ascontiguousarray(self.roots, dtype=np.int64))
        set_(self, "estimators_features", np.ascontiguousarray(self.estimators_features, dtype=np.int64))
        set_(self, "max_samples", int(self.max_samples))
        set_(self, "offset", float(self.offset))
        set_(self, "n_features_in", int(self.n_features_in))
        for name in ("threshold", "left", "right", "missing_left", "node_depth", "leaf_path_length"):
            arr = getattr(self, name)
            if arr.shape != (n_nodes,):
                raise ValueError(f"IsolationForestArrays.{name} has shape {arr.shape}, expected ({n_nodes},)")
        if self.roots.ndim != 1 or self.roots.size == 0:
            raise ValueError("IsolationForestArrays.roots must be a non-empty 1-D array")
        for name in ("left", "right", "roots"):
            arr = getattr(self, name)
            if arr.size and (arr.min() < 0 or arr.max() >= n_nodes):
                raise ValueError(f"IsolationForestArrays.{name} holds a node index outside [0, {n_nodes})")
        if n_nodes and (self.feature.min() < 0 or self.feature.max() >= self.n_features_in):
            raise ValueError(f"IsolationForestArrays.feature holds a column outside [0, {self.n_features_in})")
        is_leaf = (self.left == np.arange(n_nodes)) & (self.right == np.arange(n_nodes))
        # Interleave (left, right) so one gather picks the child: children[2*node + went_right].
        set_(self, "_children", np.stack([self.left, self.right], axis=1).reshape(-1))
        # Exactly scikit-learn's per-leaf term: decision_path_length + c(n) - 1.0 (float64).
        leaf_value = np.where(is_leaf, self.node_depth + self.leaf_path_length - 1.0, 0.0)
        set_(self, "_leaf_value", leaf_value)
        set_(self, "_n_levels", self._count_levels(is_leaf))
        denominator = float(len(self.roots) * average_path_length([self.max_samples])[0])
        set_(self, "_denominator", denominator)

    def _count_levels(self, is_leaf: np.ndarray) -> int:
        """Number of levels a walk needs until every root has reached a leaf (tree depth)."""
        frontier = self.roots.copy()
        levels = 0
        while not bool(is_leaf[frontier].all()):
            frontier = np.concatenate([self.left[frontier], self.right[frontier]])
            frontier = np.unique(frontier)
            levels += 1
            if levels > self.feature.shape[0]:
                raise ValueError("IsolationForestArrays node arrays contain a cycle")
        return levels

    @property
    def n_trees(self) -> int:
        """Number of trees in the forest."""
        return int(self.roots.shape[0])

    @classmethod
    def from_sklearn(cls, iso: Any) -> IsolationForestArrays:
        """Flatten a fitted ``sklearn.ensemble.IsolationForest``.

        Uses the forest's cached ``_decision_path_lengths`` / ``_average_path_length_per_tree`` when
        present (scikit-learn >= 1.4) and recomputes them from the trees otherwise, so pickles from
        older scikit-learn versions flatten to the same numbers. Features are subset per tree only
        when scikit-learn itself would subset (``_max_features != n_features_in_``): with
        ``max_features=1.0`` the trees were fitted on the full matrix and ``estimators_features_`` is
        an unused permutation.

        Every tree is validated with :func:`check_tree_structure` and its depths computed here, so
        no scikit-learn Cython method runs on the trees; raises ``ValueError`` on any inconsistency.
        """
        from sklearn.tree._tree import Tree

        estimators = list(iso.estimators_)
        if not estimators:
            raise ValueError("IsolationForest has no fitted trees")
        if len(estimators) > MAX_TREES:
            raise ValueError(f"IsolationForest has {len(estimators)} trees, more than {MAX_TREES}")
        n_features_in = _bounded_int(iso.n_features_in_, "n_features_in_", 1, MAX_FEATURES)
        max_features = _bounded_int(getattr(iso, "_max_features", n_features_in), "_max_features", 1, n_features_in)
        subsample = max_features != n_features_in
        features_list = [np.asarray(f) for f in iso.estimators_features_]
        if len(features_list) != len(estimators):
            raise ValueError(f"IsolationForest has {len(estimators)} trees but {len(features_list)} feature subsets")
        for t, f in enumerate(features_list):
            if f.ndim != 1 or f.dtype.kind not in "iu" or np.any(f < 0) or np.any(f >= n_features_in):
                raise ValueError(f"IsolationForest tree {t}: feature subset is not a list of columns < {n_features_in}")
        features_list = [f.astype(np.int64) for f in features_list]
        path_lengths = getattr(iso, "_decision_path_lengths", None)
        avg_lengths = getattr(iso, "_average_path_length_per_tree", None)
        for name, cached in (("_decision_path_lengths", path_lengths), ("_average_path_length_per_tree", avg_lengths)):
            if cached is not None and len(cached) != len(estimators):
                raise ValueError(f"IsolationForest {name} covers {len(cached)} trees, expected {len(estimators)}")

        feats, thrs, lefts, rights, miss, depths, apls, roots = [], [], [], [], [], [], [], []
        offset = 0
        for t, est in enumerate(estimators):
            tree = getattr(est, "tree_", None)
            if not isinstance(tree, Tree):
                raise ValueError(f"IsolationForest tree {t} is not a fitted scikit-learn tree")
            n = int(tree.node_count)
            if offset + n > MAX_FOREST_NODES:
                raise ValueError(f"IsolationForest has more than {MAX_FOREST_NODES} nodes")
            tree_features = max_features if subsample else n_features_in
            if int(tree.n_features) != tree_features or features_list[t].shape[0] < tree_features:
                raise ValueError(
                    f"IsolationForest tree {t} was fitted on {tree.n_features} features, expected {tree_features}"
                )
            cl = np.asarray(tree.children_left, dtype=np.int64)
            cr = np.asarray(tree.children_right, dtype=np.int64)
            mgl = getattr(tree, "missing_go_to_left", None)
            # The same checks the restricted unpickler applies to the raw state; repeated here for
            # trees from anywhere else. The depths replace scikit-learn's compute_node_depths.
            computed_depth = check_tree_structure(
                cl, cr, tree.feature, tree.threshold, tree_features, tree.n_node_samples, mgl
            )
            leaf = cl < 0
            local = np.arange(n, dtype=np.int64)
            f_local = np.where(leaf, 0, np.asarray(tree.feature, dtype=np.int64))
            f_global = features_list[t][f_local] if subsample else f_local
            feats.append(np.where(leaf, 0, f_global))
            thrs.append(np.where(leaf, 0.0, np.asarray(tree.threshold, dtype=np.float64)))
            lefts.append(np.where(leaf, local, cl) + offset)
            rights.append(np.where(leaf, local, cr) + offset)
            miss.append(np.zeros(n, np.uint8) if mgl is None else np.asarray(mgl, dtype=np.uint8))
            if path_lengths is not None and not np.array_equal(np.asarray(path_lengths[t]), computed_depth):
                raise ValueError(f"IsolationForest tree {t}: cached node depths disagree with the tree")
            depths.append(computed_depth)
            apl = avg_lengths[t] if avg_lengths is not None else average_path_length(tree.n_node_samples)
            apl = np.asarray(apl, dtype=np.float64)
            if apl.shape != (n,) or not np.all(np.isfinite(apl)):
                raise ValueError(f"IsolationForest tree {t}: cached average path lengths are not {n} finite values")
            apls.append(apl)
            roots.append(offset)
            offset += n

        max_samples = _bounded_int(getattr(iso, "_max_samples", iso.max_samples_), "max_samples", 1, 1 << 40)
        if not np.isfinite(float(iso.offset_)):
            raise ValueError("IsolationForest offset_ is not finite")
        return cls(
            feature=np.concatenate(feats),
            threshold=np.concatenate(thrs),
            left=np.concatenate(lefts),
            right=np.concatenate(rights),
            missing_left=np.concatenate(miss),
            node_depth=np.concatenate(depths),
            leaf_path_length=np.concatenate(apls),
            roots=np.asarray(roots, dtype=np.int64),
            estimators_features=np.stack(features_list),
            max_samples=max_samples,
            offset=float(iso.offset_),
            n_features_in=n_features_in,
        )

    def _leaf_values(self, X: np.ndarray) -> np.ndarray:
        """Walk every (tree, row) pair to its leaf; return the (n_trees, n_rows) leaf values."""
        n_rows, width = X.shape
        flat = X.reshape(-1)
        row_base = (np.arange(n_rows, dtype=np.int64) * width)[None, :]
        node = np.repeat(self.roots[:, None], n_rows, axis=1)
        has_nan = bool(np.isnan(flat).any())
        for _ in range(self._n_levels):
            x = np.take(flat, row_base + np.take(self.feature, node))
            went_right = ~(x <= np.take(self.threshold, node))
            if has_nan:
                went_right &= ~(np.isnan(x) & (np.take(self.missing_left, node) == 1))
            node = np.take(self._children, 2 * node + went_right)
        return np.take(self._leaf_value, node)

    def score_samples(self, X: npt.ArrayLike) -> np.ndarray:
        """scikit-learn's ``score_samples``: the opposite of the anomaly score, (B,) float64."""
        Xf = self._validate(X)
        if Xf.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        # Accumulate tree by tree, exactly like scikit-learn's ``depths += ...`` loop, so the float64
        # sum is bit-identical. (``np.add.reduce`` could switch to pairwise summation when the tree
        # axis happens to be contiguous, e.g. for a single row, and differ in the last bit.)
        depths = np.add.accumulate(self._leaf_values(Xf), axis=0)[-1]
        # scikit-learn's guard: a forest fitted on one sample has a zero normaliser; its score is 1.
        ratio = np.divide(depths, self._denominator) if self._denominator != 0 else np.ones_like(depths)
        return -(2 ** (-ratio))

    def decision_function(self, X: npt.ArrayLike) -> np.ndarray:
        """scikit-learn's ``decision_function`` (higher = more normal), (B,) float64.

        ``X`` is (B, n_features_in) or a single row (n_features_in,); it is cast to float32 first,
        as scikit-learn does.
        """
        return self.score_samples(X) - self.offset

    def _validate(self, X: npt.ArrayLike) -> np.ndarray:
        Xf = np.asarray(X, dtype=np.float32)
        if Xf.ndim == 1:
            Xf = Xf.reshape(1, -1)
        if Xf.ndim != 2 or Xf.shape[1] != self.n_features_in:
            raise ValueError(f"IsolationForest expects (B, {self.n_features_in}) rows, got shape {np.shape(X)}")
        return np.ascontiguousarray(Xf)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """All state as named numpy arrays (scalars as 1-element arrays), e.g. for safetensors."""
        return {
            "feature": self.feature,
            "threshold": self.threshold,
            "left": self.left,
            "right": self.right,
            "missing_left": self.missing_left,
            "node_depth": self.node_depth,
            "leaf_path_length": self.leaf_path_length,
            "roots": self.roots,
            "estimators_features": self.estimators_features,
            "max_samples": np.asarray([self.max_samples], dtype=np.int64),
            "offset": np.asarray([self.offset], dtype=np.float64),
            "n_features_in": np.asarray([self.n_features_in], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> IsolationForestArrays:
        """Inverse of :meth:`to_arrays`; validates the structure (indices in range, no cycles)."""
        missing = [k for k in _ARRAY_KEYS if k not in arrays]
        if missing:
            raise KeyError(f"IsolationForestArrays.from_arrays: missing arrays {missing}")
        return cls(
            feature=np.asarray(arrays["feature"]),
            threshold=np.asarray(arrays["threshold"]),
            left=np.asarray(arrays["left"]),
            right=np.asarray(arrays["right"]),
            missing_left=np.asarray(arrays["missing_left"]),
            node_depth=np.asarray(arrays["node_depth"]),
            leaf_path_length=np.asarray(arrays["leaf_path_length"]),
            roots=np.asarray(arrays["roots"]),
            estimators_features=np.asarray(arrays["estimators_features"]),
            max_samples=int(np.asarray(arrays["max_samples"]).reshape(-1)[0]),
            offset=float(np.asarray(arrays["offset"]).reshape(-1)[0]),
            n_features_in=int(np.asarray(arrays["n_features_in"]).reshape(-1)[0]),
        )

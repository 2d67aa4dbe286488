"""Actor-disjoint train/val/test splits, and the dataset checks that run before any training.

A model evaluated on a speaker it was trained on measures memory of that face and voice, not
emotion recognition, so no actor may appear in two splits. As in the original (docs/training.md, "Inputs and
labels"), each
corpus is split on its own (70/15/15 of its actors, seeded): the corpora differ in recording
set-up, and splitting them separately keeps both represented in every split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

from models.constants import CLASS_NAMES

TRAIN: Final[int] = 0
VAL: Final[int] = 1
TEST: Final[int] = 2
SPLIT_NAMES: Final[tuple[str, ...]] = ("train", "val", "test")


class DatasetError(ValueError):
    """The data cannot be trained on as it is; raised before any training starts."""


def split_counts(n_actors: int, ratios: Sequence[float], min_actors: int) -> tuple[int, int, int]:
    """Actors per split for one corpus: val and test get round(ratio·n), at least ``min_actors``."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {list(ratios)}")
    n_val = max(min_actors, round(ratios[1] * n_actors))
    n_test = max(min_actors, round(ratios[2] * n_actors))
    return n_actors - n_val - n_test, n_val, n_test


def actor_disjoint_splits(
    actors: Sequence[str],
    corpora: Sequence[str],
    seed: int,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    min_actors: int = 1,
) -> np.ndarray:
    """Split code per sample (0 train, 1 val, 2 test), every actor of a corpus in exactly one split.

    Actors are shuffled per corpus with one generator seeded by ``seed``, corpora in sorted order,
    so the same inputs and seed always give the same split. Raises :class:`DatasetError` when a
    corpus has too few actors to give every split ``min_actors``.
    """
    if len(actors) != len(corpora):
        raise ValueError("actors and corpora must have the same length")
    actor_arr = np.asarray(actors, dtype=str)
    corpus_arr = np.asarray(corpora, dtype=str)
    split = np.full(len(actor_arr), -1, dtype=np.int8)
    rng = np.random.default_rng(seed)
    for corpus in sorted(set(corpus_arr.tolist())):
        in_corpus = corpus_arr == corpus
        names = sorted(set(actor_arr[in_corpus].tolist()))
        n_train, n_val, _ = split_counts(len(names), ratios, min_actors)
        if n_train < min_actors:
            raise DatasetError(
                f"corpus {corpus!r} has {len(names)} actor(s) ({', '.join(names[:6])}); an actor-disjoint "
                f"{'/'.join(str(round(r * 100)) for r in ratios)} split needs at least {3 * min_actors} "
                f"so that train, val and test each get {min_actors} — add speakers or merge the corpus "
                f"into another one in the manifest"
            )
        order = [names[i] for i in rng.permutation(len(names))]
        assignment = {a: TRAIN for a in order[:n_train]}
        assignment.update({a: VAL for a in order[n_train : n_train + n_val]})
        assignment.update({a: TEST for a in order[n_train + n_val :]})
        for i in np.flatnonzero(in_corpus):
            split[i] = assignment[str(actor_arr[i])]
    return split


def check_actor_disjoint(actors: Sequence[str], corpora: Sequence[str], split: np.ndarray) -> None:
    """Raise :class:`DatasetError` if any (corpus, actor) occurs in more than one split."""
    seen: dict[tuple[str, str], int] = {}
    for actor, corpus, s in zip(actors, corpora, np.asarray(split).tolist(), strict=True):
        key = (str(corpus), str(actor))
        if seen.setdefault(key, int(s)) != int(s):
            raise DatasetError(f"actor {actor!r} of corpus {corpus!r} appears in more than one split")


def check_trainable(labels: np.ndarray, split: np.ndarray, actors: Sequence[str], corpora: Sequence[str]) -> list[str]:
    """Everything that would make training meaningless, as one clear error; returns warnings.

    Errors: an empty split, a split without actors, a class with no training sample, actors shared
    between splits. Warnings: a class missing from val or test (its recall cannot be measured).
    """
    labels = np.asarray(labels)
    split = np.asarray(split)
    problems: list[str] = []
    warnings: list[str] = []
    for code, name in enumerate(SPLIT_NAMES):
        if not np.any(split == code):
            problems.append(f"the {name} split is empty")
    train_counts = np.bincount(labels[split == TRAIN], minlength=len(CLASS_NAMES))
    for idx, name in enumerate(CLASS_NAMES):
        if train_counts[idx] == 0:
            total = int(np.sum(labels == idx))
            problems.append(f"class {name!r} has no training samples ({total} in the whole dataset)")
    for code, name in ((VAL, "val"), (TEST, "test")):
        counts = np.bincount(labels[split == code], minlength=len(CLASS_NAMES))
        missing = [CLASS_NAMES[i] for i in range(len(CLASS_NAMES)) if counts[i] == 0]
        if missing and np.any(split == code):
            warnings.append(f"classes {missing} are missing from the {name} split")
    try:
        check_actor_disjoint(actors, corpora, split)
    except DatasetError as exc:
        problems.append(str(exc))
    if problems:
        counts_text = ", ".join(f"{n}={int(c)}" for n, c in zip(CLASS_NAMES, train_counts, strict=True))
        raise DatasetError(
            "the dataset cannot be trained on: " + "; ".join(problems) + f" (train class counts: {counts_text})"
        )
    return warnings

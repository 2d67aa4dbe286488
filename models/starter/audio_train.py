"""Train the starter audio head on RAVDESS speech, computing every input the way the live bot does.

The live bot, every 0.3 s step, takes the participant's newest ``WINDOW_S`` of audio, asks Silero
VAD whether it holds speech (:class:`models.vad.SpeechDetector`, max chunk probability ≥ 0.5),
embeds a speech window with :class:`LogMelStatsExtractor`, feeds the vector to the participant's
running normaliser (:class:`models.starter.norm.StarterNormaliser`) and appends it to a rolling
sequence of the last 10 vectors (:class:`models.sequence.RollingSequence`, front-padded, masked);
the head pools the normalised sequence. Training replays exactly that per RAVDESS file:

* windows end every ``HOP_S`` from ``WINDOW_S`` on (a full window; the bot never embeds a shorter
  one), gated by the same VAD rule, embedded by the same extractor;
* each actor is one participant: their files come in a seeded random order (``seed``, actor), every
  speech window updates the actor's normaliser, and the sequence after each window is normalised
  with the statistics as they stand at that moment (what the live bot would hold at that step). The
  rolling sequence restarts with every file (one utterance, one label);
* evaluation (validation and test actors) uses one sequence per file: the one the bot holds right
  after the file's last speech window (up to the last 10 windows), so every file counts once;
* training uses every sequence that has at least ``MIN_TRAIN_STEPS`` valid windows (and the last
  sequence of a file with fewer): the one- and two-window prefixes of an utterance say little and
  only add noise to the fit; live, the head still answers them. Each training actor is replayed in
  ``TRAIN_ORDERS`` seeded file orders (each sequence weighted 1/``TRAIN_ORDERS``), so the head sees
  the normaliser in many states (early, uncertain statistics as well as settled ones); evaluation
  replays each held-out actor once, in the order of ``(seed, actor, 0)``.

Split, hyper-parameter selection, the comparison figures and determinism: docs/starter.md,
"Training the audio head".
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from models.constants import NUM_CLASSES, SAMPLE_RATE, SEQ_LEN
from models.sequence import RollingSequence
from models.starter import audio_features as af
from models.starter.audio_head import AudioHead, pool_sequence
from models.starter.norm import StarterNormaliser
from models.starter.ravdess import RavdessFile, read_audio, scan_ravdess
from models.vad import SpeechDetector

log = logging.getLogger(__name__)

HOP_S: Final[float] = 0.3  # the bot's step (engine result interval)
VAD_THRESHOLD: Final[float] = 0.5  # the bot's engine.vad_threshold default
MIN_TRAIN_STEPS: Final[int] = 3
# Each training actor is replayed in this many file orders (each sequence weighted 1/TRAIN_ORDERS).
TRAIN_ORDERS: Final[int] = 4
C_GRID: Final[tuple[float, ...]] = (0.003, 0.01, 0.03)
PRIOR_COUNT_GRID: Final[tuple[float, ...]] = (5.0, 10.0, 20.0)
MAX_ITER: Final[int] = 5000
_MISSING_CLASS_BIAS: Final[float] = -30.0

NormMode = Literal["running", "whole", "none"]


@dataclass(frozen=True)
class FileFeatures:
    """One RAVDESS file's speech-window feature vectors, in time order."""

    file: RavdessFile
    name: str  # path relative to the scanned folder
    windows: int  # full windows in the file (speech or not)
    feats: np.ndarray  # (n_speech, D) float32


@dataclass
class SequenceSet:
    """Pooled sequences with their labels; ``last`` marks each file's final sequence."""

    pooled: np.ndarray
    labels: np.ndarray
    steps: np.ndarray  # valid windows in the sequence
    last: np.ndarray  # bool
    actors: np.ndarray

    def train_rows(self, min_steps: int) -> np.ndarray:
        return (self.steps >= min_steps) | self.last


@dataclass
class AudioTrainResult:
    head: AudioHead
    prior_mean: np.ndarray
    prior_std: np.ndarray
    prior_count: float
    window_s: float
    window_samples: int
    hop_s: float
    feature_version: str
    extractor_name: str
    extractor_version: int
    feature_dim: int
    c: float
    val_logits: np.ndarray  # (n_val_files, 6) from the train-actors-only model
    val_labels: np.ndarray
    val_balanced_accuracy: float
    test_logits: np.ndarray  # (n_test_files, 6) from the shipped head
    test_labels: np.ndarray
    test_balanced_accuracy: float
    test_confusion: np.ndarray  # (6, 6) rows true, columns predicted
    test_balanced_accuracy_train_only: float
    test_balanced_accuracy_whole_norm: float
    test_balanced_accuracy_no_norm: float
    train_pooled: np.ndarray  # pooled training sequences of the shipped head's fit
    train_actors: tuple[int, ...]
    val_actors: tuple[int, ...]
    test_actors: tuple[int, ...]
    files_used: int
    windows_total: int
    windows_speech: int
    skipped: list[tuple[str, str]]
    listing_sha256: str
    selection: list[dict[str, float]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def window_ends(n_samples: int, window_samples: int, hop_samples: int) -> list[int]:
    """End sample of every full window the bot would take from an utterance of ``n_samples``."""
    return list(range(window_samples, n_samples + 1, hop_samples))


def extract_files(
    root: Path,
    files: Sequence[RavdessFile],
    extractor: af.LogMelStatsExtractor,
    detector: SpeechDetector,
    hop_samples: int,
) -> tuple[list[FileFeatures], list[tuple[str, str]]]:
    """Decode, window, VAD-gate and embed every file; unusable files are reported, not raised."""
    out: list[FileFeatures] = []
    skipped: list[tuple[str, str]] = []
    ws = extractor.window_samples
    for f in files:
        name = str(f.path.relative_to(root))
        try:
            signal = read_audio(f.path)
        except ValueError as exc:
            skipped.append((name, str(exc)))
            continue
        ends = window_ends(signal.shape[0], ws, hop_samples)
        if not ends:
            skipped.append((name, f"shorter than one {af.WINDOW_S} s window ({signal.shape[0]} samples)"))
            continue
        windows = [signal[e - ws : e] for e in ends]
        speech, _ = detector.is_speech(windows)
        kept = [w for w, s in zip(windows, speech, strict=True) if s]
        if not kept:
            skipped.append((name, "no window passed the VAD"))
            continue
        out.append(FileFeatures(f, name, len(windows), extractor.embed(kept)))
    return out, skipped


def prior_stats(files: Sequence[FileFeatures]) -> tuple[np.ndarray, np.ndarray]:
    """Global mean and std (float32) of the window features of ``files``."""
    x = np.concatenate([f.feats for f in files]).astype(np.float64)
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


def actor_sequences(
    files: Sequence[FileFeatures],
    prior_mean: np.ndarray,
    prior_std: np.ndarray,
    prior_count: float,
    mode: NormMode,
    seed: int,
    order: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[int], list[bool]]:
    """One actor's normalised sequences as the live bot would build them (see the module doc).

    Returns ``(xa (N,10,D), am (N,10), file index per sequence, is-last per sequence)``.
    """
    actor = files[0].file.actor
    dim = files[0].feats.shape[1]
    perm = np.random.default_rng([seed, actor, order]).permutation(len(files))
    norm = StarterNormaliser(prior_mean, prior_std, prior_count, face_dim=1)
    if mode == "whole":
        norm = StarterNormaliser(prior_mean, prior_std, 0.0, face_dim=1)
        for f in files:
            for vec in f.feats:
                norm.observe_audio(vec)
    xs: list[np.ndarray] = []
    ms: list[np.ndarray] = []
    which: list[int] = []
    last: list[bool] = []
    for j in perm:
        f = files[int(j)]
        seq = RollingSequence(dim, SEQ_LEN)
        for k, vec in enumerate(f.feats):
            if mode == "running":
                norm.observe_audio(vec)
            seq.append(vec, k * HOP_S)
            x, m = seq.assemble()
            xs.append(norm.normalise_audio(x, m))
            ms.append(m)
            which.append(int(j))
            last.append(k == f.feats.shape[0] - 1)
    return np.stack(xs), np.stack(ms), which, last


def build_sequences(
    files: Sequence[FileFeatures],
    prior_mean: np.ndarray,
    prior_std: np.ndarray,
    prior_count: float,
    mode: NormMode,
    seed: int,
    orders: int = 1,
) -> SequenceSet:
    """All actors' sequences; ``orders`` > 1 replays each actor that many times in different file orders."""
    by_actor: dict[int, list[FileFeatures]] = {}
    for f in files:
        by_actor.setdefault(f.file.actor, []).append(f)
    pooled: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    lasts: list[np.ndarray] = []
    actors: list[np.ndarray] = []
    for actor, order in ((a, r) for a in sorted(by_actor) for r in range(orders)):
        group = by_actor[actor]
        xa, am, which, last = actor_sequences(group, prior_mean, prior_std, prior_count, mode, seed, order)
        pooled.append(pool_sequence(xa, am))
        labels.append(np.asarray([group[j].file.label for j in which], dtype=np.int64))
        steps.append(am.sum(axis=1).astype(np.int64))
        lasts.append(np.asarray(last, dtype=bool))
        actors.append(np.full(len(which), actor, dtype=np.int64))
    return SequenceSet(
        np.concatenate(pooled),
        np.concatenate(labels),
        np.concatenate(steps),
        np.concatenate(lasts),
        np.concatenate(actors),
    )


def fit_head(pooled: np.ndarray, labels: np.ndarray, c: float, sample_weight: float = 1.0) -> AudioHead:
    """Standardiser + class-balanced multinomial logistic regression (sklearn, training time only)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(pooled, dtype=np.float64)
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 1e-6, scaler.scale_, 1.0)
    z = (x - scaler.mean_) / scale
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=MAX_ITER, tol=1e-6)
    clf.fit(z, labels, sample_weight=np.full(len(labels), sample_weight))
    weight = np.zeros((x.shape[1], NUM_CLASSES), dtype=np.float64)
    bias = np.full(NUM_CLASSES, _MISSING_CLASS_BIAS, dtype=np.float64)
    classes = [int(k) for k in clf.classes_]
    if len(classes) == 2:  # sklearn's binary case: one coefficient row for class 1 vs class 0
        weight[:, classes[1]], bias[classes[1]] = clf.coef_[0], clf.intercept_[0]
        bias[classes[0]] = 0.0
    else:
        for row, k in enumerate(classes):
            weight[:, k], bias[k] = clf.coef_[row], clf.intercept_[row]
    return AudioHead(scaler.mean_, scale, weight, bias)


def balanced_accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``labels`` (scikit-learn's definition)."""
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(labels, pred)) if len(labels) else 0.0


def confusion(labels: np.ndarray, pred: np.ndarray) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, pred, labels=np.arange(NUM_CLASSES)).astype(np.int64)


def listing_digest(root: Path, files: Sequence[FileFeatures]) -> str:
    """sha256 over the used files' relative names, labels and content hashes."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.name):
        h.update(f"{f.name}\t{f.file.label}\t{hashlib.sha256(f.file.path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _evaluate(head: AudioHead, seqs: SequenceSet) -> tuple[np.ndarray, np.ndarray, float]:
    pooled, labels = seqs.pooled[seqs.last], seqs.labels[seqs.last]
    logits = head.logits(pooled)
    return logits, labels, balanced_accuracy(labels, logits.argmax(axis=1))


def _fit_and_test(
    fit_files: Sequence[FileFeatures],
    test_files: Sequence[FileFeatures],
    prior_count: float,
    c: float,
    mode: NormMode,
    seed: int,
    orders: int,
) -> tuple[AudioHead, np.ndarray, np.ndarray, SequenceSet, SequenceSet, float]:
    pm, ps = prior_stats(fit_files)
    train = build_sequences(fit_files, pm, ps, prior_count, mode, seed, orders)
    rows = train.train_rows(MIN_TRAIN_STEPS)
    head = fit_head(train.pooled[rows], train.labels[rows], c, 1.0 / orders)
    test = build_sequences(test_files, pm, ps, prior_count, mode, seed)
    _, _, bacc = _evaluate(head, test)
    return head, pm, ps, train, test, bacc


def train_audio(
    ravdess_dir: str | Path,
    *,
    seed: int,
    test_actors: Sequence[int],
    val_actors: Sequence[int],
    c_grid: Sequence[float] = C_GRID,
    prior_count_grid: Sequence[float] = PRIOR_COUNT_GRID,
    orders: int = TRAIN_ORDERS,
    detector: SpeechDetector | None = None,
) -> AudioTrainResult:
    """Train and evaluate the starter audio head (see the module doc for the protocol)."""
    import torch
    from threadpoolctl import threadpool_limits

    root = Path(ravdess_dir)
    test_set, val_set = {int(a) for a in test_actors}, {int(a) for a in val_actors}
    if test_set & val_set:
        raise ValueError(f"test actors {sorted(test_set)} and validation actors {sorted(val_set)} overlap")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    scan = scan_ravdess(root)
    skipped = list(scan.skipped)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            det = detector if detector is not None else SpeechDetector(VAD_THRESHOLD)
            extractor = af.LogMelStatsExtractor()
            feats, bad = extract_files(root, scan.files, extractor, det, round(HOP_S * SAMPLE_RATE))
            skipped.extend(bad)
            seconds["extract"] = time.perf_counter() - t0
            result = train_on_features(
                root,
                feats,
                seed=seed,
                test_actors=sorted(test_set),
                val_actors=sorted(val_set),
                skipped=skipped,
                c_grid=c_grid,
                prior_count_grid=prior_count_grid,
                orders=orders,
                seconds=seconds,
            )
    finally:
        torch.set_num_threads(threads)
    seconds["total"] = time.perf_counter() - t0
    return result


def train_on_features(
    root: Path,
    feats: Sequence[FileFeatures],
    *,
    seed: int,
    test_actors: Sequence[int],
    val_actors: Sequence[int],
    skipped: Sequence[tuple[str, str]] = (),
    c_grid: Sequence[float] = C_GRID,
    prior_count_grid: Sequence[float] = PRIOR_COUNT_GRID,
    orders: int = TRAIN_ORDERS,
    seconds: dict[str, float] | None = None,
) -> AudioTrainResult:
    """Everything after extraction: selection, refit, evaluation (deterministic for given features)."""
    seconds = {} if seconds is None else seconds
    test_set, val_set = {int(a) for a in test_actors}, {int(a) for a in val_actors}
    t1 = time.perf_counter()
    actors = sorted({f.file.actor for f in feats})
    train_actors = tuple(a for a in actors if a not in test_set and a not in val_set)
    missing = [
        name for name, group in (("train", train_actors), ("validation", val_set), ("test", test_set)) if not group
    ]
    if missing or not (val_set & set(actors)) or not (test_set & set(actors)):
        raise ValueError(f"no usable files for some split (actors found: {actors}); check {missing or 'the actor ids'}")
    train_files = [f for f in feats if f.file.actor in train_actors]
    val_files = [f for f in feats if f.file.actor in val_set]
    test_files = [f for f in feats if f.file.actor in test_set]

    # 1. hyper-parameters on the validation actors (fit on training actors only).
    selection: list[dict[str, float]] = []
    best: tuple[float, float, float] | None = None  # (bacc, -count, -c) maximised
    chosen: tuple[float, float] = (float(c_grid[0]), float(prior_count_grid[0]))
    pm, ps = prior_stats(train_files)
    for count in prior_count_grid:
        train = build_sequences(train_files, pm, ps, count, "running", seed, orders)
        val = build_sequences(val_files, pm, ps, count, "running", seed)
        rows = train.train_rows(MIN_TRAIN_STEPS)
        for c in c_grid:
            head = fit_head(train.pooled[rows], train.labels[rows], c, 1.0 / orders)
            _, _, bacc = _evaluate(head, val)
            selection.append({"c": float(c), "prior_count": float(count), "val_balanced_accuracy": round(bacc, 4)})
            key = (round(bacc, 6), -float(count), -float(c))
            if best is None or key > best:
                best, chosen = key, (float(c), float(count))
    c, count = chosen
    log.info("audio head: chose C=%s prior_count=%s on validation actors %s", c, count, sorted(val_set))

    # 2. the train-only model's validation logits (for the temperature) and test score (for the record).
    head_tr, _, _, _, val_seqs, val_bacc = _fit_and_test(train_files, val_files, count, c, "running", seed, orders)
    val_logits, val_labels, _ = _evaluate(head_tr, val_seqs)
    test_seqs_tr = build_sequences(test_files, pm, ps, count, "running", seed)
    _, _, test_bacc_train_only = _evaluate(head_tr, test_seqs_tr)
    seconds["select"] = time.perf_counter() - t1

    # 3. the shipped head: refit on training + validation actors; test actors only evaluated.
    t2 = time.perf_counter()
    fit_files = train_files + val_files
    head, prior_mean, prior_std, fit_seqs, test_seqs, test_bacc = _fit_and_test(
        fit_files, test_files, count, c, "running", seed, orders
    )
    test_logits, test_labels, _ = _evaluate(head, test_seqs)
    test_cm = confusion(test_labels, test_logits.argmax(axis=1))
    rows = fit_seqs.train_rows(MIN_TRAIN_STEPS)
    train_pooled = fit_seqs.pooled[rows]

    # 4. comparisons: the same recipe with whole-actor statistics, and without speaker normalisation.
    whole = _fit_and_test(fit_files, test_files, 0.0, c, "whole", seed, orders)[-1]
    none = _fit_and_test(fit_files, test_files, count, c, "none", seed, orders)[-1]
    seconds["fit"] = time.perf_counter() - t2

    return AudioTrainResult(
        head=head,
        prior_mean=prior_mean,
        prior_std=prior_std,
        prior_count=count,
        window_s=af.WINDOW_S,
        window_samples=af.WINDOW_SAMPLES,
        hop_s=HOP_S,
        feature_version=af.FEATURE_VERSION,
        extractor_name=af.EXTRACTOR_NAME,
        extractor_version=af.EXTRACTOR_VERSION,
        feature_dim=af.FEATURE_DIM,
        c=c,
        val_logits=val_logits,
        val_labels=val_labels,
        val_balanced_accuracy=val_bacc,
        test_logits=test_logits,
        test_labels=test_labels,
        test_balanced_accuracy=test_bacc,
        test_confusion=test_cm,
        test_balanced_accuracy_train_only=test_bacc_train_only,
        test_balanced_accuracy_whole_norm=whole,
        test_balanced_accuracy_no_norm=none,
        train_pooled=train_pooled,
        train_actors=train_actors,
        val_actors=tuple(sorted(val_set)),
        test_actors=tuple(sorted(test_set)),
        files_used=len(feats),
        windows_total=sum(f.windows for f in feats),
        windows_speech=sum(int(f.feats.shape[0]) for f in feats),
        skipped=sorted(skipped),
        listing_sha256=listing_digest(root, feats),
        selection=selection,
        seconds=seconds,
    )


def summary(result: AudioTrainResult) -> dict[str, Any]:
    """The figures worth printing or logging (no arrays)."""
    return {
        "window_s": result.window_s,
        "feature_version": result.feature_version,
        "feature_dim": result.feature_dim,
        "c": result.c,
        "prior_count": result.prior_count,
        "train_actors": list(result.train_actors),
        "val_actors": list(result.val_actors),
        "test_actors": list(result.test_actors),
        "val_balanced_accuracy": round(result.val_balanced_accuracy, 4),
        "test_balanced_accuracy": round(result.test_balanced_accuracy, 4),
        "test_balanced_accuracy_train_only": round(result.test_balanced_accuracy_train_only, 4),
        "test_balanced_accuracy_whole_norm": round(result.test_balanced_accuracy_whole_norm, 4),
        "test_balanced_accuracy_no_norm": round(result.test_balanced_accuracy_no_norm, 4),
        "test_confusion": result.test_confusion.tolist(),
        "test_files": len(result.test_labels),
        "files_used": result.files_used,
        "windows": f"{result.windows_speech}/{result.windows_total} speech",
        "skipped": len(result.skipped),
        "selection": result.selection,
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
    }

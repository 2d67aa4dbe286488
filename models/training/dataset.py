"""The feature dataset: raw per-clip sequences, masks, labels, actors, splits and train norm stats.

On disk a dataset is a folder with two files and no pickles:

* ``dataset.npz`` — arrays ``face`` (N,10,326) and ``audio`` (N,10,1024) raw float32 embeddings,
  ``face_mask``/``audio_mask`` (N,10) float32 0/1, ``label`` int64, ``profile`` int8 (the
  structural modality flag, docs/training.md, "Inputs and labels": 0 audio_only, 1 video_only, 2 both), ``split``
  int8 (0 train,
  1 val, 2 test), ``actor``/``corpus``/``clip_id`` unicode strings, and the norm stats
  ``norm.face_mean`` … ``norm.audio_std``;
* ``dataset.json`` — format and version, the content hash, counts, the actors of each split, the
  split seed and ratios, the extraction settings, and every skipped or dropped file with its reason.

Features are stored raw and normalised on use with :class:`models.sequence.NormStats`, the very
code the live bot normalises with. The norm stats are computed on the train split's valid frames
only (std + 1e-6, docs/training.md, "Dataset file"), so nothing about val or test leaks into the inputs.

The content hash is a sha256 over the arrays (names, dtypes, shapes and bytes, in name order), not
over the npz file, whose zip headers carry timestamps: the same data always has the same hash,
which is what a bundle's provenance records.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from models.constants import AUDIO_DIM, CLASS_NAMES, FACE_DIM, PROFILE_FLAG, PROFILES, SEQ_LEN
from models.sequence import NormStats
from models.training.labels import SkippedClip
from models.training.splits import SPLIT_NAMES, TRAIN, actor_disjoint_splits, check_actor_disjoint

DATASET_FORMAT: Final[str] = "hoovik-bot-dataset"
DATASET_FORMAT_VERSION: Final[int] = 1
NPZ_NAME: Final[str] = "dataset.npz"
META_NAME: Final[str] = "dataset.json"
STD_EPS: Final[float] = 1e-6
FLAG_PROFILE: Final[dict[int, str]] = {v: k for k, v in PROFILE_FLAG.items()}

_ARRAY_KEYS = ("face", "face_mask", "audio", "audio_mask", "label", "profile", "split", "actor", "corpus", "clip_id")


@dataclass
class ClipRecord:
    """The features of one clip, as extraction (or the synthetic generator) produces them."""

    clip_id: str
    face: np.ndarray  # (T, 326) float32 raw
    face_mask: np.ndarray  # (T,) float32
    audio: np.ndarray  # (T, 1024) float32 raw
    audio_mask: np.ndarray  # (T,) float32
    label: int
    actor: str
    corpus: str
    profile: str  # structural flag: both / audio_only / video_only
    source: str = ""  # the media path, for reports


def compute_norm_stats(
    face: np.ndarray, face_mask: np.ndarray, audio: np.ndarray, audio_mask: np.ndarray, rows: np.ndarray
) -> NormStats:
    """Mean and std (+1e-6) per dim over the valid frames of ``rows`` (the train split).

    Accumulated in float64 and stored in float32. A modality without a single valid train frame
    gets mean 0 / std 1 (identity), since there is nothing to estimate it from.
    """

    def stats(x: np.ndarray, m: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        valid = x[rows][m[rows] == 1]
        if valid.shape[0] == 0:
            return np.zeros(dim, np.float32), np.ones(dim, np.float32)
        v = valid.astype(np.float64)
        return v.mean(axis=0).astype(np.float32), (v.std(axis=0) + STD_EPS).astype(np.float32)

    fm, fs = stats(face, face_mask, FACE_DIM)
    am, as_ = stats(audio, audio_mask, AUDIO_DIM)
    return NormStats(face_mean=fm, face_std=fs, audio_mean=am, audio_std=as_)


@dataclass(eq=False)
class FeatureDataset:
    """All clips of a dataset in memory, with their split and the train norm stats."""

    face: np.ndarray
    face_mask: np.ndarray
    audio: np.ndarray
    audio_mask: np.ndarray
    label: np.ndarray
    profile: np.ndarray
    split: np.ndarray
    actor: np.ndarray
    corpus: np.ndarray
    clip_id: np.ndarray
    norm: NormStats
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        n = self.label.shape[0]
        expected = {
            "face": (n, SEQ_LEN, FACE_DIM),
            "face_mask": (n, SEQ_LEN),
            "audio": (n, SEQ_LEN, AUDIO_DIM),
            "audio_mask": (n, SEQ_LEN),
            "profile": (n,),
            "split": (n,),
            "actor": (n,),
            "corpus": (n,),
            "clip_id": (n,),
        }
        for key, shape in expected.items():
            if getattr(self, key).shape != shape:
                raise ValueError(f"dataset array {key!r} has shape {getattr(self, key).shape}, expected {shape}")

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def indices(self, split: str | int) -> np.ndarray:
        """Row indices of ``train`` / ``val`` / ``test`` (or a split code)."""
        code = SPLIT_NAMES.index(split) if isinstance(split, str) else int(split)
        return np.flatnonzero(self.split == code)

    def normalised(
        self, rows: np.ndarray | None = None, norm: NormStats | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(xf, xa, fm, am)`` for ``rows`` in the predictor's input space (z-scored, padding zeroed).

        Uses :class:`NormStats`' own methods (``norm``, default the dataset's train stats), i.e. the
        live bot's normalisation. Each frame is normalised independently, so the batch is flattened
        to (rows·T, D) and back.
        """
        stats = norm or self.norm
        idx = np.arange(len(self)) if rows is None else np.asarray(rows)
        n = idx.shape[0]
        fm = self.face_mask[idx].astype(np.float32)
        am = self.audio_mask[idx].astype(np.float32)
        xf = stats.normalise_face(self.face[idx].reshape(-1, FACE_DIM), fm.reshape(-1))
        xa = stats.normalise_audio(self.audio[idx].reshape(-1, AUDIO_DIM), am.reshape(-1))
        return xf.reshape(n, SEQ_LEN, FACE_DIM), xa.reshape(n, SEQ_LEN, AUDIO_DIM), fm, am

    def arrays(self) -> dict[str, np.ndarray]:
        out = {key: getattr(self, key) for key in _ARRAY_KEYS}
        out.update({f"norm.{k}": v for k, v in self.norm.to_arrays().items()})
        return out

    def content_hash(self) -> str:
        """sha256 over every array's name, dtype, shape and bytes (stable across re-saves)."""
        h = hashlib.sha256()
        for key, value in sorted(self.arrays().items()):
            arr = np.ascontiguousarray(value)
            h.update(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
            h.update(arr.tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """Counts per split × class, profile and corpus; the actors of each split."""
        out: dict[str, Any] = {"n": len(self)}
        for code, name in enumerate(SPLIT_NAMES):
            rows = self.split == code
            out[name] = {
                "n": int(rows.sum()),
                "classes": {c: int(np.sum(self.label[rows] == i)) for i, c in enumerate(CLASS_NAMES)},
                "profiles": {p: int(np.sum(self.profile[rows] == PROFILE_FLAG[p])) for p in PROFILES},
                "corpora": {str(c): int(np.sum(self.corpus[rows] == c)) for c in sorted(set(self.corpus.tolist()))},
                "actors": sorted({f"{c}:{a}" for c, a in zip(self.corpus[rows], self.actor[rows], strict=True)}),
            }
        return out


def assemble_dataset(
    records: Sequence[ClipRecord],
    *,
    seed: int,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    min_actors: int = 1,
    skipped: Sequence[SkippedClip] = (),
    extra_meta: dict[str, Any] | None = None,
) -> FeatureDataset:
    """Stack clip records, split them actor-disjointly and compute the train norm stats.

    Records are ordered by clip id, so the dataset (and its hash) does not depend on the order in
    which parallel workers finished.
    """
    if not records:
        raise ValueError("no usable clips: nothing to build a dataset from")
    recs = sorted(records, key=lambda r: r.clip_id)
    actors = [r.actor for r in recs]
    corpora = [r.corpus for r in recs]
    split = actor_disjoint_splits(actors, corpora, seed, ratios, min_actors)
    face = np.stack([np.asarray(r.face, np.float32) for r in recs])
    face_mask = np.stack([np.asarray(r.face_mask, np.float32) for r in recs])
    audio = np.stack([np.asarray(r.audio, np.float32) for r in recs])
    audio_mask = np.stack([np.asarray(r.audio_mask, np.float32) for r in recs])
    norm = compute_norm_stats(face, face_mask, audio, audio_mask, np.flatnonzero(split == TRAIN))
    meta: dict[str, Any] = {
        "format": DATASET_FORMAT,
        "format_version": DATASET_FORMAT_VERSION,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(),
        "classes": list(CLASS_NAMES),
        "dims": {"face": FACE_DIM, "audio": AUDIO_DIM, "seq_len": SEQ_LEN},
        "profile_flags": dict(PROFILE_FLAG),
        "split": {"seed": seed, "ratios": list(ratios), "min_actors": min_actors, "per_corpus": True},
        "norm_stats": "train split, valid frames only, std + 1e-6",
        "skipped": [s.to_dict() for s in skipped],
        "sources": {r.clip_id: r.source for r in recs if r.source},
    }
    meta.update(extra_meta or {})
    ds = FeatureDataset(
        face=face,
        face_mask=face_mask,
        audio=audio,
        audio_mask=audio_mask,
        label=np.asarray([r.label for r in recs], np.int64),
        profile=np.asarray([PROFILE_FLAG[r.profile] for r in recs], np.int8),
        split=split,
        actor=np.asarray(actors, dtype=str),
        corpus=np.asarray(corpora, dtype=str),
        clip_id=np.asarray([r.clip_id for r in recs], dtype=str),
        norm=norm,
        meta=meta,
    )
    return ds


def save_dataset(ds: FeatureDataset, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``dataset.npz`` and ``dataset.json`` (atomically) into ``out_dir``; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds.meta["content_hash"] = ds.content_hash()
    ds.meta["summary"] = ds.summary()
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".dataset-", suffix=".npz")
    os.close(fd)
    np.savez(tmp, **ds.arrays())  # type: ignore[arg-type]
    os.replace(tmp, out / NPZ_NAME)
    _atomic_text(out / META_NAME, json.dumps(ds.meta, indent=1, sort_keys=True) + "\n")
    ds.path = out
    return out


def load_dataset(path: str | os.PathLike[str]) -> FeatureDataset:
    """Read a dataset folder (or its ``dataset.npz``), checking format, version and content hash."""
    p = Path(path)
    folder = p.parent if p.suffix == ".npz" else p
    npz, meta_path = folder / NPZ_NAME, folder / META_NAME
    if not npz.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: not a dataset folder (needs {NPZ_NAME} and {META_NAME})")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != DATASET_FORMAT or meta.get("format_version") != DATASET_FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: format {meta.get('format')!r} v{meta.get('format_version')} is not "
            f"{DATASET_FORMAT!r} v{DATASET_FORMAT_VERSION}"
        )
    with np.load(npz, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    missing = [k for k in (*_ARRAY_KEYS, "norm.face_mean") if k not in arrays]
    if missing:
        raise ValueError(f"{npz}: missing arrays {missing}")
    norm = NormStats.from_arrays({k[len("norm.") :]: v for k, v in arrays.items() if k.startswith("norm.")})
    ds = FeatureDataset(
        **{k: arrays[k] for k in _ARRAY_KEYS},
        norm=norm,
        meta=meta,
        path=folder,
    )
    if meta.get("content_hash") and meta["content_hash"] != ds.content_hash():
        raise ValueError(f"{npz}: content hash differs from {meta_path} (file modified or from another run)")
    check_actor_disjoint(ds.actor.tolist(), ds.corpus.tolist(), ds.split)
    return ds


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".meta-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)

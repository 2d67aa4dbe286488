"""Labelled clips: corpus file-name parsers (RAVDESS, CREMA-D) and a generic CSV manifest.

Class indices are the bundle's (:data:`models.constants.CLASS_NAMES`): 0 angry, 1 fearful, 2 disgust,
3 happy, 4 sad, 5 neutral/calm.

**RAVDESS fearful/disgust.** RAVDESS names its files ``MM-VC-EE-II-SS-RR-AA`` with emotion ``EE``
01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, **06 fearful, 07 disgust**, 08 surprised. The
original's training code mapped 06 → disgust and 07 → fearful (docs/training.md, "Inputs and labels"), i.e. it
swapped the two
classes for every RAVDESS sample. We map them as RAVDESS defines them; 08 (surprised) has no Hoovik
class and is dropped, as in the original.

Actor ids are strings so that a manifest may use any naming. RAVDESS actors keep their number
("1" … "24"); CREMA-D actors get +1000 ("2001" … "2091"), the original's convention, so the two
corpora can never share an id. Splits are made per corpus anyway (see :mod:`.splits`).

Modality (the structural flag of docs/training.md, "Inputs and labels"): RAVDESS ``MM`` 01 → both, 02 → video_only, 03 →
audio_only. CREMA-D and manifests without a ``modality`` column leave it to the streams the file
holds (video + audio → both, audio only → audio_only, video only → video_only).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from models.constants import CLASS_NAMES, PROFILES

log = logging.getLogger(__name__)

MEDIA_SUFFIXES: Final[frozenset[str]] = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac"}
)

RAVDESS_EMOTIONS: Final[dict[str, int | None]] = {
    "01": 5,  # neutral
    "02": 5,  # calm
    "03": 3,  # happy
    "04": 4,  # sad
    "05": 0,  # angry
    "06": 1,  # fearful (the original mapped this to disgust)
    "07": 2,  # disgust (the original mapped this to fearful)
    "08": None,  # surprised: no Hoovik class, dropped
}
RAVDESS_MODALITY: Final[dict[str, str]] = {"01": "both", "02": "video_only", "03": "audio_only"}
CREMA_D_EMOTIONS: Final[dict[str, int]] = {"ANG": 0, "FEA": 1, "DIS": 2, "HAP": 3, "SAD": 4, "NEU": 5}
CREMA_D_ACTOR_OFFSET: Final[int] = 1000

_RAVDESS_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_CREMA_D_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")

LABEL_ALIASES: Final[dict[str, int]] = {
    "angry": 0,
    "anger": 0,
    "ang": 0,
    "fearful": 1,
    "fear": 1,
    "fea": 1,
    "disgust": 2,
    "disgusted": 2,
    "dis": 2,
    "happy": 3,
    "happiness": 3,
    "hap": 3,
    "sad": 4,
    "sadness": 4,
    "neutral": 5,
    "calm": 5,
    "neutral/calm": 5,
    "neu": 5,
}


@dataclass(frozen=True)
class ClipSpec:
    """One labelled media file to extract.

    Attributes:
        path: the media file.
        clip_id: unique, stable name (``corpus/relative path``); orders the dataset.
        label: class index (0–5).
        actor: speaker id (string; splits never share an actor).
        corpus: ``ravdess``, ``crema-d`` or the manifest's corpus name.
        modality: declared profile (``both``/``audio_only``/``video_only``) or None to infer it
            from the streams the file holds.
    """

    path: Path
    clip_id: str
    label: int
    actor: str
    corpus: str
    modality: str | None = None


@dataclass(frozen=True)
class SkippedClip:
    """A file that does not become a sample, and why (reported, never silently lost)."""

    path: str
    reason: str
    kind: str = "error"  # "error" (unreadable, unparsable) or "dropped" (e.g. a class we do not train)

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason, "kind": self.kind}


def parse_label(value: str | int) -> int:
    """A class index from a name (``angry``, ``fear``, ``neutral/calm`` …) or an index 0–5."""
    text = str(value).strip().lower()
    if text.isdigit():
        idx = int(text)
        if 0 <= idx < len(CLASS_NAMES):
            return idx
        raise ValueError(f"label index {idx} outside 0..{len(CLASS_NAMES) - 1}")
    if text in LABEL_ALIASES:
        return LABEL_ALIASES[text]
    raise ValueError(f"unknown label {value!r}; expected one of {list(CLASS_NAMES)} or an index 0..5")


def parse_modality(value: str | None) -> str | None:
    """``both``/``audio_only``/``video_only`` (also ``av``, ``audio``, ``video``); empty → None."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip().lower().replace("-", "_")
    aliases = {"av": "both", "audio": "audio_only", "video": "video_only", "face": "video_only"}
    text = aliases.get(text, text)
    if text not in PROFILES:
        raise ValueError(f"unknown modality {value!r}; expected one of {list(PROFILES)}")
    return text


def parse_ravdess_name(path: Path, root: Path | None = None) -> ClipSpec | SkippedClip:
    """A RAVDESS file name → spec, or why it is skipped (``08`` surprised is ``dropped``)."""
    m = _RAVDESS_RE.match(path.stem)
    if m is None:
        return SkippedClip(str(path), "file name does not follow RAVDESS MM-VC-EE-II-SS-RR-AA")
    modality_code, _channel, emotion, _intensity, _statement, _rep, actor = m.groups()
    if modality_code not in RAVDESS_MODALITY:
        return SkippedClip(str(path), f"unknown RAVDESS modality code {modality_code}")
    if emotion not in RAVDESS_EMOTIONS:
        return SkippedClip(str(path), f"unknown RAVDESS emotion code {emotion}")
    label = RAVDESS_EMOTIONS[emotion]
    if label is None:
        return SkippedClip(str(path), "RAVDESS emotion 08 (surprised) has no Hoovik class", kind="dropped")
    return ClipSpec(
        path=path,
        clip_id=_clip_id("ravdess", path, root),
        label=label,
        actor=str(int(actor)),
        corpus="ravdess",
        modality=RAVDESS_MODALITY[modality_code],
    )


def parse_crema_d_name(path: Path, root: Path | None = None) -> ClipSpec | SkippedClip:
    """A CREMA-D file name (``AAAA_SSS_EEE_LL``) → spec; modality comes from the file's streams."""
    m = _CREMA_D_RE.match(path.stem)
    if m is None:
        return SkippedClip(str(path), "file name does not follow CREMA-D AAAA_SSS_EEE_LL")
    actor, _sentence, emotion, _level = m.groups()
    if emotion not in CREMA_D_EMOTIONS:
        return SkippedClip(str(path), f"unknown CREMA-D emotion code {emotion}")
    return ClipSpec(
        path=path,
        clip_id=_clip_id("crema-d", path, root),
        label=CREMA_D_EMOTIONS[emotion],
        actor=str(int(actor) + CREMA_D_ACTOR_OFFSET),
        corpus="crema-d",
        modality=None,
    )


def _clip_id(corpus: str, path: Path, root: Path | None) -> str:
    rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)
    return f"{corpus}/{rel.as_posix()}"


def _media_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)


def discover_ravdess(root: Path) -> tuple[list[ClipSpec], list[SkippedClip]]:
    """Every media file under ``root`` named like RAVDESS (recursively, sorted)."""
    return _collect(parse_ravdess_name(p, root) for p in _media_files(root))


def discover_crema_d(root: Path) -> tuple[list[ClipSpec], list[SkippedClip]]:
    """Every media file under ``root`` named like CREMA-D (VideoFlash, AudioWAV, …)."""
    return _collect(parse_crema_d_name(p, root) for p in _media_files(root))


def read_manifest(path: Path) -> tuple[list[ClipSpec], list[SkippedClip]]:
    """A CSV with columns ``path,label,actor`` and optional ``modality``, ``corpus``.

    Relative paths are resolved against the CSV's folder. The corpus defaults to the CSV's stem so
    that two manifests split independently. Bad rows are skipped with the row number and reason.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower() for c in (reader.fieldnames or [])}
        missing = {"path", "label", "actor"} - columns
        if missing:
            raise ValueError(f"{path}: manifest lacks column(s) {sorted(missing)} (needs path,label,actor)")
        rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    default_corpus = path.stem
    results: list[ClipSpec | SkippedClip] = []
    for line, row in enumerate(rows, start=2):
        media = Path(row["path"])
        if not media.is_absolute():
            media = path.parent / media
        try:
            if not row["actor"]:
                raise ValueError("empty actor")
            corpus = row.get("corpus") or default_corpus
            results.append(
                ClipSpec(
                    path=media,
                    clip_id=f"{corpus}/{Path(row['path']).as_posix().lstrip('/')}",
                    label=parse_label(row["label"]),
                    actor=row["actor"],
                    corpus=corpus,
                    modality=parse_modality(row.get("modality")),
                )
            )
        except ValueError as exc:
            results.append(SkippedClip(str(media), f"{path}:{line}: {exc}"))
    return _collect(results)


def _collect(items: Iterable[ClipSpec | SkippedClip]) -> tuple[list[ClipSpec], list[SkippedClip]]:
    specs: list[ClipSpec] = []
    skipped: list[SkippedClip] = []
    for item in items:
        if isinstance(item, ClipSpec):
            specs.append(item)
        else:
            log.info("not using %s: %s", item.path, item.reason)
            skipped.append(item)
    return specs, skipped


def dedupe(specs: list[ClipSpec]) -> list[ClipSpec]:
    """Sort by clip id and refuse duplicates: a clip id is the cache key and the dataset order."""
    seen: dict[str, ClipSpec] = {}
    for spec in specs:
        if spec.clip_id in seen:
            raise ValueError(f"duplicate clip id {spec.clip_id!r}: {seen[spec.clip_id].path} and {spec.path}")
        seen[spec.clip_id] = spec
    return [seen[k] for k in sorted(seen)]

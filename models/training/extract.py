"""Offline feature extraction: each labelled clip → face and audio sequences with masks (docs/training.md,
"Extraction").

Per clip, 10 frame times ``linspace(0, D·(1 − 1/10), 10)`` span the video duration D (4 s for
clips without video). Face: the RGB frame shown at each time goes through
:class:`models.face.FaceFeatureExtractor` — the bot's extractor; a frame without a face repeats the
last good vector (mask 1) and slots before the first good frame stay zero with mask 0. Audio: the
soundtrack is decoded with PyAV at 16 kHz mono, padded/truncated to 4 s as the original did, and a
0.6 s window centred on each time (:func:`models.audio.windows_for_times`, the bot's window code)
goes through :class:`models.audio.AudioEmbedder`; short or silent windows give zero and mask 0.

Clips run in parallel on a thread pool (PyAV, MediaPipe and torch release the GIL). Each thread
owns its MediaPipe graph (they are not thread-safe); the Wav2Vec2 embedder only reads its model
and is shared. Every finished clip is written to a per-clip cache file keyed by the file's
identity and the extractor settings, so an interrupted run resumes where it stopped and a re-run
only extracts new or changed clips. A clip that fails is skipped with its reason; it never stops
the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.constants import AUDIO_DIM, FACE_DIM, FACE_FEATURE_VERSION, SAMPLE_RATE, SEQ_LEN
from models.training.config import ExtractConfig
from models.training.dataset import ClipRecord
from models.training.labels import ClipSpec, SkippedClip
from models.training.media import ClipError, decode_audio, frames_at, measure_video_duration, probe

if TYPE_CHECKING:
    from models.audio import AudioEmbedder
    from models.face import FaceFeatureExtractor

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def frame_times(duration_s: float, n: int = SEQ_LEN) -> np.ndarray:
    """The offline sampling times: ``linspace(0, D·(1 − 1/n), n)`` (docs/training.md, "Extraction")."""
    return np.linspace(0.0, duration_s * (1.0 - 1.0 / n), n)


def fill_face_sequence(vectors: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """(T, 326) vectors and mask: failed frames repeat the last good one; leading failures stay 0/0."""
    x = np.zeros((len(vectors), FACE_DIM), dtype=np.float32)
    mask = np.zeros(len(vectors), dtype=np.float32)
    last: np.ndarray | None = None
    for i, vec in enumerate(vectors):
        if vec is not None:
            last = vec
        if last is not None:
            x[i] = last
            mask[i] = 1.0
    return x, mask


def resolve_modality(spec: ClipSpec, has_video: bool, has_audio: bool) -> str:
    """The clip's structural flag: the declared modality limited to the streams the file has."""
    declared = spec.modality
    want_video = declared in (None, "both", "video_only")
    want_audio = declared in (None, "both", "audio_only")
    use_video, use_audio = want_video and has_video, want_audio and has_audio
    if use_video and use_audio:
        return "both"
    if use_video:
        return "video_only"
    if use_audio:
        return "audio_only"
    streams = f"{'video' if has_video else 'no video'} and {'audio' if has_audio else 'no audio'}"
    raise ClipError(f"declared {declared or 'audio or video'} but the file has {streams}")


@dataclass
class ClipExtractor:
    """Turns one :class:`ClipSpec` into a :class:`ClipRecord` with the bot's extractors."""

    face: FaceFeatureExtractor | None
    embedder: AudioEmbedder | None
    config: ExtractConfig = field(default_factory=ExtractConfig)

    def extract(self, spec: ClipSpec) -> ClipRecord:
        info = probe(spec.path)
        modality = resolve_modality(spec, info.has_video, info.has_audio)
        uses_video = modality in ("both", "video_only")
        uses_audio = modality in ("both", "audio_only")
        if uses_video:
            duration = info.video_duration_s or measure_video_duration(spec.path)
        else:
            duration = self.config.audio_only_duration_s
        if not duration or duration <= 0:
            raise ClipError(f"video duration {duration} s is not positive")
        times = frame_times(duration)

        face = np.zeros((SEQ_LEN, FACE_DIM), np.float32)
        face_mask = np.zeros(SEQ_LEN, np.float32)
        if uses_video:
            if self.face is None:
                raise RuntimeError("a face extractor is needed for clips with video")
            results = [self.face.extract(frame) for frame in frames_at(spec.path, times.tolist())]
            face, face_mask = fill_face_sequence([r.vector for r in results])

        audio = np.zeros((SEQ_LEN, AUDIO_DIM), np.float32)
        audio_mask = np.zeros(SEQ_LEN, np.float32)
        if uses_audio:
            if self.embedder is None:
                raise RuntimeError("an audio embedder is needed for clips with audio")
            from models.audio import pad_or_truncate, windows_for_times

            signal = decode_audio(spec.path, SAMPLE_RATE)
            if self.config.audio_clip_s is not None:
                signal = pad_or_truncate(signal, round(self.config.audio_clip_s * SAMPLE_RATE))
            windows = windows_for_times(signal, times)
            audio, audio_mask = self.embedder.embed_slots(windows, batch_size=self.config.audio_batch)
            if audio.shape[1] != AUDIO_DIM:
                raise RuntimeError(f"audio model gives {audio.shape[1]}-d embeddings; the bundle needs {AUDIO_DIM}")

        if face_mask.sum() == 0 and audio_mask.sum() == 0:
            raise ClipError("no face in any sampled frame and no usable (non-silent) audio window")
        return ClipRecord(
            clip_id=spec.clip_id,
            face=face,
            face_mask=face_mask,
            audio=audio.astype(np.float32),
            audio_mask=audio_mask.astype(np.float32),
            label=spec.label,
            actor=spec.actor,
            corpus=spec.corpus,
            profile=modality,
            source=str(spec.path),
        )


# --------------------------------------------------------------------------------------------------
# Per-clip cache


class ClipCache:
    """One ``<key>.npz`` per extracted clip; the key covers the file and the extractor settings.

    The key hashes the clip's path, size and modification time, its label/actor/corpus/modality
    and the extractor fingerprint (face asset bytes, audio model, window settings), so a changed
    file, label or model is re-extracted rather than served stale.
    """

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint

    def key(self, spec: ClipSpec) -> str:
        st = spec.path.stat()
        ident = {
            "v": CACHE_VERSION,
            "fingerprint": self.fingerprint,
            "clip_id": spec.clip_id,
            "path": str(spec.path.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "label": spec.label,
            "actor": spec.actor,
            "corpus": spec.corpus,
            "modality": spec.modality,
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]

    def get(self, spec: ClipSpec) -> ClipRecord | None:
        path = self.folder / f"{self.key(spec)}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                return ClipRecord(
                    clip_id=spec.clip_id,
                    face=data["face"],
                    face_mask=data["face_mask"],
                    audio=data["audio"],
                    audio_mask=data["audio_mask"],
                    label=spec.label,
                    actor=spec.actor,
                    corpus=spec.corpus,
                    profile=str(meta["profile"]),
                    source=str(spec.path),
                )
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable cache entry %s (%s); re-extracting", path, exc)
            return None

    def put(self, spec: ClipSpec, record: ClipRecord) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".clip-", suffix=".npz")
        os.close(fd)
        np.savez(
            tmp,
            face=record.face,
            face_mask=record.face_mask,
            audio=record.audio,
            audio_mask=record.audio_mask,
            meta=np.array(json.dumps({"profile": record.profile, "clip_id": record.clip_id})),
        )
        os.replace(tmp, self.folder / f"{self.key(spec)}.npz")


def extractor_fingerprint(face_asset: Path | None, audio_source: str, precision: str, config: ExtractConfig) -> str:
    """A hash of everything that changes a clip's features (not the split settings)."""
    h = hashlib.sha256()
    h.update(f"{FACE_FEATURE_VERSION}|{audio_source}|{precision}|{config.audio_clip_s}|".encode())
    h.update(f"{config.audio_only_duration_s}|{SEQ_LEN}|".encode())
    if face_asset is not None and face_asset.is_file():
        h.update(face_asset.read_bytes())
    src = Path(audio_source).expanduser()
    if src.is_dir():
        for f in sorted(src.rglob("*")):
            if f.is_file():
                h.update(f"{f.relative_to(src)}|{f.stat().st_size}|{f.stat().st_mtime_ns}".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Parallel run


@dataclass
class ExtractionResult:
    """Records of the usable clips, the skipped ones with reasons, and counts/timings."""

    records: list[ClipRecord]
    skipped: list[SkippedClip]
    stats: dict[str, Any]


class _Workers:
    """Lazily created extractors: one MediaPipe graph per thread, one shared audio embedder.

    Nothing is loaded until a clip misses the cache, so a fully cached re-run needs no model.
    """

    def __init__(self, face_asset: Path | None, embedder_factory: Callable[[], AudioEmbedder]) -> None:
        self._face_asset = face_asset
        self._embedder_factory = embedder_factory
        self._embedder: AudioEmbedder | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._faces: list[FaceFeatureExtractor] = []

    def extractor(self, config: ExtractConfig) -> ClipExtractor:
        from models.face import FaceFeatureExtractor

        face = getattr(self._local, "face", None)
        if face is None:
            face = FaceFeatureExtractor(self._face_asset)
            self._local.face = face
            with self._lock:
                self._faces.append(face)
        with self._lock:
            if self._embedder is None:
                self._embedder = self._embedder_factory()
        return ClipExtractor(face=face, embedder=self._embedder, config=config)

    def close(self) -> None:
        for face in self._faces:
            face.close()
        self._faces.clear()


def extract_clips(
    specs: Sequence[ClipSpec],
    *,
    face_asset: Path | None,
    embedder_factory: Callable[[], AudioEmbedder],
    cache: ClipCache | None,
    config: ExtractConfig | None = None,
    progress: bool = True,
) -> ExtractionResult:
    """Extract every clip (cached ones are read back), in parallel, with a progress bar."""
    from tqdm import tqdm

    cfg = config or ExtractConfig()
    workers = _Workers(face_asset, embedder_factory)
    records: list[ClipRecord] = []
    skipped: list[SkippedClip] = []
    counts = {"clips": len(specs), "extracted": 0, "cached": 0, "failed": 0}
    started = time.monotonic()

    def run(spec: ClipSpec) -> tuple[ClipRecord, bool]:
        if cache is not None:
            hit = cache.get(spec)
            if hit is not None:
                return hit, True
        record = workers.extractor(cfg).extract(spec)
        if cache is not None:
            cache.put(spec, record)
        return record, False

    try:
        with (
            ThreadPoolExecutor(max_workers=max(1, cfg.workers), thread_name_prefix="extract") as pool,
            tqdm(total=len(specs), desc="extract", unit="clip", disable=not progress) as bar,
        ):
            futures = {pool.submit(run, spec): spec for spec in specs}
            for future in as_completed(futures):
                spec = futures[future]
                try:
                    record, cached = future.result()
                except Exception as exc:  # one bad clip must never end a long extraction run
                    reason = str(exc) if isinstance(exc, ClipError) else f"{type(exc).__name__}: {exc}"
                    log.warning("skipping %s: %s", spec.path, reason)
                    skipped.append(SkippedClip(str(spec.path), reason))
                    counts["failed"] += 1
                else:
                    records.append(record)
                    counts["cached" if cached else "extracted"] += 1
                bar.update(1)
    finally:
        workers.close()
    records.sort(key=lambda r: r.clip_id)
    skipped.sort(key=lambda s: s.path)
    stats: dict[str, Any] = dict(counts)
    stats["seconds"] = round(time.monotonic() - started, 3)
    return ExtractionResult(records=records, skipped=skipped, stats=stats)

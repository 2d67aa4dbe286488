"""``train extract`` end to end: corpus folders and manifests → extracted clips → a dataset folder.

Discovery problems (unparsable names, bad manifest rows, dropped classes) and extraction failures
(unreadable files, no face and no audio) are collected with their reasons into the dataset's
metadata, so the evaluation report can say how many clips were lost and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.constants import DEFAULT_WAV2VEC2_ID
from models.training.config import ExtractConfig
from models.training.dataset import FeatureDataset, assemble_dataset, save_dataset
from models.training.extract import ClipCache, extract_clips, extractor_fingerprint
from models.training.labels import (
    ClipSpec,
    SkippedClip,
    dedupe,
    discover_crema_d,
    discover_ravdess,
    read_manifest,
)
from models.training.splits import DatasetError, check_trainable

if TYPE_CHECKING:
    from models.audio import AudioEmbedder

log = logging.getLogger(__name__)


def discover(
    ravdess: Sequence[Path] = (), crema_d: Sequence[Path] = (), manifests: Sequence[Path] = ()
) -> tuple[list[ClipSpec], list[SkippedClip]]:
    """Every labelled clip of the given corpus folders and manifests (sorted, no duplicate ids)."""
    specs: list[ClipSpec] = []
    skipped: list[SkippedClip] = []
    for root in ravdess:
        s, k = discover_ravdess(Path(root))
        specs += s
        skipped += k
    for root in crema_d:
        s, k = discover_crema_d(Path(root))
        specs += s
        skipped += k
    for manifest in manifests:
        s, k = read_manifest(Path(manifest))
        specs += s
        skipped += k
    return dedupe(specs), skipped


def build_dataset(
    out_dir: Path,
    *,
    ravdess: Sequence[Path] = (),
    crema_d: Sequence[Path] = (),
    manifests: Sequence[Path] = (),
    face_asset: Path | None = None,
    audio_model: str = DEFAULT_WAV2VEC2_ID,
    precision: str = "fp32",
    config: ExtractConfig | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    embedder_factory: Callable[[], AudioEmbedder] | None = None,
) -> FeatureDataset:
    """Discover, extract (resumably, in parallel), split and save; returns the saved dataset."""
    from models.assets import locate_face_asset

    cfg = config or ExtractConfig()
    specs, skipped = discover(ravdess, crema_d, manifests)
    if not specs:
        raise ValueError("no labelled clips found in the given folders/manifests")
    asset = locate_face_asset(face_asset)
    if embedder_factory is None:

        def embedder_factory() -> AudioEmbedder:
            from models.audio import AudioEmbedder

            return AudioEmbedder(audio_model, precision=precision)  # type: ignore[arg-type]

    fingerprint = extractor_fingerprint(asset, audio_model, precision, cfg)
    cache = ClipCache(cache_dir or Path(out_dir) / "cache", fingerprint) if use_cache else None
    result = extract_clips(
        specs, face_asset=asset, embedder_factory=embedder_factory, cache=cache, config=cfg, progress=progress
    )
    all_skipped = sorted([*skipped, *result.skipped], key=lambda s: s.path)
    stats: dict[str, Any] = dict(result.stats)
    stats["discovery_skipped"] = sum(1 for s in skipped if s.kind == "error")
    stats["dropped"] = sum(1 for s in skipped if s.kind == "dropped")
    log.info("extraction: %s", stats)
    ds = assemble_dataset(
        result.records,
        seed=cfg.seed,
        ratios=cfg.ratios,
        min_actors=cfg.min_actors,
        skipped=all_skipped,
        extra_meta={
            "extraction": {
                "config": asdict(cfg),
                "face_asset": str(asset),
                "audio_model": audio_model,
                "precision": precision,
                "fingerprint": fingerprint,
                "stats": stats,
            },
            "inputs": {
                "ravdess": [str(p) for p in ravdess],
                "crema_d": [str(p) for p in crema_d],
                "manifests": [str(p) for p in manifests],
            },
        },
    )
    try:
        ds.meta["warnings"] = check_trainable(ds.label, ds.split, ds.actor.tolist(), ds.corpus.tolist())
        ds.meta["trainable"] = True
    except DatasetError as exc:  # written anyway: more clips can be added and extraction resumed
        log.warning("dataset written, but it cannot be trained on yet: %s", exc)
        ds.meta["trainable"] = False
        ds.meta["warnings"] = [str(exc)]
    save_dataset(ds, out_dir)
    return ds

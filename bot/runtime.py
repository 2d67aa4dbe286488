"""Model loading for a bot process: bundle, predictor, the declared extractors and the face asset.

The bundle decides what runs: its manifest declares the face and audio extractors, and its family
the predictor (``models.family``). With no ``--bundle`` the shipped starter bundle is used; the
untrained demo bundle only by explicit choice (``--bundle untrained``, for tests).

The runtime is honest about what it runs: ``trained`` is false whenever the bundle is untrained or
the audio model had to be replaced by an untrained stand-in (no weights offline), and that flag is
carried into every result.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from bot.config import BotConfig, Precision
from bot.live.loadguard import COMPUTE_NICE
from bot.pipeline.remote import ProcessPredictor
from bot.pipeline.results import BundleInfo
from models.assets import cache_dir, locate_face_asset
from models.audio import AudioEmbedder
from models.bundle import Bundle
from models.extractors import AudioExtractor, FaceExtractor, starter_audio_extractor
from models.family import BatchPredictor, FeaturePlan, LoadedBundle, load_any_bundle, wrap_reference
from models.starter.shipped import starter_bundle_dir
from models.untrained import ensure_demo_bundle, untrained_wav2vec2

# ``--bundle`` values that name a built-in bundle rather than a directory.
STARTER = "starter"
UNTRAINED = "untrained"

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The loaded models of one bot process (a reference :class:`Bundle` is wrapped on construction)."""

    bundle: LoadedBundle | Bundle
    predictor: BatchPredictor
    audio: AudioExtractor
    face_asset: Path
    audio_description: str
    audio_trained: bool

    def __post_init__(self) -> None:
        if isinstance(self.bundle, Bundle):
            self.bundle = wrap_reference(self.bundle)

    def close(self) -> None:
        """Stop what the runtime started (the predictor's child process, if any)."""
        close = getattr(self.predictor, "close", None)
        if callable(close):
            close()

    @property
    def loaded(self) -> LoadedBundle:
        assert isinstance(self.bundle, LoadedBundle)
        return self.bundle

    @property
    def trained(self) -> bool:
        return self.loaded.trained and self.audio_trained

    @property
    def info(self) -> BundleInfo:
        return BundleInfo(self.loaded.bundle_id, self.trained)

    @property
    def features(self) -> FeaturePlan:
        return self.loaded.plan

    @property
    def make_face_extractor(self) -> Callable[[], FaceExtractor]:
        """One extractor per face-pool thread, of the kind the bundle declares."""
        return self.loaded.face_factory(self.face_asset)

    def describe(self) -> dict[str, Any]:
        return {
            "bundleId": self.loaded.bundle_id,
            "family": self.loaded.family,
            "trained": self.trained,
            "bundleTrained": self.loaded.trained,
            "extractors": {"face": self.features.face.to_dict(), "audio": self.features.audio.to_dict()},
            "audioModel": self.audio_description,
            "audioTrained": self.audio_trained,
            "faceAsset": str(self.face_asset),
            "licence": (self.loaded.manifest.get("licence") or {}).get("summary"),
        }


def load_audio(
    source: str, precision: Precision, cache: Path | None, offline: bool, allow_untrained: bool
) -> tuple[AudioEmbedder, str, bool]:
    """Load Wav2Vec2 from a hub id or directory; ``untrained[:small|production]`` builds one.

    With ``allow_untrained`` (the offline demo), a missing model falls back to a small untrained
    stand-in and says so; otherwise a missing model is an error telling the user what to fetch.
    """
    if source.startswith("untrained"):
        size = source.partition(":")[2] or "small"
        extractor, model = untrained_wav2vec2(size)
        return AudioEmbedder.from_model(extractor, model, precision=precision), f"untrained:{size}", False
    try:
        emb = AudioEmbedder(source=source, precision=precision, cache_dir=cache, offline=offline or None)
        return emb, source, True
    except Exception as exc:
        if not allow_untrained:
            raise
        log.warning(
            "Wav2Vec2 %r could not be loaded (%s); using an UNTRAINED small stand-in, so every result says "
            "trained=false. Run `hoovik-bot models fetch` where a network is available to get the real weights.",
            source,
            "not in the local cache" if offline else type(exc).__name__,
        )
        extractor, model = untrained_wav2vec2("small")
        return AudioEmbedder.from_model(extractor, model, precision=precision), "untrained:small", False


def build_runtime(
    cfg: BotConfig, *, allow_untrained_audio: bool = False, inference_process: bool | None = None
) -> Runtime:
    """Load the models of one bot process; the caller closes the runtime.

    ``inference_process`` (default: the config's) serves the predictor from a child process
    (:mod:`bot.pipeline.remote`). The child loads while the parent loads its own copy of the bundle,
    which it needs for the feature plan and the bundle's info, but without the tree arrays that only
    the predictor uses.
    """
    m = cfg.models
    # The pools provide the parallelism; BLAS, torch and XGBoost each spinning their own threads on
    # top of them busy-wait against each other (measured: XGBoost predict 0.8 ms -> 8 ms).
    threads = max(1, cfg.engine.torch_threads)
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)
    cache = Path(m.cache_dir) if m.cache_dir else cache_dir()
    bundle_dir = resolve_bundle(m.bundle, cache)
    remote: ProcessPredictor | None = None
    if cfg.engine.inference_process if inference_process is None else inference_process:
        remote = ProcessPredictor(bundle_dir, threads, nice=COMPUTE_NICE, wait=False)
    try:
        loaded = load_any_bundle(bundle_dir)
        predictor: BatchPredictor
        if remote is not None:
            remote.wait_ready()
            predictor = remote
        else:
            predictor = loaded.make_predictor(cfg.engine.torch_threads)
        face_asset = locate_face_asset(m.face_asset or None)
        audio: AudioExtractor
        if loaded.reference is not None:
            audio, description, audio_trained = load_audio(
                m.audio_model, m.audio_precision, cache / "hf", m.offline, allow_untrained_audio
            )
        else:
            audio = starter_audio_extractor(loaded.plan.audio)
            description, audio_trained = f"{loaded.plan.audio.name} v{loaded.plan.audio.version}", True
    except BaseException:
        if remote is not None:
            remote.close()
        raise
    release_freed_heap()
    return Runtime(loaded, predictor, audio, face_asset, description, audio_trained)


def release_freed_heap() -> bool:
    """Give the memory that model loading freed back to the OS (glibc's ``malloc_trim``).

    Why: loading frees large temporaries (the booster's 71 MB JSON export read for its tree
    arrays, the fp32 Wav2Vec2 that a bf16 copy replaces). Once glibc has freed a large mapped
    block it raises its mmap threshold to that size, so the weights allocated after it come from
    the heap, and what is freed there stays mapped: measured, the production stack's RSS was
    1,865 MiB after loading against 969 MiB once trimmed. False where there is no glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


def resolve_bundle(value: str, cache: Path) -> Path:
    """``""``/``starter`` → the shipped starter bundle; ``untrained`` → the demo bundle; else a path."""
    if value in ("", STARTER):
        return starter_bundle_dir()
    if value == UNTRAINED:
        return ensure_demo_bundle(cache / "bundles")
    return Path(value)

"""Model loading for a bot process: bundle, predictor, Wav2Vec2 and the face asset, from config.

The runtime is honest about what it runs: ``trained`` is false whenever the bundle is untrained or
the audio model had to be replaced by an untrained stand-in (no weights offline), and that flag is
carried into every result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from bot.config import BotConfig, Precision
from bot.engine import BundleInfo
from models.assets import cache_dir, locate_face_asset
from models.audio import AudioEmbedder
from models.bundle import Bundle, load_bundle
from models.predictor import Predictor
from models.untrained import ensure_demo_bundle, untrained_wav2vec2

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    bundle: Bundle
    predictor: Predictor
    audio: AudioEmbedder
    face_asset: Path
    audio_description: str
    audio_trained: bool

    @property
    def trained(self) -> bool:
        return self.bundle.trained and self.audio_trained

    @property
    def info(self) -> BundleInfo:
        return BundleInfo(self.bundle.bundle_id, self.trained)

    def describe(self) -> dict[str, Any]:
        return {
            "bundleId": self.bundle.bundle_id,
            "trained": self.trained,
            "bundleTrained": self.bundle.trained,
            "audioModel": self.audio_description,
            "audioTrained": self.audio_trained,
            "faceAsset": str(self.face_asset),
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


def build_runtime(cfg: BotConfig, *, allow_untrained_audio: bool = False) -> Runtime:
    m = cfg.models
    # The pools provide the parallelism; BLAS, torch and XGBoost each spinning their own threads on
    # top of them busy-wait against each other (measured: XGBoost predict 0.8 ms -> 8 ms).
    threads = max(1, cfg.engine.torch_threads)
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)
    cache = Path(m.cache_dir) if m.cache_dir else cache_dir()
    bundle = load_bundle(m.bundle) if m.bundle else load_bundle(ensure_demo_bundle(cache / "bundles"))
    predictor = Predictor(bundle, torch_threads=cfg.engine.torch_threads)
    audio, description, audio_trained = load_audio(
        m.audio_model, m.audio_precision, cache / "hf", m.offline, allow_untrained_audio
    )
    face_asset = locate_face_asset(m.face_asset or None)
    return Runtime(bundle, predictor, audio, face_asset, description, audio_trained)

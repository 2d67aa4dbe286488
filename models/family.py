"""One loader for every bundle family, and the seam the engine, replay and training use.

A :class:`LoadedBundle` says which extractors to build (from the manifest's declarations), makes
the family's predictor, and makes one :class:`~models.sequence.Normaliser` per participant. The
callers never branch on the family themselves: the reference family (MediaPipe 326-d + Wav2Vec2
1024-d, transformer + XGBoost) and the starter family (FER crop + log-mel statistics) run through
the same stages and pools.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.bundle import REFERENCE_FAMILY, Bundle, BundleError, load_bundle, read_manifest
from models.constants import AUDIO_MIN_SAMPLES
from models.extractors import ExtractorSpec, FaceExtractor, face_extractor_factory
from models.predictor import Prediction
from models.sequence import Normaliser


class BatchPredictor(Protocol):
    """What the inference thread drives: one call per batch of assembled sequences."""

    def predict_batch(self, xf: np.ndarray, xa: np.ndarray, fm: np.ndarray, am: np.ndarray) -> list[Prediction]: ...


@dataclass(frozen=True)
class FeaturePlan:
    """What the step core computes for a bundle: extractor dims, the audio window, normalisers.

    ``min_audio_samples``: the shortest buffered audio that gets an embedding. The reference keeps
    the original's rule (2,400 samples; the window is then shorter than 0.6 s); the starter needs a
    whole window, because its statistics are not comparable over shorter ones: too little audio
    gets no result rather than a guess.
    """

    face: ExtractorSpec
    audio: ExtractorSpec
    min_audio_samples: int
    new_normaliser: Callable[[], Normaliser]
    # The neutral-fallback threshold the bundle was calibrated for (None: engine.confidence_threshold,
    # the reference's 0.45). A probability scale is a property of the model that produced it.
    confidence_threshold: float | None = None

    def threshold(self, configured: float) -> float:
        return configured if self.confidence_threshold is None else self.confidence_threshold

    @property
    def face_dim(self) -> int:
        return self.face.dim

    @property
    def audio_dim(self) -> int:
        return self.audio.dim

    @property
    def window_samples(self) -> int:
        return self.audio.window_samples


@dataclass
class LoadedBundle:
    family: str
    bundle_id: str
    trained: bool
    path: Path | None
    manifest: dict[str, Any]
    plan: FeaturePlan
    reference: Bundle | None = None
    starter: Any = None  # models.starter.bundle.StarterBundle (imported lazily)

    def make_predictor(self, torch_threads: int | None = None) -> BatchPredictor:
        if self.reference is not None:
            from models.predictor import Predictor

            self.reference.tabular.prepare()  # the tree arrays now, not on the first live prediction
            # Live and replay read only the fused output, so the zero-weight tabular rows are skipped.
            return Predictor(self.reference, torch_threads=torch_threads, skip_unweighted=True)
        from models.starter.predictor import StarterPredictor

        return StarterPredictor(self.starter)

    def face_factory(self, asset_path: Path | str | None = None) -> Callable[[], FaceExtractor]:
        return face_extractor_factory(self.plan.face, asset_path=asset_path, bundle_dir=self.path)

    def describe(self) -> dict[str, Any]:
        """What ``hoovik-bot models info`` prints."""
        m = self.manifest
        return {
            "bundleId": self.bundle_id,
            "family": self.family,
            "trained": self.trained,
            "path": None if self.path is None else str(self.path),
            "extractors": {"face": self.plan.face.to_dict(), "audio": self.plan.audio.to_dict()},
            "classes": m.get("classes"),
            "provenance": m.get("provenance", {}),
            "licence": m.get("licence", {}),
            "metrics": m.get("metrics", {}),
        }


def reference_plan(bundle: Bundle) -> FeaturePlan:
    norm = bundle.norm
    return FeaturePlan(bundle.face_extractor, bundle.audio_extractor, AUDIO_MIN_SAMPLES, lambda: norm)


def load_any_bundle(path: str | Path) -> LoadedBundle:
    """Load a bundle of any known family; :class:`BundleError` names the file or the extractor."""
    root = Path(path)
    family = read_manifest(root).get("family", REFERENCE_FAMILY)
    if family == REFERENCE_FAMILY:
        bundle = load_bundle(root)
        return LoadedBundle(
            REFERENCE_FAMILY, bundle.bundle_id, bundle.trained, root, bundle.manifest, reference_plan(bundle), bundle
        )
    from models.starter.bundle import STARTER_FAMILY, load_starter_bundle

    if family != STARTER_FAMILY:
        raise BundleError(f"{root}: unknown bundle family {family!r} (this build knows reference, starter)")
    sb = load_starter_bundle(root)
    return LoadedBundle(STARTER_FAMILY, sb.bundle_id, sb.trained, root, sb.manifest, starter_plan(sb), starter=sb)


def starter_plan(sb: Any) -> FeaturePlan:
    from models.starter.norm import StarterNormaliser

    def new() -> Normaliser:
        return StarterNormaliser(sb.prior_mean, sb.prior_std, sb.prior_count, sb.face.dim)

    return FeaturePlan(sb.face, sb.audio, sb.audio.window_samples, new, sb.fusion.confidence_threshold)


def wrap_reference(bundle: Bundle) -> LoadedBundle:
    """A reference bundle already in memory (tests, the untrained demo) as a :class:`LoadedBundle`."""
    return LoadedBundle(
        REFERENCE_FAMILY, bundle.bundle_id, bundle.trained, bundle.path, bundle.manifest, reference_plan(bundle), bundle
    )


__all__ = ["BatchPredictor", "FeaturePlan", "LoadedBundle", "load_any_bundle", "reference_plan", "wrap_reference"]

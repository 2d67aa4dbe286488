"""Feature extractors as a declared part of a bundle: one typed interface per modality, one registry.

Why: a bundle's models only make sense on the features they were trained on. The reference family
consumes MediaPipe's 326-d landmark vector and Wav2Vec2's 1024-d window mean; the starter family
consumes 7 FER probabilities from a face crop and log-mel statistics. So the manifest names the
extractor of each modality (``name``, ``version``, ``dim``, and for audio the window length), and
the live engine, replay and training build exactly what the bundle declares, through the same
stages and pools. An unknown name, an unknown version or a dim that does not match the registry is
refused when the bundle loads, with the extractor's name in the message.

The heavy imports (MediaPipe, torch models, librosa) happen inside the factories, so reading a
manifest stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from models.constants import AUDIO_DIM, AUDIO_WINDOW_SAMPLES, FACE_DIM, SAMPLE_RATE
from models.face import FaceResult

Modality = Literal["face", "audio"]


class ExtractorError(ValueError):
    """A declared extractor is unknown to this build, or its declaration is inconsistent."""


@runtime_checkable
class FaceExtractor(Protocol):
    """Turns one RGB uint8 frame into the bundle's face vector (or says why there is none).

    One instance per face-pool thread: implementations hold MediaPipe graphs, which are not
    thread-safe.
    """

    def extract(self, rgb: np.ndarray) -> FaceResult: ...

    def close(self) -> None: ...


@runtime_checkable
class AudioExtractor(Protocol):
    """Turns 16 kHz mono float32 windows of the declared length into (N, dim) float32 vectors."""

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class ExtractorSpec:
    """What a bundle declares for one modality."""

    modality: Modality
    name: str
    version: int
    dim: int
    window_s: float | None = None  # audio only: the window the extractor is fed

    @property
    def window_samples(self) -> int:
        if self.window_s is None:
            raise ExtractorError(f"{self.modality} extractor {self.name!r} declares no window")
        return round(self.window_s * SAMPLE_RATE)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version, "dim": self.dim}
        if self.window_s is not None:
            out["window_s"] = self.window_s
        return out

    @classmethod
    def from_dict(cls, modality: Modality, data: Any) -> ExtractorSpec:
        if not isinstance(data, dict):
            raise ExtractorError(f"{modality} extractor declaration must be an object, got {data!r}")
        try:
            name = str(data["name"])
            version = int(data["version"])
            dim = int(data["dim"])
            window = data.get("window_s")
            window_s = None if window is None else float(window)
        except (KeyError, TypeError, ValueError) as exc:
            raise ExtractorError(f"{modality} extractor declaration {data!r} is incomplete: {exc}") from exc
        return cls(modality, name, version, dim, window_s)


# -- the known extractors -------------------------------------------------------------------------

REFERENCE_FACE = ExtractorSpec("face", "mediapipe-landmarks", 1, FACE_DIM)
REFERENCE_AUDIO = ExtractorSpec("audio", "wav2vec2-mean", 1, AUDIO_DIM, AUDIO_WINDOW_SAMPLES / SAMPLE_RATE)


def _starter_face_spec() -> ExtractorSpec:
    from models.starter.face import FER_CLASSES

    return ExtractorSpec("face", "fer-minixception", 1, len(FER_CLASSES))


def _starter_audio_spec() -> ExtractorSpec:
    from models.starter import audio_features as af

    return ExtractorSpec("audio", af.EXTRACTOR_NAME, af.EXTRACTOR_VERSION, af.FEATURE_DIM, af.WINDOW_S)


# name -> a function giving the one spec this build implements for that name
_REGISTRY: dict[tuple[str, str], Callable[[], ExtractorSpec]] = {
    ("face", REFERENCE_FACE.name): lambda: REFERENCE_FACE,
    ("audio", REFERENCE_AUDIO.name): lambda: REFERENCE_AUDIO,
    ("face", "fer-minixception"): _starter_face_spec,
    ("audio", "logmel-stats"): _starter_audio_spec,
}


def known_extractors() -> list[ExtractorSpec]:
    return [factory() for factory in _REGISTRY.values()]


def check_spec(spec: ExtractorSpec) -> ExtractorSpec:
    """Return ``spec`` if this build implements it exactly, else raise naming the extractor."""
    factory = _REGISTRY.get((spec.modality, spec.name))
    if factory is None:
        names = sorted(n for m, n in _REGISTRY if m == spec.modality)
        raise ExtractorError(f"unknown {spec.modality} extractor {spec.name!r} (this build knows {names})")
    known = factory()
    if spec.version != known.version:
        raise ExtractorError(
            f"{spec.modality} extractor {spec.name!r} version {spec.version} is not supported "
            f"(this build implements version {known.version})"
        )
    if spec.dim != known.dim:
        raise ExtractorError(
            f"{spec.modality} extractor {spec.name!r} declares dim {spec.dim}, but it produces {known.dim}"
        )
    if spec.modality == "audio" and (spec.window_s is None or abs(spec.window_s - (known.window_s or 0)) > 1e-9):
        raise ExtractorError(
            f"audio extractor {spec.name!r} declares window {spec.window_s!r} s, but it is built for {known.window_s} s"
        )
    return spec


def face_extractor_factory(
    spec: ExtractorSpec, *, asset_path: Path | str | None = None, bundle_dir: Path | None = None
) -> Callable[[], FaceExtractor]:
    """A zero-argument factory (one call per face-pool thread) for the declared face extractor."""
    check_spec(spec)
    if spec.name == REFERENCE_FACE.name:
        from models.face import FaceFeatureExtractor

        return lambda: FaceFeatureExtractor(asset_path)
    if spec.name == "fer-minixception":
        from models.starter.face import FerFaceExtractor

        if bundle_dir is None:
            raise ExtractorError("face extractor 'fer-minixception' needs its bundle's weights file")
        weights = bundle_dir / STARTER_FACE_WEIGHTS
        return lambda: FerFaceExtractor(asset_path, weights_path=weights)
    raise ExtractorError(f"no factory for face extractor {spec.name!r}")  # pragma: no cover - registry guards


def starter_audio_extractor(spec: ExtractorSpec) -> AudioExtractor:
    """The declared log-mel extractor (the reference's Wav2Vec2 is loaded by the bot's runtime)."""
    check_spec(spec)
    from models.starter.audio_features import LogMelStatsExtractor

    extractor: AudioExtractor = LogMelStatsExtractor()
    return extractor


STARTER_FACE_WEIGHTS = "face_fer.safetensors"

__all__ = [
    "REFERENCE_AUDIO",
    "REFERENCE_FACE",
    "STARTER_FACE_WEIGHTS",
    "AudioExtractor",
    "ExtractorError",
    "ExtractorSpec",
    "FaceExtractor",
    "check_spec",
    "face_extractor_factory",
    "known_extractors",
    "starter_audio_extractor",
]

"""The starter bundle format: FER face network, log-mel audio head, speaker-norm prior, anomaly detector.

Layout (a bundle directory, like the reference family's; see docs/starter.md)::

    manifest.json            family "starter", declared extractors, fusion, speaker-norm prior
                             count, anomaly threshold, metrics, licences, sha256 of every file
    face_fer.safetensors     mini-Xception (FER2013) weights + architecture, converted from Keras
    audio.safetensors        audio head arrays (``head.*``) and the speaker-norm prior
                             (``prior_mean``, ``prior_std``)
    anomaly.safetensors      scaler and IsolationForest arrays over the pooled audio features

Nothing here executes a pickle, and every file is checked against its recorded sha256 before use.
The bundle id is derived from the file hashes, and the manifest carries no timestamp, so the same
inputs and seed give a byte-identical bundle.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from models.bundle import FORMAT, FORMAT_VERSION, MANIFEST, BundleError, declared_extractors, read_manifest
from models.constants import CLASS_NAMES, SEQ_LEN
from models.extractors import STARTER_FACE_WEIGHTS, ExtractorSpec
from models.forest import IsolationForestArrays
from models.starter.audio_head import AudioHead

STARTER_FAMILY = "starter"
FILES = {
    "face": STARTER_FACE_WEIGHTS,
    "audio": "audio.safetensors",
    "anomaly": "anomaly.safetensors",
}


@dataclass(frozen=True)
class StarterFusion:
    """Temperatures of the two branches and their weights when both modalities are present."""

    temperature_face: float
    temperature_audio: float
    w_face: float
    w_audio: float
    # Below this smoothed confidence the engine shows neutral/calm (the reference's fallback),
    # fitted on the validation actors for this model's probability scale.
    confidence_threshold: float = 0.45

    def __post_init__(self) -> None:
        if not (math.isfinite(self.confidence_threshold) and 0.0 <= self.confidence_threshold <= 1.0):
            raise ValueError(f"fusion.confidence_threshold must be in [0, 1], got {self.confidence_threshold!r}")
        for name in ("temperature_face", "temperature_audio"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.01 <= value <= 100.0):
                raise ValueError(f"fusion.{name} must be a finite number in [0.01, 100], got {value!r}")
        for name in ("w_face", "w_audio"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"fusion.{name} must be in [0, 1], got {value!r}")
        if abs(self.w_face + self.w_audio - 1.0) > 1e-6:
            raise ValueError(f"fusion weights must sum to 1, got {self.w_face} + {self.w_audio}")

    def to_dict(self) -> dict[str, float]:
        return {
            "temperature_face": self.temperature_face,
            "temperature_audio": self.temperature_audio,
            "w_face": self.w_face,
            "w_audio": self.w_audio,
            "confidence_threshold": self.confidence_threshold,
        }


@dataclass(eq=False)
class StarterAnomaly:
    """StandardScaler → IsolationForest over the pooled audio features; anomalous iff score < threshold.

    Only audio has training data here (RAVDESS); rows without audio get no anomaly verdict.
    """

    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    forest: IsolationForestArrays
    threshold: float

    def __post_init__(self) -> None:
        self.scaler_mean = np.ascontiguousarray(self.scaler_mean, dtype=np.float32)
        self.scaler_scale = np.ascontiguousarray(self.scaler_scale, dtype=np.float32)
        if self.scaler_mean.shape != self.scaler_scale.shape or self.scaler_mean.ndim != 1:
            raise ValueError("anomaly scaler arrays must be two vectors of one length")
        if self.forest.n_features_in != self.scaler_mean.shape[0]:
            raise ValueError(
                f"anomaly forest expects {self.forest.n_features_in} inputs, "
                f"the scaler gives {self.scaler_mean.shape[0]}"
            )
        if not math.isfinite(self.threshold):
            raise ValueError("anomaly threshold must be finite")

    def score(self, pooled: np.ndarray) -> np.ndarray:
        x = (np.asarray(pooled, dtype=np.float32) - self.scaler_mean) / self.scaler_scale
        return np.asarray(self.forest.decision_function(x), dtype=np.float64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"scaler_mean": self.scaler_mean, "scaler_scale": self.scaler_scale}
        arrays.update({f"forest.{k}": v for k, v in self.forest.to_arrays().items()})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], threshold: float) -> StarterAnomaly:
        forest = IsolationForestArrays.from_arrays(
            {k[len("forest.") :]: v for k, v in arrays.items() if k.startswith("forest.")}
        )
        return cls(arrays["scaler_mean"], arrays["scaler_scale"], forest, float(threshold))


@dataclass(eq=False)
class StarterBundle:
    """Everything the starter predictor and the starter extractors need, in memory."""

    face: ExtractorSpec
    audio: ExtractorSpec
    head: AudioHead
    prior_mean: np.ndarray
    prior_std: np.ndarray
    prior_count: float
    fusion: StarterFusion
    anomaly: StarterAnomaly
    face_weights: bytes
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    licence: dict[str, Any] = field(default_factory=dict)
    bundle_id: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    trained: bool = True

    @property
    def family(self) -> str:
        return STARTER_FAMILY


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_starter_bundle(bundle: StarterBundle, out_dir: str | Path) -> Path:
    """Write the bundle; the same content always gives the same bytes and the same bundle id."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / FILES["face"]).write_bytes(bundle.face_weights)
    audio_arrays = {f"head.{k}": np.ascontiguousarray(v) for k, v in bundle.head.to_arrays().items()}
    audio_arrays["prior_mean"] = np.ascontiguousarray(bundle.prior_mean, dtype=np.float32)
    audio_arrays["prior_std"] = np.ascontiguousarray(bundle.prior_std, dtype=np.float32)
    save_numpy(audio_arrays, str(out / FILES["audio"]))
    save_numpy({k: np.ascontiguousarray(v) for k, v in bundle.anomaly.to_arrays().items()}, str(out / FILES["anomaly"]))
    files: dict[str, dict[str, Any]] = {}
    for name in FILES.values():
        data = (out / name).read_bytes()
        files[name] = {"sha256": _sha256_bytes(data), "bytes": len(data)}
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": STARTER_FAMILY,
        "trained": True,
        "classes": list(CLASS_NAMES),
        "seq_len": SEQ_LEN,
        "extractors": {"face": bundle.face.to_dict(), "audio": bundle.audio.to_dict()},
        "fusion": bundle.fusion.to_dict(),
        "speaker_norm": {"prior_count": bundle.prior_count},
        "anomaly": {"threshold": bundle.anomaly.threshold, "features": "pooled audio"},
        "audio_head": bundle.head.meta(),
        "metrics": bundle.metrics,
        "licence": bundle.licence,
        "provenance": bundle.provenance,
        "files": files,
    }
    bundle_id = manifest_id(manifest)
    manifest["bundle_id"] = bundle_id
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    bundle.bundle_id, bundle.manifest, bundle.path = bundle_id, manifest, out
    return out


def manifest_id(manifest: dict[str, Any]) -> str:
    """The bundle id: a hash of the whole manifest but the id itself, and so of every file's sha256.

    Editing any manifest field (``trained``, fusion weights, thresholds, licence) changes what the
    id must be, so :func:`load_starter_bundle` refuses an edited manifest. This is integrity, not
    authenticity: whoever rebuilds the bundle can mint a matching id (see docs/starter.md).
    """
    core = {k: v for k, v in manifest.items() if k != "bundle_id"}
    return "hb-starter-" + _sha256_bytes(json.dumps(core, sort_keys=True).encode())[:12]


def _verify(root: Path, manifest: dict[str, Any]) -> dict[str, bytes]:
    recorded = manifest.get("files")
    if not isinstance(recorded, dict):
        raise BundleError(f"{root / MANIFEST}: 'files' is missing")
    blobs: dict[str, bytes] = {}
    for name in FILES.values():
        path = root / name
        entry = recorded.get(name)
        if not isinstance(entry, dict):
            raise BundleError(f"{path}: not listed in manifest.json")
        if not path.is_file():
            raise BundleError(f"{path}: missing file")
        data = path.read_bytes()
        if _sha256_bytes(data) != entry.get("sha256"):
            raise BundleError(f"{path}: sha256 mismatch (file was modified or corrupted)")
        blobs[name] = data
    return blobs


def load_starter_bundle(path: str | Path) -> StarterBundle:
    """Load and verify a starter bundle; raises :class:`BundleError` naming the file or extractor."""
    root = Path(path)
    manifest = read_manifest(root)
    if manifest.get("family") != STARTER_FAMILY:
        raise BundleError(f"{root / MANIFEST}: family {manifest.get('family')!r}, expected {STARTER_FAMILY!r}")
    face, audio = declared_extractors(root, manifest)
    if list(manifest.get("classes", [])) != list(CLASS_NAMES):
        raise BundleError(f"{root / MANIFEST}: classes {manifest.get('classes')} differ from {list(CLASS_NAMES)}")
    if manifest.get("seq_len") != SEQ_LEN:
        raise BundleError(f"{root / MANIFEST}: seq_len {manifest.get('seq_len')!r}, this build needs {SEQ_LEN}")
    if manifest.get("bundle_id") != manifest_id(manifest):
        raise BundleError(
            f"{root / MANIFEST}: content does not match bundle id {manifest.get('bundle_id')!r} "
            "(the manifest was edited after the bundle was built)"
        )
    blobs = _verify(root, manifest)
    try:
        fusion = StarterFusion(**{k: float(v) for k, v in dict(manifest["fusion"]).items()})
        prior_count = float(manifest["speaker_norm"]["prior_count"])
        if not (math.isfinite(prior_count) and prior_count >= 0):
            raise ValueError(f"speaker_norm.prior_count must be finite and >= 0, got {prior_count}")
        threshold = float(manifest["anomaly"]["threshold"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{root / MANIFEST}: {exc}") from exc
    audio_path = root / FILES["audio"]
    try:
        arrays = load_numpy(str(audio_path))
        head = AudioHead.from_arrays({k[5:]: v for k, v in arrays.items() if k.startswith("head.")})
        prior_mean = np.asarray(arrays["prior_mean"], dtype=np.float32)
        prior_std = np.asarray(arrays["prior_std"], dtype=np.float32)
    except Exception as exc:
        raise BundleError(f"{audio_path}: {exc}") from exc
    if prior_mean.shape != (audio.dim,) or prior_std.shape != (audio.dim,):
        raise BundleError(f"{audio_path}: prior stats have shape {prior_mean.shape}, expected ({audio.dim},)")
    if not (np.all(np.isfinite(prior_mean)) and np.all(np.isfinite(prior_std)) and np.all(prior_std > 0)):
        raise BundleError(f"{audio_path}: prior stats must be finite with positive std")
    if head.input_dim != audio.dim:
        raise BundleError(f"{audio_path}: audio head takes {head.input_dim}-d vectors, the extractor gives {audio.dim}")
    anomaly_path = root / FILES["anomaly"]
    try:
        anomaly = StarterAnomaly.from_arrays(load_numpy(str(anomaly_path)), threshold)
    except Exception as exc:
        raise BundleError(f"{anomaly_path}: {exc}") from exc
    return StarterBundle(
        face=face,
        audio=audio,
        head=head,
        prior_mean=prior_mean,
        prior_std=prior_std,
        prior_count=prior_count,
        fusion=fusion,
        anomaly=anomaly,
        face_weights=blobs[FILES["face"]],
        provenance=dict(manifest.get("provenance", {})),
        metrics=dict(manifest.get("metrics", {})),
        licence=dict(manifest.get("licence", {})),
        bundle_id=str(manifest.get("bundle_id", "")),
        manifest=manifest,
        path=root,
    )

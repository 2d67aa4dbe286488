"""The model bundle: a versioned directory that loads without executing any pickle.

Layout::

    manifest.json              format, ids, dims, feature versions, thresholds, fusion weights,
                               temperature, provenance, trained flag, sha256 of every file
    transformer.safetensors    EmotionTransformer state dict
    norm_stats.safetensors     z-score statistics of face and audio features
    tabular.safetensors        column medians and PCA arrays
    tabular_booster.ubj        XGBoost booster in its native UBJSON format
    anomaly.safetensors        per-profile scaler, PCA and IsolationForest arrays

Every file is checked against its recorded sha256 before use, and every array against the dims
in the manifest, so a tampered, truncated or mismatched bundle fails with an error naming the file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from models.anomaly import AnomalyModel
from models.constants import (
    ANOMALY_DIM,
    ANOMALY_FEATURE_VERSION,
    AUDIO_DIM,
    CLASS_NAMES,
    DEFAULT_WAV2VEC2_ID,
    FACE_DIM,
    FACE_FEATURE_VERSION,
    SEQ_LEN,
    TABULAR_DIM,
    TABULAR_FEATURE_VERSION,
)
from models.extractors import REFERENCE_AUDIO, REFERENCE_FACE, ExtractorError, ExtractorSpec, check_spec
from models.sequence import NormStats
from models.tabular import TabularModel
from models.transformer import TransformerConfig

FORMAT = "hoovik-bot-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# A bundle family fixes which models a bundle holds and which predictor runs them.
REFERENCE_FAMILY = "reference"
FILES = {
    "transformer": "transformer.safetensors",
    "norm_stats": "norm_stats.safetensors",
    "tabular": "tabular.safetensors",
    "tabular_booster": "tabular_booster.ubj",
    "anomaly": "anomaly.safetensors",
}


class BundleError(ValueError):
    """A bundle could not be used; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class EnsembleParams:
    temperature: float = 0.3
    w_modal: float = 0.455
    w_xgb: float = 0.545


@dataclass
class Bundle:
    """Everything the predictor needs, in memory."""

    transformer_config: TransformerConfig
    transformer_state: dict[str, torch.Tensor]
    norm: NormStats
    tabular: TabularModel
    anomaly: AnomalyModel
    ensemble: EnsembleParams
    trained: bool
    provenance: dict[str, Any] = field(default_factory=dict)
    audio_model: dict[str, Any] = field(default_factory=lambda: {"source": DEFAULT_WAV2VEC2_ID})
    bundle_id: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    face_extractor: ExtractorSpec = REFERENCE_FACE
    audio_extractor: ExtractorSpec = REFERENCE_AUDIO
    family: str = REFERENCE_FAMILY


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_bundle(bundle: Bundle, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``bundle`` to ``out_dir`` (created; existing bundle files are replaced) and return it.

    The bundle id is derived from the file hashes, so the same content always gets the same id.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in bundle.transformer_state.items()}
    save_torch(state, str(out / FILES["transformer"]))
    save_numpy(_contiguous(bundle.norm.to_arrays()), str(out / FILES["norm_stats"]))
    save_numpy(_contiguous(bundle.tabular.to_arrays()), str(out / FILES["tabular"]))
    (out / FILES["tabular_booster"]).write_bytes(bundle.tabular.booster_bytes())
    save_numpy(_contiguous(bundle.anomaly.to_arrays()), str(out / FILES["anomaly"]))
    files = {name: {"sha256": _sha256(out / name), "bytes": (out / name).stat().st_size} for name in FILES.values()}
    digest = hashlib.sha256("".join(str(f["sha256"]) for f in files.values()).encode()).hexdigest()
    bundle_id = ("hb-" if bundle.trained else "hb-untrained-") + digest[:12]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": REFERENCE_FAMILY,
        "bundle_id": bundle_id,
        "created_at": bundle.provenance.get("created_at") or _dt.datetime.now(_dt.UTC).isoformat(),
        "trained": bool(bundle.trained),
        "provenance": bundle.provenance,
        "classes": list(CLASS_NAMES),
        "dims": {
            "face": FACE_DIM,
            "audio": AUDIO_DIM,
            "seq_len": SEQ_LEN,
            "tabular": TABULAR_DIM,
            "anomaly": ANOMALY_DIM,
        },
        "extractors": {"face": REFERENCE_FACE.to_dict(), "audio": REFERENCE_AUDIO.to_dict()},
        "feature_versions": {
            "face": FACE_FEATURE_VERSION,
            "tabular": TABULAR_FEATURE_VERSION,
            "anomaly": ANOMALY_FEATURE_VERSION,
        },
        "transformer": {"config": bundle.transformer_config.to_dict()},
        "tabular": bundle.tabular.meta(),
        "anomaly": bundle.anomaly.meta(),
        "ensemble": {
            "temperature": bundle.ensemble.temperature,
            "w_modal": bundle.ensemble.w_modal,
            "w_xgb": bundle.ensemble.w_xgb,
        },
        "audio_model": bundle.audio_model,
        "files": files,
    }
    _atomic_write(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    bundle.bundle_id = bundle_id
    bundle.manifest = manifest
    bundle.path = out
    return out


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    mpath = Path(path) / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{mpath}: missing (not a model bundle directory)")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{mpath}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath}: not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{mpath}: format_version {manifest.get('format_version')} is not supported (expected {FORMAT_VERSION})"
        )
    return manifest


def declared_extractors(path: Path, manifest: dict[str, Any]) -> tuple[ExtractorSpec, ExtractorSpec]:
    """The (face, audio) extractors a manifest declares, checked against this build's registry.

    Manifests written before extractors were declared are reference bundles: they get the reference
    pair, so the original's imported artefacts keep loading unchanged.
    """
    declared = manifest.get("extractors")
    if declared is None and manifest.get("family", REFERENCE_FAMILY) == REFERENCE_FAMILY:
        return REFERENCE_FACE, REFERENCE_AUDIO
    if not isinstance(declared, dict):
        raise BundleError(f"{path / MANIFEST}: 'extractors' must declare the face and audio extractors")
    try:
        face = check_spec(ExtractorSpec.from_dict("face", declared.get("face")))
        audio = check_spec(ExtractorSpec.from_dict("audio", declared.get("audio")))
    except ExtractorError as exc:
        raise BundleError(f"{path / MANIFEST}: {exc}") from exc
    return face, audio


def verify_files(path: Path, manifest: dict[str, Any]) -> None:
    """Every expected file exists and matches its recorded sha256."""
    recorded = manifest.get("files", {})
    for name in FILES.values():
        fpath = path / name
        if name not in recorded:
            raise BundleError(f"{fpath}: not listed in manifest.json")
        if not fpath.is_file():
            raise BundleError(f"{fpath}: missing file")
        actual = _sha256(fpath)
        if actual != recorded[name].get("sha256"):
            raise BundleError(f"{fpath}: sha256 mismatch (file was modified or corrupted)")


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Load and verify a bundle; raises :class:`BundleError` naming the offending file."""
    root = Path(path)
    manifest = read_manifest(root)
    family = manifest.get("family", REFERENCE_FAMILY)
    if family != REFERENCE_FAMILY:
        raise BundleError(f"{root / MANIFEST}: a {family!r} bundle, not a {REFERENCE_FAMILY!r} one")
    face_spec, audio_spec = declared_extractors(root, manifest)
    if (face_spec, audio_spec) != (REFERENCE_FACE, REFERENCE_AUDIO):
        raise BundleError(
            f"{root / MANIFEST}: the reference family runs on {REFERENCE_FACE.name!r} and {REFERENCE_AUDIO.name!r}, "
            f"not {face_spec.name!r} and {audio_spec.name!r}"
        )
    verify_files(root, manifest)
    _check_dims(root, manifest)
    cfg = TransformerConfig.from_dict(manifest["transformer"]["config"])
    try:
        state = load_torch(str(root / FILES["transformer"]))
    except Exception as exc:
        raise BundleError(f"{root / FILES['transformer']}: unreadable: {exc}") from exc
    _check_transformer(root / FILES["transformer"], cfg, state)
    try:
        norm = NormStats.from_arrays(load_numpy(str(root / FILES["norm_stats"])))
    except Exception as exc:
        raise BundleError(f"{root / FILES['norm_stats']}: {exc}") from exc
    _check_shape(root / FILES["norm_stats"], "face_mean", norm.face_mean, (FACE_DIM,))
    _check_shape(root / FILES["norm_stats"], "audio_mean", norm.audio_mean, (AUDIO_DIM,))
    try:
        tabular = TabularModel.from_arrays(
            load_numpy(str(root / FILES["tabular"])),
            manifest["tabular"],
            (root / FILES["tabular_booster"]).read_bytes(),
        )
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"{root / FILES['tabular']}: {exc}") from exc
    _check_shape(root / FILES["tabular"], "col_medians", tabular.col_medians, (TABULAR_DIM,))
    try:
        anomaly = AnomalyModel.from_arrays(load_numpy(str(root / FILES["anomaly"])), manifest["anomaly"])
    except Exception as exc:
        raise BundleError(f"{root / FILES['anomaly']}: {exc}") from exc
    ens = manifest.get("ensemble", {})
    bundle = Bundle(
        transformer_config=cfg,
        transformer_state=state,
        norm=norm,
        tabular=tabular,
        anomaly=anomaly,
        ensemble=EnsembleParams(
            float(ens.get("temperature", 0.3)),
            float(ens.get("w_modal", 0.455)),
            float(ens.get("w_xgb", 0.545)),
        ),
        trained=bool(manifest.get("trained", False)),
        provenance=dict(manifest.get("provenance", {})),
        audio_model=dict(manifest.get("audio_model", {"source": DEFAULT_WAV2VEC2_ID})),
        bundle_id=str(manifest.get("bundle_id", "")),
        manifest=manifest,
        path=root,
    )
    return bundle


def _check_dims(root: Path, manifest: dict[str, Any]) -> None:
    expected = {
        "face": FACE_DIM,
        "audio": AUDIO_DIM,
        "seq_len": SEQ_LEN,
        "tabular": TABULAR_DIM,
        "anomaly": ANOMALY_DIM,
    }
    dims = manifest.get("dims", {})
    for key, value in expected.items():
        if dims.get(key) != value:
            raise BundleError(f"{root / MANIFEST}: dims.{key} is {dims.get(key)!r}, this build needs {value}")
    if list(manifest.get("classes", [])) != list(CLASS_NAMES):
        raise BundleError(f"{root / MANIFEST}: classes {manifest.get('classes')} differ from {list(CLASS_NAMES)}")
    versions = manifest.get("feature_versions", {})
    if versions.get("anomaly") != ANOMALY_FEATURE_VERSION:
        raise BundleError(f"{root / MANIFEST}: anomaly feature version {versions.get('anomaly')!r} unsupported")
    if versions.get("tabular") != TABULAR_FEATURE_VERSION:
        raise BundleError(f"{root / MANIFEST}: tabular feature version {versions.get('tabular')!r} unsupported")


def _check_transformer(path: Path, cfg: TransformerConfig, state: dict[str, torch.Tensor]) -> None:
    from models.transformer import EmotionTransformer

    reference = EmotionTransformer(cfg).state_dict()
    missing = sorted(set(reference) - set(state))
    extra = sorted(set(state) - set(reference))
    if missing or extra:
        raise BundleError(f"{path}: state dict keys differ (missing {missing[:3]}, unexpected {extra[:3]})")
    for key, ref in reference.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise BundleError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}")


def _check_shape(path: Path, name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(np.shape(array)) != shape:
        raise BundleError(f"{path}: {name} has shape {tuple(np.shape(array))}, expected {shape}")


def _contiguous(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v) for k, v in arrays.items()}


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)

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

The manifest itself is covered by ``manifest_sha256`` (a hash of the canonical manifest without
that field, see :func:`manifest_digest`), and every field is validated (:func:`validate_manifest`)
before anything is allocated. The bundle id stays derived from the file hashes and the trained
flag, so ids of existing bundles are unchanged and are checked against the manifest too. A manifest
without ``manifest_sha256`` (written before it existed) still loads, after the same validation.
Both hashes are integrity, not authenticity: whoever can write the directory can recompute them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
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
from models.bundle_checks import (
    BundleError,
    fail,
    finite,
    int_in,
    validate_anomaly_meta,
    validate_tabular_meta,
    validate_transformer_config,
)
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

log = logging.getLogger(__name__)

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


MANIFEST_HASH = "manifest_sha256"
# A manifest is a few kB; anything near this is not one (checked before it is read).
MAX_MANIFEST_BYTES = 4 << 20
MAX_TEMPERATURE = 100.0
WEIGHT_SUM_TOLERANCE = 1e-6
_BUNDLE_ID = re.compile(r"hb-(untrained-)?[0-9a-f]{12}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
    # True when the loaded manifest carried a matching manifest_sha256 (False: a legacy manifest).
    manifest_verified: bool = False


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
    bundle_id = files_bundle_id(files, bool(bundle.trained))
    manifest: dict[str, Any] = {
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
    # Round-trip through JSON first, so the hash covers exactly what a reader will parse.
    manifest = json.loads(json.dumps(manifest, sort_keys=True))
    validate_manifest(out / MANIFEST, manifest)
    manifest[MANIFEST_HASH] = manifest_digest(manifest)
    _atomic_write(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    bundle.bundle_id = bundle_id
    bundle.manifest = manifest
    bundle.path = out
    bundle.manifest_verified = True
    return out


def files_bundle_id(files: dict[str, Any], trained: bool) -> str:
    """The reference bundle id: ``hb-`` (or ``hb-untrained-``) + a hash of the files' sha256s."""
    digest = hashlib.sha256("".join(str(files[name]["sha256"]) for name in FILES.values()).encode()).hexdigest()
    return ("hb-" if trained else "hb-untrained-") + digest[:12]


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the canonical manifest: every field but ``manifest_sha256``, keys sorted.

    A manifest that predates the family / extractor declarations means the reference family and
    extractors, so those defaults are filled in before hashing: leaving them out is not an edit.
    Integrity, not authenticity: anyone who can write the bundle can recompute it.
    """
    core = {k: v for k, v in manifest.items() if k != MANIFEST_HASH}
    core.setdefault("family", REFERENCE_FAMILY)
    if core["family"] == REFERENCE_FAMILY:
        core.setdefault("extractors", {"face": REFERENCE_FACE.to_dict(), "audio": REFERENCE_AUDIO.to_dict()})
    return hashlib.sha256(json.dumps(core, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    mpath = Path(path) / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{mpath}: missing (not a model bundle directory)")
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{mpath}: {mpath.stat().st_size} bytes, larger than any manifest ({MAX_MANIFEST_BYTES})")
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
        size = recorded[name].get("bytes")
        if isinstance(size, int) and fpath.stat().st_size != size:
            raise BundleError(f"{fpath}: {fpath.stat().st_size} bytes, manifest records {size} (modified or truncated)")
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
    _check_dims(root, manifest)
    cfg = validate_manifest(root / MANIFEST, manifest)
    verified = check_manifest_hash(root / MANIFEST, manifest)
    verify_files(root, manifest)
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
    ens = manifest["ensemble"]
    bundle = Bundle(
        transformer_config=cfg,
        transformer_state=state,
        norm=norm,
        tabular=tabular,
        anomaly=anomaly,
        ensemble=EnsembleParams(float(ens["temperature"]), float(ens["w_modal"]), float(ens["w_xgb"])),
        trained=bool(manifest.get("trained", False)),
        provenance=dict(manifest.get("provenance", {})),
        audio_model=dict(manifest.get("audio_model", {"source": DEFAULT_WAV2VEC2_ID})),
        bundle_id=str(manifest.get("bundle_id", "")),
        manifest=manifest,
        path=root,
        manifest_verified=verified,
    )
    return bundle


def check_manifest_hash(mpath: Path, manifest: dict[str, Any]) -> bool:
    """Compare ``manifest_sha256`` with the manifest; False for a legacy manifest that has none."""
    recorded = manifest.get(MANIFEST_HASH)
    if recorded is None:
        log.warning("%s: no %s (written before manifests were hashed); fields validated only", mpath, MANIFEST_HASH)
        return False
    if recorded != manifest_digest(manifest):
        raise BundleError(
            f"{mpath}: content does not match {MANIFEST_HASH} (the manifest was edited after the bundle was built)"
        )
    return True


def check_ensemble(ens: EnsembleParams, where: str) -> None:
    """Temperature finite in (0, 100]; weights finite in [0, 1] summing to 1 (within 1e-6)."""
    t, wm, wx = ens.temperature, ens.w_modal, ens.w_xgb
    if not (finite(t) and 0.0 < t <= MAX_TEMPERATURE):
        raise BundleError(f"{where}: ensemble temperature {t!r} outside (0, {MAX_TEMPERATURE}]")
    for name, w in (("w_modal", wm), ("w_xgb", wx)):
        if not (finite(w) and 0.0 <= w <= 1.0):
            raise BundleError(f"{where}: ensemble {name} {w!r} outside [0, 1]")
    if abs(wm + wx - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise BundleError(f"{where}: ensemble weights sum to {wm + wx!r}, expected 1")


def validate_manifest(mpath: Path, manifest: dict[str, Any]) -> TransformerConfig:
    """Check every field a reference manifest carries; pure, allocates nothing sized by the manifest.

    Returns the transformer config (checked against :data:`models.transformer.CONFIG_LIMITS` and
    this build's dims). Raises :class:`BundleError` naming the manifest and the field.
    """
    trained = manifest.get("trained", False)
    if not isinstance(trained, bool):
        raise fail(mpath, f"'trained' must be true or false, got {trained!r}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise fail(mpath, "'files' must map each bundle file to its sha256 and size")
    for name in FILES.values():
        entry = files.get(name)
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not _SHA256.fullmatch(entry["sha256"])
        ):
            raise fail(mpath, f"files.{name} must record a sha256 (64 hex digits)")
        if "bytes" in entry and not int_in(entry["bytes"], 0, 1 << 40):
            raise fail(mpath, f"files.{name}.bytes must be a size in bytes, got {entry['bytes']!r}")
    bundle_id = manifest.get("bundle_id")
    if not isinstance(bundle_id, str) or not _BUNDLE_ID.fullmatch(bundle_id):
        raise fail(mpath, f"bundle_id {bundle_id!r} is not a reference bundle id")
    expected_id = files_bundle_id(files, trained)
    if bundle_id != expected_id:
        raise fail(
            mpath,
            f"bundle_id {bundle_id!r} does not match the files and trained={trained} (expected {expected_id!r}); "
            "the manifest was edited",
        )
    for key in ("provenance", "audio_model"):
        if not isinstance(manifest.get(key, {}), dict):
            raise fail(mpath, f"{key!r} must be an object")
    audio_model = manifest.get("audio_model", {})
    if "hidden_size" in audio_model and audio_model["hidden_size"] != AUDIO_DIM:
        raise fail(mpath, f"audio_model.hidden_size {audio_model['hidden_size']!r}, this build needs {AUDIO_DIM}")
    if "window_s" in audio_model and not (finite(audio_model["window_s"]) and 0 < audio_model["window_s"] <= 60):
        raise fail(mpath, f"audio_model.window_s {audio_model['window_s']!r} outside (0, 60]")
    if "source" in audio_model and not isinstance(audio_model["source"], str):
        raise fail(mpath, "audio_model.source must be a string")
    if manifest.get("feature_versions", {}).get("face", FACE_FEATURE_VERSION) != FACE_FEATURE_VERSION:
        raise fail(mpath, f"face feature version {manifest['feature_versions']['face']!r} unsupported")
    ens = manifest.get("ensemble")
    if not isinstance(ens, dict) or any(k not in ens for k in ("temperature", "w_modal", "w_xgb")):
        raise fail(mpath, "'ensemble' must hold temperature, w_modal and w_xgb")
    check_ensemble(EnsembleParams(ens["temperature"], ens["w_modal"], ens["w_xgb"]), str(mpath))
    cfg = validate_transformer_config(mpath, manifest.get("transformer"))
    validate_tabular_meta(mpath, manifest.get("tabular"))
    validate_anomaly_meta(mpath, manifest.get("anomaly"))
    return cfg


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

    # Shapes only: on the meta device nothing is allocated, whatever the (bounded) config says.
    with torch.device("meta"):
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

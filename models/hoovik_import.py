"""Convert the original system's artefact directory into a model bundle.

The original's layout (docs/models.md, "Importing the original's artefacts"): ``models/modal/best_modal.pt`` (a
torch state dict),
``models/xgb/{pca,xgb_model}.joblib`` + ``col_medians.npy``, ``models/anomaly/iso_*.joblib``,
``models/ensemble/weights.json`` and ``extracted_dataset/norm_stats.npz``. Its joblib files are
pickles; they are read only through the restricted unpickler in :mod:`models.hoovik_pickles`, and
the state dict through ``torch.load(weights_only=True)``. The bundle this writes loads without any
pickle and reproduces the original's outputs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from models.bundle import Bundle, BundleError, EnsembleParams, check_ensemble, save_bundle
from models.constants import AUDIO_DIM, DEFAULT_WAV2VEC2_ID
from models.hoovik_pickles import HoovikArtifactError, load_anomaly_dir, load_tabular
from models.sequence import NormStats
from models.transformer import TransformerConfig, load_hoovik_checkpoint


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise HoovikArtifactError(f"{path}: missing ({what})")
    return path


def _read_weights(path: Path) -> EnsembleParams:
    try:
        data = json.loads(path.read_text())
        params = EnsembleParams(float(data["temperature"]), float(data["w_modal"]), float(data["w_xgb"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HoovikArtifactError(f"{path}: unreadable ensemble weights: {exc}") from exc
    try:
        check_ensemble(params, str(path))  # finite, T in (0, 100], weights in [0, 1] summing to 1
    except BundleError as exc:
        raise HoovikArtifactError(str(exc)) from exc
    return params


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_hoovik_artifacts(root: str | Path) -> Bundle:
    """Read an original artefact directory into an in-memory bundle (trained=True)."""
    base = Path(root)
    if not base.is_dir():
        raise HoovikArtifactError(f"{base}: not a directory")
    modal = _require(base / "models" / "modal" / "best_modal.pt", "EmotionTransformer state dict")
    xgb_dir = _require(base / "models" / "xgb", "PCA + XGBoost directory")
    anomaly_dir = _require(base / "models" / "anomaly", "anomaly detectors directory")
    weights = _require(base / "models" / "ensemble" / "weights.json", "ensemble weights")
    norm_path = _require(base / "extracted_dataset" / "norm_stats.npz", "normalisation statistics")
    config = TransformerConfig()
    state = load_hoovik_checkpoint(modal)
    sources = [modal, weights, norm_path, *sorted(xgb_dir.glob("*")), *sorted(anomaly_dir.glob("*"))]
    provenance: dict[str, Any] = {
        "kind": "hoovik-import",
        "source_dir": str(base.resolve()),
        "source_files": {str(p.relative_to(base)): _sha256(p) for p in sources if p.is_file()},
    }
    return Bundle(
        transformer_config=config,
        transformer_state=state,
        norm=NormStats.from_hoovik_npz(norm_path),
        tabular=load_tabular(xgb_dir),
        anomaly=load_anomaly_dir(anomaly_dir),
        ensemble=_read_weights(weights),
        trained=True,
        provenance=provenance,
        audio_model={"source": DEFAULT_WAV2VEC2_ID, "hidden_size": AUDIO_DIM, "window_s": 0.6},
    )


def import_hoovik(root: str | Path, out_dir: str | Path) -> Path:
    """Read the original's artefacts and write them as a bundle in ``out_dir``."""
    return save_bundle(read_hoovik_artifacts(root), out_dir)

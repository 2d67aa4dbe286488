"""Trained components on disk, in a run folder, each tagged with the fingerprint of its inputs.

``train transformer`` / ``xgb`` / ``anomaly`` / ``calibrate`` each write one component under
``<run>/components/``; ``train all`` reuses a component whose fingerprint matches (same dataset
content hash, same seed, same config section and, for the calibration, the same upstream
components) and retrains any other. A run interrupted after the transformer therefore resumes
at the XGBoost step, and changing one setting retrains only what depends on it.

Formats are the bundle's (safetensors, XGBoost UBJSON, JSON): no pickles anywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from models.anomaly import AnomalyModel
from models.bundle import EnsembleParams
from models.tabular import TabularModel
from models.training.runtime import json_safe
from models.transformer import TransformerConfig

COMPONENTS = "components"
NAMES = ("transformer", "tabular", "anomaly", "ensemble")


def fingerprint(name: str, dataset_hash: str, seed: int, section: Any, upstream: dict[str, str] | None = None) -> str:
    """sha256 of everything a component depends on."""
    payload = {"name": name, "dataset": dataset_hash, "seed": seed, "config": section, "upstream": upstream or {}}
    return hashlib.sha256(json.dumps(json_safe(payload), sort_keys=True).encode()).hexdigest()


class ComponentStore:
    """Reads and writes the components of one run folder."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / COMPONENTS
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- metadata ---------------------------------------------------------------------------------

    def _meta_path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def _write_meta(self, name: str, fp: str, metrics: dict[str, Any], **extra: Any) -> None:
        meta = {"component": name, "fingerprint": fp, "metrics": metrics, **extra}
        self._meta_path(name).write_text(json.dumps(json_safe(meta), indent=1, sort_keys=True) + "\n")

    def meta(self, name: str) -> dict[str, Any] | None:
        path = self._meta_path(name)
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def matches(self, name: str, fp: str) -> bool:
        """The component exists and was made from exactly these inputs."""
        meta = self.meta(name)
        return meta is not None and meta.get("fingerprint") == fp

    # -- transformer ------------------------------------------------------------------------------

    def save_transformer(
        self, state: dict[str, torch.Tensor], config: TransformerConfig, fp: str, metrics: dict[str, Any]
    ) -> None:
        save_torch(
            {k: v.detach().cpu().contiguous() for k, v in state.items()}, str(self.dir / "transformer.safetensors")
        )
        self._write_meta("transformer", fp, metrics, config=config.to_dict())

    def load_transformer(self) -> tuple[dict[str, torch.Tensor], TransformerConfig, dict[str, Any]]:
        meta = self._require("transformer")
        state = load_torch(str(self.dir / "transformer.safetensors"))
        return state, TransformerConfig.from_dict(meta["config"]), meta["metrics"]

    # -- tabular ----------------------------------------------------------------------------------

    def save_tabular(self, model: TabularModel, fp: str, metrics: dict[str, Any]) -> None:
        save_numpy(_contiguous(model.to_arrays()), str(self.dir / "tabular.safetensors"))
        (self.dir / "tabular_booster.ubj").write_bytes(model.booster_bytes())
        self._write_meta("tabular", fp, metrics, model=model.meta())

    def load_tabular(self) -> tuple[TabularModel, dict[str, Any]]:
        meta = self._require("tabular")
        model = TabularModel.from_arrays(
            load_numpy(str(self.dir / "tabular.safetensors")),
            meta["model"],
            (self.dir / "tabular_booster.ubj").read_bytes(),
        )
        return model, meta["metrics"]

    # -- anomaly ----------------------------------------------------------------------------------

    def save_anomaly(self, model: AnomalyModel, fp: str, metrics: dict[str, Any]) -> None:
        save_numpy(_contiguous(model.to_arrays()), str(self.dir / "anomaly.safetensors"))
        self._write_meta("anomaly", fp, metrics, model=model.meta())

    def load_anomaly(self) -> tuple[AnomalyModel, dict[str, Any]]:
        meta = self._require("anomaly")
        return AnomalyModel.from_arrays(load_numpy(str(self.dir / "anomaly.safetensors")), meta["model"]), meta[
            "metrics"
        ]

    # -- ensemble ---------------------------------------------------------------------------------

    def save_ensemble(self, params: EnsembleParams, fp: str, metrics: dict[str, Any]) -> None:
        self._write_meta("ensemble", fp, metrics, params=asdict(params))

    def load_ensemble(self) -> tuple[EnsembleParams, dict[str, Any]]:
        meta = self._require("ensemble")
        return EnsembleParams(**meta["params"]), meta["metrics"]

    def _require(self, name: str) -> dict[str, Any]:
        meta = self.meta(name)
        if meta is None:
            raise FileNotFoundError(
                f"{self._meta_path(name)}: component {name!r} not trained yet (run `hoovik-bot train "
                f"{'xgb' if name == 'tabular' else name if name != 'ensemble' else 'calibrate'}` or `train all`)"
            )
        return meta


def _contiguous(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """safetensors needs C-contiguous buffers."""
    return {k: np.ascontiguousarray(v) for k, v in arrays.items()}

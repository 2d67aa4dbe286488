"""``train all`` and the single-component steps: dataset → components → bundle → test report.

Order: check the dataset (before anything is trained or written) → transformer → XGBoost →
anomaly detectors → calibration on val through a provisional bundle → the final bundle
(``models/bundle.py`` format, ``trained=True``, provenance with the dataset hash, config, seed and
metrics) → reload it with :func:`models.bundle.load_bundle` → evaluate the test split through
:class:`models.predictor.Predictor` → ``report/``. Each step reuses its stored component when the
fingerprint of its inputs matches (see :mod:`.components`), unless ``force``.

Run folder layout::

    <out>/config.json        the full TrainConfig used
    <out>/metrics.jsonl      one JSON object per epoch / step
    <out>/components/        transformer, tabular, anomaly, ensemble (+ fingerprints and metrics)
    <out>/bundle/            the model bundle
    <out>/report/            report.json, report.md, confusion.png
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.anomaly import AnomalyModel
from models.bundle import Bundle, EnsembleParams, load_bundle, save_bundle
from models.constants import AUDIO_DIM, DEFAULT_WAV2VEC2_ID
from models.predictor import Predictor
from models.tabular import TabularModel
from models.training.anomaly_train import train_anomaly
from models.training.calibrate import calibrate
from models.training.components import ComponentStore, fingerprint
from models.training.config import TrainConfig
from models.training.dataset import FeatureDataset, load_dataset
from models.training.evaluate import evaluate_bundle, predict_split
from models.training.report import write_report
from models.training.runtime import MetricsLog, json_safe
from models.training.splits import check_trainable
from models.training.transformer_train import train_transformer
from models.training.xgb_train import train_tabular
from models.transformer import TransformerConfig

log = logging.getLogger(__name__)

BUNDLE_DIR = "bundle"
REPORT_DIR = "report"


@dataclass
class Run:
    """One training run: the dataset, the config, the run folder and its component store."""

    ds: FeatureDataset
    cfg: TrainConfig
    out: Path
    store: ComponentStore
    log: MetricsLog
    dataset_hash: str
    warnings: list[str]

    def fp(self, name: str) -> str:
        sections: dict[str, Any] = {
            "transformer": self.cfg.transformer,
            "tabular": self.cfg.xgb,
            "anomaly": self.cfg.anomaly,
        }
        if name == "ensemble":
            upstream = {
                n: (self.store.meta(n) or {}).get("fingerprint", "") for n in ("transformer", "tabular", "anomaly")
            }
            return fingerprint(name, self.dataset_hash, self.cfg.seed, asdict(self.cfg.calibrate), upstream)
        return fingerprint(name, self.dataset_hash, self.cfg.seed, asdict(sections[name]))


def open_run(dataset: Path | FeatureDataset, out_dir: Path, cfg: TrainConfig) -> Run:
    """Load and check the dataset — raising before anything is trained or written — then set up ``out_dir``."""
    ds = dataset if isinstance(dataset, FeatureDataset) else load_dataset(dataset)
    warnings = check_trainable(ds.label, ds.split, ds.actor.tolist(), ds.corpus.tolist())
    for w in warnings:
        log.warning("dataset: %s", w)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(json_safe(cfg.to_dict()), indent=1, sort_keys=True) + "\n")
    run = Run(
        ds=ds,
        cfg=cfg,
        out=out,
        store=ComponentStore(out),
        log=MetricsLog(out / "metrics.jsonl"),
        dataset_hash=str(ds.meta.get("content_hash") or ds.content_hash()),
        warnings=warnings,
    )
    run.log.write("run_start", dataset=str(ds.path), dataset_hash=run.dataset_hash, seed=cfg.seed, warnings=warnings)
    return run


# --------------------------------------------------------------------------------------------------
# Steps


def step_transformer(
    run: Run, force: bool = False
) -> tuple[dict[str, torch.Tensor], TransformerConfig, dict[str, Any]]:
    fp = run.fp("transformer")
    if not force and run.store.matches("transformer", fp):
        run.log.write("reuse", component="transformer")
        return run.store.load_transformer()
    result = train_transformer(run.ds, run.cfg.transformer, run.cfg.seed, run.log)
    run.store.save_transformer(result.state, result.config, fp, result.metrics)
    return result.state, result.config, result.metrics


def step_tabular(run: Run, force: bool = False) -> tuple[TabularModel, dict[str, Any]]:
    fp = run.fp("tabular")
    if not force and run.store.matches("tabular", fp):
        run.log.write("reuse", component="tabular")
        return run.store.load_tabular()
    model, metrics = train_tabular(run.ds, run.cfg.xgb, run.cfg.seed, run.log)
    run.store.save_tabular(model, fp, metrics)
    return model, metrics


def step_anomaly(run: Run, force: bool = False) -> tuple[AnomalyModel, dict[str, Any]]:
    fp = run.fp("anomaly")
    if not force and run.store.matches("anomaly", fp):
        run.log.write("reuse", component="anomaly")
        return run.store.load_anomaly()
    model, metrics = train_anomaly(run.ds, run.cfg.anomaly, run.cfg.seed, run.log)
    run.store.save_anomaly(model, fp, metrics)
    return model, metrics


def _bundle(run: Run, ensemble: EnsembleParams, provenance: dict[str, Any] | None = None) -> Bundle:
    """A bundle from the stored components (they must exist)."""
    state, config, _ = run.store.load_transformer()
    tabular, _ = run.store.load_tabular()
    anomaly, _ = run.store.load_anomaly()
    extraction = run.ds.meta.get("extraction", {})
    return Bundle(
        transformer_config=config,
        transformer_state=state,
        norm=run.ds.norm,
        tabular=tabular,
        anomaly=anomaly,
        ensemble=ensemble,
        trained=True,
        provenance=provenance or {},
        audio_model={
            "source": extraction.get("audio_model", run.ds.meta.get("audio_model", DEFAULT_WAV2VEC2_ID)),
            "hidden_size": AUDIO_DIM,
            "window_s": 0.6,
        },
    )


def step_calibrate(run: Run, force: bool = False) -> tuple[EnsembleParams, dict[str, Any]]:
    """Fit T and w on val from the predictor's own outputs (a provisional bundle with T = 1)."""
    fp = run.fp("ensemble")
    if not force and run.store.matches("ensemble", fp):
        run.log.write("reuse", component="ensemble")
        return run.store.load_ensemble()
    provisional = _bundle(run, EnsembleParams(temperature=1.0, w_modal=0.5, w_xgb=0.5))
    val = predict_split(Predictor(provisional), run.ds, "val", run.cfg.eval_batch_size)
    ok = val.y_pred >= 0
    params, metrics = calibrate(
        val.fusion_logits[ok], val.p_tabular[ok], val.profiles[ok], val.y_true[ok], run.cfg.calibrate, run.cfg.seed
    )
    run.log.write("calibration_done", **metrics)
    run.store.save_ensemble(params, fp, metrics)
    return params, metrics


# --------------------------------------------------------------------------------------------------
# train all


@dataclass
class TrainAllResult:
    bundle_path: Path
    report_path: Path
    report: dict[str, Any]


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("hoovik-bot", "torch", "xgboost-cpu", "scikit-learn", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _dataset_info(ds: FeatureDataset) -> dict[str, Any]:
    skipped = ds.meta.get("skipped", [])
    errors = [s for s in skipped if s.get("kind") != "dropped"]
    return {
        "path": str(ds.path) if ds.path else None,
        "content_hash": str(ds.meta.get("content_hash") or ds.content_hash()),
        "format_version": ds.meta.get("format_version"),
        "n": len(ds),
        "train": int(np.sum(ds.split == 0)),
        "val": int(np.sum(ds.split == 1)),
        "test": int(np.sum(ds.split == 2)),
        "skipped_errors": len(errors),
        "dropped": len(skipped) - len(errors),
        "skipped_examples": errors[:20],
    }


def train_all(
    dataset: Path | FeatureDataset, out_dir: Path, cfg: TrainConfig | None = None, force: bool = False
) -> TrainAllResult:
    """Every step, then the bundle and the test report; see the module docstring."""
    cfg = cfg or TrainConfig()
    started = time.monotonic()
    run = open_run(dataset, out_dir, cfg)
    _, _, m_transformer = step_transformer(run, force)
    _, m_xgb = step_tabular(run, force)
    _, m_anomaly = step_anomaly(run, force)
    ensemble, m_ensemble = step_calibrate(run, force)
    components = {"transformer": m_transformer, "xgb": m_xgb, "anomaly": m_anomaly, "ensemble": m_ensemble}
    provenance: dict[str, Any] = {
        "kind": "trained",
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(),
        "seed": cfg.seed,
        "dataset": _dataset_info(run.ds),
        "config": cfg.to_dict(),
        "metrics": components,
        "fingerprints": {
            n: (run.store.meta(n) or {}).get("fingerprint") for n in ("transformer", "tabular", "anomaly", "ensemble")
        },
        "versions": _versions(),
    }
    bundle_dir = save_bundle(_bundle(run, ensemble, json_safe(provenance)), run.out / BUNDLE_DIR)
    bundle = load_bundle(bundle_dir)  # evaluate what was written, as the bot will load it
    evaluation = evaluate_bundle(bundle, run.ds, "test", cfg.eval_batch_size)
    run.log.write("test", **evaluation.metrics)
    bundle.provenance["metrics"]["test"] = json_safe(evaluation.metrics)
    save_bundle(bundle, bundle_dir)  # same files and id; the manifest now carries the test metrics
    report = {
        "bundle_id": bundle.bundle_id,
        "bundle_path": str(bundle_dir),
        "seed": cfg.seed,
        "dataset": _dataset_info(run.ds),
        "dataset_warnings": run.warnings,
        "test": evaluation.metrics,
        "confusion": evaluation.confusion.tolist(),
        "confusion_normalised": evaluation.confusion_normalised.tolist(),
        "components": components,
        "seconds": round(time.monotonic() - started, 3),
    }
    report_path = write_report(run.out / REPORT_DIR, report, evaluation.confusion_normalised)
    run.log.write("run_done", bundle_id=bundle.bundle_id, seconds=report["seconds"])
    return TrainAllResult(bundle_path=bundle_dir, report_path=report_path, report=report)

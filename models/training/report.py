"""The evaluation report of a training run: ``report.json``, ``report.md`` and ``confusion.png``.

The markdown summary is what a person reads after ``train all``: the bundle id, the dataset and how
many clips were lost in extraction (and why), the test metrics overall, per class, per profile and
with one modality removed, the anomaly flag rates, and what each component measured on val.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from models.constants import CLASS_NAMES
from models.training.runtime import json_safe

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CONFUSION_PNG = "confusion.png"


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> None:
    """Row-normalised confusion matrix as a PNG (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=100)
    try:
        im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="Blues")
        ax.set_xticks(range(len(CLASS_NAMES)), labels=list(CLASS_NAMES), rotation=35, ha="right")
        ax.set_yticks(range(len(CLASS_NAMES)), labels=list(CLASS_NAMES))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                colour = "white" if matrix[i, j] > 0.5 else "black"
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color=colour, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        fig.savefig(path, metadata={"Software": None})
    finally:
        plt.close(fig)


def _pct(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{100 * float(value):.1f} %"


def markdown(report: dict[str, Any]) -> str:
    """A short human summary of ``report`` (the same content as report.json)."""
    test = report["test"]
    ds = report["dataset"]
    lines = [
        "# Training report",
        "",
        f"- bundle: `{report['bundle_id']}` at `{report['bundle_path']}`",
        f"- dataset: `{ds['path']}` (hash `{ds['content_hash'][:16]}`), {ds['n']} clips: "
        f"train {ds['train']}, val {ds['val']}, test {ds['test']}",
        f"- clips lost in extraction: {ds['skipped_errors']} unreadable/unusable, {ds['dropped']} dropped "
        f"(classes we do not train)",
        f"- seed {report['seed']}",
        "",
        "## Test split (through the live predictor)",
        "",
        f"- accuracy **{_pct(test['accuracy'])}**, balanced accuracy **{_pct(test['balanced_accuracy'])}** "
        f"on {test['n']} clips ({test['errors']} predictor errors)",
        "",
        "| class | recall |",
        "|---|---|",
    ]
    lines += [f"| {name} | {_pct(r)} |" for name, r in test["per_class_recall"].items()]
    lines += ["", "| profile | clips | accuracy | balanced accuracy | anomaly flag rate |", "|---|---|---|---|---|"]
    for profile, m in test["profiles"].items():
        rate = test["anomaly_flag_rate"].get(profile)
        lines.append(
            f"| {profile} | {m['n']} | {_pct(m['accuracy'])} | {_pct(m['balanced_accuracy'])} | {_pct(rate)} |"
        )
    if test.get("ablation"):
        lines += ["", "Clips with both modalities, one removed:", ""]
        for name, m in test["ablation"].items():
            lines.append(f"- {name}: accuracy {_pct(m['accuracy'])}, balanced {_pct(m['balanced_accuracy'])}")
    tr = report["components"]
    ens = {
        k: float(tr["ensemble"].get(k, float("nan")))
        for k in ("temperature", "val_nll_t1", "val_nll_fitted", "w_modal")
    }
    lines += [
        "",
        f"![confusion matrix]({CONFUSION_PNG})",
        "",
        "## Components (val split)",
        "",
        f"- transformer: accuracy {_pct(tr['transformer'].get('val_accuracy'))}, balanced "
        f"{_pct(tr['transformer'].get('val_balanced_accuracy'))}, best from phase {tr['transformer'].get('best_from')}",
        f"- xgb: {tr['xgb'].get('pca_components')} PCA components, best iteration {tr['xgb'].get('best_iteration')}, "
        f"accuracy {_pct(tr['xgb'].get('val_accuracy'))}",
        f"- calibration: T = {ens['temperature']:.4f} (val NLL {ens['val_nll_t1']:.4f} → "
        f"{ens['val_nll_fitted']:.4f}), w_modal = {ens['w_modal']:.3f}",
        "- anomaly: "
        + ", ".join(
            f"{k} thr {v['threshold']:.4f} (val flag {_pct(v['flag_rate'])})"
            for k, v in tr["anomaly"].get("detectors", {}).items()
            if "threshold" in v
        ),
    ]
    if ds.get("skipped_examples"):
        lines += ["", "## Skipped clips", ""]
        lines += [f"- `{s['path']}`: {s['reason']}" for s in ds["skipped_examples"]]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, report: dict[str, Any], confusion_normalised: np.ndarray) -> Path:
    """Write the three report files into ``out_dir``; returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = json_safe(report)
    (out_dir / REPORT_JSON).write_text(json.dumps(clean, indent=1, sort_keys=True) + "\n")
    plot_confusion(
        confusion_normalised, out_dir / CONFUSION_PNG, f"test confusion (row-normalised), n={report['test']['n']}"
    )
    md = out_dir / REPORT_MD
    md.write_text(markdown(report))
    return md

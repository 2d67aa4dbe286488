"""``hoovik-bot train all`` on a synthetic dataset: it learns, it is reproducible, it refuses bad data.

The learned model is checked the way the bot would use it: the bundle is loaded with
``models.bundle.load_bundle`` and run through ``models.predictor.Predictor``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main
from models.bundle import load_bundle
from models.constants import NUM_CLASSES, PROFILES
from models.predictor import Predictor
from models.training.dataset import load_dataset, save_dataset
from models.training.metrics import balanced_accuracy
from models.training.splits import DatasetError
from models.training.synthetic import SyntheticSpec, make_synthetic_dataset

CHANCE = 1.0 / NUM_CLASSES


def _train_all(dataset: Path, out: Path, config: Path, *extra: str) -> dict[str, object]:
    code = main(["train", "all", "--dataset", str(dataset), "--out", str(out), "--config", str(config), *extra])
    assert code == 0
    return json.loads((out / "report" / "report.json").read_text())


@pytest.fixture(scope="module")
def run_a(synthetic_dataset_dir: Path, small_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run_a")
    _train_all(synthetic_dataset_dir, out, small_config)
    return out


def test_bundle_learned_through_live_predictor(run_a: Path, synthetic_dataset_dir: Path) -> None:
    bundle = load_bundle(run_a / "bundle")
    assert bundle.trained
    assert bundle.provenance["dataset"]["content_hash"] == load_dataset(synthetic_dataset_dir).content_hash()
    assert bundle.provenance["seed"] == 42
    assert bundle.provenance["config"]["xgb"]["n_estimators"] == 60

    ds = load_dataset(synthetic_dataset_dir)
    rows = ds.indices("test")
    xf, xa, fm, am = ds.normalised(rows, bundle.norm)
    y = ds.label[rows]
    predictor = Predictor(bundle)
    preds = predictor.predict_batch(xf, xa, fm, am)
    assert all(p.status == "ok" for p in preds)
    pred = np.array([p.label_index for p in preds])
    profiles = np.array([p.profile for p in preds])
    bal = balanced_accuracy(y, pred)
    assert bal > 0.6, f"test balanced accuracy {bal:.3f}"
    for profile in PROFILES:
        sel = profiles == profile
        assert sel.sum() >= 5, f"too few {profile} test clips to judge"
        acc = float(np.mean(pred[sel] == y[sel]))
        assert acc > 2 * CHANCE, f"{profile}: accuracy {acc:.3f} on {sel.sum()} clips"

    # Modality dropout: clips that have both still work with either modality removed.
    both = profiles == "both"
    for drop_face in (True, False):
        f2 = np.zeros_like(xf[both]) if drop_face else xf[both]
        fm2 = np.zeros_like(fm[both]) if drop_face else fm[both]
        a2 = xa[both] if drop_face else np.zeros_like(xa[both])
        am2 = am[both] if drop_face else np.zeros_like(am[both])
        single = np.array([p.label_index for p in predictor.predict_batch(f2, a2, fm2, am2)])
        assert balanced_accuracy(y[both], single) > 2 * CHANCE


def test_report_contents(run_a: Path) -> None:
    report = json.loads((run_a / "report" / "report.json").read_text())
    test = report["test"]
    assert test["balanced_accuracy"] > 0.6
    assert set(test["per_class_recall"]) == {"angry", "fearful", "disgust", "happy", "sad", "neutral/calm"}
    assert set(test["profiles"]) == set(PROFILES)
    assert set(test["anomaly_flag_rate"]) == set(PROFILES)
    assert all(0.0 <= r <= 1.0 for r in test["anomaly_flag_rate"].values())
    assert report["dataset"]["skipped_errors"] == 1  # the unreadable clip recorded at extraction
    cm = np.array(report["confusion_normalised"])
    assert cm.shape == (6, 6) and np.allclose(cm.sum(axis=1), 1.0)
    png = (run_a / "report" / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    md = (run_a / "report" / "report.md").read_text()
    assert "balanced accuracy" in md and "1 unreadable" in md
    # Calibration fitted a temperature by NLL: the val NLL did not get worse.
    ens = report["components"]["ensemble"]
    assert ens["val_nll_fitted"] <= ens["val_nll_t1"] + 1e-9
    # Anomaly thresholds sit at the 10 % quantile of the val scores.
    for det in report["components"]["anomaly"]["detectors"].values():
        if "flag_rate" in det:
            assert abs(det["flag_rate"] - 0.10) < 0.1
    events = [json.loads(line)["event"] for line in (run_a / "metrics.jsonl").read_text().splitlines()]
    assert events.count("epoch") >= 3 and "xgb_done" in events and "test" in events
    phases = {json.loads(line).get("phase") for line in (run_a / "metrics.jsonl").read_text().splitlines()}
    assert {"A", "B", "C"} <= phases


def test_same_seed_same_bundle_and_metrics(
    run_a: Path, synthetic_dataset_dir: Path, small_config: Path, tmp_path: Path
) -> None:
    report_b = _train_all(synthetic_dataset_dir, tmp_path / "run_b", small_config)
    report_a = json.loads((run_a / "report" / "report.json").read_text())
    man_a = json.loads((run_a / "bundle" / "manifest.json").read_text())
    man_b = json.loads((tmp_path / "run_b" / "bundle" / "manifest.json").read_text())
    for name in ("tabular.safetensors", "tabular_booster.ubj"):
        assert man_a["files"][name]["sha256"] == man_b["files"][name]["sha256"], name
    assert man_a["bundle_id"] == man_b["bundle_id"]  # every file, transformer and forests included
    assert report_a["test"] == report_b["test"]
    assert report_a["components"]["ensemble"] == report_b["components"]["ensemble"]

    # A different seed changes the tabular model (the seed is really used).
    code = main(
        [
            "train",
            "xgb",
            "--dataset",
            str(synthetic_dataset_dir),
            "--out",
            str(tmp_path / "run_c"),
            "--config",
            str(small_config),
            "--seed",
            "1",
        ]
    )
    assert code == 0
    other = json.loads((tmp_path / "run_c" / "components" / "tabular.json").read_text())
    again = json.loads((run_a / "components" / "tabular.json").read_text())
    assert other["fingerprint"] != again["fingerprint"]


def test_component_commands_then_all_reuses(
    run_a: Path, synthetic_dataset_dir: Path, small_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "steps"
    common = ["--dataset", str(synthetic_dataset_dir), "--out", str(out), "--config", str(small_config)]
    for step in ("transformer", "xgb", "anomaly", "calibrate"):
        assert main(["train", step, *common]) == 0, step
    assert main(["train", "all", *common]) == 0
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    reused = {e["component"] for e in events if e["event"] == "reuse"}
    assert reused == {"transformer", "tabular", "anomaly", "ensemble"}
    # Step by step gives the very bundle `train all` gives in one go.
    man_a = json.loads((run_a / "bundle" / "manifest.json").read_text())
    man_s = json.loads((out / "bundle" / "manifest.json").read_text())
    assert man_a["bundle_id"] == man_s["bundle_id"]


def test_empty_class_fails_before_training(
    tmp_path: Path, small_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = make_synthetic_dataset(SyntheticSpec(classes=(0, 1, 3, 4, 5), actors_per_corpus=4, clips_per_actor_class=1))
    save_dataset(ds, tmp_path / "ds")
    with pytest.raises(DatasetError, match="class 'disgust' has no training samples"):
        from models.training.config import load_config
        from models.training.pipeline import train_all

        train_all(tmp_path / "ds", tmp_path / "run", load_config(small_config))
    assert not (tmp_path / "run").exists()  # nothing was written, nothing trained
    code = main(
        [
            "train",
            "all",
            "--dataset",
            str(tmp_path / "ds"),
            "--out",
            str(tmp_path / "run2"),
            "--config",
            str(small_config),
        ]
    )
    assert code == 1
    assert "disgust" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()


def test_too_few_actors_is_a_clear_error() -> None:
    with pytest.raises(DatasetError, match=r"corpus '(crema-d|ravdess)' has 2 actor\(s\)"):
        make_synthetic_dataset(SyntheticSpec(actors_per_corpus=2, clips_per_actor_class=1))

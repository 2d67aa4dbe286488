"""The whole predictor, from the imported golden artefact directory, against every golden case.

The bundle is written by ``import_hoovik`` (restricted unpickler) and re-loaded from disk, so these
tests cover the importer, the bundle format and the predictor together.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.bundle import BundleError, load_bundle, save_bundle
from models.constants import CLASS_NAMES
from models.hoovik_import import import_hoovik
from models.predictor import Predictor

ATOL = 1e-5


@pytest.fixture(scope="module")
def bundle_dir(golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_hoovik(golden_dir / "artifacts", tmp_path_factory.mktemp("bundle") / "golden")


@pytest.fixture(scope="module")
def predictor(bundle_dir: Path) -> Predictor:
    return Predictor(load_bundle(bundle_dir), torch_threads=2)


def _cases(golden_dir: Path) -> list[Path]:
    return sorted(p for p in (golden_dir / "cases").iterdir() if (p / "result.json").is_file())


def _inputs(case: Path) -> tuple[np.ndarray, ...]:
    return tuple(np.load(case / f"input_{k}.npy") for k in ("xf", "xa", "fm", "am"))


def test_every_golden_case_is_reproduced(golden_dir: Path, predictor: Predictor) -> None:
    cases = _cases(golden_dir)
    assert len(cases) == 33
    for case in cases:
        expected = json.loads((case / "result.json").read_text())
        pred = predictor.predict(*_inputs(case))
        want = expected["predictor_result"]
        assert pred.status == want["status"], case.name
        if want["status"] != "ok":
            assert pred.error
            continue
        np.testing.assert_allclose(
            pred.fusion_logits, np.load(case / "modal_fusion_logits.npy"), atol=ATOL, err_msg=case.name
        )
        np.testing.assert_allclose(pred.p_modal, np.load(case / "p_modal.npy"), atol=ATOL, err_msg=case.name)
        np.testing.assert_allclose(pred.p_tabular, np.load(case / "p_xgb.npy"), atol=ATOL, err_msg=case.name)
        np.testing.assert_allclose(pred.probs, np.load(case / "probs.npy"), atol=ATOL, err_msg=case.name)
        assert pred.label == want["emotion"], case.name
        assert pred.profile == want["modality"], case.name
        assert pred.confidence == pytest.approx(want["confidence"], abs=ATOL)
        assert {n: round(float(p), 4) for n, p in zip(CLASS_NAMES, pred.probs, strict=True)} == want["probs"], case.name
        assert pred.anomaly is not None
        assert pred.anomaly.detector == expected["anomaly"]["detector"], case.name
        assert pred.anomaly.is_anomaly == expected["anomaly"]["is_anomaly"], case.name
        assert pred.anomaly.score == pytest.approx(expected["anomaly"]["score_raw"], abs=1e-6)
        assert round(pred.anomaly.score, 6) == want["anomaly_score"], case.name
        assert tuple(pred.weights or ()) == pytest.approx(
            (expected["ensemble_weights"]["w_modal"], expected["ensemble_weights"]["w_xgb"])
        )


def test_batched_call_equals_single_calls(golden_dir: Path, predictor: Predictor) -> None:
    cases = [c for c in _cases(golden_dir) if not c.name.startswith("error_")]
    arrays = [_inputs(c) for c in cases]
    batch = predictor.predict_batch(*(np.stack([a[i] for a in arrays]) for i in range(4)))
    for case, arr, got in zip(cases, arrays, batch, strict=True):
        single = predictor.predict(*arr)
        assert got.label == single.label, case.name
        np.testing.assert_allclose(got.probs, single.probs, atol=1e-6)
        assert got.anomaly == single.anomaly


def test_skipping_zero_weight_tabular_rows_changes_no_fused_output(golden_dir: Path, bundle_dir: Path) -> None:
    """The live engine's predictor skips XGBoost for face-only rows (its weight is 0 there)."""
    full, fast = Predictor(load_bundle(bundle_dir)), Predictor(load_bundle(bundle_dir), skip_unweighted=True)
    cases = [c for c in _cases(golden_dir) if not c.name.startswith("error_")]
    arrays = [_inputs(c) for c in cases]
    stacked = [np.stack([a[i] for a in arrays]) for i in range(4)]
    skipped = 0
    for case, a, b in zip(cases, full.predict_batch(*stacked), fast.predict_batch(*stacked), strict=True):
        np.testing.assert_array_equal(a.probs, b.probs, err_msg=case.name)
        assert (a.label, a.confidence, a.anomaly, a.weights) == (b.label, b.confidence, b.anomaly, b.weights)
        if a.profile == "video_only":
            assert b.p_tabular is None
            skipped += 1
        else:
            np.testing.assert_array_equal(a.p_tabular, b.p_tabular, err_msg=case.name)
    assert skipped > 0


def test_bad_rows_do_not_harm_the_rest_of_a_batch(golden_dir: Path, predictor: Predictor) -> None:
    good = _inputs(golden_dir / "cases" / "sample_angry_both")
    bad = [a.copy() for a in good]
    bad[0][0, 0] = np.nan
    out = predictor.predict_batch(*(np.stack([g, b]) for g, b in zip(good, bad, strict=True)))
    assert out[0].status == "ok" and out[1].status == "error"
    assert out[0].label == predictor.predict(*good).label


def test_bundle_round_trip_is_identical(bundle_dir: Path, golden_dir: Path, tmp_path: Path) -> None:
    bundle = load_bundle(bundle_dir)
    again = save_bundle(bundle, tmp_path / "copy")
    reloaded = load_bundle(again)
    assert reloaded.bundle_id == bundle.bundle_id
    a, b = Predictor(bundle), Predictor(reloaded)
    for case in _cases(golden_dir)[:8]:
        pa, pb = a.predict(*_inputs(case)), b.predict(*_inputs(case))
        assert pa.status == pb.status
        if pa.status == "ok":
            np.testing.assert_array_equal(pa.probs, pb.probs)
            assert pa.anomaly == pb.anomaly


def test_manifest_records_what_users_need(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["trained"] is True
    assert manifest["classes"] == list(CLASS_NAMES)
    assert manifest["dims"] == {"face": 326, "audio": 1024, "seq_len": 10, "tabular": 8149, "anomaly": 9452}
    assert manifest["ensemble"]["temperature"] == 0.3
    detectors = manifest["anomaly"]["detectors"]
    assert set(detectors) == {"both", "audio_only", "video_only", "global_fallback"}
    assert all(isinstance(d["threshold"], float) for d in detectors.values())
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert manifest["provenance"]["kind"] == "hoovik-import"


@pytest.mark.parametrize(
    "name", ["tabular.safetensors", "transformer.safetensors", "anomaly.safetensors", "tabular_booster.ubj"]
)
def test_tampered_file_is_refused_with_its_name(bundle_dir: Path, tmp_path: Path, name: str) -> None:
    copy = Path(shutil.copytree(bundle_dir, tmp_path / "b"))
    with open(copy / name, "r+b") as fh:
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundleError, match=name):
        load_bundle(copy)


def test_missing_file_and_wrong_dims_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(bundle_dir, tmp_path / "b"))
    (copy / "norm_stats.safetensors").unlink()
    with pytest.raises(BundleError, match=r"norm_stats\.safetensors: missing"):
        load_bundle(copy)
    copy2 = Path(shutil.copytree(bundle_dir, tmp_path / "c"))
    manifest = json.loads((copy2 / "manifest.json").read_text())
    manifest["dims"]["face"] = 300
    (copy2 / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest.json: dims.face"):
        load_bundle(copy2)
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        load_bundle(tmp_path)

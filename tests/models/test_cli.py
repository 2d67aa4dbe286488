"""The ``hoovik-bot models`` commands, run in-process, print JSON users can rely on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_face_features_prints_vectors_and_no_face_reasons(capsys, golden_dir: Path, face_asset: Path) -> None:
    code, out = run(
        capsys,
        "models",
        "face-features",
        str(golden_dir / "faces" / "photo_1.png"),
        str(golden_dir / "faces" / "synthetic_blank.png"),
        "--face-asset",
        str(face_asset),
    )
    assert code == 2  # one image had no face
    assert isinstance(out, list)
    assert len(out[0]["vector"]) == 326 and out[0]["reason"] is None
    assert out[1]["vector"] is None and out[1]["reason"] == "no_face"


def test_import_then_predict_mirrors_the_original(capsys, golden_dir: Path, tmp_path: Path) -> None:
    code, out = run(capsys, "models", "import-hoovik", str(golden_dir / "artifacts"), "--out", str(tmp_path / "b"))
    assert code == 0 and isinstance(out, dict) and out["trained"] is True
    case = golden_dir / "cases" / "live_hap_both"
    code, pred = run(
        capsys,
        "models",
        "predict",
        "--bundle",
        str(tmp_path / "b"),
        "--face",
        str(case / "input_xf.npy"),
        "--audio",
        str(case / "input_xa.npy"),
        "--face-mask",
        str(case / "input_fm.npy"),
        "--audio-mask",
        str(case / "input_am.npy"),
        "--normalised",
    )
    expected = json.loads((case / "result.json").read_text())
    assert code == 0 and isinstance(pred, dict)
    assert pred["label"] == expected["predictor_result"]["emotion"]
    assert pred["probs_4dp"] == expected["predictor_result"]["probs"]
    assert pred["profile"] == expected["modality"]
    assert pred["anomaly"]["detector"] == expected["anomaly"]["detector"]
    assert pred["anomaly"]["is_anomaly"] == expected["anomaly"]["is_anomaly"]
    assert round(pred["anomaly"]["score"], 6) == expected["predictor_result"]["anomaly_score"]
    assert set(pred) >= {"fusion_logits", "p_modal", "p_xgb", "probs", "confidence", "trained", "bundleId"}


def test_import_refuses_a_directory_that_is_not_an_artefact_dir(capsys, tmp_path: Path) -> None:
    code = main(["models", "import-hoovik", str(tmp_path), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 1 and "best_modal.pt" in err


def test_predict_reports_invalid_inputs(capsys, golden_dir: Path, tmp_path: Path) -> None:
    run(capsys, "models", "import-hoovik", str(golden_dir / "artifacts"), "--out", str(tmp_path / "b"))
    case = golden_dir / "cases" / "error_nonbinary_mask"
    code, pred = run(
        capsys,
        "models",
        "predict",
        "--bundle",
        str(tmp_path / "b"),
        "--face",
        str(case / "input_xf.npy"),
        "--audio",
        str(case / "input_xa.npy"),
        "--face-mask",
        str(case / "input_fm.npy"),
        "--audio-mask",
        str(case / "input_am.npy"),
        "--normalised",
    )
    assert code == 2 and isinstance(pred, dict) and pred["status"] == "error" and pred["error"]

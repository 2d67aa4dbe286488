"""Ensemble blend and predictor input validation against the reference predictor's recorded values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.ensemble import ensemble_weights, fuse, softmax_with_temperature, validate_inputs

ATOL = 1e-5


@pytest.fixture(scope="module")
def weights(golden_dir: Path) -> dict[str, float]:
    data: dict[str, float] = json.loads((golden_dir / "artifacts" / "models" / "ensemble" / "weights.json").read_text())
    return data


@pytest.fixture(scope="module")
def ok_cases(golden_dir: Path) -> list[Path]:
    cases = sorted(p.parent for p in (golden_dir / "cases").glob("*/p_modal.npy"))
    assert len(cases) >= 29
    return cases


def _masks(case: Path) -> tuple[bool, bool]:
    return bool(np.load(case / "input_fm.npy").any()), bool(np.load(case / "input_am.npy").any())


def test_weight_collapse() -> None:
    assert ensemble_weights(True, True, 0.455, 0.545) == (0.455, 0.545)
    assert ensemble_weights(False, True, 0.455, 0.545) == (0.0, 1.0)
    assert ensemble_weights(True, False, 0.455, 0.545) == (1.0, 0.0)
    assert ensemble_weights(False, False, 0.455, 0.545) == (0.5, 0.5)


def test_weights_match_recorded_selection(ok_cases: list[Path], weights: dict[str, float]) -> None:
    for case in ok_cases:
        info = json.loads((case / "result.json").read_text())
        got = ensemble_weights(*_masks(case), weights["w_modal"], weights["w_xgb"])
        assert got == (info["ensemble_weights"]["w_modal"], info["ensemble_weights"]["w_xgb"]), case.name


def test_fuse_reproduces_golden(ok_cases: list[Path], weights: dict[str, float]) -> None:
    logits = np.stack([np.load(c / "modal_fusion_logits.npy") for c in ok_cases])
    p_xgb = np.stack([np.load(c / "p_xgb.npy") for c in ok_cases])
    face, audio = zip(*(_masks(c) for c in ok_cases), strict=True)
    p_modal, probs = fuse(logits, p_xgb, face, audio, weights["temperature"], weights["w_modal"], weights["w_xgb"])
    assert p_modal.dtype == np.float32 and probs.dtype == np.float32
    for i, case in enumerate(ok_cases):
        np.testing.assert_allclose(p_modal[i], np.load(case / "p_modal.npy"), atol=ATOL, rtol=0, err_msg=case.name)
        np.testing.assert_allclose(probs[i], np.load(case / "probs.npy"), atol=ATOL, rtol=0, err_msg=case.name)
        info = json.loads((case / "result.json").read_text())
        assert int(np.argmax(probs[i])) == info["label_index"], case.name
    # Same dtype path as the original: on this platform the results are bit-identical.
    assert np.array_equal(p_modal, np.stack([np.load(c / "p_modal.npy") for c in ok_cases]))
    assert np.array_equal(probs, np.stack([np.load(c / "probs.npy") for c in ok_cases]))


def test_fuse_shape_checks() -> None:
    with pytest.raises(ValueError):
        fuse(np.zeros((2, 6)), np.zeros((1, 6)), [True, True], [True, True], 0.3, 0.5, 0.5)
    with pytest.raises(ValueError):
        fuse(np.zeros((2, 6)), np.zeros((2, 6)), [True], [True, True], 0.3, 0.5, 0.5)
    with pytest.raises(ValueError):
        softmax_with_temperature(np.zeros((1, 6)), 0.0)


def test_validation_matches_recorded_status(golden_dir: Path) -> None:
    cases = sorted((golden_dir / "cases").iterdir())
    errors = 0
    for case in cases:
        status = json.loads((case / "result.json").read_text())["predictor_result"]["status"]
        message = validate_inputs(*(np.load(case / f"input_{k}.npy") for k in ("xf", "xa", "fm", "am")))
        assert (message is None) == (status == "ok"), f"{case.name}: {message!r} vs status {status}"
        errors += message is not None
    assert errors >= 4


def test_validation_extra_cases() -> None:
    xf, xa = np.zeros((10, 326), np.float32), np.zeros((10, 1024), np.float32)
    ones, zeros = np.ones(10, np.float32), np.zeros(10, np.float32)
    assert validate_inputs(xf, xa, ones, zeros) is None
    assert validate_inputs(xf, xa, zeros, ones) is None
    bad = xa.copy()
    bad[2, 3] = np.inf
    assert "Inf" in (validate_inputs(xf, bad, ones, ones) or "")
    assert "am" in (validate_inputs(xf, xa, ones, np.full(10, 2.0)) or "")
    assert "xa shape" in (validate_inputs(xf, xa[:, :1000], ones, ones) or "")
    assert "am shape" in (validate_inputs(xf, xa, ones, ones[:9]) or "")
    assert validate_inputs(xf, xa, ones, np.full(10, np.nan)) is not None
    assert validate_inputs("x", xa, ones, ones) is not None

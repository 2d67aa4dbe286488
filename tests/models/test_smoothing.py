"""EMA smoothing: the reference's periodic behaviour exactly, and our inactivity reset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.constants import CLASS_NAMES
from models.smoothing import EmaSmoother


def _steps(golden_dir: Path) -> list[dict]:
    data = json.loads((golden_dir / "ema" / "ema_case.json").read_text())
    assert data["constants"]["class_order"] == list(CLASS_NAMES)
    steps: list[dict] = data["steps"]
    assert len(steps) == 20
    return steps


def _probs(step: dict) -> list[float] | None:
    probs = step["predictor_result"]["probs"]
    return None if probs is None else [probs[name] for name in CLASS_NAMES]


def test_periodic_reproduces_reference(golden_dir: Path) -> None:
    smoother = EmaSmoother(reset="periodic")
    for step in _steps(golden_dir):
        history_before = smoother.history
        expected_before = step["history_before"]
        assert history_before == (None if expected_before is None else tuple(expected_before[n] for n in CLASS_NAMES))
        out = smoother.update(_probs(step), step["t_monotonic"])
        where = f"step {step['step']}"
        assert out.label == step["label"], where
        assert out.score == pytest.approx(step["score"], abs=1e-9, rel=0), where
        assert out.reset == step["history_reset_this_step"], where
        assert out.label_index == CLASS_NAMES.index(out.label), where
        if step["smoothed"] is None:
            assert out.smoothed is None, where
        else:
            assert out.smoothed is not None
            np.testing.assert_allclose(out.smoothed, [step["smoothed"][n] for n in CLASS_NAMES], atol=1e-9, rtol=0)
        assert round(out.score, 4) == step["emitted"]["confidence"], where
        assert out.label == step["emitted"]["emotion"], where


def test_periodic_matches_npy_arrays(golden_dir: Path) -> None:
    ema = golden_dir / "ema"
    times, probs = np.load(ema / "ema_t.npy"), np.load(ema / "ema_input_probs.npy")
    smoother = EmaSmoother(reset="periodic")
    outs = [
        smoother.update(None if np.isnan(p).any() else p.tolist(), float(t)) for t, p in zip(times, probs, strict=True)
    ]
    np.testing.assert_array_equal([o.label_index for o in outs], np.load(ema / "ema_label_index.npy"))
    np.testing.assert_allclose([o.score for o in outs], np.load(ema / "ema_score.npy"), atol=1e-9, rtol=0)
    np.testing.assert_array_equal([o.reset for o in outs], np.load(ema / "ema_reset.npy"))
    smoothed = np.array([o.smoothed if o.smoothed is not None else [np.nan] * 6 for o in outs])
    np.testing.assert_allclose(smoothed, np.load(ema / "ema_smoothed.npy"), atol=1e-9, rtol=0)


def test_tie_goes_to_first_class_and_error_step_is_neutral() -> None:
    smoother = EmaSmoother()
    out = smoother.update([0.5, 0, 0, 0.5, 0, 0], 10.0)
    assert (out.label, out.label_index, out.reset) == ("angry", 0, True)
    history = smoother.history
    err = smoother.update(None, 10.3)
    assert (err.label, err.label_index, err.score, err.smoothed, err.reset) == (
        "neutral/calm",
        5,
        0.0,
        None,
        False,
    )
    assert smoother.history == history


def test_neutral_fallback_keeps_score() -> None:
    out = EmaSmoother().update([0.3, 0.25, 0.2, 0.1, 0.1, 0.05], 1.0)
    assert out.label == "neutral/calm" and out.label_index == 5
    assert out.score == pytest.approx(0.3, abs=1e-8)


def _cadence(policy: str, times: list[float]) -> list[bool]:
    smoother = EmaSmoother(reset=policy)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    return [smoother.update(rng.dirichlet(np.ones(6)).tolist(), t).reset for t in times]


def test_inactivity_keeps_history_over_steady_stream() -> None:
    times = [100.0 + 0.3 * i for i in range(25)]  # 7.2 s of results, 0.3 s apart
    assert _cadence("inactivity", times) == [True] + [False] * 24
    # The reference's periodic rule throws the history away every >2 s despite the steady stream.
    assert sum(_cadence("periodic", times)) == 4


def test_inactivity_drops_history_after_gap() -> None:
    smoother = EmaSmoother()
    first = smoother.update([0.9, 0.02, 0.02, 0.02, 0.02, 0.02], 50.0)
    assert first.reset
    kept = smoother.update([0.0, 0.0, 0.0, 1.0, 0.0, 0.0], 52.0)  # exactly ttl: still continuous
    assert not kept.reset and kept.smoothed is not None and kept.smoothed[0] > 0.3
    smoother.update(None, 53.0)  # an error does not refresh the inactivity clock
    fresh = smoother.update([0.0, 0.0, 0.0, 1.0, 0.0, 0.0], 54.1)
    assert fresh.reset and fresh.label == "happy" and fresh.score == pytest.approx(1.0, abs=1e-8)
    smoother.clear()
    assert smoother.history is None and smoother.update([1, 0, 0, 0, 0, 0], 54.2).reset


def test_rejects_bad_input() -> None:
    smoother = EmaSmoother()
    with pytest.raises(ValueError):
        smoother.update([0.5, 0.5], 1.0)
    with pytest.raises(ValueError):
        smoother.update([float("nan")] * 6, 1.0)
    with pytest.raises(ValueError):
        EmaSmoother(reset="sometimes")  # type: ignore[arg-type]

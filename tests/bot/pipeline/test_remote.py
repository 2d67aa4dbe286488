"""The predictor in a child process (bot/pipeline/remote.py): the same predictions as in-process,
errors that come back as errors, and a child that died is started again."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from bot.pipeline.remote import ProcessPredictor
from models.constants import AUDIO_DIM, FACE_DIM
from models.family import load_any_bundle


def batch(rows: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    xf = rng.standard_normal((rows, 10, FACE_DIM)).astype(np.float32)
    xa = rng.standard_normal((rows, 10, AUDIO_DIM)).astype(np.float32)
    fm = np.ones((rows, 10), np.float32)
    am = np.ones((rows, 10), np.float32)
    am[0] = 0.0  # one face-only row: the zero-weight tabular branch is skipped for it
    return xf, xa, fm, am


@pytest.fixture(scope="module")
def remote(golden_bundle_dir: Path) -> ProcessPredictor:
    predictor = ProcessPredictor(golden_bundle_dir, torch_threads=1)
    yield predictor  # type: ignore[misc]
    predictor.close()


def test_the_child_predicts_exactly_what_the_process_itself_would(
    remote: ProcessPredictor, golden_bundle_dir: Path
) -> None:
    local = load_any_bundle(golden_bundle_dir).make_predictor(1)
    inputs = batch(4)
    theirs, ours = remote.predict_batch(*inputs), local.predict_batch(*inputs)
    assert remote.pid is not None and remote.pid != os.getpid()
    assert [p.status for p in theirs] == ["ok"] * 4
    for a, b in zip(theirs, ours, strict=True):
        np.testing.assert_array_equal(a.probs, b.probs)
        assert (a.profile, a.label) == (b.profile, b.label)


def test_an_error_in_the_child_comes_back_and_harms_no_later_call(remote: ProcessPredictor) -> None:
    xf, xa, fm, am = batch(2)
    # Bad rows are the predictor's to report, row by row, as in-process...
    assert {p.status for p in remote.predict_batch(xf[:, :, :5], xa, fm, am)} == {"error"}
    # ...and what makes the predictor itself raise comes back as the child's exception.
    with pytest.raises(RuntimeError, match="Error"):
        remote.predict_batch(None, xa, fm, am)
    assert [p.status for p in remote.predict_batch(xf, xa, fm, am)] == ["ok", "ok"]


def test_a_child_that_died_is_started_again(golden_bundle_dir: Path) -> None:
    predictor = ProcessPredictor(golden_bundle_dir, torch_threads=1)
    try:
        first = predictor.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while predictor._proc.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert len(predictor.predict_batch(*batch(1))) == 1
        assert predictor.starts == 2 and predictor.pid not in (None, first)
    finally:
        predictor.close()
    assert predictor.pid is None


def test_a_bundle_the_child_cannot_load_fails_at_start_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="could not load"):
        ProcessPredictor(tmp_path / "no-such-bundle")

"""The predictor in a child process (bot/pipeline/remote.py): the same predictions as in-process,
errors that come back as errors, a child that died is started again, and only the process that
predicts builds the tree arrays."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from bot.config import BotConfig
from bot.pipeline.remote import ChildProcess, ProcessPredictor
from bot.runtime import build_runtime
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
        while predictor.child._proc.is_alive():
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


# -- the generic child ---------------------------------------------------------------------------


class Doubler:
    def double(self, x: int) -> int:
        return 2 * x

    def spin(self, seconds: float) -> int:
        """Burn CPU for ``seconds`` (the child's CPU time comes back to the caller)."""
        end, n = time.process_time() + seconds, 0
        while time.process_time() < end:
            n += 1
        return n

    def fail(self) -> None:
        raise ValueError("asked to fail")


def make_doubler(info: str) -> tuple[Doubler, str]:
    return Doubler(), info


def make_nothing() -> tuple[None, None]:
    raise OSError("no such model")


def test_a_child_calls_its_objects_methods_and_reports_their_errors() -> None:
    child = ChildProcess("doubler", make_doubler, ("hello",), wait=False)
    try:
        assert child.call("double", 21) == 42  # the first call waits for the child
        assert child.info == "hello" and child.starts == 1
        with pytest.raises(RuntimeError, match="ValueError: asked to fail"):
            child.call("fail")
        with pytest.raises(RuntimeError, match="AttributeError"):
            child.call("no_such_method")
        assert child.call("double", 2) == 4
        before = child.cpu_s
        assert child.call("spin", 0.3) > 0
        assert child.cpu_s - before >= 0.3  # the child's CPU, counted for the calling thread too
    finally:
        child.close()
    with pytest.raises(RuntimeError, match="closed"):
        child.wait_ready()


def test_a_child_that_cannot_build_its_object_says_why_when_first_used() -> None:
    child = ChildProcess("nothing", make_nothing, wait=False)
    with pytest.raises(RuntimeError, match="nothing could not start: OSError: no such model"):
        child.call("anything")
    child.close()


# -- the runtime ---------------------------------------------------------------------------------


@pytest.mark.parametrize("in_child", [True, False])
def test_only_the_process_that_predicts_builds_the_tree_arrays(
    in_child: bool, golden_bundle_dir: Path, tiny_wav2vec2_dir: Path, face_asset: Path
) -> None:
    cfg = BotConfig()
    cfg.models.bundle = str(golden_bundle_dir)
    cfg.models.audio_model = str(tiny_wav2vec2_dir)
    cfg.models.face_asset = str(face_asset)
    cfg.models.offline = True
    runtime = build_runtime(cfg, inference_process=in_child)
    try:
        assert isinstance(runtime.predictor, ProcessPredictor) is in_child
        reference = runtime.loaded.reference
        assert reference is not None
        # The parent needs the bundle for its plan and info, not the ~90 MB of arrays it never uses.
        assert reference.tabular._prepared is not in_child
        assert [p.status for p in runtime.predictor.predict_batch(*batch(2))] == ["ok", "ok"]
    finally:
        runtime.close()

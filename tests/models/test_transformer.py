"""EmotionTransformer: checkpoint compatibility and golden outputs of the reference implementation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.transformer import (
    EmotionTransformer,
    TransformerConfig,
    TransformerRunner,
    build_seeded_model,
    count_parameters,
    load_hoovik_checkpoint,
)

OUTPUT_FILES = (
    "modal_fusion_logits",
    "modal_face_logits",
    "modal_audio_logits",
    "modal_face_pool",
    "modal_audio_pool",
    "modal_fusion_pooled",
)
ATOL = 1e-5
GOLDEN_THREADS = 2


@pytest.fixture(scope="module")
def checkpoint(golden_dir: Path) -> Path:
    path = golden_dir / "artifacts" / "models" / "modal" / "best_modal.pt"
    if not path.is_file():
        pytest.fail(f"golden checkpoint missing: {path}")
    return path


@pytest.fixture(scope="module")
def runner(checkpoint: Path) -> TransformerRunner:
    return TransformerRunner.from_checkpoint(checkpoint, num_threads=GOLDEN_THREADS)


@pytest.fixture(scope="module")
def model_cases(golden_dir: Path) -> list[Path]:
    cases = sorted(p.parent for p in (golden_dir / "cases").glob("*/modal_fusion_logits.npy"))
    # 24 sample cases + 5 live cases are always present; held-out case sets only add to these.
    assert len(cases) >= 29, f"expected at least 29 golden transformer cases, found {len(cases)}"
    return cases


def _inputs(case: Path) -> tuple[np.ndarray, ...]:
    return tuple(np.load(case / f"input_{k}.npy") for k in ("xf", "xa", "fm", "am"))


def test_config_defaults_are_production_values() -> None:
    cfg = TransformerConfig()
    assert (cfg.face_dim, cfg.audio_dim, cfg.d_model, cfg.nhead, cfg.num_layers) == (326, 1024, 256, 8, 3)
    assert (cfg.dim_feedforward, cfg.num_classes, cfg.max_len) == (768, 6, 64)
    assert cfg.dropout == 0.151792 and cfg.modality_drop_prob == 0.06822
    assert (cfg.face_scale, cfg.cross_gate_weight, cfg.conf_blend_weight) == (1.2, 0.7, 0.5)


def test_config_round_trip_and_unknown_keys() -> None:
    cfg = TransformerConfig(num_layers=2, dropout=0.0)
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    with pytest.raises(ValueError, match="unknown"):
        TransformerConfig.from_dict({**cfg.to_dict(), "d_modle": 128})
    with pytest.raises(ValueError):
        TransformerConfig(d_model=250)


def test_parameter_count_matches_reference_log() -> None:
    assert count_parameters(EmotionTransformer()) == 1_821_334


def test_state_dict_layout_matches_golden_listing(golden_dir: Path) -> None:
    listing = json.loads((golden_dir / "artifacts_aux" / "best_modal.state_dict_keys.json").read_text())
    state = EmotionTransformer().state_dict()
    assert len(state) == listing["n_state_dict_tensors"] == 148
    assert list(state) == list(listing["keys"])
    for key, info in listing["keys"].items():
        assert list(state[key].shape) == info["shape"], key
        assert state[key].dtype == torch.float32


def test_checkpoint_loads_strictly(checkpoint: Path) -> None:
    state = load_hoovik_checkpoint(checkpoint)
    assert len(state) == 148
    result = EmotionTransformer().load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_seed_zero_reproduces_golden_checkpoint(checkpoint: Path) -> None:
    """The golden weights are the reference's random init after torch.manual_seed(0).

    Matching them shows our modules are created in the original's order with the original's init.
    The fixed sinusoid buffer differs only by libm rounding (~2e-6).
    """
    golden = load_hoovik_checkpoint(checkpoint)
    before = torch.random.get_rng_state()
    state = build_seeded_model(0).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before), "build_seeded_model must not move the global RNG"
    for key, value in golden.items():
        if key.endswith("_pos.pe"):
            torch.testing.assert_close(state[key], value, atol=1e-5, rtol=0)
        else:
            assert torch.equal(state[key], value), key


def test_golden_outputs(runner: TransformerRunner, model_cases: list[Path]) -> None:
    worst: dict[str, float] = dict.fromkeys(OUTPUT_FILES, 0.0)
    failures = []
    for case in model_cases:
        outputs = runner.forward_all(*(a[None] for a in _inputs(case)))
        for name, out in zip(OUTPUT_FILES, outputs, strict=True):
            expected = np.load(case / f"{name}.npy")
            assert out.dtype == np.float32 and out.shape == (1, *expected.shape), (case.name, name)
            diff = float(np.abs(out[0] - expected).max())
            worst[name] = max(worst[name], diff)
            if diff > ATOL:
                failures.append(f"{case.name}/{name}: max abs diff {diff:.3g}")
    assert not failures, "\n".join(failures)
    print("max abs diff per output:", worst)


def test_batched_equals_single(runner: TransformerRunner, model_cases: list[Path]) -> None:
    stacked = [np.stack(arrs) for arrs in zip(*(_inputs(c) for c in model_cases), strict=True)]
    batched = runner.predict_logits(*stacked)
    assert batched.shape == (len(model_cases), 6) and batched.dtype == np.float32
    for i, case in enumerate(model_cases):
        single = runner.predict_logits(*(a[None] for a in _inputs(case)))
        np.testing.assert_allclose(batched[i], single[0], atol=ATOL, rtol=0, err_msg=case.name)
        np.testing.assert_allclose(batched[i], np.load(case / "modal_fusion_logits.npy"), atol=ATOL, rtol=0)


def test_runner_pins_thread_count(runner: TransformerRunner, model_cases: list[Path]) -> None:
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        runner.predict_logits(*(a[None] for a in _inputs(model_cases[0])))
        assert torch.get_num_threads() == GOLDEN_THREADS
    finally:
        torch.set_num_threads(previous)


def test_runner_rejects_bad_shapes(runner: TransformerRunner) -> None:
    xf = np.zeros((1, 10, 326), np.float32)
    xa = np.zeros((1, 10, 1024), np.float32)
    m = np.ones((1, 10), np.float32)
    with pytest.raises(ValueError, match="xf"):
        runner.predict_logits(xf[0], xa, m, m)
    with pytest.raises(ValueError, match="xa"):
        runner.predict_logits(xf, xa[:, :9], m, m)
    with pytest.raises(ValueError, match="fm/am"):
        runner.predict_logits(xf, xa, m[:, :9], m)


def test_no_valid_frames_zeroes_z() -> None:
    model = build_seeded_model(1).eval()
    xf = torch.randn(2, 10, 326)
    xa = torch.randn(2, 10, 1024)
    fm = torch.tensor([[0.0] * 10, [1.0] * 10])
    am = torch.zeros(2, 10)
    with torch.inference_mode():
        z = model(xf, xa, fm, am)[5]
    assert torch.count_nonzero(z[0]) == 0
    assert torch.count_nonzero(z[1]) > 0


def test_modality_drop_only_in_training() -> None:
    cfg = TransformerConfig(dropout=0.0, modality_drop_prob=0.999)
    model = build_seeded_model(2, cfg)
    inputs = (torch.randn(4, 10, 326), torch.randn(4, 10, 1024), torch.ones(4, 10), torch.ones(4, 10))
    model.eval()
    with torch.inference_mode():
        eval_a = model(*inputs)[0]
        eval_b = model(*inputs)[0]
    torch.testing.assert_close(eval_a, eval_b, atol=0, rtol=0)
    model.train()
    torch.manual_seed(3)
    with torch.no_grad():
        train_out = model(*inputs)[0]
    assert not torch.allclose(train_out, eval_a, atol=1e-4)


def test_checkpoint_loader_refuses_non_state_dicts(tmp_path: Path) -> None:
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "epoch": 3}, wrapped)
    with pytest.raises(ValueError, match=r"wrapped\.pt"):
        load_hoovik_checkpoint(wrapped)
    listed = tmp_path / "listed.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match=r"listed\.pt.*list"):
        load_hoovik_checkpoint(listed)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pt"):
        load_hoovik_checkpoint(garbage)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_hoovik_checkpoint(tmp_path / "missing.pt")

"""Shared fixtures: where the shared assets live, and a clear failure when they are missing.

The repository never holds media, weights or golden vectors; they sit in ``../shared`` beside the
checkout (or wherever ``HOOVIK_SHARED`` points). A missing asset fails the test with the path it
looked for rather than skipping it, because a skipped test proves nothing in CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_root() -> Path:
    env = os.environ.get("HOOVIK_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def require_shared(*parts: str) -> Path:
    """Return a path under the shared folder, failing loudly (not skipping) when it is absent."""
    path = _shared_root().joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"shared asset missing: {path}\n"
            "Tests read media, the MediaPipe asset and golden vectors from ../shared beside the checkout "
            "(or $HOOVIK_SHARED). Place the shared folder there and run again."
        )
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return require_shared("reference", "golden")


@pytest.fixture(scope="session")
def face_asset() -> Path:
    return require_shared("models", "face_landmarker.task")


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return require_shared("media")


# --- tiny real models, built once per run ------------------------------------------------------
# Hub downloads are impossible here, so the tests build a 1-layer Wav2Vec2 with the production
# output width (1024) and save it with ``save_pretrained``: the real loading code then runs on it.


@pytest.fixture(scope="session")
def tiny_wav2vec2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer Wav2Vec2 with the production output width, saved like a hub snapshot."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    out = tmp_path_factory.mktemp("w2v2") / "tiny-wav2vec2"
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=1024,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=256,
        conv_dim=(32, 32, 32, 32, 32, 32, 32),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    Wav2Vec2Model(config).save_pretrained(out)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def golden_bundle_dir(golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original's golden artefacts imported into a bundle (the reference family), once per run."""
    from models.hoovik_import import import_hoovik

    return import_hoovik(golden_dir / "artifacts", tmp_path_factory.mktemp("bundles") / "golden")

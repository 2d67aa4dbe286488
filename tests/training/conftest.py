"""Training fixtures: a tiny Wav2Vec2 saved like a hub snapshot, a synthetic dataset, a small config.

The small config keeps every phase and every component of the recipe but shrinks epochs, trees and
widths so that a whole ``train all`` takes seconds on two cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.training.dataset import save_dataset
from models.training.labels import SkippedClip
from models.training.synthetic import make_synthetic_dataset

SMALL_CONFIG = """
seed = 42

[transformer]
architecture = { d_model = 64, nhead = 4, num_layers = 1, dim_feedforward = 128 }
batch_size = 32
device = "cpu"
threads = 1  # tiny models: one thread avoids OpenMP barrier stalls when the 2 CI cores are shared

[transformer.phase_a]
epochs = 3
lr = 1e-3
warmup = 1

[transformer.phase_b]
epochs = 6
lr = 1e-3
warmup = 1
mixup_start = 2

[transformer.phase_c]
epochs = 2
lr = 1e-4
warmup = 0
swa_start = 1

[xgb]
n_estimators = 60
max_depth = 3
learning_rate = 0.2
early_stopping_rounds = 20
pca_components = 64
nthread = 1

[anomaly]
n_estimators = 50
pca = { both = 16, audio_only = 16, video_only = 16, global_fallback = 16 }

[calibrate]
weight_grid = 51
"""


@pytest.fixture(scope="session")
def small_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "small.toml"
    path.write_text(SMALL_CONFIG)
    return path


@pytest.fixture(scope="session")
def synthetic_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """384 synthetic clips (2 corpora × 8 actors), 40 % single-modality, plus one unreadable file
    recorded as extraction does, so the report has a skipped clip to count."""
    ds = make_synthetic_dataset()
    ds.meta["skipped"] = [SkippedClip("/data/broken.mp4", "not a readable media file (Invalid data)").to_dict()]
    return save_dataset(ds, tmp_path_factory.mktemp("synthetic") / "dataset")

"""Dimensions, class order and reference constants shared by every model component.

These are the values of the reference system (docs/engine.md and docs/models.md); keeping them in one
module means a bundle, a feature builder and the engine can never disagree about a shape.
"""

from __future__ import annotations

from typing import Final, Literal

CLASS_NAMES: Final[tuple[str, ...]] = ("angry", "fearful", "disgust", "happy", "sad", "neutral/calm")
NUM_CLASSES: Final[int] = 6
NEUTRAL_LABEL: Final[str] = "neutral/calm"

FACE_DIM: Final[int] = 326
AUDIO_DIM: Final[int] = 1024
SEQ_LEN: Final[int] = 10
TABULAR_DIM: Final[int] = 8149
ANOMALY_DIM: Final[int] = 9452

SAMPLE_RATE: Final[int] = 16000
AUDIO_WINDOW_SEC: Final[float] = 0.6
AUDIO_WINDOW_SAMPLES: Final[int] = 9600
AUDIO_MIN_SAMPLES: Final[int] = 2400

Profile = Literal["both", "audio_only", "video_only"]
PROFILES: Final[tuple[str, ...]] = ("both", "audio_only", "video_only")
# The original's structural modality flag (xgb one-hot / anomaly groups): 0 audio_only, 1 video_only, 2 both.
PROFILE_FLAG: Final[dict[str, int]] = {"audio_only": 0, "video_only": 1, "both": 2}

DEFAULT_WAV2VEC2_ID: Final[str] = "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim"
TABULAR_FEATURE_VERSION: Final[str] = "hoovik-xgb-8149-v1"
ANOMALY_FEATURE_VERSION: Final[str] = "v2.0-iqr-ratio-jitter"
FACE_FEATURE_VERSION: Final[str] = "hoovik-face-326-v1"

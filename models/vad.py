"""Voice activity gating with Silero VAD: audio embedders run only on windows that contain speech.

Why: Wav2Vec2 is the most expensive model the bot runs (production size ~70-115 ms per 0.6 s
window on one CPU core), and most meeting participants are silent most of the time. A window
without speech makes no audio embedding, so a silent participant's audio modality goes stale
exactly like a dropped stream (``bot.pipeline.freshness.audio_max_age``) and its results fall back to
``video_only``, which is also what the emotion models were trained to expect from a face alone.

How: the audio stage (``bot.pipeline.stages.audio_stage``) asks a :class:`SpeechDetector` for the speech
probability of every pending 16 kHz window (0.6 s for the reference family, the bundle's declared
window otherwise) before it embeds the batch. Training (``models.starter.audio_train``) gates its
windows with this same class, so a model only ever learns from windows the live bot would embed;
that is why it lives in ``models`` (which must not import ``bot``); the bot imports it from here.
The probability of a window is the maximum of Silero's per-32 ms-chunk probabilities (any speech in
the window counts), with the model's recurrent state reset for every window, so a window's verdict depends
on that window alone (deterministic, and independent of which thread saw the previous window).
A window is speech when that probability is at least ``engine.vad_threshold`` (0.5, Silero's
own default).

Threading: the TorchScript model keeps recurrent state inside the module, so it is not safe to
share between threads. Every audio-pool thread builds its own detector through the pool's
``init`` (the model is 2 MB; loading takes ~50 ms). Silero's package ships its weights, so
nothing is downloaded.

Measured on this 2-core machine (torch 1 thread): 3-4 ms for one 0.6 s window; batching helps
only from ~4 windows on (the batch-1 path of the JIT model is much cheaper than batch 2), so
:meth:`SpeechDetector.speech_probs` runs small groups window by window.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.constants import SAMPLE_RATE

# Below this many equal-length windows, one batch-1 call per window is faster than one batched call.
MIN_BATCH = 4

_load_lock = threading.Lock()


def load_silero_model() -> Any:
    """Load Silero's TorchScript model from the pip package (no network).

    Importing ``silero_vad`` calls ``torch.set_num_threads(1)`` as a side effect; the process's
    setting is restored so that importing the VAD never changes how other models run.
    """
    import torch

    with _load_lock, warnings.catch_warnings():
        # The package's loader uses deprecated importlib/torch.jit APIs; nothing we can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        threads = torch.get_num_threads()
        try:
            import silero_vad

            model = silero_vad.load_silero_vad(onnx=False)
        finally:
            torch.set_num_threads(threads)
    model.eval()
    return model


class SpeechDetector:
    """Speech probability of whole audio windows; one instance per thread (not thread-safe)."""

    def __init__(self, threshold: float = 0.5, model: Any | None = None) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"vad threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        self.model = model if model is not None else load_silero_model()
        self.windows = 0

    def speech_probs(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Max per-chunk speech probability of each 16 kHz mono float32 window, shape (N,)."""
        import torch

        out = np.zeros(len(windows), dtype=np.float32)
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            groups.setdefault(int(np.asarray(w).reshape(-1).shape[0]), []).append(i)
        # Shapes vary (short windows right after a join); the profiling JIT executor would
        # re-specialise on every new shape and run 2x slower afterwards, so use the plain one.
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            for length, idx in groups.items():
                if length == 0:
                    continue
                rows = [np.ascontiguousarray(np.asarray(windows[i], dtype=np.float32).reshape(-1)) for i in idx]
                if len(rows) < MIN_BATCH:
                    for i, row in zip(idx, rows, strict=True):
                        probs = self.model.audio_forward(torch.from_numpy(row)[None], SAMPLE_RATE)
                        out[i] = float(probs.max())
                else:
                    probs = self.model.audio_forward(torch.from_numpy(np.stack(rows)), SAMPLE_RATE)
                    out[idx] = probs.max(dim=1).values.numpy()
        self.windows += len(windows)
        return out

    def is_speech(self, windows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(speech mask, probabilities) for the windows."""
        probs = self.speech_probs(windows)
        return probs >= self.threshold, probs

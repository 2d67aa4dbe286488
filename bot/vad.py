"""Voice activity gating with Silero VAD: the audio embedder runs only on windows that contain speech.

Why: the audio embedder (Wav2Vec2 for the reference family, ~70-115 ms per 0.6 s window on one CPU
core) is the most expensive model the bot runs, and most meeting participants are silent most of
the time. A window without speech makes no audio embedding, so a silent participant's audio
modality goes stale exactly like a dropped stream (``bot.profiles.audio_live``) and its results
fall back to ``video_only``, which is also what the emotion models were trained to expect from a
face alone.

How: the audio stage (``bot.stages.audio_stage``) asks a :class:`SpeechDetector` for the speech
probability of every pending window before it embeds the batch: the maximum of Silero's
per-32 ms-chunk probabilities, with the recurrent state reset for every window, speech when at
least ``engine.vad_threshold`` (0.5, Silero's own default). One detector per audio-pool thread
(the TorchScript model keeps recurrent state inside the module, so it is not thread-safe).

The implementation lives in :mod:`models.vad`, because training must gate its windows with the
very same rule and ``models`` never imports ``bot``; this module re-exports it for the bot's code
and tests. See :mod:`models.vad` for the details and measurements.
"""

from __future__ import annotations

from models.vad import MIN_BATCH, SpeechDetector, load_silero_model

__all__ = ["MIN_BATCH", "SpeechDetector", "load_silero_model"]

"""The step core, written once and run by both the live engine (``bot.live``) and replay (``bot.replay``).

sampling (whether a step takes a frame, the audio-window rule), freshness and profiles, sequence
assembly (:mod:`bot.pipeline.features`), result building (:mod:`bot.pipeline.results`), the compute
stages, executor pools, hand-off slots and the sampling throttle. It uses ``models`` and nothing
else of the bot.
"""

"""The real-time scheduler on top of :mod:`bot.pipeline`: phases, groups, batching, and its stats."""

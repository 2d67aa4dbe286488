"""The Hoovik emotion-service endpoint: Socket.IO protocol (:mod:`bot.uploads.endpoint`), access rules
and options (:mod:`bot.uploads.access`), upload ingest (:mod:`bot.uploads.ingest`), payload codecs
(:mod:`bot.uploads.codecs`), frame gate and media clock (:mod:`bot.uploads.timing`). See docs/hoovik.md.
"""

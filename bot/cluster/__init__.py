"""Scale-out: many bot workers behind one Redis, with meeting failover (docs/scale.md).

A bot request becomes a *job* (:mod:`bot.cluster.jobs`): a hash in Redis plus an entry in a Redis
Stream read by one consumer group of workers. Workers (:mod:`bot.cluster.worker`) claim entries
with ``XREADGROUP``, hold a per-job lease with a fencing token (:mod:`bot.cluster.store`), run the
meeting's bot in process (:mod:`bot.cluster.meeting`) and keep the entry pending until the job
ends; a dead worker's entries go idle and are taken over with ``XAUTOCLAIM``. The dispatcher
(:mod:`bot.cluster.dispatcher`) is the REST front door; :mod:`bot.cluster.launcher` plugs it into
``hoovik-bot serve``'s "Add the bot".
"""

"""The decode thread of one replayed file: runs a blocking decoder and hands its events to the loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from bot.replay.decode import Event

DECODE_BATCH = 8  # events per hand-off from a decode thread
DECODE_BATCHES_AHEAD = 4

END = object()  # the end of a stream of batches (and of the driver's internal queues)


class EventPump:
    """Runs a blocking decoder on its own thread and hands its events to the loop in batches.

    At most ``DECODE_BATCHES_AHEAD`` batches wait on the loop, so decoding stays just ahead of the
    pipeline (decoded frames are large). Errors raised by the decoder are re-raised on the loop.
    """

    def __init__(self, events: Callable[[], Iterator[Event]], loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._events = events
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._slots = threading.Semaphore(DECODE_BATCHES_AHEAD)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    async def batches(self) -> AsyncIterator[list[Event]]:
        self._thread.start()
        while True:
            item = await self._queue.get()
            self._slots.release()
            if item is END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        self._stopped.set()
        self._slots.release()

    def _send(self, item: Any) -> bool:
        while not self._slots.acquire(timeout=0.1):
            if self._stopped.is_set():
                return False
        if self._stopped.is_set():
            return False
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        return True

    def _run(self) -> None:
        batch: list[Event] = []
        events = self._events()
        try:
            for event in events:
                batch.append(event)
                if len(batch) >= DECODE_BATCH:
                    if not self._send(batch):
                        return
                    batch = []
            if batch and not self._send(batch):
                return
            self._send(END)
        except BaseException as exc:
            if batch and not self._send(batch):
                return
            self._send(exc)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # closes the decoder's containers now, not whenever it is collected

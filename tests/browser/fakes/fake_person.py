"""A person in the meeting-page tests without a browser: joins by invite, announces its media, stays.

``fake_person.py WS_URL ROOM NAME MIC CAMERA`` with the participant token in ``$HOOVIK_TOKEN``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from signaling.client import SignalingClient


async def main() -> None:
    url, room, name, mic, camera = sys.argv[1:6]
    session = await SignalingClient.connect(url, room, os.environ["HOOVIK_TOKEN"], None, name, "participant")
    await session.announce_media(mic == "1", camera == "1")
    print(f"joined as {session.self_id}", flush=True)
    async for _ in session.events():
        pass


asyncio.run(main())

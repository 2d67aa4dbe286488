"""Received media frames released as soon as they are complete, not one frame later.

Why this exists. aiortc's ``RTCRtpReceiver`` reassembles frames in a ``JitterBuffer`` that only
knows a frame has ended when a packet of the *next* frame (another RTP timestamp) arrives:

- video (``JitterBuffer(capacity=512, is_video=True)``): every frame waits for the first packet
  of the following one, although the RTP marker bit on its last packet already said it was
  complete: one frame interval of added latency, 67 ms at 15 fps (33 ms at 30 fps);
- audio (``JitterBuffer(capacity=16, prefetch=4)``): one Opus packet is one frame, but a frame is
  released only once 4 later frames are buffered: 4 × 20 ms = 80 ms of added latency. That is a
  playout buffer, and the bot never plays audio out.

The engine's steps take the newest received video frame and the newest 0.6 s of audio, so this
latency is added to every result.

:class:`LowLatencyJitterBuffer` changes only the release rule (``_remove_frame``): a video frame
leaves on its marker packet once every packet before it is present, an audio packet leaves at
once. Everything else is aiortc's: a missing packet still blocks (NACK retransmits it, or the
capacity overflow in ``add`` drops it and asks for a keyframe), and a frame whose marker packet was
lost (or whose sender does not set it) still leaves when the next timestamp arrives.

Audio loss is the one exception, because aiortc's rule there costs latency for good: audio gets
no NACK, so a lost packet blocked the buffer until its 16 slots overflowed (~300 ms), and since
``add`` releases one frame per arriving packet, the 15 frames queued behind the gap never drained:
every later frame arrived ~300 ms late (and each further loss kept it there). For analysis, a
missing 20 ms is cheaper than lasting lag, so an audio gap is skipped (and counted in
``skipped``) once the newest packet is ``AUDIO_REORDER_PACKETS`` past it: 60 ms of reordering is
still waited for, and the backlog behind a gap never exceeds that.
:func:`use_low_latency_jitter_buffers` swaps the buffer into a peer connection's receivers; it
reaches into a private attribute, so an aiortc upgrade that renames it logs a warning, keeps
aiortc's behaviour, and fails ``tests/bot/webrtc/test_jitter.py``.
"""

from __future__ import annotations

import logging

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

log = logging.getLogger(__name__)

# The receiver's jitter buffer (``RTCRtpReceiver.__jitter_buffer``, name-mangled).
RECEIVER_ATTR = "_RTCRtpReceiver__jitter_buffer"
# aiortc's capacities (rtcrtpreceiver.py): kept, so that ``add``'s overflow rules are unchanged.
VIDEO_CAPACITY = 512
AUDIO_CAPACITY = 16
# An audio gap is waited for until the newest packet is this many past it (60 ms at 20 ms a packet).
AUDIO_REORDER_PACKETS = 3

_warned = False


class LowLatencyJitterBuffer(JitterBuffer):
    """aiortc's ``JitterBuffer`` that releases a frame as soon as it is complete.

    Video (``is_video=True``): scanning from the origin over present packets of one timestamp, the
    frame is complete at the packet with the marker bit; a packet of a newer timestamp also ends it
    (aiortc's rule, for a lost marker). Audio (``is_video=False``): each packet is a frame.
    ``prefetch`` is not used. At most one frame is released per ``add``, as in aiortc. Audio
    gaps are given up after ``AUDIO_REORDER_PACKETS`` (module docstring), counted in ``skipped``.
    """

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        super().__init__(capacity, prefetch=prefetch, is_video=is_video)
        self.skipped = 0  # audio packets given up as lost

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        assert self._origin is not None
        if not self._is_video:
            self._skip_lost_audio(sequence_number)
        packets: list[RtpPacket] = []
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None  # a gap blocks, as in aiortc
            if packets and packet.timestamp != packets[0].timestamp:
                break  # a newer frame began: the earlier one ended without a marker
            packets.append(packet)
            if packet.marker or not self._is_video:
                break  # its last packet: complete
        else:
            return None  # the whole buffer is one unfinished frame
        self.remove(len(packets))
        data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]
        return JitterFrame(data=data, timestamp=packets[0].timestamp)

    def _skip_lost_audio(self, newest: int) -> None:
        """Move the origin past missing audio packets that ``newest`` is far enough ahead of."""
        assert self._origin is not None
        behind = uint16_add(newest, -self._origin)
        if behind >= self._capacity:
            return  # ``newest`` is older than the origin (a late duplicate): nothing to do
        while behind >= AUDIO_REORDER_PACKETS and self._packets[self._origin % self._capacity] is None:
            self.skipped += 1
            self.remove(1)
            behind -= 1


def use_low_latency_jitter_buffers(pc: RTCPeerConnection) -> int:
    """Give ``pc``'s receivers a :class:`LowLatencyJitterBuffer`; returns how many were replaced.

    Call it after ``setRemoteDescription`` (which creates the receivers) and before media flows:
    the replaced buffer is then still empty, so nothing is lost. Receivers that already have one
    are left alone, so calling it again after a re-offer only changes new receivers.
    """
    global _warned
    replaced = 0
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        current = getattr(receiver, RECEIVER_ATTR, None)
        if isinstance(current, LowLatencyJitterBuffer):
            continue
        if not isinstance(current, JitterBuffer):
            if not _warned:
                _warned = True
                log.warning("aiortc's receiver has no %s: received frames keep aiortc's latency", RECEIVER_ATTR)
            continue
        video = transceiver.kind == "video"
        buffer = LowLatencyJitterBuffer(capacity=VIDEO_CAPACITY if video else AUDIO_CAPACITY, is_video=video)
        setattr(receiver, RECEIVER_ATTR, buffer)
        replaced += 1
    return replaced

"""Low-latency jitter buffers (bot/webrtc/jitter.py): frames leave when complete, with aiortc's
rules otherwise, and the bot's receivers get them before media flows.

Packets are real aiortc ``RtpPacket`` objects with ``_data`` set as ``RTCRtpReceiver`` sets it
(the depayloaded bytes). The last test connects two aiortc peers over loopback and sends media.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack
from aiortc.rtp import RtpPacket

from bot.webrtc import jitter
from bot.webrtc.ice import use_loopback_ice
from bot.webrtc.jitter import LowLatencyJitterBuffer, use_low_latency_jitter_buffers


def rtp(seq: int, ts: int, data: bytes, marker: bool = False) -> RtpPacket:
    packet = RtpPacket(payload_type=96, marker=int(marker), sequence_number=seq, timestamp=ts, ssrc=1234, payload=data)
    packet._data = data  # type: ignore[attr-defined]  # what RTCRtpReceiver does after depayloading
    return packet


def video() -> LowLatencyJitterBuffer:
    return LowLatencyJitterBuffer(capacity=512, is_video=True)


def audio() -> LowLatencyJitterBuffer:
    return LowLatencyJitterBuffer(capacity=16)


def released(buffer: JitterBuffer, packet: RtpPacket) -> tuple[bytes, int] | None:
    pli, frame = buffer.add(packet)
    assert not pli
    return None if frame is None else (frame.data, frame.timestamp)


def test_a_video_frame_leaves_on_its_marker_packet_where_aiortc_s_waits_for_the_next_frame() -> None:
    frame = [rtp(100, 9000, b"aa"), rtp(101, 9000, b"bb"), rtp(102, 9000, b"cc", marker=True)]
    ours, theirs = video(), JitterBuffer(capacity=512, is_video=True)
    assert [released(ours, p) for p in frame] == [None, None, (b"aabbcc", 9000)]
    assert [released(theirs, p) for p in frame] == [None, None, None]
    # aiortc's releases it one frame later, on the next frame's first packet.
    assert released(theirs, rtp(103, 15000, b"dd")) == (b"aabbcc", 9000)
    # Ours released it and moved on: the next frame starts clean.
    assert released(ours, rtp(103, 15000, b"dd")) is None
    assert released(ours, rtp(104, 15000, b"ee", marker=True)) == (b"ddee", 15000)


def test_a_frame_without_a_marker_leaves_when_the_next_timestamp_arrives() -> None:
    buffer = video()
    assert released(buffer, rtp(10, 3000, b"a")) is None
    assert released(buffer, rtp(11, 3000, b"b")) is None
    assert released(buffer, rtp(12, 6000, b"c")) == (b"ab", 3000)  # aiortc's fallback
    assert released(buffer, rtp(13, 6000, b"d", marker=True)) == (b"cd", 6000)


def test_a_gap_blocks_until_filled() -> None:
    buffer = video()
    assert released(buffer, rtp(20, 3000, b"a")) is None
    assert released(buffer, rtp(22, 3000, b"c", marker=True)) is None  # 21 missing
    assert released(buffer, rtp(23, 6000, b"d", marker=True)) is None  # still blocked
    assert released(buffer, rtp(21, 3000, b"b")) == (b"abc", 3000)
    # One frame per ``add``, as in aiortc: the frame completed behind the gap leaves on the next one.
    assert released(buffer, rtp(24, 9000, b"e")) == (b"d", 6000)


def test_out_of_order_packets_of_a_frame_leave_once_complete() -> None:
    buffer = video()
    # The first packet received sets the origin (aiortc), so the frame's first packet comes first.
    assert released(buffer, rtp(30, 3000, b"0", marker=True)) == (b"0", 3000)
    assert released(buffer, rtp(32, 6000, b"2")) is None
    assert released(buffer, rtp(31, 6000, b"1")) is None
    assert released(buffer, rtp(33, 6000, b"3", marker=True)) == (b"123", 6000)


def test_each_audio_packet_leaves_at_once_in_order() -> None:
    buffer = audio()
    assert [released(buffer, rtp(500 + i, 960 * i, bytes([i]))) for i in range(6)] == [
        (bytes([i]), 960 * i) for i in range(6)
    ]
    # aiortc's audio buffer (prefetch=4) releases a frame once 4 later ones arrived: 80 ms later.
    theirs = JitterBuffer(capacity=16, prefetch=4)
    assert [released(theirs, rtp(500 + i, 960 * i, bytes([i]))) for i in range(5)] == [None] * 4 + [(b"\x00", 0)]
    # Out of order: the later packet waits for the earlier one.
    assert released(buffer, rtp(507, 960 * 7, b"7")) is None
    assert released(buffer, rtp(506, 960 * 6, b"6")) == (b"6", 960 * 6)
    assert released(buffer, rtp(508, 960 * 8, b"8")) == (b"7", 960 * 7)


def lag_after_a_loss(buffer: JitterBuffer) -> list[int]:
    """Send audio packets 0..39 with packet 5 lost; for each later one, how many packets behind
    the newest the released frame is (-1: nothing released)."""
    lags = []
    for seq in range(40):
        if seq == 5:
            continue
        frame = buffer.add(rtp(1000 + seq, 960 * seq, bytes([seq])))[1]
        lags.append(-1 if frame is None else seq - frame.data[0])
    return lags


def test_a_lost_audio_packet_costs_60_ms_once_where_aiortc_s_stays_300_ms_behind() -> None:
    ours = audio()
    lags = lag_after_a_loss(ours)
    # Packets 6 and 7 wait for 5 (reordering); 8 gives it up and releases 6; one frame of backlog
    # remains (one release per packet) and is then drained by the lag bound.
    assert lags[:5] == [0] * 5
    assert lags[5:7] == [-1, -1]
    assert max(lags[7:]) <= jitter.AUDIO_REORDER_PACKETS
    assert lags[-1] <= 2
    assert ours.skipped == 1
    # aiortc's: blocked until the 16 slots overflow, then 14 packets (~280 ms) behind for good.
    theirs = lag_after_a_loss(JitterBuffer(capacity=16, prefetch=4))
    assert theirs[-10:] == [14] * 10


def test_a_late_audio_packet_is_waited_for_60_ms_then_given_up() -> None:
    buffer = audio()
    assert released(buffer, rtp(10, 0, b"\x0a")) == (b"\x0a", 0)
    # 11 is late: 12 and 13 wait for it, and it comes in time.
    assert released(buffer, rtp(12, 960 * 12, b"\x0c")) is None
    assert released(buffer, rtp(11, 960 * 11, b"\x0b")) == (b"\x0b", 960 * 11)
    assert buffer.skipped == 0
    # 15 never comes: 16 and 17 wait, 18 gives it up.
    assert released(buffer, rtp(13, 960 * 13, b"\x0d")) == (b"\x0c", 960 * 12)
    assert released(buffer, rtp(14, 960 * 14, b"\x0e")) == (b"\x0d", 960 * 13)
    assert released(buffer, rtp(16, 960 * 16, b"\x10")) == (b"\x0e", 960 * 14)
    assert released(buffer, rtp(17, 960 * 17, b"\x11")) is None
    assert released(buffer, rtp(18, 960 * 18, b"\x12")) == (b"\x10", 960 * 16)
    assert buffer.skipped == 1


def test_sequence_numbers_wrap_around() -> None:
    buffer = video()
    assert released(buffer, rtp(65534, 3000, b"a")) is None
    assert released(buffer, rtp(65535, 3000, b"b")) is None
    assert released(buffer, rtp(0, 3000, b"c", marker=True)) == (b"abc", 3000)
    assert released(buffer, rtp(1, 6000, b"d", marker=True)) == (b"d", 6000)
    sound = audio()
    assert released(sound, rtp(65535, 960, b"x")) == (b"x", 960)
    assert released(sound, rtp(0, 1920, b"y")) == (b"y", 1920)


def test_frames_are_aiortc_s_jitter_frames() -> None:
    _, frame = video().add(rtp(1, 3000, b"a", marker=True))
    assert isinstance(frame, JitterFrame)


async def offer_and_answer(sender: RTCPeerConnection, receiver: RTCPeerConnection) -> None:
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)


def buffer_of(receiver: RTCRtpReceiver) -> object:
    return getattr(receiver, jitter.RECEIVER_ATTR)


async def test_aiortc_s_receiver_still_has_the_replaced_attribute() -> None:
    # Fails when an aiortc upgrade renames the private attribute (the patch would then do nothing).
    pc1, pc2 = RTCPeerConnection(), RTCPeerConnection()
    try:
        pc1.addTransceiver("audio", direction="sendonly")
        pc1.addTransceiver("video", direction="sendonly")
        await offer_and_answer(pc1, pc2)
        buffers = {t.kind: buffer_of(t.receiver) for t in pc2.getTransceivers()}
        assert type(buffers["audio"]) is JitterBuffer and type(buffers["video"]) is JitterBuffer
        assert buffers["audio"].capacity == jitter.AUDIO_CAPACITY
        assert buffers["video"].capacity == jitter.VIDEO_CAPACITY
    finally:
        await pc1.close()
        await pc2.close()


async def test_the_receivers_get_low_latency_buffers_after_the_offer() -> None:
    pc1, pc2 = RTCPeerConnection(), RTCPeerConnection()
    try:
        pc1.addTransceiver("audio", direction="sendonly")
        pc1.addTransceiver("video", direction="sendonly")
        await offer_and_answer(pc1, pc2)
        assert use_low_latency_jitter_buffers(pc2) == 2
        assert use_low_latency_jitter_buffers(pc2) == 0  # once only
        buffers = {t.kind: buffer_of(t.receiver) for t in pc2.getTransceivers()}
        assert all(isinstance(b, LowLatencyJitterBuffer) for b in buffers.values())
        assert buffers["video"]._is_video and buffers["video"].capacity == 512  # type: ignore[attr-defined]
        assert not buffers["audio"]._is_video and buffers["audio"].capacity == 16  # type: ignore[attr-defined]
    finally:
        await pc1.close()
        await pc2.close()


async def test_a_renamed_attribute_is_a_warning_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(jitter, "_warned", False)
    monkeypatch.setattr(jitter, "RECEIVER_ATTR", "_RTCRtpReceiver__renamed")
    pc1, pc2 = RTCPeerConnection(), RTCPeerConnection()
    try:
        pc1.addTransceiver("audio", direction="sendonly")
        pc1.addTransceiver("video", direction="sendonly")
        await offer_and_answer(pc1, pc2)
        with caplog.at_level(logging.WARNING, logger=jitter.__name__):
            assert use_low_latency_jitter_buffers(pc2) == 0
            assert use_low_latency_jitter_buffers(pc2) == 0
        assert len([r for r in caplog.records if r.name == jitter.__name__]) == 1
    finally:
        await pc1.close()
        await pc2.close()


async def test_media_arrives_through_the_low_latency_buffers() -> None:
    use_loopback_ice()
    pc1, pc2 = RTCPeerConnection(), RTCPeerConnection()
    received: dict[str, list[object]] = {"audio": [], "video": []}
    done = asyncio.Event()

    async def read(track: MediaStreamTrack) -> None:
        while len(received[track.kind]) < 5:
            received[track.kind].append(await track.recv())
        if all(len(frames) >= 5 for frames in received.values()):
            done.set()

    readers: list[asyncio.Task[None]] = []

    @pc2.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        readers.append(asyncio.ensure_future(read(track)))

    try:
        pc1.addTrack(AudioStreamTrack())
        pc1.addTrack(VideoStreamTrack())
        await offer_and_answer(pc1, pc2)
        assert use_low_latency_jitter_buffers(pc2) == 2
        await pc2.setLocalDescription(await pc2.createAnswer())
        await pc1.setRemoteDescription(pc2.localDescription)
        await asyncio.wait_for(done.wait(), 20)
        assert getattr(received["video"][0], "width", None) == 640  # decoded VP8 frames
        for t in pc2.getTransceivers():
            buffer = buffer_of(t.receiver)
            assert isinstance(buffer, LowLatencyJitterBuffer)
            assert buffer._origin is not None  # the packets went through it
    finally:
        for task in readers:
            task.cancel()
        await pc1.close()
        await pc2.close()
        use_loopback_ice(False)

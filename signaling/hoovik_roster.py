"""Who is in a Hoovik meeting, as the bot sees it: :class:`HoovikRoster`, the peer bookkeeping
:class:`~signaling.hoovik.HoovikSession` is built on.

Peers are keyed by Socket.IO id (signals are addressed to sockets); ``meta.userId`` is the identity.
The rules (docs/hoovik.md, "Joining and presence" and "Identity"):

* an entry with our own socket id or our ``userId`` is never a peer (our stale entry after a
  reconnect looks like a stranger otherwise);
* a known ``userId`` under a new socket id replaces the old socket (the backend drops the old
  socket without ``user-left``);
* mute state (``meta.muted`` or ``update-participant-state {peerId, muted}``) becomes
  :class:`MediaState`; camera state never reaches other clients through Hoovik, so peers are
  reported ``camera=True`` unless their join meta says ``video: false`` (the engine's freshness rule
  notices a camera that is off: Hoovik then sends a 16x12 black frame at 1 fps);
* a member missing from two consecutive ``participants-updated`` snapshots is dropped (one miss can
  be a snapshot read just before a join landed).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from signaling.base import Event, MediaState, PeerInfo, PeerJoined, PeerLeft, Role
from signaling.hoovik_protocol import HoovikOptions

__all__ = ["HoovikRoster"]


class HoovikRoster:
    """Peer state from the backend's roster events; subclasses deliver the events it produces."""

    options: HoovikOptions
    _sid: str
    _peers: dict[str, PeerInfo]
    _missing: dict[str, int]

    def _put(self, event: Event) -> None:
        raise NotImplementedError

    def _count(self, key: str) -> None:
        raise NotImplementedError

    def _peer_removed(self, peer: PeerInfo) -> None:
        """Called once per peer that leaves, before its :class:`PeerLeft` is queued."""

    def _on_participants_updated(self, entries: Any = None, *_: Any) -> None:
        """The whole room. Unknown members are added; a known member missing from two consecutive
        snapshots is dropped (one miss can be a snapshot read just before a join landed)."""
        if not isinstance(entries, list):
            return
        seen: set[str] = set()
        for entry in entries:
            sid = self._upsert(entry)
            if sid is not None:
                seen.add(sid)
        for sid in list(self._peers):
            if sid in seen:
                self._missing.pop(sid, None)
                continue
            misses = self._missing.get(sid, 0) + 1
            if misses >= 2:
                self._count("peers_dropped_by_snapshot")
                self._remove_peer(sid)
            else:
                self._missing[sid] = misses

    def _on_participant_state(self, data: Any = None, *_: Any) -> None:
        if not isinstance(data, dict):
            return
        sid = data.get("peerId")
        peer = self._peers.get(sid) if isinstance(sid, str) else None
        if peer is None:
            return
        self._set_mic(peer, data.get("muted") is not True)

    def _upsert(self, entry: Any) -> str | None:
        """Add or update one ``{id, meta}`` entry; return its socket id if it is a peer of ours."""
        if not isinstance(entry, dict):
            return None
        sid = entry.get("id")
        meta = entry.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        if not isinstance(sid, str) or not sid or sid == self._sid:
            return None
        uid = str(meta.get("userId") or sid)
        if uid == self.options.user_id:
            return None  # our own entry from before a reconnect: never a peer
        name = str(meta.get("name") or "Guest")[:200]
        known = self._peers.get(sid)
        if known is None:
            # Same userId under a new socket: the backend dropped the old socket without user-left.
            for other_sid, other in list(self._peers.items()):
                if other.user_id == uid:
                    self._count("peers_replaced")
                    self._remove_peer(other_sid)
            role: Role = "bot" if meta.get("bot") else "participant"
            mic = meta.get("muted") is not True
            camera = meta.get("video") is not False
            info = PeerInfo(sid, name, role, mic, camera, uid)
            self._peers[sid] = info
            self._put(PeerJoined(sid, name, role, mic, camera, uid))
            return sid
        if name != known.name:
            known = self._peers[sid] = replace(known, name=name)
        if "muted" in meta:
            self._set_mic(known, meta.get("muted") is not True)
        return sid

    def _set_mic(self, peer: PeerInfo, mic: bool) -> None:
        if mic == peer.mic:
            return
        self._peers[peer.peer_id] = replace(peer, mic=mic)
        self._put(MediaState(peer.peer_id, mic, peer.camera))

    def _remove_peer(self, sid: str) -> None:
        peer = self._peers.pop(sid, None)
        self._missing.pop(sid, None)
        if peer is None:
            return
        self._peer_removed(peer)
        self._put(PeerLeft(sid))

"""REST helpers for the native signaling server: create a room, mint an invite (docs/signaling.md,
"REST API"). Used by tests, the demo and the load generator; the bot itself never calls them."""

from __future__ import annotations

from typing import Any

import aiohttp
from yarl import URL

from signaling.base import Role

__all__ = ["SignalingHTTPError", "create_room", "http_base", "mint_invite"]


class SignalingHTTPError(Exception):
    """A REST call was refused; ``code`` is the server's ``error`` field."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def http_base(url: str) -> URL:
    u = URL(url)
    if u.scheme in ("ws", "wss"):
        u = u.with_scheme("http" if u.scheme == "ws" else "https")
    return u.with_path("/").with_query(None)


async def _rest(
    session: aiohttp.ClientSession | None,
    method: str,
    url: URL,
    *,
    body: dict[str, Any] | None = None,
    bearer: str | None = None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    http = session if session is not None else aiohttp.ClientSession()
    try:
        async with http.request(method, url, json=body, headers=headers) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = None
            if resp.status >= 400 or not isinstance(data, dict):
                info = data if isinstance(data, dict) else {}
                raise SignalingHTTPError(
                    resp.status, str(info.get("error", "http_error")), str(info.get("message", resp.reason))
                )
            return data
    finally:
        if session is None:
            await http.close()


async def create_room(
    http_url: str,
    name: str | None = None,
    *,
    session: aiohttp.ClientSession | None = None,
    room_key: str | None = None,
) -> tuple[str, str]:
    """``POST /rooms``; return ``(room_id, host_token)``."""
    data = await _rest(session, "POST", http_base(http_url) / "rooms", body={"name": name or ""}, bearer=room_key)
    return str(data["roomId"]), str(data["hostToken"])


async def mint_invite(
    http_url: str,
    room: str,
    host_token: str,
    role: Role,
    ttl_s: float = 3600.0,
    participant_id: str | None = None,
    *,
    session: aiohttp.ClientSession | None = None,
) -> str:
    """``POST /rooms/{room}/invites`` with the host token; return the new token."""
    body: dict[str, Any] = {"role": role, "ttlSeconds": ttl_s}
    if participant_id is not None:
        body["participantId"] = participant_id
    url = http_base(http_url) / "rooms" / room / "invites"
    data = await _rest(session, "POST", url, body=body, bearer=host_token)
    return str(data["token"])

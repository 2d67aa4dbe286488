"""The web app the signaling server serves: the pages, their API, and the "Add the bot" endpoints.

People use the product from a browser, so the server that already owns rooms and tokens also hands
out the pages: ``/`` (create a room, copy links, add the bot) and ``/meet`` (the meeting). They are
plain HTML and ES modules from :file:`signaling/static/` (no build step, no CDN) and they speak the
same REST and WebSocket protocol as every other client (docs/signaling.md, docs/web.md).

Two small JSON endpoints exist only for the pages:

- ``POST /api/invite`` checks an invite link *before* the page asks for camera and microphone, so a
  wrong or expired link gets a clear page instead of a failed join after a permission prompt.
- ``GET /api/web`` tells the landing page whether this server can start bots.

``/rooms/{room}/bot`` (POST start, GET state, DELETE stop; host token) drives the optional
:class:`~signaling.launcher.BotLauncher`. Every answer carries the bot's ``state``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from signaling.hub import Hub, http_error
from signaling.launcher import BotLauncher, LauncherFactory
from signaling.messages import ID_PATTERN, MAX_TOKEN_CHARS
from signaling.rest import require_host
from signaling.tokens import TokenError

__all__ = ["LAUNCHER_KEY", "STATIC_DIR", "mount_web"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

_TOKEN_ERRORS = {
    "malformed": ("token_malformed", 401, "This link's token is damaged or incomplete."),
    "bad_signature": ("token_bad_signature", 401, "This link was not issued by this server."),
    "expired": ("token_expired", 401, "This invite link has expired."),
    "wrong_room": ("token_wrong_room", 403, "This link belongs to a different room."),
}
"""The invite check's answers: the same codes as everywhere, with words a person understands."""

# Pages may talk only to their own origin; the meeting needs camera/mic and nothing else.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
    "Permissions-Policy": "camera=(self), microphone=(self), geolocation=()",
}


WEB_HUB_KEY: web.AppKey[Hub] = web.AppKey("hoovik_web_hub")
LAUNCHER_KEY: web.AppKey[BotLauncher] = web.AppKey("hoovik_bot_launcher")


def _hub(request: web.Request) -> Hub:
    return request.app[WEB_HUB_KEY]


def _launcher(request: web.Request) -> BotLauncher | None:
    return request.app.get(LAUNCHER_KEY)


def _page(name: str) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / name, headers=_PAGE_HEADERS)


async def _landing(_: web.Request) -> web.StreamResponse:
    return _page("index.html")


async def _meeting(_: web.Request) -> web.StreamResponse:
    return _page("meeting.html")


async def _web_config(request: web.Request) -> web.Response:
    return web.json_response({"botLauncher": _launcher(request) is not None, "wsPath": "/ws"})


async def _check_invite(request: web.Request) -> web.Response:
    """Would this (room, token) be let in? Answers the questions the meeting page must ask before
    it requests camera and microphone: which room, which role, and if not, why not."""
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, RecursionError):
        return http_error(400, "bad_json", "body is not JSON")
    if not isinstance(body, dict):
        return http_error(400, "bad_json", "body must be a JSON object")
    room_id, token = body.get("room"), body.get("token")
    if not isinstance(room_id, str) or not ID_PATTERN.match(room_id):
        return http_error(400, "bad_field", "This link has no valid room in it.")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        return http_error(400, "bad_field", "This link has no invite token in it.")
    hub = _hub(request)
    try:
        claims = hub.signer.verify(token, room=room_id)
    except TokenError as exc:
        code, status, message = _TOKEN_ERRORS[exc.code]
        return http_error(status, code, message)
    room = hub.get_room(room_id)
    if room is None:
        return http_error(404, "room_not_found", "This meeting has ended or never existed.")
    return web.json_response(
        {
            "room": room.id,
            "roomName": room.name,
            "role": claims.role,
            "participantId": claims.pid,
            "expiresAt": claims.exp,
        }
    )


def _local_ws_url(request: web.Request) -> str:
    """The server as this machine reaches it: the local address this request came in on."""
    sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
    host, port = ("127.0.0.1", 8765) if not sock else (str(sock[0]), int(sock[1]))
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{port}/ws"


def _bot_request(request: web.Request) -> tuple[str, BotLauncher | None] | web.Response:
    """The room and launcher of a ``/rooms/{room}/bot`` request, or the refusal (with a ``state``,
    so the page always knows what to show: ``none`` unless the room holds a bot)."""
    room_id = request.match_info["room"]
    hub = _hub(request)
    auth = require_host(request, hub, room_id, state="none")
    if isinstance(auth, web.Response):
        return auth
    if not hub.room_exists(room_id):
        return http_error(404, "room_not_found", "the room does not exist (any more)", state="none")
    return room_id, _launcher(request)


def _state_without_launcher(hub: Hub, room_id: str) -> dict[str, Any]:
    present = hub.bot_in_room(room_id)
    message = "a bot is in the meeting (not started by this server)" if present else ""
    return {"state": "joined" if present else "none", "message": message, "launched": False}


async def _launch_bot(request: web.Request) -> web.Response:
    checked = _bot_request(request)
    if isinstance(checked, web.Response):
        return checked
    room_id, launcher = checked
    if launcher is None:
        why = "this server does not start bots (run it with --bot-command); use the command line instead"
        state = _state_without_launcher(_hub(request), room_id)
        return web.json_response({**state, "error": "bot_launcher_disabled", "message": why}, status=501)
    status, body = await launcher.launch(room_id, _local_ws_url(request))
    return web.json_response(body, status=status)


async def _bot_status(request: web.Request) -> web.Response:
    checked = _bot_request(request)
    if isinstance(checked, web.Response):
        return checked
    room_id, launcher = checked
    if launcher is None:
        return web.json_response({**_state_without_launcher(_hub(request), room_id), "launcher": False})
    return web.json_response({**await launcher.status(room_id), "launcher": True})


async def _stop_bot(request: web.Request) -> web.Response:
    checked = _bot_request(request)
    if isinstance(checked, web.Response):
        return checked
    room_id, launcher = checked
    if launcher is None or not await launcher.stop_room(room_id, "stopped by the host"):
        why = "no bot started by this server is running for this room"
        state = await launcher.status(room_id) if launcher else _state_without_launcher(_hub(request), room_id)
        return web.json_response({**state, "error": "no_bot", "message": why}, status=404)
    return web.json_response(await launcher.status(room_id))


def mount_web(app: web.Application, hub: Hub, launcher: LauncherFactory | None = None) -> None:
    """Add the pages, their static files, the page API and (if given) the bot launcher."""
    app[WEB_HUB_KEY] = hub
    app.router.add_get("/", _landing)
    app.router.add_get("/meet", _meeting)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    app.router.add_get("/api/web", _web_config)
    app.router.add_post("/api/invite", _check_invite)
    app.router.add_post("/rooms/{room}/bot", _launch_bot)
    app.router.add_get("/rooms/{room}/bot", _bot_status)
    app.router.add_delete("/rooms/{room}/bot", _stop_bot)
    if launcher is not None:
        bots = launcher(hub)
        app[LAUNCHER_KEY] = bots

        async def stop_bots(_: web.Application) -> None:
            await bots.close()

        app.on_shutdown.append(stop_bots)

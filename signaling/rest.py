"""The signaling server's REST side: rooms, invites, room summary, health, CORS and HTTP limits.

The routes and error shapes are in docs/signaling.md ("REST API"), the limits in docs/security.md.
It reads and changes rooms only through the :class:`~signaling.hub.Hub` stored under
:data:`HUB_KEY`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from signaling.config import ServerConfig, ServerStats
from signaling.hub import TOKEN_ERRORS, Hub, http_error, origin_allowed
from signaling.limits import KeyedLimiter, request_key, retry_after_header
from signaling.messages import ID_PATTERN, MAX_ID_CHARS, MAX_NAME_CHARS, ErrorCode
from signaling.tokens import TokenClaims, TokenError

HUB_KEY: web.AppKey[Hub] = web.AppKey("hoovik_signaling_hub")


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object (an empty body counts as ``{}``), or the 400 to send back."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return http_error(400, ErrorCode.BAD_JSON, "body is not JSON")
    if not isinstance(body, dict):
        return http_error(400, ErrorCode.BAD_JSON, "body must be a JSON object")
    return body


def require_host(request: web.Request, hub: Hub, room_id: str, **extra: Any) -> TokenClaims | web.Response:
    """The host's claims from ``Authorization: Bearer <host token>``, or the 401/403 to answer with
    (``extra`` fields added to its body)."""
    token = _bearer(request)
    if token is None:
        return http_error(401, "unauthorized", "Authorization: Bearer <host token> is required", **extra)
    try:
        claims = hub.signer.verify(token, room=room_id)
    except TokenError as exc:
        status = 403 if exc.code == "wrong_room" else 401
        return http_error(status, TOKEN_ERRORS[exc.code], f"token refused: {exc.code}", **extra)
    if claims.role != "host":
        return http_error(403, ErrorCode.FORBIDDEN, "only a host token may do this", **extra)
    return claims


def _base_urls(request: web.Request, config: ServerConfig) -> tuple[str, str]:
    base = (config.public_url or f"{request.scheme}://{request.host}").rstrip("/")
    if base.startswith("https://"):
        ws_base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        ws_base = "ws://" + base[len("http://") :]
    else:
        ws_base = base
    return base, f"{ws_base}/ws"


async def _create_room(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    key = hub.config.create_room_key
    if key is not None and not hmac.compare_digest((_bearer(request) or "").encode(), key.encode()):
        return http_error(401, "unauthorized", "creating rooms needs the server's room key")
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    name = body.get("name") or ""
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        why = f"'name' must be a string of at most {MAX_NAME_CHARS} characters"
        return http_error(400, ErrorCode.BAD_FIELD, why)
    room = hub.create_room(name)
    if room is None:
        return http_error(503, "too_many_rooms", "the server holds its maximum number of rooms")
    host_token = hub.signer.mint(room.id, "host", hub.config.host_token_ttl_s)
    base, ws_url = _base_urls(request, hub.config)
    return web.json_response(
        {
            "roomId": room.id,
            "name": room.name,
            "hostToken": host_token,
            "joinUrl": f"{base}/?room={room.id}",
            "wsUrl": ws_url,
        },
        status=201,
    )


async def _mint_invite(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    room_id = request.match_info["room"]
    auth = require_host(request, hub, room_id)
    if isinstance(auth, web.Response):
        return auth
    if hub.get_room(room_id) is None:
        return http_error(404, ErrorCode.ROOM_NOT_FOUND, "the room does not exist (any more)")
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    role = body.get("role")
    if role not in ("participant", "bot"):
        return http_error(400, ErrorCode.BAD_FIELD, "'role' must be 'participant' or 'bot'")
    ttl = body.get("ttlSeconds", hub.config.default_invite_ttl_s)
    max_ttl = hub.config.max_invite_ttl_s
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= max_ttl:
        why = f"'ttlSeconds' must be a number from 1 to {int(max_ttl)}"
        return http_error(400, ErrorCode.BAD_FIELD, why)
    pid = body.get("participantId")
    if pid is not None and not (isinstance(pid, str) and ID_PATTERN.match(pid)):
        why = f"'participantId' must be 1..{MAX_ID_CHARS} characters of [A-Za-z0-9_.:@-]"
        return http_error(400, ErrorCode.BAD_FIELD, why)
    token = hub.signer.mint(room_id, role, float(ttl), pid=pid)
    claims = hub.signer.verify(token)
    return web.json_response({"token": token, "role": role, "participantId": pid, "expiresAt": claims.exp}, status=201)


async def _get_room(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    room_id = request.match_info["room"]
    auth = require_host(request, hub, room_id)
    if isinstance(auth, web.Response):
        return auth
    room = hub.get_room(room_id)
    if room is None:
        return http_error(404, ErrorCode.ROOM_NOT_FOUND, "the room does not exist (any more)")
    return web.json_response(room.summary())


async def _health(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    return web.json_response({"status": "ok", "rooms": hub.room_count, "stats": dataclasses.asdict(hub.stats)})


async def _ws(request: web.Request) -> web.StreamResponse:
    return await request.app[HUB_KEY].serve(request)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def cors_middleware(config: ServerConfig) -> Any:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and config.allow_origins is not None and origin_allowed(config, origin)
        if request.method == "OPTIONS" and allowed:
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        if allowed and origin is not None and not isinstance(response, web.WebSocketResponse):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response.headers["Vary"] = "Origin"
        return response

    return cors


_RATE_LIMITED_ROUTES = {("POST", "/rooms"): "rooms", ("POST", "/rooms/{room}/bot"): "bots"}


def limits_middleware(config: ServerConfig, stats: ServerStats) -> Any:
    """Per-address rate limits on room creation and bot launches, and a deadline for request bodies.

    Bodies are read here, once, within ``body_timeout_s`` (aiohttp caches them for the handler), so
    no handler (ours or :mod:`signaling.web`'s) can be held open by a body that trickles in.
    """
    limiters = {
        "rooms": KeyedLimiter(config.rooms_per_ip_per_s, config.rooms_burst_per_ip, config.rate_limit_tracked_ips),
        "bots": KeyedLimiter(
            config.bot_launches_per_ip_per_s, config.bot_launches_burst_per_ip, config.rate_limit_tracked_ips
        ),
    }

    @web.middleware
    async def limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        which = _RATE_LIMITED_ROUTES.get((request.method, route.canonical if route is not None else ""))
        if which is not None:
            wait = limiters[which].check(request_key(request))
            if wait is not None:
                stats.http_rate_limited += 1
                what = "rooms" if which == "rooms" else "bot launches"
                # A refused launch started nothing; the page reads ``state`` from every launch answer.
                extra = {} if which == "rooms" else {"state": "none"}
                response = http_error(429, "rate_limited", f"too many {what} from your address; retry later", **extra)
                response.headers["Retry-After"] = retry_after_header(wait)
                return response
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.body_exists:
            try:
                async with asyncio.timeout(config.body_timeout_s):
                    await request.read()
            except TimeoutError:
                response = http_error(408, "body_timeout", "the request body did not arrive in time")
                response.force_close()
                return response
        return await handler(request)

    return limits


def add_routes(app: web.Application) -> None:
    app.router.add_post("/rooms", _create_room)
    app.router.add_post("/rooms/{room}/invites", _mint_invite)
    app.router.add_get("/rooms/{room}", _get_room)
    app.router.add_get("/health", _health)
    app.router.add_get("/ws", _ws)

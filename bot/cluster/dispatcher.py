"""``hoovik-bot dispatch``: the REST front door of the cluster.

``POST /bots`` validates a request (400 with the reason otherwise) and queues a job; ``GET
/bots/{id}`` shows it (queued, running on which worker, since when, participants, last heartbeat);
``DELETE /bots/{id}`` asks its worker to leave. ``GET /status`` and ``GET /metrics`` show the
cluster. The dispatcher keeps no state of its own: everything is in Redis, so any number of
dispatchers can run, and one that restarts loses nothing.

The job carries the bot token, so the API can require ``Authorization: Bearer TOKEN``
(``--api-token`` / ``$HOOVIK_DISPATCH_TOKEN``) and binds to loopback by default.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from aiohttp import web

from bot.cluster.jobs import BadRequest, parse_request
from bot.cluster.metrics import DispatcherMetrics, metrics_response
from bot.cluster.status import snapshot
from bot.cluster.store import ANY_REDIS_ERROR, REDIS_ERRORS, Store, job_view

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
STORE_KEY: web.AppKey[Store] = web.AppKey("cluster_store")
METRICS_KEY: web.AppKey[DispatcherMetrics] = web.AppKey("cluster_metrics")
TOKEN_KEY: web.AppKey[str | None] = web.AppKey("cluster_api_token")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _unavailable(exc: BaseException) -> web.Response:
    return _error(503, "redis_unavailable", f"Redis is unreachable, try again: {exc!r}")


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    token = request.app[TOKEN_KEY]
    if token is not None and request.path not in ("/health",):
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _error(401, "unauthorized", "send Authorization: Bearer <dispatch token>")
    try:
        return await handler(request)
    except REDIS_ERRORS as exc:
        return _unavailable(exc)


async def _submit(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        metrics.rejected.labels("too_large").inc()
        return _error(413, "too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw.decode("utf-8") or "null")
    except (UnicodeDecodeError, ValueError) as exc:
        metrics.rejected.labels("bad_request").inc()
        return _error(400, "bad_request", f"the body is not JSON: {exc}")
    try:
        spec = parse_request(body)
    except BadRequest as exc:
        metrics.rejected.labels("bad_request").inc()
        return _error(400, "bad_request", str(exc))
    store = request.app[STORE_KEY]
    created, job_id = await store.submit(spec)
    if not created:
        metrics.rejected.labels("bot_running").inc()
        data = await store.job(job_id)
        body = {"error": "bot_running", "message": "a bot job is already active for this meeting", "id": job_id}
        if data:
            body["job"] = job_view(data)
        return web.json_response(body, status=409)
    metrics.submitted.inc()
    log.info("job %s queued: %s", job_id, spec.describe())
    return web.json_response({"id": job_id, "state": "queued"}, status=202, headers={"Location": f"/bots/{job_id}"})


async def _get(request: web.Request) -> web.Response:
    data = await request.app[STORE_KEY].job(request.match_info["id"])
    if data is None:
        return _error(404, "not_found", "no such job (or it ended more than a day ago)")
    return web.json_response(job_view(data))


async def _delete(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    job_id = request.match_info["id"]
    outcome = await store.request_stop(job_id)
    if outcome == "missing":
        return _error(404, "not_found", "no such job")
    data = await store.job(job_id)
    return web.json_response(job_view(data) if data else {"id": job_id, "state": outcome}, status=202)


async def _status(request: web.Request) -> web.Response:
    return web.json_response(await snapshot(request.app[STORE_KEY]))


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    try:
        metrics.update(await snapshot(request.app[STORE_KEY]))
    except ANY_REDIS_ERROR as exc:
        log.warning("metrics: Redis unreachable: %r", exc)  # serve the last values
    return metrics_response(metrics.registry)


async def _health(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def create_dispatcher_app(store: Store, api_token: str | None = None) -> web.Application:
    app = web.Application(middlewares=[_auth], client_max_size=MAX_BODY_BYTES)
    app[STORE_KEY] = store
    app[METRICS_KEY] = DispatcherMetrics()
    app[TOKEN_KEY] = api_token
    app.router.add_post("/bots", _submit)
    app.router.add_get("/bots/{id}", _get)
    app.router.add_delete("/bots/{id}", _delete)
    app.router.add_get("/status", _status)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/health", _health)
    return app

"""``hoovik-bot dispatch`` and ``hoovik-bot worker``: the cluster's command line.

- ``hoovik-bot dispatch --redis URL [--host H --port P]``: the REST API (POST/GET/DELETE /bots,
  /status, /metrics).
- ``hoovik-bot dispatch status --redis URL``: the cluster at a glance, printed once.
- ``hoovik-bot worker --redis URL [--capacity N]``: claim meeting jobs and run their bots; SIGTERM
  drains (meetings move to other workers), a second signal stops at once.

Registered by ``bot.cli`` through ``SUBCOMMAND_MODULES``; ``python -m bot.cluster.cli`` runs the same
parsers on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web


def add_parser(subparsers: Any) -> None:
    from bot.config import add_model_flags

    p = subparsers.add_parser("dispatch", help="the cluster's REST API for bot requests (Redis)")
    p.add_argument("action", nargs="?", choices=["status"], help="'status': print the cluster at a glance and exit")
    _add_redis_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address of the REST API (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port of the REST API (default 8090)")
    p.add_argument(
        "--api-token",
        help="require 'Authorization: Bearer TOKEN' on the API ($HOOVIK_DISPATCH_TOKEN, preferred)",
    )
    p.add_argument("--json", action="store_true", help="status: print JSON instead of a table")
    p.set_defaults(handler=dispatch_command)

    p = subparsers.add_parser("worker", help="claim meeting jobs from Redis and run their bots")
    _add_redis_flags(p)
    p.add_argument("--capacity", type=int, default=4, help="meetings at once (default 4)")
    p.add_argument("--max-participants", type=int, help="stop claiming at this many people in all meetings")
    p.add_argument(
        "--max-cpu",
        type=float,
        default=0.9,
        help="stop claiming while this process uses more than this fraction of the machine's cores (default 0.9)",
    )
    p.add_argument(
        "--stop-when-throttled", action="store_true", help="stop claiming while any meeting's engine is throttled"
    )
    p.add_argument("--worker-id", help="consumer name (default: host-pid-random); unique per process")
    p.add_argument("--lease-ms", type=int, default=3000, help="job lease (default 3000)")
    p.add_argument(
        "--claim-idle-ms", type=int, default=3500, help="take over a job whose worker went quiet this long (3500)"
    )
    p.add_argument("--drain-grace-s", type=float, default=20.0, help="SIGTERM: wait this long for hand-offs (20)")
    p.add_argument("--max-attempts", type=int, default=5, help="claims without a join before a job fails (5)")
    p.add_argument("--give-up-s", type=float, default=60.0, help="signaling unreachable this long: retry the job")
    p.add_argument("--http-host", default="127.0.0.1", help="address of /metrics, /health, /status (127.0.0.1)")
    p.add_argument("--http-port", type=int, default=0, help="port of /metrics, /health, /status (default: any)")
    p.add_argument("--ice-server", action="append", help="STUN/TURN URL (repeatable); default none")
    add_model_flags(p)
    p.set_defaults(handler=worker_command)


def _add_redis_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis", default=os.environ.get("HOOVIK_REDIS_URL"), help="redis://host:port/db ($HOOVIK_REDIS_URL)"
    )
    p.add_argument("--prefix", default="hoovik:", help="key prefix in Redis (default 'hoovik:')")


def _need_redis(args: argparse.Namespace, command: str) -> str:
    if not args.redis:
        raise SystemExit(f"hoovik-bot {command}: --redis URL is required (or $HOOVIK_REDIS_URL)")
    return str(args.redis)


def dispatch_command(args: argparse.Namespace) -> int:
    url = _need_redis(args, "dispatch")
    if args.action == "status":
        return asyncio.run(_status(url, args.prefix, args.json))
    token = args.api_token or os.environ.get("HOOVIK_DISPATCH_TOKEN") or None
    return asyncio.run(_dispatch(url, args.prefix, args.host, args.port, token))


async def _status(url: str, prefix: str, as_json: bool) -> int:
    from bot.cluster.status import render, snapshot
    from bot.cluster.store import REDIS_ERRORS, Store, connect

    redis = connect(url)
    try:
        snap = await snapshot(Store(redis, prefix))
    except REDIS_ERRORS as exc:
        print(f"hoovik-bot dispatch status: Redis unreachable at {url}: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
    print(json.dumps(snap, indent=2) if as_json else render(snap))
    return 0


async def _dispatch(url: str, prefix: str, host: str, port: int, token: str | None) -> int:
    from bot.cluster.dispatcher import create_dispatcher_app
    from bot.cluster.store import REDIS_ERRORS, Store, connect

    redis = connect(url)
    store = Store(redis, prefix)
    with contextlib.suppress(*REDIS_ERRORS):
        await store.ensure_group()  # else the first worker creates it
    runner = web.AppRunner(create_dispatcher_app(store, token), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"dispatcher on http://{host}:{_bound_port(site, port)} (Redis {url})", flush=True)
    try:
        await _signal().wait()
    finally:
        await runner.cleanup()
        await redis.aclose()
    return 0


def worker_command(args: argparse.Namespace) -> int:
    url = _need_redis(args, "worker")
    if args.capacity < 1:
        raise SystemExit("hoovik-bot worker: --capacity must be at least 1")
    return asyncio.run(_worker(url, args))


async def _worker(url: str, args: argparse.Namespace) -> int:
    from bot.cluster.meeting import MeetingOptions
    from bot.cluster.metrics import metrics_response
    from bot.cluster.store import Store, connect
    from bot.cluster.worker import Worker, WorkerOptions
    from bot.config import config_from_args

    cfg = config_from_args(args)
    options = WorkerOptions(
        worker_id=args.worker_id or "",
        capacity=args.capacity,
        max_participants=args.max_participants,
        max_cpu=args.max_cpu,
        stop_when_throttled=args.stop_when_throttled,
        lease_ms=args.lease_ms,
        claim_idle_ms=max(args.claim_idle_ms, args.lease_ms),
        drain_grace_s=args.drain_grace_s,
        max_attempts=args.max_attempts,
        prefix=args.prefix,
        meeting=MeetingOptions(give_up_s=args.give_up_s),
    )
    redis = connect(url)
    worker = Worker(Store(redis, args.prefix), cfg, options)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "ready": worker.runtime is not None})

    async def status(_: web.Request) -> web.Response:
        return web.json_response(worker.info())

    async def metrics(_: web.Request) -> web.Response:
        worker.metrics.observe(worker)
        return metrics_response(worker.metrics.registry)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.http_host, args.http_port)
    await site.start()
    port = _bound_port(site, args.http_port)
    print(f"worker {worker.id}: metrics on http://{args.http_host}:{port}/metrics", flush=True)
    stop = _signal()
    try:
        await worker.start()
        assert worker.runtime is not None
        models = worker.runtime.describe()
        print(f"worker {worker.id}: ready, capacity {options.capacity}; models: {models}", flush=True)
        await stop.wait()
        print(f"worker {worker.id}: draining", flush=True)
        stop.clear()
        drain = asyncio.create_task(worker.drain())
        second = asyncio.create_task(stop.wait())
        await asyncio.wait({drain, second}, return_when=asyncio.FIRST_COMPLETED)
        second.cancel()
        await worker.stop()
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await drain
        print(f"worker {worker.id}: stopped", flush=True)
    finally:
        await runner.cleanup()
        await redis.aclose()
    return 0


def _signal() -> asyncio.Event:
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, event.set)
    return event


def _bound_port(site: web.TCPSite, default: int) -> int:
    sockets = getattr(site._server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else default


def main(argv: Sequence[str] | None = None) -> int:
    """The cluster commands on their own (``python -m bot.cluster.cli worker …``)."""
    parser = argparse.ArgumentParser(prog="hoovik-bot")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

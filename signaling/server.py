"""The signaling server as an application: the hub, the REST routes and the web app on one port.

:mod:`signaling.hub` owns rooms and connections, :mod:`signaling.rest` the REST API,
:mod:`signaling.web` the pages and the "Add the bot" endpoints, :mod:`signaling.launcher` the bot
launchers; this module only assembles them (:func:`create_app`) and runs them on a TCP port
(:class:`SignalingServer`). The protocol is in docs/signaling.md, the web app in docs/web.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket

from aiohttp import web

from signaling.config import ServerConfig, ServerStats
from signaling.hub import Hub
from signaling.launcher import LauncherFactory
from signaling.limits import ConnectionGuard, GuardedSite, file_limit_cap
from signaling.rest import HUB_KEY, add_routes, cors_middleware, limits_middleware
from signaling.tokens import TokenSigner
from signaling.web import mount_web

__all__ = ["HUB_KEY", "Hub", "ServerConfig", "ServerStats", "SignalingServer", "create_app"]

log = logging.getLogger(__name__)


def create_app(
    secret: bytes,
    config: ServerConfig | None = None,
    *,
    max_message_bytes: int | None = None,
    room_ttl_s: float | None = None,
    allow_origins: list[str] | frozenset[str] | None = None,
    bot_launcher: LauncherFactory | None = None,
) -> web.Application:
    """Build the signaling application, with the web app (:mod:`signaling.web`) mounted.

    ``config`` carries every limit; the keyword shortcuts override single fields of it.
    ``bot_launcher`` enables "add the bot" (off by default: it starts processes); it is called once
    with the hub, e.g. ``local_launcher(BotLauncherConfig(command=...))``.
    """
    cfg = config or ServerConfig()
    if max_message_bytes is not None:
        cfg = dataclasses.replace(cfg, max_message_bytes=max_message_bytes)
    if room_ttl_s is not None:
        cfg = dataclasses.replace(cfg, room_ttl_s=room_ttl_s)
    if allow_origins is not None:
        cfg = dataclasses.replace(cfg, allow_origins=frozenset(allow_origins))
    hub = Hub(TokenSigner(secret), cfg)
    hub_stats = hub.stats
    middlewares = [cors_middleware(cfg), limits_middleware(cfg, hub_stats)]
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
    app[HUB_KEY] = hub

    async def on_startup(_: web.Application) -> None:
        hub.restore_state()

    async def on_shutdown(_: web.Application) -> None:
        await hub.shutdown()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    add_routes(app)
    mount_web(app, hub, bot_launcher)
    return app


class SignalingServer:
    """A running :func:`create_app` on one TCP port, for tests and ``hoovik-bot serve``."""

    def __init__(
        self,
        secret: bytes,
        config: ServerConfig | None = None,
        *,
        max_message_bytes: int | None = None,
        room_ttl_s: float | None = None,
        allow_origins: list[str] | frozenset[str] | None = None,
        bot_launcher: LauncherFactory | None = None,
    ) -> None:
        self.app = create_app(
            secret,
            config,
            max_message_bytes=max_message_bytes,
            room_ttl_s=room_ttl_s,
            allow_origins=allow_origins,
            bot_launcher=bot_launcher,
        )
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._bound = "127.0.0.1"
        self._port: int | None = None

    @property
    def hub(self) -> Hub:
        return self.app[HUB_KEY]

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` (REST base)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:] + "/ws"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port``; port 0 picks a free port, readable from :attr:`port`."""
        cfg, stats = self.hub.config, self.hub.stats
        runner = web.AppRunner(
            self.app, shutdown_timeout=cfg.close_timeout_s, access_log=None, keepalive_timeout=cfg.header_timeout_s
        )
        await runner.setup()

        def refused() -> None:
            stats.connections_refused += 1

        guard = ConnectionGuard(file_limit_cap(cfg.max_connections), cfg.max_connections_per_ip, refused)
        site = GuardedSite(runner, host, port, guard=guard, keepalive_timeout=cfg.header_timeout_s, access_log=None)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound = host or "0.0.0.0"
        self._host = host if not self.every_interface else "127.0.0.1"
        self._port = int(runner.addresses[0][1])
        log.info("signaling server listening on %s:%d", self._bound, self._port)

    @property
    def every_interface(self) -> bool:
        """Listening on a wildcard address (0.0.0.0 or ::): reachable from other machines."""
        return self._bound in ("0.0.0.0", "::", "")

    def listening_lines(self) -> list[str]:
        """What ``hoovik-bot serve`` prints: where it listens and the URLs to use, from this machine
        and (on a wildcard address) from others. :attr:`url` is always the local form."""
        if not self.every_interface:
            return [f"signaling server on {self.ws_url} (REST at {self.url})", f"web app on {self.url}/"]
        bound = f"[{self._bound}]" if ":" in self._bound else self._bound
        port = self.port
        return [
            f"listening on {bound}:{port} (every interface)",
            f"from this machine: web app on {self.url}/, signaling on {self.ws_url}",
            f"from other machines: http://<this machine's address>:{port}/ and ws://<this machine's address>:{port}/ws"
            f" (e.g. http://{socket.gethostname()}:{port}/; browsers allow camera and microphone only on"
            " https:// or localhost)",
        ]

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            with contextlib.suppress(Exception):
                await runner.cleanup()

    async def __aenter__(self) -> SignalingServer:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

"""``hoovik-bot``: the command line of the product.

Subcommands: ``serve`` (signaling server), ``join`` (the bot joins a room), ``demo`` (a whole local
meeting), ``models …`` (bundles and inspection). Configuration comes from ``--config FILE``
(TOML), ``HOOVIK_*`` environment variables, then flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import secrets
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.config import add_model_flags, config_from_args
from signaling.base import JOIN_REFUSED_CODES

if TYPE_CHECKING:
    from bot.service import BotService
    from signaling.base import SignalingSession
    from signaling.config import ServerConfig

# Modules that contribute subcommands: each has ``add_parser(subparsers)``, which registers its
# parser with ``set_defaults(handler=fn)``, where ``fn(args) -> int`` runs the command.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "bot.replay.cli",
    "bot.contrib.loadgen",
    "bot.cluster.cli",
    "models.training.cli",
)


# Kept only until bot/cluster/cli.py imports add_model_flags/config_from_args from bot.config.


def serve_config(args: argparse.Namespace) -> ServerConfig:
    """The signaling server's limits for ``serve``: defaults, plus the room key (flag, else env)."""
    from signaling.config import ServerConfig

    room_key = getattr(args, "room_key", None) or os.environ.get("HOOVIK_ROOM_KEY") or None
    return ServerConfig(create_room_key=room_key, state_file=getattr(args, "state", None) or None)


async def _serve(args: argparse.Namespace) -> int:
    from signaling.launcher import BotLauncherConfig, LauncherFactory, local_launcher
    from signaling.server import SignalingServer

    secret = (args.secret or os.environ.get("HOOVIK_SECRET") or "").encode() or secrets.token_bytes(32)
    launcher = None
    if args.bot_command:
        command = tuple(shlex.split(args.bot_command))
        if not command:
            raise SystemExit("hoovik-bot serve: --bot-command is empty")
        launcher = BotLauncherConfig(
            command=command,
            max_bots=args.max_bots,
            idle_stop_s=args.bot_idle_s,
            startup_timeout_s=args.bot_startup_timeout_s,
        )
    factory: LauncherFactory | None = None
    if args.redis:
        if launcher is not None:
            raise SystemExit("hoovik-bot serve: give --redis or --bot-command, not both")
        from bot.cluster.launcher import redis_launcher_factory

        factory = redis_launcher_factory(args.redis, signaling_url=args.bot_signaling_url)
    elif launcher is not None:
        factory = local_launcher(launcher)
    config = serve_config(args)
    server = SignalingServer(secret, config, bot_launcher=factory)
    await server.start(args.host, args.port)
    for line in server.listening_lines():
        print(line, flush=True)
    if config.create_room_key is not None:
        print("creating rooms needs the room key (Authorization: Bearer <key>)", flush=True)
    if args.redis:
        print('bot launcher: "Add the bot" queues a job for the bot workers on Redis', flush=True)
    if launcher is not None:
        print(f"bot launcher: up to {launcher.max_bots} bots, each: {shlex.join(launcher.command)} …", flush=True)
    await _wait_for_signal()
    await server.stop()
    return 0


# Exit codes of ``join`` (documented in docs/signaling.md, "Exit codes of hoovik-bot join").
EXIT_OK = 0  # stopped by SIGINT/SIGTERM
EXIT_ERROR = 1  # an unexpected error
EXIT_USAGE = 2  # bad or missing arguments (checked before the models load)
EXIT_REFUSED = 3  # the server refused the join: bad/expired token, id not ours, room full
EXIT_MEETING_GONE = 4  # the room / meeting does not exist (any more)
EXIT_REPLACED = 5  # another connection (another bot) took over our participant id
EXIT_UNREACHABLE = 6  # no signaling connection for --give-up-s
EXIT_LOST = 7  # the session ended for another reason and could not be resumed

_REFUSED = JOIN_REFUSED_CODES | {"invalid_code", "room_full", "forbidden"}


def join_exit(reason: str) -> tuple[int, str | None]:
    """The exit code of ``join`` and the stderr message for how its session ended (``reason`` is a
    :class:`~signaling.base.Disconnected` reason or a :class:`~signaling.base.JoinRejected` code)."""
    if reason in ("client_closed", "stopped"):
        return EXIT_OK, None
    if reason == "room_not_found":
        return EXIT_MEETING_GONE, "the meeting is gone (the room does not exist any more)"
    if reason == "replaced":
        return EXIT_REPLACED, "replaced: another bot joined with the same participant id"
    if reason in ("unreachable", "connect_failed"):
        return EXIT_UNREACHABLE, "the signaling server stayed unreachable; giving up"
    if reason in _REFUSED:
        return EXIT_REFUSED, f"the server refused the join ({reason}): check the token / meeting"
    return EXIT_LOST, f"the signaling session ended ({reason})"


class UsageError(Exception):
    """A ``join`` argument is wrong; reported before anything is loaded (exit code 2)."""


def join_token(args: argparse.Namespace) -> str | None:
    """The bot token: ``--token-file``, else ``$HOOVIK_BOT_TOKEN``, else ``--token`` (visible in ``ps``)."""
    if args.token_file:
        try:
            with open(args.token_file) as f:
                token = f.read().strip()
        except OSError as exc:
            raise UsageError(f"--token-file: {exc}") from exc
        if not token:
            raise UsageError(f"--token-file: {args.token_file} is empty")
        return token
    env = os.environ.get("HOOVIK_BOT_TOKEN", "").strip()
    if env:
        return env
    if args.token:
        print(
            "hoovik-bot join: warning: --token is visible to every user in `ps`; prefer --token-file FILE "
            "or $HOOVIK_BOT_TOKEN",
            file=sys.stderr,
            flush=True,
        )
    return args.token or None


def validate_join(args: argparse.Namespace) -> str | None:
    """Check what can be checked without the network or the models; return the token (native).
    Normalises ``args.meeting``. Raises :class:`UsageError`."""
    from yarl import URL

    from signaling.messages import ID_PATTERN

    def url_ok(value: str, schemes: tuple[str, ...], flag: str) -> None:
        try:
            u = URL(value)
        except ValueError as exc:
            raise UsageError(f"{flag}: not a URL: {value!r}") from exc
        if u.scheme not in schemes or not u.host:
            raise UsageError(f"{flag}: expected {'/'.join(schemes)}://host[:port]…, got {value!r}")

    if args.give_up_s is not None and args.give_up_s <= 0:
        raise UsageError("--give-up-s must be positive")
    if not ID_PATTERN.match(args.participant_id or ""):
        raise UsageError(f"--participant-id: 1-128 characters of A-Z a-z 0-9 _ . : @ -, got {args.participant_id!r}")
    if args.hoovik or args.meeting:
        if not (args.hoovik and args.meeting):
            raise UsageError("--hoovik URL and --meeting CODE go together")
        if args.signaling or args.room:
            raise UsageError("give either --signaling/--room or --hoovik/--meeting, not both")
        from signaling.base import JoinRejected
        from signaling.hoovik import normalize_meeting_code

        url_ok(args.hoovik, ("http", "https"), "--hoovik")
        try:
            args.meeting = normalize_meeting_code(args.meeting)
        except JoinRejected as exc:
            raise UsageError(f"--meeting: {args.meeting!r} is not a meeting code (3-32 of A-Z 0-9 -)") from exc
        return None
    token = join_token(args)
    if not (args.signaling and args.room and token):
        raise UsageError("give --signaling/--room and a token (--token-file, $HOOVIK_BOT_TOKEN), or --hoovik/--meeting")
    url_ok(args.signaling, ("ws", "wss", "http", "https"), "--signaling")
    if not ID_PATTERN.match(args.room):
        raise UsageError(f"--room: not a room id: {args.room!r}")
    return token


async def _join(args: argparse.Namespace) -> int:
    from bot.service import BotService
    from bot.uploads.access import EmotionServiceOptions
    from signaling.base import JoinRejected

    try:
        token = validate_join(args)
    except UsageError as exc:
        print(f"hoovik-bot join: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    hoovik = bool(args.hoovik)
    cfg = config_from_args(args)
    telemetry_token = args.telemetry_token or os.environ.get("HOOVIK_TELEMETRY_TOKEN") or None
    # Hoovik's UI shows emotions only through an emotion-service endpoint, so it is on by default there.
    emotion = None
    if args.emotion_service if args.emotion_service is not None else hoovik:
        emotion = EmotionServiceOptions(
            token=args.emotion_token or os.environ.get("HOOVIK_EMOTION_TOKEN") or None,
            allowed_origins=tuple(args.emotion_origin) if args.emotion_origin else None,
            uploads=not args.no_uploads,
            open_access=bool(args.emotion_open),
        )
    service = BotService(cfg, emotion_service=emotion, telemetry_token=telemetry_token)
    await service.start_http()
    auth_note = " (bearer token required)" if telemetry_token else ""
    print(f"telemetry on http://{cfg.server.http_host}:{service.http_port}/stats{auth_note}", flush=True)
    if emotion is not None:
        print(f"emotion service on http://{cfg.server.http_host}:{service.http_port} (Socket.IO)", flush=True)
    try:
        runtime = await service.load(allow_untrained_audio=args.allow_untrained)
        print(f"models: {runtime.describe()}", flush=True)
        session: SignalingSession
        try:
            if hoovik:
                from signaling.hoovik import HoovikOptions, HoovikSession

                options = HoovikOptions(
                    user_id=args.participant_id,
                    name=args.name,
                    socketio_path=args.hoovik_path,
                    mirror_results=args.mirror_meta,
                    give_up_s=args.give_up_s,
                )
                session = await HoovikSession.connect(args.hoovik, args.meeting, options)
                print(f"joined Hoovik meeting {session.code} as {options.user_id}", flush=True)
            else:
                from signaling.client import ReconnectingClient, ReconnectPolicy

                assert token is not None
                session = await ReconnectingClient.connect(
                    args.signaling,
                    args.room,
                    token,
                    args.participant_id,
                    args.name,
                    "bot",
                    policy=ReconnectPolicy(give_up_s=args.give_up_s),
                )
                print(f"joined room {args.room} as {session.self_id}", flush=True)
        except JoinRejected as exc:
            code, message = join_exit(exc.code)
            print(f"hoovik-bot join: {message or exc}: {exc.message}", file=sys.stderr, flush=True)
            return code if code != EXIT_OK else EXIT_ERROR
        reason = await _run_until_signal(service, session)
    finally:
        await service.stop()
    code, message = join_exit(reason)
    if message is not None:
        print(f"hoovik-bot join: {message}", file=sys.stderr, flush=True)
    return code


async def _run_until_signal(service: BotService, session: SignalingSession) -> str:
    """Run the bot until its session ends (its reason) or SIGINT/SIGTERM (``"stopped"``)."""
    task = asyncio.create_task(service.run_session(session))
    stop = asyncio.create_task(_wait_for_signal())
    await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if not task.done():
        # Leave first (Hoovik: leave-call, so nobody keeps a ghost of the bot), then let the
        # participant wind down on its own; cancelling it mid-close can be swallowed by aiortc.
        with contextlib.suppress(Exception):
            await session.close()
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(task), 10.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
            await asyncio.wait_for(task, 5.0)
        return "stopped"
    task.result()  # re-raises what the session loop raised
    return service.end_reason or "closed"


async def _demo(args: argparse.Namespace) -> int:
    from bot.contrib.demo import DemoOptions, run_demo

    cfg = config_from_args(args)
    opts = DemoOptions(
        participants=args.participants,
        duration=args.duration,
        media=args.media,
        json_path=args.json,
        speaking=args.speaking,
        quiet=args.quiet,
    )
    await run_demo(opts, cfg)
    return 0


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, done.set)
    await done.wait()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hoovik-bot", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the signaling server and its web app")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)",
    )
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--secret", help="token signing secret (default: $HOOVIK_SECRET, else random)")
    p.add_argument(
        "--room-key",
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' to create rooms (default: $HOOVIK_ROOM_KEY, else anyone may)",
    )
    p.add_argument(
        "--state",
        metavar="FILE",
        help="keep the list of rooms in this JSON file, so that a restarted server (same --secret) still "
        "knows them and everyone can rejoin (default: rooms live in memory only)",
    )
    p.add_argument(
        "--bot-command",
        metavar="CMD",
        help="enable 'Add the bot' in the web app: run this command (e.g. 'hoovik-bot join --bundle DIR') "
        "per room; the server appends --signaling, --room and --http-port 0, and passes the bot's token in "
        "$HOOVIK_BOT_TOKEN",
    )
    p.add_argument("--max-bots", type=int, default=2, help="bots the launcher runs at once (default 2)")
    p.add_argument(
        "--redis", metavar="URL", help="'Add the bot' queues jobs for bot workers on this Redis (docs/scale.md)"
    )
    p.add_argument(
        "--bot-signaling-url", metavar="URL", help="with --redis: this server's ws URL as the workers reach it"
    )
    p.add_argument(
        "--bot-idle-s", type=float, default=120.0, help="stop a launched bot left alone in its room this long"
    )
    p.add_argument(
        "--bot-startup-timeout-s",
        type=float,
        default=300.0,
        help="a launched bot that has not joined by then is stopped and reported as failed",
    )

    p = sub.add_parser("join", help="join a room (or a Hoovik meeting) as the bot")
    p.add_argument("--signaling", help="signaling WebSocket URL, e.g. ws://host:8765/ws")
    p.add_argument("--room")
    p.add_argument(
        "--token",
        help="a bot invite token minted by the host; visible in `ps`: prefer --token-file or $HOOVIK_BOT_TOKEN",
    )
    p.add_argument("--token-file", metavar="FILE", help="read the bot token from FILE (preferred)")
    p.add_argument(
        "--give-up-s",
        type=float,
        default=300.0,
        metavar="S",
        help="exit (code 6) after the signaling server has been unreachable this long (default 300)",
    )
    p.add_argument("--hoovik", metavar="URL", help="a Hoovik backend (Socket.IO), e.g. http://host:8000")
    p.add_argument("--meeting", metavar="CODE", help="the Hoovik meeting code to join")
    p.add_argument("--hoovik-path", default="socket.io", help="Socket.IO path of the Hoovik backend")
    p.add_argument(
        "--mirror-meta",
        action="store_true",
        help="Hoovik: also write each participant's latest result into the bot's meta (update-meta, "
        "at most 1/s; every update is broadcast to the whole room)",
    )
    p.add_argument(
        "--emotion-service",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve the emotion-service Socket.IO protocol on the HTTP port (default: on with --hoovik)",
    )
    p.add_argument("--emotion-token", help="require auth.token on emotion-service sockets ($HOOVIK_EMOTION_TOKEN)")
    p.add_argument(
        "--emotion-origin", action="append", help="browser origin allowed on the emotion service (repeatable)"
    )
    p.add_argument("--no-uploads", action="store_true", help="refuse emotion-service uploads (audio_chunk, frames)")
    p.add_argument(
        "--emotion-open",
        action="store_true",
        help="accept emotion-service sockets without a token on a non-loopback --http-host (the stock Hoovik UI "
        "sends none); without it such sockets need --emotion-token",
    )
    p.add_argument("--participant-id", default="hoovik-bot", help="our participant id (Hoovik: the userId)")
    p.add_argument("--name", default="Hoovik Bot")
    p.add_argument("--http-host", help="telemetry / emotion-service address (default 127.0.0.1: this host only)")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument(
        "--telemetry-token",
        metavar="TOKEN",
        help="require 'Authorization: Bearer TOKEN' on /stats and /metrics ($HOOVIK_TELEMETRY_TOKEN, preferred; "
        "/health and /ready stay open)",
    )
    p.add_argument("--ice-server", action="append", help="STUN/TURN URL (repeatable); default none")
    p.add_argument("--allow-untrained", action="store_true", help="fall back to an untrained Wav2Vec2 offline")
    add_model_flags(p)

    p = sub.add_parser("demo", help="a local demo meeting: signaling + bot + simulated participants")
    p.add_argument("--participants", type=int, default=3)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--media", action="append", help="media file a participant streams (repeatable)")
    p.add_argument("--speaking", type=int, help="how many participants send speech (default all)")
    p.add_argument("--json", help="write the summary as JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no live table")
    p.add_argument("--http-port", type=int, default=0)
    add_model_flags(p)

    from models.cli import add_models_parser

    add_models_parser(sub)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler_fn = getattr(args, "handler", None)
    if handler_fn is not None:
        try:
            return int(handler_fn(args))
        except KeyboardInterrupt:
            return 130
        except Exception as exc:
            if args.verbose:
                raise
            print(f"hoovik-bot {args.command}: error: {exc}", file=sys.stderr)
            return 1
    if args.command == "models":
        from models.cli import run_models_command

        return run_models_command(args)
    handler = {"serve": _serve, "join": _join, "demo": _demo}[args.command]
    try:
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        print(f"hoovik-bot {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

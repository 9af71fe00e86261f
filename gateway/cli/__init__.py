"""``xgw``: the gateway's one command. Each subcommand is a thin shell over the core."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from gateway import __version__
from gateway.cli import audit as cli_audit
from gateway.cli import datadir, memory, workers
from gateway.cli import mappings as cli_mappings
from gateway.cli import ops as cli_ops
from gateway.cli import security as cli_security
from gateway.config import ConfigError, Settings, effective_config, load_settings
from gateway.logs import configure_logging, get_logger
from gateway.storage import SchemaTooNew, StoreError, StoreUnavailable
from mappings.source import MappingDataError
from security.errors import SecurityError

log = get_logger("gateway.cli")
Command = Callable[[argparse.Namespace, Settings], int]


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The listeners' TLS (1.2 or newer, the library's default ciphers), if configured."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"tls_cert_file / tls_key_file: cannot be loaded ({type(exc).__name__}: "
            f"{getattr(exc, 'strerror', None) or exc})"
        ) from None
    if settings.tls_client_ca_file is not None:
        # Asked of every client, required of none at the handshake: windows and auditors have
        # tokens; the partner API refuses a message whose certificate is not its sender's.
        try:
            context.load_verify_locations(cafile=settings.tls_client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"tls_client_ca_file: cannot be loaded ({type(exc).__name__})"
            ) from None
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


async def serve_forever(
    settings: Settings, with_simulator: bool = False, listen_fd: int | None = None
) -> None:
    """Run the HTTP service until SIGTERM/SIGINT, then stop taking work and clean up.
    ``listen_fd``: serve on this inherited listening socket (a worker of ``--workers``)."""
    from aiohttp import web

    from gateway.http.app import build_app  # the service itself: only when serving

    simulator: web.AppRunner | None = None
    tls = tls_context(settings)  # a bad certificate stops the start before anything opens
    await asyncio.to_thread(datadir.embedded_setup, settings)
    if with_simulator:
        from gateway.devtools.simulator import build_simulator_app

        simulator = web.AppRunner(
            build_simulator_app(settings), access_log=None, handle_signals=False
        )
        await simulator.setup()
        await web.TCPSite(simulator, settings.host, settings.simulator_port).start()
        log.info("simulator.listening", address=f"{settings.host}:{settings.simulator_port}")
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site: web.BaseSite
    if listen_fd is not None:
        site = web.SockSite(
            runner,
            socket.socket(fileno=listen_fd),
            shutdown_timeout=settings.shutdown_grace_seconds,
            ssl_context=tls,
        )
    else:
        site = web.TCPSite(
            runner,
            settings.host,
            settings.port,
            shutdown_timeout=settings.shutdown_grace_seconds,
            ssl_context=tls,
        )
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sockets = getattr(site._server, "sockets", None) or []
    bound = [sock.getsockname() for sock in sockets]
    log.info(
        "gateway.listening",
        address=[f"{h}:{p}" for h, p, *_ in bound],
        tls=tls is not None,
        node_id=settings.node_id,
        redis=settings.redis_url is not None,
    )
    await stop.wait()
    log.info("gateway.stopping")
    await runner.cleanup()
    if simulator is not None:
        await simulator.cleanup()
    log.info("gateway.stopped")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    memory.return_large_blocks()
    datadir.ensure_private_dir(settings.data_dir)
    for path, mode in datadir.loose_paths(settings.data_dir):
        log.warning("data_dir.loose_mode", path=str(path), mode=mode, expected="0600/0700")
    if args.workers > 1:
        return workers.supervise(settings, args.workers, args.with_simulator, args.config)
    asyncio.run(serve_forever(settings, args.with_simulator, args.listen_fd))
    return 0


def cmd_config_show(_args: argparse.Namespace, settings: Settings) -> int:
    sys.stdout.write(orjson.dumps(effective_config(settings), option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xgw", description="跨省通办 interop gateway")
    parser.add_argument("--version", action="version", version=f"xgw {__version__}")
    parser.add_argument("--config", type=Path, help="YAML configuration file")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="override the configured host")
    serve.add_argument("--port", type=int, help="override the configured port")
    serve.add_argument(
        "--with-simulator",
        action="store_true",
        help="also run the bundled partner simulator (the demo setup)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(1, 65),
        metavar="N",
        help="N worker processes on one listening socket (one core each), over the same store",
    )
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a worker's socket
    serve.set_defaults(handler=cmd_serve)

    config = commands.add_parser("config", help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_commands.add_parser(
        "show", help="print the effective configuration, secrets masked"
    )
    show.set_defaults(handler=cmd_config_show)
    cli_security.register(commands)
    cli_mappings.register(commands)
    cli_audit.register(commands)
    cli_ops.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `xgw … | head` ends quietly
    datadir.restrict_new_files()  # personal data and keys: 0600 files, 0700 folders
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        settings = _settings(args)
    except ConfigError as exc:
        sys.stderr.write(f"xgw: {exc}\n")
        return 78  # EX_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    try:
        return handler(args, settings)
    except ConfigError as exc:  # found only as the command starts (e.g. partners.yaml)
        sys.stderr.write(f"xgw: {exc}\n")
        return 78
    except SecurityError as exc:  # a refusal: one line, its stable code, exit 1
        sys.stderr.write(f"xgw: refused: {exc.code}: {exc.message}\n")
        return 1
    except MappingDataError as exc:  # every problem in the mapping data, located
        cli_mappings.print_problems(exc.problems)
        return 1
    except SchemaTooNew as exc:  # a newer gateway migrated the database: upgrade this one
        sys.stderr.write(f"xgw: {exc}\n")
        return 78
    except StoreUnavailable as exc:  # the database does not answer (yet)
        sys.stderr.write(f"xgw: the database is unavailable: {exc}\n")
        return 69  # EX_UNAVAILABLE
    except StoreError as exc:  # e.g. a backup that does not check out
        sys.stderr.write(f"xgw: {exc}\n")
        return 1
    except OSError as exc:  # e.g. the port is taken, a file unreadable: one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"xgw: cannot {args.command}: {where}{exc.strerror or exc}\n")
        return 71  # EX_OSERR


if __name__ == "__main__":
    raise SystemExit(main())

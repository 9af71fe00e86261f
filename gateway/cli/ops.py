"""``xgw tokens``, ``xgw outbox``, ``xgw simulate-partner``, ``xgw demo``: operators' commands."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

from aiohttp import web

from gateway.cli.datadir import embedded_setup
from gateway.config import Settings
from gateway.storage.sqlite import Store
from rules.text import is_code, text_problem


def _token_name(value: str) -> str:
    if not is_code(r"[A-Za-z0-9._-]{1,64}", value):
        raise argparse.ArgumentTypeError("1–64 ASCII letters, digits, '.', '_' or '-'")
    return value


def _hall(value: str) -> str:
    problem = text_problem(value)
    if problem or not 0 < len(value) <= 100:
        raise argparse.ArgumentTypeError(problem or "1–100 characters")
    return value


def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> int:
    if args.role == "window" and not args.hall:
        print("a window token needs --hall (the service hall whose cases it sees)", file=sys.stderr)
        return 2
    store = Store(settings.database)
    try:
        token = store.create_token(args.name, args.role, args.hall)
    except Exception:
        print(f"a token named {args.name} already exists", file=sys.stderr)
        return 1
    finally:
        store.close()
    from gateway.assembly import open_audit_log
    from gateway.audit.log import AuditEvent

    open_audit_log(settings).append(
        AuditEvent("token.created", actor="cli", details={"name": args.name, "role": args.role})
    )
    print(token)
    print(
        f"(token for {args.name}, role {args.role}: shown once, stored only as a hash)",
        file=sys.stderr,
    )
    return 0


def cmd_tokens_list(_args: argparse.Namespace, settings: Settings) -> int:
    store = Store(settings.database)
    for token in store.tokens():
        print(
            f"{token['name']:<30} {token['role']:<8} {token['hall'] or '':<20} {token['created']} "
            f"{'revoked' if token['revoked'] else ''}"
        )
    return 0


def cmd_tokens_revoke(args: argparse.Namespace, settings: Settings) -> int:
    store = Store(settings.database)
    if not store.revoke_token(args.name):
        print(f"no token named {args.name}", file=sys.stderr)
        return 1
    from gateway.assembly import open_audit_log
    from gateway.audit.log import AuditEvent

    open_audit_log(settings).append(
        AuditEvent("token.revoked", actor="cli", details={"name": args.name})
    )
    print(f"revoked {args.name}")
    return 0


def cmd_outbox_list(args: argparse.Namespace, settings: Settings) -> int:
    store = Store(settings.database)
    messages = store.outbox(None if args.status == "all" else args.status, args.limit)
    print(
        f"{'MESSAGE':<34} {'STATUS':<10} {'PARTNER':<8} {'MATTER':<12} {'TRIES':>5}  {'AGE':>8}  LAST ERROR"
    )
    now = time.time()
    for m in messages:
        print(
            f"{m.msg_id:<34} {m.status:<10} {m.partner:<8} {m.matter:<12} {m.attempts:>5}  "
            f"{int(now - m.created):>7}s  {m.last_error_code or ''} {m.last_error or ''}"
        )
    counts = store.counts()
    print("; ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "outbox empty")
    return 0


def cmd_outbox_replay(args: argparse.Namespace, settings: Settings) -> int:
    embedded_setup(settings)
    return asyncio.run(_replay(args, settings))


async def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.assembly import assemble, build_services
    from gateway.audit.log import AuditWriter
    from security.replay import MemoryNonceStore
    from security.sealing import Opener

    parts = await asyncio.to_thread(assemble, settings)
    opener = Opener(parts.trust, parts.backend, MemoryNonceStore())
    audit = AuditWriter(parts.audit, parts.signer, parts.backend)
    services = build_services(parts, audit, opener, None, "cli", None)
    targets = (
        [m.msg_id for m in parts.store.outbox("dead", 100_000)] if args.all_dead else [args.msg_id]
    )
    if not targets or targets == [None]:
        print("nothing to replay (give a message id or --all-dead)", file=sys.stderr)
        return 1
    replayed = 0
    try:
        for msg_id in targets:
            if await services.cases.replay(msg_id, "cli"):
                replayed += 1
            else:
                print(
                    f"{msg_id}: not a dead letter (see xgw outbox list --status dead)",
                    file=sys.stderr,
                )
    finally:
        await services.worker.close_clients()
    print(f"queued {replayed} dead letter(s) again; a running gateway sends them")
    return 0 if replayed == len(targets) else 1


async def _simulate(settings: Settings, port: int, seed: int | None) -> None:
    from gateway.devtools.simulator import build_simulator_app

    await asyncio.to_thread(embedded_setup, settings)
    runner = web.AppRunner(
        build_simulator_app(settings, seed), access_log=None, handle_signals=False
    )
    await runner.setup()
    await web.TCPSite(runner, settings.host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"partner simulator on http://{settings.host}:{port}", file=sys.stderr)
    await stop.wait()
    await runner.cleanup()


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(_simulate(settings, args.port or settings.simulator_port, args.seed))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.devtools.demo import run_demo

    embedded_setup(settings)
    base = args.url or f"http://{settings.host}:{settings.port}"
    return asyncio.run(run_demo(settings, base.rstrip("/"), args.timeout))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tokens = commands.add_parser("tokens", help="API tokens (stored hashed)")
    actions = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="issue a token; printed once")
    create.add_argument("--role", choices=("window", "auditor", "admin"), required=True)
    create.add_argument("--name", required=True, type=_token_name)
    create.add_argument("--hall", type=_hall, help="window tokens: the hall whose cases it sees")
    create.set_defaults(handler=cmd_tokens_create)
    actions.add_parser("list", help="tokens, roles, halls").set_defaults(handler=cmd_tokens_list)
    revoke = actions.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    revoke.set_defaults(handler=cmd_tokens_revoke)

    outbox = commands.add_parser("outbox", help="delivery queue and dead letters")
    out_actions = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    listing = out_actions.add_parser("list", help="messages by status (default: dead letters)")
    listing.add_argument(
        "--status",
        default="dead",
        choices=("dead", "pending", "in_flight", "delivered", "cancelled", "all"),
    )
    listing.add_argument("--limit", type=int, default=200)
    listing.set_defaults(handler=cmd_outbox_list)
    replay = out_actions.add_parser("replay", help="send dead letters again")
    replay.add_argument("msg_id", nargs="?")
    replay.add_argument("--all-dead", action="store_true")
    replay.set_defaults(handler=cmd_outbox_replay)

    simulate = commands.add_parser(
        "simulate-partner", help="run the partner simulator (新野, 襄十随神)"
    )
    simulate.add_argument("--port", type=int, help="default: simulator_port")
    simulate.add_argument("--seed", type=int, help="seed of the fault knobs' randomness")
    simulate.set_defaults(handler=cmd_simulate)

    demo = commands.add_parser(
        "demo", help="file a 社保转入 and a 医疗费用报销 case and follow them"
    )
    demo.add_argument("--url", help="gateway base URL (default http://host:port)")
    demo.add_argument("--timeout", type=float, default=60.0)
    demo.set_defaults(handler=cmd_demo)

"""``xgw tokens``, ``xgw outbox``, ``xgw simulate-partner``, ``xgw demo``: operators' commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gateway.cli.datadir import embedded_setup
from gateway.config import Settings
from gateway.storage import (
    AlreadyThere,
    OutboxMessage,
    SchemaTooNew,
    Store,
    StoreError,
    epoch_of,
    open_store,
)
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


@asynccontextmanager
async def _opened(settings: Settings, migrate: bool = True) -> AsyncIterator[Store]:
    """The configured store, for one command (with the data keys: a replay re-reads what the
    gateway sealed)."""
    from gateway.keystore import load_data_keys

    store = await open_store(
        settings.effective_database_url,
        data_keys=load_data_keys(settings),
        pool_size=2,
        migrate=migrate,
    )
    try:
        yield store
    finally:
        await store.close()


def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> int:
    if args.role == "window" and not args.hall:
        print("a window token needs --hall (the service hall whose cases it sees)", file=sys.stderr)
        return 2

    async def create() -> str | None:
        async with _opened(settings) as store:
            try:
                return await store.create_token(args.name, args.role, args.hall)
            except AlreadyThere:
                return None

    token = asyncio.run(create())
    if token is None:
        print(f"a token named {args.name} already exists", file=sys.stderr)
        return 1
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
    async def listing() -> list[dict[str, object]]:
        async with _opened(settings) as store:
            return await store.tokens()

    for token in asyncio.run(listing()):
        print(
            f"{token['name']!s:<30} {token['role']!s:<8} {token['hall'] or ''!s:<20} "
            f"{token['created']} {'revoked' if token['revoked'] else ''}"
        )
    return 0


def cmd_tokens_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def revoke() -> bool:
        async with _opened(settings) as store:
            return await store.revoke_token(args.name)

    if not asyncio.run(revoke()):
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
    async def listing() -> tuple[list[OutboxMessage], dict[str, int]]:
        async with _opened(settings) as store:
            status = None if args.status == "all" else args.status
            return await store.outbox(status, args.limit), await store.counts()

    messages, counts = asyncio.run(listing())
    print(
        f"{'MESSAGE':<34} {'STATUS':<10} {'PARTNER':<8} {'MATTER':<12} {'TRIES':>5}  {'AGE':>8}  LAST ERROR"
    )
    now = time.time()
    for m in messages:
        print(
            f"{m.msg_id:<34} {m.status:<10} {m.partner:<8} {m.matter:<12} {m.attempts:>5}  "
            f"{int(now - m.created):>7}s  {m.last_error_code or ''} {m.last_error or ''}"
        )
    print("; ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "outbox empty")
    return 0


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """One screen for the operator: the database, the nodes, the outbox by partner, keys,
    and the exchange log. Exit 1 when something needs attention."""
    from datetime import UTC, datetime

    from gateway.assembly import open_audit_log
    from gateway.keystore import load_trust
    from gateway.partners import load_partners
    from gateway.storage.schema import LATEST

    async def read() -> tuple[str, int, list[dict[str, Any]], dict[str, int], float | None, Any]:
        async with _opened(settings, migrate=False) as store:
            return (
                store.description,
                await store.schema_version(),
                await store.heartbeats(),
                await store.counts(),
                await store.oldest_pending(),
                await store.by_partner(),
            )

    where, version, beats, counts, oldest, partners = asyncio.run(read())
    now = time.time()
    attention: list[str] = []
    print(
        f"database   {where}  schema {version}" + ("" if version == LATEST else " (needs migrate)")
    )
    if version != LATEST:
        attention.append("schema")
    for beat in beats:
        silent = now - float(beat["seen"]) > settings.node_dead_after_seconds
        print(
            f"node       {beat['node']:<20} {beat['owner']:<24} seen {_ago(now - float(beat['seen']))}"
            f", up since {_ago(now - float(beat['started']))}"
            + ("  SILENT (its work goes to the others)" if silent else "")
        )
        if silent:
            attention.append(f"node {beat['node']}")
    if not beats:
        print("node       none running (no heartbeat in the last day)")
    waiting = f", oldest pending {_ago(now - oldest)}" if oldest is not None else ""
    print(
        "outbox     "
        + (", ".join(f"{status} {n:,}" for status, n in sorted(counts.items())) or "empty")
        + waiting
    )
    registry = load_partners(settings.effective_partners_file)
    for region, partner in sorted(registry.partners.items()):
        seen = partners.get(region, {"counts": {}, "last_delivered": None})
        dead = seen["counts"].get("dead", 0)
        last = seen["last_delivered"]
        print(
            f"partner    {region} {partner.name:<10} last delivered "
            f"{_ago(now - last) if last is not None else 'never'}; "
            f"pending {seen['counts'].get('pending', 0)}, dead {dead}"
        )
        if dead:
            attention.append(f"dead letters to {region}")
    trust = load_trust(settings)
    moment = datetime.now(UTC)
    for key in trust.listing(moment):
        days = (key.not_after - moment).total_seconds() / 86400
        soon = days < 14
        print(
            f"key        {key.owner:<10} {key.region} {key.key_id[:16]}  {key.status}, "
            f"{days:,.0f} days left" + ("  EXPIRES SOON" if soon else "")
        )
        if soon or key.status != "valid":
            attention.append(f"key {key.key_id[:16]}")
    audit = open_audit_log(settings)
    try:
        for node in sorted(audit.nodes()):
            last_checkpoint = audit.last_checkpoint(node)
            head, _ = audit.head(node)
            unsigned = head - (last_checkpoint.to_seq if last_checkpoint else 0)
            checked = _ago(now - epoch_of(last_checkpoint.time)) if last_checkpoint else "never"
            print(
                f"log        {node:<20} {head:,} entries, {unsigned:,} unsigned, "
                f"last checkpoint {checked}"
            )
        if args.verify:  # the whole chain of every node, checkpoints and archives: may be long
            from gateway.audit.verify import verify_log
            from gateway.cli.audit import known_keys
            from gateway.keystore import backend_for

            result = verify_log(
                audit,
                known_keys(settings, []),
                backend_for(settings),
                archive_dir=settings.effective_audit_archive_dir,
                unsigned_tail_limit=settings.audit_checkpoint_entries * 2,
                workers=os.cpu_count() or 1,
            )
            fatal = [f for f in result.all_findings() if f.fatal]
            print(
                "verified   "
                + (
                    "the log verifies"
                    if result.ok
                    else f"LOG DOES NOT VERIFY ({len(fatal)} findings)"
                )
            )
            if not result.ok:
                attention.append("the exchange log (xgw audit verify)")
    finally:
        audit.close()
    if attention:
        print("attention  " + "; ".join(attention))
        return 1
    print("attention  nothing")
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.storage.backup import back_up

    print(f"backing up {settings.data_dir} to {args.out}", file=sys.stderr)
    manifest = back_up(settings.data_dir, args.out, lambda line: print(line, file=sys.stderr))
    files = manifest["files"]
    assert isinstance(files, list)
    print(f"{len(files)} files in {args.out} (manifest: xgw-backup.json)")
    if not settings.effective_database_url.startswith("sqlite:"):
        print(
            "the database itself is PostgreSQL: back it up with pg_dump (docs/operations.md)",
            file=sys.stderr,
        )
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.storage.backup import restore

    count = restore(args.source, settings.data_dir, lambda line: print(line, file=sys.stderr))
    print(f"restored {count} files into {settings.data_dir}")
    return 0


def cmd_db_status(_args: argparse.Namespace, settings: Settings) -> int:
    from gateway.storage.schema import LATEST

    async def status() -> tuple[str, int]:
        async with _opened(settings, migrate=False) as store:
            return store.description, await store.schema_version()

    try:
        where, version = asyncio.run(status())
    except SchemaTooNew as exc:
        print(f"{exc} (upgrade this gateway)")
        return 1
    except StoreError as exc:
        print(f"the database cannot be read: {exc}", file=sys.stderr)
        return 1
    state = "up to date" if version == LATEST else "needs `xgw db migrate`"
    if version > LATEST:
        state = "newer than this gateway: upgrade it"
    print(f"{where}: schema version {version}, this gateway's {LATEST} ({state})")
    return 0 if version == LATEST else 1


def cmd_db_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from gateway.storage.schema import LATEST

    async def migrate() -> tuple[str, int]:
        async with _opened(settings, migrate=False) as store:
            before = await store.schema_version()
        async with _opened(settings, migrate=True) as store:  # under the migration lock
            return store.description, before

    try:
        where, before = asyncio.run(migrate())
    except StoreError as exc:
        print(f"not migrated: {exc}", file=sys.stderr)
        return 1
    if before == LATEST:
        print(f"{where}: already at schema version {LATEST}")
    else:
        print(f"{where}: migrated from schema version {before} to {LATEST}")
    return 0


def cmd_outbox_replay(args: argparse.Namespace, settings: Settings) -> int:
    embedded_setup(settings)
    return asyncio.run(_replay(args, settings))


async def _replay(args: argparse.Namespace, settings: Settings) -> int:
    async with _opened(settings) as store:
        return await _replay_in(args, settings, store)


async def _replay_in(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from gateway.assembly import assemble, build_services
    from gateway.audit.log import AuditWriter
    from security.replay import MemoryNonceStore
    from security.sealing import Opener

    parts = await asyncio.to_thread(assemble, settings, store)
    opener = Opener(parts.trust, parts.backend, MemoryNonceStore())
    audit = AuditWriter(parts.audit, parts.signer, parts.backend)
    services = build_services(parts, audit, opener, None, "cli", None)
    targets = (
        [m.msg_id for m in await parts.store.outbox("dead", 100_000)]
        if args.all_dead
        else [args.msg_id]
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
    from aiohttp import web

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
    create.add_argument("--role", choices=("window", "auditor", "admin", "monitor"), required=True)
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

    status = commands.add_parser(
        "status", help="one screen: database, nodes, outbox by partner, keys, exchange log"
    )
    status.add_argument(
        "--verify", action="store_true", help="also verify the exchange log (every node's chain)"
    )
    status.set_defaults(handler=cmd_status)
    backup = commands.add_parser(
        "backup", help="a consistent copy of the data folder, while the gateway serves"
    )
    backup.add_argument("--out", type=Path, required=True, help="a new folder")
    backup.set_defaults(handler=cmd_backup)
    restore = commands.add_parser("restore", help="a backup into an empty data folder")
    restore.add_argument("source", type=Path, help="the backup's folder")
    restore.set_defaults(handler=cmd_restore)

    database = commands.add_parser("db", help="the store's schema (database_url)")
    db_actions = database.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_actions.add_parser(
        "status", help="the schema version the database holds and this gateway's"
    ).set_defaults(handler=cmd_db_status)
    db_actions.add_parser(
        "migrate", help="bring the schema up to this gateway's (once, however many nodes run it)"
    ).set_defaults(handler=cmd_db_migrate)

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

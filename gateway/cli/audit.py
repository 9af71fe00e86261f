"""``xgw audit …``: the auditors' offline tools and the operators' maintenance commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from gateway.audit.log import AuditEvent, AuditLog, LogDamaged, RollbackDetected
from gateway.audit.memory import SignedHeadMemory
from gateway.audit.verify import KnownKey, export_case, verify_log, verify_package
from gateway.cli.progress import Progress
from gateway.config import Settings
from gateway.keystore import backend_for, load_trust
from security.auditchain import Checkpoint
from security.keys import load_public_key

T = TypeVar("T")


def _audit_log(settings: Settings) -> AuditLog:
    from gateway.assembly import open_audit_log  # the wiring (heavy): only when a log is read

    return open_audit_log(settings)


def known_keys(settings: Settings, public_keys: list[Path]) -> list[KnownKey]:
    """Our signing keys' public halves with validity (trust store), plus any given PEM files."""
    keys: list[KnownKey] = []
    for path in public_keys:
        public = load_public_key(path.read_bytes())
        keys.append(KnownKey(public.key_id, public.point, None, None, public.to_pem().decode()))
    if not public_keys:
        keys += [KnownKey.of_own(own) for own in load_trust(settings).own]
    return keys


def partner_keys(settings: Settings) -> list[KnownKey]:
    """The partners' keys in our trust store: the witnesses' countersignatures verify with them."""
    return [KnownKey.of_partner(t) for t in load_trust(settings).partners.values()]


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    audit = _audit_log(settings)
    keys = known_keys(settings, args.public_key or [])
    total = sum(audit.count(node) for node in audit.nodes())
    progress = Progress("verifying", total) if total > 10_000 or args.progress else None
    result = verify_log(
        audit,
        keys,
        backend_for(settings),
        archive_dir=args.archive,
        from_seq=args.from_seq,
        unsigned_tail_limit=settings.audit_checkpoint_entries * 2,
        progress=progress.advance if progress else None,
        witness_keys=partner_keys(settings),
        workers=args.workers,
    )
    if progress:
        progress.finish()
    for report in result.reports:
        span = f"{report.first_seq}..{report.last_seq}" if report.entries else "empty"
        print(
            f"{report.node}: {report.entries} entries ({span}), {report.checkpoints} checkpoints, "
            f"head {report.head[:16]}…"
        )
    findings = result.all_findings()
    for finding in findings:
        print(("FAIL " if finding.fatal else "note ") + str(finding))
    print("log verifies" if result.ok else "LOG DOES NOT VERIFY")
    return 0 if result.ok else 1


def cmd_verify_package(args: argparse.Namespace, _settings: Settings) -> int:
    from security.backend import get_backend

    try:
        package = orjson.loads(args.file.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    findings = verify_package(package, get_backend("native"), set(args.pin) if args.pin else None)
    listed = package.get("entries") if isinstance(package, dict) else None
    entries = len(listed) if isinstance(listed, list) else 0
    for finding in findings:
        print(("FAIL " if finding.fatal else "note ") + str(finding))
    ok = not any(f.fatal for f in findings)
    print(f"{entries} entries; " + ("package verifies" if ok else "PACKAGE DOES NOT VERIFY"))
    return 0 if ok else 1


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    audit = _audit_log(settings)
    if not args.public_key:  # sign the tail first, so that every entry comes with its proof
        try:
            sign_tail(audit, settings)
        except RollbackDetected as exc:
            print(f"xgw: the tail is left unsigned: {exc}", file=sys.stderr)
    try:
        package = export_case(
            audit,
            args.case_id,
            known_keys(settings, args.public_key or []),
            settings.effective_audit_archive_dir,
            partner_keys(settings),
        )
    except LogDamaged as exc:  # a package would miss or misprove entries
        print(f"xgw: cannot export case {args.case_id}: {exc}", file=sys.stderr)
        return 1
    if not package["entries"]:
        print(f"no entries for case {args.case_id}", file=sys.stderr)
        return 1
    args.out.write_bytes(orjson.dumps(package, option=orjson.OPT_INDENT_2))
    print(f"exported {len(package['entries'])} entries of case {args.case_id} to {args.out}")
    return 0


def _table(entries: list[dict[str, Any]]) -> str:
    headers = [
        "NODE",
        "SEQ",
        "TIME",
        "EVENT",
        "DIR",
        "OUTCOME",
        "CODE",
        "CASE",
        "PARTNER",
        "MATTER",
        "ACTOR",
    ]
    rows = [headers]
    for e in entries:
        rows.append(
            [
                str(e.get("node")),
                str(e.get("seq")),
                str(e.get("time", ""))[:19],
                ("DAMAGED " if "damaged" in e else "") + str(e.get("event")),
                str(e.get("direction")),
                str(e.get("outcome")),
                str(e.get("error_code") or ""),
                str(e.get("case_id") or "")[:20],
                str(e.get("partner") or ""),
                str(e.get("partner_matter") or e.get("local_matter") or ""),
                str(e.get("actor") or "")[:20],
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    audit = _audit_log(settings)
    filters = {
        k: v
        for k, v in (
            ("case_id", args.case),
            ("partner", args.partner),
            ("outcome", args.outcome),
            ("event", args.event),
        )
        if v
    }
    start = (datetime.now(UTC) - timedelta(days=args.days)).strftime("%Y-%m-%dT%H:%M:%S")
    entries = audit.query(filters, limit=100_000, time_from=start)[-args.limit :]
    print(_table(entries) if entries else "no entries")
    return 0


def _with_memory(settings: Settings, work: Callable[[SignedHeadMemory], Awaitable[T]]) -> T:
    """``work`` with this node's memory of what it signed (its file, and Redis if configured)."""
    from adapters import redis_client

    async def run() -> T:
        redis = (
            redis_client.connect(settings.redis_url.get_secret_value())
            if settings.redis_url is not None
            else None
        )
        try:
            return await work(
                SignedHeadMemory(settings.effective_keys_dir, settings.node_id, redis)
            )
        finally:
            if redis is not None:
                await redis.aclose()

    return asyncio.run(run())


def sign_tail(audit: AuditLog, settings: Settings) -> Checkpoint | None:
    """Sign the unsigned tail as the running gateway does: at the configured interval, and
    only if the log still extends what this node signed (else ``RollbackDetected``). The
    gateway's witnesses are asked for the checkpoints it signs itself, not for this one."""
    signer = load_trust(settings).signing_key(datetime.now(UTC))
    every = (settings.audit_checkpoint_entries, settings.audit_checkpoint_seconds)

    async def work(memory: SignedHeadMemory) -> Checkpoint | None:
        remembered = await memory.recall()
        made = audit.checkpoint(signer, backend_for(settings), every, remembered)
        if made is not None:
            await memory.remember(made.to_seq, made.hash)
        return made

    return _with_memory(settings, work)


def cmd_checkpoint(_args: argparse.Namespace, settings: Settings) -> int:
    try:
        made = sign_tail(_audit_log(settings), settings)
    except RollbackDetected as exc:
        print(f"xgw: refusing to sign: {exc} (docs/operations.md, XgwAuditRollback)")
        return 1
    print(
        "nothing new to sign"
        if made is None
        else f"checkpoint {made.from_seq + 1}..{made.to_seq} signed by {made.key_id[:16]}…"
    )
    return 0


def cmd_accept_rollback(args: argparse.Namespace, settings: Settings) -> int:
    """The operator has looked at why the log no longer extends what the node signed (a
    restore, or a tampering investigated) and accepts the log as it is: on record in the log
    itself, then the node's memory starts again from its next checkpoint."""
    audit = _audit_log(settings)

    async def work(memory: SignedHeadMemory) -> tuple[int, str] | None:
        remembered = await memory.recall()
        last = audit.last_checkpoint()
        audit.append(
            AuditEvent(
                "audit.rollback_accepted",
                actor="cli",
                details={
                    "reason": args.reason,
                    "remembered_to_seq": remembered[0] if remembered else None,
                    "remembered_checkpoint": remembered[1] if remembered else None,
                    "log_last_to_seq": last.to_seq if last else None,
                },
            )
        )
        await memory.forget()
        return remembered

    remembered = _with_memory(settings, work)
    print(
        "no signed checkpoint was remembered"
        if remembered is None
        else f"accepted: the log as it is now, not the checkpoint up to seq {remembered[0]}"
        " this node remembered signing; signing resumes at the next checkpoint"
    )
    return 0


def cmd_archive(args: argparse.Namespace, settings: Settings) -> int:
    audit = _audit_log(settings)
    days = settings.audit_live_days if args.older_than_days is None else args.older_than_days
    before = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        target = audit.archive(before, settings.effective_audit_archive_dir)
    except LogDamaged as exc:
        print(f"xgw: {exc}", file=sys.stderr)
        return 1
    print("nothing to archive" if target is None else f"archived to {target}")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="verify, query and export the exchange log")
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check chains, checkpoints and archive links")
    verify.add_argument("--archive", type=Path, help="folder of archive files to verify too")
    verify.add_argument("--from", dest="from_seq", type=int, help="start at this sequence number")
    verify.add_argument(
        "--public-key",
        type=Path,
        action="append",
        help="checkpoint key (PEM); default: our keys from the trust store",
    )
    verify.add_argument("--progress", action="store_true", help="show progress even on short logs")
    verify.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes verifying a long chain's segments at once (default: one a CPU)",
    )
    verify.set_defaults(handler=cmd_verify)
    package = actions.add_parser(
        "verify-package", help="check an exported evidence package offline"
    )
    package.add_argument("file", type=Path)
    package.add_argument(
        "--pin",
        action="append",
        metavar="KEY_ID",
        help="only trust checkpoints signed by this key id",
    )
    package.set_defaults(handler=cmd_verify_package)
    export = actions.add_parser("export", help="evidence package of one case, as one JSON file")
    export.add_argument("case_id")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--public-key", type=Path, action="append")
    export.set_defaults(handler=cmd_export)
    show = actions.add_parser("show", help="recent entries as a table")
    show.add_argument("--limit", type=int, default=30)
    show.add_argument("--days", type=int, default=30)
    show.add_argument("--case")
    show.add_argument("--partner")
    show.add_argument("--outcome")
    show.add_argument("--event")
    show.set_defaults(handler=cmd_show)
    checkpoint = actions.add_parser("checkpoint", help="sign the unsigned tail now")
    checkpoint.set_defaults(handler=cmd_checkpoint)
    accept = actions.add_parser(
        "accept-rollback",
        help="accept the log as it is after the node refused to sign (a restore, investigated)",
    )
    accept.add_argument("--reason", required=True, help="why, for the exchange log")
    accept.set_defaults(handler=cmd_accept_rollback)
    archive = actions.add_parser("archive", help="move old checkpointed entries to archive files")
    archive.add_argument("--older-than-days", type=int, help="default: audit_live_days")
    archive.set_defaults(handler=cmd_archive)

"""The exchange log: append-only hash chains per node, checkpoints, archives.

The integrity rules are ``security.auditchain`` (pure); the tables and their SQL are
``gateway.storage.logtables`` (the node's own SQLite file, or PostgreSQL shared by the nodes).
Appends lock the node's chain (SQLite's write lock, or an advisory lock per node) and read its
head inside, so concurrent writers (threads, processes, workers of one node) keep one
consistent chain; a commit is atomic, so a crash never leaves a torn or unchained entry, and
the chain resumes from the last committed entry. ``AuditWriter`` groups concurrent appends
into one commit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from gateway.audit.memory import SignedHeadMemory
from gateway.logs import get_logger, mask_text
from gateway.storage.logschema import COLUMNS
from gateway.storage.logtables import LogTables, SqliteLogConnection
from security import auditchain
from security.auditchain import GENESIS, Checkpoint, Witness
from security.backend import CryptoBackend
from security.digest import sm3_hex
from security.keys import PrivateKey

log = get_logger("gateway.audit.log")

DIRECTIONS = ("outbound", "inbound", "internal")


@dataclass
class AuditEvent:
    """What happened. Personal data never goes in: ``person_id`` is turned into a keyed hash."""

    event: str  # message.sent, message.received, message.rejected, delivery.retry, …
    direction: str = "internal"
    outcome: str = "ok"
    case_id: str | None = None
    message_id: str | None = None
    partner: str | None = None
    local_matter: str | None = None
    partner_matter: str | None = None
    error_code: str | None = None
    actor: str | None = None
    person_id: str | None = None  # 身份证号: stored only as HMAC-SM3 under the audit key
    envelope: dict[str, str] | None = None  # the sealed envelope exactly as exchanged
    details: dict[str, Any] = field(default_factory=dict)


def person_key(secret: bytes, id_number: str) -> str:
    """Keyed SM3-HMAC of a 身份证号 (upper-case): lookup by person without storing the number."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import hmac as chmac

    mac = chmac.HMAC(secret, hashes.SM3())
    mac.update(id_number.strip().upper().encode())
    return mac.finalize().hex()


def _clean(value: Any) -> Any:
    """Details are for humans: mask anything ID- or phone-shaped, recursively."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds_between(earlier: str, later: str) -> float:
    return (
        datetime.fromisoformat(later.replace("Z", "+00:00"))
        - datetime.fromisoformat(earlier.replace("Z", "+00:00"))
    ).total_seconds()


class RollbackDetected(Exception):
    """The log no longer extends the last checkpoint this node signed: someone rewrote or cut
    its end. The node signs nothing more until an operator has looked (docs/operations.md)."""


class LogDamaged(ValueError):
    """What the exchange log's store or archive holds is not in the form it was written in (a
    row or file changed behind the gateway): the message names which."""


def checkpoint_of(row: tuple[Any, ...]) -> Checkpoint:
    """A checkpoint as the log's table keeps it (those signed before XGW-AUDIT/2 have no
    interval or flags), each field's type checked: ``LogDamaged`` for a row changed into
    something else (whoever can write the store can put any value in any column)."""
    node, from_seq, to_seq, head, root, at, prev, key_id, signature = row[:9]
    format_, entries, ms, flags = row[9:13]
    fields = {
        "node": node, "from_seq": from_seq, "to_seq": to_seq, "head": head, "root": root,
        "time": at, "prev": prev, "key_id": key_id, "signature": signature,
        "format": format_ or auditchain.FORMAT_1, "interval_entries": entries,
        "interval_ms": ms, "flags": flags or "",
    }  # fmt: skip
    try:
        return auditchain.checkpoint_from(fields)
    except ValueError as exc:
        raise LogDamaged(f"the stored checkpoint of {node} up to seq {to_seq!r}: {exc}") from None


ArchiveRecord = tuple[int, int, str, str, str]  # from_seq, to_seq, file, digest, head
Read = TypeVar("Read")


def _typed(numbers: tuple[Any, ...], texts: tuple[Any, ...]) -> bool:
    """Whole numbers (not booleans) and strings where a row keeps them: SQLite keeps whatever
    type was written into a column."""
    return all(type(n) is int for n in numbers) and all(type(t) is str for t in texts)


def archived_to(records: list[ArchiveRecord]) -> int:
    """The last seq moved to archive files, from a node's records in order (0: none)."""
    return records[-1][1] if records else 0


def archive_record_of(row: tuple[Any, ...]) -> ArchiveRecord:
    """An archive file's record as the log's table keeps it, its types checked."""
    from_seq, to_seq, file, digest, head = row
    if _typed((from_seq, to_seq), (file, digest, head)):
        return from_seq, to_seq, file, digest, head
    raise LogDamaged(f"the stored record of archive file {file!r} is not well formed")


def witnessed_of(row: tuple[Any, ...]) -> auditchain.Witnessed:
    """What we keep of a partner's checkpoint we countersigned, its types checked: without it
    a contradicting checkpoint cannot be told, so ``LogDamaged`` rather than a guess."""
    node, from_seq, to_seq, checkpoint, prev = row
    if _typed((from_seq, to_seq), (node, checkpoint, prev)):
        return auditchain.Witnessed(node, from_seq, to_seq, checkpoint, prev)
    raise LogDamaged(f"what we countersigned of {node!r} up to seq {to_seq!r} is not well formed")


def entry_text(node: str, seq: Any, body: Any) -> str:
    """An entry's body as the UTF-8 text it was written as (archive lines and evidence packages
    carry it as a string); ``LogDamaged`` for anything else the store holds instead."""
    if isinstance(body, bytes):
        try:
            return body.decode()
        except UnicodeDecodeError:
            pass
    raise LogDamaged(f"entry {seq} of {node} is not as it was written")


def _each_checked(
    rows: list[tuple[Any, ...]], read: Callable[[tuple[Any, ...]], Read]
) -> tuple[list[Read], list[str]]:
    """Each stored row read, and what is wrong with each that is not well formed (for the
    verifier, which reports them and goes on)."""
    good: list[Read] = []
    damaged: list[str] = []
    for row in rows:
        try:
            good.append(read(row))
        except LogDamaged as exc:
            damaged.append(str(exc))
    return good, damaged


_WITNESS_FIELDS = ("node", "to_seq", "checkpoint", "witness", "time", "key_id", "signature")


def witness_of(row: tuple[Any, ...]) -> Witness:
    """A countersignature as the log's table keeps it, each field's type checked (as
    ``checkpoint_of``): ``LogDamaged`` for a row changed into something else."""
    try:
        return auditchain.witness_from(dict(zip(_WITNESS_FIELDS, row, strict=True)))
    except ValueError as exc:
        raise LogDamaged(
            f"a stored countersignature of {row[0]} up to seq {row[1]!r}: {exc}"
        ) from None


class AuditLog:
    """One node's writing, and every node's reading. Thread-safe."""

    def __init__(self, where: Path | LogTables, node: str, hmac_key: bytes) -> None:
        """``where``: the log's tables, or the SQLite file that holds them."""
        self.tables = (
            where if isinstance(where, LogTables) else LogTables(SqliteLogConnection(where))
        )
        self.node, self._hmac_key = node, hmac_key

    def close(self) -> None:
        self.tables.close()

    # -- writing -------------------------------------------------------------------------------

    def _fields(self, event: AuditEvent, time_: str) -> dict[str, Any]:
        if event.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}")
        return {
            "time": time_,
            "event": event.event,
            "case_id": event.case_id,
            "message_id": event.message_id,
            "partner": event.partner,
            "local_matter": event.local_matter,
            "partner_matter": event.partner_matter,
            "direction": event.direction,
            "outcome": event.outcome,
            "error_code": event.error_code,
            "actor": event.actor,
            "person": person_key(self._hmac_key, event.person_id) if event.person_id else None,
            "envelope": event.envelope,
            "details": _clean(event.details),
        }

    def head(self, node: str | None = None) -> tuple[int, str]:
        """(seq, hash) the node's next entry chains to: its last entry, or where its last
        archive ended, or the genesis."""
        node = node or self.node
        return self.tables.head(node) or self.tables.last_archive(node) or (0, GENESIS)

    def append_many(self, events: list[AuditEvent]) -> list[int]:
        """Append in one transaction (one commit); returns the sequence numbers."""
        stamp = now_iso()
        prepared = [self._fields(e, stamp) for e in events]
        cases = sorted({f["case_id"] for f in prepared if f["case_id"] is not None})
        with self.tables.transaction(self.node):
            seq, prev = self.head()
            case_heads = self.tables.case_heads(self.node, cases)
            rows, seqs, moved = [], [], {}
            for fields in prepared:
                seq += 1
                case_id = fields["case_id"]
                case_prev = case_heads.get(case_id, GENESIS) if case_id is not None else None
                body = auditchain.entry_body(fields, seq, self.node, prev, case_prev)
                prev = auditchain.entry_hash(body)
                rows.append((self.node, seq, *(fields[c] for c in COLUMNS), body, prev))
                seqs.append(seq)
                if case_id is not None:
                    case_heads[case_id] = prev
                    moved[case_id] = (self.node, case_id, seq, prev)
            self.tables.insert_entries(rows)
            self.tables.set_case_heads(list(moved.values()))
        return seqs

    def append(self, event: AuditEvent) -> int:
        return self.append_many([event])[0]

    def last_checkpoint(self, node: str | None = None) -> Checkpoint | None:
        row = self.tables.last_checkpoint(node or self.node)
        return checkpoint_of(row) if row else None

    def checkpoint_at(self, to_seq: int, node: str | None = None) -> Checkpoint | None:
        row = self.tables.checkpoint_at(node or self.node, to_seq)
        return checkpoint_of(row) if row else None

    def checkpoint_covering(self, node: str, seq: int) -> Checkpoint | None:
        """The checkpoint whose batch holds entry ``seq`` (None: not signed yet). Checkpoints
        tile the chain, so the first one ending at or after ``seq`` is it: if that one starts
        at or after ``seq``, a checkpoint was removed or changed (``LogDamaged``), which the
        verifier reports too."""
        row = self.tables.first_checkpoint_from(node, seq)
        if not row:
            return None
        checkpoint = checkpoint_of(row)
        if checkpoint.from_seq >= seq:
            raise LogDamaged(
                f"no stored checkpoint of {node} covers seq {seq}, though one up to seq "
                f"{checkpoint.to_seq} was signed: a checkpoint was removed or changed"
            )
        return checkpoint

    def unsigned_count(self) -> int:
        last = self.last_checkpoint()
        head, _ = self.head()
        return head - (last.to_seq if last else self._archived_to())

    def checkpoint(
        self,
        signer: PrivateKey,
        backend: CryptoBackend,
        every: tuple[int, float] = (1000, 60.0),
        remembered: tuple[int, str] | None = None,
        limit: int | None = None,
    ) -> Checkpoint | None:
        """Sign what was appended since the last checkpoint (at most ``limit`` entries; None if
        nothing is new). ``every``: the (entries, seconds) interval the node signs at, recorded
        in the checkpoint, which is flagged if its batch is late for it. ``remembered``: the
        (to_seq, hash) of the last checkpoint this node signed, kept outside the log: if the
        log no longer extends it, nothing is signed (``RollbackDetected``)."""
        with self.tables.transaction(self.node):
            if remembered is not None:
                self.check_extends(remembered)
            last = self.last_checkpoint()
            start = last.to_seq if last else self._archived_to()
            hashes = self.tables.hashes_after(self.node, start, limit)
            if not hashes:
                return None
            stamp = now_iso()
            began = self.tables.entry_time(self.node, start + 1)
            age = _seconds_between(began, stamp) if began is not None else 0.0
            entries, ms = every[0], round(every[1] * 1000)
            made = auditchain.sign_checkpoint(
                self.node,
                start,
                start + len(hashes),
                hashes,
                stamp,
                last.hash if last else GENESIS,
                signer.scalar,
                signer.public.point,
                signer.key_id,
                backend,
                auditchain.Interval(
                    entries, ms, auditchain.late_flags(len(hashes), age, entries, ms)
                ),
            )
            self.tables.insert_checkpoint(
                (
                    made.node,
                    made.from_seq,
                    made.to_seq,
                    made.head,
                    made.root,
                    made.time,
                    made.prev,
                    made.key_id,
                    made.signature,
                    made.format,
                    made.interval_entries,
                    made.interval_ms,
                    made.flags,
                )
            )
        return made

    def check_extends(self, remembered: tuple[int, str]) -> None:
        """``RollbackDetected`` unless the log still holds the checkpoint ``remembered``
        names, unchanged."""
        problem = auditchain.rollback_problem(remembered, self.checkpoint_at(remembered[0]))
        if problem is not None:
            raise RollbackDetected(problem)

    def partners_of(self, checkpoint: Checkpoint) -> list[str]:
        """The partners whose exchanges a checkpoint's batch holds: its witnesses."""
        return self.tables.partners_between(checkpoint.node, checkpoint.from_seq, checkpoint.to_seq)

    def keep_witness(self, witness: Witness) -> bool:
        """A countersignature of one of our checkpoints (False: kept already)."""
        return self.tables.insert_witness(
            (
                witness.node,
                witness.to_seq,
                witness.checkpoint,
                witness.witness,
                witness.time,
                witness.key_id,
                witness.signature,
            )
        )

    def witnesses(self, node: str) -> list[Witness]:
        """The countersignatures kept of the node's checkpoints; ``LogDamaged`` if one stored is
        not well formed."""
        return [witness_of(row) for row in self.tables.witnesses(node)]

    def witnesses_checked(self, node: str) -> tuple[list[Witness], list[str]]:
        """The well-formed countersignatures, and what is wrong with each other stored one."""
        return _each_checked(self.tables.witnesses(node), witness_of)

    def witnesses_at(self, node: str, to_seq: int) -> list[Witness]:
        return [witness_of(row) for row in self.tables.witnesses_at(node, to_seq)]

    def witness_for(self, partner: str, candidate: Checkpoint) -> str | None:
        """Record that we countersign a partner node's ``candidate`` checkpoint, unless it
        conflicts with one of that node's we countersigned before: then why (nothing kept)."""
        with self.tables.transaction(f"witnessed:{partner}"):
            seen = [witnessed_of(row) for row in self.tables.witnessed(partner, candidate.node)]
            problem = auditchain.witness_conflict(seen, candidate)
            if problem is None:
                self.tables.insert_witnessed(
                    (
                        partner,
                        candidate.node,
                        candidate.to_seq,
                        candidate.from_seq,
                        candidate.hash,
                        candidate.prev,
                        now_iso(),
                    )
                )
        return problem

    # -- reading -------------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        return self.tables.nodes()

    def rows(
        self, node: str, from_seq: int = 0, to_seq: int | None = None
    ) -> Iterator[tuple[Any, ...]]:
        return self.tables.rows(node, from_seq, to_seq)

    def count(self, node: str) -> int:
        return self.tables.count(node)

    def entry(self, node: str, seq: int) -> tuple[bytes, str] | None:
        return self.tables.entry(node, seq)

    def case_rows(self, node: str, case_id: str) -> list[tuple[int, bytes, str]]:
        return self.tables.case_rows(node, case_id)

    def checkpoints(self, node: str) -> list[Checkpoint]:
        """The node's checkpoints; ``LogDamaged`` if a stored one is not well formed."""
        return [checkpoint_of(row) for row in self.tables.checkpoints(node)]

    def checkpoints_checked(self, node: str) -> tuple[list[Checkpoint], list[str]]:
        """The node's well-formed checkpoints, and what is wrong with each other stored one
        (for the verifier, which reports them and goes on)."""
        return _each_checked(self.tables.checkpoints(node), checkpoint_of)

    def _archived_to(self) -> int:
        return archived_to(self.archives(self.node))

    def archives(self, node: str) -> list[ArchiveRecord]:
        """The node's archive files' records; ``LogDamaged`` if one is not well formed."""
        return [archive_record_of(row) for row in self.tables.archives(node)]

    def archives_checked(self, node: str) -> tuple[list[ArchiveRecord], list[str]]:
        """The well-formed records of the node's archive files, and what is wrong with each
        other stored one."""
        return _each_checked(self.tables.archives(node), archive_record_of)

    def query(
        self,
        filters: dict[str, str],
        limit: int = 50,
        after: tuple[str, str, int] | None = None,
        time_from: str | None = None,
        time_to: str | None = None,
    ) -> list[dict[str, Any]]:
        """Entries matching column filters, newest last, merged across nodes; keyset-paginated."""
        return [
            _listed_entry(row)
            for row in self.tables.query(filters, limit, after, time_from, time_to)
        ]

    def person(self, id_number: str) -> str:
        return person_key(self._hmac_key, id_number)

    # -- archiving -----------------------------------------------------------------------------

    def archive(self, before: str, folder: Path) -> Path | None:
        """Move entries older than ``before`` (ISO time) that a checkpoint covers into a file.

        The file is JSON lines: a header linking the previous archive's digest and the chain
        anchor, the covering checkpoints, then the entries. Written and fsynced before the rows
        are deleted, so a crash in between leaves both (and verification still passes).
        """
        last = self.last_checkpoint()
        if last is None:
            return None
        candidate = self.tables.last_seq_before(self.node, before, last.to_seq)
        checkpoints = self.checkpoints(self.node)
        boundaries = [c.to_seq for c in checkpoints if c.to_seq <= candidate]
        if not boundaries:
            return None
        to_seq = max(boundaries)  # archive whole checkpoint batches only
        previous = self.archives(self.node)
        from_seq = archived_to(previous)
        if to_seq <= from_seq:
            return None
        prev_digest = previous[-1][3] if previous else GENESIS
        anchor = GENESIS if from_seq == 0 else (previous[-1][4] if previous else GENESIS)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{self.node}-{from_seq + 1:012d}-{to_seq:012d}.jsonl"
        covering = [c for c in checkpoints if from_seq < c.to_seq <= to_seq]
        header = {
            "format": f"{auditchain.FORMAT} archive",
            "node": self.node,
            "from_seq": from_seq,
            "to_seq": to_seq,
            "anchor": anchor,
            "prev_archive_digest": prev_digest,
            "created": now_iso(),
        }
        temporary = target.with_suffix(".part")
        head = anchor
        with open(temporary, "wb") as handle:
            handle.write(orjson.dumps(header) + b"\n")
            for checkpoint in covering:
                handle.write(orjson.dumps({"checkpoint": checkpoint.as_dict()}) + b"\n")
            for seq, body, digest, *_ in self.rows(self.node, from_seq, to_seq):
                try:
                    text = entry_text(self.node, seq, body)
                    if not auditchain.is_entry_hash(digest):
                        raise LogDamaged(f"entry {seq} of {self.node} is not as it was written")
                except LogDamaged as exc:
                    temporary.unlink()  # nothing of a batch that is not as it was written
                    raise LogDamaged(
                        f"{exc} (its body or hash); nothing archived: run `xgw audit verify`"
                    ) from None
                handle.write(orjson.dumps({"seq": seq, "hash": digest, "body": text}) + b"\n")
                head = digest
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        digest = sm3_hex(target.read_bytes())
        self.tables.archived(self.node, to_seq, from_seq, target.name, digest, head, now_iso())
        return target


def hmac_key_bytes(path: Path, create: bool) -> bytes:
    """The audit HMAC key (32 random bytes, base64 in a 0600 file); generated on first use."""
    if path.exists():
        return base64.b64decode(path.read_text(encoding="ascii").strip())
    if not create:
        raise FileNotFoundError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = os.urandom(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(secret).decode() + "\n")
    return secret


DAMAGED = "its body is not what was written here: `xgw audit verify` reports it"


def _listed_entry(row: tuple[Any, ...]) -> dict[str, Any]:
    """An entry as a listing shows it: its body, and its stored hash. Where the body does not
    parse, or does not say the time, node and seq it is stored under, the listing shows the
    store's indexed fields instead, marked ``damaged`` (a page's cursor is made of those)."""
    body, digest, node, seq, *columns = row
    try:
        entry = orjson.loads(body)
    except orjson.JSONDecodeError:
        entry = None
    indexed = {"node": node, "seq": seq, "time": columns[COLUMNS.index("time")]}
    if not isinstance(entry, dict):
        entry = {**dict(zip(COLUMNS, columns, strict=True)), **indexed, "damaged": DAMAGED}
    elif any(entry.get(name) != value for name, value in indexed.items()):
        entry = {**entry, **indexed, "damaged": DAMAGED}
    entry["hash"] = digest
    return entry


class AuditWriter:
    """Async facade: appends from many coroutines share one commit (group commit); checkpoints
    every ``every_entries`` entries or ``every_seconds`` seconds, whichever comes first."""

    def __init__(
        self,
        log_: AuditLog,
        signer: Callable[[], PrivateKey],
        backend: CryptoBackend,
        every_entries: int = 1000,
        every_seconds: float = 60.0,
        max_batch: int = 512,
        linger_seconds: float = 0.002,
        memory: SignedHeadMemory | None = None,
    ) -> None:
        """``memory``: where the node keeps its last signed checkpoint outside the log."""
        self.log, self._signer, self._backend = log_, signer, backend
        self.memory = memory
        self.on_checkpoint: Callable[[Checkpoint], Awaitable[None]] | None = None
        # Why this node refuses to sign (None: it signs): the log does not extend what it
        # signed before. Readiness reports it; only an operator clears it.
        self.refusal: str | None = None
        self.every_entries, self.every_seconds, self.max_batch = (
            every_entries,
            every_seconds,
            max_batch,
        )
        # A writer woken for a few entries lingers a moment before it commits: more share the
        # commit, and its thread (which holds the GIL for part of the work) runs after the step
        # that logged rather than in the middle of it, so the step finishes sooner.
        self.linger_seconds = linger_seconds
        self._pending: list[tuple[AuditEvent, asyncio.Future[int]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_checkpoint = time.monotonic()
        self._closing = False
        # Entries appended since the last checkpoint: counted here, not queried after every
        # group commit (None: not read yet). Another process checkpointing too only makes the
        # count high, and an early checkpoint harmless.
        self._unsigned: int | None = None

    @property
    def backend(self) -> CryptoBackend:
        """The crypto its checkpoints are signed with (verifiers use the same)."""
        return self._backend

    def attach(self, on_checkpoint: Callable[[Checkpoint], Awaitable[None]]) -> None:
        """What to do with each checkpoint once signed (``WitnessService.ask``): built after
        the writer, which the services it needs already use."""
        self.on_checkpoint = on_checkpoint

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def append(self, event: AuditEvent) -> int:
        if self._task is None:
            return await asyncio.to_thread(self.log.append, event)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        self._wake.set()
        return await future

    async def append_all(self, events: list[AuditEvent]) -> list[int]:
        """Several entries, in this order, each written before the next is queued. (One
        batch for all answers the caller sooner, but its reply then competes for the loop with
        the deliveries it set going, and the case as a whole finishes later.)"""
        return [await self.append(e) for e in events]

    async def _run(self) -> None:
        await self._check_memory()
        while not (self._closing and not self._pending):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(self.every_seconds, 1.0))
            self._wake.clear()
            if 0 < len(self._pending) < 16 and self.linger_seconds:  # a full batch need not
                await asyncio.sleep(self.linger_seconds)
            while self._pending:
                batch, self._pending = (
                    self._pending[: self.max_batch],
                    self._pending[self.max_batch :],
                )
                written = await self._write(batch)
                if self._unsigned is not None:
                    self._unsigned += written
            await self._maybe_checkpoint()

    async def _write(self, batch: list[tuple[AuditEvent, asyncio.Future[int]]]) -> int:
        """One commit for the batch; should it fail, each entry alone, so that one entry that
        cannot be written fails only its own caller. Returns how many were written."""
        try:
            seqs = await asyncio.to_thread(self.log.append_many, [e for e, _ in batch])
        except Exception as exc:  # the callers learn; the writer keeps going
            if len(batch) > 1:
                written = 0
                for one in batch:
                    written += await self._write([one])
                return written
            log.error(
                "audit.append_failed", event_name=batch[0][0].event, error_type=type(exc).__name__
            )
            if not batch[0][1].done():
                batch[0][1].set_exception(exc)
            return 0
        for (_, future), seq in zip(batch, seqs, strict=True):
            if not future.done():
                future.set_result(seq)
        return len(seqs)

    async def _check_memory(self) -> None:
        """At start: does the log still extend what this node signed last?"""
        if self.memory is None:
            return
        try:
            remembered = await self.memory.recall()
            if remembered is not None:
                await asyncio.to_thread(self.log.check_extends, remembered)
        except RollbackDetected as exc:
            self._refuse(str(exc))
        except Exception as exc:  # checked again before each checkpoint
            log.error("audit.signed_head_check_failed", error_type=type(exc).__name__)

    def _refuse(self, reason: str) -> None:
        if self.refusal is None:
            # the alert line: operators' runbook "XgwAuditRollback" (docs/operations.md)
            log.error("audit.rollback_detected", node=self.log.node, reason=reason)
        self.refusal = reason

    async def _maybe_checkpoint(self, force: bool = False) -> None:
        if self._unsigned is None:  # once, off the event loop
            self._unsigned = await asyncio.to_thread(self.log.unsigned_count)
        due = time.monotonic() - self._last_checkpoint >= self.every_seconds
        if self.refusal is not None and due:
            await self._maybe_resume()
        if self.refusal is None and (force or due or self._unsigned >= self.every_entries):
            made = None
            try:
                remembered = await self.memory.recall() if self.memory is not None else None
                made = await asyncio.to_thread(
                    self.log.checkpoint,
                    self._signer(),
                    self._backend,
                    (self.every_entries, self.every_seconds),
                    remembered,
                )
                self._unsigned = 0
            except RollbackDetected as exc:
                self._refuse(str(exc))
            except Exception as exc:
                log.error("audit.checkpoint_failed", error_type=type(exc).__name__)
            self._last_checkpoint = time.monotonic()
            if made is not None:
                await self._signed(made)

    async def _signed(self, made: Checkpoint) -> None:
        try:
            if self.memory is not None:
                await self.memory.remember(made.to_seq, made.hash)
            if self.on_checkpoint is not None:
                await self.on_checkpoint(made)
        except Exception as exc:  # the checkpoint stands; its witnesses are asked again later
            log.error("audit.after_checkpoint_failed", error_type=type(exc).__name__)

    async def _maybe_resume(self) -> None:
        """While refusing: sign again once an operator accepted the log as it is
        (``xgw audit accept-rollback`` cleared the memory) — never by itself."""
        self._last_checkpoint = time.monotonic()
        try:
            remembered = await self.memory.recall() if self.memory is not None else None
            if remembered is not None:
                await asyncio.to_thread(self.log.check_extends, remembered)
        except RollbackDetected:
            return
        except Exception as exc:
            log.error("audit.signed_head_check_failed", error_type=type(exc).__name__)
            return
        log.warning("audit.signing_resumed", node=self.log.node, refused_for=self.refusal)
        self.refusal = None

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self._maybe_checkpoint(force=True)

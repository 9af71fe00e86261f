"""The store's interface and the SQL both databases share.

The gateway keeps cases and their timelines, the transactional outbox, inbound records and
tokens through ``Store`` (reads, claims, leases) and ``Transaction`` (one atomic change). Two
implementations stand behind them: ``gateway.storage.sqlite`` (the embedded default) and
``gateway.storage.postgres`` (several nodes). The statements here are written once, in the
SQL both understand, with ``$n`` parameters (each connection renders them for its driver);
an implementation supplies the connection, the transactions and what differs (row locks,
durability, schema).

Concurrency is explicit rather than a property of one writer:
- a case's transaction reads it with ``lock`` (PostgreSQL: ``FOR UPDATE``), so two nodes
  changing one case take turns, and its timeline's next step number is safe to compute;
- ``save_states`` writes only over the version it read (a ``Conflict`` otherwise);
- claims skip rows another node is claiming (``FOR UPDATE SKIP LOCKED``);
- a duplicate idempotency key or message id is the store's own ``AlreadyThere``.

Personal data (forms, payloads, partners' answers) is sealed at rest (``security.atrest``)
here, in Python, as it is written and opened as it is read: the same bytes in either database.
"""

from __future__ import annotations

import abc
import math
import secrets
import time
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import fields, replace
from functools import lru_cache
from typing import Any, Protocol

import orjson

from gateway.core.cases import PlannedSub, SubState
from gateway.core.lifecycle import INBOUND, MESSAGE, InboundEvent, Msg, MsgEvent
from gateway.storage.records import (
    MILLISECONDS,
    RECORD_TIMES,
    SECONDS,
    CaseRow,
    CaseSummary,
    Conflict,
    ExchangeRecord,
    InboundCase,
    Increment,
    MaterialRecord,
    NewCase,
    OutboxMessage,
    TextTime,
    Token,
    epoch_of,
    iso_of,
    token_hash,
)
from security.atrest import DataKeys

PENDING, IN_FLIGHT = Msg.PENDING.value, Msg.IN_FLIGHT.value
HOLD_SECONDS = 5.0  # a held message's due time, should its release be lost (a crash)

Row = Mapping[str, Any]


class Connection(Protocol):
    """One database connection as the shared code uses it (``$n`` parameters)."""

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; how many rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """One statement for each row (sent together where the driver can)."""
        ...


CASE_COLUMNS = (
    "id, created, updated, status, hall, clerk, token_name, bundle, title, filed_on, idem_key, "
    "request_hash, person, plan, states, version"
)  # not the form: see CaseRow
SUMMARY_COLUMNS = (
    "cases.id, cases.created, cases.updated, cases.status, cases.hall, cases.clerk, "
    "cases.token_name, cases.bundle, cases.title, cases.filed_on, cases.idem_key, "
    "cases.request_hash, cases.person, cases.routing AS plan, cases.states, cases.version"
)
OUTBOX_COLUMNS = (
    "msg_id, case_id, sub_id, partner, domain, kind, matter, payload, envelope, status, "
    "attempts, created, next_attempt_at, lease_owner, lease_until, last_error_code, last_error, "
    "finished_at"
)
INBOUND_COLUMNS = (
    "id, partner, partner_ref, partner_matter, local_matter, domain, created, updated, status, "
    "form, result"
)
# Columns a message transition may also set, besides its status.
MESSAGE_CHANGES = frozenset(
    {
        "attempts",
        "next_attempt_at",
        "lease_owner",
        "lease_until",
        "last_error_code",
        "last_error",
        "finished_at",
        "created",
    }
)
MESSAGE_KEYS = frozenset({"msg_id", "case_id", "sub_id", "kind", "lease_owner"})
PROBE_WRITE = (
    "INSERT INTO write_probe (node, at) VALUES ($1, $2) "
    "ON CONFLICT (node) DO UPDATE SET at = excluded.at"
)
RECORD_FIELDS = tuple(f.name for f in fields(ExchangeRecord))
RECORD_COLUMNS = ", ".join(RECORD_FIELDS)


def _record_row(record: ExchangeRecord) -> tuple[Any, ...]:
    return tuple(
        MILLISECONDS.column(getattr(record, name))
        if name in RECORD_TIMES
        else getattr(record, name)
        for name in RECORD_FIELDS
    )


# A time range's bound as the text a column compares with ``>=`` and ``<`` as ``at`` would:
# a bound inside a second (a millisecond) starts at the next one. Rounded to the microsecond
# first, so a float's last bits do not move a bound that is exact in text.
def _seconds_from(at: float) -> str:
    return iso_of(math.ceil(round(at, 6)), ms=False)


def _milliseconds_from(at: float) -> str:
    return iso_of(math.ceil(round(at * 1000, 3)) / 1000)


def placeholders(start: int, count: int) -> str:
    """``$start, …`` for ``count`` values."""
    return ", ".join(f"${n}" for n in range(start, start + count))


def routing(plan: list[PlannedSub]) -> bytes:
    """A plan without its payloads: what a listing reads."""
    return orjson.dumps([replace(p, payload=None) for p in plan])


def planned_subs(data: bytes) -> list[PlannedSub]:
    return [PlannedSub(**{**p, "depends_on": tuple(p["depends_on"])}) for p in orjson.loads(data)]


def sub_states(data: bytes) -> list[SubState]:
    return [SubState(**{**s, "depends_on": tuple(s["depends_on"])}) for s in orjson.loads(data)]


def matter_codes(plan: list[PlannedSub]) -> list[str]:
    """Every matter code a case's sub-matters carry (ours and the partners'), for ?matter=."""
    return sorted({p.matter for p in plan} | {p.partner_code for p in plan if p.partner_code})


class Sealing:
    """Sealing at rest of one store's personal data, bound to where a value lives (its place
    and row), so a sealed value moved to another row does not open."""

    def __init__(self, keys: DataKeys | None) -> None:
        self.keys = keys

    def seal(self, place: str, row: str, value: bytes | None) -> bytes | None:
        if value is None or self.keys is None:
            return value
        return self.keys.seal(value, f"{place}:{row}".encode())

    def open(self, place: str, row: str, value: bytes | None) -> bytes | None:
        if value is None or self.keys is None:
            return value
        return self.keys.open(bytes(value), f"{place}:{row}".encode())

    def case(self, row: Row) -> CaseRow:
        case_id = row["id"]
        plan = self.open("cases.plan", case_id, row["plan"])
        states = self.open("cases.states", case_id, row["states"])
        assert plan is not None and states is not None
        return CaseRow(**_summary_fields(row), plan=planned_subs(plan), states=sub_states(states))

    def summary(self, row: Row) -> CaseSummary:
        states = self.open("cases.states", row["id"], row["states"])
        assert states is not None
        return CaseSummary(
            **_summary_fields(row),
            plan=planned_subs(row["plan"]),
            states=sub_states(states),
        )

    def message(self, row: Row) -> OutboxMessage:
        data = dict(row)
        data["payload"] = self.open("outbox.payload", data["msg_id"], data["payload"])
        data["envelope"] = bytes(data["envelope"])
        for name in ("created", "next_attempt_at", "lease_until", "finished_at"):
            if data[name] is not None:  # SQLite gives back a whole number as an int
                data[name] = float(data[name])
        return OutboxMessage(**data)

    def inbound_case(self, row: Row) -> InboundCase:
        data = dict(row)
        form = self.open("inbound_case.form", data["id"], data["form"])
        result = self.open("inbound_case.result", data["id"], data["result"])
        data["form"] = orjson.loads(form) if form else {}
        data["result"] = orjson.loads(result) if result else None
        data["created"], data["updated"] = epoch_of(row["created"]), epoch_of(row["updated"])
        return InboundCase(**data)


_SUMMARY_FIELDS = (
    "id",
    "created",
    "updated",
    "status",
    "hall",
    "clerk",
    "token_name",
    "bundle",
    "title",
    "filed_on",
    "idem_key",
    "request_hash",
    "person",
    "version",
)


def _summary_fields(row: Row) -> dict[str, Any]:
    return {
        **{k: row[k] for k in _SUMMARY_FIELDS},
        "created": epoch_of(row["created"]),
        "updated": epoch_of(row["updated"]),
    }


@lru_cache(maxsize=128)
def _move_statement(
    event: MsgEvent, where: tuple[str, ...], changes: tuple[tuple[str, bool], ...]
) -> tuple[str, str, tuple[str, ...]]:
    """(SQL, target state, source states) of a message transition: made once per shape.
    ``changes``: (column, adds) pairs — ``adds`` for ``column = column + value``."""
    assert where and set(where) <= MESSAGE_KEYS, where
    assert {name for name, _ in changes} <= MESSAGE_CHANGES, changes
    sources = MESSAGE.sources(event)
    sets = ["status = $1"]
    for n, (name, adds) in enumerate(changes, start=2):
        sets.append(f"{name} = {name} + ${n}" if adds else f"{name} = ${n}")
    first = len(changes) + 2
    conditions = [f"{name} = ${n}" for n, name in enumerate(where, start=first)]
    conditions.append(f"status IN ({placeholders(first + len(where), len(sources))})")
    sql = f"UPDATE outbox SET {', '.join(sets)} WHERE {' AND '.join(conditions)}"  # noqa: S608 - names checked above
    return sql, MESSAGE.target(event).value, sources


MATERIAL_COLUMNS = "id, case_id, code, kind, size, chunks, sm3, licence, status, created"
UPLOADING, UPLOADED, ATTACHED = "uploading", "uploaded", "attached"


def _material(sealing: Sealing, row: Row) -> MaterialRecord:
    licence = sealing.open("material.licence", row["id"], row["licence"])
    return MaterialRecord(
        id=row["id"],
        case_id=row["case_id"],
        code=row["code"],
        kind=row["kind"],
        size=int(row["size"]),
        chunks=int(row["chunks"]),
        sm3=row["sm3"],
        licence=orjson.loads(licence) if licence is not None else None,
        status=row["status"],
        created=float(row["created"]),
    )


async def _insert_material(
    db: Connection,
    material_id: str,
    case_id: str | None,
    code: str,
    kind: str,
    licence: bytes | None,
    status: str,
) -> None:
    """A material's row; a file's size, chunks and SM3 follow when its upload is done."""
    await db.execute(
        f"INSERT INTO material ({MATERIAL_COLUMNS}) "  # noqa: S608 - placeholders only
        f"VALUES ({placeholders(1, 10)})",
        material_id,
        case_id,
        code,
        kind,
        0,
        0,
        "",
        licence,
        status,
        time.time(),
    )


async def _case_materials(db: Connection, sealing: Sealing, case_id: str) -> list[MaterialRecord]:
    rows = await db.fetch(
        f"SELECT {MATERIAL_COLUMNS} FROM material WHERE case_id = $1 AND status = $2 "  # noqa: S608
        "ORDER BY code, id",
        case_id,
        ATTACHED,
    )
    return [_material(sealing, row) for row in rows]


async def _material_chunks(
    db: Connection, sealing: Sealing, material_id: str, start: int, count: int
) -> list[bytes]:
    """Chunks ``start``… (at most ``count``), opened; each is bound to its material and place,
    so a chunk moved or swapped at rest does not open (ValueError)."""
    rows = await db.fetch(
        "SELECT idx, data FROM material_chunk WHERE material_id = $1 AND idx >= $2 "
        "AND idx < $3 ORDER BY idx",
        material_id,
        start,
        start + count,
    )
    chunks = []
    for expected, row in enumerate(rows, start):
        if row["idx"] != expected:
            raise ValueError(f"material {material_id} lacks its chunk {expected}")
        opened = sealing.open("material_chunk", f"{material_id}:{expected}", row["data"])
        assert opened is not None
        chunks.append(opened)
    return chunks


class Transaction:
    """One atomic change, committed when its ``async with`` block ends without an error.

    Inside a transaction await only its own methods: the embedded store holds its one
    connection for the whole block."""

    def __init__(self, db: Connection, sealing: Sealing, lock_clause: str) -> None:
        self.db, self.sealing, self._lock_clause = db, sealing, lock_clause
        self._locked: set[str] = set()

    # -- cases ---------------------------------------------------------------------------------

    async def load_case(self, case_id: str) -> CaseRow | None:
        """The case, locked until the transaction ends (other nodes wait to change it)."""
        row = await self.db.fetchrow(
            f"SELECT {CASE_COLUMNS} FROM cases WHERE id = $1{self._lock_clause}",  # noqa: S608
            case_id,
        )
        if row is None:
            return None
        self._locked.add(case_id)
        return self.sealing.case(row)

    async def _lock_case(self, case_id: str) -> None:
        if self._lock_clause and case_id not in self._locked:
            await self.db.fetchrow(
                f"SELECT id FROM cases WHERE id = $1{self._lock_clause}",  # noqa: S608
                case_id,
            )
            self._locked.add(case_id)

    async def insert_case(self, case: NewCase) -> None:
        """A new case; ``AlreadyThere`` if its idempotency key was taken meanwhile."""
        seal = self.sealing.seal
        await self.db.execute(
            "INSERT INTO cases (id, created, updated, status, hall, clerk, token_name, bundle, "  # noqa: S608 - placeholders only
            "title, filed_on, idem_key, request_hash, person, form, plan, states, version, routing) "
            f"VALUES ({placeholders(1, 18)})",
            case.id,
            SECONDS.column(case.created),
            SECONDS.column(case.updated),
            case.status,
            case.hall,
            case.clerk,
            case.token_name,
            case.bundle,
            case.title,
            case.filed_on,
            case.idem_key,
            case.request_hash,
            case.person,
            seal("cases.form", case.id, orjson.dumps(case.form)),
            seal("cases.plan", case.id, orjson.dumps(case.plan)),  # orjson writes dataclasses
            seal("cases.states", case.id, orjson.dumps(case.states)),
            case.version,
            routing(case.plan),
        )
        self._locked.add(case.id)
        codes = matter_codes(case.plan)
        rows = ", ".join(f"(${n}, $1, $2)" for n in range(3, len(codes) + 3))
        await self.db.execute(
            f"INSERT INTO case_matter (matter, created, case_id) VALUES {rows} "  # noqa: S608 - placeholders only
            "ON CONFLICT DO NOTHING",
            SECONDS.column(case.created),
            case.id,
            *codes,
        )

    async def save_states(self, case: CaseRow, states: list[SubState], status: str) -> None:
        """New sub-matter states over the version ``case`` was read at (``Conflict`` if another
        writer moved it meanwhile)."""
        saved = await self.db.execute(
            "UPDATE cases SET states = $1, status = $2, updated = $3, version = version + 1 "
            "WHERE id = $4 AND version = $5",
            self.sealing.seal("cases.states", case.id, orjson.dumps(states)),
            status,
            SECONDS.column(time.time()),
            case.id,
            case.version,
        )
        if saved != 1:
            raise Conflict(f"case {case.id} changed since it was read")
        case.version += 1

    async def add_step(
        self,
        case_id: str,
        step: str,
        sub_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """A step on the case's timeline, numbered after the last (the case row is locked)."""
        await self._lock_case(case_id)
        await self.db.execute(
            "INSERT INTO timeline (case_id, seq, time, step, sub_id, detail) VALUES ($1, "
            "(SELECT COALESCE(MAX(seq), 0) + 1 FROM timeline WHERE case_id = $1), $2, $3, $4, $5)",
            case_id,
            MILLISECONDS.column(time.time()),
            step,
            sub_id,
            orjson.dumps(detail) if detail else None,
        )

    # -- the outbox ----------------------------------------------------------------------------

    async def enqueue(
        self,
        *,
        msg_id: str,
        case_id: str,
        sub_id: str,
        partner: str,
        domain: str,
        kind: str,
        matter: str,
        payload: bytes,
        envelope: bytes,
        held: bool = False,
        lease: tuple[str, float] | None = None,
        due: float | None = None,
    ) -> OutboxMessage:
        """``lease``: (owner, until) — in flight for that worker at once, as if it had claimed
        it; ``held``: not due until ``release_hold`` (or, should that never come, a little
        later); ``due``: not sent before this time. ``AlreadyThere`` if the id is taken."""
        now = time.time()
        message = OutboxMessage(
            msg_id=msg_id,
            case_id=case_id,
            sub_id=sub_id,
            partner=partner,
            domain=domain,
            kind=kind,
            matter=matter,
            payload=payload,
            envelope=envelope,
            status=IN_FLIGHT if lease else PENDING,
            attempts=0,
            created=now,
            next_attempt_at=due if due is not None else now + HOLD_SECONDS if held else now,
            lease_owner=lease[0] if lease else None,
            lease_until=lease[1] if lease else None,
            last_error_code=None,
            last_error=None,
            finished_at=None,
        )
        await self.db.execute(
            "INSERT INTO outbox (msg_id, case_id, sub_id, partner, domain, kind, matter, payload, "  # noqa: S608 - placeholders only
            "envelope, status, attempts, created, next_attempt_at, lease_owner, lease_until) "
            f"VALUES ({placeholders(1, 15)})",
            msg_id,
            case_id,
            sub_id,
            partner,
            domain,
            kind,
            matter,
            self.sealing.seal("outbox.payload", msg_id, payload),
            envelope,
            message.status,
            0,
            message.created,
            message.next_attempt_at,
            message.lease_owner,
            message.lease_until,
        )
        return message

    async def release_hold(self, case_id: str) -> None:
        now = time.time()
        await self.db.execute(
            "UPDATE outbox SET next_attempt_at = $1 WHERE case_id = $2 AND status = $3 "
            "AND attempts = 0 AND next_attempt_at > $1",
            now,
            case_id,
            PENDING,
        )

    async def move_messages(self, event: MsgEvent, where: Mapping[str, str], **changes: Any) -> int:
        """Apply ``event`` to the messages ``where`` names (by msg_id, case_id, sub_id, kind,
        lease_owner) that are in a state the lifecycle table allows it from, setting the
        ``changes`` too (an ``Increment`` adds to the column). How many moved."""
        shape = tuple((name, isinstance(value, Increment)) for name, value in changes.items())
        sql, target, sources = _move_statement(event, tuple(where), shape)
        values = [v.by if isinstance(v, Increment) else v for v in changes.values()]
        return await self.db.execute(sql, target, *values, *where.values(), *sources)

    async def finish(self, msg_id: str) -> bool:
        """The message reached its destination: delivered, lease dropped. False if it was
        not pending or in flight (another worker finished it first)."""
        moved = await self.move_messages(
            MsgEvent.DELIVER,
            {"msg_id": msg_id},
            finished_at=time.time(),
            lease_owner=None,
            lease_until=None,
        )
        if moved:  # its materials as sealed for the partner: delivered, no longer needed
            await self.drop_outbox_materials(msg_id)
        return moved > 0

    async def message(self, msg_id: str) -> OutboxMessage | None:
        row = await self.db.fetchrow(
            f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE msg_id = $1",  # noqa: S608
            msg_id,
        )
        return self.sealing.message(row) if row else None

    async def in_flight_count(self, case_id: str) -> int:
        row = await self.db.fetchrow(
            "SELECT COUNT(*) AS n FROM outbox WHERE case_id = $1 AND status = $2",
            case_id,
            IN_FLIGHT,
        )
        return int(row["n"]) if row else 0

    async def last_message(self, case_id: str, sub_id: str) -> tuple[str, str] | None:
        """(message id, status) of the last message made for a sub-matter."""
        row = await self.db.fetchrow(
            "SELECT msg_id, status FROM outbox WHERE case_id = $1 AND sub_id = $2 "
            "ORDER BY created DESC LIMIT 1",
            case_id,
            sub_id,
        )
        return (row["msg_id"], row["status"]) if row else None

    async def set_envelope(self, msg_id: str, envelope: bytes) -> None:
        await self.db.execute("UPDATE outbox SET envelope = $1 WHERE msg_id = $2", envelope, msg_id)

    # -- materials -------------------------------------------------------------------------------

    async def attach_materials(self, case_id: str, material_ids: Sequence[str]) -> int:
        """Uploaded materials become the case's; how many did (one gone meanwhile: fewer)."""
        attached = 0
        for material_id in material_ids:
            attached += await self.db.execute(
                "UPDATE material SET case_id = $1, status = $2 WHERE id = $3 AND status = $4",
                case_id,
                ATTACHED,
                material_id,
                UPLOADED,
            )
        return attached

    async def add_licence(self, case_id: str, code: str, identifier: str, holder: str) -> None:
        """An 电子证照 standing in for a material (its holder is personal data: sealed)."""
        material_id = secrets.token_hex(16)
        value = orjson.dumps({"identifier": identifier, "holder": holder})
        sealed = self.sealing.seal("material.licence", material_id, value)
        await _insert_material(self.db, material_id, case_id, code, "licence", sealed, ATTACHED)

    async def case_materials(self, case_id: str) -> list[MaterialRecord]:
        return await _case_materials(self.db, self.sealing, case_id)

    async def material_chunks(self, material_id: str, start: int, count: int) -> list[bytes]:
        return await _material_chunks(self.db, self.sealing, material_id, start, count)

    async def put_outbox_material(
        self, msg_id: str, code: str, start: int, chunks: Sequence[bytes]
    ) -> None:
        """Pieces of a material as sealed for the partner (already encrypted: stored as is)."""
        await self.db.executemany(
            "INSERT INTO outbox_material (msg_id, code, idx, data) VALUES ($1, $2, $3, $4)",
            [(msg_id, code, start + i, chunk) for i, chunk in enumerate(chunks)],
        )

    async def drop_outbox_materials(self, msg_id: str) -> None:
        await self.db.execute("DELETE FROM outbox_material WHERE msg_id = $1", msg_id)

    # -- what partners send us -----------------------------------------------------------------

    async def remember_inbound(
        self, partner: str, msg_id: str, kind: str, case_id: str | None, reply: dict[str, Any]
    ) -> None:
        """A partner's message and our answer to it, for answering a resend the same way."""
        await self.db.execute(
            "INSERT INTO inbound_message (partner, msg_id, kind, received, case_id, reply) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            partner,
            msg_id,
            kind,
            SECONDS.column(time.time()),
            case_id,
            self.sealing.seal("inbound_message.reply", f"{partner}/{msg_id}", orjson.dumps(reply)),
        )

    async def inbound_case_of(self, partner: str, partner_ref: str) -> str | None:
        """Our id of the case a partner filed under its reference, if it did."""
        row = await self.db.fetchrow(
            "SELECT id FROM inbound_case WHERE partner = $1 AND partner_ref = $2",
            partner,
            partner_ref,
        )
        return row["id"] if row else None

    async def insert_inbound_case(self, case: InboundCase) -> None:
        await self.db.execute(
            f"INSERT INTO inbound_case ({INBOUND_COLUMNS}) VALUES ({placeholders(1, 11)})",  # noqa: S608
            case.id,
            case.partner,
            case.partner_ref,
            case.partner_matter,
            case.local_matter,
            case.domain,
            SECONDS.column(case.created),
            SECONDS.column(case.updated),
            case.status,
            self.sealing.seal("inbound_case.form", case.id, orjson.dumps(case.form)),
            None,
        )

    async def inbound_case(self, case_id: str) -> InboundCase | None:
        row = await self.db.fetchrow(
            f"SELECT {INBOUND_COLUMNS} FROM inbound_case WHERE id = $1{self._lock_clause}",  # noqa: S608
            case_id,
        )
        return self.sealing.inbound_case(row) if row else None

    async def move_inbound_case(
        self, case_id: str, event: InboundEvent, result: dict[str, Any] | None = None
    ) -> bool:
        """Apply ``event`` to an inbound case if the lifecycle table allows it from its state;
        ``result``: the back office's decision, kept with it."""
        sources = INBOUND.sources(event)
        moved = await self.db.execute(
            "UPDATE inbound_case SET status = $1, updated = $2, "  # noqa: S608 - placeholders only
            "result = COALESCE($3, result) "
            f"WHERE id = $4 AND status IN ({placeholders(5, len(sources))})",
            INBOUND.target(event).value,
            SECONDS.column(time.time()),
            self.sealing.seal("inbound_case.result", case_id, orjson.dumps(result))
            if result is not None
            else None,
            case_id,
            *sources,
        )
        return bool(moved)


class Store(abc.ABC):
    """The gateway's durable state, shared by every node that opens the same database."""

    sealing: Sealing
    # How a transaction locks the rows it will change (PostgreSQL's FOR UPDATE; nothing where
    # one writer at a time holds the whole database).
    lock_clause = ""
    skip_locked_clause = ""

    @property
    def data_keys(self) -> DataKeys | None:
        return self.sealing.keys

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Which database, for logs and ``xgw db status`` (never a password)."""

    @abc.abstractmethod
    def transaction(self, volatile: bool = False) -> AbstractAsyncContextManager[Transaction]:
        """One atomic change. ``volatile``: nobody need wait for this one to be durable
        (losing it changes only when something happens), so ``durable()`` does not wait for
        it alone."""

    @abc.abstractmethod
    def reading(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for reads outside a transaction."""

    @abc.abstractmethod
    async def durable(self) -> None:
        """Return once what this task committed is durable (a window's 201 and a partner's
        receipt wait for it)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The schema version the database holds."""

    async def probe_write(self, node: str) -> None:
        """A small write, for readiness: raises ``StoreUnavailable`` when the store cannot
        take writes though it may still read (a full disk, a read-only replica)."""
        async with self.transaction(volatile=True) as tx:
            await tx.db.execute(PROBE_WRITE, node, time.time())

    async def _rows(self, sql: str, *args: Any) -> Sequence[Row]:
        async with self.reading() as db:
            return await db.fetch(sql, *args)

    # -- materials -------------------------------------------------------------------------------

    async def begin_material(self, material_id: str, code: str) -> None:
        """A material being uploaded: its chunks follow (``add_material_chunks``)."""
        async with self.transaction(volatile=True) as tx:
            await _insert_material(tx.db, material_id, None, code, "", None, UPLOADING)

    async def add_material_chunks(self, material_id: str, start: int, chunks: list[bytes]) -> None:
        seal = self.sealing.seal
        async with self.transaction(volatile=True) as tx:
            await tx.db.executemany(
                "INSERT INTO material_chunk (material_id, idx, data) VALUES ($1, $2, $3)",
                [
                    (material_id, i, seal("material_chunk", f"{material_id}:{i}", chunk))
                    for i, chunk in enumerate(chunks, start)
                ],
            )

    async def finish_material(
        self, material_id: str, kind: str, size: int, chunks: int, sm3: str
    ) -> None:
        async with self.transaction() as tx:
            await tx.db.execute(
                "UPDATE material SET kind = $1, size = $2, chunks = $3, sm3 = $4, status = $5 "
                "WHERE id = $6",
                kind,
                size,
                chunks,
                sm3,
                UPLOADED,
                material_id,
            )

    async def discard_materials(self, material_ids: Sequence[str]) -> None:
        """Materials that will never be a case's (a refused or repeated filing, a broken
        upload): nothing half-stored stays."""
        async with self.transaction(volatile=True) as tx:
            for material_id in material_ids:
                gone = await tx.db.execute(
                    "DELETE FROM material WHERE id = $1 AND status <> $2", material_id, ATTACHED
                )
                if gone:  # a case's own material is never discarded
                    await tx.db.execute(
                        "DELETE FROM material_chunk WHERE material_id = $1", material_id
                    )

    async def case_materials(self, case_id: str) -> list[MaterialRecord]:
        async with self.reading() as db:
            return await _case_materials(db, self.sealing, case_id)

    async def material_chunks(self, material_id: str, start: int, count: int) -> list[bytes]:
        async with self.reading() as db:
            return await _material_chunks(db, self.sealing, material_id, start, count)

    async def outbox_material(self, msg_id: str, code: str, start: int, count: int) -> list[bytes]:
        """Pieces ``start``… of a material as sealed for the partner, in order."""
        rows = await self._rows(
            "SELECT data FROM outbox_material WHERE msg_id = $1 AND code = $2 AND idx >= $3 "
            "AND idx < $4 ORDER BY idx",
            msg_id,
            code,
            start,
            start + count,
        )
        return [bytes(row["data"]) for row in rows]

    async def materials_stored(self) -> tuple[int, int]:
        """(materials, their bytes) kept, files and e-licence references of every case."""
        rows = await self._rows("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM material")
        return int(rows[0]["n"]), int(rows[0]["b"])

    async def purge_materials(self, finished_before: float, uploads_before: float) -> int:
        """Deletes the files of cases finished (done or cancelled; a partner's case once its
        result went back, or could not) before ``finished_before``,
        uploads never filed that began before ``uploads_before`` (a crash mid-upload), and the
        sealed copies of messages no longer waiting to go. How many materials went. The
        exchange log keeps what was exchanged (the manifests' digests) for ever."""
        finished = iso_of(finished_before)
        async with self.transaction(volatile=True) as tx:
            rows = await tx.db.fetch(
                "SELECT m.id FROM material m JOIN cases c ON c.id = m.case_id "
                "WHERE m.status = $1 AND c.status IN ('done', 'cancelled') AND c.updated < $2 "
                "UNION SELECT m.id FROM material m JOIN inbound_case i ON i.id = m.case_id "
                "WHERE m.status = $1 AND i.status IN ('result_delivered', 'result_undeliverable') "
                "AND i.updated < $2 "
                "UNION SELECT id FROM material WHERE status <> $1 AND created < $3",
                ATTACHED,
                finished,
                uploads_before,
            )
            for row in rows:
                await tx.db.execute("DELETE FROM material_chunk WHERE material_id = $1", row["id"])
                await tx.db.execute("DELETE FROM material WHERE id = $1", row["id"])
            await tx.db.execute(
                "DELETE FROM outbox_material WHERE msg_id IN (SELECT msg_id FROM outbox "
                "WHERE status IN ('delivered', 'cancelled'))"
            )
        return len(rows)

    # -- tokens --------------------------------------------------------------------------------

    async def create_token(self, name: str, role: str, hall: str | None) -> str:
        """A new API token (``AlreadyThere`` if the name is taken); only its hash is kept."""
        token = "xgw_" + secrets.token_urlsafe(32)
        async with self.transaction() as tx:
            await tx.db.execute(
                "INSERT INTO tokens (name, role, hall, hash, created, revoked) "
                "VALUES ($1, $2, $3, $4, $5, 0)",
                name,
                role,
                hall,
                token_hash(token),
                SECONDS.column(time.time()),
            )
        return token

    async def revoke_token(self, name: str) -> bool:
        async with self.transaction() as tx:
            return await tx.db.execute("UPDATE tokens SET revoked = 1 WHERE name = $1", name) > 0

    async def token(self, token: str) -> Token | None:
        return await self.token_by_hash(token_hash(token))

    async def token_by_hash(self, digest: str) -> Token | None:
        """The token whose hash this is, unless revoked (a console session keeps the hash)."""
        rows = await self._rows(
            "SELECT name, role, hall FROM tokens WHERE hash = $1 AND revoked = 0", digest
        )
        return Token(rows[0]["name"], rows[0]["role"], rows[0]["hall"]) if rows else None

    async def tokens(self) -> list[dict[str, Any]]:
        rows = await self._rows(
            "SELECT name, role, hall, created, revoked FROM tokens ORDER BY created"
        )
        return [{**dict(r), "created": epoch_of(r["created"])} for r in rows]

    # -- cases ---------------------------------------------------------------------------------

    async def case_by_idem(self, idem_key: str) -> CaseRow | None:
        rows = await self._rows(
            f"SELECT {CASE_COLUMNS} FROM cases WHERE idem_key = $1",  # noqa: S608
            idem_key,
        )
        return self.sealing.case(rows[0]) if rows else None

    async def case(self, case_id: str) -> CaseRow | None:
        rows = await self._rows(
            f"SELECT {CASE_COLUMNS} FROM cases WHERE id = $1",  # noqa: S608
            case_id,
        )
        return self.sealing.case(rows[0]) if rows else None

    async def case_form(self, case_id: str) -> dict[str, Any] | None:
        """The form a case was filed with: opened only here, not with every read of the case."""
        rows = await self._rows("SELECT form FROM cases WHERE id = $1", case_id)
        if not rows:
            return None
        opened = self.sealing.open("cases.form", case_id, rows[0]["form"])
        assert opened is not None
        form: dict[str, Any] = orjson.loads(opened)
        return form

    async def case_head(self, case_id: str) -> tuple[str, tuple[int, int]] | None:
        """(hall, (version, last timeline step)): enough to tell whether a case changed."""
        rows = await self._rows(
            "SELECT hall, version, (SELECT COALESCE(MAX(seq), 0) FROM timeline "
            "WHERE case_id = cases.id) AS last_step FROM cases WHERE id = $1",
            case_id,
        )
        if not rows:
            return None
        return rows[0]["hall"], (rows[0]["version"], rows[0]["last_step"])

    async def list_cases(
        self,
        where: dict[str, str],
        limit: int,
        after: tuple[float, str] | None,
        created_from: float | None = None,
        created_to: float | None = None,
    ) -> list[CaseSummary]:
        """A page of cases in (created, id) order, each read through an index and without its
        form or payloads."""
        allowed = ("status", "hall", "bundle")
        clauses: list[str] = []
        params: list[Any] = []

        def bind(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        # By matter (any sub-matter's, ours or the partner's), the matter index leads, in the
        # page's order: the page is full and its cursor right however the matches are spread.
        source, order = "cases", ("cases.created", "cases.id")
        if "matter" in where:
            source = "case_matter AS m JOIN cases ON cases.id = m.case_id"
            order = ("m.created", "m.case_id")
            clauses.append(f"m.matter = {bind(where['matter'])}")
        clauses += [f"cases.{k} = {bind(where[k])}" for k in allowed if k in where]
        if created_from is not None:
            clauses.append(f"{order[0]} >= {bind(_seconds_from(created_from))}")
        if created_to is not None:
            clauses.append(f"{order[0]} < {bind(_seconds_from(created_to))}")
        if after:
            created = SECONDS.column(after[0])
            clauses.append(f"({order[0]}, {order[1]}) > ({bind(created)}, {bind(after[1])})")
        # clauses name only the columns above; every value is a bound parameter
        sql = f"SELECT {SUMMARY_COLUMNS} FROM {source}" + (  # noqa: S608
            " WHERE " + " AND ".join(clauses) if clauses else ""
        )
        sql += f" ORDER BY {order[0]}, {order[1]} LIMIT {bind(limit)}"
        return [self.sealing.summary(r) for r in await self._rows(sql, *params)]

    async def timeline(self, case_id: str) -> list[dict[str, Any]]:
        rows = await self._rows(
            "SELECT seq, time, step, sub_id, detail FROM timeline WHERE case_id = $1 ORDER BY seq",
            case_id,
        )
        return [
            {
                **dict(r),
                "time": epoch_of(r["time"]),
                "detail": orjson.loads(r["detail"]) if r["detail"] else None,
            }
            for r in rows
        ]

    # -- the outbox ----------------------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        skip_partners: Collection[str] = (),
        dead_after: float | None = None,
    ) -> list[OutboxMessage]:
        """Take up to ``limit`` due messages for ``owner`` until the lease runs out, oldest due
        first, none for ``skip_partners`` (skipped in the query itself: a backlog for a partner
        that is down must not hide the messages behind it). Rows another node is claiming at
        the same moment are skipped, not waited for. ``dead_after``: a message leased to an
        owner whose heartbeat is older than this is taken over at once, without waiting out
        its lease (``taken_from`` names that owner)."""
        now = time.time()
        claimable = MESSAGE.sources(MsgEvent.CLAIM)
        skipped = sorted(skip_partners)
        args: list[Any] = [now, limit]

        def bind(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        states = ", ".join(bind(state) for state in claimable)
        not_for = f"AND partner NOT IN ({', '.join(bind(p) for p in skipped)}) " if skipped else ""
        dead = (
            "OR lease_owner IN (SELECT owner FROM node_heartbeat "  # noqa: S608 - placeholders only
            f"WHERE seen < {bind(now - dead_after)}) "
            if dead_after is not None
            else ""
        )
        sql = (
            f"SELECT {OUTBOX_COLUMNS} FROM outbox "  # noqa: S608 - placeholders only
            f"WHERE status IN ({states}) AND next_attempt_at <= $1 "
            f"AND (lease_until IS NULL OR lease_until < $1 {dead}) {not_for}"
            f"ORDER BY next_attempt_at LIMIT $2{self.skip_locked_clause}"
        )
        until = now + lease_seconds
        # volatile: a claim lost to a crash only sends the message again, de-duplicated
        async with self.transaction(volatile=True) as tx:
            rows = await tx.db.fetch(sql, *args)
            if rows:
                ids = [row["msg_id"] for row in rows]
                await tx.db.execute(
                    "UPDATE outbox SET status = $1, lease_owner = $2, lease_until = $3 "  # noqa: S608
                    f"WHERE msg_id IN ({placeholders(4, len(ids))})",
                    IN_FLIGHT,
                    owner,
                    until,
                    *ids,
                )
        messages = []
        for row in rows:
            message = self.sealing.message(row)
            if message.lease_until is not None and message.lease_until >= now:
                message.taken_from = message.lease_owner  # leased still, to a dead node
            message.status, message.lease_owner, message.lease_until = IN_FLIGHT, owner, until
            messages.append(message)
        return messages

    # -- nodes ---------------------------------------------------------------------------------

    async def heartbeat(self, owner: str, node: str, started: float) -> None:
        """``owner`` (one process of ``node``) is alive; owners silent for a day are forgotten."""
        now = time.time()
        async with self.transaction(volatile=True) as tx:
            await tx.db.execute(
                "INSERT INTO node_heartbeat (owner, node, started, seen) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (owner) DO UPDATE SET seen = excluded.seen",
                owner,
                node,
                started,
                now,
            )
            await tx.db.execute("DELETE FROM node_heartbeat WHERE seen < $1", now - 86400)

    async def forget_owner(self, owner: str) -> None:
        """``owner`` stopped cleanly (its leases given back): not a dead node."""
        async with self.transaction(volatile=True) as tx:
            await tx.db.execute("DELETE FROM node_heartbeat WHERE owner = $1", owner)

    async def heartbeats(self) -> list[dict[str, Any]]:
        """Every process that beat in the last day: owner, node, started, seen."""
        rows = await self._rows(
            "SELECT owner, node, started, seen FROM node_heartbeat ORDER BY node, owner"
        )
        return [dict(r) for r in rows]

    async def renew_lease(self, msg_id: str, owner: str, until: float) -> bool:
        """Extend ``owner``'s lease on an in-flight message; False if it is no longer theirs."""
        async with self.transaction(volatile=True) as tx:
            renewed = await tx.db.execute(
                "UPDATE outbox SET lease_until = $1 "
                "WHERE msg_id = $2 AND lease_owner = $3 AND status = $4",
                until,
                msg_id,
                owner,
                IN_FLIGHT,
            )
        return renewed == 1

    async def release(self, msg_ids: list[str], owner: str) -> None:
        """Give back leases of messages not finished (shutdown): another worker may send them."""
        async with self.transaction() as tx:
            for msg_id in msg_ids:
                await tx.move_messages(
                    MsgEvent.RELEASE,
                    {"msg_id": msg_id, "lease_owner": owner},
                    lease_owner=None,
                    lease_until=None,
                )

    async def outbox(self, status: str | None = None, limit: int = 200) -> list[OutboxMessage]:
        if status:
            rows = await self._rows(
                f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = $1 "  # noqa: S608
                "ORDER BY created LIMIT $2",
                status,
                limit,
            )
        else:
            rows = await self._rows(
                f"SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY created LIMIT $1",  # noqa: S608
                limit,
            )
        return [self.sealing.message(r) for r in rows]

    async def message(self, msg_id: str) -> OutboxMessage | None:
        async with self.reading() as db:
            return await Transaction(db, self.sealing, "").message(msg_id)

    async def record_exchanges(self, records: Sequence[ExchangeRecord]) -> None:
        """Operational records, a batch in one volatile write (losing the last second's to a
        crash loses no case, message or log entry)."""
        if not records:
            return
        async with self.transaction(volatile=True) as tx:
            await tx.db.executemany(
                f"INSERT INTO exchange_record ({RECORD_COLUMNS}) "  # noqa: S608 - constant columns
                f"VALUES ({placeholders(1, len(RECORD_FIELDS))})",
                [_record_row(r) for r in records],
            )

    async def exchange_records(
        self,
        where: dict[str, str],
        limit: int,
        after: tuple[float, int] | None,
        time_from: float | None = None,
        time_to: float | None = None,
    ) -> list[dict[str, Any]]:
        """Records in (time, id) order, filtered by partner, direction, outcome."""
        clauses: list[str] = []
        params: list[Any] = []

        def bind(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        clauses += [
            f"{name} = {bind(where[name])}"
            for name in ("partner", "direction", "outcome", "node")
            if name in where
        ]
        if time_from is not None:
            clauses.append(f"time >= {bind(_milliseconds_from(time_from))}")
        if time_to is not None:
            clauses.append(f"time < {bind(_milliseconds_from(time_to))}")
        if after:
            after_time = MILLISECONDS.column(after[0])
            clauses.append(f"(time, id) > ({bind(after_time)}, {bind(after[1])})")
        sql = f"SELECT id, {RECORD_COLUMNS} FROM exchange_record" + (  # noqa: S608 - names above
            " WHERE " + " AND ".join(clauses) if clauses else ""
        )
        sql += f" ORDER BY time, id LIMIT {bind(limit)}"
        return [
            {**dict(r), **{name: TextTime.value(r[name]) for name in RECORD_TIMES}}
            for r in await self._rows(sql, *params)
        ]

    async def oldest_pending(self) -> float | None:
        """When the oldest message still waiting to be sent was made (None: none waits)."""
        rows = await self._rows(
            "SELECT MIN(created) AS oldest FROM outbox WHERE status = $1", PENDING
        )
        oldest = rows[0]["oldest"] if rows else None
        return float(oldest) if oldest is not None else None

    async def by_partner(self) -> dict[str, dict[str, Any]]:
        """Per destination: messages by status, and when the last one was delivered."""
        rows = await self._rows(
            "SELECT partner, status, COUNT(*) AS n, MAX(finished_at) AS last FROM outbox "
            "GROUP BY partner, status"
        )
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            entry = found.setdefault(row["partner"], {"counts": {}, "last_delivered": None})
            entry["counts"][row["status"]] = int(row["n"])
            if row["status"] == Msg.DELIVERED.value and row["last"] is not None:
                entry["last_delivered"] = float(row["last"])
        return found

    async def counts(self) -> dict[str, int]:
        rows = await self._rows("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    # -- what partners send us -----------------------------------------------------------------

    async def inbound_reply(self, partner: str, msg_id: str) -> dict[str, Any] | None:
        """Our answer to a partner's message, if we answered it already."""
        rows = await self._rows(
            "SELECT reply FROM inbound_message WHERE partner = $1 AND msg_id = $2",
            partner,
            msg_id,
        )
        if not rows:
            return None
        reply = self.sealing.open("inbound_message.reply", f"{partner}/{msg_id}", rows[0]["reply"])
        assert reply is not None
        parsed: dict[str, Any] = orjson.loads(reply)
        return parsed

    async def inbound_case(self, case_id: str) -> InboundCase | None:
        async with self.reading() as db:
            return await Transaction(db, self.sealing, "").inbound_case(case_id)

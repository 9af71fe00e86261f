"""The durable store (SQLite): cases, their timelines, the transactional outbox, API tokens.

A case change and the sealed messages it causes are written in one transaction (the outbox
pattern): nothing is sent that was not recorded, nothing recorded is lost. Delivery workers claim
due messages with a lease (``BEGIN IMMEDIATE`` makes the claim atomic across processes sharing
the file), or a message is leased to the instance that writes it when that one can send it at
once; an expired lease makes a message claimable again, which is why the partner de-duplicates
by message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from gateway.core.cases import PlannedSub, SubState
from gateway.core.lifecycle import INBOUND, MESSAGE, InboundEvent, Msg, MsgEvent
from security.atrest import DataKeys

SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    id TEXT PRIMARY KEY, created TEXT NOT NULL, updated TEXT NOT NULL, status TEXT NOT NULL,
    hall TEXT NOT NULL, clerk TEXT, token_name TEXT NOT NULL, bundle TEXT NOT NULL,
    title TEXT NOT NULL, filed_on TEXT NOT NULL, idem_key TEXT NOT NULL UNIQUE,
    request_hash TEXT NOT NULL, person TEXT, form BLOB NOT NULL, plan BLOB NOT NULL,
    states BLOB NOT NULL, version INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS cases_by_hall ON cases (hall, created);
CREATE INDEX IF NOT EXISTS cases_by_status ON cases (status, created);
CREATE INDEX IF NOT EXISTS cases_by_created ON cases (created, id);
CREATE INDEX IF NOT EXISTS cases_by_bundle ON cases (bundle, created);
-- every matter code a case's sub-matters carry (ours and the partners'), for ?matter=
CREATE TABLE IF NOT EXISTS case_matter (
    matter TEXT NOT NULL, created TEXT NOT NULL, case_id TEXT NOT NULL,
    PRIMARY KEY (matter, created, case_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS timeline (
    case_id TEXT NOT NULL, seq INTEGER NOT NULL, time TEXT NOT NULL, step TEXT NOT NULL,
    sub_id TEXT, detail BLOB, PRIMARY KEY (case_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    msg_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, sub_id TEXT NOT NULL, partner TEXT NOT NULL,
    domain TEXT NOT NULL, kind TEXT NOT NULL, matter TEXT NOT NULL, payload BLOB NOT NULL,
    envelope BLOB NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, next_attempt_at REAL NOT NULL, lease_owner TEXT, lease_until REAL,
    last_error_code TEXT, last_error TEXT, finished_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at);
CREATE TABLE IF NOT EXISTS inbound_message (
    partner TEXT NOT NULL, msg_id TEXT NOT NULL, kind TEXT NOT NULL, received TEXT NOT NULL,
    case_id TEXT, reply BLOB NOT NULL, PRIMARY KEY (partner, msg_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbound_case (
    id TEXT PRIMARY KEY, partner TEXT NOT NULL, partner_ref TEXT NOT NULL, partner_matter TEXT NOT NULL,
    local_matter TEXT NOT NULL, domain TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL,
    status TEXT NOT NULL, form BLOB NOT NULL, result BLOB, UNIQUE (partner, partner_ref)
);
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, hall TEXT, hash TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS write_probe (node TEXT PRIMARY KEY, at REAL NOT NULL);
"""
# Outbox statuses: pending → in_flight → delivered | dead (| cancelled with its case).
PENDING, IN_FLIGHT = Msg.PENDING.value, Msg.IN_FLIGHT.value
HOLD_SECONDS = 5.0  # a held message's due time, should its release be lost (a crash)


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def token_hash(token: str) -> str:
    # Tokens are 256-bit random strings: a plain hash is enough (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    hall: str | None


@dataclass
class CaseSummary:
    """What a listing shows of a case: no form, and its plan without the payloads."""

    id: str
    created: str
    updated: str
    status: str
    hall: str
    clerk: str | None
    token_name: str
    bundle: str
    title: str
    filed_on: str
    idem_key: str
    request_hash: str
    person: str | None
    plan: list[PlannedSub]
    states: list[SubState]
    version: int

    def plan_of(self, sub_id: str) -> PlannedSub:
        return next(p for p in self.plan if p.sub_id == sub_id)


@dataclass
class CaseRow(CaseSummary):
    """A whole case: its form, and the payloads it sends to partners."""

    form: dict[str, Any] = field(default_factory=dict)


# Personal data (forms, payloads, partners' answers) is sealed at rest (security.atrest) by two
# SQL functions on the store's connection: xgw_seal(place, row, value) as it is written and
# xgw_open(place, row, value) as it is read, so every statement that touches such a column says
# so, and the static helpers that take a connection inside a transaction need nothing else.
CASE_COLUMNS = (
    "id, created, updated, status, hall, clerk, token_name, bundle, title, filed_on, idem_key, "
    "request_hash, person, xgw_open('cases.form', id, form) AS form, "
    "xgw_open('cases.plan', id, plan) AS plan, xgw_open('cases.states', id, states) AS states, "
    "version"
)
OUTBOX_COLUMNS = (
    "msg_id, case_id, sub_id, partner, domain, kind, matter, "
    "xgw_open('outbox.payload', msg_id, payload) AS payload, envelope, status, attempts, created, "
    "next_attempt_at, lease_owner, lease_until, last_error_code, last_error, finished_at"
)

_CASE_BY_IDEM = f"SELECT {CASE_COLUMNS} FROM cases WHERE idem_key = ?"  # noqa: S608 - constant columns
_CASE_BY_ID = f"SELECT {CASE_COLUMNS} FROM cases WHERE id = ?"  # noqa: S608 - constant columns
_OUTBOX_BY_STATUS = f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = ? ORDER BY created LIMIT ?"  # noqa: S608 - constant columns
_OUTBOX_ALL = f"SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY created LIMIT ?"  # noqa: S608 - constant columns
_OUTBOX_BY_ID = f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE msg_id = ?"  # noqa: S608 - constant columns

# The columns of a listing: never a form or a plan's payloads, however large they are.
SUMMARY_COLUMNS = (
    ", ".join(
        f"cases.{name}"
        for name in [
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
        ]
    )
    + ", cases.routing AS plan, xgw_open('cases.states', cases.id, cases.states) AS states, "
    "cases.version"
)


def _routing(plan: list[PlannedSub]) -> bytes:
    return orjson.dumps([replace(p, payload=None) for p in plan])


@dataclass
class OutboxMessage:
    msg_id: str
    case_id: str
    sub_id: str
    partner: str
    domain: str
    kind: str
    matter: str
    payload: bytes
    envelope: bytes
    status: str
    attempts: int
    created: float
    next_attempt_at: float
    lease_owner: str | None
    lease_until: float | None
    last_error_code: str | None
    last_error: str | None
    finished_at: float | None


def _case(row: sqlite3.Row) -> CaseRow:
    data = dict(row)
    data.pop("routing", None)
    data["form"] = orjson.loads(data["form"])
    return CaseRow(**_decoded(data))


def _summary(row: sqlite3.Row) -> CaseSummary:
    return CaseSummary(**_decoded(dict(row)))


def _decoded(data: dict[str, Any]) -> dict[str, Any]:
    data["plan"] = [
        PlannedSub(**{**p, "depends_on": tuple(p["depends_on"])})
        for p in orjson.loads(data["plan"])
    ]
    data["states"] = [
        SubState(**{**s, "depends_on": tuple(s["depends_on"])})
        for s in orjson.loads(data["states"])
    ]
    return data


_sync_data = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def _index_matters(db: sqlite3.Connection, case_id: str, created: str, plan: Any) -> None:
    codes = {p.matter for p in plan} | {p.partner_code for p in plan if p.partner_code}
    db.executemany(
        "INSERT OR IGNORE INTO case_matter VALUES (?, ?, ?)",
        [(code, created, case_id) for code in sorted(codes)],
    )


def _add_routing(db: sqlite3.Connection) -> None:
    """Stores made before listings read only what they show: add the plan without payloads
    (``routing``) and the matter index, once."""
    if "routing" in {row[1] for row in db.execute("PRAGMA table_info(cases)")}:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if "routing" in {row[1] for row in db.execute("PRAGMA table_info(cases)")}:
            db.execute("COMMIT")  # another process added it meanwhile
            return
        db.execute("ALTER TABLE cases ADD COLUMN routing BLOB")
        for case_id, created, plan in db.execute(
            "SELECT id, created, xgw_open('cases.plan', id, plan) FROM cases"
        ).fetchall():
            planned = [
                PlannedSub(**{**p, "depends_on": tuple(p["depends_on"])})
                for p in orjson.loads(plan)
            ]
            db.execute("UPDATE cases SET routing = ? WHERE id = ?", (_routing(planned), case_id))
            _index_matters(db, case_id, created, planned)
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise


@lru_cache(maxsize=64)
def _move_statement(
    event: MsgEvent, where: tuple[str, ...], also: str
) -> tuple[str, str, tuple[str, ...]]:
    """(SQL, target state, source states) of a message transition: made once per shape."""
    assert where and set(where) <= {"msg_id", "case_id", "sub_id", "kind", "lease_owner"}, where
    sources = MESSAGE.sources(event)
    sql = (
        "UPDATE outbox SET status = ?"  # noqa: S608 - names from the lifecycle table and code
        + (f", {also}" if also else "")
        + " WHERE "
        + " AND ".join(f"{name} = ?" for name in where)
        + f" AND status IN ({', '.join('?' * len(sources))})"
    )
    return sql, MESSAGE.target(event).value, sources


def register_sealing(db: sqlite3.Connection, keys: DataKeys | None) -> None:
    """xgw_seal / xgw_open on this connection (see CASE_COLUMNS)."""

    def seal(place: str, row: str, value: bytes | None) -> bytes | None:
        if value is None or keys is None:
            return value
        return keys.seal(bytes(value), f"{place}:{row}".encode())

    def open_(place: str, row: str, value: bytes | None) -> bytes | None:
        if value is None or keys is None:
            return value
        return keys.open(bytes(value), f"{place}:{row}".encode())

    db.create_function("xgw_seal", 3, seal)
    db.create_function("xgw_open", 3, open_, deterministic=True)


def rollback(db: sqlite3.Connection) -> None:
    """Undo the open transaction, if SQLite has not already (it rolls back by itself after a
    full disk or an I/O error): a ROLLBACK then would raise "no transaction is active" and
    hide the error that matters."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the original error is the one to report
            db.execute("ROLLBACK")


def open_sqlite(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """A WAL-mode connection usable from worker threads (callers serialize writes). FULL: every
    commit is on disk when it returns; NORMAL: only once the caller syncs the WAL (group commit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'NORMAL' if synchronous == 'NORMAL' else 'FULL'}")
    db.execute("PRAGMA busy_timeout=30000")
    return db


class Store:
    """``group_commit=False`` (the CLI): each commit is durable when it returns.
    ``group_commit=True`` (the serving gateway): commits skip their own fsync and whoever is
    about to acknowledge one — answer a window or a partner — awaits ``durable()``: one fsync
    of the WAL covers every commit made before it. That is synchronous=FULL's guarantee for
    what is acknowledged, at one fsync per turn of the event loop instead of one per state
    change. Messages need not wait: their ids derive from durable facts
    (``casecore.message_id``), so one re-made after a power cut is de-duplicated by its
    receiver; only a filing's first messages are held until the filing is on disk."""

    def __init__(
        self, path: Path, group_commit: bool = False, data_keys: DataKeys | None = None
    ) -> None:
        """``data_keys``: personal data is sealed at rest under them (the gateway always gives
        them; without, values are written in clear, and only clear ones read)."""
        self.path = path
        self.group_commit = group_commit
        self._db = open_sqlite(path, "NORMAL" if group_commit else "FULL")
        self.data_keys = data_keys
        register_sealing(self._db, data_keys)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(SCHEMA)
        _add_routing(self._db)
        self._lock = threading.RLock()
        self._committed = 0  # commits made by this store (group commit)
        self._synced = 0  # of which known to be on disk
        self._syncing: asyncio.Future[None] | None = None
        self._wal: int | None = None  # a descriptor of the WAL file, for fsync
        # The last commit made in the current task (each request and delivery is a task).
        self._own_commit: ContextVar[int] = ContextVar(f"xgw-store-{id(self)}", default=0)

    def close(self) -> None:
        with self._lock:
            self._db.close()  # the last connection's close checkpoints the WAL, with syncs
            if self._wal is not None:
                os.close(self._wal)
                self._wal = None

    @contextmanager
    def transaction(self, volatile: bool = False) -> Iterator[sqlite3.Connection]:
        """One atomic write: BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlock).
        ``volatile``: nobody need wait for this one to be on disk (losing it changes only when
        something happens), so ``durable()`` does not wait for it alone."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                rollback(self._db)
                raise
            if not volatile:
                self._committed += 1
                self._own_commit.set(self._committed)
            if not self.group_commit:
                self._synced = self._committed

    async def durable(self) -> None:
        """Return once the transactions this task (this request, this delivery) committed are
        on disk — others' commits made since need not hold it up. At once without group
        commit: each commit synced itself."""
        target = self._own_commit.get()
        while self._synced < target:
            if self._syncing is None:
                # One fsync after the callbacks already due have run (their commits ride
                # along), on the loop's own thread: a worker thread would wait for the GIL.
                self._syncing = asyncio.get_running_loop().create_future()
                asyncio.get_running_loop().call_soon(self._sync, self._syncing)
            await asyncio.shield(self._syncing)

    def _sync(self, done: asyncio.Future[None]) -> None:
        upto = self._committed
        try:
            self._fsync_wal()
        except OSError as exc:
            done.set_exception(exc)
        else:
            self._synced = max(self._synced, upto)
            done.set_result(None)
        finally:
            self._syncing = None

    def _fsync_wal(self) -> None:
        # A sync flushes the file (the inode), whichever descriptor asks: SQLite's own writes
        # made before this call are on disk when it returns. fdatasync, as SQLite itself uses
        # on Linux: the data and the size, without the modification time's extra journal
        # commit.
        if self._wal is not None and os.fstat(self._wal).st_nlink == 0:
            os.close(self._wal)  # the WAL was removed and made anew: follow the new file
            self._wal = None
        if self._wal is None:
            self._wal = os.open(f"{self.path}-wal", os.O_RDONLY)
        _sync_data(self._wal)

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, params))

    # -- tokens --------------------------------------------------------------------------------

    def create_token(self, name: str, role: str, hall: str | None) -> str:
        token = "xgw_" + secrets.token_urlsafe(32)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO tokens (name, role, hall, hash, created) VALUES (?, ?, ?, ?, ?)",
                (name, role, hall, token_hash(token), iso_now()),
            )
        return token

    def revoke_token(self, name: str) -> bool:
        with self.transaction() as db:
            return db.execute("UPDATE tokens SET revoked = 1 WHERE name = ?", (name,)).rowcount > 0

    def token(self, token: str) -> Token | None:
        rows = self.read(
            "SELECT name, role, hall FROM tokens WHERE hash = ? AND revoked = 0",
            (token_hash(token),),
        )
        return Token(rows[0]["name"], rows[0]["role"], rows[0]["hall"]) if rows else None

    def tokens(self) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self.read(
                "SELECT name, role, hall, created, revoked FROM tokens ORDER BY created"
            )
        ]

    # -- cases ---------------------------------------------------------------------------------

    def case_by_idem(self, idem_key: str) -> CaseRow | None:
        rows = self.read(_CASE_BY_IDEM, (idem_key,))
        return _case(rows[0]) if rows else None

    def case_head(self, case_id: str) -> tuple[str, tuple[int, int]] | None:
        """(hall, (version, last timeline step)): enough to tell whether a case changed."""
        rows = self.read(
            "SELECT hall, version, (SELECT COALESCE(MAX(seq), 0) FROM timeline "
            "WHERE case_id = cases.id) FROM cases WHERE id = ?",
            (case_id,),
        )
        return (rows[0][0], (rows[0][1], rows[0][2])) if rows else None

    def case(self, case_id: str) -> CaseRow | None:
        rows = self.read(_CASE_BY_ID, (case_id,))
        return _case(rows[0]) if rows else None

    def list_cases(
        self,
        where: dict[str, str],
        limit: int,
        after: tuple[str, str] | None,
        created_from: str | None = None,
        created_to: str | None = None,
    ) -> list[CaseSummary]:
        """A page of cases in (created, id) order, each read through an index and without its
        form or payloads."""
        allowed = {"status", "hall", "bundle"}
        clauses = [f"cases.{k} = ?" for k in where if k in allowed]
        params: list[Any] = [v for k, v in where.items() if k in allowed]
        # By matter (any sub-matter's, ours or the partner's), the matter index leads, in the
        # page's order: the page is full and its cursor right however the matches are spread.
        source, order = "cases", ("cases.created", "cases.id")
        if "matter" in where:
            source = "case_matter AS m JOIN cases ON cases.id = m.case_id"
            order = ("m.created", "m.case_id")
            clauses.insert(0, "m.matter = ?")
            params.insert(0, where["matter"])
        if created_from:
            clauses.append(f"{order[0]} >= ?")
            params.append(created_from)
        if created_to:
            clauses.append(f"{order[0]} < ?")
            params.append(created_to)
        if after:
            clauses.append(f"({order[0]}, {order[1]}) > (?, ?)")
            params.extend(after)
        # clauses name only columns from `allowed`; every value is a bound parameter
        sql = f"SELECT {SUMMARY_COLUMNS} FROM {source}" + (  # noqa: S608
            " WHERE " + " AND ".join(clauses) if clauses else ""
        )
        rows = self.read(sql + f" ORDER BY {order[0]}, {order[1]} LIMIT ?", (*params, limit))
        return [_summary(r) for r in rows]

    def timeline(self, case_id: str) -> list[dict[str, Any]]:
        rows = self.read(
            "SELECT seq, time, step, sub_id, detail FROM timeline WHERE case_id = ? ORDER BY seq",
            (case_id,),
        )
        return [
            {**dict(r), "detail": orjson.loads(r["detail"]) if r["detail"] else None} for r in rows
        ]

    @staticmethod
    def insert_case(db: sqlite3.Connection, case: CaseRow) -> None:
        db.execute(
            "INSERT INTO cases (id, created, updated, status, hall, clerk, token_name, bundle, title, "
            "filed_on, idem_key, request_hash, person, form, plan, states, version, routing) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, "
            "xgw_seal('cases.form', ?1, ?14), xgw_seal('cases.plan', ?1, ?15), "
            "xgw_seal('cases.states', ?1, ?16), ?17, ?18)",
            (
                case.id,
                case.created,
                case.updated,
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
                orjson.dumps(case.form),
                orjson.dumps(case.plan),  # orjson writes dataclasses natively (fast)
                orjson.dumps(case.states),
                case.version,
                _routing(case.plan),
            ),
        )
        _index_matters(db, case.id, case.created, case.plan)

    @staticmethod
    def load_case(db: sqlite3.Connection, case_id: str) -> CaseRow | None:
        db.row_factory = sqlite3.Row
        row = db.execute(_CASE_BY_ID, (case_id,)).fetchone()
        return _case(row) if row else None

    @staticmethod
    def save_states(
        db: sqlite3.Connection, case: CaseRow, states: list[SubState], status: str
    ) -> None:
        db.execute(
            "UPDATE cases SET states = xgw_seal('cases.states', ?4, ?1), status = ?2, updated = ?3, "
            "version = version + 1 WHERE id = ?4",
            (orjson.dumps(states), status, iso_now(), case.id),
        )

    @staticmethod
    def add_step(
        db: sqlite3.Connection,
        case_id: str,
        step: str,
        sub_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        now = time.time()
        db.execute(
            "INSERT INTO timeline SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5 "
            "FROM timeline WHERE case_id = ?1",
            (
                case_id,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + f".{int(now * 1000) % 1000:03d}Z",
                step,
                sub_id,
                orjson.dumps(detail) if detail else None,
            ),
        )

    # -- outbox --------------------------------------------------------------------------------

    @staticmethod
    def enqueue(
        db: sqlite3.Connection,
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
        later); ``due``: not sent before this time."""
        now = time.time()
        message = OutboxMessage(
            msg_id,
            case_id,
            sub_id,
            partner,
            domain,
            kind,
            matter,
            payload,
            envelope,
            IN_FLIGHT if lease else PENDING,
            0,
            now,
            due if due is not None else now + HOLD_SECONDS if held else now,
            lease[0] if lease else None,
            lease[1] if lease else None,
            None,
            None,
            None,
        )
        db.execute(
            "INSERT INTO outbox (msg_id, case_id, sub_id, partner, domain, kind, matter, payload, "
            "envelope, status, attempts, created, next_attempt_at, lease_owner, lease_until) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, xgw_seal('outbox.payload', ?1, ?8), ?9, ?10, ?11, "
            "?12, ?13, ?14, ?15)",
            (
                message.msg_id,
                message.case_id,
                message.sub_id,
                message.partner,
                message.domain,
                message.kind,
                message.matter,
                message.payload,
                message.envelope,
                message.status,
                message.attempts,
                message.created,
                message.next_attempt_at,
                message.lease_owner,
                message.lease_until,
            ),
        )
        return message

    @staticmethod
    def release_hold(db: sqlite3.Connection, case_id: str) -> None:
        now = time.time()
        db.execute(
            "UPDATE outbox SET next_attempt_at = ? WHERE case_id = ? AND status = ? "
            "AND attempts = 0 AND next_attempt_at > ?",
            (now, case_id, PENDING, now),
        )

    @staticmethod
    def move_messages(
        db: sqlite3.Connection,
        event: MsgEvent,
        *,
        also: str = "",
        also_params: tuple[Any, ...] = (),
        **where: str,
    ) -> int:
        """Apply ``event`` to the messages ``where`` says (columns msg_id, case_id, sub_id,
        kind, lease_owner) that are in a state the lifecycle table allows it from; ``also``: more
        columns to set, as SQL. How many moved."""
        sql, target, sources = _move_statement(event, tuple(where), also)
        params = (target, *also_params, *where.values(), *sources)
        return int(db.execute(sql, params).rowcount)

    @staticmethod
    def move_inbound_case(db: sqlite3.Connection, case_id: str, event: InboundEvent) -> bool:
        """Apply ``event`` to an inbound case if the lifecycle table allows it from its state."""
        sources = INBOUND.sources(event)
        moved = db.execute(
            "UPDATE inbound_case SET status = ?, updated = ? WHERE id = ? "  # noqa: S608
            f"AND status IN ({', '.join('?' * len(sources))})",
            (INBOUND.target(event).value, iso_now(), case_id, *sources),
        ).rowcount
        return bool(moved)

    @staticmethod
    def finish(db: sqlite3.Connection, msg_id: str) -> bool:
        """The message reached its destination: delivered, lease dropped. False if it was
        not pending or in flight (another worker finished it first)."""
        moved = Store.move_messages(
            db,
            MsgEvent.DELIVER,
            also="finished_at = strftime('%s','now'), lease_owner = NULL, lease_until = NULL",
            msg_id=msg_id,
        )
        return moved > 0

    @staticmethod
    def remember_inbound(
        db: sqlite3.Connection,
        partner: str,
        msg_id: str,
        kind: str,
        case_id: str | None,
        reply: dict[str, Any],
    ) -> None:
        """A partner's message and our answer to it, for answering a resend the same way."""
        db.execute(
            "INSERT OR IGNORE INTO inbound_message VALUES "
            "(?1, ?2, ?3, ?4, ?5, xgw_seal('inbound_message.reply', ?1 || '/' || ?2, ?6))",
            (partner, msg_id, kind, iso_now(), case_id, orjson.dumps(reply)),
        )

    def claim(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        skip_partners: Collection[str] = (),
    ) -> list[OutboxMessage]:
        """Take up to ``limit`` due messages for ``owner`` until the lease runs out, oldest due
        first, none for ``skip_partners`` (skipped in the query itself: a backlog for a partner
        that is down must not hide the messages behind it)."""
        now = time.time()
        skipped = sorted(skip_partners)
        placeholders = ", ".join("?" * len(skipped))  # only placeholders: values are bound
        with self.transaction() as db:
            claimable = MESSAGE.sources(MsgEvent.CLAIM)
            sql = (
                f"SELECT {OUTBOX_COLUMNS} FROM outbox "  # noqa: S608
                f"WHERE status IN ({', '.join('?' * len(claimable))}) AND next_attempt_at <= ? "
                "AND (lease_until IS NULL OR lease_until < ?) "
                f"AND partner NOT IN ({placeholders}) ORDER BY next_attempt_at LIMIT ?"
            )
            chosen = db.execute(sql, (*claimable, now, now, *skipped, limit)).fetchall()
            for row in chosen:
                db.execute(
                    "UPDATE outbox SET status = ?, lease_owner = ?, lease_until = ? WHERE msg_id = ?",
                    (IN_FLIGHT, owner, now + lease_seconds, row["msg_id"]),
                )
        return [
            OutboxMessage(
                **{
                    **dict(r),
                    "status": IN_FLIGHT,
                    "lease_owner": owner,
                    "lease_until": now + lease_seconds,
                }
            )
            for r in chosen
        ]

    def renew_lease(self, msg_id: str, owner: str, until: float) -> bool:
        """Extend ``owner``'s lease on an in-flight message; False if it is no longer theirs."""
        with self.transaction(volatile=True) as db:
            return (
                db.execute(
                    "UPDATE outbox SET lease_until = ? "
                    "WHERE msg_id = ? AND lease_owner = ? AND status = ?",
                    (until, msg_id, owner, IN_FLIGHT),
                ).rowcount
                == 1
            )

    def probe_write(self, node: str) -> None:
        """A small write, for readiness: raises when the store cannot take writes (a full
        disk) though it still reads."""
        with self.transaction(volatile=True) as db:
            db.execute("INSERT OR REPLACE INTO write_probe VALUES (?, ?)", (node, time.time()))

    def release(self, msg_ids: list[str], owner: str) -> None:
        """Give back leases of messages not finished (shutdown): another worker may send them."""
        with self.transaction() as db:
            for msg_id in msg_ids:
                Store.move_messages(
                    db,
                    MsgEvent.RELEASE,
                    also="lease_owner = NULL, lease_until = NULL",
                    msg_id=msg_id,
                    lease_owner=owner,
                )

    def outbox(self, status: str | None = None, limit: int = 200) -> list[OutboxMessage]:
        if status:
            rows = self.read(
                _OUTBOX_BY_STATUS,
                (status, limit),
            )
        else:
            rows = self.read(_OUTBOX_ALL, (limit,))
        return [OutboxMessage(**dict(r)) for r in rows]

    def message(self, msg_id: str) -> OutboxMessage | None:
        rows = self.read(_OUTBOX_BY_ID, (msg_id,))
        return OutboxMessage(**dict(rows[0])) if rows else None

    def counts(self) -> dict[str, int]:
        return {
            r[0]: r[1] for r in self.read("SELECT status, COUNT(*) FROM outbox GROUP BY status")
        }

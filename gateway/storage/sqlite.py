"""The embedded store: one SQLite file in the data folder, no server to run.

One connection, one writer at a time (``BEGIN IMMEDIATE`` takes the write lock up front, also
across processes sharing the file on one host). Statements run on the event loop's thread:
they take microseconds, fewer than a hand-off to a thread would. With ``group_commit`` (the
serving gateway) commits skip their own fsync, and whoever is about to acknowledge one awaits
``durable()``: one fsync of the WAL covers every commit made before it — synchronous=FULL's
guarantee for what is acknowledged, at one fsync per turn of the event loop instead of one
per state change. Messages need not wait: their ids derive from durable facts
(``gateway.core.cases.message_id``), so one re-made after a power cut is de-duplicated by its
receiver; only a filing's first messages are held until the filing is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from gateway.storage.base import (
    PROBE_WRITE,
    Row,
    Sealing,
    Store,
    Transaction,
    matter_codes,
    planned_subs,
    routing,
)
from gateway.storage.records import AlreadyThere, SchemaTooNew, StoreError, StoreUnavailable
from gateway.storage.schema import LATEST, SQLITE_MIGRATIONS
from security.atrest import DataKeys

T = TypeVar("T")
_sync_data = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


@lru_cache(maxsize=512)
def _sqlite_sql(sql: str) -> str:
    """``$n`` → ``?n`` (SQLite's numbered parameters)."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


def _translated(call: Callable[[], T]) -> T:
    """Run a driver call, raising the store's own errors."""
    try:
        return call()
    except sqlite3.IntegrityError as exc:
        raise AlreadyThere(str(exc)) from None
    except (sqlite3.OperationalError, OSError) as exc:  # a full disk, a lock held too long
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
    except sqlite3.Error as exc:
        raise StoreError(f"{type(exc).__name__}: {exc}") from None


class _Connection:
    """The shared code's view of the one SQLite connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.raw = db

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        return _translated(lambda: self.raw.execute(_sqlite_sql(sql), args).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = _translated(lambda: self.raw.execute(_sqlite_sql(sql), args).fetchone())
        return row

    async def execute(self, sql: str, *args: Any) -> int:
        return _translated(lambda: self.raw.execute(_sqlite_sql(sql), args).rowcount)

    async def executemany(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        _translated(lambda: self.raw.executemany(_sqlite_sql(sql), rows))


def open_sqlite(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """A WAL-mode connection usable from worker threads (callers serialize writes). FULL: every
    commit is on disk when it returns; NORMAL: only once the caller syncs the WAL (group commit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'NORMAL' if synchronous == 'NORMAL' else 'FULL'}")
    db.execute("PRAGMA busy_timeout=30000")
    return db


def rollback(db: sqlite3.Connection) -> None:
    """Undo the open transaction, if SQLite has not already (it rolls back by itself after a
    full disk or an I/O error): a ROLLBACK then would raise "no transaction is active" and
    hide the error that matters."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the original error is the one to report
            db.execute("ROLLBACK")


def _version(db: sqlite3.Connection) -> int:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" in tables:
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)
    return -1 if "cases" in tables else 0  # -1: a store made before schema versions


def _adopt_unversioned(db: sqlite3.Connection, sealing: Sealing) -> None:
    """A store made before schema versions is version 1 once its listings read only what they
    show: the plan without payloads (``routing``) and the matter index, added here."""
    if "routing" not in {row[1] for row in db.execute("PRAGMA table_info(cases)")}:
        db.execute("ALTER TABLE cases ADD COLUMN routing BLOB")
    db.execute(
        "CREATE TABLE IF NOT EXISTS case_matter (matter TEXT NOT NULL, created TEXT NOT NULL, "
        "case_id TEXT NOT NULL, PRIMARY KEY (matter, created, case_id)) WITHOUT ROWID"
    )
    for case_id, created, sealed in db.execute(
        "SELECT id, created, plan FROM cases WHERE routing IS NULL"
    ).fetchall():
        plan = sealing.open("cases.plan", case_id, sealed)
        assert plan is not None
        planned = planned_subs(plan)
        db.execute("UPDATE cases SET routing = ? WHERE id = ?", (routing(planned), case_id))
        db.executemany(
            "INSERT OR IGNORE INTO case_matter VALUES (?, ?, ?)",
            [(code, created, case_id) for code in matter_codes(planned)],
        )


def migrate_sqlite(db: sqlite3.Connection, sealing: Sealing) -> tuple[int, int]:
    """Bring the file's schema to this code's (``BEGIN IMMEDIATE``: one process migrates,
    the others find it done). (version before, version after)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        before = _version(db)
        if before > LATEST:
            raise SchemaTooNew(
                f"the store is at schema version {before}, newer than this gateway's {LATEST}: "
                "run the newer gateway, or restore a backup made for this one"
            )
        if before == -1:
            _adopt_unversioned(db, sealing)
        for migration in SQLITE_MIGRATIONS:
            if migration.version > before:
                for statement in migration.statements:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (migration.version,))
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise
    return max(before, 0), LATEST


class SqliteStore(Store):
    """``group_commit=False`` (the CLI): each commit is durable when it returns.
    ``group_commit=True`` (the serving gateway): see the module's note."""

    def __init__(
        self,
        path: Path,
        group_commit: bool = False,
        data_keys: DataKeys | None = None,
        migrate: bool = True,
    ) -> None:
        """``data_keys``: personal data is sealed at rest under them (the gateway always gives
        them; without, values are written in clear, and only clear ones read). ``migrate``
        False: leave the schema as it is (``xgw db status``), refusing only a newer one."""
        self.path = path
        self.group_commit = group_commit
        self.sealing = Sealing(data_keys)
        self._db = _translated(lambda: open_sqlite(path, "NORMAL" if group_commit else "FULL"))
        self._db.row_factory = sqlite3.Row
        if migrate:
            _translated(lambda: migrate_sqlite(self._db, self.sealing))
        elif (version := _version(self._db)) > LATEST:
            raise SchemaTooNew(
                f"the store is at schema version {version}, newer than this gateway's {LATEST}"
            )
        self._connection = _Connection(self._db)
        self._lock = threading.RLock()  # probe_write runs in a thread
        self._turn = asyncio.Lock()  # one transaction at a time on the one connection
        self._committed = 0  # commits made by this store (group commit)
        self._synced = 0  # of which known to be on disk
        self._syncing: asyncio.Future[None] | None = None
        self._wal: int | None = None  # a descriptor of the WAL file, for fsync
        # The last commit made in the current task (each request and delivery is a task).
        self._own_commit: ContextVar[int] = ContextVar(f"xgw-store-{id(self)}", default=0)

    @property
    def description(self) -> str:
        return f"sqlite:///{self.path}"

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        with self._lock:
            self._db.close()  # the last connection's close checkpoints the WAL, with syncs
            if self._wal is not None:
                os.close(self._wal)
                self._wal = None

    async def schema_version(self) -> int:
        with self._lock:
            return max(_version(self._db), 0)  # a store from before versions: 0

    @asynccontextmanager
    async def transaction(self, volatile: bool = False) -> AsyncIterator[Transaction]:
        async with self._turn:
            with self._lock:
                _translated(lambda: self._db.execute("BEGIN IMMEDIATE"))
                try:
                    yield Transaction(self._connection, self.sealing, self.lock_clause)
                    _translated(lambda: self._db.execute("COMMIT"))
                except BaseException:
                    rollback(self._db)
                    raise
                if not volatile:
                    self._committed += 1
                    self._own_commit.set(self._committed)
                if not self.group_commit:
                    self._synced = self._committed

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[_Connection]:
        with self._lock:
            yield self._connection

    async def durable(self) -> None:
        """At once without group commit: each commit synced itself."""
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
            done.set_exception(StoreUnavailable(f"{type(exc).__name__}: {exc}"))
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

    async def probe_write(self, node: str) -> None:
        # In a thread: a store that cannot write may also be slow to say so.
        await asyncio.to_thread(self._probe_write, node)

    def _probe_write(self, node: str) -> None:
        with self._lock:
            _translated(lambda: self._db.execute("BEGIN IMMEDIATE"))
            try:
                _translated(lambda: self._db.execute(_sqlite_sql(PROBE_WRITE), (node, time.time())))
                _translated(lambda: self._db.execute("COMMIT"))
            except BaseException:
                rollback(self._db)
                raise

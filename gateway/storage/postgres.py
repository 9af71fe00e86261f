"""The shared store: PostgreSQL, for several gateway nodes on several hosts.

asyncpg (measured against psycopg 3 in ``bench/store_drivers.py``; see docs/deployment.md):
its connections prepare and cache each statement once, and the event loop never waits on a
socket. A transaction holds one pooled connection; its commit is durable when it returns
(``synchronous_commit`` on, the default: PostgreSQL groups the WAL flushes of concurrent
commits itself), so ``durable()`` has nothing left to wait for.

Only plain PostgreSQL is used, so that the PostgreSQL-derived databases government
deployments run (KingbaseES, openGauss, 瀚高) serve too; docs/deployment.md lists each feature.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gateway.storage.base import Row, Sealing, Store, Transaction
from gateway.storage.records import (
    AlreadyThere,
    Conflict,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from gateway.storage.schema import LATEST, POSTGRES_MIGRATIONS
from security.atrest import DataKeys

# pg_advisory_xact_lock key of schema migrations ("xgw" + 1): two nodes starting at once
# migrate once, the second finds the work done.
MIGRATION_LOCK = 0x78677701

# What a lost, restarting or refusing server looks like from the driver.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, too many connections
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby
)
_CONFLICT: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)


def safe_url(url: str) -> str:
    """The URL without its password, for logs and status lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    """Driver errors as the store's own."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyThere(exc.detail or str(exc)) from None
    except _CONFLICT as exc:
        raise Conflict(str(exc)) from None
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
    except asyncpg.PostgresError as exc:
        raise StoreError(f"{type(exc).__name__}: {exc}") from None


_BEGIN_VOLATILE = "BEGIN; SET LOCAL synchronous_commit TO OFF"


def _rowcount(status: str) -> int:
    """'UPDATE 3', 'INSERT 0 1', 'DELETE 0' → the last number."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _Connection:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.raw = conn

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        async with _translated():
            rows: list[Row] = await self.raw.fetch(sql, *args)
            return rows

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with _translated():
            row: Row | None = await self.raw.fetchrow(sql, *args)
            return row

    async def execute(self, sql: str, *args: Any) -> int:
        async with _translated():
            return _rowcount(await self.raw.execute(sql, *args))

    async def executemany(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        async with _translated():
            await self.raw.executemany(sql, rows)


async def migrate_postgres(conn: asyncpg.Connection) -> tuple[int, int]:
    """Bring the database's schema to this code's, under an advisory lock. (before, after)."""
    async with _translated(), conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        before = await _version(conn)
        if before > LATEST:
            raise SchemaTooNew(
                f"the database is at schema version {before}, newer than this gateway's "
                f"{LATEST}: run the newer gateway on every node"
            )
        for migration in POSTGRES_MIGRATIONS:
            if migration.version > before:
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)", migration.version
                )
    return before, LATEST


async def _version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))


class _Pool:
    """Open connections for the store's short transactions and reads: a free list and the
    tasks waiting for one. asyncpg's own pool does more work per use (holders, timeouts,
    set-up and reset hooks) than a statement of ~100 µs can afford — a third of a read's CPU
    here (``bench/store_drivers.py``). A connection that broke, or whose use was interrupted
    mid-statement, is closed, not given to the next user; a new one replaces it on demand."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size = url, size
        self._free: list[asyncpg.Connection] = []
        self._waiting: collections.deque[asyncio.Future[asyncpg.Connection]] = collections.deque()
        self._open = 0  # connections made and not closed (free or in use)
        self._closed = False

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url, timeout=10, command_timeout=30)

    async def _take(self) -> asyncpg.Connection:
        if self._closed:
            raise asyncpg.InterfaceError("the store is closed")
        if self._free:
            return self._free.pop()
        if self._open < self.size:
            self._open += 1
            try:
                return await self._connect()
            except BaseException:
                self._open -= 1
                raise
        waiter: asyncio.Future[asyncpg.Connection] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give(waiter.result())  # handed to us as we were cancelled: pass it on
            raise

    def _give(self, conn: asyncpg.Connection) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._free.append(conn)

    def _drop(self, conn: asyncpg.Connection) -> None:
        self._open -= 1
        conn.terminate()
        while self._waiting and self._waiting[0].done():
            self._waiting.popleft()
        if self._waiting and not self._closed:  # a waiter would wait for a connection forever
            asyncio.get_running_loop().create_task(self._replace())

    async def _replace(self) -> None:
        self._open += 1
        try:
            conn = await self._connect()
        except Exception:  # the next user who finds no free connection tries again
            self._open -= 1
            return
        self._give(conn)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self._take()
        try:
            yield conn
        except BaseException as exc:
            interrupted = isinstance(exc, asyncio.CancelledError)  # perhaps mid-statement
            if interrupted or conn.is_closed() or conn.is_in_transaction() or self._closed:
                self._drop(conn)
            else:
                self._give(conn)
            raise
        if conn.is_closed() or self._closed:
            self._drop(conn)
        else:
            self._give(conn)

    async def close(self) -> None:
        self._closed = True
        for waiter in self._waiting:
            if not waiter.done():
                waiter.cancel()
        free, self._free = self._free, []
        for conn in free:
            self._open -= 1
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)


class PostgresStore(Store):
    lock_clause = " FOR UPDATE"
    skip_locked_clause = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, pool: _Pool, data_keys: DataKeys | None) -> None:
        self.url, self.pool, self.sealing = url, pool, Sealing(data_keys)

    @classmethod
    async def open(
        cls,
        url: str,
        data_keys: DataKeys | None = None,
        pool_size: int = 10,
        migrate: bool = True,
    ) -> PostgresStore:
        """Connect (``StoreUnavailable`` if the server does not answer) and, with ``migrate``,
        bring the schema up to date; without, refuse a schema that is not this code's."""
        pool = _Pool(url, pool_size)
        store = cls(url, pool, data_keys)
        try:
            async with _translated(), store.pool.acquire() as conn:
                if migrate:
                    await migrate_postgres(conn)
                else:
                    version = await _version(conn)
                    if version > LATEST:
                        raise SchemaTooNew(
                            f"the database is at schema version {version}, newer than this "
                            f"gateway's {LATEST}"
                        )
        except BaseException:
            await pool.close()
            raise
        return store

    @property
    def description(self) -> str:
        return safe_url(self.url)

    async def close(self) -> None:
        await self.pool.close()

    async def schema_version(self) -> int:
        async with _translated(), self.pool.acquire() as conn:
            return await _version(conn)

    @asynccontextmanager
    async def transaction(self, volatile: bool = False) -> AsyncIterator[Transaction]:
        """``volatile``: its commit does not wait for the WAL flush (``synchronous_commit``
        off for it alone) — a claim, a lease, a heartbeat: lost to a crash, they only make
        something happen again, as their own loss would. BEGIN and that setting go in one
        round trip."""
        async with _translated(), self.pool.acquire() as conn:
            await conn.execute(_BEGIN_VOLATILE if volatile else "BEGIN")
            try:
                yield Transaction(_Connection(conn), self.sealing, self.lock_clause)
            except BaseException:
                with contextlib.suppress(Exception):  # a lost connection rolled back itself
                    await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[_Connection]:
        async with _translated(), self.pool.acquire() as conn:
            yield _Connection(conn)

    async def durable(self) -> None:
        return None  # each commit was durable when it returned

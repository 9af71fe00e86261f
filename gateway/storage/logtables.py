"""The exchange log's tables: entries (one hash chain per node), checkpoints, archive links.

The log's interface is synchronous: its callers run it in threads (the group-commit writer,
the auditors' queries) or in the CLI (verification over millions of entries). Its statements
are written once here, ``$n``-style, over a ``LogConnection`` of either database:
- SQLite: the node's own file (``data_dir/audit.sqlite3``), ``BEGIN IMMEDIATE`` serializing
  appends across processes;
- PostgreSQL: the store's database, every node's chain in one table; asyncpg runs on an
  event loop of the log's own thread (one driver for the whole gateway), and a node's appends
  are serialized by an advisory lock named after the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gateway.storage.base import Row, placeholders
from gateway.storage.logschema import CHECKPOINT_COLUMNS_2, COLUMNS, SQLITE_LOG_SCHEMA
from gateway.storage.records import StoreError

T = TypeVar("T")
CHECKPOINT_COLUMNS = (
    "node, from_seq, to_seq, head, root, time, prev, key_id, signature, "
    + ", ".join(name for name, _ in CHECKPOINT_COLUMNS_2)
)
WITNESS_COLUMNS = "node, to_seq, checkpoint, witness, time, key_id, signature"
_ENTRY_COLUMNS = f"node, seq, {', '.join(COLUMNS)}, body, hash"


class LogConnection(Protocol):
    """A synchronous connection, ``$n`` parameters."""

    def fetch(self, sql: str, *args: Any) -> Sequence[Row]: ...

    def fetch_tuples(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows as plain tuples: for the verifier's long reads (no per-row mapping)."""
        ...

    def execute(self, sql: str, *args: Any) -> int: ...

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...

    def transaction(self, node: str) -> contextlib.AbstractContextManager[None]:
        """One atomic change; ``node``'s chain is written by one writer at a time inside."""
        ...

    def close(self) -> None: ...


class SqliteLogConnection:
    def __init__(self, path: Path) -> None:
        from gateway.storage.sqlite import _sqlite_sql, _translated, open_sqlite, rollback

        self._sql, self._translated, self._rollback = _sqlite_sql, _translated, rollback
        self.path = path
        self._db = _translated(lambda: open_sqlite(path))
        for statement in SQLITE_LOG_SCHEMA:
            self._db.execute(statement)
        # a log file written before XGW-AUDIT/2: its checkpoints get the columns /2 adds
        present = {row[1] for row in self._db.execute("PRAGMA table_info(audit_checkpoint)")}
        for name, kind in CHECKPOINT_COLUMNS_2:
            if name not in present:
                self._db.execute(f"ALTER TABLE audit_checkpoint ADD COLUMN {name} {kind}")
        self._lock = threading.RLock()  # the connection is shared by the writer's threads

    def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        import sqlite3

        with self._lock:
            self._db.row_factory = sqlite3.Row
            return self._translated(lambda: self._db.execute(self._sql(sql), args).fetchall())

    def fetch_tuples(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            self._db.row_factory = None
            return self._translated(lambda: self._db.execute(self._sql(sql), args).fetchall())

    def execute(self, sql: str, *args: Any) -> int:
        with self._lock:
            return self._translated(lambda: self._db.execute(self._sql(sql), args).rowcount)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._translated(lambda: self._db.executemany(self._sql(sql), rows))

    @contextmanager
    def transaction(self, node: str) -> Iterator[None]:
        with self._lock:
            self._translated(lambda: self._db.execute("BEGIN IMMEDIATE"))
            try:
                yield
                self._translated(lambda: self._db.execute("COMMIT"))
            except BaseException:
                self._rollback(self._db)
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()


def node_lock_key(node: str) -> int:
    """A node's advisory-lock key: 63 bits of a hash of its name (any PostgreSQL has the
    bigint form of ``pg_advisory_xact_lock``)."""
    return int.from_bytes(hashlib.sha256(b"xgw-log:" + node.encode()).digest()[:8], "big") >> 1


class PostgresLogConnection:
    """asyncpg on an event loop of this object's own thread, behind synchronous methods (which
    may be called from any other thread)."""

    def __init__(self, url: str) -> None:
        import asyncpg

        self._asyncpg = asyncpg
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="xgw-log-db", daemon=True
        )
        self._thread.start()
        self._lock = threading.RLock()  # one statement at a time on the one connection
        self.url = url
        self._conn: Any = None
        try:
            with self._lock:
                self._connected()
        except BaseException:
            self._stop_loop()
            raise

    def _connected(self) -> Any:
        """The connection, made again if the last one was lost (a database restart)."""
        if self._conn is None or self._conn.is_closed():
            from gateway.storage.postgres import migrate_postgres

            async def connect() -> Any:
                conn = await self._asyncpg.connect(self.url, timeout=10, command_timeout=60)
                await migrate_postgres(conn)
                return conn

            self._conn = None
            self._conn = self._run(connect())
        return self._conn

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        from gateway.storage.postgres import _translated

        async def translated() -> T:
            async with _translated():
                return await work

        return asyncio.run_coroutine_threadsafe(translated(), self._loop).result()

    def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        with self._lock:
            rows: Sequence[Row] = self._run(self._connected().fetch(sql, *args))
            return rows

    def fetch_tuples(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.fetch(sql, *args)]

    def execute(self, sql: str, *args: Any) -> int:
        from gateway.storage.postgres import _rowcount

        with self._lock:
            return _rowcount(self._run(self._connected().execute(sql, *args)))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._run(self._connected().executemany(sql, rows))

    @contextmanager
    def transaction(self, node: str) -> Iterator[None]:
        with self._lock:
            self.execute("BEGIN")
            try:
                self.execute("SELECT pg_advisory_xact_lock($1)", node_lock_key(node))
                yield
                self.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(StoreError):
                    self.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._run(self._conn.close(timeout=5))
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


class LogTables:
    """Every statement of the exchange log, over either database's connection."""

    def __init__(self, db: LogConnection) -> None:
        self.db = db

    def close(self) -> None:
        self.db.close()

    @property
    def address(self) -> tuple[str, str]:
        """Where the tables are, as another process opens them (``reopen_log_tables``)."""
        if isinstance(self.db, PostgresLogConnection):
            return ("postgresql", self.db.url)
        if isinstance(self.db, SqliteLogConnection):
            return ("sqlite", str(self.db.path))
        raise TypeError(f"{type(self.db).__name__} cannot be opened by another process")

    def transaction(self, node: str) -> contextlib.AbstractContextManager[None]:
        return self.db.transaction(node)

    # -- a node's chain --------------------------------------------------------------------

    def head(self, node: str) -> tuple[int, str] | None:
        """(seq, hash) of the node's last entry still in the table, if any."""
        rows = self.db.fetch(
            "SELECT seq, hash FROM audit_entry WHERE node = $1 ORDER BY seq DESC LIMIT 1", node
        )
        return (int(rows[0]["seq"]), str(rows[0]["hash"])) if rows else None

    def last_archive(self, node: str) -> tuple[int, str] | None:
        """(to_seq, head hash) of the node's last archive, if any."""
        rows = self.db.fetch(
            "SELECT to_seq, head FROM audit_archive WHERE node = $1 ORDER BY to_seq DESC LIMIT 1",
            node,
        )
        return (int(rows[0]["to_seq"]), str(rows[0]["head"])) if rows else None

    def insert_entries(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows of (node, seq, *COLUMNS, body, hash)."""
        self.db.executemany(
            f"INSERT INTO audit_entry ({_ENTRY_COLUMNS}) "  # noqa: S608 - constant columns
            f"VALUES ({placeholders(1, len(COLUMNS) + 4)})",
            rows,
        )

    def last_checkpoint(self, node: str) -> tuple[Any, ...] | None:
        rows = self.db.fetch(
            f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoint WHERE node = $1 "  # noqa: S608
            "ORDER BY to_seq DESC LIMIT 1",
            node,
        )
        return tuple(rows[0]) if rows else None

    def hashes_after(self, node: str, start: int, limit: int | None) -> list[str]:
        if limit is None:
            rows = self.db.fetch(
                "SELECT hash FROM audit_entry WHERE node = $1 AND seq > $2 ORDER BY seq",
                node,
                start,
            )
        else:
            rows = self.db.fetch(
                "SELECT hash FROM audit_entry WHERE node = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                node,
                start,
                limit,
            )
        return [str(r["hash"]) for r in rows]

    def insert_checkpoint(self, values: tuple[Any, ...]) -> None:
        """``values`` in CHECKPOINT_COLUMNS' order."""
        self.db.execute(
            f"INSERT INTO audit_checkpoint ({CHECKPOINT_COLUMNS}) VALUES ({placeholders(1, 13)})",  # noqa: S608
            *values,
        )

    def entry_time(self, node: str, seq: int) -> str | None:
        rows = self.db.fetch("SELECT time FROM audit_entry WHERE node = $1 AND seq = $2", node, seq)
        return str(rows[0]["time"]) if rows else None

    def checkpoint_at(self, node: str, to_seq: int) -> tuple[Any, ...] | None:
        rows = self.db.fetch(
            f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoint "  # noqa: S608
            "WHERE node = $1 AND to_seq = $2",
            node,
            to_seq,
        )
        return tuple(rows[0]) if rows else None

    def first_checkpoint_from(self, node: str, seq: int) -> tuple[Any, ...] | None:
        """The node's first checkpoint ending at or after ``seq``, as stored (any from_seq:
        the caller checks it holds ``seq``; SQLite orders a to_seq changed into text last)."""
        rows = self.db.fetch(
            f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoint "  # noqa: S608
            "WHERE node = $1 AND to_seq >= $2 ORDER BY to_seq LIMIT 1",
            node,
            seq,
        )
        return tuple(rows[0]) if rows else None

    def partners_between(self, node: str, from_seq: int, to_seq: int) -> list[str]:
        """The partners the node's entries ``(from_seq, to_seq]`` concern."""
        rows = self.db.fetch(
            "SELECT DISTINCT partner FROM audit_entry WHERE node = $1 AND seq > $2 "
            "AND seq <= $3 AND partner IS NOT NULL ORDER BY partner",
            node,
            from_seq,
            to_seq,
        )
        return [str(r["partner"]) for r in rows]

    # -- per-case links --------------------------------------------------------------------

    def case_heads(self, node: str, case_ids: list[str]) -> dict[str, str]:
        """The hash of each case's last entry on the node (a case with none is absent)."""
        if not case_ids:
            return {}
        rows = self.db.fetch(
            "SELECT case_id, hash FROM audit_case_head WHERE node = $1 "  # noqa: S608 - placeholders only
            f"AND case_id IN ({placeholders(2, len(case_ids))})",
            node,
            *case_ids,
        )
        return {str(r["case_id"]): str(r["hash"]) for r in rows}

    def set_case_heads(self, rows: list[tuple[str, str, int, str]]) -> None:
        """(node, case_id, seq, hash) of each case's new last entry."""
        self.db.executemany(
            "INSERT INTO audit_case_head (node, case_id, seq, hash) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (node, case_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            rows,
        )

    # -- witnesses -------------------------------------------------------------------------

    def insert_witness(self, values: tuple[Any, ...]) -> bool:
        """A countersignature of one of our checkpoints, in WITNESS_COLUMNS' order (False: that
        witness's was kept already)."""
        return (
            self.db.execute(
                f"INSERT INTO audit_witness ({WITNESS_COLUMNS}) VALUES ({placeholders(1, 7)}) "  # noqa: S608
                "ON CONFLICT DO NOTHING",
                *values,
            )
            > 0
        )

    def witnesses(self, node: str) -> list[tuple[Any, ...]]:
        rows = self.db.fetch(
            f"SELECT {WITNESS_COLUMNS} FROM audit_witness WHERE node = $1 "  # noqa: S608
            "ORDER BY to_seq, witness",
            node,
        )
        return [tuple(r) for r in rows]

    def witnesses_at(self, node: str, to_seq: int) -> list[tuple[Any, ...]]:
        rows = self.db.fetch(
            f"SELECT {WITNESS_COLUMNS} FROM audit_witness WHERE node = $1 "  # noqa: S608
            "AND to_seq = $2 ORDER BY witness",
            node,
            to_seq,
        )
        return [tuple(r) for r in rows]

    def witnessed(self, partner: str, node: str) -> list[tuple[Any, ...]]:
        """(node, from_seq, to_seq, checkpoint hash, prev) of a partner node's checkpoints we
        countersigned, as stored."""
        return self.db.fetch_tuples(
            "SELECT node, from_seq, to_seq, checkpoint, prev FROM audit_witnessed "
            "WHERE partner = $1 AND node = $2 ORDER BY to_seq",
            partner,
            node,
        )

    def insert_witnessed(self, values: tuple[Any, ...]) -> None:
        """(partner, node, to_seq, from_seq, checkpoint, prev, time)."""
        self.db.execute(
            "INSERT INTO audit_witnessed (partner, node, to_seq, from_seq, checkpoint, prev, "
            "time) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            *values,
        )

    def checkpoints(self, node: str) -> list[tuple[Any, ...]]:
        rows = self.db.fetch(
            f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoint WHERE node = $1 "  # noqa: S608
            "ORDER BY to_seq",
            node,
        )
        return [tuple(r) for r in rows]

    def archives(self, node: str) -> list[tuple[Any, ...]]:
        """(from_seq, to_seq, file, digest, head) of the node's archive files, as stored."""
        return self.db.fetch_tuples(
            "SELECT from_seq, to_seq, file, digest, head FROM audit_archive WHERE node = $1 "
            "ORDER BY to_seq",
            node,
        )

    def archived(
        self, node: str, to_seq: int, from_seq: int, file: str, digest: str, head: str, at: str
    ) -> None:
        """An archive file holds the node's entries up to ``to_seq``: link it, drop them."""
        with self.db.transaction(node):
            self.db.execute(
                "INSERT INTO audit_archive (node, to_seq, from_seq, file, digest, head, created) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                node,
                to_seq,
                from_seq,
                file,
                digest,
                head,
                at,
            )
            self.db.execute("DELETE FROM audit_entry WHERE node = $1 AND seq <= $2", node, to_seq)

    def last_seq_before(self, node: str, before: str, upto: int) -> int:
        rows = self.db.fetch(
            "SELECT MAX(seq) AS n FROM audit_entry WHERE node = $1 AND time < $2 AND seq <= $3",
            node,
            before,
            upto,
        )
        return int(rows[0]["n"] or 0)

    # -- reading ---------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        rows = self.db.fetch(
            "SELECT DISTINCT node FROM audit_entry UNION SELECT DISTINCT node FROM audit_archive"
        )
        return [str(r["node"]) for r in rows]

    def rows(
        self, node: str, from_seq: int = 0, to_seq: int | None = None, batch: int = 4096
    ) -> Iterator[tuple[Any, ...]]:
        """(seq, body, hash, *COLUMNS) of the node's entries after ``from_seq`` (up to
        ``to_seq`` included, if given), in order, a batch at a time (keyset: no cursor held
        between batches)."""
        after = from_seq
        last = to_seq if to_seq is not None else 2**31 - 1  # no end: the seq column's range
        while True:
            found = self.db.fetch_tuples(
                f"SELECT seq, body, hash, {', '.join(COLUMNS)} FROM audit_entry "  # noqa: S608
                "WHERE node = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
                node,
                after,
                last,
                batch,
            )
            yield from found  # as stored: a body tampered into text stays text
            if len(found) < batch:
                return
            after = int(found[-1][0])

    def count(self, node: str) -> int:
        rows = self.db.fetch("SELECT COUNT(*) AS n FROM audit_entry WHERE node = $1", node)
        return int(rows[0]["n"])

    def entry(self, node: str, seq: int) -> tuple[bytes, str] | None:
        """(body, hash) of one entry, as stored."""
        rows = self.db.fetch(
            "SELECT body, hash FROM audit_entry WHERE node = $1 AND seq = $2", node, seq
        )
        return (_stored_bytes(rows[0]["body"]), str(rows[0]["hash"])) if rows else None

    def case_rows(self, node: str, case_id: str) -> list[tuple[int, bytes, str]]:
        rows = self.db.fetch(
            "SELECT seq, body, hash FROM audit_entry WHERE node = $1 AND case_id = $2 ORDER BY seq",
            node,
            case_id,
        )
        return [(int(r["seq"]), _stored_bytes(r["body"]), str(r["hash"])) for r in rows]

    def query(
        self,
        filters: dict[str, str],
        limit: int,
        after: tuple[str, str, int] | None,
        time_from: str | None,
        time_to: str | None,
    ) -> list[tuple[Any, ...]]:
        """(body, hash, node, seq, *COLUMNS) of entries matching column filters, in (time,
        node, seq) order."""
        clauses: list[str] = []
        params: list[Any] = []

        def bind(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        for column, value in filters.items():
            if column not in COLUMNS:
                raise ValueError(f"cannot filter on {column}")
            clauses.append(f"{column} = {bind(value)}")
        if time_from:
            clauses.append(f"time >= {bind(time_from)}")
        if time_to:
            clauses.append(f"time < {bind(time_to)}")
        if after is not None:
            clauses.append(
                f"(time, node, seq) > ({bind(after[0])}, {bind(after[1])}, {bind(after[2])})"
            )
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        # `where` holds only column names checked against COLUMNS and placeholders
        found = self.db.fetch_tuples(
            f"SELECT body, hash, node, seq, {', '.join(COLUMNS)} FROM audit_entry "  # noqa: S608
            f"{where} ORDER BY time, node, seq LIMIT {bind(limit)}",
            *params,
        )
        return [(_stored_bytes(row[0]), *row[1:]) for row in found]


def _stored_bytes(value: Any) -> bytes:
    """A body as bytes, whatever type the store hands back (a BLOB, PostgreSQL's memoryview,
    or text a tampered row was changed into: SQLite keeps the type written)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def open_log_tables(url: str, sqlite_file: Path) -> LogTables:
    """The exchange log's tables: in PostgreSQL's database when ``url`` is one, else in the
    node's own SQLite file."""
    if url.startswith(("postgresql://", "postgres://")):
        return LogTables(PostgresLogConnection(url))
    return LogTables(SqliteLogConnection(sqlite_file))


def reopen_log_tables(address: tuple[str, str]) -> LogTables:
    """The tables at ``LogTables.address``, from another process (a verifier's worker)."""
    kind, where = address
    if kind == "postgresql":
        return LogTables(PostgresLogConnection(where))
    return LogTables(SqliteLogConnection(Path(where)))

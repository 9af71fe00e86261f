"""The store's schema, as numbered migrations for each database.

A migration only adds (tables, columns, indexes) so that a node of the previous version keeps
working beside one of this version during a rolling upgrade; a node refuses a database whose
version is newer than its own (``SchemaTooNew``). Versions are the same numbers in both
databases. Times: cases, timelines and inbound records keep ISO 8601 UTC text (what the
windows API shows and its cursors compare, sortable as text); the outbox keeps seconds since
the epoch (what the delivery loop computes with).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.storage.logschema import POSTGRES_LOG_SCHEMA


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "cases, timeline, outbox, inbound records, tokens",
        (
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)",
            """CREATE TABLE IF NOT EXISTS cases (
                id TEXT PRIMARY KEY, created TEXT NOT NULL, updated TEXT NOT NULL,
                status TEXT NOT NULL, hall TEXT NOT NULL, clerk TEXT, token_name TEXT NOT NULL,
                bundle TEXT NOT NULL, title TEXT NOT NULL, filed_on TEXT NOT NULL,
                idem_key TEXT NOT NULL UNIQUE, request_hash TEXT NOT NULL, person TEXT,
                form BLOB NOT NULL, plan BLOB NOT NULL, states BLOB NOT NULL,
                version INTEGER NOT NULL DEFAULT 1, routing BLOB)""",
            "CREATE INDEX IF NOT EXISTS cases_by_hall ON cases (hall, created)",
            "CREATE INDEX IF NOT EXISTS cases_by_status ON cases (status, created)",
            "CREATE INDEX IF NOT EXISTS cases_by_created ON cases (created, id)",
            "CREATE INDEX IF NOT EXISTS cases_by_bundle ON cases (bundle, created)",
            """CREATE TABLE IF NOT EXISTS case_matter (
                matter TEXT NOT NULL, created TEXT NOT NULL, case_id TEXT NOT NULL,
                PRIMARY KEY (matter, created, case_id)) WITHOUT ROWID""",
            """CREATE TABLE IF NOT EXISTS timeline (
                case_id TEXT NOT NULL, seq INTEGER NOT NULL, time TEXT NOT NULL,
                step TEXT NOT NULL, sub_id TEXT, detail BLOB,
                PRIMARY KEY (case_id, seq)) WITHOUT ROWID""",
            """CREATE TABLE IF NOT EXISTS outbox (
                msg_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, sub_id TEXT NOT NULL,
                partner TEXT NOT NULL, domain TEXT NOT NULL, kind TEXT NOT NULL,
                matter TEXT NOT NULL, payload BLOB NOT NULL, envelope BLOB NOT NULL,
                status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
                next_attempt_at REAL NOT NULL, lease_owner TEXT, lease_until REAL,
                last_error_code TEXT, last_error TEXT, finished_at REAL)""",
            "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at)",
            "CREATE INDEX IF NOT EXISTS outbox_by_case ON outbox (case_id, sub_id)",
            """CREATE TABLE IF NOT EXISTS inbound_message (
                partner TEXT NOT NULL, msg_id TEXT NOT NULL, kind TEXT NOT NULL,
                received TEXT NOT NULL, case_id TEXT, reply BLOB NOT NULL,
                PRIMARY KEY (partner, msg_id)) WITHOUT ROWID""",
            """CREATE TABLE IF NOT EXISTS inbound_case (
                id TEXT PRIMARY KEY, partner TEXT NOT NULL, partner_ref TEXT NOT NULL,
                partner_matter TEXT NOT NULL, local_matter TEXT NOT NULL, domain TEXT NOT NULL,
                created TEXT NOT NULL, updated TEXT NOT NULL, status TEXT NOT NULL,
                form BLOB NOT NULL, result BLOB, UNIQUE (partner, partner_ref))""",
            """CREATE TABLE IF NOT EXISTS tokens (
                name TEXT PRIMARY KEY, role TEXT NOT NULL, hall TEXT, hash TEXT NOT NULL UNIQUE,
                created TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)""",
            "CREATE TABLE IF NOT EXISTS write_probe (node TEXT PRIMARY KEY, at REAL NOT NULL)",
        ),
    ),
)

SQLITE_MIGRATIONS += (
    Migration(
        2,
        "node heartbeats: a node that stopped beating loses its leases at once",
        (
            """CREATE TABLE IF NOT EXISTS node_heartbeat (
                owner TEXT PRIMARY KEY, node TEXT NOT NULL, started REAL NOT NULL,
                seen REAL NOT NULL)""",
        ),
    ),
)

# The same tables in plain PostgreSQL (see docs/deployment.md for the features relied on).
POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "cases, timeline, outbox, inbound records, tokens",
        (
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)",
            """CREATE TABLE IF NOT EXISTS cases (
                id TEXT PRIMARY KEY, created TEXT NOT NULL, updated TEXT NOT NULL,
                status TEXT NOT NULL, hall TEXT NOT NULL, clerk TEXT, token_name TEXT NOT NULL,
                bundle TEXT NOT NULL, title TEXT NOT NULL, filed_on TEXT NOT NULL,
                idem_key TEXT NOT NULL UNIQUE, request_hash TEXT NOT NULL, person TEXT,
                form BYTEA NOT NULL, plan BYTEA NOT NULL, states BYTEA NOT NULL,
                version INTEGER NOT NULL DEFAULT 1, routing BYTEA)""",
            "CREATE INDEX IF NOT EXISTS cases_by_hall ON cases (hall, created)",
            "CREATE INDEX IF NOT EXISTS cases_by_status ON cases (status, created)",
            "CREATE INDEX IF NOT EXISTS cases_by_created ON cases (created, id)",
            "CREATE INDEX IF NOT EXISTS cases_by_bundle ON cases (bundle, created)",
            """CREATE TABLE IF NOT EXISTS case_matter (
                matter TEXT NOT NULL, created TEXT NOT NULL, case_id TEXT NOT NULL,
                PRIMARY KEY (matter, created, case_id))""",
            """CREATE TABLE IF NOT EXISTS timeline (
                case_id TEXT NOT NULL, seq INTEGER NOT NULL, time TEXT NOT NULL,
                step TEXT NOT NULL, sub_id TEXT, detail BYTEA, PRIMARY KEY (case_id, seq))""",
            """CREATE TABLE IF NOT EXISTS outbox (
                msg_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, sub_id TEXT NOT NULL,
                partner TEXT NOT NULL, domain TEXT NOT NULL, kind TEXT NOT NULL,
                matter TEXT NOT NULL, payload BYTEA NOT NULL, envelope BYTEA NOT NULL,
                status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                created DOUBLE PRECISION NOT NULL, next_attempt_at DOUBLE PRECISION NOT NULL,
                lease_owner TEXT, lease_until DOUBLE PRECISION, last_error_code TEXT,
                last_error TEXT, finished_at DOUBLE PRECISION)""",
            "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at)",
            "CREATE INDEX IF NOT EXISTS outbox_by_case ON outbox (case_id, sub_id)",
            """CREATE TABLE IF NOT EXISTS inbound_message (
                partner TEXT NOT NULL, msg_id TEXT NOT NULL, kind TEXT NOT NULL,
                received TEXT NOT NULL, case_id TEXT, reply BYTEA NOT NULL,
                PRIMARY KEY (partner, msg_id))""",
            """CREATE TABLE IF NOT EXISTS inbound_case (
                id TEXT PRIMARY KEY, partner TEXT NOT NULL, partner_ref TEXT NOT NULL,
                partner_matter TEXT NOT NULL, local_matter TEXT NOT NULL, domain TEXT NOT NULL,
                created TEXT NOT NULL, updated TEXT NOT NULL, status TEXT NOT NULL,
                form BYTEA NOT NULL, result BYTEA, UNIQUE (partner, partner_ref))""",
            """CREATE TABLE IF NOT EXISTS tokens (
                name TEXT PRIMARY KEY, role TEXT NOT NULL, hall TEXT, hash TEXT NOT NULL UNIQUE,
                created TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)""",
            """CREATE TABLE IF NOT EXISTS write_probe (
                node TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL)""",
        ),
    ),
)

POSTGRES_MIGRATIONS += (
    Migration(
        2,
        "node heartbeats: a node that stopped beating loses its leases at once",
        (
            """CREATE TABLE IF NOT EXISTS node_heartbeat (
                owner TEXT PRIMARY KEY, node TEXT NOT NULL, started DOUBLE PRECISION NOT NULL,
                seen DOUBLE PRECISION NOT NULL)""",
        ),
    ),
)

# The exchange log's tables: in PostgreSQL's database, beside the rest; the embedded gateway
# keeps them in each node's own file (data_dir/audit.sqlite3, gateway.storage.logtables).
SQLITE_MIGRATIONS += (Migration(3, "the exchange log: in its own file (nothing here)", ()),)
POSTGRES_MIGRATIONS += (
    Migration(3, "the exchange log: entries, checkpoints, archives", POSTGRES_LOG_SCHEMA),
)

# Operational records, one per exchange with a partner (in the spirit of X-Road's operational
# monitoring): when the request came in or went out, when the answer did, sizes, outcome.
_RECORD_COLUMNS = """node TEXT NOT NULL, direction TEXT NOT NULL, partner TEXT,
    protocol TEXT, operation TEXT, matter TEXT, message_id TEXT, time TEXT NOT NULL,
    request_at TEXT, response_at TEXT, request_bytes INTEGER, response_bytes INTEGER,
    outcome TEXT NOT NULL"""
SQLITE_MIGRATIONS += (
    Migration(
        4,
        "operational records of each exchange",
        (
            "CREATE TABLE IF NOT EXISTS exchange_record "
            f"(id INTEGER PRIMARY KEY AUTOINCREMENT, {_RECORD_COLUMNS})",
            "CREATE INDEX IF NOT EXISTS exchange_record_by_time ON exchange_record (time, id)",
        ),
    ),
)
POSTGRES_MIGRATIONS += (
    Migration(
        4,
        "operational records of each exchange",
        (
            f"CREATE TABLE IF NOT EXISTS exchange_record (id BIGSERIAL PRIMARY KEY, {_RECORD_COLUMNS})",
            "CREATE INDEX IF NOT EXISTS exchange_record_by_time ON exchange_record (time, id)",
        ),
    ),
)

LATEST = SQLITE_MIGRATIONS[-1].version
assert POSTGRES_MIGRATIONS[-1].version == LATEST, "both databases at one schema version"

"""The store's schema, as numbered migrations for each database.

A migration only adds (tables, columns, indexes) so that a node of the previous version keeps
working beside one of this version during a rolling upgrade; a node refuses a database whose
version is newer than its own (``SchemaTooNew``). Versions are the same numbers in both
databases. Times: the store's interface speaks of every time as seconds since the epoch
(``gateway.storage.records``); the columns of cases, timelines, inbound records, tokens and
exchange records keep it as ISO 8601 UTC text and the outbox's and heartbeats' as numbers, and
the store converts at its edge. Moving the text columns to numbers would be an expand/contract
pair of migrations across two releases (old nodes read them during a rolling upgrade): not worth
it while conversion costs a microsecond a row.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.storage.logschema import POSTGRES_LOG_SCHEMA, POSTGRES_LOG_SCHEMA_2


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


@dataclass(frozen=True)
class Dialect:
    """What the two databases spell differently; everything else is written once below."""

    blob: str
    real: str
    without_rowid: str  # SQLite's clustered tables; nothing in PostgreSQL
    serial_id: str  # an id column numbered by the database
    log_schema: tuple[str, ...]  # the exchange log's tables here (SQLite: in their own file)
    log_schema_2: tuple[str, ...]  # what XGW-AUDIT/2 adds to them


SQLITE = Dialect("BLOB", "REAL", " WITHOUT ROWID", "INTEGER PRIMARY KEY AUTOINCREMENT", (), ())
POSTGRES = Dialect(
    "BYTEA",
    "DOUBLE PRECISION",
    "",
    "BIGSERIAL PRIMARY KEY",
    POSTGRES_LOG_SCHEMA,
    POSTGRES_LOG_SCHEMA_2,
)


def migrations(d: Dialect) -> tuple[Migration, ...]:
    """Every migration, in one database's spelling (see docs/deployment.md for the
    PostgreSQL features relied on)."""
    return (
        Migration(
            1,
            "cases, timeline, outbox, inbound records, tokens",
            (
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)",
                f"""CREATE TABLE IF NOT EXISTS cases (
                    id TEXT PRIMARY KEY, created TEXT NOT NULL, updated TEXT NOT NULL,
                    status TEXT NOT NULL, hall TEXT NOT NULL, clerk TEXT,
                    token_name TEXT NOT NULL, bundle TEXT NOT NULL, title TEXT NOT NULL,
                    filed_on TEXT NOT NULL, idem_key TEXT NOT NULL UNIQUE,
                    request_hash TEXT NOT NULL, person TEXT, form {d.blob} NOT NULL,
                    plan {d.blob} NOT NULL, states {d.blob} NOT NULL,
                    version INTEGER NOT NULL DEFAULT 1, routing {d.blob})""",
                "CREATE INDEX IF NOT EXISTS cases_by_hall ON cases (hall, created)",
                "CREATE INDEX IF NOT EXISTS cases_by_status ON cases (status, created)",
                "CREATE INDEX IF NOT EXISTS cases_by_created ON cases (created, id)",
                "CREATE INDEX IF NOT EXISTS cases_by_bundle ON cases (bundle, created)",
                f"""CREATE TABLE IF NOT EXISTS case_matter (
                    matter TEXT NOT NULL, created TEXT NOT NULL, case_id TEXT NOT NULL,
                    PRIMARY KEY (matter, created, case_id)){d.without_rowid}""",
                f"""CREATE TABLE IF NOT EXISTS timeline (
                    case_id TEXT NOT NULL, seq INTEGER NOT NULL, time TEXT NOT NULL,
                    step TEXT NOT NULL, sub_id TEXT, detail {d.blob},
                    PRIMARY KEY (case_id, seq)){d.without_rowid}""",
                f"""CREATE TABLE IF NOT EXISTS outbox (
                    msg_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, sub_id TEXT NOT NULL,
                    partner TEXT NOT NULL, domain TEXT NOT NULL, kind TEXT NOT NULL,
                    matter TEXT NOT NULL, payload {d.blob} NOT NULL,
                    envelope {d.blob} NOT NULL, status TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0, created {d.real} NOT NULL,
                    next_attempt_at {d.real} NOT NULL, lease_owner TEXT,
                    lease_until {d.real}, last_error_code TEXT, last_error TEXT,
                    finished_at {d.real})""",
                "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at)",
                "CREATE INDEX IF NOT EXISTS outbox_by_case ON outbox (case_id, sub_id)",
                f"""CREATE TABLE IF NOT EXISTS inbound_message (
                    partner TEXT NOT NULL, msg_id TEXT NOT NULL, kind TEXT NOT NULL,
                    received TEXT NOT NULL, case_id TEXT, reply {d.blob} NOT NULL,
                    PRIMARY KEY (partner, msg_id)){d.without_rowid}""",
                f"""CREATE TABLE IF NOT EXISTS inbound_case (
                    id TEXT PRIMARY KEY, partner TEXT NOT NULL, partner_ref TEXT NOT NULL,
                    partner_matter TEXT NOT NULL, local_matter TEXT NOT NULL,
                    domain TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL,
                    status TEXT NOT NULL, form {d.blob} NOT NULL, result {d.blob},
                    UNIQUE (partner, partner_ref))""",
                """CREATE TABLE IF NOT EXISTS tokens (
                    name TEXT PRIMARY KEY, role TEXT NOT NULL, hall TEXT,
                    hash TEXT NOT NULL UNIQUE, created TEXT NOT NULL,
                    revoked INTEGER NOT NULL DEFAULT 0)""",
                f"""CREATE TABLE IF NOT EXISTS write_probe (
                    node TEXT PRIMARY KEY, at {d.real} NOT NULL)""",
            ),
        ),
        Migration(
            2,
            "node heartbeats: a node that stopped beating loses its leases at once",
            (
                f"""CREATE TABLE IF NOT EXISTS node_heartbeat (
                    owner TEXT PRIMARY KEY, node TEXT NOT NULL, started {d.real} NOT NULL,
                    seen {d.real} NOT NULL)""",
            ),
        ),
        # The exchange log's tables: in PostgreSQL's database, beside the rest; the embedded
        # gateway keeps them in each node's own file (gateway.storage.logtables).
        Migration(3, "the exchange log: entries, checkpoints, archives", d.log_schema),
        # Operational records, one per exchange with a partner (in the spirit of X-Road's
        # operational monitoring): when the request and the answer passed, sizes, outcome.
        Migration(
            4,
            "operational records of each exchange",
            (
                f"""CREATE TABLE IF NOT EXISTS exchange_record (
                    id {d.serial_id}, node TEXT NOT NULL, direction TEXT NOT NULL,
                    partner TEXT, protocol TEXT, operation TEXT, matter TEXT,
                    message_id TEXT, time TEXT NOT NULL, request_at TEXT, response_at TEXT,
                    request_bytes INTEGER, response_bytes INTEGER, outcome TEXT NOT NULL)""",
                "CREATE INDEX IF NOT EXISTS exchange_record_by_time ON exchange_record (time, id)",
            ),
        ),
        Migration(
            5,
            "the exchange log's XGW-AUDIT/2: per-case links, checkpoint intervals, witnesses",
            d.log_schema_2,
        ),
        # A case's materials (申请材料): each file as 64 KiB chunks sealed at rest, so it is
        # never whole in memory and every node reaches it; an 电子证照 reference as a row of
        # its own. The sealed copies that go to a partner (XGW-ENV/2), kept until delivered.
        Migration(
            6,
            "materials: files in chunks, e-licence references, the streams sent to partners",
            (
                f"""CREATE TABLE IF NOT EXISTS material (
                    id TEXT PRIMARY KEY, case_id TEXT, code TEXT NOT NULL,
                    kind TEXT NOT NULL, size INTEGER NOT NULL, chunks INTEGER NOT NULL,
                    sm3 TEXT NOT NULL, licence {d.blob}, status TEXT NOT NULL,
                    created {d.real} NOT NULL)""",
                "CREATE INDEX IF NOT EXISTS material_by_case ON material (case_id, code)",
                "CREATE INDEX IF NOT EXISTS material_by_status ON material (status, created)",
                f"""CREATE TABLE IF NOT EXISTS material_chunk (
                    material_id TEXT NOT NULL, idx INTEGER NOT NULL, data {d.blob} NOT NULL,
                    PRIMARY KEY (material_id, idx)){d.without_rowid}""",
                f"""CREATE TABLE IF NOT EXISTS outbox_material (
                    msg_id TEXT NOT NULL, code TEXT NOT NULL, idx INTEGER NOT NULL,
                    data {d.blob} NOT NULL,
                    PRIMARY KEY (msg_id, code, idx)){d.without_rowid}""",
            ),
        ),
    )


SQLITE_MIGRATIONS = migrations(SQLITE)
POSTGRES_MIGRATIONS = migrations(POSTGRES)
LATEST = SQLITE_MIGRATIONS[-1].version

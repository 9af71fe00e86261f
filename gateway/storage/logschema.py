"""The exchange log's tables, for both databases (gateway.storage.logtables speaks to them)."""

from __future__ import annotations

# The columns an entry is searched by, beside its body and hash (docs/exchange-log.md).
COLUMNS = (
    "time",
    "event",
    "case_id",
    "message_id",
    "partner",
    "local_matter",
    "partner_matter",
    "direction",
    "outcome",
    "error_code",
    "actor",
    "person",
)


def _schema(blob: str, without_rowid: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE IF NOT EXISTS audit_entry (
            node TEXT NOT NULL, seq INTEGER NOT NULL, {", ".join(f"{c} TEXT" for c in COLUMNS)},
            body {blob} NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (node, seq)){without_rowid}""",
        "CREATE INDEX IF NOT EXISTS audit_by_case ON audit_entry (case_id)",
        "CREATE INDEX IF NOT EXISTS audit_by_message ON audit_entry (message_id)",
        "CREATE INDEX IF NOT EXISTS audit_by_partner_time ON audit_entry (partner, time)",
        "CREATE INDEX IF NOT EXISTS audit_by_time ON audit_entry (time)",
        "CREATE INDEX IF NOT EXISTS audit_by_person ON audit_entry (person)",
        """CREATE TABLE IF NOT EXISTS audit_checkpoint (
            node TEXT NOT NULL, to_seq INTEGER NOT NULL, from_seq INTEGER NOT NULL,
            head TEXT NOT NULL, root TEXT NOT NULL, time TEXT NOT NULL, prev TEXT NOT NULL,
            key_id TEXT NOT NULL, signature TEXT NOT NULL, PRIMARY KEY (node, to_seq))"""
        + without_rowid,
        """CREATE TABLE IF NOT EXISTS audit_archive (
            node TEXT NOT NULL, to_seq INTEGER NOT NULL, from_seq INTEGER NOT NULL,
            file TEXT NOT NULL, digest TEXT NOT NULL, head TEXT NOT NULL, created TEXT NOT NULL,
            PRIMARY KEY (node, to_seq))"""
        + without_rowid,
    )


SQLITE_LOG_SCHEMA = _schema("BLOB", " WITHOUT ROWID")
POSTGRES_LOG_SCHEMA = _schema("BYTEA", "")

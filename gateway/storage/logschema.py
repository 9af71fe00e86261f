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


# XGW-AUDIT/2: what a checkpoint records of its node's interval; each case's last entry on a
# node (what its next entry links to, kept apart from the entries so that archiving them does
# not lose it); the countersignatures our checkpoints got; the partners' checkpoints we
# countersigned (to refuse one that rewrites them).
CHECKPOINT_COLUMNS_2 = (("format", "TEXT"), ("interval_entries", "INTEGER"),
                        ("interval_ms", "INTEGER"), ("flags", "TEXT"))  # fmt: skip


def _schema_2(without_rowid: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE IF NOT EXISTS audit_case_head (
            node TEXT NOT NULL, case_id TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL,
            PRIMARY KEY (node, case_id)){without_rowid}""",
        f"""CREATE TABLE IF NOT EXISTS audit_witness (
            node TEXT NOT NULL, to_seq INTEGER NOT NULL, witness TEXT NOT NULL,
            checkpoint TEXT NOT NULL, time TEXT NOT NULL, key_id TEXT NOT NULL,
            signature TEXT NOT NULL, PRIMARY KEY (node, to_seq, witness)){without_rowid}""",
        f"""CREATE TABLE IF NOT EXISTS audit_witnessed (
            partner TEXT NOT NULL, node TEXT NOT NULL, to_seq INTEGER NOT NULL,
            from_seq INTEGER NOT NULL, checkpoint TEXT NOT NULL, prev TEXT NOT NULL,
            time TEXT NOT NULL, PRIMARY KEY (partner, node, to_seq, checkpoint)){without_rowid}""",
    )


SQLITE_LOG_SCHEMA = _schema("BLOB", " WITHOUT ROWID") + _schema_2(" WITHOUT ROWID")
POSTGRES_LOG_SCHEMA = _schema("BYTEA", "")
POSTGRES_LOG_SCHEMA_2 = _schema_2("") + tuple(
    f"ALTER TABLE audit_checkpoint ADD COLUMN IF NOT EXISTS {name} {kind}"
    for name, kind in CHECKPOINT_COLUMNS_2
)

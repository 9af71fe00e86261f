"""Builders for exchange-log tests: a log with a signing key, and tampering helpers."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.audit.log import AuditEvent, AuditLog
from gateway.audit.verify import KnownKey, VerifyResult, verify_log
from security.keys import PrivateKey
from tests.security_helpers import NATIVE, new_key

PERSON = "411329198506150034"


class Log:
    def __init__(self, folder: Path, node: str = "xz-1", key: PrivateKey | None = None) -> None:
        self.path = folder / "audit.sqlite3"
        self.key = key or new_key()
        self.audit = AuditLog(self.path, node, b"k" * 32)

    def fill(self, count: int, checkpoint_every: int = 10, case: str = "case-{i}") -> None:
        for i in range(count):
            self.audit.append(
                AuditEvent(
                    "message.sent",
                    "outbound",
                    "sent",
                    case_id=case.format(i=i % 3),
                    message_id=f"m-{i}",
                    partner="411329",
                    local_matter="XZ-SB-001",
                    partner_matter="XY-SB-001",
                    actor="window-7",
                    person_id=PERSON,
                    envelope={"v": "XGW-ENV/1", "signature": "c2ln"},
                )
            )
            if (i + 1) % checkpoint_every == 0:
                self.audit.checkpoint(self.key, NATIVE)

    def keys(self) -> list[KnownKey]:
        now = datetime.now(UTC)
        return [
            KnownKey(
                self.key.key_id,
                self.key.public.point,
                now - timedelta(days=1),
                now + timedelta(days=1),
                self.key.public.to_pem().decode(),
            )
        ]

    def verify(self, archive: Path | None = None) -> VerifyResult:
        return verify_log(
            self.audit, self.keys(), NATIVE, archive_dir=archive, unsigned_tail_limit=20
        )

    def sql(self, statement: str, *params: object) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute(statement, params)


def rewrite_the_end(path: Path, first_dropped: int) -> int:
    """The attack the exchange log must withstand: with write access to the log's file only,
    delete every checkpoint from the one up to ``first_dropped`` on, change an entry after the
    last one kept, and re-link the chain after it (each hash recomputed). Returns the seq of
    the last checkpoint kept."""
    import json

    from security.auditchain import canonical, entry_hash

    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM audit_checkpoint WHERE to_seq >= ?", (first_dropped,))
        kept = db.execute("SELECT COALESCE(MAX(to_seq), 0) FROM audit_checkpoint").fetchone()[0]
        prev = db.execute("SELECT hash FROM audit_entry WHERE seq = ?", (kept,)).fetchone()[0]
        rows = db.execute(
            "SELECT seq, body FROM audit_entry WHERE seq > ? ORDER BY seq", (kept,)
        ).fetchall()
        for seq, body in rows:
            document = json.loads(body)
            document["prev"] = prev
            if seq == kept + 2:
                document["actor"] = "someone-else"
            new_body = canonical(document)
            prev = entry_hash(new_body)
            db.execute(
                "UPDATE audit_entry SET body = ?, hash = ?, actor = ? WHERE seq = ?",
                (new_body, prev, document["actor"], seq),
            )
    return int(kept)

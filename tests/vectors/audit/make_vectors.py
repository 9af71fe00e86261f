"""Regenerate the exchange-log test vectors in this folder (SAMPLE data and keys).

Run from the repository root: ``.venv/bin/python tests/vectors/audit/make_vectors.py``. It writes
a small log as the gateway keeps it (``store.sqlite3``: 40 entries of node ``xiangzhou-gw-1``
over three SAMPLE cases, a checkpoint every 8 entries, each countersigned by 新野), the archive
file of its first 16 entries (``archive/``), the evidence package of ``case-2``
(``package.json``), the keys with their validity (``keys.json``: the log's signing key is
``../keys/xiangzhou``, the witness's ``../keys/xinye``), and ``expected.json``: for the log and
for the package, each tampering — SQL to run on a copy of the store, or a file to use instead —
with the findings (kind, node, seq) a verifier must report. The committed files are the
vectors; regenerating changes every signature (SM2 signatures are randomized) and the findings
stay the same. Times come from a fixed clock, a second a step from 2026-11-28T08:00:00Z.
"""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.audit import log as audit_log
from gateway.audit.log import AuditEvent, AuditLog
from gateway.audit.verify import KnownKey, export_case, verify_log, verify_package
from security import auditchain
from security.backend import get_backend
from security.curve import DEFAULT_DISTID
from security.keys import PrivateKey, load_private_key

HERE = Path(__file__).resolve().parent
KEYS = HERE.parent / "keys"
NODE = "xiangzhou-gw-1"
START = datetime(2026, 11, 28, 8, 0, 0, tzinfo=UTC)
VALID = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC))
HMAC_KEY = b"SAMPLE audit person key, 32 byte"
PERSON = "11010519491231002X"  # SAMPLE 身份证号
SAMPLE_NOTE = "SAMPLE vectors for XGW-AUDIT/2; keys are test keys, never use them elsewhere"
BACKEND = get_backend("native")
Finding = tuple[str, str, int | None]


def _clock() -> Iterator[str]:
    moment = START
    while True:
        yield moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        moment += timedelta(seconds=1)


def _key(name: str) -> PrivateKey:
    return load_private_key((KEYS / f"{name}.key.pem").read_bytes(), None, BACKEND)


def known(key: PrivateKey, region: str | None = None) -> KnownKey:
    return KnownKey(
        key.key_id, key.public.point, VALID[0], VALID[1], key.public.to_pem().decode(), region
    )


def fill(folder: Path, signer: PrivateKey, witness: PrivateKey) -> AuditLog:
    ticks = _clock()
    audit_log.now_iso = lambda: next(ticks)  # type: ignore[assignment] # the fixed clock
    log = AuditLog(folder / "store.sqlite3", NODE, HMAC_KEY)
    for n in range(40):
        log.append(
            AuditEvent(
                "message.sent",
                "outbound",
                "sent",
                case_id=f"case-{n % 3 + 1}",
                message_id=f"msg-{n + 1:04d}",
                partner="411329",
                local_matter="XZ-SB-001",
                partner_matter="XY-SB-001",
                actor="window-1",
                person_id=PERSON,
                details={"sample": True, "电话": "13800138000"},
            )
        )
        if n % 8 == 7:
            made = log.checkpoint(signer, BACKEND, (8, 60.0))
            assert made is not None
            log.keep_witness(
                auditchain.sign_witness(
                    made,
                    "411329",
                    audit_log.now_iso(),
                    witness.scalar,
                    witness.public.point,
                    witness.key_id,
                    BACKEND,
                )
            )
    first_live = next(r for r in log.rows(NODE, 16))
    before = json.loads(first_live[1])["time"]  # entries 1..16: two whole batches
    archived = log.archive(before, folder / "archive")
    assert archived is not None
    return log


def findings_of_log(folder: Path, keys: list[KnownKey], witnesses: list[KnownKey]) -> list[Finding]:
    log = AuditLog(folder / "store.sqlite3", NODE, HMAC_KEY)
    try:
        result = verify_log(
            log, keys, BACKEND, folder / "archive", unsigned_tail_limit=16, witness_keys=witnesses
        )
    finally:
        log.close()
    return sorted({(f.kind, f.node, f.seq) for f in result.all_findings() if f.fatal}, key=str)


def findings_of_package(package: Any) -> list[Finding]:
    found = verify_package(package, BACKEND)
    return sorted({(f.kind, f.node, f.seq) for f in found if f.fatal}, key=str)


def _rows(db: sqlite3.Connection, after: int) -> list[tuple[int, bytes]]:
    return db.execute(
        "SELECT seq, body FROM audit_entry WHERE seq > ? ORDER BY seq", (after,)
    ).fetchall()


def _relinked(
    db: sqlite3.Connection, after: int, change: Callable[[dict[str, Any]], None]
) -> list[str]:
    """SQL rewriting the entries after ``after`` (the first changed by ``change``), every hash
    and link recomputed — what a careful forger writes."""
    prev = db.execute("SELECT hash FROM audit_entry WHERE seq = ?", (after,)).fetchone()[0]
    statements = []
    for n, (seq, body) in enumerate(_rows(db, after)):
        document = json.loads(body)
        document["prev"] = prev
        if n == 0:
            change(document)
        new_body = auditchain.canonical(document)
        prev = auditchain.entry_hash(new_body)
        statements.append(
            f"UPDATE audit_entry SET body = X'{new_body.hex()}', hash = '{prev}', "
            f"actor = '{document['actor']}' WHERE seq = {seq}"
        )
    return statements


def store_tamperings(folder: Path, signer: PrivateKey) -> list[dict[str, Any]]:
    with sqlite3.connect(folder / "store.sqlite3") as db:
        relinked = _relinked(db, 19, lambda d: d.update(actor="window-9"))
        signature = db.execute(
            "SELECT signature FROM audit_checkpoint WHERE to_seq = 24"
        ).fetchone()[0]
        # the attack: the newest checkpoints deleted, the end rewritten and re-signed
        # as one batch with the node's own key (as a gateway without its memory would)
        rewritten = _relinked(db, 24, lambda d: d.update(actor="someone-else"))
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "store.sqlite3"
        shutil.copy(folder / "store.sqlite3", copy)
        with sqlite3.connect(copy) as db:
            db.execute("DELETE FROM audit_checkpoint WHERE to_seq > 24")
            for statement in rewritten:
                db.execute(statement)
            hashes = [
                r[0] for r in db.execute("SELECT hash FROM audit_entry WHERE seq > 24 ORDER BY seq")
            ]
            previous = auditchain.Checkpoint(
                *db.execute(
                    "SELECT node, from_seq, to_seq, head, root, time, prev, key_id, signature, "
                    "format, interval_entries, interval_ms, flags FROM audit_checkpoint "
                    "WHERE to_seq = 24"
                ).fetchone()
            )
        resigned = auditchain.sign_checkpoint(
            NODE, 24, 40, hashes, "2026-11-28T08:10:00.000000Z", previous.hash, signer.scalar,
            signer.public.point, signer.key_id, BACKEND, auditchain.Interval(8, 60000, "oversize,overdue"),
        )  # fmt: skip
    insert = (
        "INSERT INTO audit_checkpoint (node, to_seq, from_seq, head, root, time, prev, key_id, "
        "signature, format, interval_entries, interval_ms, flags) VALUES "
        f"('{NODE}', 40, 24, '{resigned.head}', '{resigned.root}', '{resigned.time}', "
        f"'{resigned.prev}', '{resigned.key_id}', '{resigned.signature}', '{resigned.format}', "
        f"8, 60000, '{resigned.flags}')"
    )
    broken_signature = ("B" if signature[0] != "B" else "C") + signature[1:]
    return [
        {
            "name": "changed-byte",
            "what": "one byte of entry 20's body",
            "sql": [
                "UPDATE audit_entry SET body = CAST(replace(CAST(body AS TEXT), 'window-1', "
                "'window-2') AS BLOB) WHERE seq = 20"
            ],
        },
        {
            "name": "rewritten-with-hashes",
            "what": "entry 20 changed and every later entry re-linked, hashes recomputed",
            "sql": relinked,
        },
        {
            "name": "deleted-entry",
            "what": "entry 21 deleted",
            "sql": ["DELETE FROM audit_entry WHERE seq = 21"],
        },
        {
            "name": "removed-checkpoint",
            "what": "the checkpoint up to 32 deleted",
            "sql": ["DELETE FROM audit_checkpoint WHERE to_seq = 32"],
        },
        {
            "name": "column-changed",
            "what": "entry 22's indexed actor changed, its body not",
            "sql": ["UPDATE audit_entry SET actor = 'window-5' WHERE seq = 22"],
        },
        {
            "name": "checkpoint-signature",
            "what": "a character of the checkpoint up to 24's signature",
            "sql": [
                f"UPDATE audit_checkpoint SET signature = '{broken_signature}' WHERE to_seq = 24"
            ],
        },
        {
            "name": "end-rewritten-and-resigned",
            "what": "the checkpoints after 24 deleted, the entries after 24 rewritten and re-linked, "
            "and signed again as one late batch with the node's key: only the witnesses' "
            "countersignatures contradict it",
            "sql": ["DELETE FROM audit_checkpoint WHERE to_seq > 24", *rewritten, insert],
        },
        {
            "name": "witness-forged",
            "what": "a countersignature's signature changed",
            "sql": [
                "UPDATE audit_witness SET signature = "
                "(SELECT signature FROM audit_witness WHERE to_seq = 24) WHERE to_seq = 32"
            ],
        },
        {
            "name": "archive-changed",
            "what": "a byte of the archive file changed",
            "sql": [],
            "archive_replacement": "tampered/archive-changed.jsonl",
        },
    ]


def resigned(
    checkpoint: auditchain.Checkpoint, signer: PrivateKey, **changes: Any
) -> auditchain.Checkpoint:
    """``checkpoint`` with ``changes``, signed again with the key: a valid signature over
    another statement."""
    draft = auditchain.Checkpoint(**{**checkpoint.as_dict(), **changes})
    signature = BACKEND.sm2_sign(
        signer.scalar, signer.public.point, draft.signed_bytes(), DEFAULT_DISTID
    )
    return auditchain.Checkpoint(
        **{**draft.as_dict(), "signature": base64.b64encode(signature).decode()}
    )


def package_tamperings(package: dict[str, Any], signer: PrivateKey) -> dict[str, Any]:
    def copy() -> dict[str, Any]:
        return dict(json.loads(json.dumps(package)))

    def resealed(entry: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
        document = json.loads(entry["body"])
        change(document)
        body = auditchain.canonical(document)
        entry["body"], entry["hash"] = body.decode(), auditchain.entry_hash(body)

    made: dict[str, Any] = {}
    omitted_middle = copy()
    del omitted_middle["entries"][4]
    made["omitted-middle"] = ("an entry of the case left out", omitted_middle)
    omitted_first = copy()
    del omitted_first["entries"][0]
    made["omitted-first"] = ("the case's first entry left out", omitted_first)
    array_body = copy()
    array_body["entries"][2].update(body="[]", hash=auditchain.entry_hash(b"[]"))
    made["body-array"] = ("a body replaced by [] with its hash recomputed", array_body)
    forged_link = copy()
    resealed(forged_link["entries"][6], lambda d: d.update(case_prev="ab" * 32))
    made["case-link-forged"] = ("an entry's case link changed, hash recomputed", forged_link)
    reversed_proof = copy()
    reversed_proof["entries"][7]["proof"].reverse()
    made["proof-reversed"] = ("an inclusion proof's steps reversed", reversed_proof)
    bad_signature = copy()
    sig = bad_signature["checkpoints"][1]["signature"]
    bad_signature["checkpoints"][1]["signature"] = ("B" if sig[0] != "B" else "C") + sig[1:]
    made["checkpoint-signature"] = ("a checkpoint's signature changed", bad_signature)
    unlinked = copy()
    third = auditchain.checkpoint_from(unlinked["checkpoints"][2])
    unlinked["checkpoints"][2] = resigned(third, signer, prev="cd" * 32).as_dict()
    made["checkpoint-unlinked"] = (
        "a checkpoint re-signed with another prev (and so another signature)",
        unlinked,
    )
    forged_witness = copy()
    forged_witness["witnesses"][0]["time"] = "2026-11-28T09:00:00.000000Z"
    made["witness-forged"] = ("a countersignature's time changed", forged_witness)
    other_case = copy()
    other_case["case_id"] = "case-3"
    made["case-changed"] = ("the package claims another case", other_case)
    return made


def main() -> None:
    signer, witness = _key("xiangzhou"), _key("xinye")
    for old in ("store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm", "package.json"):
        (HERE / old).unlink(missing_ok=True)
    for made in ("archive", "tampered"):
        shutil.rmtree(HERE / made, ignore_errors=True)
    (HERE / "tampered").mkdir()
    log = fill(HERE, signer, witness)
    keys, witnesses = [known(signer)], [known(witness, "411329")]
    package = export_case(log, "case-2", keys, HERE / "archive", witnesses)
    package["exported"] = "2026-11-28T08:30:00.000000Z"
    log.close()
    with sqlite3.connect(HERE / "store.sqlite3") as db:
        db.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    with sqlite3.connect(HERE / "store.sqlite3") as db:
        db.execute("VACUUM")
    (HERE / "package.json").write_text(
        json.dumps(package, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    archive = next((HERE / "archive").glob("*.jsonl"))
    changed = archive.read_bytes().replace(b"window-1", b"window-2", 1)
    (HERE / "tampered" / "archive-changed.jsonl").write_bytes(changed)
    (HERE / "keys.json").write_text(
        json.dumps(
            {
                "note": SAMPLE_NOTE,
                "checkpoint_keys": [
                    dict(k.as_dict(), file="../keys/xiangzhou.pub.pem") for k in keys
                ],
                "witness_keys": [
                    dict(k.as_dict(), file="../keys/xinye.pub.pem") for k in witnesses
                ],
            },
            ensure_ascii=False,
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    expected: dict[str, Any] = {
        "note": SAMPLE_NOTE,
        "how": "For the store: copy store.sqlite3 and archive/, run each tampering's SQL on the "
        "copy (or put archive_replacement in place of the archive file), verify with keys.json "
        "and an unsigned-tail limit of 16; for the package: verify each file. The findings "
        "listed are the failures (kind, node, seq); notes are not listed.",
        "store": {
            "file": "store.sqlite3",
            "archive": "archive",
            "findings": findings_of_log(HERE, keys, witnesses),
            "tamperings": [],
        },
        "package": {
            "file": "package.json",
            "findings": findings_of_package(package),
            "tamperings": [],
        },
    }
    assert expected["store"]["findings"] == [] and expected["package"]["findings"] == []
    for tampering in store_tamperings(HERE, signer):
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            shutil.copy(HERE / "store.sqlite3", folder / "store.sqlite3")
            shutil.copytree(HERE / "archive", folder / "archive")
            with sqlite3.connect(folder / "store.sqlite3") as db:
                for statement in tampering["sql"]:
                    db.execute(statement)
            if "archive_replacement" in tampering:
                shutil.copy(
                    HERE / tampering["archive_replacement"], folder / "archive" / archive.name
                )
            tampering["findings"] = findings_of_log(folder, keys, witnesses)
        assert tampering["findings"], tampering["name"]
        expected["store"]["tamperings"].append(tampering)
    for name, (what, tampered) in package_tamperings(package, signer).items():
        file = f"tampered/package-{name}.json"
        (HERE / file).write_text(
            json.dumps(tampered, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        found = findings_of_package(tampered)
        assert found, name
        expected["package"]["tamperings"].append(
            {"name": name, "what": what, "file": file, "findings": found}
        )
    (HERE / "expected.json").write_text(
        json.dumps(expected, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    print(f"vectors written to {HERE}")


if __name__ == "__main__":
    main()

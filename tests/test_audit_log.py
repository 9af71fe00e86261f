"""The exchange log: every kind of tampering is detected and located; crashes and concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit.log import AuditEvent, AuditLog, AuditWriter, LogDamaged
from gateway.audit.verify import ArchiveUnreadable, entry_standing, export_case, verify_package
from security.auditchain import merkle_proof, merkle_root, verify_merkle_proof
from tests.audit_helpers import PERSON, Log
from tests.security_helpers import NATIVE, new_key

ROOT = Path(__file__).resolve().parent.parent


def _kinds(result: object) -> set[tuple[str, int | None]]:
    return {(f.kind, f.seq) for f in result.all_findings() if f.fatal}  # type: ignore[attr-defined]


def test_clean_log_verifies_and_holds_no_personal_data(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(30)
    result = log.verify()
    assert result.ok, [str(f) for f in result.all_findings()]
    assert result.reports[0].entries == 30 and result.reports[0].checkpoints == 3
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("audit.sqlite3*"))
    assert PERSON.encode() not in raw
    # lookup by person goes through the keyed hash
    found = log.audit.query({"person": log.audit.person(PERSON)}, limit=100)
    assert len(found) == 30


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13, 100])
def test_merkle_proofs(count: int) -> None:
    hashes = [f"{i:064x}" for i in range(count)]
    root = merkle_root(hashes)
    for index in range(count):
        proof = merkle_proof(hashes, index)
        assert verify_merkle_proof(hashes[index], index, count, proof, root)
        assert (
            not verify_merkle_proof(hashes[(index + 1) % count], index, count, proof, root)
            or count == 1
        )


def test_the_merkle_root_is_rfc_6962s_for_every_size() -> None:
    """The root built level by level equals RFC 6962 §2.1's recursive definition (split at
    the largest power of two below n), written out here as the reference."""
    from security.digest import sm3

    def reference(leaves: list[bytes]) -> bytes:
        if len(leaves) == 1:
            return leaves[0]
        k = 1
        while k * 2 < len(leaves):
            k *= 2
        return sm3(b"\x01" + reference(leaves[:k]) + reference(leaves[k:]))

    for count in range(1, 70):
        hashes = [sm3(str(i).encode()).hex() for i in range(count)]
        assert merkle_root(hashes) == reference([bytes.fromhex(h) for h in hashes]).hex(), count


def test_changed_byte_in_an_entry(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(30)
    log.sql("UPDATE audit_entry SET body = replace(body, 'window-7', 'window-8') WHERE seq = 14")
    assert ("modified", 14) in _kinds(log.verify())


def test_rewritten_entry_with_recomputed_hashes_is_caught_by_the_checkpoint(tmp_path: Path) -> None:
    from security.auditchain import entry_hash

    log = Log(tmp_path)
    log.fill(30)
    import sqlite3

    with sqlite3.connect(
        log.path
    ) as db:  # a careful forger rewrites entry 14 and re-links the rest
        rows = db.execute(
            "SELECT seq, body FROM audit_entry WHERE seq >= 14 ORDER BY seq"
        ).fetchall()
        prev = db.execute("SELECT hash FROM audit_entry WHERE seq = 13").fetchone()[0]
        for seq, body in rows:
            document = json.loads(body)
            document["prev"] = prev
            if seq == 14:
                document["outcome"] = "rejected"
            new_body = json.dumps(
                document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
            prev = entry_hash(new_body)
            db.execute(
                "UPDATE audit_entry SET body = ?, hash = ?, outcome = ? WHERE seq = ?",
                (new_body, prev, document["outcome"], seq),
            )
    kinds = _kinds(log.verify())
    assert ("modified", 20) in kinds  # the checkpoint over 11..20 no longer matches


def test_changed_byte_in_a_checkpoint_signature(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(30)
    signature = log.audit.checkpoints("xz-1")[1].signature
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    log.sql("UPDATE audit_checkpoint SET signature = ? WHERE to_seq = 20", flipped)
    assert ("checkpoint-invalid", 20) in _kinds(log.verify())


def test_deleted_entry(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(30)
    log.sql("DELETE FROM audit_entry WHERE seq = 17")
    assert ("missing", 17) in _kinds(log.verify())


def test_inserted_entry(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(30)
    # make room by renumbering (two steps: the primary key forbids a transient clash)
    log.sql("UPDATE audit_entry SET seq = -(seq + 1) WHERE seq >= 25")
    log.sql("UPDATE audit_entry SET seq = -seq WHERE seq < 0")
    import sqlite3

    with sqlite3.connect(log.path) as db:
        body, digest = db.execute("SELECT body, hash FROM audit_entry WHERE seq = 24").fetchone()
        db.execute(
            "INSERT INTO audit_entry (node, seq, body, hash) VALUES ('xz-1', 25, ?, ?)",
            (body, digest),
        )
    kinds = {k for k, _ in _kinds(log.verify())}
    assert "modified" in kinds or "inserted" in kinds
    assert any(seq in (25, 26) for _, seq in _kinds(log.verify()))


def test_inserted_entry_at_the_tail(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(30)
    import sqlite3

    from security.auditchain import entry_body, entry_hash

    forged = entry_body({"event": "message.sent", "case_id": "case-x"}, 31, "xz-1", "ab" * 32)
    with sqlite3.connect(log.path) as db:
        db.execute(
            "INSERT INTO audit_entry (node, seq, case_id, event, body, hash) VALUES "
            "('xz-1', 31, 'case-x', 'message.sent', ?, ?)",
            (forged, entry_hash(forged)),
        )
    assert ("inserted", 31) in _kinds(log.verify())


def test_swapped_entries(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(30)
    import sqlite3

    with sqlite3.connect(log.path) as db:
        a = db.execute("SELECT body, hash FROM audit_entry WHERE seq = 22").fetchone()
        b = db.execute("SELECT body, hash FROM audit_entry WHERE seq = 23").fetchone()
        db.execute("UPDATE audit_entry SET body = ?, hash = ? WHERE seq = 22", b)
        db.execute("UPDATE audit_entry SET body = ?, hash = ? WHERE seq = 23", a)
    kinds = _kinds(log.verify())
    assert ("modified", 22) in kinds and ("modified", 23) in kinds


def test_truncated_log(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(30)
    log.sql("DELETE FROM audit_entry WHERE seq > 26")
    assert ("truncated", 26) in _kinds(log.verify())


def test_removed_checkpoint(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(30)
    log.sql("DELETE FROM audit_checkpoint WHERE to_seq = 20")
    assert ("checkpoint-missing", 30) in _kinds(log.verify())


def test_indexed_column_changed_without_the_entry(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(12)
    log.sql("UPDATE audit_entry SET case_id = 'someone-else' WHERE seq = 5")
    assert ("column-mismatch", 5) in _kinds(log.verify())


def test_unsigned_tail_is_a_note_until_it_grows(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(25)
    result = log.verify()
    assert result.ok
    assert any(f.kind == "unsigned-tail" and not f.fatal for f in result.all_findings())
    log.fill(30, checkpoint_every=1000)
    assert ("unsigned-tail", 21) in _kinds(log.verify())


def test_archive_round_trip_and_replaced_archive(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(40)
    archive = tmp_path / "archive"
    far_future = "9999-01-01T00:00:00Z"
    first = log.audit.archive(far_future, archive)
    assert first is not None
    assert log.audit.count("xz-1") == 0  # everything checkpointed went to the archive
    log.fill(20)
    second = log.audit.archive(far_future, archive)
    assert second is not None
    log.fill(5, checkpoint_every=1000)
    result = log.verify(archive)
    assert result.ok, [str(f) for f in result.all_findings()]
    assert sum(r.entries for r in result.reports) == 65
    assert log.verify().ok  # live store alone still links to the archive head

    backup = first.read_bytes()
    first.write_bytes(backup.replace(b"window-7", b"window-9", 1))
    kinds = {k for k, _ in _kinds(log.verify(archive))}
    assert "archive-broken" in kinds and "modified" in kinds
    first.write_bytes(backup)
    first.unlink()
    assert "archive-broken" in {k for k, _ in _kinds(log.verify(archive))}


@pytest.mark.parametrize("damage", ["none", "changed", "unreadable", "removed"])
def test_archives_verified_by_processes_say_what_one_process_says(
    tmp_path: Path, damage: str
) -> None:
    """With ``workers``, each archive file is verified in a process of its own (a file is a
    whole piece of the chain, with its checkpoints); the links between files are checked in
    their order afterwards — the same findings as one process."""
    from gateway.audit.verify import verify_log

    log = Log(tmp_path)
    archive = tmp_path / "archive"
    files = []
    for _ in range(3):
        log.fill(30)
        made = log.audit.archive("9999-01-01T00:00:00Z", archive)
        assert made is not None
        files.append(made)
    log.fill(5, checkpoint_every=1000)
    if damage == "changed":
        files[1].write_bytes(files[1].read_bytes().replace(b"window-7", b"window-9", 1))
    elif damage == "unreadable":
        files[1].write_bytes(b"{not json")
    elif damage == "removed":
        files[1].unlink()
    told: list[int] = []
    one = verify_log(log.audit, log.keys(), NATIVE, archive_dir=archive, unsigned_tail_limit=20)
    many = verify_log(
        log.audit, log.keys(), NATIVE, archive_dir=archive, unsigned_tail_limit=20, workers=2,
        progress=lambda: told.append(1),
    )  # fmt: skip
    assert many.ok == one.ok == (damage == "none")
    assert [str(f) for f in many.all_findings()] == [str(f) for f in one.all_findings()]
    assert len(told) == sum(r.entries for r in many.reports)
    if damage == "none":
        assert sum(r.entries for r in many.reports) == 95


def test_concurrent_processes_keep_one_chain(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from gateway.audit.log import AuditLog, AuditEvent\n"
        "log = AuditLog(Path(sys.argv[1]), 'xz-1', b'k' * 32)\n"
        "for i in range(int(sys.argv[2])):\n"
        "    log.append(AuditEvent('delivery.retry', case_id=sys.argv[3] + str(i)))\n",
        encoding="utf-8",
    )
    database = tmp_path / "audit.sqlite3"
    AuditLog(database, "xz-1", b"k" * 32).close()
    workers = [
        subprocess.Popen([sys.executable, str(script), str(database), "150", f"w{n}-"], cwd=ROOT)
        for n in range(2)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    log = Log(tmp_path)
    log.audit.checkpoint(log.key, NATIVE)
    result = log.verify()
    assert result.ok, [str(f) for f in result.all_findings()]
    assert result.reports[0].entries == 300


def test_killed_mid_append_leaves_a_log_that_verifies(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from gateway.audit.log import AuditLog, AuditEvent\n"
        "log = AuditLog(Path(sys.argv[1]), 'xz-1', b'k' * 32)\n"
        "print('ready', flush=True)\n"
        "i = 0\n"
        "while True:\n"
        "    log.append_many([AuditEvent('message.sent', case_id=f'c{i}-{j}', envelope={'x': 'y' * 2000}) for j in range(20)])\n"
        "    i += 1\n"
        "    if i == 3:\n"
        "        print('appending', flush=True)\n",
        encoding="utf-8",
    )
    database = tmp_path / "audit.sqlite3"
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(database)], cwd=ROOT, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        assert proc.stdout.readline() == b"appending\n"  # killed amid its next appends
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    log = Log(tmp_path)
    before = log.audit.count("xz-1")
    assert before > 0 and before % 20 == 0  # whole transactions only
    log.audit.append(AuditEvent("gateway.restarted"))  # the chain resumes from the last good entry
    log.audit.checkpoint(log.key, NATIVE)
    result = log.verify()
    assert result.ok, [str(f) for f in result.all_findings()]
    assert result.reports[0].entries == before + 1


def test_evidence_package_verifies_elsewhere_and_fails_after_any_change(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(37)
    log.audit.checkpoint(log.key, NATIVE)
    package = export_case(log.audit, "case-1", log.keys())
    assert len(package["entries"]) == 12
    copied = tmp_path / "elsewhere" / "evidence.json"
    copied.parent.mkdir()
    copied.write_text(json.dumps(package, ensure_ascii=False), encoding="utf-8")
    shutil.copy(copied, tmp_path / "copy-of-copy.json")
    copied = tmp_path / "copy-of-copy.json"
    loaded = json.loads(copied.read_text(encoding="utf-8"))
    assert verify_package(loaded, NATIVE) == []
    assert verify_package(loaded, NATIVE, {log.key.key_id}) == []
    assert verify_package(loaded, NATIVE, {"0" * 64}) != []

    def tampered(change: object) -> list[object]:
        copy = json.loads(copied.read_text(encoding="utf-8"))
        change(copy)  # type: ignore[operator]
        return [f for f in verify_package(copy, NATIVE) if f.fatal]

    assert tampered(
        lambda p: p["entries"][3].update(
            body=p["entries"][3]["body"].replace("window-7", "window-6")
        )
    )
    assert tampered(
        lambda p: p["entries"][3].update(proof=list(reversed(p["entries"][3]["proof"])))
    )
    assert tampered(lambda p: p["checkpoints"][0].update(root="0" * 64))
    assert tampered(
        lambda p: p["checkpoints"][0].update(signature=p["checkpoints"][0]["signature"][::-1])
    )
    assert tampered(lambda p: p["entries"].append(dict(p["entries"][0], seq=999)))
    assert tampered(lambda p: p["keys"][0].update(public_key_pem=new_pem()))
    assert tampered(lambda p: p.update(case_id="case-2"))


def new_pem() -> str:
    from tests.security_helpers import new_key

    return new_key().public.to_pem().decode()


async def test_writer_groups_commits_and_checkpoints_by_count(tmp_path: Path) -> None:
    log = Log(tmp_path)
    writer = AuditWriter(log.audit, lambda: log.key, NATIVE, every_entries=50, every_seconds=3600)
    writer.start()
    seqs = await asyncio.gather(
        *(writer.append(AuditEvent("message.sent", case_id=f"c{i}")) for i in range(120))
    )
    assert sorted(seqs) == list(range(1, 121))
    await writer.close()
    checkpoints = log.audit.checkpoints("xz-1")
    assert checkpoints and checkpoints[-1].to_seq == 120  # close signs the tail
    assert log.verify().ok


async def test_writer_appends_a_steps_entries_in_order(tmp_path: Path) -> None:
    log = Log(tmp_path)
    writer = AuditWriter(log.audit, lambda: log.key, NATIVE, every_entries=50, every_seconds=3600)
    writer.start()
    events = ["case.filed", "message.queued", "message.queued"]
    seqs = await writer.append_all([AuditEvent(e, case_id="case-1") for e in events])
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert [e["event"] for e in log.audit.query({"case_id": "case-1"}, limit=10)] == events
    await writer.close()
    assert log.verify().ok


async def test_writer_checkpoints_by_time(tmp_path: Path) -> None:
    log = Log(tmp_path)
    writer = AuditWriter(
        log.audit, lambda: log.key, NATIVE, every_entries=10_000, every_seconds=0.2
    )
    writer.start()
    await writer.append(AuditEvent("message.sent"))
    deadline = time.monotonic() + 10
    while not log.audit.checkpoints("xz-1"):
        assert time.monotonic() < deadline, "no checkpoint after the period"
        await asyncio.sleep(0.05)
    await writer.close()


def test_two_nodes_keep_their_own_chains_and_queries_merge(tmp_path: Path) -> None:
    from tests.audit_helpers import Log

    first = Log(tmp_path, node="xz-1")
    second = Log(tmp_path, node="xz-2", key=first.key)
    for n in range(6):
        (first if n % 2 else second).audit.append(AuditEvent("message.sent", case_id="shared-case"))
    first.audit.checkpoint(first.key, NATIVE)
    second.audit.checkpoint(first.key, NATIVE)
    result = first.verify()
    assert result.ok and {r.node: r.entries for r in result.reports} == {"xz-1": 3, "xz-2": 3}
    merged = first.audit.query({"case_id": "shared-case"}, limit=100)
    assert [e["node"] for e in merged].count("xz-2") == 3 and len(merged) == 6
    times = [e["time"] for e in merged]
    assert times == sorted(times)  # one timeline across the nodes' chains


def test_evidence_package_includes_archived_entries(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(30)  # checkpoints at 10, 20, 30
    archive = tmp_path / "archive"
    assert log.audit.archive("9999-01-01T00:00:00Z", archive) is not None
    log.fill(12)  # live again: case-0/1/2 continue
    package = export_case(log.audit, "case-1", log.keys(), archive)
    seqs = sorted(e["seq"] for e in package["entries"])
    assert [s for s in seqs if s <= 30] == [2, 5, 8, 11, 14, 17, 20, 23, 26, 29]  # from the archive
    assert any(s > 30 for s in seqs)
    log.audit.checkpoint(log.key, NATIVE)
    package = export_case(log.audit, "case-1", log.keys(), archive)
    assert verify_package(package, NATIVE) == []
    without_archive = export_case(log.audit, "case-1", log.keys())
    assert all(e["seq"] > 30 for e in without_archive["entries"])


async def test_one_entry_that_cannot_be_written_fails_only_itself(tmp_path: Path) -> None:
    """A group commit that fails is written entry by entry: the bad one's caller learns, the
    others in the same moment are logged all the same."""
    log = Log(tmp_path)
    writer = AuditWriter(log.audit, lambda: log.key, NATIVE, linger_seconds=0.01)
    writer.start()
    bad = AuditEvent("message.rejected", error_code={"an": "object"})  # type: ignore[arg-type]
    events = [AuditEvent("message.rejected", case_id=f"c-{n}") for n in range(20)]
    events.insert(7, bad)
    outcomes = await asyncio.gather(*(writer.append(e) for e in events), return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == 1 and outcomes[7] is failed[0]
    assert len(log.audit.query({}, limit=100)) == 20
    await writer.close()
    assert log.verify().ok


def test_nodes_chains_in_postgresql_append_concurrently_and_verify_together(
    postgres_url: str,
) -> None:
    """Several nodes' chains in one PostgreSQL database: each node's appends (here from two
    threads each, as a node's workers do) stay one unbroken chain; the verifier reads every
    node's chain from the database, and finds an entry changed in one of them."""
    import threading

    from gateway.audit.verify import verify_log
    from gateway.storage.logtables import open_log_tables
    from tests.security_helpers import new_key

    key = new_key()
    # two processes of each node (own connections), as `--workers 2` runs them
    logs = {
        (node, worker): AuditLog(open_log_tables(postgres_url, Path("unused")), node, b"k" * 32)
        for node in ("gw-1", "gw-2")
        for worker in (1, 2)
    }

    def write(node: str, worker: int) -> None:
        for i in range(40):
            logs[node, worker].append_many(
                [AuditEvent("message.sent", "outbound", "sent", case_id=f"c-{worker}-{i}")]
            )
            if i % 10 == 9:
                logs[node, worker].checkpoint(key, NATIVE)

    threads = [threading.Thread(target=write, args=pair) for pair in logs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs.values():
        log.checkpoint(key, NATIVE)
    reader = AuditLog(open_log_tables(postgres_url, Path("unused")), "auditor", b"k" * 32)
    helper = Log.__new__(Log)  # its keys() for this key
    helper.key = key
    result = verify_log(reader, helper.keys(), NATIVE)
    assert result.ok, result.all_findings()
    assert sorted(reader.nodes()) == ["gw-1", "gw-2"]
    assert [reader.count(node) for node in ("gw-1", "gw-2")] == [80, 80]
    assert [reader.head(node)[0] for node in ("gw-1", "gw-2")] == [80, 80]
    reader.tables.db.execute(
        "UPDATE audit_entry SET body = $1 WHERE node = 'gw-2' AND seq = 33",
        b'{"forged": true}',
    )
    failures = [f for f in verify_log(reader, helper.keys(), NATIVE).all_findings() if f.fatal]
    assert ("modified", "gw-2", 33) in {(f.kind, f.node, f.seq) for f in failures}
    assert all(f.node == "gw-2" for f in failures)
    listed = reader.query({}, limit=500)  # the auditors' listing, from PostgreSQL
    assert len(listed) == 160
    assert [(e["node"], e["seq"]) for e in listed if "damaged" in e] == [("gw-2", 33)]
    # an entry's standing, read from PostgreSQL: its checkpoint; with that one gone, damage
    assert entry_standing(reader, "gw-1", 5, helper.keys(), NATIVE).checkpoint is not None
    reader.tables.db.execute("DELETE FROM audit_checkpoint WHERE node = 'gw-1' AND from_seq = 0")
    gone = entry_standing(reader, "gw-1", 5, helper.keys(), NATIVE)
    assert gone.checkpoint is None and "covers seq 5" in (gone.damaged or "")
    for log in (*logs.values(), reader):
        log.close()


def _swap(log: Log, a: int, b: int) -> None:
    import sqlite3

    with sqlite3.connect(log.path) as db:
        first = db.execute("SELECT body, hash FROM audit_entry WHERE seq = ?", (a,)).fetchone()
        second = db.execute("SELECT body, hash FROM audit_entry WHERE seq = ?", (b,)).fetchone()
        db.execute("UPDATE audit_entry SET body = ?, hash = ? WHERE seq = ?", (*second, a))
        db.execute("UPDATE audit_entry SET body = ?, hash = ? WHERE seq = ?", (*first, b))


def _reseal(log: Log, seq: int) -> None:
    """A forger's rewrite of one entry: its body changed, its hash and the next link made to fit."""
    import json
    import sqlite3

    from security.auditchain import canonical, entry_hash

    with sqlite3.connect(log.path) as db:
        body = json.loads(
            db.execute("SELECT body FROM audit_entry WHERE seq = ?", (seq,)).fetchone()[0]
        )
        body["actor"] = "someone-else"
        forged = canonical(body)
        db.execute(
            "UPDATE audit_entry SET body = ?, hash = ? WHERE seq = ?",
            (forged, entry_hash(forged), seq),
        )


TAMPERING: dict[str, Callable[[Log], None]] = {
    "none": lambda log: None,
    "changed byte, first of a segment": lambda log: log.sql(
        "UPDATE audit_entry SET body = CAST(replace(CAST(body AS TEXT), 'm-40', 'm-4X') AS BLOB) WHERE seq = 41"
    ),
    "deleted, a segment's last": lambda log: log.sql("DELETE FROM audit_entry WHERE seq = 30"),
    "deleted, a segment's first": lambda log: log.sql("DELETE FROM audit_entry WHERE seq = 31"),
    "swapped across a cut": lambda log: _swap(log, 40, 41),
    "resealed": lambda log: _reseal(log, 45),
    "checkpoint removed": lambda log: log.sql("DELETE FROM audit_checkpoint WHERE to_seq = 50"),
    "truncated": lambda log: log.sql("DELETE FROM audit_entry WHERE seq > 86"),
    "column changed": lambda log: log.sql("UPDATE audit_entry SET case_id = 'x' WHERE seq = 55"),
}


@pytest.mark.parametrize("tampering", list(TAMPERING))
def test_a_chain_verified_in_segments_by_processes_finds_what_one_walk_finds(
    tmp_path: Path, tampering: str
) -> None:
    """``workers``: the chain cut at its checkpoints, the segments verified in processes of
    their own, each reading the log itself — the same verdict and the same findings, located
    the same, as one walk in one process."""
    from gateway.audit.verify import verify_log

    log = Log(tmp_path)
    log.fill(95)  # checkpoints every 10 entries, 5 unsigned at the end
    TAMPERING[tampering](log)
    walked = verify_log(log.audit, log.keys(), NATIVE, unsigned_tail_limit=20)
    told: list[int] = []
    parallel = verify_log(
        log.audit, log.keys(), NATIVE, unsigned_tail_limit=20, workers=2, segment_entries=20,
        progress=lambda: told.append(1),
    )  # fmt: skip
    assert parallel.ok == walked.ok == (tampering == "none")
    # one difference: a walk that saw the entry a link points to names it "reordered"; a
    # segment that did not (it was before the cut) names the same entry "inserted"
    same = {"reordered": "inserted"}
    assert {(same.get(k, k), seq) for k, seq in _kinds(parallel)} == {
        (same.get(k, k), seq) for k, seq in _kinds(walked)
    }
    [one], [other] = walked.reports, parallel.reports
    assert (other.entries, other.checkpoints, other.head, other.last_seq) == (
        one.entries, one.checkpoints, one.head, one.last_seq,
    )  # fmt: skip
    assert len(told) == other.entries  # progress, a segment at a time


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b"7", b'{"seq": "x"}', b"\xff{"])
@pytest.mark.parametrize("rehashed", [False, True], ids=["hash-kept", "hash-rewritten"])
def test_a_body_rewritten_into_anything_is_reported_never_a_crash(
    tmp_path: Path, body: bytes, rehashed: bool
) -> None:
    """Whoever can write the store may put any bytes in an entry, and fix its hash column too:
    the verifier reports the entry, its links and its batch; it does not stop."""
    from security.digest import sm3_hex

    log = Log(tmp_path)
    log.fill(20)
    if rehashed:
        log.sql("UPDATE audit_entry SET body = ?, hash = ? WHERE seq = 5", body, sm3_hex(body))
    else:
        log.sql("UPDATE audit_entry SET body = ? WHERE seq = 5", body)
    result = log.verify()
    assert not result.ok
    assert ("modified", 5) in _kinds(result)


@pytest.mark.parametrize(
    "damage",
    [
        "header-not-an-object",
        "header-from-seq-not-a-number",
        "checkpoint-not-an-object",
        "checkpoint-wrong-types",
        "body-not-an-object",
        "line-not-json",
    ],
)
def test_a_damaged_archive_file_is_reported_never_a_crash(tmp_path: Path, damage: str) -> None:
    """An auditor verifying archive files they were handed (and exporting a case's evidence from
    them) gets findings for a damaged file, whatever its lines hold, never a traceback."""
    from security.digest import sm3_hex

    log = Log(tmp_path)
    log.fill(20)
    archive = tmp_path / "archive"
    path = log.audit.archive("9999-01-01T00:00:00Z", archive)
    assert path is not None
    lines = path.read_bytes().splitlines()
    entry = next(n for n, line in enumerate(lines) if line.startswith(b'{"seq"'))
    checkpoint = next(n for n, line in enumerate(lines) if line.startswith(b'{"checkpoint"'))
    if damage == "header-not-an-object":
        lines[0] = b"[]"
    elif damage == "header-from-seq-not-a-number":
        lines[0] = lines[0].replace(b'"from_seq":0', b'"from_seq":"zero"')
    elif damage == "checkpoint-not-an-object":
        lines[checkpoint] = b'{"checkpoint": []}'
    elif damage == "checkpoint-wrong-types":
        lines[checkpoint] = lines[checkpoint].replace(b'"to_seq":10', b'"to_seq":"10"')
    elif damage == "body-not-an-object":
        seq = json.loads(lines[entry])["seq"]
        lines[entry] = json.dumps({"seq": seq, "hash": sm3_hex(b"[1]"), "body": "[1]"}).encode()
    else:
        lines[entry] = b"{not json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = log.verify(archive)
    assert not result.ok
    kinds = {kind for kind, _ in _kinds(result)}
    if damage == "body-not-an-object":  # a well-formed file whose entry was changed
        assert "modified" in kinds, kinds
        assert export_case(log.audit, "case-1", log.keys(), archive)["entries"]
        return
    assert "archive-broken" in kinds, kinds
    with pytest.raises(ArchiveUnreadable, match=rf"archive {path.name}, line \d+: "):
        export_case(log.audit, "case-1", log.keys(), archive)  # not a package missing entries


def test_listings_show_a_damaged_entry_as_damaged_and_page_past_it(tmp_path: Path) -> None:
    """The auditors' listing (API, console, `xgw audit show`) over a store where some bodies
    were overwritten: each shows where it is stored, marked damaged; paging goes on past it."""
    log = Log(tmp_path)
    log.fill(20)
    log.sql("UPDATE audit_entry SET body = ? WHERE seq = 5", b"\xff not json")
    log.sql("UPDATE audit_entry SET body = ? WHERE seq = 6", b"[1, 2]")
    log.sql("UPDATE audit_entry SET body = ? WHERE seq = 7", b'{"seq": 999, "event": "x"}')
    everything = log.audit.query({}, limit=50)
    assert [e["seq"] for e in everything] == list(range(1, 21))
    damaged = {e["seq"]: e for e in everything if "damaged" in e}
    assert set(damaged) == {5, 6, 7}
    assert damaged[5]["event"] == "message.sent" and damaged[5]["node"] == "xz-1"  # indexed
    assert damaged[7]["event"] == "x"  # what the body says, beside where it is stored
    paged: list[int] = []
    after = None
    while True:
        page = log.audit.query({}, limit=3, after=after)
        if not page:
            break
        paged += [e["seq"] for e in page]
        after = (page[-1]["time"], page[-1]["node"], page[-1]["seq"])
    assert paged == list(range(1, 21))


@pytest.mark.parametrize(
    "change",
    [
        "to_seq = 'ten'",
        "from_seq = 'zero'",
        "signature = X'00'",
        "head = X'07'",
        "interval_entries = 'many'",
    ],
)
def test_a_stored_checkpoint_changed_into_other_types_is_reported_never_a_crash(
    tmp_path: Path, change: str
) -> None:
    """SQLite keeps whatever type is written into a column: a checkpoint row changed behind the
    gateway is a finding for the verifier, a 'damaged' standing for the console, and a refusal
    to export evidence it would misprove."""

    log = Log(tmp_path)
    log.fill(20)
    log.sql(f"UPDATE audit_checkpoint SET {change} WHERE to_seq = 10")
    result = log.verify()
    assert not result.ok
    damaged = [f for f in result.all_findings() if "is not what it should be" in f.detail]
    assert [f.kind for f in damaged] == ["checkpoint-invalid"], [str(f) for f in damaged]
    standing = entry_standing(log.audit, "xz-1", 3, log.keys(), NATIVE)
    assert standing.damaged is not None and standing.checkpoint is None
    with pytest.raises(LogDamaged, match="the stored checkpoint of xz-1"):
        export_case(log.audit, "case-1", log.keys())


@pytest.mark.parametrize(
    "change",
    [
        "DELETE FROM audit_checkpoint WHERE to_seq = 10",
        "UPDATE audit_checkpoint SET from_seq = 5 WHERE to_seq = 10",
    ],
)
def test_an_entry_whose_checkpoint_was_removed_or_moved_is_not_shown_as_awaiting_one(
    tmp_path: Path, change: str
) -> None:
    """Checkpoints tile the chain: an entry before a signed checkpoint that no checkpoint
    covers is damage the console names, as the verifier does, not an entry still to be
    signed. The entries after the last checkpoint still are."""
    log = Log(tmp_path)
    log.fill(25)
    log.sql(change)
    assert not log.verify().ok
    standing = entry_standing(log.audit, "xz-1", 3, log.keys(), NATIVE)
    assert standing.checkpoint is None
    assert standing.damaged is not None and "covers seq 3" in standing.damaged
    tail = entry_standing(log.audit, "xz-1", 23, log.keys(), NATIVE)
    assert tail.intact and tail.checkpoint is None and tail.damaged is None
    signed = entry_standing(log.audit, "xz-1", 14, log.keys(), NATIVE)
    assert signed.checkpoint is not None and signed.in_root and signed.signature_valid


@pytest.mark.parametrize(
    "change",
    [
        "hash = X'00'",
        "hash = 5",
        "hash = 'not a hash'",
        "hash = upper(hash)",
        "body = 'text'",
        "body = X'ff'",
    ],
)
def test_a_stored_entry_changed_into_other_types_is_reported_never_a_crash(
    tmp_path: Path, change: str
) -> None:
    """The same for an entry's row: its hash column holding bytes, a number or no hash at all,
    its body changed into text."""

    log = Log(tmp_path)
    log.fill(20)
    log.sql(f"UPDATE audit_entry SET {change} WHERE seq = 5")
    result = log.verify()
    assert not result.ok
    assert ("modified", 5) in _kinds(result)
    assert entry_standing(log.audit, "xz-1", 3, log.keys(), NATIVE).in_root is (
        change.startswith("body")  # its batch's stored hashes are all still hashes
    )
    assert [e["seq"] for e in log.audit.query({}, limit=50)] == list(range(1, 21))
    if change == "body = 'text'":  # text the store hands back: carried as it reads
        assert export_case(log.audit, "case-1", log.keys())["entries"]
    elif change == "body = X'ff'":  # not UTF-8: a package cannot carry it as written
        with pytest.raises(LogDamaged, match="entry 5 of xz-1 is not as it was written"):
            export_case(log.audit, "case-1", log.keys())
    else:
        with pytest.raises(LogDamaged, match="not all SM3 hashes"):
            export_case(log.audit, "case-1", log.keys())


@pytest.mark.parametrize("change", ["body = X'ff'", "body = 'text'", "hash = X'00'"])
def test_archiving_refuses_a_batch_that_is_not_as_written(tmp_path: Path, change: str) -> None:
    """Archiving moves entries out of the live store: one whose body is not the UTF-8 bytes
    written, or whose hash is not a hash, stops it, naming the entry, and nothing moves."""

    log = Log(tmp_path)
    log.fill(20)
    log.sql(f"UPDATE audit_entry SET {change} WHERE seq = 5")
    archive = tmp_path / "archive"
    with pytest.raises(LogDamaged, match="entry 5 of xz-1 is not as it was written"):
        log.audit.archive("9999-01-01T00:00:00Z", archive)
    assert log.audit.count("xz-1") == 20 and list(archive.glob("*")) == []


@pytest.mark.parametrize("change", ["signature = X'00'", "to_seq = 'ten'", "time = X'05'"])
def test_a_stored_countersignature_changed_into_other_types_is_reported_never_a_crash(
    tmp_path: Path, change: str
) -> None:
    from security.auditchain import sign_witness

    log = Log(tmp_path)
    log.fill(20)
    partner = new_key()
    checkpoint = log.audit.checkpoints("xz-1")[0]
    witness = sign_witness(
        checkpoint, "411329", "2026-12-07T00:00:00Z", partner.scalar, partner.public.point,
        partner.key_id, NATIVE,
    )  # fmt: skip
    assert log.audit.keep_witness(witness)
    assert log.verify().ok
    log.sql(f"UPDATE audit_witness SET {change}")
    result = log.verify()
    assert not result.ok
    assert [f.kind for f in result.all_findings() if "countersignature of xz-1" in f.detail] == [
        "witness-invalid"
    ]
    if not change.startswith("to_seq"):  # else the row is no longer found at seq 10
        problems = entry_standing(log.audit, "xz-1", 3, log.keys(), NATIVE).witness_problems
        assert any("is not what it should be" in p for p in problems), problems
    with pytest.raises(LogDamaged, match="countersignature"):
        export_case(log.audit, "case-1", log.keys())


@pytest.mark.parametrize("change", ["to_seq = 'twenty'", "digest = X'00'", "file = 7"])
def test_a_stored_archive_record_changed_into_other_types_is_reported_never_a_crash(
    tmp_path: Path, change: str
) -> None:

    log = Log(tmp_path)
    log.fill(20)
    archive = tmp_path / "archive"
    assert log.audit.archive("9999-01-01T00:00:00Z", archive) is not None
    log.fill(10)
    assert log.verify(archive).ok
    log.sql(f"UPDATE audit_archive SET {change}")
    result = log.verify(archive)
    assert not result.ok
    assert "archive-broken" in {kind for kind, _ in _kinds(result)}
    if change.startswith("file"):  # SQLite keeps 7 in a text column as the text '7'
        return
    with pytest.raises(LogDamaged, match="archive file"):
        log.audit.archive("9999-01-01T00:00:00Z", archive)  # the next run says so, moves nothing

"""XGW-AUDIT/2 in-process: evidence packages that prove they are complete, checkpoints that say
when they were signed late, a node that will not sign a log rewritten under it, and the
witness rules — against a real SQLite log and real signatures."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.log import AuditEvent, AuditWriter, RollbackDetected
from gateway.audit.memory import SignedHeadMemory
from gateway.audit.verify import (
    KnownKey,
    entry_standing,
    export_case,
    verify_package,
    witness_problem,
)
from security import auditchain
from security.auditchain import GENESIS, entry_hash
from tests.audit_helpers import Log, rewrite_the_end
from tests.security_helpers import NATIVE, new_key


def _package(tmp_path: Path, count: int = 37, case: str = "case-1") -> tuple[Log, dict[str, Any]]:
    log = Log(tmp_path)
    log.fill(count)
    log.audit.checkpoint(log.key, NATIVE)
    return log, export_case(log.audit, case, log.keys())


def _fatal(package: dict[str, Any]) -> set[tuple[str, int | None]]:
    return {(f.kind, f.seq) for f in verify_package(package, NATIVE) if f.fatal}


def _reseal_entry(entry: dict[str, Any], change: Any) -> None:
    """A forger's edit of an entry: its body changed and its hash recomputed."""
    document = json.loads(entry["body"])
    change(document)
    body = auditchain.canonical(document)
    entry["body"], entry["hash"] = body.decode(), entry_hash(body)


def test_an_entrys_standing_names_its_checkpoint_and_what_is_wrong(tmp_path: Path) -> None:
    """What the console shows beside one entry: its body against its hash, the checkpoint
    that covers it, whether that signature verifies and the batch holds the entry."""
    log = Log(tmp_path)
    log.fill(25)  # checkpoints up to 10 and 20; 21–25 unsigned
    signed = entry_standing(log.audit, "xz-1", 14, log.keys(), NATIVE)
    assert signed.intact and signed.signature_valid and signed.in_root
    assert signed.checkpoint is not None and (
        signed.checkpoint.from_seq,
        signed.checkpoint.to_seq,
    ) == (10, 20)
    unsigned = entry_standing(log.audit, "xz-1", 23, log.keys(), NATIVE)
    assert unsigned.intact and unsigned.checkpoint is None and unsigned.signature_valid is None
    stranger = entry_standing(log.audit, "xz-1", 14, [], NATIVE)  # the signer's key unknown
    assert stranger.signature_valid is False
    log.sql(
        "UPDATE audit_entry SET body = CAST(replace(CAST(body AS TEXT), 'm-13', 'm-99') AS BLOB) WHERE seq = 14"
    )
    changed = entry_standing(log.audit, "xz-1", 14, log.keys(), NATIVE)
    assert changed.intact is False and changed.in_root  # the chained hash still in the batch
    resealed = entry_hash(next(log.audit.rows("xz-1", 13))[1])
    log.sql("UPDATE audit_entry SET hash = ? WHERE seq = 14", resealed)  # a forger's rehash
    forged = entry_standing(log.audit, "xz-1", 14, log.keys(), NATIVE)
    assert forged.intact and forged.in_root is False and forged.signature_valid


def test_entries_carry_their_case_chain(tmp_path: Path) -> None:
    log, package = _package(tmp_path)
    bodies = [json.loads(e["body"]) for e in package["entries"]]
    assert all(b["v"] == "XGW-AUDIT/2" for b in bodies)
    assert bodies[0]["case_prev"] == GENESIS
    hashes = [e["hash"] for e in package["entries"]]
    assert [b["case_prev"] for b in bodies[1:]] == hashes[:-1]
    assert verify_package(package, NATIVE) == []
    # an entry of no case links to no case
    log.audit.append(AuditEvent("gateway.started"))
    last = next(log.audit.rows("xz-1", 37))
    assert json.loads(last[1])["case_prev"] is None


@pytest.mark.parametrize("dropped", [0, 5, -1])
def test_a_package_that_leaves_out_entries_of_its_case_says_where(
    tmp_path: Path, dropped: int
) -> None:
    _log, package = _package(tmp_path)
    entries = package["entries"]
    gone = entries.pop(dropped)
    found = verify_package(package, NATIVE)
    if dropped == -1:
        # the newest entries cannot be missed by links: the package holds up to its last
        assert [f for f in found if f.fatal] == []
        return
    following = entries[dropped]
    assert ("omitted", following["seq"]) in {(f.kind, f.seq) for f in found}
    detail = next(f.detail for f in found if f.kind == "omitted")
    if dropped:
        assert str(gone["seq"] - 3) in detail or "between" in detail


def test_a_forged_link_is_located_even_with_its_hash_recomputed(tmp_path: Path) -> None:
    _log, package = _package(tmp_path)
    _reseal_entry(package["entries"][4], lambda d: d.update(case_prev="ab" * 32))
    kinds = _fatal(package)
    seq = package["entries"][4]["seq"]
    assert ("omitted", seq) in kinds  # its case link no longer holds
    assert ("modified", seq) in kinds  # and it is not what the checkpoint signed


def test_consecutive_entries_of_a_node_must_link(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(12, case="case-1")  # every entry of one case: the package holds consecutive seqs
    log.audit.checkpoint(log.key, NATIVE)
    package = export_case(log.audit, "case-1", log.keys())
    _reseal_entry(package["entries"][6], lambda d: d.update(prev="cd" * 32))
    assert ("inserted", 7) in _fatal(package)


def test_checkpoints_of_a_package_must_link(tmp_path: Path) -> None:
    log, package = _package(tmp_path)
    first, second = package["checkpoints"][0], package["checkpoints"][1]
    assert second["from_seq"] == first["to_seq"]
    # a forger with the signing key re-signs the second checkpoint over another history
    rows = list(log.audit.rows("xz-1", second["from_seq"]))[: second["to_seq"] - second["from_seq"]]
    made = auditchain.sign_checkpoint(
        second["node"],
        second["from_seq"],
        second["to_seq"],
        [str(r[2]) for r in rows],
        second["time"],
        "ef" * 32,  # links to no checkpoint that was
        log.key.scalar,
        log.key.public.point,
        log.key.key_id,
        NATIVE,
        auditchain.Interval(1000, 60000),
    )
    package["checkpoints"][1] = made.as_dict()
    assert ("checkpoint-missing", second["to_seq"]) in _fatal(package)


@pytest.mark.parametrize("body", ["[]", "null", "1", '"text"', "{", "", '{"seq": "1"}', "\u0000"])
def test_a_malformed_body_is_a_located_finding_not_a_traceback(tmp_path: Path, body: str) -> None:
    _log, package = _package(tmp_path)
    entry = package["entries"][2]
    entry["body"], entry["hash"] = body, entry_hash(body.encode())
    found = verify_package(package, NATIVE)
    assert ("modified", entry["seq"]) in {(f.kind, f.seq) for f in found if f.fatal}


def test_any_damage_to_a_package_is_findings_never_an_exception(tmp_path: Path) -> None:
    """Hostile packages: every field replaced by values of other types, lists emptied, keys
    dropped — verify_package answers with findings for each (seeded, reproducible)."""
    _log, package = _package(tmp_path, count=20)
    rng = random.Random(2026)
    oddities: list[Any] = [None, [], {}, "", "zz", -1, 2**70, True, 1.5, ["x"], {"a": 1}]

    def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix] if prefix else []
        if isinstance(value, dict):
            for key, inner in value.items():
                found += paths(inner, (*prefix, key))
        elif isinstance(value, list):
            for index, inner in enumerate(value[:3]):
                found += paths(inner, (*prefix, index))
        return found

    # what the package's proof rests on: a change to any of it must be seen; elsewhere (the
    # export time, a key's validity bounds) it need only not break the verifier
    def matters(path: tuple[Any, ...]) -> bool:
        return path[0] in ("format", "case_id", "entries", "checkpoints") or path[-1] in (
            "public_key_pem",
            "key_id",
        )

    every = paths(package)
    for _ in range(300):
        copy = json.loads(json.dumps(package))
        where = rng.choice(every)
        holder = copy
        for step in where[:-1]:
            holder = holder[step]
        oddity = rng.choice(oddities)
        if oddity == holder[where[-1]]:
            continue
        holder[where[-1]] = oddity
        findings = verify_package(copy, NATIVE)  # never an exception, whatever it holds
        assert all(isinstance(f.kind, str) and f.detail for f in findings)
        if matters(where):
            assert [f for f in findings if f.fatal], where
    garbage: Any
    for garbage in [
        None,
        [],
        "x",
        {"format": "XGW-EVIDENCE/1"},
        {"format": "XGW-EVIDENCE/1", "case_id": 1},
    ]:
        assert verify_package(garbage, NATIVE)


def test_a_late_batch_is_signed_with_a_flag_the_verifier_reports(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.fill(5, checkpoint_every=100)
    made = log.audit.checkpoint(log.key, NATIVE, every=(2, 60.0))  # 5 entries, N = 2
    assert made is not None and made.flags == "oversize"
    assert made.interval_entries == 2 and made.interval_ms == 60000
    result = log.verify()
    assert result.ok
    notes = [f for f in result.all_findings() if f.kind == "checkpoint-late"]
    assert [(f.seq, f.fatal) for f in notes] == [(5, False)]
    # a forger who drops the flag breaks the signature; one who re-signs without it (with
    # the key) is caught by the rule itself
    log.sql("UPDATE audit_checkpoint SET flags = '' WHERE to_seq = 5")
    kinds = {(f.kind, f.seq) for f in log.verify().all_findings() if f.fatal}
    assert ("checkpoint-invalid", 5) in kinds


def test_overdue_is_judged_by_the_first_entrys_age() -> None:
    assert auditchain.late_flags(10, 119.0, 10, 60_000) == ""
    assert auditchain.late_flags(10, 121.0, 10, 60_000) == "overdue"
    assert auditchain.late_flags(21, 121.0, 10, 60_000) == "oversize,overdue"
    assert auditchain.late_flags(20, 0.0, 10, 60_000) == ""


async def test_a_node_refuses_to_sign_a_log_rewritten_under_it(tmp_path: Path) -> None:
    log = Log(tmp_path)
    memory = SignedHeadMemory(tmp_path / "keys", "xz-1")
    writer = AuditWriter(log.audit, lambda: log.key, NATIVE, 8, 3600, memory=memory)
    writer.start()
    for n in range(40):
        await writer.append(AuditEvent("message.sent", case_id=f"case-{n % 4}"))
        if n % 8 == 7:
            await writer._maybe_checkpoint(force=True)  # as its loop would
    await writer.close()
    remembered = await memory.recall()
    assert remembered is not None and remembered[0] == 40
    assert log.verify().ok
    assert rewrite_the_end(log.path, first_dropped=17) == 16
    # a node without its memory signs the rewrite as one batch, and a verifier that has only
    # the log passes it — but the batch says it was late (what the forger left)
    copy = tmp_path / "copy"
    copy.mkdir()
    for part in tmp_path.glob("audit.sqlite3*"):  # with its WAL: what the forger committed
        shutil.copy(part, copy / part.name)
    forgetful = Log(copy, key=log.key)
    signed = forgetful.audit.checkpoint(log.key, NATIVE, every=(8, 3600.0))
    assert signed is not None and (signed.from_seq, signed.to_seq) == (16, 40)
    result = forgetful.verify()
    assert result.ok and [f.kind for f in result.all_findings() if f.kind == "checkpoint-late"]
    with pytest.raises(RollbackDetected, match="seq 40 is no longer in the log"):
        log.audit.check_extends(remembered)
    restarted = AuditWriter(log.audit, lambda: log.key, NATIVE, 8, 3600, memory=memory)
    restarted.start()
    await restarted.append(AuditEvent("gateway.started"))
    await restarted.close()  # a forced checkpoint at close: refused too
    assert restarted.refusal is not None and "seq 40" in restarted.refusal
    kept = log.audit.last_checkpoint()
    assert kept is not None and kept.to_seq == 16  # nothing was signed over the rewrite
    # an operator accepts the log as it is (xgw audit accept-rollback: the memory forgotten);
    # the node signs again, and the late batch says so
    await memory.forget()
    again = AuditWriter(log.audit, lambda: log.key, NATIVE, 8, 3600, memory=memory)
    again.start()
    await again.close()
    assert again.refusal is None
    late = log.audit.last_checkpoint()
    assert late is not None and late.to_seq == 41 and late.flags == "oversize"


async def test_a_memory_in_redis_outlives_the_nodes_folder(tmp_path: Path, redis_url: str) -> None:
    from adapters import redis_client

    redis = redis_client.connect(redis_url)
    try:
        first = SignedHeadMemory(tmp_path / "a", "xz-1", redis)
        await first.remember(16, "aa" * 32)
        await first.remember(8, "bb" * 32)  # an older one never replaces a newer one
        rebuilt = SignedHeadMemory(tmp_path / "b", "xz-1", redis)  # a new host: no file
        assert await rebuilt.recall() == (16, "aa" * 32)
        await rebuilt.forget()
        assert await SignedHeadMemory(tmp_path / "c", "xz-1", redis).recall() is None
    finally:
        await redis.aclose()


def test_witness_rules() -> None:
    key = new_key()

    def checkpoint(from_seq: int, to_seq: int, prev: str, head: str = "11" * 32) -> Any:
        return auditchain.sign_checkpoint(
            "xz-1", from_seq, to_seq, [head] * (to_seq - from_seq), "2026-12-07T00:00:00Z",
            prev, key.scalar, key.public.point, key.key_id, NATIVE,
            auditchain.Interval(8, 60000),
        )  # fmt: skip

    first = checkpoint(0, 8, GENESIS)
    second = checkpoint(8, 16, first.hash)
    seen = [
        auditchain.Witnessed("xz-1", c.from_seq, c.to_seq, c.hash, c.prev) for c in (first, second)
    ]
    assert auditchain.witness_conflict(seen, second) is None  # the same one again
    assert auditchain.witness_conflict(seen, checkpoint(16, 24, second.hash)) is None
    assert "overlaps" in str(auditchain.witness_conflict(seen, checkpoint(8, 20, first.hash)))
    assert "overlaps" in str(
        auditchain.witness_conflict(seen, checkpoint(8, 16, first.hash, head="22" * 32))
    )
    assert "does not link" in str(auditchain.witness_conflict(seen, checkpoint(16, 24, "00" * 32)))
    other_node = auditchain.Witnessed("xz-2", 0, 8, "33" * 32, GENESIS)
    assert auditchain.witness_conflict([other_node], first) is None


def test_a_countersignature_is_checked_against_the_checkpoint_and_the_witness_key() -> None:
    ours, theirs = new_key(), new_key()
    made = auditchain.sign_checkpoint(
        "xz-1", 0, 2, ["11" * 32, "22" * 32], "2026-12-07T00:00:00Z", GENESIS, ours.scalar,
        ours.public.point, ours.key_id, NATIVE, auditchain.Interval(8, 60000),
    )  # fmt: skip
    witness = auditchain.sign_witness(
        made, "411329", "2026-12-07T00:00:01Z", theirs.scalar, theirs.public.point,
        theirs.key_id, NATIVE,
    )  # fmt: skip
    key = KnownKey(theirs.key_id, theirs.public.point, None, None, "", "411329")
    assert witness_problem(witness, {2: made}, [key], NATIVE) is None
    other = auditchain.sign_checkpoint(
        "xz-1", 0, 2, ["11" * 32, "33" * 32], "2026-12-07T00:00:00Z", GENESIS, ours.scalar,
        ours.public.point, ours.key_id, NATIVE, auditchain.Interval(8, 60000),
    )  # fmt: skip
    conflict = witness_problem(witness, {2: other}, [key], NATIVE)
    assert conflict is not None and conflict.kind == "witness-conflict" and conflict.fatal
    wrong_region = KnownKey(theirs.key_id, theirs.public.point, None, None, "", "411323")
    unverified = witness_problem(witness, {2: made}, [wrong_region], NATIVE)
    assert unverified is not None and not unverified.fatal
    forged = auditchain.Witness(**{**witness.as_dict(), "time": "2026-12-07T00:00:02Z"})
    invalid = witness_problem(forged, {2: made}, [key], NATIVE)
    assert invalid is not None and invalid.kind == "witness-invalid"


@pytest.mark.parametrize(
    "document",
    [None, [], {}, {"node": "x"}, {"node": 1, "from_seq": 0}, "checkpoint"],
)
def test_a_checkpoint_from_outside_is_checked_field_by_field(document: Any) -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        auditchain.checkpoint_from(document)


def test_the_signed_bytes_of_each_format() -> None:
    """What an auditor's tool must rebuild: /1 ends at key_id, /2 adds three lines."""
    v1 = auditchain.checkpoint_bytes("n", 0, 2, "h", "r", "t", "p", "k")
    assert (
        v1
        == b"XGW-AUDIT/1 checkpoint\nnode=n\nfrom=0\nto=2\nhead=h\nroot=r\ntime=t\nprev=p\nkey_id=k\n"
    )
    v2 = auditchain.checkpoint_bytes(
        "n", 0, 2, "h", "r", "t", "p", "k", auditchain.Interval(8, 60000, "oversize")
    )
    assert v2 == (
        b"XGW-AUDIT/2 checkpoint\nnode=n\nfrom=0\nto=2\nhead=h\nroot=r\ntime=t\nprev=p\n"
        b"key_id=k\ninterval_entries=8\ninterval_ms=60000\nflags=oversize\n"
    )

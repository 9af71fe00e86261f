"""Offline verification of the exchange log and of evidence packages (public keys only)."""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import multiprocessing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.log import AuditLog, LogDamaged, entry_text, now_iso
from gateway.storage.logschema import COLUMNS
from security import auditchain
from security.auditchain import GENESIS, ChainReport, Checkpoint, Finding, Witness
from security.backend import CryptoBackend
from security.digest import sm3_hex
from security.keys import load_public_key
from security.trust import OwnKey, TrustedKey

EVIDENCE_FORMAT = "XGW-EVIDENCE/1"


@dataclass(frozen=True)
class KnownKey:
    key_id: str
    point: bytes
    not_before: datetime | None
    not_after: datetime | None
    pem: str
    region: str | None = None  # a witness's: the partner it speaks for

    @classmethod
    def of_own(cls, own: OwnKey) -> KnownKey:
        """One of our signing keys, with the validity our trust store gives it."""
        public = own.key.public
        return cls(
            own.key.key_id,
            public.point,
            own.validity.not_before,
            own.validity.not_after,
            public.to_pem().decode(),
        )

    @classmethod
    def of_partner(cls, trusted: TrustedKey) -> KnownKey:
        """A partner's signing key (a witness's), with the validity our trust store gives it."""
        return cls(
            trusted.key.key_id,
            trusted.key.point,
            trusted.validity.not_before,
            trusted.validity.not_after,
            trusted.key.to_pem().decode(),
            trusted.region,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "public_key_pem": self.pem,
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            **({"region": self.region} if self.region is not None else {}),
        }

    def valid_at(self, moment: str) -> bool:
        try:
            when = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return False
        return (self.not_before is None or self.not_before <= when) and (
            self.not_after is None or when <= self.not_after
        )


def key_resolver(keys: list[KnownKey]) -> Callable[[str, str], bytes | None]:
    by_id = {k.key_id: k for k in keys}

    def resolve(key_id: str, moment: str) -> bytes | None:
        key = by_id.get(key_id)
        return key.point if key is not None and key.valid_at(moment) else None

    return resolve


def witness_problem(
    witness: Witness,
    checkpoints: dict[int, Checkpoint],
    witness_keys: list[KnownKey],
    backend: CryptoBackend,
) -> Finding | None:
    """What is wrong with a countersignature kept beside a node's checkpoints (None: it is
    one of the witness's keys, valid then, over the checkpoint the log holds at that seq)."""
    ours = checkpoints.get(witness.to_seq)
    if ours is None or ours.hash != witness.checkpoint:
        return Finding(
            "witness-conflict",
            witness.node,
            witness.to_seq,
            f"{witness.witness} countersigned another checkpoint up to this seq than the log "
            "holds: the log's end was rewritten or cut after it was witnessed",
        )
    key = next(
        (
            k
            for k in witness_keys
            if k.key_id == witness.key_id
            and k.region == witness.witness
            and k.valid_at(witness.time)
        ),
        None,
    )
    if key is None:
        return Finding(
            "witness-unverified",
            witness.node,
            witness.to_seq,
            f"{witness.witness}'s key {witness.key_id[:16]}… is not known to this verifier",
            fatal=False,
        )
    if not auditchain.witness_signature_valid(witness, key.point, backend):
        return Finding(
            "witness-invalid",
            witness.node,
            witness.to_seq,
            f"{witness.witness}'s countersignature does not verify",
        )
    return None


@dataclass(frozen=True)
class EntryStanding:
    """What an auditor looking at one entry wants to know: does its body still hash to the
    value chained, which signed checkpoint covers it, does that signature verify, who
    countersigned it."""

    intact: bool | None  # None: the entry is not in the live log (archived)
    checkpoint: Checkpoint | None  # None: not signed yet (the next checkpoint covers it)
    # the stored batch hashes to the checkpoint's Merkle root, with this entry in it
    in_root: bool | None
    signature_valid: bool | None
    witnesses: tuple[str, ...]  # the partners whose countersignature verifies
    witness_problems: tuple[str, ...]
    damaged: str | None = None  # the covering checkpoint as stored is not well formed


def batch_hashes(
    audit: AuditLog,
    node: str,
    checkpoint: Checkpoint,
    cache: dict[tuple[str, int], list[str]],
) -> list[str]:
    """The stored hashes of a checkpoint's batch in the live log, read once per ``cache``."""
    key = (node, checkpoint.to_seq)
    if key not in cache:
        rows = audit.rows(node, checkpoint.from_seq, checkpoint.to_seq)
        cache[key] = [str(r[2]) for r in rows]
    return cache[key]


def entry_standing(
    audit: AuditLog,
    node: str,
    seq: int,
    keys: list[KnownKey],
    backend: CryptoBackend,
    witness_keys: list[KnownKey] | None = None,
    batches: dict[tuple[str, int], list[str]] | None = None,
) -> EntryStanding:
    """One entry's standing, read from the live log (a whole-log check is ``verify_log``);
    ``batches`` keeps the checkpoints' batches read, for the next entry of a page."""
    stored = audit.entry(node, seq)
    intact = None if stored is None else auditchain.entry_hash(stored[0]) == stored[1]
    try:
        covering = audit.checkpoint_covering(node, seq)
    except LogDamaged as exc:
        return EntryStanding(intact, None, None, None, (), (), str(exc))
    if covering is None:
        return EntryStanding(intact, None, None, None, (), ())
    batch = batch_hashes(audit, node, covering, {} if batches is None else batches)
    in_root = (
        stored is not None
        and len(batch) == covering.to_seq - covering.from_seq
        and all(map(auditchain.is_entry_hash, batch))
        and auditchain.merkle_root(batch) == covering.root
        and batch[seq - covering.from_seq - 1] == stored[1]
    )
    point = key_resolver(keys)(covering.key_id, covering.time)
    valid = point is not None and auditchain.checkpoint_signature_valid(covering, point, backend)
    good: list[str] = []
    problems: list[str] = []
    try:
        witnesses = audit.witnesses_at(node, covering.to_seq)
    except LogDamaged as exc:
        witnesses, problems = [], [str(exc)]
    for witness in witnesses:
        problem = witness_problem(witness, {covering.to_seq: covering}, witness_keys or [], backend)
        if problem is None:
            good.append(witness.witness)
        else:
            problems.append(problem.detail)
    return EntryStanding(intact, covering, in_root, valid, tuple(good), tuple(problems))


@dataclass
class VerifyResult:
    reports: list[ChainReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports) and not any(f.fatal for f in self.findings)

    def all_findings(self) -> list[Finding]:
        return [*self.findings, *(f for r in self.reports for f in r.findings)]


def _archive_files(folder: Path, node: str) -> list[Path]:
    return sorted(folder.glob(f"{node}-*.jsonl")) if folder.is_dir() else []


def _entry_form(record: dict[str, Any]) -> bool:
    """An entry as archive lines and evidence packages carry it: ``seq`` a whole number,
    ``body`` and ``hash`` strings (what they say is checked after)."""
    return (
        type(record.get("seq")) is int
        and isinstance(record.get("body"), str)
        and isinstance(record.get("hash"), str)
    )


class ArchiveUnreadable(LogDamaged):
    """An archive file whose lines are not what an archive's are (damaged, or not one)."""


def _read_archive(
    path: Path, data: bytes | None = None
) -> tuple[dict[str, Any], list[Checkpoint], list[tuple[Any, ...]]]:
    """An archive file's header, checkpoints and entry rows, each line's form checked (the
    file may come from anywhere); what the entries' bodies say is the verifier's to check.
    ``ArchiveUnreadable`` naming the line that is not well formed."""
    header: dict[str, Any] = {}
    checkpoints: list[Checkpoint] = []
    rows: list[tuple[Any, ...]] = []
    for number, line in enumerate((path.read_bytes() if data is None else data).splitlines()):
        try:
            record = orjson.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            if number == 0:
                if type(record.get("from_seq")) is not int or type(record.get("anchor")) is not str:
                    raise ValueError("a header needs from_seq (a number) and anchor")
                header = record
            elif "checkpoint" in record:
                checkpoints.append(auditchain.checkpoint_from(record["checkpoint"]))
            elif _entry_form(record):
                rows.append((record["seq"], record["body"].encode(), record["hash"]))
            else:
                raise ValueError("an entry needs seq (a number), body and hash")
        except ValueError as exc:  # orjson's JSONDecodeError is one
            raise ArchiveUnreadable(f"archive {path.name}, line {number + 1}: {exc}") from None
    return header, checkpoints, rows


def verify_log(
    audit: AuditLog,
    keys: list[KnownKey],
    backend: CryptoBackend,
    archive_dir: Path | None = None,
    from_seq: int | None = None,
    unsigned_tail_limit: int | None = None,
    progress: Callable[[], None] | None = None,
    witness_keys: list[KnownKey] | None = None,
    workers: int = 1,
    segment_entries: int | None = None,
) -> VerifyResult:
    """Every node's chain (and, with ``archive_dir``, its archives), and each countersignature
    partners gave its checkpoints (checked with ``witness_keys``, the partners' keys). With
    ``workers`` > 1, a long live chain is cut at its checkpoints into segments verified in
    that many processes at once (``_verify_segments``)."""
    result = VerifyResult()
    key_for = key_resolver(keys)
    for node in sorted(audit.nodes()):
        anchor_seq, anchor_hash = 0, GENESIS
        kept, damaged = audit.archives_checked(node)
        result.findings += [Finding("archive-broken", node, None, d) for d in damaged]
        recorded = {r[2]: r for r in kept}
        if archive_dir is not None and from_seq is None:
            previous_digest = GENESIS
            files = _archive_files(archive_dir, node)
            for name in sorted(set(recorded) - {p.name for p in files}):
                result.findings.append(
                    Finding(
                        "archive-broken",
                        node,
                        recorded[name][1],
                        f"archive {name} is recorded but missing",
                    )
                )
            for path, checked in zip(
                files, _each_archive(files, node, keys, backend, workers), strict=True
            ):
                if checked is None:
                    result.findings.append(
                        Finding(
                            "archive-broken", node, None, f"archive {path.name} is not readable"
                        )
                    )
                    break
                digest, header, report = checked
                _tell(progress, report.entries)
                record = recorded.get(path.name)
                if record is not None and record[3] != digest:
                    result.findings.append(
                        Finding(
                            "archive-broken",
                            node,
                            header.get("to_seq"),
                            f"archive {path.name} differs from the digest recorded when it was written",
                        )
                    )
                if header.get("prev_archive_digest") != previous_digest:
                    result.findings.append(
                        Finding(
                            "archive-broken",
                            node,
                            header.get("from_seq"),
                            f"archive {path.name} does not link to the previous archive",
                        )
                    )
                if header.get("from_seq") != anchor_seq or header.get("anchor") != anchor_hash:
                    result.findings.append(
                        Finding(
                            "archive-broken",
                            node,
                            header.get("from_seq"),
                            f"archive {path.name} does not continue the chain at seq {anchor_seq}",
                        )
                    )
                result.reports.append(report)
                previous_digest = digest
                anchor_seq, anchor_hash = report.last_seq or anchor_seq, report.head
        elif recorded:
            last = max(recorded.values(), key=lambda r: r[1])
            anchor_seq, anchor_hash = last[1], last[4]
        if from_seq is not None and from_seq > 1:
            row = next(audit.rows(node, from_seq - 2), None)
            if row is not None and row[0] == from_seq - 1:
                anchor_seq, anchor_hash = from_seq - 1, str(row[2])
        stored, damaged = audit.checkpoints_checked(node)
        result.findings += [Finding("checkpoint-invalid", node, None, d) for d in damaged]
        checkpoints = [c for c in stored if c.from_seq >= anchor_seq]
        segments = _segments(checkpoints, anchor_seq, anchor_hash, segment_entries)
        if workers > 1 and len(segments) > 1:
            report = auditchain.joined_reports(
                node,
                _verify_segments(
                    audit, node, segments, checkpoints, keys, backend, workers, progress
                ),
            )
            auditchain.finish_chain(report, checkpoints, anchor_seq, unsigned_tail_limit)
        else:
            report = auditchain.verify_chain(
                node,
                audit.rows(node, anchor_seq),
                checkpoints,
                key_for,
                backend,
                anchor_seq=anchor_seq,
                anchor_hash=anchor_hash,
                unsigned_tail_limit=unsigned_tail_limit,
                progress=progress,
                column_names=COLUMNS,
            )
        result.reports.append(report)
        result.findings += _witness_findings(
            audit, node, stored, checkpoints, witness_keys or [], backend, from_seq is None
        )
    return result


# A segment is about this many entries: a chain is worth processes of its own (each starts in
# ~0.3 s) from two of them; progress is told a segment at a time.
SEGMENT_ENTRIES = 40_000


@dataclass(frozen=True)
class Segment:
    """Entries ``(after, to]`` of a node's chain (``to`` None: to its end), starting from a
    checkpoint's end: the first entry must link to ``anchor`` (that checkpoint's head)."""

    after: int
    to: int | None
    anchor: str


def _segments(
    checkpoints: list[Checkpoint], anchor_seq: int, anchor_hash: str, size: int | None = None
) -> list[Segment]:
    """The chain cut at checkpoint ends into segments of about ``size`` entries."""
    cuts: list[Segment] = []
    after, anchor = anchor_seq, anchor_hash
    for checkpoint in sorted(checkpoints, key=lambda c: c.to_seq):
        if checkpoint.to_seq - after >= (size or SEGMENT_ENTRIES):
            cuts.append(Segment(after, checkpoint.to_seq, anchor))
            after, anchor = checkpoint.to_seq, checkpoint.head
    return [*cuts, Segment(after, None, anchor)]


@dataclass(frozen=True)
class _SegmentJob:
    address: tuple[str, str]
    node: str
    segment: Segment
    checkpoints: list[Checkpoint]
    keys: list[KnownKey]
    backend: str


def _verify_segment(job: _SegmentJob) -> ChainReport:
    """In a worker process: one segment, read from the log by this process."""
    from gateway.storage.logtables import reopen_log_tables
    from security.backend import get_backend

    tables = reopen_log_tables(job.address)
    try:
        return auditchain.verify_chain(
            job.node,
            tables.rows(job.node, job.segment.after, job.segment.to),
            job.checkpoints,
            key_resolver(job.keys),
            get_backend(job.backend),
            anchor_seq=job.segment.after,
            anchor_hash=job.segment.anchor,
            column_names=COLUMNS,
            final=False,
        )
    finally:
        tables.close()


def _verify_segments(
    audit: AuditLog,
    node: str,
    segments: list[Segment],
    checkpoints: list[Checkpoint],
    keys: list[KnownKey],
    backend: CryptoBackend,
    workers: int,
    progress: Callable[[], None] | None,
) -> list[ChainReport]:
    """The segments' reports, in chain order, each verified in a process of a pool."""
    jobs = [
        _SegmentJob(
            audit.tables.address,
            node,
            segment,
            [
                c
                for c in checkpoints
                if segment.after < c.to_seq and (segment.to is None or c.to_seq <= segment.to)
            ],
            keys,
            backend.name,
        )
        for segment in segments
    ]
    reports: list[ChainReport | None] = [None] * len(jobs)
    with _process_pool(min(workers, len(jobs))) as pool:
        running = {pool.submit(_verify_segment, job): n for n, job in enumerate(jobs)}
        for done in concurrent.futures.as_completed(running):
            report = done.result()
            reports[running[done]] = report
            _tell(progress, report.entries)
    return [r for r in reports if r is not None]


def _process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    # spawned, not forked: the caller may be a gateway with threads and open connections
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")
    )


def _tell(progress: Callable[[], None] | None, entries: int) -> None:
    """Progress is told an entry at a time; work done elsewhere is told when it is back."""
    if progress is not None:
        for _ in range(entries):
            progress()


_Archive = tuple[str, dict[str, Any], ChainReport]


def _verify_archive(path: Path, node: str, keys: list[KnownKey], backend: str) -> _Archive | None:
    """One archive file: its digest, its header and its chain's report (None: unreadable).
    Each file is a whole piece of the chain with its checkpoints, so files verify apart."""
    from security.backend import get_backend

    data = path.read_bytes()
    try:
        header, checkpoints, rows = _read_archive(path, data)
    except ArchiveUnreadable:
        return None
    report = auditchain.verify_chain(
        node,
        rows,
        checkpoints,
        key_resolver(keys),
        get_backend(backend),
        anchor_seq=int(header.get("from_seq", 0)),
        anchor_hash=str(header.get("anchor", GENESIS)),
        unsigned_tail_limit=0,
    )
    return sm3_hex(data), header, report


def _each_archive(
    files: list[Path], node: str, keys: list[KnownKey], backend: CryptoBackend, workers: int
) -> Iterator[_Archive | None]:
    """The files' outcomes in their order: in processes of their own with ``workers`` > 1."""
    if workers <= 1 or len(files) < 2:
        for path in files:
            yield _verify_archive(path, node, keys, backend.name)
        return
    with _process_pool(min(workers, len(files))) as pool:
        yield from pool.map(
            functools.partial(_verify_archive, node=node, keys=keys, backend=backend.name), files
        )


def _witness_findings(
    audit: AuditLog,
    node: str,
    stored: list[Checkpoint],
    checkpoints: list[Checkpoint],
    witness_keys: list[KnownKey],
    backend: CryptoBackend,
    whole: bool,
) -> list[Finding]:
    """``stored``: the node's well-formed checkpoints; ``checkpoints``: those verified now."""
    by_to_seq = {c.to_seq: c for c in stored}
    kept, damaged = audit.witnesses_checked(node)
    findings = [Finding("witness-invalid", node, None, d) for d in damaged]
    witnessed: set[int] = set()
    for witness in kept:
        problem = witness_problem(witness, by_to_seq, witness_keys, backend)
        if problem is not None:
            findings.append(problem)
        witnessed.add(witness.to_seq)
    unwitnessed = [c for c in checkpoints if c.to_seq not in witnessed]
    if whole and unwitnessed:
        findings.append(
            Finding(
                "unwitnessed",
                node,
                unwitnessed[-1].to_seq,
                f"{len(unwitnessed)} of {len(checkpoints)} checkpoints have no partner's "
                "countersignature (yet, or no partner was exchanged with in their batches)",
                fatal=False,
            )
        )
    return findings


# -- evidence packages -------------------------------------------------------------------------


def export_case(
    audit: AuditLog,
    case_id: str,
    keys: list[KnownKey],
    archive_dir: Path | None = None,
    witness_keys: list[KnownKey] | None = None,
) -> dict[str, Any]:
    """Every entry of a case — live and, with ``archive_dir``, archived — with the signed
    checkpoints and Merkle proofs that cover them, and the partners' countersignatures of
    those checkpoints (``witness_keys``: the partners' keys, to carry the ones used)."""
    entries: list[dict[str, Any]] = []
    checkpoints: dict[tuple[str, int], Checkpoint] = {}
    live_batches: dict[tuple[str, int], list[str]] = {}

    def add(
        node: str,
        seq: int,
        body: bytes,
        digest: str,
        covering: Checkpoint | None,
        batch: list[str] | None,
    ) -> None:
        entry: dict[str, Any] = {
            "node": node, "seq": seq, "hash": digest, "body": entry_text(node, seq, body),
        }  # fmt: skip
        if covering is not None and batch is not None:
            if not all(map(auditchain.is_entry_hash, batch)):
                raise LogDamaged(
                    f"the stored hashes of {node}'s batch up to seq {covering.to_seq} are not "
                    "all SM3 hashes"
                )
            checkpoints[(node, covering.to_seq)] = covering
            entry["checkpoint"] = covering.to_seq
            entry["proof"] = auditchain.merkle_proof(batch, seq - covering.from_seq - 1)
        entries.append(entry)

    witnesses: list[Witness] = []
    for node in sorted(audit.nodes()):
        for path in _archive_files(archive_dir, node) if archive_dir is not None else []:
            _header, archived_checkpoints, rows = _read_archive(path)
            hashes = {seq: digest for seq, _body, digest in rows}
            for seq, body, digest in rows:
                if _case_of(body) != case_id:
                    continue
                covering = next(
                    (c for c in archived_checkpoints if c.from_seq < seq <= c.to_seq), None
                )
                batch = (
                    [hashes[n] for n in range(covering.from_seq + 1, covering.to_seq + 1)]
                    if covering is not None
                    else None
                )
                add(node, seq, body, digest, covering, batch)
        node_checkpoints = audit.checkpoints(node)
        for seq, body, digest in audit.case_rows(node, case_id):
            covering = next((c for c in node_checkpoints if c.from_seq < seq <= c.to_seq), None)
            add(
                node,
                seq,
                body,
                digest,
                covering,
                batch_hashes(audit, node, covering, live_batches) if covering is not None else None,
            )
        witnesses += [w for w in audit.witnesses(node) if (node, w.to_seq) in checkpoints]
    used = {c.key_id for c in checkpoints.values()}
    witnessed_by = {w.key_id for w in witnesses}
    return {
        "format": EVIDENCE_FORMAT,
        "case_id": case_id,
        "exported": now_iso(),
        "entries": entries,
        "checkpoints": [c.as_dict() for c in checkpoints.values()],
        "keys": [k.as_dict() for k in keys if k.key_id in used],
        "witnesses": [w.as_dict() for w in witnesses],
        "witness_keys": [k.as_dict() for k in witness_keys or [] if k.key_id in witnessed_by],
    }


def verify_package(
    package: Any, backend: CryptoBackend, pinned_key_ids: set[str] | None = None
) -> list[Finding]:
    """Check a package offline: every entry's bytes, its place in its node's chain and in its
    case's chain (so that a package leaving out entries of its case is caught), the signed
    checkpoints and their links, each entry's Merkle proof, and the witnesses'
    countersignatures. Whatever the file holds, the answer is a list of located findings.
    ``pinned_key_ids``: checkpoint key ids the auditor trusts independently."""
    if not isinstance(package, dict) or package.get("format") != EVIDENCE_FORMAT:
        return [Finding("package-invalid", "-", None, f"not an {EVIDENCE_FORMAT} package")]
    findings: list[Finding] = []
    case_id = package.get("case_id")
    if not isinstance(case_id, str):
        return [Finding("package-invalid", "-", None, "the package names no case")]
    keys = _package_keys(package, "keys", findings, pinned_key_ids)
    witness_keys = _package_keys(package, "witness_keys", findings, None)
    checkpoints = _package_checkpoints(package, keys, backend, findings)
    entries = _package_entries(package, case_id, findings)
    if not entries:
        findings.append(Finding("package-invalid", "-", None, "the package has no entries"))
    _check_entry_links(entries, findings)
    for entry in entries:
        _check_proof(entry, checkpoints, findings)
    for raw in _listed(package, "witnesses", findings):
        try:
            witness = auditchain.witness_from(raw)
        except ValueError as exc:
            findings.append(Finding("package-invalid", "-", None, f"a witness: {exc}"))
            continue
        of_node = {to_seq: c for (node, to_seq), c in checkpoints.items() if node == witness.node}
        problem = witness_problem(witness, of_node, witness_keys, backend)
        if problem is not None:
            findings.append(problem)
    return findings


@dataclass(frozen=True)
class _Entry:
    node: str
    seq: int
    hash: str
    document: dict[str, Any]
    checkpoint: Any
    proof: Any


def _case_of(body: bytes) -> Any:
    """The case an entry's body names (None for a body that is not an entry's: the verifier
    reports it)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document.get("case_id") if isinstance(document, dict) else None


def _listed(package: dict[str, Any], name: str, findings: list[Finding]) -> list[Any]:
    value = package.get(name, [])
    if not isinstance(value, list):
        findings.append(Finding("package-invalid", "-", None, f"{name} is not a list"))
        return []
    return value


def _package_keys(
    package: dict[str, Any], name: str, findings: list[Finding], pinned: set[str] | None
) -> list[KnownKey]:
    keys: list[KnownKey] = []
    for raw in _listed(package, name, findings):
        try:
            public = load_public_key(str(raw["public_key_pem"]).encode())
            not_before = (
                datetime.fromisoformat(raw["not_before"]) if raw.get("not_before") else None
            )
            not_after = datetime.fromisoformat(raw["not_after"]) if raw.get("not_after") else None
        except Exception:  # a PEM or a date that does not load, or no mapping at all
            findings.append(Finding("package-invalid", "-", None, f"one of {name} does not load"))
            continue
        if public.key_id != raw.get("key_id"):
            findings.append(
                Finding(
                    "package-invalid",
                    "-",
                    None,
                    f"key id {str(raw.get('key_id'))[:16]}… does not match its key",
                )
            )
            continue
        if pinned is not None and public.key_id not in pinned:
            findings.append(
                Finding(
                    "key-untrusted", "-", None, f"key {public.key_id[:16]}… is not one you pinned"
                )
            )
            continue
        region = raw.get("region")
        keys.append(
            KnownKey(
                public.key_id,
                public.point,
                not_before,
                not_after,
                str(raw["public_key_pem"]),
                region if isinstance(region, str) else None,
            )
        )
    return keys


def _package_checkpoints(
    package: dict[str, Any], keys: list[KnownKey], backend: CryptoBackend, findings: list[Finding]
) -> dict[tuple[str, int], Checkpoint]:
    """The package's checkpoints whose signatures verify, and a finding for each link between
    consecutive ones that does not hold (one was removed or replaced)."""
    key_for = key_resolver(keys)
    checkpoints: dict[tuple[str, int], Checkpoint] = {}
    for raw in _listed(package, "checkpoints", findings):
        try:
            checkpoint = auditchain.checkpoint_from(raw)
        except ValueError as exc:
            findings.append(Finding("package-invalid", "-", None, f"a checkpoint: {exc}"))
            continue
        point = key_for(checkpoint.key_id, checkpoint.time)
        if point is None or not auditchain.checkpoint_signature_valid(checkpoint, point, backend):
            findings.append(
                Finding(
                    "checkpoint-invalid",
                    checkpoint.node,
                    checkpoint.to_seq,
                    "checkpoint signature does not verify with a key valid at its time",
                )
            )
            continue
        checkpoints[(checkpoint.node, checkpoint.to_seq)] = checkpoint
    by_node: dict[str, list[Checkpoint]] = {}
    for checkpoint in checkpoints.values():
        by_node.setdefault(checkpoint.node, []).append(checkpoint)
    for node, ordered in by_node.items():
        ordered.sort(key=lambda c: c.to_seq)
        for before, after in itertools.pairwise(ordered):
            if after.from_seq == before.to_seq and after.prev != before.hash:
                findings.append(
                    Finding(
                        "checkpoint-missing",
                        node,
                        after.to_seq,
                        f"checkpoint does not link to the checkpoint up to seq {before.to_seq}",
                    )
                )
    return checkpoints


def _package_entries(
    package: dict[str, Any], case_id: str, findings: list[Finding]
) -> list[_Entry]:
    """The entries whose bytes match their hash and say what the package says they are."""
    entries: list[_Entry] = []
    for number, raw in enumerate(_listed(package, "entries", findings)):
        if not (isinstance(raw, dict) and isinstance(raw.get("node"), str) and _entry_form(raw)):
            findings.append(
                Finding("package-invalid", "-", None, f"entry #{number + 1} is malformed")
            )
            continue
        node, seq, body = raw["node"], raw["seq"], raw["body"].encode()
        if sm3_hex(body) != raw["hash"]:
            findings.append(Finding("modified", node, seq, "entry bytes do not match their hash"))
            continue
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            findings.append(Finding("modified", node, seq, "entry body is not a JSON object"))
            continue
        if (
            document.get("seq") != seq
            or document.get("node") != node
            or document.get("case_id") != case_id
        ):
            findings.append(
                Finding("modified", node, seq, "entry is not what the package says it is")
            )
            continue
        entries.append(
            _Entry(node, seq, raw["hash"], document, raw.get("checkpoint"), raw.get("proof"))
        )
    return entries


def _check_entry_links(entries: list[_Entry], findings: list[Finding]) -> None:
    """Consecutive entries of a node link in its chain (``prev``), and every XGW-AUDIT/2 entry
    to the one before it of the same case (``case_prev``): from the case's first entry on the
    node to the last the package holds, none is left out."""
    by_node: dict[str, list[_Entry]] = {}
    for entry in entries:
        by_node.setdefault(entry.node, []).append(entry)
    for node, ordered in sorted(by_node.items()):
        ordered.sort(key=lambda e: e.seq)
        previous: _Entry | None = None
        for entry in ordered:
            document = entry.document
            if previous is not None and entry.seq == previous.seq:
                findings.append(
                    Finding("inserted", node, entry.seq, "a second entry with this seq")
                )
                continue
            if (
                previous is not None
                and entry.seq == previous.seq + 1
                and document.get("prev") != previous.hash
            ):
                findings.append(
                    Finding(
                        "inserted",
                        node,
                        entry.seq,
                        f"does not link to the package's entry {previous.seq}",
                    )
                )
            if document.get("v") != auditchain.FORMAT_1:
                _check_case_link(node, entry, previous, findings)
            previous = entry


def _check_case_link(
    node: str, entry: _Entry, previous: _Entry | None, findings: list[Finding]
) -> None:
    linked = entry.document.get("case_prev", "absent")
    if previous is None:
        if linked != GENESIS:
            findings.append(
                Finding(
                    "omitted",
                    node,
                    entry.seq,
                    "the case's entries on this node before this one are not in the package",
                )
            )
        return
    allowed = {previous.hash}
    if previous.document.get("v") == auditchain.FORMAT_1:
        allowed.add(GENESIS)  # the per-case chain began with the case's first /2 entry
    if linked not in allowed:
        findings.append(
            Finding(
                "omitted",
                node,
                entry.seq,
                f"entries of the case between seq {previous.seq} and {entry.seq} are not in "
                "the package",
            )
        )


def _check_proof(
    entry: _Entry, checkpoints: dict[tuple[str, int], Checkpoint], findings: list[Finding]
) -> None:
    covering = (
        checkpoints.get((entry.node, entry.checkpoint))
        if isinstance(entry.checkpoint, int)
        else None
    )
    if covering is None:
        findings.append(
            Finding(
                "unsigned-tail",
                entry.node,
                entry.seq,
                "no valid signed checkpoint covers this entry yet",
            )
        )
        return
    proof = entry.proof
    if not covering.from_seq < entry.seq <= covering.to_seq:
        findings.append(
            Finding("modified", entry.node, entry.seq, "its checkpoint does not cover it")
        )
        return
    try:
        included = isinstance(proof, list) and auditchain.verify_merkle_proof(
            entry.hash,
            entry.seq - covering.from_seq - 1,
            covering.to_seq - covering.from_seq,
            [str(step) for step in proof],
            covering.root,
        )
    except ValueError:  # a step that is not hex
        included = False
    if not included:
        findings.append(
            Finding(
                "modified",
                entry.node,
                entry.seq,
                "entry is not in the signed checkpoint (Merkle proof fails)",
            )
        )

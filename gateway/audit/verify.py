"""Offline verification of the exchange log and of evidence packages (public keys only)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.log import AuditLog, now_iso
from gateway.storage.logschema import COLUMNS
from security import auditchain
from security.auditchain import GENESIS, ChainReport, Checkpoint, Finding
from security.backend import CryptoBackend
from security.digest import sm3_hex
from security.keys import load_public_key
from security.trust import OwnKey

EVIDENCE_FORMAT = "XGW-EVIDENCE/1"


@dataclass(frozen=True)
class KnownKey:
    key_id: str
    point: bytes
    not_before: datetime | None
    not_after: datetime | None
    pem: str

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


def _read_archive(path: Path) -> tuple[dict[str, Any], list[Checkpoint], list[tuple[Any, ...]]]:
    header: dict[str, Any] = {}
    checkpoints: list[Checkpoint] = []
    rows: list[tuple[Any, ...]] = []
    for number, line in enumerate(path.read_bytes().splitlines()):
        record = orjson.loads(line)
        if number == 0:
            header = record
        elif "checkpoint" in record:
            checkpoints.append(Checkpoint(**record["checkpoint"]))
        else:
            rows.append((int(record["seq"]), str(record["body"]).encode(), str(record["hash"])))
    return header, checkpoints, rows


def verify_log(
    audit: AuditLog,
    keys: list[KnownKey],
    backend: CryptoBackend,
    archive_dir: Path | None = None,
    from_seq: int | None = None,
    unsigned_tail_limit: int | None = None,
    progress: Callable[[], None] | None = None,
) -> VerifyResult:
    result = VerifyResult()
    key_for = key_resolver(keys)
    for node in sorted(audit.nodes()):
        anchor_seq, anchor_hash = 0, GENESIS
        recorded = {r[2]: r for r in audit.archives(node)}
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
            for path in files:
                digest = sm3_hex(path.read_bytes())
                try:
                    header, checkpoints, rows = _read_archive(path)
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    result.findings.append(
                        Finding(
                            "archive-broken", node, None, f"archive {path.name} is not readable"
                        )
                    )
                    break
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
                report = auditchain.verify_chain(
                    node,
                    rows,
                    checkpoints,
                    key_for,
                    backend,
                    anchor_seq=int(header.get("from_seq", anchor_seq)),
                    anchor_hash=str(header.get("anchor", anchor_hash)),
                    unsigned_tail_limit=0,
                    progress=progress,
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
        checkpoints = [c for c in audit.checkpoints(node) if c.from_seq >= anchor_seq]
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
    return result


# -- evidence packages -------------------------------------------------------------------------


def export_case(
    audit: AuditLog, case_id: str, keys: list[KnownKey], archive_dir: Path | None = None
) -> dict[str, Any]:
    """Every entry of a case — live and, with ``archive_dir``, archived — with the signed
    checkpoints and Merkle proofs that cover them."""
    entries: list[dict[str, Any]] = []
    checkpoints: dict[tuple[str, int], Checkpoint] = {}
    live_batches: dict[tuple[str, int], list[str]] = {}

    def live_batch(node: str, covering: Checkpoint) -> list[str]:
        key = (node, covering.to_seq)
        if key not in live_batches:
            rows = itertools.takewhile(
                lambda r: r[0] <= covering.to_seq, audit.rows(node, covering.from_seq)
            )
            live_batches[key] = [str(r[2]) for r in rows]
        return live_batches[key]

    def add(
        node: str,
        seq: int,
        body: bytes,
        digest: str,
        covering: Checkpoint | None,
        batch: list[str] | None,
    ) -> None:
        entry: dict[str, Any] = {"node": node, "seq": seq, "hash": digest, "body": body.decode()}
        if covering is not None and batch is not None:
            checkpoints[(node, covering.to_seq)] = covering
            entry["checkpoint"] = covering.to_seq
            entry["proof"] = auditchain.merkle_proof(batch, seq - covering.from_seq - 1)
        entries.append(entry)

    for node in sorted(audit.nodes()):
        for path in _archive_files(archive_dir, node) if archive_dir is not None else []:
            _header, archived_checkpoints, rows = _read_archive(path)
            hashes = {seq: digest for seq, _body, digest in rows}
            for seq, body, digest in rows:
                if orjson.loads(body).get("case_id") != case_id:
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
                live_batch(node, covering) if covering is not None else None,
            )
    used = {c.key_id for c in checkpoints.values()}
    return {
        "format": EVIDENCE_FORMAT,
        "case_id": case_id,
        "exported": now_iso(),
        "entries": entries,
        "checkpoints": [c.as_dict() for c in checkpoints.values()],
        "keys": [
            {
                "key_id": k.key_id,
                "public_key_pem": k.pem,
                "not_before": k.not_before.isoformat() if k.not_before else None,
                "not_after": k.not_after.isoformat() if k.not_after else None,
            }
            for k in keys
            if k.key_id in used
        ],
    }


def verify_package(
    package: Any, backend: CryptoBackend, pinned_key_ids: set[str] | None = None
) -> list[Finding]:
    """Check a package offline. ``pinned_key_ids``: key ids the auditor trusts independently."""
    findings: list[Finding] = []
    if not isinstance(package, dict) or package.get("format") != EVIDENCE_FORMAT:
        return [Finding("package-invalid", "-", None, f"not an {EVIDENCE_FORMAT} package")]
    keys: list[KnownKey] = []
    for raw in package.get("keys", []):
        try:
            public = load_public_key(str(raw["public_key_pem"]).encode())
        except Exception:
            findings.append(
                Finding("package-invalid", "-", None, "a public key in the package does not load")
            )
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
        if pinned_key_ids is not None and public.key_id not in pinned_key_ids:
            findings.append(
                Finding(
                    "key-untrusted", "-", None, f"key {public.key_id[:16]}… is not one you pinned"
                )
            )
            continue
        keys.append(
            KnownKey(
                public.key_id,
                public.point,
                datetime.fromisoformat(raw["not_before"]) if raw.get("not_before") else None,
                datetime.fromisoformat(raw["not_after"]) if raw.get("not_after") else None,
                str(raw["public_key_pem"]),
            )
        )
    key_for = key_resolver(keys)
    checkpoints: dict[tuple[str, int], Checkpoint] = {}
    for raw in package.get("checkpoints", []):
        try:
            checkpoint = Checkpoint(**raw)
        except TypeError:
            findings.append(Finding("package-invalid", "-", None, "a checkpoint is malformed"))
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
    entries = package.get("entries", [])
    if not entries:
        findings.append(Finding("package-invalid", "-", None, "the package has no entries"))
    for entry in entries:
        node, seq = str(entry.get("node")), entry.get("seq")
        body = str(entry.get("body", "")).encode()
        if sm3_hex(body) != entry.get("hash"):
            findings.append(Finding("modified", node, seq, "entry bytes do not match their hash"))
            continue
        document = orjson.loads(body)
        if (
            document.get("seq") != seq
            or document.get("node") != node
            or document.get("case_id") != package.get("case_id")
        ):
            findings.append(
                Finding("modified", node, seq, "entry is not what the package says it is")
            )
            continue
        covering = checkpoints.get((node, entry.get("checkpoint", -1)))
        if covering is None:
            findings.append(
                Finding(
                    "unsigned-tail", node, seq, "no valid signed checkpoint covers this entry yet"
                )
            )
            continue
        size = covering.to_seq - covering.from_seq
        if not auditchain.verify_merkle_proof(
            str(entry["hash"]),
            int(seq) - covering.from_seq - 1,
            size,
            list(entry.get("proof", [])),
            covering.root,
        ):
            findings.append(
                Finding(
                    "modified",
                    node,
                    seq,
                    "entry is not in the signed checkpoint (Merkle proof fails)",
                )
            )
    return findings

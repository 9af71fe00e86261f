"""The exchange log's integrity core (XGW-AUDIT/2, reading /1 too): hash chain, per-case
links, Merkle checkpoints, witness countersignatures, verification.

Pure functions over bytes; storage is the caller's. The format is specified for auditors' own
tools in docs/exchange-log.md (with vectors under tests/vectors/audit/); in short:

- An entry's **body** is canonical JSON (``canonical``) holding every field, including ``seq``,
  ``node``, ``prev`` (the previous entry's hash in the node's chain; 64 zeros for the first)
  and, from /2, ``case_prev`` (the hash of the previous entry of the same case on the node; 64
  zeros for the case's first; null for an entry of no case). Its **hash** is SM3(body).
- A **checkpoint** covers entries ``(from_seq, to_seq]`` of one node: ``head`` is the hash of
  entry ``to_seq``, ``root`` a Merkle root over their hashes, ``prev`` the previous checkpoint's
  hash (SM3 of its signed bytes followed by its signature text). /2 adds the interval the node
  was configured with and ``flags`` (``oversize``, ``overdue``) for a batch signed late. One
  signature covers a whole batch, so signing cost does not grow with traffic.
- A **witness** countersigns a checkpoint's hash: a partner's statement that it saw that head
  at that time; a witness refuses a checkpoint that conflicts with one it witnessed before.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from security.backend import CryptoBackend
from security.curve import DEFAULT_DISTID
from security.digest import SM3_HEX, sm3

FORMAT_1 = "XGW-AUDIT/1"
FORMAT = "XGW-AUDIT/2"  # what this code writes
GENESIS = "0" * 64
RECENT = 4096


def canonical(document: dict[str, Any]) -> bytes:
    """Keys sorted by their UTF-8 bytes, no whitespace, non-ASCII as literal UTF-8, absent
    values as ``null`` (every field is always present)."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def entry_body(
    fields: dict[str, Any], seq: int, node: str, prev: str, case_prev: str | None = None
) -> bytes:
    """An XGW-AUDIT/2 entry; ``case_prev``: see the module's notes (None: no case)."""
    document = {**fields, "seq": seq, "node": node, "prev": prev, "v": FORMAT}
    document["case_prev"] = case_prev
    return canonical(document)


def entry_hash(body: bytes) -> str:
    return sm3(body).hex()


_HASH = re.compile(SM3_HEX)


def is_entry_hash(value: object) -> bool:
    """An SM3 digest in hex, as entries' and Merkle hashes are kept (a stored value may be
    anything: the store is not trusted to keep even the types)."""
    return type(value) is str and _HASH.fullmatch(value) is not None


# -- Merkle (RFC 6962 shape, SM3) --------------------------------------------------------------


def _leaf(entry_hash_hex: str) -> bytes:
    return bytes.fromhex(entry_hash_hex)


def _node(left: bytes, right: bytes) -> bytes:
    return sm3(b"\x01" + left + right)


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(hashes: list[str]) -> str:
    if not hashes:
        return sm3(b"").hex()
    return _tree([_leaf(h) for h in hashes]).hex()


def merkle_proof(hashes: list[str], index: int) -> list[str]:
    """Audit path for ``hashes[index]`` (RFC 6962 §2.1.1), hex, leaf to root."""

    def path(leaves: list[bytes], m: int) -> list[bytes]:
        if len(leaves) == 1:
            return []
        k = _split(len(leaves))
        if m < k:
            return [*path(leaves[:k], m), _tree(leaves[k:])]
        return [*path(leaves[k:], m - k), _tree(leaves[:k])]

    return [p.hex() for p in path([_leaf(h) for h in hashes], index)]


def _tree(leaves: list[bytes]) -> bytes:
    """RFC 6962's tree hash, computed level by level: pairing from the left and carrying an
    odd last node up unchanged builds the same tree as splitting at the largest power of two
    below n (§2.1), without the recursion's copies — a verifier builds one per checkpoint."""
    level = leaves
    while len(level) > 1:
        paired = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def verify_merkle_proof(leaf_hash: str, index: int, size: int, proof: list[str], root: str) -> bool:
    """RFC 9162 §2.1.3.2 inclusion-proof verification."""
    if index >= size:
        return False
    fn, sn = index, size - 1
    r = _leaf(leaf_hash)
    for step in proof:
        sibling = bytes.fromhex(step)
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(sibling, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r.hex() == root


# -- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    node: str
    from_seq: int  # exclusive
    to_seq: int  # inclusive
    head: str
    root: str
    time: str
    prev: str  # hash of the previous checkpoint of this node (GENESIS for the first)
    key_id: str
    signature: str  # base64 DER
    # From XGW-AUDIT/2: the interval the node signs at, and why a batch was signed late.
    format: str = FORMAT_1
    interval_entries: int | None = None
    interval_ms: int | None = None
    flags: str = (
        ""  # comma-separated: oversize (> 2 × interval_entries), overdue (> 2 × interval_ms)
    )

    def signed_bytes(self) -> bytes:
        return checkpoint_bytes(
            self.node,
            self.from_seq,
            self.to_seq,
            self.head,
            self.root,
            self.time,
            self.prev,
            self.key_id,
            self.interval if self.format != FORMAT_1 else None,
        )

    @property
    def interval(self) -> Interval | None:
        if self.interval_entries is None or self.interval_ms is None:
            return None
        return Interval(self.interval_entries, self.interval_ms, self.flags)

    @property
    def hash(self) -> str:
        return sm3(self.signed_bytes() + self.signature.encode()).hex()

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Interval:
    """What a /2 checkpoint records of how its node signs: every ``entries`` entries or
    ``ms`` milliseconds, and ``flags`` when this batch broke that (see ``late_flags``)."""

    entries: int
    ms: int
    flags: str = ""


def late_flags(batch_size: int, oldest_age_seconds: float, entries: int, ms: int) -> str:
    """Why a batch is being signed late: more than twice the entries, or its first entry
    older than twice the time window, the node signs at. A rewrite of the log's end signs its
    forged entries as such a batch; so do a long outage and a burst — the flag does not judge,
    it makes the verifier say so."""
    flags = []
    if batch_size > 2 * entries:
        flags.append("oversize")
    if oldest_age_seconds * 1000 > 2 * ms:
        flags.append("overdue")
    return ",".join(flags)


def checkpoint_bytes(
    node: str,
    from_seq: int,
    to_seq: int,
    head: str,
    root: str,
    time: str,
    prev: str,
    key_id: str,
    interval: Interval | None = None,
) -> bytes:
    """The signed bytes: ``name=value`` lines, each ending in LF (0x0A), in this order, after
    the line naming the format; /1 (``interval`` None) ends at ``key_id``."""
    text = (
        f"{FORMAT if interval is not None else FORMAT_1} checkpoint\nnode={node}\n"
        f"from={from_seq}\nto={to_seq}\nhead={head}\nroot={root}\ntime={time}\nprev={prev}\n"
        f"key_id={key_id}\n"
    )
    if interval is not None:
        text += (
            f"interval_entries={interval.entries}\ninterval_ms={interval.ms}\n"
            f"flags={interval.flags}\n"
        )
    return text.encode()


def sign_checkpoint(
    node: str,
    from_seq: int,
    to_seq: int,
    hashes: list[str],
    time: str,
    prev: str,
    signer_scalar: int,
    signer_point: bytes,
    key_id: str,
    backend: CryptoBackend,
    interval: Interval,
    distid: bytes = DEFAULT_DISTID,
) -> Checkpoint:
    import base64

    head, root = hashes[-1], merkle_root(hashes)
    message = checkpoint_bytes(node, from_seq, to_seq, head, root, time, prev, key_id, interval)
    signature = backend.sm2_sign(signer_scalar, signer_point, message, distid)
    return Checkpoint(
        node,
        from_seq,
        to_seq,
        head,
        root,
        time,
        prev,
        key_id,
        base64.b64encode(signature).decode(),
        FORMAT,
        interval.entries,
        interval.ms,
        interval.flags,
    )


def checkpoint_signature_valid(
    checkpoint: Checkpoint,
    public_point: bytes,
    backend: CryptoBackend,
) -> bool:
    return _signature_valid(checkpoint.signature, checkpoint.signed_bytes(), public_point, backend)


def _signature_valid(
    signature_text: str, message: bytes, public_point: bytes, backend: CryptoBackend
) -> bool:
    import base64
    import binascii

    try:
        signature = base64.b64decode(signature_text, validate=True)
    except binascii.Error:
        return False
    return backend.sm2_verify(public_point, message, signature, DEFAULT_DISTID)


# -- witnesses -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Witness:
    """A witness's countersignature of one checkpoint: ``witness`` (a region code) saw the
    checkpoint whose hash is ``checkpoint`` (node ``node``, up to ``to_seq``) at ``time``,
    and signed that with its key ``key_id`` (its envelope signing key)."""

    node: str
    to_seq: int
    checkpoint: str
    witness: str
    time: str
    key_id: str
    signature: str  # base64 DER

    def signed_bytes(self) -> bytes:
        return witness_bytes(
            self.node, self.to_seq, self.checkpoint, self.witness, self.time, self.key_id
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def witness_bytes(
    node: str, to_seq: int, checkpoint: str, witness: str, time: str, key_id: str
) -> bytes:
    return (
        f"{FORMAT} witness\nnode={node}\nto={to_seq}\ncheckpoint={checkpoint}\n"
        f"witness={witness}\ntime={time}\nkey_id={key_id}\n"
    ).encode()


def sign_witness(
    checkpoint: Checkpoint,
    witness: str,
    time: str,
    signer_scalar: int,
    signer_point: bytes,
    key_id: str,
    backend: CryptoBackend,
) -> Witness:
    import base64

    message = witness_bytes(
        checkpoint.node, checkpoint.to_seq, checkpoint.hash, witness, time, key_id
    )
    signature = backend.sm2_sign(signer_scalar, signer_point, message, DEFAULT_DISTID)
    return Witness(
        checkpoint.node,
        checkpoint.to_seq,
        checkpoint.hash,
        witness,
        time,
        key_id,
        base64.b64encode(signature).decode(),
    )


def witness_signature_valid(witness: Witness, public_point: bytes, backend: CryptoBackend) -> bool:
    return _signature_valid(witness.signature, witness.signed_bytes(), public_point, backend)


@dataclass(frozen=True)
class Witnessed:
    """What a witness keeps of a checkpoint it countersigned: enough to refuse another
    checkpoint that would rewrite the same part of the node's chain."""

    node: str
    from_seq: int
    to_seq: int
    checkpoint: str  # its hash
    prev: str


def witness_conflict(seen: list[Witnessed], candidate: Checkpoint) -> str | None:
    """Why ``candidate`` contradicts a checkpoint of its node witnessed before (None: it does
    not). Two checkpoints of one node conflict when they cover a common sequence number but
    are not the same checkpoint, or when one starts where the other ends without linking to
    it: either way the node's history was told twice, differently."""
    mine = candidate.hash
    for old in seen:
        if old.node != candidate.node or old.checkpoint == mine:
            continue
        if old.from_seq < candidate.to_seq and candidate.from_seq < old.to_seq:
            return (
                f"checkpoint ({candidate.from_seq}, {candidate.to_seq}] of {candidate.node} "
                f"overlaps the witnessed ({old.from_seq}, {old.to_seq}] and differs from it"
            )
        if old.to_seq == candidate.from_seq and candidate.prev != old.checkpoint:
            return (
                f"checkpoint from {candidate.from_seq} of {candidate.node} does not link to the "
                f"witnessed checkpoint that ends there"
            )
    return None


_CHECKPOINT_TYPES: dict[str, tuple[type, ...]] = {
    "node": (str,), "from_seq": (int,), "to_seq": (int,), "head": (str,), "root": (str,),
    "time": (str,), "prev": (str,), "key_id": (str,), "signature": (str,), "format": (str,),
    "interval_entries": (int, type(None)), "interval_ms": (int, type(None)), "flags": (str,),
}  # fmt: skip
_WITNESS_TYPES: dict[str, tuple[type, ...]] = {
    "node": (str,), "to_seq": (int,), "checkpoint": (str,), "witness": (str,), "time": (str,),
    "key_id": (str,), "signature": (str,),
}  # fmt: skip


def _checked(document: Any, types: dict[str, tuple[type, ...]], what: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ValueError(f"a {what} is a JSON object")
    unknown = set(document) - set(types)
    if unknown:
        raise ValueError(f"a {what} has no field {sorted(unknown)[0]!r}")
    for name, allowed in types.items():
        value = document.get(name)
        if name not in document and type(None) not in allowed and name not in ("format", "flags"):
            raise ValueError(f"a {what} needs {name!r}")
        if name in document and (
            not isinstance(value, allowed)
            or isinstance(value, bool)
            or (isinstance(value, str) and len(value) > 512)
        ):
            raise ValueError(f"a {what}'s {name!r} is not what it should be")
    return document


def checkpoint_from(document: Any) -> Checkpoint:
    """A checkpoint from its JSON form (``as_dict``), each field's type checked: ValueError
    for anything else (what a partner or a package sends is not trusted to be well formed)."""
    return Checkpoint(**_checked(document, _CHECKPOINT_TYPES, "checkpoint"))


def witness_from(document: Any) -> Witness:
    return Witness(**_checked(document, _WITNESS_TYPES, "witness"))


# -- a node's memory of what it signed ---------------------------------------------------------


def rollback_problem(remembered: tuple[int, str] | None, found: Checkpoint | None) -> str | None:
    """Why the log no longer extends the last checkpoint this node remembers signing (None:
    it does). ``found``: the log's checkpoint at the remembered sequence number, if any."""
    if remembered is None:
        return None
    to_seq, checkpoint_hash = remembered
    if found is None:
        return f"the checkpoint this node signed up to seq {to_seq} is no longer in the log"
    if found.hash != checkpoint_hash:
        return f"the checkpoint up to seq {to_seq} differs from the one this node signed"
    return None


# -- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One thing wrong (or worth knowing), located by node and sequence number."""

    kind: str  # modified | missing | inserted | reordered | truncated | unsigned-tail |
    #            checkpoint-invalid | checkpoint-missing | archive-broken | column-mismatch
    node: str
    seq: int | None
    detail: str
    fatal: bool = True

    def __str__(self) -> str:
        where = f"{self.node} seq {self.seq}" if self.seq is not None else self.node
        return f"{self.kind}: {where}: {self.detail}"


@dataclass
class ChainReport:
    node: str
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str = GENESIS
    checkpoints: int = 0
    findings: list[Finding] = field(default_factory=list)
    unsigned: int = 0  # entries after the last checkpoint boundary walked
    unsigned_from: int = 1  # the first of them

    @property
    def ok(self) -> bool:
        return not any(f.fatal for f in self.findings)


def joined_reports(node: str, parts: list[ChainReport]) -> ChainReport:
    """Reports of consecutive segments of one chain as one, as ``verify_chain`` over the whole
    would have made it before its end checks (``finish_chain``)."""
    walked = [p for p in parts if p.entries]
    report = ChainReport(node)
    for part in parts:
        report.findings += part.findings
        report.entries += part.entries
        report.checkpoints += part.checkpoints
    if walked:
        report.first_seq, report.last_seq = walked[0].first_seq, walked[-1].last_seq
        report.head = walked[-1].head
        report.unsigned, report.unsigned_from = walked[-1].unsigned, walked[-1].unsigned_from
    elif parts:
        report.head, report.unsigned_from = parts[0].head, parts[0].unsigned_from
    return report


def verify_chain(
    node: str,
    entries: Iterable[tuple[Any, ...]],
    checkpoints: list[Checkpoint],
    key_for: Any,
    backend: CryptoBackend,
    anchor_seq: int = 0,
    anchor_hash: str = GENESIS,
    unsigned_tail_limit: int | None = None,
    progress: Any = None,
    column_names: tuple[str, ...] = (),
    final: bool = True,
) -> ChainReport:
    """Walk one node's chain from ``anchor`` (the last archived entry, or genesis) and check it.

    ``entries`` are rows ``(seq, body, hash, *columns)`` in sequence order, where ``columns`` are
    the store's indexed copies of fields named by ``column_names`` (checked against the body).
    ``key_for(key_id, time) -> public point | None`` resolves checkpoint keys (public keys only).
    Without ``final``, one segment of the chain (from a checkpoint boundary, with the
    checkpoints that end in it): the checks of the chain's end are left to ``finish_chain``
    over the joined segments — so segments verify independently, in parallel.
    """
    report = ChainReport(node)
    by_to_seq = {c.to_seq: c for c in checkpoints}
    # Recent history only (bounded memory over millions of entries): enough to tell a local
    # swap from an insertion.
    recent_seqs: dict[int, str] = {}
    expected_seq, expected_prev = anchor_seq + 1, anchor_hash
    seen_hashes: dict[str, int] = {}
    window: list[str] = []  # hashes since the last checkpoint boundary
    window_began: str | None = None  # the time of the window's first entry
    last_boundary = anchor_seq
    findings = report.findings
    walked, seq = 0, None  # kept in locals, written to the report once: millions of entries
    indexed = (
        (lambda d: tuple(map(d.get, column_names)))
        if len(column_names) == 1
        else operator.itemgetter(*column_names)
        if column_names
        else None
    )
    for row in entries:
        seq, body, stored_hash = row[0], row[1], row[2]
        if not isinstance(body, bytes):  # the store is not trusted to keep even the types
            body = str(body).encode()
        walked += 1
        if progress is not None:
            progress()
        if report.first_seq is None:
            report.first_seq = seq
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = {}
        if type(document) is not dict:  # any bytes may have been written: a list, a number…
            document = {}
        computed = sm3(body).hex()
        if computed != stored_hash:
            if is_entry_hash(stored_hash):
                findings.append(
                    Finding("modified", node, seq, "entry bytes do not match their stored hash")
                )
            else:  # links and batches go on from what the body hashes to
                findings.append(
                    Finding("modified", node, seq, "the stored hash is not an SM3 hash")
                )
                stored_hash = computed
        elif document.get("seq") != seq or document.get("node") != node:
            findings.append(
                Finding(
                    "modified", node, seq, "sequence number or node differs from the entry's own"
                )
            )
        try:  # every entry has every field: one C call for the whole row
            columns_differ = indexed(document) != row[3:] if indexed is not None else False
        except KeyError:
            columns_differ = True
        if columns_differ:
            for column, value in zip(column_names, row[3:], strict=True):
                if document.get(column) != value:
                    findings.append(
                        Finding(
                            "column-mismatch",
                            node,
                            seq,
                            f"indexed column {column} differs from the entry",
                        )
                    )
        entry_seq, entry_hash_hex = seq, stored_hash
        prev = document.get("prev")
        if entry_seq != expected_seq:
            if entry_seq > expected_seq:
                findings.append(
                    Finding(
                        "missing",
                        node,
                        expected_seq,
                        f"entries {expected_seq}..{entry_seq - 1} are missing",
                    )
                )
            elif entry_seq in recent_seqs or entry_seq <= anchor_seq:
                findings.append(
                    Finding("inserted", node, entry_seq, "a second entry with this sequence number")
                )
            else:
                findings.append(
                    Finding("reordered", node, entry_seq, f"appears after seq {expected_seq - 1}")
                )
        elif prev != expected_prev:
            if prev in seen_hashes:
                findings.append(
                    Finding(
                        "reordered",
                        node,
                        entry_seq,
                        f"links to seq {seen_hashes[prev]}, not to seq {entry_seq - 1}",
                    )
                )
            else:
                findings.append(
                    Finding(
                        "inserted",
                        node,
                        entry_seq,
                        "does not link to the previous entry (inserted or replaced)",
                    )
                )
        seen_hashes[entry_hash_hex] = entry_seq
        recent_seqs[entry_seq] = entry_hash_hex
        if len(recent_seqs) > RECENT:
            recent_seqs.clear()
            seen_hashes.clear()
        if entry_seq >= expected_seq:
            expected_seq = entry_seq + 1
        expected_prev = entry_hash_hex
        if not window:
            window_began = document.get("time") if isinstance(document, dict) else None
        window.append(entry_hash_hex)
        checkpoint = by_to_seq.get(entry_seq)
        if checkpoint is not None:
            _check_checkpoint(report, checkpoint, window, last_boundary, key_for, backend)
            _check_lateness(report, checkpoint, window_began)
            report.checkpoints += 1
            window, last_boundary = [], entry_seq
    report.entries, report.last_seq = walked, seq
    report.head = expected_prev
    report.unsigned, report.unsigned_from = len(window), last_boundary + 1
    if final:
        finish_chain(report, checkpoints, anchor_seq, unsigned_tail_limit)
    return report


def finish_chain(
    report: ChainReport,
    checkpoints: list[Checkpoint],
    anchor_seq: int,
    unsigned_tail_limit: int | None,
) -> None:
    """The checks of a chain's end: checkpoints beyond it, the checkpoints' own links, and the
    entries not yet signed."""
    node = report.node
    last = report.last_seq if report.last_seq is not None else anchor_seq
    for checkpoint in checkpoints:
        if checkpoint.to_seq > last:
            report.findings.append(
                Finding(
                    "truncated",
                    node,
                    last,
                    f"a signed checkpoint covers up to seq {checkpoint.to_seq}, the log ends at {last}",
                )
            )
    _check_checkpoint_chain(report, checkpoints, anchor_seq)
    if report.unsigned:
        fatal = unsigned_tail_limit is not None and report.unsigned > unsigned_tail_limit
        report.findings.append(
            Finding(
                "unsigned-tail",
                node,
                report.unsigned_from,
                f"{report.unsigned} entries after the last checkpoint are not yet signed",
                fatal=fatal,
            )
        )


def _check_checkpoint(
    report: ChainReport,
    checkpoint: Checkpoint,
    window: list[str],
    last_boundary: int,
    key_for: Any,
    backend: CryptoBackend,
) -> None:
    node = report.node
    public = key_for(checkpoint.key_id, checkpoint.time)
    if public is None:
        report.findings.append(
            Finding(
                "checkpoint-invalid",
                node,
                checkpoint.to_seq,
                f"signing key {checkpoint.key_id[:16]}… is unknown or was not valid at {checkpoint.time}",
            )
        )
    elif not checkpoint_signature_valid(checkpoint, public, backend):
        report.findings.append(
            Finding(
                "checkpoint-invalid",
                node,
                checkpoint.to_seq,
                "checkpoint signature does not verify",
            )
        )
    if checkpoint.from_seq != last_boundary:
        report.findings.append(
            Finding(
                "checkpoint-invalid",
                node,
                checkpoint.to_seq,
                f"checkpoint starts at {checkpoint.from_seq}, the previous one ended at {last_boundary}",
            )
        )
        return
    if window and checkpoint.head != window[-1]:
        report.findings.append(
            Finding(
                "modified",
                node,
                checkpoint.to_seq,
                f"entries {checkpoint.from_seq + 1}..{checkpoint.to_seq} differ from what checkpoint signed (head)",
            )
        )
    elif merkle_root(window) != checkpoint.root:
        report.findings.append(
            Finding(
                "modified",
                node,
                checkpoint.to_seq,
                f"entries {checkpoint.from_seq + 1}..{checkpoint.to_seq} differ from what checkpoint signed (Merkle root)",
            )
        )


def _check_lateness(report: ChainReport, checkpoint: Checkpoint, began: str | None) -> None:
    """A /2 checkpoint's batch signed late is reported (not a failure: an outage or a burst
    does it too, and so does a rewrite of the log's end — an auditor should look); one that
    is late without saying so was not signed by this gateway's rules (a failure)."""
    interval = checkpoint.interval
    if checkpoint.format == FORMAT_1 or interval is None:
        return
    age = _seconds_between(began, checkpoint.time) if began is not None else 0.0
    due = late_flags(checkpoint.to_seq - checkpoint.from_seq, age, interval.entries, interval.ms)
    said = {f for f in interval.flags.split(",") if f}
    if not set(due.split(",") if due else ()) <= said:
        report.findings.append(
            Finding(
                "checkpoint-invalid",
                report.node,
                checkpoint.to_seq,
                f"batch is {due} for its interval but not flagged so",
            )
        )
    elif said:
        report.findings.append(
            Finding(
                "checkpoint-late",
                report.node,
                checkpoint.to_seq,
                f"batch ({checkpoint.from_seq}, {checkpoint.to_seq}] was signed late "
                f"({interval.flags}; interval {interval.entries} entries, "
                f"{interval.ms} ms): look at what happened before it",
                fatal=False,
            )
        )


def _seconds_between(earlier: str, later: str) -> float:
    from datetime import datetime

    try:
        first = datetime.fromisoformat(earlier.replace("Z", "+00:00"))
        last = datetime.fromisoformat(later.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return 0.0
    return (last - first).total_seconds()


def _check_checkpoint_chain(
    report: ChainReport, checkpoints: list[Checkpoint], anchor_seq: int
) -> None:
    ordered = sorted(checkpoints, key=lambda c: c.to_seq)
    for previous, current in zip([None, *ordered], ordered, strict=False):
        if previous is None:
            continue
        if current.prev != previous.hash:
            report.findings.append(
                Finding(
                    "checkpoint-missing",
                    report.node,
                    current.to_seq,
                    "checkpoint does not link to the previous checkpoint (one was removed or replaced)",
                )
            )

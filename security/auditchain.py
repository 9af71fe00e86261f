"""The exchange log's integrity core (XGW-AUDIT/1): hash chain, Merkle checkpoints, verification.

Pure functions over bytes; storage is the caller's. Format, for auditors' own tools:

- An entry's **body** is canonical JSON (UTF-8, keys sorted, no spaces) holding every field,
  including ``seq``, ``node`` and ``prev`` (the previous entry's hash, hex; 64 zeros for the
  first entry of a node's chain). Its **hash** is SM3(body).
- A **checkpoint** covers entries ``(from_seq, to_seq]`` of one node: ``head`` is the hash of
  entry ``to_seq``, ``root`` the RFC 6962 Merkle root (SM3; leaf = SM3(0x00‖hash), node =
  SM3(0x01‖left‖right)) of their hashes, ``prev`` the previous checkpoint's hash. Its signed bytes
  are ``name=value\\n`` lines (see ``checkpoint_bytes``), SM2-signed with the node's signing key.
  One signature covers a whole batch, so signing cost does not grow with traffic (X-Road's batch
  signatures); the Merkle root lets an evidence package prove single entries without the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from security.backend import CryptoBackend
from security.curve import DEFAULT_DISTID
from security.digest import sm3

FORMAT = "XGW-AUDIT/1"
GENESIS = "0" * 64
RECENT = 4096


def canonical(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def entry_body(fields: dict[str, Any], seq: int, node: str, prev: str) -> bytes:
    return canonical({**fields, "seq": seq, "node": node, "prev": prev, "v": FORMAT})


def entry_hash(body: bytes) -> str:
    return sm3(body).hex()


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
    def root(leaves: list[bytes]) -> bytes:
        if len(leaves) == 1:
            return leaves[0]
        k = _split(len(leaves))
        return _node(root(leaves[:k]), root(leaves[k:]))

    if not hashes:
        return sm3(b"").hex()
    return root([_leaf(h) for h in hashes]).hex()


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
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(_tree(leaves[:k]), _tree(leaves[k:]))


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
        )

    @property
    def hash(self) -> str:
        return sm3(self.signed_bytes() + self.signature.encode()).hex()

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def checkpoint_bytes(
    node: str, from_seq: int, to_seq: int, head: str, root: str, time: str, prev: str, key_id: str
) -> bytes:
    return (
        f"{FORMAT} checkpoint\nnode={node}\nfrom={from_seq}\nto={to_seq}\nhead={head}\n"
        f"root={root}\ntime={time}\nprev={prev}\nkey_id={key_id}\n"
    ).encode()


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
    distid: bytes = DEFAULT_DISTID,
) -> Checkpoint:
    import base64

    head, root = hashes[-1], merkle_root(hashes)
    message = checkpoint_bytes(node, from_seq, to_seq, head, root, time, prev, key_id)
    signature = backend.sm2_sign(signer_scalar, signer_point, message, distid)
    return Checkpoint(
        node, from_seq, to_seq, head, root, time, prev, key_id, base64.b64encode(signature).decode()
    )


def checkpoint_signature_valid(
    checkpoint: Checkpoint,
    public_point: bytes,
    backend: CryptoBackend,
    distid: bytes = DEFAULT_DISTID,
) -> bool:
    import base64
    import binascii

    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
    except binascii.Error:
        return False
    return backend.sm2_verify(public_point, checkpoint.signed_bytes(), signature, distid)


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

    @property
    def ok(self) -> bool:
        return not any(f.fatal for f in self.findings)


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
) -> ChainReport:
    """Walk one node's chain from ``anchor`` (the last archived entry, or genesis) and check it.

    ``entries`` are rows ``(seq, body, hash, *columns)`` in sequence order, where ``columns`` are
    the store's indexed copies of fields named by ``column_names`` (checked against the body).
    ``key_for(key_id, time) -> public point | None`` resolves checkpoint keys (public keys only).
    """
    report = ChainReport(node)
    by_to_seq = {c.to_seq: c for c in checkpoints}
    # Recent history only (bounded memory over millions of entries): enough to tell a local
    # swap from an insertion.
    recent_seqs: dict[int, str] = {}
    expected_seq, expected_prev = anchor_seq + 1, anchor_hash
    seen_hashes: dict[str, int] = {}
    window: list[str] = []  # hashes since the last checkpoint boundary
    last_boundary = anchor_seq
    findings = report.findings
    for row in entries:
        seq, body, stored_hash = row[0], row[1], row[2]
        if not isinstance(body, bytes):  # the store is not trusted to keep even the types
            body = str(body).encode()
        report.entries += 1
        if progress is not None:
            progress()
        if report.first_seq is None:
            report.first_seq = seq
        report.last_seq = seq
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = {}
        if sm3(body).hex() != stored_hash:
            findings.append(
                Finding("modified", node, seq, "entry bytes do not match their stored hash")
            )
        elif document.get("seq") != seq or document.get("node") != node:
            findings.append(
                Finding(
                    "modified", node, seq, "sequence number or node differs from the entry's own"
                )
            )
        if column_names and tuple(map(document.get, column_names)) != row[3:]:
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
        expected_seq, expected_prev = max(expected_seq, entry_seq + 1), entry_hash_hex
        window.append(entry_hash_hex)
        checkpoint = by_to_seq.get(entry_seq)
        if checkpoint is not None:
            _check_checkpoint(report, checkpoint, window, last_boundary, key_for, backend)
            report.checkpoints += 1
            window, last_boundary = [], entry_seq
    report.head = expected_prev
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
    if window:
        fatal = unsigned_tail_limit is not None and len(window) > unsigned_tail_limit
        report.findings.append(
            Finding(
                "unsigned-tail",
                node,
                last_boundary + 1,
                f"{len(window)} entries after the last checkpoint are not yet signed",
                fatal=fatal,
            )
        )
    return report


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

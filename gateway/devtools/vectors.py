"""Envelope test vectors: one valid message and one of each refusal, with a manifest saying
what a receiver must answer — XGW-ENV/1's envelope refusals (envelope spec §9) and XGW-ENV/2's
material streams (§11).

The same generators make the SAMPLE vectors shipped in ``tests/vectors/`` (fixed ``now``, keys
made for them) and, through ``xgw vectors make [--envelope 2]``, fresh ones a partner signs with
its own key for a live receiver: sent within the window, ``ok.json`` is accepted and each other
vector is refused with its code.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from security import envelope as env
from security.backend import CryptoBackend
from security.keys import PrivateKey, PublicKey, generate_private_key
from security.stream import CHUNK_BYTES, SEALED_CHUNK_BYTES, MaterialSealing

SAMPLE_NOTE = "SAMPLE vectors for XGW-ENV/1; keys are test keys, never use them elsewhere"


@dataclass
class VectorSet:
    """What to seal: who to whom, under which matter, what, when."""

    sender: env.Party
    receiver: env.Party
    matter: str
    plaintext: bytes
    now: datetime
    signer: PrivateKey
    recipient: PublicKey
    idem_key: str = "case-0001"
    msg_prefix: str = "vec"


def _flip_base64(text: str) -> str:
    raw = bytearray(env.unb64(text, "x"))
    raw[len(raw) // 2] ^= 0x01
    return env.b64(bytes(raw))


def seal_vectors(
    spec: VectorSet, backend: CryptoBackend, stranger: PrivateKey | None = None
) -> dict[str, tuple[env.Envelope | None, str]]:
    """file name -> (envelope, expected outcome); None for the malformed one (made from ok)."""
    stranger = stranger or generate_private_key(backend)
    foreign_region = "420683" if spec.sender.region != "420683" else "420684"

    def sealed(
        n: int,
        created: datetime | None = None,
        signer: PrivateKey | None = None,
        recipient: PublicKey | None = None,
        sender: env.Party | None = None,
    ) -> env.Envelope:
        header = env.Header(
            f"{spec.msg_prefix}-{n:04d}",
            "request",
            spec.idem_key,
            sender or spec.sender,
            spec.receiver,
            spec.matter,
            created or spec.now,
        )
        return env.seal(
            spec.plaintext, header, signer or spec.signer, recipient or spec.recipient, backend
        )

    ok = sealed(1)
    return {
        "ok.json": (ok, "OK"),
        "tampered-ciphertext.json": (
            replace(ok, ciphertext=_flip_base64(ok.ciphertext)),
            "SIGNATURE_INVALID",
        ),
        "tampered-signature.json": (
            replace(ok, signature=_flip_base64(ok.signature)),
            "SIGNATURE_INVALID",
        ),
        "tampered-header.json": (replace(ok, matter=spec.matter + "X"), "SIGNATURE_INVALID"),
        "unknown-signer.json": (sealed(2, signer=stranger), "KEY_UNKNOWN"),
        "wrong-recipient-key.json": (sealed(3, recipient=stranger.public), "KEY_UNKNOWN"),
        "wrong-jurisdiction.json": (
            sealed(4, sender=env.Party(foreign_region, spec.sender.node)),
            "KEY_WRONG_JURISDICTION",
        ),
        "expired.json": (sealed(5, created=spec.now - timedelta(hours=1)), "STALE"),
        "malformed.json": (None, "ENVELOPE_MALFORMED"),
    }


def write_vectors(
    folder: Path,
    spec: VectorSet,
    backend: CryptoBackend,
    manifest_extra: dict[str, Any],
    stranger: PrivateKey | None = None,
) -> dict[str, Any]:
    """Write every vector, ``plaintext.json``, ``ok.signed-bytes.txt`` and ``manifest.json``
    into ``folder``; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    vectors = seal_vectors(spec, backend, stranger)
    ok = vectors["ok.json"][0]
    assert ok is not None
    manifest: dict[str, Any] = {
        "sample": SAMPLE_NOTE,
        "now": env.format_time(spec.now),
        "window_seconds": 300,
        "distid": "1234567812345678",
        **manifest_extra,
        "plaintext_file": "plaintext.json",
        "vectors": [],
        "replay": {"sequence": ["ok.json", "ok.json"], "expect": ["OK", "REPLAYED"]},
    }
    (folder / "plaintext.json").write_bytes(spec.plaintext)
    (folder / "ok.signed-bytes.txt").write_bytes(ok.canonical())
    for name, (envelope, expect) in vectors.items():
        if envelope is None:
            broken = ok.as_dict()
            broken.pop("nonce")
            data = json.dumps(broken, indent=2).encode()
        else:
            data = json.dumps(envelope.as_dict(), indent=2, ensure_ascii=False).encode()
        (folder / name).write_bytes(data + b"\n")
        manifest["vectors"].append({"file": name, "expect": expect})
    (folder / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return manifest


def fresh_prefix() -> str:
    """Message ids of a fresh set: new each time, so a live receiver never sees one twice."""
    return f"vec-{uuid.uuid4().hex[:12]}"


def sample_material(kind: str, size: int) -> bytes:
    """SAMPLE bytes of ``size`` that a content sniffer takes for ``kind`` (pdf or jpeg)."""
    head = {"pdf": b"%PDF-1.7\n% SAMPLE\n", "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"}[kind]
    return head + bytes((i * 7 + 3) % 251 for i in range(size - len(head)))


# code -> (type, plaintext): the first spans three chunks (so it can be reordered and cut
# short), the second one
SAMPLE_MATERIALS: dict[str, tuple[str, bytes]] = {
    "invoices": ("pdf", sample_material("pdf", 150_000)),
    "discharge-summary": ("jpeg", sample_material("jpeg", 20_000)),
}


@dataclass(frozen=True)
class MaterialVector:
    """An XGW-ENV/2 message and the material streams written under ``streams``: each material
    ``<streams>.<code>.sealed``, or, where this vector writes none, ``ok.<code>.sealed``."""

    envelope_file: str
    envelope: env.Envelope
    streams: str
    sealed: dict[str, bytes]
    expect: str


def seal_material_vectors(
    spec: VectorSet,
    materials: dict[str, tuple[str, bytes]],
    backend: CryptoBackend,
    shared_envelope: bool,
) -> list[MaterialVector]:
    """OK, then the first material's stream reordered, changed, cut short, and a manifest that
    names another stream. ``shared_envelope``: the damaged streams go with ``ok.json`` (a set
    read offline); else each vector is a message of its own (a live receiver answers a
    message id once)."""
    first = next(iter(materials))
    assert len(materials[first][1]) > 2 * CHUNK_BYTES, "the first material needs three chunks"
    count = 0

    def sealed(
        name: str, other_digest: str | None = None
    ) -> tuple[str, env.Envelope, dict[str, bytes]]:
        nonlocal count
        count += 1
        msg_id = f"{spec.msg_prefix}-{count:04d}"
        wrapped = env.wrap_content_key(spec.recipient, backend)
        entries, streams = [], {}
        for code, (kind, data) in materials.items():
            sealing = MaterialSealing(wrapped.key, msg_id, code, kind, backend)
            stream = sealing.add(data)
            last, entry = sealing.finish()
            streams[code] = stream + last
            if other_digest is not None and code == first:
                entry = replace(entry, sealed_sm3=other_digest)
            entries.append(entry)
        header = env.Header(
            msg_id, "request", spec.idem_key, spec.sender, spec.receiver, spec.matter, spec.now
        )
        envelope = env.seal(
            spec.plaintext, header, spec.signer, spec.recipient, backend, wrapped=wrapped,
            version=2, manifest=tuple(entries),
        )  # fmt: skip
        return f"{name}.json", envelope, streams

    def damaged(stream: bytes, how: str) -> bytes:
        one, two = stream[:SEALED_CHUNK_BYTES], stream[SEALED_CHUNK_BYTES : 2 * SEALED_CHUNK_BYTES]
        if how == "reordered":  # chunks 0 and 1 swapped
            return two + one + stream[2 * SEALED_CHUNK_BYTES :]
        if how == "truncated":  # the last chunk gone
            return stream[: 2 * SEALED_CHUNK_BYTES]
        flipped = bytearray(stream)  # "changed": one bit of chunk 1
        flipped[SEALED_CHUNK_BYTES + 100] ^= 0x01
        return bytes(flipped)

    ok_file, ok, ok_streams = sealed("ok")
    vectors = [MaterialVector(ok_file, ok, "ok", ok_streams, "OK")]
    for how, expect in (
        ("reordered", "MATERIAL_BROKEN"),
        ("changed", "MATERIAL_BROKEN"),
        ("truncated", "MATERIAL_TRUNCATED"),
    ):
        if shared_envelope:
            broken = {first: damaged(ok_streams[first], how)}
            vectors.append(MaterialVector(ok_file, ok, how, broken, expect))
        else:
            file, envelope, streams = sealed(how)
            streams[first] = damaged(streams[first], how)
            vectors.append(MaterialVector(file, envelope, how, streams, expect))
    file, envelope, streams = sealed("digest-mismatch", other_digest="0" * 64)
    vectors.append(MaterialVector(file, envelope, "digest-mismatch", streams, "MATERIAL_DIGEST"))
    return vectors


def write_material_vectors(
    folder: Path,
    spec: VectorSet,
    backend: CryptoBackend,
    manifest_extra: dict[str, Any],
    materials: dict[str, tuple[str, bytes]] = SAMPLE_MATERIALS,
    shared_envelope: bool = False,
) -> dict[str, Any]:
    """Write the XGW-ENV/2 vectors, their materials' plaintexts, ``plaintext.json``,
    ``ok.signed-bytes.txt`` and ``manifest.json`` into ``folder``; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    vectors = seal_material_vectors(spec, materials, backend, shared_envelope)
    files: dict[str, bytes] = {
        "plaintext.json": spec.plaintext,
        "ok.signed-bytes.txt": vectors[0].envelope.canonical(),
    }
    for code, (kind, data) in materials.items():
        files[f"{code}.{kind}"] = data
    for vector in vectors:
        files[vector.envelope_file] = vector.envelope.to_json()
        for code, stream in vector.sealed.items():
            files[f"{vector.streams}.{code}.sealed"] = stream
    for name, data in files.items():
        (folder / name).write_bytes(data)
    manifest: dict[str, Any] = {
        "sample": SAMPLE_NOTE.replace("XGW-ENV/1", "XGW-ENV/2"),
        "now": env.format_time(spec.now),
        "distid": "1234567812345678",
        **manifest_extra,
        "plaintext_file": "plaintext.json",
        "materials": {code: f"{code}.{kind}" for code, (kind, _) in materials.items()},
        "vectors": [
            {"envelope": v.envelope_file, "streams": v.streams, "expect": v.expect} for v in vectors
        ],
        "note": "a vector's streams: <streams>.<code>.sealed for each material, ok.<code>.sealed "
        "where that file does not exist; send the envelope, then each material in its "
        "manifest's order",
    }
    (folder / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return manifest

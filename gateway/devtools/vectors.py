"""XGW-ENV/1 test vectors: one valid envelope and one of each refusal, with a manifest saying
what a receiver must answer (envelope spec §9).

The same generator makes the SAMPLE vectors shipped in ``tests/vectors/`` (fixed ``now``, keys
made for them) and, through ``xgw vectors make``, fresh ones a partner signs with its own key
for a live receiver: sent within the window, ``ok.json`` is accepted and each other vector is
refused with its code.
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

"""Regenerate the XGW-ENV/1 test vectors in this folder (SAMPLE keys, never used in production).

Run from the repository root: ``.venv/bin/python tests/vectors/make_vectors.py``. The committed
files are the vectors; regenerating changes every random value (keys, nonces, IVs, signatures).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from security import envelope as env
from security.backend import get_backend
from security.keys import generate_private_key

HERE = Path(__file__).resolve().parent
NOW = datetime(2026, 11, 28, 8, 0, 0, tzinfo=UTC)
KEYS_VALID = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC))
SENDER = env.Party("411329", "xinye-gw")
RECEIVER = env.Party("420607", "xiangzhou-gw-1")
PLAINTEXT = (
    '{"sample":true,"aac002":"11010519491231002X","aac003":"样例","aae140":"110",'
    '"aab299":"420607","aae270":"LXH-411329-2026-000001"}'
).encode()


def _flip_base64(text: str) -> str:
    raw = bytearray(env.unb64(text, "x"))
    raw[len(raw) // 2] ^= 0x01
    return env.b64(bytes(raw))


def main() -> None:
    backend = get_backend("native")
    keys = {name: generate_private_key(backend) for name in ("xinye", "xiangzhou", "stranger")}
    (HERE / "keys").mkdir(exist_ok=True)
    for name, key in keys.items():
        (HERE / "keys" / f"{name}.key.pem").write_bytes(_unencrypted_pem(key.pkcs8()))
        (HERE / "keys" / f"{name}.pub.pem").write_bytes(key.public.to_pem())

    def sealed(
        created: datetime = NOW,
        signer: str = "xinye",
        recipient: str = "xiangzhou",
        sender: env.Party = SENDER,
        msg_id: str = "vec-0001",
    ) -> env.Envelope:
        header = env.Header(
            msg_id, "request", "case-411329-0001", sender, RECEIVER, "411329-SB-ZRJX-001", created
        )
        return env.seal(PLAINTEXT, header, keys[signer], keys[recipient].public, backend)

    ok = sealed()
    vectors = {
        "ok.json": (ok, "OK"),
        "tampered-ciphertext.json": (
            replace(ok, ciphertext=_flip_base64(ok.ciphertext)),
            "SIGNATURE_INVALID",
        ),
        "tampered-signature.json": (
            replace(ok, signature=_flip_base64(ok.signature)),
            "SIGNATURE_INVALID",
        ),
        "tampered-header.json": (replace(ok, matter="411329-SB-ZRJX-002"), "SIGNATURE_INVALID"),
        "unknown-signer.json": (sealed(signer="stranger", msg_id="vec-0002"), "KEY_UNKNOWN"),
        "wrong-recipient-key.json": (
            sealed(recipient="stranger", msg_id="vec-0003"),
            "KEY_UNKNOWN",
        ),
        "wrong-jurisdiction.json": (
            sealed(sender=env.Party("420683", "zaoyang-gw"), msg_id="vec-0004"),
            "KEY_WRONG_JURISDICTION",
        ),
        "expired.json": (sealed(created=NOW - timedelta(hours=1), msg_id="vec-0005"), "STALE"),
        "malformed.json": (None, "ENVELOPE_MALFORMED"),
    }
    manifest = {
        "sample": "SAMPLE vectors for XGW-ENV/1; keys are test keys, never use them elsewhere",
        "now": env.format_time(NOW),
        "window_seconds": 300,
        "distid": "1234567812345678",
        # every key's validity: a receiver checks keys against "now" above, not its own clock
        "keys_valid": {
            "not_before": env.format_time(KEYS_VALID[0]),
            "not_after": env.format_time(KEYS_VALID[1]),
        },
        "receiver": {
            "region": RECEIVER.region,
            "node": RECEIVER.node,
            "key": "keys/xiangzhou.key.pem",
        },
        "trusted_senders": [{"region": "411329", "name": "新野县", "key": "keys/xinye.pub.pem"}],
        "plaintext_file": "plaintext.json",
        "vectors": [],
        "replay": {"sequence": ["ok.json", "ok.json"], "expect": ["OK", "REPLAYED"]},
    }
    (HERE / "plaintext.json").write_bytes(PLAINTEXT)
    (HERE / "ok.signed-bytes.txt").write_bytes(ok.canonical())
    for name, (envelope, expect) in vectors.items():
        if envelope is None:
            broken = ok.as_dict()
            broken.pop("nonce")
            data = json.dumps(broken, indent=2).encode()
        else:
            data = json.dumps(envelope.as_dict(), indent=2, ensure_ascii=False).encode()
        (HERE / name).write_bytes(data + b"\n")
        manifest["vectors"].append({"file": name, "expect": expect})  # type: ignore[attr-defined]
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def _unencrypted_pem(pkcs8: bytes) -> bytes:
    import base64

    body = base64.encodebytes(pkcs8).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"
    ).encode()


if __name__ == "__main__":
    main()

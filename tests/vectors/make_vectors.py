"""Regenerate the XGW-ENV/1 test vectors in this folder (SAMPLE keys, never used in production).

Run from the repository root: ``.venv/bin/python tests/vectors/make_vectors.py``. The committed
files are the vectors; regenerating changes every random value (keys, nonces, IVs, signatures).
The generator is ``gateway.devtools.vectors`` (also behind ``xgw vectors make``, for fresh sets).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

from gateway.devtools.vectors import VectorSet, write_vectors
from security import envelope as env
from security.backend import get_backend
from security.keys import generate_private_key

HERE = Path(__file__).resolve().parent
NOW = datetime(2026, 11, 28, 8, 0, 0, tzinfo=UTC)
KEYS_VALID = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC))
SENDER = env.Party("411329", "xinye-gw")
RECEIVER = env.Party("420607", "xiangzhou-gw-1")
MATTER = "XY-SB-001"  # 新野's 企业职工基本养老保险关系转移接续, in its SAMPLE catalogue
PLAINTEXT = (
    '{"sample":true,"aac002":"11010519491231002X","aac003":"样例","aae140":"110",'
    '"aab299":"420607","aae270":"LXH-411329-2026-000001"}'
).encode()


def main() -> None:
    backend = get_backend("native")
    keys = {name: generate_private_key(backend) for name in ("xinye", "xiangzhou", "stranger")}
    (HERE / "keys").mkdir(exist_ok=True)
    for name, key in keys.items():
        (HERE / "keys" / f"{name}.key.pem").write_bytes(_unencrypted_pem(key.pkcs8()))
        (HERE / "keys" / f"{name}.pub.pem").write_bytes(key.public.to_pem())
    spec = VectorSet(
        SENDER,
        RECEIVER,
        MATTER,
        PLAINTEXT,
        NOW,
        keys["xinye"],
        keys["xiangzhou"].public,
        idem_key="case-411329-0001",
    )
    write_vectors(
        HERE,
        spec,
        backend,
        {
            # every key's validity: a receiver checks keys against "now" above, not its clock
            "keys_valid": {
                "not_before": env.format_time(KEYS_VALID[0]),
                "not_after": env.format_time(KEYS_VALID[1]),
            },
            "receiver": {
                "region": RECEIVER.region,
                "node": RECEIVER.node,
                "key": "keys/xiangzhou.key.pem",
            },
            "trusted_senders": [
                {"region": SENDER.region, "name": "新野县", "key": "keys/xinye.pub.pem"}
            ],
        },
        stranger=keys["stranger"],
    )


def _unencrypted_pem(pkcs8: bytes) -> bytes:
    body = base64.encodebytes(pkcs8).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"
    ).encode()


if __name__ == "__main__":
    main()

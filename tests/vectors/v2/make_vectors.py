"""Regenerate the XGW-ENV/2 test vectors in this folder (SAMPLE keys: the XGW-ENV/1 vectors').

Run from the repository root: ``.venv/bin/python tests/vectors/v2/make_vectors.py``. The
committed files are the vectors; regenerating changes every random value. What each file is and
what a receiver must answer: ``manifest.json`` and docs/envelope.md §11. The generator is
``xgw vectors make --envelope 2``'s, with the damaged streams sharing ``ok.json`` here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from gateway.devtools.vectors import VectorSet, write_material_vectors
from mappings.examples import sample_licence
from security import envelope as env
from security.backend import get_backend
from security.keys import load_private_key

HERE = Path(__file__).resolve().parent
KEYS = HERE.parent / "keys"
HOLDER = "11010519491231002X"  # SAMPLE
PLAINTEXT = json.dumps(
    {
        "sample": True,
        "aac002": HOLDER,
        "aac003": "样例",
        "aae140": "310",
        "xgw_licences": [
            {
                "material": "id-card",
                "identifier": sample_licence("1100000001", HOLDER),
                "holder": HOLDER,
            }
        ],
    },
    ensure_ascii=False,
    separators=(",", ":"),
).encode()


def main() -> None:
    backend = get_backend("native")
    signer = load_private_key((KEYS / "xiangzhou.key.pem").read_bytes(), None, backend)
    recipient = load_private_key((KEYS / "xinye.key.pem").read_bytes(), None, backend).public
    spec = VectorSet(
        env.Party("420607", "xiangzhou-gw-1"),  # 襄州 sends a case to 新野, with materials
        env.Party("411329", "xinye-gw"),
        "XY-YB-006",
        PLAINTEXT,
        datetime(2026, 12, 7, 8, 0, 0, tzinfo=UTC),
        signer,
        recipient,
        idem_key="case-420607-0001.medical",
        msg_prefix="vec2",
    )
    write_material_vectors(
        HERE,
        spec,
        backend,
        {
            "sample": "SAMPLE vectors for XGW-ENV/2; keys are the XGW-ENV/1 vectors' test keys",
            "sender": {"region": "420607", "key": "../keys/xiangzhou.pub.pem"},
            "receiver": {"region": "411329", "key": "../keys/xinye.key.pem"},
        },
        shared_envelope=True,
    )


if __name__ == "__main__":
    main()

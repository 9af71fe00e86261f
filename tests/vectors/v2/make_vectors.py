"""Regenerate the XGW-ENV/2 test vectors in this folder (SAMPLE keys: the XGW-ENV/1 vectors').

Run from the repository root: ``.venv/bin/python tests/vectors/v2/make_vectors.py``. The
committed files are the vectors; regenerating changes every random value. What each file is and
what a receiver must answer: ``manifest.json`` and docs/envelope.md §11.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from mappings.examples import sample_licence
from security import envelope as env
from security.backend import get_backend
from security.keys import load_private_key
from security.stream import SEALED_CHUNK_BYTES, MaterialSealing

HERE = Path(__file__).resolve().parent
KEYS = HERE.parent / "keys"
NOW = datetime(2026, 12, 7, 8, 0, 0, tzinfo=UTC)
SENDER = env.Party("420607", "xiangzhou-gw-1")  # 襄州 sends a case to 新野, with materials
RECEIVER = env.Party("411329", "xinye-gw")
MSG_ID = "vec2-0001"
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


def _sample(kind: str, size: int) -> bytes:
    head = {"pdf": b"%PDF-1.7\n% SAMPLE\n", "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"}[kind]
    return head + bytes((i * 7 + 3) % 251 for i in range(size - len(head)))


MATERIALS = {  # code -> (kind, plaintext): the invoices span three chunks, the scan one
    "invoices": ("pdf", _sample("pdf", 150_000)),
    "discharge-summary": ("jpeg", _sample("jpeg", 20_000)),
}


def main() -> None:
    backend = get_backend("native")
    signer = load_private_key((KEYS / "xiangzhou.key.pem").read_bytes(), None, backend)
    recipient = load_private_key((KEYS / "xinye.key.pem").read_bytes(), None, backend).public
    header = env.Header(
        MSG_ID, "request", "case-420607-0001.medical", SENDER, RECEIVER, "XY-YB-006", NOW
    )

    def sealed(digest_of_stream: str | None = None) -> tuple[env.Envelope, dict[str, bytes]]:
        wrapped = env.wrap_content_key(recipient, backend)
        entries, streams = [], {}
        for code, (kind, data) in MATERIALS.items():
            sealing = MaterialSealing(wrapped.key, MSG_ID, code, kind, backend)
            stream = sealing.add(data)
            last, entry = sealing.finish()
            streams[code] = stream + last
            if digest_of_stream is not None and code == "invoices":
                entry = env.ManifestEntry(
                    entry.code, entry.kind, entry.size, entry.prefix, digest_of_stream
                )
            entries.append(entry)
        envelope = env.seal(
            PLAINTEXT, header, signer, recipient, backend, wrapped=wrapped, version=2,
            manifest=tuple(entries),
        )  # fmt: skip
        return envelope, streams

    ok, streams = sealed()
    files: dict[str, bytes] = {
        "ok.json": ok.to_json(),
        "ok.signed-bytes.txt": ok.canonical(),
        "plaintext.json": PLAINTEXT,
    }
    for code, (kind, data) in MATERIALS.items():
        files[f"{code}.{kind}"] = data
        files[f"ok.{code}.sealed"] = streams[code]
    invoices = streams["invoices"]
    first, second = (
        invoices[:SEALED_CHUNK_BYTES],
        invoices[SEALED_CHUNK_BYTES : 2 * SEALED_CHUNK_BYTES],
    )
    files["reordered.invoices.sealed"] = second + first + invoices[2 * SEALED_CHUNK_BYTES :]
    files["truncated.invoices.sealed"] = invoices[: 2 * SEALED_CHUNK_BYTES]
    changed = bytearray(invoices)
    changed[SEALED_CHUNK_BYTES + 100] ^= 0x01
    files["changed.invoices.sealed"] = bytes(changed)
    wrong, wrong_streams = sealed(digest_of_stream="0" * 64)
    files["digest-mismatch.json"] = wrong.to_json()
    for code in MATERIALS:
        files[f"digest-mismatch.{code}.sealed"] = wrong_streams[code]
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    manifest = {
        "sample": "SAMPLE vectors for XGW-ENV/2; keys are the XGW-ENV/1 vectors' test keys",
        "now": env.format_time(NOW),
        "distid": "1234567812345678",
        "sender": {"region": SENDER.region, "key": "../keys/xiangzhou.pub.pem"},
        "receiver": {"region": RECEIVER.region, "key": "../keys/xinye.key.pem"},
        "plaintext_file": "plaintext.json",
        "materials": {code: f"{code}.{kind}" for code, (kind, _) in MATERIALS.items()},
        "vectors": [
            {"envelope": "ok.json", "streams": "ok", "expect": "OK"},
            {"envelope": "ok.json", "streams": "reordered", "expect": "MATERIAL_BROKEN"},
            {"envelope": "ok.json", "streams": "changed", "expect": "MATERIAL_BROKEN"},
            {"envelope": "ok.json", "streams": "truncated", "expect": "MATERIAL_TRUNCATED"},
            {"envelope": "digest-mismatch.json", "streams": "digest-mismatch", "expect": "MATERIAL_DIGEST"},
        ],
        "note": "a vector's streams: <streams>.<code>.sealed for each material, ok.<code>.sealed "
        "where that file does not exist",
    }  # fmt: skip
    (HERE / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    os.chmod(HERE / "manifest.json", 0o644)


if __name__ == "__main__":
    main()

"""The exchange-log vectors in tests/vectors/audit/, used as an auditor's engineer would use them
to check a verifier: from the files alone (keys.json, the store, the archive, the package and
expected.json), each tampering gives exactly the findings listed, and the clean log and
package give none."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.log import AuditLog
from gateway.audit.verify import KnownKey, verify_log, verify_package
from security.auditchain import Finding
from security.keys import load_public_key
from tests.security_helpers import NATIVE

VECTORS = Path(__file__).resolve().parent / "vectors" / "audit"
EXPECTED = json.loads((VECTORS / "expected.json").read_text(encoding="utf-8"))
NODE = "xiangzhou-gw-1"


def _keys(kind: str) -> list[KnownKey]:
    listed = json.loads((VECTORS / "keys.json").read_text(encoding="utf-8"))[kind]
    keys = []
    for entry in listed:
        public = load_public_key((VECTORS / entry["file"]).read_bytes())
        assert public.key_id == entry["key_id"]  # key id = SM3 of the SubjectPublicKeyInfo
        keys.append(
            KnownKey(
                public.key_id,
                public.point,
                datetime.fromisoformat(entry["not_before"]),
                datetime.fromisoformat(entry["not_after"]),
                public.to_pem().decode(),
                entry.get("region"),
            )
        )
    return keys


def _failures(findings: list[Finding]) -> list[list[Any]]:
    """(kind, node, seq) of each failure, as expected.json lists them."""
    unique = {(f.kind, f.node, f.seq) for f in findings if f.fatal}
    return [list(f) for f in sorted(unique, key=str)]


def _verify_store(folder: Path) -> list[list[Any]]:
    log = AuditLog(folder / "store.sqlite3", NODE, b"-" * 32)  # the person key is not needed
    try:
        result = verify_log(
            log,
            _keys("checkpoint_keys"),
            NATIVE,
            folder / "archive",
            unsigned_tail_limit=16,
            witness_keys=_keys("witness_keys"),
        )
    finally:
        log.close()
    return _failures(result.all_findings())


def _scratch(tmp_path: Path) -> Path:
    shutil.copy(VECTORS / "store.sqlite3", tmp_path / "store.sqlite3")
    shutil.copytree(VECTORS / "archive", tmp_path / "archive")
    return tmp_path


def test_the_clean_log_and_package_verify(tmp_path: Path) -> None:
    assert _verify_store(_scratch(tmp_path)) == EXPECTED["store"]["findings"] == []
    package = json.loads((VECTORS / "package.json").read_text(encoding="utf-8"))
    assert _failures(verify_package(package, NATIVE)) == []
    bodies = [json.loads(e["body"]) for e in package["entries"]]
    assert {b["v"] for b in bodies} == {"XGW-AUDIT/2"} and package["witnesses"]
    assert all(b["person"] != "11010519491231002X" for b in bodies)  # SAMPLE number, hashed


@pytest.mark.parametrize("tampering", EXPECTED["store"]["tamperings"], ids=lambda t: str(t["name"]))
def test_each_tampering_of_the_log_gives_its_findings(
    tmp_path: Path, tampering: dict[str, Any]
) -> None:
    folder = _scratch(tmp_path)
    with sqlite3.connect(folder / "store.sqlite3") as db:
        for statement in tampering["sql"]:
            db.execute(statement)
    if "archive_replacement" in tampering:
        [archive] = (folder / "archive").glob("*.jsonl")
        shutil.copy(VECTORS / tampering["archive_replacement"], archive)
    assert _verify_store(folder) == tampering["findings"]


@pytest.mark.parametrize(
    "tampering", EXPECTED["package"]["tamperings"], ids=lambda t: str(t["name"])
)
def test_each_tampering_of_the_package_gives_its_findings(tampering: dict[str, Any]) -> None:
    package = json.loads((VECTORS / tampering["file"]).read_text(encoding="utf-8"))
    assert _failures(verify_package(package, NATIVE)) == tampering["findings"]


def test_the_issues_rewrite_is_among_them_and_only_the_witnesses_catch_it() -> None:
    [rewrite] = [
        t for t in EXPECTED["store"]["tamperings"] if t["name"] == "end-rewritten-and-resigned"
    ]
    assert {kind for kind, _node, _seq in rewrite["findings"]} == {"witness-conflict"}

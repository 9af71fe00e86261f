"""`xgw audit …` as an auditor runs it, against the sample trust store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import run_xgw, xgw_env

FILL = """
import sys
from datetime import UTC, datetime
from gateway.audit.log import AuditEvent
from gateway.assembly import open_audit_log
from gateway.config import load_settings
from gateway.keystore import backend_for, load_trust
settings = load_settings()
log = open_audit_log(settings)
signer = load_trust(settings).signing_key(datetime.now(UTC))
for i in range(45):
    log.append(AuditEvent("message.sent", "outbound", "sent", case_id=f"case-{i % 4}",
                          partner="411329", actor="window-7", person_id="411329198506150034"))
    if i % 20 == 19:
        log.checkpoint(signer, backend_for(settings))
"""


def test_verify_show_export_and_verify_package(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = xgw_env(tmp_path / "var")
    subprocess.run(
        [sys.executable, "-c", FILL], env=env, check=True, cwd=Path(__file__).parent.parent
    )
    ok = run_xgw("audit", "verify", "--progress", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert b"45 entries (1..45), 2 checkpoints" in ok.stdout and b"log verifies" in ok.stdout
    assert b"verifying: 45/45 (100%)" in ok.stderr
    shown = run_xgw("audit", "show", "--case", "case-2", env=env)
    assert shown.stdout.decode().splitlines()[0].split()[:4] == ["NODE", "SEQ", "TIME", "EVENT"]
    assert shown.stdout.count(b"case-2") == 11
    package = tmp_path / "evidence.json"
    exported = run_xgw("audit", "export", "case-1", "--out", str(package), env=env)
    assert exported.returncode == 0, exported.stderr
    checked = run_xgw("audit", "verify-package", str(package), env=env)
    assert checked.returncode == 0 and b"11 entries; package verifies" in checked.stdout
    data = json.loads(package.read_text(encoding="utf-8"))
    data["entries"][0]["body"] = data["entries"][0]["body"].replace("sent", "lost")
    package.write_text(json.dumps(data), encoding="utf-8")
    assert run_xgw("audit", "verify-package", str(package), env=env).returncode == 1

    with sqlite3.connect(tmp_path / "var" / "audit.sqlite3") as db:
        db.execute("UPDATE audit_entry SET body = X'00' WHERE seq = 40")
    shown = run_xgw("audit", "show", env=env)
    assert shown.returncode == 0 and b"DAMAGED message.sent" in shown.stdout, shown.stderr
    with sqlite3.connect(tmp_path / "var" / "audit.sqlite3") as db:
        db.execute("DELETE FROM audit_entry WHERE seq = 7")
    broken = run_xgw("audit", "verify", env=env)
    assert broken.returncode == 1
    assert b"FAIL missing: xiangzhou-gw-1 seq 7" in broken.stdout


def test_a_damaged_archive_file_is_named_by_verify_and_export(tmp_path: Path) -> None:
    """An archive file damaged on its shelf: `xgw audit verify --archive` fails naming it, and
    `xgw audit export` refuses rather than hand over a package missing its entries."""
    import subprocess
    import sys

    env = xgw_env(tmp_path / "var")
    subprocess.run(
        [sys.executable, "-c", FILL], env=env, check=True, cwd=Path(__file__).parent.parent
    )
    archived = run_xgw("audit", "archive", "--older-than-days", "0", env=env)
    assert archived.returncode == 0 and b"archived to" in archived.stdout, archived.stderr
    folder = tmp_path / "var" / "audit-archive"
    (path,) = folder.glob("*.jsonl")
    lines = path.read_bytes().splitlines()
    lines[1] = b'{"checkpoint": ["not", "one"]}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    verified = run_xgw("audit", "verify", "--archive", str(folder), env=env)
    assert verified.returncode == 1
    assert f"archive {path.name} is not readable".encode() in verified.stdout, verified.stdout
    exported = run_xgw("audit", "export", "case-1", "--out", str(tmp_path / "p.json"), env=env)
    assert exported.returncode == 1 and not (tmp_path / "p.json").exists()
    assert exported.stderr.startswith(b"xgw: cannot export case case-1: archive "), exported.stderr
    assert b"line 2: a checkpoint is a JSON object" in exported.stderr
    assert b"Traceback" not in verified.stderr + exported.stderr

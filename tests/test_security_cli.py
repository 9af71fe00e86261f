"""`xgw keys`, `xgw seal`, `xgw open` as an onboarding engineer would use them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import run_xgw, xgw_env


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return xgw_env(tmp_path / "var", XGW_KEY_PASSPHRASE="correct horse", **extra)


def test_generate_show_seal_open_round_trip(tmp_path: Path) -> None:
    env = _env(tmp_path)
    for name in ("xiangzhou", "xinye"):
        result = run_xgw("keys", "generate", "--out", str(tmp_path), "--name", name, env=env)
        assert result.returncode == 0, result.stderr
    private = (tmp_path / "xinye.key.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in private
    assert os.stat(tmp_path / "xinye.key.pem").st_mode & 0o077 == 0
    shown = run_xgw("keys", "show", str(tmp_path / "xinye.pub.pem"), env=env)
    assert b"key id" in shown.stdout
    payload = tmp_path / "form.json"
    payload.write_text('{"aac002":"11010519491231002X"}', encoding="utf-8")
    sealed = tmp_path / "sealed.json"
    result = run_xgw(
        "seal",
        "--to",
        str(tmp_path / "xinye.pub.pem"),
        "--key",
        str(tmp_path / "xiangzhou.key.pem"),
        "--in",
        str(payload),
        "--out",
        str(sealed),
        "--matter",
        "411329-SB-001",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert b"11010519491231002X" not in sealed.read_bytes()
    out = tmp_path / "opened.json"
    result = run_xgw(
        "open",
        "--key",
        str(tmp_path / "xinye.key.pem"),
        "--from",
        str(tmp_path / "xiangzhou.pub.pem"),
        "--in",
        str(sealed),
        "--out",
        str(out),
        "--window",
        "300",
        "--as-region",
        "411329",
        "--from-region",
        "420607",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == payload.read_bytes()


def test_open_refuses_with_reason(tmp_path: Path) -> None:
    env = _env(tmp_path)
    for name in ("a", "b"):
        run_xgw("keys", "generate", "--out", str(tmp_path), "--name", name, env=env)
    (tmp_path / "m").write_bytes(b"hello")
    run_xgw(
        "seal",
        "--to",
        str(tmp_path / "b.pub.pem"),
        "--key",
        str(tmp_path / "a.key.pem"),
        "--in",
        str(tmp_path / "m"),
        "--out",
        str(tmp_path / "e.json"),
        env=env,
    )

    def open_(key: str, sender: str, *extra: str, **env_extra: str) -> bytes:
        """``xgw open`` of e.json (sealed by a to b, i.e. to 411329); its stderr."""
        result = run_xgw(
            "open",
            "--key",
            str(tmp_path / f"{key}.key.pem"),
            "--from",
            str(tmp_path / f"{sender}.pub.pem"),
            "--in",
            str(tmp_path / "e.json"),
            "--out",
            str(tmp_path / "o"),
            *extra,
            env={**env, **env_extra},
        )
        assert result.returncode == 1
        return result.stderr

    as_xinye = ("--as-region", "411329")
    refused = open_("b", "b", *as_xinye)
    assert refused.startswith(b"xgw: refused: KEY_UNKNOWN"), refused  # not a's key
    assert b"KEY_UNKNOWN" in open_("a", "a", *as_xinye)  # not wrapped to this key
    assert b"NOT_FOR_US" in open_("b", "a")  # addressed to 411329, opened as 420607
    assert b"PASSPHRASE_INVALID" in open_("b", "a", *as_xinye, XGW_KEY_PASSPHRASE="nope")
    assert not (tmp_path / "o").exists()


def test_generate_without_passphrase_is_refused(tmp_path: Path) -> None:
    env = xgw_env(tmp_path / "var")
    env.pop("XGW_KEY_PASSPHRASE", None)
    result = run_xgw("keys", "generate", "--out", str(tmp_path), env=env)
    assert result.returncode == 1
    assert b"PASSPHRASE_REQUIRED" in result.stderr


def test_passphrase_file_and_openssl_reads_the_key(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from a file\n", encoding="utf-8")
    env = xgw_env(tmp_path / "var")
    result = run_xgw(
        "keys",
        "generate",
        "--out",
        str(tmp_path),
        "--name",
        "k",
        "--passphrase-file",
        str(secret),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    check = subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(tmp_path / "k.key.pem"),
            "-passin",
            f"file:{secret}",
            "-noout",
        ],
        capture_output=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_keys_lists_sample_trust_store_with_ids_and_validity(tmp_path: Path) -> None:
    env = xgw_env(tmp_path / "var")
    result = run_xgw("keys", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split()[:3] == ["OWNER", "REGION", "KEY"]
    assert lines[1].split()[0:2] == ["own", "420607"] and "valid" in lines[1]
    trust = (tmp_path / "var" / "keys" / "trust.yaml").read_text(encoding="utf-8")
    assert "SAMPLE" in trust


def test_configured_keys_dir_without_trust_file_is_an_error(tmp_path: Path) -> None:
    env = xgw_env(tmp_path / "var", XGW_KEYS_DIR=str(tmp_path / "nokeys"))
    result = run_xgw("keys", env=env)
    assert result.returncode == 1
    assert b"TRUST_CONFIG_INVALID" in result.stderr


def test_open_gives_each_shipped_vector_its_expected_code(tmp_path: Path) -> None:
    """The reference tool runs the receiver's checks (§6): the codes the vectors expect."""
    import json

    vectors = Path(__file__).parent / "vectors"
    manifest = json.loads((vectors / "manifest.json").read_text(encoding="utf-8"))
    (sender,) = manifest["trusted_senders"]
    env = xgw_env(tmp_path / "var")
    for vector in manifest["vectors"]:
        result = run_xgw(
            "open",
            "--key",
            str(vectors / manifest["receiver"]["key"]),
            "--from",
            str(vectors / sender["key"]),
            "--from-region",
            sender["region"],
            "--as-region",
            manifest["receiver"]["region"],
            "--now",
            manifest["now"],
            "--window",
            str(manifest["window_seconds"]),
            "--in",
            str(vectors / vector["file"]),
            "--out",
            str(tmp_path / "out"),
            env=env,
        )
        if vector["expect"] == "OK":
            assert result.returncode == 0, result.stderr
            assert (tmp_path / "out").read_bytes() == (vectors / "plaintext.json").read_bytes()
        else:
            assert result.returncode == 1, (vector, result.stdout)
            code = result.stderr.decode().split(": ")[2]
            assert code == vector["expect"], (vector["file"], result.stderr)


def test_open_checks_an_env2_messages_materials_against_its_manifest(tmp_path: Path) -> None:
    """An operator opening what crossed the wire: the shipped XGW-ENV/2 vectors' envelope and
    sealed streams, each material kept only when its whole stream checks out."""
    vectors = Path(__file__).resolve().parent / "vectors" / "v2"
    env = xgw_env(tmp_path / "var")
    env.pop("XGW_KEY_PASSPHRASE", None)  # the vectors' test keys are not encrypted

    def open_(envelope: str, *materials: str) -> subprocess.CompletedProcess[bytes]:
        return run_xgw(
            "open", "--key", str(vectors.parent / "keys" / "xinye.key.pem"),
            "--from", str(vectors.parent / "keys" / "xiangzhou.pub.pem"),
            "--from-region", "420607", "--as-region", "411329",
            "--now", "2026-12-07T08:00:00Z",  # the vectors' own time (their manifest's "now")
            "--in", str(vectors / envelope), "--out", str(tmp_path / "form.json"),
            "--materials-out", str(tmp_path / "materials"),
            *(f"--material={code}={vectors / stream}" for code, stream in
              (m.split("=") for m in materials)),
            env=env,
        )  # fmt: skip

    done = open_("ok.json", "invoices=ok.invoices.sealed")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "materials" / "invoices.pdf").read_bytes() == (
        vectors / "invoices.pdf"
    ).read_bytes()
    assert b"discharge-summary: jpeg, 20000 bytes, not given" in done.stdout
    (tmp_path / "materials" / "invoices.pdf").unlink()
    for envelope, stream, code in (
        ("ok.json", "truncated.invoices.sealed", b"MATERIAL_TRUNCATED"),
        ("ok.json", "reordered.invoices.sealed", b"MATERIAL_BROKEN"),
        ("ok.json", "changed.invoices.sealed", b"MATERIAL_BROKEN"),
        ("digest-mismatch.json", "digest-mismatch.invoices.sealed", b"MATERIAL_DIGEST"),
    ):
        refused = open_(envelope, f"invoices={stream}")
        assert refused.returncode == 1
        assert refused.stderr.startswith(b"xgw: refused: " + code), refused.stderr
        assert list((tmp_path / "materials").iterdir()) == []  # nothing of a broken stream
    refused = open_("ok.json", "resume=ok.invoices.sealed")
    assert refused.stderr.startswith(b"xgw: refused: MATERIAL_UNEXPECTED"), refused.stderr

"""Interop with the `openssl` command, the independent reference, in both directions."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from security.backend import CryptoBackend
from security.keys import PrivateKey, generate_private_key, load_private_key, load_public_key
from tests.security_helpers import BACKENDS

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
ids = [b.name for b in BACKENDS]
DISTID = "1234567812345678"


def openssl(*args: str, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], capture_output=True, input=input_bytes, check=False)


def _write_keys(tmp_path: Path, key: PrivateKey) -> tuple[Path, Path]:
    private, public = tmp_path / "k.pem", tmp_path / "p.pem"
    private.write_bytes(key.to_pem(b"interop-pass"))
    public.write_bytes(key.public.to_pem())
    return private, public


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_openssl_reads_our_key_files(tmp_path: Path, backend: CryptoBackend) -> None:
    key = generate_private_key(backend)
    private, public = _write_keys(tmp_path, key)
    result = openssl("pkey", "-in", str(private), "-passin", "pass:interop-pass", "-pubout")
    assert result.returncode == 0, result.stderr
    assert load_public_key(result.stdout) == key.public
    assert openssl("pkey", "-pubin", "-in", str(public), "-noout").returncode == 0
    assert openssl("pkey", "-in", str(private), "-passin", "pass:wrong", "-noout").returncode != 0


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
@pytest.mark.parametrize("cipher", ["-aes256", "-sm4-cbc", None])
def test_we_read_openssl_key_files(
    tmp_path: Path, backend: CryptoBackend, cipher: str | None
) -> None:
    path = tmp_path / "openssl.pem"
    args = ["genpkey", "-algorithm", "SM2", "-out", str(path)]
    if cipher:
        args += [cipher, "-pass", "pass:abc"]
    assert openssl(*args).returncode == 0
    key = load_private_key(path.read_bytes(), b"abc", backend)
    public_der = openssl(
        "pkey", "-in", str(path), "-passin", "pass:abc", "-pubout", "-outform", "DER"
    ).stdout
    assert key.public.spki == public_der


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_our_signature_verified_by_openssl(tmp_path: Path, backend: CryptoBackend) -> None:
    key = generate_private_key(backend)
    _, public = _write_keys(tmp_path, key)
    message = "襄州 ⇄ 新野 社保转入".encode()
    (tmp_path / "msg").write_bytes(message)
    for distid in (DISTID, "XINYE-GW-411329"):
        signature = backend.sm2_sign(key.scalar, key.public.point, message, distid.encode())
        (tmp_path / "sig").write_bytes(signature)
        verify = [
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(public),
            "-rawin",
            "-digest",
            "sm3",
            "-in",
            str(tmp_path / "msg"),
            "-sigfile",
            str(tmp_path / "sig"),
        ]
        ok = openssl(*verify, "-pkeyopt", f"distid:{distid}")
        assert ok.returncode == 0 and b"Signature Verified Successfully" in ok.stdout, ok.stderr
        assert openssl(*verify, "-pkeyopt", "distid:someone-else").returncode != 0


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_openssl_signature_verified_by_us(tmp_path: Path, backend: CryptoBackend) -> None:
    key_path = tmp_path / "k.pem"
    openssl("genpkey", "-algorithm", "SM2", "-out", str(key_path))
    key = load_private_key(key_path.read_bytes(), None, backend)
    message = b"signed by OpenSSL"
    (tmp_path / "msg").write_bytes(message)
    for distid in (DISTID, "XINYE-GW-411329"):
        result = openssl(
            "pkeyutl",
            "-sign",
            "-inkey",
            str(key_path),
            "-rawin",
            "-digest",
            "sm3",
            "-in",
            str(tmp_path / "msg"),
            "-pkeyopt",
            f"distid:{distid}",
        )
        assert result.returncode == 0, result.stderr
        assert backend.sm2_verify(key.public.point, message, result.stdout, distid.encode())
        assert not backend.sm2_verify(
            key.public.point, message + b"!", result.stdout, distid.encode()
        )


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_sm2_encryption_both_ways(tmp_path: Path, backend: CryptoBackend) -> None:
    key = generate_private_key(backend)
    private, public = _write_keys(tmp_path, key)
    secret = b"0123456789abcdef"  # an SM4 content key
    encrypted = openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", str(public), input_bytes=secret)
    assert encrypted.returncode == 0, encrypted.stderr
    assert backend.sm2_decrypt(key.scalar, encrypted.stdout) == secret
    (tmp_path / "ct").write_bytes(backend.sm2_encrypt(key.public.point, secret))
    decrypted = openssl(
        "pkeyutl",
        "-decrypt",
        "-inkey",
        str(private),
        "-passin",
        "pass:interop-pass",
        "-in",
        str(tmp_path / "ct"),
    )
    assert decrypted.returncode == 0, decrypted.stderr
    assert decrypted.stdout == secret
    parsed = openssl("asn1parse", "-inform", "DER", "-in", str(tmp_path / "ct"))
    assert parsed.stdout.count(b"INTEGER") == 2 and parsed.stdout.count(b"OCTET STRING") == 2


def test_shipped_vector_signature_verifies_with_openssl_alone(tmp_path: Path) -> None:
    import base64
    import json

    vectors = Path(__file__).resolve().parent / "vectors"
    signature = base64.b64decode(json.loads((vectors / "ok.json").read_text())["signature"])
    (tmp_path / "sig").write_bytes(signature)
    result = openssl(
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(vectors / "keys/xinye.pub.pem"),
        "-rawin",
        "-digest",
        "sm3",
        "-pkeyopt",
        f"distid:{DISTID}",
        "-in",
        str(vectors / "ok.signed-bytes.txt"),
        "-sigfile",
        str(tmp_path / "sig"),
    )
    assert result.returncode == 0, result.stderr

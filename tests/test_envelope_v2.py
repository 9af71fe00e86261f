"""XGW-ENV/2 (docs/envelope.md §11): the shipped vectors open to what their manifest says, with
our code and with a second implementation built from the spec alone — the `openssl` command
for the signature, the key unwrap and the keyed digests, `cryptography`'s SM4-GCM for the
material streams; v1 and v2 side by side; the manifest's form."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from security import envelope as env
from security.errors import SecurityError
from security.keys import load_private_key, load_public_key
from security.stream import MaterialBroken, MaterialOpening
from tests.security_helpers import NATIVE

HERE = Path(__file__).resolve().parent / "vectors" / "v2"
MANIFEST = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))


def _envelope(name: str) -> env.Envelope:
    return env.envelope_from_json((HERE / name).read_bytes())


def _stream(vector: dict[str, str], code: str) -> bytes:
    path = HERE / f"{vector['streams']}.{code}.sealed"
    return (path if path.exists() else HERE / f"ok.{code}.sealed").read_bytes()


@pytest.mark.parametrize("vector", MANIFEST["vectors"], ids=lambda v: v["expect"].lower())
def test_our_receiver_answers_each_vector_as_the_manifest_says(vector: dict[str, str]) -> None:
    receiver = load_private_key((HERE / MANIFEST["receiver"]["key"]).read_bytes(), None, NATIVE)
    sender = load_public_key((HERE / MANIFEST["sender"]["key"]).read_bytes())
    envelope = _envelope(vector["envelope"])
    env.verify_origin(envelope, sender, NATIVE)
    plaintext, key = env.decrypt_with_key(envelope, receiver, NATIVE)
    assert plaintext == (HERE / MANIFEST["plaintext_file"]).read_bytes()
    outcome = "OK"
    try:
        for entry in envelope.manifest:
            opening = MaterialOpening(key, envelope.msg_id, entry, NATIVE)
            stream = _stream(vector, entry.code)
            opened = b"".join(
                opening.add(stream[i : i + 10_000]) for i in range(0, len(stream), 10_000)
            )
            opened += opening.finish()
            assert opened == (HERE / MANIFEST["materials"][entry.code]).read_bytes()
    except MaterialBroken as exc:
        outcome = exc.code
    assert outcome == vector["expect"]


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(
        ["openssl", *args], input=data, capture_output=True, check=True, timeout=30
    ).stdout


def _hmac_sm3(key: bytes, data: bytes, tmp: Path) -> bytes:
    (tmp / "mac-in").write_bytes(data)
    out = _openssl(
        "mac", "-digest", "sm3", "-macopt", f"hexkey:{key.hex()}", "-in", str(tmp / "mac-in"),
        "HMAC",
    )  # fmt: skip
    return bytes.fromhex(out.decode().strip())


def test_the_spec_alone_opens_the_vector(tmp_path: Path) -> None:
    """What a partner's engineer does with OpenSSL and any SM4-GCM, following §11 only."""
    document = json.loads((HERE / "ok.json").read_bytes())
    signed = "".join(
        f"{name}={document[name]}\n"
        for name in (
            "v", "msg_id", "kind", "idem_key", "sender_region", "sender_node",
            "receiver_region", "receiver_node", "matter", "created", "nonce", "sender_key_id",
            "recipient_key_id", "content_type", "materials", "digest", "key_wrap", "iv",
            "ciphertext", "tag",
        )
    ).encode()  # fmt: skip
    assert signed == (HERE / "ok.signed-bytes.txt").read_bytes()
    (tmp_path / "signed").write_bytes(signed)
    (tmp_path / "sig").write_bytes(base64.b64decode(document["signature"]))
    _openssl(
        "pkeyutl", "-verify", "-pubin", "-inkey", str(HERE / MANIFEST["sender"]["key"]),
        "-rawin", "-digest", "sm3", "-pkeyopt", f"distid:{MANIFEST['distid']}",
        "-in", str(tmp_path / "signed"), "-sigfile", str(tmp_path / "sig"),
    )  # fmt: skip
    (tmp_path / "wrap").write_bytes(base64.b64decode(document["key_wrap"]))
    key = _openssl(
        "pkeyutl", "-decrypt", "-inkey", str(HERE / MANIFEST["receiver"]["key"]),
        "-in", str(tmp_path / "wrap"),
    )  # fmt: skip
    assert len(key) == 16
    aad = signed[: signed.index(b"key_wrap=")]  # v … digest
    body = base64.b64decode(document["ciphertext"]) + base64.b64decode(document["tag"])
    plaintext = _gcm_open(key, base64.b64decode(document["iv"]), body, aad)
    assert plaintext == (HERE / "plaintext.json").read_bytes()
    # the digest is keyed: HMAC-SM3 under the content key, over the label and the plaintext
    assert _hmac_sm3(key, b"XGW-ENV/2 digest" + plaintext, tmp_path).hex() == document["digest"]
    for part in document["materials"].split(";"):
        code, kind, size, prefix_hex, sealed_sm3 = part.split(":")
        stream = (HERE / f"ok.{code}.sealed").read_bytes()
        assert _openssl("dgst", "-sm3", "-r", data=stream).decode().split()[0] == sealed_sm3
        prefix = bytes.fromhex(prefix_hex)
        material_key = _hmac_sm3(key, b"XGW-ENV/2 material" + prefix, tmp_path)[:16]
        chunks = [stream[i : i + 65552] for i in range(0, len(stream), 65552)]
        opened = b"".join(
            _gcm_open(
                material_key,
                prefix
                + index.to_bytes(4, "big")
                + (b"\x01" if index == len(chunks) - 1 else b"\x00"),
                chunk,
                document["msg_id"].encode() + b"\x00" + code.encode(),
            )
            for index, chunk in enumerate(chunks)
        )
        assert len(opened) == int(size)
        assert opened == (HERE / MANIFEST["materials"][code]).read_bytes()
        assert kind in ("pdf", "jpeg")


def _gcm_open(key: bytes, iv: bytes, sealed: bytes, aad: bytes) -> bytes:
    decryptor = Cipher(algorithms.SM4(key), modes.GCM(iv, sealed[-16:])).decryptor()
    decryptor.authenticate_additional_data(aad)
    return decryptor.update(sealed[:-16]) + decryptor.finalize()


def test_a_v2_envelope_whose_digest_is_v1s_does_not_open() -> None:
    """SM3 of the plaintext is what v2 leaves out (it confirms a guess); a v2 envelope carrying
    it is refused like any other bad digest."""
    receiver = load_private_key((HERE / MANIFEST["receiver"]["key"]).read_bytes(), None, NATIVE)
    signer = load_private_key(
        (HERE.parent / "keys" / "xiangzhou.key.pem").read_bytes(), None, NATIVE
    )
    ok = _envelope("ok.json")
    header = env.Header("m-1", "request", "k-1", ok.sender, ok.receiver, ok.matter, ok.created_at)
    sealed = env.seal(b"{}", header, signer, receiver.public, NATIVE, version=2)
    assert sealed.v == "XGW-ENV/2" and sealed.materials == ""
    assert env.decrypt(sealed, receiver, NATIVE) == b"{}"
    plain_digest = env.Envelope(**{**sealed.as_dict(), "digest": NATIVE.sm3(b"{}").hex()})
    with pytest.raises(SecurityError) as refused:
        env.decrypt(plain_digest, receiver, NATIVE)
    assert refused.value.code == "DECRYPT_FAILED"


def test_v1_and_v2_side_by_side_and_the_manifest_form() -> None:
    ok = _envelope("ok.json")
    assert ok.version == 2 and [e.code for e in ok.manifest] == ["invoices", "discharge-summary"]
    assert env.envelope_from_record(ok.to_json()) == ok  # the outbox's copy
    v1 = env.envelope_from_json((HERE.parent / "ok.json").read_bytes())
    assert v1.version == 1 and v1.manifest == () and "materials" not in v1.as_dict()
    document = json.loads((HERE / "ok.json").read_bytes())
    for bad in (
        "invoices:pdf:1:00:" + "0" * 64,  # a prefix is 7 bytes
        "invoices:exe:1:" + "00" * 7 + ":" + "0" * 64,  # not a type we take
        "Invoices:pdf:1:" + "00" * 7 + ":" + "0" * 64,  # codes are lower case
        ";".join(["invoices:pdf:1:" + "00" * 7 + ":" + "0" * 64] * 2),  # named twice
        ";".join(f"m{i}:pdf:1:" + "00" * 7 + ":" + "0" * 64 for i in range(33)),  # 33 > 32
    ):
        with pytest.raises(SecurityError) as refused:
            env.envelope_from_mapping({**document, "materials": bad})
        assert refused.value.code == "ENVELOPE_MALFORMED"
    v1_fields_only = {k: v for k, v in document.items() if k != "materials"}
    with pytest.raises(SecurityError):
        env.envelope_from_mapping(v1_fields_only)  # a v2 envelope lacking its manifest
    with pytest.raises(SecurityError):
        env.envelope_from_mapping(
            {**json.loads((HERE.parent / "ok.json").read_bytes()), "materials": ""}
        )

"""SM2 key pairs, their files and their ids.

- Public keys: SubjectPublicKeyInfo, PEM (``PUBLIC KEY``) or DER.
- Private keys: PKCS#8, at rest always encrypted (``ENCRYPTED PRIVATE KEY``): PBES2 with
  PBKDF2-HMAC-SHA256 and SM4-CBC. OpenSSL ≥ 3.0 reads and writes it (``openssl pkey -passin``);
  the PRF is SHA-256 because OpenSSL 3.0 does not know hmacWithSM3. AES-256-CBC files (OpenSSL's
  default, ``openssl genpkey -aes256``) are read too.
- Key id: lowercase hex SM3 of the SubjectPublicKeyInfo DER: stable across formats and tools.

Passphrases come from an environment variable or a file, never from the command line.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from security import der
from security.backend import CryptoBackend, random_private_scalar
from security.digest import sm3_hex
from security.errors import (
    KEY_FILE_INVALID,
    PASSPHRASE_INVALID,
    PASSPHRASE_REQUIRED,
    SecurityError,
)
from security.keyformats import parse_pkcs8, parse_spki, pkcs8_der, spki_der

OID_PBES2 = "1.2.840.113549.1.5.13"
OID_PBKDF2 = "1.2.840.113549.1.5.12"
OID_HMAC_SHA256 = "1.2.840.113549.2.9"
OID_SM4_CBC = "1.2.156.10197.1.104.2"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
PBKDF2_ITERATIONS = 200_000
_PEM = re.compile(rb"-----BEGIN ([A-Z ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class PublicKey:
    point: bytes

    # Cached (frozen dataclasses allow it): trust lookups compare key ids on every message.
    @cached_property
    def spki(self) -> bytes:
        return spki_der(self.point)

    @cached_property
    def key_id(self) -> str:
        return sm3_hex(self.spki)

    def to_pem(self) -> bytes:
        return _pem("PUBLIC KEY", self.spki)


@dataclass(frozen=True)
class PrivateKey:
    scalar: int = field(repr=False)
    public: PublicKey

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def to_pem(self, passphrase: bytes) -> bytes:
        if not passphrase:
            raise SecurityError(PASSPHRASE_REQUIRED, "private keys are stored encrypted")
        return _pem("ENCRYPTED PRIVATE KEY", encrypt_pkcs8(self.pkcs8(), passphrase))

    def pkcs8(self) -> bytes:
        return pkcs8_der(self.scalar, self.public.point)


def generate_private_key(backend: CryptoBackend) -> PrivateKey:
    scalar = random_private_scalar()
    return PrivateKey(scalar, PublicKey(backend.sm2_public_key(scalar)))


def private_key_from_scalar(scalar: int, backend: CryptoBackend) -> PrivateKey:
    return PrivateKey(scalar, PublicKey(backend.sm2_public_key(scalar)))


def _pem(label: str, data: bytes) -> bytes:
    body = base64.encodebytes(data).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        b"\n".join([f"-----BEGIN {label}-----".encode(), *lines, f"-----END {label}-----".encode()])
        + b"\n"
    )


def _unpem(data: bytes) -> tuple[str | None, bytes]:
    match = _PEM.search(data)
    if match is None:
        return None, data  # DER
    try:
        return match.group(1).decode(), base64.b64decode(
            b"".join(match.group(2).split()), validate=True
        )
    except ValueError:
        raise SecurityError(KEY_FILE_INVALID, "PEM body is not valid base64") from None


def load_public_key(data: bytes) -> PublicKey:
    label, body = _unpem(data)
    if label not in (None, "PUBLIC KEY"):
        raise SecurityError(KEY_FILE_INVALID, f"expected a PUBLIC KEY, found {label}")
    try:
        return PublicKey(parse_spki(body))
    except der.DerError as exc:
        raise SecurityError(KEY_FILE_INVALID, f"not an SM2 public key ({exc})") from None


def load_private_key(data: bytes, passphrase: bytes | None, backend: CryptoBackend) -> PrivateKey:
    label, body = _unpem(data)
    if label == "ENCRYPTED PRIVATE KEY":
        if not passphrase:
            raise SecurityError(PASSPHRASE_REQUIRED, "the private key is encrypted")
        body = decrypt_pkcs8(body, passphrase)
    elif label not in (None, "PRIVATE KEY"):
        raise SecurityError(KEY_FILE_INVALID, f"expected a PRIVATE KEY, found {label}")
    try:
        scalar, point = parse_pkcs8(body)
    except der.DerError as exc:
        raise SecurityError(KEY_FILE_INVALID, f"not an SM2 private key ({exc})") from None
    derived = backend.sm2_public_key(scalar)
    if point is not None and point != derived:
        raise SecurityError(KEY_FILE_INVALID, "embedded public key does not match the private key")
    return PrivateKey(scalar, PublicKey(derived))


def _pbkdf2(passphrase: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    kdf = PBKDF2HMAC(hashes.SHA256(), length=length, salt=salt, iterations=iterations)
    return kdf.derive(passphrase)


def encrypt_pkcs8(plain: bytes, passphrase: bytes, iterations: int = PBKDF2_ITERATIONS) -> bytes:
    salt, iv = secrets.token_bytes(16), secrets.token_bytes(16)
    key = _pbkdf2(passphrase, salt, iterations, 16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.SM4(key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padded) + encryptor.finalize()
    kdf_params = der.sequence(
        der.octet_string(salt),
        der.integer(iterations),
        der.sequence(der.oid(OID_HMAC_SHA256), der.null()),
    )
    scheme = der.sequence(
        der.sequence(der.oid(OID_PBKDF2), kdf_params),
        der.sequence(der.oid(OID_SM4_CBC), der.octet_string(iv)),
    )
    return der.sequence(der.sequence(der.oid(OID_PBES2), scheme), der.octet_string(encrypted))


def decrypt_pkcs8(data: bytes, passphrase: bytes) -> bytes:
    try:
        algorithm, encrypted = der.sequence_of(data, 2)
        algorithm_oid, params = algorithm.children()
        if algorithm_oid.as_oid() != OID_PBES2:
            raise der.DerError("only PBES2 is supported")
        kdf, scheme = params.children()
        kdf_oid, kdf_params = kdf.children()
        if kdf_oid.as_oid() != OID_PBKDF2:
            raise der.DerError("only PBKDF2 is supported")
        kdf_items = kdf_params.children()
        salt, iterations = kdf_items[0].as_octets(), kdf_items[1].as_int()
        prf = [n for n in kdf_items[2:] if n.tag == der.TAG_SEQUENCE]
        if prf and prf[0].children()[0].as_oid() != OID_HMAC_SHA256:
            raise der.DerError("only PBKDF2 with HMAC-SHA256 is supported")
        if not 1_000 <= iterations <= 10_000_000:
            raise der.DerError("PBKDF2 iteration count out of range")
        cipher_oid, iv_node = scheme.children()
        iv = iv_node.as_octets()
        algorithm_cls, key_length = {
            OID_SM4_CBC: (algorithms.SM4, 16),
            OID_AES256_CBC: (algorithms.AES, 32),
        }[cipher_oid.as_oid()]
        ciphertext = encrypted.as_octets()
    except (der.DerError, KeyError, ValueError, IndexError):
        raise SecurityError(KEY_FILE_INVALID, "unsupported or malformed encrypted key") from None
    key = _pbkdf2(passphrase, salt, iterations, key_length)
    try:
        decryptor = Cipher(algorithm_cls(key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
        der.parse(plain)
    except ValueError:
        raise SecurityError(PASSPHRASE_INVALID, "wrong passphrase or corrupt key file") from None
    return plain


def read_passphrase(env_var: str | None = None, file: Path | None = None) -> bytes | None:
    """The passphrase from a file (first line) or an environment variable; never argv."""
    if file is not None:
        try:
            return file.read_bytes().splitlines()[0] if file.stat().st_size else b""
        except OSError as exc:
            raise SecurityError(
                PASSPHRASE_REQUIRED, f"cannot read passphrase file ({exc.strerror})"
            ) from None
    if env_var is not None and env_var in os.environ:
        return os.environ[env_var].encode()
    return None


def write_private_key(path: Path, key: PrivateKey, passphrase: bytes) -> None:
    """Write a key file readable only by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.to_pem(passphrase))

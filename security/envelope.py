"""The sealed envelope, XGW-ENV/1 and /2 (spec: docs/envelope.md). Pure functions over a backend.

Order: encrypt, then sign. The signature covers every field but itself (the header, the SM2-wrapped
content key, IV, ciphertext, tag and the SM3 digest of the plaintext), so:
- an auditor holding only public keys verifies origin and integrity of a logged envelope without
  decrypting personal data;
- a receiver rejects forgeries before any decryption work (no decryption oracle, cheap refusal);
- the signer is bound to the plaintext too (the digest), so a recipient can later prove what was
  said by disclosing it.
The header is also the GCM additional data, so ciphertext cannot be moved under another header.

XGW-ENV/2 (§11) adds ``materials``, the signed manifest of the materials sealed as chunk streams
under the same content key (``security.stream``), and keys the digest: HMAC-SM3 under the content
key instead of SM3, so nobody without the key can confirm a guessed plaintext.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from rules.materials import MATERIAL_CODE, MATERIAL_TYPES
from rules.text import code_pattern
from security import der
from security.backend import GCM_IV_BYTES, GCM_TAG_BYTES, SM4_KEY_BYTES, CryptoBackend
from security.curve import DEFAULT_DISTID
from security.digest import SM3_HEX
from security.errors import ENVELOPE_MALFORMED, SIGNATURE_INVALID, SecurityError, decrypt_failed
from security.keys import PrivateKey, PublicKey

VERSION = "XGW-ENV/1"
VERSION_2 = "XGW-ENV/2"
VERSIONS = {1: VERSION, 2: VERSION_2}
NONCE_BYTES = 16
MAX_ENVELOPE_BYTES = 64 * 1024 * 1024

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_B64 = r"^[A-Za-z0-9+/]*={0,2}$"
_HEX64 = rf"^{SM3_HEX}$"
PATTERNS: dict[str, str] = {
    "v": rf"^{re.escape(VERSION)}$",
    "msg_id": _ID,
    "kind": r"^[a-z][a-z0-9_.-]{0,31}$",
    "idem_key": _ID,
    "sender_region": r"^\d{6}$",
    "sender_node": r"^[A-Za-z0-9._-]{1,64}$",
    "receiver_region": r"^\d{6}$",
    "receiver_node": r"^[A-Za-z0-9._-]{1,64}$",
    "matter": r"^[A-Za-z0-9._-]{1,64}$",
    "created": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$",
    "nonce": _B64,
    "sender_key_id": _HEX64,
    "recipient_key_id": _HEX64,
    "content_type": r"^[a-z0-9][a-z0-9.+/-]{0,63}$",
    "digest": _HEX64,
    "key_wrap": _B64,
    "iv": _B64,
    "ciphertext": _B64,
    "tag": _B64,
    "signature": _B64,
}
# ASCII and whole: "\d" is [0-9] only, and "$" admits no trailing line feed (rules.text)
_COMPILED = {name: code_pattern(pattern) for name, pattern in PATTERNS.items()}
# The GCM additional data: the header plus the plaintext digest.
AAD_FIELDS = tuple(PATTERNS)[: tuple(PATTERNS).index("digest") + 1]
SIGNED_FIELDS = tuple(PATTERNS)[:-1]

# XGW-ENV/2: the manifest after content_type; the rest as in /1 (the digest keyed).
MAX_MATERIALS = 32
_ENTRY = (
    rf"{MATERIAL_CODE}:(?:{'|'.join(MATERIAL_TYPES)}):(?:0|[1-9][0-9]{{0,11}})"
    r":[0-9a-f]{14}:[0-9a-f]{64}"
)
_V2_NAMES = (*tuple(PATTERNS)[: tuple(PATTERNS).index("digest")], "materials")
PATTERNS_V2: dict[str, str] = {
    **{name: PATTERNS[name] for name in _V2_NAMES if name != "materials"},
    "v": rf"^{re.escape(VERSION_2)}$",
    "materials": rf"^(?:{_ENTRY}(?:;{_ENTRY}){{0,{MAX_MATERIALS - 1}}})?$",
    **{name: PATTERNS[name] for name in tuple(PATTERNS)[tuple(PATTERNS).index("digest") :]},
}
_COMPILED_V2 = {name: code_pattern(pattern) for name, pattern in PATTERNS_V2.items()}
AAD_FIELDS_V2 = tuple(PATTERNS_V2)[: tuple(PATTERNS_V2).index("digest") + 1]
SIGNED_FIELDS_V2 = tuple(PATTERNS_V2)[:-1]
_DIGEST_LABEL = b"XGW-ENV/2 digest"


@dataclass(frozen=True)
class Party:
    region: str  # GB/T 2260 region code of the jurisdiction
    node: str  # gateway node id within it


@dataclass(frozen=True)
class Header:
    """What the sender states about a message; everything here is signed."""

    msg_id: str
    kind: str
    idem_key: str
    sender: Party
    receiver: Party
    matter: str
    created: datetime
    content_type: str = "application/json"


@dataclass(frozen=True)
class Envelope:
    """The wire form: every field a string, exactly as transported in JSON or XML."""

    v: str
    msg_id: str
    kind: str
    idem_key: str
    sender_region: str
    sender_node: str
    receiver_region: str
    receiver_node: str
    matter: str
    created: str
    nonce: str
    sender_key_id: str
    recipient_key_id: str
    content_type: str
    digest: str
    key_wrap: str
    iv: str
    ciphertext: str
    tag: str
    signature: str
    materials: str = ""  # XGW-ENV/2 only: the manifest (placed after content_type on the wire)

    @property
    def version(self) -> int:
        return 2 if self.v == VERSION_2 else 1

    @property
    def field_names(self) -> tuple[str, ...]:
        return FIELD_NAMES_V2 if self.v == VERSION_2 else FIELD_NAMES

    def canonical(self, names: tuple[str, ...] | None = None) -> bytes:
        """The exact bytes signed: ``name=value\\n`` per field, in spec order, UTF-8."""
        if names is None:
            names = SIGNED_FIELDS_V2 if self.v == VERSION_2 else SIGNED_FIELDS
        return "".join(f"{name}={getattr(self, name)}\n" for name in names).encode()

    def aad(self) -> bytes:
        return self.canonical(AAD_FIELDS_V2 if self.v == VERSION_2 else AAD_FIELDS)

    @property
    def manifest(self) -> tuple[ManifestEntry, ...]:
        return parse_manifest(self.materials)

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in self.field_names}

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_dict())

    @property
    def created_at(self) -> datetime:
        return parse_time(self.created)

    @property
    def sender(self) -> Party:
        return Party(self.sender_region, self.sender_node)

    @property
    def receiver(self) -> Party:
        return Party(self.receiver_region, self.receiver_node)


FIELD_NAMES = tuple(f.name for f in fields(Envelope) if f.name != "materials")
FIELD_NAMES_V2 = tuple(PATTERNS_V2)
assert tuple(PATTERNS) == FIELD_NAMES, "Envelope fields must follow the spec order"
assert set(FIELD_NAMES_V2) == {f.name for f in fields(Envelope)}


@dataclass(frozen=True)
class ManifestEntry:
    """One material of an XGW-ENV/2 message, as the signed manifest states it (§11)."""

    code: str  # the material's code in the sender's catalogue
    kind: str  # pdf | ofd | jpeg | png, told by its content
    size: int  # plaintext bytes
    prefix: bytes  # the stream's 7-byte prefix
    sealed_sm3: str  # SM3 of the sealed stream, hex: what crossed, checkable without a key

    def text(self) -> str:
        return f"{self.code}:{self.kind}:{self.size}:{self.prefix.hex()}:{self.sealed_sm3}"


def format_manifest(entries: tuple[ManifestEntry, ...]) -> str:
    return ";".join(entry.text() for entry in entries)


def parse_manifest(text: str) -> tuple[ManifestEntry, ...]:
    """The manifest of an envelope already checked against its pattern; codes are unique."""
    if not text:
        return ()
    entries = []
    for part in text.split(";"):
        code, kind, size, prefix, sealed_sm3 = part.split(":")
        entries.append(ManifestEntry(code, kind, int(size), bytes.fromhex(prefix), sealed_sm3))
    if len({entry.code for entry in entries}) != len(entries):
        raise malformed("the manifest names a material twice")
    return tuple(entries)


def material_aad(msg_id: str, code: str) -> bytes:
    """A material stream's additional data (§11): the message id, a zero byte, the code."""
    return msg_id.encode() + b"\x00" + code.encode()


def keyed_digest(content_key: bytes, plaintext: bytes, backend: CryptoBackend) -> str:
    """XGW-ENV/2's digest: HMAC-SM3 under the content key (§11)."""
    return backend.hmac_sm3(content_key, _DIGEST_LABEL + plaintext).hex()


def format_time(moment: datetime) -> str:
    """UTC with a Z, microseconds only when there are any (isoformat: a fifth of strftime's cost)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def parse_time(text: str) -> datetime:
    """The envelope's UTC time (already checked against PATTERNS['created'])."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, name: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise malformed(f"{name} is not base64") from None
    if base64.b64encode(data).decode() != text:
        raise malformed(f"{name} is not canonical base64")
    return data


def malformed(reason: str) -> SecurityError:
    return SecurityError(ENVELOPE_MALFORMED, reason)


def envelope_from_mapping(data: Any) -> Envelope:
    """Validate untrusted fields (from JSON or XML) into an Envelope, or ENVELOPE_MALFORMED."""
    if not isinstance(data, dict):
        raise malformed("the envelope must be an object")
    names, patterns, compiled = (
        (FIELD_NAMES_V2, PATTERNS_V2, _COMPILED_V2)
        if data.get("v") == VERSION_2
        else (FIELD_NAMES, PATTERNS, _COMPILED)
    )
    missing = [name for name in names if name not in data]
    extra = sorted(str(name) for name in data if name not in patterns)
    if missing or extra:
        raise malformed(
            "; ".join(
                part
                for part in (
                    f"missing fields: {', '.join(missing)}" if missing else "",
                    f"unknown fields: {', '.join(extra[:10])}" if extra else "",
                )
                if part
            )
        )
    for name in names:
        value = data[name]
        if not isinstance(value, str) or compiled[name].fullmatch(value) is None:
            raise malformed(f"field {name} is not of the expected form")
    envelope = Envelope(**{name: data[name] for name in names})
    envelope.manifest  # noqa: B018 - validates that no material is named twice
    try:
        envelope.created_at  # noqa: B018 - validates the calendar date
    except ValueError:
        raise malformed("field created is not a valid time") from None
    sizes = {"nonce": NONCE_BYTES, "iv": GCM_IV_BYTES, "tag": GCM_TAG_BYTES}
    for name, size in sizes.items():
        if len(unb64(getattr(envelope, name), name)) != size:
            raise malformed(f"field {name} must be {size} bytes")
    for name in ("key_wrap", "ciphertext", "signature"):
        unb64(getattr(envelope, name), name)
    return envelope


def envelope_from_record(raw: bytes) -> Envelope:
    """An envelope we sealed and stored ourselves (the outbox): no re-validation; whoever
    receives it validates and verifies it anyway."""
    return Envelope(**orjson.loads(raw))


def envelope_from_json(raw: bytes) -> Envelope:
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise malformed("envelope too large")
    try:
        # One parse that also refuses a repeated name: a parser that keeps the first of two
        # would see a value nobody checked (each field is present exactly once, §3). UTF-8
        # only, decoded strictly; NaN and the like are no strings and fail the field checks.
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_without_repeats)
    except _Repeated as repeated:
        raise malformed(f"field {repeated.name} appears more than once") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise malformed("not valid JSON") from None
    return envelope_from_mapping(data)


class _Repeated(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name if _COMPILED["kind"].fullmatch(name) else "(a name not of ours)"


def _without_repeats(items: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(items)
    if len(data) != len(items):
        names = [name for name, _ in items]
        raise _Repeated(next(n for n in names if names.count(n) > 1))
    return data


@dataclass(frozen=True, repr=False)
class WrappedKey:
    """A fresh SM4 content key and its SM2 wrap for one recipient key. It does not depend on
    the message, so it can be made ahead of need (``security.keypool``); used once."""

    recipient_key_id: str
    key: bytes
    wrap: bytes  # SM2 ciphertext (C1C3C2) of ``key``

    def __repr__(self) -> str:  # never the key itself, in a log or a traceback
        return f"WrappedKey(recipient_key_id={self.recipient_key_id!r})"


def wrap_content_key(recipient: PublicKey, backend: CryptoBackend) -> WrappedKey:
    key = secrets.token_bytes(SM4_KEY_BYTES)
    return WrappedKey(recipient.key_id, key, backend.sm2_encrypt(recipient.point, key))


def seal(
    plaintext: bytes,
    header: Header,
    signer: PrivateKey,
    recipient: PublicKey,
    backend: CryptoBackend,
    distid: bytes = DEFAULT_DISTID,
    nonce: bytes | None = None,
    wrapped: WrappedKey | None = None,
    version: int = 1,
    manifest: tuple[ManifestEntry, ...] = (),
) -> Envelope:
    """Encrypt to ``recipient`` with a fresh SM4 key (``wrapped``: one made ahead for this
    recipient key, else one made now), then sign everything with ``signer``. ``version`` 2
    with a ``manifest``: its materials were sealed under ``wrapped.key`` (``security.stream``)."""
    if manifest and (
        version != 2 or wrapped is None or wrapped.recipient_key_id != recipient.key_id
    ):
        raise ValueError("materials are XGW-ENV/2, sealed under the message's own content key")
    if wrapped is None or wrapped.recipient_key_id != recipient.key_id:
        wrapped = wrap_content_key(recipient, backend)
    iv = secrets.token_bytes(GCM_IV_BYTES)
    values = {
        "v": VERSIONS[version],
        "msg_id": header.msg_id,
        "kind": header.kind,
        "idem_key": header.idem_key,
        "sender_region": header.sender.region,
        "sender_node": header.sender.node,
        "receiver_region": header.receiver.region,
        "receiver_node": header.receiver.node,
        "matter": header.matter,
        "created": format_time(header.created),
        "nonce": b64(nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)),
        "sender_key_id": signer.key_id,
        "recipient_key_id": recipient.key_id,
        "content_type": header.content_type,
    }
    if version == 2:
        values["materials"] = format_manifest(manifest)
        values["digest"] = keyed_digest(wrapped.key, plaintext, backend)
    else:
        values["digest"] = backend.sm3(plaintext).hex()
    compiled = _COMPILED_V2 if version == 2 else _COMPILED
    for name, value in values.items():
        if compiled[name].fullmatch(value) is None:
            raise malformed(f"field {name} is not of the expected form")
    aad_names = AAD_FIELDS_V2 if version == 2 else AAD_FIELDS
    aad = "".join(f"{name}={values[name]}\n" for name in aad_names).encode()
    ciphertext, tag = backend.sm4_gcm_encrypt(wrapped.key, iv, plaintext, aad)
    values.update(
        key_wrap=b64(wrapped.wrap),
        iv=b64(iv),
        ciphertext=b64(ciphertext),
        tag=b64(tag),
        signature="",
    )
    unsigned = Envelope(**values)
    signature = backend.sm2_sign(signer.scalar, signer.public.point, unsigned.canonical(), distid)
    return Envelope(**{**values, "signature": b64(signature)})


def verify_origin(
    envelope: Envelope, sender: PublicKey, backend: CryptoBackend, distid: bytes = DEFAULT_DISTID
) -> None:
    """Origin and integrity with public keys only (what auditors run). Raises SIGNATURE_INVALID."""
    if envelope.sender_key_id != sender.key_id:
        raise SecurityError(SIGNATURE_INVALID, "the envelope names another signing key")
    signature = unb64(envelope.signature, "signature")
    try:
        der.decode_signature(signature)
    except der.DerError:
        raise SecurityError(SIGNATURE_INVALID, "the signature is not DER SEQUENCE{r,s}") from None
    if not backend.sm2_verify(sender.point, envelope.canonical(), signature, distid):
        raise SecurityError(SIGNATURE_INVALID, "the signature does not verify")


def decrypt(envelope: Envelope, recipient: PrivateKey, backend: CryptoBackend) -> bytes:
    """Unwrap the content key, decrypt, check the digest. One error for every failure."""
    return decrypt_with_key(envelope, recipient, backend)[0]


def decrypt_with_key(
    envelope: Envelope, recipient: PrivateKey, backend: CryptoBackend
) -> tuple[bytes, bytes]:
    """(plaintext, content key): the key opens an XGW-ENV/2 message's materials."""
    if envelope.recipient_key_id != recipient.key_id:
        raise decrypt_failed()
    try:
        content_key = backend.sm2_decrypt(recipient.scalar, unb64(envelope.key_wrap, "key_wrap"))
        if len(content_key) != SM4_KEY_BYTES:
            raise ValueError("content key length")
        plaintext = backend.sm4_gcm_decrypt(
            content_key,
            unb64(envelope.iv, "iv"),
            unb64(envelope.ciphertext, "ciphertext"),
            unb64(envelope.tag, "tag"),
            envelope.aad(),
        )
    except (ValueError, SecurityError):
        raise decrypt_failed() from None
    expected = (
        keyed_digest(content_key, plaintext, backend)
        if envelope.version == 2
        else backend.sm3(plaintext).hex()
    )
    if expected != envelope.digest:
        raise decrypt_failed()
    return plaintext, content_key


def open_sealed(
    envelope: Envelope,
    recipient: PrivateKey,
    sender: PublicKey,
    backend: CryptoBackend,
    distid: bytes = DEFAULT_DISTID,
) -> bytes:
    """Verify, then decrypt. Trust, validity and replay are the caller's (security.opener)."""
    verify_origin(envelope, sender, backend, distid)
    return decrypt(envelope, recipient, backend)


def now_utc() -> datetime:
    return datetime.now(UTC)

"""The trust store: partners' public keys per jurisdiction, our own key pairs, revocations.

Loaded from one YAML file (``trust.yaml``) whose key files are relative to it:

    own:
      region: "420607"
      distid: "1234567812345678"
      keys:
        - file: own-2026.key.pem          # encrypted PKCS#8
          not_before: 2026-01-01T00:00:00Z
          not_after: 2027-03-31T00:00:00Z
    partners:
      - name: 新野县
        region: "411329"
        distid: "1234567812345678"
        keys:
          - file: partners/411329-2026.pub.pem
            not_before: 2026-01-01T00:00:00Z
            not_after: 2027-03-31T00:00:00Z
    revoked:
      - key_id: 9f…                        # SM3 fingerprint
        reason: compromised

Rotation: two keys of one party may be valid at once. We sign with our newest valid key and
decrypt with any of ours that is not revoked (a partner may still encrypt to the previous one);
partners are encrypted to with their newest valid key and verified with any valid key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from security.backend import CryptoBackend
from security.curve import DEFAULT_DISTID
from security.digest import SM3_HEX
from security.errors import (
    KEY_EXPIRED,
    KEY_NOT_YET_VALID,
    KEY_REVOKED,
    KEY_UNKNOWN,
    KEY_WRONG_JURISDICTION,
    TRUST_CONFIG_INVALID,
    SecurityError,
)
from security.keys import PrivateKey, PublicKey, load_private_key, load_public_key

KeyStatus = Literal["valid", "expired", "not yet valid", "revoked"]


class _KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str
    not_before: AwareDatetime
    not_after: AwareDatetime


class _Own(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str = Field(pattern=r"^\d{6}$")
    node: str = Field("xiangzhou-gw-1", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    distid: str = DEFAULT_DISTID.decode()
    keys: list[_KeyEntry] = Field(min_length=1)


class _Partner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    region: str = Field(pattern=r"^\d{6}$")
    distid: str = DEFAULT_DISTID.decode()
    keys: list[_KeyEntry] = Field(min_length=1)


class _Revoked(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key_id: str = Field(pattern=rf"^{SM3_HEX}$")
    reason: str = "revoked"


class _TrustFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    own: _Own
    partners: list[_Partner] = []
    revoked: list[_Revoked] = []


@dataclass(frozen=True)
class Validity:
    not_before: datetime
    not_after: datetime

    def status(self, at: datetime) -> KeyStatus:
        if at < self.not_before:
            return "not yet valid"
        if at > self.not_after:
            return "expired"
        return "valid"


@dataclass(frozen=True)
class TrustedKey:
    """A partner's public key, the jurisdiction it speaks for, and when."""

    key: PublicKey
    partner: str
    region: str
    distid: bytes
    validity: Validity
    source: str


@dataclass(frozen=True)
class OwnKey:
    key: PrivateKey
    validity: Validity
    source: str


@dataclass(frozen=True)
class KeyListing:
    owner: str
    region: str
    key_id: str
    not_before: datetime
    not_after: datetime
    status: KeyStatus
    source: str


class TrustStore:
    def __init__(
        self,
        region: str,
        node: str,
        distid: bytes,
        own: list[OwnKey],
        partners: list[TrustedKey],
        revoked: dict[str, str],
    ) -> None:
        self.region, self.node, self.distid = region, node, distid
        self.own = own
        self.partners = {k.key.key_id: k for k in partners}
        self.revoked = revoked

    def _status(self, key_id: str, validity: Validity, at: datetime) -> KeyStatus:
        return "revoked" if key_id in self.revoked else validity.status(at)

    def sender_key(self, key_id: str, region: str, at: datetime) -> TrustedKey:
        """The partner key that may have signed a message claiming ``region``; or why not."""
        if key_id in self.revoked:
            raise SecurityError(KEY_REVOKED, f"sender key {key_id[:16]}… is revoked")
        trusted = self.partners.get(key_id)
        if trusted is None:
            raise SecurityError(KEY_UNKNOWN, f"sender key {key_id[:16]}… is not trusted")
        if trusted.region != region:
            raise SecurityError(
                KEY_WRONG_JURISDICTION,
                f"sender key {key_id[:16]}… belongs to {trusted.region}, not {region}",
            )
        status = trusted.validity.status(at)
        if status == "expired":
            raise SecurityError(KEY_EXPIRED, f"sender key {key_id[:16]}… has expired")
        if status == "not yet valid":
            raise SecurityError(KEY_NOT_YET_VALID, f"sender key {key_id[:16]}… is not yet valid")
        return trusted

    def recipient_key(self, region: str, at: datetime) -> TrustedKey:
        """The partner key to encrypt to: the newest valid one of that jurisdiction."""
        usable = [
            k
            for k in self.partners.values()
            if k.region == region and self._status(k.key.key_id, k.validity, at) == "valid"
        ]
        if not usable:
            raise SecurityError(KEY_UNKNOWN, f"no valid key for jurisdiction {region}")
        return max(usable, key=lambda k: k.validity.not_before)

    def signing_key(self, at: datetime) -> PrivateKey:
        usable = [k for k in self.own if self._status(k.key.key_id, k.validity, at) == "valid"]
        if not usable:
            raise SecurityError(KEY_EXPIRED, "none of our signing keys is valid now")
        return max(usable, key=lambda k: k.validity.not_before).key

    def decryption_key(self, key_id: str) -> PrivateKey:
        for own in self.own:
            if own.key.key_id == key_id and key_id not in self.revoked:
                return own.key
        raise SecurityError(KEY_UNKNOWN, "the envelope is encrypted to a key we do not hold")

    def listing(self, at: datetime) -> list[KeyListing]:
        rows = [
            KeyListing(
                "own",
                self.region,
                k.key.key_id,
                k.validity.not_before,
                k.validity.not_after,
                self._status(k.key.key_id, k.validity, at),
                k.source,
            )
            for k in self.own
        ]
        rows += [
            KeyListing(
                k.partner,
                k.region,
                k.key.key_id,
                k.validity.not_before,
                k.validity.not_after,
                self._status(k.key.key_id, k.validity, at),
                k.source,
            )
            for k in self.partners.values()
        ]
        return rows


def _invalid(path: Path, detail: str) -> SecurityError:
    return SecurityError(TRUST_CONFIG_INVALID, f"{path}: {detail}")


def _read_key_file(path: Path, base: Path, entry: _KeyEntry) -> bytes:
    try:
        return (base / entry.file).read_bytes()
    except OSError as exc:
        raise _invalid(path, f"key file {entry.file}: {exc.strerror}") from None


def load_trust_store(path: Path, passphrase: bytes | None, backend: CryptoBackend) -> TrustStore:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        config = _TrustFile.model_validate(raw)
    except OSError as exc:
        raise _invalid(path, f"cannot read ({exc.strerror})") from None
    except yaml.YAMLError:
        raise _invalid(path, "not valid YAML") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _invalid(path, f"{where}: {first['msg']}") from None
    base = path.parent
    own: list[OwnKey] = []
    for entry in config.own.keys:
        try:
            key = load_private_key(_read_key_file(path, base, entry), passphrase, backend)
        except SecurityError as exc:
            raise _invalid(path, f"key file {entry.file}: {exc.message}") from None
        own.append(OwnKey(key, Validity(entry.not_before, entry.not_after), entry.file))
    partners: list[TrustedKey] = []
    seen: set[str] = {k.key.key_id for k in own}
    for partner in config.partners:
        for entry in partner.keys:
            try:
                public = load_public_key(_read_key_file(path, base, entry))
            except SecurityError as exc:
                raise _invalid(path, f"key file {entry.file}: {exc.message}") from None
            if public.key_id in seen:
                raise _invalid(path, f"key {entry.file} is listed twice")
            seen.add(public.key_id)
            partners.append(
                TrustedKey(
                    public,
                    partner.name,
                    partner.region,
                    partner.distid.encode(),
                    Validity(entry.not_before, entry.not_after),
                    entry.file,
                )
            )
    return TrustStore(
        config.own.region,
        config.own.node,
        config.own.distid.encode(),
        own,
        partners,
        {r.key_id: r.reason for r in config.revoked},
    )

"""Sealing for a partner and opening what partners send: envelope + trust store + replay guard.

Opening checks, in this order, so that the cheap and unauthenticated checks come first and no
unauthenticated input can burn a nonce or reach decryption:
1. form (ENVELOPE_MALFORMED), addressed to us (NOT_FOR_US);
2. the sender key: known, not revoked, of the claimed jurisdiction, valid now (KEY_*);
3. the signature with that key and its distinguishing ID (SIGNATURE_INVALID);
4. the created time within the window (STALE);
5. the nonce never seen within its TTL (REPLAYED);
6. unwrap, decrypt, digest (DECRYPT_FAILED, one error whatever failed).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from security import envelope as env
from security.backend import CryptoBackend
from security.errors import NOT_FOR_US, REPLAYED, SecurityError
from security.keypool import ContentKeyPool
from security.replay import NonceStore, check_fresh, nonce_ttl
from security.trust import TrustedKey, TrustStore


@dataclass(frozen=True)
class Opened:
    envelope: env.Envelope
    plaintext: bytes
    sender: TrustedKey
    content_key: bytes = field(default=b"", repr=False)  # opens an XGW-ENV/2's materials


class Sealer:
    def __init__(
        self, trust: TrustStore, backend: CryptoBackend, keys: ContentKeyPool | None = None
    ) -> None:
        """``keys``: content keys wrapped ahead of need (else each seal wraps its own)."""
        self.trust, self.backend, self.keys = trust, backend, keys

    def seal(
        self,
        plaintext: bytes,
        *,
        receiver: env.Party,
        kind: str,
        matter: str,
        idem_key: str,
        msg_id: str | None = None,
        created: datetime | None = None,
        content_type: str = "application/json",
        version: int = 1,
        manifest: tuple[env.ManifestEntry, ...] = (),
        wrapped: env.WrappedKey | None = None,
    ) -> env.Envelope:
        """``version`` 2 with a ``manifest``: the materials were sealed under ``wrapped``'s
        key (``content_key``)."""
        now = created or env.now_utc()
        header = env.Header(
            msg_id=msg_id or uuid.uuid4().hex,
            kind=kind,
            idem_key=idem_key,
            sender=env.Party(self.trust.region, self.trust.node),
            receiver=receiver,
            matter=matter,
            created=now,
            content_type=content_type,
        )
        recipient = self.trust.recipient_key(receiver.region, now)
        return env.seal(
            plaintext,
            header,
            self.trust.signing_key(now),
            recipient.key,
            self.backend,
            distid=self.trust.distid,
            wrapped=wrapped or (self.keys.take(recipient.key) if self.keys is not None else None),
            version=version,
            manifest=manifest,
        )

    def content_key(self, region: str) -> env.WrappedKey:
        """A content key for a message to ``region`` whose materials are sealed before it."""
        recipient = self.trust.recipient_key(region, env.now_utc()).key
        ready = self.keys.take(recipient) if self.keys is not None else None
        return ready or env.wrap_content_key(recipient, self.backend)


class Opener:
    def __init__(
        self,
        trust: TrustStore,
        backend: CryptoBackend,
        nonces: NonceStore,
        window_seconds: float = 300,
    ) -> None:
        self.trust, self.backend, self.nonces = trust, backend, nonces
        self.window_seconds = window_seconds

    def authenticate(self, envelope: env.Envelope, now: datetime) -> TrustedKey:
        """Steps 1–4: who sent it, unchanged, and fresh. No state is touched."""
        if envelope.receiver_region != self.trust.region:
            raise SecurityError(NOT_FOR_US, f"addressed to {envelope.receiver_region}, not us")
        sender = self.trust.sender_key(envelope.sender_key_id, envelope.sender_region, now)
        env.verify_origin(envelope, sender.key, self.backend, sender.distid)
        check_fresh(envelope.created_at, now, self.window_seconds)
        return sender

    async def open(self, envelope: env.Envelope, now: datetime | None = None) -> Opened:
        """All six steps."""
        return await self.unseal(envelope, self.authenticate(envelope, now or env.now_utc()))

    async def unseal(self, envelope: env.Envelope, sender: TrustedKey) -> Opened:
        """Steps 5–6, for an envelope ``authenticate`` accepted from ``sender`` (a caller that
        must know who sent it before deciding to open, e.g. to answer a resend, verifies once)."""
        nonce_key = f"{envelope.sender_region}:{envelope.nonce}"
        if not await self.nonces.claim(nonce_key, nonce_ttl(self.window_seconds)):
            raise SecurityError(REPLAYED, "this envelope's nonce was already used")
        recipient = self.trust.decryption_key(envelope.recipient_key_id)
        plaintext, content_key = env.decrypt_with_key(envelope, recipient, self.backend)
        return Opened(envelope, plaintext, sender, content_key)

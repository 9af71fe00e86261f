"""Builders shared by the security tests: keys, trust stores, sealers and openers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from security.backend import CryptoBackend, get_backend
from security.envelope import Party
from security.keys import PrivateKey, generate_private_key
from security.replay import MemoryNonceStore, NonceStore
from security.sealing import Opener, Sealer
from security.trust import OwnKey, TrustedKey, TrustStore, Validity

NATIVE = get_backend("native")
GMSSL = get_backend("gmssl")
BACKENDS = [NATIVE, GMSSL]
XIANGZHOU, XINYE = "420607", "411329"
DISTID = b"1234567812345678"


def validity(days_before: int = 1, days_after: int = 365) -> Validity:
    now = datetime.now(UTC)
    return Validity(now - timedelta(days=days_before), now + timedelta(days=days_after))


def new_key(backend: CryptoBackend = NATIVE) -> PrivateKey:
    return generate_private_key(backend)


def store(
    region: str,
    node: str,
    own: list[tuple[PrivateKey, Validity]],
    partners: list[tuple[PrivateKey, str, Validity]],
    revoked: dict[str, str] | None = None,
    distid: bytes = DISTID,
) -> TrustStore:
    return TrustStore(
        region,
        node,
        distid,
        [OwnKey(k, v, "test") for k, v in own],
        [TrustedKey(k.public, f"partner-{r}", r, DISTID, v, "test") for k, r, v in partners],
        revoked or {},
    )


class Pair:
    """襄州 and 新野 gateways that trust each other, each with one key."""

    def __init__(self, backend: CryptoBackend = NATIVE, nonces: NonceStore | None = None) -> None:
        self.xz_key, self.xy_key = new_key(), new_key()
        self.xz = store(
            XIANGZHOU,
            "xiangzhou-gw-1",
            [(self.xz_key, validity())],
            [(self.xy_key, XINYE, validity())],
        )
        self.xy = store(
            XINYE, "xinye-gw", [(self.xy_key, validity())], [(self.xz_key, XIANGZHOU, validity())]
        )
        self.backend = backend
        self.xy_sealer = Sealer(self.xy, backend)
        self.xz_opener = Opener(self.xz, backend, nonces or MemoryNonceStore(), 300)


TO_XZ_PARTY = Party(XIANGZHOU, "xiangzhou-gw-1")

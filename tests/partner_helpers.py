"""A partner's side of the border, for tests: 新野's SAMPLE keys from the simulator's folder."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from security import envelope as env
from security.backend import get_backend
from security.keys import read_passphrase
from security.replay import MemoryNonceStore
from security.sealing import Opener, Sealer
from security.trust import TrustStore, load_trust_store
from tests.mapping_helpers import REGISTRY, example

XIANGZHOU = env.Party("420607", "xiangzhou-gw-1")


class Partner:
    def __init__(self, data_dir: Path, region: str = "411329") -> None:
        folder = data_dir / "simulator" / region
        self.trust: TrustStore = load_trust_store(
            folder / "trust.yaml",
            read_passphrase(file=folder / "passphrase"),
            get_backend("native"),
        )
        self.sealer = Sealer(self.trust, get_backend("native"))
        self.opener = Opener(self.trust, get_backend("native"), MemoryNonceStore(), 300)

    def seal(
        self,
        payload: Any,
        kind: str = "request",
        matter: str = "XY-SB-001",
        idem_key: str = "XY-CASE-0001",
        **kw: Any,
    ) -> env.Envelope:
        data = (
            payload
            if isinstance(payload, bytes)
            else json.dumps(payload, ensure_ascii=False).encode()
        )
        return self.sealer.seal(
            data, receiver=XIANGZHOU, kind=kind, matter=matter, idem_key=idem_key, **kw
        )

    def open(self, envelope: env.Envelope) -> dict[str, Any]:
        opened = asyncio.run(self.opener.open(envelope))
        return dict(json.loads(opened.plaintext))


def contact_letter() -> dict[str, Any]:
    """A 联系函 in 人社 codes, as 新野 would send it (SAMPLE person)."""
    return dict(
        REGISTRY.transforms["pension_contact_letter"].outbound(example("pension_contact_letter"))
    )

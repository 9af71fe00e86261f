"""The embedded demo setup: with no configuration, the first start creates SAMPLE keys for us
and for every simulated partner, cross-registers them in the trust stores, and writes a
``partners.yaml`` pointing at the bundled simulator. Never touches a configured ``keys_dir``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from gateway.config import Settings
from gateway.devtools.simulator import SIMULATED, simulator_dir
from gateway.keystore import (
    SAMPLE_BANNER,
    _write_private,
    add_partner_key,
    backend_for,
    ensure_sample_trust,
    load_trust,
    trust_path,
    validity_from_now,
)
from security.keys import generate_private_key, write_private_key


def ensure_sample_setup(settings: Settings) -> None:
    ensure_sample_trust(settings)
    if settings.keys_dir is not None:
        return
    known = trust_path(settings).read_text(encoding="utf-8").replace("'", '"')
    missing = [
        region
        for region in SIMULATED
        if not (simulator_dir(settings, region) / "trust.yaml").exists()
        or f'region: "{region}"' not in known
    ]
    # Unlocking our key (PBKDF2) only when a partner still has to be set up: not on every start.
    ours = load_trust(settings).signing_key(datetime.now(UTC)).public if missing else None
    for region in missing:
        assert ours is not None
        name, node = SIMULATED[region]
        folder = simulator_dir(settings, region)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = secrets.token_urlsafe(24)
        _write_private(folder / "passphrase", secret + "\n")
        key = generate_private_key(backend_for(settings))
        write_private_key(folder / "partner.key.pem", key, secret.encode())
        (folder / "ours.pub.pem").write_bytes(ours.to_pem())
        document = {
            "own": {
                "region": region,
                "node": node,
                "keys": [{"file": "partner.key.pem", **validity_from_now()}],
            },
            "partners": [
                {
                    "name": "襄州区",
                    "region": settings.region_code,
                    "keys": [{"file": "ours.pub.pem", **validity_from_now()}],
                }
            ],
        }
        (folder / "trust.yaml").write_text(
            SAMPLE_BANNER + yaml.safe_dump(document, allow_unicode=True, sort_keys=False),
            encoding="utf-8",
        )
        add_partner_key(settings, name, region, key.public.to_pem(), f"{region}.pub.pem")
    path = settings.effective_partners_file
    if settings.partners_file is None and _sample_partners_outdated(path):
        base = f"http://127.0.0.1:{settings.simulator_port}"
        partners = []
        for region, (name, node) in SIMULATED.items():
            endpoints: list[dict[str, Any]] = [
                {"domains": ["*"], "protocol": "rest", "url": f"{base}/{region}/rest/messages"}
            ]
            if region == "411329":  # 新野: 人社 over SOAP, everything else (医保 …) over REST
                endpoints.insert(
                    0,
                    {"domains": ["社保"], "protocol": "soap", "url": f"{base}/{region}/soap"},
                )
            partners.append(
                {
                    "region": region,
                    "name": name,
                    "node": node,
                    "endpoints": endpoints,
                    "timeout_seconds": 10,
                    "max_concurrency": 16,
                    "breaker_failures": 5,
                    "breaker_reset_seconds": 5,
                    "envelope": 2,  # materials: REST multipart, SOAP MTOM (envelope.md §11)
                }
            )
        # our own back office (the departments that decide what partners file with us) is
        # the simulator's /local too
        document = {"partners": partners, "local_systems": {"*": f"{base}/local"}}
        path.write_text(
            SAMPLE_PARTNERS_BANNER + yaml.safe_dump(document, allow_unicode=True, sort_keys=False),
            encoding="utf-8",
        )


SAMPLE_PARTNERS_BANNER = (
    "# SAMPLE partner registry generated for the embedded demo: every partner is the bundled\n"
    "# simulator (`xgw simulate-partner`). Point `partners_file` at your own for production.\n"
)


def _sample_partners_outdated(path: Path) -> bool:
    """No registry yet, or a generated SAMPLE one from before it named our back office or the
    envelope version."""
    if not path.exists():
        return True
    text = path.read_text(encoding="utf-8")
    return text.startswith(SAMPLE_PARTNERS_BANNER) and not (
        "local_systems:" in text and "envelope:" in text
    )

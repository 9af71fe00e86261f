"""The partner registry: where each jurisdiction's systems are, how to speak to them, limits.

``partners.yaml`` (in ``keys_dir``'s parent, i.e. the data or config folder):

    partners:
      - region: "411329"
        name: 新野县
        node: xinye-gw
        endpoints:                       # first matching domain wins; "*" matches any
          - domains: [社保]
            protocol: soap               # zeep against adapters/wsdl/partner-v1.wsdl
            url: http://127.0.0.1:8090/411329/soap
          - domains: ["*"]
            protocol: rest
            url: http://127.0.0.1:8090/411329/rest/messages
        timeout_seconds: 10
        max_concurrency: 8
        breaker_failures: 5              # consecutive failures that open the circuit
        breaker_reset_seconds: 15        # then one probe after this long
        inbound_matters: ["*"]           # which of our matters it may file with us
        rate_limit_per_minute: 600
        witness: true                    # countersigns our exchange log's checkpoints
        envelope: 2                      # XGW-ENV/2 (materials); default 1. An endpoint may
                                         # say its own (SOAP carries /1 only, for now)
    local_systems:                       # our own back office (部门业务系统), per domain
      "*": http://127.0.0.1:8090/local
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.config import ConfigError


class PartnerConfigError(ConfigError, ValueError):
    """partners.yaml is wrong, or names what is not configured; phrased for an operator."""


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    domains: list[str] = ["*"]
    protocol: str = Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")  # a name in assembly.PROTOCOLS
    url: str = Field(pattern=r"^https?://")
    wsdl: str | None = None  # a local file; default: the packaged partner WSDL
    envelope: Literal[1, 2] | None = None  # XGW-ENV version here; default: the partner's


class Partner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str = Field(pattern=r"^[0-9]{6}$")
    name: str
    node: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    endpoints: list[Endpoint] = Field(min_length=1)
    timeout_seconds: float = Field(10.0, gt=0, le=300)
    max_concurrency: int = Field(8, ge=1, le=256)
    breaker_failures: int = Field(5, ge=1)
    breaker_reset_seconds: float = Field(15.0, gt=0)
    inbound_matters: list[str] = ["*"]
    rate_limit_per_minute: int = Field(600, ge=1)
    # With mutual TLS (tls_client_ca_file): SHA-256 fingerprints (hex) of the client
    # certificates this partner's messages may come with; one of another partner's is refused.
    client_certificates: list[str] = Field(default_factory=list)
    # It countersigns the checkpoints of our exchange log whose batches hold exchanges with it
    # (docs/exchange-log.md, witnesses); false for a partner whose gateway cannot yet.
    witness: bool = True
    # XGW-ENV/2 carries a case's materials (docs/envelope.md §11); a partner that has not
    # moved gets /1 (its materials stay at our window, and the case says so).
    envelope: Literal[1, 2] = 1

    @field_validator("client_certificates")
    @classmethod
    def _fingerprints(cls, value: list[str]) -> list[str]:
        cleaned = [v.lower().replace(":", "") for v in value]
        for fingerprint in cleaned:
            if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
                raise ValueError(f"{fingerprint[:20]}…: not a SHA-256 fingerprint (64 hex digits)")
        return cleaned

    @property
    def witness_domain(self) -> str:
        """The domain whose endpoint carries witness requests: the first endpoint's."""
        return self.endpoints[0].domains[0]

    def envelope_for(self, domain: str) -> int:
        """The XGW-ENV version messages of ``domain`` go to this partner in."""
        endpoint = self.endpoint(domain)
        return endpoint.envelope if endpoint.envelope is not None else self.envelope

    def endpoint(self, domain: str) -> Endpoint:
        for endpoint in self.endpoints:
            if domain in endpoint.domains or "*" in endpoint.domains:
                return endpoint
        raise PartnerConfigError(f"partner {self.region} has no endpoint for domain {domain}")


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    partners: list[Partner]
    local_systems: dict[str, str] = {}  # domain (or "*") -> our back office's base URL


@dataclass
class PartnerRegistry:
    partners: dict[str, Partner]
    local_systems: dict[str, str] = field(default_factory=dict)

    def local_system(self, domain: str) -> str:
        url = self.local_systems.get(domain) or self.local_systems.get("*")
        if url is None:
            raise PartnerConfigError(f"no local back office is configured for domain {domain}")
        return url

    def get(self, region: str) -> Partner:
        partner = self.partners.get(region)
        if partner is None:
            raise PartnerConfigError(f"jurisdiction {region} is not a configured partner")
        return partner


def load_partners(path: Path) -> PartnerRegistry:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        parsed = _File.model_validate(document)
    except OSError as exc:
        raise PartnerConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError:
        raise PartnerConfigError(f"{path}: not valid YAML") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PartnerConfigError(f"{path}: {where}: {first['msg']}") from None
    regions = [p.region for p in parsed.partners]
    if len(set(regions)) != len(regions):
        raise PartnerConfigError(f"{path}: a partner region is listed twice")
    filing = [p.region for p in parsed.partners if p.inbound_matters]
    if filing and not parsed.local_systems:
        # their cases would wait in our office for ever: say so at start-up, not per case
        raise PartnerConfigError(
            f"{path}: local_systems: partner {filing[0]} may file matters with us "
            "(inbound_matters) but no local back office is configured to decide them"
        )
    return PartnerRegistry({p.region: p for p in parsed.partners}, parsed.local_systems)


def check_lease(registry: PartnerRegistry, lease_seconds: float) -> None:
    """Where instances share the outbox (Redis), a message's lease must outlast each send:
    a send starts with at least half a lease left (the worker renews it otherwise), so half a
    lease must cover the slowest partner's timeout. Were it shorter, another instance could
    take the message and send it while the first send still waits for its answer (the
    partner would apply it once, but "never twice at once" would not hold)."""
    for partner in registry.partners.values():
        if lease_seconds < 2 * partner.timeout_seconds:
            raise PartnerConfigError(
                f"delivery_lease_seconds ({lease_seconds:g}) must be at least twice partner "
                f"{partner.region}'s timeout_seconds ({partner.timeout_seconds:g}) when "
                "instances share the work (redis_url)"
            )

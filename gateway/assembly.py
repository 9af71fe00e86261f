"""Assembling the running gateway from configuration: the synchronous part (files, WSDLs,
keys, mapping data) runs once at start-up in a thread; the clients are made on the loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis

from adapters.local_system import LocalSystemClient
from adapters.partner_rest import RestPartnerClient
from adapters.partner_soap import (
    PACKAGED_WSDL,
    PACKAGED_WSDL_V2,
    PartnerMessages,
    SoapPartnerClient,
    load_messages,
)
from adapters.rate_limit import RateLimiter
from adapters.redis_leases import RedisLeases
from gateway.audit.log import AuditLog, AuditWriter, hmac_key_bytes
from gateway.config import Settings
from gateway.keystore import backend_for, load_trust
from gateway.logs import get_logger
from gateway.metrics import MeteredSealer, Metrics
from gateway.partners import (
    Endpoint,
    Partner,
    PartnerConfigError,
    PartnerRegistry,
    check_lease,
    load_partners,
)
from gateway.services.cases import CaseService
from gateway.services.delivery import PartnerClient, Worker
from gateway.services.inbound import InboundService
from gateway.services.records import Recorder
from gateway.services.witness import WitnessService
from gateway.storage import Store
from gateway.storage.logtables import open_log_tables
from mappings.registry import Registry, load_registry, packaged_data_dir
from security.backend import CryptoBackend
from security.keypool import ContentKeyPool
from security.keys import PrivateKey
from security.sealing import Opener
from security.trust import TrustStore

log = get_logger(__name__)


@dataclass
class Parts:
    settings: Settings
    backend: CryptoBackend
    trust: TrustStore
    registry: Registry
    partners: PartnerRegistry
    store: Store
    audit: AuditLog
    signer: Callable[[], PrivateKey]
    partner_messages: dict[str, PartnerMessages]  # by WSDL path


def _wsdl_path(partner: Partner, endpoint: Endpoint) -> str:
    """The WSDL a SOAP endpoint is called by: its own, or the packaged partner WSDL (version 2,
    with materials, for an endpoint on XGW-ENV/2)."""
    if endpoint.wsdl:
        return str(Path(endpoint.wsdl))
    version = endpoint.envelope or partner.envelope
    return str(PACKAGED_WSDL_V2 if version == 2 else PACKAGED_WSDL)


def assemble(settings: Settings, store: Store) -> Parts:
    """Everything but the store (opened on the loop: ``gateway.storage.open_store``)."""
    trust = load_trust(settings)
    partners = load_partners(settings.effective_partners_file)
    if settings.redis_url is not None:
        check_lease(partners, settings.delivery_lease_seconds)
    partner_messages: dict[str, PartnerMessages] = {}
    for partner in partners.partners.values():
        for index, endpoint in enumerate(partner.endpoints):
            if endpoint.protocol not in PROTOCOLS:
                raise PartnerConfigError(
                    f"partner {partner.region}: protocol {endpoint.protocol!r} is none of "
                    f"{', '.join(sorted(PROTOCOLS))}"
                )
            version = endpoint.envelope or partner.envelope
            if version == 2 and endpoint.protocol not in ENVELOPE_2_PROTOCOLS:
                # at start-up, not when the first case with materials is sent
                raise PartnerConfigError(
                    f"partner {partner.region}: endpoints[{index}].envelope: XGW-ENV/2 is "
                    f"carried over {', '.join(sorted(ENVELOPE_2_PROTOCOLS))} only, not "
                    f"{endpoint.protocol}; give this endpoint envelope: 1"
                )
            if endpoint.protocol != "soap":
                continue
            path = _wsdl_path(partner, endpoint)
            if path not in partner_messages:
                try:
                    messages = load_messages(Path(path))
                except Exception as exc:  # zeep and lxml raise many kinds: name the file
                    raise PartnerConfigError(
                        f"partner {partner.region}: WSDL {path} cannot be loaded "
                        f"({type(exc).__name__})"
                    ) from None
                partner_messages[path] = messages
                # which path each message takes (see adapters/partner_soap.py)
                log.info(
                    "partner.wsdl_loaded",
                    wsdl=path,
                    messages="template" if messages.codec else "zeep",
                )
            if version == 2 and not partner_messages[path].carries_materials:
                raise PartnerConfigError(
                    f"partner {partner.region}: endpoints[{index}]: XGW-ENV/2 over SOAP needs a "
                    f"WSDL whose request declares Material (MTOM), as "
                    f"{PACKAGED_WSDL_V2.name} does; {path} does not"
                )
    return Parts(
        settings,
        backend_for(settings),
        trust,
        registry_for(settings),
        partners,
        store,
        open_audit_log(settings),
        lambda: trust.signing_key(datetime.now(UTC)),
        partner_messages,
    )


def mappings_dir(settings: Settings) -> Path:
    """The mapping data in force: ``mappings_dir``, else the packaged SAMPLE data."""
    return settings.mappings_dir or packaged_data_dir()


def registry_for(settings: Settings) -> Registry:
    return load_registry(mappings_dir(settings), settings.mappings_overlay_dir)


def open_audit_log(settings: Settings) -> AuditLog:
    create = settings.audit_hmac_key_file is None  # the sample key is made on first use
    secret = hmac_key_bytes(settings.effective_audit_hmac_key_file, create=create)
    tables = open_log_tables(settings.effective_database_url, settings.audit_database)
    return AuditLog(tables, settings.node_id, secret)


# A partner protocol is a client behind one interface (adapters): its name in partners.yaml,
# and how to make one for a partner's endpoint. A third protocol is a module in adapters/ and
# a line here.
PROTOCOLS: dict[str, Callable[[Parts, Partner, Endpoint], PartnerClient]] = {
    "soap": lambda parts, partner, endpoint: SoapPartnerClient(
        parts.partner_messages[_wsdl_path(partner, endpoint)], partner.max_concurrency
    ),
    "rest": lambda _parts, partner, _endpoint: RestPartnerClient(partner.max_concurrency),
}


# The protocols whose client carries XGW-ENV/2's materials (REST: multipart, envelope first;
# SOAP: MTOM/XOP, where the partner's WSDL declares them).
ENVELOPE_2_PROTOCOLS = frozenset({"rest", "soap"})


def build_clients(parts: Parts) -> dict[tuple[str, str], PartnerClient]:
    """One client per partner and protocol (own connection pool and limit). Needs the loop."""
    clients: dict[tuple[str, str], PartnerClient] = {}
    for partner in parts.partners.partners.values():
        for endpoint in partner.endpoints:
            key = (partner.region, endpoint.protocol)
            if key not in clients:
                clients[key] = PROTOCOLS[endpoint.protocol](parts, partner, endpoint)
    return clients


@dataclass
class Services:
    cases: CaseService
    inbound: InboundService
    worker: Worker


def build_services(
    parts: Parts,
    audit: AuditWriter,
    opener: Opener,
    key_pool: ContentKeyPool | None,
    owner: str,
    redis: aioredis.Redis | None,
    metrics: Metrics | None = None,
    recorder: Recorder | None = None,
) -> Services:
    """The services and the delivery worker, connected: the one place they are built (the
    HTTP app and the CLI's replay alike). Needs the loop (the clients' pools)."""
    settings = parts.settings
    metrics = metrics or Metrics()
    worker = Worker(
        settings,
        parts.store,
        parts.partners,
        build_clients(parts),
        owner,
        LocalSystemClient(),
        RedisLeases(redis, owner) if redis is not None else None,
        metrics=metrics,
        recorder=recorder,
    )
    witnesses = WitnessService(
        parts.store,
        audit,
        parts.partners,
        MeteredSealer(metrics, parts.trust, parts.backend, key_pool),
        parts.trust,
        parts.backend,
        settings.region_code,
        settings.audit_witness,
        metrics,
        dispatcher=worker,
    )
    cases = CaseService(
        parts.store,
        parts.registry,
        parts.partners,
        MeteredSealer(metrics, parts.trust, parts.backend, key_pool),
        opener,
        audit,
        settings.region_code,
        settings.result_query_after_seconds,
        settings.result_overdue_seconds,
        dispatcher=worker,
        witnesses=witnesses,
        case_material_bytes=settings.max_case_material_bytes,
    )
    inbound = InboundService(
        parts.store,
        parts.registry,
        parts.partners,
        opener,
        MeteredSealer(metrics, parts.trust, parts.backend, key_pool),
        audit,
        settings.region_code,
        RateLimiter(redis),
        cases,
        witnesses,
        dispatcher=worker,
        refusals_per_minute=settings.inbound_refusals_per_minute,
        metrics=metrics,
        material_bytes=settings.max_material_bytes,
    )
    worker.attach(cases, inbound)
    audit.attach(witnesses.ask)
    return Services(cases, inbound, worker)

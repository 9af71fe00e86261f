"""Assembling the running gateway from configuration: the synchronous part (files, WSDLs,
keys, mapping data) runs once at start-up in a thread; the clients are made on the loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.partner_rest import RestPartnerClient
from adapters.partner_soap import PACKAGED_WSDL, PartnerMessages, SoapPartnerClient, load_messages
from gateway.audit.log import AuditLog, hmac_key_bytes
from gateway.config import Settings
from gateway.keystore import backend_for, load_data_keys, load_trust
from gateway.logs import get_logger
from gateway.partners import (
    Endpoint,
    PartnerConfigError,
    PartnerRegistry,
    check_lease,
    load_partners,
)
from gateway.storage.sqlite import Store
from mappings.registry import Registry, load_registry, packaged_data_dir
from security.backend import CryptoBackend
from security.keys import PrivateKey
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


def _wsdl_path(endpoint: Endpoint) -> str:
    """The WSDL a SOAP endpoint is called by: its own, or the packaged partner WSDL."""
    return str(Path(endpoint.wsdl) if endpoint.wsdl else PACKAGED_WSDL)


def assemble(settings: Settings) -> Parts:
    trust = load_trust(settings)
    partners = load_partners(settings.effective_partners_file)
    if settings.redis_url is not None:
        check_lease(partners, settings.delivery_lease_seconds)
    partner_messages: dict[str, PartnerMessages] = {}
    for partner in partners.partners.values():
        for endpoint in partner.endpoints:
            if endpoint.protocol != "soap":
                continue
            path = _wsdl_path(endpoint)
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
    return Parts(
        settings,
        backend_for(settings),
        trust,
        registry_for(settings),
        partners,
        Store(settings.database, group_commit=True, data_keys=load_data_keys(settings)),
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
    return AuditLog(settings.audit_database, settings.node_id, secret)


def build_clients(parts: Parts) -> dict[tuple[str, str], Any]:
    """One client per partner and protocol (own connection pool and limit). Needs the loop."""
    clients: dict[tuple[str, str], Any] = {}
    for partner in parts.partners.partners.values():
        for endpoint in partner.endpoints:
            key = (partner.region, endpoint.protocol)
            if key in clients:
                continue
            if endpoint.protocol == "soap":
                clients[key] = SoapPartnerClient(
                    parts.partner_messages[_wsdl_path(endpoint)], partner.max_concurrency
                )
            else:
                clients[key] = RestPartnerClient(partner.max_concurrency)
    return clients

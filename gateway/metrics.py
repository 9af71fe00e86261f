"""What an operator's Prometheus scrapes (``/metrics``): one registry per running gateway.

Labels are bounded: partners and protocols from the registry, routes as their templates,
codes from our own vocabulary (never a partner's free text), no case ids, no personal data.
Counters and histograms are recorded where things happen (delivery, inbound refusals, the
HTTP middleware, sealing); levels (the outbox, the exchange log's unsigned tail, keys' expiry,
circuits) are read as a scrape asks (``refresh``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

from gateway import __version__
from security.envelope import Envelope
from security.sealing import Opener, Sealer

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CRYPTO_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.partner_seconds = Histogram(
            "xgw_partner_request_seconds",
            "Time of one send to a partner, until its answer (or failure)",
            ["partner", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.partner_outcomes = Counter(
            "xgw_partner_requests",
            "Sends to partners by outcome: answered, or the failure's code",
            ["partner", "protocol", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "xgw_delivery_retries",
            "Deliveries scheduled again, by code",
            ["partner", "code"],
            registry=r,
        )
        self.dead_letters = Counter(
            "xgw_dead_letters", "Messages that exhausted their retries", ["partner"], registry=r
        )
        self.circuit_open = Gauge(
            "xgw_partner_circuit_open",
            "1 while a partner's circuit is open",
            ["partner"],
            registry=r,
        )
        self.outbox = Gauge(
            "xgw_outbox_messages", "Messages in the outbox by status", ["status"], registry=r
        )
        self.oldest_pending = Gauge(
            "xgw_outbox_oldest_pending_seconds",
            "Age of the oldest message waiting to be sent (0: none)",
            registry=r,
        )
        self.materials = Gauge(
            "xgw_materials_stored",
            "Materials kept in the store (申请材料): their count and bytes",
            ["measure"],
            registry=r,
        )
        self.refusals = Counter(
            "xgw_inbound_refusals", "Partners' messages refused, by code", ["code"], registry=r
        )
        self.http_seconds = Histogram(
            "xgw_http_request_seconds",
            "Requests to the gateway's APIs by route template and status",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.crypto_seconds = Histogram(
            "xgw_envelope_seconds",
            "Sealing our envelopes and opening partners'",
            ["operation"],
            buckets=CRYPTO_BUCKETS,
            registry=r,
        )
        self.audit_unsigned = Gauge(
            "xgw_audit_unsigned_entries",
            "Exchange-log entries no checkpoint covers yet",
            registry=r,
        )
        self.audit_checkpoint_age = Gauge(
            "xgw_audit_seconds_since_checkpoint",
            "Seconds since this node's last signed checkpoint (-1: none yet)",
            registry=r,
        )
        self.audit_signing_refused = Gauge(
            "xgw_audit_signing_refused",
            "1 while this node refuses to sign: its exchange log no longer extends what it signed",
            registry=r,
        )
        self.witness_refusals = Counter(
            "xgw_audit_witness_refusals_total",
            "Partners' refusals to countersign our checkpoints, by code",
            ["partner", "code"],
            registry=r,
        )
        self.witness_conflicts = Counter(
            "xgw_audit_witness_conflicts_total",
            "Partners' checkpoints we refused to countersign: they contradict ones we witnessed",
            ["partner"],
            registry=r,
        )
        self.key_days = Gauge(
            "xgw_key_expiry_days",
            "Days until a key expires (negative: expired), ours and partners'",
            ["owner", "key_id"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "xgw_event_loop_lag_seconds", "How late the event loop ran a timer, lately", registry=r
        )
        self.ready = Gauge(
            "xgw_ready", "1 when the node is ready (/readyz's checks all pass)", registry=r
        )
        Info("xgw_build", "The gateway's version", registry=r).info({"version": __version__})
        self._refreshers: list[Callable[[], Awaitable[None]]] = []

    def on_scrape(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Run ``refresh`` (read levels into gauges) before each exposition."""
        self._refreshers.append(refresh)

    async def exposition(self) -> bytes:
        for refresh in self._refreshers:
            await refresh()
        return generate_latest(self.registry)

    async def watch_loop(self, every: float = 0.5) -> None:
        """Event-loop lag: how much later than asked a sleep ends (a loop kept busy by one
        callback delays every request)."""
        while True:
            began = time.monotonic()
            await asyncio.sleep(every)
            self.loop_lag.set(max(0.0, time.monotonic() - began - every))

    def set_key_expiry(self, owner: str, key_id: str, not_after: datetime | None) -> None:
        if not_after is not None:
            days = (not_after - datetime.now(UTC)).total_seconds() / 86400
            self.key_days.labels(owner, key_id[:16]).set(round(days, 2))


class MeteredSealer(Sealer):
    """A sealer whose seals are timed (``xgw_envelope_seconds{operation="seal"}``)."""

    def __init__(self, metrics: Metrics, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timed = metrics.crypto_seconds.labels("seal")

    def seal(self, *args: Any, **kwargs: Any) -> Envelope:
        began = time.perf_counter()
        try:
            return super().seal(*args, **kwargs)
        finally:
            self._timed.observe(time.perf_counter() - began)


class MeteredOpener(Opener):
    """An opener whose signature checks and decryptions are timed (``authenticate``,
    ``open``: what a partner's envelope costs us)."""

    def __init__(self, metrics: Metrics, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._authenticate = metrics.crypto_seconds.labels("authenticate")
        self._open = metrics.crypto_seconds.labels("open")

    def authenticate(self, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return super().authenticate(*args, **kwargs)
        finally:
            self._authenticate.observe(time.perf_counter() - began)

    async def unseal(self, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return await super().unseal(*args, **kwargs)
        finally:
            self._open.observe(time.perf_counter() - began)

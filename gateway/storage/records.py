"""What the store keeps, as the rest of the gateway sees it, and the store's own errors.

Both implementations (SQLite, PostgreSQL) return these records and raise these errors: no caller
sees a driver's row or exception.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.core.cases import PlannedSub, SubState


class StoreError(Exception):
    """Something the store could not do."""


class StoreUnavailable(StoreError):
    """The store cannot take this now (a full disk, a lost or restarting database): nothing
    was written, nothing may be acknowledged; worth trying again later (503)."""


class AlreadyThere(StoreError):
    """A row with this key exists (an idempotency key, a message id): the other writer won."""


class Conflict(StoreError):
    """The row changed since it was read (its version moved): read again and decide again."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer gateway than this one."""


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def iso_ms(moment: float | None = None) -> str:
    """ISO 8601 UTC to the millisecond (timeline steps, exchange records): now, or ``moment``."""
    now = time.time() if moment is None else moment
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def epoch_of(iso: str) -> float:
    """Seconds since the epoch of a stored ISO 8601 UTC time ("…Z")."""
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def token_hash(token: str) -> str:
    # Tokens are 256-bit random strings: a plain hash is enough (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    hall: str | None


@dataclass
class CaseSummary:
    """What a listing shows of a case: no form, and its plan without the payloads."""

    id: str
    created: str
    updated: str
    status: str
    hall: str
    clerk: str | None
    token_name: str
    bundle: str
    title: str
    filed_on: str
    idem_key: str
    request_hash: str
    person: str | None
    plan: list[PlannedSub]
    states: list[SubState]
    version: int

    def plan_of(self, sub_id: str) -> PlannedSub:
        return next(p for p in self.plan if p.sub_id == sub_id)


@dataclass
class CaseRow(CaseSummary):
    """A whole case: its form, and the payloads it sends to partners."""

    form: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutboxMessage:
    """A sealed message waiting to go, going, or gone. Times are seconds since the epoch."""

    msg_id: str
    case_id: str
    sub_id: str
    partner: str
    domain: str
    kind: str
    matter: str
    payload: bytes
    envelope: bytes
    status: str
    attempts: int
    created: float
    next_attempt_at: float
    lease_owner: str | None
    lease_until: float | None
    last_error_code: str | None
    last_error: str | None
    finished_at: float | None
    # Not stored: the lease owner a claim took this message over from, a node found dead.
    taken_from: str | None = None


@dataclass
class InboundCase:
    """A case a partner filed with us (its ``id`` is the receipt number we gave)."""

    id: str
    partner: str
    partner_ref: str
    partner_matter: str
    local_matter: str
    domain: str
    created: str
    updated: str
    status: str
    form: dict[str, Any]
    result: dict[str, Any] | None


@dataclass(frozen=True)
class ExchangeRecord:
    """One exchange with a partner, as operators and auditors look it up by time: who, what,
    when each leg passed this node (ISO 8601 UTC, ms), how big, how it ended."""

    node: str
    direction: str  # outbound (we asked) | inbound (they asked)
    partner: str | None
    protocol: str | None
    operation: str | None
    matter: str | None
    message_id: str | None
    time: str  # when the exchange began here
    request_at: str | None  # inbound: request in; outbound: request out
    response_at: str | None  # inbound: response out; outbound: response in
    request_bytes: int | None
    response_bytes: int | None
    outcome: str  # answered / accepted, or the code it failed or was refused with


@dataclass(frozen=True)
class Increment:
    """A column change that adds to the stored value (``attempts = attempts + n``)."""

    by: int

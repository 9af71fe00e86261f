"""What the store keeps, as the rest of the gateway sees it, and the store's own errors.

Both implementations (SQLite, PostgreSQL) return these records and raise these errors: no caller
sees a driver's row or exception.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime
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


# Times. The store's interface speaks of a time one way: seconds since the epoch, UTC, as a
# float (what ``time.time()`` gives and the delivery loop computes with). Inside, columns of
# schema v1 keep ISO 8601 UTC text (cases, timelines, inbound records, tokens: sortable as
# text, readable in a database shell) and the outbox and heartbeats numbers; the store converts
# at its edge (``TextTime``), so no caller knows which column is which. People see times
# rendered by ``iso_of``.


def iso_of(at: float, *, ms: bool = True) -> str:
    """``at`` as ISO 8601 UTC text ("2026-12-07T06:09:56.123Z"; without ``ms``, to the second,
    cut rather than rounded, as a clock shows it)."""
    if not ms:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(at)))
    # rounded: a time read back from "….123Z" is 0.123 only to a float's precision
    seconds, milli = divmod(round(at * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milli:03d}Z"


def epoch_of(iso: str) -> float:
    """Seconds since the epoch of an ISO 8601 UTC time ("…Z", any precision)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class TextTime:
    """How one ISO-text column writes a time: to the second or to the millisecond (each column
    keeps the width it was created with, so that text order stays time order)."""

    ms: bool

    def column(self, at: float | None) -> str | None:
        return None if at is None else iso_of(at, ms=self.ms)

    @staticmethod
    def value(text: str | None) -> float | None:
        return None if text is None else epoch_of(text)


SECONDS, MILLISECONDS = TextTime(ms=False), TextTime(ms=True)


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
    created: float
    updated: float
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
    """A whole case as the store gives it back: its plan with the payloads it sends to
    partners. Not the form it was filed with: nothing after the filing reads that, so it is
    not opened with every read of the case (``Store.case_form`` reads it)."""


@dataclass
class NewCase(CaseRow):
    """A case being filed, with its form (the store keeps it sealed)."""

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


@dataclass(frozen=True)
class MaterialRecord:
    """A material of a case: a file (``chunks`` sealed at rest, ``sm3`` of its plaintext) or,
    with ``licence`` set, an 电子证照 standing in for it (no chunks)."""

    id: str
    case_id: str | None  # None while its filing is not yet made
    code: str
    kind: str  # pdf | ofd | jpeg | png | licence
    size: int
    chunks: int
    sm3: str
    licence: dict[str, str] | None  # {"identifier", "holder"}: personal data, sealed at rest
    status: str  # uploading | uploaded | attached
    created: float


@dataclass
class InboundCase:
    """A case a partner filed with us (its ``id`` is the receipt number we gave)."""

    id: str
    partner: str
    partner_ref: str
    partner_matter: str
    local_matter: str
    domain: str
    created: float
    updated: float
    status: str
    form: dict[str, Any]
    result: dict[str, Any] | None


@dataclass(frozen=True)
class ExchangeRecord:
    """One exchange with a partner, as operators and auditors look it up by time: who, what,
    when each leg passed this node, how big, how it ended."""

    node: str
    direction: str  # outbound (we asked) | inbound (they asked)
    partner: str | None
    protocol: str | None
    operation: str | None
    matter: str | None
    message_id: str | None
    time: float  # when the exchange began here
    request_at: float | None  # inbound: request in; outbound: request out
    response_at: float | None  # inbound: response out; outbound: response in
    request_bytes: int | None
    response_bytes: int | None
    outcome: str  # answered / accepted, or the code it failed or was refused with


RECORD_TIMES = ("time", "request_at", "response_at")  # an ExchangeRecord's times


@dataclass(frozen=True)
class Increment:
    """A column change that adds to the stored value (``attempts = attempts + n``)."""

    by: int

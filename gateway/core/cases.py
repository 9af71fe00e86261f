"""The case core: planning a 一件事 into sub-matters and the state transitions. Pure: no I/O.

A case is a bundle (or one matter) filed at a window. Planning routes every sub-matter to the
jurisdiction that handles it, resolves the mapping in force on the filing date and transforms the
form into each partner's schema, collecting every problem at once. The sub-matters' states
move by ``gateway/core/lifecycle.py``'s table; the functions here apply an event to a case's
states (and what goes with it: the partner's answer, an error, the delivered flag).

The case is done when every sub-matter is done, needs attention when one failed or its result is
overdue.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from gateway.core import lifecycle
from gateway.core.lifecycle import SUB, SUB_FINISHED, Sub, SubEvent
from mappings.catalogue import Bundle, SubMatter
from mappings.mapping import MappingError
from mappings.registry import Registry
from mappings.transform import TransformError

# The sub-matter's states and transitions are gateway/core/lifecycle.py's table; these names
# are the ones the services and the tests use.
WAITING, QUEUED, DONE, FAILED, LOCAL, CANCELLED = (
    Sub.WAITING,
    Sub.QUEUED,
    Sub.DONE,
    Sub.FAILED,
    Sub.LOCAL,
    Sub.CANCELLED,
)
AWAITING = Sub.AWAITING  # accepted as pending; the partner reports the result later
FINISHED = SUB_FINISHED


@dataclass(frozen=True)
class Problem:
    location: str
    message: str
    code: str = "INVALID"


class CaseInvalid(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.location}: {p.message}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class PlannedSub:
    sub_id: str
    matter: str  # our matter code
    jurisdiction: str
    kind: str  # request | answer
    depends_on: tuple[str, ...]
    partner_code: str | None = None
    transform: str | None = None  # maps the partner's answer back (and our request out)
    mapping_version: str | None = None
    payload: dict[str, Any] | None = None  # the partner-schema plaintext we send

    @property
    def local(self) -> bool:
        return self.partner_code is None


@dataclass(frozen=True)
class SubState:
    sub_id: str
    status: str
    depends_on: tuple[str, ...]
    local: bool
    delivered: bool = False  # a message for it reached the partner, or may have
    error_code: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    attempts: int = 0  # retries asked for after a failure: each is a new message to the partner


@dataclass(frozen=True)
class Reply:
    """A partner's answer to one of our messages, already opened and verified."""

    accepted: bool
    code: str | None = None
    message: str | None = None
    result: dict[str, Any] | None = None  # in the partner's schema
    extras: dict[str, Any] = field(default_factory=dict)
    pending: bool = False  # accepted for processing; the result comes later (ReportResult)


def bundle_for_matter(matter: str, region: str) -> Bundle:
    """A single matter filed on its own behaves like a bundle of one, routed by its payload."""
    from mappings.catalogue import Route
    from mappings.source import Location

    sub = SubMatter(
        "main",
        matter,
        Route(field_path=("partner_region",)),
        (),
        "request",
        Location("request", 0),
        Location("request", 0),
    )
    return Bundle(f"MATTER-{matter}", matter, region, "", (sub,), Location("request", 0))


def plan_case(
    registry: Registry, our_region: str, bundle: Bundle, form: dict[str, Any], filed_on: date
) -> list[PlannedSub]:
    problems: list[Problem] = []
    planned: list[PlannedSub] = []
    for sub in bundle.sub_matters:
        where = f"sub_matters.{sub.id}"
        try:
            region = registry.route(sub, form)
        except MappingError as exc:
            problems.append(Problem(where, exc.message, exc.code))
            continue
        if region == our_region:
            planned.append(PlannedSub(sub.id, sub.matter, region, sub.kind, sub.depends_on))
            continue
        try:
            resolution = registry.resolve(our_region, region, sub.matter, form, filed_on)
            outgoing = sub.request_transform or resolution.transform
            payload = registry.transforms[outgoing].outbound(form)
        except MappingError as exc:
            problems.append(Problem(where, exc.message, exc.code))
            continue
        except TransformError as exc:
            problems.extend(
                Problem(f"form.{p.path}", p.message, "FORM_INVALID") for p in exc.problems
            )
            continue
        planned.append(
            PlannedSub(
                sub.id,
                sub.matter,
                region,
                sub.kind,
                sub.depends_on,
                resolution.partner_code,
                resolution.transform,
                resolution.version,
                payload,
            )
        )
    if problems:
        unique = list(dict.fromkeys(problems))
        raise CaseInvalid(unique)
    return planned


def initial_states(planned: Iterable[PlannedSub]) -> list[SubState]:
    return [
        SubState(p.sub_id, LOCAL if p.local else WAITING, p.depends_on, p.local) for p in planned
    ]


def ready(states: list[SubState]) -> list[str]:
    """Sub-matters whose dependencies are all done and which have not been sent yet."""
    done = {s.sub_id for s in states if s.status == DONE}
    return [s.sub_id for s in states if s.status == WAITING and set(s.depends_on) <= done]


def mark_queued(states: list[SubState], sub_ids: Iterable[str]) -> list[SubState]:
    """Their messages are written (SENT): waiting → queued."""
    chosen = set(sub_ids)
    return [
        replace(s, status=SUB.next(s.status, SubEvent.SENT), error_code=None, error=None)
        if s.sub_id in chosen
        else s
        for s in states
    ]


def resend(states: list[SubState], sub_id: str) -> list[SubState]:
    """Its dead message goes out again (RESEND): failed → queued."""
    return [
        replace(s, status=SUB.next(s.status, SubEvent.RESEND), error_code=None, error=None)
        if s.sub_id == sub_id
        else s
        for s in states
    ]


def takes_answer(states: list[SubState], sub_id: str, reply: Reply) -> bool:
    """Whether the sub-matter is where the partner's answer to its message can move it."""
    event = reply_event(reply)
    return any(s.sub_id == sub_id and SUB.allows(s.status, event) for s in states)


def sub_allows_resend(states: list[SubState], sub_id: str) -> bool:
    return any(s.sub_id == sub_id and SUB.allows(s.status, SubEvent.RESEND) for s in states)


def reply_event(reply: Reply) -> SubEvent:
    if reply.accepted and reply.pending:
        return SubEvent.ACCEPTED_PENDING
    return SubEvent.ACCEPTED if reply.accepted else SubEvent.REFUSED


def apply_reply(
    states: list[SubState], sub_id: str, reply: Reply, local_result: dict[str, Any] | None
) -> list[SubState]:
    """The partner's answer (ACCEPTED, ACCEPTED_PENDING, REFUSED) to the sub-matter's message."""
    return _answered(states, sub_id, reply_event(reply), reply, local_result)


def _answered(
    states: list[SubState],
    sub_id: str,
    event: SubEvent,
    reply: Reply,
    local_result: dict[str, Any] | None,
) -> list[SubState]:
    out = []
    for s in states:
        if s.sub_id != sub_id:
            out.append(s)
            continue
        status = SUB.next(s.status, event)
        if event in (SubEvent.REFUSED, SubEvent.RESULT_REFUSED):
            out.append(
                replace(
                    s,
                    status=status,
                    delivered=True,
                    error_code=reply.code or "PARTNER_REJECTED",
                    error=reply.message or "the partner rejected the request",
                )
            )
        else:
            final = event in (SubEvent.ACCEPTED, SubEvent.RESULT_ACCEPTED)
            result = local_result if final else s.result
            out.append(
                replace(
                    s, status=status, delivered=True, result=result, error_code=None, error=None
                )
            )
    return out


def mark_maybe_delivered(states: list[SubState], sub_id: str) -> list[SubState]:
    """An attempt failed in a way that leaves open whether the partner acted on it (a
    timeout, say): from now on the case counts as delivered, and cannot be cancelled."""
    return [replace(s, delivered=True) if s.sub_id == sub_id else s for s in states]


def apply_dead(states: list[SubState], sub_id: str, code: str, message: str) -> list[SubState]:
    """Its message died (DEAD): queued → failed."""
    return [
        replace(s, status=SUB.next(s.status, SubEvent.DEAD), error_code=code, error=message)
        if s.sub_id == sub_id
        else s
        for s in states
    ]


def complete_local(
    states: list[SubState], sub_id: str, result: dict[str, Any] | None
) -> list[SubState]:
    target = next((s for s in states if s.sub_id == sub_id), None)
    if target is None or not SUB.allows(target.status, SubEvent.COMPLETED_LOCALLY):
        raise ValueError(f"sub-matter {sub_id} is not waiting for the local back office")
    done = SUB.next(target.status, SubEvent.COMPLETED_LOCALLY)
    return [replace(s, status=done, result=result) if s.sub_id == sub_id else s for s in states]


def retry_failed(states: list[SubState], sub_id: str) -> list[SubState]:
    target = next((s for s in states if s.sub_id == sub_id), None)
    if target is None or not SUB.allows(target.status, SubEvent.RETRY):
        raise ValueError(f"sub-matter {sub_id} has not failed")
    again = SUB.next(target.status, SubEvent.RETRY)
    return [
        replace(s, status=again, error_code=None, error=None, attempts=s.attempts + 1)
        if s.sub_id == sub_id
        else s
        for s in states
    ]


def message_id(*parts: str) -> str:
    """A message id derived from what the store records durably (a filing's idempotency key
    and body, a sub-matter and its try): should a power cut lose the record of a message
    already sent, the message made again has the same id, and the receiver de-duplicates it."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def cancel_refusal(states: list[SubState], deliveries_under_way: int) -> str | None:
    """Why the case cannot be cancelled now (lifecycle.cancel_refusal), or None."""
    return lifecycle.cancel_refusal(
        any(s.delivered for s in states),
        any(s.status not in FINISHED for s in states),
        deliveries_under_way,
    )


def cancel(states: list[SubState]) -> list[SubState]:
    """Every sub-matter not finished (CANCEL)."""
    return [
        replace(s, status=SUB.next(s.status, SubEvent.CANCEL)) if s.status not in FINISHED else s
        for s in states
    ]


def case_status(states: list[SubState]) -> str:
    statuses = {s.status for s in states}
    if statuses <= {CANCELLED} or (CANCELLED in statuses and statuses <= {CANCELLED, DONE}):
        return "cancelled"
    if statuses == {DONE}:
        return "done"
    if FAILED in statuses or any(s.status == AWAITING and s.error_code for s in states):
        return "attention"  # failed, or its result overdue (RESULT_OVERDUE)
    return "in_progress"


# -- results the partner has not reported ---------------------------------------------------
# A sub-matter a partner accepted as pending waits for its ReportResult. Should that be lost
# (our outage, theirs), we ask (a ``query`` through the outbox): the first time
# ``result_query_after_seconds`` after the acceptance, then at doubling intervals up to a day.
# Past ``result_overdue_seconds`` the sub-matter stays awaiting but is flagged RESULT_OVERDUE,
# which puts its case among those needing attention; a result arriving later clears the flag.
RESULT_OVERDUE = "RESULT_OVERDUE"
LONGEST_QUERY_INTERVAL = 86400.0


def result_query_delay(asked: int, first_after: float) -> float:
    """Seconds until the next query for a result, after ``asked`` queries so far."""
    return min(LONGEST_QUERY_INTERVAL, first_after * 2.0**asked)


def result_overdue(accepted_at: float, now: float, overdue_after: float) -> bool:
    return now - accepted_at >= overdue_after


def mark_result_overdue(states: list[SubState], sub_id: str) -> list[SubState]:
    """Flag a sub-matter still awaiting its result; any other is left as it is."""
    return [
        replace(
            s,
            error_code=RESULT_OVERDUE,
            error="the partner has not reported the result in time; it was asked",
        )
        if s.sub_id == sub_id and SUB.allows(s.status, SubEvent.OVERDUE)
        else s
        for s in states
    ]


def apply_result(
    states: list[SubState], sub_id: str, reply: Reply, local_result: dict[str, Any] | None
) -> list[SubState]:
    """A result reported later (ReportResult) for a sub-matter that was accepted as pending."""
    event = SubEvent.RESULT_ACCEPTED if reply.accepted else SubEvent.RESULT_REFUSED
    target = next((x for x in states if x.sub_id == sub_id), None)
    if target is None or not SUB.allows(target.status, event):
        raise ValueError(f"sub-matter {sub_id} is not awaiting a result")
    return _answered(states, sub_id, event, replace(reply, pending=False), local_result)

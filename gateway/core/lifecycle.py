"""Every lifecycle the gateway keeps, as tables: the sub-matter, the outbox message, the inbound
case. Everything that decides a transition lives in this file.

Rules of the file (after h11's ``_state.py``):

- No I/O, no clock, no logging. The services load what they need, ask here, and write what
  this says; the store's statements take their allowed source states from these tables.
- States are named constants (``StrEnum``: the stored text is the value); transitions are one
  table per machine, ``state -> event -> new state``. A (state, event) pair not in the table
  raises ``LifecycleError`` naming both: nothing moves outside the diagram.
- The sub-matter machine does not know which side it is on where the lifecycle is the same: a
  case we send out and the sub-matters of it follow one table whatever the partner's
  protocol. A case a partner files with us is another machine (``Inbound``): it waits for
  *our* office, not for a partner, so it has its own, shorter table.
- The decisions the shell used to make inline — refuse a cancel while a delivery may reach
  the partner, resend a dead message or make a new one, give up or retry, write a retry step
  on the timeline or not — are functions here, next to the tables they follow from.

Theory of operation:

  sub-matter   waiting ─SENT→ queued ─ACCEPTED→ done
                                    ─ACCEPTED_PENDING→ awaiting_result ─RESULT_ACCEPTED→ done
                                                                       ─RESULT_REFUSED→ failed
                                                                       ─OVERDUE→ awaiting_result
                                    ─REFUSED | DEAD→ failed ─RETRY→ waiting (a new message)
                                                            ─RESEND→ queued (the dead one again)
               local ─COMPLETED_LOCALLY→ done
               waiting, queued, failed, local ─CANCEL→ cancelled      (done, cancelled: final)

  message      pending ─CLAIM→ in_flight ─DELIVER→ delivered
                       ─DELIVER→ delivered          (answered while its lease had been given back)
                       ─CANCEL→ cancelled
               in_flight ─RETRY | RELEASE→ pending ─DIE→ dead ─REPLAY→ pending
               in_flight ─CLAIM→ in_flight           (its lease ran out: another worker takes it)

  inbound case in_office ─DECIDED→ done | rejected ─RESULT_DELIVERED→ result_delivered
                         ─OFFICE_DEAD→ office_unreachable ─DECIDED→ done | rejected (replayed)
               done, rejected ─RESULT_DEAD→ result_undeliverable ─RESULT_DELIVERED→ (replayed)
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import Generic, TypeVar


class LifecycleError(ValueError):
    """An event that the machine does not allow in the state it is in."""

    def __init__(self, machine: str, state: str, event: Enum) -> None:
        super().__init__(f"{machine}: {event.name} is not allowed in state {str(state)!r}")
        self.machine, self.state, self.event = machine, state, event


S = TypeVar("S", bound=StrEnum)
E = TypeVar("E", bound=Enum)


class Machine(Generic[S, E]):
    """One lifecycle table, applied: the small class that asks it (the tables above say all)."""

    def __init__(self, name: str, states: type[S], table: dict[S, dict[E, S]]) -> None:
        self.name, self._states, self.table = name, states, table

    def next(self, state: str, event: E) -> S:
        """The state after ``event``, or LifecycleError naming both."""
        new = self.table[self._states(state)].get(event)
        if new is None:
            raise LifecycleError(self.name, state, event)
        return new

    def allows(self, state: str, event: E) -> bool:
        return event in self.table[self._states(state)]

    def target(self, event: E) -> S:
        """Where ``event`` leads from whichever state allows it (one place for each event)."""
        (target,) = {events[event] for events in self.table.values() if event in events}
        return target

    def sources(self, event: E) -> tuple[str, ...]:
        """The states that allow ``event``: what a store statement applying it requires."""
        return tuple(state.value for state, events in self.table.items() if event in events)


# -- the sub-matter ------------------------------------------------------------------------------


class Sub(StrEnum):
    WAITING = "waiting"  # for the sub-matters it depends on
    QUEUED = "queued"  # its message is in the outbox or on the wire
    AWAITING = "awaiting_result"  # accepted as pending; the partner reports the result later
    DONE = "done"
    FAILED = "failed"  # refused by the partner, or its message died
    LOCAL = "local"  # for our own back office (a clerk completes it)
    CANCELLED = "cancelled"


class SubEvent(Enum):
    SENT = "sent"
    ACCEPTED = "accepted"
    ACCEPTED_PENDING = "accepted_pending"
    REFUSED = "refused"
    DEAD = "dead"
    RESULT_ACCEPTED = "result_accepted"
    RESULT_REFUSED = "result_refused"
    OVERDUE = "overdue"
    COMPLETED_LOCALLY = "completed_locally"
    RETRY = "retry"
    RESEND = "resend"
    CANCEL = "cancel"


SUB_TABLE: dict[Sub, dict[SubEvent, Sub]] = {
    Sub.WAITING: {SubEvent.SENT: Sub.QUEUED, SubEvent.CANCEL: Sub.CANCELLED},
    Sub.QUEUED: {
        SubEvent.ACCEPTED: Sub.DONE,
        SubEvent.ACCEPTED_PENDING: Sub.AWAITING,
        SubEvent.REFUSED: Sub.FAILED,
        SubEvent.DEAD: Sub.FAILED,
        SubEvent.CANCEL: Sub.CANCELLED,
    },
    Sub.AWAITING: {
        SubEvent.RESULT_ACCEPTED: Sub.DONE,
        SubEvent.RESULT_REFUSED: Sub.FAILED,
        SubEvent.OVERDUE: Sub.AWAITING,
    },
    Sub.FAILED: {
        SubEvent.RETRY: Sub.WAITING,
        SubEvent.RESEND: Sub.QUEUED,
        SubEvent.CANCEL: Sub.CANCELLED,
    },
    Sub.LOCAL: {SubEvent.COMPLETED_LOCALLY: Sub.DONE, SubEvent.CANCEL: Sub.CANCELLED},
    Sub.DONE: {},
    Sub.CANCELLED: {},
}
SUB_FINISHED = frozenset({Sub.DONE, Sub.CANCELLED})
SUB = Machine("sub-matter", Sub, SUB_TABLE)


# -- the outbox message --------------------------------------------------------------------------


class Msg(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    DEAD = "dead"
    CANCELLED = "cancelled"


class MsgEvent(Enum):
    CLAIM = "claim"
    DELIVER = "deliver"
    RETRY = "retry"
    RELEASE = "release"
    DIE = "die"
    REPLAY = "replay"
    CANCEL = "cancel"


MSG_TABLE: dict[Msg, dict[MsgEvent, Msg]] = {
    Msg.PENDING: {
        MsgEvent.CLAIM: Msg.IN_FLIGHT,
        MsgEvent.DELIVER: Msg.DELIVERED,
        MsgEvent.DIE: Msg.DEAD,
        MsgEvent.CANCEL: Msg.CANCELLED,
    },
    Msg.IN_FLIGHT: {
        MsgEvent.CLAIM: Msg.IN_FLIGHT,
        MsgEvent.DELIVER: Msg.DELIVERED,
        MsgEvent.RETRY: Msg.PENDING,
        MsgEvent.RELEASE: Msg.PENDING,
        MsgEvent.DIE: Msg.DEAD,
    },
    Msg.DEAD: {MsgEvent.REPLAY: Msg.PENDING},
    Msg.DELIVERED: {},
    Msg.CANCELLED: {},
}
MESSAGE = Machine("message", Msg, MSG_TABLE)


# -- the inbound case (a partner's case at our office) -------------------------------------------


class Inbound(StrEnum):
    IN_OFFICE = "in_office"
    DONE = "done"
    REJECTED = "rejected"
    RESULT_DELIVERED = "result_delivered"
    OFFICE_UNREACHABLE = "office_unreachable"
    RESULT_UNDELIVERABLE = "result_undeliverable"


class InboundEvent(Enum):
    DECIDED_DONE = "decided_done"
    DECIDED_REJECTED = "decided_rejected"
    OFFICE_DEAD = "office_dead"
    RESULT_DELIVERED = "result_delivered"
    RESULT_DEAD = "result_dead"


INBOUND_TABLE: dict[Inbound, dict[InboundEvent, Inbound]] = {
    Inbound.IN_OFFICE: {
        InboundEvent.DECIDED_DONE: Inbound.DONE,
        InboundEvent.DECIDED_REJECTED: Inbound.REJECTED,
        InboundEvent.OFFICE_DEAD: Inbound.OFFICE_UNREACHABLE,
    },
    Inbound.DONE: {
        InboundEvent.RESULT_DELIVERED: Inbound.RESULT_DELIVERED,
        InboundEvent.RESULT_DEAD: Inbound.RESULT_UNDELIVERABLE,
    },
    Inbound.REJECTED: {
        InboundEvent.RESULT_DELIVERED: Inbound.RESULT_DELIVERED,
        InboundEvent.RESULT_DEAD: Inbound.RESULT_UNDELIVERABLE,
    },
    Inbound.RESULT_DELIVERED: {},
    # an operator replays the dead hand-over or result (xgw outbox replay): it may yet arrive
    Inbound.OFFICE_UNREACHABLE: {
        InboundEvent.DECIDED_DONE: Inbound.DONE,
        InboundEvent.DECIDED_REJECTED: Inbound.REJECTED,
    },
    Inbound.RESULT_UNDELIVERABLE: {InboundEvent.RESULT_DELIVERED: Inbound.RESULT_DELIVERED},
}
INBOUND = Machine("inbound case", Inbound, INBOUND_TABLE)


def inbound_next(state: str, event: InboundEvent) -> Inbound:
    new = INBOUND_TABLE[Inbound(state)].get(event)
    if new is None:
        raise LifecycleError("inbound case", state, event)
    return new


# -- decisions the shell asks for ----------------------------------------------------------------


def cancel_refusal(any_delivered: bool, any_open: bool, deliveries_under_way: int) -> str | None:
    """Why a case cannot be cancelled now, or None if it can. A message that reached the
    partner, or may have (a timeout), makes the case the partner's too; one on the wire now may
    reach it: ask again in a moment."""
    if any_delivered or not any_open:
        return "a message may already have reached a partner, or the case is finished"
    if deliveries_under_way:
        return "a delivery is under way; try again in a moment"
    return None


def retry_resends(last_message_status: str | None) -> bool:
    """A failed sub-matter again: resend its last message if that one died (the same id, so a
    partner that acted on a timed-out attempt answers from its records), else a new message
    (after a partner's refusal, which it remembers per message id)."""
    return last_message_status == Msg.DEAD


def gives_up(transient: bool, attempts: int, age: float, max_attempts: int, max_age: float) -> bool:
    """After a failed attempt: the message dies (final refusal, or retried long or often
    enough), or it is tried again later."""
    return not transient or age >= max_age or attempts >= max_attempts


# The kinds of outbox message that are not a request of one of our cases: an inbound case's
# hand-over to our office and its result to the partner, a query for a result, and a request
# to witness one of our exchange log's checkpoints (of no case at all).
HAND_OVER, RESULT, QUERY, WITNESS = "office", "result", "query", "witness"
FOR_INBOUND_CASE = frozenset({HAND_OVER, RESULT})
NOT_A_REQUEST = FOR_INBOUND_CASE | {QUERY, WITNESS}


def writes_retry_step(kind: str, attempts_before: int, counted: bool) -> bool:
    """The first counted failure of a case's request shows on its timeline; later ones and the
    other kinds of message only in the exchange log."""
    return attempts_before == 0 and counted and kind not in NOT_A_REQUEST

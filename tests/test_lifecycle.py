"""The lifecycle tables (gateway/core/lifecycle.py): complete, final where they say so, and
holding their invariants over any sequence of events (hypothesis)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import cases as casecore
from gateway.core import lifecycle
from gateway.core.cases import Reply, SubState
from gateway.core.lifecycle import (
    INBOUND_TABLE,
    MSG_TABLE,
    SUB_TABLE,
    Inbound,
    InboundEvent,
    LifecycleError,
    Msg,
    MsgEvent,
    Sub,
    SubEvent,
)
from mappings.examples import bundle_form
from tests.mapping_helpers import REGISTRY


def test_every_state_has_a_row_and_every_event_is_used() -> None:
    for table, states, events in (
        (SUB_TABLE, Sub, SubEvent),
        (MSG_TABLE, Msg, MsgEvent),
        (INBOUND_TABLE, Inbound, InboundEvent),
    ):
        assert set(table) == set(states)
        used = {event for row in table.values() for event in row}
        assert used == set(events), set(events) - used


def test_an_unknown_pair_raises_naming_both() -> None:
    with pytest.raises(LifecycleError) as refused:
        lifecycle.SUB.next("done", SubEvent.RETRY)
    assert "RETRY" in str(refused.value) and "'done'" in str(refused.value)
    with pytest.raises(LifecycleError):
        lifecycle.MESSAGE.next("delivered", MsgEvent.CLAIM)
    with pytest.raises(LifecycleError):
        lifecycle.INBOUND.next("result_delivered", InboundEvent.DECIDED_DONE)


def test_the_store_statements_follow_the_tables() -> None:
    assert set(lifecycle.MESSAGE.sources(MsgEvent.CLAIM)) == {"pending", "in_flight"}
    assert set(lifecycle.MESSAGE.sources(MsgEvent.DELIVER)) == {"pending", "in_flight"}
    assert lifecycle.MESSAGE.sources(MsgEvent.REPLAY) == ("dead",)
    assert lifecycle.MESSAGE.target(MsgEvent.RETRY) is Msg.PENDING
    assert lifecycle.INBOUND.target(InboundEvent.RESULT_DELIVERED) is Inbound.RESULT_DELIVERED


@given(
    st.lists(st.sampled_from(list(SubEvent)), max_size=40),
    st.sampled_from([Sub.WAITING, Sub.LOCAL]),
)
def test_a_sub_matter_never_leaves_done_or_cancelled(events: list[SubEvent], start: Sub) -> None:
    state = start
    for event in events:
        if lifecycle.SUB.allows(state, event):
            before, state = state, lifecycle.SUB.next(state, event)
            assert before not in lifecycle.SUB_FINISHED
        else:
            with pytest.raises(LifecycleError):
                lifecycle.SUB.next(state, event)


@given(st.lists(st.sampled_from(list(MsgEvent)), max_size=40))
def test_a_message_delivered_or_cancelled_stays_so(events: list[MsgEvent]) -> None:
    state = Msg.PENDING
    for event in events:
        if event in MSG_TABLE[state]:
            before, state = state, lifecycle.MESSAGE.next(state, event)
            assert before not in (Msg.DELIVERED, Msg.CANCELLED)


# A case: random operations a window, a partner and the delivery worker may cause.
OPERATIONS = [
    "send",
    "accept",
    "pending",
    "refuse",
    "dead",
    "result",
    "overdue",
    "retry",
    "resend",
    "maybe",
    "cancel",
    "local",
]


def _apply(states: list[SubState], operation: str, sub: str) -> list[SubState]:
    """What the services would do, through the core; a refused transition leaves the states."""
    try:
        if operation == "send":
            return casecore.mark_queued(states, [s for s in casecore.ready(states) if s == sub])
        if operation in ("accept", "pending", "refuse"):
            reply = Reply(
                operation != "refuse",
                None if operation != "refuse" else "NO",
                pending=operation == "pending",
            )
            return casecore.apply_reply(states, sub, reply, {"receipt_no": "r"})
        if operation == "dead":
            return casecore.apply_dead(states, sub, "TIMEOUT", "gave up")
        if operation == "result":
            return casecore.apply_result(states, sub, Reply(True), {"receipt_no": "r"})
        if operation == "overdue":
            return casecore.mark_result_overdue(states, sub)
        if operation == "retry":
            return casecore.retry_failed(states, sub)
        if operation == "resend":
            return casecore.resend(states, sub)
        if operation == "maybe":
            return casecore.mark_maybe_delivered(states, sub)
        if operation == "local":
            return casecore.complete_local(states, sub, {})
        if casecore.cancel_refusal(states, 0) is None:  # "cancel", as the service asks first
            return casecore.cancel(states)
        return states
    except ValueError:  # LifecycleError too: nothing moves outside the table
        return states


PLANNED = casecore.plan_case(
    REGISTRY, "420607", REGISTRY.bundles["YJS-SBZR"], bundle_form("YJS-SBZR"), date(2026, 11, 28)
)
SUB_IDS = [p.sub_id for p in PLANNED]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(OPERATIONS), st.sampled_from(SUB_IDS)), max_size=60))
def test_a_case_status_is_derived_and_a_delivered_case_is_never_cancelled(
    operations: list[tuple[str, str]],
) -> None:
    states = casecore.initial_states(PLANNED)
    for operation, sub in operations:
        before = {s.sub_id: s for s in states}
        states = _apply(states, operation, sub)
        for s in states:
            was: Any = before[s.sub_id]
            if was.status in lifecycle.SUB_FINISHED:
                assert s.status == was.status  # nothing leaves done or cancelled
            if s.status == Sub.CANCELLED and was.status != Sub.CANCELLED:
                assert not any(b.delivered for b in before.values())  # never once delivered
        statuses = {s.status for s in states}
        status = casecore.case_status(states)
        assert (status == "done") == (statuses == {Sub.DONE})
        if any(s.status == Sub.FAILED for s in states):
            assert status == "attention"
        if status == "in_progress":
            assert Sub.FAILED not in statuses and statuses != {Sub.DONE}


def test_the_shells_decisions() -> None:
    assert lifecycle.cancel_refusal(True, True, 0) is not None
    assert lifecycle.cancel_refusal(False, False, 0) is not None  # finished
    assert "under way" in (lifecycle.cancel_refusal(False, True, 1) or "")
    assert lifecycle.cancel_refusal(False, True, 0) is None
    assert lifecycle.retry_resends("dead") and not lifecycle.retry_resends("delivered")
    assert lifecycle.gives_up(False, 1, 0, 60, 86400)  # a final refusal
    assert lifecycle.gives_up(True, 60, 0, 60, 86400) and lifecycle.gives_up(
        True, 1, 86400, 60, 86400
    )
    assert not lifecycle.gives_up(True, 59, 86399, 60, 86400)
    assert lifecycle.writes_retry_step("request", 0, True)
    assert not lifecycle.writes_retry_step("request", 1, True)
    assert not lifecycle.writes_retry_step("query", 0, True)
    assert not lifecycle.writes_retry_step("request", 0, False)

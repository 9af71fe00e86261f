"""The pure core of routing and delivery: planning, transitions, breaker, backoff."""

from __future__ import annotations

import random
from datetime import date

import pytest

from gateway.core import cases as casecore
from gateway.core.cases import CaseInvalid, Reply
from gateway.services.delivery import CircuitBreaker, backoff
from mappings.examples import BUNDLE_FORMS, bundle_form
from tests.mapping_helpers import REGISTRY

ON = date(2026, 11, 28)


def _plan(code: str, form: dict[str, object] | None = None) -> list[casecore.PlannedSub]:
    return casecore.plan_case(
        REGISTRY, "420607", REGISTRY.bundles[code], form or bundle_form(code), ON
    )


def test_plan_routes_every_sub_matter_by_its_rule() -> None:
    plan = {p.sub_id: p for p in _plan("YJS-SBZR")}
    assert plan["pension_contact_letter"].jurisdiction == "411329"
    assert plan["pension_contact_letter"].partner_code == "XY-SB-001"
    assert plan["pension_contact_letter"].payload["aae140"] == "110"  # type: ignore[index]
    assert plan["pension_information_form"].payload["ywlx"] == "XXB"  # type: ignore[index]
    assert plan["pension_information_form"].depends_on == ("pension_contact_letter",)
    form = bundle_form("YJS-SBZR")
    form["transfer"]["out_region"] = "420300"  # type: ignore[index]
    form["fund"]["from_region"] = "421300"  # type: ignore[index]
    plan = {p.sub_id: p for p in _plan("YJS-SBZR", form)}
    assert plan["pension_contact_letter"].jurisdiction == "420300"  # never "the partner"
    assert plan["housing_fund_transfer"].jurisdiction == "421300"
    hkqy = {p.sub_id: p for p in _plan("YJS-HKQY")}
    assert hkqy["move_in_approval"].local and hkqy["move_out"].jurisdiction == "411329"


@pytest.mark.parametrize("on", [date(2026, 1, 1), date(2027, 1, 1), date(2031, 6, 30)])
@pytest.mark.parametrize("partner", ["411329", "420300", "421300", "429021"])
def test_the_sample_routes_every_bundle_on_any_later_date(on: date, partner: str) -> None:
    """The default setup must not stop on a fixed date: the newest mapping set with every
    partner stays in force until a later one is written."""
    for code in BUNDLE_FORMS:
        form = bundle_form(code)
        if code == "YJS-SBZR":
            form["transfer"]["out_region"] = partner  # type: ignore[index]
            form["fund"]["from_region"] = partner  # type: ignore[index]
        plan = casecore.plan_case(REGISTRY, "420607", REGISTRY.bundles[code], form, on)
        assert plan, code


def test_plan_lists_every_problem_at_once() -> None:
    form = bundle_form("YJS-SBZR")
    form["applicant"]["id_number"] = "411329198506150035"  # type: ignore[index]
    form["fund"]["from_region"] = "999999"  # type: ignore[index]
    del form["transfer"]["letter_date"]  # type: ignore[attr-defined]
    with pytest.raises(CaseInvalid) as info:
        _plan("YJS-SBZR", form)
    locations = {p.location for p in info.value.problems}
    assert "form.applicant.id_number" in locations
    assert "form.transfer.letter_date" in locations
    assert "sub_matters.housing_fund_transfer" in locations


def test_transitions_follow_dependencies() -> None:
    plan = _plan("YJS-SBZR")
    states = casecore.initial_states(plan)
    ready = casecore.ready(states)
    assert "pension_information_form" not in ready and "pension_contact_letter" in ready
    states = casecore.mark_queued(states, ready)
    assert casecore.ready(states) == []
    assert casecore.cancel_refusal(states, 0) is None
    states = casecore.apply_reply(
        states, "pension_contact_letter", Reply(True), {"receipt_no": "r1"}
    )
    assert casecore.cancel_refusal(states, 0) is not None
    assert casecore.ready(states) == ["pension_information_form"]
    states = casecore.apply_reply(
        states, "medical_transfer", Reply(False, "PARTNER_REJECTED", "no"), None
    )
    assert casecore.case_status(states) == "attention"
    states = casecore.retry_failed(states, "medical_transfer")
    assert casecore.ready(states) == ["pension_information_form", "medical_transfer"]
    states = casecore.mark_queued(states, casecore.ready(states))
    for sub in ("pension_information_form", "medical_transfer", "housing_fund_transfer"):
        states = casecore.apply_reply(states, sub, Reply(True), {})
    assert casecore.case_status(states) == "done"
    with pytest.raises(ValueError):
        casecore.retry_failed(states, "medical_transfer")


def test_local_sub_matters_wait_for_the_clerk() -> None:
    states = casecore.initial_states(_plan("YJS-HKQY"))
    assert casecore.ready(states) == []
    states = casecore.complete_local(states, "move_in_approval", {"permit": "ok"})
    assert casecore.ready(states) == ["move_out"]
    with pytest.raises(ValueError):
        casecore.complete_local(states, "move_out", None)


def test_cancel_only_before_delivery() -> None:
    states = casecore.mark_queued(casecore.initial_states(_plan("YJS-YLBX")), ["registration"])
    cancelled = casecore.cancel(states)
    assert casecore.case_status(cancelled) == "cancelled"
    delivered = casecore.apply_reply(states, "registration", Reply(True), {})
    assert casecore.cancel_refusal(delivered, 0) is not None
    # an attempt that may have reached the partner (a timeout) counts as delivered too
    assert casecore.cancel_refusal(states, 0) is None
    assert (
        casecore.cancel_refusal(casecore.mark_maybe_delivered(states, "registration"), 0)
        is not None
    )


def test_circuit_breaker_opens_and_probes_once() -> None:
    breaker = CircuitBreaker(threshold=3, reset_seconds=10)
    for t in range(3):
        assert breaker.allows(t)
        breaker.failure(t)
    assert not breaker.allows(5)
    assert breaker.allows(13)  # half-open: one probe
    assert not breaker.allows(13.5)  # and only one
    breaker.failure(14)
    assert not breaker.allows(15)
    assert breaker.allows(25)
    breaker.success()
    assert breaker.allows(25.1) and breaker.allows(25.2)


def test_while_the_circuit_probes_the_partners_messages_stay_unclaimed() -> None:
    """Claimed while the circuit is open or a probe is under way, a message could only be put
    back; a backlog of thousands would be taken and put back every few milliseconds."""
    breaker = CircuitBreaker(threshold=1, reset_seconds=10)
    assert breaker.may_claim(0)
    breaker.failure(0)
    assert not breaker.may_claim(5)  # open
    assert breaker.may_claim(10)  # time for a probe: one message may be claimed for it
    assert breaker.allows(10)  # the probe goes
    assert not breaker.may_claim(11)  # the rest wait for its outcome
    breaker.failure(12)
    assert not breaker.may_claim(13) and breaker.may_claim(22)
    assert breaker.allows(22)
    breaker.success()
    assert breaker.may_claim(22.5)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff(n, 0.5, 60, rng) for n in range(1, 20)]
    assert all(0.25 <= d <= 60 for d in delays)
    assert max(delays[:3]) <= 2.0
    assert len({round(d, 6) for d in delays}) > 15  # jitter


def test_message_ids_derive_from_durable_facts_and_each_retry_is_new() -> None:
    """A message made again from the same records (after a power cut lost the first write)
    carries the first one's id, so the partner de-duplicates it; a retry is a new message."""
    first = casecore.message_id("window-1:key-1", "body-hash", "registration", "0")
    assert first == casecore.message_id("window-1:key-1", "body-hash", "registration", "0")
    assert len(first) == 32 and int(first, 16) >= 0
    others = {
        casecore.message_id("window-1:key-2", "body-hash", "registration", "0"),
        casecore.message_id("window-1:key-1", "other-body", "registration", "0"),
        casecore.message_id("window-1:key-1", "body-hash", "reimbursement", "0"),
        casecore.message_id("window-1:key-1", "body-hash", "registration", "1"),
        # the separator keeps parts apart: ("ab", "c") is not ("a", "bc")
        casecore.message_id("window-1:key-1body-hash", "", "registration", "0"),
    }
    assert first not in others and len(others) == 5

    states = casecore.initial_states(_plan("YJS-YLBX"))
    sub = states[0].sub_id
    states = casecore.mark_queued(states, [sub])
    states = casecore.apply_reply(states, sub, Reply(False, "REFUSED", "no"), None)
    retried = casecore.retry_failed(states, sub)
    assert [s.attempts for s in retried if s.sub_id == sub] == [1]
    assert casecore.ready(retried)[0] == sub


def test_results_not_reported_are_asked_for_at_doubling_intervals_then_flagged() -> None:
    assert [casecore.result_query_delay(n, 3600) for n in range(7)] == [
        3600,
        7200,
        14400,
        28800,
        57600,
        86400,
        86400,
    ]
    assert not casecore.result_overdue(1000.0, 1000.0 + 59, 60)
    assert casecore.result_overdue(1000.0, 1000.0 + 60, 60)
    states = [
        casecore.SubState("a", casecore.AWAITING, (), False, delivered=True),
        casecore.SubState("b", casecore.DONE, (), False, delivered=True),
    ]
    assert casecore.case_status(states) == "in_progress"
    flagged = casecore.mark_result_overdue(states, "a")
    assert flagged[0].error_code == casecore.RESULT_OVERDUE and flagged[1] == states[1]
    assert casecore.case_status(flagged) == "attention"
    assert casecore.mark_result_overdue(states, "b") == states  # only one still awaiting
    settled = casecore.apply_result(flagged, "a", casecore.Reply(True), {"receipt_no": "r"})
    assert casecore.case_status(settled) == "done" and settled[0].error_code is None

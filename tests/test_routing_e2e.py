"""Windows → gateway → partners, with real processes, sockets, SQLite and (where named) Redis."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually, run_xgw
from tests.harness import REGIONS, Deployment, http, http_exchange


@pytest.fixture
def deployment(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    options = getattr(request, "param", {})
    deployed = Deployment(tmp_path, **options)
    try:
        yield deployed
    finally:
        deployed.close()


def _sub(case: dict[str, object], sub_id: str) -> dict[str, object]:
    return next(s for s in case["sub_matters"] if s["id"] == sub_id)  # type: ignore[attr-defined,index]


def _retry_codes(cases: list[dict[str, Any]]) -> list[str]:
    """The codes of the failed attempts the cases' timelines show."""
    return [
        step["detail"].get("code")
        for case in cases
        for step in case["timeline"]
        if step["step"] == "delivery_retrying"
    ]


def _turned_away(deployment: Deployment, region: str, count: int) -> None:
    eventually(
        lambda: deployment.stats()[region]["turned_away"] >= count,
        f"{count} requests turned away by {region}",
    )


def _on_the_wire(deployment: Deployment, count: int) -> None:
    eventually(
        lambda: deployment.stats()["411329"]["in_flight"] >= count,
        f"{count} requests in the partner's hands",
    )


def _cancel(url: str, case_id: str, token: str) -> tuple[int, Any]:
    """Cancel as a window does: "a delivery is under way" asks it to try again in a moment."""
    answers: list[tuple[int, Any]] = []

    def attempt() -> bool:
        answers.append(http("POST", f"{url}/{case_id}/cancel", token=token))
        status, body = answers[-1]
        return not (status == 409 and "under way" in body.get("detail", ""))

    eventually(attempt, f"cancel of {case_id} answered for good")
    return answers[-1]


def _utc_second() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@pytest.mark.parametrize(
    "deployment",
    [{"protocol": "soap"}, {"protocol": "rest"}, {"protocol": "mixed"}],
    indirect=True,
    ids=["soap", "rest", "mixed"],
)
def test_both_demo_bundles_end_to_end(deployment: Deployment) -> None:
    transfer = deployment.file("YJS-SBZR")
    claim = deployment.file("YJS-YLBX")
    done = {c["id"]: c for c in deployment.wait([transfer["id"], claim["id"]])}
    transfer = done[transfer["id"]]
    answer = _sub(transfer, "pension_information_form")["result"]
    # the partner's 信息表 (人社 codes, amounts in 分) mapped back to our schema
    assert answer["record"]["paid_months"] == 240  # type: ignore[index]
    assert answer["record"]["contributions"][0] == {  # type: ignore[index]
        "year": 2006,
        "from_month": "2006-01",
        "to_month": "2006-12",
        "base": "2000.00",
        "months": 12,
        "personal_contribution": "1920.00",
        "employer_contribution": "3840.00",
    }
    assert len(answer["record"]["contributions"]) == 20  # type: ignore[index]
    steps = [s["step"] for s in transfer["timeline"]]
    assert steps[0] == "filed" and steps.count("done") == 4
    # the 信息表 request went out only after the 联系函 was accepted
    letter_done = next(
        i
        for i, s in enumerate(transfer["timeline"])
        if s["step"] == "done" and s["sub_id"] == "pension_contact_letter"
    )
    form_queued = next(
        i
        for i, s in enumerate(transfer["timeline"])
        if s["step"] == "queued" and s["sub_id"] == "pension_information_form"
    )
    assert letter_done < form_queued
    stats = deployment.stats()["411329"]
    assert stats["applied"] == 6 and stats["applied_twice"] == []
    audit = deployment.xgw("audit", "show", "--case", transfer["id"], "--limit", "100")
    assert audit.count("message.queued") == 4 and audit.count("message.delivered") == 4
    assert deployment.xgw("audit", "verify").strip().endswith("log verifies")


def test_partner_down_under_load_then_back(deployment: Deployment) -> None:
    deployment.faults({"411329": {"down": True}})
    ids = [deployment.file(b)["id"] for b in ("YJS-SBZR", "YJS-YLBX") * 6]
    _turned_away(deployment, "411329", 3)  # enough failures to open the circuit
    stuck = [deployment.case(i) for i in ids]
    assert all(c["status"] == "in_progress" for c in stuck)
    deployment.faults({"411329": {"down": False}})
    deployment.wait(ids, timeout=90)
    stats = deployment.stats()["411329"]
    assert stats["applied_twice"] == []
    assert stats["applied"] == 6 * 6  # every message applied exactly once
    counts = deployment.xgw("outbox", "list", "--status", "all")
    assert "dead" not in counts.splitlines()[-1]


def test_a_probe_refused_outright_closes_the_circuit(deployment: Deployment) -> None:
    """新野 is down long enough for its circuit to open; back up, it refuses the first message
    it gets (the circuit's probe) outright. It answered, so it is up: that sub-matter fails with
    the partner's code and every other case goes through (the circuit must not stay shut
    waiting for a probe that ended in a refusal)."""
    deployment.faults({"411329": {"down": True}})
    ids = [deployment.file("YJS-YLBX")["id"] for _ in range(4)]
    _turned_away(deployment, "411329", 4)  # 3 in a row open the circuit, then a probe fails
    deployment.faults({"411329": {"refuse_code": "MATTER_NOT_ALLOWED", "refuse_next": 1}})
    cases = deployment.wait(ids, statuses=("done", "attention"), timeout=30)
    assert sorted(c["status"] for c in cases) == ["attention", "done", "done", "done"]
    failed = next(c for c in cases if c["status"] == "attention")
    assert [s["error_code"] for s in failed["sub_matters"] if s["status"] == "failed"] == [
        "MATTER_NOT_ALLOWED"
    ]
    assert deployment.stats()["411329"]["rejected"] == {"MATTER_NOT_ALLOWED": 1}


def test_lost_answers_resent_and_replayed_envelopes_resealed(deployment: Deployment) -> None:
    """The partner applies a message, but its answer is lost on the way (the connection
    drops); the gateway sends the same envelope again, and this partner, checking nonces before
    message ids, refuses it as a replay; the gateway re-seals it (a fresh nonce, the same
    message id) and the partner answers from its cache. Each effect is applied once."""
    deployment.faults({"411329": {"lose_replies": 2, "replay_check_first": True}})
    ids = [deployment.file(b)["id"] for b in ("YJS-SBZR", "YJS-YLBX")]
    deployment.wait(ids, timeout=60)
    stats = deployment.stats()["411329"]
    assert stats["applied_twice"] == []
    assert stats["applied"] == stats["messages"] == 6  # 社保转入: 4 messages, 报销: 2
    assert stats["rejected"].get("REPLAYED") == 2  # each lost answer's resend, refused once
    assert stats["duplicates_answered"] == 2  # then answered from the partner's cache
    assert all(deployment.case(i)["status"] == "done" for i in ids)


def test_per_partner_concurrency_limit_and_timeout(deployment: Deployment) -> None:
    """新野 takes at most 2 of our requests at once and must answer within 1 s, else we give
    up on that attempt. Slow but within the timeout, 8 cases at once never put more than 2
    requests in its hands. Slower than the timeout, attempts time out (TIMEOUT, retried; a
    request we gave up on no longer counts against our limit, though the partner may still be
    working on it), and once it is quick again every case completes, each effect once (what it
    applied for an abandoned request is answered from its cache)."""
    deployment.configure_partner("411329", max_concurrency=2, timeout_seconds=1)
    deployment.faults({"411329": {"latency_ms": 300}})  # slow, within the timeout
    deployment.wait([deployment.file("YJS-YLBX")["id"] for _ in range(8)], timeout=60)
    assert deployment.stats()["411329"]["most_in_flight"] == 2
    deployment.faults({"411329": {"latency_ms": 1500}})  # slower than the timeout
    ids = [deployment.file("YJS-YLBX")["id"] for _ in range(4)]
    eventually(lambda: "TIMEOUT" in _retry_codes([deployment.case(i) for i in ids]), "a timeout")
    deployment.faults({"411329": {"latency_ms": 0}})
    cases = deployment.wait(ids, timeout=90)
    stats = deployment.stats()["411329"]
    assert stats["applied_twice"] == [] and stats["applied"] == stats["messages"] == 24
    assert "TIMEOUT" in _retry_codes(cases)


def test_a_case_the_partner_may_already_hold_cannot_be_cancelled(deployment: Deployment) -> None:
    """An attempt that timed out may still have been applied by the partner (it was: the
    simulator applies it after our timeout), so that case can no longer be cancelled; a case
    whose partner only ever answered "unavailable" never reached it and can be."""
    deployment.configure_partner("411329", timeout_seconds=1)
    url, token = f"{deployment.url}/api/v1/cases", deployment.token
    deployment.faults({"411329": {"latency_ms": 1500}})  # slower than our timeout
    reached = deployment.file("YJS-YLBX")["id"]
    eventually(lambda: _retry_codes([deployment.case(reached)]), "the first attempt timing out")
    eventually(  # its request lands after all
        lambda: deployment.stats()["411329"]["applied"], "the partner applying the timed-out one"
    )
    deployment.faults({"411329": {"down": True}})  # from now on only "unavailable"
    unreached = deployment.file("YJS-YLBX")["id"]
    eventually(lambda: _retry_codes([deployment.case(unreached)]), "an attempt turned away")
    status, problem = _cancel(url, reached, token)
    assert (status, problem["code"]) == (409, "CASE_NOT_CANCELLABLE"), problem
    assert "may already" in problem["detail"]
    status, cancelled = _cancel(url, unreached, token)
    assert status == 200 and cancelled["status"] == "cancelled", cancelled


@pytest.mark.parametrize("deployment", [{"separate_simulator": True}], indirect=True)
def test_sigterm_gives_back_sends_that_outlast_the_grace(deployment: Deployment) -> None:
    """SIGTERM while the partner is slow: the gateway stops within its shutdown grace (0.5 s
    here) instead of waiting for the partner, gives the unfinished sends back to the outbox
    (none left in flight), and exits 0; restarted, it completes every case, each effect once
    (the partner applied some of the abandoned sends anyway and answers their resends from
    its cache)."""
    deployment.gateways.pop().stop()
    gateway = deployment.add_gateway(XGW_SHUTDOWN_GRACE_SECONDS="0.5")
    deployment.faults({"*": {"latency_ms": 4000}})
    ids = [deployment.file("YJS-YLBX", url=gateway.url)["id"] for _ in range(3)]
    _on_the_wire(deployment, 3)  # the cases' first messages
    began = time.monotonic()
    assert gateway.stop() == 0
    assert time.monotonic() - began < 3.5  # well before the partner would have answered
    listing = deployment.xgw("outbox", "list", "--status", "all").splitlines()
    # the cases' three sends, given back (beside them: witness requests for the checkpoint
    # signed as the gateway stopped, matter XGW-AUDIT, which go out at the next start)
    given_back = [line for line in listing[1:-1] if " XGW-AUDIT " not in line]
    assert [line.split()[1] for line in given_back] == ["pending"] * 3, listing
    assert "in_flight" not in listing[-1], listing
    deployment.faults({"*": {"latency_ms": 0}})
    deployment.gateways.remove(gateway)
    deployment.add_gateway()  # the restart
    deployment.wait(ids, timeout=60)
    stats = deployment.stats()["411329"]
    assert stats["applied_twice"] == []
    assert stats["applied"] == stats["messages"] == 6


@pytest.mark.parametrize("deployment", [{"separate_simulator": True}], indirect=True)
def test_gateway_killed_mid_delivery_then_restarted(deployment: Deployment) -> None:
    deployment.faults({"*": {"latency_ms": 300}})
    ids = [deployment.file(b)["id"] for b in ("YJS-SBZR", "YJS-YLBX") * 5]
    _on_the_wire(deployment, 1)
    gateway = deployment.gateways[0]
    gateway.kill()  # SIGKILL: no shutdown, leases left behind
    deployment.faults({"*": {"latency_ms": 0}})
    gateway.start()
    deployment.wait(ids, timeout=90)
    stats = deployment.stats()["411329"]
    assert stats["applied_twice"] == []
    assert stats["applied"] == 5 * 6
    assert deployment.xgw("audit", "verify").strip().endswith("log verifies")


@pytest.mark.redis
@pytest.mark.parametrize("deployment", [{"separate_simulator": True}], indirect=True)
def test_two_instances_on_one_redis_deliver_each_message_once(
    deployment: Deployment, redis_url: str
) -> None:
    deployment.gateways[0].stop()
    deployment.gateways.clear()
    first = deployment.add_gateway(XGW_REDIS_URL=redis_url, XGW_INSTANCE_ID="gw-a")
    second = deployment.add_gateway(XGW_REDIS_URL=redis_url, XGW_INSTANCE_ID="gw-b")
    deployment.faults({"*": {"latency_ms": 50}})
    ids = []
    for n in range(8):
        url = (first if n % 2 else second).url
        ids.append(deployment.file("YJS-SBZR" if n % 3 else "YJS-YLBX", url=url)["id"])
    deployment.wait(ids, timeout=90)
    stats = deployment.stats()["411329"]
    assert stats["applied_twice"] == []
    assert stats["duplicates_answered"] == 0  # no message was ever sent twice
    messages = sum(4 if n % 3 else 2 for n in range(8))
    assert stats["applied"] == messages
    for gateway in (first, second):
        assert '"redis":true' in gateway.log()


@pytest.mark.redis
@pytest.mark.parametrize("deployment", [{"separate_simulator": True}], indirect=True)
def test_messages_waiting_for_a_slow_partner_outlive_their_lease_and_go_once(
    deployment: Deployment, redis_url: str
) -> None:
    """A slow partner taking one request at a time: messages wait for it longer than their
    lease (2 s here). Two instances on one Redis still send each message once — the one that
    holds a message renews its lease as it goes out, the other never takes it meanwhile."""
    for region in REGIONS:  # a 2 s lease needs timeouts of at most 1 s (partners.check_lease)
        deployment.configure_partner(region, restart=False, timeout_seconds=1)
    deployment.configure_partner("411329", restart=False, max_concurrency=1)
    deployment.gateways.pop().stop()
    instances = [
        deployment.add_gateway(
            XGW_REDIS_URL=redis_url, XGW_INSTANCE_ID=name, XGW_DELIVERY_LEASE_SECONDS="2"
        )
        for name in ("gw-a", "gw-b")
    ]
    deployment.faults({"411329": {"latency_ms": 400}})
    ids = [deployment.file("YJS-YLBX", url=instances[n % 2].url)["id"] for n in range(16)]
    deployment.wait(ids, timeout=120)
    stats = deployment.stats()["411329"]
    assert stats["applied_twice"] == [] and stats["applied"] == 32
    assert stats["duplicates_answered"] == 0  # no message was sent twice
    assert stats["most_in_flight"] <= 2  # one at a time from each instance


def test_rejection_retry_cancel_and_local_completion(deployment: Deployment) -> None:
    deployment.faults({"411329": {"reject_matters": ["XY-YB-004"]}})
    transfer = deployment.file("YJS-SBZR")
    case = deployment.wait([transfer["id"]], statuses=("attention",))[0]
    failed = _sub(case, "medical_transfer")
    assert failed["status"] == "failed" and failed["error_code"] == "PARTNER_REJECTED"
    deployment.faults({"411329": {"reject_matters": []}})
    status, _ = http(
        "POST",
        f"{deployment.url}/api/v1/cases/{transfer['id']}/sub-matters/medical_transfer/retry",
        token=deployment.token,
    )
    assert status == 200
    done = deployment.wait([transfer["id"]])[0]
    # the retry is a new message (the partner cached its refusal of the first one)
    sent = [
        s["detail"]["message_id"]
        for s in done["timeline"]
        if s["step"] == "queued" and s["sub_id"] == "medical_transfer"
    ]
    assert len(sent) == 2 and sent[0] != sent[1]
    # cancel: allowed while nothing was delivered, refused after
    deployment.faults({"411329": {"down": True}})
    pending = deployment.file("YJS-YLBX")
    status, cancelled = _cancel(f"{deployment.url}/api/v1/cases", pending["id"], deployment.token)
    assert status == 200 and cancelled["status"] == "cancelled"
    status, problem = http(
        "POST", f"{deployment.url}/api/v1/cases/{transfer['id']}/cancel", token=deployment.token
    )
    assert status == 409 and problem["code"] == "CASE_NOT_CANCELLABLE"
    deployment.faults({"411329": {"down": False}})
    # a bundle with a sub-matter our own office handles
    migration = deployment.file("YJS-HKQY")
    waiting = deployment.case(migration["id"])
    assert _sub(waiting, "move_in_approval")["status"] == "local"
    assert _sub(waiting, "move_out")["status"] == "waiting"
    status, _ = http(
        "POST",
        f"{deployment.url}/api/v1/cases/{migration['id']}/sub-matters/move_in_approval/complete",
        {"result": {"permit_no": "ZQ-420607-2026-004567"}},
        deployment.token,
    )
    assert status == 200
    deployment.wait([migration["id"]])
    assert deployment.stats()["411329"]["applied_twice"] == []


@pytest.mark.parametrize(
    "deployment", [{"extra_env": {"XGW_DELIVERY_MAX_AGE_SECONDS": "1.5"}}], indirect=True
)
def test_dead_letters_alert_list_and_replay(deployment: Deployment) -> None:
    deployment.faults({"411329": {"down": True}})
    claim = deployment.file("YJS-YLBX")
    case = deployment.wait([claim["id"]], statuses=("attention",), timeout=30)[0]
    assert _sub(case, "registration")["error_code"] in ("PARTNER_UNAVAILABLE", "CIRCUIT_OPEN")
    log = deployment.gateways[0].log()
    assert re.search(
        r'"event":"delivery.dead_letter".*"alert":true|"alert":true.*"event":"delivery.dead_letter"',
        log,
    )
    listing = deployment.xgw("outbox", "list")
    assert "dead" in listing and "411329" in listing
    deployment.faults({"411329": {"down": False}})
    unknown = run_xgw("outbox", "replay", "no-such-message", env=deployment.env)
    assert unknown.returncode == 1
    assert b"no-such-message: not a dead letter" in unknown.stderr
    assert "queued 1 dead letter" in deployment.xgw("outbox", "replay", "--all-dead")
    deployment.wait([claim["id"]], timeout=30)


@pytest.mark.parametrize(
    "deployment", [{"extra_env": {"XGW_DELIVERY_MAX_ATTEMPTS": "2"}}], indirect=True
)
def test_retrying_a_dead_letter_sends_the_same_message_again(deployment: Deployment) -> None:
    """Both attempts time out and the message becomes a dead letter, but the partner applied
    it all the same. The window's retry sends that same message again (the same id), which the
    partner answers from its records: the effect is applied once, not once per retry."""
    deployment.configure_partner("411329", timeout_seconds=1, breaker_failures=10)
    deployment.faults({"411329": {"latency_ms": 1500}})
    case_id = deployment.file("YJS-YLBX")["id"]
    case = deployment.wait([case_id], statuses=("attention",), timeout=30)[0]
    assert _sub(case, "registration")["error_code"] == "TIMEOUT"
    # the partner acted on it after all: the last timed-out request lands too
    eventually(lambda: deployment.stats()["411329"]["in_flight"] == 0, "the partner finishing")
    deployment.faults({"411329": {"latency_ms": 0}})
    assert deployment.stats()["411329"]["applied"] == 1
    status, retried = http(
        "POST",
        f"{deployment.url}/api/v1/cases/{case_id}/sub-matters/registration/retry",
        token=deployment.token,
    )
    assert status == 200, retried
    deployment.wait([case_id], timeout=30)
    stats = deployment.stats()["411329"]
    assert stats["messages"] == 2 and stats["applied"] == 2  # registration once, then the rest
    assert stats["duplicates_answered"] >= 1


@pytest.mark.parametrize(
    "deployment", [{"extra_env": {"XGW_MAX_BODY_BYTES": "65536"}}], indirect=True
)
def test_bad_input_gets_clear_4xx(deployment: Deployment) -> None:
    url, token = f"{deployment.url}/api/v1/cases", deployment.token
    key = {"Idempotency-Key": "bad-input-0001"}
    cases = [
        (http("POST", url, raw=b"{not json", token=token, headers=key), 400, "JSON_MALFORMED"),
        (
            http("POST", url, {"bundle": 5, "applicant": {"id_number": 1}}, token, key),
            422,
            "VALIDATION_FAILED",
        ),
        (
            http(
                "POST",
                url,
                {
                    "matter": "XZ-NOPE-1",
                    "applicant": {"id_number": "11010519491231002X", "name": "甲"},
                },
                token,
                key,
            ),
            422,
            "MATTER_UNKNOWN",
        ),
        (
            http(
                "POST",
                url,
                {
                    "bundle": "YJS-SBZR",
                    "applicant": {"id_number": "110105194912310021", "name": "甲"},
                },
                token,
                key,
            ),
            422,
            "VALIDATION_FAILED",
        ),
        (
            http(
                "POST",
                url,
                {
                    "bundle": "YJS-SBZR",
                    "applicant": {"id_number": "11010519491231002X", "name": "甲"},
                    "form": {"transfer": {"out_region": "411329"}},
                },
                token,
                key,
            ),
            422,
            "FORM_INVALID",
        ),
        (http("POST", url, {"bundle": "YJS-SBZR"}, "xgw_wrong", key), 401, "UNAUTHENTICATED"),
        (http("POST", url, {"bundle": "YJS-SBZR"}, None, key), 401, "UNAUTHENTICATED"),
        (http("POST", url, {"bundle": "YJS-SBZR"}, token), 400, "IDEMPOTENCY_KEY_REQUIRED"),
        (http("POST", url, raw=b"x" * 200_000, token=token, headers=key), 413, "BODY_TOO_LARGE"),
        (http("GET", f"{url}/does-not-exist", token=token), 404, "NOT_FOUND"),
        (http("DELETE", url, token=token), 405, "METHOD_NOT_ALLOWED"),
    ]
    auditor = deployment.xgw("tokens", "create", "--role", "auditor", "--name", "auditor-1").strip()
    cases.append((http("POST", url, {"bundle": "YJS-SBZR"}, auditor, key), 403, "FORBIDDEN"))
    for (status, body), expected, code in cases:
        assert status == expected, (code, status, body)
        assert body["code"] == code and body["status"] == expected and body["title"]
    status, headers, _ = http_exchange("DELETE", url, token=token)
    assert status == 405 and set(headers["Allow"].split(",")) >= {"GET", "POST"}  # RFC 9110
    validation = cases[1][0][1]
    assert {e["location"] for e in validation["errors"]} >= {
        "bundle",
        "applicant.id_number",
        "applicant.name",
    }
    id_problem = cases[3][0][1]["errors"][0]
    assert (
        id_problem["location"] == "applicant.id_number" and "check digit" in id_problem["message"]
    )
    form_problems = {e["location"]: e["code"] for e in cases[4][0][1]["errors"]}
    assert form_problems["form.transfer.contact_letter_no"] == "FORM_INVALID"
    assert form_problems["form.pension.scheme"] == "FORM_INVALID"
    assert (
        form_problems["sub_matters.housing_fund_transfer"] == "ROUTE_UNRESOLVED"
    )  # no fund.from_region
    # idempotency: the same key and body → the same case; another body → 409
    first = deployment.file("YJS-YLBX", key="same-key-0001")
    status, same = http("POST", url, _body("YJS-YLBX"), token, {"Idempotency-Key": "same-key-0001"})
    assert status == 200 and same["id"] == first["id"]
    status, conflict = http(
        "POST", url, _body("YJS-SBZR"), token, {"Idempotency-Key": "same-key-0001"}
    )
    assert status == 409 and conflict["code"] == "IDEMPOTENCY_CONFLICT"
    # a window of another hall does not see this hall's case
    other = deployment.xgw(
        "tokens",
        "create",
        "--role",
        "window",
        "--name",
        "window-2",
        "--hall",
        "张湾街道便民服务中心",
    ).strip()
    assert http("GET", f"{url}/{first['id']}", token=other)[0] == 404
    # ... not even through a conditional request
    assert (
        http("GET", f"{url}/{first['id']}", token=other, headers={"If-None-Match": "*"})[0] == 404
    )
    assert http("GET", url, token=other)[1]["items"] == []
    deployment.file("YJS-SBZR")
    status, listing = http("GET", f"{url}?limit=1", token=token)
    assert status == 200 and len(listing["items"]) == 1 and listing["next"]
    status, page = http("GET", f"{url}?limit=1&cursor={listing['next']}", token=token)
    assert status == 200 and page["items"][0]["id"] != listing["items"][0]["id"]
    rejected = deployment.xgw("audit", "show", "--event", "request.rejected", "--limit", "1000")
    assert rejected.count("request.rejected") >= len(cases)
    assert "BODY_TOO_LARGE" in rejected and "METHOD_NOT_ALLOWED" in rejected  # aiohttp's own


@pytest.mark.parametrize(
    "deployment", [{"extra_env": {"XGW_MAX_BODY_BYTES": "65536"}}], indirect=True
)
def test_the_operations_that_read_a_body_are_those_documented_to_refuse_one(
    deployment: Deployment,
) -> None:
    """Both OpenAPI documents list 408 and 413 on exactly the operations that take a body, and
    each of those answers an oversized body 413 BODY_TOO_LARGE (audited), never a 500: a
    client generated from the documents knows what to expect."""
    case = deployment.file("YJS-SBZR")
    auditor = deployment.xgw("tokens", "create", "--role", "auditor", "--name", "auditor-2").strip()
    oversized = b"{" + b" " * 70_000 + b"}"
    tried: list[str] = []
    for document_path in ("/api/v1/openapi.json", "/partner/v1/openapi.json"):
        status, document = http("GET", deployment.url + document_path)
        assert status == 200
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                documented = {"408", "413"} & set(operation["responses"])
                if "requestBody" not in operation:
                    assert not documented, (method, path)
                    continue
                assert documented == {"408", "413"}, (method, path)
                url = deployment.url + path.format(case_id=case["id"], sub_id="any")
                token = None if path.startswith("/partner/") else deployment.token
                if path.startswith("/api/v1/audit/"):
                    token = auditor
                status, body = http(
                    method.upper(),
                    url,
                    raw=oversized,
                    token=token,
                    headers={"Idempotency-Key": f"oversized-{len(tried):04}"},
                )
                assert (status, body["code"]) == (413, "BODY_TOO_LARGE"), (method, path, body)
                tried.append(path)
    assert {
        "/api/v1/cases",
        "/api/v1/cases/{case_id}/sub-matters/{sub_id}/complete",
        "/api/v1/audit/search",
        "/partner/v1/cases",
        "/partner/v1/results",
        "/partner/v1/status",
    } <= set(tried)
    refused = deployment.xgw("audit", "show", "--event", "request.rejected", "--limit", "1000")
    refused += deployment.xgw("audit", "show", "--event", "message.rejected", "--limit", "1000")
    assert refused.count("BODY_TOO_LARGE") == len(tried)


def test_listing_filters_page_through_everything_and_refuse_nonsense(
    deployment: Deployment,
) -> None:
    """A window pages through its cases one at a time with a filter and gets every match,
    however the matches are spread among other cases; a filter or cursor it could not have
    been given is a 400 QUERY_INVALID, never a 500 or a silently empty page."""
    url, token = f"{deployment.url}/api/v1/cases", deployment.token
    filed = []
    for _ in range(3):  # three groups in three seconds (filing times are kept to the second)
        filed += [deployment.file(b) for b in ("YJS-SBZR", "YJS-SBZR", "YJS-YLBX")]
        last = filed[-1]["created"]
        eventually(lambda: _utc_second() > last, "the next second")  # noqa: B023
    filed.sort(key=lambda c: (c["created"], c["id"]))  # the listing's order
    medical = [c["id"] for c in filed if c["bundle"] == "YJS-YLBX"]
    matter = next(c for c in filed if c["bundle"] == "YJS-YLBX")["sub_matters"][0]["matter"]

    def every_page(query: str) -> list[str]:
        ids, cursor = [], None
        while True:
            page_url = f"{url}?{query}&limit=1" + (f"&cursor={cursor}" if cursor else "")
            status, page = http("GET", page_url, token=token)
            assert status == 200, page
            ids += [c["id"] for c in page["items"]]
            cursor = page["next"]
            if cursor is None:
                return ids

    assert every_page(f"matter={matter}") == medical
    assert every_page("bundle=YJS-YLBX") == medical
    since = filed[3]["created"]
    assert every_page(f"from={since}") == [c["id"] for c in filed[3:]]
    assert every_page(f"from={since}&to={filed[6]['created']}") == [c["id"] for c in filed[3:6]]
    for nonsense in (
        "status=finished",
        "from=yesterday",
        "to=2026-13-45",
        "limit=many",
        "limit=0",
        "limit=500",  # not quietly cut to the largest page
        "cursor=zz",
        "cursor=WzFd",  # base64 of [1]
        "cursor=ImEi",  # base64 of "a"
        "cursor=WyJhIiwgMV0=",  # base64 of ["a", 1]
    ):
        status, problem = http("GET", f"{url}?{nonsense}", token=token)
        assert (status, problem["code"]) == (400, "QUERY_INVALID"), (nonsense, problem)


def _body(bundle: str) -> dict[str, object]:
    from mappings.examples import sample_filing

    return sample_filing(bundle)


def test_openapi_is_generated_from_the_models(deployment: Deployment) -> None:
    status, document = http("GET", f"{deployment.url}/api/v1/openapi.json")
    assert status == 200 and document["openapi"] == "3.1.0"
    schemas = document["components"]["schemas"]
    assert {"CaseRequest", "CaseView", "CaseList", "ProblemDetails", "Applicant"} <= set(schemas)
    assert "applicant" in schemas["CaseRequest"]["required"]
    refs = re.findall(
        r'"\$ref": "#/components/schemas/([A-Za-z]+)"', __import__("json").dumps(document)
    )
    assert refs and set(refs) <= set(schemas)
    assert set(document["paths"]) >= {
        "/api/v1/cases",
        "/api/v1/cases/{case_id}",
        "/api/v1/cases/{case_id}/cancel",
    }
    # what the validators enforce, the document says (a client generated from it agrees)
    id_number = re.compile(schemas["Applicant"]["properties"]["id_number"]["pattern"])
    assert id_number.match("11010519491231002X") and not id_number.match("1101051949123100")
    (key,) = document["paths"]["/api/v1/cases"]["post"]["parameters"]
    assert key["required"] and re.fullmatch(key["schema"]["pattern"], "abc-1234")
    assert not re.fullmatch(key["schema"]["pattern"], "short")
    listing = {
        p["name"]: p["schema"] for p in document["paths"]["/api/v1/cases"]["get"]["parameters"]
    }
    assert (listing["limit"]["minimum"], listing["limit"]["maximum"]) == (1, 200)
    assert {"format": "date-time", "type": "string"} in listing["from"]["anyOf"]


def test_partner_accepts_now_and_reports_the_result_later(deployment: Deployment) -> None:
    deployment.faults({"411329": {"async_results": True}})
    transfer = deployment.file("YJS-SBZR")
    claim = deployment.file("YJS-YLBX")
    done = {c["id"]: c for c in deployment.wait([transfer["id"], claim["id"]], timeout=60)}
    transfer = done[transfer["id"]]
    steps = [(s["step"], s["sub_id"]) for s in transfer["timeline"]]
    assert ("accepted_result_pending", "pension_contact_letter") in steps
    # the 信息表 request went out only after the 联系函's result was reported, not on the receipt
    reported = steps.index(("done", "pension_contact_letter"))
    assert reported < steps.index(("queued", "pension_information_form"))
    assert steps.index(("accepted_result_pending", "pension_contact_letter")) < reported
    answer = _sub(transfer, "pension_information_form")["result"]
    assert len(answer["record"]["contributions"]) == 20  # type: ignore[index]
    audit = deployment.xgw("audit", "show", "--event", "result.reported", "--limit", "100")
    assert audit.count("result.reported") == 6
    assert deployment.stats()["411329"]["applied_twice"] == []


def _conditional_get(url: str, token: str, etag: str | None) -> tuple[int, str | None, bytes]:
    status, headers, body = http_exchange(
        "GET", url, token=token, headers={"If-None-Match": etag} if etag else None
    )
    return status, headers.get("ETag"), body


def test_a_window_refreshes_cheaply_with_etags(deployment: Deployment) -> None:
    """A window screen sends If-None-Match: 304 while nothing changed, the case when it did."""
    deployment.faults({"411329": {"down": True}})
    filed = deployment.file("YJS-YLBX")
    url = f"{deployment.url}/api/v1/cases/{filed['id']}"
    status, etag, _ = _conditional_get(url, deployment.token, None)
    assert status == 200 and etag
    for _ in range(50):  # a failed delivery adds a step to the timeline: the tag follows it
        status, newer, body = _conditional_get(url, deployment.token, etag)
        if status == 304:
            assert newer == etag and body == b""
            break
        assert status == 200 and newer != etag
        etag = newer
        time.sleep(0.1)
    else:
        raise AssertionError("the case never stood still")
    status, _ = _cancel(f"{deployment.url}/api/v1/cases", filed["id"], deployment.token)
    assert status == 200
    status, after, body = _conditional_get(url, deployment.token, etag)
    assert status == 200 and after != etag and json.loads(body)["status"] == "cancelled"
    assert _conditional_get(url, deployment.token, after)[0] == 304
    deployment.faults({"411329": {"down": False}})


def test_seals_take_content_keys_wrapped_while_idle(deployment: Deployment) -> None:
    """The first seal to a partner key wraps its own content key and sets the pool going; a
    case filed after an idle moment finds keys wrapped ahead (security.keypool)."""
    first = deployment.file("YJS-YLBX")
    deployment.wait([first["id"]])
    # idle: the pool's thread wraps keys for the partner now
    eventually(lambda: "key_pool.filled" in deployment.gateways[0].log(), "the pool filling")
    second = deployment.file("YJS-YLBX")
    assert deployment.wait([second["id"]])[0]["status"] == "done"
    assert deployment.stats()["411329"]["applied_twice"] == []
    gateway = deployment.gateways[0]
    assert gateway.stop() == 0
    line = next(json.loads(raw) for raw in gateway.log().splitlines() if "key_pool.stopped" in raw)
    assert line["seals_wrapping_their_own"] >= 1
    assert line["seals_with_key_made_ahead"] >= 2  # at least the second case's two requests


@pytest.mark.parametrize("deployment", [{"separate_simulator": True}], indirect=True)
def test_a_restarted_partner_still_knows_what_it_applied(deployment: Deployment) -> None:
    """The simulator applies a message after our attempt timed out, then restarts: our resend
    is answered from its records on disk, not applied again."""
    deployment.configure_partner("411329", timeout_seconds=1, breaker_failures=10)
    deployment.faults({"411329": {"latency_ms": 1500}})
    case_id = deployment.file("YJS-YLBX")["id"]
    eventually(lambda: deployment.stats()["411329"]["applied"] >= 1, "the partner applying it")
    assert deployment.simulator is not None
    deployment.simulator.kill()
    deployment.simulator.start()  # no faults now, and nothing in its memory
    deployment.wait([case_id], timeout=60)
    stats = deployment.stats()["411329"]
    assert stats["duplicates_answered"] >= 1  # from its records: its memory was new
    assert stats["applied_twice"] == [] and stats["applied"] == stats["messages"] == 2


@pytest.mark.parametrize(
    "deployment",
    [{"extra_env": {"XGW_RESULT_QUERY_AFTER_SECONDS": "0.2", "XGW_RESULT_OVERDUE_SECONDS": "1"}}],
    indirect=True,
)
def test_results_not_reported_are_asked_for_and_overdue_ones_flagged(
    deployment: Deployment,
) -> None:
    """新野 accepts as pending, but its ReportResult never leaves: we ask for the result (a
    query through the outbox) and the case completes. Where no result ever comes, the case
    needs attention (RESULT_OVERDUE, an alert line) until a late report settles it."""
    deployment.faults({"411329": {"async_results": True, "lose_reports": True}})
    lost = deployment.file("YJS-YLBX")["id"]
    done = deployment.wait([lost], timeout=60)[0]
    steps = [s["step"] for s in done["timeline"]]
    assert "accepted_result_pending" in steps and steps.count("done") == 2
    assert "result.queried" in deployment.xgw("audit", "show", "--case", lost, "--limit", "100")
    assert deployment.stats()["411329"]["results"] == {}  # no report ever reached us

    deployment.faults({"411329": {"async_results": True, "never_decide": True}})
    waiting = deployment.file("YJS-YLBX")["id"]
    flagged = deployment.wait([waiting], statuses=("attention",), timeout=60)[0]
    sub = _sub(flagged, "registration")
    assert (sub["status"], sub["error_code"]) == ("awaiting_result", "RESULT_OVERDUE")
    assert re.search(r'"event":"case.result_overdue"', deployment.gateways[0].log())
    ours = next(s["detail"]["message_id"] for s in flagged["timeline"] if s["step"] == "queued")
    from tests.partner_helpers import Partner

    report = Partner(deployment.data).seal(
        {"status": "accepted", "result": {"slbh": "late", "blzt": "已办结"}},
        kind="result",
        idem_key=ours,
    )
    deployment.faults({"411329": {}})  # what comes next is answered at once
    status, _ = http("POST", f"{deployment.url}/partner/v1/results", raw=report.to_json())
    assert status == 200
    assert deployment.wait([waiting], timeout=60)[0]["status"] == "done"


@pytest.mark.parametrize("deployment", [{"separate_simulator": True}], indirect=True)
def test_sigterm_starts_no_new_send(deployment: Deployment) -> None:
    """新野 takes one request at a time and is slow: on SIGTERM the one on the wire may finish
    within the grace, but the ones waiting for their turn are not sent then (they would only
    be cut at the deadline); the restarted gateway sends them."""
    deployment.configure_partner("411329", restart=False, max_concurrency=1, timeout_seconds=5)
    deployment.gateways.pop().stop()
    gateway = deployment.add_gateway(XGW_SHUTDOWN_GRACE_SECONDS="4")
    deployment.faults({"*": {"latency_ms": 1500}})
    ids = [deployment.file("YJS-YLBX", url=gateway.url)["id"] for _ in range(3)]
    _on_the_wire(deployment, 1)
    assert gateway.stop() == 0
    eventually(lambda: deployment.stats()["411329"]["in_flight"] == 0, "the partner idle")
    assert deployment.stats()["411329"]["applied"] == 1  # only the one already on the wire
    deployment.faults({"*": {"latency_ms": 0}})
    deployment.gateways.remove(gateway)
    deployment.add_gateway()
    deployment.wait(ids, timeout=60)
    assert deployment.stats()["411329"]["applied_twice"] == []

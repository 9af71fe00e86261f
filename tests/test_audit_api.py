"""The auditors' API over real HTTP: queries, person lookup by keyed hash, evidence packages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from gateway.audit.verify import verify_package
from gateway.http.auditors import AuditPage
from security.backend import get_backend
from tests.harness import Deployment, http


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deployed = Deployment(tmp_path)
    try:
        yield deployed
    finally:
        deployed.close()


def test_auditor_queries_and_exports_evidence(deployment: Deployment) -> None:
    case = deployment.file("YJS-YLBX")
    deployment.wait([case["id"]])
    auditor = deployment.xgw("tokens", "create", "--role", "auditor", "--name", "auditor-1").strip()
    base = f"{deployment.url}/api/v1/audit"
    status, page = http("GET", f"{base}/entries?case_id={case['id']}&limit=2", token=auditor)
    assert status == 200 and len(page["items"]) == 2 and page["next"]
    seen = list(page["items"])
    while page["next"]:
        status, page = http(
            "GET",
            f"{base}/entries?case_id={case['id']}&limit=2&cursor={page['next']}",
            token=auditor,
        )
        seen += page["items"]
    events = [e["event"] for e in seen]
    assert events.count("message.queued") == 2 and events.count("message.delivered") == 2
    assert all(e["case_id"] == case["id"] for e in seen)
    # 医保 goes to 新野 over REST, on XGW-ENV/2: the log keeps the envelope as it was sealed
    assert {e["envelope"]["v"] for e in seen if e["event"] == "message.queued"} == {"XGW-ENV/2"}
    status, page = http(
        "GET", f"{base}/entries?partner=411329&outcome=accepted&limit=100", token=auditor
    )
    assert status == 200 and {e["outcome"] for e in page["items"]} == {"accepted"}
    # the API's OpenAPI document describes these paths, with the model that checks the query
    # and the one the page has
    status, document = http("GET", f"{deployment.url}/api/v1/openapi.json")
    entries = document["paths"]["/api/v1/audit/entries"]["get"]
    documented = {p["name"] for p in entries["parameters"]}
    assert {"case_id", "partner", "outcome", "from", "to", "limit", "cursor"} <= documented
    assert "person_id" not in documented  # never in a URL
    assert "/api/v1/audit/search" in document["paths"]
    AuditPage.model_validate(page)
    assert set(document["components"]["schemas"]["AuditPage"]["properties"]) == set(page)
    # by person: the 身份证号 goes in a POST body and is hashed with the audit key
    status, found = http("POST", f"{base}/search", {"person_id": "411329196001200033"}, auditor)
    assert status == 200 and "case.filed" in [e["event"] for e in found["items"]]
    assert {e["case_id"] for e in found["items"]} == {case["id"]}
    assert "411329196001200033" not in str(found)
    # null is "no bound" for the times too, as the document says of every optional field
    status, unbounded = http("POST", f"{base}/search", {"from": None, "to": None}, auditor)
    assert status == 200 and unbounded["items"]
    search_schema = document["components"]["schemas"]["AuditSearch"]["properties"]
    assert all({"type": "null"} in search_schema[k]["anyOf"] for k in ("from", "to", "case_id"))
    assert http("GET", f"{base}/entries?person_id=411329196001200033", token=auditor)[0] == 400
    # wrong role
    assert http("GET", f"{base}/entries", token=deployment.token)[1]["code"] == "FORBIDDEN"
    # the evidence package verifies offline
    status, package = http("GET", f"{base}/cases/{case['id']}/evidence", token=auditor)
    assert status == 200 and package["format"] == "XGW-EVIDENCE/1"
    assert len(package["entries"]) >= 5
    findings = [f for f in verify_package(package, get_backend("native")) if f.fatal]
    unsigned = [f for f in findings if f.kind == "unsigned-tail"]
    assert findings == unsigned  # only entries not yet covered by a checkpoint may be unproven
    deployment.xgw("audit", "checkpoint")
    status, package = http("GET", f"{base}/cases/{case['id']}/evidence", token=auditor)
    assert [f for f in verify_package(package, get_backend("native")) if f.fatal] == []
    assert http("GET", f"{base}/cases/no-such-case/evidence", token=auditor)[0] == 404
    # an archive file damaged on its shelf: a clear refusal naming it, not a package that
    # silently lacks the entries it held
    assert "archived to" in deployment.xgw("audit", "archive", "--older-than-days", "0")
    (archived,) = (deployment.data / "audit-archive").glob("*.jsonl")
    archived.write_bytes(archived.read_bytes().replace(b'"seq":', b'"seq":"', 1))
    status, problem = http("GET", f"{base}/cases/{case['id']}/evidence", token=auditor)
    assert (status, problem["code"]) == (500, "LOG_DAMAGED"), problem
    assert archived.name in problem["detail"] and "Traceback" not in str(problem)


def test_time_filters_and_nonsense_queries(deployment: Deployment) -> None:
    """Times given as a date, a UTC time or a time with an offset select the same entries as
    the log's own millisecond times say; a query that makes no sense is a 400 naming each
    problem, never a 500 or a silently empty page."""
    case = deployment.file("YJS-YLBX")
    deployment.wait([case["id"]])
    auditor = deployment.xgw("tokens", "create", "--role", "auditor", "--name", "auditor-2").strip()
    base = f"{deployment.url}/api/v1/audit/entries"
    status, page = http("GET", f"{base}?case_id={case['id']}&limit=100", token=auditor)
    entries = page["items"]
    first, last = entries[0]["time"], entries[-1]["time"]  # e.g. 2026-11-28T12:00:00.123456Z
    whole_second = first[:19] + "Z"  # the second the case was filed in, from its start
    day = first[:10]
    beijing = (datetime.fromisoformat(first[:19]) + timedelta(hours=8)).isoformat() + "+08:00"
    for start in (day, whole_second, beijing):
        status, page = http(
            "GET", f"{base}?case_id={case['id']}&from={quote(start)}&limit=100", token=auditor
        )
        assert status == 200 and len(page["items"]) == len(entries), start
    status, page = http("GET", f"{base}?case_id={case['id']}&to={whole_second}", token=auditor)
    assert status == 200 and page["items"] == []  # all of them are after that second began
    assert last >= first
    for nonsense in (
        "from=yesterday",
        "to=2026-99-99",
        "limit=lots",
        "limit=0",
        "cursor=zz",
        "cursor=WzFd",  # base64 of [1]
        "cursor=ImEi",  # base64 of "a"
        "seq_from=3",  # not a filter this API has
    ):
        status, problem = http("GET", f"{base}?{nonsense}", token=auditor)
        assert (status, problem["code"]) == (400, "QUERY_INVALID"), (nonsense, problem)
        assert problem["errors"], problem  # each problem named

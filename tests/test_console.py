"""The console in a real browser: Playwright driving Debian's chromium (headless) against the
gateway and the simulator as real processes — a clerk files a 社保转入 and watches it reach
done, mistakes are shown at once in Chinese, a double submit files once, another hall cannot
open the case, an auditor finds it by 公民身份号码 and downloads its evidence, verification
turns red on a changed byte. With XGW_CONSOLE_SCREENSHOTS=docs/console the pages are saved
there (the README shows two)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mappings.examples import bundle_form, sample_filing
from tests.conftest import IN_CI
from tests.harness import Deployment, http

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root on a closed network: no sandbox (no user namespaces), nothing fetched in the background.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
HALL = "襄州区政务服务中心"
SHOTS = os.environ.get("XGW_CONSOLE_SCREENSHOTS")

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not IN_CI,
    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)",
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    # a request body of 1 MiB at most: the console's files must not be bound by it
    deployed = Deployment(
        tmp_path_factory.mktemp("console"),
        protocol="mixed",
        extra_env={"XGW_MAX_BODY_BYTES": str(1024 * 1024)},
    )
    try:
        yield deployed
    finally:
        deployed.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def _token(deployment: Deployment, role: str, name: str, hall: str | None = None) -> str:
    args = ["tokens", "create", "--role", role, "--name", name]
    return deployment.xgw(*args, *(["--hall", hall] if hall else [])).strip().splitlines()[-1]


def _signed_in(browser: Any, deployment: Deployment, token: str) -> Any:
    context = browser.new_context(locale="zh-CN", accept_downloads=True)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the clerk confirms what they asked for
    page.goto(f"{deployment.url}/console/")
    assert page.url.endswith("/console/login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    return page


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def _flat(form: dict[str, Any], prefix: str = "") -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in form.items():
        if isinstance(value, dict):
            found |= _flat(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            for n, row in enumerate(value):
                found |= _flat(row, f"{prefix}{key}.{n}.")
        else:
            found[f"{prefix}{key}"] = str(value)
    return found


def _fill_filing(page: Any, bundle: str) -> None:
    """The SAMPLE form of a bundle, and the 电子证照 standing in for its required materials."""
    filing = sample_filing(bundle)
    _fill(page, filing["form"])
    for licence in filing["licences"]:
        page.fill(f'[name="licence.{licence["material"]}"]', licence["identifier"])


def _fill(page: Any, form: dict[str, Any]) -> None:
    for name, value in _flat(form).items():
        field = page.locator(f'[name="{name}"]')
        if field.count() == 0:
            continue  # a value the form does not ask for (derived by the mapping data)
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


def test_a_clerk_files_a_transfer_and_watches_it_reach_done(
    deployment: Deployment, browser: Any
) -> None:
    page = _signed_in(browser, deployment, _token(deployment, "window", "clerk-1", HALL))
    assert page.url.endswith("/console/cases")
    assert page.locator("h1").inner_text().startswith("今日案件")
    _shot(page, "hall")
    page.click("text=受理新件")
    page.click("text=社保转入一件事")
    assert page.locator("legend", has_text="申请人").count() == 1
    _fill_filing(page, "YJS-SBZR")
    _shot(page, "form")
    page.click("button:has-text('提交受理')")
    page.wait_for_url("**/console/cases/420607-*")
    case_id = page.locator("#case-id").inner_text()
    # the page refreshes itself (ETag polling) until the case is done
    page.wait_for_selector("#case-status:has-text('已办结')", timeout=60_000)
    assert page.locator("[data-sub]").count() == 4
    assert page.locator("text=对方答复").count() >= 1  # partners' answers, mapped back
    assert page.locator("table.rows-of tbody tr").count() >= 20  # the 信息表's yearly rows
    person = bundle_form("YJS-SBZR")["applicant"]["id_number"]
    assert person not in page.content()  # the answers' personal fields masked
    assert f"{person[:3]}***********{person[-4:]}" in page.inner_text("table.subs")
    _shot(page, "case")
    # on the page's own clock: a tab in the background asks nothing however long it waits;
    # shown again, it asks at once rather than at its next round
    watched = page.context.new_page()
    watched.add_init_script(
        "Object.defineProperty(document, 'hidden', {value: true, configurable: true})"
    )
    watched.clock.install()
    asked: list[str] = []
    watched.on("request", lambda r: asked.append(r.url) if r.url.endswith("/live") else None)
    watched.goto(f"{deployment.url}/console/cases/{case_id}")
    watched.clock.run_for(20_000)  # ten rounds' time, hidden
    assert asked == []
    with watched.expect_request(lambda r: r.url.endswith("/live"), timeout=1000):
        watched.evaluate(
            "Object.defineProperty(document, 'hidden', {value: false, configurable: true});"
            "document.dispatchEvent(new Event('visibilitychange'))"
        )
    assert len(asked) == 1
    watched.close()
    receipt = page.context.new_page()
    receipt.goto(f"{deployment.url}/console/cases/{case_id}/receipt")
    assert case_id in receipt.inner_text("article")
    assert "411329198506150034" not in receipt.content()  # no personal data on the 回执
    _shot(receipt, "receipt")
    # the console's pages allow scripts and styles from the gateway only
    status, _body, headers = _get(deployment, f"/console/cases/{case_id}", page)
    assert status == 200 and "script-src 'self'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"


def _get(deployment: Deployment, path: str, page: Any) -> tuple[int, str, dict[str, str]]:
    response = page.request.get(f"{deployment.url}{path}")
    return response.status, response.text(), response.headers


def test_a_form_with_four_mistakes_shows_all_four_in_chinese_and_files_nothing(
    deployment: Deployment, browser: Any
) -> None:
    page = _signed_in(browser, deployment, _token(deployment, "window", "clerk-2", HALL))
    before = _case_count(deployment)
    page.goto(f"{deployment.url}/console/new/bundle/YJS-SBZR")
    form = bundle_form("YJS-SBZR")
    form["applicant"]["id_number"] = "411329198506150035"  # wrong check digit
    form["applicant"]["name"] = ""  # required
    form["transfer"]["in_region"] = "999999"  # no such region
    _fill(page, form)  # and neither the 居民身份证 nor its 电子证照
    page.click("button:has-text('提交受理')")
    page.wait_for_selector(".problem.summary")
    problems = {
        p.get_attribute("data-field"): p.inner_text() for p in page.locator("span.problem").all()
    }
    assert problems["applicant.id_number"] == "公民身份号码校验位不正确", problems
    assert problems["applicant.name"] == "必填"
    assert problems["transfer.in_region"] == "不是有效的行政区划代码"
    assert problems["materials.id-card"] == "缺少必需材料：居民身份证（或其电子证照）"
    assert "4 处需要修改" in page.inner_text(".problem.summary")
    # what was typed stays, so the clerk corrects rather than retypes
    assert page.input_value('[name="applicant.phone"]') == form["applicant"]["phone"]
    _shot(page, "form-problems")
    assert _case_count(deployment) == before


def _case_count(deployment: Deployment) -> int:
    status, listing = http(
        "GET", f"{deployment.url}/api/v1/cases?limit=200", token=deployment.token
    )
    assert status == 200
    return len(listing["items"])


def test_a_double_submit_files_once(deployment: Deployment, browser: Any) -> None:
    page = _signed_in(browser, deployment, _token(deployment, "window", "clerk-3", HALL))
    before = _case_count(deployment)
    page.goto(f"{deployment.url}/console/new/bundle/YJS-YLBX")
    _fill(page, bundle_form("YJS-YLBX"))
    # the invoices as a scan chosen in the browser (the name says .pdf; its content decides),
    # larger than any other request body may be: read as it arrives, into the store
    scan = b"%PDF-1.7\n% SAMPLE invoice scan\n" + bytes(1_500_000) + b"%%EOF\n"
    page.set_input_files(
        '[name="material.invoices"]',
        files=[{"name": "发票.pdf", "mimeType": "application/pdf", "buffer": scan}],
    )
    button = page.locator("button:has-text('提交受理')")
    button.dblclick()
    page.wait_for_url("**/console/cases/420607-*")
    assert _case_count(deployment) == before + 1
    case_id = page.locator("#case-id").inner_text()
    page.wait_for_selector("#case-status:has-text('已办结')", timeout=60_000)
    # the case page lists what was given: the scan, its type by content and its size
    invoices = page.locator('[data-material="invoices"]').inner_text()
    assert "医疗费用发票" in invoices and "PDF" in invoices and f"{len(scan):,}" in invoices
    stats = http("GET", f"{deployment.sim_url}/_sim/stats")[1]["411329"]
    assert stats["materials"].get("invoices", 0) >= 1, stats  # opened by the partner
    # the second submit's upload was not kept: one stored copy, the case's
    with sqlite3.connect(deployment.data / "gateway.sqlite3") as db:
        kept = db.execute(
            "SELECT case_id FROM material WHERE code = 'invoices' AND kind = 'pdf'"
        ).fetchall()
    assert kept == [(case_id,)]


def test_a_window_of_another_hall_cannot_open_the_case(
    deployment: Deployment, browser: Any
) -> None:
    page = _signed_in(browser, deployment, _token(deployment, "window", "clerk-4", HALL))
    page.goto(f"{deployment.url}/console/new/bundle/YJS-YLBX")
    _fill_filing(page, "YJS-YLBX")
    page.click("button:has-text('提交受理')")
    page.wait_for_url("**/console/cases/420607-*")
    case_id = page.locator("#case-id").inner_text()
    other = _signed_in(browser, deployment, _token(deployment, "window", "other-1", "另一大厅"))
    response = other.goto(f"{deployment.url}/console/cases/{case_id}")
    assert response.status == 404 and "没有这个案件" in other.inner_text("main")
    assert other.request.get(f"{deployment.url}/console/cases/{case_id}/live").status == 404
    # nor can it search its way there
    other.goto(f"{deployment.url}/console/cases")
    other.fill("input[name=q]", case_id)
    other.click("button:has-text('查找')")
    assert "没有找到" in other.inner_text("main")
    # an auditor's session is not a window's
    auditor = _signed_in(browser, deployment, _token(deployment, "auditor", "auditor-0"))
    assert auditor.goto(f"{deployment.url}/console/cases/{case_id}").status == 403


def test_an_auditor_finds_the_case_by_person_and_downloads_its_evidence(
    deployment: Deployment, browser: Any
) -> None:
    clerk = _signed_in(browser, deployment, _token(deployment, "window", "clerk-5", HALL))
    clerk.goto(f"{deployment.url}/console/new/bundle/YJS-SBZR")
    _fill_filing(clerk, "YJS-SBZR")
    clerk.click("button:has-text('提交受理')")
    clerk.wait_for_url("**/console/cases/420607-*")
    case_id = clerk.locator("#case-id").inner_text()
    deployment.xgw("audit", "checkpoint")  # the filing's entries signed now, not in a while
    page = _signed_in(browser, deployment, _token(deployment, "auditor", "auditor-1"))
    assert page.url.endswith("/console/audit")
    person = bundle_form("YJS-SBZR")["applicant"]["id_number"]
    page.fill("input[name=person_id]", person)
    page.click("button:has-text('查询')")
    assert person not in page.url  # posted, never in the URL
    assert page.locator("table.entries tbody tr:not(.detail)").count() >= 1
    assert case_id in page.inner_text("table.entries")
    page.fill("input[name=person_id]", "")
    page.fill("input[name=case_id]", case_id)
    page.click("button:has-text('查询')")
    page.locator("details summary").first.click()
    detail = page.inner_text("table.entries tr.detail >> nth=0")
    assert '"case_prev"' in detail  # an entry's detail: its body, and its standing
    assert "与链上散列一致" in detail and "签名有效" in detail and "在其默克尔根中" in detail
    assert page.locator("table.entries .badge.ok").count() >= 1
    _shot(page, "audit")
    with page.expect_download() as download:
        page.click("#evidence")
    package = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert package["case_id"] == case_id and package["entries"]
    page.goto(f"{deployment.url}/console/audit/plots")
    assert page.locator("svg.plot").count() == 3
    assert "411329" in page.inner_text("main")  # the partner these cases went to
    _shot(page, "plots")
    # who looked at whose data is itself on record
    shown = deployment.xgw("audit", "show", "--event", "console.entries_viewed")
    assert "auditor-1" in shown
    assert "console.evidence_exported" in deployment.xgw(
        "audit", "show", "--case", case_id, "--limit", "100"
    )
    # an entry overwritten in the store is listed, marked; a damaged archive file stops the
    # evidence download with a page saying why (never a package missing that file's entries)
    import sqlite3

    with sqlite3.connect(deployment.data / "audit.sqlite3") as db:
        db.execute(
            "UPDATE audit_entry SET body = X'00' WHERE seq = (SELECT MIN(seq) FROM audit_entry "
            "WHERE case_id = ?)",
            (case_id,),
        )
    page.goto(f"{deployment.url}/console/audit")
    page.fill("input[name=case_id]", case_id)
    page.click("button:has-text('查询')")
    assert page.locator("table.entries strong.bad:has-text('条目已被改动')").count() == 1
    assert "archived to" in deployment.xgw("audit", "archive", "--older-than-days", "0")
    (archived,) = (deployment.data / "audit-archive").glob("*.jsonl")
    archived.write_bytes(archived.read_bytes().replace(b'"seq":', b'"seq":"', 1))
    with page.expect_navigation():
        page.click("#evidence")
    assert "交换日志已损坏" in page.inner_text("main") and archived.name in page.inner_text("main")


def test_a_refused_sub_matter_is_sent_again_a_local_one_completed_and_done_cases_kept(
    deployment: Deployment, browser: Any
) -> None:
    page = _signed_in(browser, deployment, _token(deployment, "window", "clerk-7", HALL))
    deployment.faults({"411329": {"reject_matters": ["XY-YB-001"]}})  # 备案 refused (SAMPLE)
    try:
        page.goto(f"{deployment.url}/console/new/bundle/YJS-YLBX")
        _fill_filing(page, "YJS-YLBX")
        page.click("button:has-text('提交受理')")
        page.wait_for_url("**/console/cases/420607-*")
        page.wait_for_selector("[data-sub=registration]:has-text('未办成')", timeout=30_000)
        assert "PARTNER_REJECTED" in page.inner_text("table.subs")
    finally:
        deployment.faults({"411329": {}})  # no faults again
    with page.expect_navigation():  # the partner takes it now: sent again (confirmed)
        page.click("button:has-text('重新发送')")
    page.wait_for_selector("#case-status:has-text('已办结')", timeout=30_000)
    # a done case offers no cancel; asked anyway, the refusal is shown with its reason
    assert page.locator("button:has-text('撤销案件')").count() == 0
    csrf = page.locator("input[name=_csrf]").first.get_attribute("value")
    case_id = page.locator("#case-id").inner_text()
    refused = page.request.post(
        f"{deployment.url}/console/cases/{case_id}/cancel", form={"_csrf": csrf or ""}
    )
    assert refused.status == 409 and "未能完成" in refused.text()
    # 户口迁移: the 迁入 approval is ours, completed at the window; then the 迁出 goes out
    page.goto(f"{deployment.url}/console/new/bundle/YJS-HKQY")
    _fill_filing(page, "YJS-HKQY")
    page.click("button:has-text('提交受理')")
    page.wait_for_url("**/console/cases/420607-*")
    row = page.locator("tr", has=page.locator("[data-sub=move_in_approval]"))
    row.locator("input[name=note]").fill("SAMPLE 准予迁入")
    with page.expect_navigation():
        row.locator("button:has-text('本地办结')").click()
    page.wait_for_selector("#case-status:has-text('已办结')", timeout=30_000)


def test_verification_turns_red_and_names_the_entry_after_a_changed_byte(
    deployment: Deployment, browser: Any
) -> None:
    page = _signed_in(browser, deployment, _token(deployment, "auditor", "auditor-2"))
    page.goto(f"{deployment.url}/console/audit/verify")
    page.click("button:has-text('开始校验')")
    page.wait_for_selector(".verdict.ok", timeout=60_000)
    assert "校验通过" in page.inner_text("#verify-result")
    bar = page.locator("#verify-progress")  # streamed progress, ending full
    assert int(bar.get_attribute("max") or 0) > 1
    assert bar.evaluate("b => b.value === b.max")
    _shot(page, "verify-ok")
    with sqlite3.connect(deployment.data / "audit.sqlite3") as db:  # its sign-in's entry
        seq = db.execute("SELECT MIN(seq) FROM audit_entry WHERE actor = 'auditor-2'").fetchone()[0]
        changed = db.execute(
            "UPDATE audit_entry SET body = CAST(replace(CAST(body AS TEXT), 'auditor-2', "
            "'auditor-9') AS BLOB) WHERE seq = ? AND node = 'xiangzhou-gw-1'",
            (seq,),
        ).rowcount
    assert changed == 1, seq
    page.click("button:has-text('开始校验')")
    page.wait_for_selector(".verdict.bad", timeout=60_000)
    findings = page.inner_text("#verify-findings")
    assert f"modified: xiangzhou-gw-1 seq {seq}" in findings, findings
    _shot(page, "verify-bad")


def test_admins_see_partners_and_make_tokens_shown_once(
    deployment: Deployment, browser: Any
) -> None:
    page = _signed_in(browser, deployment, _token(deployment, "admin", "admin-1"))
    assert page.url.endswith("/console/admin")
    assert page.locator("text=411329").count() >= 1
    page.fill("input[name=name]", "clerk-new")
    page.select_option("select[name=role]", "window")
    page.fill("input[name=hall]", HALL)
    page.click("button:has-text('创建令牌')")
    token = page.inner_text("#new-token")
    assert token.startswith("xgw_")
    _shot(page, "admin")
    page.goto(f"{deployment.url}/console/admin")
    assert page.locator("#new-token").count() == 0  # shown once
    fresh = _signed_in(browser, deployment, token)
    assert fresh.url.endswith("/console/cases")
    with page.expect_navigation():
        page.locator("tr", has_text="clerk-new").locator("button:has-text('吊销')").click()
    assert "已吊销" in page.locator("tr", has_text="clerk-new").inner_text()
    fresh.reload()  # its session ends with its token
    assert fresh.url.endswith("/console/login")


def test_forms_without_the_sessions_csrf_secret_are_refused(
    deployment: Deployment, browser: Any
) -> None:
    page = _signed_in(browser, deployment, _token(deployment, "window", "clerk-6", HALL))
    answer = page.request.post(
        f"{deployment.url}/console/new/bundle/YJS-YLBX",
        form={"_csrf": "forged", "insured.name": "x"},
    )
    assert answer.status == 403 and "页面已过期" in answer.text()
    # a body that is not a form: a page saying so, on record, never a 500 or a trace
    csrf = page.locator("input[name=_csrf]").first.get_attribute("value") or ""
    for path in ("/console/login", "/console/cases/search"):
        broken = page.request.post(
            f"{deployment.url}{path}",
            data=b"--zz\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n" + csrf.encode()
            + b"\r\n--zz\r\nContent-Disposition: garbage\xff\r\n\r\n\x00",
            headers={"Content-Type": "multipart/form-data; boundary=zz"},
        )  # fmt: skip
        assert broken.status == 400, (path, broken.status, broken.text()[:300])
        assert "无法读取提交的表单" in broken.text() and "Traceback" not in broken.text()
    refused = deployment.xgw("audit", "show", "--event", "console.request_refused")
    assert "HTTP_400" in refused

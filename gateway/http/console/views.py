"""The console's pages: a thin shell. Each handler checks the session and its role on the
server, asks the services (the same as the APIs'), and renders a template; every form carries
the session's CSRF secret; personal data goes in POST bodies, never in a URL; every view of a
case's or a person's entries is itself an entry in the exchange log."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from aiohttp import BodyPartReader, MultipartReader, web
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from gateway.audit.log import AuditEvent, AuditLog, AuditWriter, LogDamaged
from gateway.audit.verify import KnownKey, entry_standing, export_case, verify_log
from gateway.core.problems import GatewayError
from gateway.http.console import forms, plots, sessions
from gateway.http.console.sessions import Session
from gateway.http.multipart import READ_ERRORS, part_bytes, part_pieces
from gateway.http.windows import MATERIAL_LIMITS, MAX_FORM_BYTES
from gateway.logs import get_logger, masked_for_display
from gateway.services.cases import CaseService, Filing, request_hash
from gateway.services.materials import take_upload
from gateway.storage import AlreadyThere, CaseRow, MaterialRecord, Store
from gateway.storage.records import token_hash
from mappings import identifiers
from mappings.catalogue import Bundle
from mappings.materials import GivenLicence
from mappings.registry import Registry
from security.backend import CryptoBackend

HERE = Path(__file__).resolve().parent
log = get_logger("gateway.console")
# A long log is verified in this many processes beside the gateway: half the CPUs, so that the
# node keeps serving while an auditor verifies.
VERIFY_WORKERS = max(1, (os.cpu_count() or 1) // 2)
CHINA = timezone(timedelta(hours=8))  # the windows' day (Asia/Shanghai has no DST)
STATUS_NAMES = {
    "in_progress": "办理中", "done": "已办结", "attention": "需处理", "cancelled": "已撤销",
    "waiting": "等待前序", "queued": "已发往对方", "awaiting_result": "等待结果",
    "failed": "未办成", "local": "待本地办结",
}  # fmt: skip
STEP_NAMES = {
    "filed": "受理", "queued": "发往对方", "done": "办结", "rejected_by_partner": "对方退回",
    "retry_requested": "申请重发", "awaiting_local_office": "待本地办理", "done_locally": "本地办结",
    "cancelled": "撤销", "replayed": "重新投递", "result_overdue": "结果逾期",
}  # fmt: skip
ROLE_HOMES = {"window": "/console/cases", "auditor": "/console/audit", "admin": "/console/admin"}
CASE_ID = re.compile(r"^[A-Za-z0-9._-]{1,96}$")
SUB_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC: tuple[str, ...] = ()
WINDOWS, AUDITORS, ADMINS = ("window", "admin"), ("auditor", "admin"), ("admin",)
# (method, path, handler, roles): the console's pages, registered by the app at build time.
ROUTES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("GET", "/console", "home", PUBLIC),
    ("GET", "/console/", "home", PUBLIC),
    ("GET", "/console/login", "login_page", PUBLIC),
    ("POST", "/console/login", "login", PUBLIC),
    ("POST", "/console/logout", "logout", WINDOWS + AUDITORS),
    ("GET", "/console/cases", "hall", WINDOWS),
    ("POST", "/console/cases/search", "search_cases", WINDOWS),
    ("GET", "/console/new", "choose", WINDOWS),
    ("GET", "/console/new/{kind:bundle|matter}/{code}", "form", WINDOWS),
    ("POST", "/console/new/{kind:bundle|matter}/{code}", "file", WINDOWS),
    ("GET", "/console/cases/{case_id}", "case", WINDOWS),
    ("GET", "/console/cases/{case_id}/live", "live", WINDOWS),
    ("GET", "/console/cases/{case_id}/receipt", "receipt", WINDOWS),
    ("POST", "/console/cases/{case_id}/{action:cancel|retry|complete}", "act", WINDOWS),
    ("GET", "/console/audit", "audit_page", AUDITORS),
    ("POST", "/console/audit", "audit_search", AUDITORS),
    ("POST", "/console/audit/evidence", "evidence", AUDITORS),
    ("GET", "/console/audit/verify", "verify_page", AUDITORS),
    ("GET", "/console/audit/plots", "plots", AUDITORS),
    ("POST", "/console/audit/verify", "verify_start", AUDITORS),
    ("GET", "/console/admin", "admin", ADMINS),
    ("POST", "/console/admin/tokens", "token_create", ADMINS),
    ("POST", "/console/admin/tokens/revoke", "token_revoke", ADMINS),
    ("POST", "/console/admin/replay", "replay", ADMINS),
)
# Pages whose form carries files: read part by part as it arrives (the CSRF secret first, then
# each file streamed into the store), never whole, so their size is the materials' limits'.
STREAMED_FORMS = frozenset({"file"})
STATIC = HERE / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class Redirect(Exception):
    def __init__(self, location: str) -> None:
        self.location = location


class Refused(Exception):
    """A request the console answers with a page saying why (and its status)."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


class Missing(Refused):
    def __init__(self, message: str = "没有这个页面。") -> None:
        super().__init__(404, message)


async def _first_csrf(reader: MultipartReader) -> str | None:
    """The CSRF secret a streamed form sends first (the page's first hidden field)."""
    try:
        part = await reader.next()
        if not isinstance(part, BodyPartReader) or part.name != "_csrf":
            return None
        return (await part_bytes(part, 256)).decode("ascii")
    except (GatewayError, *READ_ERRORS):
        return None


async def read_form(request: web.Request) -> Any:
    """The posted form, or a refusal a person can read: a body too large, or one that is not
    a form (a broken multipart, bytes that are not text) — never a 500."""
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise Refused(413, "提交的内容过大。") from None
    except (ValueError, UnicodeDecodeError, AssertionError):  # what aiohttp's parsers raise
        raise Refused(400, "无法读取提交的表单，请重新打开页面后再提交。") from None


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


class Console:
    def __init__(
        self,
        store: Store,
        cases: CaseService,
        audit: AuditWriter,
        registry: Registry,
        region: str,
        session_key: bytes,
        idle_seconds: float,
        keys: list[KnownKey],
        witness_keys: list[KnownKey],
        archive_dir: Path,
        health: Callable[[], Awaitable[list[dict[str, Any]]]],
        secure_cookie: bool,
        backend: CryptoBackend,
    ) -> None:
        self.store, self.cases, self.audit, self.registry = store, cases, audit, registry
        self.region, self.key, self.idle = region, session_key, idle_seconds
        self.keys, self.witness_keys, self.archive_dir = keys, witness_keys, archive_dir
        self.health, self.secure, self.backend = health, secure_cookie, backend
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # templates are package data: no stat of the file per page
        )
        self.templates.globals.update(
            status_name=lambda s: STATUS_NAMES.get(s, s),
            step_name=lambda s: STEP_NAMES.get(s, s),
            matter_name=self._matter_name,
        )
        self.templates.filters["time"] = beijing_time
        self.templates.filters["masked"] = masked_for_display
        self.templates.filters["accept"] = forms.accept
        # an entry as auditors read it: Chinese as it is, escaped by the template like any text
        self.templates.filters["pretty"] = lambda value: json.dumps(
            value, ensure_ascii=False, indent=2, sort_keys=True
        )

    # -- the shell: sessions, roles, pages ---------------------------------------------------

    async def dispatch(
        self, request: web.Request, name: str, roles: tuple[str, ...]
    ) -> web.StreamResponse:
        """A route of ``ROUTES``: its page (``roles``: who may see it; none: anyone)."""
        handler: Handler = getattr(self, name)
        try:
            if roles is PUBLIC:
                return await handler(request)
            return await self._page(handler, *roles, streamed=name in STREAMED_FORMS)(request)
        except Redirect as moved:
            return see_other(moved.location)
        except Refused as refused:
            if refused.status != 404:
                await self._log(
                    AuditEvent(
                        "console.request_refused", "inbound", "rejected",
                        error_code=f"HTTP_{refused.status}", details={"path": request.path[:200]},
                    )
                )  # fmt: skip
            return self.render(request, "error.html", refused.status, message=refused.message)

    def render(
        self, request: web.Request, name: str, status: int = 200, **values: Any
    ) -> web.Response:
        session: Session | None = request.get("session")
        html = self.templates.get_template(name).render(
            session=session, csrf=session.csrf if session else "", **values
        )
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    def _page(self, handler: Handler, *roles: str, streamed: bool = False) -> Handler:
        async def page(request: web.Request) -> web.StreamResponse:
            session = await self._session(request)
            if session is None:
                raise Redirect("/console/login")
            if roles and session.role not in roles:
                return self.render(request, "error.html", 403, message="您的账号无权访问此页面。")
            if (
                request.method == "POST"
                and streamed
                and request.content_type == "multipart/form-data"
            ):
                reader = await request.multipart()
                if not sessions.csrf_ok(session, await _first_csrf(reader)):
                    return self.render(
                        request, "error.html", 403, message="页面已过期，请重新打开后再提交。"
                    )
                request["multipart"] = reader  # the page reads the rest as it arrives
            elif request.method == "POST":
                posted = await read_form(request)
                sent = posted.get("_csrf")
                if not sessions.csrf_ok(session, sent if isinstance(sent, str) else None):
                    return self.render(
                        request, "error.html", 403, message="页面已过期，请重新打开后再提交。"
                    )
                request["posted"] = posted
            response = await handler(request)
            now = time.time()
            if sessions.renewal_due(session, now, self.idle):
                self._set_cookie(response, sessions.renewed(session, now, self.idle))
            return response

        return page

    async def _session(self, request: web.Request) -> Session | None:
        cookie = sessions.cookie_value(request.headers.get("Cookie"))
        session = sessions.opened(cookie, self.key, time.time())
        if session is None or await self.store.token_by_hash(session.token_hash) is None:
            return None  # none, expired, forged, or its token was revoked since
        request["session"] = session
        return session

    def _set_cookie(self, response: web.StreamResponse, session: Session) -> None:
        response.set_cookie(
            sessions.COOKIE,
            sessions.seal(session, self.key),
            httponly=True,
            samesite="Strict",
            secure=self.secure,
            path="/console",
            max_age=int(self.idle),
        )

    def _matter_name(self, code: str) -> str:
        """Our matter's name from the catalogue (its code if the catalogue lost it)."""
        found = self.registry.find_matter(code)
        return found[0].name if found else code

    async def home(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        raise Redirect(ROLE_HOMES[session.role] if session else "/console/login")

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        return self.render(request, "login.html")

    async def login(self, request: web.Request) -> web.StreamResponse:
        posted = await read_form(request)
        raw = posted.get("token")
        token = await self.store.token(raw) if isinstance(raw, str) and 0 < len(raw) < 200 else None
        if token is None or token.role not in ROLE_HOMES:
            await self._log(
                AuditEvent(
                    "console.login_refused", "inbound", "rejected", error_code="UNAUTHENTICATED"
                )
            )
            return self.render(request, "login.html", 401, error="令牌无效或已吊销。")
        assert isinstance(raw, str)
        session = sessions.new_session(
            token.name, token.role, token.hall, token_hash(raw), time.time(), self.idle
        )
        await self._log(AuditEvent("console.login", "inbound", "ok", actor=token.name))
        response = see_other(ROLE_HOMES[token.role])
        self._set_cookie(response, session)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = see_other("/console/login")
        response.del_cookie(sessions.COOKIE, path="/console")
        return response

    async def _log(self, event: AuditEvent) -> None:
        await self.audit.append(event)

    # -- windows -----------------------------------------------------------------------------

    async def hall(self, request: web.Request) -> web.StreamResponse:
        session: Session = request["session"]
        midnight = datetime.now(CHINA).replace(hour=0, minute=0, second=0, microsecond=0)
        where = {"hall": session.hall} if session.role == "window" and session.hall else {}
        today = await self.store.list_cases(where, 500, None, midnight.timestamp())
        counts: dict[str, int] = {}
        for case in today:
            counts[case.status] = counts.get(case.status, 0) + 1
        order = {"attention": 0, "in_progress": 1, "done": 2, "cancelled": 3}
        listed = sorted(today, key=lambda c: (order.get(c.status, 9), -c.created))[:50]
        return self.render(request, "hall.html", cases=listed, counts=counts, total=len(today))

    async def search_cases(self, request: web.Request) -> web.StreamResponse:
        """By case number, or by 公民身份号码 — posted, looked up by its keyed hash in the
        exchange log (the number is kept nowhere in clear), and the lookup logged."""
        session: Session = request["session"]
        text = str(request["posted"].get("q", "")).strip().upper()
        found: list[Any] = []
        error = None
        if re.fullmatch(r"[0-9]{17}[0-9X]", text):
            try:
                identifiers.check_resident_id(text)
            except identifiers.IdentifierError:
                error = "公民身份号码校验位不正确。"
            else:
                entries = await asyncio.to_thread(
                    self.audit.log.query, {"person": self.audit.log.person(text)}, 1000
                )
                ids = sorted({e["case_id"] for e in entries if e.get("case_id")})
                for case_id in ids:
                    case = await self.store.case(case_id)
                    if case is not None and self._visible(session, case):
                        found.append(case)
                await self._log(
                    AuditEvent(
                        "console.person_looked_up",
                        "internal",
                        "ok",
                        actor=session.name,
                        person_id=text,
                        details={"cases": len(found)},
                    )
                )
        elif CASE_ID.match(text.lower()) or CASE_ID.match(text):
            case = await self.store.case(str(request["posted"].get("q", "")).strip())
            if case is not None and self._visible(session, case):
                raise Redirect(f"/console/cases/{case.id}")
            error = "没有找到该受理编号的案件（或不属于本大厅）。"
        else:
            error = "请输入受理编号或 18 位公民身份号码。"
        return self.render(request, "search.html", cases=found, error=error)

    @staticmethod
    def _visible(session: Session, case: CaseRow) -> bool:
        return session.role == "admin" or case.hall == session.hall

    async def choose(self, request: web.Request) -> web.StreamResponse:
        query = request.query.get("q", "").strip()[:40]
        bundles = [b for b in self.registry.bundles.values() if b.region == self.region]
        matters = []
        catalogue = self.registry.catalogues.get(self.region)
        if query and catalogue is not None:
            matters = [
                m for m in catalogue.matters
                if query in m.name or query.upper() in m.local_code
            ][:30]  # fmt: skip
        return self.render(request, "choose.html", bundles=bundles, matters=matters, q=query)

    def _bundle(self, request: web.Request) -> Bundle:
        kind, code = request.match_info["kind"], request.match_info["code"]
        if kind == "bundle":
            bundle = self.registry.bundles.get(code)
            if bundle is not None and bundle.region == self.region:
                return bundle
        else:
            from gateway.core.cases import bundle_for_matter

            catalogue = self.registry.catalogues.get(self.region)
            if catalogue is not None and catalogue.get(code) is not None:
                return bundle_for_matter(code, self.region)
        raise Missing("没有这个事项")

    async def form(self, request: web.Request) -> web.StreamResponse:
        bundle = self._bundle(request)
        sections = forms.form_sections(self.registry, self.region, bundle, date.today())
        materials = forms.material_fields(self.registry, self.region, bundle)
        return self.render(
            request, "form.html", bundle=bundle, sections=sections, materials=materials,
            values={}, problems={}, idem=uuid.uuid4().hex, rows=range(forms.LIST_ROWS),
        )  # fmt: skip

    async def file(self, request: web.Request) -> web.StreamResponse:
        session: Session = request["session"]
        bundle = self._bundle(request)
        sections = forms.form_sections(self.registry, self.region, bundle, date.today())
        materials = forms.material_fields(self.registry, self.region, bundle)
        codes = {m.code for m in materials}
        uploads: list[MaterialRecord] = []
        posted: dict[str, str] = {}
        try:
            if "multipart" in request:  # the page's form: fields and files, as they arrive
                posted = await self._streamed_filing(request, codes, uploads)
            else:
                posted = {k: v for k, v in request["posted"].items() if isinstance(v, str)}
            allowed = {f.path for s in sections for f in s.fields}
            form = forms.nested(posted, allowed)
            idem = posted.get("_idem", "")
            if not re.fullmatch(r"[0-9a-f]{32}", idem):
                idem = uuid.uuid4().hex
            applicant = _applicant(form)
            licences = tuple(
                GivenLicence(code, posted[f"licence.{code}"].strip(), applicant or "")
                for code in sorted(codes)
                if posted.get(f"licence.{code}", "").strip()
            )
            filing = Filing(
                bundle.code if request.match_info["kind"] == "bundle" else None,
                request.match_info["code"] if request.match_info["kind"] == "matter" else None,
                form, applicant, session.hall or "admin", None, session.name,
                tuple(uploads), licences,
            )  # fmt: skip
            given = orjson.dumps(form) + orjson.dumps(
                [[m.code, m.sm3] for m in uploads] + [[g.code, g.identifier] for g in licences]
            )
            case, _created = await self.cases.file(
                filing, f"{session.name}:console:{idem}", request_hash(given)
            )
        except GatewayError as error:
            problems: dict[str, list[str]] = {}
            for problem in error.problems:
                if problem.location.startswith("materials."):  # already in Chinese
                    problems.setdefault(problem.location, []).append(problem.message)
                    continue
                where = forms.field_of(problem.location)
                problems.setdefault(where, []).append(forms.in_chinese(problem.message))
            if not problems:
                problems[""] = [error.detail or error.title]
            return self.render(
                request, "form.html", 422, bundle=bundle, sections=sections,
                materials=materials, values=posted, problems=problems,
                idem=posted.get("_idem", uuid.uuid4().hex), rows=range(forms.LIST_ROWS),
            )  # fmt: skip
        finally:
            if uploads:  # what the filing did not make its case's
                await asyncio.shield(self.store.discard_materials([m.id for m in uploads]))
        raise Redirect(f"/console/cases/{case.id}")

    async def _streamed_filing(
        self, request: web.Request, codes: set[str], uploads: list[MaterialRecord]
    ) -> dict[str, str]:
        """The filing form's fields, read part by part; each chosen file goes to the store as
        it arrives (``uploads``), within the materials' limits."""
        reader: MultipartReader = request["multipart"]
        limits = request.app[MATERIAL_LIMITS]
        fields: dict[str, str] = {}
        left, total = request.app[MAX_FORM_BYTES], 0
        try:
            async with asyncio.timeout(limits.seconds):
                while (part := await reader.next()) is not None:
                    if not isinstance(part, BodyPartReader):
                        raise Refused(400, "无法读取提交的表单，请重新打开页面后再提交。")
                    name = part.name or ""
                    if part.filename is None:  # a field
                        try:
                            value = await part_bytes(part, left)
                        except GatewayError:  # the fields all told are a form's, not files
                            raise Refused(413, "提交的内容过大。") from None
                        left -= len(value)
                        fields[name] = value.decode("utf-8")
                        continue
                    code = name.removeprefix("material.")
                    if code not in codes or not part.filename:  # no file chosen: an empty part
                        await part_bytes(part, 0)
                        continue
                    limit = min(limits.per_material, limits.per_case - total)
                    uploads.append(await take_upload(self.store, code, part_pieces(part), limit))
                    total += uploads[-1].size
        except TimeoutError:
            raise Refused(408, "提交超时，请重新提交。") from None
        except READ_ERRORS:
            raise Refused(400, "无法读取提交的表单，请重新打开页面后再提交。") from None
        return fields

    async def _case(self, request: web.Request) -> CaseRow:
        case_id = request.match_info["case_id"]
        case = await self.store.case(case_id) if CASE_ID.match(case_id) else None
        if case is None or not self._visible(request["session"], case):
            raise Missing("没有这个案件")
        return case

    async def case(self, request: web.Request) -> web.StreamResponse:
        case = await self._case(request)
        session: Session = request["session"]
        await self._log(
            AuditEvent("console.case_viewed", "internal", "ok", case_id=case.id, actor=session.name)
        )
        timeline = await self.store.timeline(case.id)
        materials = await self.store.case_materials(case.id)
        names = {
            m.code: m.name
            for planned in case.plan
            for m in self.registry.materials_of(self.region, planned.matter)
        }
        return self.render(
            request, "case.html", case=case, timeline=timeline, etag=_etag(case, timeline),
            materials=materials, material_names=names,
        )  # fmt: skip

    async def live(self, request: web.Request) -> web.StreamResponse:
        """The case's changing part, for the page's refresh: 304 while nothing changed (the
        check reads only the case's version and last step, as the API's ETag does)."""
        case_id = request.match_info["case_id"]
        head = await self.store.case_head(case_id) if CASE_ID.match(case_id) else None
        session: Session = request["session"]
        if head is None or (session.role != "admin" and head[0] != session.hall):
            raise Missing()
        etag = f'"{head[1][0]}.{head[1][1]}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        case = await self._case(request)
        timeline = await self.store.timeline(case.id)
        response = self.render(request, "case_live.html", case=case, timeline=timeline)
        response.headers["ETag"] = etag
        return response

    async def receipt(self, request: web.Request) -> web.StreamResponse:
        case = await self._case(request)
        return self.render(request, "receipt.html", case=case)

    async def act(self, request: web.Request) -> web.StreamResponse:
        case = await self._case(request)
        session: Session = request["session"]
        posted = request["posted"]
        action, sub = request.match_info["action"], str(posted.get("sub", ""))
        try:
            if action == "cancel":
                await self.cases.cancel(case, session.name)
            elif not SUB_ID.match(sub):
                raise Missing()
            elif action == "retry":
                await self.cases.retry(case, sub, session.name)
            else:
                note = str(posted.get("note", "")).strip()[:500] or "窗口本地办结"
                await self.cases.complete_local(case, sub, {"note": note}, session.name)
        except GatewayError as error:
            timeline = await self.store.timeline(case.id)
            return self.render(
                request, "case.html", 409, case=case, timeline=timeline,
                etag=_etag(case, timeline), refused=error.detail or error.title,
            )  # fmt: skip
        raise Redirect(f"/console/cases/{case.id}")

    # -- auditors ----------------------------------------------------------------------------

    async def audit_page(self, request: web.Request) -> web.StreamResponse:
        return self.render(request, "audit.html", entries=None, values={}, more=None)

    async def audit_search(self, request: web.Request) -> web.StreamResponse:
        session: Session = request["session"]
        posted = {k: str(v).strip() for k, v in request["posted"].items() if isinstance(v, str)}
        filters: dict[str, str] = {}
        for name in ("case_id", "partner", "local_matter", "outcome", "error_code", "event"):
            if posted.get(name):
                filters[name] = posted[name][:96]
        person = posted.get("person_id", "").upper()
        problem = None
        if person:
            try:
                identifiers.check_resident_id(person)
                filters["person"] = self.audit.log.person(person)
            except identifiers.IdentifierError:
                problem = "公民身份号码无效。"
        time_from, time_to = _day(posted.get("from")), _day(posted.get("to"), end=True)
        after = None
        if posted.get("after"):
            try:
                node_seq = orjson.loads(posted["after"])
                after = (str(node_seq[0]), str(node_seq[1]), int(node_seq[2]))
            except (orjson.JSONDecodeError, IndexError, TypeError, ValueError):
                after = None
        entries: list[dict[str, Any]] = []
        if problem is None:
            entries = await asyncio.to_thread(
                self.audit.log.query, filters, 51, after, time_from, time_to
            )
            if filters.get("case_id") or person:
                await self._log(
                    AuditEvent(
                        "console.entries_viewed",
                        "internal",
                        "ok",
                        actor=session.name,
                        case_id=filters.get("case_id"),
                        person_id=person or None,
                        details={"entries": min(len(entries), 50)},
                    )
                )
        more = None
        if len(entries) > 50:
            entries = entries[:50]
            last = entries[-1]
            more = orjson.dumps([last["time"], last["node"], last["seq"]]).decode()
        batches: dict[tuple[str, int], list[str]] = {}
        standings = await asyncio.to_thread(
            lambda: [
                entry_standing(
                    self.audit.log, e["node"], e["seq"], self.keys, self.audit.backend,
                    self.witness_keys, batches,
                )
                for e in entries
            ]
        )  # fmt: skip
        values = {k: v for k, v in posted.items() if k not in ("_csrf", "after")}
        return self.render(
            request,
            "audit.html",
            entries=list(zip(entries, standings, strict=True)),
            values=values,
            more=more,
            problem=problem,
        )

    async def evidence(self, request: web.Request) -> web.StreamResponse:
        session: Session = request["session"]
        case_id = str(request["posted"].get("case_id", "")).strip()
        if not CASE_ID.match(case_id):
            raise Missing()
        try:
            package = await asyncio.to_thread(
                export_case, self.audit.log, case_id, self.keys, self.archive_dir, self.witness_keys
            )
        except LogDamaged as exc:  # a package would miss or misprove entries
            log.error("audit.log_damaged", alert=True, detail=str(exc))
            raise Refused(
                500,
                f"交换日志已损坏，无法导出完整的证据包（{exc}）。请运行 xgw audit verify 检查。",
            ) from None
        if not package["entries"]:
            raise Missing("日志中没有这个案件")
        await self._log(
            AuditEvent(
                "console.evidence_exported", "internal", "ok", case_id=case_id, actor=session.name
            )
        )
        return web.Response(
            body=orjson.dumps(package, option=orjson.OPT_INDENT_2),
            content_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="evidence-{case_id}.json"'},
        )

    async def plots(self, request: web.Request) -> web.StreamResponse:
        """The last 14 days: exchanges per day per partner, refusals by code, latency."""
        since = time.time() - 14 * 86400
        records: list[dict[str, Any]] = []
        after: tuple[float, int] | None = None
        while len(records) < 50_000:
            page = await self.store.exchange_records({}, 1000, after, since)
            records += page
            if len(page) < 1000:
                break
            after = (page[-1]["time"], page[-1]["id"])
        refused = await asyncio.to_thread(
            self.audit.log.query, {"outcome": "rejected"}, 20_000, None,
            datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )  # fmt: skip
        codes = Counter(str(e.get("error_code") or "—") for e in refused)
        latency = plots.latency_per_partner(records)
        charts = [
            plots.stacked_bars(
                "每日交换量（按对方地区）", plots.per_day_per_partner(records), "次"
            ),
            plots.stacked_bars(
                "拒绝（按错误码）", {c: {"拒绝": n} for c, n in codes.most_common(12)}, "次"
            ),
            plots.stacked_bars(
                "对方答复时延（中位数）",
                {p: {"中位数": m * 1000} for p, (m, _) in latency.items()},
                "毫秒",
            ),
        ]
        return self.render(
            request, "plots.html", latency=latency,
            # every label in the SVG was escaped where it was drawn (plots.stacked_bars)
            charts=[Markup(c) for c in charts],  # noqa: S704
            records=len(records),
        )  # fmt: skip

    async def verify_page(self, request: web.Request) -> web.StreamResponse:
        return self.render(request, "verify.html")

    async def verify_start(self, request: web.Request) -> web.StreamResponse:
        """The whole log verified in this request, its progress streamed as JSON lines
        (``{"done", "total"}`` a few times a second, then ``{"ok", "findings"}``): one
        request to one node, so nothing is kept between requests and any node serves it."""
        audit_log: AuditLog = self.audit.log
        total = sum(
            await asyncio.to_thread(lambda: [audit_log.count(n) for n in audit_log.nodes()])
        )
        await self._log(
            AuditEvent("console.verify_started", "internal", "ok", actor=request["session"].name)
        )
        done = 0

        def advance() -> None:
            nonlocal done
            done += 1

        response = web.StreamResponse(
            headers={
                "Content-Type": "application/x-ndjson",
                "X-Accel-Buffering": "no",  # nginx passes each line on at once
            }
        )
        # renewed here: the dispatcher's renewal comes after the stream was sent
        self._set_cookie(response, sessions.renewed(request["session"], time.time(), self.idle))
        await response.prepare(request)
        running = asyncio.ensure_future(
            asyncio.to_thread(
                functools.partial(
                    verify_log, audit_log, self.keys, self.audit.backend, progress=advance,
                    witness_keys=self.witness_keys, workers=VERIFY_WORKERS,
                )
            )
        )  # fmt: skip
        while not running.done():
            await response.write(orjson.dumps({"done": done, "total": total}) + b"\n")
            await asyncio.wait({running}, timeout=0.25)
        try:
            result = running.result()
            outcome = {
                "done": done,
                "total": total,
                "ok": result.ok,
                "findings": [str(f) for f in result.all_findings() if f.fatal][:50],
            }
        except Exception as exc:  # told as a failed verification, never a 500 with a trace
            log.error("console.verify_failed", error_type=type(exc).__name__)
            outcome = {
                "done": done,
                "total": total,
                "ok": False,
                "findings": ["校验中断：读取日志出错"],
            }
        await response.write(orjson.dumps(outcome) + b"\n")
        await response.write_eof()
        return response

    # -- admins ------------------------------------------------------------------------------

    async def admin(self, request: web.Request, shown: str | None = None) -> web.StreamResponse:
        return self.render(
            request, "admin.html", partners=await self.health(),
            tokens=await self.store.tokens(), shown=shown,
            dead=await self.store.outbox("dead", 50),
        )  # fmt: skip

    async def token_create(self, request: web.Request) -> web.StreamResponse:
        posted = request["posted"]
        name, role = str(posted.get("name", "")).strip(), str(posted.get("role", ""))
        hall = str(posted.get("hall", "")).strip() or None
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name) or role not in (
            "window",
            "auditor",
            "admin",
            "monitor",
        ):
            return self.render(
                request,
                "error.html",
                422,
                message="名称只能含字母、数字、点、下划线和短横线；角色须从列表中选择。",
            )
        try:
            token = await self.store.create_token(name, role, hall if role == "window" else None)
        except AlreadyThere:
            return self.render(request, "error.html", 409, message="已有同名令牌。")
        await self._log(
            AuditEvent(
                "token.created", actor=request["session"].name, details={"name": name, "role": role}
            )
        )
        return await self.admin(request, shown=token)

    async def token_revoke(self, request: web.Request) -> web.StreamResponse:
        name = str(request["posted"].get("name", ""))
        if await self.store.revoke_token(name):
            await self._log(
                AuditEvent("token.revoked", actor=request["session"].name, details={"name": name})
            )
        raise Redirect("/console/admin")

    async def replay(self, request: web.Request) -> web.StreamResponse:
        msg_id = str(request["posted"].get("msg_id", ""))
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", msg_id):
            await self.cases.replay(msg_id, request["session"].name)
        raise Redirect("/console/admin")


def beijing_time(at: float) -> str:
    """A store time (seconds since the epoch) as the windows read a clock: Beijing time."""
    return datetime.fromtimestamp(int(at), CHINA).strftime("%Y-%m-%d %H:%M:%S")


def _etag(case: CaseRow, timeline: list[dict[str, Any]]) -> str:
    return f'"{case.version}.{timeline[-1]["seq"] if timeline else 0}"'


def _applicant(form: dict[str, Any]) -> str | None:
    from mappings.examples import applicant_of

    try:
        return str(applicant_of(form)["id_number"])
    except (ValueError, KeyError):
        return None


def _day(value: str | None, end: bool = False) -> str | None:
    """A date field's bound as the log's times are written (UTC), the day taken in China."""
    if not value:
        return None
    try:
        day = datetime.fromisoformat(value).replace(tzinfo=CHINA)
    except ValueError:
        return None
    if end:
        day += timedelta(days=1)
    return day.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

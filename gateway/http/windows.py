"""The windows API (REST): file and follow 跨省 cases. Models here validate requests and generate
the OpenAPI document, so the two cannot drift."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, cast

import orjson
from aiohttp import BodyPartReader, web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import models_json_schema

from gateway import __version__
from gateway.core.problems import (
    PROBLEM_JSON,
    FieldProblem,
    GatewayError,
    body_too_large,
    not_found,
)
from gateway.http.multipart import CHUNK, READ_ERRORS, part_bytes, part_pieces, read_at_most
from gateway.services.cases import CaseService, Filing, request_hash
from gateway.services.materials import take_upload
from gateway.storage import (
    CaseRow,
    CaseSummary,
    MaterialRecord,
    Store,
    Token,
    epoch_of,
    iso_of,
)
from mappings import identifiers
from mappings.materials import GivenLicence
from rules.materials import LICENCE_HOLDER, LICENCE_IDENTIFIER, MATERIAL_CODE
from rules.text import check_text, first_text_problem, is_code

ROLES = ("window", "auditor", "admin")
# What people type: any script, no control or invisible reordering characters (rules.text).
Text = Annotated[str, AfterValidator(check_text)]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]  # checked in ASCII: see _ascii

IDEMPOTENCY_KEY_SHAPE = r"[\x20-\x7e]{8,128}"  # 8–128 printable ASCII characters


class Applicant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id_number: str = Field(
        description="公民身份号码 (GB 11643): check digit, birth date and region are checked",
        json_schema_extra={"pattern": f"^{identifiers.RESIDENT_ID_SHAPE}$"},
    )
    name: Text = Field(min_length=1, max_length=50)
    phone: str | None = Field(None, pattern=r"^\+?[0-9][0-9 -]{4,19}$")

    @field_validator("id_number")
    @classmethod
    def _resident_id(cls, value: str) -> str:
        try:
            return identifiers.check_resident_id(value)
        except identifiers.IdentifierError as exc:
            raise ValueError(str(exc)) from None


class LicenceReference(BaseModel):
    """An 电子证照 standing in for a material: its identifier and its holder."""

    model_config = ConfigDict(extra="forbid")
    material: Code = Field(description="the material's code in the catalogue")
    identifier: str = Field(
        pattern=f"^{LICENCE_IDENTIFIER}$",
        description="证照标识 (GB/T 36904 practice), its check character checked",
    )
    holder: str = Field(
        pattern=f"^{LICENCE_HOLDER}$", description="持证主体: 公民身份号码 or 统一社会信用代码"
    )


class CaseRequest(BaseModel):
    """File a 一件事 bundle or a single matter. ``form`` is the local (襄州) form."""

    model_config = ConfigDict(extra="forbid")
    bundle: Code | None = Field(None, description="一件事 bundle code, e.g. YJS-SBZR (社保转入)")
    matter: Code | None = Field(None, description="a single matter code (with form.partner_region)")
    applicant: Applicant
    form: dict[str, Any] = Field(default_factory=dict)
    clerk: Text | None = Field(None, max_length=50, description="the clerk at the window")
    licences: list[LicenceReference] = Field(
        default_factory=list,
        max_length=32,
        description="电子证照 standing in for materials (免提交), where the catalogue allows; "
        "files go as parts of a multipart/form-data filing",
    )

    @model_validator(mode="after")
    def _one_target(self) -> CaseRequest:
        if (self.bundle is None) == (self.matter is None):
            raise ValueError("give exactly one of bundle or matter")
        return self

    @field_validator("form")
    @classmethod
    def _form_text(cls, value: dict[str, Any]) -> dict[str, Any]:
        if _values_in(value, MAX_FORM_VALUES) > MAX_FORM_VALUES:
            raise ValueError(f"more than {MAX_FORM_VALUES:,} values")
        found = first_text_problem(value)
        if found is not None:
            raise ValueError(f"{found[0]}: {found[1]}")
        return value


# A form's fields, rows and their values, all told: what a person fills in at a window is a
# few hundred; a form of thousands of rows only makes the gateway build (and seal, and store)
# thousands of objects.
MAX_FORM_VALUES = 5000


def _values_in(value: object, limit: int) -> int:
    """How many JSON values ``value`` holds (stops counting past ``limit``)."""
    count, pending = 0, [value]
    while pending and count <= limit:
        item = pending.pop()
        count += 1
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return count


class LocalResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    result: dict[str, Any] | None = None


class SubMatterView(BaseModel):
    id: str
    matter: str
    jurisdiction: str
    partner_matter: str | None
    mapping_version: str | None
    depends_on: list[str]
    status: Literal["waiting", "queued", "awaiting_result", "done", "failed", "local", "cancelled"]
    error_code: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = Field(None, description="the partner's answer, in our schema")


class Step(BaseModel):
    seq: int
    time: str
    step: str
    sub_id: str | None
    detail: dict[str, Any] | None


CaseStatus = Literal["in_progress", "done", "attention", "cancelled"]
Checked = TypeVar("Checked", bound=BaseModel)


class MaterialView(BaseModel):
    """A material the case carries: what was given, never its content."""

    code: str
    type: str = Field(description="pdf, ofd, jpeg, png (told by content), or licence")
    size: int | None = Field(None, description="bytes, for a file")
    sm3: str | None = Field(None, description="SM3 of the file as uploaded")
    licence: str | None = Field(None, description="the 电子证照 identifier standing in for it")


class CaseView(BaseModel):
    id: str
    status: CaseStatus
    bundle: str
    title: str
    hall: str
    clerk: str | None
    created: str
    updated: str
    filed_on: str
    sub_matters: list[SubMatterView]
    materials: list[MaterialView] | None = Field(
        None, description="what the filing gave (a single case's view only)"
    )
    timeline: list[Step] | None = None


def utc_stamp(value: str, layout: str) -> str:
    """A query's ISO 8601 date or time written as the stored times it is compared with (UTC,
    as text): a date is its midnight, a time without an offset is UTC. ValueError if it is
    neither."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC).strftime(layout)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first representable time
        raise ValueError("outside the years 0001 to 9999 in UTC") from None


def decode_cursor(value: str, shape: tuple[type, ...]) -> list[Any]:
    """A ``next`` cursor this service gave: base64 of a JSON list of values of these types.
    ValueError for anything else (a cursor is the client's to send back, not to make)."""
    try:
        after = orjson.loads(base64.urlsafe_b64decode(value))
    except (ValueError, orjson.JSONDecodeError):
        raise ValueError("not a cursor this service gave") from None
    if not (
        isinstance(after, list)
        and len(after) == len(shape)
        and all(
            isinstance(v, t) and not isinstance(v, bool) for v, t in zip(after, shape, strict=True)
        )
        and all(-(2**63) <= v < 2**63 for v in after if isinstance(v, int))  # a store integer
    ):
        raise ValueError("not a cursor this service gave")
    return after


# What utc_stamp accepts, for the OpenAPI document (a date, or a time with or without offset).
_DATE_OR_TIME: dict[str, Any] = {  # null, as for every optional field: no bound
    "anyOf": [
        {"type": "string", "format": "date"},
        {"type": "string", "format": "date-time"},
        {"type": "null"},
    ]
}
EXACT_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # a bound's time as given, to the microsecond
Row = TypeVar("Row")
Cursor = TypeVar("Cursor", bound=tuple[Any, ...])  # a listing's cursor values, typed


class PagedQuery(BaseModel, Generic[Cursor]):
    """What every listing's query has: a time range, written as the stored times it is compared
    with (``TIME_LAYOUT``), and the ``next`` cursor of the page before, the values of its last
    row (``CURSOR``: their types). Checked by the model, so a bad one is named with the rest."""

    TIME_LAYOUT: ClassVar[str]
    CURSOR: ClassVar[tuple[type, ...]]

    from_: str | None = Field(
        None,
        alias="from",
        description="at or after this ISO 8601 date or time (UTC)",
        json_schema_extra=_DATE_OR_TIME,
    )
    to: str | None = Field(
        None, description="before this ISO 8601 date or time (UTC)", json_schema_extra=_DATE_OR_TIME
    )
    cursor: str | None = Field(None, description="the `next` of the page before")
    limit: int = 50

    @field_validator("from_", "to")
    @classmethod
    def _moment(cls, value: str | None) -> str | None:
        return None if value is None else utc_stamp(value, cls.TIME_LAYOUT)

    @field_validator("cursor")
    @classmethod
    def _cursor(cls, value: str | None) -> str | None:
        if value is not None:
            decode_cursor(value, cls.CURSOR)
        return value

    def span(self) -> tuple[float | None, float | None]:
        """The time range in seconds since the epoch, as the store takes times (with
        ``TIME_LAYOUT`` = ``EXACT_TIME``)."""
        return tuple(None if t is None else epoch_of(t) for t in (self.from_, self.to))  # type: ignore[return-value]

    def after(self) -> Cursor | None:
        """The last row's values of the page before, or None for the first page."""
        if self.cursor is None:
            return None
        # decode_cursor checked each value against CURSOR, the types Cursor names
        return cast(Cursor, tuple(decode_cursor(self.cursor, self.CURSOR)))

    def page(
        self, rows: list[Row], last: Callable[[Row], list[Any]]
    ) -> tuple[list[Row], str | None]:
        """This page of ``rows`` (fetched one over ``limit``) and the cursor of the next, if
        there is one: ``last`` gives a row's values in ``CURSOR``'s order."""
        if len(rows) <= self.limit:
            return rows, None
        rows = rows[: self.limit]
        return rows, base64.urlsafe_b64encode(orjson.dumps(last(rows[-1]))).decode()


class CaseListQuery(PagedQuery[tuple[float, str]]):
    """``GET /api/v1/cases``: every filter is checked, and all problems are told at once."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    TIME_LAYOUT = EXACT_TIME
    CURSOR = (float, str)  # (created, id)

    status: CaseStatus | None = None
    bundle: str | None = Field(None, description="a bundle code, e.g. YJS-SBZR")
    matter: str | None = Field(None, description="any sub-matter's local or partner matter code")
    hall: str | None = Field(None, description="admins only: a window always sees its own hall's")
    limit: int = Field(50, ge=1, le=200, description="cases per page")


class CaseList(BaseModel):
    items: list[CaseView]
    next: str | None = Field(None, description="cursor for the next page")


class ProblemDetails(BaseModel):
    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, str]] | None = None


def _as_text(value: object, limit: int) -> str | None:
    """A stored value shown as text whatever it is: a case always renders, even one written
    before its answers were checked (gateway.core.answers)."""
    if value is None or isinstance(value, str):
        return value[:limit] if value else value
    return orjson.dumps(value, default=str).decode()[:limit]


def case_view(
    case: CaseSummary,
    timeline: list[dict[str, Any]] | None,
    materials: list[MaterialRecord] | None = None,
) -> CaseView:
    plans = {p.sub_id: p for p in case.plan}
    subs = [
        SubMatterView(
            id=s.sub_id,
            matter=plans[s.sub_id].matter,
            jurisdiction=plans[s.sub_id].jurisdiction,
            partner_matter=plans[s.sub_id].partner_code,
            mapping_version=plans[s.sub_id].mapping_version,
            depends_on=list(s.depends_on),
            status=s.status,  # type: ignore[arg-type]
            error_code=_as_text(s.error_code, 64),
            error=_as_text(s.error, 1000),
            result=s.result if isinstance(s.result, dict) else None,
        )
        for s in case.states
    ]
    return CaseView(
        id=case.id,
        status=case.status,  # type: ignore[arg-type]  # stored values are the Literal's
        bundle=case.bundle,
        title=case.title,
        hall=case.hall,
        clerk=case.clerk,
        created=iso_of(case.created, ms=False),
        updated=iso_of(case.updated, ms=False),
        filed_on=case.filed_on,
        sub_matters=subs,
        materials=[
            MaterialView(
                code=m.code,
                type=m.kind,
                size=None if m.licence else m.size,
                sm3=None if m.licence else m.sm3,
                licence=m.licence["identifier"] if m.licence else None,
            )
            for m in materials
        ]
        if materials is not None
        else None,
        timeline=[Step(**{**t, "time": iso_of(t["time"])}) for t in timeline]
        if timeline is not None
        else None,
    )


def json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json(), status=status, content_type="application/json"
    )


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters from the model that checks them (so the two cannot drift)."""
    schema = model.model_json_schema(by_alias=True)
    return [
        {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", []),
            "description": field.pop("description", ""),
            "schema": field,
        }
        for name, field in schema["properties"].items()
    ]


def parse_query(model: type[Checked], query: Mapping[str, str]) -> Checked:
    """A URL's query checked by its model: 400 QUERY_INVALID naming every problem at once."""
    try:
        return model.model_validate(dict(query))
    except ValidationError as exc:
        raise GatewayError(
            "QUERY_INVALID",
            400,
            "Bad query",
            "see errors for every problem",
            validation_problem(exc).problems,
        ) from None


def validation_problem(exc: ValidationError) -> GatewayError:
    problems = [
        FieldProblem(".".join(str(p) for p in e["loc"]) or "body", e["msg"], "INVALID")
        for e in exc.errors(include_url=False)
    ]
    return GatewayError(
        "VALIDATION_FAILED",
        422,
        "The request is not valid",
        "see errors for every problem",
        problems,
    )


# Set by the app from ``body_read_seconds``.
BODY_READ_SECONDS = web.AppKey("body_read_seconds", float)
MAX_FORM_BYTES = web.AppKey("max_form_bytes", int)


async def read_body(request: web.Request, limit: int | None = None) -> bytes:
    """The whole body, or GatewayError: BODY_TOO_LARGE (413; above ``limit`` too, when given:
    refused from its Content-Length, or as soon as more has arrived), or BODY_TIMEOUT (408)
    when it has not arrived in full within ``body_read_seconds`` — a client trickling its body
    (a slow POST) must not hold a connection and a handler for ever."""
    seconds = request.app[BODY_READ_SECONDS]
    if limit is not None and (request.content_length or 0) > limit:
        raise body_too_large()
    try:
        if limit is None and request.content.is_eof():  # all there (most bodies come whole)
            return await request.read()
        async with asyncio.timeout(seconds):
            if limit is None:
                return await request.read()
            return await read_at_most(request.content.iter_chunked(CHUNK), limit)
    except web.HTTPRequestEntityTooLarge:
        raise body_too_large() from None
    except TimeoutError:
        raise GatewayError(
            "BODY_TIMEOUT",
            408,
            "Request body too slow",
            f"the body did not arrive in full within {seconds:g} s",
        ) from None


@dataclass(frozen=True)
class MaterialLimits:
    per_material: int
    per_case: int
    seconds: float


MATERIAL_LIMITS = web.AppKey("material_limits", MaterialLimits)
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)
MAX_MATERIALS = 32  # files per filing (the envelope's manifest holds as many)


def multipart_malformed(detail: str) -> GatewayError:
    return GatewayError("MULTIPART_MALFORMED", 400, "Malformed filing", detail)


async def parse_body(
    request: web.Request, model: type[BaseModel], limit: int | None = None
) -> tuple[Any, bytes]:
    raw = await read_body(request, limit)
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise GatewayError(
            "JSON_MALFORMED", 400, "Malformed JSON", "the body is not valid JSON"
        ) from None
    try:
        return model.model_validate(data), raw
    except ValidationError as exc:
        raise validation_problem(exc) from None


# -- authentication --------------------------------------------------------------------------


async def authenticate(store: Store, request: web.Request) -> Token:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise GatewayError(
            "UNAUTHENTICATED", 401, "Authentication required", "send Authorization: Bearer <token>"
        )
    token = await store.token(value.strip())
    if token is None:
        raise GatewayError(
            "UNAUTHENTICATED", 401, "Authentication failed", "the token is unknown or revoked"
        )
    return token


def require(request: web.Request, *roles: str) -> Token:
    token: Token = request["token"]
    if token.role not in roles:
        raise GatewayError(
            "FORBIDDEN", 403, "Not allowed", f"this needs the role {' or '.join(roles)}"
        )
    return token


def _visible(token: Token, hall: str) -> bool:
    return token.role == "admin" or (token.role == "window" and hall == token.hall)


def _etag(state: tuple[int, int]) -> str:
    """The case view's entity tag: it changes whenever the case's states (version) or its
    timeline (last step) do — nothing else in the view ever changes."""
    return f'"{state[0]}.{state[1]}"'


def _matches(if_none_match: str, etag: str) -> bool:
    offered = {tag.strip() for tag in if_none_match.split(",")}
    return "*" in offered or etag in offered or f"W/{etag}" in offered


# -- handlers --------------------------------------------------------------------------------


CASE_ID_SHAPE = r"[A-Za-z0-9._-]{1,96}"


def case_id_of(request: web.Request) -> str | None:
    """The case id in the path, or None when it cannot be one of ours (a 404 like any other)."""
    value = request.match_info["case_id"]
    return value if is_code(CASE_ID_SHAPE, value) else None


def _sub_id_of(request: web.Request) -> str:
    """The sub-matter id in the path; one that cannot be a sub-matter's is a 404 (never echoed)."""
    value = request.match_info["sub_id"]
    if not is_code(r"[A-Za-z0-9._-]{1,64}", value):
        raise not_found("sub-matter")
    return value


class CasesApi:
    def __init__(self, service: CaseService, store: Store) -> None:
        self.service, self.store = service, store

    async def _case(self, request: web.Request) -> CaseRow:
        token = require(request, "window", "admin")
        case_id = case_id_of(request)
        case = await self.store.case(case_id) if case_id is not None else None
        if case is None or not _visible(token, case.hall):
            raise not_found("case")  # a window never learns that another hall's case exists
        return case

    async def create(self, request: web.Request) -> web.Response:
        token = require(request, "window", "admin")
        key = request.headers.get("Idempotency-Key", "")
        if not re.fullmatch(IDEMPOTENCY_KEY_SHAPE, key):
            raise GatewayError(
                "IDEMPOTENCY_KEY_REQUIRED",
                400,
                "Idempotency-Key required",
                "send an Idempotency-Key header of 8–128 printable ASCII characters",
            )
        uploads: list[MaterialRecord] = []
        try:
            if request.content_type == "multipart/form-data":
                body, raw = await self._read_with_materials(request, uploads)
            else:
                body, raw = await parse_body(request, CaseRequest, request.app[MAX_FORM_BYTES])
            form = dict(body.form)
            form.setdefault("applicant", {})
            if isinstance(form["applicant"], dict):
                form["applicant"] = {
                    **body.applicant.model_dump(exclude_none=True),
                    **form["applicant"],
                }
            filing = Filing(
                body.bundle,
                body.matter,
                form,
                body.applicant.id_number,
                token.hall or "admin",
                body.clerk,
                token.name,
                tuple(uploads),
                tuple(GivenLicence(r.material, r.identifier, r.holder) for r in body.licences),
            )
            # the same key with other files is another request (409), not a repeat
            signed = raw + b"".join(f"\n{m.code}:{m.sm3}".encode() for m in uploads)
            case, created = await self.service.file(
                filing, f"{token.name}:{key}", request_hash(signed)
            )
        finally:
            # what a filing did not make its case's (a refusal, a repeat, a broken upload)
            if uploads:
                await asyncio.shield(self.store.discard_materials([m.id for m in uploads]))
        response = await self._case_response(case, 201 if created else 200)
        response.headers["Location"] = f"/api/v1/cases/{case.id}"
        return response

    async def _read_with_materials(
        self, request: web.Request, uploads: list[MaterialRecord]
    ) -> tuple[CaseRequest, bytes]:
        """A multipart/form-data filing: the part ``case`` (the JSON filing) first, then one
        part per file, named by its material's code. Each file goes to the store as it
        arrives (``uploads`` lists those stored so far, for the caller to discard on
        failure); nothing is held whole in memory."""
        limits = request.app[MATERIAL_LIMITS]
        try:
            async with asyncio.timeout(limits.seconds):
                reader = await request.multipart()
                part = await reader.next()
                if not isinstance(part, BodyPartReader) or part.name != "case":
                    raise multipart_malformed("the first part must be the filing, named case")
                raw = await part_bytes(part, request.app[MAX_FORM_BYTES])
                try:
                    body = CaseRequest.model_validate(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    raise GatewayError(
                        "JSON_MALFORMED", 400, "Malformed JSON", "the case part is not valid JSON"
                    ) from None
                except ValidationError as exc:
                    raise validation_problem(exc) from None
                total = 0
                while (part := await reader.next()) is not None:
                    if not isinstance(part, BodyPartReader) or not is_code(
                        MATERIAL_CODE, part.name or ""
                    ):
                        raise multipart_malformed("each file part is named by a material's code")
                    if len(uploads) >= MAX_MATERIALS:
                        raise multipart_malformed(f"at most {MAX_MATERIALS} files per filing")
                    limit = min(limits.per_material, limits.per_case - total)
                    uploads.append(
                        await take_upload(self.store, part.name or "", part_pieces(part), limit)
                    )
                    total += uploads[-1].size
                return body, raw
        except TimeoutError:
            raise GatewayError(
                "BODY_TIMEOUT",
                408,
                "Request body too slow",
                f"the filing and its materials did not arrive within {limits.seconds:g} s",
            ) from None
        except READ_ERRORS:
            # aiohttp's multipart reader: a boundary missing, a part cut short; or the window's
            # connection broke mid-upload (its answer is lost, but the refusal is audited)
            raise GatewayError(
                "MATERIAL_TRUNCATED",
                400,
                "Malformed or incomplete upload",
                "the multipart body is malformed or ended before its last boundary",
            ) from None

    async def _case_response(self, case: CaseRow, status: int = 200) -> web.Response:
        timeline = await self.store.timeline(case.id)
        materials = await self.store.case_materials(case.id)
        response = json(case_view(case, timeline, materials), status=status)
        response.headers["ETag"] = _etag((case.version, timeline[-1]["seq"] if timeline else 0))
        return response

    async def get(self, request: web.Request) -> web.Response:
        """A window refreshing its screen sends ``If-None-Match`` with the last ``ETag``; while
        nothing changed the answer is a 304, without reading the case or its timeline."""
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None:
            token = require(request, "window", "admin")
            case_id = case_id_of(request)
            head = await self.store.case_head(case_id) if case_id is not None else None
            if head is not None and _visible(token, head[0]):
                etag = _etag(head[1])
                if _matches(if_none_match, etag):
                    return web.Response(status=304, headers={"ETag": etag})
        return await self._case_response(await self._case(request))

    async def list(self, request: web.Request) -> web.Response:
        token = require(request, "window", "admin")
        query = parse_query(CaseListQuery, request.query)
        where = {"status": query.status, "bundle": query.bundle, "matter": query.matter}
        where["hall"] = (token.hall or "") if token.role == "window" else query.hall
        cases, cursor = query.page(
            await self.store.list_cases(
                {k: v for k, v in where.items() if v is not None},
                query.limit + 1,
                query.after(),
                *query.span(),
            ),
            lambda case: [case.created, case.id],
        )
        return json(CaseList(items=[case_view(c, None) for c in cases], next=cursor))

    async def cancel(self, request: web.Request) -> web.Response:
        case = await self._case(request)
        return json(case_view(await self.service.cancel(case, request["token"].name), None))

    async def retry(self, request: web.Request) -> web.Response:
        case = await self._case(request)
        updated = await self.service.retry(case, _sub_id_of(request), request["token"].name)
        return json(case_view(updated, None))

    async def complete(self, request: web.Request) -> web.Response:
        case = await self._case(request)
        body, _ = await parse_body(request, LocalResult)
        updated = await self.service.complete_local(
            case, _sub_id_of(request), body.result, request["token"].name
        )
        return json(case_view(updated, None))


# What any operation that reads a request body may also answer (see ``read_body``); only those
# operations list them.
BODY_REFUSALS = (
    (408, "the body did not arrive in full in time"),
    (413, "body too large"),
)


def error_responses(*statuses: tuple[int, str]) -> dict[str, Any]:
    """OpenAPI responses for these refusals, each a problem+json ``ProblemDetails``."""
    problem = {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
    }
    return {str(code): {"description": text, "content": problem} for code, text in statuses}


def openapi_document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(m, "validation") for m in (CaseRequest, LocalResult)]
        + [(m, "serialization") for m in (CaseView, CaseList, ProblemDetails)],
        ref_template="#/components/schemas/{model}",
    )
    errors = error_responses(
        (400, "malformed request"),
        (401, "no or bad token"),
        (403, "wrong role"),
        (404, "no such case (or not yours)"),
        (409, "conflict"),
        (422, "validation failed: every problem listed"),
    )
    with_body = {**errors, **error_responses(*BODY_REFUSALS)}
    case_response = {
        "description": "the case",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CaseView"}}},
    }
    case_id = {"name": "case_id", "in": "path", "required": True, "schema": {"type": "string"}}
    sub_id = {"name": "sub_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "xgw windows API (跨省通办)", "version": __version__},
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/cases": {
                "post": {
                    "summary": "File a case (bundle or single matter)",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY_SHAPE}$"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/CaseRequest"}
                            }
                        },
                    },
                    "responses": {
                        "201": case_response,
                        "200": {
                            **case_response,
                            "description": "the same request again: the same case",
                        },
                        **with_body,
                    },
                },
                "get": {
                    "summary": "List cases (a window sees its own hall's)",
                    "parameters": query_parameters(CaseListQuery),
                    "responses": {
                        "200": {
                            "description": "a page",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/CaseList"}
                                }
                            },
                        },
                        **errors,
                    },
                },
            },
            "/api/v1/cases/{case_id}": {
                "get": {
                    "summary": "A case: sub-matters, timeline, answers",
                    "parameters": [
                        case_id,
                        {
                            "name": "If-None-Match",
                            "in": "header",
                            "required": False,
                            "description": "the ETag of the case as last seen",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            **case_response,
                            "headers": {
                                "ETag": {
                                    "description": "changes whenever the case does",
                                    "schema": {"type": "string"},
                                }
                            },
                        },
                        "304": {"description": "unchanged since the ETag given"},
                        **errors,
                    },
                }
            },
            "/api/v1/cases/{case_id}/cancel": {
                "post": {
                    "summary": "Cancel while nothing was delivered",
                    "parameters": [case_id],
                    "responses": {"200": case_response, **errors},
                }
            },
            "/api/v1/cases/{case_id}/sub-matters/{sub_id}/retry": {
                "post": {
                    "summary": "Retry a failed sub-matter alone",
                    "parameters": [case_id, sub_id],
                    "responses": {"200": case_response, **errors},
                }
            },
            "/api/v1/cases/{case_id}/sub-matters/{sub_id}/complete": {
                "post": {
                    "summary": "Record that our own office completed a local sub-matter",
                    "parameters": [case_id, sub_id],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/LocalResult"}
                            }
                        },
                    },
                    "responses": {"200": case_response, **with_body},
                }
            },
        },
    }


__all__ = [
    "BODY_REFUSALS",
    "PROBLEM_JSON",
    "ROLES",
    "CaseRequest",
    "CasesApi",
    "authenticate",
    "openapi_document",
]

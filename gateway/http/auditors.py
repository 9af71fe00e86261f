"""The auditors' read-only API: query the exchange log, export a case's evidence package."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.audit.log import AuditLog, LogDamaged
from gateway.audit.verify import KnownKey, export_case
from gateway.core.problems import GatewayError, not_found
from gateway.http.windows import (
    BODY_REFUSALS,
    EXACT_TIME,
    PagedQuery,
    case_id_of,
    error_responses,
    parse_body,
    parse_query,
    query_parameters,
    require,
)
from gateway.logs import get_logger
from gateway.storage import RECORD_TIMES, Store, iso_of
from gateway.storage.logschema import COLUMNS
from mappings import identifiers

FILTERS = (
    "case_id",
    "message_id",
    "partner",
    "local_matter",
    "partner_matter",
    "outcome",
    "event",
    "direction",
    "error_code",
    "actor",
)

log = get_logger("gateway.http.auditors")


class AuditSearch(PagedQuery[tuple[str, str, int]]):
    """Search by fields; ``person_id`` (a 身份证号) is hashed with the audit key, never stored."""

    model_config = ConfigDict(extra="forbid")
    TIME_LAYOUT = "%Y-%m-%dT%H:%M:%S.%fZ"  # how the log writes an entry's time (audit.now_iso)
    CURSOR = (str, str, int)  # (time, node, seq)

    case_id: str | None = None
    message_id: str | None = None
    partner: str | None = None
    local_matter: str | None = None
    partner_matter: str | None = None
    outcome: str | None = None
    event: str | None = None
    direction: str | None = None
    error_code: str | None = None
    actor: str | None = None
    person_id: str | None = None
    limit: int = Field(100, ge=1, le=1000)


class AuditApi:
    def __init__(
        self,
        log: AuditLog,
        keys: list[KnownKey],
        archive_dir: Path | None = None,
        witness_keys: list[KnownKey] | None = None,
    ) -> None:
        """``keys``: our checkpoint keys; ``witness_keys``: the partners' (countersignatures)."""
        self.log, self.keys, self.archive_dir = log, keys, archive_dir
        self.witness_keys = witness_keys or []

    async def _query(self, search: AuditSearch) -> web.Response:
        filters: dict[str, str] = {k: v for k in FILTERS if (v := getattr(search, k)) is not None}
        if search.person_id is not None:
            try:
                filters["person"] = self.log.person(identifiers.check_resident_id(search.person_id))
            except identifiers.IdentifierError as exc:
                raise GatewayError("QUERY_INVALID", 422, "Bad query", str(exc)) from None
        assert set(filters) <= set(COLUMNS)
        entries, cursor = search.page(
            await asyncio.to_thread(
                self.log.query,
                filters,
                search.limit + 1,
                search.after(),
                search.from_,
                search.to,
            ),
            lambda entry: [entry["time"], entry["node"], entry["seq"]],
        )
        return web.Response(
            body=orjson.dumps({"items": entries, "next": cursor}), content_type="application/json"
        )

    async def entries(self, request: web.Request) -> web.Response:
        require(request, "auditor", "admin")
        raw: dict[str, Any] = dict(request.query)
        if "person_hash" in raw:
            raise GatewayError(
                "QUERY_INVALID", 400, "Bad query", "search by person with POST /api/v1/audit/search"
            )
        search = parse_query(AuditSearch, raw)
        if search.person_id is not None:  # never in a URL: it would sit in proxies' logs
            raise GatewayError(
                "QUERY_INVALID", 400, "Bad query", "search by person with POST /api/v1/audit/search"
            )
        return await self._query(search)

    async def search(self, request: web.Request) -> web.Response:
        require(request, "auditor", "admin")
        search, _ = await parse_body(request, AuditSearch)
        return await self._query(search)

    async def evidence(self, request: web.Request) -> web.Response:
        require(request, "auditor", "admin")
        case_id = case_id_of(request)
        if case_id is None:
            raise not_found("case in the exchange log")
        try:
            package = await asyncio.to_thread(
                export_case, self.log, case_id, self.keys, self.archive_dir, self.witness_keys
            )
        except LogDamaged as exc:  # a package would miss or misprove entries
            log.error("audit.log_damaged", alert=True, detail=str(exc))
            raise GatewayError(
                "LOG_DAMAGED", 500, "The exchange log is damaged",
                f"{exc}; `xgw audit verify` reports it",
            ) from None  # fmt: skip
        if not package["entries"]:
            raise not_found("case in the exchange log")
        return web.Response(
            body=orjson.dumps(package),
            content_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="evidence-{case_id}.json"'},
        )


class AuditPage(BaseModel):
    """A page of exchange-log entries, oldest first (fields: docs/exchange-log.md)."""

    items: list[dict[str, Any]]
    next: str | None = Field(None, description="cursor for the next page")


def openapi_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """The auditors' paths and the schemas they name, for the API's OpenAPI document."""
    schemas = {
        "AuditSearch": AuditSearch.model_json_schema(
            by_alias=True, ref_template="#/components/schemas/{model}"
        ),
        "AuditPage": AuditPage.model_json_schema(ref_template="#/components/schemas/{model}"),
    }
    page = {
        "description": "a page of entries",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AuditPage"}}},
    }
    refusals = error_responses(
        (400, "malformed query"),
        (401, "no or bad token"),
        (403, "not an auditor"),
        (422, "invalid 身份证号"),
    )
    in_url = [p for p in query_parameters(AuditSearch) if p["name"] != "person_id"]
    paths = {
        "/api/v1/audit/entries": {
            "get": {
                "summary": "Query the exchange log (auditor, admin); a person only by POST",
                "parameters": in_url,
                "responses": {"200": page, **refusals},
            }
        },
        "/api/v1/audit/search": {
            "post": {
                "summary": "The same query as a body, which may name a person by 身份证号",
                "requestBody": {
                    "required": False,  # none: no filters, as GET /entries without a query
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/AuditSearch"}}
                    },
                },
                "responses": {"200": page, **refusals, **error_responses(*BODY_REFUSALS)},
            }
        },
        "/api/v1/audit/cases/{case_id}/evidence": {
            "get": {
                "summary": "A case's evidence package, checked offline by xgw audit verify-package",
                "parameters": [
                    {
                        "name": "case_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {"description": "the evidence package (JSON attachment)"},
                    **error_responses(
                        (401, "no or bad token"),
                        (403, "not an auditor"),
                        (404, "no entries for that case"),
                    ),
                },
            }
        },
    }
    return paths, schemas


class RecordQuery(PagedQuery[tuple[float, int]]):
    """``GET /api/v1/operations/records``: exchanges in a time range, oldest first."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    TIME_LAYOUT = EXACT_TIME
    CURSOR = (float, int)  # (time, id)

    partner: str | None = Field(None, pattern=r"^[0-9]{6}$", description="a partner's region")
    direction: Literal["inbound", "outbound"] | None = None
    outcome: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_]{1,64}$", description="accepted, answered, or a code"
    )
    limit: int = Field(100, ge=1, le=1000, description="records per page")


class RecordsApi:
    """Operational records of exchanges (when each leg passed, sizes, outcome), for auditors
    and admins: what crossed the border, and how fast, in a time range."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def records(self, request: web.Request) -> web.Response:
        require(request, "auditor", "admin")
        query = parse_query(RecordQuery, request.query)
        where = {
            name: value
            for name in ("partner", "direction", "outcome")
            if (value := getattr(query, name)) is not None
        }
        rows, cursor = query.page(
            await self.store.exchange_records(where, query.limit + 1, query.after(), *query.span()),
            lambda row: [row["time"], row["id"]],
        )
        items = [
            {**row, **{name: iso_of(row[name]) for name in RECORD_TIMES if row[name] is not None}}
            for row in rows
        ]
        return web.Response(
            body=orjson.dumps({"items": items, "next": cursor}), content_type="application/json"
        )

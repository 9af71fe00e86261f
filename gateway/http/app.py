"""The aiohttp application: middleware (request id, errors, body limit) and health endpoints.

A thin shell: handlers parse, call the core, and render. Later issues add their routes through
``build_app``'s route tables.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST

from adapters import redis_client
from adapters.redis_nonces import RedisNonceStore
from gateway import __version__
from gateway.assembly import assemble, build_services
from gateway.audit.log import AuditEvent, AuditLog, AuditWriter, LogDamaged
from gateway.audit.memory import SignedHeadMemory
from gateway.audit.verify import KnownKey
from gateway.config import Settings, effective_config
from gateway.core.problems import (
    GatewayError,
    body_too_large,
    internal_error,
    not_found,
    store_unavailable,
)
from gateway.http.auditors import AuditApi, RecordsApi
from gateway.http.auditors import openapi_paths as audit_openapi_paths
from gateway.http.clients import MUTUAL_TLS, TRUSTED_PROXIES, networks
from gateway.http.console.sessions import session_key
from gateway.http.console.views import CSP as CONSOLE_CSP
from gateway.http.console.views import ROUTES as CONSOLE_ROUTES
from gateway.http.console.views import STATIC as CONSOLE_STATIC
from gateway.http.console.views import Console
from gateway.http.partners import PartnerApi
from gateway.http.problem import problem_response
from gateway.http.windows import (
    BODY_READ_SECONDS,
    MATERIAL_LIMITS,
    MAX_BODY_BYTES,
    MAX_FORM_BYTES,
    CasesApi,
    MaterialLimits,
    authenticate,
    openapi_document,
)
from gateway.keystore import load_data_keys
from gateway.logs import get_logger
from gateway.metrics import MeteredOpener, Metrics
from gateway.services.cases import CaseService
from gateway.services.delivery import Worker
from gateway.services.records import Recorder
from gateway.storage import Store, StoreError, StoreUnavailable, epoch_of, open_store
from security.digest import sm3_hex
from security.keypool import ContentKeyPool
from security.replay import MemoryNonceStore, NonceStore
from security.trust import TrustStore

log = get_logger("gateway.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
REQUEST_ID_HEADER = "X-Request-ID"


@dataclass
class Runtime:
    """What the running app holds: settings and the parts it opened at start-up."""

    settings: Settings
    redis: aioredis.Redis | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    store: Store | None = None
    audit: AuditWriter | None = None
    service: CaseService | None = None
    worker: Worker | None = None
    worker_task: asyncio.Task[None] | None = None
    metrics: Metrics = field(default_factory=Metrics)


RUNTIME = web.AppKey("runtime", Runtime)


def json_response(payload: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload, default=str), status=status, content_type="application/json"
    )


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id (the caller's if it is safe, else a new one) to every log line."""
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = offered if _SAFE_REQUEST_ID.match(offered) else uuid.uuid4().hex
    request["request_id"] = request_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    began = time.perf_counter()
    try:
        response = await _answer(request, handler)
        store = request.app[RUNTIME].store
        if request.method not in ("GET", "HEAD") and store is not None:
            try:
                await store.durable()  # what the answer acknowledges is on disk before it leaves
            except StoreUnavailable as exc:  # not durable: acknowledge nothing
                response = _store_unavailable(request, exc)
    finally:
        structlog.contextvars.clear_contextvars()
    response.headers[REQUEST_ID_HEADER] = request_id
    route = request.match_info.route.resource
    request.app[RUNTIME].metrics.http_seconds.labels(
        route.canonical if route is not None else "unmatched", request.method, response.status
    ).observe(time.perf_counter() - began)
    return response


def _store_unavailable(request: web.Request, exc: Exception) -> web.Response:
    """503 with Retry-After: the store cannot take writes now; nothing was acknowledged."""
    log.error("request.store_unavailable", path=request.path, error_type=type(exc).__name__)
    response = problem_response(store_unavailable(), request)
    response.headers["Retry-After"] = "5"
    return response


def _as_problem(http_error: web.HTTPException) -> GatewayError | None:
    """aiohttp's own refusals (body over the limit, no such route or method) in our terms."""
    if isinstance(http_error, web.HTTPRequestEntityTooLarge):
        return body_too_large()
    if http_error.status == 404:
        return not_found("resource")
    if http_error.status == 405:
        return GatewayError("METHOD_NOT_ALLOWED", 405, "Method not allowed")
    return None


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    allow: str | None = None
    try:
        try:
            response = await handler(request)
        except web.HTTPException as http_error:
            problem = _as_problem(http_error)
            if problem is None:
                raise
            allow = http_error.headers.get("Allow")  # a 405 names the methods (RFC 9110)
            raise problem from None
    except GatewayError as error:
        log.info("request.rejected", path=request.path, code=error.code, status=error.status)
        await _audit_rejection(request, error)
        refused = problem_response(error, request)
        if allow is not None:
            refused.headers["Allow"] = allow
        return refused
    except ConnectionError as exc:  # the client went away mid-request: its fault, not ours
        log.warning("request.client_gone", path=request.path, error_type=type(exc).__name__)
        return problem_response(
            GatewayError("CLIENT_GONE", 400, "The connection was closed mid-request"), request
        )
    except (StoreUnavailable, OSError) as exc:  # a full disk, a lost database
        return _store_unavailable(request, exc)
    except Exception as exc:
        # Never a stack trace or payload in the answer; the log gets the exception type only.
        log.error("request.failed", path=request.path, error_type=type(exc).__name__)
        return problem_response(internal_error(), request)
    log.debug("request.done", method=request.method, path=request.path, status=response.status)
    return response


async def _audit_rejection(request: web.Request, error: GatewayError) -> None:
    """Every refused API request is an audit entry (who, what, which code); never its body."""
    if not request.path.startswith(("/api/", "/partner/", "/soap/")):
        return
    token = request.get("token")
    await _append_rejection(
        request.app.get(RUNTIME),
        error.code,
        token.name if token is not None else None,
        {"method": request.method, "path": request.path, "status": error.status},
    )


async def _append_rejection(
    runtime: Runtime | None, code: str, actor: str | None, details: dict[str, Any]
) -> None:
    if runtime is None or runtime.audit is None:
        return
    try:
        await runtime.audit.append(
            AuditEvent(
                "request.rejected",
                "inbound",
                "rejected",
                error_code=code,
                actor=actor,
                details=details,
            )
        )
    except Exception as exc:  # the answer must not depend on the log being writable
        log.error("audit.append_failed", error_type=type(exc).__name__)


class ParserRefusals(logging.LoggerAdapter[logging.Logger]):
    """The logger aiohttp's request handler is given. A request that does not parse as HTTP is
    answered 400 by aiohttp before any of our code runs; its log call (the one hook aiohttp
    offers there) is where its audit entry is made, like every other refusal's."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._app = app
        self._writing: set[asyncio.Task[None]] = set()

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        super().log(level, msg, *args, **kwargs)
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError) and 400 <= error.code < 500:
            details = {"status": error.code, "error_type": type(error).__name__}
            refusal = _append_rejection(self._app.get(RUNTIME), "HTTP_MALFORMED", None, details)
            task = asyncio.get_running_loop().create_task(refusal)
            self._writing.add(task)  # held until written: the loop keeps only weak references
            task.add_done_callback(self._writing.discard)


@web.middleware
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/") and request.path != "/api/v1/openapi.json":
        runtime = request.app[RUNTIME]
        assert runtime.store is not None
        request["token"] = await authenticate(runtime.store, request)
    return await handler(request)


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok", "version": __version__})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store opens, the delivery loop runs and its claims (writes to the store
    every moment) work, and, when configured, Redis answers PING."""
    checks = await readiness(request.app[RUNTIME])
    ready = all(state == "ok" for state in checks.values())
    return json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def readiness(runtime: Runtime) -> dict[str, str]:
    """Each check's state: "ok", or what is wrong."""
    checks: dict[str, str] = {}
    if runtime.store is not None:
        try:
            await runtime.store.schema_version()
            checks["database"] = "ok"
        except StoreError:
            checks["database"] = "down"
        try:
            await runtime.store.probe_write(runtime.settings.node_id)
            checks["store_writes"] = "ok"
        except StoreError as exc:
            checks["store_writes"] = f"failing: {type(exc).__name__}"
    if runtime.worker_task is not None:
        worker = runtime.worker
        if runtime.worker_task.done():
            checks["delivery"] = "stopped"
        elif worker is not None and worker.claim_error is not None:
            checks["delivery"] = f"failing: {worker.claim_error}"
        else:
            checks["delivery"] = "ok"
    if runtime.redis is not None:
        checks["redis"] = "ok" if await redis_client.ping(runtime.redis) else "down"
    if runtime.audit is not None:
        refusal = runtime.audit.refusal
        checks["audit_signing"] = "ok" if refusal is None else f"refused: {refusal}"
    return checks


async def _open_runtime(app: web.Application) -> None:
    runtime = app[RUNTIME]
    settings = runtime.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.redis_url is not None:
        runtime.redis = redis_client.connect(
            settings.redis_url.get_secret_value(), socket_timeout=2.0
        )
    runtime.store = await open_store(
        settings.effective_database_url,
        group_commit=True,
        data_keys=await asyncio.to_thread(load_data_keys, settings),
        pool_size=settings.database_pool_size,
    )
    log.info("store.opened", database=runtime.store.description)
    # WSDLs, mappings, keys: off the loop
    parts = await asyncio.to_thread(assemble, settings, runtime.store)
    runtime.audit = AuditWriter(
        parts.audit,
        parts.signer,
        parts.backend,
        settings.audit_checkpoint_entries,
        settings.audit_checkpoint_seconds,
        memory=SignedHeadMemory(settings.effective_keys_dir, settings.node_id, runtime.redis),
    )
    runtime.audit.start()
    nonces: NonceStore = (
        RedisNonceStore(runtime.redis) if runtime.redis is not None else MemoryNonceStore()
    )
    metrics = runtime.metrics
    opener = MeteredOpener(
        metrics, parts.trust, parts.backend, nonces, settings.replay_window_seconds
    )
    # Our seals' content keys, wrapped for partners while the CPU is idle (security.keypool).
    key_pool = ContentKeyPool(
        parts.backend,
        settings.seal_key_pool_depth,
        on_first_full=lambda key: log.info("key_pool.filled", recipient_key_id=key.key_id),
    )
    key_pool.start()

    async def close_key_pool() -> None:
        await asyncio.to_thread(key_pool.close)
        log.info(
            "key_pool.stopped",
            seals_with_key_made_ahead=key_pool.taken_ready,
            seals_wrapping_their_own=key_pool.taken_cold,
        )

    runtime.closers.append(close_key_pool)

    async def report_sealing() -> None:
        keys = parts.store.data_keys
        if keys is not None:  # what sealing personal data at rest cost this run
            log.info(
                "store.at_rest",
                values_sealed=keys.sealed,
                values_opened=keys.opened,
                seconds=round(keys.seconds, 4),
                data_key=keys.current_id,
            )

    runtime.closers.append(report_sealing)
    owner = settings.instance_id or f"{socket.gethostname()}-{os.getpid()}"
    recorder = Recorder(parts.store)
    recorder.start()
    runtime.closers.append(recorder.close)
    services = build_services(
        parts, runtime.audit, opener, key_pool, owner, runtime.redis, metrics, recorder
    )
    _measure_levels(runtime, parts.store, parts.audit, parts.trust)
    runtime.service, runtime.worker = services.cases, services.worker
    runtime.worker_task = asyncio.create_task(runtime.worker.run(), name="delivery-worker")
    app[CASES_API] = CasesApi(services.cases, parts.store)
    inbound = services.inbound
    app[PARTNER_API] = PartnerApi(inbound, recorder, settings.node_id)
    app[RECORDS_API] = RecordsApi(parts.store)
    worker = services.worker

    async def partners_health() -> list[dict[str, Any]]:
        found = await parts.store.by_partner()
        circuits = worker.circuits()
        return [
            {
                "region": region,
                "name": partner.name,
                "circuit_open": circuits.get(region, False),
                "pending": found.get(region, {}).get("counts", {}).get("pending", 0),
                "in_flight": found.get(region, {}).get("counts", {}).get("in_flight", 0),
                "dead": found.get(region, {}).get("counts", {}).get("dead", 0),
                "last": found.get(region, {}).get("last_delivered"),
            }
            for region, partner in sorted(parts.partners.partners.items())
        ]

    app[CONSOLE] = Console(
        parts.store,
        services.cases,
        runtime.audit,
        parts.registry,
        settings.region_code,
        await asyncio.to_thread(session_key, settings.effective_keys_dir / "console-session.key"),
        settings.console_idle_minutes * 60,
        [KnownKey.of_own(own) for own in parts.trust.own],
        [KnownKey.of_partner(trusted) for trusted in parts.trust.partners.values()],
        settings.effective_audit_archive_dir,
        partners_health,
        settings.tls_cert_file is not None,
        parts.backend,
    )
    keys = [KnownKey.of_own(own) for own in parts.trust.own]
    app[AUDIT_API] = AuditApi(
        parts.audit,
        keys,
        settings.effective_audit_archive_dir,
        [KnownKey.of_partner(trusted) for trusted in parts.trust.partners.values()],
    )
    # Configuration, keys and mapping sets in force, so that changes show between starts.
    config = effective_config(settings)
    await runtime.audit.append(
        AuditEvent(
            "gateway.started",
            actor=owner,
            details={
                "instance": owner,
                "config_sm3": sm3_hex(orjson.dumps(config, option=orjson.OPT_SORT_KEYS)),
                "own_keys": [k.key.key_id for k in parts.trust.own],
                "partner_keys": sorted(parts.trust.partners),
                "revoked_keys": sorted(parts.trust.revoked),
                "mapping_sets": {
                    f"{a}-{b}": [v.version for v in vs]
                    for (a, b), vs in parts.registry.mapping_sets.items()
                },
            },
        )
    )

    # What start-up built (mapping data, WSDLs, keys) lives as long as the process: keep it out
    # of the cyclic collector's full passes, which would otherwise walk it all, pausing the loop.
    gc.freeze()
    # A young-generation pass costs about the same however many allocations preceded it (it
    # walks what is alive: the requests in flight), so fewer, later passes cost less in all
    # (the measurement: docs/architecture.md).
    gc.set_threshold(7000, 10, 10)

    async def archive_periodically() -> None:
        """Move entries older than audit_live_days to archive files, at start and hourly."""
        while True:
            before = (datetime.now(UTC) - timedelta(days=settings.audit_live_days)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
            try:
                target = await asyncio.to_thread(
                    parts.audit.archive, before, settings.effective_audit_archive_dir
                )
                if target is not None:
                    log.info("audit.archived", file=str(target))
            except LogDamaged as exc:  # stays in the live log; an operator must look
                log.error("audit.archive_failed", alert=True, detail=str(exc))
            except Exception as exc:
                log.error("audit.archive_failed", error_type=type(exc).__name__)
            await asyncio.sleep(3600)

    audit = runtime.audit

    async def purge_materials_periodically() -> None:
        """Delete materials past their retention, and uploads a crash left unfiled."""
        while True:
            now = time.time()
            try:
                purged = await parts.store.purge_materials(
                    now - settings.material_retention_days * 86400,
                    now - settings.material_upload_seconds - 60,
                )
                if purged:
                    log.info("materials.purged", materials=purged)
                    await audit.append(
                        AuditEvent("materials.purged", actor=owner, details={"materials": purged})
                    )
            except Exception as exc:  # the store may be away a while: try again next time
                log.error("materials.purge_failed", error_type=type(exc).__name__)
            await asyncio.sleep(settings.material_purge_seconds)

    archiver = asyncio.create_task(archive_periodically(), name="audit-archiver")
    purger = asyncio.create_task(purge_materials_periodically(), name="material-purger")

    async def stop_archiver() -> None:
        archiver.cancel()
        purger.cancel()
        await asyncio.gather(archiver, purger, return_exceptions=True)

    runtime.closers.append(stop_archiver)

    async def close_clients() -> None:
        await services.worker.close_clients()

    runtime.closers.append(close_clients)


async def _close_runtime(app: web.Application) -> None:
    runtime = app[RUNTIME]
    grace = runtime.settings.shutdown_grace_seconds
    if runtime.worker is not None:
        await runtime.worker.stop(grace)
    if runtime.worker_task is not None:
        await asyncio.gather(runtime.worker_task, return_exceptions=True)
    for close in reversed(runtime.closers):
        await close()
    if runtime.audit is not None:
        await runtime.audit.close()
    if runtime.store is not None:
        await runtime.store.close()
    if runtime.redis is not None:
        await runtime.redis.aclose()


CASES_API = web.AppKey("cases_api", CasesApi)
PARTNER_API = web.AppKey("partner_api", PartnerApi)
AUDIT_API = web.AppKey("audit_api", AuditApi)
RECORDS_API = web.AppKey("records_api", RecordsApi)
CONSOLE = web.AppKey("console", Console)


def _delegate(key: web.AppKey[Any], method: str) -> Handler:
    """A route to a method of a part made at start-up (routes must exist before it is)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        result: web.StreamResponse = await getattr(request.app[key], method)(request)
        return result

    return handler


def _console(name: str, roles: tuple[str, ...]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await request.app[CONSOLE].dispatch(request, name, roles)

    return handler


async def _console_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The console's pages: scripts and styles from the gateway only, never framed, never
    cached (they show personal data), no referrer."""
    if request.path.startswith("/console"):
        response.headers["Content-Security-Policy"] = CONSOLE_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if not request.path.startswith("/console/static/"):
            response.headers["Cache-Control"] = "no-store"


def _api(method: str) -> Handler:
    return _delegate(CASES_API, method)


def _audit(method: str) -> Handler:
    return _delegate(AUDIT_API, method)


def _partner(method: str) -> Handler:
    return _delegate(PARTNER_API, method)


async def openapi(_request: web.Request) -> web.Response:
    document = openapi_document()
    paths, schemas = audit_openapi_paths()
    document["paths"].update(paths)
    document["components"]["schemas"].update(schemas)
    return json_response(document)


def _measure_levels(runtime: Runtime, store: Store, audit: AuditLog, trust: TrustStore) -> None:
    """Levels a scrape reads when it comes, and the event-loop lag measured meanwhile."""
    metrics = runtime.metrics

    async def refresh() -> None:
        for status, count in (await store.counts()).items():
            metrics.outbox.labels(status).set(count)
        oldest = await store.oldest_pending()
        metrics.oldest_pending.set(round(time.time() - oldest, 3) if oldest is not None else 0)
        count, size = await store.materials_stored()
        metrics.materials.labels("count").set(count)
        metrics.materials.labels("bytes").set(size)
        unsigned, last = await asyncio.to_thread(
            lambda: (audit.unsigned_count(), audit.last_checkpoint())
        )
        metrics.audit_unsigned.set(unsigned)
        if runtime.audit is not None:
            metrics.audit_signing_refused.set(0 if runtime.audit.refusal is None else 1)
        metrics.audit_checkpoint_age.set(
            round(time.time() - epoch_of(last.time), 1) if last is not None else -1
        )
        for own in trust.own:
            metrics.set_key_expiry("ours", own.key.key_id, own.validity.not_after)
        for key_id, partner in trust.partners.items():
            metrics.set_key_expiry(partner.region, key_id, partner.validity.not_after)
        if runtime.worker is not None:
            for region, is_open in runtime.worker.circuits().items():
                metrics.circuit_open.labels(region).set(1 if is_open else 0)
        checks = await readiness(runtime)
        metrics.ready.set(1 if all(state == "ok" for state in checks.values()) else 0)

    metrics.on_scrape(refresh)
    watcher = asyncio.create_task(metrics.watch_loop(), name="loop-lag")

    async def stop_watcher() -> None:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)

    runtime.closers.append(stop_watcher)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus exposition, for a token of role ``monitor`` or ``admin``."""
    runtime = request.app[RUNTIME]
    assert runtime.store is not None
    try:
        token = await authenticate(runtime.store, request)
        if token.role not in ("monitor", "admin"):
            raise GatewayError("FORBIDDEN", 403, "Not allowed", "this needs the role monitor")
    except GatewayError as error:
        return problem_response(error, request)
    return web.Response(
        body=await runtime.metrics.exposition(),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


async def _server_banner(_request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp would name itself and Python with their versions: a scanner's first question.
    response.headers["Server"] = "xgw"


def build_app(settings: Settings) -> web.Application:
    handler_args: dict[str, Any] = {}
    app = web.Application(
        middlewares=[request_context, authentication],
        client_max_size=settings.max_body_bytes,
        handler_args=handler_args,
    )
    handler_args["logger"] = ParserRefusals(app)
    app[RUNTIME] = Runtime(settings=settings)
    app[BODY_READ_SECONDS] = settings.body_read_seconds
    app[MAX_FORM_BYTES] = min(settings.max_form_bytes, settings.max_body_bytes)
    app[MAX_BODY_BYTES] = settings.max_body_bytes
    app[MATERIAL_LIMITS] = MaterialLimits(
        settings.max_material_bytes,
        settings.max_case_material_bytes,
        settings.material_upload_seconds,
    )
    app[TRUSTED_PROXIES] = networks(settings.trusted_proxies)
    app[MUTUAL_TLS] = settings.tls_client_ca_file is not None
    app.on_startup.append(_open_runtime)
    app.on_response_prepare.append(_server_banner)
    app.on_response_prepare.append(_console_headers)
    app.on_cleanup.append(_close_runtime)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_post("/api/v1/cases", _api("create"))
    app.router.add_get("/api/v1/cases", _api("list"))
    app.router.add_get("/api/v1/cases/{case_id}", _api("get"))
    app.router.add_post("/api/v1/cases/{case_id}/cancel", _api("cancel"))
    app.router.add_post("/api/v1/cases/{case_id}/sub-matters/{sub_id}/retry", _api("retry"))
    app.router.add_post("/api/v1/cases/{case_id}/sub-matters/{sub_id}/complete", _api("complete"))
    app.router.add_get("/api/v1/audit/entries", _audit("entries"))
    app.router.add_post("/api/v1/audit/search", _audit("search"))
    app.router.add_get("/api/v1/operations/records", _delegate(RECORDS_API, "records"))
    app.router.add_get("/api/v1/audit/cases/{case_id}/evidence", _audit("evidence"))
    app.router.add_get("/soap/v1", _partner("soap_get"))
    app.router.add_post("/soap/v1", _partner("soap_post"))
    app.router.add_get("/partner/v1/openapi.json", _partner("openapi"))
    app.router.add_post(
        "/partner/v1/{operation:cases|results|status|witness}", _partner("rest_post")
    )
    for method, path, name, roles in CONSOLE_ROUTES:
        app.router.add_route(method, path, _console(name, roles))
    app.router.add_static("/console/static", CONSOLE_STATIC)
    return app

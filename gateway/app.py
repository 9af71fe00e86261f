"""The aiohttp application: middleware (request id, errors, body limit) and health endpoints.

A thin shell: handlers parse, call the core, and render. Later issues add their routes through
``build_app``'s route tables.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis.asyncio as aioredis
import structlog
from aiohttp import web

from adapters import redis_client
from gateway import __version__
from gateway.config import Settings
from gateway.logs import get_logger
from gateway.problems import (
    PROBLEM_JSON,
    GatewayError,
    body_too_large,
    internal_error,
    not_found,
)

log = get_logger("gateway.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
REQUEST_ID_HEADER = "X-Request-ID"


@dataclass
class Runtime:
    """What the running app holds: settings and the connections it opened."""

    settings: Settings
    redis: aioredis.Redis | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def database_path(self) -> Path:
        return self.settings.data_dir / "gateway.sqlite3"


RUNTIME = web.AppKey("runtime", Runtime)


def problem_response(error: GatewayError, request: web.Request | None = None) -> web.Response:
    request_id = request.get("request_id") if request is not None else None
    body = error.problem(
        instance=request.path if request is not None else None, request_id=request_id
    )
    return web.Response(body=orjson.dumps(body), status=error.status, content_type=PROBLEM_JSON)


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
    try:
        response = await _answer(request, handler)
    finally:
        structlog.contextvars.clear_contextvars()
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except GatewayError as error:
        log.info("request.rejected", path=request.path, code=error.code, status=error.status)
        return problem_response(error, request)
    except web.HTTPRequestEntityTooLarge:
        return problem_response(body_too_large(), request)
    except web.HTTPException as http_error:
        if http_error.status == 404:
            return problem_response(not_found("resource"), request)
        if http_error.status == 405:
            return problem_response(
                GatewayError("METHOD_NOT_ALLOWED", 405, "Method not allowed"), request
            )
        raise
    except Exception as exc:
        # Never a stack trace or payload in the answer; the log gets the exception type only.
        log.error("request.failed", path=request.path, error_type=type(exc).__name__)
        return problem_response(internal_error(), request)
    log.debug("request.done", method=request.method, path=request.path, status=response.status)
    return response


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok", "version": __version__})


def _database_ok(path: Path) -> bool:
    try:
        with sqlite3.connect(path, timeout=1.0) as connection:
            connection.execute("SELECT 1").fetchone()
        return True
    except sqlite3.Error:
        return False


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store opens and, when configured, Redis answers PING."""
    runtime = request.app[RUNTIME]
    checks: dict[str, str] = {"database": "ok" if _database_ok(runtime.database_path) else "down"}
    if runtime.redis is not None:
        checks["redis"] = "ok" if await redis_client.ping(runtime.redis) else "down"
    ready = all(state == "ok" for state in checks.values())
    return json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def _open_runtime(app: web.Application) -> None:
    runtime = app[RUNTIME]
    runtime.settings.data_dir.mkdir(parents=True, exist_ok=True)
    if runtime.settings.redis_url is not None:
        runtime.redis = redis_client.connect(
            runtime.settings.redis_url.get_secret_value(), socket_timeout=2.0
        )


async def _close_runtime(app: web.Application) -> None:
    runtime = app[RUNTIME]
    for close in reversed(runtime.closers):
        await close()
    if runtime.redis is not None:
        await runtime.redis.aclose()


def build_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[request_context], client_max_size=settings.max_body_bytes)
    app[RUNTIME] = Runtime(settings=settings)
    app.on_startup.append(_open_runtime)
    app.on_cleanup.append(_close_runtime)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app

"""A refusal as RFC 9457 problem+json, the same for every API (windows, partners, auditors)."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.core.problems import PROBLEM_JSON, GatewayError


def problem_response(error: GatewayError, request: web.Request | None = None) -> web.Response:
    """``error`` with the request's path and id; a 429 says when to try again."""
    request_id = request.get("request_id") if request is not None else None
    body = error.problem(
        instance=request.path if request is not None else None, request_id=request_id
    )
    headers = {"Retry-After": "60"} if error.status == 429 else None
    return web.Response(
        body=orjson.dumps(body), status=error.status, content_type=PROBLEM_JSON, headers=headers
    )

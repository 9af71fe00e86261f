"""Errors the gateway answers with: a stable code, a human title, an HTTP status (RFC 9457).

The same GatewayError renders as problem+json for REST and as a SOAP Fault for SOAP, so every
rejection carries one code whatever the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://xgw.example/problems/"  # stable identifiers, not fetched


@dataclass(frozen=True)
class FieldProblem:
    """One validation problem: where (a JSON pointer-ish path) and what."""

    location: str
    message: str
    code: str = "INVALID"

    def as_dict(self) -> dict[str, str]:
        return {"location": self.location, "message": self.message, "code": self.code}


@dataclass
class GatewayError(Exception):
    code: str
    status: int
    title: str
    detail: str | None = None
    problems: list[FieldProblem] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.code}: {self.detail or self.title}"

    def problem(self, instance: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code.lower().replace("_", "-"),
            "title": self.title,
            "status": self.status,
            "code": self.code,
        }
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if request_id:
            body["request_id"] = request_id
        if self.problems:
            body["errors"] = [p.as_dict() for p in self.problems]
        return body


def not_found(what: str) -> GatewayError:
    return GatewayError("NOT_FOUND", 404, "Not found", f"no such {what}")


def store_unavailable() -> GatewayError:
    """The store cannot take writes now (a full disk, say): nothing was acknowledged; the
    same request later is safe (its Idempotency-Key or message id)."""
    return GatewayError(
        "STORE_UNAVAILABLE", 503, "Service unavailable", "the store cannot take writes now"
    )


def internal_error() -> GatewayError:
    return GatewayError("INTERNAL", 500, "Internal error", "the gateway failed; see its log")


def body_too_large() -> GatewayError:
    return GatewayError(
        "BODY_TOO_LARGE", 413, "Request body too large", "the body exceeds the size limit"
    )

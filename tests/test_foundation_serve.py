"""`xgw serve` as a real subprocess on a loopback port: health, readiness, graceful stop."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Served, dead_port


def _get(url: str) -> tuple[int, dict[str, object], dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def test_healthz_and_readyz_with_embedded_defaults(tmp_path: Path) -> None:
    served = Served(tmp_path / "var")
    try:
        status, body, headers = _get(served.base + "/healthz")
        assert status == 200 and body["status"] == "ok"
        assert headers["X-Request-ID"]
        status, body, _ = _get(served.base + "/readyz")
        assert status == 200, body
        assert body["checks"] == {"database": "ok"}
        status, body, headers = _get(served.base + "/no/such/path")
        assert status == 404
        assert headers["Content-Type"].startswith("application/problem+json")
        assert body["code"] == "NOT_FOUND"
    finally:
        code, err = served.stop()
    assert code == 0
    assert b"gateway.stopped" in err
    assert (tmp_path / "var").is_dir()


@pytest.mark.redis
def test_readyz_with_redis_up(tmp_path: Path, redis_url: str) -> None:
    served = Served(tmp_path / "var", XGW_REDIS_URL=redis_url)
    try:
        status, body, _ = _get(served.base + "/readyz")
        assert status == 200
        assert body["checks"] == {"database": "ok", "redis": "ok"}
    finally:
        served.stop()


def test_readyz_is_503_while_configured_redis_is_down(tmp_path: Path) -> None:
    served = Served(tmp_path / "var", XGW_REDIS_URL=f"redis://127.0.0.1:{dead_port()}/0")
    try:
        status, body, _ = _get(served.base + "/healthz")
        assert status == 200  # alive, just not ready
        status, body, _ = _get(served.base + "/readyz")
        assert status == 503
        assert body["checks"] == {"database": "ok", "redis": "down"}
    finally:
        served.stop()


def test_request_id_from_caller_is_echoed_if_safe(tmp_path: Path) -> None:
    served = Served(tmp_path / "var")
    try:
        request = urllib.request.Request(
            served.base + "/healthz", headers={"X-Request-ID": "window-7-abcdef"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["X-Request-ID"] == "window-7-abcdef"
        request = urllib.request.Request(
            served.base + "/healthz", headers={"X-Request-ID": "bad id\twith spaces"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["X-Request-ID"] != "bad id\twith spaces"
    finally:
        served.stop()

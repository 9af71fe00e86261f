"""Shared fixtures: real Redis, free loopback ports, `xgw` as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
import redis

T = TypeVar("T")
# `make test` runs two pytest processes (pytest-xdist): each flushes a Redis database of its own
# (15, 14, …); the tests that use PostgreSQL run in one of them, one after the other (one of
# them restarts the server).
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_URL = os.environ.get("XGW_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{15 - WORKER}")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
START_REDIS_HINT = (
    "start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 "
    '--save "" --appendonly no'
)


# Each test module's kind (pytest -m unit | integration | e2e; `make test-fast` runs the first
# two). A module not listed here fails the run, so none goes unclassified.
KINDS = {
    "unit": {
        "test_lifecycle",
        "test_routing_core",
        "test_mappings_transforms",
        "test_mappings_identifiers",
        "test_mappings_materials",
        "test_security_primitives",
        "test_security_stream",
        "test_rate_limit",
        "test_layering",
        "test_console_sessions",
        "test_partner_soap_codec",
        "test_foundation_config",
        "test_foundation_logs",
        "test_foundation_docker",
    },
    "integration": {
        "test_store",
        "test_audit_log",
        "test_audit_evidence",
        "test_audit_vectors",
        "test_security_openssl",
        "test_security_envelope",
        "test_envelope_v2",
        "test_materials_wire",
        "test_security_keypool",
        "test_adapters_http",
    },
    "e2e": {
        "test_routing_e2e",
        "test_materials_e2e",
        "test_partner_inbound",
        "test_faults",
        "test_foundation_serve",
        "test_audit_api",
        "test_audit_witness",
        "test_console",
        "test_audit_cli",
        "test_security_cli",
        "test_hardening",
        "test_mappings_lint",
        "test_nodes",
        "test_operations",
    },
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups marked here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        kinds = [kind for kind, modules in KINDS.items() if module in modules]
        if len(kinds) != 1:
            raise pytest.UsageError(f"{module}: give it one kind in tests/conftest.py KINDS")
        item.add_marker(getattr(pytest.mark, kinds[0]))
        if module in ("test_nodes", "test_store") or "postgres_url" in getattr(
            item, "fixturenames", ()
        ):
            item.add_marker(pytest.mark.xdist_group("postgres"))


@pytest.hookimpl(trylast=True)  # after pytest-xdist has named each test's group
def pytest_collection_finish(session: pytest.Session) -> None:
    """Two PostgreSQL tests on two processes at once break each other (one restarts the
    server): if the grouping did not take, stop rather than run them side by side. It once
    failed silently (pytest-xdist#1386, pytest 9.2)."""
    if not getattr(session.config.option, "loadgroup", False):  # set in xdist's workers
        return
    for item in session.items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid.rsplit("]", 1)[-1]:
            raise pytest.UsageError(
                f"{item.nodeid}: pytest-xdist did not group it (--dist loadgroup); "
                "pyproject.toml pins the pytest that it works with"
            )


def _redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis (database 15, flushed). In CI its absence fails the run, never skips."""
    if not _redis_reachable(REDIS_URL):
        if IN_CI:
            pytest.fail(f"Redis not reachable at {REDIS_URL} in CI")
        pytest.skip(f"Redis not reachable at {REDIS_URL}; {START_REDIS_HINT}")
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


POSTGRES_ADMIN_URL = os.environ.get(
    "XGW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def postgres_admin(sql: str, admin_url: str = POSTGRES_ADMIN_URL) -> None:
    """One statement on the server's maintenance database (CREATE/DROP DATABASE)."""
    import asyncio
    import concurrent.futures

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    # in a thread of its own: the caller may be inside an event loop (an async fixture)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on that server (its URL), dropped afterwards (tests, benches)."""
    import uuid

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    postgres_admin(f'CREATE DATABASE "{name}"', admin_url)
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', admin_url)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty database on the real PostgreSQL (127.0.0.1:5432), dropped afterwards. In
    CI its absence fails the run, never skips."""
    try:
        postgres_admin("SELECT 1")
    except OSError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}")
    with scratch_database(POSTGRES_ADMIN_URL, "xgw_test") as url:
        yield url


def eventually(
    check: Callable[[], T | None], what: str, timeout: float = 30.0, every: float = 0.05
) -> T:
    """Wait for ``check`` to give something true and give it back; a deadline, never a fixed
    sleep, so a test neither races a slow machine nor waits longer than it must."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dead_port() -> int:
    """A loopback port nobody listens on (for 'partner/Redis is down')."""
    return free_port()


def xgw_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XGW_")}
    env.update({"XGW_DATA_DIR": str(data_dir), "XGW_LOG_FORMAT": "json", **extra})
    return env


def run_xgw(
    *args: str, env: dict[str, str], timeout: float = 60, input_bytes: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        capture_output=True,
        timeout=timeout,
        input=input_bytes,
        check=False,
    )


def wait_for_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers, even if not 2xx
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class Served:
    """`xgw serve` running as a subprocess on a free loopback port."""

    def __init__(self, data_dir: Path, *extra_args: str, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(self.port), *extra_args],
            env=xgw_env(data_dir, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_for_http(self.base + "/healthz", self.proc)

    def stop(self) -> tuple[int, bytes]:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err

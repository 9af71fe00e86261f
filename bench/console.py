"""The console's cost to the gateway: the hall's page with 100,000 cases stored, and the live
case page's refresh against a window polling the API.

Usage: python bench/console.py [--cases 100000] [--requests 2000] [--smoke]
Targets: the hall's page (today's cases of the hall, counted by status, the first 50 listed)
in <= 50 ms server time with 100,000 cases stored; the case page's refresh (every 2 s, 304
while nothing changed) costs the gateway no more than a window polling ``GET /api/v1/cases/{id}``
with ``If-None-Match`` as it does today.
Reference in the same run: the API's page of 50 cases (``GET /api/v1/cases?limit=50``) and the
API's case poll, against the same gateway process and store.

Server time is the gateway process's CPU time per request (``/proc/<pid>/stat``, in clock
ticks: over ``--requests`` sequential requests of a kind, so a tick is 0.005 ms a request), the
median of three rounds that alternate the kinds; the wall time over loopback, client included,
is printed beside it as its upper bound. The cases are SAMPLE data written straight into the gateway's
store (sealed with its data keys) while it is stopped; one case is filed through the API and
delivered, for the refreshes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config import load_settings
from gateway.keystore import load_data_keys
from gateway.storage import open_store
from tests.harness import Deployment
from tests.test_store import _case as sample_case

YEAR = 365 * 86400
ROUNDS = 3
HALL = "襄州区政务服务中心"  # the harness's window token's hall


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (clock ticks from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fill(deployment: Deployment, count: int) -> int:
    """``count`` SAMPLE cases of the hall spread over the last year, written while the
    gateway is stopped; how many of them were filed today (China time)."""
    settings = load_settings(environ=deployment.env)
    store = await open_store(
        settings.effective_database_url, data_keys=load_data_keys(settings), group_commit=True
    )
    now = time.time()
    midnight = now - (now + 8 * 3600) % 86400
    template = replace(sample_case(0), hall=HALL)
    today = 0
    for start in range(0, count, 1000):
        async with store.transaction() as tx:
            for n in range(start, min(count, start + 1000)):
                created = now - 60 - (n * 7919) % YEAR  # spread over the year before now
                today += created >= midnight
                await tx.insert_case(
                    replace(template, id=f"bench-{n:07d}", created=created, idem_key=f"b-{n}")
                )
        print(f"  filled {min(count, start + 1000):,}/{count:,}", end="\r", file=sys.stderr)
    print(file=sys.stderr)
    await store.close()
    return today


async def measure(
    pid: int, requests: int, call: Callable[[], Awaitable[int]], expect: int
) -> tuple[float, float]:
    """(gateway CPU ms a request, median wall ms a request) over ``requests`` calls."""
    for _ in range(5):  # warm: templates compiled, caches filled
        assert await call() == expect
    walls = []
    cpu_before = cpu_seconds(pid)
    for _ in range(requests):
        began = time.perf_counter()
        status = await call()
        walls.append(time.perf_counter() - began)
        assert status == expect, status
    cpu = (cpu_seconds(pid) - cpu_before) / requests
    return cpu * 1000, statistics.median(walls) * 1000


async def run(deployment: Deployment, requests: int) -> dict[str, tuple[float, float]]:
    gateway = deployment.gateways[0]
    assert gateway.proc is not None
    pid, url = gateway.proc.pid, deployment.url
    api = {"Authorization": f"Bearer {deployment.token}"}
    case = deployment.file("YJS-SBZR")
    deployment.wait([case["id"]])
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(
            f"{url}/console/login", data={"token": deployment.token}, allow_redirects=False
        ) as signed_in:
            assert signed_in.status == 303, signed_in.status
        live_url = f"{url}/console/cases/{case['id']}/live"
        async with http.get(live_url) as first:
            live_etag = first.headers["ETag"]
        async with http.get(f"{url}/api/v1/cases/{case['id']}", headers=api) as first:
            api_etag = first.headers["ETag"]

        def get(path: str, headers: dict[str, str] | None = None) -> Callable[[], Awaitable[int]]:
            async def call() -> int:
                async with http.get(f"{url}{path}", headers=headers or {}) as answer:
                    await answer.read()
                    return answer.status

            return call

        case_path = f"/api/v1/cases/{case['id']}"
        plan = {
            "hall page (console)": (get("/console/cases"), 200),
            "page of 50 (API)": (get("/api/v1/cases?limit=50", api), 200),
            "refresh, unchanged (console)": (
                get(live_url.removeprefix(url), {"If-None-Match": live_etag}),
                304,
            ),
            "poll, unchanged (API)": (get(case_path, {**api, "If-None-Match": api_etag}), 304),
            "refresh, changed (console)": (get(live_url.removeprefix(url)), 200),
            "poll, changed (API)": (get(case_path, api), 200),
        }
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in plan}
        for _ in range(ROUNDS):  # alternating, so that the machine's drift falls on both sides
            for name, (call, expect) in plan.items():
                rounds[name].append(await measure(pid, requests, call, expect))
        return {
            name: (
                statistics.median(cpu for cpu, _ in figures),
                statistics.median(wall for _, wall in figures),
            )
            for name, figures in rounds.items()
        }


def ratio(part: float, whole: float) -> str:
    """``part / whole``, or why not: CPU below the clock's tick over a short (smoke) run."""
    return f"{part / whole:.2f}x" if whole > 0 else "n/a (under one clock tick)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000, help="a kind, a round")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    cases, requests = (2000, 20) if args.smoke else (args.cases, args.requests)
    with tempfile.TemporaryDirectory() as folder:
        deployment = Deployment(Path(folder))
        try:
            deployment.gateways[0].stop()
            today = asyncio.run(fill(deployment, cases))
            deployment.gateways[0].start()
            print(f"{cases:,} SAMPLE cases stored, {today:,} of them today's")
            figures = asyncio.run(run(deployment, requests))
        finally:
            deployment.close()
    for name, (cpu, wall) in figures.items():
        print(f"{name:<30} {cpu:6.2f} ms gateway CPU a request, {wall:6.2f} ms wall (median)")
    hall, page = figures["hall page (console)"], figures["page of 50 (API)"]
    print(
        f"hall page: {hall[0]:.2f} ms server time (target <= 50), "
        f"{ratio(hall[0], page[0])} the API's page of 50"
    )
    for kind in ("unchanged", "changed"):
        console = figures[f"refresh, {kind} (console)"][0]
        polled = figures[f"poll, {kind} (API)"][0]
        print(f"case refresh, {kind}: {ratio(console, polled)} the API poll's CPU a request")
    # A minute of one open case page (a refresh every 2 s) against a window polling the API
    # as bench/e2e.py's windows do (every 0.5 s) and at the console's own pace
    unchanged = figures["refresh, unchanged (console)"][0]
    api = figures["poll, unchanged (API)"][0]
    print(
        f"a minute of one open case page: {30 * unchanged:.1f} ms CPU; a window polling the API "
        f"every 0.5 s {120 * api:.1f} ms ({ratio(30 * unchanged, 120 * api)}, target <= 1), "
        f"every 2 s {30 * api:.1f} ms ({ratio(unchanged, api)})"
    )
    if args.smoke:
        print("(smoke run: figures are not meaningful)")


if __name__ == "__main__":
    main()

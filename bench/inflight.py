"""The gateway's memory with many cases in flight: --cases 医疗费用报销 cases filed at once while
the partner takes --latency-ms to answer each message.

Usage: python bench/inflight.py [--cases 1000] [--latency-ms 5000] [--smoke]
Target: the gateway's resident memory stays under 300 MiB with 1,000 cases in flight (partner
latency 5 s). Reference in the same run: the same gateway's RSS idle after start-up, before any
case. The simulator runs in a process of its own, so the figures are the gateway's alone; the
partner's concurrency is raised to the most partners.yaml allows (256) and its rate limit lifted,
so that the cases wait on the partner's latency, not on our own limits. Cases are SAMPLE data.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._metering import rss_mib
from mappings.examples import sample_filing
from tests.harness import Deployment

BUNDLE = "YJS-YLBX"  # 医疗费用报销: two sub-matters to 新野


class Sampler(threading.Thread):
    """The process's RSS every 50 ms, its peak kept, and the most cases open at once."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.open, self.most_open = pid, 0.0, 0, 0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mib(self.pid))
            self.most_open = max(self.most_open, self.open)
            time.sleep(0.05)


async def file_all(url: str, token: str, cases: int, sampler: Sampler) -> list[str]:
    body = sample_filing(BUNDLE)
    headers = {"Authorization": f"Bearer {token}"}
    ids: list[str] = []
    gate = asyncio.Semaphore(64)

    async def one(http: aiohttp.ClientSession) -> None:
        async with (
            gate,
            http.post(
                f"{url}/api/v1/cases",
                json=body,
                headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
            ) as answer,
        ):
            assert answer.status == 201, (answer.status, await answer.text())
            ids.append((await answer.json())["id"])
            sampler.open += 1

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(one(http) for _ in range(cases)))
    return ids


async def wait_done(url: str, token: str, ids: list[str], sampler: Sampler, limit: float) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    pending = set(ids)
    async with aiohttp.ClientSession() as http:
        while pending:
            if time.monotonic() - started > limit:
                raise SystemExit(f"{len(pending)} cases not done within {limit:.0f} s")
            for case_id in list(pending)[:200]:
                async with http.get(f"{url}/api/v1/cases/{case_id}", headers=headers) as answer:
                    if (await answer.json())["status"] == "done":
                        pending.discard(case_id)
            sampler.open = len(pending)
            await asyncio.sleep(0.5)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--latency-ms", type=int, default=5000)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    cases, latency = (20, 200) if args.smoke else (args.cases, args.latency_ms)
    with tempfile.TemporaryDirectory() as folder:
        deployment = Deployment(
            Path(folder),
            separate_simulator=True,
            extra_env={"XGW_DELIVERY_LEASE_SECONDS": "60"},
        )
        try:
            deployment.configure_partner(
                "411329", max_concurrency=256, rate_limit_per_minute=1_000_000, timeout_seconds=25
            )
            deployment.faults({"*": {"latency_ms": latency}})
            gateway = deployment.gateways[0]
            assert gateway.proc is not None
            pid = gateway.proc.pid
            time.sleep(1.0)  # settled after start-up
            idle = rss_mib(pid)
            sampler = Sampler(pid)
            sampler.start()
            began = time.monotonic()
            ids = asyncio.run(file_all(deployment.url, deployment.token, cases, sampler))
            filed = time.monotonic() - began
            took = asyncio.run(
                wait_done(
                    deployment.url, deployment.token, ids, sampler, 60 + cases * latency / 1000
                )
            )
            sampler.running = False
            sampler.join()
            after = rss_mib(pid)
        finally:
            deployment.close()
    print(
        f"{cases:,} cases filed in {filed:.1f} s, all done {took:.1f} s later (partner latency {latency} ms)"
    )
    print(f"{'measure':44}  {'value':>9}  {'reference':>9}  {'ratio':>6}")
    print(
        f"{'gateway peak RSS, MiB (' + format(sampler.most_open, ',') + ' cases open at once)':44}  "
        f"{sampler.peak:9.1f}  {idle:9.1f}  {sampler.peak / idle:6.2f}  (ref: idle after start)"
    )
    print(f"{'gateway RSS after, MiB':44}  {after:9.1f}  {idle:9.1f}  {after / idle:6.2f}")
    print("target: peak RSS < 300 MiB with 1,000 cases in flight at 5 s partner latency")
    if args.smoke:
        print("(smoke run: figures are not meaningful)")


if __name__ == "__main__":
    main()

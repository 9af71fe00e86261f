"""End to end: N concurrent window clients filing 医疗费用报销 cases (two sub-matters, each a
sealed request and a sealed reply) against the gateway and the partner simulator on this machine.

Prints cases/s and p50/p99 latency from filing to done (server timeline), and in the same run:
- the crypto-only bound: the same seal/open work per case in a loop (ours + the partner's);
- a bare aiohttp pass-through (client → proxy → echo), the HTTP floor.
Targets: the gateway reaches >= 60% of the crypto-only bound; adds <= 5 ms at p50 over the
crypto time of a case.

Usage: python bench/e2e.py [--clients N] [--seconds S] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.demo import applicant_of, bundle_form
from security import envelope as env
from tests.conftest import free_port
from tests.harness import BenchServer
from tests.security_helpers import TO_XZ_PARTY, Pair


def crypto_bound(seconds: float) -> tuple[float, float]:
    """Cases/s and ms per case doing only a case's crypto, on one core, no thread hops: two
    messages, each sealed by us, opened by the partner, answered sealed, opened by us."""
    ours, theirs = Pair(), Pair()
    payload = os.urandom(600)

    def open_(pair: Pair, envelope: env.Envelope) -> None:
        pair.xz_opener.authenticate(envelope, env.now_utc())
        env.decrypt(envelope, pair.xz.decryption_key(envelope.recipient_key_id), pair.backend)

    def one_case() -> None:
        for _ in range(2):
            request = theirs.xy_sealer.seal(
                payload, receiver=TO_XZ_PARTY, kind="request", matter="M", idem_key="k"
            )
            open_(theirs, request)
            reply = ours.xy_sealer.seal(
                payload, receiver=TO_XZ_PARTY, kind="receipt", matter="M", idem_key="k"
            )
            open_(ours, reply)

    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        one_case()
        count += 1
    elapsed = time.perf_counter() - start
    return count / elapsed, elapsed / count * 1000


async def passthrough(seconds: float, clients: int) -> float:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    backend = web.Application()
    backend.router.add_post("/", echo)
    backend_runner = web.AppRunner(backend, access_log=None)
    await backend_runner.setup()
    backend_port = free_port()
    await web.TCPSite(backend_runner, "127.0.0.1", backend_port).start()
    session = aiohttp.ClientSession()

    async def proxy(request: web.Request) -> web.Response:
        async with session.post(
            f"http://127.0.0.1:{backend_port}/", data=await request.read()
        ) as response:
            return web.Response(body=await response.read(), status=response.status)

    front = web.Application()
    front.router.add_post("/", proxy)
    front_runner = web.AppRunner(front, access_log=None)
    await front_runner.setup()
    front_port = free_port()
    await web.TCPSite(front_runner, "127.0.0.1", front_port).start()
    done = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession() as client:

        async def loop_client() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with client.post(
                    f"http://127.0.0.1:{front_port}/", data=b"x" * 2000
                ) as response:
                    await response.read()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(loop_client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    await session.close()
    await front_runner.cleanup()
    await backend_runner.cleanup()
    return done / elapsed


async def drive(
    base: str, token: str, clients: int, seconds: float, poll: float = 0.1
) -> list[tuple[str, float]]:
    form = bundle_form("YJS-YLBX")
    body = {"bundle": "YJS-YLBX", "applicant": applicant_of(form), "form": form}
    filed: list[str] = []
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:

        async def client() -> None:
            while time.perf_counter() < deadline:
                async with session.post(
                    f"{base}/api/v1/cases", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
                ) as response:
                    case = await response.json()
                    assert response.status == 201, case
                filed.append(case["id"])
                while True:  # a window follows its case until done
                    async with session.get(f"{base}/api/v1/cases/{case['id']}") as response:
                        case = await response.json()
                    if case["status"] in ("done", "attention"):
                        break
                    await asyncio.sleep(poll)  # a window screen refreshing; latency: the timeline

        await asyncio.gather(*(client() for _ in range(clients)))
        results = []
        for case_id in filed:
            async with session.get(f"{base}/api/v1/cases/{case_id}") as response:
                case = await response.json()
            times = [
                datetime.fromisoformat(s["time"].replace("Z", "+00:00")) for s in case["timeline"]
            ]
            results.append((case["status"], (max(times) - min(times)).total_seconds() * 1000))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--separate-simulator",
        action="store_true",
        help="run the partner simulator in its own process (as partners are)",
    )
    parser.add_argument("--poll-seconds", type=float, default=0.1)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.seconds = 2, 1.0
    server = BenchServer(separate_simulator=args.separate_simulator)
    try:
        token = server.token()
        asyncio.run(drive(server.url, token, 2, 0.5))  # warm up
        single = [
            ms
            for status, ms in asyncio.run(
                drive(server.url, token, 1, 2.0 if not args.smoke else 0.5)
            )
            if status == "done"
        ]
        start = time.perf_counter()
        results = asyncio.run(
            drive(server.url, token, args.clients, args.seconds, args.poll_seconds)
        )
        elapsed = time.perf_counter() - start
    finally:
        server.close()
    done = [ms for status, ms in results if status == "done"]
    assert done, "no case completed"
    rate = len(done) / elapsed
    bound_rate, bound_ms = crypto_bound(2.0 if not args.smoke else 0.3)
    proxy_rate = asyncio.run(passthrough(3.0 if not args.smoke else 0.3, args.clients))
    p50 = statistics.median(done)
    p99 = sorted(done)[max(0, int(len(done) * 0.99) - 1)]
    where = "its own process" if args.separate_simulator else "the gateway's process"
    print(f"simulator in {where}")
    print(f"{args.clients} clients, {len(results)} cases filed, {len(done)} done in {elapsed:.1f}s")
    print(f"{'measure':40}  {'value':>10}  {'reference':>10}  {'ratio':>6}")
    print(
        f"{'cases/s (filing to done)':40}  {rate:10.1f}  {bound_rate:10.1f}  {rate / bound_rate:6.2f}  (ref: crypto-only bound)"
    )
    print(
        f"{'p50 filing→done (ms)':40}  {p50:10.1f}  {bound_ms:10.1f}  {'+%.1f' % (p50 - bound_ms):>6}  (ref: crypto time of one case)"
    )
    print(f"{'p99 filing→done (ms)':40}  {p99:10.1f}")
    one = statistics.median(single)
    print(
        f"{'p50 filing→done, one client (ms)':40}  {one:10.1f}  {bound_ms:10.1f}  {'+%.1f' % (one - bound_ms):>6}  (unloaded)"
    )
    print(f"{'bare aiohttp pass-through req/s':40}  {proxy_rate:10.0f}")
    print("targets: cases/s >= 0.60 x crypto-only bound; p50 <= crypto time + 5 ms")
    if args.smoke:
        print("(smoke run: figures are not meaningful)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

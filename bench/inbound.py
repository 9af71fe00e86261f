"""Inbound: sealed submissions per second and p99 through SOAP and REST, against the
crypto-only bound measured in the same run (what the gateway must do per submission: open the
partner's envelope — verify, unwrap, decrypt — and seal the receipt).

Usage: python bench/inbound.py [--clients N] [--count N] [--all-cores] [--smoke]
Target: >= 60% of the bound. On a machine with two CPUs or more the gateway process is pinned to
the first and this script to the others (--all-cores: not), so that the gateway has one core,
as the bounds do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from security import envelope as env
from security import envelope_xml
from tests.harness import BenchServer, DuringRun, gateway_cpu, percentile, timed_loop
from tests.partner_helpers import Partner, contact_letter
from tests.security_helpers import TO_XZ_PARTY, Pair

SOAP = (
    b'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
    b'<soap:Body><g:SubmitCaseRequest xmlns:g="urn:xgw:gateway:1">%s</g:SubmitCaseRequest></soap:Body></soap:Envelope>'
)


def crypto_bound(
    seconds: float,
    opens: int,
    seals: int,
    stop: Callable[[], bool] | None = None,
    cpu_time: bool = False,
) -> float:
    """Submissions/s if a submission cost only ``opens`` envelope openings (verify, unwrap,
    decrypt) and ``seals`` sealings, on one core, with no thread hops; see ``timed_loop``."""
    pair = Pair()
    payload = b"x" * 900
    sealed = [
        pair.xy_sealer.seal(payload, receiver=TO_XZ_PARTY, kind="request", matter="M", idem_key="k")
        for _ in range(64)
    ]
    key = pair.xz.decryption_key(sealed[0].recipient_key_id)
    turn = 0

    def one_submission() -> None:
        nonlocal turn
        for n in range(opens):
            envelope = sealed[(turn + n) % len(sealed)]
            pair.xz_opener.authenticate(envelope, env.now_utc())
            env.decrypt(envelope, key, pair.backend)
        for _ in range(seals):
            pair.xy_sealer.seal(
                b"receipt" * 8, receiver=TO_XZ_PARTY, kind="receipt", matter="M", idem_key="k"
            )
        turn += 1

    count, elapsed = timed_loop(one_submission, seconds, stop, cpu_time)
    return count / elapsed


async def fire(
    url: str, bodies: list[bytes], headers: dict[str, str], clients: int
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    queue = list(reversed(bodies))
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            nonlocal errors
            while queue:
                body = queue.pop()
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, latencies, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument(
        "--all-cores",
        action="store_true",
        help="let the gateway use every CPU; by default it is pinned to one CPU and this "
        "script to the others, so that the gateway has one core, as the bounds do",
    )
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.count = 2, 20
    gateway_on = gateway_cpu(args.all_cores)
    # The bounds are measured before and after the gateway runs, and averaged, and bound B
    # also during each run (see DuringRun): on a shared machine the speed drifts.
    seconds = 0.3 if args.smoke else 1.0
    before = (crypto_bound(seconds, 1, 1), crypto_bound(seconds, 3, 3))
    server = BenchServer(cpu=gateway_on)
    rows = []
    try:
        port = server.port
        partner = Partner(server.folder / "var")
        letter = contact_letter()
        for name, url, headers, encode in (
            (
                "REST",
                f"http://127.0.0.1:{port}/partner/v1/cases",
                {"Content-Type": "application/json"},
                lambda e: e.to_json(),
            ),
            (
                "SOAP",
                f"http://127.0.0.1:{port}/soap/v1",
                {
                    "Content-Type": "text/xml; charset=utf-8",
                    "SOAPAction": '"urn:xgw:gateway:1/SubmitCase"',
                },
                lambda e: SOAP % envelope_xml.to_xml(e).split(b"?>", 1)[1],
            ),
        ):
            bodies = [
                encode(partner.seal(letter, idem_key=f"{name}-{i}")) for i in range(args.count)
            ]
            meter = DuringRun(crypto_bound, 3600.0, 3, 3)
            meter.start()
            started = time.perf_counter()
            _receipts_rate, latencies, errors = asyncio.run(
                fire(url, bodies, headers, args.clients)
            )
            # Sustained rate: until every submission's result has reached the partner too, so a
            # backlog left behind the receipts cannot flatter the figure.
            wanted = {f"{name}-{i}" for i in range(args.count)}
            deadline = time.perf_counter() + 120
            while time.perf_counter() < deadline:
                with urllib.request.urlopen(
                    server.simulator_url + "/_sim/stats", timeout=10
                ) as response:
                    results = json.loads(response.read())["411329"]["results"]
                if wanted <= set(results):
                    break
                time.sleep(0.05)
            rate = args.count / (time.perf_counter() - started)
            during = meter.result()
            meter.close()
            rows.append(
                (
                    name,
                    rate,
                    during,
                    statistics.median(latencies),
                    percentile(latencies, 0.99),
                    errors,
                )
            )
    finally:
        server.close()
    after = (crypto_bound(seconds, 1, 1), crypto_bound(seconds, 3, 3))
    # averaged as times per submission, the quantity that adds up
    narrow, full = (2 / (1 / b + 1 / a) for b, a in zip(before, after, strict=True))
    print(
        f"gateway process {'pinned to one CPU' if gateway_on is not None else 'free to use every CPU'}"
    )
    print(
        f"{'protocol':8}  {'subm/s':>8}  {'bound A':>8}  {'ratio':>6}  {'bound B':>8}  {'ratio':>6}  "
        f"{'B during':>8}  {'ratio':>6}  {'p50 ms':>7}  {'p99 ms':>7}  errors"
    )
    for name, rate, during, p50, p99, errors in rows:
        print(
            f"{name:8}  {rate:8.0f}  {narrow:8.0f}  {rate / narrow:6.2f}  {full:8.0f}  {rate / full:6.2f}  "
            f"{during:8.0f}  {rate / during:6.2f}  {p50:7.1f}  {p99:7.1f}  {errors}"
        )
    print("bound A: open the submission + seal its receipt (the request path alone), one core")
    print("bound B: all the seal/open work one submission causes in this run: open it, seal the")
    print("         receipt, seal the result for the partner, the simulated partner opening it and")
    print("         sealing its receipt, and our opening that (3 opens + 3 seals), one core")
    print("B during: bound B measured while that protocol's run went on, per CPU second of its")
    print("         own process (on the load generator's CPU): the same moment's machine speed")
    print("subm/s counts a submission when its result has reached the partner (sustained rate)")
    print(
        f"bounds before / after the run: A {before[0]:.0f} / {after[0]:.0f}, "
        f"B {before[1]:.0f} / {after[1]:.0f} submissions/s"
    )
    print("target: >= 0.60 of the bound")
    if args.smoke:
        print("(smoke run: figures are not meaningful)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

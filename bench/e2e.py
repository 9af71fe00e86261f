"""End to end: windows filing 医疗费用报销 cases (two sub-matters, each a sealed request and a
sealed reply) against the gateway and the partner simulator on this machine.

A window files a case and refreshes it every --poll-seconds until it is done, then files the
next. Latency is filing to done on the case's own timeline (server clock), so how often a window
refreshes does not change it. Prints, with the reference measured in the same run:
- cases/s with --clients windows in a closed loop (saturated), counted while every window was
  busy (after a warm-up second, up to the deadline) — ratio to the crypto-only bound: the same
  seal/open work per case (ours and the partner's) in a loop on one core, no I/O, measured
  in CPU time during the saturated run (beside the windows, on their CPU);
- p50/p99 filing→done with one window (unloaded) and at half the saturated rate (open loop:
  filings arrive at that pace whatever the gateway does) — difference to the crypto time of a
  case; saturated latency is only the closed loop's clients/rate and is printed for completeness;
- a bare aiohttp pass-through (client → proxy → echo), the HTTP floor.
On a machine with two CPUs or more the gateway process is pinned to the first and this script
to the others (--all-cores: not), so that the gateway has one core, as the bound does.
Targets: cases/s >= 60% of the crypto-only bound; p50 <= crypto time + 5 ms.

Usage: python bench/e2e.py [--clients N] [--seconds S] [--poll-seconds P]
                           [--separate-simulator] [--all-cores] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.demo import applicant_of, bundle_form
from security import envelope as env
from tests.conftest import free_port
from tests.harness import BenchServer, DuringRun, gateway_cpu, percentile, timed_loop
from tests.security_helpers import TO_XZ_PARTY, Pair


def crypto_bound(
    seconds: float, stop: Callable[[], bool] | None = None, cpu_time: bool = False
) -> tuple[float, float, float]:
    """A case's crypto alone, on one core, no I/O: two messages, each sealed by us, opened by
    the partner, answered sealed, opened by us. Returns cases/s, ms per case, and the ms of
    our own share (our seals and our openings of the answers); see ``timed_loop``."""
    ours, theirs = Pair(), Pair()
    payload = os.urandom(600)

    def open_(pair: Pair, envelope: env.Envelope) -> None:
        pair.xz_opener.authenticate(envelope, env.now_utc())
        env.decrypt(envelope, pair.xz.decryption_key(envelope.recipient_key_id), pair.backend)

    own = 0.0

    def one_case() -> None:
        nonlocal own
        for _ in range(2):
            began = time.perf_counter()
            request = ours.xy_sealer.seal(
                payload, receiver=TO_XZ_PARTY, kind="request", matter="M", idem_key="k"
            )
            sealed = time.perf_counter()
            open_(ours, request)
            reply = theirs.xy_sealer.seal(
                payload, receiver=TO_XZ_PARTY, kind="receipt", matter="M", idem_key="k"
            )
            answered = time.perf_counter()
            open_(theirs, reply)
            own += (sealed - began) + (time.perf_counter() - answered)

    count, elapsed = timed_loop(one_case, seconds, stop, cpu_time)
    return count / elapsed, elapsed / count * 1000, own / count * 1000


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


@dataclass(frozen=True)
class Outcome:
    status: str
    filed_at: float  # server timeline, seconds since the epoch
    finished_at: float
    ms: float  # filing to done


def _outcome(case: dict[str, Any]) -> Outcome:
    times = [
        datetime.fromisoformat(s["time"].replace("Z", "+00:00")).timestamp()
        for s in case["timeline"]
    ]
    return Outcome(case["status"], min(times), max(times), (max(times) - min(times)) * 1000)


async def _file_and_follow(
    session: aiohttp.ClientSession, base: str, body: dict[str, Any], poll: float
) -> Outcome:
    """What a window does: file a case, then refresh it every ``poll`` seconds until done,
    asking only for a change (If-None-Match with the last ETag)."""
    async with session.post(
        f"{base}/api/v1/cases", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
    ) as response:
        case = await response.json()
        assert response.status == 201, case
        etag = response.headers["ETag"]
    while case["status"] not in ("done", "attention"):
        await asyncio.sleep(poll)
        async with session.get(
            f"{base}/api/v1/cases/{case['id']}", headers={"If-None-Match": etag}
        ) as response:
            if response.status == 304:
                continue
            case = await response.json()
            etag = response.headers["ETag"]
    return _outcome(case)


def _session(token: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {token}"},
        connector=aiohttp.TCPConnector(limit=0),
    )


def _body() -> dict[str, Any]:
    form = bundle_form("YJS-YLBX")
    return {"bundle": "YJS-YLBX", "applicant": applicant_of(form), "form": form}


async def drive(
    base: str, token: str, clients: int, seconds: float, poll: float
) -> tuple[list[Outcome], float, float]:
    """``clients`` windows in a closed loop for ``seconds``: (outcomes, start, deadline)."""
    body = _body()
    outcomes: list[Outcome] = []
    start = time.time()
    deadline = start + seconds
    async with _session(token) as session:

        async def window() -> None:
            while time.time() < deadline:
                outcomes.append(await _file_and_follow(session, base, body, poll))

        await asyncio.gather(*(window() for _ in range(clients)))
    return outcomes, start, deadline


async def paced(base: str, token: str, rate: float, seconds: float, poll: float) -> list[Outcome]:
    """Open loop: a new filing every 1/rate seconds, whatever the gateway's pace."""
    body = _body()
    async with _session(token) as session:
        tasks = []
        start = time.perf_counter()
        for i in range(max(1, int(rate * seconds))):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(_file_and_follow(session, base, body, poll)))
        return list(await asyncio.gather(*tasks))


def steady_rate(outcomes: list[Outcome], start: float, deadline: float) -> tuple[float, int]:
    """Cases done per second while every window was busy: from one warm-up second after the
    start to the deadline (the drain after it, with windows idling, is not the gateway's pace)."""
    warm = min(1.0, (deadline - start) / 5)
    window = [o for o in outcomes if start + warm <= o.finished_at <= deadline]
    return len(window) / (deadline - start - warm), len(window)


def process_cpu(pid: int) -> float:
    """CPU seconds a process has used (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--separate-simulator",
        action="store_true",
        help="run the partner simulator in its own process (as partners are)",
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=0.5, help="how often a window refreshes its case"
    )
    parser.add_argument(
        "--all-cores",
        action="store_true",
        help="let the gateway use every CPU (its audit and key-pool threads then run beside "
        "the loop); by default it is pinned to one CPU and this script to the others, so that "
        "the gateway has one core, as the bound does",
    )
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.seconds = 2, 1.0
    gateway_on = gateway_cpu(args.all_cores)
    # The bound is measured before and after the gateway runs (the reference for latency), and
    # during the saturated run (the reference for throughput; see DuringRun).
    seconds = 1.0 if not args.smoke else 0.3
    before = crypto_bound(seconds)
    server = BenchServer(separate_simulator=args.separate_simulator, cpu=gateway_on)
    meter = DuringRun(crypto_bound, 3600.0)
    try:
        token = server.token()
        asyncio.run(drive(server.url, token, 2, 0.5, 0.01))  # warm up
        single, _, _ = asyncio.run(drive(server.url, token, 1, 3.0 if not args.smoke else 0.5, 0.1))
        cpu_before = process_cpu(server.proc.pid)
        meter.start()
        outcomes, start, deadline = asyncio.run(
            drive(server.url, token, args.clients, args.seconds, args.poll_seconds)
        )
        during = meter.result()
        cpu_seconds = process_cpu(server.proc.pid) - cpu_before
        cpu_ms = cpu_seconds / max(1, len(outcomes)) * 1000
        cores = cpu_seconds / (time.time() - start)
        rate, counted = steady_rate(outcomes, start, deadline)
        half = asyncio.run(paced(server.url, token, rate / 2, args.seconds / 2, args.poll_seconds))
    finally:
        server.close()
        meter.close()
    done = [o.ms for o in outcomes if o.status == "done"]
    assert done and counted, "no case completed"
    after = crypto_bound(seconds)
    bound_ms, own_ms = ((a + b) / 2 for a, b in zip(before[1:], after[1:], strict=True))
    during_rate, during_ms = during[0], during[1]
    proxy_rate = asyncio.run(passthrough(3.0 if not args.smoke else 0.3, args.clients))
    where = "its own process" if args.separate_simulator else "the gateway's process"
    half_done = [o.ms for o in half if o.status == "done"]
    print(
        f"simulator in {where}; windows refresh every {args.poll_seconds:g}s; gateway process "
        + ("pinned to one CPU" if gateway_on is not None else "free to use every CPU")
        + f", used {cores:.2f} cores while saturated"
    )
    print(
        f"{args.clients} windows for {args.seconds:g}s: {len(outcomes)} cases, "
        f"{len(done)} done, {counted} of them in the steady window"
    )
    print(f"{'measure':40}  {'value':>10}  {'reference':>10}  {'ratio':>6}")
    print(
        f"{'cases/s (filing to done), saturated':40}  {rate:10.1f}  {during_rate:10.1f}  "
        f"{rate / during_rate:6.2f}  (ref: crypto-only bound, during the run)"
    )
    print(
        f"{'':40}  {'':10}  {1000 / bound_ms:10.1f}  {rate * bound_ms / 1000:6.2f}  "
        "(ref: the same bound, before and after the run)"
    )
    # The same comparison without the scheduler's noise: the gateway process's CPU per case.
    print(
        f"{'gateway process CPU per case (ms)':40}  {cpu_ms:10.2f}  {during_ms:10.2f}  "
        f"{during_ms / cpu_ms:6.2f}  (ref: crypto time of one case, during the run)"
    )
    if args.separate_simulator:  # the partner's half of the crypto runs on the other core
        print(
            f"{'cases/s vs our own share of the crypto':40}  {rate:10.1f}  {1000 / own_ms:10.1f}  "
            f"{rate * own_ms / 1000:6.2f}  (ref: our seals + openings only)"
        )
    for label, values in (
        ("unloaded (one window)", [o.ms for o in single if o.status == "done"]),
        (f"half load ({rate / 2:.0f} filings/s)", half_done),
    ):
        p50 = statistics.median(values)
        print(
            f"{'p50 filing→done (ms), ' + label:40}  {p50:10.1f}  {bound_ms:10.1f}  "
            f"{'+%.1f' % (p50 - bound_ms):>6}  (ref: crypto time of one case)"
        )
        print(f"{'p99 filing→done (ms), ' + label:40}  {percentile(values, 0.99):10.1f}")
    print(
        f"{'p50 filing→done (ms), saturated':40}  {statistics.median(done):10.1f}"
        f"  (closed loop: {args.clients} windows / cases/s)"
    )
    print(f"{'bare aiohttp pass-through req/s':40}  {proxy_rate:10.0f}")
    print(
        f"crypto-only bound before / during / after the saturated run: {before[0]:.1f} / "
        f"{during_rate:.1f} / {after[0]:.1f} cases/s (during: per CPU second, beside the windows)"
    )
    print("targets: cases/s >= 0.60 x crypto-only bound; p50 <= crypto time + 5 ms")
    if args.smoke:
        print("(smoke run: figures are not meaningful)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Metering for the benchmarks: timed loops, a crypto bound measured on a chosen core while a
run goes on (``DuringRun``), CPU accounting, and a quiet gateway to measure (``BenchServer``).
The method is in ``bench/README.md``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import free_port, wait_for_http
from tests.harness import ROOT, write_partners


def timed_loop(
    step: Callable[[], object],
    seconds: float,
    stop: Callable[[], bool] | None = None,
    cpu_time: bool = False,
) -> tuple[int, float]:
    """The benchmarks' crypto-only bounds: run ``step`` for ``seconds`` of wall time (or until
    ``stop()``), at least once. Returns (times run, seconds taken) — with ``cpu_time`` the CPU
    seconds this process used, so that a bound sharing its CPU with the load generator is
    still one core's."""
    clock = time.process_time if cpu_time else time.perf_counter
    count, began, deadline = 0, clock(), time.perf_counter() + seconds
    while count == 0 or (time.perf_counter() < deadline and not (stop is not None and stop())):
        step()
        count += 1
    return count, clock() - began


def rate(operation: Callable[[], object], seconds: float) -> float:
    """The micro-benchmarks' operations per second on one core (wall clock)."""
    count, elapsed = timed_loop(operation, seconds)
    return count / elapsed


# Beside a saturated gateway the meter samples its core in bursts: a real-time (SCHED_FIFO)
# process has the core to itself for BURST_SECONDS out of every BURST_EVERY, so it runs with
# warm caches. Time-shared at a lower priority instead, it is cut into slivers between the
# gateway's work and reads the crypto 15-25% slower than it is (measured), which would
# flatter the gateway. Without the privilege for SCHED_FIFO: SHARING_NICE, and the figure
# says so.
BURST_SECONDS, BURST_EVERY = 0.1, 1.0
SHARING_NICE = 10


def _mean(outcomes: list[Any]) -> Any:
    """Element by element (the bursts are equally long, so a mean rate is the overall rate)."""
    if isinstance(outcomes[0], tuple):
        return tuple(sum(column) / len(column) for column in zip(*outcomes, strict=True))
    return sum(outcomes) / len(outcomes)


def _set_priority(priority: int | str) -> str:
    """The scheduling the meter got: "idle", "bursts" or "nice N"."""
    if priority == "idle":  # runs only when the CPU has nothing else to do; yields at once
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "idle"
    if priority == "bursts":
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            return "bursts"
        except OSError:  # no privilege (root or CAP_SYS_NICE), or no real-time budget
            priority = SHARING_NICE
    os.setpriority(os.PRIO_PROCESS, 0, int(priority))
    return f"nice {priority}"


def _meter_main(
    function: Callable[..., Any],
    args: tuple[Any, ...],
    cpu: int | None,
    priority: int | str,
    starts: Any,
    stop: Any,
    results: Any,
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    method = _set_priority(priority)
    function(*args, stop=lambda: True, cpu_time=True)  # first calls' one-off costs, not timed
    results.put(("ready", method))  # imports done, warmed up
    while True:  # one measurement per start() … result(), until terminated
        starts.get()  # a queued start is never missed, however soon after it stop is set
        cpu_began, wall_began = time.process_time(), time.perf_counter()
        if method == "bursts":
            outcomes: list[Any] = []
            while not outcomes or not stop.is_set():
                burst_ends = time.perf_counter() + BURST_SECONDS
                outcomes.append(
                    function(
                        *args,
                        stop=lambda ends=burst_ends: stop.is_set() or time.perf_counter() > ends,
                        cpu_time=True,
                    )
                )
                stop.wait(BURST_EVERY - BURST_SECONDS)
            outcome = _mean(outcomes)
        else:
            outcome = function(*args, stop=stop.is_set, cpu_time=True)
        share = (time.process_time() - cpu_began) / (time.perf_counter() - wall_began)
        results.put((outcome, share))


class DuringRun:
    """A crypto-only bound measured while the gateway runs, in a process of its own (spawned,
    so it shares nothing with this one), timed in CPU seconds. ``cpu``: the meter runs on that
    CPU — the gateway's own (see ``gateway_cpu``): on this kind of machine each virtual CPU's
    speed drifts by up to a factor of two within seconds, independently of the other's, so
    only a bound taken on the same core at the same moments is the gateway's reference.
    ``priority``: ``"bursts"`` beside a saturated gateway (see BURST_SECONDS; ``method`` tells
    whether the privilege for it was there), ``"idle"`` (SCHED_IDLE: only the time the gateway
    leaves idle, and the gateway preempts it as it wakes — for latency runs, where the gateway
    must not be held up), or a niceness. ``function(*args, stop=..., cpu_time=True)`` must be
    importable (module level). Made ahead (returns once the process has started, imported and
    run ``function`` once untimed: first calls cost more), then ``start()`` as a run starts
    and ``result()`` as it ends, as many times as there are runs; ``share`` is then the part
    of the wall time the meter used."""

    def __init__(
        self,
        function: Callable[..., Any],
        *args: Any,
        cpu: int | None = None,
        priority: int | str = 0,
    ) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._starts, self._stop, self._results = context.Queue(), context.Event(), context.Queue()
        self._process = context.Process(
            target=_meter_main,
            args=(function, args, cpu, priority, self._starts, self._stop, self._results),
            daemon=True,
        )
        self._process.start()
        self.share = float("nan")
        ready, self.method = self._results.get(timeout=120)
        assert ready == "ready"

    def start(self) -> None:
        self._stop.clear()
        self._starts.put(True)

    def result(self) -> Any:
        self._stop.set()
        outcome, self.share = self._results.get(timeout=120)
        return outcome

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()


def process_cpu(pid: int) -> float:
    """CPU seconds a process has used (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gateway_cpu(all_cores: bool) -> int | None:
    """The benchmarks' default on a machine with two CPUs or more: this process (load
    generator, bounds) moves to every CPU but the first, and the first is returned for the
    gateway (``BenchServer(cpu=...)``), which so has one core, as a crypto-only bound has.
    None with ``all_cores`` or on one CPU."""
    if all_cores or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    os.sched_setaffinity(0, cpus[1:])
    return cpus[0]


def percentile(values: list[float], share: float) -> float:
    """The benchmarks' percentiles: the value below which ``share`` of them lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(len(ordered) * share) - 1))]


class BenchServer:
    """`xgw serve --with-simulator` in a scratch folder, quiet, for the benchmarks."""

    def __init__(
        self,
        rate_limit_per_minute: int = 10_000_000,
        separate_simulator: bool = False,
        cpu: int | None = None,
        extra_env: dict[str, str] | None = None,
        serve_args: tuple[str, ...] = (),
    ) -> None:
        """``cpu``: the gateway process (all its threads) runs on that one CPU only;
        ``extra_env``: more settings (XGW_*); ``serve_args``: more ``xgw serve`` options."""
        import tempfile

        self.folder = Path(tempfile.mkdtemp(prefix="xgw-bench-"))
        self.port, sim_port = free_port(), free_port()
        partners = self.folder / "partners.yaml"
        write_partners(partners, sim_port, "mixed", rate_limit_per_minute=rate_limit_per_minute)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("XGW_")}
        self.env.update(
            {
                "XGW_DATA_DIR": str(self.folder / "var"),
                "XGW_PORT": str(self.port),
                "XGW_SIMULATOR_PORT": str(sim_port),
                "XGW_LOG_LEVEL": "info",  # few lines; at stop, what sealing at rest cost
                "XGW_LOG_FORMAT": "json",
                "XGW_PARTNERS_FILE": str(partners),
                **(extra_env or {}),
            }
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.simulator_url = f"http://127.0.0.1:{sim_port}"
        self.simulator: subprocess.Popen[bytes] | None = None
        if separate_simulator:  # the partner in its own process, as it is in production
            from gateway.config import load_settings
            from gateway.devtools.sample_setup import ensure_sample_setup

            ensure_sample_setup(load_settings(environ=self.env))
            self.simulator = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "simulate-partner"],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for_http(self.simulator_url + "/_sim/stats", self.simulator, 60)
        self.log_path = self.folder / "gateway.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                *([] if separate_simulator else ["--with-simulator"]),
                *serve_args,
            ],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "wb"),  # noqa: SIM115 - lives as long as the process
        )
        if cpu is not None:  # before it starts any thread: each inherits its creator's CPUs
            os.sched_setaffinity(self.proc.pid, {cpu})
        wait_for_http(self.url + "/healthz", self.proc, 60)

    def token(self, role: str = "window") -> str:
        """A new token: a window's of the hall "bench", or one of ``role`` (``monitor`` reads
        the gateway's /metrics)."""
        hall = ["--hall", "bench"] if role == "window" else []
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "tokens",
                "create",
                "--role",
                role,
                "--name",
                f"bench-{role}",
                *hall,
            ],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def close(self) -> dict[str, Any]:
        """Stop; what sealing personal data at rest cost the gateway, with the cases filed."""
        import shutil
        import sqlite3

        for proc in (self.proc, self.simulator):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
        at_rest: dict[str, Any] = {}
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"store.at_rest"' in line:
                at_rest = json.loads(line)
        database = self.folder / "var" / "gateway.sqlite3"
        if database.exists():
            with sqlite3.connect(database) as db:
                at_rest["cases"] = db.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
        shutil.rmtree(self.folder, ignore_errors=True)
        return at_rest


def rss_mib(pid: int) -> float:
    """A process's resident memory now, MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")

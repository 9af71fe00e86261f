"""``xgw serve --workers N``: N gateway processes on one host, one listening socket.

One process is one core (the GIL): a node uses a many-core host by running several. This
supervisor opens the socket once and hands it to N ``xgw serve`` processes (the kernel spreads
connections among them); each is a whole gateway with its own delivery loop, sharing the
store (SQLite's file on one host, or PostgreSQL) and the node's exchange-log chain, whose
appends are serialized by the log's own write lock. A worker that dies is started again; on
SIGTERM or SIGINT every worker is asked to stop and waited for.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from gateway.cli import datadir
from gateway.config import Settings
from gateway.logs import get_logger

log = get_logger("gateway.cli.workers")
CONFIG_ERROR = 78  # the exit code of a configuration error (gateway.cli.main)
RESTART_PAUSE_SECONDS = 1.0  # a worker that keeps dying is not restarted in a tight loop


def supervise(settings: Settings, count: int, with_simulator: bool, config: Path | None) -> int:
    datadir.embedded_setup(settings)  # once, before the workers race to make sample keys
    listener = socket.create_server((settings.host, settings.port), backlog=1024)
    listener.set_inheritable(True)
    fd = listener.fileno()
    host, port, *_ = listener.getsockname()

    def start(number: int) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "gateway.cli"]
        command += ["--config", str(config)] if config is not None else []
        command += ["serve", "--listen-fd", str(fd)]
        command += ["--with-simulator"] if with_simulator and number == 0 else []
        return subprocess.Popen(command, pass_fds=[fd])

    stopping = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children = [start(number) for number in range(count)]
    log.info(
        "gateway.workers",
        address=f"{host}:{port}",
        workers=count,
        pids=[child.pid for child in children],
    )
    while not stopping.wait(0.2):
        for number, child in enumerate(children):
            code = child.poll()
            if code == CONFIG_ERROR:  # every restart would fail the same way
                log.error("gateway.worker_config_error", worker=number, exit_code=code)
                stopping.set()
                break
            if code is not None:
                log.error("gateway.worker_died", worker=number, pid=child.pid, exit_code=code)
                time.sleep(RESTART_PAUSE_SECONDS)
                children[number] = start(number)
                log.info("gateway.worker_started", worker=number, pid=children[number].pid)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    grace = settings.shutdown_grace_seconds + 10
    for child in children:
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    listener.close()
    log.info("gateway.stopped", workers=count)
    return CONFIG_ERROR if any(child.returncode == CONFIG_ERROR for child in children) else 0

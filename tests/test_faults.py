"""Faults with real processes: a full disk under the gateway's data folder (a small tmpfs)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, eventually
from tests.harness import Deployment, http, http_exchange


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs at ``tmp_path / "var"`` (the deployment's data folder)."""
    mount_point = tmp_path / "var"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs (root needed): {mounted.stderr.decode().strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the file system holding ``folder`` to the last byte."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for block in (1 << 20, 4096, 1):
            try:
                while handle.write(b"\0" * block):
                    pass
            except OSError:
                pass
    return filler


def test_a_full_disk_is_503_and_not_ready_then_service_resumes_by_itself(
    tmp_path: Path, small_disk: Path
) -> None:
    deployment = Deployment(tmp_path)
    try:
        first = deployment.file("YJS-YLBX")
        deployment.wait([first["id"]])
        filler = _fill(small_disk)
        acknowledged, refused = [], []
        for _ in range(300):
            key = uuid.uuid4().hex
            status, body = http(
                "POST",
                f"{deployment.url}/api/v1/cases",
                _filing(),
                deployment.token,
                {"Idempotency-Key": key},
            )
            assert status in (201, 503), (status, body)
            if status == 201:
                acknowledged.append(body["id"])
            else:
                assert body["code"] == "STORE_UNAVAILABLE"
                refused.append(key)
                if len(refused) >= 3:
                    break
        assert refused, "the disk never filled up"
        status, headers, _ = http_exchange(
            "POST",
            f"{deployment.url}/api/v1/cases",
            _filing(),
            deployment.token,
            {"Idempotency-Key": uuid.uuid4().hex},
        )
        assert status == 503 and headers["Retry-After"]
        eventually(lambda: http("GET", f"{deployment.url}/readyz")[0] == 503, "not ready")
        filler.unlink()  # space again
        eventually(lambda: http("GET", f"{deployment.url}/readyz")[0] == 200, "ready again")
        later = deployment.file("YJS-YLBX")
        deployment.wait([*acknowledged, later["id"]], timeout=90)  # nothing acknowledged lost
        assert deployment.stats()["411329"]["applied_twice"] == []
        log = deployment.gateways[0].log()
        assert "Traceback" not in log and '"request.failed"' not in log
    finally:
        deployment.close()
    assert os.path.ismount(small_disk)


def _filing() -> dict[str, object]:
    from mappings.examples import sample_filing

    return sample_filing("YJS-YLBX")


class PrivateRedis:
    """A redis-server of this test's own on a free port, to stop and start at will."""

    def __init__(self, folder: Path) -> None:
        from tests.conftest import free_port

        self.port, self.folder = free_port(), folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        eventually(answers, "the private Redis answering", timeout=10)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.mark.redis
def test_a_redis_outage_fails_attempts_at_once_and_strands_nothing(tmp_path: Path) -> None:
    """Redis goes away while a message is to be sent: that attempt fails (counted, audited,
    retried), the task does not die, and once Redis is back the message goes out at once —
    not a whole lease (60 s here) later."""
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0:
        pytest.fail("redis-server is not installed")
    redis_server = PrivateRedis(tmp_path)
    deployment = Deployment(tmp_path, separate_simulator=True)
    try:
        deployment.gateways.pop().stop()
        gateway = deployment.add_gateway(
            XGW_REDIS_URL=redis_server.url, XGW_DELIVERY_LEASE_SECONDS="60"
        )
        redis_server.stop()
        case_id = deployment.file("YJS-YLBX", url=gateway.url)["id"]
        eventually(
            lambda: "REDIS_UNAVAILABLE" in deployment.xgw("audit", "show", "--case", case_id),
            "a failed attempt, audited",
            timeout=15,
        )
        redis_server.start()
        began = time.monotonic()
        deployment.wait([case_id], timeout=40)
        assert time.monotonic() - began < 20  # not after the 60 s lease
        assert "Task exception was never retrieved" not in gateway.log()
        assert deployment.stats()["411329"]["applied_twice"] == []
    finally:
        deployment.close()
        redis_server.stop()

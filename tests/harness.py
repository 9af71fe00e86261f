"""Real processes on loopback: the gateway (`xgw serve`), the partner simulator, HTTP calls."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from email.message import Message
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from mappings.examples import sample_filing
from tests.conftest import free_port, wait_for_http, xgw_env

ROOT = Path(__file__).resolve().parent.parent
FAST = {
    "XGW_DELIVERY_RETRY_INITIAL_SECONDS": "0.05",
    "XGW_DELIVERY_RETRY_MAX_SECONDS": "0.3",
    "XGW_DELIVERY_LEASE_SECONDS": "2",
    "XGW_SHUTDOWN_GRACE_SECONDS": "2",
}
PARTNER_TIMEOUT_SECONDS = 3
REGIONS = {
    "411329": ("新野县", "xinye-gw"),
    "420300": ("十堰市", "shiyan-gw"),
    "421300": ("随州市", "suizhou-gw"),
    "429021": ("神农架林区", "shennongjia-gw"),
}


def http_exchange(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Message, bytes]:
    """One HTTP request: (status, response headers, body), whatever the status."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def http(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    """(status, the body as JSON): a 2xx body must be JSON (or empty); another status's body
    is given as bytes when it is not JSON."""
    status, _, payload = http_exchange(method, url, body, token, headers, raw)
    if 200 <= status < 300:  # what urllib does not raise for
        return status, json.loads(payload) if payload else None
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload


def write_partners(
    path: Path,
    sim_port: int,
    protocol: str,
    breaker_reset: float = 0.5,
    rate_limit_per_minute: int = 600,
    envelope_versions: bool = True,
    soap_envelope: int = 1,
) -> None:
    """protocol: soap | rest | mixed (新野 人社 over SOAP, the rest over REST, as in the sample).
    ``envelope_versions``: False writes no ``envelope`` keys (a registry an older gateway,
    which knows only XGW-ENV/1, also reads); ``soap_envelope``: 2 sends materials over SOAP too
    (MTOM, the packaged partner-v2 WSDL)."""
    base = f"http://127.0.0.1:{sim_port}"
    partners: list[dict[str, Any]] = []
    for region, (name, node) in REGIONS.items():
        rest: dict[str, Any] = {
            "domains": ["*"],
            "protocol": "rest",
            "url": f"{base}/{region}/rest/messages",
        }
        # as in the sample: REST partners take XGW-ENV/2 (materials), SOAP endpoints /1
        soap: dict[str, Any] = {
            "domains": ["*"],
            "protocol": "soap",
            "url": f"{base}/{region}/soap",
            "envelope": soap_envelope,
        }
        endpoints = {
            "soap": [soap],
            "rest": [rest],
            "mixed": [{**soap, "domains": ["社保"]}, rest],
        }[protocol]
        partners.append(
            {
                "region": region,
                "name": name,
                "node": node,
                "endpoints": endpoints,
                "timeout_seconds": PARTNER_TIMEOUT_SECONDS,
                "max_concurrency": 8,
                "breaker_failures": 3,
                "breaker_reset_seconds": breaker_reset,
                "rate_limit_per_minute": rate_limit_per_minute,
                "envelope": soap_envelope if protocol == "soap" else 2,
            }
        )
        if not envelope_versions:
            del partners[-1]["envelope"]
            for endpoint in endpoints:
                endpoint.pop("envelope", None)
    document = {"partners": partners, "local_systems": {"*": f"{base}/local"}}
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")


def update_partner(path: Path, region: str, **fields: Any) -> None:
    """Change one partner's entry in a partners.yaml."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for partner in document["partners"]:
        if partner["region"] == region:
            partner.update(fields)
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")


class Process:
    def __init__(
        self, args: list[str], env: dict[str, str], url: str, log: Path, cwd: Path = ROOT
    ) -> None:
        """``cwd``: the source tree it runs (another revision's, for an upgrade)."""
        self.args, self.env, self.url, self.log_path, self.cwd = args, env, url, log, cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        handle = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *self.args],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
        )
        wait_for_http(
            self.url + "/healthz" if "serve" in self.args else self.url + "/_sim/stats",
            self.proc,
            60,
        )

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


class Deployment:
    """Gateway(s) + simulator in one data folder."""

    def __init__(
        self,
        tmp: Path,
        protocol: str = "mixed",
        separate_simulator: bool = False,
        extra_env: dict[str, str] | None = None,
        breaker_reset: float = 0.5,
        soap_envelope: int = 1,
    ) -> None:
        self.tmp = tmp
        self.data = tmp / "var"
        self.sim_port = free_port()
        self.partners_file = tmp / "partners.yaml"
        write_partners(
            self.partners_file, self.sim_port, protocol, breaker_reset, soap_envelope=soap_envelope
        )
        self.env = xgw_env(
            self.data,
            XGW_SIMULATOR_PORT=str(self.sim_port),
            XGW_PARTNERS_FILE=str(self.partners_file),
            **{**FAST, **(extra_env or {})},
        )
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.simulator: Process | None = None
        self.gateways: list[Process] = []
        if separate_simulator:
            subprocess.run(
                [sys.executable, "-m", "gateway.cli", "keys"],
                env=self.env,
                cwd=ROOT,
                check=True,
                capture_output=True,
            )  # makes the sample keys first
            from gateway.config import load_settings
            from gateway.devtools.sample_setup import ensure_sample_setup

            ensure_sample_setup(load_settings(environ=self.env))
            self.simulator = Process(
                ["simulate-partner", "--seed", "7"], self.env, self.sim_url, tmp / "simulator.log"
            )
        self.add_gateway(with_simulator=not separate_simulator)
        self.token = self.xgw(
            "tokens",
            "create",
            "--role",
            "window",
            "--name",
            "window-1",
            "--hall",
            "襄州区政务服务中心",
        ).strip()

    def add_gateway(self, with_simulator: bool = False, **env: str) -> Process:
        if "XGW_REDIS_URL" in env:  # instances sharing the work: see partners.check_lease
            env.setdefault("XGW_DELIVERY_LEASE_SECONDS", str(2 * PARTNER_TIMEOUT_SECONDS))
        port = free_port()
        args = ["serve", "--port", str(port)] + (["--with-simulator"] if with_simulator else [])
        gateway = Process(
            args,
            {**self.env, **env},
            f"http://127.0.0.1:{port}",
            self.tmp / f"gateway-{len(self.gateways)}.log",
        )
        self.gateways.append(gateway)
        return gateway

    @property
    def url(self) -> str:
        return self.gateways[0].url

    def configure_partner(self, region: str, restart: bool = True, **fields: Any) -> None:
        """Change one partner's entry in partners.yaml; the gateways read it as they restart
        (at once, unless ``restart`` is False)."""
        update_partner(self.partners_file, region, **fields)
        for gateway in self.gateways if restart else ():
            gateway.stop()
            gateway.start()

    def xgw_result(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``xgw`` as the deployment's operator runs it, whatever it exits with."""
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            check=False,
            timeout=120,
            text=True,
        )

    def xgw(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
        return result.stdout.decode()

    def file(self, bundle: str, url: str | None = None, key: str | None = None) -> dict[str, Any]:
        status, case = http(
            "POST",
            f"{url or self.url}/api/v1/cases",
            sample_filing(bundle),
            self.token,
            {"Idempotency-Key": key or uuid.uuid4().hex},
        )
        assert status == 201, (status, case)
        return dict(case)

    def case(self, case_id: str, url: str | None = None) -> dict[str, Any]:
        status, case = http("GET", f"{url or self.url}/api/v1/cases/{case_id}", token=self.token)
        assert status == 200, (status, case)
        return dict(case)

    def wait(
        self, case_ids: list[str], statuses: tuple[str, ...] = ("done",), timeout: float = 60
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            cases = [self.case(c) for c in case_ids]
            if all(c["status"] in statuses for c in cases):
                return cases
            if time.monotonic() > deadline:
                raise AssertionError(
                    [
                        (
                            c["id"],
                            c["status"],
                            [(s["id"], s["status"], s["error_code"]) for s in c["sub_matters"]],
                        )
                        for c in cases
                    ]
                )
            time.sleep(0.2)

    def faults(self, knobs: dict[str, Any]) -> None:
        assert http("POST", f"{self.sim_url}/_sim/faults", knobs)[0] == 200

    def stats(self) -> dict[str, Any]:
        return dict(http("GET", f"{self.sim_url}/_sim/stats")[1])

    def close(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        if self.simulator is not None:
            self.simulator.stop()


def file_with(
    url: str, token: str, filing: dict[str, Any], files: dict[str, bytes], key: str | None = None
) -> tuple[int, dict[str, Any]]:
    """POST a filing as multipart/form-data: the case part first, then one part per file."""

    async def post() -> tuple[int, dict[str, Any]]:
        with aiohttp.MultipartWriter("form-data") as writer:
            part = writer.append(orjson.dumps(filing), {"Content-Type": "application/json"})
            part.set_content_disposition("form-data", name="case")
            for code, data in files.items():
                part = writer.append(data, {"Content-Type": "application/octet-stream"})
                part.set_content_disposition("form-data", name=code, filename=f"{code}.bin")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{url}/api/v1/cases",
                data=writer,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Idempotency-Key": key or uuid.uuid4().hex,
                },
            ) as response,
        ):
            return response.status, await response.json(content_type=None)

    return asyncio.run(post())

"""Materials on the wire: our REST client sends an XGW-ENV/2 message with its materials to the
partner simulator over loopback HTTP, and what the partner answers when a stream arrives
changed, reordered or cut short (a refusal the sender retries), when a material is not the type
its manifest says (a business rejection), and when the same message comes again (its record)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from adapters.delivery_errors import DeliveryError
from adapters.partner_rest import RestPartnerClient
from gateway.config import load_settings
from gateway.devtools.sample_setup import ensure_sample_setup
from gateway.devtools.simulator import build_simulator_app
from gateway.keystore import backend_for, load_trust
from security import envelope as env
from security.replay import MemoryNonceStore
from security.sealing import Opener, Sealer
from security.stream import SEALED_CHUNK_BYTES, MaterialSealing
from tests.conftest import free_port, xgw_env

XINYE = env.Party("411329", "xinye-gw")
PDF = b"%PDF-1.7\n% SAMPLE\n" + bytes(range(256)) * 800  # about 200 KiB: four chunks
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(3000)
PAYLOAD = orjson.dumps({"aac002": "11010519491231002X", "aac003": "样例", "sample": True})


class Wire:
    """Our sealer and opener, the simulator on a loopback port, our REST client."""

    def __init__(self, tmp: Path) -> None:
        settings = load_settings(environ=xgw_env(tmp / "var"))
        ensure_sample_setup(settings)
        self.settings, trust = settings, load_trust(settings)
        self.sealer = Sealer(trust, backend_for(settings))
        self.opener = Opener(trust, backend_for(settings), MemoryNonceStore(), 300)
        self.client = RestPartnerClient(4)

    def seal(
        self, materials: dict[str, tuple[str, bytes]], msg_id: str | None = None
    ) -> tuple[env.Envelope, dict[str, bytes]]:
        msg_id = msg_id or uuid.uuid4().hex
        wrapped = self.sealer.content_key(XINYE.region)
        entries, streams = [], {}
        for code, (kind, data) in materials.items():
            sealing = MaterialSealing(wrapped.key, msg_id, code, kind, self.sealer.backend)
            stream = sealing.add(data)
            last, entry = sealing.finish()
            entries.append(entry)
            streams[code] = stream + last
        envelope = self.sealer.seal(
            PAYLOAD, receiver=XINYE, kind="request", matter="XY-YB-006", idem_key=msg_id,
            msg_id=msg_id, version=2, manifest=tuple(entries), wrapped=wrapped,
        )  # fmt: skip
        return envelope, streams

    async def send(
        self, url: str, envelope: env.Envelope, streams: dict[str, bytes]
    ) -> dict[str, object]:
        def source(code: str) -> AsyncIterator[bytes]:
            async def pieces() -> AsyncIterator[bytes]:
                data = streams[code]
                for i in range(0, len(data), 50_000):
                    yield data[i : i + 50_000]

            return pieces()

        reply = await self.client.send(url, envelope, 10, source)
        opened = await self.opener.open(reply)
        return dict(orjson.loads(opened.plaintext))


@pytest.fixture
async def wire(tmp_path: Path) -> AsyncIterator[tuple[Wire, str]]:
    made = Wire(tmp_path)
    app = build_simulator_app(made.settings, seed=1)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield made, f"http://127.0.0.1:{port}/411329/rest/messages"
    finally:
        await made.client.close()
        await runner.cleanup()


async def test_materials_open_at_the_partner_and_a_resend_is_answered_from_its_record(
    wire: tuple[Wire, str],
) -> None:
    made, url = wire
    envelope, streams = made.seal({"invoices": ("pdf", PDF), "discharge-summary": ("jpeg", JPEG)})
    first = await made.send(url, envelope, streams)
    assert first["status"] == "accepted", first
    # the same message again (re-sealed: a new nonce, content key and streams, one msg_id)
    again, again_streams = made.seal(
        {"invoices": ("pdf", PDF), "discharge-summary": ("jpeg", JPEG)}, msg_id=envelope.msg_id
    )
    assert await made.send(url, again, again_streams) == first


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        ("cut at a chunk boundary", "MATERIAL_TRUNCATED"),
        ("cut mid-chunk", "MATERIAL_TRUNCATED"),
        ("chunks swapped", "MATERIAL_BROKEN"),
        ("a bit flipped", "MATERIAL_BROKEN"),
        ("a chunk repeated", "MATERIAL_BROKEN"),  # index 1 holds chunk 0: it does not open
        ("bytes after the end", "MATERIAL_TOO_LONG"),
        ("another message's stream", "MATERIAL_BROKEN"),
    ],
)
async def test_a_stream_damaged_on_the_way_is_refused_and_retried(
    wire: tuple[Wire, str], damage: str, code: str
) -> None:
    made, url = wire
    envelope, streams = made.seal({"invoices": ("pdf", PDF)})
    sealed = streams["invoices"]
    damaged = {
        "cut at a chunk boundary": sealed[: 2 * SEALED_CHUNK_BYTES],
        "cut mid-chunk": sealed[:-100],
        "chunks swapped": sealed[SEALED_CHUNK_BYTES : 2 * SEALED_CHUNK_BYTES]
        + sealed[:SEALED_CHUNK_BYTES]
        + sealed[2 * SEALED_CHUNK_BYTES :],
        "a bit flipped": sealed[:1000] + bytes([sealed[1000] ^ 1]) + sealed[1001:],
        "a chunk repeated": sealed[:SEALED_CHUNK_BYTES] + sealed,
        "bytes after the end": sealed + b"\0",
        "another message's stream": made.seal({"invoices": ("pdf", PDF)})[1]["invoices"],
    }[damage]
    with pytest.raises(DeliveryError) as refused:
        await made.send(url, envelope, {"invoices": damaged})
    assert refused.value.code == code
    assert refused.value.transient  # sent again, byte for byte, from the outbox
    assert refused.value.reached is False  # refused before anything was applied


async def test_a_material_that_is_not_its_declared_type_is_a_business_rejection(
    wire: tuple[Wire, str],
) -> None:
    made, url = wire
    envelope, streams = made.seal({"invoices": ("pdf", JPEG)})  # a JPEG said to be a PDF
    answer = await made.send(url, envelope, streams)
    assert (answer["status"], answer["code"]) == ("rejected", "MATERIAL_TYPE")

"""The sealed envelope: round trips, every tampering refused, vectors, trust and replay."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.redis_nonces import RedisNonceStore
from security import envelope as env
from security.errors import SecurityError
from security.keys import load_private_key, load_public_key
from security.replay import MemoryNonceStore
from security.sealing import Opener
from security.trust import OwnKey, TrustedKey, TrustStore, Validity
from tests.security_helpers import (
    GMSSL,
    NATIVE,
    TO_XZ_PARTY,
    XIANGZHOU,
    XINYE,
    Pair,
    new_key,
    store,
    validity,
)

VECTORS = Path(__file__).resolve().parent / "vectors"
TO_XZ = TO_XZ_PARTY


def _seal(pair: Pair, payload: bytes = b'{"x":1}', **kw: object) -> env.Envelope:
    return pair.xy_sealer.seal(
        payload,
        receiver=TO_XZ,
        kind="request",
        matter="M-1",
        idem_key="case-1",
        **kw,  # type: ignore[arg-type]
    )


async def _code(opener: Opener, envelope: env.Envelope, **kw: object) -> str:
    try:
        await opener.open(envelope, **kw)  # type: ignore[arg-type]
    except SecurityError as exc:
        return exc.code
    return "OK"


async def test_round_trip_and_auditor_verification() -> None:
    pair = Pair()
    sealed = _seal(pair, "社保转入 11010519491231002X".encode())
    wire = sealed.to_json()
    assert b"11010519491231002X" not in wire  # the plaintext travels encrypted
    parsed = env.envelope_from_json(wire)
    # An auditor with only the sender's public key verifies origin and integrity.
    env.verify_origin(parsed, pair.xy_key.public, NATIVE)
    opened = await pair.xz_opener.open(parsed)
    assert opened.plaintext == "社保转入 11010519491231002X".encode()
    assert opened.sender.region == XINYE


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.one_of(st.binary(max_size=4096), st.binary(min_size=0, max_size=1 << 20)))
def test_property_round_trip_any_payload(payload: bytes) -> None:
    pair = Pair()
    opened = asyncio.run(
        pair.xz_opener.open(env.envelope_from_json(_seal(pair, payload).to_json()))
    )
    assert opened.plaintext == payload


@settings(max_examples=20, deadline=None)
@given(payload=st.binary(max_size=64))
def test_property_round_trip_gmssl_backend(payload: bytes) -> None:
    pair = Pair(backend=GMSSL)
    opened = asyncio.run(pair.xz_opener.open(_seal(pair, payload)))
    assert opened.plaintext == payload


_FIXED = Pair()
_FIXED_WIRE = _FIXED.xy_sealer.seal(
    b'{"aac002":"11010519491231002X"}',
    receiver=TO_XZ,
    kind="request",
    matter="M-1",
    idem_key="case-1",
).to_json()


@settings(max_examples=400, deadline=None)
@given(bit=st.integers(min_value=0, max_value=len(_FIXED_WIRE) * 8 - 1))
def test_property_any_single_bit_flip_is_refused(bit: int) -> None:
    tampered = bytearray(_FIXED_WIRE)
    tampered[bit // 8] ^= 1 << (bit % 8)
    opener = Opener(_FIXED.xz, NATIVE, MemoryNonceStore(), 300)

    async def attempt() -> str:
        try:
            envelope = env.envelope_from_json(bytes(tampered))
        except SecurityError as exc:
            return exc.code
        return await _code(opener, envelope)

    assert asyncio.run(attempt()) != "OK"


async def test_replay_stale_and_not_for_us() -> None:
    pair = Pair()
    sealed = _seal(pair)
    assert await _code(pair.xz_opener, sealed) == "OK"
    assert await _code(pair.xz_opener, sealed) == "REPLAYED"
    old = _seal(pair, created=env.now_utc() - timedelta(seconds=301))
    assert await _code(pair.xz_opener, old) == "STALE"
    future = _seal(pair, created=env.now_utc() + timedelta(seconds=400))
    assert await _code(pair.xz_opener, future) == "STALE"
    misaddressed = replace(sealed, receiver_region="420683")
    assert await _code(pair.xz_opener, misaddressed) == "NOT_FOR_US"


async def test_stale_envelope_does_not_burn_a_nonce() -> None:
    pair = Pair()
    sealed = _seal(pair)
    late = sealed.created_at + timedelta(seconds=1000)
    assert await _code(pair.xz_opener, sealed, now=late) == "STALE"
    assert await _code(pair.xz_opener, sealed) == "OK"


async def test_decrypt_failures_are_indistinguishable() -> None:
    pair = Pair()
    sealed = _seal(pair)
    recipient = pair.xz.decryption_key(sealed.recipient_key_id)
    messages = set()
    for broken in (
        replace(sealed, key_wrap=env.b64(b"\x30\x00")),
        replace(sealed, tag=env.b64(b"\x00" * 16)),
        replace(sealed, digest="0" * 64),
    ):
        with pytest.raises(SecurityError) as info:
            env.decrypt(broken, recipient, NATIVE)
        messages.add((info.value.code, info.value.message))
    assert messages == {("DECRYPT_FAILED", "the envelope could not be decrypted")}


async def test_key_rotation_revocation_expiry_and_jurisdiction() -> None:
    old_xy, new_xy, xz_old, xz_new = new_key(), new_key(), new_key(), new_key()
    overlap = validity(days_before=10, days_after=5)
    xz = store(
        XIANGZHOU,
        "xz",
        [(xz_old, overlap), (xz_new, validity(days_before=1))],
        [(old_xy, XINYE, overlap), (new_xy, XINYE, validity(days_before=1))],
    )
    opener = Opener(xz, NATIVE, MemoryNonceStore(), 300)
    # we sign with our newest key; partners encrypt to the newest valid key of ours they know
    assert xz.signing_key(env.now_utc()) == xz_new
    assert xz.recipient_key(XINYE, env.now_utc()).key == new_xy.public

    def from_xinye(signer: object, to_key: object, region: str = XINYE) -> env.Envelope:
        header = env.Header(
            "m-" + new_key().key_id[:8],
            "request",
            "c",
            env.Party(region, "n"),
            TO_XZ,
            "M",
            env.now_utc(),
        )
        return env.seal(b"{}", header, signer, to_key, NATIVE)  # type: ignore[arg-type]

    # during the overlap both partner keys verify, and both of our keys decrypt
    assert await _code(opener, from_xinye(old_xy, xz_old.public)) == "OK"
    assert await _code(opener, from_xinye(new_xy, xz_new.public)) == "OK"
    assert await _code(opener, from_xinye(new_key(), xz_new.public)) == "KEY_UNKNOWN"
    assert await _code(opener, from_xinye(new_xy, new_key().public)) == "KEY_UNKNOWN"
    assert await _code(opener, from_xinye(new_xy, xz_new.public, "420683")) == (
        "KEY_WRONG_JURISDICTION"
    )
    expired = store(
        XIANGZHOU,
        "xz",
        [(xz_new, validity())],
        [(old_xy, XINYE, validity(days_before=30, days_after=-1))],
    )
    assert (
        await _code(Opener(expired, NATIVE, MemoryNonceStore()), from_xinye(old_xy, xz_new.public))
        == "KEY_EXPIRED"
    )
    future = store(
        XIANGZHOU,
        "xz",
        [(xz_new, validity())],
        [(old_xy, XINYE, validity(days_before=-2, days_after=30))],
    )
    assert (
        await _code(Opener(future, NATIVE, MemoryNonceStore()), from_xinye(old_xy, xz_new.public))
        == "KEY_NOT_YET_VALID"
    )
    revoked = store(
        XIANGZHOU,
        "xz",
        [(xz_new, validity())],
        [(old_xy, XINYE, validity())],
        revoked={old_xy.key_id: "compromised"},
    )
    assert (
        await _code(Opener(revoked, NATIVE, MemoryNonceStore()), from_xinye(old_xy, xz_new.public))
        == "KEY_REVOKED"
    )


async def test_shipped_vectors() -> None:
    manifest = json.loads((VECTORS / "manifest.json").read_text(encoding="utf-8"))
    keys_valid = Validity(
        env.parse_time(manifest["keys_valid"]["not_before"]),
        env.parse_time(manifest["keys_valid"]["not_after"]),
    )
    receiver = load_private_key((VECTORS / manifest["receiver"]["key"]).read_bytes(), None, NATIVE)
    senders = [
        TrustedKey(
            load_public_key((VECTORS / s["key"]).read_bytes()),
            s["name"],
            s["region"],
            manifest["distid"].encode(),
            keys_valid,
            s["key"],
        )
        for s in manifest["trusted_senders"]
    ]
    trust = TrustStore(
        manifest["receiver"]["region"],
        manifest["receiver"]["node"],
        manifest["distid"].encode(),
        [OwnKey(receiver, keys_valid, "v")],
        senders,
        {},
    )
    now = env.parse_time(manifest["now"])
    plaintext = (VECTORS / manifest["plaintext_file"]).read_bytes()
    for vector in manifest["vectors"]:
        opener = Opener(trust, NATIVE, MemoryNonceStore(), manifest["window_seconds"])
        try:
            envelope = env.envelope_from_json((VECTORS / vector["file"]).read_bytes())
            opened = await opener.open(envelope, now=now)
            outcome = "OK"
            assert opened.plaintext == plaintext
        except SecurityError as exc:
            outcome = exc.code
        assert outcome == vector["expect"], vector["file"]
    ok = env.envelope_from_json((VECTORS / "ok.json").read_bytes())
    assert ok.canonical() == (VECTORS / "ok.signed-bytes.txt").read_bytes()
    replay_opener = Opener(trust, GMSSL, MemoryNonceStore(), manifest["window_seconds"])
    outcomes = [
        await _code(replay_opener, env.envelope_from_json((VECTORS / f).read_bytes()), now=now)
        for f in manifest["replay"]["sequence"]
    ]
    assert outcomes == manifest["replay"]["expect"]


@pytest.mark.redis
async def test_two_instances_racing_on_one_nonce_in_redis(redis_url: str) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        pair = Pair()
        openers = [Opener(pair.xz, NATIVE, RedisNonceStore(c), 300) for c in clients]
        for _ in range(30):
            sealed = _seal(pair)
            outcomes = await asyncio.gather(*(_code(o, sealed) for o in openers))
            assert sorted(outcomes) == ["OK", "REPLAYED"]
    finally:
        for client in clients:
            await client.aclose()


async def test_xml_form_carries_the_same_envelope() -> None:
    from security import envelope_xml

    pair = Pair()
    sealed = _seal(pair)
    xml = envelope_xml.to_xml(sealed)
    assert b"urn:xgw:envelope:1" in xml
    parsed = envelope_xml.from_xml(xml)
    assert parsed == sealed
    assert await _code(pair.xz_opener, parsed) == "OK"
    # a different prefix and whitespace do not matter: the signature is over the fields
    pretty = xml.replace(b"env:", b"x:").replace(b"xmlns:env", b"xmlns:x").replace(b"><", b">\n  <")
    assert envelope_xml.from_xml(pretty) == sealed


def test_xml_refuses_dtds_entities_and_junk() -> None:
    from security import envelope_xml

    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        b'<env:Envelope xmlns:env="urn:xgw:envelope:1"><env:v>&b;</env:v></env:Envelope>'
    )
    xxe = (
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<env:Envelope xmlns:env="urn:xgw:envelope:1"><env:v>&e;</env:v></env:Envelope>'
    )
    for raw in (bomb, xxe, b"<not-closed", b"<other/>", b"\xff\xfe<x/>"):
        with pytest.raises(SecurityError) as info:
            envelope_xml.from_xml(raw)
        assert info.value.code == "ENVELOPE_MALFORMED"

"""Materials sealed as a stream of SM4-GCM chunks (security/stream.py, STREAM over SM4-GCM):
round trips of every size, every tampering refused, and the stream opened by a second
implementation written from the module's description alone, with `cryptography`."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from security.stream import (
    CHUNK_BYTES,
    SEALED_CHUNK_BYTES,
    StreamBroken,
    open_stream,
    seal_stream,
)
from tests.security_helpers import NATIVE

KEY = bytes(range(16))  # SAMPLE content key
AAD = b"msg-0001\x00invoices"


def _sealed(data: bytes, pieces: int = 1, aad: bytes = AAD) -> tuple[bytes, list[bytes]]:
    step = max(1, len(data) // pieces)
    prefix, chunks = seal_stream(
        KEY, aad, (data[i : i + step] for i in range(0, len(data), step)), NATIVE
    )
    return prefix, list(chunks)


def _opened(prefix: bytes, chunks: list[bytes], aad: bytes = AAD, key: bytes = KEY) -> bytes:
    return b"".join(open_stream(key, prefix, aad, iter(chunks), NATIVE))


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 17]
)
def test_every_size_round_trips_and_only_the_last_chunk_is_short(size: int) -> None:
    data = os.urandom(size)
    prefix, chunks = _sealed(data, pieces=3)
    assert all(len(c) == SEALED_CHUNK_BYTES for c in chunks[:-1])
    assert 16 <= len(chunks[-1]) <= SEALED_CHUNK_BYTES
    assert len(chunks) == max(1, -(-size // CHUNK_BYTES))
    assert _opened(prefix, chunks) == data
    # the receiver reads the stream in pieces of its own: the same
    whole = b"".join(chunks)
    pieces = [whole[i : i + 1000] for i in range(0, len(whole), 1000)]
    assert b"".join(open_stream(KEY, prefix, AAD, iter(pieces), NATIVE)) == data


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=3 * CHUNK_BYTES // 2), max_size=6))
def test_any_pieces_seal_to_the_same_chunks_as_one(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    prefix, chunks = seal_stream(KEY, AAD, iter(pieces), NATIVE, prefix=b"\x01" * 7)
    _, whole = seal_stream(KEY, AAD, [data], NATIVE, prefix=prefix)
    sealed = list(chunks)
    assert sealed == list(whole)
    assert _opened(prefix, sealed) == data


def _tamper(kind: str, chunks: list[bytes]) -> list[bytes]:
    if kind == "byte changed":
        return [chunks[0], chunks[1][:5] + bytes([chunks[1][5] ^ 1]) + chunks[1][6:], *chunks[2:]]
    if kind == "swapped":
        return [chunks[1], chunks[0], *chunks[2:]]
    if kind == "dropped":
        return [chunks[0], *chunks[2:]]
    if kind == "repeated":
        return [chunks[0], chunks[0], *chunks[1:]]
    if kind == "cut at a chunk boundary":
        return chunks[:-1]
    if kind == "cut inside a chunk":
        return [*chunks[:-1], chunks[-1][:-1]]
    if kind == "bytes appended":
        return [*chunks, b"\x00"]
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "byte changed",
        "swapped",
        "dropped",
        "repeated",
        "cut at a chunk boundary",
        "cut inside a chunk",
        "bytes appended",
    ],
)
def test_every_tampering_is_refused(kind: str) -> None:
    data = os.urandom(3 * CHUNK_BYTES + 100)
    prefix, chunks = _sealed(data)
    with pytest.raises(StreamBroken):
        _opened(prefix, _tamper(kind, chunks))


def test_another_material_message_or_key_does_not_open_it() -> None:
    prefix, chunks = _sealed(b"SAMPLE discharge summary" * 100)
    with pytest.raises(StreamBroken):
        _opened(prefix, chunks, aad=b"msg-0001\x00cost-list")
    with pytest.raises(StreamBroken):
        _opened(bytes(7), chunks)
    with pytest.raises(StreamBroken):
        _opened(prefix, chunks, key=bytes(16))
    with pytest.raises(StreamBroken):
        _opened(prefix, [])


def _reference_open(key: bytes, prefix: bytes, aad: bytes, stream: bytes) -> bytes:
    """The module's description, implemented again with `cryptography`: the key, the IVs,
    the chunk lengths, the last flag."""
    mac = hmac.HMAC(key, hashes.SM3())
    mac.update(b"XGW-ENV/2 material" + prefix)
    material_key = mac.finalize()[:16]
    records = [stream[i : i + CHUNK_BYTES + 16] for i in range(0, len(stream), CHUNK_BYTES + 16)]
    records = records or [b""]
    out = b""
    for index, record in enumerate(records):
        last = index == len(records) - 1
        iv = prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
        decryptor = Cipher(algorithms.SM4(material_key), modes.GCM(iv, record[-16:])).decryptor()
        decryptor.authenticate_additional_data(aad)
        out += decryptor.update(record[:-16]) + decryptor.finalize()
    return out


@pytest.mark.parametrize("size", [0, 100, 2 * CHUNK_BYTES, 2 * CHUNK_BYTES + 5])
def test_a_second_implementation_from_the_description_opens_it(size: int) -> None:
    data = os.urandom(size)
    prefix, chunks = _sealed(data)
    assert _reference_open(KEY, prefix, AAD, b"".join(chunks)) == data


def test_the_material_key_is_what_openssl_computes() -> None:
    import subprocess

    from security.stream import material_key

    prefix = bytes([1, 2, 3, 4, 5, 6, 7])
    made = subprocess.run(
        ["openssl", "mac", "-digest", "sm3", "-macopt", f"hexkey:{KEY.hex()}", "HMAC"],
        input=b"XGW-ENV/2 material" + prefix,
        capture_output=True,
        check=True,
    )
    assert material_key(KEY, prefix, NATIVE) == bytes.fromhex(made.stdout.decode().strip())[:16]

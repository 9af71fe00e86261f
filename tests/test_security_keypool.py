"""Content keys wrapped ahead of need (security.keypool): used once, only for their recipient
key, never stale, and what they seal opens — with our opener and with the openssl command."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from security import envelope as env
from security.keypool import ContentKeyPool
from security.sealing import Sealer
from tests.conftest import eventually
from tests.security_helpers import GMSSL, NATIVE, TO_XZ_PARTY, Pair, new_key


def _wait_for(pool: ContentKeyPool, pair: Pair, count: int) -> None:
    eventually(lambda: pool.ready_count(pair.xz_key.public) >= count, "the pool filling", 20)


@pytest.fixture
def pair() -> Pair:
    return Pair()


def _seal(sealer: Sealer, plaintext: bytes = b'{"aac002": "sample"}') -> env.Envelope:
    return sealer.seal(plaintext, receiver=TO_XZ_PARTY, kind="request", matter="M", idem_key="k")


async def test_a_seal_takes_a_key_made_ahead_and_the_recipient_opens_it(pair: Pair) -> None:
    pool = ContentKeyPool(NATIVE, depth=4)
    pool.start()
    try:
        sealer = Sealer(pair.xy, NATIVE, pool)
        first = _seal(sealer)  # the pool learns the recipient from the first seal
        assert (pool.taken_ready, pool.taken_cold) == (0, 1)
        _wait_for(pool, pair, 4)
        second = _seal(sealer, b"second")
        assert (pool.taken_ready, pool.taken_cold) == (1, 1)
        for envelope, plaintext in ((first, b'{"aac002": "sample"}'), (second, b"second")):
            opened = await pair.xz_opener.open(envelope)
            assert opened.plaintext == plaintext
            env.verify_origin(envelope, pair.xy_key.public, NATIVE)  # what auditors check
    finally:
        pool.close()


def test_each_key_is_handed_out_once(pair: Pair) -> None:
    pool = ContentKeyPool(NATIVE, depth=3)
    pool.start()
    try:
        recipient = pair.xz_key.public
        assert pool.take(recipient) is None
        taken: list[env.WrappedKey] = []
        for _ in range(3):  # drain and refill three times
            _wait_for(pool, pair, 3)
            while (wrapped := pool.take(recipient)) is not None and len(taken) < 100:
                taken.append(wrapped)
        assert len(taken) >= 9
        assert len({w.key for w in taken}) == len(taken)
        assert len({w.wrap for w in taken}) == len(taken)
        assert all(NATIVE.sm2_decrypt(pair.xz_key.scalar, w.wrap) == w.key for w in taken)
    finally:
        pool.close()


def test_a_key_wrapped_for_another_recipient_key_is_not_used(pair: Pair) -> None:
    other = env.wrap_content_key(new_key().public, NATIVE)
    header = env.Header(
        "m1", "request", "k", env.Party("411329", "xinye-gw"), TO_XZ_PARTY, "M", env.now_utc()
    )
    envelope = env.seal(b"x", header, pair.xy_key, pair.xz_key.public, NATIVE, wrapped=other)
    assert envelope.key_wrap != env.b64(other.wrap)
    assert env.decrypt(envelope, pair.xz_key, NATIVE) == b"x"


def test_stale_keys_are_dropped_not_used(pair: Pair) -> None:
    now = [1000.0]
    pool = ContentKeyPool(NATIVE, depth=2, max_age_seconds=0.2, clock=lambda: now[0])
    pool.start()
    try:
        assert pool.take(pair.xz_key.public) is None
        _wait_for(pool, pair, 2)
        now[0] += 0.3  # older than max_age: and nobody asked meanwhile, so forgotten
        assert pool.take(pair.xz_key.public) is None
        assert pool.taken_ready == 0
    finally:
        pool.close()


def test_depth_zero_is_off_and_close_stops_the_thread(pair: Pair) -> None:
    off = ContentKeyPool(NATIVE, depth=0)
    off.start()
    assert off.take(pair.xz_key.public) is None
    assert off.take(pair.xz_key.public) is None
    off.close()
    pool = ContentKeyPool(NATIVE, depth=2)
    pool.start()
    pool.take(pair.xz_key.public)
    _wait_for(pool, pair, 1)
    pool.close()
    assert not any(t.name == "xgw-key-pool" for t in threading.enumerate())
    assert pool.take(pair.xz_key.public) is None  # nothing kept after close


def test_a_wrapped_key_never_shows_in_a_repr(pair: Pair) -> None:
    wrapped = env.wrap_content_key(pair.xz_key.public, NATIVE)
    text = repr(wrapped) + str(wrapped)
    assert wrapped.key.hex() not in text and repr(wrapped.key) not in text
    assert pair.xz_key.public.key_id in text


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_unwraps_a_key_made_ahead(pair: Pair, tmp_path: Path) -> None:
    pool = ContentKeyPool(NATIVE, depth=1)
    pool.start()
    try:
        pool.take(pair.xz_key.public)
        _wait_for(pool, pair, 1)
        wrapped = pool.take(pair.xz_key.public)
        assert wrapped is not None
    finally:
        pool.close()
    (tmp_path / "k.pem").write_bytes(pair.xz_key.to_pem(b"interop-pass"))
    (tmp_path / "ct").write_bytes(wrapped.wrap)
    result = subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-decrypt",
            "-inkey",
            str(tmp_path / "k.pem"),
            "-passin",
            "pass:interop-pass",
            "-in",
            str(tmp_path / "ct"),
        ],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == wrapped.key


def test_no_thread_for_a_backend_computing_under_the_gil(pair: Pair) -> None:
    pool = ContentKeyPool(GMSSL, depth=4)
    pool.start()
    try:
        assert not any(t.name == "xgw-key-pool" for t in threading.enumerate())
        assert pool.take(pair.xz_key.public) is None
        sealed = _seal(Sealer(pair.xy, GMSSL, pool))  # seals as without a pool
        assert env.decrypt(sealed, pair.xz_key, NATIVE)
    finally:
        pool.close()

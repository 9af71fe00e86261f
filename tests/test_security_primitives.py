"""The standard vectors of GB/T 32905 (SM3), GB/T 32907 (SM4), GB/T 32918 (SM2), both backends."""

from __future__ import annotations

import pytest

from security import der
from security.backend import CryptoBackend
from security.curve import DEFAULT_DISTID, is_on_curve, z_a
from tests.security_helpers import BACKENDS, GMSSL, NATIVE

D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
PUB = bytes.fromhex(
    "04"
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
ZA = "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3"
R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
C1X = 0x04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73
C1Y = 0xE858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0
C3 = bytes.fromhex("59983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766")
C2 = bytes.fromhex("21886CA989CA9C7D58087307CA93092D651EFA")
SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
ids = [b.name for b in BACKENDS]


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_sm3_standard_vectors(backend: CryptoBackend) -> None:
    assert backend.sm3(b"abc").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )
    assert backend.sm3(b"abcd" * 16).hex() == (
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_sm4_standard_block(backend: CryptoBackend) -> None:
    encrypt = backend.sm4_block_encryptor(SM4_KEY)
    assert encrypt(SM4_KEY).hex() == "681edf34d206965e86b3e94f536e4246"


@pytest.mark.slow
def test_sm4_one_million_iterations() -> None:
    encrypt = NATIVE.sm4_block_encryptor(SM4_KEY)
    block = SM4_KEY
    for _ in range(1_000_000):
        block = encrypt(block)
    assert block.hex() == "595298c7c6fd271f0402f804c33d3f66"


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_sm2_public_key_and_z_a(backend: CryptoBackend) -> None:
    assert backend.sm2_public_key(D) == PUB
    assert z_a(PUB, DEFAULT_DISTID, backend.sm3).hex().upper() == ZA


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_sm2_standard_signature_verifies(backend: CryptoBackend) -> None:
    signature = der.encode_signature(R, S)
    assert backend.sm2_verify(PUB, b"message digest", signature, DEFAULT_DISTID)
    assert not backend.sm2_verify(PUB, b"message digesT", signature, DEFAULT_DISTID)
    assert not backend.sm2_verify(PUB, b"message digest", signature, b"another id")
    assert not backend.sm2_verify(
        PUB, b"message digest", der.encode_signature(R, S ^ 1), DEFAULT_DISTID
    )


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_sm2_decrypts_standard_ciphertext(backend: CryptoBackend) -> None:
    ciphertext = der.encode_sm2_ciphertext(C1X, C1Y, C3, C2)
    assert backend.sm2_decrypt(D, ciphertext) == b"encryption standard"
    broken = der.encode_sm2_ciphertext(C1X, C1Y, C3, C2[:-1] + bytes([C2[-1] ^ 1]))
    with pytest.raises(ValueError):
        backend.sm2_decrypt(D, broken)


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_sm2_rejects_garbage_without_raising_anything_else(backend: CryptoBackend) -> None:
    for junk in (b"", b"\x30\x00", b"\x30\x03junk", der.encode_sm2_ciphertext(1, 2, C3, C2)):
        with pytest.raises(ValueError):
            backend.sm2_decrypt(D, junk)
        assert backend.sm2_verify(PUB, b"m", junk, DEFAULT_DISTID) is False


def test_points_off_the_curve_are_refused() -> None:
    assert is_on_curve(int.from_bytes(PUB[1:33], "big"), int.from_bytes(PUB[33:], "big"))
    off = PUB[:-1] + bytes([PUB[-1] ^ 1])
    assert not GMSSL.sm2_verify(off, b"message digest", der.encode_signature(R, S), DEFAULT_DISTID)
    assert not NATIVE.sm2_verify(off, b"message digest", der.encode_signature(R, S), DEFAULT_DISTID)


def test_der_is_strict() -> None:
    good = der.encode_signature(R, S)
    assert der.decode_signature(good) == (R, S)
    with pytest.raises(der.DerError):
        der.decode_signature(good + b"\x00")  # trailing bytes
    with pytest.raises(der.DerError):
        der.decode_signature(b"\x30\x80" + good[2:] + b"\x00\x00")  # indefinite length
    with pytest.raises(der.DerError):
        der.decode_signature(der.sequence(b"\x02\x02\x00\x01", der.integer(S)))  # non-minimal
    with pytest.raises(der.DerError):
        der.decode_signature(der.sequence(b"\x02\x01\x81", der.integer(S)))  # negative


# -- cross-backend: every operation of the fast backend checked against gmssl -------------


def test_cross_backend_hashes_and_gcm() -> None:
    for size in (0, 1, 15, 16, 17, 100, 1000):
        data = bytes(range(256)) * (size // 256 + 1)
        data = data[:size]
        assert NATIVE.sm3(data) == GMSSL.sm3(data)
        assert NATIVE.hmac_sm3(b"k" * 70, data) == GMSSL.hmac_sm3(b"k" * 70, data)
        key, iv, aad = bytes(range(16)), bytes(range(12)), b"header"
        ct, tag = NATIVE.sm4_gcm_encrypt(key, iv, data, aad)
        assert GMSSL.sm4_gcm_encrypt(key, iv, data, aad) == (ct, tag)
        assert GMSSL.sm4_gcm_decrypt(key, iv, ct, tag, aad) == data
        with pytest.raises(ValueError):
            NATIVE.sm4_gcm_decrypt(key, iv, ct, tag, b"other header")
        with pytest.raises(ValueError):
            GMSSL.sm4_gcm_decrypt(key, iv, ct, tag, b"other header")


def test_cross_backend_sm2_sign_verify_encrypt_decrypt() -> None:
    from security.backend import random_private_scalar

    for _ in range(5):
        d = random_private_scalar()
        public = NATIVE.sm2_public_key(d)
        assert GMSSL.sm2_public_key(d) == public
        for distid in (DEFAULT_DISTID, "襄州区政务服务".encode()):
            message = b"cross-backend %d" % d
            assert GMSSL.sm2_verify(
                public, message, NATIVE.sm2_sign(d, public, message, distid), distid
            )
            assert NATIVE.sm2_verify(
                public, message, GMSSL.sm2_sign(d, public, message, distid), distid
            )
        assert GMSSL.sm2_decrypt(d, NATIVE.sm2_encrypt(public, b"content key 1234")) == (
            b"content key 1234"
        )
        assert NATIVE.sm2_decrypt(d, GMSSL.sm2_encrypt(public, b"content key 1234")) == (
            b"content key 1234"
        )

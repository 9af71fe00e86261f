"""SM2 keys in the standard containers OpenSSL, GmSSL and BouncyCastle read (pure DER).

SubjectPublicKeyInfo and PKCS#8 PrivateKeyInfo carry AlgorithmIdentifier
{id-ecPublicKey, namedCurve sm2p256v1 (1.2.156.10197.1.301)}, as OpenSSL 3 writes them.
"""

from __future__ import annotations

from security import der
from security.curve import OID_EC_PUBLIC_KEY, OID_SM2_CURVE, N, decode_point

_ALGORITHM = der.sequence(der.oid(OID_EC_PUBLIC_KEY), der.oid(OID_SM2_CURVE))


def spki_der(public_point: bytes) -> bytes:
    return der.sequence(_ALGORITHM, der.bit_string(public_point))


def pkcs8_der(private: int, public_point: bytes | None) -> bytes:
    """PrivateKeyInfo { 0, algorithm, OCTET STRING(ECPrivateKey { 1, d, [1] public }) }."""
    inner = [der.integer(1), der.octet_string(private.to_bytes(32, "big"))]
    if public_point is not None:
        inner.append(der.context(1, der.bit_string(public_point)))
    return der.sequence(der.integer(0), _ALGORITHM, der.octet_string(der.sequence(*inner)))


def _check_algorithm(node: der.Node) -> None:
    algorithm = node.expect(der.TAG_SEQUENCE).children()
    if len(algorithm) != 2 or algorithm[0].as_oid() != OID_EC_PUBLIC_KEY:
        raise der.DerError("not an EC key")
    if algorithm[1].as_oid() != OID_SM2_CURVE:
        raise der.DerError("not a key on the SM2 curve")


def parse_spki(data: bytes) -> bytes:
    """The uncompressed public point of an SM2 SubjectPublicKeyInfo (validated on the curve)."""
    algorithm, key = der.sequence_of(data, 2)
    _check_algorithm(algorithm)
    point = key.as_bits()
    try:
        decode_point(point)
    except ValueError as exc:
        raise der.DerError(str(exc)) from None
    return point


def parse_pkcs8(data: bytes) -> tuple[int, bytes | None]:
    """(d, public point or None) of an unencrypted SM2 PKCS#8 PrivateKeyInfo."""
    items = der.sequence_of(data)
    if len(items) < 3 or items[0].as_int() != 0:
        raise der.DerError("not a PKCS#8 PrivateKeyInfo v0")
    _check_algorithm(items[1])
    ec_key = der.sequence_of(items[2].as_octets())
    if len(ec_key) < 2 or ec_key[0].as_int() != 1:
        raise der.DerError("not an ECPrivateKey v1")
    scalar = ec_key[1].as_octets()
    private = int.from_bytes(scalar, "big")
    if len(scalar) != 32 or not 1 <= private < N - 1:
        raise der.DerError("private scalar out of range")
    public: bytes | None = None
    for node in ec_key[2:]:
        if node.tag == 0xA1:
            (bits,) = node.children()
            public = bits.as_bits()
            try:
                decode_point(public)
            except ValueError as exc:
                raise der.DerError(str(exc)) from None
    return private, public

"""The SM2 recommended curve (GB/T 32918.5) and the few pure computations every backend shares."""

from __future__ import annotations

from collections.abc import Callable

P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

DEFAULT_DISTID = b"1234567812345678"  # GM/T 0009 default user id
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_SM2_CURVE = "1.2.156.10197.1.301"
OID_SM3 = "1.2.156.10197.1.401"
OID_SM4 = "1.2.156.10197.1.104"


def is_on_curve(x: int, y: int) -> bool:
    if not (0 <= x < P and 0 <= y < P):
        return False
    return (y * y - (x * x * x + A * x + B)) % P == 0


def encode_point(x: int, y: int) -> bytes:
    """Uncompressed point 04 ‖ x ‖ y (65 bytes)."""
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def decode_point(point: bytes) -> tuple[int, int]:
    """Uncompressed points only, and only on the curve (guards against invalid-curve input)."""
    if len(point) != 65 or point[0] != 4:
        raise ValueError("not an uncompressed SM2 point")
    x, y = int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big")
    if not is_on_curve(x, y):
        raise ValueError("point is not on the SM2 curve")
    return x, y


def z_a(public_point: bytes, distid: bytes, sm3: Callable[[bytes], bytes]) -> bytes:
    """Z_A = SM3(ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG ‖ xA ‖ yA), ENTL = bit length of ID (2 bytes)."""
    if len(distid) * 8 > 0xFFFF:
        raise ValueError("distinguishing id too long")
    parts = [
        (len(distid) * 8).to_bytes(2, "big"),
        distid,
        *(v.to_bytes(32, "big") for v in (A, B, GX, GY)),
        public_point[1:33],
        public_point[33:65],
    ]
    return sm3(b"".join(parts))


def kdf(shared: bytes, length: int, sm3: Callable[[bytes], bytes]) -> bytes:
    """GB/T 32918.4 KDF: SM3(Z ‖ ct) for ct = 1, 2, … (32-bit big-endian), truncated."""
    out = bytearray()
    counter = 1
    while len(out) < length:
        out += sm3(shared + counter.to_bytes(4, "big"))
        counter += 1
    return bytes(out[:length])

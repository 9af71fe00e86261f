"""The portable backend: the card's pure-Python ``gmssl``, with its defects fixed here.

What gmssl gets wrong, and what this adapter does about it:
- SM2 encryption draws its ephemeral k from ``random.choice`` (Mersenne Twister, predictable):
  we never call ``CryptSM2.encrypt``; we use its point arithmetic with k from ``secrets``.
- signatures are raw r‖s hex and ciphertexts raw C1‖C3‖C2 without the 04 prefix: we speak DER
  (GB/T 35276 / GM/T 0009) at this interface and convert.
- ``sign_with_sm3`` hard-codes the default ID; we compute Z_A and e = SM3(Z_A ‖ M) ourselves, so
  the distinguishing ID is configurable per partner.
- no point validation on decrypt/verify (invalid-curve input): we check every point is on SM2.
- no SM4-GCM: GCM is built on its SM4 block function (``security.gcm``).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable

from gmssl import sm3 as gm_sm3
from gmssl import sm4 as gm_sm4
from gmssl.sm2 import CryptSM2

from security import der, gcm
from security.curve import GX, GY, A, N, P, decode_point, encode_point, kdf, z_a

_G_HEX = f"{GX:064x}{GY:064x}"


def _point_hex(point: bytes) -> str:
    return point[1:].hex()


def _hex_point(hex_xy: str) -> bytes:
    return b"\x04" + bytes.fromhex(hex_xy)


class GmsslBackend:
    name = "gmssl"
    parallel_sm2 = False
    _BLOCK = 64

    def __init__(self) -> None:
        # CryptSM2 is only used for its point arithmetic; keys are passed per call.
        self._arith = CryptSM2(private_key="00", public_key=_G_HEX, mode=1)

    def _mul(self, k: int, point_hex: str) -> str:
        result: str = self._arith._kg(k, point_hex)
        return result

    def sm3(self, data: bytes) -> bytes:
        return bytes.fromhex(gm_sm3.sm3_hash(list(data)))

    def hmac_sm3(self, key: bytes, data: bytes) -> bytes:
        if len(key) > self._BLOCK:
            key = self.sm3(key)
        key = key.ljust(self._BLOCK, b"\x00")
        inner = self.sm3(bytes(b ^ 0x36 for b in key) + data)
        return self.sm3(bytes(b ^ 0x5C for b in key) + inner)

    def sm4_block_encryptor(self, key: bytes) -> Callable[[bytes], bytes]:
        cipher = gm_sm4.CryptSM4()
        cipher.set_key(key, gm_sm4.SM4_ENCRYPT)
        round_keys = cipher.sk

        def encrypt_blocks(data: bytes) -> bytes:
            out = bytearray()
            for offset in range(0, len(data), 16):
                out += bytes(cipher.one_round(round_keys, list(data[offset : offset + 16])))
            return bytes(out)

        return encrypt_blocks

    def sm4_gcm_encrypt(
        self, key: bytes, iv: bytes, plaintext: bytes, aad: bytes
    ) -> tuple[bytes, bytes]:
        return gcm.encrypt(self.sm4_block_encryptor(key), iv, plaintext, aad)

    def sm4_gcm_decrypt(
        self, key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes
    ) -> bytes:
        return gcm.decrypt(self.sm4_block_encryptor(key), iv, ciphertext, tag, aad)

    def sm2_public_key(self, private: int) -> bytes:
        if not 1 <= private < N - 1:
            raise ValueError("private scalar out of range")
        return _hex_point(self._mul(private, _G_HEX))

    def _e(self, public: bytes, message: bytes, distid: bytes) -> bytes:
        return self.sm3(z_a(public, distid, self.sm3) + message)

    def sm2_sign(self, private: int, public: bytes, message: bytes, distid: bytes) -> bytes:
        e = int.from_bytes(self._e(public, message, distid), "big")
        inverse = pow(private + 1, -1, N)
        while True:  # GB/T 32918.2 §6.1, retrying on the rare degenerate k
            k = secrets.randbelow(N - 1) + 1
            x1 = int(self._mul(k, _G_HEX)[:64], 16)
            r = (e + x1) % N
            if r == 0 or r + k == N:
                continue
            s = (inverse * (k - r * private)) % N
            if s:
                return der.encode_signature(r, s)

    def sm2_verify(self, public: bytes, message: bytes, signature: bytes, distid: bytes) -> bool:
        try:
            decode_point(public)
            r, s = der.decode_signature(signature)
        except ValueError:
            return False
        if not (1 <= r < N and 1 <= s < N):
            return False
        t = (r + s) % N
        if t == 0:
            return False
        e = int.from_bytes(self._e(public, message, distid), "big")
        # gmssl's own verify mishandles some points (it compares Jacobian strings); add affinely.
        x1 = _affine_add_x(self._mul(s, _G_HEX), self._mul(t, _point_hex(public)))
        return x1 is not None and (e + x1) % N == r

    def sm2_encrypt(self, public: bytes, plaintext: bytes) -> bytes:
        decode_point(public)
        while True:
            k = secrets.randbelow(N - 1) + 1
            c1 = self._mul(k, _G_HEX)
            shared = bytes.fromhex(self._mul(k, _point_hex(public)))
            t = kdf(shared, len(plaintext), self.sm3)
            if plaintext and not any(t):
                continue
            c2 = bytes(a ^ b for a, b in zip(plaintext, t, strict=True))
            c3 = self.sm3(shared[:32] + plaintext + shared[32:])
            return der.encode_sm2_ciphertext(int(c1[:64], 16), int(c1[64:], 16), c3, c2)

    def sm2_decrypt(self, private: int, ciphertext: bytes) -> bytes:
        x, y, c3, c2 = der.decode_sm2_ciphertext(ciphertext)
        c1 = encode_point(x, y) if x < 2**256 and y < 2**256 else b""
        decode_point(c1)  # raises ValueError off the curve
        shared = bytes.fromhex(self._mul(private, _point_hex(c1)))
        t = kdf(shared, len(c2), self.sm3)
        if c2 and not any(t):
            raise ValueError("degenerate KDF output")
        plaintext = bytes(a ^ b for a, b in zip(c2, t, strict=True))
        if not hmac.compare_digest(self.sm3(shared[:32] + plaintext + shared[32:]), c3):
            raise ValueError("C3 mismatch")
        return plaintext


def _affine_add_x(p_hex: str, q_hex: str) -> int | None:
    """x of P + Q in affine coordinates (None for the point at infinity)."""

    x1, y1 = int(p_hex[:64], 16), int(p_hex[64:], 16)
    x2, y2 = int(q_hex[:64], 16), int(q_hex[64:], 16)
    if x1 == x2:
        if (y1 + y2) % P == 0:
            return None
        slope = (3 * x1 * x1 + A) * pow(2 * y1, -1, P) % P
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, P) % P
    return (slope * slope - x1 - x2) % P

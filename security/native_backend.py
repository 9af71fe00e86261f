"""The fast backend: ``cryptography`` for SM3/HMAC-SM3/SM4-GCM, system libcrypto for SM2.

Why libcrypto through ctypes for SM2: ``cryptography`` has no SM2; ``tongsuopy`` signs fast but
cannot set the distinguishing ID and has no public SM2 encryption API; ``gmssl-pyx`` signs at a
tenth of OpenSSL's rate. OpenSSL ≥ 3.0 implements SM2 with Z_A/distid, DER signatures and GM/T 0009
C1C3C2 ciphertexts natively, at ``openssl speed`` rate. Every call below checks its result; all
handles are freed in ``finally`` blocks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from security.backend import GCM_TAG_BYTES
from security.digest import sm3
from security.errors import BACKEND_UNAVAILABLE, SecurityError
from security.keyformats import parse_spki, pkcs8_der, spki_der

_P = ctypes.c_void_p
_UBYTE_P = ctypes.POINTER(ctypes.c_ubyte)
# (ctx, out, &out_len, in, in_len): the shape of every one-shot EVP call used here
_OUT_IN = [_P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_char_p, ctypes.c_size_t]


def _load_libcrypto() -> ctypes.CDLL:
    for name in ("libcrypto.so.3", ctypes.util.find_library("crypto")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(lib, "EVP_PKEY_CTX_set1_id") and hasattr(lib, "EVP_sm3"):
            return lib
    raise SecurityError(
        BACKEND_UNAVAILABLE,
        "OpenSSL >= 3.0 libcrypto with SM2 not found; use XGW_CRYPTO_BACKEND=gmssl",
    )


def _bind(lib: ctypes.CDLL) -> None:
    sig: dict[str, tuple[Any, list[Any]]] = {
        "d2i_PUBKEY": (_P, [_P, ctypes.POINTER(_UBYTE_P), ctypes.c_long]),
        "d2i_AutoPrivateKey": (_P, [_P, ctypes.POINTER(_UBYTE_P), ctypes.c_long]),
        "i2d_PUBKEY": (ctypes.c_int, [_P, ctypes.POINTER(_UBYTE_P)]),
        "EVP_PKEY_free": (None, [_P]),
        "EVP_MD_CTX_new": (_P, []),
        "EVP_MD_CTX_free": (None, [_P]),
        "EVP_PKEY_CTX_new": (_P, [_P, _P]),
        "EVP_PKEY_CTX_free": (None, [_P]),
        "EVP_PKEY_CTX_set1_id": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_int]),
        "EVP_MD_CTX_set_pkey_ctx": (None, [_P, _P]),
        "EVP_sm3": (_P, []),
        "EVP_DigestSignInit": (ctypes.c_int, [_P, _P, _P, _P, _P]),
        "EVP_DigestSign": (ctypes.c_int, _OUT_IN),
        "EVP_DigestVerifyInit": (ctypes.c_int, [_P, _P, _P, _P, _P]),
        "EVP_DigestVerify": (
            ctypes.c_int,
            [_P, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t],
        ),
        "EVP_PKEY_encrypt_init": (ctypes.c_int, [_P]),
        "EVP_PKEY_encrypt": (ctypes.c_int, _OUT_IN),
        "EVP_PKEY_decrypt_init": (ctypes.c_int, [_P]),
        "EVP_PKEY_decrypt": (ctypes.c_int, _OUT_IN),
        "ERR_clear_error": (None, []),
    }
    for name, (restype, argtypes) in sig.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


class _Pkey:
    """An owned EVP_PKEY*; freed when collected."""

    def __init__(self, lib: ctypes.CDLL, handle: int) -> None:
        self._lib, self.handle = lib, handle

    def __del__(self) -> None:
        self._lib.EVP_PKEY_free(self.handle)


class NativeBackend:
    name = "native"
    parallel_sm2 = True  # ctypes releases the GIL around every libcrypto call
    _CACHE_SIZE = 256

    def __init__(self) -> None:
        self._lib = _load_libcrypto()
        _bind(self._lib)
        self._sm3_md = self._lib.EVP_sm3()
        self._keys: OrderedDict[tuple[str, bytes, int | None], _Pkey] = OrderedDict()
        self._lock = threading.Lock()

    # -- SM3 / HMAC / SM4 through `cryptography` -------------------------------------------

    def sm3(self, data: bytes) -> bytes:
        return sm3(data)

    def hmac_sm3(self, key: bytes, data: bytes) -> bytes:
        mac = hmac.HMAC(key, hashes.SM3())
        mac.update(data)
        return mac.finalize()

    def sm4_block_encryptor(self, key: bytes) -> Callable[[bytes], bytes]:
        return Cipher(algorithms.SM4(key), modes.ECB()).encryptor().update  # noqa: S305

    def sm4_gcm_encrypt(
        self, key: bytes, iv: bytes, plaintext: bytes, aad: bytes
    ) -> tuple[bytes, bytes]:
        encryptor = Cipher(algorithms.SM4(key), modes.GCM(iv)).encryptor()
        encryptor.authenticate_additional_data(aad)
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        return ciphertext, encryptor.tag

    def sm4_gcm_decrypt(
        self, key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes
    ) -> bytes:
        if len(tag) != GCM_TAG_BYTES:
            raise ValueError("bad tag length")
        decryptor = Cipher(algorithms.SM4(key), modes.GCM(iv, tag)).decryptor()
        decryptor.authenticate_additional_data(aad)
        try:
            return decryptor.update(ciphertext) + decryptor.finalize()
        except InvalidTag:
            raise ValueError("tag mismatch") from None

    # -- SM2 through libcrypto ---------------------------------------------------------------

    def _pkey(self, kind: str, material: bytes, private: int | None = None) -> _Pkey:
        """A libcrypto key, cached; a private key by its scalar (and the public point given),
        since encoding its PKCS#8 form only to look it up costs as much as using it."""
        cache_key = (kind, material, private)
        with self._lock:
            cached = self._keys.get(cache_key)
            if cached is not None:
                self._keys.move_to_end(cache_key)
                return cached
        if kind == "public":
            der = spki_der(material)
        else:
            assert private is not None
            der = pkcs8_der(private, material or None)
        buffer = ctypes.create_string_buffer(der, len(der))
        cursor = ctypes.cast(buffer, _UBYTE_P)
        decode = self._lib.d2i_PUBKEY if kind == "public" else self._lib.d2i_AutoPrivateKey
        handle = decode(None, ctypes.byref(cursor), len(der))
        if not handle:
            self._lib.ERR_clear_error()
            raise ValueError("libcrypto rejected the key")
        pkey = _Pkey(self._lib, handle)
        with self._lock:
            self._keys[cache_key] = pkey
            if len(self._keys) > self._CACHE_SIZE:
                self._keys.popitem(last=False)
        return pkey

    def _private_pkey(self, private: int, public: bytes | None) -> _Pkey:
        return self._pkey("private", public or b"", private)

    def sm2_public_key(self, private: int) -> bytes:
        pkey = self._private_pkey(private, None)
        size = self._lib.i2d_PUBKEY(pkey.handle, None)
        if size <= 0:
            self._lib.ERR_clear_error()
            raise ValueError("libcrypto could not derive the public key")
        buffer = ctypes.create_string_buffer(size)
        cursor = ctypes.cast(buffer, _UBYTE_P)
        self._lib.i2d_PUBKEY(pkey.handle, ctypes.byref(cursor))
        return parse_spki(buffer.raw)

    def _digest_ctx(self, pkey: _Pkey, distid: bytes, verify: bool) -> tuple[int, int]:
        lib = self._lib
        md_ctx = lib.EVP_MD_CTX_new()
        pkey_ctx = lib.EVP_PKEY_CTX_new(pkey.handle, None)
        if not md_ctx or not pkey_ctx:
            lib.EVP_MD_CTX_free(md_ctx)
            lib.EVP_PKEY_CTX_free(pkey_ctx)
            raise MemoryError("libcrypto context allocation failed")
        ok = lib.EVP_PKEY_CTX_set1_id(pkey_ctx, distid, len(distid)) == 1
        lib.EVP_MD_CTX_set_pkey_ctx(md_ctx, pkey_ctx)
        init = lib.EVP_DigestVerifyInit if verify else lib.EVP_DigestSignInit
        ok = ok and init(md_ctx, None, self._sm3_md, None, pkey.handle) == 1
        if not ok:
            lib.EVP_MD_CTX_free(md_ctx)
            lib.EVP_PKEY_CTX_free(pkey_ctx)
            lib.ERR_clear_error()
            raise ValueError("libcrypto could not start SM2-with-SM3")
        return md_ctx, pkey_ctx

    def sm2_sign(self, private: int, public: bytes, message: bytes, distid: bytes) -> bytes:
        lib = self._lib
        md_ctx, pkey_ctx = self._digest_ctx(self._private_pkey(private, public), distid, False)
        try:
            size = ctypes.c_size_t(80)
            out = ctypes.create_string_buffer(80)
            if lib.EVP_DigestSign(md_ctx, out, ctypes.byref(size), message, len(message)) != 1:
                lib.ERR_clear_error()
                raise ValueError("SM2 signing failed")
            return out.raw[: size.value]
        finally:
            lib.EVP_MD_CTX_free(md_ctx)
            lib.EVP_PKEY_CTX_free(pkey_ctx)

    def sm2_verify(self, public: bytes, message: bytes, signature: bytes, distid: bytes) -> bool:
        lib = self._lib
        try:
            pkey = self._pkey("public", public)
        except ValueError:
            return False
        md_ctx, pkey_ctx = self._digest_ctx(pkey, distid, True)
        try:
            result = lib.EVP_DigestVerify(md_ctx, signature, len(signature), message, len(message))
            if result != 1:
                lib.ERR_clear_error()
            return bool(result == 1)
        finally:
            lib.EVP_MD_CTX_free(md_ctx)
            lib.EVP_PKEY_CTX_free(pkey_ctx)

    def _pkey_crypt(self, pkey: _Pkey, data: bytes, encrypt: bool) -> bytes:
        lib = self._lib
        ctx = lib.EVP_PKEY_CTX_new(pkey.handle, None)
        if not ctx:
            raise MemoryError("libcrypto context allocation failed")
        init = lib.EVP_PKEY_encrypt_init if encrypt else lib.EVP_PKEY_decrypt_init
        run = lib.EVP_PKEY_encrypt if encrypt else lib.EVP_PKEY_decrypt
        try:
            size = ctypes.c_size_t(0)
            if init(ctx) != 1 or run(ctx, None, ctypes.byref(size), data, len(data)) != 1:
                raise ValueError("SM2 operation refused")
            out = ctypes.create_string_buffer(size.value)
            if run(ctx, out, ctypes.byref(size), data, len(data)) != 1:
                raise ValueError("SM2 operation failed")
            return out.raw[: size.value]
        except ValueError:
            lib.ERR_clear_error()
            raise
        finally:
            lib.EVP_PKEY_CTX_free(ctx)

    def sm2_encrypt(self, public: bytes, plaintext: bytes) -> bytes:
        return self._pkey_crypt(self._pkey("public", public), plaintext, encrypt=True)

    def sm2_decrypt(self, private: int, ciphertext: bytes) -> bytes:
        return self._pkey_crypt(self._private_pkey(private, None), ciphertext, encrypt=False)

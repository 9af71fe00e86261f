"""A strict, minimal DER codec for the few ASN.1 structures the 国密 formats use.

Strict means: definite minimal lengths, minimal INTEGER encodings, no trailing bytes, bounded
depth. Every byte of it may come from a hostile partner, so every failure is a ``DerError``.
"""

from __future__ import annotations

from dataclasses import dataclass

TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_NULL = 0x05
TAG_OID = 0x06
TAG_SEQUENCE = 0x30
MAX_DEPTH = 8


class DerError(ValueError):
    """Bytes that are not the DER we expect."""


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def integer(value: int) -> bytes:
    if value < 0:
        raise DerError("negative integers are not used here")
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # leading 0 keeps it positive
    return tlv(TAG_INTEGER, body)


def octet_string(value: bytes) -> bytes:
    return tlv(TAG_OCTET_STRING, value)


def bit_string(value: bytes) -> bytes:
    return tlv(TAG_BIT_STRING, b"\x00" + value)


def null() -> bytes:
    return b"\x05\x00"


def sequence(*items: bytes) -> bytes:
    return tlv(TAG_SEQUENCE, b"".join(items))


def context(number: int, value: bytes, constructed: bool = True) -> bytes:
    return tlv((0xA0 if constructed else 0x80) | number, value)


def oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body.extend(reversed(chunk))
    return tlv(TAG_OID, bytes(body))


@dataclass(frozen=True)
class Node:
    tag: int
    value: bytes

    def children(self) -> list[Node]:
        if not self.tag & 0x20:
            raise DerError("not a constructed value")
        return parse_all(self.value)

    def as_int(self) -> int:
        self.expect(TAG_INTEGER)
        v = self.value
        if not v:
            raise DerError("empty INTEGER")
        if len(v) > 1 and ((v[0] == 0 and v[1] < 0x80) or (v[0] == 0xFF and v[1] >= 0x80)):
            raise DerError("INTEGER not minimally encoded")
        if v[0] & 0x80:
            raise DerError("negative INTEGER")
        return int.from_bytes(v, "big")

    def as_oid(self) -> str:
        self.expect(TAG_OID)
        if not self.value or self.value[-1] & 0x80:
            raise DerError("bad OBJECT IDENTIFIER")
        first, rest = divmod(self.value[0], 40) if self.value[0] < 80 else (2, self.value[0] - 80)
        parts, acc = [first, rest], 0
        for byte in self.value[1:]:
            acc = (acc << 7) | (byte & 0x7F)
            if not byte & 0x80:
                parts.append(acc)
                acc = 0
        return ".".join(str(p) for p in parts)

    def as_bits(self) -> bytes:
        self.expect(TAG_BIT_STRING)
        if not self.value or self.value[0] != 0:
            raise DerError("BIT STRING with unused bits")
        return self.value[1:]

    def as_octets(self) -> bytes:
        self.expect(TAG_OCTET_STRING)
        return self.value

    def expect(self, tag: int) -> Node:
        if self.tag != tag:
            raise DerError(f"expected tag 0x{tag:02x}, found 0x{self.tag:02x}")
        return self


def _read(data: bytes, offset: int) -> tuple[Node, int]:
    if offset + 2 > len(data):
        raise DerError("truncated")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("high tag numbers are not used here")
    first = data[offset + 1]
    offset += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise DerError("indefinite or oversized length")
        if offset + count > len(data):
            raise DerError("truncated length")
        length = int.from_bytes(data[offset : offset + count], "big")
        if length < 0x80 or data[offset] == 0:
            raise DerError("length not minimally encoded")
        offset += count
    end = offset + length
    if end > len(data):
        raise DerError("truncated value")
    return Node(tag, data[offset:end]), end


def parse_all(data: bytes) -> list[Node]:
    nodes, offset = [], 0
    while offset < len(data):
        node, offset = _read(data, offset)
        nodes.append(node)
    return nodes


def parse(data: bytes) -> Node:
    """Exactly one value, nothing after it."""
    node, end = _read(data, 0)
    if end != len(data):
        raise DerError("trailing bytes")
    return node


def sequence_of(data: bytes, count: int | None = None) -> list[Node]:
    items = parse(data).expect(TAG_SEQUENCE).children()
    if count is not None and len(items) != count:
        raise DerError(f"expected {count} items, found {len(items)}")
    return items


# -- the two 国密 structures every backend shares ------------------------------------------


def encode_signature(r: int, s: int) -> bytes:
    """GB/T 35276 SM2 signature: SEQUENCE { r INTEGER, s INTEGER }."""
    return sequence(integer(r), integer(s))


def decode_signature(data: bytes) -> tuple[int, int]:
    r, s = sequence_of(data, 2)
    return r.as_int(), s.as_int()


def encode_sm2_ciphertext(x: int, y: int, c3: bytes, c2: bytes) -> bytes:
    """GM/T 0009 SM2 ciphertext (C1C3C2): SEQUENCE { x, y INTEGER, hash, ct OCTET STRING }."""
    return sequence(integer(x), integer(y), octet_string(c3), octet_string(c2))


def decode_sm2_ciphertext(data: bytes) -> tuple[int, int, bytes, bytes]:
    x, y, c3, c2 = sequence_of(data, 4)
    hash_value = c3.as_octets()
    if len(hash_value) != 32:
        raise DerError("SM2 ciphertext hash must be 32 bytes")
    return x.as_int(), y.as_int(), hash_value, c2.as_octets()

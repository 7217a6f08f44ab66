#!/usr/bin/env python3
"""Writes the seed corpora of the receiving-side fuzz targets (tests/c/fuzz_server_ring.c,
fuzz_client_ring.c, fuzz_handshake.c) into tests/c/corpus/<target>/seed-*.

Each seed is valid traffic in the target's input format (the format is described at the top of each
target): real calls of every kind (sync, client/server/bidi streams, deferred replies, cancels, one-way
runs for the batch handler, errors, arena references, wrap-around) and well-formed handshakes, so that
the fuzzer starts from the protocol's paths instead of having to find its magic numbers. Regression
inputs (regress-*) are written by hand when a finding is fixed and are never touched here.

    python tests/c/corpus/gen_seeds.py            # rewrites every seed-* file
"""
from __future__ import annotations

import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
ABI = 1
PROTO = 1
HELLO_MAGIC = 0x314F4C4C4548534D
WELCOME_MAGIC = 0x31454D4F434C4557
CONN_MAGIC = 0x314E4E4F43534D48
REQUEST, RESPONSE, PAD, CANCEL, DATA, END = 1, 2, 3, 4, 5, 6
F_ONEWAY, F_STREAM, F_ITEM, F_CSTREAM, F_ARENA = 2, 4, 8, 16, 32
# fuzz_server_ring.c function ids
ECHO, CSUM, BIDI, SLOW, GEN, SINK, FAIL, TAKE = range(1, 9)


# ---------------------------------------------------------------- fuzz_server_ring
def sframe(kind, flags, fn, call_id, payload=b"", misc=0, lmode=0, publish=True):
    """op_frame: opcode, kind/flags/function/id/misc/length-mode bytes, u16 payload length, payload."""
    op = 0x80 if publish else 0x00
    return bytes([op, kind, flags, fn, call_id, misc, lmode]) + struct.pack("<H", len(payload)) + payload


def sframe_arena(fn, call_id, offset, length, flags=0):
    op = bytes([0x80, REQUEST, F_ARENA | flags, fn, call_id, 0, 0]) + struct.pack("<H", 0)
    return op + bytes([0]) + struct.pack("<III", 0, offset, length)  # segment 0, generation 0


def sreplies():
    return bytes([0x04, 0x00])  # op_replies: read and consume


def server_ring_seeds():
    u32 = lambda v: struct.pack("<I", v)
    seeds = {
        "echo": bytes([0x00]) + sframe(REQUEST, 0, ECHO, 1, b"hello") + sreplies(),
        "echo-deadline": bytes([0x00]) + sframe(REQUEST, 0, ECHO, 1, b"soon", misc=2) + sframe(REQUEST, 0, ECHO, 2, b"late", misc=1) + sreplies(),
        "client-stream": bytes([0x02]) + sframe(REQUEST, F_CSTREAM, CSUM, 2, b"") + sframe(DATA, 0, CSUM, 2, b"item-1")
        + sframe(DATA, 0, CSUM, 2, b"item-2") + sframe(END, 0, CSUM, 2) + sreplies(),
        "bidi": bytes([0x00]) + sframe(REQUEST, F_STREAM | F_CSTREAM, BIDI, 3) + sframe(DATA, 0, BIDI, 3, b"ping")
        + sframe(DATA, 0, BIDI, 3, b"pong") + sframe(END, 0, BIDI, 3) + sreplies(),
        "server-stream": bytes([0x00]) + sframe(REQUEST, F_STREAM, GEN, 4, u32(5)) + sreplies() + sreplies(),
        "deferred": bytes([0x04]) + sframe(REQUEST, 0, SLOW, 5, u32(500)) + sframe(REQUEST, 0, ECHO, 6, b"meanwhile") + sreplies(),
        "cancel": bytes([0x00]) + sframe(REQUEST, 0, SLOW, 7, u32(2000), publish=False) + sframe(CANCEL, 0, SLOW, 7)
        + bytes([0x05, 0x00]) + u32(1) + sreplies(),
        "oneway-batch": bytes([0x00]) + b"".join(sframe(REQUEST, F_ONEWAY, SINK, 8 + i, b"x" * i, publish=False) for i in range(6))
        + bytes([0x03, 0x00]) + sframe(REQUEST, 0, ECHO, 20, b"after") + sreplies(),
        "error": bytes([0x00]) + sframe(REQUEST, 0, FAIL, 9, b"details") + sframe(REQUEST, 0, 9, 10, b"no such function") + sreplies(),
        "arena-echo": bytes([0x41]) + sframe_arena(ECHO, 11, 0, 4096) + sreplies(),
        "arena-take": bytes([0x41]) + sframe_arena(TAKE, 12, 4096, 60000) + sframe_arena(ECHO, 13, 65000, 536) + sreplies(),
        "wrap": bytes([0x00]) + b"".join(sframe(REQUEST, 0, ECHO, 14 + i, bytes([i]) * 900) + sreplies() for i in range(8)),
        "wrap-16k": bytes([0x30]) + b"".join(sframe(REQUEST, 0, ECHO, 1 + i, bytes([i]) * 3000) + sreplies() for i in range(8)),
        "sleeping": bytes([0x86]) + sframe(REQUEST, 0, ECHO, 1, b"bell") + bytes([0x04, 0x03]) + sframe(REQUEST, 0, ECHO, 2, b"again") + sreplies(),
    }
    return seeds


# ---------------------------------------------------------------- fuzz_client_ring
def cframe(kind, flags, status, call_index, payload=b"", ct=0, publish=True, error_msg=None):
    """op_frame of the fake server: opcode, kind/flags/status/payload-mode bytes, u16 length, id pick."""
    op = 0x80 if publish else 0x00
    if error_msg is not None:
        pmode = ct << 5  # bit 0 clear: an error payload {u32 length, message}
        return bytes([op, 0, flags, status, pmode]) + struct.pack("<H", 0) + bytes([call_index, len(error_msg)]) + error_msg
    pmode = 1 | (ct << 5)
    ksel = {RESPONSE: 0, PAD: 5}.get(kind, 0)
    return bytes([op, ksel, flags, status, pmode]) + struct.pack("<H", len(payload)) + bytes([call_index]) + payload


def cframe_arena(call_index, offset, length, flags=0):
    return bytes([0x80, 0, F_ARENA | flags, 0, 0]) + struct.pack("<H", 0) + bytes([call_index]) + struct.pack("<IHH", 0, offset, length)


def client_ring_seeds():
    return {
        "sync": bytes([0x00, 0x00]) + cframe(RESPONSE, 0, 0, 0, b"hello back"),
        "sync-error": bytes([0x00, 0x00]) + cframe(RESPONSE, 0, 5, 0, error_msg=b"not found here"),
        "async": bytes([0x04, 0x01]) + bytes([0x04, 0x05]) + cframe(RESPONSE, 0, 0, 1, b"second") + cframe(RESPONSE, 0, 0, 0, b"first"),
        "batch": bytes([0x00, 0x02]) + bytes([0x04, 0x05]) + b"".join(cframe(RESPONSE, 0, 0, i, b"r%d" % i) for i in range(3)),
        "server-stream": bytes([0x00, 0x03]) + b"".join(cframe(RESPONSE, F_ITEM, 0, 0, b"item%d" % i) for i in range(4))
        + cframe(RESPONSE, 0, 0, 0),
        "client-stream": bytes([0x00, 0x04]) + bytes([0x04, 0x07]) + cframe(RESPONSE, 0, 0, 0, b"2 items"),
        "bidi": bytes([0x00, 0x06]) + bytes([0x04, 0x07]) + cframe(RESPONSE, F_ITEM, 0, 0, b"i1") + cframe(RESPONSE, F_ITEM, 0, 0, b"i2")
        + cframe(RESPONSE, 0, 0, 0),
        "oneway-then-sync": bytes([0x00, 0x05]) + bytes([0x04, 0x07]) + cframe(RESPONSE, 0, 0, 1, b"after"),
        "arena-reply": bytes([0x01, 0x00]) + cframe_arena(0, 128, 1000),
        "arena-request": bytes([0x00, 0x07]) + cframe(RESPONSE, 0, 0, 0, b"got your block"),
        "wrap": bytes([0x04, 0x08 | 0x00]) + cframe(RESPONSE, 0, 0, 0, b"a" * 900) + bytes([0x04, 0x07])
        + cframe(RESPONSE, 0, 0, 1, b"b" * 900),
        "goodbye": bytes([0x00, 0x00]) + cframe(RESPONSE, 0, 15, 0xE0, error_msg=b"server dropped the connection"),
    }


# ---------------------------------------------------------------- fuzz_handshake
def hello(service=b"fuzz.hs", version=b"1.0.0", ring=0):
    return struct.pack("<QIIQ", HELLO_MAGIC, ABI, PROTO, ring) + service.ljust(128, b"\0") + version.ljust(64, b"\0") + b"fuzz-seed".ljust(128, b"\0")


def welcome(cap, table_bytes, nfns, status=0, message=b""):
    total = (4096 + 2 * cap + table_bytes + 4095) & ~4095
    return struct.pack("<QIIii", WELCOME_MAGIC, ABI, PROTO, status, 0) + message.ljust(256, b"\0") + struct.pack(
        "<QQQQII", cap, cap, table_bytes, total, nfns, 0), total


def conn_header(cap, table_bytes, total):
    return struct.pack("<QIIQQQQ", CONN_MAGIC, PROTO, 4096, cap, cap, table_bytes, total)


def table(*names):
    out = b""
    for i, n in enumerate(names):
        out += struct.pack("<III", i + 1, 0, len(n)) + n.ljust((len(n) + 3) & ~3, b"\0")
    return out


def handshake_seeds():
    seeds = {
        "server-hello": bytes([0x00, 0x00, 0x00]) + hello(),
        "server-hello-bell": bytes([0x00, 0x01 | (1 << 2), 0x00]) + hello(ring=8192),
        "server-hello-wrong-service": bytes([0x00, 0x00, 0x00]) + hello(service=b"other.svc"),
        "server-hello-bad-ring": bytes([0x00, 0x00, 0x00]) + hello(ring=12345),
        "server-hello-abi": bytes([0x00, 0x00, 0x00]) + struct.pack("<QII", HELLO_MAGIC, 99, PROTO) + hello()[16:],
    }
    t = table(b"echo", b"stream")
    w, total = welcome(4096, len(t), 2)
    seeds["client-welcome"] = bytes([0x01, 0x00, 0x00, 0x00]) + w + conn_header(4096, len(t), total) + t
    w, total = welcome(8192, len(t), 2)
    seeds["client-welcome-8k"] = bytes([0x01, 0x00, 0x00, 0x00]) + w + conn_header(8192, len(t), total) + t
    w, _ = welcome(0, 0, 0, status=5, message=b"no such service here")
    seeds["client-refusal"] = bytes([0x01, 0x05, 0x00, 0x00]) + w
    w, total = welcome(4096, len(t), 2)
    seeds["client-unsealed"] = bytes([0x01, 0x02, 0x00, 0x00]) + w + conn_header(4096, len(t), total) + t
    seeds["client-surplus-fds"] = bytes([0x01, 0x03, 0x00, 0x00]) + w + conn_header(4096, len(t), total) + t
    return seeds


def main() -> None:
    for target, seeds in (("server_ring", server_ring_seeds()), ("client_ring", client_ring_seeds()),
                          ("handshake", handshake_seeds())):
        d = HERE / target
        d.mkdir(exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        for name, data in seeds.items():
            (d / f"seed-{name}").write_bytes(data)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()

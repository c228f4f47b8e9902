#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every target into fuzz/corpus/<target>/seed-*.

Each seed is a well-formed input in the target's layout (see the comment at the top of
each fuzz_targets/*.rs), so coverage starts at the deep paths: a TX ring with a GSO chain,
TCP frames over IPv4/IPv6 needing segmentation, a xenstored session with a transaction.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
NETTXF_CSUM_BLANK, NETTXF_MORE_DATA, NETTXF_EXTRA_INFO = 1, 4, 8


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(bytes(data))


def txreq(gref, offset, flags, rid, size):
    return struct.pack("<IHHHH", gref, offset, flags, rid, size)


def gso_extra(size, gso_type=1, more=False):
    # type 1 (GSO), flags, u.gso: size u16, type u8, pad u8, features u16; padded to 12.
    return struct.pack("<BBHBBH", 1, 1 if more else 0, size, gso_type, 0, 0) + bytes(4)


def ring(slots, produced=None, rsp_prod=0, lag=0, unanswered=0):
    n = len(slots) if produced is None else produced
    return struct.pack("<IBBIII", rsp_prod, lag, unanswered, n, 0, 0) + b"".join(slots)


RINGS = {
    "single": ring([txreq(0, 100, 0, 1, 60)]),
    "gso-chain": ring([
        txreq(0, 0, NETTXF_EXTRA_INFO | NETTXF_MORE_DATA | NETTXF_CSUM_BLANK, 1, 9000),
        gso_extra(1448),
        txreq(1, 0, NETTXF_MORE_DATA, 2, 4096),
        txreq(2, 0, 0, 3, 904),
    ]),
    "two-packets-wrap": ring([txreq(0, 0, NETTXF_MORE_DATA, 1, 200), txreq(1, 2000, 0, 2, 100),
                              txreq(2, 10, 0, 3, 1514)], rsp_prod=0xFFFFFFFE),
    "incomplete": ring([txreq(0, 0, NETTXF_MORE_DATA, 1, 3000), txreq(1, 0, NETTXF_MORE_DATA, 2, 1000)]),
    "blocked": ring([txreq(0, 0, NETTXF_MORE_DATA, 1, 300)] + [txreq(1, 0, NETTXF_MORE_DATA, 2, 10)] * 5,
                    unanswered=250),
}
for name, r in RINGS.items():
    write("tx_parse", name, b"\x01" + r)
    # batch 64, map frames >= 129 bytes for a gathering uplink, 4 pages, 2 rounds.
    write("tx_path", name, bytes([63, 4 | 1, 0, 0, 4, 1]) + r)
    write("tx_path", name + "-copy", bytes([63, 0, 0, 0, 4, 1]) + r)
write("tx_path", "gso-chain-refused-map", bytes([63, 4 | 3, 0b10, 0, 4, 1]) + RINGS["gso-chain"])


def csum16(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp(payload_len, flags=0x18):
    return struct.pack("!HHIIBBHHH", 40000, 80, 1000, 0, 5 << 4, flags, 65535, 0, 0) + bytes(
        (i * 7) & 0xFF for i in range(payload_len))


def eth(ethertype, vlan=False):
    tag = struct.pack("!HH", 0x8100, 5) if vlan else b""
    return bytes.fromhex("00163e000002 00163e000001") + tag + struct.pack("!H", ethertype)


def ipv4(l4, proto=6):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 7, 0x4000, 64, proto, 0,
                    bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    h = h[:10] + struct.pack("!H", csum16(h)) + h[12:]
    return h + l4


def ipv6(l4, proto=6, hbh=False):
    ext = b""
    if hbh:
        ext = bytes([proto, 0]) + bytes([1, 4, 0, 0, 0, 0])
        proto = 0
    src, dst = bytes(15) + b"\x01", bytes(15) + b"\x02"
    return struct.pack("!IHBB", 6 << 28, len(ext) + len(l4), proto, 64) + src + dst + ext + l4


def udp(payload_len):
    return struct.pack("!HHHH", 5000, 53, 8 + payload_len, 0) + bytes(i & 0xFF for i in range(payload_len))


FRAMES = {
    "v4-tcp": eth(0x0800) + ipv4(tcp(3000)),
    "v4-tcp-vlan": eth(0x0800, vlan=True) + ipv4(tcp(1000)),
    "v6-tcp-hbh": eth(0x86DD) + ipv6(tcp(2000), hbh=True),
    "v4-udp": eth(0x0800) + ipv4(udp(100), proto=17),
    "v6-udp": eth(0x86DD) + ipv6(udp(300), proto=17),
}
for name, f in FRAMES.items():
    v6 = name.startswith("v6")
    write("offload", name, struct.pack("<BHH", int(v6), 1448, 60) + f)
    # vnet: NEEDS_CSUM (+ GSO for TCP), csum_start/offset at the L4 header.
    start = 14 + (4 if "vlan" in name else 0) + ((48 if "hbh" in name else 40) if v6 else 20)
    is_tcp = "tcp" in name
    gso = (4 if v6 else 1) if is_tcp else 0
    hdr = struct.pack("<BBHHHHH", 1, gso, start + (20 if is_tcp else 8), 1448 if is_tcp else 0, start,
                      16 if is_tcp else 6, 0)
    write("vnet", name, hdr + struct.pack("<H", 200) + f)
    # rx_prepare: features none / all; offload csum_blank (+ GSO for TCP); fix lengths.
    gso_bits = (4 | (8 if v6 else 0)) if is_tcp else 0
    for fname, feat in (("plain-guest", 0), ("sg-gso-guest", 0x1F), ("sg-guest", 0x01)):
        write("rx_prepare", name + "-" + fname, struct.pack("<BBHH", feat, 1 | gso_bits | 16, 1448, 0) + f)
    if is_tcp:
        write("rx_prepare", name + "-64k", struct.pack("<BBHH", 0x01, 1 | gso_bits | 16, 1448, 60000) + f)

XS_READ, XS_WATCH, XS_TS, XS_TE, XS_WRITE, XS_MKDIR, XS_SETPERMS, XS_DIR = 2, 4, 6, 7, 11, 12, 14, 1


def xs_msg(ty, payload, req=1, tx=0):
    return struct.pack("<IIII", ty, req, tx, len(payload)) + payload


write("xenstore_wire", "write", xs_msg(XS_WRITE, b"/local/domain/1/device/vif/0/state\x004"))
write("xenstore_wire", "setperms", xs_msg(XS_SETPERMS, b"/a\x00n0\x00r1\x00b2\x00"))
write("xenstore_wire", "two-frames", xs_msg(XS_READ, b"/a\x00") + xs_msg(XS_DIR, b"/\x00", req=2))


def xs_op(conn, ty, payload, txsel=0, req=1):
    return bytes([conn, ty, txsel, req, len(payload)]) + payload


session = b"".join([
    xs_op(0, XS_MKDIR, b"/local/domain/1/device/vif/0\x00"),
    xs_op(0, XS_SETPERMS, b"/local/domain/1/device\x00n1\x00"),
    xs_op(1, XS_WATCH, b"device\x00tok\x00"),
    xs_op(0, XS_TS, b"\x00"),
    xs_op(0, XS_WRITE, b"/local/domain/1/device/vif/0/state\x004", txsel=1),
    xs_op(0, XS_TE, b"T\x00", txsel=1),
    xs_op(1, XS_READ, b"device/vif/0/state\x00"),
    bytes([0xE0 | 2, 21]) + xs_msg(XS_DIR, b"device\x00")[:21],
    bytes([0xC0 | 4, 1]),
])
write("xenstored", "session", session)

for name, value in {
    "mac": "00:16:3e:0a:bc:ff",
    "ring-ref": "4294967295",
    "state": "4",
    "knob": "tx-drain-max=32",
    "knob-mtu": "mtu=9000",
    "hotplug": "connected",
}.items():
    write("node_values", name, value.encode())
write("node_values", "gso-extra", gso_extra(1448)[:8])

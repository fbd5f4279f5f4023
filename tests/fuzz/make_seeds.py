#!/usr/bin/python3
"""Write the fuzz seed corpora (tests/fuzz/corpus/*): a few valid frames for the
parser and the pipeline, and the shipped configs for the loader. Rerun after
changing a seed: python3 tests/fuzz/make_seeds.py"""
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip4(a):
    return bytes(int(x) for x in a.split("."))


def ipv4(src, dst, proto, l4, ttl=64, ident=1, frag=0):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, frag, ttl, proto, 0, ip4(src), ip4(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + l4


def pseudo(src, dst, proto, n):
    return ip4(src) + ip4(dst) + struct.pack("!BBH", 0, proto, n)


def tcp(src, dst, sport, dport, flags=0x02, opts=b"", payload=b""):
    off = (20 + len(opts)) // 4
    t = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, off << 4, flags, 65535, 0, 0) + opts + payload
    c = csum(pseudo(src, dst, 6, len(t)) + t)
    return t[:16] + struct.pack("!H", c) + t[18:]


def udp(src, dst, sport, dport, payload=b"x" * 16):
    u = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = csum(pseudo(src, dst, 17, len(u)) + u) or 0xFFFF
    return u[:6] + struct.pack("!H", c) + u[8:]


def icmp(typ, code, rest, payload):
    m = struct.pack("!BBH", typ, code, 0) + rest + payload
    return m[:2] + struct.pack("!H", csum(m)) + m[4:]


def eth(dst_last, src_last, payload, etype=0x0800):
    return bytes([2, 0, 0, 0, 0, dst_last]) + bytes([2, 0, 0, 0, 0, src_last]) + struct.pack("!H", etype) + payload


def arp(op, sha_last, sip, tip):
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + bytes([2, 0, 0, 0, 0, sha_last]) + ip4(sip) + bytes(6) + ip4(tip)


C = "192.168.10.2"
syn = ipv4(C, "203.0.113.10", 6, tcp(C, "203.0.113.10", 40000, 443, opts=bytes([2, 4, 5, 0xB4])))
syn_s3 = ipv4(C, "198.51.100.10", 6, tcp(C, "198.51.100.10", 40001, 443, opts=bytes([2, 4, 5, 0xB4])))
dns = ipv4(C, "203.0.113.10", 17, udp(C, "203.0.113.10", 40002, 53))
ping = ipv4(C, "203.0.113.10", 1, icmp(8, 0, struct.pack("!HH", 77, 1), b"ping" * 4))
big = udp(C, "203.0.113.10", 40003, 53, bytes(range(256)) * 4)
frag1 = ipv4(C, "203.0.113.10", 17, big[:512], ident=9, frag=0x2000)
frag2 = ipv4(C, "203.0.113.10", 17, big[512:], ident=9, frag=64)
reply = ipv4("203.0.113.10", "10.0.3.10", 17, udp("203.0.113.10", "10.0.3.10", 53, 40002))
synack = ipv4("203.0.113.10", "10.0.3.10", 6, tcp("203.0.113.10", "10.0.3.10", 443, 40000, flags=0x12))
translated = ipv4("10.0.3.10", "203.0.113.10", 17, udp("10.0.3.10", "203.0.113.10", 40002, 53), ttl=62)
unreach = ipv4("203.0.113.10", "10.0.3.10", 1, icmp(3, 3, bytes(4), translated))
ttl1 = ipv4(C, "203.0.113.10", 17, udp(C, "203.0.113.10", 40004, 53), ttl=1)
echo_us = ipv4(C, "10.0.1.10", 1, icmp(8, 0, struct.pack("!HH", 5, 1), b"hi"))

packets = {"tcp_syn": syn, "udp": dns, "icmp_echo": ping, "frag_first": frag1, "frag_later": frag2,
           "icmp_error": unreach, "ttl1": ttl1}

# Pipeline records: [flags][len hi][len lo][frame]; flags: iface 0 inside / 1 endpoint / 2 internet.
def rec(iface, frame, worker=0, advance=0):
    return bytes([iface | worker << 2 | advance << 5]) + struct.pack("!H", len(frame)) + frame

IN, EP, NET = 0, 1, 2
flows = {
    "udp_out_and_back": rec(IN, eth(0x10, 0x01, dns)) + rec(NET, eth(0x12, 0x31, reply), worker=1),
    "tcp_handshake": rec(IN, eth(0x10, 0x01, syn)) + rec(NET, eth(0x12, 0x31, synack)),
    "s3_syn_clamped": rec(IN, eth(0x10, 0x01, syn_s3)),
    "icmp_echo_and_error": rec(IN, eth(0x10, 0x01, ping)) + rec(IN, eth(0x10, 0x01, dns)) +
                           rec(NET, eth(0x12, 0x31, unreach)),
    "fragments_out_of_order": rec(IN, eth(0x10, 0x01, frag2), worker=1) + rec(IN, eth(0x10, 0x01, frag1)),
    "big_to_small_mtu": rec(IN, eth(0x10, 0x01, ipv4(C, "203.0.113.10", 17, big))),
    "arp_and_echo": rec(IN, eth(0xFF, 0x05, arp(1, 0x05, "10.0.1.5", "10.0.1.10"), 0x0806)) +
                    rec(IN, eth(0x10, 0x05, echo_us)),
    "ttl_and_expiry": rec(IN, eth(0x10, 0x01, ttl1)) + rec(IN, eth(0x10, 0x01, dns), advance=5) +
                      rec(NET, eth(0x12, 0x31, reply), advance=6),
}


def write(sub, name, data):
    d = os.path.join(HERE, "corpus", sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


for n, pkt in packets.items():
    write("parse_ipv4", n, pkt)
for n, data in flows.items():
    write("pipeline", n, data)
for n in ("lab.toml", "lab-forward.toml", "ec2.toml"):
    shutil.copy(os.path.join(ROOT, "config", n), os.path.join(HERE, "corpus", "config", n))
write("config", "minimal.toml", b'[[interface]]\nname = "a"\ndevice = "net_null0"\naddress = "10.0.0.1/24"\n')
write("config", "acl_nat.toml",
      b'[[interface]]\nname = "in"\ndevice = "net_null0"\naddress = "10.0.1.10/24"\nmtu = 9001\nmss_clamp = 8961\n'
      b'[[interface]]\nname = "out"\ndevice = "0000:00:06.0"\naddress = "10.0.3.10/24"\n'
      b'[[route]]\nprefix = "0.0.0.0/0"\nvia = "10.0.3.1"\ninterface = "out"\n'
      b'[[snat]]\nfrom = ["192.168.0.0/16", "172.16.0.0/12"]\nto = ["10.0.3.10"]\nports = "1024-65535"\n'
      b'[[acl]]\naction = "deny"\nsrc = "192.168.66.0/24"\nprotocol = "tcp"\ndst_ports = "25"\n'
      b'[acl_default]\naction = "allow"\n[timeouts]\nudp = 120\n[nat]\nport_overlapping = false\n')
print("seeds written under", os.path.join(HERE, "corpus"))

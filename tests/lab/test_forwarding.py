#!/usr/bin/python3
"""End-to-end: natgw as a plain IPv4 forwarder (no NAT) in the namespace lab.

    lab.sh up --mode forward    servers route 192.168.0.0/16 back via natgw
    natgw --config config/lab-forward.toml

Run as root:  /usr/bin/python3 tests/lab/test_forwarding.py -v
Against Linux instead of natgw (validates the tests):  NATGW_LAB_DATAPLANE=kernel ... (see natgwlab.py)
"""

import hashlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import natgwlab as L  # noqa: E402
from natgwlab import (  # noqa: E402
    CLIENT_ADDR, CLIENT_NS, INET_ADDR, NATGW_INSIDE, S3_ADDR, curl, ping, ping_received, udp_request,
    veth_counters,
)

SERVERS = {"s3": S3_ADDR, "inet": INET_ADDR}


def icmp_layers():
    from scapy.layers.inet import ICMP, IP, IPerror
    from scapy.layers.l2 import Ether
    return Ether, IP, ICMP, IPerror


def warm_up(dsts) -> None:
    """Let ARP settle on every hop (tgw -> natgw, natgw -> server, server -> natgw) before measuring.

    natgw holds packets while it resolves a gateway, but the tests below count packets exactly; the
    first-packet behaviour is the packet tests' job."""
    for dst in dsts:
        for _ in range(3):
            if ping(CLIENT_NS, dst, count=1, wait=2).returncode == 0:
                break


class Forwarding(L.LabTestCase):
    MODE = "forward"
    CONFIG = "config/lab-forward.toml"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        warm_up([S3_ADDR, INET_ADDR, NATGW_INSIDE])

    # -- reachability
    def test_ping_s3_server(self):
        r = ping(CLIENT_NS, S3_ADDR, count=3)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(ping_received(r), 3, r.stdout)

    def test_ping_internet_server(self):
        r = ping(CLIENT_NS, INET_ADDR, count=3)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(ping_received(r), 3, r.stdout)

    def test_ping_natgw_inside_address(self):
        Ether, IP, ICMP, _ = icmp_layers()
        with self.lab.tcpdump(CLIENT_NS, "cli0", f"icmp and src host {NATGW_INSIDE}", count=3) as cap:
            r = ping(CLIENT_NS, NATGW_INSIDE, count=3)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(ping_received(r), 3, r.stdout)
        replies = [p for p in cap.packets if ICMP in p and p[ICMP].type == 0]
        self.assertEqual(len(replies), 3, [p.summary() for p in cap.packets])
        for p in replies:
            self.assertEqual(p[IP].dst, CLIENT_ADDR)

    def test_http_whoami(self):
        for name, addr in SERVERS.items():
            with self.subTest(server=name):
                r = curl(CLIENT_NS, f"http://{addr}/whoami")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.strip(), name)

    def test_servers_see_client_address(self):
        # Forwarding only: the source address arrives untouched.
        for name, addr in SERVERS.items():
            with self.subTest(server=name):
                r = curl(CLIENT_NS, f"http://{addr}/ip")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.strip(), f"{name} {CLIENT_ADDR}")

    def test_http_download_1M_intact(self):
        # Full-size TCP segments through natgw both ways; the bytes must be the server's bytes.
        for name, addr in SERVERS.items():
            with self.subTest(server=name):
                want = hashlib.sha256(Path(f"/run/natgw-lab/www-{name}/1M").read_bytes()).hexdigest()
                r = L.ns_exec(CLIENT_NS, f"curl -sS --max-time 20 http://{addr}/1M | sha256sum", timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.split()[0], want, "1 MB download corrupted or truncated")

    def test_udp_echo(self):
        for name, addr in SERVERS.items():
            with self.subTest(server=name):
                r = udp_request(CLIENT_NS, addr, 7, f"hello-{name}")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout, f"{name}:{CLIENT_ADDR}:hello-{name}")

    # -- which link each prefix leaves by
    def _assert_leaves_by(self, dst: str, via: tuple[str, str], other: tuple[str, str], n: int = 5):
        Ether, IP, ICMP, _ = icmp_layers()
        nat_port = {"s3-nat": "nat-s3", "inet-nat": "nat-inet"}[via[1]]
        natgw_mac = self.lab.mac(L.NAT_NS, nat_port)   # natgw's port = the natgw side of the veth
        server_mac = self.lab.mac(*via)
        bpf = f"icmp and host {dst}"
        before = {i: veth_counters(*i) for i in (via, other)}
        with self.lab.tcpdump(*via, bpf, count=2 * n) as cap, self.lab.tcpdump(*other, bpf) as stray:
            r = ping(CLIENT_NS, dst, count=n)
        delta = {i: L.counters_delta(before[i], veth_counters(*i)) for i in (via, other)}
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(ping_received(r), n, r.stdout)

        requests = [p for p in cap.packets if ICMP in p and p[ICMP].type == 8]
        replies = [p for p in cap.packets if ICMP in p and p[ICMP].type == 0]
        self.assertEqual(len(requests), n, [p.summary() for p in cap.packets])
        self.assertEqual(len(replies), n, [p.summary() for p in cap.packets])
        for p in requests:
            self.assertEqual((p[IP].src, p[IP].dst), (CLIENT_ADDR, dst))
            # 64 at the client, -1 at the tgw, -1 at natgw.
            self.assertEqual(p[IP].ttl, 62, "TTL not decremented exactly once by natgw")
            self.assertEqual((p[Ether].src, p[Ether].dst), (natgw_mac, server_mac), "wrong L2 rewrite")
        self.assertEqual(stray.packets, [], f"{dst} traffic also seen on {other[1]}")
        self.assertGreaterEqual(delta[via]["rx_packets"], n, delta[via])
        self.assertGreaterEqual(delta[via]["tx_packets"], n, delta[via])
        self.assertLess(delta[other]["rx_packets"], n, f"{other[1]} received traffic: {delta[other]}")

    def test_s3_prefix_leaves_by_endpoint_link(self):
        self._assert_leaves_by(S3_ADDR, L.S3_IF, L.INET_IF)

    def test_internet_leaves_by_internet_link(self):
        self._assert_leaves_by(INET_ADDR, L.INET_IF, L.S3_IF)

    # -- ARP
    def test_natgw_answers_arp_for_its_addresses(self):
        # natgw's own ARP requests let the neighbours learn its MAC without asking, so ask explicitly.
        cases = (("inside", L.TGW_NS, "tgw-nat", "nat-in", NATGW_INSIDE, L.TGW_NAT_ADDR),
                 ("endpoint", L.S3_NS, "s3-nat", "nat-s3", L.NATGW_ENDPOINT, L.S3_LINK_ADDR),
                 ("internet", L.INET_NS, "inet-nat", "nat-inet", L.NATGW_INTERNET, L.INET_LINK_ADDR))
        for name, ns, ifn, port, addr, me in cases:
            with self.subTest(interface=name):
                got = L.arp_probe(ns, ifn, addr, me)
                self.assertIsNotNone(got, f"no ARP reply for {addr} on {ifn}")
                mac = self.lab.mac(L.NAT_NS, port)
                self.assertEqual(got, (mac, mac), "ARP reply must carry natgw's port MAC")

    def test_natgw_ignores_arp_for_other_addresses(self):
        self.assertIsNone(L.arp_probe(L.TGW_NS, "tgw-nat", "10.0.1.99", L.TGW_NAT_ADDR, timeout=1),
                          "natgw answered ARP for an address it does not own")

    def test_forwarding_after_neighbours_forget_natgw(self):
        # The tgw and the server must re-resolve natgw (broadcast ARP) and traffic must resume.
        for ns, ifn in ((L.TGW_NS, "tgw-nat"), (L.S3_NS, "s3-nat")):
            L.ns_exec(ns, ["ip", "neigh", "flush", "dev", ifn], check=True)
        r = ping(CLIENT_NS, S3_ADDR, count=3, wait=3)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertGreaterEqual(ping_received(r), 2, r.stdout)

    # -- TTL
    def test_ttl_expiring_at_natgw_gets_time_exceeded(self):
        # TTL 2 from the client: the tgw forwards it with TTL 1, natgw must not forward it.
        Ether, IP, ICMP, IPerror = icmp_layers()
        with self.lab.tcpdump(CLIENT_NS, "cli0", "icmp[icmptype] == icmp-timxceed", count=2) as cap, \
                self.lab.tcpdump(*L.INET_IF, "icmp") as stray:
            r = ping(CLIENT_NS, INET_ADDR, count=2, ttl=2)
        self.assertIn(f"From {NATGW_INSIDE}", r.stdout, r.stdout + r.stderr)
        self.assertIn("Time to live exceeded", r.stdout)
        self.assertEqual(len(cap.packets), 2, [p.summary() for p in cap.packets])
        for p in cap.packets:
            self.assertEqual(p[IP].src, NATGW_INSIDE)
            self.assertEqual((p[ICMP].type, p[ICMP].code), (11, 0))
            self.assertIn(IPerror, p, "time exceeded without the original header")
            self.assertEqual((p[IPerror].src, p[IPerror].dst), (CLIENT_ADDR, INET_ADDR))
        self.assertEqual(stray.packets, [], "a packet whose TTL expired was forwarded")

    def test_ttl_3_still_delivered(self):
        # TTL 2 on arrival at natgw is forwarded with TTL 1: the server still answers.
        r = ping(CLIENT_NS, S3_ADDR, count=2, ttl=3)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(ping_received(r), 2, r.stdout)


class NoRoute(L.LabTestCase):
    """natgw without the default route: the internet server's address has no route."""

    MODE = "forward"

    @classmethod
    def natgw_config(cls):
        def drop_default(cfg):
            cfg["route"] = [r for r in cfg["route"] if r.get("prefix") != "0.0.0.0/0"]
        path = L.derive_config("config/lab-forward.toml",
                               Path(cls.lab.logdir) / "lab-forward-no-default.toml", drop_default)
        return str(path)

    def test_no_route_gets_destination_unreachable(self):
        Ether, IP, ICMP, IPerror = icmp_layers()
        with self.lab.tcpdump(CLIENT_NS, "cli0", "icmp[icmptype] == icmp-unreach", count=2) as cap, \
                self.lab.tcpdump(*L.INET_IF, "icmp") as stray:
            r = ping(CLIENT_NS, INET_ADDR, count=2)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn(f"From {NATGW_INSIDE}", r.stdout, r.stdout + r.stderr)
        self.assertRegex(r.stdout, r"Destination (Net|Host) Unreachable")
        self.assertEqual(len(cap.packets), 2, [p.summary() for p in cap.packets])
        for p in cap.packets:
            self.assertEqual(p[IP].src, NATGW_INSIDE)
            self.assertEqual(p[ICMP].type, 3)
            self.assertIn(p[ICMP].code, (0, 1), "expected net (0) or host (1) unreachable")
            self.assertIn(IPerror, p, "unreachable without the original header")
            self.assertEqual((p[IPerror].src, p[IPerror].dst), (CLIENT_ADDR, INET_ADDR))
        self.assertEqual(stray.packets, [], "a packet without a route left by the internet link")

    def test_tcp_to_no_route_fails_fast(self):
        # The ICMP error reaches the client's TCP stack: connect() fails at once instead of timing out.
        t0 = time.monotonic()
        r = curl(CLIENT_NS, f"http://{INET_ADDR}/whoami", timeout=8)
        elapsed = time.monotonic() - t0
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertLess(elapsed, 5, f"curl took {elapsed:.1f} s: no ICMP unreachable for the SYN? {r.stderr}")

    def test_other_routes_still_work(self):
        warm_up([S3_ADDR])
        r = ping(CLIENT_NS, S3_ADDR, count=2)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    L.main()

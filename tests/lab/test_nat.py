#!/usr/bin/python3
"""End-to-end: natgw as a source NAT in the namespace lab (issue 3's lab tests).

    lab.sh up --mode nat    the servers have NO route back to 192.168.0.0/16 (as in AWS), and the S3-like
                            endpoint (ngw-s3) drops anything whose source is not natgw's 10.0.2.10
    natgw --config config/lab.toml, or a config derived from it (tiny pool, short timeouts)

Run as root:  /usr/bin/python3 tests/lab/test_nat.py -v
Against Linux instead of natgw (validates the tests):  NATGW_LAB_DATAPLANE=kernel ... (see natgwlab.py);
assertions on natgw's own counters are skipped there.
"""

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import natgwlab as L  # noqa: E402
from natgwlab import (  # noqa: E402
    CLIENT_ADDR, CLIENT_NS, INET_ADDR, INET_NS, NATGW_ENDPOINT, NATGW_INTERNET, S3_ADDR, S3_NS, curl, ping,
    ping_received, udp_request,
)
from natgwlab import echo_source, s3_filter_drops, warm_up  # noqa: E402

SERVERS = {"s3": (S3_ADDR, NATGW_ENDPOINT), "inet": (INET_ADDR, NATGW_INTERNET)}
HOLD_PORT = 9000              # NsServer TCP port that holds connections
ECHO_PORTS = (5007, 5008)     # NsServer UDP echo ports that report the source port
STRAY_PORT = 5009             # an NsServer UDP port the client never sends to




def start_servers(cls, inet_tcp=(HOLD_PORT,), inet_udp=ECHO_PORTS + (STRAY_PORT,), s3_udp=ECHO_PORTS):
    """Test-owned servers beside lab.sh's: they report the source port they saw (endpoint-independent
    mapping, port ranges) and hold TCP connections open (thousands of concurrent sessions)."""
    cls.inet_srv = L.NsServer(INET_NS, "inet", INET_ADDR, tcp_ports=inet_tcp, udp_ports=inet_udp,
                              logdir=cls.lab.logdir).start()
    cls.addClassCleanup(cls.inet_srv.stop)
    cls.s3_srv = L.NsServer(S3_NS, "s3", S3_ADDR, udp_ports=s3_udp, logdir=cls.lab.logdir).start()
    cls.addClassCleanup(cls.s3_srv.stop)






_CLOSED_PORT_PROBE = r"""
import errno, json, socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((addr, port))            # a connected socket reports the ICMP port unreachable as ECONNREFUSED
s.send(b"anyone there?")
try:
    s.recv(100)
    res = "data"
except ConnectionRefusedError:
    res = "ECONNREFUSED"
except socket.timeout:
    res = "timeout"
print(json.dumps({"local_port": s.getsockname()[1], "result": res}))
"""


class Nat(L.LabTestCase):
    MODE = "nat"
    CONFIG = "config/lab.toml"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        start_servers(cls)
        warm_up([S3_ADDR, INET_ADDR])

    # -- reachability through NAT; the servers have no route back to the client
    def test_servers_have_no_route_back(self):
        # The premise of every test here (as in AWS): only translated traffic can be answered.
        for ns in (S3_NS, INET_NS):
            with self.subTest(ns=ns):
                r = L.ns_exec(ns, ["ip", "route", "get", CLIENT_ADDR])
                self.assertNotEqual(r.returncode, 0, f"{ns} has a route to {CLIENT_ADDR}: {r.stdout}")
                self.assertIn("unreachable", r.stderr.lower(), r.stderr)

    def test_http_servers_see_natgw_address(self):
        for name, (addr, snat) in SERVERS.items():
            with self.subTest(server=name):
                r = curl(CLIENT_NS, f"http://{addr}/whoami")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.strip(), name)
                r = curl(CLIENT_NS, f"http://{addr}/ip")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.strip(), f"{name} {snat}", "the server saw the wrong source")
        self.assertEqual(s3_filter_drops(), 0, "the S3 endpoint saw a source other than 10.0.2.10")

    def test_http_download_1M_intact(self):
        for name, (addr, _) in SERVERS.items():
            with self.subTest(server=name):
                want = hashlib.sha256(Path(f"/run/natgw-lab/www-{name}/1M").read_bytes()).hexdigest()
                r = L.ns_exec(CLIENT_NS, f"curl -sS --max-time 20 http://{addr}/1M | sha256sum", timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.split()[0], want, "1 MB download corrupted or truncated")

    def test_udp_echo_sees_natgw_address(self):
        for name, (addr, snat) in SERVERS.items():
            with self.subTest(server=name):
                r = udp_request(CLIENT_NS, addr, 7, f"hello-{name}")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout, f"{name}:{snat}:hello-{name}")
        self.assertEqual(s3_filter_drops(), 0, "the S3 endpoint saw a source other than 10.0.2.10")

    def test_ping_through_nat(self):
        from scapy.layers.inet import ICMP, IP
        for name, (addr, snat) in SERVERS.items():
            with self.subTest(server=name):
                srv_if = L.S3_IF if name == "s3" else L.INET_IF
                with self.lab.tcpdump(*srv_if, f"icmp and host {addr}", count=6) as cap:
                    r = ping(CLIENT_NS, addr, count=3)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertEqual(ping_received(r), 3, r.stdout)
                reqs = [p for p in cap.packets if ICMP in p and p[ICMP].type == 8]
                self.assertEqual(len(reqs), 3, [p.summary() for p in cap.packets])
                for p in reqs:
                    self.assertEqual((p[IP].src, p[IP].dst), (snat, addr), "echo request not source-NATed")

    # -- ICMP errors come back translated (RFC 5508)
    def test_udp_to_closed_port_gets_port_unreachable(self):
        from scapy.layers.inet import ICMP, IP, IPerror, UDPerror
        for name, (addr, snat) in SERVERS.items():
            with self.subTest(server=name):
                before = L.metrics(strict=False) if L.dataplane() == "dpdk" else None
                with self.lab.tcpdump(*L.CLIENT_IF, "icmp[icmptype] == icmp-unreach", count=1) as cap:
                    r = L.ns_exec(CLIENT_NS, ["/usr/bin/python3", "-c", _CLOSED_PORT_PROBE, addr, "9"])
                self.assertEqual(r.returncode, 0, r.stderr)
                res = json.loads(r.stdout)
                self.assertEqual(res["result"], "ECONNREFUSED",
                                 "the client's socket did not get the port unreachable")
                self.assertEqual(len(cap.packets), 1, [p.summary() for p in cap.packets])
                p = cap.packets[0]
                self.assertEqual((p[IP].src, p[IP].dst), (addr, CLIENT_ADDR))
                self.assertEqual((p[ICMP].type, p[ICMP].code), (3, 3), "not a port unreachable")
                # The embedded header must be the client's own datagram again, checksums fixed.
                self.assertIn(IPerror, p, "port unreachable without the embedded header")
                self.assertEqual((p[IPerror].src, p[IPerror].dst), (CLIENT_ADDR, addr),
                                 "embedded header not translated back to the client's address")
                self.assertIn(UDPerror, p)
                self.assertEqual((p[UDPerror].sport, p[UDPerror].dport), (res["local_port"], 9),
                                 "embedded header not translated back to the client's port")
                raw = bytes(p[ICMP])
                self.assertEqual(_csum(raw), 0, "ICMP checksum wrong after translation")
                inner = bytes(p[IPerror])
                ihl = (inner[0] & 0x0F) * 4
                self.assertEqual(_csum(inner[:ihl]), 0, "embedded IP header checksum wrong")
                udp = inner[ihl:]
                if len(udp) >= 8 and int.from_bytes(udp[4:6], "big") == len(udp) and udp[6:8] != b"\0\0":
                    pseudo = (bytes(map(int, CLIENT_ADDR.split("."))) + bytes(map(int, addr.split(".")))
                              + b"\0\x11" + len(udp).to_bytes(2, "big"))
                    self.assertEqual(_csum(pseudo + udp), 0, "embedded UDP checksum wrong")
                if before is not None:
                    after = L.metrics(strict=False)
                    d = (after.value("natgw_packets_total", path="icmp_error_translated")
                         - before.value("natgw_packets_total", path="icmp_error_translated"))
                    self.assertEqual(d, 1, "natgw_packets_total{path=icmp_error_translated} did not count it")

    # -- mapping and filtering
    def test_endpoint_independent_mapping(self):
        # One client socket, three destinations: both of the internet server's ports must see the same
        # outside address:port (RFC 4787 REQ-1); the S3 server sees the endpoint address.
        out = L.udp_exchange(CLIENT_NS, [(INET_ADDR, ECHO_PORTS[0], "a"), (INET_ADDR, ECHO_PORTS[1], "b"),
                                         (S3_ADDR, ECHO_PORTS[0], "c")])
        self.assertNotIn(None, out["replies"], out)
        a, b, c = (echo_source(x["text"]) for x in out["replies"])
        self.assertEqual((a[0], a[1], a[3]), ("inet", NATGW_INTERNET, "a"), out)
        self.assertEqual((b[0], b[1], b[3]), ("inet", NATGW_INTERNET, "b"), out)
        self.assertEqual(a[2], b[2], f"outside port differs per destination port: {a[2]} vs {b[2]} "
                                     "(mapping is not endpoint-independent)")
        self.assertEqual((c[0], c[1], c[3]), ("s3", NATGW_ENDPOINT, "c"), out)
        # Address-and-port-dependent filtering: the internet server answering from a port the client never
        # talked to must not get through the mapping.
        out2 = L.udp_exchange(CLIENT_NS, [(INET_ADDR, ECHO_PORTS[0], f"from={STRAY_PORT}:x"),
                                          (INET_ADDR, ECHO_PORTS[0], "y")],
                              local_port=out["local_port"])
        self.assertIsNone(out2["replies"][0], f"a packet from an unsolicited port passed: {out2}")
        y = echo_source(out2["replies"][1]["text"])
        self.assertEqual((y[1], y[2]), (NATGW_INTERNET, a[2]), "the mapping changed within its lifetime")

    # -- many flows
    def test_2000_concurrent_tcp_connections(self):
        n = 2100
        holder = L.TcpHolder(CLIENT_NS, INET_ADDR, HOLD_PORT, count=n, concurrency=200, timeout=10)
        self.addCleanup(holder.close)
        res = holder.open(timeout=180)
        L.log(f"{n} connections: {res}")
        self.assertEqual(res["open"], n, res)
        self.assertEqual(res["sources"], [NATGW_INTERNET], res)
        self.assertEqual(res["outside_ports"], n, "two live connections share an outside port to one "
                                                  "destination (5-tuples not unique)")
        if L.dataplane() == "dpdk":
            m = L.metrics(strict=False)
            self.assertGreaterEqual(m.value("natgw_sessions_active", protocol="tcp"), n, "sessions_active")
            self.assertEqual(m.value("natgw_port_allocation_errors_total"), 0)
        chk = holder.check()
        self.assertEqual(chk["ok"], n, f"only {chk['ok']} of {n} held connections still answer")
        closed = holder.close()
        self.assertEqual((closed or {}).get("closed"), n)


class TinyPool(L.LabTestCase):
    """A pool of one address with 8 ports: the 9th concurrent flow to one destination has no port."""

    MODE = "nat"
    PORTS = (20000, 20007)

    @classmethod
    def natgw_config(cls):
        def edit(cfg):
            cfg["snat"] = [{"from": ["192.168.0.0/16"], "to": [NATGW_INTERNET],
                            "ports": f"{cls.PORTS[0]}-{cls.PORTS[1]}"}]
        return str(L.derive_config("config/lab.toml", Path(cls.lab.logdir) / "lab-tiny-pool.toml", edit))

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        start_servers(cls, inet_udp=ECHO_PORTS, s3_udp=())
        warm_up([INET_ADDR])

    def test_exhaustion_is_counted_not_a_crash(self):
        lo, hi = self.PORTS
        size = hi - lo + 1
        first = L.TcpHolder(CLIENT_NS, INET_ADDR, HOLD_PORT, count=size, concurrency=size, timeout=5)
        self.addCleanup(first.close)
        res = first.open()
        self.assertEqual(res["open"], size, res)
        self.assertEqual(res["outside_ports"], size, res)
        # The pool is full for this destination: more connections get no port (their SYNs are dropped).
        more = L.TcpHolder(CLIENT_NS, INET_ADDR, HOLD_PORT, count=3, concurrency=3, timeout=3)
        self.addCleanup(more.close)
        res2 = more.open()
        self.assertEqual(res2["open"], 0, f"connections beyond the {size}-port pool succeeded: {res2}")
        more.close()
        if L.dataplane() == "dpdk":
            m = L.metrics(strict=False)
            self.assertGreater(m.value("natgw_port_allocation_errors_total"), 0,
                               "exhaustion was not counted in natgw_port_allocation_errors_total")
            self.assertGreater(m.value("natgw_drops_total", reason="no_port"), 0, "drops{reason=no_port}")
            self.assertEqual(m.value("natgw_sessions_active", protocol="tcp"), size)
            # natgwctl reports the same exhaustion (the operator's view, not only Prometheus').
            r = L.natgwctl("stats")
            self.assertEqual(r.returncode, 0, r.stderr)
            got = re.search(r"port alloc errors (\d+)", r.stdout)
            self.assertIsNotNone(got, r.stdout)
            self.assertEqual(int(got.group(1)), m.value("natgw_port_allocation_errors_total"), r.stdout)
            got = re.search(r"\bno_port=(\d+)", r.stdout)
            self.assertIsNotNone(got, f"natgwctl stats shows no no_port drops:\n{r.stdout}")
            self.assertGreater(int(got.group(1)), 0)
        self.assertTrue(self.natgw.running(), "natgw died on port exhaustion")
        # The first connections keep working.
        chk = first.check()
        self.assertEqual(chk["ok"], size, f"held connections broke after exhaustion: {chk}")
        # Ports are per protocol: UDP and ICMP still get theirs.
        out = L.udp_exchange(CLIENT_NS, [(INET_ADDR, ECHO_PORTS[0], "udp-still-works")])
        got = echo_source(out["replies"][0] and out["replies"][0]["text"])
        self.assertIsNotNone(got, "UDP failed while only the TCP ports were exhausted")
        self.assertEqual(got[1], NATGW_INTERNET)
        self.assertTrue(lo <= got[2] <= hi, f"outside port {got[2]} outside the configured {lo}-{hi}")
        r = ping(CLIENT_NS, INET_ADDR, count=2)
        self.assertEqual(ping_received(r), 2, r.stdout)


class ShortTimeouts(L.LabTestCase):
    """[timeouts] of 2 s and a 4-port pool: sessions expire, are counted, and their ports come back."""

    MODE = "nat"
    PORTS = (20000, 20003)

    @classmethod
    def natgw_config(cls):
        def edit(cfg):
            cfg["snat"] = [{"from": ["192.168.0.0/16"], "to": [NATGW_INTERNET],
                            "ports": f"{cls.PORTS[0]}-{cls.PORTS[1]}"}]
            cfg["timeouts"] = {"udp": 2, "icmp": 2, "tcp_transitory": 2}
            # The expiry scan visits 64 slots per worker millisecond: over the default 1M-slot table one
            # sweep takes >= 16 s (more when the poller shares its CPU), longer than this test waits. A
            # small table sweeps in a quarter second, so what is measured is the timeout itself.
            cfg["nat"] = {"max_sessions": 16384}
        return str(L.derive_config("config/lab.toml", Path(cls.lab.logdir) / "lab-short-timeouts.toml",
                                   edit))

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        start_servers(cls, inet_tcp=(), inet_udp=ECHO_PORTS, s3_udp=())
        warm_up([INET_ADDR])

    def _udp_round(self, n: int) -> list:
        """n flows to one destination, each from its own socket; returns the outside ports (None = no reply).
        The flows run back to back, well inside the 2 s timeout of the first one."""
        code = r"""
import json, socket, sys
out = []
socks = []
for i in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    socks.append(s)
    s.sendto(f"flow{i}".encode(), (sys.argv[2], int(sys.argv[3])))
    try:
        out.append(s.recvfrom(2048)[0].decode())
    except socket.timeout:
        out.append(None)
print(json.dumps(out))
"""
        r = L.ns_exec(CLIENT_NS, ["/usr/bin/python3", "-c", code, str(n), INET_ADDR, str(ECHO_PORTS[0])],
                      timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return [echo_source(t)[2] if t else None for t in json.loads(r.stdout)]

    def _wait_all_expired(self, timeout: float = 15) -> "L.Metrics":
        m = L.wait_for_metric(lambda m: all(m.get("natgw_sessions_active", 1, protocol=p) == 0
                                            for p in ("tcp", "udp", "icmp")), timeout=timeout)
        return m

    def test_sessions_expire_and_ports_are_reused(self):
        lo, hi = self.PORTS
        size = hi - lo + 1
        natgw = L.dataplane() == "dpdk"
        if natgw:
            m0 = self._wait_all_expired()
        first = self._udp_round(size + 1)
        self.assertNotIn(None, first[:size], f"round 1: {first}")
        self.assertEqual(len(set(first[:size])), size, f"round 1 reused a live port: {first}")
        self.assertTrue(all(lo <= p <= hi for p in first[:size]), f"ports outside {lo}-{hi}: {first}")
        self.assertIsNone(first[size], f"a {size + 1}th flow got a port from a {size}-port pool: {first}")
        r = ping(CLIENT_NS, INET_ADDR, count=1)
        self.assertEqual(ping_received(r), 1, r.stdout)
        r = curl(CLIENT_NS, f"http://{INET_ADDR}/whoami")   # TCP: SYN, data, FIN both ways -> transitory
        self.assertEqual(r.returncode, 0, r.stderr)
        if natgw:
            m1 = L.metrics(strict=False)
            self.assertEqual(m1.value("natgw_sessions_active", protocol="udp"), size)
            self.assertGreaterEqual(m1.value("natgw_sessions_active", protocol="icmp"), 1)
            self.assertGreater(m1.value("natgw_port_allocation_errors_total"), 0)
            m2 = self._wait_all_expired(timeout=15)
            active = {p: m2.value("natgw_sessions_active", protocol=p) for p in ("tcp", "udp", "icmp")}
            self.assertEqual(active, {"tcp": 0, "udp": 0, "icmp": 0}, "sessions did not expire within 15 s "
                             "of a 2 s timeout")
            for proto, n in (("udp", size), ("icmp", 1), ("tcp", 1)):
                d = (m2.value("natgw_sessions_expired_total", protocol=proto)
                     - m0.value("natgw_sessions_expired_total", protocol=proto))
                self.assertGreaterEqual(d, n, f"sessions_expired_total{{protocol={proto}}} grew by {d}")
        else:
            time.sleep(4)   # conntrack: 2 s timeouts, then the entries are gone or evictable
        # The ports came back: a full second round fits in the same 4 ports.
        second = self._udp_round(size)
        self.assertNotIn(None, second, f"round 2 after expiry: {second} (ports not returned to the pool?)")
        self.assertTrue(all(lo <= p <= hi for p in second), f"ports outside {lo}-{hi}: {second}")
        self.assertEqual(set(second), set(first[:size]), "round 2 did not reuse the expired ports")


def _csum(data: bytes) -> int:
    """Internet checksum over data; 0 when data carries a correct checksum."""
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


if __name__ == "__main__":
    L.main()

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
import subprocess
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


def event_lines(path: Path, word: str, at_least: int, timeout: float = 5) -> list:
    """The NAT event log's lines holding `word`, once there are `at_least` of them or `timeout` passed (the
    control thread writes them a loop turn after the worker queued them)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [l for l in text.splitlines() if word in l]
        if len(lines) >= at_least or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


class TinyPool(L.LabTestCase):
    """A pool of one address with 8 ports: the 9th concurrent flow to one destination has no port."""

    MODE = "nat"
    PORTS = (20000, 20007)

    @classmethod
    def natgw_config(cls):
        def edit(cfg):
            cfg["snat"] = [{"from": ["192.168.0.0/16"], "to": [NATGW_INTERNET],
                            "ports": f"{cls.PORTS[0]}-{cls.PORTS[1]}"}]
            cfg["nat_events"] = {"file": str(cls.events_file())}
        return str(L.derive_config("config/lab.toml", Path(cls.lab.logdir) / "lab-tiny-pool.toml", edit))

    @classmethod
    def events_file(cls) -> Path:
        return Path(cls.lab.logdir) / "events-tiny-pool.log"

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
            # The NAT event log says it too: the address and protocol that ran out, at most once a second.
            # The metric first: a late SYN retry may add an event between the two reads, never remove one.
            logged = L.metrics(strict=False).value("natgw_nat_events_total", kind="ports-exhausted")
            self.assertGreaterEqual(logged, 1, "no ports-exhausted event")
            lines = event_lines(self.events_file(), " ports-exhausted ", int(logged))
            self.assertGreaterEqual(len(lines), logged)
            for line in lines:
                self.assertIn(f" ports-exhausted outside={NATGW_INTERNET} proto=tcp inside={CLIENT_ADDR}:", line)
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


# ------------------------------------------------------------------ filtering and hairpinning (RFC 4787)
_UDP_AGENT = r"""
import json, select, socket, struct, sys
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)   # Linux; not in every Python's socket module
socks = {}

def recv(s, timeout):
    if not select.select([s], [], [], timeout)[0]:
        return None
    data, anc, _, peer = s.recvmsg(65535, socket.CMSG_SPACE(4))
    ttl = None
    for level, kind, val in anc:
        if level == socket.IPPROTO_IP and kind == socket.IP_TTL:
            ttl = struct.unpack("i", val[:4])[0]
    return {"from": f"{peer[0]}:{peer[1]}", "text": data.decode(errors="replace"), "ttl": ttl}

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    op, name = cmd["op"], cmd.get("name")
    try:
        if op == "bind":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            s.bind((cmd["addr"], cmd["port"]))
            socks[name] = s
            out = {"port": s.getsockname()[1]}
        elif op == "send":
            socks[name].sendto(cmd["text"].encode(), (cmd["addr"], cmd["port"]))
            out = {}
        elif op == "recv":
            out = {"got": recv(socks[name], cmd["timeout"])}
        else:
            break
    except OSError as e:
        out = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)
"""


class UdpAgent:
    """Named UDP sockets in a namespace, driven one step at a time from the test (real Linux sockets: a
    datagram with a wrong checksum or address is never delivered to them):

        a = UdpAgent(CLIENT_NS); a.bind("s1", 40101); a.send("s1", addr, port, "text")
        a.recv("s1", 1.5) -> {"from": "ip:port", "text": ..., "ttl": IP TTL on arrival} or None
    """

    def __init__(self, ns: str):
        self.ns = ns
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3", "-u", "-c", _UDP_AGENT],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self._reply(15)

    def _reply(self, timeout: float) -> dict:
        import select
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            raise RuntimeError(f"udp agent in {self.ns}: no answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"udp agent in {self.ns} exited ({self.proc.poll()}): {self.proc.stderr.read()}")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"udp agent in {self.ns}: {out['error']}")
        return out

    def _call(self, cmd: dict, wait: float = 10) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._reply(wait)

    def bind(self, name: str, port: int, addr: str = "0.0.0.0") -> int:
        return self._call({"op": "bind", "name": name, "addr": addr, "port": port})["port"]

    def send(self, name: str, addr: str, port: int, text: str) -> None:
        self._call({"op": "send", "name": name, "addr": addr, "port": port, "text": text})

    def recv(self, name: str, timeout: float = 1.5) -> dict | None:
        return self._call({"op": "recv", "name": name, "timeout": timeout}, wait=timeout + 10)["got"]

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
        except OSError:
            pass
        L.end_process(self.proc)
        self.proc = None


class _PeerHelpers:
    """For the filtering and hairpinning classes (mixed into an L.LabTestCase in nat mode)."""

    UNMAPPED_PORT = 40999   # an outside port no test here ever maps (no client socket uses it)
    MODE = "nat"
    NAT: dict = {}          # [nat] keys over config/lab.toml's
    NATGW_ONLY = ""         # why Linux masquerade cannot stand in for natgw here ("" = it can)
    EVENT_LOG = False       # [nat_events] file = events_file()

    @classmethod
    def events_file(cls) -> Path:
        return Path(cls.lab.logdir) / f"events-{cls.__name__}.log"

    @classmethod
    def natgw_config(cls) -> str:
        def edit(cfg):
            cfg.setdefault("nat", {}).update(cls.NAT)
            if cls.EVENT_LOG:
                cfg["nat_events"] = {"file": str(cls.events_file())}
        return str(L.derive_config("config/lab.toml", Path(cls.lab.logdir) / f"lab-{cls.__name__}.toml", edit))

    @classmethod
    def setUpClass(cls) -> None:
        if cls.NATGW_ONLY:
            L.require_natgw(cls.NATGW_ONLY)
        super().setUpClass()
        start_servers(cls, inet_tcp=(), inet_udp=ECHO_PORTS, s3_udp=())
        warm_up([INET_ADDR])

    def agent(self, ns: str) -> UdpAgent:
        a = UdpAgent(ns)
        self.addCleanup(a.close)
        return a

    @staticmethod
    def new_flows(cli: UdpAgent, prefix: str, first_port: int, n: int) -> tuple[list, list]:
        """n new UDP flows from the client, one source port each, one at a time: the socket names answered
        by the echo server and those that were not."""
        answered, refused = [], []
        for i in range(n):
            name = f"{prefix}{i}"
            cli.bind(name, first_port + i)
            cli.send(name, INET_ADDR, ECHO_PORTS[0], f"{prefix}-{i}")
            (answered if cli.recv(name, 1.5) else refused).append(name)
        return answered, refused

    def mapped(self, agent: UdpAgent, name: str) -> tuple[str, int]:
        """The outside address:port of socket `name`, as the internet echo server saw it."""
        agent.send(name, INET_ADDR, ECHO_PORTS[0], f"learn-{name}")
        got = agent.recv(name, 2)
        self.assertIsNotNone(got, f"no echo for socket {name}: outbound NAT itself is broken")
        srv, ip, port, payload = echo_source(got["text"])
        self.assertEqual((srv, ip, payload), ("inet", NATGW_INTERNET, f"learn-{name}"), got)
        return ip, port

    def counters(self) -> dict[str, float] | None:
        """natgw's no_session drops, inbound sessions and hairpinned packets (None in kernel mode)."""
        if L.dataplane() != "dpdk":
            return None
        m = L.metrics(strict=False)
        return {"no_session": m.value("natgw_drops_total", reason="no_session"),
                "inbound": m.value("natgw_inbound_sessions_total"),
                "hairpinned": m.value("natgw_hairpinned_total")}

    @staticmethod
    def delta(before: dict | None, after: dict | None) -> dict | None:
        if before is None or after is None:
            return None
        return {k: after[k] - before[k] for k in after}

    def two_sockets(self, p1: int, p2: int) -> tuple[UdpAgent, str, int, int]:
        """Client sockets s1 (port p1) and s2 (port p2) with their mappings learnt: (agent, X, m1, m2)."""
        cli = self.agent(CLIENT_NS)
        cli.bind("s1", p1)
        cli.bind("s2", p2)
        x1, m1 = self.mapped(cli, "s1")
        x2, m2 = self.mapped(cli, "s2")
        self.assertEqual(x1, x2, "paired pooling: one client, one outside address")
        self.assertNotEqual(m1, m2, "two live mappings share an outside port")
        L.log(f"s1 {CLIENT_ADDR}:{p1} -> {x1}:{m1}, s2 {CLIENT_ADDR}:{p2} -> {x2}:{m2}")
        return cli, x1, m1, m2

    def assert_from(self, got: dict | None, src: str, text: str, what: str) -> None:
        self.assertIsNotNone(got, f"{what}: nothing arrived")
        self.assertEqual((got["from"], got["text"]), (src, text), f"{what}: wrong source or payload: {got}")

    def assert_not_hairpinned(self, p1: int, p2: int) -> None:
        """The hole-punch sequence of Hairpinning.test_hole_punch: nothing may arrive without hairpinning."""
        from scapy.layers.inet import IP, UDP
        cli, x, m1, m2 = self.two_sockets(p1, p2)
        c0 = self.counters()
        # On the wire too: a datagram sent back with the inside source untranslated would never reach a
        # socket here (Linux drops a packet whose source is one of its own addresses as a martian), but
        # it would reach another inside host.
        with self.lab.tcpdump(*L.CLIENT_IF, f"udp and dst host {CLIENT_ADDR} and (dst port {p1} or "
                              f"dst port {p2})") as cap:
            for sender, port, receiver in (("s2", m1, "s1"), ("s1", m2, "s2"), ("s2", m1, "s1")):
                cli.send(sender, x, port, f"{sender}-to-{x}:{port}")
                got = cli.recv(receiver, 1.5)
                self.assertIsNone(got, f"{receiver} received {sender}'s datagram to {x}:{port} with "
                                       f"hairpinning off: {got}")
        came_back = [f"{p[IP].src}:{p[UDP].sport} > {p[IP].dst}:{p[UDP].dport} {bytes(p[UDP].payload)!r}"
                     for p in cap.packets if UDP in p]
        self.assertEqual(came_back, [], "natgw sent inside datagrams to its outside address back inside "
                                        "with hairpinning off")
        d = self.delta(c0, self.counters())
        if d is not None:
            self.assertEqual(d["no_session"], 3, f"the 3 datagrams were not dropped as no_session: {d}")
            self.assertEqual(d["hairpinned"], 0, d)
            self.assertEqual(d["inbound"], 0, d)


class DefaultFiltering(_PeerHelpers, L.LabTestCase):
    """config/lab.toml's defaults: address-and-port-dependent filtering, no hairpinning (the negative
    controls of EndpointIndependentFiltering and Hairpinning; they also hold with the kernel stand-in)."""

    def test_unsolicited_datagram_dropped(self):
        cli, inet = self.agent(CLIENT_NS), self.agent(INET_NS)
        cli.bind("c", 40201)
        x, m = self.mapped(cli, "c")
        inet.bind("r", 6201, INET_ADDR)
        c0 = self.counters()
        inet.send("r", x, m, "unsolicited")
        got = cli.recv("c", 1.5)
        self.assertIsNone(got, f"an unsolicited datagram from {INET_ADDR}:6201 passed the mapping {x}:{m} "
                               f"with address-and-port-dependent filtering: {got}")
        d = self.delta(c0, self.counters())
        if d is not None:
            self.assertEqual(d["no_session"], 1, f"drops{{reason=no_session}} did not count it: {d}")
            self.assertEqual(d["inbound"], 0, d)
        # The mapping itself still works for the server the client talks to.
        self.assertEqual(self.mapped(cli, "c"), (x, m), "the mapping changed")

    def test_no_hairpinning(self):
        self.assert_not_hairpinned(40211, 40212)


class EndpointIndependentFiltering(_PeerHelpers, L.LabTestCase):
    """[nat] filtering = "endpoint-independent" (RFC 4787 REQ-8): any remote endpoint reaches a mapping."""

    NAT = {"filtering": "endpoint-independent"}
    NATGW_ONLY = "nat.filtering = endpoint-independent: Linux masquerade filters by address and port"

    def test_unsolicited_datagram_reaches_mapped_endpoint(self):
        cli, inet = self.agent(CLIENT_NS), self.agent(INET_NS)
        cli.bind("c", 40101)
        x, m = self.mapped(cli, "c")
        # Two remote endpoints the client never sent to: another port of the server, another address.
        senders = [("r1", INET_ADDR, 6101), ("r2", L.INET_LINK_ADDR, 6102)]
        for name, addr, port in senders:
            inet.bind(name, port, addr)
        c0 = self.counters()
        for name, addr, port in senders:
            with self.subTest(sender=f"{addr}:{port}"):
                inet.send(name, x, m, f"unsolicited-{name}")
                self.assert_from(cli.recv("c", 2), f"{addr}:{port}", f"unsolicited-{name}",
                                 f"unsolicited datagram from {addr}:{port} to the mapping {x}:{m}")
                # The reply leaves by the same mapping (endpoint-independent mapping).
                cli.send("c", addr, port, f"reply-{name}")
                self.assert_from(inet.recv(name, 2), f"{x}:{m}", f"reply-{name}",
                                 f"the client's reply to {addr}:{port}")
                # The session now exists: more datagrams pass without opening another.
                inet.send(name, x, m, f"again-{name}")
                self.assert_from(cli.recv("c", 2), f"{addr}:{port}", f"again-{name}", "a second datagram")
        d = self.delta(c0, self.counters())
        self.assertEqual(d["inbound"], len(senders), f"natgw_inbound_sessions_total: {d}")
        self.assertEqual(d["no_session"], 0, d)
        self.assertEqual(d["hairpinned"], 0, d)
        # The mapping is unchanged for the server the client talks to.
        self.assertEqual(self.mapped(cli, "c"), (x, m), "the mapping changed")

    def test_unmapped_port_still_dropped(self):
        inet = self.agent(INET_NS)
        inet.bind("r", 6111, INET_ADDR)
        c0 = self.counters()
        inet.send("r", NATGW_INTERNET, self.UNMAPPED_PORT, "nobody-home")
        L.wait_for_metric(lambda m: m.get("natgw_drops_total", 0, reason="no_session") > c0["no_session"],
                          timeout=3)
        d = self.delta(c0, self.counters())
        self.assertEqual(d["no_session"], 1, f"a datagram to an unmapped port was not dropped: {d}")
        self.assertEqual(d["inbound"], 0, f"a datagram to an unmapped port opened a session: {d}")

    def test_no_hairpinning_without_the_option(self):
        # Endpoint-independent filtering must not let an inside host in through another's mapping (with its
        # inside address as the source) when hairpinning is off: those packets are dropped.
        self.assert_not_hairpinned(40111, 40112)


class Hairpinning(_PeerHelpers, L.LabTestCase):
    """[nat] hairpinning = true with the default (address-and-port-dependent) filtering: two inside sockets
    reach each other through their outside addresses once both have punched a hole (RFC 4787 REQ-9)."""

    NAT = {"hairpinning": True}
    NATGW_ONLY = "nat.hairpinning"

    def test_hole_punch(self):
        cli, x, m1, m2 = self.two_sockets(40301, 40302)
        c0 = self.counters()
        # s1 has no session toward x:m2 yet: filtering drops s2's first datagram.
        cli.send("s2", x, m1, "punch-from-s2")
        got = cli.recv("s1", 1.5)
        self.assertIsNone(got, f"s1 received s2's datagram before s1 sent to {x}:{m2}: {got}")
        d = self.delta(c0, self.counters())
        self.assertEqual(d["no_session"], 1, f"s2's first datagram was not dropped as no_session: {d}")
        # s1 -> x:m2: s2 has a session toward x:m1 now; s2 sees s1's OUTSIDE address:port (REQ-9 b).
        cli.send("s1", x, m2, "hello-s2")
        got = cli.recv("s2", 2)
        self.assert_from(got, f"{x}:{m1}", "hello-s2", f"s1's datagram to {x}:{m2}")
        # One pass through natgw, one TTL decrement: 64 at the client, -1 by the TGW each way, -1 by natgw.
        self.assertEqual(got["ttl"], 61, f"hairpinned TTL {got['ttl']}: natgw did not decrement it once")
        # And back: s2 -> x:m1 reaches s1 from s2's outside address:port.
        cli.send("s2", x, m1, "hello-s1")
        self.assert_from(cli.recv("s1", 2), f"{x}:{m2}", "hello-s1", f"s2's datagram to {x}:{m1}")
        cli.send("s1", x, m2, "again-s2")
        self.assert_from(cli.recv("s2", 2), f"{x}:{m1}", "again-s2", f"s1's second datagram to {x}:{m2}")
        d = self.delta(c0, self.counters())
        self.assertEqual(d["hairpinned"], 3, f"natgw_hairpinned_total: {d}")
        self.assertEqual(d["no_session"], 1, d)
        self.assertEqual(d["inbound"], 0, d)
        # The mappings did not change, and both sockets still reach the internet by them.
        self.assertEqual(self.mapped(cli, "s1"), (x, m1))
        self.assertEqual(self.mapped(cli, "s2"), (x, m2))


class HairpinningEndpointIndependent(_PeerHelpers, L.LabTestCase):
    """hairpinning = true with filtering = "endpoint-independent": the very first datagram gets through."""

    NAT = {"hairpinning": True, "filtering": "endpoint-independent"}
    NATGW_ONLY = "nat.hairpinning with endpoint-independent filtering"

    def test_first_datagram_delivered(self):
        cli, x, m1, m2 = self.two_sockets(40401, 40402)
        c0 = self.counters()
        cli.send("s2", x, m1, "first-from-s2")
        got = cli.recv("s1", 2)
        self.assert_from(got, f"{x}:{m2}", "first-from-s2", f"s2's first datagram to {x}:{m1}")
        self.assertEqual(got["ttl"], 61, f"hairpinned TTL {got['ttl']}: natgw did not decrement it once")
        d = self.delta(c0, self.counters())
        self.assertEqual(d["inbound"], 1, f"the hairpinned datagram should have opened s1's session: {d}")
        cli.send("s1", x, m2, "reply-from-s1")
        self.assert_from(cli.recv("s2", 2), f"{x}:{m1}", "reply-from-s1", f"s1's reply to {x}:{m2}")
        d = self.delta(c0, self.counters())
        self.assertEqual(d["hairpinned"], 2, f"natgw_hairpinned_total: {d}")
        self.assertEqual(d["inbound"], 1, d)
        self.assertEqual(d["no_session"], 0, d)
        self.assertEqual(self.mapped(cli, "s1"), (x, m1))
        self.assertEqual(self.mapped(cli, "s2"), (x, m2))


class PerHostLimit(_PeerHelpers, L.LabTestCase):
    """nat.max_sessions_per_host with real UDP sockets: the client's flows past the limit are dropped before
    they take a port, its live flows carry on, and the outside-port gauges count the ports its mappings hold."""

    LIMIT = 6
    NAT = {"max_sessions_per_host": LIMIT}
    NATGW_ONLY = "nat.max_sessions_per_host"

    def ports_in_use(self, m: "L.Metrics") -> float:
        return m.value("natgw_outside_ports_in_use", address=NATGW_INTERNET, protocol="udp")

    def test_flows_past_the_limit_are_dropped(self):
        m0 = L.metrics(strict=False)
        # The warm-up pings left the client (the lab's only inside host) some sessions: they count too.
        self.assertEqual(m0.value("natgw_inside_hosts"), 1, "an inside host other than the client has sessions")
        held = int(sum(m0.series("natgw_sessions_active").values()))
        room = self.LIMIT - held
        self.assertGreaterEqual(room, 3, f"the warm-up left {held} sessions")
        cli = self.agent(CLIENT_NS)
        answered, refused = self.new_flows(cli, "h", 40300, room + 3)
        self.assertEqual(answered, [f"h{i}" for i in range(room)], f"refused: {refused}")
        m1 = L.metrics(strict=False)
        self.assertEqual(m1.value("natgw_drops_total", reason="host_limit")
                         - m0.value("natgw_drops_total", reason="host_limit"), 3)
        self.assertEqual(self.ports_in_use(m1) - self.ports_in_use(m0), room, "one port per new mapping")
        self.assertEqual(m1.value("natgw_outside_ports", address=NATGW_INTERNET, protocol="udp"),
                         65535 - 1024 + 1)
        # The flows natgw let through still work; the refused one stays refused.
        cli.send("h0", INET_ADDR, ECHO_PORTS[0], "again")
        self.assertIsNotNone(cli.recv("h0", 2), "a flow under the limit stopped working")
        cli.send(refused[0], INET_ADDR, ECHO_PORTS[0], "again")
        self.assertIsNone(cli.recv(refused[0], 1.5), "a flow past the limit got through on its second datagram")
        # natgwctl stats shows the same gauge.
        r = L.natgwctl("stats")
        self.assertEqual(r.returncode, 0, r.stderr)
        got = re.search(rf"outside {re.escape(NATGW_INTERNET)}: ports in use tcp \d+/\d+ udp (\d+)/64512", r.stdout)
        self.assertIsNotNone(got, r.stdout)
        self.assertEqual(int(got.group(1)), self.ports_in_use(L.metrics(strict=False)), r.stdout)


class PerHostPortLimit(_PeerHelpers, L.LabTestCase):
    """nat.max_ports_per_host with real UDP sockets: each source port of the client holds one outside port (its
    mapping); past the limit a new source port is refused before it takes one, while an existing source port
    still reaches new destinations through the mapping it has."""

    LIMIT = 5
    NAT = {"max_ports_per_host": LIMIT}
    NATGW_ONLY = "nat.max_ports_per_host"
    EVENT_LOG = True

    def test_new_ports_past_the_limit_are_refused_shared_ones_are_not(self):
        m0 = L.metrics(strict=False)
        # The warm-up pings' identifiers are the client's ports too (the lab's only inside host).
        held = int(sum(m0.series("natgw_outside_ports_in_use").values()))
        room = self.LIMIT - held
        self.assertGreaterEqual(room, 2, f"the warm-up left {held} ports in use")
        cli = self.agent(CLIENT_NS)
        answered, refused = self.new_flows(cli, "p", 40400, room + 2)
        self.assertEqual(answered, [f"p{i}" for i in range(room)], f"refused: {refused}")
        m1 = L.metrics(strict=False)
        self.assertEqual(m1.value("natgw_drops_total", reason="host_port_limit")
                         - m0.value("natgw_drops_total", reason="host_port_limit"), 2)
        self.assertEqual(m1.value("natgw_drops_total", reason="host_limit"), 0)
        self.assertEqual(int(sum(m1.series("natgw_outside_ports_in_use").values())), self.LIMIT)
        # Each refusal is a quota-exceeded event naming the host and the refused flow (they were 1.5 s
        # apart, past the one-a-second-per-host bound).
        quota = event_lines(self.events_file(), " quota-exceeded ", 2)
        self.assertEqual(len(quota), 2, quota)
        for i, line in enumerate(quota):
            self.assertIn(f" quota-exceeded limit=max_ports_per_host:{self.LIMIT} proto=udp "
                          f"inside={CLIENT_ADDR}:{40400 + room + i} remote={INET_ADDR}:{ECHO_PORTS[0]}", line)
        self.assertEqual(L.metrics(strict=False).value("natgw_nat_events_total", kind="quota-exceeded"), 2)
        # A source port the client has toward a new destination: a new session on its mapping, not a new port.
        x, mapped = self.mapped(cli, "p0")
        cli.send("p0", INET_ADDR, ECHO_PORTS[1], "shared")
        got = cli.recv("p0", 2)
        self.assertIsNotNone(got, "a new destination from a port the client holds was refused")
        self.assertEqual(echo_source(got["text"])[1:3], (x, mapped), "not the port's mapping")
        self.assertEqual(int(sum(L.metrics(strict=False).series("natgw_outside_ports_in_use").values())), self.LIMIT)


class NatEventLog(L.LabTestCase):
    """[nat_events] file = ..., ipfix = ...: a real client's UDP flow through natgw appears in the event log with
    its inside, outside and remote endpoints as the echo server saw them, and its end after the 2 s UDP timeout;
    the same two events reach an IPFIX collector (a UDP socket in natgw's namespace, decoded by scapy's IPFIX
    reader) as RFC 8158 NAT44 session records."""

    # The collector: a UDP socket on natgw's loopback (natgw runs in ngw-nat), each datagram a hex line in a file.
    COLLECTOR = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind(('127.0.0.1', 0))\n"
        "print(s.getsockname()[1], flush=True)\n"
        "with open(sys.argv[1], 'w') as f:\n"
        "    while True:\n"
        "        f.write(s.recv(65535).hex() + '\\n')\n"
        "        f.flush()\n")

    MODE = "nat"
    PORT_LIMIT = 3

    @classmethod
    def natgw_config(cls):
        cls.events = Path(cls.lab.logdir) / "nat-events.log"
        cls.ipfix_log = Path(cls.lab.logdir) / "ipfix.hex"
        cls.collector = subprocess.Popen(["ip", "netns", "exec", L.NAT_NS, "/usr/bin/python3", "-c", cls.COLLECTOR,
                                          str(cls.ipfix_log)], stdout=subprocess.PIPE, text=True)

        def stop_collector():
            cls.collector.kill()
            cls.collector.wait()
            cls.collector.stdout.close()
        cls.addClassCleanup(stop_collector)  # also when setUpClass fails after this (natgw did not start)
        port = cls.collector.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"the IPFIX collector did not start (said {port!r})")
        ipfix = "127.0.0.1:" + port

        def edit(cfg):
            cfg["timeouts"] = {"udp": 2}
            # A quick expiry sweep (see ShortTimeouts); a port limit for the quota test.
            cfg["nat"] = {"max_sessions": 16384, "max_ports_per_host": cls.PORT_LIMIT}
            cfg["nat_events"] = {"file": str(cls.events), "ipfix": ipfix, "ipfix_domain": 9}
        return str(L.derive_config("config/lab.toml", Path(cls.lab.logdir) / "lab-nat-events.toml", edit))

    @classmethod
    def setUpClass(cls) -> None:
        L.require_natgw("[nat_events]")
        super().setUpClass()
        start_servers(cls, inet_tcp=(), inet_udp=ECHO_PORTS, s3_udp=())

    def lines(self) -> list[str]:
        return self.events.read_text().splitlines() if self.events.exists() else []

    def ipfix_records(self) -> list[dict]:
        """Every NAT44 record the collector has received so far, decoded by scapy (templates included)."""
        from scapy.layers.netflow import NetflowDataflowsetV9, NetflowHeader, netflowv9_defragment
        text = self.ipfix_log.read_text() if self.ipfix_log.exists() else ""
        complete = text[:text.rfind("\n") + 1]  # not a line the collector is still writing
        self.datagrams = [bytes.fromhex(x) for x in complete.split()]
        msgs = netflowv9_defragment([NetflowHeader(d) for d in self.datagrams])
        out = []
        for m in msgs:
            self.assertEqual(m.version, 10)
            self.assertEqual(m.ObservationDomainID, 9)
            for ds in m.iterpayloads():
                if isinstance(ds, NetflowDataflowsetV9):
                    for r in ds.records:
                        out.append({k: (int.from_bytes(v, "big") if isinstance(v, bytes) else v)
                                    for k, v in r.fields.items()})
        return out

    def test_udp_flow_created_and_ended(self):
        out = L.udp_exchange(CLIENT_NS, [(INET_ADDR, ECHO_PORTS[0], "logged")], local_port=40777)
        got = echo_source(out["replies"][0] and out["replies"][0]["text"])
        self.assertIsNotNone(got, out)
        _, ip, port, _ = got
        flow = f"proto=udp inside={CLIENT_ADDR}:40777 outside={ip}:{port} remote={INET_ADDR}:{ECHO_PORTS[0]}"
        stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
        deadline = time.time() + 15
        while time.time() < deadline and not any(" session-delete " + flow in x for x in self.lines()):
            time.sleep(0.25)
        mine = [x for x in self.lines() if flow in x]
        self.assertEqual(len(mine), 2, f"expected a create and a delete for {flow}:\n" + "\n".join(self.lines()))
        self.assertRegex(mine[0], rf"^({stamp}) session-create {re.escape(flow)}$")
        start = mine[0][:24]
        self.assertRegex(mine[1], rf"^{stamp} session-delete {re.escape(flow)} start={re.escape(start)}$")
        # The same session over IPFIX: a create (natEvent 4) and a delete (5), endpoints as above. natgw sent the
        # delete with the line above; the collector writes it to its file when it has read it.
        deadline = time.time() + 10
        while True:
            mine = [r for r in self.ipfix_records() if r.get("L4_SRC_PORT") == 40777]
            if [r["natEvent"] for r in mine] == [4, 5] or time.time() >= deadline:
                break
            time.sleep(0.1)
        self.assertEqual([r["natEvent"] for r in mine], [4, 5], (mine, len(self.datagrams)))
        for r in mine:
            self.assertEqual((r["IPV4_SRC_ADDR"], r["postNATSourceIPv4Address"], r["postNAPTSourceTransportPort"]),
                             (CLIENT_ADDR, ip, int(port)), r)
            self.assertEqual((r["IPV4_DST_ADDR"], r["L4_DST_PORT"], r["PROTOCOL"]), (INET_ADDR, ECHO_PORTS[0], 17), r)
        # Real wall-clock times: created within the last minute (the create's time, start and end: its first packet);
        # the delete's end is its last packet, its time when natgw ended it, after the 2 s UDP timeout (less up to
        # the 1 s natgw lets its clock anchor drift).
        self.assertLess(abs(mine[0]["flowStartMilliseconds"] - time.time() * 1000), 60_000, mine[0])
        self.assertEqual(mine[0]["observationTimeMilliseconds"], mine[0]["flowStartMilliseconds"])
        self.assertEqual(mine[0]["flowEndMilliseconds"], mine[0]["flowStartMilliseconds"])
        self.assertEqual(mine[1]["flowStartMilliseconds"], mine[0]["flowStartMilliseconds"])
        self.assertGreaterEqual(mine[1]["flowEndMilliseconds"], mine[1]["flowStartMilliseconds"])
        self.assertGreaterEqual(mine[1]["observationTimeMilliseconds"] - mine[1]["flowEndMilliseconds"], 1000, mine[1])
        self.assertLess(abs(mine[1]["observationTimeMilliseconds"] - time.time() * 1000), 60_000, mine[1])
        m = L.metrics(strict=False)
        self.assertGreaterEqual(m.value("natgw_nat_events_total", kind="session-delete"), 1)
        self.assertEqual(m.value("natgw_nat_events_lost_total"), 0)
        self.assertEqual(m.value("natgw_nat_events_errors_total"), 0)

    def test_z_quota_exceeded(self):
        """Past max_ports_per_host the client's new source ports are refused: a quota-exceeded line and RFC 8158's
        quota-exceeded record, which scapy decodes from its own template (257). Runs after the flow test (z)."""
        m0 = L.metrics(strict=False)
        held = int(sum(m0.series("natgw_outside_ports_in_use").values()))
        room = self.PORT_LIMIT - held
        self.assertGreaterEqual(room, 1, f"{held} ports still held")
        cli = UdpAgent(CLIENT_NS)
        self.addCleanup(cli.close)
        for i in range(room + 2):
            cli.bind(f"q{i}", 41000 + i)
        for i in range(room + 2):  # all sent within a second (a few ms): two refused, one quota event
            cli.send(f"q{i}", INET_ADDR, ECHO_PORTS[0], f"q{i}")
        for i in range(room):
            self.assertIsNotNone(cli.recv(f"q{i}", 3), f"flow {i} within the limit got no echo")
        refused = (L.metrics(strict=False).value("natgw_drops_total", reason="host_port_limit")
                   - m0.value("natgw_drops_total", reason="host_port_limit"))
        self.assertEqual(refused, 2)
        lines = event_lines(self.events, " quota-exceeded ", 1)
        self.assertEqual(len(lines), 1, self.lines())
        self.assertIn(f" quota-exceeded limit=max_ports_per_host:{self.PORT_LIMIT} proto=udp "
                      f"inside={CLIENT_ADDR}:{41000 + room} remote={INET_ADDR}:{ECHO_PORTS[0]}", lines[0])
        deadline = time.time() + 10
        while True:
            quota = [r for r in self.ipfix_records() if r.get("natEvent") == 13]
            if len(quota) == len(lines) or time.time() >= deadline:
                break
            time.sleep(0.1)
        self.assertEqual(len(quota), len(lines), (quota, lines))
        for r in quota:
            self.assertEqual((r["natQuotaExceededEvent"], r["maxEntriesPerUser"], r["IPV4_SRC_ADDR"]),
                             (3, self.PORT_LIMIT, CLIENT_ADDR), r)
            self.assertLess(abs(r["observationTimeMilliseconds"] - time.time() * 1000), 60_000, r)
        self.assertEqual(L.metrics(strict=False).value("natgw_nat_events_total", kind="quota-exceeded"), len(lines))
        r = L.natgwctl("stats")  # the operator's view says the same
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f", quota-exceeded {len(lines)}, ports-exhausted 0; lost 0, write errors 0", r.stdout)


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

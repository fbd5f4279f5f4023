#!/usr/bin/python3
"""End-to-end: natgw's control plane in the namespace lab (issue 4; multi-worker: issue 6).

    lab.sh up --mode nat    the servers have NO route back to 192.168.0.0/16; ngw-s3 accepts only 10.0.2.10
    natgw --config <a copy of config/lab.toml in the log folder>, rewritten by the tests before each reload

What is checked, always against what the servers and the kernel's veth counters saw, never natgw's word alone:
    Reload      three reloads (SIGHUP and `natgwctl reload`) under a TCP transfer and a UDP stream lose
                nothing; a route change moves new traffic to the other interface; an ACL added by reload
                blocks new flows while established ones continue; a broken config is refused with file:line
                and changes nothing
    AclDeny / AclAllow   deny by destination prefix and port; allow-list with default deny
    Observe     /metrics is valid Prometheus text and its counters match the traffic the test sent;
                natgwctl stats / sessions ADDR / routes / arp / acl against the running natgw, and a clear
                error (exit 3) when none runs
    Shutdown    SIGTERM: final counters printed, exit status 0
    MultiWorker workers = 2 on two-queue af_packet ports: NAT works and both workers carry traffic

Run as root:  /usr/bin/python3 tests/lab/test_control.py -v
Against Linux instead of natgw (validates the tests): NATGW_LAB_DATAPLANE=kernel ...; natgw-only checks
(metrics, natgwctl, file:line messages, workers) are skipped there.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import natgwlab as L  # noqa: E402
from natgwlab import (  # noqa: E402
    CLIENT_ADDR, CLIENT_NS, INET_ADDR, INET_NS, NATGW_ENDPOINT, NATGW_INTERNET, S3_ADDR, S3_NS, curl, ping,
    ping_received, udp_request,
)
from natgwlab import echo_source, s3_filter_drops, warm_up  # noqa: E402

BASE_CONFIG = "config/lab.toml"
HOLD_PORT = 9000           # NsServer TCP port holding connections (inet)
ECHO = 5007                # NsServer UDP echo reporting the source port (inet and s3)
ECHO2 = 5008               # a second one
MOVE_PORT = 5011           # UDP echo served by ngw-inet and, for the route-change test, ngw-s3 too






def udp_warm_up(targets) -> None:
    """ARP on every hop settled by UDP (for configs whose ACL blocks ping)."""
    for addr, port in targets:
        for _ in range(3):
            if udp_request(CLIENT_NS, addr, port, "warm-up", timeout=2).returncode == 0:
                break


# ------------------------------------------------------------------------------------- traffic helpers
_UDP_STREAM = r"""
import json, select, socket, sys, time
addr, port, rate, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
s.setblocking(False)
sent, got = 0, {}
t0 = time.monotonic()
nxt, end = t0, t0 + duration
print("started", flush=True)
while True:
    now = time.monotonic()
    if now >= end + 2.0 or (now >= end and len(got) == sent):
        break
    while now < end and now >= nxt:
        s.sendto(f"seq{sent}".encode(), (addr, port))
        sent += 1
        nxt += 1.0 / rate
    wait = max(0.0, min(nxt, end) - now) if now < end else 0.05
    if select.select([s], [], [], wait)[0]:
        while True:
            try:
                data = s.recv(2048)
            except BlockingIOError:
                break
            name, ip, oport, payload = data.decode().split(":", 3)
            got[int(payload[3:])] = f"{name}:{ip}:{oport}"
lost = sorted(set(range(sent)) - set(got))
print(json.dumps({"local_port": s.getsockname()[1], "sent": sent, "received": len(got), "lost": len(lost),
                  "lost_seqs": lost[:40], "seen": sorted(set(got.values())),
                  "first": got[min(got)] if got else None, "last": got[max(got)] if got else None}))
"""


class UdpStream:
    """A steady UDP stream from the client, one socket, `rate` datagrams/s for `duration` s, to an NsServer
    echo port. result(): {"sent", "received", "lost", "seen": ["<server>:<source ip>:<source port>", ...]}."""

    def __init__(self, addr: str, port: int, rate: float = 100, duration: float = 6):
        self.cmd = ["ip", "netns", "exec", CLIENT_NS, "/usr/bin/python3", "-u", "-c", _UDP_STREAM, addr,
                    str(port), str(rate), str(duration)]
        self.duration = duration
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
        if self.proc.stdout.readline().strip() != "started":
            raise RuntimeError(f"udp stream did not start: {self.proc.stderr.read()}")

    def result(self) -> dict:
        out, err = self.proc.communicate(timeout=self.duration + 30)
        if self.proc.returncode != 0:
            raise RuntimeError(f"udp stream failed ({self.proc.returncode}): {err}")
        return json.loads(out)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def lockstep_udp(addr: str, port: int, n: int, tag: str) -> dict:
    """n datagrams from ONE client socket, each sent after the previous one's answer (so none is in flight
    when counters are read)."""
    return L.udp_exchange(CLIENT_NS, [(addr, port, f"{tag}{i}") for i in range(n)], timeout=2)




# ------------------------------------------------------------------------------ strict exposition checks
_COUNTER_SUFFIX = "_total"
_PROM_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_PROM_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def check_exposition(text: str) -> L.Metrics:
    """Parse a /metrics body strictly (natgwlab.Metrics: HELP/TYPE syntax and order, metric and label name
    syntax, label value escapes, float values, contiguous families, no duplicate series) and check the
    naming conventions on top: counters end in _total, nothing else does, no reserved "__" label names,
    every TYPE'd family has samples (except the per-driver xstats, which a PMD may not have)."""
    m = L.Metrics(text)   # raises PromFormatError
    problems = []
    for fam, typ in m.types.items():
        if not _PROM_NAME_RE.fullmatch(fam):
            problems.append(f"{fam}: bad metric name")
        if typ == "counter" and not fam.endswith(_COUNTER_SUFFIX):
            problems.append(f"{fam}: a counter whose name does not end in {_COUNTER_SUFFIX}")
        if typ != "counter" and fam.endswith(_COUNTER_SUFFIX):
            problems.append(f"{fam}: a {typ} named like a counter")
        if fam != "natgw_port_xstat" and not m.series(fam):
            problems.append(f"{fam}: TYPE and HELP but no sample")
        if not m.helps.get(fam, "").strip():
            problems.append(f"{fam}: empty HELP")
    for (name, labels), v in m.samples.items():
        for k, _ in labels:
            if not _PROM_LABEL_NAME_RE.fullmatch(k) or k.startswith("__"):
                problems.append(f"{name}: label name {k!r} invalid or reserved")
        if m.types.get(name) == "counter" and v != int(v):
            problems.append(f"{name}{dict(labels)}: a packet counter with a fraction ({v})")
    if problems:
        raise L.PromFormatError("conventions broken:\n  " + "\n  ".join(problems))
    return m


class ExpositionChecker(unittest.TestCase):
    """The checker above must be able to fail: malformed expositions are refused (no lab needed)."""

    GOOD = ("# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\"} 3\na_total{x=\"2\"} 0\n"
            "# HELP g A gauge.\n# TYPE g gauge\ng 1.5e3\n")

    def test_good(self):
        m = check_exposition(self.GOOD)
        self.assertEqual(m.value("a_total", x="1"), 3)
        self.assertEqual(m.value("g"), 1500)

    def test_bad(self):
        bad = {
            "counter without _total": self.GOOD.replace("a_total", "a_count"),
            "gauge named _total": self.GOOD.replace("g ", "g_total ").replace(" g\n", " g_total\n"),
            "no TYPE": "# HELP a_total x\na_total 1\n",
            "no HELP": "# TYPE a_total counter\na_total 1\n",
            "bad name": self.GOOD.replace("g 1.5e3", "9g 1.5e3"),
            "bad label name": self.GOOD.replace('{x="1"}', '{1x="1"}'),
            "unquoted label": self.GOOD.replace('{x="1"}', "{x=1}"),
            "bad escape": self.GOOD.replace('{x="1"}', '{x="\\q"}'),
            "bad value": self.GOOD.replace("g 1.5e3", "g 1,5"),
            "duplicate series": self.GOOD.replace('x="2"', 'x="1"'),
            "not contiguous": self.GOOD + 'a_total{x="3"} 1\n',
            "no final newline": self.GOOD.rstrip("\n"),
            "negative counter": self.GOOD.replace('{x="2"} 0', '{x="2"} -1'),
            "bad TYPE": self.GOOD.replace("gauge", "thing"),
            "no samples": self.GOOD + "# HELP e_total x\n# TYPE e_total counter\n",
            "reserved label": self.GOOD.replace('{x="1"}', '{__x="1"}'),
        }
        for what, text in bad.items():
            with self.subTest(what=what):
                with self.assertRaises(L.PromFormatError, msg=f"accepted: {text!r}"):
                    check_exposition(text)


# ------------------------------------------------------------------------------------------- base class
class ControlLab(L.LabTestCase):
    """NAT lab with natgw on a private copy of config/lab.toml, rewritten by write_config() for reloads."""

    MODE = "nat"

    @classmethod
    def edit_base(cls, cfg: dict) -> None:
        """The class's starting config (a change to config/lab.toml's dict)."""

    @classmethod
    def natgw_config(cls):
        cls.cfg_path = Path(cls.lab.logdir) / f"{cls.__name__.lower()}.toml"
        return str(cls.write_config())

    @classmethod
    def write_config(cls, edit=None, extra: str = "") -> Path:
        def apply(cfg):
            cls.edit_base(cfg)
            if edit:
                edit(cfg)
        p = L.derive_config(BASE_CONFIG, cls.cfg_path, apply)
        if extra:
            with open(p, "a") as f:
                f.write(extra)
        return p

    @classmethod
    def start_servers(cls, inet_tcp=(HOLD_PORT,), inet_udp=(ECHO, ECHO2, MOVE_PORT), s3_udp=(ECHO, ECHO2)):
        cls.inet_srv = L.NsServer(INET_NS, "inet", INET_ADDR, tcp_ports=inet_tcp, udp_ports=inet_udp,
                                  logdir=cls.lab.logdir).start()
        cls.addClassCleanup(cls.inet_srv.stop)
        cls.s3_srv = L.NsServer(S3_NS, "s3", S3_ADDR, udp_ports=s3_udp, logdir=cls.lab.logdir).start()
        cls.addClassCleanup(cls.s3_srv.stop)

    def reload(self, how: str = "ctl") -> "L.ReloadResult":
        r = self.natgw.reload(how)
        L.log(f"reload ({how}): {r}")
        return r

    def restore(self) -> None:
        """Cleanup: the class's starting config again (a test that failed half-way must not leak)."""
        self.write_config()
        r = self.natgw.reload("ctl")
        if not r.ok:
            L.log(f"restoring the config failed: {r}")

    def generation(self) -> int | None:
        if L.dataplane() != "dpdk":
            return None
        return int(L.metrics().value("natgw_config_generation"))


# --------------------------------------------------------------------------------------------- reload
class Reload(ControlLab):

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.start_servers()
        warm_up([S3_ADDR, INET_ADDR])

    def test_three_reloads_lose_no_session(self):
        """A 20 MB download (rate-limited to last ~10 s) and a 100 datagram/s UDP stream cross three reloads
        (SIGHUP, natgwctl, SIGHUP), each changing the config: all bytes arrive, no datagram is lost, and the
        server sees one outside address:port for the whole stream."""
        self.addCleanup(self.restore)
        want = Path("/run/natgw-lab/www-inet/20M").read_bytes()
        out_file = Path(self.lab.logdir) / "reload-20M.download"
        gen0 = self.generation()
        dl = subprocess.Popen(["ip", "netns", "exec", CLIENT_NS, "curl", "-sS", "--max-time", "60",
                               "--limit-rate", "2M", "-o", str(out_file), "-w", "%{http_code} %{size_download}",
                               f"http://{INET_ADDR}/20M"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (dl.poll() is None and dl.kill(), dl.communicate()))
        stream = UdpStream(INET_ADDR, ECHO, rate=100, duration=8)
        self.addCleanup(stream.kill)
        changes = [  # each reload changes something harmless, so each one really swaps the tables
            ("sighup", lambda c: c.setdefault("timeouts", {}).update(udp=301)),
            ("ctl", lambda c: c["route"].append({"prefix": "100.64.0.0/10", "via": "10.0.3.1",
                                                 "interface": "internet"})),
            ("sighup", lambda c: c.setdefault("timeouts", {}).update(tcp_established=3600)),
        ]
        applied = []
        for how, edit in changes:
            time.sleep(1.5)
            applied.append(edit)   # cumulative: the last config has all three changes
            self.write_config(lambda c: [e(c) for e in applied])
            r = self.reload(how)
            self.assertTrue(r.ok, f"reload ({how}) failed: {r}")
            self.assertIsNone(dl.poll(), "the download ended before the reloads were over: make it longer")
            self.assertIsNone(stream.proc.poll(), "the UDP stream ended before the reloads were over")
        res = stream.result()
        out, err = dl.communicate(timeout=60)
        L.log(f"udp stream across reloads: {res}; download: {out}")
        self.assertEqual(dl.returncode, 0, f"download failed across reloads: {err}")
        self.assertEqual(out.split(), ["200", str(len(want))], out)
        got = out_file.read_bytes()
        self.assertEqual(len(got), len(want), "download truncated")
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(want).hexdigest(), "download corrupted")
        self.assertGreater(res["sent"], 700, res)
        self.assertLessEqual(res["lost"], 2, f"UDP datagrams lost across reloads: {res}")
        self.assertEqual(len(res["seen"]), 1, f"the server saw the stream from more than one source: {res}")
        name, ip, port = res["seen"][0].split(":")
        self.assertEqual((name, ip), ("inet", NATGW_INTERNET), res)
        if gen0 is not None:
            self.assertEqual(self.generation(), gen0 + 3, "three reloads did not give three generations")
            r = L.natgwctl("routes")
            self.assertIn("100.64.0.0/10 dev internet via 10.0.3.1", r.stdout.splitlines(), "2nd reload's route")

    def test_route_change_moves_new_traffic(self):
        """203.0.113.10/32 via the endpoint link: new flows (UDP and ping) go out of nat-s3, as ngw-s3's
        capture and the replies (from ngw-s3's server, seeing 10.0.2.10) show; ngw-inet sees none of them."""
        from scapy.layers.inet import IP
        # ngw-s3 answers for 203.0.113.10 too (its own server, named s3b) once traffic gets there.
        L.ns_exec(S3_NS, ["ip", "addr", "add", f"{INET_ADDR}/32", "dev", "lo"], check=True)
        self.addCleanup(L.ns_exec, S3_NS, ["ip", "addr", "del", f"{INET_ADDR}/32", "dev", "lo"])
        s3b = L.NsServer(S3_NS, "s3b", INET_ADDR, udp_ports=(MOVE_PORT,), logdir=self.lab.logdir).start()
        self.addCleanup(s3b.stop)
        self.addCleanup(self.restore)

        before = echo_source(L.udp_exchange(CLIENT_NS, [(INET_ADDR, MOVE_PORT, "before")])["replies"][0]["text"])
        self.assertEqual(before[:2], ("inet", NATGW_INTERNET), "before the reload: not via the internet link")

        self.write_config(lambda c: c["route"].append({"prefix": f"{INET_ADDR}/32", "via": "10.0.2.1",
                                                       "interface": "endpoint"}))
        r = self.reload("ctl")
        self.assertTrue(r.ok, r)
        if L.dataplane() == "dpdk":
            routes = L.natgwctl("routes").stdout
            self.assertIn(f"{INET_ADDR}/32 dev endpoint via 10.0.2.1", routes, routes)

        s3_before, inet_before = L.veth_counters(*L.S3_IF), L.veth_counters(*L.INET_IF)
        n = 5
        with self.lab.tcpdump(*L.S3_IF, f"dst host {INET_ADDR}", count=n + 2) as cap_s3, \
                self.lab.tcpdump(*L.INET_IF, f"dst host {INET_ADDR}") as cap_inet:
            out = L.udp_exchange(CLIENT_NS, [(INET_ADDR, MOVE_PORT, f"after{i}") for i in range(n)])
            pr = ping(CLIENT_NS, INET_ADDR, count=2)
        s3_d = L.counters_delta(s3_before, L.veth_counters(*L.S3_IF))
        inet_d = L.counters_delta(inet_before, L.veth_counters(*L.INET_IF))
        self.assertNotIn(None, out["replies"], out)
        for rep in out["replies"]:
            name, ip, _, _ = echo_source(rep["text"])
            self.assertEqual((name, ip), ("s3b", NATGW_ENDPOINT), f"new flow not moved to the endpoint link: {out}")
        self.assertEqual(ping_received(pr), 2, pr.stdout)
        pkts = [p for p in cap_s3.packets if IP in p]
        self.assertEqual(len(pkts), n + 2, [p.summary() for p in cap_s3.packets])
        self.assertTrue(all(p[IP].src == NATGW_ENDPOINT for p in pkts), [p.summary() for p in pkts])
        self.assertEqual([p.summary() for p in cap_inet.packets if IP in p], [],
                         "new traffic still reached the internet link")
        self.assertGreaterEqual(s3_d["rx_packets"], n + 2, s3_d)
        self.assertLess(inet_d["rx_packets"], n + 2, inet_d)   # at most ARP there
        self.assertEqual(s3_filter_drops(), 0, "ngw-s3 saw a source other than 10.0.2.10")

    def test_acl_by_reload_blocks_new_flows_only(self):
        """An ACL denying UDP/5007 and TCP/9000 to the internet server, added by reload while a UDP stream and
        five TCP connections to those very ports are up: they carry on (ACLs judge a flow's first packet);
        new flows to those ports never reach the server; a new flow to another port does."""
        from scapy.layers.inet import TCP, UDP
        from scapy.packet import Raw
        self.addCleanup(self.restore)
        holder = L.TcpHolder(CLIENT_NS, INET_ADDR, HOLD_PORT, count=5, concurrency=5)
        self.addCleanup(holder.close)
        res = holder.open()
        self.assertEqual(res["open"], 5, res)
        stream = UdpStream(INET_ADDR, ECHO, rate=100, duration=5)
        self.addCleanup(stream.kill)
        time.sleep(1)
        acl = [{"action": "deny", "dst": f"{INET_ADDR}/32", "protocol": "udp", "dst_ports": str(ECHO)},
               {"action": "deny", "dst": f"{INET_ADDR}/32", "protocol": "tcp", "dst_ports": str(HOLD_PORT)}]
        self.write_config(lambda c: c.update(acl=acl))
        r = self.reload("sighup")
        self.assertTrue(r.ok, r)
        before = L.metrics() if L.dataplane() == "dpdk" else None

        with self.lab.tcpdump(*L.INET_IF, f"(udp dst port {ECHO}) or (tcp dst port {HOLD_PORT} and "
                                          "tcp[tcpflags] & tcp-syn != 0)") as cap:
            new_udp = L.udp_exchange(CLIENT_NS, [(INET_ADDR, ECHO, "newflow")], timeout=2)
            new_tcp = L.TcpHolder(CLIENT_NS, INET_ADDR, HOLD_PORT, count=2, concurrency=2, timeout=3)
            self.addCleanup(new_tcp.close)
            res_new = new_tcp.open()
            new_tcp.close()
        other = L.udp_exchange(CLIENT_NS, [(INET_ADDR, ECHO2, "other-port")])
        chk = holder.check()
        sres = stream.result()
        L.log(f"acl reload: new udp {new_udp}, new tcp {res_new}, held {chk}, stream {sres}")

        self.assertIsNone(new_udp["replies"][0], f"a new UDP flow passed the ACL: {new_udp}")
        self.assertEqual(res_new["open"], 0, f"new TCP connections passed the ACL: {res_new}")
        leaked = [p.summary() for p in cap.packets
                  if (UDP in p and Raw in p and b"newflow" in bytes(p[Raw]))
                  or (TCP in p and p[TCP].flags & 0x02)]
        self.assertEqual(leaked, [], "denied flows reached the server")
        self.assertIsNotNone(other["replies"][0], "a flow the ACL does not match was blocked")
        self.assertEqual(echo_source(other["replies"][0]["text"])[1], NATGW_INTERNET)
        self.assertEqual(chk["ok"], 5, f"established TCP connections were cut by the new ACL: {chk}")
        self.assertLessEqual(sres["lost"], 2, f"established UDP stream was cut by the new ACL: {sres}")
        self.assertEqual(len(sres["seen"]), 1, sres)
        if before is not None:
            after = L.metrics()
            d = after.value("natgw_drops_total", reason="acl") - before.value("natgw_drops_total", reason="acl")
            self.assertGreaterEqual(d, 3, "drops{reason=acl}: 1 datagram + at least 2 SYNs")
            acl_out = L.natgwctl("acl").stdout
            hits = [int(h) for h in re.findall(r"^\d+: deny .*?hits (\d+)", acl_out, re.M)]
            self.assertEqual(len(hits), 2, acl_out)
            self.assertGreaterEqual(hits[0], 1, acl_out)
            self.assertGreaterEqual(hits[1], 2, acl_out)

    def test_broken_config_is_refused_and_changes_nothing(self):
        self.addCleanup(self.restore)
        natgw = L.dataplane() == "dpdk"
        if natgw:
            routes0, acl0 = L.natgwctl("routes").stdout, L.natgwctl("acl").stdout
            gen0 = self.generation()
        stream = UdpStream(INET_ADDR, ECHO, rate=100, duration=4)
        self.addCleanup(stream.kill)

        # 1. natgwctl reload, a route to an interface that does not exist (a semantic error)
        bad_route = ('\n[[route]]\nprefix = "100.64.0.0/10"\nvia = "10.0.3.1"\ninterface = "nowhere"\n')
        p = self.write_config(extra=bad_route)
        line = p.read_text().splitlines().index('interface = "nowhere"') + 1
        r = self.reload("ctl")
        self.assertFalse(r.ok, f"a config with an unknown interface was accepted: {r}")
        if natgw:
            self.assertEqual(r.returncode, 1, r)
            self.assertIn("reload rejected", r.output)
            self.assertIn(f"{p}:{line}:", r.output, "the error does not name file:line")
            self.assertIn("nowhere", r.output)
        # 2. SIGHUP, a value out of range (the kernel stand-in does not validate values)
        if natgw:
            p = self.write_config(extra="\n[timeouts]\nudp = -5\n")
            line = len(p.read_text().splitlines())
            r = self.reload("sighup")
            self.assertFalse(r.ok, f"udp = -5 was accepted: {r}")
            self.assertIn(f"{p}:{line}:", r.output, "the error does not name file:line")
        # 3. natgwctl reload, not TOML at all
        p = self.write_config(extra="\n[[route]\nprefix = \n")
        r = self.reload("ctl")
        self.assertFalse(r.ok, f"a TOML syntax error was accepted: {r}")
        if natgw:
            self.assertRegex(r.output, re.escape(str(p)) + r":\d+:", "the error does not name file:line")

        res = stream.result()
        self.assertLessEqual(res["lost"], 2, f"traffic suffered from the refused reloads: {res}")
        self.assertEqual(len(res["seen"]), 1, res)
        for name, (addr, snat) in {"s3": (S3_ADDR, NATGW_ENDPOINT), "inet": (INET_ADDR, NATGW_INTERNET)}.items():
            rr = udp_request(CLIENT_NS, addr, 7, "still")
            self.assertEqual(rr.stdout, f"{name}:{snat}:still", rr.stderr)
        if natgw:
            self.assertEqual(L.natgwctl("routes").stdout, routes0, "routes changed by a refused reload")
            self.assertEqual(L.natgwctl("acl").stdout.replace(" ", ""), acl0.replace(" ", ""))
            m = L.metrics()
            self.assertEqual(m.value("natgw_config_generation"), gen0)
            self.assertEqual(m.value("natgw_config_last_reload_success"), 0)
            self.assertLess(abs(m.value("natgw_config_last_reload_timestamp_seconds") - time.time()), 30,
                            "last reload timestamp is not the time of the last attempt")
            # A good config is taken again afterwards.
            self.write_config()
            r = self.reload("ctl")
            self.assertTrue(r.ok, r)
            self.assertEqual(L.metrics().value("natgw_config_last_reload_success"), 1)
            self.assertEqual(self.generation(), gen0 + 1)


# ------------------------------------------------------------------------------------------------ ACLs
class AclDeny(ControlLab):
    """Deny rules by destination prefix and port, default allow."""

    @classmethod
    def edit_base(cls, cfg):
        cfg["acl"] = [
            {"action": "deny", "dst": f"{INET_ADDR}/32", "protocol": "tcp", "dst_ports": str(HOLD_PORT)},
            {"action": "deny", "dst": "198.51.100.0/24", "protocol": "udp", "dst_ports": f"{ECHO}-{ECHO2}"},
        ]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.start_servers()
        warm_up([S3_ADDR, INET_ADDR])

    def test_deny_tcp_port_to_prefix(self):
        from scapy.layers.inet import TCP
        with self.lab.tcpdump(*L.INET_IF, f"tcp dst port {HOLD_PORT}") as cap:
            h = L.TcpHolder(CLIENT_NS, INET_ADDR, HOLD_PORT, count=2, concurrency=2, timeout=3)
            self.addCleanup(h.close)
            res = h.open()
            h.close()
        self.assertEqual(res["open"], 0, f"denied TCP port reachable: {res}")
        self.assertEqual([p.summary() for p in cap.packets if TCP in p], [], "denied SYNs reached the server")
        r = curl(CLIENT_NS, f"http://{INET_ADDR}/ip")   # same destination, port 80: allowed
        self.assertEqual(r.stdout.strip(), f"inet {NATGW_INTERNET}", r.stderr)
        if L.dataplane() == "dpdk":
            out = L.natgwctl("acl").stdout
            m = re.search(rf"^0: deny dst {re.escape(INET_ADDR)}/32 .*dport {HOLD_PORT}-{HOLD_PORT}\s+hits (\d+)",
                          out, re.M)
            self.assertIsNotNone(m, out)
            self.assertGreaterEqual(int(m.group(1)), 2, out)
            self.assertRegex(out, r"default: allow\s+hits [1-9]", "allowed flows not counted on the default")

    def test_deny_udp_ports_to_prefix(self):
        from scapy.layers.inet import UDP
        with self.lab.tcpdump(*L.S3_IF, "udp") as cap:
            out = L.udp_exchange(CLIENT_NS, [(S3_ADDR, ECHO, "d1"), (S3_ADDR, ECHO2, "d2")], timeout=1.5)
        self.assertEqual(out["replies"], [None, None], f"denied UDP ports reachable: {out}")
        self.assertEqual([p.summary() for p in cap.packets if UDP in p], [], "denied datagrams reached ngw-s3")
        r = udp_request(CLIENT_NS, S3_ADDR, 7, "port7")                  # same prefix, another port
        self.assertEqual(r.stdout, f"s3:{NATGW_ENDPOINT}:port7", r.stderr)
        out = L.udp_exchange(CLIENT_NS, [(INET_ADDR, ECHO, "inet")])       # same port, another prefix
        self.assertEqual(echo_source(out["replies"][0] and out["replies"][0]["text"])[:2], ("inet", NATGW_INTERNET))
        if L.dataplane() == "dpdk":
            self.assertRegex(L.natgwctl("acl").stdout, r"(?m)^1: deny dst 198\.51\.100\.0/24 .*hits [1-9]")


class AclAllow(ControlLab):
    """An allow-list: HTTP to the S3 prefix and UDP/7 to the internet server; everything else denied."""

    @classmethod
    def edit_base(cls, cfg):
        cfg["acl"] = [
            {"action": "allow", "dst": "198.51.100.0/24", "protocol": "tcp", "dst_ports": "80"},
            {"action": "allow", "dst": f"{INET_ADDR}/32", "protocol": "udp", "dst_ports": "7"},
        ]
        cfg["acl_default"] = {"action": "deny"}

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        udp_warm_up([(INET_ADDR, 7)])

    def test_allow_list_default_deny(self):
        from scapy.layers.inet import IP
        r = curl(CLIENT_NS, f"http://{S3_ADDR}/ip")
        self.assertEqual(r.stdout.strip(), f"s3 {NATGW_ENDPOINT}", r.stderr)
        r = udp_request(CLIENT_NS, INET_ADDR, 7, "allowed")
        self.assertEqual(r.stdout, f"inet:{NATGW_INTERNET}:allowed", r.stderr)
        with self.lab.tcpdump(*L.INET_IF, f"ip and dst host {INET_ADDR}") as cap_inet, \
                self.lab.tcpdump(*L.S3_IF, "udp or icmp") as cap_s3:
            r_http = curl(CLIENT_NS, f"http://{INET_ADDR}/ip", timeout=3)
            r_udp = udp_request(CLIENT_NS, S3_ADDR, 7, "denied", timeout=1.5)
            r_ping = ping(CLIENT_NS, INET_ADDR, count=2, wait=1)
        self.assertNotEqual(r_http.returncode, 0, f"HTTP to the internet server passed: {r_http.stdout}")
        self.assertNotEqual(r_udp.returncode, 0, f"UDP to S3 passed: {r_udp.stdout}")
        self.assertEqual(ping_received(r_ping), 0, r_ping.stdout)
        self.assertEqual([p.summary() for p in cap_inet.packets if IP in p], [], "denied traffic reached inet")
        self.assertEqual([p.summary() for p in cap_s3.packets if IP in p], [], "denied traffic reached s3")
        if L.dataplane() == "dpdk":
            out = L.natgwctl("acl").stdout
            m = re.search(r"default: deny\s+hits (\d+)", out)
            self.assertIsNotNone(m, out)
            self.assertGreaterEqual(int(m.group(1)), 4, f"SYN(s), datagram, 2 echo requests: {out}")
            self.assertRegex(out, r"(?m)^0: allow .*hits [1-9]")
            self.assertRegex(out, r"(?m)^1: allow .*hits [1-9]")


# --------------------------------------------------------------------------------- metrics and natgwctl
class Observe(ControlLab):

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.start_servers(inet_tcp=())
        warm_up([S3_ADDR, INET_ADDR])

    def setUp(self) -> None:
        L.require_natgw("metrics and natgwctl")
        super().setUp()

    def test_metrics_endpoint_serves_valid_prometheus_text(self):
        status, headers, body = L.scrape_metrics()
        self.assertRegex(status, r"^HTTP/1\.[01] 200\b")
        self.assertEqual(headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8")
        self.assertEqual(int(headers.get("content-length", -1)), len(body.encode()))
        m = check_exposition(body)
        for fam in ("natgw_interface_rx_packets_total", "natgw_packets_total", "natgw_drops_total",
                    "natgw_sessions_active", "natgw_port_allocation_errors_total", "natgw_config_generation",
                    "natgw_acl_hits_total", "natgw_worker_busy_cycles_total"):
            self.assertIn(fam, m.types, f"family {fam} missing")
        self.assertEqual({dict(k)["interface"] for k in m.series("natgw_interface_rx_packets_total")},
                         {"inside", "endpoint", "internet"})
        status, _, _ = L.scrape_metrics(L.METRICS_URL.replace("/metrics", "/nothing"))
        self.assertRegex(status, r"^HTTP/1\.[01] 404\b")

    def test_counters_match_the_traffic_sent(self):
        """Exactly N datagrams, each answered: translated counters move by exactly N; natgw's interface
        counters move with the kernel's veth counters on the other side of each link (ARP included)."""
        n = 200
        L.udp_exchange(CLIENT_NS, [(INET_ADDR, ECHO, "warm")])       # ARP and a mapping, outside the window
        time.sleep(0.3)
        links = {"inside": L.TGW_NAT_IF, "internet": L.INET_IF}
        v0 = {k: L.veth_counters(*v) for k, v in links.items()}
        m0 = check_exposition(L.scrape_metrics()[2])
        out = lockstep_udp(INET_ADDR, ECHO, n, "count")
        time.sleep(0.3)
        m1 = check_exposition(L.scrape_metrics()[2])
        v1 = {k: L.veth_counters(*v) for k, v in links.items()}
        self.assertNotIn(None, out["replies"], "a datagram went unanswered")
        srcs = {echo_source(x["text"])[:3] for x in out["replies"]}
        self.assertEqual(len(srcs), 1, srcs)
        self.assertEqual(next(iter(srcs))[:2], ("inet", NATGW_INTERNET))

        def d(name, **labels):
            return m1.value(name, **labels) - m0.value(name, **labels)

        self.assertEqual(d("natgw_packets_total", path="in2out"), n)
        self.assertEqual(d("natgw_packets_total", path="out2in"), n)
        self.assertEqual(d("natgw_packets_total", path="forwarded"), 0)
        self.assertEqual(d("natgw_sessions_created_total", protocol="udp"), 1, "one socket, one session")
        for iface, veth in links.items():
            vd = L.counters_delta(v0[iface], v1[iface])
            with self.subTest(interface=iface):
                rx, tx = d("natgw_interface_rx_packets_total", interface=iface), \
                    d("natgw_interface_tx_packets_total", interface=iface)
                self.assertGreaterEqual(rx, n)
                self.assertLessEqual(rx, n + 4, "more than N (+ a few ARP) packets counted")
                self.assertEqual(rx, vd["tx_packets"], f"natgw rx vs {veth} tx: {vd}")
                self.assertEqual(tx, vd["rx_packets"], f"natgw tx vs {veth} rx: {vd}")
                self.assertEqual(d("natgw_interface_rx_bytes_total", interface=iface), vd["tx_bytes"])
                self.assertEqual(d("natgw_interface_tx_bytes_total", interface=iface), vd["rx_bytes"])
        self.assertEqual(d("natgw_interface_rx_packets_total", interface="endpoint"), 0)
        for k, v in m1.series("natgw_drops_total").items():
            self.assertEqual(v - m0.samples[("natgw_drops_total", k)], 0, f"drops {dict(k)} grew")

    def test_natgwctl_stats_and_sessions(self):
        out = L.udp_exchange(CLIENT_NS, [(INET_ADDR, ECHO, "ctl-a"), (S3_ADDR, ECHO, "ctl-b")])
        self.assertNotIn(None, out["replies"], out)
        lp = out["local_port"]
        a, b = (echo_source(x["text"]) for x in out["replies"])
        r = L.natgwctl("stats")
        self.assertEqual(r.returncode, 0, r.stderr)
        for iface in ("inside", "endpoint", "internet"):
            self.assertRegex(r.stdout, rf"(?m)^  {iface}: rx \d+ pkts \d+ bytes, tx \d+ pkts")
        m = L.metrics()
        got = re.search(r"in2out (\d+), out2in (\d+)", r.stdout)
        self.assertIsNotNone(got, r.stdout)
        self.assertLessEqual(int(got.group(1)), m.value("natgw_packets_total", path="in2out"))
        self.assertGreaterEqual(int(got.group(1)), 2)

        def rows(arg):
            rr = L.natgwctl("sessions", arg)
            self.assertEqual(rr.returncode, 0, rr.stderr)
            lines = rr.stdout.splitlines()
            self.assertRegex(lines[-1], r"^\d+ session\(s\)")
            self.assertEqual(int(lines[-1].split()[0]), len(lines) - 2, rr.stdout)
            return [ln.split() for ln in lines[1:-1]]

        mine_inet = ["udp", f"{CLIENT_ADDR}:{lp}", f"{NATGW_INTERNET}:{a[2]}", f"{INET_ADDR}:{ECHO}"]
        mine_s3 = ["udp", f"{CLIENT_ADDR}:{lp}", f"{NATGW_ENDPOINT}:{b[2]}", f"{S3_ADDR}:{ECHO}"]
        by_client = [row[:4] for row in rows(CLIENT_ADDR)]
        self.assertIn(mine_inet, by_client, "the session with the outside port the server saw")
        self.assertIn(mine_s3, by_client)
        by_inet = [row[:4] for row in rows(INET_ADDR)]
        self.assertIn(mine_inet, by_inet)
        self.assertNotIn(mine_s3, by_inet, "filter by remote address shows another remote's session")
        self.assertTrue(all(INET_ADDR in " ".join(row) for row in by_inet), by_inet)
        self.assertIn(mine_s3, [row[:4] for row in rows(NATGW_ENDPOINT)])
        self.assertEqual(rows("10.99.99.99"), [])
        self.assertEqual(rows("0.0.0.0"), [], "0.0.0.0 is an address to match, not 'no filter'")
        self.assertIn(mine_inet, [row[:4] for row in rows("")], "no argument lists every session")
        bad = L.natgwctl("sessions", "not-an-address")
        self.assertEqual(bad.returncode, 1)
        self.assertIn("not an IPv4 address", bad.stderr)

    def test_natgwctl_routes_arp_acl(self):
        routes = L.natgwctl("routes")
        self.assertEqual(routes.returncode, 0, routes.stderr)
        for want in ("0.0.0.0/0 dev internet via 10.0.3.1", "198.51.100.0/24 dev endpoint via 10.0.2.1",
                     "192.168.0.0/16 dev inside via 10.0.1.1"):
            self.assertIn(want, routes.stdout.splitlines(), routes.stdout)
        warm_up([S3_ADDR, INET_ADDR])
        arp = L.natgwctl("arp")
        self.assertEqual(arp.returncode, 0, arp.stderr)
        table = {ln.split()[0]: (ln.split()[1].lower(), ln.split()[3]) for ln in arp.stdout.splitlines()
                 if ln.count(" ") >= 3 and " dev " in ln}
        for ip, (ns, ifn), dev in (("10.0.1.1", L.TGW_NAT_IF, "inside"), ("10.0.2.1", L.S3_IF, "endpoint"),
                                   ("10.0.3.1", L.INET_IF, "internet")):
            self.assertEqual(table.get(ip), (self.lab.mac(ns, ifn), dev), f"ARP entry for {ip}: {arp.stdout}")
        acl = L.natgwctl("acl")
        self.assertEqual(acl.returncode, 0, acl.stderr)
        self.assertRegex(acl.stdout, r"^default: allow\s+hits \d+\n$", "lab.toml has no ACL rules")
        unknown = L.natgwctl("frobnicate")
        self.assertEqual(unknown.returncode, 1)
        self.assertIn("unknown command", unknown.stderr)

    def test_natgwctl_without_natgw(self):
        sock = "/run/natgw-lab/nobody-here.sock"
        for cmd in ("stats", "reload"):
            r = L.natgwctl(cmd, socket=sock)
            self.assertEqual(r.returncode, 3, r)
            self.assertIn(f"no natgw is running at {sock}", r.stderr)
            self.assertEqual(r.stdout, "")
        r = L.run([str(L.natgwctl_bin())])
        self.assertEqual(r.returncode, 2, "no command: usage")
        self.assertIn("usage", r.stderr)


class StartupRefusals(unittest.TestCase):
    """natgw refuses what it cannot run, at the config's line, and harms nothing on the way out. net_null
    ports: no lab needed."""

    def setUp(self) -> None:
        if L.dataplane() != "dpdk":
            self.skipTest("natgw's own startup")
        self.tmp = tempfile.TemporaryDirectory(prefix="natgw-refusals-")

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def natgw_with(self, edit) -> subprocess.CompletedProcess:
        def base(cfg):
            cfg["dataplane"]["eal"] = ["--no-huge", "-m", "256", "--no-pci", "--no-shconf",
                                       "--file-prefix", "natgw-refusals"]
            for i, itf in enumerate(cfg["interface"]):
                itf["device"] = f"net_null{i}"
            cfg["control"]["socket"] = os.path.join(self.tmp.name, "natgw.sock")
            cfg["metrics"]["listen"] = "127.0.0.1:9198"
            edit(cfg)
        path = L.derive_config("config/lab.toml", os.path.join(self.tmp.name, "natgw.toml"), base)
        r = L.run([str(L.natgw_bin()), "--config", str(path)], timeout=60)
        self.assertNotEqual(r.returncode, 0, "natgw ran: " + r.stdout[-1500:])
        return r

    def test_too_few_mbufs_is_refused_at_its_line(self):
        r = self.natgw_with(lambda cfg: cfg["dataplane"].__setitem__("mbufs", 100))
        self.assertRegex(r.stderr, r"natgw\.toml:\d+: dataplane\.mbufs 100 is too few: 3 interface\(s\)")

    def test_a_control_socket_path_on_a_file_leaves_the_file_alone(self):
        precious = os.path.join(self.tmp.name, "natgw.toml.orig")
        with open(precious, "w") as f:
            f.write("keep me\n")
        r = self.natgw_with(lambda cfg: cfg["control"].__setitem__("socket", precious))
        self.assertIn("exists and is not a socket", r.stderr)
        with open(precious) as f:
            self.assertEqual(f.read(), "keep me\n")


class Shutdown(ControlLab):

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.start_servers(inet_tcp=(), s3_udp=())
        warm_up([INET_ADDR])

    def test_sigterm_prints_final_counters_and_exits_0(self):
        L.require_natgw("natgw's exit")
        n = 50
        out = lockstep_udp(INET_ADDR, ECHO, n, "bye")
        self.assertNotIn(None, out["replies"])
        m = L.metrics()
        t0 = time.monotonic()
        rc = self.natgw.stop(term_timeout=10)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, f"exit status after SIGTERM:\n{self.natgw.tail()}")
        self.assertLess(took, 5, "SIGTERM took long")
        text = self.natgw.output()
        self.assertIn("natgw: stopping", text)
        self.assertIn("natgw: final counters", text)
        final = text.split("natgw: final counters", 1)[1]
        got = re.search(r"in2out (\d+), out2in (\d+)", final)
        self.assertIsNotNone(got, final)
        self.assertEqual(int(got.group(1)), m.value("natgw_packets_total", path="in2out"))
        self.assertGreaterEqual(int(got.group(1)), n)
        self.assertGreaterEqual(int(got.group(2)), n)
        self.assertRegex(final, r"sessions: active tcp \d+ udp [1-9]")
        self.assertFalse(Path(L.CONTROL_SOCKET).exists(), "control socket left behind")
        r = L.natgwctl("stats")
        self.assertEqual(r.returncode, 3, r)

    def setUp(self) -> None:  # natgw is stopped by the test itself: no running check afterwards
        pass

    def tearDown(self) -> None:
        pass


# --------------------------------------------------------------------------------------- multi-worker
class MultiWorker(ControlLab):
    """workers = 2: each af_packet port gets two queue pairs (a PACKET_FANOUT group hashing flows over the
    two sockets); the two pollers run on the machine's two CPUs, the control thread beside worker 0."""

    @classmethod
    def edit_base(cls, cfg):
        cfg["dataplane"]["workers"] = 2
        # Two workers' session tables at the default 1M sessions each do not fit in lab.toml's -m 512.
        cfg["nat"] = {"max_sessions": 131072}
        cfg["dataplane"]["eal"] = [*cfg["dataplane"]["eal"], "--lcores", "0@0,1@0,2@1"]
        for itf in cfg["interface"]:
            itf["device"] += ",qpairs=2"

    @classmethod
    def setUpClass(cls) -> None:
        if L.dataplane() != "dpdk":
            raise unittest.SkipTest("natgw-specific (workers)")
        if (os.cpu_count() or 1) < 2:
            raise unittest.SkipTest("needs 2 CPUs")
        super().setUpClass()
        cls.start_servers()
        warm_up([S3_ADDR, INET_ADDR])

    def test_nat_with_two_workers(self):
        self.assertIn("2 worker(s)", self.natgw.output())
        m0 = L.metrics()
        for name, (addr, snat) in {"s3": (S3_ADDR, NATGW_ENDPOINT), "inet": (INET_ADDR, NATGW_INTERNET)}.items():
            with self.subTest(server=name):
                r = curl(CLIENT_NS, f"http://{addr}/ip")
                self.assertEqual(r.stdout.strip(), f"{name} {snat}", r.stderr)
                r = udp_request(CLIENT_NS, addr, 7, "mw")
                self.assertEqual(r.stdout, f"{name}:{snat}:mw", r.stderr)
                r = ping(CLIENT_NS, addr, count=3)
                self.assertEqual(ping_received(r), 3, r.stdout)
        # Many flows, so that the kernel's fanout hash gives both queues some.
        h = L.TcpHolder(CLIENT_NS, INET_ADDR, HOLD_PORT, count=300, concurrency=100, timeout=10)
        self.addCleanup(h.close)
        res = h.open(timeout=120)
        self.assertEqual(res["open"], 300, res)
        self.assertEqual(res["sources"], [NATGW_INTERNET])
        self.assertEqual(res["outside_ports"], 300, res)
        self.assertEqual(h.check()["ok"], 300)
        self.assertEqual(h.close()["closed"], 300)
        want = hashlib.sha256(Path("/run/natgw-lab/www-s3/1M").read_bytes()).hexdigest()
        r = L.ns_exec(CLIENT_NS, f"curl -sS --max-time 30 http://{S3_ADDR}/1M | sha256sum", timeout=40)
        self.assertEqual(r.stdout.split()[0], want, "1 MB download through two workers corrupted")
        self.assertEqual(s3_filter_drops(), 0)
        m1 = L.metrics()
        busy = {w: m1.value("natgw_worker_busy_cycles_total", worker=str(w))
                - m0.value("natgw_worker_busy_cycles_total", worker=str(w)) for w in (0, 1)}
        L.log(f"busy cycles per worker during the traffic: {busy}")
        self.assertEqual(set(dict(k)["worker"] for k in m1.series("natgw_worker_busy_cycles_total")), {"0", "1"})
        for w, cycles in busy.items():
            self.assertGreater(cycles, 0, f"worker {w} received nothing: {busy}")
        stats = L.natgwctl("stats").stdout
        self.assertRegex(stats, r"(?m)^worker 0: ")
        self.assertRegex(stats, r"(?m)^worker 1: ")
        self.assertGreaterEqual(m1.value("natgw_packets_total", path="in2out")
                                - m0.value("natgw_packets_total", path="in2out"), 300 * 3)


if __name__ == "__main__":
    L.main()

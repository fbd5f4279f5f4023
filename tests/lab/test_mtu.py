#!/usr/bin/python3
"""End-to-end: path MTU in the namespace lab (issue 6): interfaces of different MTUs.

natgw runs config/lab.toml with the internet link's MTU lowered to 1280 on both ends (a VPN-like leg; natgw
sets its af_packet side, the test the server side) and TCP MSS clamping on the endpoint interface. The inside
link stays at 1500, so natgw is what must handle packets too big for the next link:
  - a DF packet too big for the internet leg gets ICMP fragmentation-needed with next-hop MTU 1280, sent to
    the client as the client sent the packet (its own source address inside), and real TCP recovers from it
    (path MTU discovery: a 300 KB upload completes);
  - a packet without DF is fragmented: the internet server receives fragments no larger than 1280 bytes and
    reassembles them (the ping is answered);
  - SYNs leaving by the endpoint interface carry an MSS no larger than the clamp, as the server sees them.

Run as root:  /usr/bin/python3 tests/lab/test_mtu.py -v
"""

import hashlib
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import natgwlab as L  # noqa: E402
from natgwlab import CLIENT_ADDR, CLIENT_NS, INET_ADDR, NATGW_INSIDE, NATGW_INTERNET, S3_ADDR, TGW_NS, ping  # noqa: E402

INET_MTU = 1280
S3_MSS = 1000


class PathMtu(L.LabTestCase):
    MODE = "nat"

    @classmethod
    def natgw_config(cls) -> str:
        def edit(cfg):
            for itf in cfg["interface"]:
                if itf["name"] == "internet":
                    itf["mtu"] = INET_MTU
                if itf["name"] == "endpoint":
                    itf["mss_clamp"] = S3_MSS
        cls._tmp = tempfile.TemporaryDirectory(prefix="natgw-mtu-")
        return str(L.derive_config("config/lab.toml", os.path.join(cls._tmp.name, "mtu.toml"), edit))

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        L.ns_exec(L.INET_NS, ["ip", "link", "set", "dev", L.INET_IF[1], "mtu", str(INET_MTU)], check=True)
        # The server advertises the MSS of a 1500-byte path, as a server beyond the narrow leg would: the
        # client's segments must then be cut down by path MTU discovery through natgw's frag-needed.
        L.ns_exec(L.INET_NS, ["ip", "route", "replace", "10.0.3.0/24", "dev", L.INET_IF[1], "src",
                              L.INET_LINK_ADDR, "advmss", "1460"], check=True)
        for dst in (S3_ADDR, INET_ADDR):  # let ARP settle on every hop
            for _ in range(3):
                if ping(CLIENT_NS, dst, count=1, wait=2).returncode == 0:
                    break

    def setUp(self) -> None:
        super().setUp()
        # Forget learned path MTUs so each test starts from 1500.
        for ns in (CLIENT_NS, TGW_NS):
            L.ns_exec(ns, ["ip", "route", "flush", "cache"])

    def test_an_mtu_the_port_cannot_take_is_refused_at_start(self):
        # af_packet's default frames (2048 bytes) cannot carry MTU 3000: natgw must say so and stop, not
        # run believing it may send 3000-byte frames (and never send frag-needed for 1500-3000).
        if L.dataplane() != "dpdk":
            self.skipTest("natgw's own port setup")

        def edit(cfg):
            cfg["dataplane"]["eal"] = [a if a != "natgw-lab" else "natgw-lab-mtu" for a in cfg["dataplane"]["eal"]]
            cfg["control"]["socket"] = os.path.join(self._tmp.name, "mtu-refused.sock")
            cfg["metrics"]["listen"] = "127.0.0.1:9199"
            for itf in cfg["interface"]:
                if itf["name"] == "inside":
                    itf["mtu"] = 3000
        bad = L.derive_config("config/lab.toml", os.path.join(self._tmp.name, "mtu-3000.toml"), edit)
        r = L.ns_exec(L.NAT_NS, [str(L.natgw_bin()), "--config", str(bad)], timeout=60)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("inside: the port does not take mtu 3000", r.stdout + r.stderr)

    def test_df_too_big_gets_frag_needed_with_next_hop_mtu(self):
        from scapy.layers.inet import ICMP, IP, IPerror
        with self.lab.tcpdump(*L.CLIENT_IF, "icmp[icmptype] == 3", count=1) as cap:
            r = L.ns_exec(CLIENT_NS, ["ping", "-n", "-c", "1", "-W", "3", "-M", "do", "-s", "1400", INET_ADDR])
        self.assertNotEqual(r.returncode, 0, "a 1428-byte DF ping crossed a 1280-byte link")
        errs = [p for p in cap.packets if ICMP in p and p[ICMP].type == 3]
        self.assertEqual(len(errs), 1, [p.summary() for p in cap.packets])
        e = errs[0]
        self.assertEqual(e[ICMP].code, 4, "not fragmentation-needed")
        self.assertEqual(e[ICMP].nexthopmtu, INET_MTU)
        self.assertEqual(e[IP].src, NATGW_INSIDE)
        self.assertEqual(e[IP].dst, CLIENT_ADDR)
        # The embedded header is the packet as the client sent it (inside source, not translated).
        self.assertEqual(e[IPerror].src, CLIENT_ADDR)
        self.assertEqual(e[IPerror].dst, INET_ADDR)
        self.assertEqual(e[IPerror].len, 1428)
        stats = self.natgw_drops()
        self.assertGreaterEqual(stats.get("mtu", 0), 1, stats)

    def test_non_df_is_fragmented_to_the_link_mtu(self):
        from scapy.layers.inet import ICMP, IP
        with self.lab.tcpdump(*L.INET_IF, f"ip and src {NATGW_INTERNET} and dst {INET_ADDR}", count=6) as cap:
            r = L.ns_exec(CLIENT_NS, ["ping", "-c", "3", "-i", "0.2", "-W", "3", "-M", "dont", "-s", "1400",
                                      INET_ADDR])
        self.assertEqual(r.returncode, 0, "fragmented echo requests were not answered:\n" + r.stdout +
                         "\n".join(p.summary() + f" len={p[IP].len} frag={p[IP].frag} flags={p[IP].flags}" for p in cap.packets))
        self.assertIn("3 received", r.stdout)
        frames = cap.packets
        self.assertEqual(len(frames), 6, [p.summary() for p in frames])
        for p in frames:
            self.assertLessEqual(p[IP].len, INET_MTU, p.summary())
        firsts = [p for p in frames if p[IP].frag == 0]
        lasts = [p for p in frames if p[IP].frag > 0]
        self.assertEqual(len(firsts), 3)
        self.assertEqual(len(lasts), 3)
        for p in firsts:
            self.assertTrue(p[IP].flags.MF, "first fragment without MF")
            self.assertIn(ICMP, p)
        for p in lasts:
            self.assertFalse(p[IP].flags.MF, "last fragment with MF")
        # Each datagram's fragments add up to the original 1408 bytes of ICMP.
        by_id = {}
        for p in frames:
            by_id.setdefault(p[IP].id, []).append(p[IP].len - p[IP].ihl * 4)
        self.assertEqual(sorted(sum(v) for v in by_id.values()), [1408] * 3, by_id)

    def test_tcp_upload_recovers_by_path_mtu_discovery(self):
        # Linux TCP sets DF: the first full-size segments draw frag-needed, the client lowers its path MTU
        # and the upload completes. Without working frag-needed this blackholes and curl times out.
        payload = os.path.join(self._tmp.name, "upload.bin")
        data = os.urandom(300_000)
        with open(payload, "wb") as f:
            f.write(data)
        with self.lab.tcpdump(*L.CLIENT_IF, "icmp[icmptype] == 3 and icmp[icmpcode] == 4", count=1) as cap:
            r = L.curl(CLIENT_NS, f"http://{INET_ADDR}/upload", timeout=20,
                       extra=["--data-binary", f"@{payload}", "-H", "Content-Type: application/octet-stream"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["inet", "300000", hashlib.sha256(data).hexdigest()],
                         "the upload arrived incomplete or corrupted")
        self.assertGreaterEqual(len(cap.packets), 1, "no frag-needed seen: was the path MTU really enforced?")
        routes = L.ns_exec(CLIENT_NS, ["ip", "route", "get", INET_ADDR]).stdout
        self.assertIn(f"mtu {INET_MTU}", routes, "the client did not learn the path MTU")

    def test_syn_mss_is_clamped_on_the_endpoint_link(self):
        from scapy.layers.inet import TCP
        with self.lab.tcpdump(*L.S3_IF, "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0",
                              count=1) as cap:
            r = L.curl(CLIENT_NS, f"http://{S3_ADDR}/whoami")
        self.assertEqual(r.returncode, 0, r.stderr)
        syns = [p for p in cap.packets if TCP in p]
        self.assertEqual(len(syns), 1)
        mss = dict((k, v) for k, v in syns[0][TCP].options if isinstance(k, str)).get("MSS")
        self.assertEqual(mss, S3_MSS, syns[0][TCP].options)
        # Not clamped where no clamp is configured: the internet link's SYNs keep the client's MSS.
        with self.lab.tcpdump(*L.INET_IF, "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0",
                              count=1) as cap:
            r = L.curl(CLIENT_NS, f"http://{INET_ADDR}/whoami")
        self.assertEqual(r.returncode, 0, r.stderr)
        mss = dict((k, v) for k, v in cap.packets[0][TCP].options if isinstance(k, str)).get("MSS")
        self.assertEqual(mss, 1460)

    def natgw_drops(self) -> dict:
        m = L.metrics()
        return {labels[0][1]: v for labels, v in m.series("natgw_drops_total").items() if labels}


if __name__ == "__main__":
    L.main()

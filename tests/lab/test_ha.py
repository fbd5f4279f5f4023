#!/usr/bin/python3
"""End-to-end: two natgw instances with health-checked route failover (scripts/natgw-ha.py).

    lab.sh up --mode nat --ha   natgw A in ngw-nat (inside 10.0.1.10, internet 10.0.3.10), natgw B in ngw-nat2
                                (10.0.1.20, 10.0.3.20) on bridged links; ngw-tgw's default route (standing
                                for the VPC/TGW-attachment route table) points at A; A and B reach each
                                other's /healthz over a management link (172.16.0.1 <-> 172.16.0.2)
    natgw-ha.py in each natgw namespace: self http://127.0.0.1:9100/healthz, peer over the management link,
                                interval 1 s, timeout 1 s, 3 failures; provider "command":
                                `ip -n ngw-tgw route replace default via <own inside address>`

What is checked, always on what the server saw (the source address of a new flow: A's or B's outside
address) and on ngw-tgw's route, never the agents' word alone:
    Healthy     a healthy pair is never taken over from: the route stays on A, traffic leaves by A, no
                takeover in either agent's log; natgw-ha.py --check says both ok
    Kill        natgw A SIGKILLed: B's agent takes over; a new flow from the client reaches the server from
                B's outside address; the failover time (kill to the first new flow through B) is printed
                and within the configured checks
    Stop        natgw A SIGSTOPped (control thread too: health checks time out): B takes over; A continued
                is healthy again, and the routes stay on B (no flapping)
    Stall       A's worker thread alone frozen (ptrace): A's /healthz answers 503 naming the worker (its
                control thread runs on), natgwctl health exits 1; B takes over
    SelfSick    B's own worker frozen, then A killed: B does not take over while unhealthy (the route stays
                on dead A); released, B takes over

Run as root:  flock /tmp/natgw-lab.lock /usr/bin/python3 tests/lab/test_ha.py -v
natgw-only: skipped with NATGW_LAB_DATAPLANE=kernel.
"""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import natgwlab as L  # noqa: E402
from natgwlab import CLIENT_NS, INET_ADDR, NAT2_NS, NAT_NS, TGW_NS, curl, udp_request  # noqa: E402
from test_systemd import ThreadFreeze, thread_named  # noqa: E402

BASE_CONFIG = "config/lab.toml"
AGENT = L.SRC / "scripts" / "natgw-ha.py"
INTERVAL, TIMEOUT, FAILURES = 1.0, 1.0, 3
# Detection takes FAILURES checks INTERVAL apart (plus a TIMEOUT when the peer hangs); the takeover and
# the first new flow (ARP on two hops) a moment more.
FAILOVER_LIMIT = FAILURES * INTERVAL + TIMEOUT + 3.0
WORKER_LCORE = 1

A = {"name": "a", "ns": NAT_NS, "inside": "10.0.1.10", "endpoint": "10.0.2.10", "internet": "10.0.3.10",
     "mgmt": "172.16.0.1", "ifs": ("nat-in", "nat-s3", "nat-inet")}
B = {"name": "b", "ns": NAT2_NS, "inside": "10.0.1.20", "endpoint": "10.0.2.20", "internet": "10.0.3.20",
     "mgmt": "172.16.0.2", "ifs": ("nat2-in", "nat2-s3", "nat2-inet")}

# A new UDP flow (a new socket, so a new source port: a new session) every 100 ms until the server's echo
# names `want` as the source it saw; prints the time of that reply.
_PROBER = r"""
import json, socket, sys, time
addr, port, want, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
end, i, seen = time.time() + limit, 0, {}
while time.time() < end:
    t = time.time()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.3)
    s.sendto(f"probe-{i}".encode(), (addr, port))
    try:
        text = s.recvfrom(2048)[0].decode(errors="replace")
    except socket.timeout:
        text = None
    s.close()
    src = text.split(":")[1] if text else "none"
    seen[src] = seen.get(src, 0) + 1
    if src == want:
        print(json.dumps({"t": time.time(), "tries": i + 1, "seen": seen}))
        sys.exit(0)
    i += 1
    time.sleep(max(0.0, 0.1 - (time.time() - t)))
print(json.dumps({"t": None, "tries": i, "seen": seen}))
sys.exit(1)
"""


def tgw_default() -> str:
    """The next hop of ngw-tgw's default route (the "route table"), e.g. 10.0.1.10."""
    out = L.ns_exec(TGW_NS, ["ip", "-4", "route", "show", "default"], check=True).stdout
    m = re.search(r"via (\S+)", out)
    return m.group(1) if m else ""


def seen_source() -> str | None:
    """The source address the internet server sees for a new UDP flow from the client (None: no reply)."""
    r = udp_request(CLIENT_NS, INET_ADDR, 7, "who", timeout=2)
    return r.stdout.split(":")[1] if r.returncode == 0 else None


class Agent:
    """natgw-ha.py running in a natgw's namespace, its log in the lab's log folder."""

    def __init__(self, me: dict, peer: dict, logdir: str):
        self.me = me
        self.cfg = Path(logdir) / f"ha-{me['name']}.toml"
        self.cfg.write_text(f"""# natgw-ha agent of natgw {me['name'].upper()} (tests/lab/test_ha.py)
[ha]
name = "natgw-{me['name']}"
self_url = "http://127.0.0.1:9100/healthz"
peer_url = "http://{peer['mgmt']}:9100/healthz"
interval = {INTERVAL}
timeout = {TIMEOUT}
failures = {FAILURES}
provider = "command"

[command]
takeover = ["ip", "-n", "{TGW_NS}", "route", "replace", "{{target}}", "via", "{me['inside']}"]
check = ["sh", "-c", "ip -n {TGW_NS} -4 route show {{target}} | grep -q 'via {me['inside']} '"]
targets = ["default"]
""")
        self.log_path = Path(logdir) / f"ha-{me['name']}-{time.strftime('%H%M%S')}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Agent":
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.me["ns"], "/usr/bin/python3", str(AGENT),
                                      "--config", str(self.cfg)], stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        return self

    def stop(self) -> None:
        """SIGTERM, as systemd stops it: the agent says so and exits 0 (an AssertionError if not)."""
        if self.proc is not None:
            proc, self.proc = self.proc, None
            proc.terminate()  # `ip netns exec` execs python: this is the agent itself
            L.end_process(proc)
            self._log.close()
            out = self.output()
            if proc.returncode != 0 or "natgw-ha: stopping" not in out:
                raise AssertionError(f"agent {self.me['name']} did not stop cleanly on SIGTERM "
                                     f"(exit {proc.returncode}):\n{out}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def mark(self) -> int:
        return len(self.output())

    def wait_for(self, text: str, timeout: float, start: int = 0) -> bool:
        """Wait for `text` in the log from offset `start` (a mark() taken before what should cause it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output()[start:]:
                return True
            time.sleep(0.05)
        return False

    def run_once(self, *args: str) -> subprocess.CompletedProcess:
        return L.ns_exec(self.me["ns"], ["/usr/bin/python3", str(AGENT), "--config", str(self.cfg), *args],
                         timeout=30)


class HighAvailability(unittest.TestCase):
    lab: L.Lab

    @classmethod
    def setUpClass(cls) -> None:
        reason = L.skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        if L.dataplane() != "dpdk":
            raise unittest.SkipTest("natgw-specific (two natgw instances and their health checks): "
                                    "NATGW_LAB_DATAPLANE=kernel runs Linux in natgw's place")
        cls.lab = L.Lab(mode="nat", ha=True)
        cls.addClassCleanup(cls.lab.down)
        cls.lab.up()
        for me in (A, B):
            me["config"] = L.derive_config(BASE_CONFIG, Path(cls.lab.logdir) / f"natgw-{me['name']}.toml",
                                           lambda c, me=me: cls.edit_config(c, me))
        cls.failover_times: dict[str, float] = {}

    @staticmethod
    def edit_config(c: dict, me: dict) -> None:
        # Two DPDK processes side by side: a file prefix each; health (and metrics) on every address of
        # the namespace, so the peer reaches it over the management link.
        c["dataplane"]["eal"] = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf",
                                 "--file-prefix", f"natgw-ha-{me['name']}"]
        for itf, ifname in zip(c["interface"], me["ifs"]):
            itf["device"] = re.sub(r"iface=[^,]+", f"iface={ifname}", itf["device"])
            itf["address"] = f"{me[itf['name']]}/24"
        c["metrics"]["listen"] = "0.0.0.0:9100"
        c["control"]["socket"] = f"/run/natgw-lab/natgw-{me['name']}.sock"

    @classmethod
    def tearDownClass(cls) -> None:
        for how, t in cls.failover_times.items():
            print(f"failover time ({how}): {t:.2f} s", flush=True)
        cls.lab.down()

    def setUp(self) -> None:
        L.ns_exec(TGW_NS, ["ip", "route", "replace", "default", "via", A["inside"]], check=True)
        self.natgw = {}
        for me in (A, B):
            n = self.lab.start_natgw(me["config"], ns=me["ns"])
            self.addCleanup(self.end_natgw, n)
            self.natgw[me["name"]] = n
        self.agents = {}
        for me, peer in ((A, B), (B, A)):
            ag = Agent(me, peer, self.lab.logdir).start()
            self.addCleanup(ag.stop)
            self.agents[me["name"]] = ag
        for (name, ag), peer in zip(self.agents.items(), (B, A)):
            for what in ("this instance (http://127.0.0.1:9100/healthz): healthy",
                         f"peer (http://{peer['mgmt']}:9100/healthz): healthy"):
                self.assertTrue(ag.wait_for(what, 15), f"agent {name} never said '{what}':\n{ag.output()}")
        # Traffic flows through A, SNATed to A's outside address.
        src = None
        for _ in range(5):
            src = seen_source()
            if src:
                break
        self.assertEqual(src, A["internet"], "traffic does not leave by natgw A before the test")

    def end_natgw(self, n: "L.Natgw") -> None:
        if n.running():
            os.kill(n.pid, signal.SIGCONT)  # a SIGSTOPped natgw could not take its SIGTERM
        n.stop()

    def freeze_worker(self, n: "L.Natgw") -> ThreadFreeze:
        tid = thread_named(n.pid, f"rte-worker-{WORKER_LCORE}") or thread_named(n.pid, f"lcore-worker-{WORKER_LCORE}")
        self.assertIsNotNone(tid, f"natgw pid {n.pid} has no thread for lcore {WORKER_LCORE}")
        f = ThreadFreeze(tid)
        try:
            f.freeze()
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                self.skipTest(f"cannot freeze a thread here ({e})")
            raise
        self.addCleanup(f.release)
        return f

    def failover(self, how: str, t_fail: float) -> float:
        """After A failed at t_fail (time.time()): new flows until one leaves by B; returns the time."""
        r = L.ns_exec(CLIENT_NS, ["/usr/bin/python3", "-c", _PROBER, INET_ADDR, "7", B["internet"],
                                  str(FAILOVER_LIMIT + 10)], timeout=FAILOVER_LIMIT + 30)
        res = json.loads(r.stdout or "{}")
        b = self.agents["b"].output()
        self.assertEqual(r.returncode, 0, f"no new flow through B within {FAILOVER_LIMIT + 10:.0f} s: {res}\n"
                                          f"agent b:\n{b}")
        took = res["t"] - t_fail
        print(f"\nfailover ({how}): {took:.2f} s from the failure to the first new flow through B "
              f"({res['tries']} new flows tried: {res['seen']})", flush=True)
        self.failover_times[how] = took
        self.assertRegex(b, r"TAKING OVER \(command\): peer failed \d+ checks in a row")
        self.assertEqual(tgw_default(), B["inside"])
        self.assertLessEqual(took, FAILOVER_LIMIT, f"slower than the configured checks allow:\n{b}")
        # The server sees B's outside address, for UDP and for a TCP connection.
        self.assertEqual(seen_source(), B["internet"])
        c = curl(CLIENT_NS, f"http://{INET_ADDR}/ip")
        self.assertEqual(c.stdout.strip(), f"inet {B['internet']}", c.stderr)
        self.assertNotIn("TAKING OVER", self.agents["a"].output(), "A's agent took over from B")
        return took

    # ---------------------------------------------------------------------------------------------
    def test_a_healthy_pair_is_never_taken_over_from(self):
        # What counts is that nothing moved: not that no single check was ever late (a loaded machine).
        end = time.monotonic() + 2 * FAILURES * INTERVAL
        while time.monotonic() < end:
            self.assertEqual(tgw_default(), A["inside"], "the route moved from a healthy A")
            time.sleep(0.2)
        self.assertEqual(seen_source(), A["internet"])
        for name, ag in self.agents.items():
            self.assertNotIn("TAKING OVER", ag.output(), f"agent {name}")
        r = self.agents["b"].run_once("--check")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "self http://127.0.0.1:9100/healthz: ok\n"
                                   f"peer http://{A['mgmt']}:9100/healthz: ok\n")
        h = L.natgwctl("health", socket="/run/natgw-lab/natgw-a.sock")
        self.assertEqual((h.returncode, h.stdout), (0, "ok\n"), h.stderr)

    def test_sigkill_moves_new_flows_to_b(self):
        t = time.time()
        os.kill(self.natgw["a"].pid, signal.SIGKILL)
        self.failover("SIGKILL", t)
        self.assertIn("Connection refused", self.agents["b"].output())
        # A's agent sees its own natgw gone and never takes over.
        self.assertIn("this instance (http://127.0.0.1:9100/healthz): UNHEALTHY", self.agents["a"].output())

    def test_sigstop_moves_new_flows_to_b_and_they_stay(self):
        n = self.natgw["a"]
        t = time.time()
        os.kill(n.pid, signal.SIGSTOP)
        self.failover("SIGSTOP", t)
        self.assertRegex(self.agents["b"].output(), r"failed check 1/3: no answer: .*timed out")
        mark = self.agents["a"].mark()
        os.kill(n.pid, signal.SIGCONT)
        self.assertTrue(self.agents["b"].wait_for("healthy again: it stays standby", 10), self.agents["b"].output())
        self.assertTrue(self.agents["a"].wait_for("this instance (http://127.0.0.1:9100/healthz): healthy", 10, mark),
                        self.agents["a"].output())
        time.sleep(FAILURES * INTERVAL + 1)  # A is healthy again: nothing moves back on its own
        self.assertEqual(tgw_default(), B["inside"])
        self.assertEqual(seen_source(), B["internet"])
        self.assertNotIn("TAKING OVER", self.agents["a"].output())
        self.assertEqual(self.agents["b"].output().count("TAKING OVER"), 1)
        # The operator's failback: A's agent --once.
        r = self.agents["a"].run_once("--once")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(tgw_default(), A["inside"])
        self.assertEqual(seen_source(), A["internet"])

    def test_a_stalled_worker_makes_a_unhealthy_and_b_takes_over(self):
        n = self.natgw["a"]
        t = time.time()
        freeze = self.freeze_worker(n)
        end = time.monotonic() + 5  # the stall monitor checks every 0.5 s: a stall of 0.5-1 s is seen
        while True:
            h = L.natgwctl("health", socket="/run/natgw-lab/natgw-a.sock")
            if h.returncode == 1 or time.monotonic() >= end:
                break
            time.sleep(0.1)
        self.assertEqual(h.returncode, 1, h.stdout + h.stderr)
        self.assertRegex(h.stdout, rf"^unhealthy\nworker 0 \(lcore {WORKER_LCORE}\) made no progress for [0-9.]+ s\n$")
        r = L.ns_exec(NAT2_NS, ["curl", "-s", "-i", "-m", "2", f"http://{A['mgmt']}:9100/healthz"])
        self.assertIn("HTTP/1.0 503 Service Unavailable", r.stdout)
        self.failover("stalled worker", t)
        self.assertRegex(self.agents["b"].output(), r"failed check 1/3: HTTP 503: worker 0 \(lcore 1\) made no "
                                                    r"progress for [0-9.]+ s")
        self.assertRegex(n.output(), r"natgw: health: unhealthy: worker 0 \(lcore 1\) made no progress")
        mark = self.agents["a"].mark()
        freeze.release()
        self.assertTrue(self.agents["a"].wait_for("this instance (http://127.0.0.1:9100/healthz): healthy", 10, mark),
                        self.agents["a"].output())
        self.assertIn("natgw: health: ok again", n.output())
        self.assertEqual(tgw_default(), B["inside"])

    def test_an_unhealthy_instance_does_not_take_over(self):
        freeze = self.freeze_worker(self.natgw["b"])
        self.assertTrue(self.agents["b"].wait_for("this instance (http://127.0.0.1:9100/healthz): UNHEALTHY", 5),
                        self.agents["b"].output())
        os.kill(self.natgw["a"].pid, signal.SIGKILL)
        self.assertTrue(self.agents["b"].wait_for("but this instance is unhealthy too", FAILOVER_LIMIT),
                        self.agents["b"].output())
        time.sleep(2 * INTERVAL)
        self.assertEqual(tgw_default(), A["inside"], "B took over while unhealthy")
        self.assertNotIn("TAKING OVER", self.agents["b"].output())
        # B recovers while A is still dead: now it takes over.
        t = time.time()
        freeze.release()
        self.failover("B recovering while A is dead", t)


if __name__ == "__main__":
    L.main()

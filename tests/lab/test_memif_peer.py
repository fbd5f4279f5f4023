#!/usr/bin/python3
"""natgw survives its memif peers going away (and coming back), under traffic and idle.

DPDK 22.11's memif PMD unmaps a peer's rings from the EAL interrupt thread as soon as the peer's socket
closes, with no handshake with the worker polling them (memif_disconnect: clear CONNECTED, then
memif_free_regions). Without natgw's unmap guard (src/natgw/unmap_guard.cpp) a worker inside
rte_eth_rx_burst at that moment read the unmapped ring and natgw died of SIGSEGV (3 of 6 benchmark runs).

    natgw: two memif ports (role=server, file sockets, 4096-slot rings), NAT, one worker on CPU 1
    peer:  natgw-trafgen (role=client, CPU 0), started and stopped again and again (12 times):
           test_peer_exits_after_full_load   a 1 s full-load trial (256 flows, both directions checked),
                                             then the peer exits
           test_peer_killed_at_full_load     SIGKILL while it sends at full load
    after each exit natgw still runs; then one more trial passes through the same natgw, natgw stops on
    SIGINT with exit 0 and its final counters, and says its unmap guard waited at each disconnect.
           test_restart_after_natgw_was_killed   natgw SIGKILLed leaves its socket files; a new natgw
                                                 removes them (nobody listens) and carries traffic
    natgw as the memif client (MemifServerRestarts): the server peer leaves, is killed at full load and
    comes back three times; natgw restarts its client ports until they connect, and traffic passes each time.

Needs natgw and natgw-trafgen (NATGW_BIN, NATGW_TRAFGEN_BIN) and the memif PMD; skips (77) otherwise.
Two busy-polling processes: run it alone (meson: is_parallel false).
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

SKIP_EXIT = 77
NATGW = os.environ.get("NATGW_BIN", "build/src/natgw/natgw")
TRAFGEN = os.environ.get("NATGW_TRAFGEN_BIN", "build/perf/harness/natgw-trafgen")
CYCLES = int(os.environ.get("NATGW_MEMIF_CYCLES", "12"))


def memif_pmd() -> bool:
    import glob
    return bool(glob.glob("/usr/lib/*/dpdk/pmds-*/librte_net_memif.so*"))


class MemifNatgw(unittest.TestCase):
    """natgw on two memif ports and natgw-trafgen as its peer; no tests of its own. Each test gets its
    own natgw; each ends by stopping it with SIGINT (exit 0, final counters)."""

    NATGW_ROLE, PEER_ROLE = "server", "client"

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="natgw-memif-")
        self.work = w = Path(self.tmp.name)
        (w / "natgw.toml").write_text(f"""
[dataplane]
workers = 1
eal = ["--no-huge", "-m", "768", "--no-shconf", "--no-pci", "--file-prefix", "ngw-memif-dut-{os.getpid()}",
       "--lcores", "0@0,1@1", "--log-level", "error"]
[[interface]]
name = "inside"
device = "net_memif0,role={self.NATGW_ROLE},id=0,rsize=12,socket={w}/a.sock,socket-abstract=no"
address = "10.0.1.10/24"
[[interface]]
name = "internet"
device = "net_memif1,role={self.NATGW_ROLE},id=0,rsize=12,socket={w}/b.sock,socket-abstract=no"
address = "10.0.3.10/24"
[[route]]
prefix = "0.0.0.0/0"
via = "10.0.3.1"
interface = "internet"
[[route]]
prefix = "192.168.0.0/16"
via = "10.0.1.1"
interface = "inside"
[[snat]]
from = ["192.168.0.0/16"]
[control]
socket = "{w}/natgw.sock"
""")
        self.log = open(w / "natgw.log", "w+")
        self.natgw = None
        self.addCleanup(self.cleanup)  # also when setUp fails: no natgw left polling
        if self.NATGW_ROLE == "server":
            self.start_natgw()

    def start_natgw(self):
        self.log.seek(0)
        self.log.truncate()
        self.natgw = subprocess.Popen(["stdbuf", "-oL", "-eL", NATGW, "--config", str(self.work / "natgw.toml")],
                                      stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while "natgw: running" not in self.output():
            if self.natgw.poll() is not None or time.time() > deadline:
                self.fail(f"natgw did not start (exit {self.natgw.returncode}):\n{self.output()}")
            time.sleep(0.2)

    def cleanup(self):
        if self.natgw and self.natgw.poll() is None:
            self.natgw.kill()
            self.natgw.wait()
        self.log.close()
        if os.environ.get("NATGW_KEEP_LOGS"):
            print(f"logs kept in {self.work}")
        else:
            self.tmp.cleanup()

    def output(self) -> str:
        return (self.work / "natgw.log").read_text()

    def peer(self, *args: str) -> list[str]:
        w = self.work
        return [TRAFGEN, "--no-huge", "-m", "512", "--no-shconf", "--no-pci",
                "--file-prefix", f"ngw-memif-gen-{os.getpid()}", "--lcores", "0@0", "--log-level", "error",
                f"--vdev=net_memif0,role={self.PEER_ROLE},id=0,rsize=12,socket={w}/a.sock,socket-abstract=no",
                f"--vdev=net_memif1,role={self.PEER_ROLE},id=0,rsize=12,socket={w}/b.sock,socket-abstract=no",
                "--", "--mode", "nat", "--flows", "256", "--proto", "mix", "--json", *args]

    def assert_alive(self, after: str):
        time.sleep(0.5)  # natgw's interrupt thread handles the disconnect, asynchronously
        rc = self.natgw.poll()
        if rc is not None:
            self.fail(f"natgw died (exit {rc}) after {after}:\n{self.output()[-2000:]}")

    def trial(self, what: str, *args: str) -> dict:
        r = subprocess.run(self.peer("--duration", "1", "--warmup-rate", "100000", *args),
                           capture_output=True, text=True, timeout=120)
        return self.assert_passed(r.returncode, r.stdout, r.stderr, what)

    def assert_passed(self, rc: int, out: str, err: str, what: str) -> dict:
        """The peer's trial: traffic both ways, every packet at B with natgw's outside address."""
        self.assertEqual(rc, 0, f"{what}: natgw-trafgen failed:\n{out}\n{err}\n{self.output()[-1500:]}")
        full = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])["full"]
        self.assertGreater(full["in2out_recv_pps"], 0, what)
        self.assertGreater(full["out2in_recv_pps"], 0, what)
        self.assertEqual(full["bad"], 0, what)
        return full

    def stop_natgw(self) -> str:
        self.natgw.send_signal(signal.SIGINT)
        self.assertEqual(self.natgw.wait(timeout=30), 0, self.output()[-2000:])
        out = self.output()
        self.assertIn("natgw: final counters", out)
        return out

    def assert_guard_waited(self, out: str, disconnects: int):
        # Each disconnect unmaps the peer's regions of both ports from the interrupt thread.
        m = re.search(r"natgw: (\d+) unmap\(s\) by the interrupt thread waited for the workers", out)
        self.assertIsNotNone(m, "the unmap guard never waited: did the peers' exits reach natgw?")
        self.assertGreaterEqual(int(m.group(1)), 2 * disconnects)


class MemifPeer(MemifNatgw):
    """natgw as the memif server; its client peers leave, are killed, natgw itself is killed."""

    def test_peer_exits_after_full_load(self):
        for i in range(CYCLES):
            self.trial(f"trial {i + 1}")  # full load until the peer exits
            self.assert_alive(f"the peer's exit #{i + 1}")
        self.trial("after the reconnects", "--rate", "50000")
        self.assert_guard_waited(self.stop_natgw(), CYCLES + 1)

    def test_peer_killed_at_full_load(self):
        for i in range(CYCLES):
            p = subprocess.Popen(["stdbuf", "-oL", *self.peer("--duration", "30", "--warmup-rate", "100000")],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                for line in p.stdout:  # the warm-up's line: the full-load trial starts now
                    if line.startswith("warmup"):
                        break
                else:
                    self.fail(f"peer #{i + 1} ended before its warm-up finished (exit {p.wait()})")
                time.sleep(0.5)
            finally:
                p.kill()
                p.wait()
                p.stdout.close()
            self.assert_alive(f"SIGKILL of the peer #{i + 1} at full load")
        self.trial("after the reconnects", "--rate", "50000")
        self.assert_guard_waited(self.stop_natgw(), CYCLES + 1)

    def test_restart_after_natgw_was_killed(self):
        # SIGKILL leaves natgw's listening socket files behind; the PMD cannot listen there again,
        # so natgw removes a memif socket file nobody listens on before it probes the port.
        self.trial("before", "--rate", "50000")
        self.natgw.kill()
        self.natgw.wait()
        self.assertTrue((self.work / "a.sock").is_socket() and (self.work / "b.sock").is_socket())
        self.start_natgw()
        self.assertIn(f"removed {self.work}/a.sock, a memif socket nobody listened on", self.output())
        self.trial("after the restart", "--rate", "50000")
        self.stop_natgw()
        self.assertFalse((self.work / "a.sock").exists(), "a clean stop removes its socket files")


class MemifServerRestarts(MemifNatgw):
    """natgw as the memif client: DPDK 22.11's client connects only when its port starts, so natgw
    restarts a client port whose server went away, once a second, until the server is back."""

    NATGW_ROLE, PEER_ROLE = "client", "server"

    def start_peer(self) -> subprocess.Popen:
        for f in ("a.sock", "b.sock"):  # the last server's files (a killed server leaves them)
            (self.work / f).unlink(missing_ok=True)
        return subprocess.Popen(self.peer("--duration", "1", "--warmup-rate", "100000", "--rate", "50000"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish_peer(self, p: subprocess.Popen, what: str):
        out, err = p.communicate(timeout=120)
        self.assert_passed(p.returncode, out, err, what)

    def test_client_reconnects_to_restarted_servers(self):
        p = self.start_peer()
        time.sleep(1.5)  # the server listens before natgw's ports start (they connect once, at start)
        self.start_natgw()
        self.finish_peer(p, "the first server")
        for i in range(3):
            killed = self.start_peer() if i == 1 else None
            if killed:  # one server dies at full load instead of leaving after its trial
                time.sleep(2)
                killed.kill()
                killed.communicate()
            self.assert_alive(f"server #{i + 1} left")
            self.finish_peer(self.start_peer(), f"server #{i + 2}, natgw reconnected")
        out = self.stop_natgw()
        self.assertIn("inside: memif server gone; reconnecting every second", out)
        self.assertGreaterEqual(out.count("inside: memif reconnected"), 3)


if __name__ == "__main__":
    for exe in (NATGW, TRAFGEN):
        if not os.access(exe, os.X_OK):
            print(f"SKIP: {exe} not built", flush=True)
            sys.exit(SKIP_EXIT)
    if not memif_pmd():
        print("SKIP: DPDK memif PMD not installed", flush=True)
        sys.exit(SKIP_EXIT)
    unittest.main(verbosity=2)

#!/usr/bin/python3
"""End to end: natgw in AF_XDP mode sharing its interface with the kernel (interface.xdp_steering).

The inside ENI-like veth (xd-eni) carries both the host's address and natgw's; natgw_steer.bpf.o (loaded
by the af_xdp PMD through its xdp_prog devarg, its maps filled by natgw) sends what is addressed to the
host to the kernel and the rest to natgw. The endpoint side is a second interface natgw has to itself
(af_xdp without steering), as on an instance whose primary ENI is shared and whose second ENI is natgw's:

    xd-cli 192.168.10.2 ── xd-vpc (VPC router + TGW) ── 10.0.1.1 ──── xd-eni ─┐ xd-host: host 10.0.1.5 (kernel)
                           iif xd-vpc-cli: 0.0.0.0/0 via 10.0.1.10           │  natgw inside 10.0.1.10 (AF_XDP)
                                                                             │  natgw endpoint 10.0.2.10
    xd-srv 10.0.2.1, serves 198.51.100.10 to 10.0.2.10 only ───────────── xd-ep ┘  (AF_XDP, natgw only)

A second layout (XdpOneEniLab) is the small instance with a single ENI: natgw has only xd-eni, with
xdp_steering and one_armed (config/ec2-af-xdp-one-eni.toml), and reaches the server through the VPC router,
as on AWS where the subnet's route table sends S3/internet traffic on and the TGW brings on-prem traffic in:

    xd-cli 192.168.10.2 ── xd-vpc (VPC router + TGW) ── 10.0.1.1 ──── xd-eni ── xd-host: host 10.0.1.5 (kernel)
                           iif xd-vpc-cli: 0.0.0.0/0 via 10.0.1.10             natgw 10.0.1.10 (AF_XDP, one-armed)
                           main: 198.51.100.10 via 10.0.2.2
                                 └─ 10.0.2.1 ── xd-srv 10.0.2.2, serves 198.51.100.10 to 10.0.1.10 only
                                                (routes back 10.0.1.0/24 only: no route to 192.168.0.0/16)

Checked: SSH-like TCP to the host address and replies to connections the host makes (its ephemeral ports,
like SSM/metadata) reach the kernel while ICMP, UDP and TCP from the client are translated by natgw; the
program's counters agree; when natgw is killed the host keeps working (bpf_redirect_map falls back to the
kernel) and transit stops (the host does not forward); natgw restarts over the stale program; a clean stop
removes the program. One ENI: the same, with client traffic entering and leaving natgw by xd-eni and
source-NATed to 10.0.1.10. Both classes use the namespaces xd-* in turn (unittest runs one class after the
other; each builds its own topology and removes it); every process and namespace is removed at the end,
also on failure.

Needs root, AF_XDP sockets and XDP on veth; exits 77 (skipped) with the reason otherwise.
Environment (set by tests/xdp/meson.build): NATGW_BIN, NATGW_XDP_OBJECT, NATGW_XDP_TOOL, NATGW_LAB_LOGDIR.
Run lab things under the lab lock:  flock /tmp/natgw-busy.lock meson test -C build --suite xdp
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

SRC = Path(os.environ.get("NATGW_SRC") or Path(__file__).resolve().parents[2])
NATGW = Path(os.environ.get("NATGW_BIN") or SRC / "build/src/natgw/natgw")
OBJECT = Path(os.environ.get("NATGW_XDP_OBJECT") or SRC / "build/lib/xdp/natgw_steer.bpf.o")
TOOL = Path(os.environ.get("NATGW_XDP_TOOL") or SRC / "build/lib/xdp/natgw-xdp")
NATGWCTL = Path(os.environ.get("NATGWCTL_BIN") or NATGW.parent.parent / "natgwctl" / "natgwctl")
SKIP = 77

HOST_NS, VPC_NS, CLI_NS, SRV_NS = "xd-host", "xd-vpc", "xd-cli", "xd-srv"
NAMESPACES = (HOST_NS, VPC_NS, CLI_NS, SRV_NS)
ENI, EP = "xd-eni", "xd-ep"       # the shared interface and natgw's own, both in xd-host
HOST_ADDR, NATGW_ADDR, VPC_ADDR = "10.0.1.5", "10.0.1.10", "10.0.1.1"
NATGW_EP_ADDR, SRV_LINK_ADDR = "10.0.2.10", "10.0.2.1"
CLIENT_ADDR, SERVER_ADDR = "192.168.10.2", "198.51.100.10"
SSH_PORT, SSM_PORT, UDP_PORT, TCP_PORT = 22, 8443, 5353, 8080

NATGW_CONFIG = f"""
[dataplane]
workers = 1
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf", "--file-prefix", "natgw-xdp-lab"]

[[interface]]
name = "inside"
device = "net_af_xdp0,iface={ENI}"      # natgw adds xdp_prog=<natgw_steer.bpf.o>
address = "{NATGW_ADDR}/24"
mtu = 1500
xdp_steering = true                     # host addresses: the kernel's on {ENI} ({HOST_ADDR})

[[interface]]
name = "endpoint"
device = "net_af_xdp1,iface={EP}"       # natgw's alone: DPDK's default XDP program takes every frame
address = "{NATGW_EP_ADDR}/24"
mtu = 1500

[[route]]
prefix = "198.51.100.0/24"
via = "{SRV_LINK_ADDR}"
interface = "endpoint"

[[route]]
prefix = "192.168.0.0/16"
via = "{VPC_ADDR}"
interface = "inside"

[[snat]]
from = ["192.168.0.0/16"]

[control]
socket = "@SOCK@"
"""

# The single-ENI layout: natgw has xd-eni only; the server sits behind the VPC router.
SRV_ROUTER_ADDR, SRV_HOST_ADDR = "10.0.2.1", "10.0.2.2"
NATGW_POOL_ADDR = "10.0.1.11"
POOL_RULE = f"""[[snat]]                                # first: the /16 below covers it
from = ["192.168.20.0/24"]
to = ["{NATGW_POOL_ADDR}"]                    # a secondary IP of the ENI: its ARP goes to natgw
"""
ONE_ENI_CONFIG = f"""
[dataplane]
workers = 1
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf", "--file-prefix", "natgw-xdp-lab-one-eni"]

[[interface]]
name = "eni"
device = "net_af_xdp0,iface={ENI}"
address = "{NATGW_ADDR}/24"
mtu = 1500
xdp_steering = true                     # the host keeps {HOST_ADDR}
one_armed = true                        # translate flows that leave by {ENI}, where they came in

[[route]]
prefix = "0.0.0.0/0"
via = "{VPC_ADDR}"
interface = "eni"

{POOL_RULE}
[[snat]]
from = ["192.168.0.0/16"]

[control]
socket = "@SOCK@"
"""

# One process serving several sockets; each answers "<tag> <peer address>".
SERVER = r"""
import socket, sys, threading
def tcp(addr, port, tag):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((addr, port)); s.listen(16)
    while True:
        c, peer = s.accept()
        c.settimeout(5)
        try:
            c.recv(100); c.sendall(f"{tag} {peer[0]}\n".encode())
        except OSError:
            pass
        c.close()
def udp(addr, port, tag):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, port))
    while True:
        data, peer = s.recvfrom(2048); s.sendto(f"{tag} {peer[0]}".encode(), peer)
for spec in sys.argv[1:]:
    proto, addr, port, tag = spec.split(":")
    threading.Thread(target=tcp if proto == "tcp" else udp, args=(addr, int(port), tag), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

CLIENT = r"""
import socket, sys
proto, addr, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if proto == "tcp":
    s = socket.create_connection((addr, port), timeout=timeout); s.sendall(b"hello\n"); s.settimeout(timeout)
    print(s.recv(200).decode().strip())
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(timeout); s.sendto(b"hello", (addr, port))
    print(s.recvfrom(200)[0].decode().strip())
"""


def log(msg: str) -> None:
    print(f"xdp-lab: {msg}", file=sys.stderr, flush=True)


def run(args, timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess:
    args = ["sh", "-c", args] if isinstance(args, str) else [str(a) for a in args]
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        r = subprocess.CompletedProcess(args, 124, "", f"timed out after {timeout} s")
    if check and r.returncode != 0:
        raise RuntimeError(f"failed ({r.returncode}): {' '.join(args)}\n{r.stdout}{r.stderr}")
    return r


def nsx(ns: str, args, timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess:
    args = ["sh", "-c", args] if isinstance(args, str) else list(args)
    return run(["ip", "netns", "exec", ns, *args], timeout=timeout, check=check)


def request(ns: str, proto: str, addr: str, port: int, timeout: float = 3) -> str:
    """One TCP or UDP request from ns; the server's answer ("<tag> <peer>") or "" if none came."""
    r = nsx(ns, ["/usr/bin/python3", "-c", CLIENT, proto, addr, str(port), str(timeout)], timeout=timeout + 10)
    return r.stdout.strip() if r.returncode == 0 else ""


def pings(ns: str, dst: str, count: int = 3) -> int:
    r = nsx(ns, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", dst], timeout=30)
    m = re.search(r"(\d+) received", r.stdout)
    return int(m.group(1)) if m else 0


# ------------------------------------------------------------------------------------------ topology
def topology_down() -> None:
    for ns in NAMESPACES:  # deleting a namespace removes its veths and the XDP program on xd-eni
        run(["ip", "netns", "del", ns])


def namespaces_and_links(links) -> None:
    """Fresh namespaces xd-* joined by the veth pairs (ns_a, a, ns_b, b)."""
    for ns in NAMESPACES:
        run(["ip", "netns", "add", ns], check=True)
        nsx(ns, "ip link set lo up; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6", check=True)
    for ns_a, a, ns_b, b in links:
        run(["ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b], check=True)


def topology_up() -> None:
    topology_down()
    links = [(HOST_NS, ENI, VPC_NS, "xd-vpc-eni"), (CLI_NS, "xd-cli0", VPC_NS, "xd-vpc-cli"),
             (HOST_NS, EP, SRV_NS, "xd-srv0")]
    namespaces_and_links(links)
    sh = {
        HOST_NS: f"""ip addr add {HOST_ADDR}/24 dev {ENI}; ip link set {ENI} up; ip link set {EP} up
                     ip route add default via {VPC_ADDR}
                     echo 0 > /proc/sys/net/ipv4/ip_forward""",  # like an EC2 host: transit is not forwarded
        VPC_NS: f"""ip addr add {VPC_ADDR}/24 dev xd-vpc-eni; ip addr add 192.168.10.1/24 dev xd-vpc-cli
                    for i in xd-vpc-eni xd-vpc-cli; do ip link set $i up; ethtool -K $i tx off >/dev/null; done
                    echo 1 > /proc/sys/net/ipv4/ip_forward
                    for i in all default xd-vpc-eni xd-vpc-cli; do echo 0 > /proc/sys/net/ipv4/conf/$i/rp_filter; done
                    ip rule add iif xd-vpc-cli lookup 100 pref 100
                    ip route add default via {NATGW_ADDR} dev xd-vpc-eni table 100""",  # TGW route table
        CLI_NS: f"""ip addr add {CLIENT_ADDR}/24 dev xd-cli0; ip link set xd-cli0 up; ethtool -K xd-cli0 tx off >/dev/null
                    ip route add default via 192.168.10.1""",
        SRV_NS: f"""ip addr add {SRV_LINK_ADDR}/24 dev xd-srv0; ip link set xd-srv0 up; ethtool -K xd-srv0 tx off >/dev/null
                    ip addr add {SERVER_ADDR}/32 dev lo
                    nft -f - <<'EOF'
table ip only_natgw {{
  chain input {{ type filter hook input priority 0; policy drop;
    iif lo accept
    ip saddr {NATGW_EP_ADDR} accept
  }}
}}
EOF""",  # like the S3 endpoint: only natgw's address is served (and known)
    }
    for ns, script in sh.items():
        nsx(ns, "set -e\n" + script, check=True)


def one_eni_topology_up() -> None:
    """The single-ENI layout (same namespaces as topology_up, so topology_down removes it)."""
    topology_down()
    links = [(HOST_NS, ENI, VPC_NS, "xd-vpc-eni"), (CLI_NS, "xd-cli0", VPC_NS, "xd-vpc-cli"),
             (SRV_NS, "xd-srv0", VPC_NS, "xd-vpc-srv")]
    namespaces_and_links(links)
    sh = {
        HOST_NS: f"""ip addr add {HOST_ADDR}/24 dev {ENI}; ip link set {ENI} up
                     ip route add default via {VPC_ADDR}
                     echo 0 > /proc/sys/net/ipv4/ip_forward""",
        VPC_NS: f"""ip addr add {VPC_ADDR}/24 dev xd-vpc-eni; ip addr add 192.168.10.1/24 dev xd-vpc-cli
                    ip addr add {SRV_ROUTER_ADDR}/24 dev xd-vpc-srv
                    for i in xd-vpc-eni xd-vpc-cli xd-vpc-srv; do ip link set $i up; ethtool -K $i tx off >/dev/null; done
                    echo 1 > /proc/sys/net/ipv4/ip_forward
                    for i in all default xd-vpc-eni xd-vpc-cli xd-vpc-srv; do
                      echo 0 > /proc/sys/net/ipv4/conf/$i/rp_filter; done
                    ip route add {SERVER_ADDR}/32 via {SRV_HOST_ADDR}          # subnet route table
                    ip rule add iif xd-vpc-cli lookup 100 pref 100
                    ip route add default via {NATGW_ADDR} dev xd-vpc-eni table 100""",  # TGW route table
        CLI_NS: f"""ip addr add {CLIENT_ADDR}/24 dev xd-cli0; ip link set xd-cli0 up; ethtool -K xd-cli0 tx off >/dev/null
                    ip route add default via 192.168.10.1""",
        SRV_NS: f"""ip addr add {SRV_HOST_ADDR}/24 dev xd-srv0; ip link set xd-srv0 up; ethtool -K xd-srv0 tx off >/dev/null
                    ip addr add {SERVER_ADDR}/32 dev lo
                    ip route add 10.0.1.0/24 via {SRV_ROUTER_ADDR}      # no route to 192.168.0.0/16, as in AWS
                    nft -f - <<'EOF'
table ip only_natgw {{
  chain input {{ type filter hook input priority 0; policy drop;
    iif lo accept
    ip saddr {NATGW_ADDR} accept
  }}
}}
EOF""",
    }
    for ns, script in sh.items():
        nsx(ns, "set -e\n" + script, check=True)


# ---------------------------------------------------------------------------------------- processes
class Proc:
    """A background process in a namespace, output in a log file; stopped by its own pid."""

    def __init__(self, ns: str, args: list[str], log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "stdbuf", "-oL", "-eL", *map(str, args)],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, mark: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if mark in self.output():
                return True
            if self.proc.poll() is not None:
                return mark in self.output()
            time.sleep(0.05)
        return False

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, XDP, AF_XDP)"
    for p, what in ((NATGW, "natgw"), (OBJECT, "natgw_steer.bpf.o"), (TOOL, "natgw-xdp")):
        if not p.exists():
            return f"{what} not built ({p})"
    for tool in ("ip", "ethtool", "nft", "ping", "stdbuf"):
        if not shutil.which(tool):
            return f"'{tool}' not found (scripts/deps.sh installs the lab's packages)"
    try:
        socket.socket(44, socket.SOCK_RAW, 0).close()  # AF_XDP
    except OSError as e:
        return f"the kernel has no AF_XDP sockets ({e})"
    # Can this kernel run our program on a veth? (native XDP on veth since 4.19; the verifier must accept it.)
    probe = f"xd-probe{os.getpid() % 10000}"
    try:
        run(["ip", "netns", "add", probe], check=True)
        nsx(probe, "ip link add xd-p0 type veth peer name xd-p1 && ip link set xd-p0 up && ip link set xd-p1 up",
            check=True)
        r = nsx(probe, [TOOL, "attach", "xd-p0", OBJECT, "--pin-dir", ""])
        if r.returncode != 0:
            return f"the kernel cannot attach natgw_steer to a veth: {(r.stdout + r.stderr).strip()}"
    except RuntimeError as e:
        return f"cannot build a probe namespace: {e}"
    finally:
        run(["ip", "netns", "del", probe])
    return None


# -------------------------------------------------------------------------------------------- tests
class _XdpLab(unittest.TestCase):
    """Topology, servers and helpers shared by the layouts; no tests of its own."""
    procs: list[Proc] = []
    CONFIG, CONFIG_NAME, NAT_SOURCE = NATGW_CONFIG, "natgw-xdp", NATGW_EP_ADDR
    TOPOLOGY = staticmethod(topology_up)

    @classmethod
    def setUpClass(cls) -> None:
        cls.logdir = Path(os.environ.get("NATGW_LAB_LOGDIR") or tempfile.mkdtemp(prefix="natgw-xdp-lab-"))
        cls.logdir.mkdir(parents=True, exist_ok=True)
        cls.config = cls.logdir / f"{cls.CONFIG_NAME}.toml"
        cls.config.write_text(cls.CONFIG.replace("@SOCK@", str(cls.logdir / f"{cls.CONFIG_NAME}.sock")))
        cls.procs = []
        try:
            cls.TOPOLOGY()  # inside the try: a half-built topology is removed too
            servers = [(HOST_NS, [f"tcp:{HOST_ADDR}:{SSH_PORT}:host-ssh"]),
                       (VPC_NS, [f"tcp:{VPC_ADDR}:{SSM_PORT}:vpc-ssm", f"udp:{VPC_ADDR}:53:vpc-dns"]),
                       (SRV_NS, [f"tcp:{SERVER_ADDR}:{TCP_PORT}:srv-tcp", f"udp:{SERVER_ADDR}:{UDP_PORT}:srv-udp"])]
            for ns, specs in servers:
                p = Proc(ns, ["/usr/bin/python3", "-c", SERVER, *specs], cls.logdir / f"{cls.CONFIG_NAME}-server-{ns}.log")
                cls.procs.append(p)
                if not p.wait_for("ready", 10):
                    raise RuntimeError(f"server in {ns} did not start:\n{p.output()}")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for p in cls.procs:
            p.stop(signal.SIGKILL if "natgw" not in str(p.log_path) else signal.SIGTERM)
        topology_down()

    # ---- helpers
    def start_natgw(self, name: str) -> Proc:
        p = Proc(HOST_NS, [NATGW, "--config", self.config], self.logdir / f"{self.CONFIG_NAME}-{name}.log")
        self.procs.append(p)
        if not p.wait_for("natgw: running", 60):
            p.stop(signal.SIGKILL)
            self.fail(f"natgw did not start (log {p.log_path}):\n{p.output()[-3000:]}")
        return p

    def stats(self) -> dict[str, int]:
        """natgw_steer's per-verdict packet counters on the shared interface (through the program's maps)."""
        r = nsx(HOST_NS, [TOOL, "stats", ENI, "--pin-dir", "", "--prometheus"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return {m.group(1): int(m.group(2)) for m in
                re.finditer(r'natgw_xdp_steer_packets_total\{[^}]*verdict="(\w+)"[^}]*\} (\d+)', r.stdout)}

    def attached(self) -> str:
        return nsx(HOST_NS, [TOOL, "status", ENI, "--pin-dir", ""]).stdout

    def assert_host_reachable(self, why: str) -> None:
        # SSH-like TCP to the host's address, from the VPC (an admin, or the SSM agent's peer).
        self.assertEqual(request(VPC_NS, "tcp", HOST_ADDR, SSH_PORT), f"host-ssh {VPC_ADDR}", why)
        # Connections the host makes itself: the replies come to ephemeral ports of the host's address.
        self.assertEqual(request(HOST_NS, "tcp", VPC_ADDR, SSM_PORT), f"vpc-ssm {HOST_ADDR}", why)
        self.assertEqual(request(HOST_NS, "udp", VPC_ADDR, 53), f"vpc-dns {HOST_ADDR}", why)
        self.assertEqual(pings(VPC_NS, HOST_ADDR), 3, why)

    def assert_nat_works(self) -> None:
        self.assertEqual(pings(CLI_NS, SERVER_ADDR), 3, "ICMP through natgw")
        self.assertEqual(request(CLI_NS, "udp", SERVER_ADDR, UDP_PORT), f"srv-udp {self.NAT_SOURCE}")
        self.assertEqual(request(CLI_NS, "tcp", SERVER_ADDR, TCP_PORT), f"srv-tcp {self.NAT_SOURCE}")


class XdpSteeringLab(_XdpLab):
    """natgw on the shared xd-eni (inside) and its own xd-ep (endpoint)."""

    # ---- the test: one sequence, since each step builds on the state the previous one left
    def test_shared_interface_lifecycle(self) -> None:
        # 0. Without natgw the client gets nowhere (the server only serves natgw's address, the host does
        #    not forward), and the host is reachable: the baseline the rest is compared with.
        self.assertEqual(pings(CLI_NS, SERVER_ADDR, count=1), 0, "the client reached the server without natgw")
        self.assert_host_reachable("host traffic before natgw started")

        # 1. natgw starts: the PMD attaches natgw_steer, natgw fills its maps from the kernel's addresses.
        natgw = self.start_natgw("natgw-1")
        self.assertIn(f"XDP steering on {ENI}", natgw.output())
        self.assertRegex(natgw.output(), rf"to the kernel: {re.escape(HOST_ADDR)};")
        status = self.attached()
        self.assertIn("'natgw_steer'", status)
        self.assertRegex(status, rf"host addresses \(kernel\): {re.escape(HOST_ADDR)}\n")
        self.assertRegex(status, rf"natgw addresses: +{re.escape(NATGW_ADDR)}\n")
        before = self.stats()

        # 2. NAT traffic flows through natgw while the host keeps its own traffic.
        self.assert_nat_works()
        self.assert_host_reachable("host traffic with natgw running")
        self.assertEqual(pings(VPC_NS, NATGW_ADDR), 3, "natgw answers ping on its own address")
        after = self.stats()
        d = {k: after[k] - before.get(k, 0) for k in after}
        log(f"steering counters while natgw runs: { {k: v for k, v in d.items() if v} }")
        # client -> server: 3 pings, 1 UDP, >= 3 TCP (SYN, data, ACK/FIN) arrive on xd-eni as transit
        self.assertGreaterEqual(d["xsk_transit"], 3 + 1 + 3, "client->server packets went to natgw")
        self.assertGreaterEqual(d["xsk_natgw"], 3, "pings to natgw's address went to natgw")
        # to the host: SSH-like TCP (>= 3), its own TCP and UDP replies (>= 2 + 1), 3 pings
        self.assertGreaterEqual(d["pass_host"], 3 + 3 + 3, "the host's traffic went to the kernel")
        self.assertEqual(d["fallback"], 0, "nothing meant for natgw fell back to the kernel while it ran")
        # natgw's own metrics carry the same counters (read from the maps on its control thread): at least
        # what the tool read just before (counters only grow), and the same verdicts.
        r = run([NATGWCTL, "--socket", self.logdir / f"{self.CONFIG_NAME}.sock", "metrics"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        scraped = {m.group(1): int(m.group(2)) for m in re.finditer(
            rf'natgw_xdp_steer_packets_total\{{interface="{ENI}",verdict="(\w+)"[^}}]*\}} (\d+)', r.stdout)}
        self.assertEqual(set(scraped), set(after), r.stdout[-2000:])
        for k, v in after.items():
            self.assertGreaterEqual(scraped[k], v, k)

        # 3. natgw is killed (no cleanup at all): the program stays, its sockets are gone, so frames for
        #    natgw fall back to the kernel; the host is unaffected and transit is not forwarded.
        natgw.stop(signal.SIGKILL)
        self.assertIn("'natgw_steer'", self.attached(), "the program outlives a killed natgw")
        before = self.stats()
        self.assert_host_reachable("host traffic after natgw was killed")
        self.assertEqual(pings(CLI_NS, SERVER_ADDR, count=2), 0, "transit must not flow without natgw")
        d = {k: v - before.get(k, 0) for k, v in self.stats().items()}
        self.assertGreaterEqual(d["fallback"], 2, "frames for natgw fell back to the kernel")
        self.assertEqual(d["xsk_transit"] + d["xsk_natgw"], 0)

        # 4. natgw restarts over the stale program (it removes it first: the PMD cannot attach over it).
        natgw = self.start_natgw("natgw-2")
        self.assertIn("removed a stale natgw_steer", natgw.output())
        self.assert_nat_works()
        self.assert_host_reachable("host traffic after natgw restarted")

        # 5. A clean stop removes the program: the interface is the kernel's alone again.
        self.assertEqual(natgw.stop(signal.SIGTERM), 0, natgw.output()[-2000:])
        self.assertIn("no XDP program attached", self.attached())
        self.assert_host_reachable("host traffic after natgw stopped")
        self.assertEqual(pings(CLI_NS, SERVER_ADDR, count=1), 0)


class XdpOneEniLab(_XdpLab):
    """natgw on the shared xd-eni only, one-armed: client traffic comes in and leaves by the same ENI."""
    CONFIG, CONFIG_NAME, NAT_SOURCE = ONE_ENI_CONFIG, "natgw-xdp-one-eni", NATGW_ADDR
    TOPOLOGY = staticmethod(one_eni_topology_up)

    def test_one_eni_one_armed(self) -> None:
        # 0. Baseline: nobody owns 10.0.1.10 yet, so the client's traffic goes nowhere; the host works.
        self.assertEqual(pings(CLI_NS, SERVER_ADDR, count=1), 0, "the client reached the server without natgw")
        self.assert_host_reachable("host traffic before natgw started")

        natgw = self.start_natgw("natgw")
        self.assertIn(f"XDP steering on {ENI}", natgw.output())
        self.assertRegex(natgw.output(), rf"to the kernel: {re.escape(HOST_ADDR)};")
        self.assertIn("'natgw_steer'", self.attached())
        before = self.stats()

        # 1. ICMP, UDP and TCP from the client come in by xd-eni and leave by it, translated to 10.0.1.10
        #    (the server accepts nothing else and has no route to 192.168.0.0/16); the host keeps working.
        self.assert_nat_works()
        self.assert_host_reachable("host traffic with natgw running")
        self.assertEqual(pings(VPC_NS, NATGW_ADDR), 3, "natgw answers ping on its own address")
        d = {k: v - before.get(k, 0) for k, v in self.stats().items()}
        log(f"one-ENI steering counters while natgw runs: { {k: v for k, v in d.items() if v} }")
        self.assertGreaterEqual(d["xsk_transit"], 3 + 1 + 3, "client->server packets went to natgw")
        # replies from the server come back to natgw's address (3 pings, 1 UDP, >= 3 TCP), plus 3 pings
        self.assertGreaterEqual(d["xsk_natgw"], 3 + 1 + 3 + 3, "replies to 10.0.1.10 went to natgw")
        self.assertGreaterEqual(d["pass_host"], 3 + 3 + 3, "the host's traffic went to the kernel")
        self.assertEqual(d["fallback"], 0, "nothing meant for natgw fell back to the kernel while it ran")

        # 2. A reload takes the pool address out of its rule. Sessions on it live on (README), so it stays
        #    natgw's: its ARP must still reach natgw, not the kernel, which does not own it.
        self.assertRegex(self.attached(), rf"natgw addresses: .*{re.escape(NATGW_POOL_ADDR)}")
        self.assertEqual(pings(VPC_NS, NATGW_POOL_ADDR), 3, "natgw answers on its pool address")
        text = self.config.read_text()
        self.config.write_text(text.replace(POOL_RULE, ""))
        self.assertNotIn(NATGW_POOL_ADDR, self.config.read_text())
        r = run([NATGWCTL, "--socket", self.logdir / f"{self.CONFIG_NAME}.sock", "reload"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.config.write_text(text)  # as it was, for a rerun
        self.assertRegex(self.attached(), rf"natgw addresses: .*{re.escape(NATGW_POOL_ADDR)}")
        run(["ip", "-n", VPC_NS, "neigh", "flush", "all"])  # ask ARP again
        self.assertEqual(pings(VPC_NS, NATGW_POOL_ADDR), 3, "ARP for a pool address taken out by a reload")
        self.assert_nat_works()

        # 3. A clean stop removes the program: the host keeps its access, transit stops.
        self.assertEqual(natgw.stop(signal.SIGTERM), 0, natgw.output()[-2000:])
        self.assertIn("no XDP program attached", self.attached())
        self.assert_host_reachable("host traffic after natgw stopped")
        self.assertEqual(pings(CLI_NS, SERVER_ADDR, count=1), 0, "transit must not flow without natgw")


def _on_signal(signum, frame) -> None:
    # meson's timeout: stop what we started and remove the namespaces before leaving.
    for p in XdpSteeringLab.procs + XdpOneEniLab.procs:
        if p.proc.poll() is None:
            p.proc.kill()
    topology_down()
    os._exit(128 + signum)


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    reason = skip_reason()
    if reason:
        print(f"SKIP: {reason}", flush=True)
        sys.exit(SKIP)
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()

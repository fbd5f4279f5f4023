"""natgw namespace lab for end-to-end tests (python stdlib + scapy only).

The lab itself is scripts/lab.sh (five network namespaces joined by veth pairs); this module drives it:

    with Lab(mode="forward") as lab:                       # lab.sh up ... ; always lab.sh down on exit
        natgw = lab.start_natgw("config/lab-forward.toml")  # ip netns exec ngw-nat $NATGW_BIN --config ...
        r = lab.ns_exec(CLIENT_NS, ["ping", "-c", "3", S3_ADDR])
        with lab.tcpdump(S3_NS, "s3-nat", "icmp") as cap:
            ...traffic...
        cap.packets                                         # scapy packets, read back with rdpcap

Environment:
    NATGW_BIN             the daemon (default: build/src/natgw/natgw under the source tree)
    NATGW_SRC             the source tree (default: two folders above this file)
    NATGW_LAB_DATAPLANE   "dpdk" (default: natgw on af_packet vdevs) or "kernel": Linux forwards (and
                          masquerades) in ngw-nat instead of natgw, to validate the tests themselves.
                          start_natgw() then applies the config's routes and [[snat]] to the kernel.
    NATGW_LAB_LOGDIR      where logs and pcaps go (default: a fresh /tmp/natgw-lab-XXXX, kept)

Cleanup: the lab is taken down on context exit, on exceptions, at interpreter exit (atexit) and on
SIGTERM/SIGHUP (meson's timeout), and only one lab runs at a time (a lock on /run/natgw-lab.lock).
Run a test file through main() so that a missing prerequisite exits 77, meson's "skipped".
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import unittest
from pathlib import Path

# --------------------------------------------------------------------------------------------- topology
CLIENT_NS, TGW_NS, NAT_NS, S3_NS, INET_NS = "ngw-client", "ngw-tgw", "ngw-nat", "ngw-s3", "ngw-inet"
NAMESPACES = (CLIENT_NS, TGW_NS, NAT_NS, S3_NS, INET_NS)
NAT2_NS = "ngw-nat2"  # the second natgw (B) of `lab.sh up --ha` (Lab(ha=True)); see scripts/lab.sh
CLIENT_ADDR = "192.168.10.2"
TGW_CLIENT_ADDR, TGW_NAT_ADDR = "192.168.10.1", "10.0.1.1"
NATGW_INSIDE, NATGW_ENDPOINT, NATGW_INTERNET = "10.0.1.10", "10.0.2.10", "10.0.3.10"
S3_LINK_ADDR, INET_LINK_ADDR = "10.0.2.1", "10.0.3.1"
S3_ADDR, INET_ADDR = "198.51.100.10", "203.0.113.10"
# veth names: (namespace, interface)
CLIENT_IF = (CLIENT_NS, "cli0")
TGW_CLIENT_IF, TGW_NAT_IF = (TGW_NS, "tgw-cli"), (TGW_NS, "tgw-nat")
NAT_INSIDE_IF, NAT_S3_IF, NAT_INET_IF = (NAT_NS, "nat-in"), (NAT_NS, "nat-s3"), (NAT_NS, "nat-inet")
S3_IF, INET_IF = (S3_NS, "s3-nat"), (INET_NS, "inet-nat")

SRC = Path(os.environ.get("NATGW_SRC") or Path(__file__).resolve().parents[2])
LAB_SH = SRC / "scripts" / "lab.sh"
LOCK_PATH = "/run/natgw-lab.lock"
READY_MARK = "natgw: running"
SKIP_EXIT = 77  # meson: test skipped


def natgw_bin() -> Path:
    p = Path(os.environ.get("NATGW_BIN") or "build/src/natgw/natgw")
    return p if p.is_absolute() else SRC / p


def dataplane() -> str:
    d = os.environ.get("NATGW_LAB_DATAPLANE", "dpdk")
    if d not in ("dpdk", "kernel"):
        raise ValueError(f"NATGW_LAB_DATAPLANE must be dpdk or kernel, not {d!r}")
    return d


_seq = itertools.count(1)  # unique log and pcap names within a run


def log(msg: str) -> None:
    print(f"natgwlab: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- skipping
class LabSkip(unittest.SkipTest):
    pass


def skip(reason: str):
    """Skip the current test (or class, from setUpClass)."""
    raise LabSkip(reason)


_skip_cache: list[str | None] = []


def skip_reason() -> str | None:
    """Why the lab cannot run here, or None."""
    if _skip_cache:
        return _skip_cache[0]
    reason = _probe()
    _skip_cache.append(reason)
    return reason


def _probe() -> str | None:
    if os.geteuid() != 0:
        return "not root: the lab creates network namespaces (run as root)"
    for tool in ("ip", "ethtool", "tcpdump", "nft", "curl", "ping", "flock", "stdbuf"):
        if not shutil.which(tool):
            return f"'{tool}' not found (scripts/deps.sh installs the lab's packages)"
    try:
        import scapy.all  # noqa: F401
    except ImportError as e:
        return f"scapy not importable by {sys.executable} ({e}); run with /usr/bin/python3"
    if not LAB_SH.exists():
        return f"{LAB_SH} not found (set NATGW_SRC)"
    probe = f"ngw-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"network namespaces unsupported: ip netns add: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    try:
        d = dataplane()
    except ValueError as e:
        return str(e)
    if d == "dpdk" and not os.access(natgw_bin(), os.X_OK):
        return (f"natgw binary {natgw_bin()} not found (build it, set NATGW_BIN, or set "
                "NATGW_LAB_DATAPLANE=kernel to run the tests against Linux)")
    return None


def main() -> None:
    """unittest.main() for a lab test file: exit 77 (skip) with a reason when the lab cannot run."""
    reason = skip_reason()
    if reason:
        print(f"SKIP: {reason}", flush=True)
        sys.exit(SKIP_EXIT)
    log(f"dataplane={dataplane()}" + (f" natgw={natgw_bin()}" if dataplane() == "dpdk" else ""))
    unittest.main(verbosity=2)


# ------------------------------------------------------------------------------------------ process exec
def _completed(args, rc, out, err) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(args, rc, out, err)


def run(cmd, timeout: float = 30, check: bool = False, input: str | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command (list, or a string for sh -c); text output. A timeout gives returncode 124."""
    args = ["sh", "-c", cmd] if isinstance(cmd, str) else [str(a) for a in cmd]
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        r = _completed(args, 124, out, err + f"\n[timed out after {timeout} s]")
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(args)}\n{r.stdout}{r.stderr}")
    return r


def ns_exec(ns: str, cmd, timeout: float = 30, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run cmd inside namespace ns (ip netns exec). cmd: a list, or a string run by sh -c."""
    args = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    return run(["ip", "netns", "exec", ns, *args], timeout=timeout, check=check, input=input)


def veth_counters(ns: str, ifname: str) -> dict[str, int]:
    """/sys/class/net/IF/statistics/* inside ns, e.g. {'rx_packets': 12, 'tx_bytes': 900, ...}."""
    r = ns_exec(ns, f"cd /sys/class/net/{ifname}/statistics && grep -H . *", check=True)
    out = {}
    for line in r.stdout.splitlines():
        name, _, value = line.partition(":")
        if value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out


def counters_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def ping(ns: str, dst: str, count: int = 3, interval: float = 0.2, wait: float = 2,
         ttl: int | None = None, size: int | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    cmd = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(wait)]
    if ttl is not None:
        cmd += ["-t", str(ttl)]
    if size is not None:
        cmd += ["-s", str(size)]
    return ns_exec(ns, [*cmd, dst], timeout=timeout)


def ping_received(r: subprocess.CompletedProcess) -> int:
    m = re.search(r"(\d+) received", r.stdout)
    return int(m.group(1)) if m else 0


def curl(ns: str, url: str, timeout: float = 10, extra: list[str] | None = None) -> subprocess.CompletedProcess:
    return ns_exec(ns, ["curl", "-sS", "--max-time", str(timeout), *(extra or []), url], timeout=timeout + 5)


_UDP_CLIENT = r"""
import socket, sys
addr, port, payload, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(timeout)
s.sendto(payload, (addr, port))
try:
    data, peer = s.recvfrom(65535)
except socket.timeout:
    sys.exit("udp: no reply")
sys.stdout.write(data.decode(errors="replace"))
"""


def udp_request(ns: str, addr: str, port: int, payload: str, timeout: float = 3) -> subprocess.CompletedProcess:
    """Send one UDP datagram from ns and print the reply (stdout); returncode 1 if none came."""
    return ns_exec(ns, ["/usr/bin/python3", "-c", _UDP_CLIENT, addr, str(port), payload, str(timeout)],
                   timeout=timeout + 10)


# -------------------------------------------------------------------------------------------- tcpdump
class Capture:
    """tcpdump on ns/ifname into a pcap. Use as a context manager around the traffic:

        with lab.tcpdump(S3_NS, "s3-nat", "icmp", count=4) as cap:
            ping(...)
        cap.packets   # after the block: waits up to `timeout` s for `count` packets, then stops

    Without count, it stops `settle` s after the block. Packets are scapy objects (rdpcap).
    """

    def __init__(self, ns: str, ifname: str, bpf: str = "", count: int | None = None,
                 timeout: float = 5.0, settle: float = 0.3, logdir: str | None = None):
        self.ns, self.ifname, self.bpf, self.count = ns, ifname, bpf, count
        self.timeout, self.settle = timeout, settle
        d = logdir or tempfile.mkdtemp(prefix="natgw-cap-")
        stem = f"{ns}-{ifname}-{time.strftime('%H%M%S')}-{next(_seq)}"
        self.pcap = os.path.join(d, stem + ".pcap")
        self.errlog = os.path.join(d, stem + ".tcpdump.log")
        self.proc: subprocess.Popen | None = None
        self._packets = None

    def start(self) -> "Capture":
        cmd = ["ip", "netns", "exec", self.ns, "tcpdump", "-i", self.ifname, "-n", "-U", "--immediate-mode",
               "-Z", "root", "-w", self.pcap]
        if self.count:
            cmd += ["-c", str(self.count)]
        if self.bpf:
            cmd.append(self.bpf)
        self._err = open(self.errlog, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._err, stdin=subprocess.DEVNULL)
        _registry.captures.add(self)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if "listening on" in Path(self.errlog).read_text(errors="replace"):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"tcpdump on {self.ns}/{self.ifname} did not start: "
                           f"{Path(self.errlog).read_text(errors='replace')}")

    def stop(self, wait_for_count: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if wait_for_count and self.count:
                try:
                    self.proc.wait(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(self.settle)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # flushes the pcap
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()
        _registry.captures.discard(self)

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(wait_for_count=exc[0] is None)

    @property
    def packets(self) -> list:
        if self._packets is None:
            from scapy.utils import rdpcap
            self._packets = list(rdpcap(self.pcap)) if os.path.getsize(self.pcap) > 0 else []
        return self._packets


def tcpdump_capture(ns: str, ifname: str, bpf: str = "", count: int | None = None, timeout: float = 5.0,
                    action=None, logdir: str | None = None) -> list:
    """Capture on ns/ifname while action() runs (if given); return the scapy packets.

    Returns when `count` packets were captured or `timeout` s after action() returned."""
    cap = Capture(ns, ifname, bpf, count=count, timeout=timeout, settle=timeout if not count else 0.3,
                  logdir=logdir)
    with cap:
        if action is not None:
            action()
    return cap.packets


# ---------------------------------------------------------------------------------------------- natgw
class NatgwError(RuntimeError):
    pass


class Natgw:
    """natgw running in ngw-nat: `ip netns exec ngw-nat $NATGW_BIN --config FILE ...`, output in a log."""

    def __init__(self, config: str | os.PathLike, extra_args=(), logdir: str = "/tmp",
                 ready_timeout: float = 60, env: dict[str, str | None] | None = None, ns: str = NAT_NS):
        self.ns = ns
        self.config = Path(config).resolve()
        self.extra_args = [str(a) for a in extra_args]
        self.env = env  # added to (or, with a None value, removed from) the test's environment
        self.log_path = Path(logdir) / f"natgw-{time.strftime('%H%M%S')}-{next(_seq)}-{self.config.stem}.log"
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    def start(self) -> "Natgw":
        if not self.config.exists():
            raise NatgwError(f"config {self.config} not found")
        # stdbuf: the marker line must reach the log file now, not when a stdio buffer fills.
        cmd = ["ip", "netns", "exec", self.ns, "stdbuf", "-oL", "-eL", str(natgw_bin()),
               "--config", str(self.config), *self.extra_args]
        self._log = open(self.log_path, "w")
        self._log.write(f"# {' '.join(cmd)}\n")
        self._log.flush()
        env = None
        if self.env:
            env = {k: v for k, v in {**os.environ, **self.env}.items() if v is not None}
            self._log.write("# environment: " + " ".join(f"{k}={v}" if v is not None else f"-{k}"
                                                        for k, v in self.env.items()) + "\n")
            self._log.flush()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env)
        _registry.natgws.add(self)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if READY_MARK in self.output():
                log(f"natgw pid {self.proc.pid} running with {self.config.name} (log {self.log_path})")
                return self
            if self.proc.poll() is not None:
                self._finish()
                raise NatgwError(f"natgw exited with {self.returncode} before '{READY_MARK}' "
                                 f"(log {self.log_path}):\n{self.tail()}")
            time.sleep(0.05)
        self.stop()
        raise NatgwError(f"natgw did not print '{READY_MARK}' within {self.ready_timeout} s "
                         f"(log {self.log_path}):\n{self.tail()}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.running():
            self.proc.send_signal(sig)

    def reload(self, how: str = "ctl", timeout: float = 10) -> "ReloadResult":
        """Reload the config file: how="ctl" runs `natgwctl reload` (exit status and output returned),
        how="sighup" sends SIGHUP and waits for natgw's log to say 'reloaded' or 'reload rejected'."""
        if how == "ctl":
            r = natgwctl("reload", timeout=timeout)
            return ReloadResult(r.returncode == 0, r.returncode, r.stdout + r.stderr)
        if how != "sighup":
            raise ValueError(f"reload how must be ctl or sighup, not {how!r}")
        mark = len(self.output())
        self.signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.output()[mark:]
            if "natgw: reloaded" in new:
                return ReloadResult(True, 0, new)
            if "natgw: reload rejected" in new:
                time.sleep(0.3)  # the error lines follow the headline
                return ReloadResult(False, 1, self.output()[mark:])
            time.sleep(0.05)
        return ReloadResult(False, 124, f"no reload message in the log within {timeout} s:\n"
                            + self.output()[mark:])

    def stop(self, term_timeout: float = 5) -> int | None:
        """SIGTERM, SIGKILL after term_timeout s. Returns the exit code; output() then holds the final
        counters natgw prints on exit."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=term_timeout)
            except subprocess.TimeoutExpired:
                log(f"natgw pid {self.proc.pid} ignored SIGTERM for {term_timeout} s: SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self._finish()
        return self.returncode

    def _finish(self) -> None:
        self.returncode = self.proc.returncode
        if not self._log.closed:
            self._log.write(f"# exit status {self.returncode}\n")
            self._log.close()
        _registry.natgws.discard(self)


def _route_prefixes(route: dict, base: Path) -> list[str]:
    if "prefix" in route:
        return [route["prefix"]]
    out = []
    for line in (base / route["prefix_list"]).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


class KernelNatgw(Natgw):
    """Stand-in for natgw when NATGW_LAB_DATAPLANE=kernel: Linux in ngw-nat does the forwarding.

    start() reads the same TOML and applies its [[route]]s (and [[snat]] as nftables masquerade) to the
    namespace's kernel and turns forwarding on; stop() turns it off again, as a stopped natgw would."""

    def start(self) -> "KernelNatgw":
        if not self.config.exists():
            raise NatgwError(f"config {self.config} not found")
        lines = [f"# kernel stand-in for natgw, config {self.config}"]
        lines += self._apply()
        ns_exec(NAT_NS, "echo 1 > /proc/sys/net/ipv4/ip_forward", check=True)
        lines.append(READY_MARK + " (kernel)")
        self.log_path.write_text("\n".join(lines) + "\n")
        self._running = True
        self.generation = 1
        log(f"kernel stand-in for natgw applied {self.config.name} (log {self.log_path})")
        return self

    def _apply(self) -> list[str]:
        """Apply the config file to ngw-nat's kernel: routes (replaced one by one, stale ones deleted, so a
        reload never leaves a gap), [[snat]] + [[acl]] as one nftables transaction, [timeouts] as conntrack
        sysctls. Returns log lines."""
        cfg = tomllib.loads(self.config.read_text())
        ifaces = {}
        for itf in cfg.get("interface", []):
            m = re.search(r"iface=([^,]+)", itf.get("device", ""))
            if not m:
                raise NatgwError(f"kernel stand-in: interface {itf.get('name')} has no iface= device")
            ifaces[itf["name"]] = m.group(1)
            want = itf["address"]
            have = ns_exec(NAT_NS, ["ip", "-4", "-o", "addr", "show", "dev", m.group(1)]).stdout
            if want not in have:
                raise NatgwError(f"kernel stand-in: {m.group(1)} lacks {want} (is the lab up with "
                                 f"--dataplane kernel?)")
        cmds, wanted = [], set()
        for route in cfg.get("route", []):
            dev = ifaces[route["interface"]]
            for p in _route_prefixes(route, self.config.parent):
                via = ["via", route["via"]] if "via" in route else []
                cmds.append(["ip", "route", "replace", p, *via, "dev", dev, "proto", "static"])
                wanted.add(_canonical_prefix(p))
        current = ns_exec(NAT_NS, ["ip", "-4", "route", "show", "proto", "static"]).stdout.split("\n")
        for line in current:
            if line.strip() and _canonical_prefix(line.split()[0]) not in wanted:
                cmds.append(["ip", "route", "del", line.split()[0], "proto", "static"])
        lines = []
        for c in cmds:
            ns_exec(NAT_NS, c, check=True)
            lines.append("# " + " ".join(c))
        nft = _kernel_ruleset(cfg)
        # One transaction: create-if-absent, flush, refill (conntrack state and NAT mappings survive).
        script = "table ip natgw_lab {}\nflush table ip natgw_lab\n" + nft
        ns_exec(NAT_NS, ["nft", "-f", "-"], input=script, check=True)
        lines.append(nft)
        for key, val in _kernel_timeouts(cfg).items():
            ns_exec(NAT_NS, f"echo {val} > /proc/sys/net/netfilter/{key}", check=True)
            lines.append(f"# {key} = {val}")
        return lines

    def reload(self, how: str = "ctl", timeout: float = 10) -> "ReloadResult":
        """Re-apply the config file (the kernel's equivalent of natgw's reload)."""
        try:
            lines = self._apply()
        except (NatgwError, RuntimeError, tomllib.TOMLDecodeError, KeyError) as e:
            return ReloadResult(False, 1, f"kernel stand-in: reload failed: {e}")
        self.generation += 1
        with open(self.log_path, "a") as f:
            f.write(f"# reload ({how}), generation {self.generation}\n" + "\n".join(lines) + "\n")
        return ReloadResult(True, 0, f"kernel stand-in: reloaded {self.config} (generation {self.generation})")

    @property
    def pid(self):
        return None

    def running(self) -> bool:
        return getattr(self, "_running", False)

    def signal(self, sig: int) -> None:
        pass

    def stop(self, term_timeout: float = 5) -> int | None:
        if self.running():
            ns_exec(NAT_NS, "echo 0 > /proc/sys/net/ipv4/ip_forward")
            stats = ns_exec(NAT_NS, "ip -s link; nft list ruleset").stdout
            with open(self.log_path, "a") as f:
                f.write("# stopped; final counters\n" + stats)
            self._running = False
            self.returncode = 0
        return self.returncode


def _kernel_snat_ruleset(cfg: dict, ifaces: dict[str, str]) -> str:
    froms = [p for rule in cfg.get("snat", []) for p in rule.get("from", [])]
    if not froms:
        return ""
    s = ", ".join(froms)
    return ("table ip natgw_lab {\n  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    ip saddr {{ {s} }} ip daddr != {{ {s} }} counter masquerade\n  }}\n}}\n")


def start_natgw(config: str | os.PathLike, extra_args=(), logdir: str | None = None,
                ready_timeout: float = 60, env: dict[str, str | None] | None = None) -> Natgw:
    """Start natgw (or, with NATGW_LAB_DATAPLANE=kernel, the kernel stand-in) in ngw-nat with config and
    wait until it prints 'natgw: running'. For a lab brought up by hand; Lab.start_natgw() also stops it
    when the lab goes down. Stop it with .stop() (SIGTERM, SIGKILL after 5 s)."""
    cfg = Path(config)
    if not cfg.is_absolute():
        cfg = SRC / cfg
    cls = KernelNatgw if dataplane() == "kernel" else Natgw
    return cls(cfg, extra_args, logdir=logdir or tempfile.mkdtemp(prefix="natgw-run-"),
               ready_timeout=ready_timeout, env=env).start()


# -------------------------------------------------------------------------------------- cleanup registry
class _Registry:
    def __init__(self):
        self.labs: set[Lab] = set()
        self.natgws: set[Natgw] = set()
        self.captures: set[Capture] = set()
        self.installed = False

    def install(self) -> None:
        if self.installed:
            return
        self.installed = True
        atexit.register(self.cleanup)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, self._on_signal)

    def cleanup(self) -> None:
        for c in list(self.captures):
            try:
                c.stop()
            except Exception as e:  # noqa: BLE001 - best effort on the way out
                log(f"cleanup: tcpdump: {e}")
        for lab in list(self.labs):
            try:
                lab.down()
            except Exception as e:  # noqa: BLE001
                log(f"cleanup: lab down: {e}")
        for n in list(self.natgws):
            try:
                n.stop()
            except Exception as e:  # noqa: BLE001
                log(f"cleanup: natgw: {e}")

    def _on_signal(self, signum, frame) -> None:
        # meson sends SIGTERM to the test's process group and SIGKILL 0.5 s later: too soon to clean up
        # here. Hand the teardown to a detached `lab.sh down` (own session, holding the lab lock until it
        # is done) and leave at once. natgw and tcpdump got the same SIGTERM; lab.sh down reaps the rest.
        signal.signal(signum, signal.SIG_IGN)
        log(f"signal {signum}: taking the lab down in the background")
        for c in list(self.captures):
            if c.proc and c.proc.poll() is None:
                c.proc.terminate()
        for n in list(self.natgws):
            if n.proc and n.proc.poll() is None:
                n.proc.terminate()
        for lab in list(self.labs):
            try:
                lab.down_detached()
            except Exception as e:  # noqa: BLE001
                log(f"cleanup: {e}")
        os._exit(128 + signum)


_registry = _Registry()


# ------------------------------------------------------------------------------------------------ Lab
class Lab:
    """The namespace lab: `lab.sh up` on enter, `lab.sh down` on exit (always)."""

    def __init__(self, mode: str = "forward", dataplane_mode: str | None = None, servers: bool = True,
                 logdir: str | None = None, lock_timeout: float = 600, ha: bool = False):
        if mode not in ("forward", "nat"):
            raise ValueError(f"mode must be forward or nat, not {mode!r}")
        self.mode = mode
        self.ha = ha  # lab.sh up --ha: a second natgw namespace (NAT2_NS) on bridged links
        self.dataplane = dataplane_mode or dataplane()
        self.servers = servers
        if logdir or os.environ.get("NATGW_LAB_LOGDIR"):
            self.logdir = logdir or os.path.join(os.environ["NATGW_LAB_LOGDIR"], time.strftime("%Y%m%d-%H%M%S"))
            os.makedirs(self.logdir, exist_ok=True)
        else:
            self.logdir = tempfile.mkdtemp(prefix="natgw-lab-")
        self.lock_timeout = lock_timeout
        self._lock_fd: int | None = None
        self.natgws: list[Natgw] = []
        self.is_up = False

    # -- lifecycle
    def __enter__(self) -> "Lab":
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def _lab_sh(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = dict(os.environ, NATGW_LAB_LOCK_HELD="1")
        r = run(["bash", str(LAB_SH), *args], timeout=timeout, env=env)
        with open(os.path.join(self.logdir, "lab.sh.log"), "a") as f:
            f.write(f"$ lab.sh {' '.join(args)}  -> {r.returncode}\n{r.stdout}{r.stderr}")
        return r

    def _acquire_lock(self) -> None:
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.lock_timeout
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RuntimeError(f"another lab holds {LOCK_PATH} for more than {self.lock_timeout} s")
                if not said:
                    log(f"waiting for another lab to finish ({LOCK_PATH})")
                    said = True
                time.sleep(0.5)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def up(self) -> "Lab":
        reason = skip_reason()
        if reason:
            skip(reason)
        _registry.install()
        self._acquire_lock()
        _registry.labs.add(self)
        self.is_up = True
        r = self._lab_sh("up", "--mode", self.mode, "--dataplane", self.dataplane, *(["--ha"] if self.ha else []))
        if r.returncode != 0:
            raise RuntimeError(f"lab.sh up failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        if self.dataplane == "kernel":
            # Until start_natgw(): nothing forwards, as with natgw not yet running.
            ns_exec(NAT_NS, "echo 0 > /proc/sys/net/ipv4/ip_forward", check=True)
        if self.servers:
            r = self._lab_sh("servers")
            if r.returncode != 0:
                raise RuntimeError(f"lab.sh servers failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        log(f"lab up: mode={self.mode} dataplane={self.dataplane} logs in {self.logdir}")
        return self

    def down(self) -> None:
        for n in self.natgws:
            try:
                n.stop()
            except Exception as e:  # noqa: BLE001 - keep going: the namespaces must go
                log(f"stopping natgw: {e}")
        for c in list(_registry.captures):
            c.stop()
        if self.is_up:
            # Own session: a process-group kill aimed at us must not cut the cleanup short.
            env = dict(os.environ, NATGW_LAB_LOCK_HELD="1")
            try:
                r = subprocess.run(["bash", str(LAB_SH), "down"], capture_output=True, text=True,
                                   timeout=60, env=env, start_new_session=True, stdin=subprocess.DEVNULL)
                if r.returncode != 0:
                    log(f"lab.sh down failed ({r.returncode}): {r.stdout}{r.stderr}")
            except subprocess.TimeoutExpired:
                log("lab.sh down timed out")
            self.is_up = False
        _registry.labs.discard(self)
        self._release_lock()

    def down_detached(self) -> None:
        """Start `lab.sh down` in its own session and return: for signal handlers with no time to wait.
        The child inherits the lab lock, so no other lab starts before the teardown has finished."""
        if not self.is_up:
            return
        env = dict(os.environ, NATGW_LAB_LOCK_HELD="1")
        with open(os.path.join(self.logdir, "lab.sh.log"), "a") as out:
            subprocess.Popen(["bash", str(LAB_SH), "down"], env=env, start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             pass_fds=(self._lock_fd,) if self._lock_fd is not None else ())
        self.is_up = False

    # -- natgw
    def start_natgw(self, config: str | os.PathLike, extra_args=(), ready_timeout: float = 60,
                    env: dict[str, str | None] | None = None, ns: str = NAT_NS) -> Natgw:
        """Start natgw (or the kernel stand-in) with config and wait until it is running. env: variables
        to add to natgw's environment (e.g. NOTIFY_SOCKET), or with None as value, to remove. ns: the
        namespace (NAT2_NS for the second natgw of an HA lab; natgw only)."""
        cfg = Path(config)
        if not cfg.is_absolute():
            cfg = SRC / cfg
        if self.dataplane == "kernel":
            if ns != NAT_NS:
                raise ValueError("the kernel stand-in runs in ngw-nat only")
            n = KernelNatgw(cfg, extra_args, logdir=self.logdir, ready_timeout=ready_timeout, env=env)
        else:
            n = Natgw(cfg, extra_args, logdir=self.logdir, ready_timeout=ready_timeout, env=env, ns=ns)
        self.natgws.append(n)
        return n.start()

    # -- helpers bound to this lab
    ns_exec = staticmethod(ns_exec)
    veth_counters = staticmethod(veth_counters)

    def tcpdump(self, ns: str, ifname: str, bpf: str = "", count: int | None = None,
                timeout: float = 5.0) -> Capture:
        return Capture(ns, ifname, bpf, count=count, timeout=timeout, logdir=self.logdir)

    def tcpdump_capture(self, ns: str, ifname: str, bpf: str = "", count: int | None = None,
                        timeout: float = 5.0, action=None) -> list:
        return tcpdump_capture(ns, ifname, bpf, count=count, timeout=timeout, action=action,
                               logdir=self.logdir)

    def mac(self, ns: str, ifname: str) -> str:
        return ns_exec(ns, ["cat", f"/sys/class/net/{ifname}/address"], check=True).stdout.strip()


# -------------------------------------------------------------------------------------------- TestCase
class LabTestCase(unittest.TestCase):
    """One lab per test class: up (and natgw started) in setUpClass, down in tearDownClass.

    Subclasses set MODE and CONFIG (path relative to the source tree, or absolute; None = no natgw),
    or override natgw_config() to write one."""

    MODE = "forward"
    CONFIG: str | None = None
    lab: Lab
    natgw: Natgw | None = None

    @classmethod
    def natgw_config(cls) -> str | None:
        return cls.CONFIG

    @classmethod
    def setUpClass(cls) -> None:
        reason = skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.lab = Lab(mode=cls.MODE)
        cls.addClassCleanup(cls.lab.down)  # runs even when setUpClass fails half-way
        cls.lab.up()
        cfg = cls.natgw_config()
        cls.natgw = cls.lab.start_natgw(cfg) if cfg else None

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.natgw is not None:
            rc = cls.natgw.stop()
            log(f"natgw exit status {rc}; log {cls.natgw.log_path}")
        cls.lab.down()

    def setUp(self) -> None:
        if self.natgw is not None and not self.natgw.running():
            self.fail(f"natgw is not running (exit status {self.natgw.proc and self.natgw.proc.poll()}); "
                      f"log {self.natgw.log_path}:\n{self.natgw.tail()}")

    def tearDown(self) -> None:
        if self.natgw is not None and not self.natgw.running():
            self.fail(f"natgw died during the test; log {self.natgw.log_path}:\n{self.natgw.tail()}")


# ------------------------------------------------------------------------------------------ config files
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(cfg: dict) -> str:
    """Write a natgw config dict (as tomllib reads it) back as TOML: [table]s and [[array]]s of scalars."""
    out = []
    for name, value in cfg.items():
        tables = value if isinstance(value, list) else [value]
        for t in tables:
            out.append(f"[[{name}]]" if isinstance(value, list) else f"[{name}]")
            out.extend(f"{k} = {_toml_value(v)}" for k, v in t.items())
            out.append("")
    return "\n".join(out)


def derive_config(base: str | os.PathLike, dest: str | os.PathLike, edit) -> Path:
    """Read config `base`, let edit(cfg_dict) change it, write it to `dest` with prefix_list paths made
    absolute (so the copy works from any folder). Returns dest."""
    base = Path(base) if Path(base).is_absolute() else SRC / base
    cfg = tomllib.loads(base.read_text())
    for r in cfg.get("route", []):
        if "prefix_list" in r and not os.path.isabs(r["prefix_list"]):
            r["prefix_list"] = str((base.parent / r["prefix_list"]).resolve())
    edit(cfg)
    dest = Path(dest)
    dest.write_text(f"# derived from {base} by a lab test\n" + dump_toml(cfg))
    return dest


# ------------------------------------------------------------------------------------------------ ARP
_ARP_PROBE = r"""
import sys
from scapy.all import ARP, Ether, conf, get_if_hwaddr, srp1
conf.verb = 0
ifname, target, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
src_ip = sys.argv[4]
ans = srp1(Ether(dst="ff:ff:ff:ff:ff:ff", src=get_if_hwaddr(ifname)) /
           ARP(op=1, hwsrc=get_if_hwaddr(ifname), psrc=src_ip, pdst=target), iface=ifname, timeout=timeout)
if ans is None or ARP not in ans or ans[ARP].op != 2:
    sys.exit(1)
print(ans[ARP].hwsrc, ans[Ether].src)
"""


def arp_probe(ns: str, ifname: str, target: str, src_ip: str, timeout: float = 2) -> tuple[str, str] | None:
    """Broadcast an ARP who-has for target from ns/ifname (scapy); returns (ARP hwsrc, Ethernet src) of the
    reply, or None when nobody answered."""
    r = ns_exec(ns, ["/usr/bin/python3", "-c", _ARP_PROBE, ifname, target, str(timeout), src_ip],
                timeout=timeout + 20)
    if r.returncode != 0:
        return None
    hw, eth = r.stdout.split()
    return hw.lower(), eth.lower()


# ============================================================================ NAT and control-plane helpers
# (used by test_nat.py and test_control.py)

CONTROL_SOCKET = "/run/natgw-lab/natgw.sock"  # [control] socket in config/lab.toml and lab-forward.toml
METRICS_URL = "http://127.0.0.1:9100/metrics"  # [metrics] listen, inside ngw-nat


def natgwctl_bin() -> Path:
    p = Path(os.environ.get("NATGWCTL_BIN") or "build/src/natgwctl/natgwctl")
    return p if p.is_absolute() else SRC / p


def require_natgw(what: str) -> None:
    """Skip the current test in kernel mode: `what` is natgw-only (metrics, natgwctl, its counters...)."""
    if dataplane() == "kernel":
        skip(f"natgw-specific ({what}): NATGW_LAB_DATAPLANE=kernel runs Linux in natgw's place, which has "
             "no such thing")


def natgwctl(*args: str, socket: str = CONTROL_SOCKET, timeout: float = 10) -> subprocess.CompletedProcess:
    """Run natgwctl --socket SOCKET ARGS... (the socket is a file path: no namespace needed)."""
    return run([str(natgwctl_bin()), "--socket", socket, *args], timeout=timeout)


class ReloadResult:
    def __init__(self, ok: bool, returncode: int, output: str):
        self.ok, self.returncode, self.output = ok, returncode, output

    def __repr__(self) -> str:
        return f"ReloadResult(ok={self.ok}, rc={self.returncode}, output={self.output!r})"


# ------------------------------------------------------------------------------- Prometheus text format
class PromFormatError(ValueError):
    pass


_PROM_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_PROM_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_PROM_LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
_PROM_FLOAT = r"(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)"
_PROM_HELP_RE = re.compile(rf"# HELP ({_PROM_NAME}) ((?:[^\\\n]|\\[\\n])*)")
_PROM_TYPE_RE = re.compile(rf"# TYPE ({_PROM_NAME}) (counter|gauge|histogram|summary|untyped)")
_PROM_SAMPLE_RE = re.compile(
    rf"({_PROM_NAME})(?:\{{((?:{_PROM_LABEL}={_PROM_LABEL_VALUE}(?:,{_PROM_LABEL}={_PROM_LABEL_VALUE})*,?)?)\}})?"
    rf" ({_PROM_FLOAT})(?: (-?\d+))?")
_PROM_LABEL_PAIR_RE = re.compile(rf"({_PROM_LABEL})=({_PROM_LABEL_VALUE})")


def _prom_unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v[1:-1])


class Metrics:
    """A parsed Prometheus exposition: samples[(name, ((label, value), ...sorted))] = float."""

    def __init__(self, text: str):
        self.text = text
        self.types: dict[str, str] = {}
        self.helps: dict[str, str] = {}
        self.samples: dict[tuple[str, tuple], float] = {}
        errors = []
        if text and not text.endswith("\n"):
            errors.append("the exposition does not end with a newline")
        closed: set[str] = set()   # families whose samples are over (a family's samples must be contiguous)
        current = None
        for n, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1):
            where = f"line {n}: {line!r}"
            if line == "":
                continue
            if line.startswith("# HELP "):
                m = _PROM_HELP_RE.fullmatch(line)
                if not m:
                    errors.append(f"{where}: malformed HELP")
                elif m.group(1) in self.helps:
                    errors.append(f"{where}: second HELP for {m.group(1)}")
                else:
                    self.helps[m.group(1)] = m.group(2)
                continue
            if line.startswith("# TYPE "):
                m = _PROM_TYPE_RE.fullmatch(line)
                if not m:
                    errors.append(f"{where}: malformed TYPE (type must be counter, gauge, histogram, "
                                  "summary or untyped)")
                elif m.group(1) in self.types:
                    errors.append(f"{where}: second TYPE for {m.group(1)}")
                elif any(k[0] == m.group(1) for k in self.samples):
                    errors.append(f"{where}: TYPE after samples of {m.group(1)}")
                else:
                    self.types[m.group(1)] = m.group(2)
                continue
            if line.startswith("#"):
                continue  # a comment
            m = _PROM_SAMPLE_RE.fullmatch(line)
            if not m:
                errors.append(f"{where}: not a valid sample line")
                continue
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            family = name
            if name not in self.types:
                for suffix in ("_bucket", "_sum", "_count"):
                    base = name[: -len(suffix)] if name.endswith(suffix) else None
                    if base and self.types.get(base) in ("histogram", "summary"):
                        family = base
            if family not in self.types:
                errors.append(f"{where}: sample of {name} without a TYPE line before it")
            if family != current:
                if family in closed:
                    errors.append(f"{where}: samples of {family} are not contiguous")
                if current:
                    closed.add(current)
                current = family
            pairs = tuple(sorted((k, _prom_unescape(v)) for k, v in _PROM_LABEL_PAIR_RE.findall(labels)))
            if len({k for k, _ in pairs}) != len(pairs):
                errors.append(f"{where}: a label name repeats")
            key = (name, pairs)
            if key in self.samples:
                errors.append(f"{where}: duplicate series")
            v = float(value)
            if self.types.get(family) == "counter" and not v >= 0:
                errors.append(f"{where}: a counter must be >= 0")
            self.samples[key] = v
        for fam in self.types:
            if fam not in self.helps:
                errors.append(f"family {fam} has a TYPE but no HELP")
        if errors:
            raise PromFormatError(f"{len(errors)} problem(s) in the exposition:\n  " + "\n  ".join(errors))

    def get(self, name: str, default: float | None = None, **labels) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))), default)

    def value(self, name: str, **labels) -> float:
        v = self.get(name, **labels)
        if v is None:
            have = sorted(dict(k[1]) for k in self.samples if k[0] == name)
            raise KeyError(f"no sample {name}{labels}; present: {have}")
        return v

    def series(self, name: str) -> dict[tuple, float]:
        return {k[1]: v for k, v in self.samples.items() if k[0] == name}


def scrape_metrics(url: str = METRICS_URL, timeout: float = 5) -> tuple[str, dict[str, str], str]:
    """GET url from inside ngw-nat with curl: (status line, headers (lower-case names), body)."""
    # Bytes, not text: text mode would turn the header's CRLFs (and any stray CR in the body) into LFs.
    r = subprocess.run(["ip", "netns", "exec", NAT_NS, "curl", "-sS", "-i", "--max-time", str(timeout), url],
                       capture_output=True, timeout=timeout + 10, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"scraping {url} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    raw_head, sep, raw_body = r.stdout.partition(b"\r\n\r\n")
    if not sep:
        raise RuntimeError(f"no HTTP header in the answer from {url}: {r.stdout[:200]!r}")
    head, body = raw_head.decode("latin-1"), raw_body.decode("utf-8")
    status, *hdrs = head.split("\r\n")
    headers = {}
    for h in hdrs:
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def metrics(strict: bool = True) -> Metrics:
    """Scrape natgw's /metrics and parse it (strictly: a format error raises PromFormatError).
    strict=False tolerates a malformed exposition and returns the samples it could read."""
    _, _, body = scrape_metrics()
    if strict:
        return Metrics(body)
    try:
        return Metrics(body)
    except PromFormatError:
        m = Metrics.__new__(Metrics)
        m.text, m.types, m.helps, m.samples = body, {}, {}, {}
        for line in body.splitlines():
            sm = _PROM_SAMPLE_RE.fullmatch(line)
            if sm and not line.startswith("#"):
                pairs = tuple(sorted((k, _prom_unescape(v))
                                     for k, v in _PROM_LABEL_PAIR_RE.findall(sm.group(2) or "")))
                m.samples[(sm.group(1), pairs)] = float(sm.group(3))
        return m


def wait_for_metric(pred, timeout: float = 10, interval: float = 0.25) -> Metrics:
    """Scrape (leniently) until pred(metrics) is true; returns the last scrape (check pred again)."""
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(strict=False)
        if pred(m) or time.monotonic() > deadline:
            return m
        time.sleep(interval)


# ------------------------------------------------------------------------------ kernel stand-in, extended
def _canonical_prefix(p: str) -> str:
    if p == "default":
        return "0.0.0.0/0"
    return p if "/" in p else p + "/32"


def _kernel_snat_target(rule: dict) -> str:
    ports = rule.get("ports")
    to = rule.get("to") or []
    if not to:
        return "masquerade" + (f" to :{ports}" if ports else "")
    addr = to[0] if len(to) == 1 else f"{to[0]}-{to[-1]}"
    return f"snat to {addr}" + (f":{ports}" if ports else "")


def _kernel_acl_rule(a: dict) -> str:
    parts = []
    if "src" in a:
        parts.append(f"ip saddr {a['src']}")
    if "dst" in a:
        parts.append(f"ip daddr {a['dst']}")
    proto = str(a.get("protocol", "any"))
    if proto != "any":
        parts.append(f"meta l4proto {proto}")
    if "src_ports" in a:
        parts.append(f"th sport {a['src_ports']}")
    if "dst_ports" in a:
        parts.append(f"th dport {a['dst_ports']}")
    parts.append("counter " + ("accept" if a.get("action") == "allow" else "drop"))
    return " ".join(parts)


def _kernel_ruleset(cfg: dict) -> str:
    """natgw's [[snat]] as nftables snat/masquerade and its [[acl]]/[acl_default] as a stateful forward
    filter (judged on a flow's first packet, like natgw's: established and related traffic passes)."""
    out = ["table ip natgw_lab {"]
    snat = cfg.get("snat", [])
    if snat:
        out += ["  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;"]
        for rule in snat:
            s = ", ".join(rule.get("from", []))
            if s:
                out.append(f"    ip saddr {{ {s} }} ip daddr != {{ {s} }} counter {_kernel_snat_target(rule)}")
        out.append("  }")
    acls = cfg.get("acl", [])
    default = cfg.get("acl_default", {}).get("action", "allow")
    if acls or default != "allow":
        policy = "accept" if default == "allow" else "drop"
        out += ["  chain forward {", f"    type filter hook forward priority filter; policy {policy};",
                "    ct state established,related accept"]
        out += [f"    {_kernel_acl_rule(a)}" for a in acls]
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def _kernel_timeouts(cfg: dict) -> dict[str, int]:
    """natgw's [timeouts] (with natgw's defaults) as the namespace's conntrack timeouts."""
    t = {"udp": 300, "tcp_established": 7440, "tcp_transitory": 240, "icmp": 60, **cfg.get("timeouts", {})}
    out = {"nf_conntrack_udp_timeout": t["udp"], "nf_conntrack_udp_timeout_stream": t["udp"],
           "nf_conntrack_icmp_timeout": t["icmp"],
           "nf_conntrack_tcp_timeout_established": t["tcp_established"]}
    for state in ("syn_sent", "syn_recv", "fin_wait", "close_wait", "last_ack", "time_wait", "close"):
        out[f"nf_conntrack_tcp_timeout_{state}"] = t["tcp_transitory"]
    return out


# ------------------------------------------------------------------------------------ helper processes
_NS_SERVER = r"""
import asyncio, os, resource, signal, sys
name, addr = sys.argv[1], sys.argv[2]
tcp_ports = [int(p) for p in sys.argv[3].split(",") if p]
udp_ports = [int(p) for p in sys.argv[4].split(",") if p]
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
except (ValueError, OSError):
    pass
udp = {}
conns = {"open": 0, "total": 0}

class Udp(asyncio.DatagramProtocol):
    # "<name>:<source ip>:<source port>:<payload>"; a payload "from=N:..." is answered from our port N.
    def __init__(self, port):
        self.port = port
    def connection_made(self, transport):
        self.transport = transport
        udp[self.port] = self
    def datagram_received(self, data, peer):
        text = data.decode(errors="replace")
        reply = f"{name}:{peer[0]}:{peer[1]}:{text}".encode()
        via = self
        if text.startswith("from="):
            via = udp.get(int(text[5:].split(":")[0]), self)
        via.transport.sendto(reply, peer)

async def handle(reader, writer):
    # Holds the connection until the peer closes it; answers each line with "<name>:<ip>:<port>:<line>".
    peer = writer.get_extra_info("peername")
    conns["open"] += 1
    conns["total"] += 1
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(f"{name}:{peer[0]}:{peer[1]}:".encode() + line)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        conns["open"] -= 1
        writer.close()

async def main():
    loop = asyncio.get_running_loop()
    for p in tcp_ports:
        await asyncio.start_server(handle, addr, p, backlog=4096, reuse_address=True)
    for p in udp_ports:
        await loop.create_datagram_endpoint(lambda p=p: Udp(p), local_addr=(addr, p))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    print(f"stopping: {conns['total']} tcp connections served, {conns['open']} open", flush=True)

asyncio.run(main())
"""


class NsServer:
    """A test-owned server in a namespace: TCP ports that hold every connection open (answering each line
    with "<name>:<peer ip>:<peer port>:<line>") and UDP echo ports answering "<name>:<ip>:<port>:<payload>"
    (a payload "from=N:..." is answered from the server's UDP port N instead). Stop with .stop()."""

    def __init__(self, ns: str, name: str, addr: str, tcp_ports=(), udp_ports=(), logdir: str = "/tmp"):
        self.ns, self.name = ns, name
        self.log_path = Path(logdir) / f"nsserver-{name}-{time.strftime('%H%M%S')}-{next(_seq)}.log"
        self.args = [name, addr, ",".join(map(str, tcp_ports)), ",".join(map(str, udp_ports))]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> "NsServer":
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "/usr/bin/python3", "-u", "-c", _NS_SERVER,
                                      *self.args], stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready" in self.log_path.read_text():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server {self.name} in {self.ns} did not start: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.proc = None

    def __enter__(self) -> "NsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_TCP_HOLDER = r"""
import asyncio, json, resource, sys, time
addr, port, count, concurrency, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
except (ValueError, OSError):
    pass
conns = {}

async def one(i, sem, res):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(addr, port), timeout)
        except Exception as e:
            res["errors"][type(e).__name__] = res["errors"].get(type(e).__name__, 0) + 1
            return
        try:
            w.write(f"c{i}\n".encode())
            line = (await asyncio.wait_for(r.readline(), timeout)).decode().strip()
            if not line.endswith(f":c{i}"):
                raise ValueError(line)
        except Exception as e:
            res["errors"][type(e).__name__] = res["errors"].get(type(e).__name__, 0) + 1
            w.close()
            return
        conns[i] = (r, w)
        res["seen"].append(line.rsplit(":", 1)[0])  # "<server>:<source ip>:<source port>"

async def check(res):
    async def ping(i, r, w):
        try:
            w.write(f"again{i}\n".encode())
            line = (await asyncio.wait_for(r.readline(), timeout)).decode().strip()
            return line.endswith(f":again{i}")
        except Exception:
            return False
    oks = await asyncio.gather(*(ping(i, r, w) for i, (r, w) in conns.items()))
    return sum(oks)

async def main():
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    res = {"errors": {}, "seen": []}
    t0 = time.monotonic()
    await asyncio.gather(*(one(i, sem, res) for i in range(count)))
    srcs = sorted({s.split(":")[1] for s in res["seen"]})
    print(json.dumps({"open": len(conns), "failed": count - len(conns), "errors": res["errors"],
                      "sources": srcs, "outside_ports": len({s.split(":")[2] for s in res["seen"]}),
                      "seconds": round(time.monotonic() - t0, 2)}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        cmd = (await reader.readline()).decode().strip()
        if cmd == "check":
            print(json.dumps({"ok": await check(res), "open": len(conns)}), flush=True)
        else:  # "close" or EOF
            for r, w in conns.values():
                w.close()
            await asyncio.sleep(0.2)
            print(json.dumps({"closed": len(conns)}), flush=True)
            return

asyncio.run(main())
"""


class TcpHolder:
    """count TCP connections from ns to addr:port (an NsServer TCP port), opened `concurrency` at a time and
    held open: .open() -> {"open", "failed", "errors", "sources", "outside_ports", "seconds"};
    .check() -> {"ok": connections that still answer, "open"}; .close()."""

    def __init__(self, ns: str, addr: str, port: int, count: int, concurrency: int = 200,
                 timeout: float = 5):
        self.cmd = ["ip", "netns", "exec", ns, "/usr/bin/python3", "-u", "-c", _TCP_HOLDER, addr, str(port),
                    str(count), str(concurrency), str(timeout)]
        self.proc: subprocess.Popen | None = None

    def _reply(self, timeout: float) -> dict:
        import json
        import select
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"tcp holder: no answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"tcp holder exited ({self.proc.poll()}): {self.proc.stderr.read()}")
        return json.loads(line)

    def open(self, timeout: float = 120) -> dict:
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        return self._reply(timeout)

    def check(self, timeout: float = 60) -> dict:
        self.proc.stdin.write("check\n")
        self.proc.stdin.flush()
        return self._reply(timeout)

    def close(self, timeout: float = 30) -> dict | None:
        if self.proc is None:
            return None
        out = None
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("close\n")
                self.proc.stdin.flush()
                out = self._reply(timeout)
        except (RuntimeError, BrokenPipeError, OSError):
            pass
        finally:
            end_process(self.proc)
            self.proc = None
        return out


def end_process(proc: subprocess.Popen, wait: float = 5) -> None:
    """Reap a helper process that was asked to quit (killed if it has not within `wait` s); close its pipes."""
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if f:
                f.close()
        except OSError:
            pass


_UDP_PORT_CLIENT = r"""
import json, socket, sys
# One socket, one datagram to each addr:port in turn; prints the replies (or null) as JSON.
timeout, local_port = float(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", local_port))
s.settimeout(timeout)
out = {"local_port": s.getsockname()[1], "replies": []}
for i, target in enumerate(sys.argv[3:]):
    addr, port, payload = target.split(",", 2)
    s.sendto(payload.encode(), (addr, int(port)))
    try:
        data, peer = s.recvfrom(65535)
        out["replies"].append({"from": f"{peer[0]}:{peer[1]}", "text": data.decode(errors="replace")})
    except socket.timeout:
        out["replies"].append(None)
print(json.dumps(out))
"""


def udp_exchange(ns: str, targets: list[tuple[str, int, str]], timeout: float = 2,
                 local_port: int = 0) -> dict:
    """From ONE UDP socket in ns, send payload to each (addr, port, payload) in turn and wait for a reply:
    {"local_port": N, "replies": [{"from": "ip:port", "text": ...} or None, ...]}."""
    import json
    args = [f"{a},{p},{pl}" for a, p, pl in targets]
    r = ns_exec(ns, ["/usr/bin/python3", "-c", _UDP_PORT_CLIENT, str(timeout), str(local_port), *args],
                timeout=timeout * len(targets) + 15)
    if r.returncode != 0:
        raise RuntimeError(f"udp exchange failed: {r.stderr}")
    return json.loads(r.stdout)


# ------------------------------------------------------------------------------------ shared test helpers
def echo_source(text: str | None) -> tuple[str, str, int, str] | None:
    """NsServer's UDP/TCP answer "<server>:<ip>:<port>:<payload>" -> (server, ip, port, payload)."""
    if text is None:
        return None
    name, ip, port, payload = text.split(":", 3)
    return name, ip, int(port), payload


def warm_up(dsts) -> None:
    """Let ARP settle on every hop before counting anything (first-packet ARP holds are not tested here)."""
    for dst in dsts:
        for _ in range(3):
            if ping(CLIENT_NS, dst, count=1, wait=2).returncode == 0:
                break


def s3_filter_drops() -> int:
    """Packets the S3-like endpoint (nat mode) dropped because their source was not 10.0.2.10."""
    out = ns_exec(S3_NS, ["nft", "list", "table", "inet", "natgw_lab"], check=True).stdout
    m = re.search(r"counter packets (\d+)", out)
    return int(m.group(1)) if m else 0

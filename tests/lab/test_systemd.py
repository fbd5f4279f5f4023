#!/usr/bin/python3
"""End-to-end: natgw speaking systemd's notification protocol, with the test playing systemd.

    lab.sh up --mode nat
    natgw --config <a copy of config/lab.toml>, NOTIFY_SOCKET=<a datagram socket the test binds>,
          WATCHDOG_USEC=400000 (natgw checks its workers and feeds every 200 ms)

What is checked, on the datagrams natgw sends and on the sender credentials the kernel attaches (what
systemd's NotifyAccess=main compares with the main PID):
    Lifecycle    READY=1 (STATUS=, MAINPID=natgw's pid) is the first message, sent once natgw runs, and
                 traffic flows then; WATCHDOG=1 at least 3 times in 1.5 s, never a timeout apart;
                 `natgwctl reload`: RELOADING=1 (MONOTONIC_USEC= the time of the reload) then READY=1,
                 STATUS "reloaded"; a config refused on SIGHUP: RELOADING=1 then READY=1, STATUS "reload
                 rejected" with the error; SIGTERM: STOPPING=1 last, exit status 0
    Stall        natgw's only worker thread frozen from outside (ptrace, as a debugger freezes one thread:
                 the control thread runs on; natgw has no test hook for this): WATCHDOG=1 stops within one
                 check, the log and STATUS name the worker and its lcore; released, feeding resumes
    NoListener   NOTIFY_SOCKET naming a socket nobody holds: natgw starts, forwards, reloads and stops as
                 usual, and logs the failure once
    OtherPid     WATCHDOG_PID naming another process (an inherited environment): READY=1, no WATCHDOG=1

Run as root:  /usr/bin/python3 tests/lab/test_systemd.py -v
natgw-only: skipped with NATGW_LAB_DATAPLANE=kernel.
"""

import ctypes
import errno
import os
import re
import socket
import struct
import sys
import threading
import time
import unittest
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import natgwlab as L  # noqa: E402
from natgwlab import CLIENT_NS, INET_ADDR, ping, ping_received  # noqa: E402

BASE_CONFIG = "config/lab.toml"
WATCHDOG_USEC = 400_000
TIMEOUT = WATCHDOG_USEC / 1e6   # systemd would kill natgw this long after the last WATCHDOG=1
INTERVAL = TIMEOUT / 2          # natgw checks (and feeds) this often
WORKER_LCORE = 1                # config/lab.toml: workers = 1, EAL -l 0-1: worker 0 runs on lcore 1


# ------------------------------------------------------------------------------------- systemd's side
@dataclass
class Message:
    t: float            # time.monotonic() at arrival
    raw: str
    fields: dict
    pid: int | None     # the sender's, from SCM_CREDENTIALS


class NotifySocket:
    """systemd's end of sd_notify: a datagram socket bound at `path` (SO_PASSCRED on, as systemd has it);
    a thread records every datagram with its arrival time and sender pid."""

    def __init__(self, path: str):
        self.path = path
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.1)
        self.msgs: list[Message] = []
        self.cv = threading.Condition()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:12])[0]
            text = data.decode(errors="replace")
            fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
            with self.cv:
                self.msgs.append(Message(time.monotonic(), text, fields, pid))
                self.cv.notify_all()

    def wait_for(self, pred, timeout: float, start: int = 0) -> tuple[int, Message] | None:
        """The first message from index `start` on that satisfies pred, waiting up to timeout s."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for i in range(start, len(self.msgs)):
                    if pred(self.msgs[i]):
                        return i, self.msgs[i]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def snapshot(self) -> list[Message]:
        with self.cv:
            return list(self.msgs)

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=2)
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


def is_(key: str, value: str = "1"):
    return lambda m: m.fields.get(key) == value


def not_watchdog(msgs: list[Message]) -> list[Message]:
    return [m for m in msgs if m.raw != "WATCHDOG=1"]


def summary(msgs: list[Message]) -> str:
    return "\n".join(f"  {m.t:.3f} pid {m.pid}: {m.raw!r}" for m in msgs) or "  (none)"


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


# ------------------------------------------------------------------------ freezing one thread (ptrace)
PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
WALL = 0x40000000  # __WALL: wait for a thread that is not our child


class ThreadFreeze:
    """Stop one thread of another process and only that one, as a debugger does (PTRACE_SEIZE +
    PTRACE_INTERRUPT); release() lets it run on. Should this process die first, the kernel detaches
    and the thread runs on by itself."""

    def __init__(self, tid: int):
        self.tid = tid
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        self.libc.ptrace.restype = ctypes.c_long
        self.frozen = False

    def _ptrace(self, req: int) -> None:
        if self.libc.ptrace(req, self.tid, None, None) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"ptrace({req:#x}, {self.tid}): {os.strerror(e)}")

    def freeze(self) -> None:
        self._ptrace(PTRACE_SEIZE)
        self._ptrace(PTRACE_INTERRUPT)
        os.waitpid(self.tid, WALL)  # returns once the thread has stopped
        self.frozen = True

    def release(self) -> None:
        if self.frozen:
            self._ptrace(PTRACE_DETACH)
            self.frozen = False


def thread_named(pid: int, name: str) -> int | None:
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip() == name:
                return int(tid)
        except FileNotFoundError:
            pass
    return None


# ------------------------------------------------------------------------------------------- the tests
class Systemd(L.LabTestCase):
    """NAT lab; each test starts its own natgw pointed at its own notify socket."""

    MODE = "nat"
    CONFIG = None

    @classmethod
    def setUpClass(cls) -> None:
        if L.dataplane() != "dpdk":
            raise unittest.SkipTest("natgw-specific (sd_notify): NATGW_LAB_DATAPLANE=kernel runs Linux in "
                                    "natgw's place")
        super().setUpClass()
        cls.cfg_path = Path(cls.lab.logdir) / "systemd.toml"
        cls.write_config()

    @classmethod
    def write_config(cls, extra: str = "") -> None:
        L.derive_config(BASE_CONFIG, cls.cfg_path, lambda c: None)
        if extra:
            with open(cls.cfg_path, "a") as f:
                f.write(extra)

    def start(self, name: str, env: dict, listen: bool = True) -> tuple["L.Natgw", NotifySocket | None]:
        """natgw with NOTIFY_SOCKET at a fresh socket (bound by the test unless listen=False) and `env`."""
        path = os.path.join(self.lab.logdir, f"notify-{name}.sock")
        ns = NotifySocket(path) if listen else None
        if ns:
            self.addCleanup(ns.close)
        # WATCHDOG_* only as the test sets them: the environment the tests run in must not decide.
        full = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": None, "WATCHDOG_PID": None, **env}
        natgw = self.lab.start_natgw(self.cfg_path, env=full)
        self.addCleanup(natgw.stop)
        return natgw, ns

    def wait_ready(self, natgw, ns: NotifySocket, start: int = 0) -> tuple[int, Message]:
        got = ns.wait_for(is_("READY"), timeout=10, start=start)
        self.assertIsNotNone(got, f"no READY=1 from natgw; got:\n{summary(ns.snapshot())}\n{natgw.tail()}")
        return got

    def assert_traffic_flows(self) -> None:
        r = ping(CLIENT_NS, INET_ADDR, count=3)
        self.assertGreaterEqual(ping_received(r), 2, f"natgw does not forward:\n{r.stdout}{r.stderr}")

    # ---------------------------------------------------------------------------------------------
    def test_lifecycle_ready_watchdog_reload_stop(self):
        natgw, ns = self.start("lifecycle", {"WATCHDOG_USEC": str(WATCHDOG_USEC)})
        i_ready, ready = self.wait_ready(natgw, ns)
        msgs = ns.snapshot()
        self.assertEqual(i_ready, 0, f"READY=1 is not natgw's first message:\n{summary(msgs)}")
        self.assertEqual(set(ready.fields), {"READY", "STATUS", "MAINPID"}, ready.raw)
        self.assertEqual(int(ready.fields["MAINPID"]), natgw.pid, ready.raw)
        self.assertEqual(ready.pid, natgw.pid, "not sent by natgw's main process (NotifyAccess=main refuses it)")
        self.assertRegex(ready.fields["STATUS"], r"^running, generation 1: 3 interfaces, .*, 1 worker\(s\)$")
        self.assertIn("natgw: systemd: READY=1 sent to " + ns.path, natgw.output())
        self.assert_traffic_flows()

        # The watchdog: fed every INTERVAL while the worker polls.
        time.sleep(max(0.0, ready.t + 1.6 - time.monotonic()))
        msgs = ns.snapshot()
        window = [m for m in msgs[i_ready + 1:] if m.t <= ready.t + 1.5]
        self.assertEqual(not_watchdog(window), [], f"unexpected messages:\n{summary(window)}")
        self.assertGreaterEqual(len(window), 3, f"WATCHDOG=1 in 1.5 s after READY=1:\n{summary(msgs)}")
        times = [ready.t] + [m.t for m in window]
        gaps = [b - a for a, b in zip(times, times[1:])]
        L.log(f"watchdog: {len(window)} feeds in 1.5 s, gaps {[round(g, 3) for g in gaps]}")
        self.assertLess(max(gaps), TIMEOUT, f"systemd would have killed natgw: gaps {gaps}")
        self.assertTrue(all(m.pid == natgw.pid for m in window))

        # natgwctl reload: RELOADING=1 (with the time of the reload) then READY=1, "reloaded".
        mark = len(ns.snapshot())
        before = monotonic_usec()
        r = natgw.reload("ctl")
        self.assertTrue(r.ok, r)
        got = ns.wait_for(is_("READY"), timeout=5, start=mark)
        after = monotonic_usec()
        self.assertIsNotNone(got, f"no READY=1 after the reload:\n{summary(ns.snapshot()[mark:])}")
        seq = not_watchdog(ns.snapshot()[mark:got[0] + 1])
        self.assertEqual([m.fields.get("RELOADING", m.fields.get("READY")) for m in seq], ["1", "1"],
                         f"not RELOADING=1 then READY=1:\n{summary(seq)}")
        reloading, done = seq
        self.assertEqual(set(reloading.fields), {"RELOADING", "STATUS", "MONOTONIC_USEC"}, reloading.raw)
        self.assertEqual(reloading.fields["STATUS"], f"reloading {self.cfg_path}")
        self.assertTrue(before <= int(reloading.fields["MONOTONIC_USEC"]) <= after,
                        f"MONOTONIC_USEC not the time of the reload ({before}..{after}): {reloading.raw}")
        self.assertRegex(done.fields["STATUS"], r"^reloaded, generation 2: 3 interfaces, ")

        # A config refused on SIGHUP: still RELOADING=1 then READY=1 (natgw runs on), the error in STATUS.
        self.write_config('\n[[route]]\nprefix = "100.64.0.0/10"\nvia = "10.0.3.1"\ninterface = "nowhere"\n')
        self.addCleanup(self.write_config)
        mark = len(ns.snapshot())
        r = natgw.reload("sighup")
        self.assertFalse(r.ok, r)
        got = ns.wait_for(is_("READY"), timeout=5, start=mark)
        self.assertIsNotNone(got, f"no READY=1 after the rejected reload:\n{summary(ns.snapshot()[mark:])}")
        seq = not_watchdog(ns.snapshot()[mark:got[0] + 1])
        self.assertEqual([m.fields.get("RELOADING", m.fields.get("READY")) for m in seq], ["1", "1"],
                         f"not RELOADING=1 then READY=1:\n{summary(seq)}")
        status = seq[1].fields["STATUS"]
        self.assertTrue(status.startswith("reload rejected, generation 2 stays in force: "), status)
        self.assertRegex(status, re.escape(str(self.cfg_path)) + r":\d+: .*nowhere", status)
        self.write_config()

        # Still fed after the reloads.
        self.assertIsNotNone(ns.wait_for(lambda m: m.raw == "WATCHDOG=1", timeout=2, start=got[0] + 1),
                             "the watchdog stopped after the reloads")
        self.assert_traffic_flows()

        # SIGTERM: STOPPING=1, and nothing after it.
        mark = len(ns.snapshot())
        rc = natgw.stop(term_timeout=10)
        self.assertEqual(rc, 0, natgw.tail())
        msgs = ns.snapshot()[mark:]
        stopping = [m for m in msgs if m.fields.get("STOPPING") == "1"]
        self.assertEqual(len(stopping), 1, f"STOPPING=1 on SIGTERM:\n{summary(msgs)}")
        self.assertEqual(stopping[0].raw, "STOPPING=1\nSTATUS=stopping")
        self.assertIs(msgs[-1], stopping[0], f"messages after STOPPING=1:\n{summary(msgs)}")
        self.assertEqual(natgw.output().count("sd_notify"), 0, "a notification failed:\n" + natgw.tail())

    def test_a_stalled_worker_stops_the_feed(self):
        natgw, ns = self.start("stall", {"WATCHDOG_USEC": str(WATCHDOG_USEC)})
        i_ready, _ = self.wait_ready(natgw, ns)
        self.assertIsNotNone(ns.wait_for(lambda m: m.raw == "WATCHDOG=1", timeout=2, start=i_ready),
                             "not fed before the stall")
        # DPDK names its lcore threads: rte-worker-N in 22.11, lcore-worker-N in older releases.
        tid = (thread_named(natgw.pid, f"rte-worker-{WORKER_LCORE}")
               or thread_named(natgw.pid, f"lcore-worker-{WORKER_LCORE}"))
        if tid is None:
            names = [Path(f"/proc/{natgw.pid}/task/{t}/comm").read_text().strip()
                     for t in os.listdir(f"/proc/{natgw.pid}/task")]
            self.fail(f"natgw (pid {natgw.pid}) has no thread for lcore {WORKER_LCORE}: {names}")
        freeze = ThreadFreeze(tid)
        try:
            freeze.freeze()
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                self.skipTest(f"cannot freeze a thread here ({e}): the stall is covered by the unit tests")
            raise
        self.addCleanup(freeze.release)
        t_freeze = time.monotonic()
        mark = len(ns.snapshot())
        log_mark = len(natgw.output())
        hold = 1.5
        time.sleep(hold)
        msgs = ns.snapshot()[mark:]
        log = natgw.output()[log_mark:]
        freeze.release()
        t_release = time.monotonic()
        self.assertTrue(natgw.running(), natgw.tail())

        # One check may still see the polls made just before the freeze; none after that may feed.
        late = [m for m in msgs if m.raw == "WATCHDOG=1" and m.t > t_freeze + INTERVAL + 0.1]
        self.assertEqual(late, [], f"fed while the worker was frozen ({t_freeze:.3f}):\n{summary(msgs)}")
        stuck = [m for m in msgs if m.fields.get("STATUS", "").startswith("stuck: ")]
        self.assertEqual(len(stuck), 1, f"STATUS naming the stuck worker, once:\n{summary(msgs)}")
        self.assertRegex(stuck[0].fields["STATUS"],
                         rf"^stuck: worker 0 \(lcore {WORKER_LCORE}\) made no progress for [0-9.]+ s; "
                         r"watchdog not fed$")
        self.assertRegex(log, rf"natgw: watchdog: worker 0 \(lcore {WORKER_LCORE}\) made no progress for "
                              r"[0-9.]+ s: stuck, not feeding systemd's watchdog")
        self.assertEqual(log.count("natgw: watchdog:"), 1, f"logged more than once while stuck:\n{log}")

        # Released: fed again, STATUS back to running, one line in the log.
        got = ns.wait_for(lambda m: m.raw == "WATCHDOG=1" and m.t > t_release, timeout=2, start=mark)
        self.assertIsNotNone(got, f"not fed again after the release:\n{summary(ns.snapshot()[mark:])}")
        self.assertIsNotNone(ns.wait_for(lambda m: m.fields.get("STATUS", "").startswith("running, generation 1"),
                                         timeout=2, start=mark), "STATUS not back to running")
        self.assertIn("natgw: watchdog: every worker is polling again", natgw.output()[log_mark:])
        self.assert_traffic_flows()
        self.assertEqual(natgw.stop(), 0, natgw.tail())

    def test_no_listener_changes_nothing_but_one_log_line(self):
        natgw, _ = self.start("nobody", {"WATCHDOG_USEC": "100000"}, listen=False)
        path = os.path.join(self.lab.logdir, "notify-nobody.sock")
        time.sleep(1.0)  # ~20 watchdog sends, each failing
        self.assertTrue(natgw.running(), natgw.tail())
        self.assert_traffic_flows()
        r = natgw.reload("ctl")
        self.assertTrue(r.ok, r)
        self.assertEqual(natgw.stop(), 0, natgw.tail())
        out = natgw.output()
        lines = [ln for ln in out.splitlines() if "sd_notify" in ln]
        self.assertEqual(len(lines), 1, f"the failure is logged once:\n{out}")
        self.assertIn(f"sending READY=1 to {path} failed", lines[0])

    def test_watchdog_pid_of_another_process_is_not_ours(self):
        natgw, ns = self.start("otherpid", {"WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": "1"})
        i_ready, _ = self.wait_ready(natgw, ns)
        time.sleep(4 * INTERVAL)
        msgs = ns.snapshot()
        self.assertEqual([m.raw for m in msgs if m.raw == "WATCHDOG=1"], [],
                         f"fed a watchdog meant for pid 1:\n{summary(msgs)}")
        self.assertNotIn("watchdog fed every", natgw.output())
        self.assertEqual(natgw.stop(), 0, natgw.tail())


if __name__ == "__main__":
    L.main()

#!/usr/bin/python3
"""scripts/natgw-ha.py, the failover agent, against fake natgw health endpoints (HTTP servers in threads:
200 "ok", 503 with reasons, or a socket that never answers) and a fake `aws` CLI that records its argv and
keeps route tables in a JSON file (describe-route-tables answers from it, replace-route/create-route
change it). What is checked: the config errors name the file and the key; a healthy peer is never taken
over from; a failed peer is, after `failures` checks and only while this instance is healthy; routes
already pointing here are skipped; no flapping (a recovered peer gets nothing back; preempt takes back);
--check, --once and --validate."""

import contextlib
import http.server
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import signal
import threading
import time
import unittest
from pathlib import Path

SRC = Path(os.environ.get("NATGW_SRC") or Path(__file__).resolve().parents[2])
AGENT = SRC / "scripts" / "natgw-ha.py"
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

spec = importlib.util.spec_from_file_location("natgw_ha", AGENT)
ha = importlib.util.module_from_spec(spec)
sys.modules["natgw_ha"] = ha  # dataclasses look their module up there
spec.loader.exec_module(ha)

ENI, OTHER_ENI = "eni-0000000000000000a", "eni-0000000000000000b"
TAIL = ["--region", "ap-northeast-1", "--cli-connect-timeout", "3", "--cli-read-timeout", "10"]  # every aws call
RTB_A, RTB_B = "rtb-000000000000000a1", "rtb-000000000000000b2"

FAKE_AWS = r'''#!/usr/bin/python3
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_AWS_LOG"], "a") as f:
    f.write(json.dumps(argv) + "\n")
state_path = os.environ["FAKE_AWS_STATE"]
state = json.load(open(state_path))
def opt(name):
    return argv[argv.index(name) + 1]
if os.environ.get("FAKE_AWS_FAIL") and argv[1] in os.environ["FAKE_AWS_FAIL"].split(","):
    sys.exit("An error occurred (UnauthorizedOperation): not allowed")
if argv[1] == "describe-route-tables" and "FAKE_AWS_DESCRIBE" in os.environ:  # what it prints, as latin-1 bytes
    sys.stdout.buffer.write(os.environ["FAKE_AWS_DESCRIBE"].encode("latin-1"))
    sys.exit(0)
if argv[:2] == ["ec2", "describe-route-tables"]:
    ids = argv[argv.index("--route-table-ids") + 1:]
    ids = ids[:next((i for i, a in enumerate(ids) if a.startswith("--")), len(ids))]
    tables = [{"RouteTableId": t, "Routes": [{"DestinationCidrBlock": d, **({"NetworkInterfaceId": e} if e else
               {"GatewayId": "local"}), "State": "active"} for d, e in state[t].items()]} for t in ids]
    print(json.dumps({"RouteTables": tables}, indent=4))
elif argv[:2] in (["ec2", "replace-route"], ["ec2", "create-route"]):
    t, d = opt("--route-table-id"), opt("--destination-cidr-block")
    if argv[1] == "replace-route" and d not in state[t]:
        sys.exit(f"An error occurred (InvalidRoute.NotFound): no route with destination-cidr-block {d} in {t}")
    state[t][d] = opt("--network-interface-id")
    json.dump(state, open(state_path, "w"))
else:
    sys.exit(f"fake aws: unexpected {argv}")
'''


class HealthServer:
    """A natgw /healthz stand-in: mode "ok" (200), "sick" (503 with two reasons), "hang" (accepts the
    connection, never answers: a SIGSTOPped natgw) or "garbage" (answers bytes that are not HTTP)."""

    def __init__(self):
        self.mode = "ok"
        self.closed = threading.Event()  # ends a "hang"
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if outer.mode == "hang":
                    outer.closed.wait(30)
                    return
                if outer.mode == "garbage":
                    self.close_connection = True
                    self.wfile.write(b"\x00\xff SSH-2.0-not-http\r\n\r\n")
                    return
                ok = outer.mode == "ok"
                body = b"ok\n" if ok else b"worker 0 (lcore 1) made no progress for 1.0 s\ninside: link down\n"
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        class S(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.httpd = S(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/healthz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_url() -> str:
    """A URL nobody listens on (a killed natgw: connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/healthz"


class AgentTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="natgw-ha-test-")
        self.addCleanup(self.tmp.cleanup)
        self.dir = Path(self.tmp.name)
        self.aws = self.dir / "aws"
        self.aws.write_text(FAKE_AWS)
        self.aws.chmod(0o755)
        self.calls_path = self.dir / "aws-calls.jsonl"
        self.state_path = self.dir / "routes.json"
        # A's table points at the peer's ENI, B's 0.0.0.0/0 already at ours; B lacks 10.0.0.0/8.
        self.set_routes({RTB_A: {"0.0.0.0/0": OTHER_ENI, "10.0.0.0/8": OTHER_ENI, "172.31.0.0/16": None},
                         RTB_B: {"0.0.0.0/0": ENI}})
        for k, v in (("FAKE_AWS_LOG", str(self.calls_path)), ("FAKE_AWS_STATE", str(self.state_path))):
            os.environ[k] = v
        os.environ.pop("FAKE_AWS_FAIL", None)
        os.environ.pop("FAKE_AWS_DESCRIBE", None)
        self.me, self.peer = HealthServer(), HealthServer()
        self.addCleanup(self.me.close)
        self.addCleanup(self.peer.close)

    def set_routes(self, routes):
        self.state_path.write_text(json.dumps(routes))

    def routes(self):
        return json.loads(self.state_path.read_text())

    def calls(self):
        if not self.calls_path.exists():
            return []
        return [json.loads(line) for line in self.calls_path.read_text().splitlines()]

    def config(self, name="ha.toml", peer_url=None, extra_ha="", extra_aws="", body=None, timeout=2.0) -> Path:
        # A timeout that a loaded test machine always meets (one late answer would be a failed check): only
        # the test of a peer that never answers waits for it, with a short one.
        p = self.dir / name
        p.write_text(body if body is not None else f"""
[ha]
name = "test-a"
self_url = "{self.me.url}"
peer_url = "{peer_url or self.peer.url}"
interval = 0.1
timeout = {timeout}
failures = 3
provider = "aws"
{extra_ha}
[aws]
cli = "{self.aws}"
region = "ap-northeast-1"
network_interface_id = "{ENI}"
route_tables = ["{RTB_A}", "{RTB_B}"]
destinations = ["0.0.0.0/0", "10.0.0.0/8"]
{extra_aws}
""")
        return p

    def agent(self, **kw):
        a = ha.Agent(ha.load_config(str(self.config(**kw))))
        self.addCleanup(a.pool.shutdown)
        return a

    def run_agent(self, *args, cfg=None, timeout=30):
        return subprocess.run([PY, str(AGENT), "--config", str(cfg or self.config()), *args],
                              capture_output=True, text=True, timeout=timeout)

    # ------------------------------------------------------------------------------------- the decision
    def test_a_healthy_peer_is_never_taken_over_from(self):
        a = self.agent()
        for _ in range(20):
            a.round()
        self.assertEqual(self.calls(), [])
        self.assertEqual(a.takeovers, 0)

    def test_a_failed_peer_is_taken_over_after_failures_checks(self):
        a = self.agent()
        a.round()
        self.peer.mode = "sick"
        a.round()
        a.round()
        self.assertEqual(self.calls(), [], "took over before 3 failed checks")
        a.round()
        calls = self.calls()
        self.assertEqual(calls[0], ["ec2", "describe-route-tables", "--route-table-ids", RTB_A, RTB_B,
                                    "--output", "json", *TAIL])
        # A's two routes replaced; B's 0.0.0.0/0 already ours (skipped); B's missing 10.0.0.0/8 created.
        self.assertEqual(calls[1:], [
            ["ec2", "replace-route", "--route-table-id", RTB_A, "--destination-cidr-block", "0.0.0.0/0",
             "--network-interface-id", ENI, *TAIL],
            ["ec2", "replace-route", "--route-table-id", RTB_A, "--destination-cidr-block", "10.0.0.0/8",
             "--network-interface-id", ENI, *TAIL],
            ["ec2", "create-route", "--route-table-id", RTB_B, "--destination-cidr-block", "10.0.0.0/8",
             "--network-interface-id", ENI, *TAIL],
        ])
        r = self.routes()
        self.assertEqual(r[RTB_A], {"0.0.0.0/0": ENI, "10.0.0.0/8": ENI, "172.31.0.0/16": None})
        self.assertEqual(r[RTB_B], {"0.0.0.0/0": ENI, "10.0.0.0/8": ENI})
        # Still down: nothing more.
        for _ in range(5):
            a.round()
        self.assertEqual(len(self.calls()), 4)

    def test_a_peer_that_does_not_answer_or_refuses_counts_as_failed(self):
        self.peer.mode = "hang"
        a = self.agent(timeout=0.3)
        for _ in range(3):
            a.round()
        self.assertEqual(a.takeovers, 1)
        self.assertIn("no answer", a.peer_h.reason)
        self.set_routes({RTB_A: {"0.0.0.0/0": OTHER_ENI}, RTB_B: {"0.0.0.0/0": OTHER_ENI}})
        b = self.agent(name="b.toml", peer_url=closed_url())
        for _ in range(3):
            b.round()
        self.assertEqual(b.takeovers, 1)
        self.assertEqual(self.routes(), {RTB_A: {"0.0.0.0/0": ENI, "10.0.0.0/8": ENI},
                                         RTB_B: {"0.0.0.0/0": ENI, "10.0.0.0/8": ENI}})

    def test_a_peer_that_answers_garbage_counts_as_failed(self):
        self.peer.mode = "garbage"
        a = self.agent()
        for _ in range(3):
            a.round()
        self.assertEqual(a.takeovers, 1)
        self.assertIn("no answer: BadStatusLine", a.peer_h.reason)
        self.assertEqual(self.routes()[RTB_A]["0.0.0.0/0"], ENI)

    def test_odd_describe_output_replaces_every_route(self):
        self.peer.mode = "sick"
        for out in ('{"RouteTables": [["not", "a", "table"]]}', '\xff\xfe{"RouteTables": []}'):
            with self.subTest(out=out):
                os.environ["FAKE_AWS_DESCRIBE"] = out
                self.set_routes({RTB_A: {"0.0.0.0/0": OTHER_ENI, "10.0.0.0/8": OTHER_ENI},
                                 RTB_B: {"0.0.0.0/0": OTHER_ENI, "10.0.0.0/8": OTHER_ENI}})
                a = self.agent()
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    for _ in range(3):
                        a.round()
                self.assertEqual(a.takeovers, 1, err.getvalue())
                self.assertIn("describe-route-tables: unexpected output", err.getvalue())
                self.assertEqual(self.routes()[RTB_B], {"0.0.0.0/0": ENI, "10.0.0.0/8": ENI})

    def test_a_round_that_raises_is_logged_and_the_loop_goes_on(self):
        a = self.agent()
        real, rounds = a.check, []

        def check():
            rounds.append(1)
            if len(rounds) == 2:
                raise RuntimeError("surprise")
            return real()
        a.check = check
        stop = threading.Event()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            t = threading.Thread(target=a.run, args=(stop,))
            t.start()
            deadline = time.monotonic() + 10
            while len(rounds) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            stop.set()
            t.join(10)
        self.assertFalse(t.is_alive())
        self.assertGreaterEqual(len(rounds), 5, err.getvalue())
        self.assertIn("natgw-ha: round failed, carrying on: Traceback", err.getvalue())
        self.assertIn("RuntimeError: surprise", err.getvalue())
        self.assertIn("natgw-ha: stopping", err.getvalue())

    def test_a_provider_that_raises_is_a_failed_takeover(self):
        class Boom:
            def takeover(self, home=False):
                raise KeyError("boom")
        a = ha.Agent(ha.load_config(str(self.config())), provider=Boom())
        self.addCleanup(a.pool.shutdown)
        self.peer.mode = "sick"
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            for _ in range(3):
                a.round()
        self.assertEqual((a.takeovers, a.retry.failed), (0, 1))
        self.assertIn("takeover FAILED", err.getvalue())
        self.assertIn("KeyError: 'boom'", err.getvalue())

    def test_an_unhealthy_self_does_not_take_over(self):
        a = self.agent()
        self.me.mode = "sick"
        self.peer.mode = "sick"
        for _ in range(6):
            a.round()
        self.assertEqual(self.calls(), [])
        self.assertIn("HTTP 503: worker 0 (lcore 1) made no progress", a.self_h.reason)
        # This instance recovers while the peer is still down: now it takes over.
        self.me.mode = "ok"
        a.round()
        self.assertEqual(a.takeovers, 1)
        self.assertEqual(self.routes()[RTB_A]["0.0.0.0/0"], ENI)

    def test_no_flapping_a_recovered_peer_gets_nothing_back(self):
        a = self.agent()
        self.peer.mode = "sick"
        for _ in range(3):
            a.round()
        self.assertEqual(a.takeovers, 1)
        n = len(self.calls())
        self.peer.mode = "ok"
        for _ in range(10):
            a.round()
        self.assertEqual(len(self.calls()), n, "touched the routes while the peer was healthy")
        # A new outage of the peer: a new takeover, which finds everything here already (describe only).
        self.peer.mode = "sick"
        for _ in range(3):
            a.round()
        self.assertEqual(a.takeovers, 2)
        self.assertEqual([c[1] for c in self.calls()[n:]], ["describe-route-tables"])

    def test_preempt_takes_the_routes_back_once_healthy(self):
        a = self.agent(extra_ha="preempt = true")
        a.round()
        a.round()
        self.assertEqual(self.calls(), [])
        a.round()  # healthy for 3 checks, peer healthy too: preempt
        self.assertEqual(a.takeovers, 1)
        self.assertEqual(self.routes()[RTB_A]["0.0.0.0/0"], ENI)
        for _ in range(5):
            a.round()
        self.assertEqual(a.takeovers, 1, "preempted again with the routes already here")

    def test_preempt_with_home_route_tables_takes_back_only_those_and_all_when_the_peer_fails(self):
        a = self.agent(extra_ha="preempt = true", extra_aws=f'home_route_tables = ["{RTB_A}"]')
        for _ in range(3):
            a.round()
        self.assertEqual(a.takeovers, 1)
        self.assertEqual(self.calls()[0][:5], ["ec2", "describe-route-tables", "--route-table-ids", RTB_A, "--output"])
        self.assertEqual(self.routes()[RTB_B], {"0.0.0.0/0": ENI}, "preempt touched the peer's table")
        self.assertEqual(self.routes()[RTB_A]["10.0.0.0/8"], ENI)
        self.set_routes({RTB_A: {"0.0.0.0/0": ENI}, RTB_B: {"0.0.0.0/0": OTHER_ENI}})
        self.peer.mode = "sick"
        for _ in range(3):
            a.round()
        self.assertEqual(a.takeovers, 2, "a preempted instance must still take over when the peer fails")
        self.assertEqual(self.routes()[RTB_B], {"0.0.0.0/0": ENI, "10.0.0.0/8": ENI})

    def test_preempt_after_a_partition_each_takes_back_its_home_tables(self):
        # Each agent sees its own natgw on one URL and the peer's on another, so that a partition of the
        # management path (each sees the other fail, both healthy) can be had.
        b_self, a_seen_by_b = HealthServer(), HealthServer()
        self.addCleanup(b_self.close)
        self.addCleanup(a_seen_by_b.close)
        b_seen_by_a = self.peer
        both = {"0.0.0.0/0": None, "10.0.0.0/8": None}
        self.set_routes({RTB_A: dict.fromkeys(both, ENI), RTB_B: dict.fromkeys(both, OTHER_ENI)})
        a = self.agent(extra_ha="preempt = true", extra_aws=f'home_route_tables = ["{RTB_A}"]')
        text = (self.config(name="b.toml", extra_ha="preempt = true", extra_aws=f'home_route_tables = ["{RTB_B}"]')
                .read_text().replace(self.me.url, b_self.url).replace(self.peer.url, a_seen_by_b.url)
                .replace(ENI, OTHER_ENI))
        b = ha.Agent(ha.load_config(str(self.config(name="b.toml", body=text))))
        self.addCleanup(b.pool.shutdown)
        err = io.StringIO()

        def rounds(n):
            with contextlib.redirect_stderr(err):
                for _ in range(n):
                    a.round()
                    b.round()
        rounds(3)  # both preempt: their home tables are theirs already
        self.assertEqual((a.takeovers, b.takeovers), (1, 1), err.getvalue())
        b_seen_by_a.mode = a_seen_by_b.mode = "sick"
        rounds(3)  # the partition: both take everything, B last
        self.assertEqual((a.takeovers, b.takeovers), (2, 2), err.getvalue())
        self.assertEqual(self.routes(), {RTB_A: dict.fromkeys(both, OTHER_ENI), RTB_B: dict.fromkeys(both, OTHER_ENI)})
        n = len(self.calls())
        b_seen_by_a.mode = a_seen_by_b.mode = "ok"
        rounds(5)  # healed: each takes back its home tables, no more
        self.assertEqual(self.routes(), {RTB_A: dict.fromkeys(both, ENI), RTB_B: dict.fromkeys(both, OTHER_ENI)},
                         err.getvalue())
        changes = [c for c in self.calls()[n:] if c[1] != "describe-route-tables"]
        self.assertEqual([(c[3], c[7]) for c in changes], [(RTB_A, ENI), (RTB_A, ENI)])
        self.assertEqual([c[3:5] for c in self.calls()[n:] if c[1] == "describe-route-tables"],
                         [[RTB_A, "--output"], [RTB_B, "--output"]])
        self.assertEqual((a.takeovers, b.takeovers), (3, 3))

    def test_once_home_is_the_operators_failback_of_this_azs_tables(self):
        self.set_routes({RTB_A: {"0.0.0.0/0": OTHER_ENI}, RTB_B: {"0.0.0.0/0": OTHER_ENI}})
        cfg = self.config(extra_aws=f'home_route_tables = ["{RTB_A}"]')
        r = self.run_agent("--once", "--home", cfg=cfg)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.routes()[RTB_A]["0.0.0.0/0"], ENI)
        self.assertEqual(self.routes()[RTB_B], {"0.0.0.0/0": OTHER_ENI})
        r = self.run_agent("--home", cfg=cfg)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--force and --home go with --once", r.stderr)

    def test_a_failed_takeover_is_retried_backing_off(self):
        os.environ["FAKE_AWS_FAIL"] = "replace-route,create-route"
        a = self.agent()
        self.peer.mode = "sick"
        tries = []
        for i in range(12):
            n = len(self.calls())
            a.round()
            if len(self.calls()) > n:
                tries.append(i)
        self.assertEqual(a.takeovers, 0)
        # From the 3rd failed check: at once, then 1, 3 and 7 checks skipped between tries.
        self.assertEqual(tries, [2, 3, 5, 9])
        del os.environ["FAKE_AWS_FAIL"]
        for _ in range(8):
            a.round()
        self.assertEqual(a.takeovers, 1)
        self.assertEqual(self.routes()[RTB_A]["0.0.0.0/0"], ENI)

    def test_a_failing_preempt_does_not_delay_the_takeover_from_a_dead_peer(self):
        os.environ["FAKE_AWS_FAIL"] = "replace-route,create-route"
        a = self.agent(extra_ha="preempt = true", extra_aws=f'home_route_tables = ["{RTB_A}"]')
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            for _ in range(12):  # preempt tries at checks 3, 4, 6 and 10: 7 checks to wait now
                a.round()
            self.assertEqual(err.getvalue().count("takeover FAILED"), 4, err.getvalue())
            del os.environ["FAKE_AWS_FAIL"]
            self.peer.mode = "sick"
            a.round()
            a.round()
            self.assertEqual(a.takeovers, 0)
            a.round()  # the 3rd failed check: the takeover, at once
        self.assertEqual(a.takeovers, 1, err.getvalue())
        self.assertEqual(self.routes()[RTB_B]["10.0.0.0/8"], ENI)

    def test_a_new_outage_of_the_peer_starts_its_retries_afresh(self):
        os.environ["FAKE_AWS_FAIL"] = "replace-route,create-route"
        a = self.agent()
        self.peer.mode = "sick"
        for _ in range(10):  # tries at checks 3, 4, 6 and 10: 7 checks to wait now
            a.round()
        self.peer.mode = "ok"
        a.round()
        a.round()
        self.peer.mode = "sick"
        tries = []
        for i in range(5):
            n = len(self.calls())
            a.round()
            if len(self.calls()) > n:
                tries.append(i)
        self.assertEqual(tries, [2, 3], "the new outage's tries did not start at once, then 1 check apart")
        self.assertEqual(a.takeovers, 0)

    def test_command_provider_runs_once_per_target_and_skips_what_check_says_is_here(self):
        out = self.dir / "cmd.log"
        cfg = self.dir / "cmd.toml"
        cfg.write_text(f"""
[ha]
self_url = "{self.me.url}"
peer_url = "{self.peer.url}"
interval = 0.1
timeout = 2.0
failures = 2
provider = "command"
[command]
takeover = ["sh", "-c", "echo took $0 $NATGW_HA_TARGET >> {out}", "{{target}}"]
check = ["sh", "-c", "test $0 = already", "{{target}}"]
targets = ["default", "already", "198.51.100.0/24"]
""")
        a = ha.Agent(ha.load_config(str(cfg)))
        self.addCleanup(a.pool.shutdown)
        self.peer.mode = "sick"
        a.round()
        a.round()
        self.assertEqual(a.takeovers, 1)
        self.assertEqual(out.read_text().splitlines(), ["took default default",
                                                        "took 198.51.100.0/24 198.51.100.0/24"])

    def test_a_command_that_times_out_is_killed_with_what_it_started(self):
        late = self.dir / "late"
        cfg = self.dir / "slow.toml"
        cfg.write_text(f"""
[ha]
self_url = "{self.me.url}"
peer_url = "{self.peer.url}"
provider = "command"
[command]
takeover = ["sh", "-c", "(sleep 1; echo changed the route > {late}) & wait"]
command_timeout = 0.3
""")
        p = ha.CommandProvider(ha.load_config(str(cfg)).command, "test")
        t0 = time.monotonic()
        r = p.takeover()
        self.assertLess(time.monotonic() - t0, 1)
        self.assertFalse(r.ok)
        self.assertEqual(r.errors, ["routes: exit 124: timed out after 0.3 s"])
        time.sleep(1.5)
        self.assertFalse(late.exists(), "a child of the timed-out command ran on")

    def test_an_interrupted_command_is_killed_with_what_it_started(self):
        """Ctrl-C on --once while a command runs: it and what it started stop, the interrupt goes on."""
        late = self.dir / "late-int"
        main = threading.get_ident()  # the signal must interrupt the main thread's wait, as a Ctrl-C does
        timer = threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT))
        timer.start()
        with self.assertRaises(KeyboardInterrupt):
            ha._run(["sh", "-c", f"(sleep 1; echo changed the route > {late}) & wait"], timeout=10)
        timer.join()
        time.sleep(1.5)
        self.assertFalse(late.exists(), "a child of the interrupted command ran on")

    def test_a_stop_during_the_checks_changes_no_route(self):
        """SIGTERM while the round's checks run, the third failed one among them: no takeover on the way out."""
        a = self.agent()
        self.peer.mode = "sick"
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            a.round(), a.round()
            a.stop.set()
            a.round()
        self.assertEqual(a.takeovers, 0, err.getvalue())
        self.assertNotIn("TAKING OVER", err.getvalue())

    # ------------------------------------------------------------------------------------- the command
    def test_the_daemon_logs_each_change_and_takes_over(self):
        self.peer.mode = "sick"
        p = subprocess.Popen([PY, str(AGENT), "--config", str(self.config())], stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.routes()[RTB_A]["0.0.0.0/0"] != ENI:
                time.sleep(0.05)
        finally:
            p.terminate()
            _, err = p.communicate(timeout=10)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(self.routes()[RTB_A]["0.0.0.0/0"], ENI, err)
        self.assertIn(f"this instance ({self.me.url}): healthy", err)
        self.assertIn(f"peer ({self.peer.url}): failed check 1/3: HTTP 503: worker 0 (lcore 1)", err)
        self.assertIn("TAKING OVER (aws): peer failed 3 checks in a row", err)
        self.assertRegex(err, r"took over in [0-9.]+ s: moved rtb-000000000000000a1 0.0.0.0/0 -> eni-")
        self.assertIn("natgw-ha: stopping", err)

    def test_check_prints_both_states(self):
        r = self.run_agent("--check")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, f"self {self.me.url}: ok\npeer {self.peer.url}: ok\n")
        self.peer.mode = "sick"
        r = self.run_agent("--check")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"peer {self.peer.url}: UNHEALTHY: HTTP 503: worker 0 (lcore 1) made no progress for 1.0 s; "
                      "inside: link down", r.stdout)
        self.assertEqual(self.calls(), [])

    def test_endpoint_url_is_passed_to_every_aws_call(self):
        url = "https://vpce-0123456789abcdef0-abcdefgh.ec2.ap-northeast-1.vpce.amazonaws.com"
        r = self.run_agent("--once", cfg=self.config(extra_aws=f'endpoint_url = "{url}"'))
        self.assertEqual(r.returncode, 0, r.stderr)
        calls = self.calls()
        self.assertEqual([c[1] for c in calls], ["describe-route-tables", "replace-route", "replace-route",
                                                 "create-route"])
        for c in calls:
            self.assertEqual(c[-2:], ["--endpoint-url", url])

    def test_once_takes_over_now_unless_unhealthy(self):
        self.me.mode = "sick"
        r = self.run_agent("--once")
        self.assertEqual(r.returncode, 1)
        self.assertIn("this instance is unhealthy", r.stderr)
        self.assertEqual(self.calls(), [])
        r = self.run_agent("--once", "--force")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.routes()[RTB_A]["0.0.0.0/0"], ENI)
        os.environ["FAKE_AWS_FAIL"] = "replace-route,create-route,describe-route-tables"
        self.set_routes({RTB_A: {"0.0.0.0/0": OTHER_ENI}, RTB_B: {"0.0.0.0/0": OTHER_ENI}})
        self.me.mode = "ok"
        r = self.run_agent("--once")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("takeover FAILED", r.stderr)
        self.assertIn("UnauthorizedOperation", r.stderr)

    def test_bad_configs_name_the_file_and_the_key(self):
        good = self.config().read_text()
        cmd = good.split("[aws]")[0].replace('provider = "aws"', 'provider = "command"') + """
[command]
takeover = ["ip", "route", "replace", "{target}", "via", "10.0.1.20"]
check = ["sh", "-c", "ip route show {target} | grep -q 'via 10.0.1.20 '"]
targets = ["default"]
"""
        r = self.run_agent("--validate", cfg=self.config(name="cmd.toml", body=cmd))
        self.assertEqual(r.returncode, 0, r.stderr)
        cases = [
            (good.replace("interval = 0.1", "intervall = 0.1"), "ha.intervall: unknown key"),
            (good.replace('provider = "aws"', 'provider = "gcp"'), 'ha.provider: must be "aws" or "command"'),
            (good.replace("failures = 3", "failures = 0"), "ha.failures: must be between 1 and 1000"),
            (good.replace("failures = 3", 'failures = "3"'), "ha.failures: must be int"),
            (good.replace(f'self_url = "{self.me.url}"', 'self_url = "127.0.0.1:9100"'), "ha.self_url: must be"),
            (good.replace(f'self_url = "{self.me.url}"', ""), "ha.self_url: missing"),
            (good.replace(f'peer_url = "{self.peer.url}"', 'peer_url = "http://10.0.0.1:910x/healthz"'),
             "ha.peer_url: must be an http:// or https:// URL with a host"),
            (good.replace(f'peer_url = "{self.peer.url}"', 'peer_url = "http://10.0.0.1:70000/healthz"'),
             "ha.peer_url: must be"),
            (good.replace(f'peer_url = "{self.peer.url}"', 'peer_url = "http:///healthz"'), "ha.peer_url: must be"),
            (good.replace(f'peer_url = "{self.peer.url}"', 'peer_url = "ftp://10.0.0.1/healthz"'),
             "ha.peer_url: must be"),
            (good.replace(f'"{RTB_B}"', '"vpc-123"'), "aws.route_tables: 'vpc-123' is not a route table id"),
            (good.replace('"10.0.0.0/8"', '"10.0.0.1/8"'), "aws.destinations: '10.0.0.1/8' is not an IPv4 CIDR"),
            (good.replace(f'network_interface_id = "{ENI}"', ""), "aws.network_interface_id: missing"),
            (good + '\nendpoint_url = "ec2.ap-northeast-1.amazonaws.com"\n',
             "aws.endpoint_url: must be an http:// or https:// URL with a host (the EC2 API)"),
            (good + '\nhome_route_tables = ["rtb-0ccc"]\n',
             "aws.home_route_tables: 'rtb-0ccc' is not one of the route_tables above"),
            (good.replace(str(self.aws), "/nonexistent/aws"), "aws.cli: '/nonexistent/aws' not found"),
            (good.split("[aws]")[0], "[aws]: missing"),
            (good + "\n[extra]\n", "extra: unknown table"),
            ("[ha\n", "not valid TOML"),
            (good + "\ncommand_timeout = 0\n", "aws.command_timeout: must be more than 0 and at most 3600 seconds"),
            (cmd + 'command_timeout = -1\n', "command.command_timeout: must be more than 0"),
            (cmd.replace('targets = ["default"]', ""), "command.takeover: uses {target}, but targets is empty"),
            (cmd.replace('targets = ["default"]', "").replace('"{target}"', '"default"', 1),
             "command.check: uses {target}, but targets is empty"),
        ]
        for body, want in cases:
            with self.subTest(want=want):
                cfg = self.config(name="bad.toml", body=body)
                r = self.run_agent("--validate", cfg=cfg)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn(f"natgw-ha: bad config: {cfg}: {want}", r.stderr)
        r = self.run_agent("--validate", cfg=self.dir / "missing.toml")
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing.toml: cannot read", r.stderr)
        # The daemon itself exits 2 too: what deploy/natgw-ha.service's RestartPreventExitStatus=2 relies on.
        r = self.run_agent(cfg=self.dir / "missing.toml")
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing.toml: cannot read", r.stderr)
        self.assertIn("RestartPreventExitStatus=2", (SRC / "deploy" / "natgw-ha.service").read_text())

    def test_preempt_without_home_routes_is_a_warning(self):
        r = self.run_agent("--validate", cfg=self.config(extra_ha="preempt = true"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("natgw-ha: warning: ", r.stderr)
        self.assertIn("ha.preempt = true without aws.home_route_tables: a preempt takes every route", r.stderr)
        r = self.run_agent("--validate", cfg=self.config(extra_ha="preempt = true",
                                                          extra_aws=f'home_route_tables = ["{RTB_A}"]'))
        self.assertEqual((r.returncode, r.stderr), (0, ""))

    def test_the_shipped_example_is_valid(self):
        text = (SRC / "config" / "ha.example.toml").read_text()
        self.assertIn('cli = "/usr/bin/aws"', text)
        cfg = self.config(name="example.toml", body=text.replace('"/usr/bin/aws"', f'"{self.aws}"'))
        r = self.run_agent("--validate", cfg=cfg)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("OK: provider aws, takeover after 3 x 1 s", r.stdout)
        # Its commented-out command provider, uncommented, is valid too.
        lines = text.split("[aws]")[0].replace('provider = "aws"', 'provider = "command"').splitlines()
        tail = text.split("# [command]")[1]
        cmd = "[command]\n" + "\n".join(l[2:] for l in tail.splitlines() if l.startswith("# ") and " = " in l)
        cfg = self.config(name="example-cmd.toml", body="\n".join(lines) + "\n" + cmd + "\n")
        r = self.run_agent("--validate", cfg=cfg)
        self.assertEqual(r.returncode, 0, cfg.read_text() + r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)

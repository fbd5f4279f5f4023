#!/usr/bin/python3
"""natgw-ha: health-checked route failover between two natgw instances (one per AZ).

Each instance runs natgw and this agent. The agent checks its own natgw's health URL and the peer's
(natgw's GET /healthz: 200 "ok", or 503 with the reasons) every `interval` seconds; an answer that does not
come within `timeout` counts as a failure. When the peer has failed `failures` checks in a row and this
instance is healthy, the agent takes over: it points every configured route at this instance
(provider "aws": `aws ec2 replace-route ... --network-interface-id OWN_ENI` for each route table and
destination, skipping routes `aws ec2 describe-route-tables` shows already pointing here; provider
"command": a command of yours, once per target).

Rules: never take over while this instance is itself unhealthy; never give routes back on its own (a
peer that recovers stays standby; with `preempt = true`, an instance takes its home routes back once it
has been healthy for `failures` checks in a row: `home_route_tables` / `home_targets`, else all of them,
with a warning at start);
log every change of state with its reason.
Sessions are not synchronised: flows through a failed instance break, new flows work through the survivor.

    natgw-ha.py --config /etc/natgw/ha.toml             run the agent (systemd: deploy/natgw-ha.service)
    natgw-ha.py --config FILE --check                  print both health states; exit 0 when both are ok
    natgw-ha.py --config FILE --once [--home] [--force]
                                                       take over now: every route, or with --home only this
                                                       instance's home routes (an operator's failback);
                                                       refused while this instance is unhealthy unless --force
    natgw-ha.py --config FILE --validate               check the config and exit

Exit status: 0 fine, 1 unhealthy (--check) or a takeover failed (--once), 2 bad config or usage.
Python 3.11 standard library only (tomllib); the AWS provider runs the aws CLI (Debian: awscli).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import traceback
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

PROG = "natgw-ha"


def log(msg: str) -> None:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    print(f"{stamp} {PROG}: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ config
class ConfigError(Exception):
    pass


@dataclass
class AwsConfig:
    cli: str
    region: str | None
    network_interface_id: str
    route_tables: list[str]
    home_route_tables: list[str]  # this AZ's: what preempt and --once --home take back
    destinations: list[str]
    command_timeout: float
    endpoint_url: str | None = None  # passed as --endpoint-url: the EC2 API by a VPC endpoint's own name


@dataclass
class CommandConfig:
    takeover: list[str]
    check: list[str] | None
    targets: list[str]
    home_targets: list[str]
    command_timeout: float


@dataclass
class Config:
    path: str
    name: str
    self_url: str
    peer_url: str
    interval: float
    timeout: float
    failures: int
    preempt: bool
    provider: str
    aws: AwsConfig | None = None
    command: CommandConfig | None = None
    warnings: list[str] = field(default_factory=list)  # valid, but likely not what was meant


HA_KEYS = {"name", "self_url", "peer_url", "interval", "timeout", "failures", "preempt", "provider"}
AWS_KEYS = {"cli", "region", "network_interface_id", "route_tables", "home_route_tables", "destinations",
            "command_timeout", "endpoint_url"}
COMMAND_KEYS = {"takeover", "check", "targets", "home_targets", "command_timeout"}


def load_config(path: str) -> Config:
    """Read and check the agent's TOML config; ConfigError names the file and the key."""
    def err(key: str, why: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {why}")

    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None

    for table in doc:
        if table not in ("ha", "aws", "command"):
            raise err(table, "unknown table (expected [ha], [aws] or [command])")
    if not isinstance(doc.get("ha"), dict):
        raise err("[ha]", "missing (self_url, peer_url, provider, ...)")

    def check_keys(table: str, known: set[str]) -> dict:
        t = doc.get(table)
        if not isinstance(t, dict):
            raise err(f"[{table}]", "must be a table")
        for k in t:
            if k not in known:
                raise err(f"{table}.{k}", f"unknown key (known: {', '.join(sorted(known))})")
        return t

    def get(t: dict, table: str, key: str, kind, default=None, required=True):
        if key not in t:
            if required and default is None:
                raise err(f"{table}.{key}", "missing")
            return default
        v = t[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if kind is list:
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                raise err(f"{table}.{key}", "must be a list of non-empty strings")
        elif not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise err(f"{table}.{key}", f"must be {'a number' if kind is float else kind.__name__}, not {v!r}")
        return v

    def url(t: dict, key: str, table: str = "ha", what: str = "natgw's /healthz") -> str:
        v = get(t, table, key, str)
        try:
            u = urllib.parse.urlsplit(v)
            _ = u.port  # raises ValueError on a port that is not a number in 0..65535
            ok = u.scheme in ("http", "https") and bool(u.hostname)
        except ValueError:
            ok = False
        if not ok:
            raise err(f"{table}.{key}", f"must be an http:// or https:// URL with a host ({what}), not {v!r}")
        return v

    def executable(key: str, prog: str) -> str:
        found = shutil.which(prog)
        if not found:
            raise err(key, f"{prog!r} not found or not executable")
        return found

    def seconds(t: dict, table: str, key: str) -> float:
        v = get(t, table, key, float, default=30.0)
        if not 0 < v <= 3600:
            raise err(f"{table}.{key}", f"must be more than 0 and at most 3600 seconds, not {v}")
        return v

    def home_of(t: dict, table: str, key: str, every: list[str]) -> list[str]:
        home = get(t, table, key, list, default=[], required=False)
        for h in home:
            if h not in every:
                raise err(f"{table}.{key}", f"{h!r} is not one of the {key.removeprefix('home_')} above")
        return home

    ha = check_keys("ha", HA_KEYS)
    cfg = Config(
        path=path,
        name=get(ha, "ha", "name", str, default=os.uname().nodename),
        self_url=url(ha, "self_url"),
        peer_url=url(ha, "peer_url"),
        interval=get(ha, "ha", "interval", float, default=1.0),
        timeout=get(ha, "ha", "timeout", float, default=1.0),
        failures=get(ha, "ha", "failures", int, default=3),
        preempt=get(ha, "ha", "preempt", bool, default=False, required=False),
        provider=get(ha, "ha", "provider", str),
    )
    if cfg.self_url == cfg.peer_url:
        raise err("ha.peer_url", "is the same as self_url (the peer is the other instance)")
    for key, v, low in (("interval", cfg.interval, 0.05), ("timeout", cfg.timeout, 0.05)):
        if not v >= low or v > 3600:
            raise err(f"ha.{key}", f"must be between {low} and 3600 seconds, not {v}")
    if not 1 <= cfg.failures <= 1000:
        raise err("ha.failures", f"must be between 1 and 1000, not {cfg.failures}")

    if cfg.provider == "aws":
        if "command" in doc:
            raise err("[command]", 'given, but provider = "aws" (use one)')
        a = check_keys("aws", AWS_KEYS) if "aws" in doc else {}
        if "aws" not in doc:
            raise err("[aws]", 'missing (provider = "aws" needs network_interface_id, route_tables, destinations)')
        eni = get(a, "aws", "network_interface_id", str)
        if not eni.startswith("eni-"):
            raise err("aws.network_interface_id", f"must be an ENI id (eni-...), not {eni!r}")
        rtbs = get(a, "aws", "route_tables", list)
        if not rtbs:
            raise err("aws.route_tables", "is empty")
        for r in rtbs:
            if not r.startswith("rtb-"):
                raise err("aws.route_tables", f"{r!r} is not a route table id (rtb-...)")
        dests = get(a, "aws", "destinations", list)
        if not dests:
            raise err("aws.destinations", "is empty")
        for d in dests:
            try:
                n = ipaddress.IPv4Network(d, strict=True)
            except ValueError as e:
                raise err("aws.destinations", f"{d!r} is not an IPv4 CIDR block: {e}") from None
            if str(n) != d:
                raise err("aws.destinations", f"{d!r}: write it as {n}")
        cfg.aws = AwsConfig(
            cli=executable("aws.cli", get(a, "aws", "cli", str, default="aws")),
            region=get(a, "aws", "region", str, required=False),
            network_interface_id=eni,
            route_tables=rtbs,
            home_route_tables=home_of(a, "aws", "home_route_tables", rtbs),
            destinations=dests,
            command_timeout=seconds(a, "aws", "command_timeout"),
            endpoint_url=url(a, "endpoint_url", "aws", "the EC2 API") if "endpoint_url" in a else None,
        )
    elif cfg.provider == "command":
        if "aws" in doc:
            raise err("[aws]", 'given, but provider = "command" (use one)')
        if "command" not in doc:
            raise err("[command]", 'missing (provider = "command" needs takeover = [program, args...])')
        c = check_keys("command", COMMAND_KEYS)
        take = get(c, "command", "takeover", list)
        if not take:
            raise err("command.takeover", "is empty (a program and its arguments)")
        check = get(c, "command", "check", list, required=False)
        if check is not None and not check:
            raise err("command.check", "is empty (leave it out for none)")
        targets = get(c, "command", "targets", list, default=[], required=False)
        for key, argv in (("takeover", take), ("check", check or [])):
            if not targets and any("{target}" in arg for arg in argv):
                raise err(f"command.{key}", "uses {target}, but targets is empty (the command runs once, without one)")
        executable("command.takeover", take[0])
        if check:
            executable("command.check", check[0])
        cfg.command = CommandConfig(
            takeover=take, check=check,
            targets=targets,
            home_targets=home_of(c, "command", "home_targets", targets),
            command_timeout=seconds(c, "command", "command_timeout"),
        )
    else:
        raise err("ha.provider", f'must be "aws" or "command", not {cfg.provider!r}')
    home = cfg.aws.home_route_tables if cfg.aws else cfg.command.home_targets
    if cfg.preempt and not home:
        key = "aws.home_route_tables" if cfg.aws else "command.home_targets"
        cfg.warnings.append(f"{path}: ha.preempt = true without {key}: a preempt takes every route, the peer's "
                            "AZ's too")
    return cfg


# ------------------------------------------------------------------------------------------------ health
@dataclass
class Health:
    ok: bool
    reason: str  # "ok", or why not: the 503's reasons, the HTTP status, or the connection error


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy


def probe(url: str, timeout: float) -> Health:
    """GET url: healthy only on 200. No answer within `timeout` (a stopped or hung natgw) is a failure."""
    try:
        with _opener.open(url, timeout=timeout) as r:
            r.read(4096)
            return Health(True, "ok")
    except urllib.error.HTTPError as e:
        try:
            body = e.read(4096).decode(errors="replace")
        except OSError:
            body = ""
        reasons = "; ".join(line for line in body.splitlines() if line.strip())
        return Health(False, f"HTTP {e.code}" + (f": {reasons}" if reasons else ""))
    except urllib.error.URLError as e:
        return Health(False, f"no answer: {e.reason}")
    except (OSError, ValueError) as e:  # timeouts mid-read, resets, a malformed answer
        return Health(False, f"no answer: {e}")
    except Exception as e:  # anything else (http.client.BadStatusLine: not HTTP) is a failed check too
        return Health(False, f"no answer: {type(e).__name__}: {e}")


def _gist(reason: str) -> str:
    """A reason without its durations ("made no progress for 2.5 s"): a stall that goes on is not news."""
    return re.sub(r"\d+(\.\d+)? s\b", "N s", reason)


# --------------------------------------------------------------------------------------------- providers
@dataclass
class TakeoverResult:
    ok: bool
    changed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.changed:
            parts.append("moved " + ", ".join(self.changed))
        if self.skipped:
            parts.append("already here: " + ", ".join(self.skipped))
        if self.errors:
            parts.append("failed: " + "; ".join(self.errors))
        return "; ".join(parts) or "nothing to do"


def _run(argv: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run argv, its output decoded (bytes that are not UTF-8 replaced). In a session of its own: on timeout
    its whole process group is killed, so that what a `sh -c` started cannot change a route later."""
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             encoding="utf-8", errors="replace", env=env, start_new_session=True)
    except OSError as e:
        return subprocess.CompletedProcess(argv, 127, "", str(e))
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException as e:  # a timeout, or Ctrl-C on --once: nothing it started may act later
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait()
        for f in (p.stdout, p.stderr):
            f.close()  # not read to the end: a child that left the group may hold them open
        if not isinstance(e, subprocess.TimeoutExpired):
            raise
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout:g} s")
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def _why(r: subprocess.CompletedProcess) -> str:
    text = (r.stderr.strip() or r.stdout.strip()).splitlines()
    return f"exit {r.returncode}" + (f": {text[-1]}" if text else "")


class AwsProvider:
    """Point each (route table, destination) at this instance's ENI with the aws CLI."""

    def __init__(self, c: AwsConfig):
        self.c = c

    def _aws(self, *args: str) -> subprocess.CompletedProcess:
        argv = [self.c.cli, "ec2", *args]
        if self.c.region:
            argv += ["--region", self.c.region]
        # The CLI's own limits, well inside command_timeout: a hung connection is retried, not waited out.
        argv += ["--cli-connect-timeout", "3", "--cli-read-timeout", "10"]
        if self.c.endpoint_url:
            argv += ["--endpoint-url", self.c.endpoint_url]
        return _run(argv, self.c.command_timeout)

    def current(self, rtbs: list[str]) -> dict[tuple[str, str], str | None] | None:
        """(route table, destination) -> the ENI it points at (None: elsewhere, e.g. a gateway), for the
        tables `rtbs`; None when describe-route-tables failed."""
        r = self._aws("describe-route-tables", "--route-table-ids", *rtbs, "--output", "json")
        if r.returncode != 0:
            log(f"aws ec2 describe-route-tables failed ({_why(r)}): replacing every route")
            return None
        try:
            doc = json.loads(r.stdout)
            out = {}
            for t in doc["RouteTables"]:
                for route in t.get("Routes", []):
                    if "DestinationCidrBlock" in route:
                        out[(t["RouteTableId"], route["DestinationCidrBlock"])] = route.get("NetworkInterfaceId")
            return out
        except Exception as e:  # not JSON, or not the shape expected (a list where a dict was, ...)
            log(f"aws ec2 describe-route-tables: unexpected output ({type(e).__name__}: {e}): replacing every route")
            return None

    def takeover(self, home: bool = False) -> TakeoverResult:
        """Every configured route table, or with `home` this instance's own (all when none are named)."""
        res = TakeoverResult(True)
        rtbs = (self.c.home_route_tables or self.c.route_tables) if home else self.c.route_tables
        now = self.current(rtbs)
        eni = self.c.network_interface_id
        for rtb in rtbs:
            for dst in self.c.destinations:
                what = f"{rtb} {dst}"
                if now is not None and now.get((rtb, dst), "absent") == eni:
                    res.skipped.append(what)
                    continue
                # A destination missing from the table is created: the config says it belongs here.
                verb = "create-route" if now is not None and (rtb, dst) not in now else "replace-route"
                r = self._aws(verb, "--route-table-id", rtb, "--destination-cidr-block", dst,
                              "--network-interface-id", eni)
                if r.returncode == 0:
                    res.changed.append(f"{what} -> {eni}")
                else:
                    res.ok = False
                    res.errors.append(f"{verb} {what}: {_why(r)}")
        return res


class CommandProvider:
    """Run the configured command once per target ({target} in its arguments, $NATGW_HA_TARGET), after
    an optional check command that exits 0 when the target already points here."""

    def __init__(self, c: CommandConfig, name: str):
        self.c, self.name = c, name

    def _argv(self, tmpl: list[str], target: str | None) -> list[str]:
        return [a.replace("{target}", target) if target is not None else a for a in tmpl]

    def takeover(self, home: bool = False) -> TakeoverResult:
        res = TakeoverResult(True)
        targets = (self.c.home_targets or self.c.targets) if home else self.c.targets
        for target in targets or [None]:
            what = target if target is not None else "routes"
            env = dict(os.environ, NATGW_HA_NAME=self.name, NATGW_HA_TARGET=target or "")
            if self.c.check:
                r = _run(self._argv(self.c.check, target), self.c.command_timeout, env)
                if r.returncode == 0:
                    res.skipped.append(what)
                    continue
            r = _run(self._argv(self.c.takeover, target), self.c.command_timeout, env)
            if r.returncode == 0:
                res.changed.append(what)
            else:
                res.ok = False
                res.errors.append(f"{what}: {_why(r)}")
        return res


def provider_of(cfg: Config):
    return AwsProvider(cfg.aws) if cfg.provider == "aws" else CommandProvider(cfg.command, cfg.name)


# ------------------------------------------------------------------------------------------------- agent
class Backoff:
    """Retries of a failing takeover: at once, then 1, 3, 7, 15 and at most 30 checks between tries (an API
    that throttles must not be hammered every second)."""

    def __init__(self):
        self.failed = 0  # tries in a row that failed
        self.skip = 0    # checks still to let pass before the next try

    def reset(self) -> None:
        self.failed = self.skip = 0

    def wait(self) -> bool:
        """True while this check is one to let pass (it counts)."""
        if self.skip > 0:
            self.skip -= 1
            return True
        return False

    def note(self, ok: bool) -> None:
        if ok:
            self.reset()
        else:
            self.failed += 1
            self.skip = min(2 ** (self.failed - 1) - 1, 30)


class Agent:
    """The decision, one round at a time (round() is what the loop and the tests call)."""

    def __init__(self, cfg: Config, provider=None):
        self.cfg = cfg
        self.provider = provider or provider_of(cfg)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="probe")
        self.self_h: Health | None = None
        self.peer_h: Health | None = None
        self.peer_failed = 0     # consecutive failed peer checks
        self.self_good = 0       # consecutive healthy self checks
        self.took_over = False   # everything, for this outage of the peer
        self.preempted = False   # the home routes (preempt), for this healthy spell of ours
        self.said_blocked = False
        self.takeovers = 0
        # Each its own: a preempt that keeps failing must not delay the takeover from a dead peer.
        self.retry = Backoff()          # the takeover, for this outage of the peer
        self.preempt_retry = Backoff()  # the preempt, for this healthy spell of ours
        self.stop = threading.Event()   # run()'s: set by SIGTERM/SIGINT

    def check(self) -> tuple[Health, Health]:
        s = self.pool.submit(probe, self.cfg.self_url, self.cfg.timeout)
        p = self.pool.submit(probe, self.cfg.peer_url, self.cfg.timeout)
        return s.result(), p.result()

    def round(self) -> None:
        s, p = self.check()
        c = self.cfg
        was = self.self_h
        if was is None or s.ok != was.ok or (not s.ok and _gist(s.reason) != _gist(was.reason)):
            log(f"this instance ({c.self_url}): " + ("healthy" if s.ok else f"UNHEALTHY: {s.reason}"))
        self.self_good = self.self_good + 1 if s.ok else 0
        if p.ok:
            if self.peer_h is None or not self.peer_h.ok:
                log(f"peer ({c.peer_url}): healthy" + (" again: it stays standby, the routes stay here "
                                                        "(no failback unless it preempts)" if self.took_over else ""))
            self.peer_failed = 0
            if self.took_over:
                # Preempt again: after a partition of the management path both took everything, and each
                # must now take back its home routes (the peer too, so the pair converges).
                self.preempted = False
            self.took_over = False  # the next outage of the peer is a new one
            self.said_blocked = False
            self.retry.reset()
        else:
            self.peer_failed += 1
            if self.peer_failed == c.failures:
                self.retry.reset()  # a new outage: its first try at once, whatever the last one's did
            # Each check up to the takeover, then only what changes: a dead peer must not fill the log.
            if self.peer_failed <= c.failures or _gist(p.reason) != _gist(self.peer_h.reason):
                log(f"peer ({c.peer_url}): failed check {self.peer_failed}/{c.failures}: {p.reason}")
        if not s.ok:
            self.preempted = False  # the peer may take the routes while we are down: preempt again after
            self.preempt_retry.reset()
        self.self_h, self.peer_h = s, p
        if self.stop.is_set():
            return  # SIGTERM came during the checks: change no route on the way out

        if self.peer_failed >= c.failures and not self.took_over:
            if not s.ok:
                if not self.said_blocked:
                    log(f"peer failed {self.peer_failed} checks, but this instance is unhealthy too ({s.reason}): "
                        "not taking over")
                    self.said_blocked = True
                return
            if self.retry.wait():
                return
            self.took_over = self.take_over(f"peer failed {self.peer_failed} checks in a row ({p.reason})")
            self.preempted = self.preempted or self.took_over
        elif c.preempt and not self.preempted and self.self_good >= c.failures:
            if self.preempt_retry.wait():
                return
            self.preempted = self.take_over(f"preempt: this instance healthy for {self.self_good} checks", home=True,
                                            retry=self.preempt_retry)

    def take_over(self, reason: str, home: bool = False, retry: Backoff | None = None) -> bool:
        retry = retry or self.retry
        log(f"TAKING OVER ({self.cfg.provider}{', home routes' if home else ''}): {reason}")
        t0 = time.monotonic()
        try:
            r = self.provider.takeover(home=home)
        except Exception as e:  # a provider's surprise is a failed takeover (retried, backing off)
            r = TakeoverResult(False, errors=[f"{type(e).__name__}: {e}"])
        took = time.monotonic() - t0
        retry.note(r.ok)
        if r.ok:
            self.takeovers += 1
            log(f"took over in {took:.2f} s: {r.summary()}; this instance now carries the traffic")
        else:
            log(f"takeover FAILED after {took:.2f} s (retrying in {retry.skip + 1} check(s)): {r.summary()}")
        return r.ok

    def run(self, stop: threading.Event) -> None:
        c = self.cfg
        self.stop = stop
        log(f"{c.name}: watching {c.self_url} (self) and {c.peer_url} (peer) every {c.interval:g} s, "
            f"timeout {c.timeout:g} s, takeover after {c.failures} failed peer checks, provider {c.provider}, "
            f"preempt {'on' if c.preempt else 'off'}")
        nxt = time.monotonic()
        while not stop.is_set():
            try:
                self.round()
            except Exception:  # a bug or a surprise must not end the agent: say what, and check again
                log("round failed, carrying on: " + traceback.format_exc(limit=3).rstrip())
            nxt += c.interval
            delay = nxt - time.monotonic()
            if delay < 0:  # checks took longer than the interval: start again now, do not catch up
                nxt, delay = time.monotonic(), 0
            stop.wait(delay)
        log("stopping")


# -------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description="health-checked route failover for two natgw instances")
    ap.add_argument("--config", "-c", default="/etc/natgw/ha.toml", help="agent config (default %(default)s)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="print both health states and exit")
    mode.add_argument("--once", action="store_true", help="take over now and exit")
    mode.add_argument("--validate", action="store_true", help="check the config and exit")
    ap.add_argument("--home", action="store_true",
                    help="with --once: only this instance's home routes (home_route_tables / home_targets)")
    ap.add_argument("--force", action="store_true", help="with --once: even if this instance is unhealthy")
    args = ap.parse_args(argv)
    if (args.force or args.home) and not args.once:
        ap.error("--force and --home go with --once")
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"{PROG}: bad config: {e}", file=sys.stderr)
        return 2
    for w in cfg.warnings:
        log(f"warning: {w}")
    if args.validate:
        print(f"{cfg.path}: OK: provider {cfg.provider}, takeover after {cfg.failures} x {cfg.interval:g} s")
        return 0
    agent = Agent(cfg)
    if args.check:
        s, p = agent.check()
        print(f"self {cfg.self_url}: {'ok' if s.ok else 'UNHEALTHY: ' + s.reason}")
        print(f"peer {cfg.peer_url}: {'ok' if p.ok else 'UNHEALTHY: ' + p.reason}")
        return 0 if s.ok and p.ok else 1
    if args.once:
        s, _ = agent.check()
        if not s.ok and not args.force:
            print(f"{PROG}: this instance is unhealthy ({s.reason}): not taking over (--force to anyway)",
                  file=sys.stderr)
            return 1
        ok = agent.take_over("operator (--once)" + ("" if s.ok else f", forced while unhealthy: {s.reason}"),
                             home=args.home)
        return 0 if ok else 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())

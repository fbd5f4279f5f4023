#!/usr/bin/env bash
# natgw namespace lab: five network namespaces joined by veth pairs.
#
#   ngw-client            ngw-tgw                 ngw-nat                 ngw-s3
#   cli0 ───────────── tgw-cli                                     ┌── s3-nat 10.0.2.1
#   192.168.10.2/24    192.168.10.1/24                             │   (198.51.100.10/32 on lo)
#                      tgw-nat 10.0.1.1/24 ──── nat-in   nat-s3 ───┘
#                      default via 10.0.1.10    (natgw)  nat-inet ─┐   ngw-inet
#                                                                  └── inet-nat 10.0.3.1
#                                                                      (203.0.113.10/32 on lo)
#
# natgw's addresses live in userspace: inside 10.0.1.10, endpoint 10.0.2.10, internet 10.0.3.10.
#
# With --ha, a second natgw namespace (B) beside ngw-nat (A), as two instances in two AZs; the links
# toward natgw become bridges that both instances' ports join, and A and B share a management link:
#
#   ngw-tgw  br-nat 10.0.1.1/24 ─┬─ tgw-nat ─── nat-in   (ngw-nat,  A: inside 10.0.1.10)
#            default via A       └─ tgw-nat2 ── nat2-in  (ngw-nat2, B: inside 10.0.1.20)
#   ngw-s3   br-s3 10.0.2.1/24   ── s3-nat / s3-nat2     (A: endpoint 10.0.2.10, B: 10.0.2.20)
#   ngw-inet br-inet 10.0.3.1/24 ── inet-nat / inet-nat2 (A: internet 10.0.3.10, B: 10.0.3.20)
#   ngw-nat nat-mgmt 172.16.0.1/30 ─── nat2-mgmt 172.16.0.2/30 ngw-nat2   (kernel addresses: health
#                                                                          checks between A and B)
# ngw-tgw's default route plays the VPC/TGW-attachment route table: failover points it at B.
#
# Usage:
#   lab.sh up [--mode forward|nat] [--dataplane dpdk|kernel] [--ha]
#       forward: the servers route 192.168.0.0/16 back via natgw (no NAT needed).
#       nat:     no route back; ngw-s3 drops TCP/UDP/ICMP whose source is not 10.0.2.10 (like an S3
#                gateway endpoint, which only accepts VPC sources).
#       dpdk:    the nat-* interfaces stay address-less for natgw's af_packet vdevs (default).
#       kernel:  ngw-nat forwards with Linux (and masquerades in nat mode): the test baseline.
#       --ha:    two natgw namespaces (ngw-nat, ngw-nat2) on bridged links, as drawn above (nat mode and
#                the dpdk dataplane only).
#   lab.sh servers   start HTTP (:80) and UDP echo (:7) servers in ngw-s3 and ngw-inet
#   lab.sh status    show namespaces, addresses, routes, servers
#   lab.sh down      remove every namespace and process the lab made (never fails)
#
# State lives in /run/natgw-lab/ (pid files, server logs, the mode). Concurrent lab.sh calls are serialised
# with a lock on /run/natgw-lab.lock; a caller that already holds it (tests/lab/natgwlab.py, demo.sh) sets
# NATGW_LAB_LOCK_HELD=1.
set -euo pipefail

RUN=/run/natgw-lab
LOCK=/run/natgw-lab.lock
NAMESPACES=(ngw-client ngw-tgw ngw-nat ngw-s3 ngw-inet ngw-nat2)  # ngw-nat2: with --ha only
PY=/usr/bin/python3

log() { printf 'lab: %s\n' "$*"; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

usage() {  # $1: exit status (2 = misuse)
  sed -n '/^# Usage:/,/^# State/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^State/d' >&2
  exit "${1:-2}"
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
  command -v ip >/dev/null || die "iproute2 'ip' not found"
}

take_lock() {
  [[ ${NATGW_LAB_LOCK_HELD:-0} == 1 ]] && return 0
  exec {LOCK_FD}>"$LOCK"
  flock -w 120 "$LOCK_FD" || die "another lab.sh holds $LOCK for more than 120 s"
}

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# Write a /proc/sys value inside a namespace (a path avoids sysctl's dot/slash parsing of names like tgw-cli).
nsysctl() { local ns=$1 key=$2 val=$3; nsx "$ns" sh -c "echo $val > /proc/sys/$key"; }

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

# ---------------------------------------------------------------------------------------------- down
kill_ns_pids() {
  local ns pids=() p
  for ns in "${NAMESPACES[@]}"; do
    ns_exists "$ns" || continue
    mapfile -t -O "${#pids[@]}" pids < <(ip netns pids "$ns" 2>/dev/null || true)
  done
  if [[ -d $RUN ]]; then
    for p in "$RUN"/*.pid; do
      [[ -e $p ]] && pids+=("$(cat "$p" 2>/dev/null || true)")
    done
  fi
  local live=()
  for p in $(printf '%s\n' "${pids[@]}" | sort -un); do
    [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null && live+=("$p")
  done
  ((${#live[@]})) || return 0
  log "stopping processes ${live[*]}"
  kill -TERM "${live[@]}" 2>/dev/null || true
  local i
  for i in $(seq 50); do
    local still=()
    for p in "${live[@]}"; do kill -0 "$p" 2>/dev/null && still+=("$p"); done
    ((${#still[@]})) || return 0
    sleep 0.1
  done
  log "killing processes ${still[*]}"
  kill -KILL "${still[@]}" 2>/dev/null || true
  sleep 0.2
}

cmd_down() {
  kill_ns_pids
  local ns
  for ns in "${NAMESPACES[@]}"; do
    if ns_exists "$ns"; then
      ip netns del "$ns" 2>/dev/null || log "warning: could not delete namespace $ns"
    fi
  done
  rm -rf "$RUN"
  log "down"
}

# ------------------------------------------------------------------------------------------------ up
# A veth pair created directly between two namespaces (never in the host namespace).
mkveth() {
  local ns_a=$1 if_a=$2 ns_b=$3 if_b=$4
  ip -n "$ns_a" link add "$if_a" type veth peer name "$if_b" netns "$ns_b"
}

# A Linux bridge in ns joining the given veths (already made); the addresses go on the bridge. Checksums
# in full, as prep_if does for a veth: the bridge's ports are veths toward af_packet.
mkbridge() {
  local ns=$1 br=$2; shift 2
  ip -n "$ns" link add "$br" type bridge forward_delay 0 stp_state 0
  nsysctl "$ns" "net/ipv6/conf/$br/disable_ipv6" 1
  local port
  for port in "$@"; do
    prep_if "$ns" "$port" txoff
    ip -n "$ns" link set "$port" master "$br"
  done
  nsx "$ns" ethtool -K "$br" tx off >/dev/null 2>&1 || true
  ip -n "$ns" link set "$br" up
}

# Namespace-side veths: af_packet on the natgw side sees no checksum offload, so the kernel must put a full
# checksum in every packet it sends (tx off, which also turns TSO off: no super-frames reach natgw).
prep_if() {
  local ns=$1 ifn=$2 offl=$3
  nsysctl "$ns" "net/ipv6/conf/$ifn/disable_ipv6" 1
  if [[ $offl == txoff ]]; then
    nsx "$ns" ethtool -K "$ifn" tx off >/dev/null 2>&1 || log "warning: ethtool -K $ifn tx off failed in $ns"
    # Kernel 6.18 keeps AccECN TSO on after 'tx off' (it is not tied to the checksum features): drop it too.
    nsx "$ns" ethtool -K "$ifn" tx-tcp-accecn-segmentation off >/dev/null 2>&1 || true
  fi
  ip -n "$ns" link set "$ifn" up
}

cmd_up() {
  local mode=forward dataplane=dpdk ha=0
  while (($#)); do
    case $1 in
      --ha) ha=1; shift ;;
      --mode) mode=${2:-}; shift 2 ;;
      --mode=*) mode=${1#*=}; shift ;;
      --dataplane) dataplane=${2:-}; shift 2 ;;
      --dataplane=*) dataplane=${1#*=}; shift ;;
      -h|--help) usage 0 ;;
      *) die "unknown argument '$1' (see lab.sh --help)" ;;
    esac
  done
  [[ $mode == forward || $mode == nat ]] || die "--mode must be forward or nat, not '$mode'"
  [[ $dataplane == dpdk || $dataplane == kernel ]] || die "--dataplane must be dpdk or kernel, not '$dataplane'"
  if ((ha)); then
    [[ $mode == nat && $dataplane == dpdk ]] || die "--ha needs --mode nat and --dataplane dpdk"
  fi

  cmd_down >/dev/null
  log "up: mode=$mode dataplane=$dataplane ha=$ha"
  mkdir -p "$RUN"
  printf 'mode=%s\ndataplane=%s\nha=%s\n' "$mode" "$dataplane" "$ha" >"$RUN/mode"

  local ns
  for ns in "${NAMESPACES[@]}"; do
    [[ $ns == ngw-nat2 ]] && ((!ha)) && continue
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # No IPv6 anywhere: no router solicitations, MLD or ND noise on the links the tests count.
    nsysctl "$ns" net/ipv6/conf/all/disable_ipv6 1
    nsysctl "$ns" net/ipv6/conf/default/disable_ipv6 1
  done

  mkveth ngw-client cli0 ngw-tgw tgw-cli
  mkveth ngw-tgw tgw-nat ngw-nat nat-in
  mkveth ngw-nat nat-s3 ngw-s3 s3-nat
  mkveth ngw-nat nat-inet ngw-inet inet-nat
  if ((ha)); then
    mkveth ngw-tgw tgw-nat2 ngw-nat2 nat2-in
    mkveth ngw-nat2 nat2-s3 ngw-s3 s3-nat2
    mkveth ngw-nat2 nat2-inet ngw-inet inet-nat2
    mkveth ngw-nat nat-mgmt ngw-nat2 nat2-mgmt
    # The TGW-side, endpoint and internet links become bridges that A's and B's ports both join.
    mkbridge ngw-tgw br-nat tgw-nat tgw-nat2
    mkbridge ngw-s3 br-s3 s3-nat s3-nat2
    mkbridge ngw-inet br-inet inet-nat inet-nat2
  fi
  # The interfaces that carry the routers' and servers' addresses toward natgw.
  local tgw_nat=tgw-nat s3_link=s3-nat inet_link=inet-nat
  ((ha)) && tgw_nat=br-nat s3_link=br-s3 inet_link=br-inet

  # client (on-prem)
  prep_if ngw-client cli0 txoff
  ip -n ngw-client addr add 192.168.10.2/24 dev cli0
  ip -n ngw-client route add default via 192.168.10.1

  # router playing the Transit Gateway
  prep_if ngw-tgw tgw-cli txoff
  ((ha)) || prep_if ngw-tgw tgw-nat txoff
  ip -n ngw-tgw addr add 192.168.10.1/24 dev tgw-cli
  ip -n ngw-tgw addr add 10.0.1.1/24 dev "$tgw_nat"
  ip -n ngw-tgw route add default via 10.0.1.10
  nsysctl ngw-tgw net/ipv4/ip_forward 1

  # S3-like endpoint: reachable only through natgw's endpoint link, no default route
  ((ha)) || prep_if ngw-s3 s3-nat txoff
  ip -n ngw-s3 addr add 10.0.2.1/24 dev "$s3_link"
  ip -n ngw-s3 addr add 198.51.100.10/32 dev lo

  # internet server
  ((ha)) || prep_if ngw-inet inet-nat txoff
  ip -n ngw-inet addr add 10.0.3.1/24 dev "$inet_link"
  ip -n ngw-inet addr add 203.0.113.10/32 dev lo

  if [[ $mode == forward ]]; then
    ip -n ngw-s3 route add 192.168.0.0/16 via 10.0.2.10
    ip -n ngw-inet route add 192.168.0.0/16 via 10.0.3.10
  else
    # The endpoint accepts only natgw's endpoint address (counted, so tests can see what it dropped).
    local endpoint_addrs=10.0.2.10
    ((ha)) && endpoint_addrs="{ 10.0.2.10, 10.0.2.20 }"
    nsx ngw-s3 nft -f - <<EOF
table inet natgw_lab {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "$s3_link" ip saddr != $endpoint_addrs meta l4proto { tcp, udp, icmp } counter drop comment "only natgw's endpoint address"
  }
}
EOF
  fi

  # natgw's namespace
  local i
  for i in nat-in nat-s3 nat-inet; do
    nsysctl ngw-nat "net/ipv6/conf/$i/disable_ipv6" 1
  done
  if [[ $dataplane == dpdk ]]; then
    # natgw owns these links: no kernel addresses, no kernel forwarding. GRO off so the af_packet socket
    # sees the frames as they were sent, never a merged super-frame.
    nsysctl ngw-nat net/ipv4/ip_forward 0
    for i in nat-in nat-s3 nat-inet; do
      nsx ngw-nat ethtool -K "$i" gro off >/dev/null 2>&1 || true
      ip -n ngw-nat link set "$i" up
    done
    if ((ha)); then
      nsysctl ngw-nat2 net/ipv4/ip_forward 0
      for i in nat2-in nat2-s3 nat2-inet; do
        nsysctl ngw-nat2 "net/ipv6/conf/$i/disable_ipv6" 1
        nsx ngw-nat2 ethtool -K "$i" gro off >/dev/null 2>&1 || true
        ip -n ngw-nat2 link set "$i" up
      done
      # The management link: kernel addresses, for the HA agents' health checks of each other.
      prep_if ngw-nat nat-mgmt txoff
      prep_if ngw-nat2 nat2-mgmt txoff
      ip -n ngw-nat addr add 172.16.0.1/30 dev nat-mgmt
      ip -n ngw-nat2 addr add 172.16.0.2/30 dev nat2-mgmt
    fi
  else
    # Linux does natgw's job: the same addresses and routes (the baseline the tests are validated on).
    for i in nat-in nat-s3 nat-inet; do ip -n ngw-nat link set "$i" up; done
    ip -n ngw-nat addr add 10.0.1.10/24 dev nat-in
    ip -n ngw-nat addr add 10.0.2.10/24 dev nat-s3
    ip -n ngw-nat addr add 10.0.3.10/24 dev nat-inet
    ip -n ngw-nat route add 198.51.100.0/24 via 10.0.2.1 dev nat-s3 proto static
    ip -n ngw-nat route add default via 10.0.3.1 dev nat-inet proto static
    ip -n ngw-nat route add 192.168.0.0/16 via 10.0.1.1 dev nat-in proto static
    nsysctl ngw-nat net/ipv4/ip_forward 1
    # natgw does not rate-limit its ICMP errors per destination; do not let Linux do it in the baseline.
    nsysctl ngw-nat net/ipv4/icmp_ratelimit 0
    if [[ $mode == nat ]]; then
      nsx ngw-nat nft -f - <<'EOF'
table ip natgw_lab {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 192.168.0.0/16 oifname { "nat-s3", "nat-inet" } counter masquerade
  }
}
EOF
    fi
  fi
  local made=("${NAMESPACES[@]}")
  ((ha)) || made=("${made[@]:0:5}")
  log "up: namespaces ${made[*]} ready"
}

# ------------------------------------------------------------------------------------------- servers
# One python process per server namespace: HTTP on :80 (files + /ip, which names the server and the client
# address it saw) and a UDP echo on :7 answering "<server>:<source ip>:<payload>".
write_server_py() {
  cat >"$RUN/labsrv.py" <<'EOF'
import argparse, hashlib, http.server, os, socket, socketserver, sys, threading

ap = argparse.ArgumentParser()
ap.add_argument("--name", required=True)
ap.add_argument("--addr", required=True)
ap.add_argument("--dir", required=True)
ap.add_argument("--pidfile", required=True)
args = ap.parse_args()
os.closerange(3, 1 << 16)   # drop any inherited fds (a caller's lock file must not live on in a daemon)

class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def __init__(self, *a, **kw):
        super().__init__(*a, directory=args.dir, **kw)
    def do_GET(self):
        if self.path.split("?")[0] == "/ip":
            body = f"{args.name} {self.client_address[0]}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()
    def do_POST(self):  # any path: read the body, answer "<name> <bytes> <sha256>" (uploads, path MTU tests)
        n = int(self.headers.get("Content-Length", 0))
        h, left = hashlib.sha256(), n
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        body = f"{args.name} {n - left} {h.hexdigest()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *a):
        sys.stderr.write(f"http {args.name} {self.client_address[0]}:{self.client_address[1]} {fmt % a}\n")

class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024      # hundreds of parallel flows in the demo
    daemon_threads = True

def udp_echo():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((args.addr, 7))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(f"{args.name}:{peer[0]}:".encode() + data, peer)

httpd = Server((args.addr, 80), Handler)
threading.Thread(target=udp_echo, daemon=True).start()
with open(args.pidfile + ".tmp", "w") as f:
    f.write(f"{os.getpid()}\n")
os.rename(args.pidfile + ".tmp", args.pidfile)
sys.stderr.write(f"{args.name}: http://{args.addr}:80 and udp echo {args.addr}:7 ready\n")
sys.stderr.flush()
httpd.serve_forever()
EOF
}

start_server() {
  local ns=$1 name=$2 addr=$3
  local dir=$RUN/www-$name pid=$RUN/server-$name.pid
  ns_exists "$ns" || die "namespace $ns does not exist: run 'lab.sh up' first"
  if [[ -f $pid ]] && kill -0 "$(cat "$pid")" 2>/dev/null; then
    log "servers: $name already running (pid $(cat "$pid"))"
    return 0
  fi
  rm -f "$pid"
  mkdir -p "$dir"
  printf '%s\n' "$name" >"$dir/whoami"
  [[ -s $dir/1M ]] || head -c 1048576 /dev/urandom >"$dir/1M"
  [[ -s $dir/20M ]] || head -c 20971520 /dev/urandom >"$dir/20M"
  # The server must not inherit our lock fd (it would hold the lab lock for its whole life).
  if [[ -n ${LOCK_FD:-} ]]; then
    nsx "$ns" setsid "$PY" "$RUN/labsrv.py" --name "$name" --addr "$addr" --dir "$dir" --pidfile "$pid" \
      </dev/null >>"$RUN/server-$name.log" 2>&1 {LOCK_FD}>&- &
  else
    nsx "$ns" setsid "$PY" "$RUN/labsrv.py" --name "$name" --addr "$addr" --dir "$dir" --pidfile "$pid" \
      </dev/null >>"$RUN/server-$name.log" 2>&1 &
  fi
  local i
  for i in $(seq 100); do
    if [[ -s $pid ]] && nsx "$ns" curl -s -m 1 "http://$addr/whoami" 2>/dev/null | grep -qx "$name"; then
      log "servers: $name on $addr (http :80, udp echo :7), pid $(cat "$pid"), log $RUN/server-$name.log"
      return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$RUN/server-$name.log" >&2 || true
  die "servers: $name did not come up on $addr"
}

cmd_servers() {
  [[ -d $RUN ]] || die "lab is not up (no $RUN): run 'lab.sh up' first"
  write_server_py
  start_server ngw-s3 s3 198.51.100.10
  start_server ngw-inet inet 203.0.113.10
}

# -------------------------------------------------------------------------------------------- status
cmd_status() {
  local ns any=0
  [[ -f $RUN/mode ]] && log "$(tr '\n' ' ' <"$RUN/mode")"
  for ns in "${NAMESPACES[@]}"; do
    if ns_exists "$ns"; then
      any=1
      echo "== $ns"
      ip -n "$ns" -br addr show | sed 's/^/  /'
      ip -n "$ns" route show | sed 's/^/  route: /'
      local pids
      pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
      [[ -n $pids ]] && echo "  processes: $pids"
    elif [[ $ns != ngw-nat2 ]]; then  # ngw-nat2 exists with --ha only
      echo "== $ns: absent"
    fi
  done
  local p
  for p in "$RUN"/*.pid; do
    [[ -e $p ]] || continue
    if kill -0 "$(cat "$p")" 2>/dev/null; then echo "$(basename "$p" .pid): running (pid $(cat "$p"))"
    else echo "$(basename "$p" .pid): dead (stale pid $(cat "$p"))"; fi
  done
  ((any)) || log "lab is down"
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || usage
  shift
  case $cmd in
    up) need_root; take_lock; cmd_up "$@" ;;
    down) need_root; take_lock; cmd_down ;;
    servers) need_root; take_lock; cmd_servers ;;
    status) need_root; cmd_status ;;
    -h|--help|help) usage 0 ;;
    *) die "unknown command '$cmd' (up, down, status, servers)" ;;
  esac
}

main "$@"

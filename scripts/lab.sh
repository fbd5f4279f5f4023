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
# Usage:
#   lab.sh up [--mode forward|nat] [--dataplane dpdk|kernel]
#       forward: the servers route 192.168.0.0/16 back via natgw (no NAT needed).
#       nat:     no route back; ngw-s3 drops TCP/UDP/ICMP whose source is not 10.0.2.10 (like an S3
#                gateway endpoint, which only accepts VPC sources).
#       dpdk:    the nat-* interfaces stay address-less for natgw's af_packet vdevs (default).
#       kernel:  ngw-nat forwards with Linux (and masquerades in nat mode): the test baseline.
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
NAMESPACES=(ngw-client ngw-tgw ngw-nat ngw-s3 ngw-inet)
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
  local mode=forward dataplane=dpdk
  while (($#)); do
    case $1 in
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

  cmd_down >/dev/null
  log "up: mode=$mode dataplane=$dataplane"
  mkdir -p "$RUN"
  printf 'mode=%s\ndataplane=%s\n' "$mode" "$dataplane" >"$RUN/mode"

  local ns
  for ns in "${NAMESPACES[@]}"; do
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

  # client (on-prem)
  prep_if ngw-client cli0 txoff
  ip -n ngw-client addr add 192.168.10.2/24 dev cli0
  ip -n ngw-client route add default via 192.168.10.1

  # router playing the Transit Gateway
  prep_if ngw-tgw tgw-cli txoff
  prep_if ngw-tgw tgw-nat txoff
  ip -n ngw-tgw addr add 192.168.10.1/24 dev tgw-cli
  ip -n ngw-tgw addr add 10.0.1.1/24 dev tgw-nat
  ip -n ngw-tgw route add default via 10.0.1.10
  nsysctl ngw-tgw net/ipv4/ip_forward 1

  # S3-like endpoint: reachable only through natgw's endpoint link, no default route
  prep_if ngw-s3 s3-nat txoff
  ip -n ngw-s3 addr add 10.0.2.1/24 dev s3-nat
  ip -n ngw-s3 addr add 198.51.100.10/32 dev lo

  # internet server
  prep_if ngw-inet inet-nat txoff
  ip -n ngw-inet addr add 10.0.3.1/24 dev inet-nat
  ip -n ngw-inet addr add 203.0.113.10/32 dev lo

  if [[ $mode == forward ]]; then
    ip -n ngw-s3 route add 192.168.0.0/16 via 10.0.2.10
    ip -n ngw-inet route add 192.168.0.0/16 via 10.0.3.10
  else
    # The endpoint accepts only natgw's endpoint address (counted, so tests can see what it dropped).
    nsx ngw-s3 nft -f - <<'EOF'
table inet natgw_lab {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "s3-nat" ip saddr != 10.0.2.10 meta l4proto { tcp, udp, icmp } counter drop comment "only natgw's endpoint address"
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
  log "up: namespaces ${NAMESPACES[*]} ready"
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
    else
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

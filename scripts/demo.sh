#!/usr/bin/env bash
# natgw demo: build, bring up the namespace lab in NAT mode, run natgw in it and push real traffic through.
#
#   client 192.168.10.2 ── tgw ── [inside 10.0.1.10] natgw [endpoint 10.0.2.10] ── S3-like 198.51.100.10
#                                                          [internet 10.0.3.10] ── internet 203.0.113.10
#
# The S3-like server has no route back to 192.168.0.0/16 and drops anything not from 10.0.2.10, so every
# reply you see below went through natgw's source NAT and back.
#
# Usage: sudo scripts/demo.sh [--no-build] [--dataplane dpdk|kernel] [--flows N] [--build-dir DIR]
#   --no-build     skip scripts/deps.sh, meson and ninja (use what is in the build folder)
#   --dataplane    dpdk (default): natgw; kernel: Linux forwarding + nftables masquerade instead (baseline)
#   --flows N      parallel flows per protocol in the many-flows step (default 200)
#   --build-dir    build folder (default: build, or $NATGW_BUILD)
# Exits non-zero if any step failed; the lab is always taken down on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${NATGW_BUILD:-$ROOT/build}
DATAPLANE=dpdk
FLOWS=200
DO_BUILD=1
while (($#)); do
  case $1 in
    --no-build) DO_BUILD=0; shift ;;
    --dataplane) DATAPLANE=${2:-}; shift 2 ;;
    --dataplane=*) DATAPLANE=${1#*=}; shift ;;
    --flows) FLOWS=${2:-}; shift 2 ;;
    --build-dir) BUILD=${2:-}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $DATAPLANE == dpdk || $DATAPLANE == kernel ]] || { echo "demo: --dataplane dpdk|kernel" >&2; exit 2; }
if ! [[ $FLOWS =~ ^[0-9]+$ ]] || ((FLOWS == 0)); then echo "demo: --flows needs a positive number" >&2; exit 2; fi
[[ $BUILD = /* ]] || BUILD=$ROOT/$BUILD

LAB=$ROOT/scripts/lab.sh
NATGW=$BUILD/src/natgw/natgw
NATGWCTL=$BUILD/src/natgwctl/natgwctl
CONFIG=$ROOT/config/lab.toml
CTL_SOCKET=/run/natgw-lab/natgw.sock      # [control] socket in config/lab.toml
S3=198.51.100.10 INET=203.0.113.10
S3_SNAT=10.0.2.10 INET_SNAT=10.0.3.10      # natgw's endpoint and internet addresses
PY=/usr/bin/python3
WORK=$(mktemp -d "${TMPDIR:-/tmp}/natgw-demo-XXXXXX")
NATGW_LOG=$WORK/natgw.log
NATGW_PID=

if [[ -t 1 ]]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'; else B='' G='' R='' N=''; fi
FAILED=()
title() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
say() { printf '    %s\n' "$*"; }
ok() { printf '    %sok%s   %s\n' "$G" "$N" "$*"; }
bad() { printf '    %sFAIL%s %s\n' "$R" "$N" "$*"; FAILED+=("$*"); }
client() { ip netns exec ngw-client "$@"; }

[[ $(id -u) -eq 0 ]] || { echo "demo: run as root (network namespaces): sudo $0" >&2; exit 1; }

# ------------------------------------------------------------------------------------------ cleanup
stop_natgw() {
  [[ -n $NATGW_PID ]] || return 0
  if kill -0 "$NATGW_PID" 2>/dev/null; then
    kill -TERM "$NATGW_PID" 2>/dev/null || true
    local i
    for i in $(seq 50); do kill -0 "$NATGW_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$NATGW_PID" 2>/dev/null; then
      say "natgw ignored SIGTERM for 5 s: SIGKILL"
      kill -KILL "$NATGW_PID" 2>/dev/null || true
    fi
  fi
  wait "$NATGW_PID" 2>/dev/null || true
  NATGW_PID=
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_natgw
  bash "$LAB" down >/dev/null 2>&1 || echo "demo: warning: lab.sh down failed" >&2
  echo "demo: logs in $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# -------------------------------------------------------------------------------------------- build
if ((DO_BUILD)); then
  title "dependencies and build"
  "$ROOT/scripts/deps.sh"
  [[ -f $BUILD/build.ninja ]] || meson setup "$BUILD" "$ROOT"
  ninja -C "$BUILD"
fi
if [[ $DATAPLANE == dpdk && ! -x $NATGW ]]; then
  echo "demo: $NATGW not built (drop --no-build, or try --dataplane kernel)" >&2
  exit 1
fi

# One lab at a time on this machine (tests and demos share the namespace names).
exec {LOCK_FD}>/run/natgw-lab.lock
flock -w 300 "$LOCK_FD" || { echo "demo: another lab is running (/run/natgw-lab.lock)" >&2; exit 1; }
export NATGW_LAB_LOCK_HELD=1

# ---------------------------------------------------------------------------------------------- lab
title "lab: namespaces and veths (NAT mode, dataplane $DATAPLANE)"
bash "$LAB" up --mode nat --dataplane "$DATAPLANE" | sed 's/^/    /'

if [[ $DATAPLANE == dpdk ]]; then
  # config/lab.toml plus a NAT event log in this run's directory (README "NAT event log").
  EVENTS=$WORK/nat-events.log
  # (relative prefix-list paths are the config's directory's: made absolute for the copy)
  { sed -E "s|^(prefix_list *= *\")([^/\"])|\1$ROOT/config/\2|" "$ROOT/config/lab.toml"
    printf '\n[nat_events]\nfile = "%s"\n' "$EVENTS"; } >"$WORK/lab.toml"
  CONFIG=$WORK/lab.toml
  title "natgw: starting in namespace ngw-nat with config/lab.toml (+ [nat_events] file = $EVENTS)"
  say "ip netns exec ngw-nat $NATGW --config $CONFIG"
  ip netns exec ngw-nat stdbuf -oL -eL "$NATGW" --config "$CONFIG" \
    </dev/null >"$NATGW_LOG" 2>&1 {LOCK_FD}>&- &
  NATGW_PID=$!
  for _ in $(seq 600); do
    grep -q 'natgw: running' "$NATGW_LOG" && break
    kill -0 "$NATGW_PID" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q 'natgw: running' "$NATGW_LOG"; then
    tail -n 30 "$NATGW_LOG" | sed 's/^/    | /'
    echo "demo: natgw did not start (log $NATGW_LOG)" >&2
    exit 1
  fi
  sed -n '/natgw: running/,$p' "$NATGW_LOG" | head -n 8 | sed 's/^/    | /'
else
  title "kernel baseline: Linux forwards and masquerades in ngw-nat (no natgw)"
fi

title "servers: HTTP :80 and UDP echo :7 on $S3 (S3-like) and $INET (internet)"
bash "$LAB" servers {LOCK_FD}>&- | sed 's/^/    /'

# ------------------------------------------------------------------------------------------ traffic
title "ping from the client (192.168.10.2)"
for dst in $S3 $INET; do
  if out=$(client ping -n -c 3 -i 0.3 -W 2 "$dst" 2>&1); then
    ok "ping $dst: $(grep -o '[0-9]* received.*loss' <<<"$out")"
  else
    bad "ping $dst: $(grep -o '[0-9]* received.*loss' <<<"$out" || echo "$out" | tail -1)"
  fi
done

title "curl: which server answered, and which source address did it see?"
for pair in "s3 $S3 $S3_SNAT" "inet $INET $INET_SNAT"; do
  read -r name addr want <<<"$pair"
  who=$(client curl -sS -m 5 "http://$addr/whoami" 2>&1) || true
  seen=$(client curl -sS -m 5 "http://$addr/ip" 2>&1) || true
  if [[ $who == "$name" && $seen == "$name $want" ]]; then
    ok "http://$addr/whoami = '$who'; the server saw source ${seen#* } (natgw's $name-side address)"
  else
    bad "http://$addr: whoami='$who' /ip='$seen' (wanted '$name' and '$name $want')"
  fi
done

title "UDP echo (the server answers <server>:<source it saw>:<payload>)"
for pair in "s3 $S3 $S3_SNAT" "inet $INET $INET_SNAT"; do
  read -r name addr want <<<"$pair"
  reply=$(client "$PY" -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b"hello natgw", (sys.argv[1], 7))
try: print(s.recvfrom(2048)[0].decode())
except socket.timeout: print("(no reply)")' "$addr" 2>&1) || true
  if [[ $reply == "$name:$want:hello natgw" ]]; then ok "udp $addr:7 -> '$reply'"
  else bad "udp $addr:7 -> '$reply' (wanted '$name:$want:hello natgw')"; fi
done

title "download 20 MB from the S3-like server through natgw"
if out=$(client curl -sS -m 60 -o /dev/null -w '%{http_code} %{size_download} %{time_total} %{speed_download}' \
    "http://$S3/20M" 2>&1) && read -r code size secs speed <<<"$out" && [[ $code == 200 && $size == 20971520 ]]; then
  ok "$size bytes in ${secs}s ($(awk -v s="$speed" 'BEGIN{printf "%.1f", s*8/1e6}') Mbit/s)"
else
  bad "20 MB download: $out"
fi

title "$FLOWS parallel TCP flows (curl) and $FLOWS parallel UDP flows"
urls=$WORK/urls
: >"$urls"
for ((i = 0; i < FLOWS; i++)); do
  if ((i % 2)); then echo "http://$INET/ip"; else echo "http://$S3/ip"; fi >>"$urls"
done
t0=$(date +%s.%N)
client xargs -a "$urls" -P "$FLOWS" -n 1 curl -s -m 15 >"$WORK/curl.out" 2>&1 || true
t1=$(date +%s.%N)
tcp_ok=$(grep -cxE "s3 $S3_SNAT|inet $INET_SNAT" "$WORK/curl.out" || true)
say "sources the servers saw: $(sort "$WORK/curl.out" | uniq -c | awk '{printf "%s x%s  ", $2" "$3, $1}')"
if ((tcp_ok == FLOWS)); then ok "tcp: $tcp_ok/$FLOWS flows answered in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s"
else bad "tcp: only $tcp_ok/$FLOWS flows answered (see $WORK/curl.out)"; fi

cat >"$WORK/udpflows.py" <<'EOF'
import socket, sys, threading
n, s3, inet, s3_snat, inet_snat = int(sys.argv[1]), *sys.argv[2:]
ok = [0] * n
def flow(i):
    dst, name, snat = (s3, "s3", s3_snat) if i % 2 == 0 else (inet, "inet", inet_snat)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # its own source port: its own NAT session
    s.settimeout(2)
    for _ in range(3):
        try:
            s.sendto(f"flow{i}".encode(), (dst, 7))
            if s.recvfrom(2048)[0].decode() == f"{name}:{snat}:flow{i}":
                ok[i] = 1
                return
        except socket.timeout:
            pass
threads = [threading.Thread(target=flow, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print(sum(ok))
EOF
udp_out=$(client "$PY" "$WORK/udpflows.py" "$FLOWS" "$S3" "$INET" "$S3_SNAT" "$INET_SNAT" 2>&1) || true
if [[ $udp_out == "$FLOWS" ]]; then ok "udp: $udp_out/$FLOWS flows answered, each from its own source port"
else bad "udp: $udp_out/$FLOWS flows answered"; fi

title "the S3-like endpoint's filter: packets it dropped because the source was not $S3_SNAT"
drops=$(ip netns exec ngw-s3 nft list ruleset 2>/dev/null | grep -o 'counter packets [0-9]*' | awk '{print $3}' | head -1)
if [[ ${drops:-0} == 0 ]]; then ok "0 dropped: everything reached it as $S3_SNAT"
else bad "$drops packets reached the S3 endpoint with a source other than $S3_SNAT"; fi

# ----------------------------------------------------------------------------------------- counters
title "counters"
if [[ $DATAPLANE == dpdk ]]; then
  shown=0
  if [[ -x $NATGWCTL ]]; then
    say "$NATGWCTL --socket $CTL_SOCKET stats"
    if "$NATGWCTL" --socket "$CTL_SOCKET" stats 2>&1 | sed 's/^/    | /'; then shown=1; fi
  fi
  if ((!shown)); then
    say "kill -USR1 natgw (it prints its counters to its log)"
    mark=$(wc -l <"$NATGW_LOG")
    kill -USR1 "$NATGW_PID" 2>/dev/null || true
    sleep 1
    tail -n +"$((mark + 1))" "$NATGW_LOG" | head -n 40 | sed 's/^/    | /'
  fi
  if metrics=$(ip netns exec ngw-nat curl -s -m 2 http://127.0.0.1:9100/metrics 2>/dev/null) && [[ -n $metrics ]]; then
    say "Prometheus (ip netns exec ngw-nat curl 127.0.0.1:9100/metrics), a few lines:"
    grep -E '^natgw_(sessions|packets|drops|interface)' <<<"$metrics" | head -n 15 | sed 's/^/    | /' || true
  fi
  if [[ -x $NATGWCTL ]]; then
    say "$NATGWCTL --socket $CTL_SOCKET health (what /healthz and the HA agent judge by)"
    if health=$("$NATGWCTL" --socket "$CTL_SOCKET" health 2>&1); then ok "health: $health"
    else bad "health: $health"; fi
  fi
  created=$(grep -c ' session-create ' "$EVENTS" 2>/dev/null || true)
  say "NAT event log $EVENTS (who had which outside port, when), a few lines:"
  grep ' session-create ' "$EVENTS" 2>/dev/null | head -n 3 | sed 's/^/    | /' || true
  if ((${created:-0} >= 2 * FLOWS)); then ok "$created translated sessions logged"
  else bad "only ${created:-0} session-create lines in $EVENTS (wanted at least $((2 * FLOWS)))"; fi
  if ! kill -0 "$NATGW_PID" 2>/dev/null; then bad "natgw exited during the demo (log $NATGW_LOG)"; fi
else
  ip netns exec ngw-nat nft list ruleset | grep -E 'counter' | sed 's/^[[:space:]]*/    | /'
  for i in nat-in nat-s3 nat-inet; do
    ip netns exec ngw-nat sh -c "cd /sys/class/net/$i/statistics &&
      echo \"$i: rx \$(cat rx_packets) pkts \$(cat rx_bytes) bytes, tx \$(cat tx_packets) pkts \$(cat tx_bytes) bytes\"" |
      sed 's/^/    | /'
  done
fi

if [[ $DATAPLANE == dpdk ]]; then
  title "stopping natgw (SIGTERM): its final counters"
  stop_natgw
  sed -n '/natgw: stopping/,$p' "$NATGW_LOG" | head -n 40 | sed 's/^/    | /'
fi

title "summary"
if ((${#FAILED[@]})); then
  printf '    %s%d step(s) failed:%s\n' "$R" "${#FAILED[@]}" "$N"
  printf '      - %s\n' "${FAILED[@]}"
  exit 1
fi
ok "every step passed"

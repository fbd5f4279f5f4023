#!/usr/bin/env bash
# Micro benchmarks (perf/micro, Google Benchmark) with hugepages, medians over repetitions, and
# instructions per packet from callgrind (stable on these noisy, counter-less VMs). docs/benchmarking.md.
#
# Usage: scripts/bench-micro.sh [--build DIR] [--reps N] [--scales LIST] [--no-callgrind] [--out DIR]
#   --reps N        repetitions per benchmark; the report keeps median, mean, stddev (default 5)
#   --scales LIST   established-path session counts (default 1000,100000,1000000,10000000)
#   --out DIR       where the JSON and the callgrind outputs go (default /tmp/natgw-micro-<date>)
# Each group holds /tmp/natgw-busy.lock on its own (holds stay short); reserve hugepages first:
#   echo 3072 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages   (6 GB: enough for 10M sessions)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="" REPS=5 SCALES=1000,100000,1000000,10000000 CALLGRIND=1 OUT=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) BUILD=$2; shift ;;
    --reps) REPS=$2; shift ;;
    --scales) SCALES=$2; shift ;;
    --no-callgrind) CALLGRIND=0 ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-micro: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z $BUILD ]]; then
  for b in "$ROOT/build-perf" "$ROOT/build"; do [[ -x $b/perf/natgw-micro ]] && { BUILD=$b; break; }; done
fi
MICRO=$BUILD/perf/natgw-micro
[[ -x $MICRO ]] || { echo "bench-micro: natgw-micro not built (--build DIR)" >&2; exit 1; }
OUT=${OUT:-/tmp/natgw-micro-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
LOCK=/tmp/natgw-busy.lock
locked() { flock -w 900 "$LOCK" "$@"; }

# Groups small enough that one lock hold stays within a few minutes; one process per scale, so each
# population is built once and freed with its process.
groups=("^(forward|lpm|acl)/")
IFS=, read -ra sc <<< "$SCALES"
for n in "${sc[@]}"; do
  case $n in
    *000000) name=$((n / 1000000))M ;;
    *000) name=$((n / 1000))k ;;
    *) name=$n ;;
  esac
  groups+=("^(established|baseline)/.*/sessions:${name}\$")
done
groups+=("^setup/" "^expiry/")

i=0
for g in "${groups[@]}"; do
  i=$((i + 1))
  echo "bench-micro: [$i/${#groups[@]}] $g" >&2
  locked "$MICRO" --scales="$SCALES" --benchmark_filter="$g" --benchmark_repetitions="$REPS" \
    --benchmark_report_aggregates_only=true --benchmark_out="$OUT/group$i.json" --benchmark_out_format=json \
    2> >(grep -v '^\*\*\*WARNING' >&2) | grep -E '_median|^-|^Benchmark|skipp' || true
done

if [[ $CALLGRIND == 1 ]] && command -v valgrind >/dev/null; then
  # Instructions per packet of the code under test only (pipeline_burst: Worker::process + flush, TX to
  # net_null), at 1k and 100k sessions (callgrind is ~50x slower; bigger tables change cache misses,
  # not instruction counts).
  ITER=3000
  for dir in in2out out2in; do
    for n in 1k 100k; do
      f="$OUT/callgrind.$dir.$n.out"
      locked valgrind --tool=callgrind --callgrind-out-file="$f" --toggle-collect='*pipeline_burst*' \
        "$MICRO" --no-huge --eal-mem=1024 --scales=1000,100000 --iterations=$ITER \
        --benchmark_filter="^established/udp/$dir/sessions:$n/" >/dev/null 2>&1
      ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
      [[ -n $ir ]] && printf 'callgrind established/udp/%s/sessions:%s: %s instructions / %d packets = %.1f instructions/packet\n' \
        "$dir" "$n" "$ir" $((ITER * 32)) "$(echo "$ir / ($ITER * 32)" | bc -l)"
    done
  done | tee "$OUT/callgrind.txt"
fi
echo "bench-micro: results in $OUT" >&2

#!/usr/bin/env bash
# Two builds of natgw-micro side by side on this (shared, noisy) machine: the established path and
# session setup, old and new alternating process by process for several rounds, then a table of
# medians and new/old ratios, plus callgrind instructions per packet (stable where wall time is not).
# docs/benchmarking.md; perf/RESULTS.md "Session 2" was measured this way.
#
# Usage: scripts/bench-compare.sh --old DIR --new DIR [--rounds N] [--scales LIST] [--no-callgrind] [--no-setup]
#   --old DIR / --new DIR   build directories holding perf/natgw-micro (e.g. a worktree of an older commit:
#                           git worktree add /tmp/old <commit> && meson setup /tmp/old/build-perf ... )
#   --rounds N              alternations (default 2); each run keeps the median of 3 repetitions
#   --scales LIST           established-path session counts (default 1000,1000000)
# Every run holds /tmp/natgw-busy.lock. Hugepages help (10M sessions need them).
set -uo pipefail
OLD="" NEW="" ROUNDS=2 SCALES=1000,1000000 CALLGRIND=1 SETUP=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --old) OLD=$2; shift ;;
    --new) NEW=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --scales) SCALES=$2; shift ;;
    --no-callgrind) CALLGRIND=0 ;;
    --no-setup) SETUP=0 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-compare: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
for b in "$OLD" "$NEW"; do
  [[ -n $b && -x $b/perf/natgw-micro ]] || { echo "bench-compare: need --old and --new build dirs with perf/natgw-micro" >&2; exit 2; }
done
LOCK=/tmp/natgw-busy.lock
OUT=$(mktemp -d /tmp/natgw-compare.XXXX)
name_of() { case $1 in *000000) echo $(($1 / 1000000))M ;; *000) echo $(($1 / 1000))k ;; *) echo "$1" ;; esac; }

run() {  # run TAG BUILD FILTER EXTRA...: appends "bench<TAB>median<TAB>best" lines (ns/pkt or items/s) to $OUT/TAG
  local tag=$1 build=$2 filter=$3; shift 3
  flock -w 900 "$LOCK" "$build/perf/natgw-micro" "$@" --benchmark_filter="$filter" --benchmark_repetitions=3 \
    --benchmark_format=json 2>/dev/null |
    /usr/bin/python3 -c '
import json, statistics, sys
reps = {}
for b in json.load(sys.stdin)["benchmarks"]:
    if b.get("run_type") != "iteration": continue
    if "ns/pkt" in b: reps.setdefault(b["run_name"], []).append(b["ns/pkt"] * 1e9)  # JSON holds seconds
    elif "items_per_second" in b: reps.setdefault(b["run_name"], []).append(-b["items_per_second"])
for k, v in reps.items():  # rates negated: "best" is always the smallest
    print(f"{k}\t{abs(statistics.median(v))!r}\t{abs(min(v))!r}")
' >> "$OUT/$tag"
}

IFS=, read -ra sc <<< "$SCALES"
for round in $(seq "$ROUNDS"); do
  for n in "${sc[@]}"; do
    for tag in old new; do
      b=$([[ $tag == old ]] && echo "$OLD" || echo "$NEW")
      echo "bench-compare: round $round $tag established sessions:$(name_of "$n")" >&2
      run "$tag" "$b" "^(established|baseline|lookup)/udp/.*/sessions:$(name_of "$n")\$" --scales="$n"
    done
  done
  if [[ $SETUP == 1 ]]; then
    for tag in old new; do
      b=$([[ $tag == old ]] && echo "$OLD" || echo "$NEW")
      echo "bench-compare: round $round $tag setup" >&2
      run "$tag" "$b" '^setup/' --scales=1000
    done
  fi
done

echo
echo "natgw-micro, $ROUNDS rounds alternating old/new; ns/pkt (setup: sessions/s)."
echo "median = median over rounds of each run's median of 3 repetitions; best = the best repetition of all"
echo "(this VM's noise is bimodal, whole runs ~2x slow: best is the quiet-machine figure); paired = the median over"
echo "rounds of the ratio of each round's two runs' best repetitions (neighbours in time, so slow drifts cancel)."
/usr/bin/python3 - "$OUT/old" "$OUT/new" <<'EOF'
import statistics, sys
def load(path):
    d = {}
    for line in open(path):
        k, med, best = line.rstrip("\n").split("\t")
        d.setdefault(k, ([], []))
        d[k][0].append(float(med))
        d[k][1].append(float(best))
    return d
old, new = load(sys.argv[1]), load(sys.argv[2])
rate = lambda k: k.startswith("setup/")
def stats(d, k):  # (median, best); best = max for rates
    return statistics.median(d[k][0]), (max if rate(k) else min)(d[k][1])
def paired(k):  # median over rounds of new/old, each round's two runs being neighbours in time
    r = [n / o for o, n in zip(old[k][1], new[k][1])]
    return statistics.median(r), min(r), max(r)
print(f"| benchmark | old median | new median | new/old | old best | new best | new/old | paired new/old (min–max) |\n|---|---|---|---|---|---|---|---|")
for k in old:
    if k not in new: continue
    (om, ob), (nm, nb) = stats(old, k), stats(new, k)
    fmt = (lambda x: f"{x/1e6:.2f} M/s") if rate(k) else (lambda x: f"{x:.1f} ns")
    pm, plo, phi = paired(k)
    print(f"| {k} | {fmt(om)} | {fmt(nm)} | {nm/om:.2f} | {fmt(ob)} | {fmt(nb)} | {nb/ob:.2f} | {pm:.2f} ({plo:.2f}–{phi:.2f}) |")
# The pipeline's own cost: established - baseline (the refill + TX loop alone).
for k in old:
    if not k.startswith("established/") or k not in new: continue
    b = "baseline/" + k[len("established/"):]
    if b not in old or b not in new: continue
    om, ob = [x - y for x, y in zip(stats(old, k), stats(old, b))]
    nm, nb = [x - y for x, y in zip(stats(new, k), stats(new, b))]
    r = [(ne - nbs) / (oe - obs) for oe, obs, ne, nbs in zip(old[k][1], old[b][1], new[k][1], new[b][1])
         if oe > obs and ne > nbs]
    pair = f"{statistics.median(r):.2f} ({min(r):.2f}–{max(r):.2f})" if r else "—"
    if min(om, ob, nm, nb) > 0:
        print(f"| pipeline {k[len('established/'):]} | {om:.1f} ns | {nm:.1f} ns | {nm/om:.2f} | {ob:.1f} ns | {nb:.1f} ns | {nb/ob:.2f} | {pair} |")
EOF

if [[ $CALLGRIND == 1 ]] && command -v valgrind >/dev/null; then
  echo
  echo "callgrind instructions per packet (1k sessions, 3,000 bursts of 32, pipeline only)"
  for dir in in2out out2in; do
    for tag in old new; do
      b=$([[ $tag == old ]] && echo "$OLD" || echo "$NEW")
      f="$OUT/callgrind.$tag.$dir"
      flock -w 900 "$LOCK" valgrind --tool=callgrind --callgrind-out-file="$f" --toggle-collect='*pipeline_burst*' \
        "$b/perf/natgw-micro" --no-huge --eal-mem=1024 --scales=1000 --iterations=3000 \
        --benchmark_filter="^established/udp/$dir/sessions:1k/" >/dev/null 2>&1
      ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
      [[ -n $ir ]] && printf '%s %s: %.1f\n' "$tag" "$dir" "$(echo "$ir / 96000" | bc -l)"
    done
  done
fi
echo
echo "raw results: $OUT"

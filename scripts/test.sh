#!/usr/bin/env bash
# natgw: install dependencies, build, and run every test (unit, packet, lab incl. AF_XDP steering, smoke
# benchmarks), then the unit and packet tests again under ASan/UBSan, then each fuzz target briefly.
# This is the README's test command and what CI runs (.ci/run).
#   scripts/test.sh            everything
#   scripts/test.sh --quick    skip the sanitizer and fuzz builds
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

scripts/deps.sh
if [[ ! -f build/build.ninja ]]; then
  meson setup build --buildtype=debugoptimized
fi
ninja -C build

logs=()
status=0
run_suite() {  # dir, label, meson test args...
  local dir=$1 label=$2; shift 2
  local log="$dir/meson-logs/summary-$label.txt"
  echo "=== $label ==="
  if meson test -C "$dir" --print-errorlogs "$@" 2>&1 | tee "$log"; then :; else status=1; fi
  logs+=("$log")
}

# Lab tests need root and network namespaces; they skip (exit 77) without them.
run_suite build main --num-processes 2 --suite unit --suite packet --suite perf
run_suite build lab --num-processes 1 --suite lab

if [[ $quick -eq 0 ]]; then
  if [[ ! -f build-asan/build.ninja ]]; then
    meson setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false -Dperf=false
  fi
  ninja -C build-asan
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    run_suite build-asan sanitizers --num-processes 2 --suite unit --suite packet
fi

# Fuzz targets (clang libFuzzer, ASan/UBSan): each runs a few seconds from its seed corpus, so a parser
# change that crashes on odd bytes fails here. Longer runs: scripts/fuzz.sh [SECONDS].
if [[ $quick -eq 0 ]]; then
  if [[ ! -f build-fuzz/build.ninja ]]; then
    CC=clang CXX=clang++ meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false -Dperf=false
  fi
  ninja -C build-fuzz tests/fuzz/fuzz_parse_ipv4 tests/fuzz/fuzz_pipeline tests/fuzz/fuzz_config tests/fuzz/fuzz_http
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    run_suite build-fuzz fuzz --num-processes 1 --no-rebuild --suite fuzz
fi

# One closing line over every suite: "N passed, N failed, N skipped".
passed=0; failed=0; skipped=0
for l in "${logs[@]}"; do
  p=$(grep -Eo '^Ok: +[0-9]+' "$l" | grep -Eo '[0-9]+' || echo 0)
  f1=$(grep -Eo '^Fail: +[0-9]+' "$l" | grep -Eo '[0-9]+' || echo 0)
  f2=$(grep -Eo '^Timeout: +[0-9]+' "$l" | grep -Eo '[0-9]+' || echo 0)
  f3=$(grep -Eo '^Unexpected Pass: +[0-9]+' "$l" | grep -Eo '[0-9]+' || echo 0)
  s=$(grep -Eo '^Skipped: +[0-9]+' "$l" | grep -Eo '[0-9]+' || echo 0)
  passed=$((passed + p)); failed=$((failed + f1 + f2 + f3)); skipped=$((skipped + s))
done
echo
echo "natgw: $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 && $status -eq 0 ]]

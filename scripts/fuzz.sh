#!/bin/sh
# Build the libFuzzer targets with ASan/UBSan in build-fuzz and run each for a while.
#   scripts/fuzz.sh            every target 30 s
#   scripts/fuzz.sh --smoke    every target 10 s
#   scripts/fuzz.sh 600 config one target (parse_ipv4, pipeline, config or http) for 600 s
# New inputs go to build-fuzz/tests/fuzz/corpus-<target>; a crash leaves crash-* / leak-* /
# timeout-* files in build-fuzz/fuzz-artifacts and makes the script fail. Needs clang.
set -eu
cd "$(dirname "$0")/.."
seconds=30
targets="parse_ipv4 pipeline config http"
case "${1:-}" in
  --smoke) seconds=10; shift ;;
  -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
  '') ;;
  *) seconds=$1; shift ;;
esac
[ $# -gt 0 ] && targets="$*"
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (apt-get install clang)" >&2; exit 1; }

build=build-fuzz
if [ ! -f "$build/build.ninja" ]; then
  CC=clang CXX=clang++ meson setup "$build" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false -Dperf=false
fi
nice -n 5 ninja -C "$build" -j2 tests/fuzz/fuzz_parse_ipv4 tests/fuzz/fuzz_pipeline tests/fuzz/fuzz_config tests/fuzz/fuzz_http

mkdir -p "$build/fuzz-artifacts"
status=0
for t in $targets; do
  work="$build/tests/fuzz/corpus-$t"
  mkdir -p "$work"
  echo "== fuzz_$t for ${seconds}s"
  # UBSan findings are crashes too; leaks are checked at exit.
  if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
       "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
       -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$t-" \
       "$work" "tests/fuzz/corpus/$t"; then
    echo "fuzz_$t: FAILED (see $build/fuzz-artifacts)" >&2
    status=1
  fi
done
exit $status

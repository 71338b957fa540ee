#!/usr/bin/env bash
# Runs every libFuzzer target (or the ones named) for a given time each and exits non-zero when any
# of them crashed, leaked, timed out or failed to build.
#
#   fuzz/run.sh [-t SECONDS] [-b BUILD_DIR] [--no-build] [TARGET...]
#     -t SECONDS   time per target (default 60)
#     -b DIR       build directory (default build/fuzz), configured with clang++ if needed
#     TARGET       fuzz_segment_open, fuzz_wire_decode, fuzz_agent_stream (default: all)
#
# Each target starts from its seed corpus fuzz/corpus/<target>/ (read-only: new inputs the fuzzer
# finds go to DIR/corpus/<target>/, so the repository's corpus stays small). A crashing input is
# written to DIR/artifacts/<target>/crash-*; copy it to fuzz/corpus/<target>/crash_<what> and it
# is replayed by tests/fuzz/corpus_replay_test.cpp from then on. The last line of each run's log
# (DIR/logs/<target>.log) has the executions count; a summary line per target is printed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
secs=60
build="$repo/build/fuzz"
do_build=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t) secs=$2; shift 2 ;;
    -b) build=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_segment_open fuzz_wire_decode fuzz_agent_stream)

if [ $do_build -eq 1 ]; then
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$here" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ >/dev/null || exit 2
  fi
  cmake --build "$build" -j2 --target "${targets[@]}" || exit 2
fi

# Leak checking stays on; dead-stripping of the ASan report is off so a crash names its frames.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in "${targets[@]}"; do
  seeds="$here/corpus/$t"
  work="$build/corpus/$t"
  art="$build/artifacts/$t"
  mkdir -p "$work" "$art" "$build/logs"
  log="$build/logs/$t.log"
  # -timeout: one input taking > 25 s is a hang; -rss_limit_mb: the segment target maps up to the
  # capacity a header names (reserved, not resident).
  "$build/$t" -max_total_time="$secs" -timeout=25 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="$art/" "$work" "$seeds" >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  crashes=$(ls "$art" 2>/dev/null | wc -l)
  if [ $rc -eq 0 ]; then
    echo "$t: ok, ${secs}s, ${execs:-?} executions"
  else
    echo "$t: FAILED (exit $rc) after ${execs:-?} executions; $crashes artifact(s) in $art; log $log"
    grep -m3 -E 'ERROR: |SUMMARY: |property violated|deadly signal' "$log" | sed 's/^/    /'
    status=1
  fi
done
exit $status

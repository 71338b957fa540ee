#!/usr/bin/env bash
# Soak: runs a mixed load for a given time and checks that nothing grows (issue 10).
#
#   scripts/soak.sh [SECONDS=600]
#
# The load:
#   * shmkit_torture --no-kills: long-lived processes using locks, the heap, the queue, the RPC
#     channel and the socket/vm transports (agents) continuously, for the whole time;
#   * beside it, in a loop, the pool, queue and transport examples (shmkit_worker_pool,
#     shmkit_producer_consumer, shmkit_remote_memory): processes and segments created and torn
#     down over and over.
# The checks, between a sample taken after a warm-up and one taken just before the load stops:
#   * every long-lived process (the torture supervisor, and those of its workers and of their
#     agent children that are alive at both samples): private resident memory (RssAnon: where a leak of the process's own memory shows;
#     the shared segments it touches are in RssShmem and are sized by the load, not leaked) grows
#     by at most max(SOAK_RSS_TOLERANCE_KB=4096, 10%);
#   * its open file descriptors (/proc/PID/fd) grow by at most SOAK_FD_TOLERANCE=3;
#   * the number of /dev/shm entries, before the load and after it has stopped, grows by at most
#     SOAK_SHM_TOLERANCE=0 (raise it when other programs create segments on the machine meanwhile);
#   * the torture run itself ends with 0 lost/duplicated/corrupted and verify findings, every
#     example run succeeds, and no process of the load is left.
# Exits 0 when all hold, 1 otherwise (each failure printed with the figures).
#
# Binaries come from SHMKIT_BUILD (default: build/release, else the first build/* that has them).
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${1:-600}
[[ "$secs" =~ ^[0-9]+$ ]] && (( secs >= 20 )) || { echo "usage: $0 [SECONDS>=20]" >&2; exit 64; }
rss_tol_kb=${SOAK_RSS_TOLERANCE_KB:-4096}
fd_tol=${SOAK_FD_TOLERANCE:-3}
shm_tol=${SOAK_SHM_TOLERANCE:-0}

find_bin() {  # find_bin NAME: path of a built binary
  local d
  for d in "${SHMKIT_BUILD:-build/release}" build/*; do
    local p
    p=$(find "$d" -type f -name "$1" -perm -u+x 2>/dev/null | head -1)
    [[ -n "$p" ]] && { echo "$p"; return 0; }
  done
  return 1
}
torture=$(find_bin shmkit_torture) || { echo "soak: shmkit_torture not built" >&2; exit 2; }
examples=()
for e in shmkit_worker_pool shmkit_producer_consumer shmkit_remote_memory; do
  if p=$(find_bin "$e"); then examples+=("$p"); else echo "soak: $e not built; skipped" >&2; fi
done

tmp=$(mktemp -d)
torture_pid=""
loop_pid=""
cleanup() {
  [[ -n "$loop_pid" ]] && kill "$loop_pid" 2>/dev/null
  [[ -n "$torture_pid" ]] && kill -TERM "$torture_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

shm_count() { find /dev/shm -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
shm_list() { find /dev/shm -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort; }
rss_anon_kb() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
fd_count() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
children_of() { # direct children of a pid
  cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$'
}
sample() { # sample FILE: "pid rss_anon_kb fds comm" for the supervisor, its workers and their agents
  local out=$1 p w
  : >"$out"
  local pids=("$torture_pid")
  for w in $(children_of "$torture_pid"); do pids+=("$w" $(children_of "$w")); done
  for p in "${pids[@]}"; do
    local r f c
    r=$(rss_anon_kb "$p"); f=$(fd_count "$p"); c=$({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | cut -c1-80)
    [[ -n "$r" ]] && echo "$p $r $f $c" >>"$out"
  done
}

shm_list >"$tmp/shm_before"
shm_before=$(wc -l <"$tmp/shm_before")
echo "soak: ${secs}s; torture=$torture; examples: ${examples[*]##*/}; /dev/shm entries: $shm_before"

# The long-lived load.
"$torture" --no-kills --duration "$secs" --workers 13 >"$tmp/torture.out" 2>"$tmp/torture.err" &
torture_pid=$!

# The churning load: examples in a loop until told to stop.
(
  trap 'exit 0' TERM
  runs=0; failures=0
  while :; do
    for e in "${examples[@]}"; do
      case "${e##*/}" in
        shmkit_worker_pool) args=(- 2 4) ;;
        shmkit_producer_consumer) args=(2 2 20000) ;;
        *) args=() ;;
      esac
      if ! timeout 120 "$e" "${args[@]}" >"$tmp/example.out" 2>&1; then
        failures=$((failures + 1))
        echo "soak: ${e##*/} failed:" >&2; tail -5 "$tmp/example.out" >&2
      fi
      runs=$((runs + 1))
      echo "$runs $failures" >"$tmp/examples.count"
    done
  done
) &
loop_pid=$!

warmup=$(( secs / 5 < 30 ? secs / 5 : 30 ))
sleep "$warmup"
sample "$tmp/s0"
sleep $(( secs - warmup - 8 > 1 ? secs - warmup - 8 : 1 ))
sample "$tmp/s1"

# Stop the churn, let the torture run finish on its own (it stops at its duration).
kill -TERM "$loop_pid" 2>/dev/null; wait "$loop_pid" 2>/dev/null; loop_pid=""
wait "$torture_pid"; torture_rc=$?; torture_pid=""
sleep 1

fail=0
echo "soak: per process (pid: RssAnon kB start -> end, fds start -> end):"
while read -r pid r0 f0 comm; do
  line=$(grep -E "^$pid " "$tmp/s1") || continue  # a process that did not live through both samples
  read -r _ r1 f1 _ <<<"$line"
  tol=$(( r0 / 10 > rss_tol_kb ? r0 / 10 : rss_tol_kb ))
  verdict=ok
  if (( r1 - r0 > tol )); then verdict="RSS GREW"; fail=1; fi
  if (( f1 - f0 > fd_tol )); then verdict="$verdict FDS GREW"; fail=1; fi
  printf '  %6d: %7d -> %7d   %3d -> %3d   %s  [%s]\n' "$pid" "$r0" "$r1" "$f0" "$f1" "$verdict" "$comm"
done <"$tmp/s0"
(( $(wc -l <"$tmp/s0") > 0 )) || { echo "soak: no long-lived process was sampled" >&2; fail=1; }

shm_list >"$tmp/shm_after"
shm_after=$(wc -l <"$tmp/shm_after")
echo "soak: /dev/shm entries: $shm_before -> $shm_after (tolerance $shm_tol)"
if (( shm_after - shm_before > shm_tol )); then
  echo "soak: /dev/shm grew; new entries:" >&2
  comm -13 "$tmp/shm_before" "$tmp/shm_after" | head -20 >&2
  fail=1
fi

read -r runs ex_failures <"$tmp/examples.count" 2>/dev/null || { runs=0; ex_failures=0; }
echo "soak: example runs: $runs, failed: $ex_failures"
(( ex_failures == 0 )) || fail=1
(( ${#examples[@]} == 0 || runs > 0 )) || { echo "soak: no example run completed" >&2; fail=1; }

echo "soak: $(tail -1 "$tmp/torture.out")"
if (( torture_rc != 0 )); then
  echo "soak: shmkit_torture exited $torture_rc" >&2; tail -20 "$tmp/torture.err" >&2; fail=1
fi

# Nothing of the load may be left running.
left=$(pgrep -f -- "$torture" || true)
if [[ -n "$left" ]]; then echo "soak: processes left: $left" >&2; fail=1; fi

if (( fail )); then echo "soak: FAILED"; exit 1; fi
echo "soak: OK"

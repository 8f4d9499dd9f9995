#!/usr/bin/env bash
# The cross-node shuffle benchmark: the rolling job at parallelism 2 in one process, then on a
# JobManager and two TaskManagers (one slot each, so the keyed exchange crosses nodes), ROUNDS
# times alternately (default 3). Prints each run's RESULT line with the CPU time of all its
# processes and, for the cluster, the bytes the TaskManagers' data channels sent; then the
# medians.
#
#   benches/shuffle.sh [EVENTS]        (default 50000000)
#
# Run on a quiet machine: it measures wall time and CPU. The cluster's time includes its fixed
# cost (the TaskManagers joining, building the job, deployment, the TLS handshakes between
# them: some 50 ms), so EVENTS must be large enough for that not to matter; at 10 M events the
# local run takes ~0.15 s and the fixed cost alone would halve the ratio.
#
# The JobManager starts first and the TaskManagers once it listens: a TaskManager started
# before retries joining with a growing backoff (100 ms, 200 ms, ... ), and the JobManager's
# clock, which starts at submission, would count that wait (up to 1.6 s in earlier versions of
# this script, which started the TaskManagers first).
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-50000000}"
rounds="${ROUNDS:-3}"
port="${EICHHORN_JOBMANAGER_PORT:-6133}"
cargo build --release -p eichhorn-benches --bin shuffle >/dev/null
bin=target/release/shuffle
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cpu_of() { awk '{print $1 + $2}' "$1"; }   # user + system seconds, from /usr/bin/time -f "%U %S"

local_eps=(); cluster_eps=(); local_cpu=(); cluster_cpu=(); wire=()
for round in $(seq 1 "$rounds"); do
    /usr/bin/time -f "%U %S" -o "$work/local.time" \
        "$bin" --events "$events" --parallelism 2 > "$work/local.out"
    line="$(grep '^RESULT' "$work/local.out")"
    eps="$(sed 's/.*events_per_s=\([0-9]*\).*/\1/' <<< "$line")"
    cpu="$(cpu_of "$work/local.time")"
    echo "$line mode=local cpu_s=$cpu"
    local_eps+=("$eps"); local_cpu+=("$cpu")

    # The JobManager first; the TaskManagers as soon as it listens (see the top).
    rm -f "$work/jm.log"
    (cd "$work" && /usr/bin/time -f "%U %S" -o jm.time \
        "$OLDPWD/$bin" --jobmanager --bind "127.0.0.1:$port" --events "$events" --parallelism 2 \
        > jm.out 2> jm.log) &
    jm=$!
    for _ in $(seq 1 600); do
        grep -q 'listening for task managers' "$work/jm.log" 2>/dev/null && break
        sleep 0.01
    done
    tms=()
    for i in 1 2; do
        (cd "$work" && exec /usr/bin/time -f "%U %S" -o "tm$i.time" \
            "$OLDPWD/$bin" --taskmanager --join "127.0.0.1:$port" --slots 1 --node-id "tm$i" \
            > "tm$i.out" 2> "tm$i.log") &
        tms+=($!)
    done
    wait "$jm"
    sleep 0.5
    # Each entry of `tms` is the `time` process (the subshell exec'd it); stop its child, the
    # TaskManager, by parent id, so that `time` writes its figures.
    for tm in "${tms[@]}"; do pkill -TERM -P "$tm" || true; done
    wait "${tms[@]}" 2>/dev/null || true
    line="$(grep '^RESULT' "$work/jm.out")"
    eps="$(sed 's/.*events_per_s=\([0-9]*\).*/\1/' <<< "$line")"
    cpu="$(awk '{s += $1 + $2} END {print s}' "$work/jm.time" "$work/tm1.time" "$work/tm2.time")"
    bytes="$(grep -ho 'sent_bytes=[0-9]*' "$work"/tm*.log | cut -d= -f2 | awk '{s += $1} END {print s + 0}')"
    echo "$line mode=cluster cpu_s=$cpu wire_bytes=$bytes"
    cluster_eps+=("$eps"); cluster_cpu+=("$cpu"); wire+=("$bytes")
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
le="$(median "${local_eps[@]}")"; ce="$(median "${cluster_eps[@]}")"
lc="$(median "${local_cpu[@]}")"; cc="$(median "${cluster_cpu[@]}")"; wb="$(median "${wire[@]}")"
awk -v le="$le" -v ce="$ce" -v lc="$lc" -v cc="$cc" -v wb="$wb" -v n="$events" 'BEGIN {
    wall = n / ce;
    printf "SHUFFLE events=%d local_eps=%d cluster_eps=%d ratio=%.2f local_cpu_us_per_event=%.3f cluster_cpu_us_per_event=%.3f wire_mb_per_s=%.1f wire_bytes_per_event=%.1f\n",
        n, le, ce, ce / le, lc * 1e6 / n, cc * 1e6 / n, wb / wall / 1e6, wb / n
}'

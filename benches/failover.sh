#!/usr/bin/env bash
# Failover on a real cluster: how long from `kill -9` of a TaskManager to the job running again,
# and from a replacement TaskManager starting to the job running on it.
#
#   benches/failover.sh [ROUNDS]        (default 3)
#
# Each round runs `checkpointed_count` (parallelism 4, checkpoints every 500 ms, a paced source)
# on a JobManager and TaskManagers of 2 slots each on 127.0.0.1, twice:
#
#   spare:       three TaskManagers; one that runs subtasks is killed, the job restarts on the
#                four slots that remain;
#   replacement: two TaskManagers; one is killed, the job waits for slots, a third one starts
#                2 s after the detection and the job restarts on it.
#
# Heartbeats keep their defaults (interval 1000 ms, timeout 10000 ms) unless
# EICHHORN_HEARTBEAT_TIMEOUT_MS is set. Times come from the JobManager's log (its timestamps, UTC)
# and from this script's clock at the kill and the start, so they hold under load too. Each
# round prints one line per scenario, then the medians:
#
#   FAILOVER scenario=spare detect_ms=.. restart_ms=.. kill_to_running_ms=.. verdict=ok
#   FAILOVER scenario=replacement detect_ms=.. join_ms=.. join_to_running_ms=.. verdict=ok
#
# detect_ms: kill -> the JobManager logs the TaskManager lost; restart_ms: that -> the new
# attempt running (every subtask started); join_ms: replacement started -> joined;
# join_to_running_ms: replacement started -> the job running on it. verdict=ok means the
# JobManager exited 0 and the committed output equals the expected counts.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
timeout_ms="${EICHHORN_HEARTBEAT_TIMEOUT_MS:-10000}"
cargo build --release -p eichhorn-examples --bin checkpointed_count >/dev/null
bin="$PWD/target/release/checkpointed_count"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

lines=60000
rate=3000
python3 - "$work/in.csv" "$lines" <<'EOF'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(f"k{(i * 7) % 29},{(i % 101) - 50}\n")
EOF
# The expected output: one line per key, its sum (checkpointed_count's format, checked below
# against a failure-free single-process run).
"$bin" --input "$work/in.csv" --output "$work/expected" --parallelism 4 \
    --checkpoint-interval-ms 500 > /dev/null 2>&1
committed() { find "$1" -maxdepth 1 -type f ! -name '.*' -exec cat {} + | sort; }
committed "$work/expected" > "$work/expected.txt"

now_ms() { date -u +%s%3N; }
# The first JobManager log line matching $2 (extended regex) at or after line $3, as ms since the
# epoch; empty if none yet.
log_ms() {
    local line
    line="$(tail -n +"${3:-1}" "$1" | grep -m1 -E "$2" || true)"
    [ -n "$line" ] || return 0
    date -u -d "$(cut -c1-26 <<< "$line" | sed 's/T/ /')" +%s%3N
}
wait_log() {   # file, regex, from-line, seconds -> ms
    local t=0 ms
    while [ "$t" -lt $(( $4 * 10 )) ]; do
        ms="$(log_ms "$1" "$2" "$3")"
        if [ -n "$ms" ]; then echo "$ms"; return 0; fi
        sleep 0.1; t=$((t + 1))
    done
    echo "no '$2' in $1 within $4 s" >&2
    return 1
}
started_pid=
start_tm() {   # dir name port; the process id in $started_pid
    (cd "$1" && exec "$bin" --taskmanager --join "127.0.0.1:$3" --slots 2 --node-id "$2" \
        --heartbeat-timeout-ms "$timeout_ms" > "$2.out" 2> "$2.log") &
    started_pid=$!
    pids+=("$started_pid")
}

report() { echo "$1" | tee -a "$work/results.txt"; }

run() {   # scenario round
    local scenario="$1" dir="$work/$1-$2" port=$((6200 + RANDOM % 500))
    mkdir -p "$dir"
    cp "$work/in.csv" "$dir/in.csv"
    (cd "$dir" && RUST_LOG="info,eichhorn::runtime::job_manager=debug" exec "$bin" \
        --jobmanager --bind "127.0.0.1:$port" --heartbeat-timeout-ms "$timeout_ms" \
        --input in.csv --output out --parallelism 4 --checkpoint-interval-ms 500 \
        --source-rate "$rate" > jm.out 2> jm.log) &
    local jm=$!
    pids+=("$jm")
    declare -A tm_pid
    local names=(tm1 tm2)
    [ "$scenario" = spare ] && names+=(tm3)
    for name in "${names[@]}"; do
        start_tm "$dir" "$name" "$port"
        tm_pid[$name]="$started_pid"
    done
    # Running, and a checkpoint completed.
    wait_log "$dir/jm.log" "attempt=0.*running|running.*attempt=0" 1 60 > /dev/null
    while ! ls "$dir"/out/.checkpoints/*/chk-*/_metadata >/dev/null 2>&1; do sleep 0.1; done
    # A victim that runs subtasks: named in the deployment line.
    local victim
    victim="$(grep -m1 "deploying" "$dir/jm.log" | grep -o 'tm[0-9] ([1-9]' | head -1 | cut -d' ' -f1)"
    local mark kill_ms detect_ms running_ms
    mark=$(( $(wc -l < "$dir/jm.log") + 1 ))
    kill_ms="$(now_ms)"
    kill -9 "${tm_pid[$victim]}"
    wait "${tm_pid[$victim]}" 2>/dev/null || true   # no "Killed" notice from the shell
    detect_ms="$(wait_log "$dir/jm.log" "task manager lost|connection to $victim lost|'$victim' was lost" "$mark" 60)"
    if [ "$scenario" = spare ]; then
        running_ms="$(wait_log "$dir/jm.log" "attempt=1.*running|running.*attempt=1" "$mark" 60)"
        wait "$jm" && status=0 || status=$?
        verdict=ok
        [ "$status" = 0 ] || verdict="fail(jobmanager exit $status)"
        committed "$dir/out" | cmp -s - "$work/expected.txt" || verdict="fail(output differs)"
        report "FAILOVER scenario=spare detect_ms=$((detect_ms - kill_ms)) restart_ms=$((running_ms - detect_ms)) kill_to_running_ms=$((running_ms - kill_ms)) verdict=$verdict"
    else
        sleep 2
        local start_ms join_ms
        mark=$(( $(wc -l < "$dir/jm.log") + 1 ))
        start_ms="$(now_ms)"
        start_tm "$dir" tm3 "$port"
        tm_pid[tm3]="$started_pid"
        join_ms="$(wait_log "$dir/jm.log" "task manager joined" "$mark" 60)"
        running_ms="$(wait_log "$dir/jm.log" "attempt=[1-9].*running|running.*attempt=[1-9]" "$mark" 60)"
        wait "$jm" && status=0 || status=$?
        verdict=ok
        [ "$status" = 0 ] || verdict="fail(jobmanager exit $status)"
        committed "$dir/out" | cmp -s - "$work/expected.txt" || verdict="fail(output differs)"
        report "FAILOVER scenario=replacement detect_ms=$((detect_ms - kill_ms)) join_ms=$((join_ms - start_ms)) join_to_running_ms=$((running_ms - start_ms)) verdict=$verdict"
    fi
    for pid in "${tm_pid[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

for round in $(seq 1 "$rounds"); do
    run spare "$round"
    run replacement "$round"
done
python3 - "$work/results.txt" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    rows.setdefault(fields.pop("scenario"), []).append(fields)
for scenario, runs in rows.items():
    keys = [k for k in runs[0] if k.endswith("_ms")]
    medians = " ".join(f"{k}={statistics.median(int(r[k]) for r in runs):.0f}" for k in keys)
    ok = sum(r["verdict"] == "ok" for r in runs)
    print(f"FAILOVER-MEDIAN scenario={scenario} runs={len(runs)} ok={ok} {medians}")
EOF

#!/usr/bin/env bash
# Runs Eichhorn and Apache Flink side by side on the same jobs and prints a table of medians and
# one RATIO line per job. See benches/README.md.
#
#   benches/peers/flink/compare.sh [JOB...]
#
# JOB: a synthetic job (stateless rolling tumbling sliding session timers), the same with the
# on-disk state backends (tumbling-lmdb sliding-lmdb timers-lmdb: Eichhorn's LMDB against
# Flink's RocksDB), a Nexmark query (q0 q1 q2 q3 q4 q5 q7 q8 q11), a latency job
# (latency-rolling latency-tumbling, each engine's defaults; latency-rolling-low
# latency-tumbling-low: buffer timeout 0 and 1 ms watermarks) or a CEP job (cep-followed-by
# cep-login). Default: every synthetic job and Nexmark query.
#
# Environment: ROUNDS (3) rounds per engine, run alternately; EVENTS (10000000) synthetic and CEP
# events; NEXMARK_EVENTS (EVENTS) Nexmark events; KEYS (10000); PARALLELISM (1); RATE (100000)
# and LATENCY_SECONDS (10) for the latency jobs; OUT (a directory; default build/results) for the raw
# RESULT lines (results.txt) and the table (summary.txt).
#
# Flink comes from PyPI's apache-flink (2.3.0), installed into .venv here when missing; the Java
# jobs in src/ are compiled into build/ against its jars. Neither is committed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
FLINK_VERSION="${FLINK_VERSION:-2.3.0}"
ROUNDS="${ROUNDS:-3}"
EVENTS="${EVENTS:-10000000}"
NEXMARK_EVENTS="${NEXMARK_EVENTS:-$EVENTS}"
KEYS="${KEYS:-10000}"
PARALLELISM="${PARALLELISM:-1}"
RATE="${RATE:-100000}"
LATENCY_SECONDS="${LATENCY_SECONDS:-10}"
OUT="${OUT:-$HERE/build/results}"
JAVA_OPTS="${JAVA_OPTS:-}"

if [ "$#" -gt 0 ]; then
    JOBS=("$@")
else
    JOBS=(stateless rolling tumbling sliding session timers q0 q1 q2 q3 q4 q5 q7 q8 q11)
fi
case "$ROUNDS" in '' | *[!0-9]* | 0) echo "compare.sh: ROUNDS must be a positive integer, not '$ROUNDS'" >&2; exit 2 ;; esac

# --- Flink: the PyPI package in a virtual environment, the jobs compiled against its jars ---
VENV="$HERE/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    echo "compare.sh: creating $VENV" >&2
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('apache-flink') == '$FLINK_VERSION'" 2>/dev/null; then
    echo "compare.sh: installing apache-flink==$FLINK_VERSION into $VENV" >&2
    "$VENV/bin/pip" install --quiet "apache-flink==$FLINK_VERSION"
fi
SITE="$("$VENV/bin/python" -c 'import pyflink, os; print(os.path.dirname(pyflink.__file__))')"
FLINK_LIB="$SITE/lib"
[ -f "$FLINK_LIB/flink-dist-$FLINK_VERSION.jar" ] || { echo "compare.sh: no flink-dist jar in $FLINK_LIB" >&2; exit 1; }
BUILD="$HERE/build/classes"
mkdir -p "$BUILD" "$OUT"
echo "compare.sh: compiling the Flink jobs" >&2
javac -nowarn -d "$BUILD" -cp "$FLINK_LIB/*" "$HERE"/src/*.java
FLINK_CP="$BUILD:$FLINK_LIB/*"

# --- Eichhorn: the release benchmark binaries ---
echo "compare.sh: building the Eichhorn benchmarks (release)" >&2
(cd "$ROOT" && cargo build --release --quiet -p eichhorn-benches \
    --bin synthetic --bin nexmark --bin latency --bin cep)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

# The command lines of job $1 for engine $2 (eichhorn or flink), one per line... as an array.
command_for() {
    local job="$1" engine="$2" base backend_e backend_f
    local flink=(java $JAVA_OPTS -cp "$FLINK_CP")
    case "$job" in
        stateless | rolling | tumbling | sliding | session | timers | tumbling-lmdb | sliding-lmdb | timers-lmdb)
            base="${job%-lmdb}"
            backend_e=memory backend_f=hashmap
            if [ "$base" != "$job" ]; then backend_e=lmdb backend_f=rocksdb; fi
            if [ "$engine" = eichhorn ]; then
                CMD=("$BIN/synthetic" --job "$base" --events "$EVENTS" --keys "$KEYS" --parallelism "$PARALLELISM" --state-backend "$backend_e")
            else
                CMD=("${flink[@]}" Synthetic --job "$base" --events "$EVENTS" --keys "$KEYS" --parallelism "$PARALLELISM" --state-backend "$backend_f")
            fi ;;
        q0 | q1 | q2 | q3 | q4 | q5 | q7 | q8 | q11)
            if [ "$engine" = eichhorn ]; then
                CMD=("$BIN/nexmark" --query "$job" --events "$NEXMARK_EVENTS" --parallelism "$PARALLELISM")
            else
                CMD=("${flink[@]}" Nexmark --query "$job" --events "$NEXMARK_EVENTS" --parallelism "$PARALLELISM")
            fi ;;
        latency-rolling | latency-tumbling | latency-rolling-low | latency-tumbling-low)
            base="${job#latency-}"; base="${base%-low}"
            local low=()
            if [ "$engine" = eichhorn ]; then
                [ "$job" != "${job%-low}" ] && low=(--buffer-timeout-ms 0 --idle-poll-ms 1 --watermark-interval-ms 1)
                CMD=("$BIN/latency" --job "$base" --rate "$RATE" --seconds "$LATENCY_SECONDS" --keys "$KEYS" --parallelism "$PARALLELISM" "${low[@]}")
            else
                [ "$job" != "${job%-low}" ] && low=(--buffer-timeout-ms 0 --watermark-interval-ms 1)
                CMD=("${flink[@]}" Latency --job "$base" --rate "$RATE" --seconds "$LATENCY_SECONDS" --keys "$KEYS" --parallelism "$PARALLELISM" "${low[@]}")
            fi ;;
        cep-followed-by | cep-login)
            if [ "$engine" = eichhorn ]; then
                CMD=("$BIN/cep" --job "${job#cep-}" --events "$EVENTS" --keys "$KEYS" --parallelism "$PARALLELISM")
            else
                CMD=("${flink[@]}" Cep --job "${job#cep-}" --events "$EVENTS" --keys "$KEYS" --parallelism "$PARALLELISM")
            fi ;;
        *) echo "compare.sh: unknown job '$job'" >&2; exit 2 ;;
    esac
}

RESULTS="$OUT/results.txt"
: > "$RESULTS"
for job in "${JOBS[@]}"; do
    command_for "$job" eichhorn  # validates the name before anything runs
done
for job in "${JOBS[@]}"; do
    for round in $(seq 1 "$ROUNDS"); do
        for engine in eichhorn flink; do
            command_for "$job" "$engine"
            echo "compare.sh: $job round $round/$ROUNDS: $engine" >&2
            log="$OUT/$job.$engine.$round.log"
            if ! "${CMD[@]}" > "$log" 2>&1; then
                echo "compare.sh: $engine failed on $job (round $round); its output:" >&2
                tail -20 "$log" >&2
                exit 1
            fi
            line="$(grep '^RESULT ' "$log" | tail -1)"
            [ -n "$line" ] || { echo "compare.sh: no RESULT line from $engine on $job (see $log)" >&2; exit 1; }
            echo "ROUND job=$job round=$round $line" >> "$RESULTS"
        done
    done
done

"$VENV/bin/python" "$HERE/summarize.py" "$RESULTS" | tee "$OUT/summary.txt"

#!/usr/bin/env bash
# Runs an example on a local cluster: a JobManager and two TaskManagers (2 slots each) on
# 127.0.0.1, all started from the same binary, then compares with the single-process run.
#
#   examples/cluster.sh                       # wordcount on the built-in text, parallelism 4
#   examples/cluster.sh wordcount --input FILE --output OUT --parallelism 4
#   examples/cluster.sh checkpointed_count --input FILE --output DIR --parallelism 4 \
#       --checkpoint-interval-ms 500 --source-rate 2000
#
# The cluster directory (the certificate authority) is created in ./.eichhorn-cluster on the
# JobManager's first start; logs go to ./cluster-logs/. The TaskManagers are stopped (SIGTERM)
# when the job ended. The script exits with the JobManager's exit code.
set -euo pipefail
cd "$(dirname "$0")/.."

example="${1:-wordcount}"
shift || true
job_args=("$@")
if [ "${#job_args[@]}" -eq 0 ] && [ "$example" = wordcount ]; then
    job_args=(--parallelism 4)
fi
port="${EICHHORN_JOBMANAGER_PORT:-6123}"
logs="cluster-logs"
mkdir -p "$logs"

cargo build --release -p eichhorn-examples --bin "$example"
bin="target/release/$example"

echo "== JobManager on 127.0.0.1:$port ($example ${job_args[*]})"
"$bin" --jobmanager --bind "127.0.0.1:$port" "${job_args[@]}" \
    > "$logs/jobmanager.out" 2> "$logs/jobmanager.log" &
jobmanager=$!
task_managers=()
for i in 1 2; do
    echo "== TaskManager tm$i (2 slots)"
    "$bin" --taskmanager --join "127.0.0.1:$port" --slots 2 --node-id "tm$i" \
        > "$logs/tm$i.out" 2> "$logs/tm$i.log" &
    task_managers+=($!)
done
stop_task_managers() {
    for pid in "${task_managers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait "${task_managers[@]}" 2>/dev/null || true
}
trap stop_task_managers EXIT

status=0
wait "$jobmanager" || status=$?
echo "== JobManager exited with $status; its output:"
cat "$logs/jobmanager.out"
grep -E "deploying|joined|lost|restoring|error" "$logs/jobmanager.log" || true
exit "$status"

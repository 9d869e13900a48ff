#!/usr/bin/env bash
# Idle cost and reaction time of `ofctl watch` (release build) reconciling the platform's
# desired state on the local stack: CPU used and RSS over a minute with nothing to do (its
# interval pass and scheduled jobs included), then the time from a manifest edit to the change
# being applied, five times.
#
#   scripts/measure-watch.sh [SECONDS]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}

cargo build --release --locked
export OFCTL_BIN="$PWD/target/release/ofctl"
scripts/dev-stack.sh down --purge >/dev/null 2>&1 || true
scripts/dev-stack.sh up --with-kafka
eval "$(scripts/dev-stack.sh env)"

work=$(mktemp -d)
pid=
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"; scripts/dev-stack.sh down >/dev/null 2>&1' EXIT
cp -r desired-state "$work/m"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
management_port=$(free_port)
# readiness and metrics live on the management port
api="http://127.0.0.1:$management_port"
"$OFCTL_BIN" watch -f "$work/m" --listen "127.0.0.1:$port" --management-listen "127.0.0.1:$management_port" >"$work/watch.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz" || true)" = 200 ] && break
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")" = 200 ] || { cat "$work/watch.log"; exit 1; }
sleep 5

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
status() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
hz=$(getconf CLK_TCK)
before=$(cpu_ticks)
sleep "$seconds"
after=$(cpu_ticks)
passes=$(curl -s "$api/metrics" | awk '/^ofctl_reconcile_passes_total\{/ {n += $NF} END {print n + 0}')
awk -v t=$((after - before)) -v hz="$hz" -v s="$seconds" \
  'BEGIN {printf "idle: %.2f s CPU in %d s = %.2f%% of one core\n", t / hz, s, 100 * t / hz / s}'
echo "rss: $(($(status VmRSS) / 1024)) MiB now, $(($(status VmHWM) / 1024)) MiB peak; threads $(status Threads); reconcile passes so far: $passes"

applied() { curl -s "$api/metrics" | awk '/^ofctl_changes_applied_total\{/ {n += $NF} END {print n + 0}'; }
file=$(grep -l 'name: TOOL_UPDATE' "$work"/m/nats/*.yaml)
for i in 1 2 3 4 5; do
  n=$(applied)
  if ((i % 2)); then
    sed -i 's/subjects: \["machine.\*.tool.\*.update"\]/subjects: ["machine.*.tool.*.update", "ofctl.measure"]/' "$file"
  else
    sed -i 's/, "ofctl.measure"\]/]/' "$file"
  fi
  start=$(date +%s%N)
  until [ "$(applied)" -gt "$n" ]; do
    (($(date +%s%N) - start < 10000000000)) || { echo "edit $i not applied in 10 s"; tail -20 "$work/watch.log"; exit 1; }
    sleep 0.01
  done
  echo "edit $i applied after $((($(date +%s%N) - start) / 1000000)) ms"
done

# Steady-state cost of one reconcile pass of the whole desired state (nothing to change): the
# same folder at a 1 s interval, CPU over 20 s divided by the passes counted in that time.
kill -TERM "$pid" && wait "$pid" 2>/dev/null || true
"$OFCTL_BIN" watch -f "$work/m" --interval 1s --listen "127.0.0.1:$port" --management-listen "127.0.0.1:$management_port" >"$work/watch.log" 2>&1 &
pid=$!
count_passes() { curl -s "$api/metrics" | awk '/^ofctl_reconcile_passes_total\{/ {n += $NF} END {print n + 0}'; }
for _ in $(seq 100); do [ "$(count_passes)" -gt 2 ] && break; sleep 0.1; done
t0=$(cpu_ticks) n0=$(count_passes)
sleep 20
t1=$(cpu_ticks) n1=$(count_passes)
awk -v t=$((t1 - t0)) -v hz="$hz" -v n=$((n1 - n0)) \
  'BEGIN {printf "pass: %.1f ms of CPU per steady-state pass (%d passes in 20 s)\n", 1000 * t / hz / n, n}'

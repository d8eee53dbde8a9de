#!/usr/bin/env bash
# Two rtbd builds taken in turn under the load harness's wrk load: to tell
# whether a change to rtbd helps, where this machine's drift would hide a
# few percent between runs made one after the other.
#
#   benches/load/ab.sh A B [seconds]    (A, B: rtbd binaries; 10 s each)
#
# Both serve the harness's config (benches/load/rtbd.toml), each with its
# own data folder. In each of ROUNDS rounds (4 by default) A, then B, is
# driven for a reservation TTL (15 s) and measured, the other stopped
# (SIGSTOP) meanwhile. Prints each measurement, the mean of each, and B's
# rate over A's.
#
# To build an earlier revision beside the working tree:
#   git worktree add /tmp/base REV
#   (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target cargo build --release --bin rtbd)
#   cargo build --release --bin rtbd
#   benches/load/ab.sh /tmp/base-target/release/rtbd target/release/rtbd
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
for bin in "$1" "$2"; do
  [ -x "$bin" ] || { echo "$bin: not an executable file" >&2; exit 2; }
done
A=$(realpath "$1")
B=$(realpath "$2")
SECONDS_EACH="${3:-10}"
cd "$(dirname "$0")/../.."
. benches/load/lib.sh
rounds 4
ensure_wrk

WORK=$(mktemp -d)
ADDR_A=127.0.0.1:18083
ADDR_B=127.0.0.1:18084
sed "s#target/load-data#$WORK/a#" benches/load/rtbd.toml >"$WORK/a.toml"
sed "s#target/load-data#$WORK/b#" benches/load/rtbd.toml >"$WORK/b.toml"
RUST_LOG=warn "$A" serve --config "$WORK/a.toml" --listen "$ADDR_A" >/dev/null &
PID_A=$!
RUST_LOG=warn "$B" serve --config "$WORK/b.toml" --listen "$ADDR_B" >/dev/null &
PID_B=$!
trap 'kill -CONT $PID_A $PID_B 2>/dev/null; kill $PID_A $PID_B 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
await_server "$ADDR_A"
await_server "$ADDR_B"

echo "A: $A"
echo "B: $B"
RESULTS=
for round in $(seq "$ROUNDS"); do
  LINE=
  for side in A B; do
    if [ "$side" = A ]; then on=$PID_A; off=$PID_B; addr=$ADDR_A; else on=$PID_B; off=$PID_A; addr=$ADDR_B; fi
    kill -STOP "$off"
    kill -CONT "$on"
    drive "$addr" 15
    read -r rps cpu pre < <(measure "$addr" "$on")
    echo "round $round, $side: $rps requests/s, server CPU $cpu µs per request, preempted $pre times per 100 requests"
    LINE+="$rps $cpu "
  done
  RESULTS+="$LINE"$'\n'
done
echo -n "$RESULTS" | awk '
  { for (i = 1; i <= 4; i++) sum[i] += $i; n++ }
  END {
    printf "A: %.0f requests/s, server CPU %.2f µs per request (mean of %d)\n", sum[1] / n, sum[2] / n, n
    printf "B: %.0f requests/s, server CPU %.2f µs per request\n", sum[3] / n, sum[4] / n
    printf "B / A: %.3f\n", sum[3] / sum[1]
  }'

#!/usr/bin/env bash
# The load harness: rtbd against a bare hyper server, same wrk settings,
# same run. Prints each one's throughput, CPU time and preemptions per
# request, their ratio, and rtbd's latency at half its peak rate.
#
#   benches/load/run.sh [seconds]     (default 10 s per measurement)
#
# The two are measured in turn, rtbd then bare hyper, over ROUNDS rounds
# (default 5): this machine's speed drifts, so one measurement of each
# could set a fast minute against a slow one. Before each of its
# measurements rtbd is driven for a reservation TTL, so its table is at its
# steady size when measured. The ratio is of the mean rates.
#
# With --calibrate it measures no rtbd: it runs the bare server against a
# copy of itself that keeps its thread busy for a set time per request
# (0.5 to 4 µs), and prints the ratio each reaches. That is the ratio a
# server doing that much work per request can reach on this machine.
#
#   benches/load/run.sh --calibrate [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."

CALIBRATE=0
if [ "${1:-}" = --calibrate ]; then
  CALIBRATE=1
  shift
fi
SECONDS_EACH="${1:-10}"
RTBD_ADDR=127.0.0.1:18080
BARE_ADDR=127.0.0.1:18081
WORK_ADDR=127.0.0.1:18082
. benches/load/lib.sh
rounds 5

ensure_wrk
cargo build --release --quiet --bin rtbd --example bare --example loadgen

describe() {
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%d)"
  echo "wrk: $THREADS threads, $CONNECTIONS keep-alive connections, ${SECONDS_EACH} s, a new caller per request"
}

if [ "$CALIBRATE" = 1 ]; then
  target/release/examples/bare "$BARE_ADDR" >/dev/null &
  BARE=$!
  WORKED=
  trap 'kill $BARE $WORKED 2>/dev/null || true; wait 2>/dev/null || true' EXIT
  await_server "$BARE_ADDR"
  describe
  echo "the bare server against a copy of itself busy for a set time per request:"
  drive "$BARE_ADDR" 3
  for work in 500 1000 1500 2000 3000 4000; do
    target/release/examples/bare "$WORK_ADDR" --work-ns "$work" >/dev/null &
    WORKED=$!
    await_server "$WORK_ADDR"
    drive "$WORK_ADDR" 3
    read -r BARE_RPS BARE_CPU _ < <(measure "$BARE_ADDR" "$BARE")
    read -r WORK_RPS WORK_CPU _ < <(measure "$WORK_ADDR" "$WORKED")
    kill $WORKED
    wait $WORKED 2>/dev/null || true
    awk -v w="$work" -v r="$WORK_RPS" -v b="$BARE_RPS" -v rc="$WORK_CPU" -v bc="$BARE_CPU" 'BEGIN {
      printf "  + %.1f µs of work: ratio %.3f (%.0f / %.0f requests/s), server CPU %.2f µs per request (bare %.2f)\n", w / 1000, r / b, r, b, rc, bc }'
  done
  exit 0
fi

rm -rf target/load-data
RUST_LOG=warn target/release/rtbd serve --config benches/load/rtbd.toml --listen "$RTBD_ADDR" >/dev/null &
RTBD=$!
target/release/examples/bare "$BARE_ADDR" >/dev/null &
BARE=$!
trap 'kill -CONT $RTBD 2>/dev/null; kill $RTBD $BARE 2>/dev/null || true; wait 2>/dev/null || true' EXIT
await_server "$RTBD_ADDR"
await_server "$BARE_ADDR"

describe
# Warm up: bare hyper briefly. rtbd is warmed before each measurement (below).
drive "$BARE_ADDR" 3
RESULTS=
for round in $(seq "$ROUNDS"); do
  # A reservation TTL (15 s) of load first, so rtbd's table is at its steady
  # size (a TTL's worth of live reservations, records evicting as fast as
  # they come), not still growing or drained by the other's measurement.
  drive "$RTBD_ADDR" 15
  read -r RTBD_RPS RTBD_CPU RTBD_PRE < <(measure "$RTBD_ADDR" "$RTBD")
  # rtbd is stopped while bare hyper is measured: its expiry tick would
  # otherwise take CPU from it, expiring the reservations just made.
  kill -STOP "$RTBD"
  read -r BARE_RPS BARE_CPU BARE_PRE < <(measure "$BARE_ADDR" "$BARE")
  kill -CONT "$RTBD"
  awk -v n="$round" -v r="$RTBD_RPS" -v b="$BARE_RPS" -v rc="$RTBD_CPU" -v bc="$BARE_CPU" -v rp="$RTBD_PRE" -v bp="$BARE_PRE" 'BEGIN {
    printf "round %d: rtbd %.0f, bare hyper %.0f requests/s, ratio %.3f (CPU %.2f / %.2f µs, preempted %.1f / %.1f per 100)\n", n, r, b, r / b, rc, bc, rp, bp }'
  RESULTS+="$RTBD_RPS $RTBD_CPU $RTBD_PRE $BARE_RPS $BARE_CPU $BARE_PRE"$'\n'
done
read -r RTBD_RPS RTBD_CPU RTBD_PRE BARE_RPS BARE_CPU BARE_PRE < <(echo -n "$RESULTS" | awk '
  { for (i = 1; i <= 6; i++) sum[i] += $i; n++ }
  END { printf "%.2f %.2f %.1f %.2f %.2f %.1f\n", sum[1] / n, sum[2] / n, sum[3] / n, sum[4] / n, sum[5] / n, sum[6] / n }')
echo "mean of $ROUNDS rounds:"
echo "bare hyper: $BARE_RPS requests/s, server CPU $BARE_CPU µs per request, preempted $BARE_PRE times per 100 requests"
echo "rtbd:       $RTBD_RPS requests/s, server CPU $RTBD_CPU µs per request, preempted $RTBD_PRE times per 100 requests"
awk -v r="$RTBD_RPS" -v b="$BARE_RPS" 'BEGIN { printf "ratio:      %.3f (rtbd / bare hyper)\n", r / b }'
echo -n "$RESULTS" | awk '{ print $1 / $4 }' | sort -g | awk '{ v[NR] = $1 }
  END { printf "median of the rounds\047 ratios: %.3f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'

HALF=$(awk -v r="$RTBD_RPS" 'BEGIN { printf "%d", r / 2 }')
echo "rtbd at half its peak ($HALF/s, constant rate over $CONNECTIONS connections):"
# A TTL at that rate first, so the table is at its steady size for it.
target/release/examples/loadgen "$RTBD_ADDR" --rate "$HALF" --seconds 15 --connections "$CONNECTIONS" --key bench-key >/dev/null
target/release/examples/loadgen "$RTBD_ADDR" --rate "$HALF" --seconds "$SECONDS_EACH" --connections "$CONNECTIONS" --key bench-key

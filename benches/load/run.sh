#!/usr/bin/env bash
# The load harness: rtbd against a bare hyper server, same wrk settings,
# same run. Prints each one's throughput, CPU time and preemptions per
# request, their ratio, and rtbd's latency at half its peak rate.
#
#   benches/load/run.sh [seconds]     (default 10 s per measurement)
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_EACH="${1:-10}"
RTBD_ADDR=127.0.0.1:18080
BARE_ADDR=127.0.0.1:18081
CONNECTIONS=64
THREADS=2

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)…"
  if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >/dev/null; else sudo apt-get install -y wrk >/dev/null; fi
fi

cargo build --release --quiet --bin rtbd --example bare --example loadgen

rm -rf target/load-data
RUST_LOG=warn target/release/rtbd serve --config benches/load/rtbd.toml --listen "$RTBD_ADDR" >/dev/null &
RTBD=$!
target/release/examples/bare "$BARE_ADDR" >/dev/null &
BARE=$!
trap 'kill $RTBD $BARE 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for addr in "$RTBD_ADDR" "$BARE_ADDR"; do
  for _ in $(seq 50); do
    curl -s -o /dev/null "http://$addr/healthz" && break
    sleep 0.1
  done
done

# CPU time (user + system) of process $1 so far, in clock ticks.
cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# Times the threads of process $1 were switched out against their will (a
# runnable server thread preempted, here mostly by wrk's threads waking up).
preempted() {
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^nonvoluntary_ctxt_switches/ { n += $2 } END { print n + 0 }'
}

# One wrk run against $1 (served by process $2): prints requests per second,
# the server's CPU time per request in µs, and how often per 100 requests
# its threads were preempted.
measure() {
  local before after switched out
  before=$(cpu_ticks "$2")
  switched=$(preempted "$2")
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_EACH}s" -s benches/load/ping.lua "http://$1/rtbs.json")
  after=$(cpu_ticks "$2")
  switched=$(( $(preempted "$2") - switched ))
  echo "$out" | awk -v b="$before" -v a="$after" -v s="$switched" -v hz="$(getconf CLK_TCK)" '
    /^Requests\/sec/ { rps = $2 }
    / requests in / { n = $1 }
    END { printf "%s %.2f %.1f\n", rps, (a - b) / hz * 1e6 / n, s * 100 / n }'
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%d)"
echo "wrk: $THREADS threads, $CONNECTIONS keep-alive connections, ${SECONDS_EACH} s, a new caller per request"
# Warm up. rtbd runs for a reservation TTL (15 s) first, so its table is at
# its steady size (a TTL's worth of live reservations, records evicting as
# fast as they come) rather than still growing.
wrk -t"$THREADS" -c"$CONNECTIONS" -d20s -s benches/load/ping.lua "http://$RTBD_ADDR/rtbs.json" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s benches/load/ping.lua "http://$BARE_ADDR/rtbs.json" >/dev/null
read -r BARE_RPS BARE_CPU BARE_PRE < <(measure "$BARE_ADDR" "$BARE")
read -r RTBD_RPS RTBD_CPU RTBD_PRE < <(measure "$RTBD_ADDR" "$RTBD")
echo "bare hyper: $BARE_RPS requests/s, server CPU $BARE_CPU µs per request, preempted $BARE_PRE times per 100 requests"
echo "rtbd:       $RTBD_RPS requests/s, server CPU $RTBD_CPU µs per request, preempted $RTBD_PRE times per 100 requests"
awk -v r="$RTBD_RPS" -v b="$BARE_RPS" 'BEGIN { printf "ratio:      %.3f (rtbd / bare hyper)\n", r / b }'

HALF=$(awk -v r="$RTBD_RPS" 'BEGIN { printf "%d", r / 2 }')
echo "rtbd at half its peak ($HALF/s, constant rate over $CONNECTIONS connections):"
target/release/examples/loadgen "$RTBD_ADDR" --rate "$HALF" --seconds "$SECONDS_EACH" --connections "$CONNECTIONS" --key bench-key

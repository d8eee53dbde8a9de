# Shared by the load scripts (`run.sh`, `ab.sh`); sourced from the
# repository's root, with SECONDS_EACH set.

# The harness's wrk settings, the same in every script.
THREADS=2
CONNECTIONS=64

# Sets ROUNDS from the environment, else to $1; exits unless it is a whole
# number of at least 1.
rounds() {
  ROUNDS="${ROUNDS:-$1}"
  if ! [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]]; then
    echo "ROUNDS must be a whole number of at least 1" >&2
    exit 2
  fi
}

# Installs wrk from Debian's packages if it is missing.
ensure_wrk() {
  if ! command -v wrk >/dev/null; then
    echo "installing wrk (Debian package)…"
    if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >/dev/null; else sudo apt-get install -y wrk >/dev/null; fi
  fi
}

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

# Waits until the server at $1 answers.
await_server() {
  for _ in $(seq 50); do
    curl -s -o /dev/null "http://$1/healthz" && return
    sleep 0.1
  done
}

# wrk on $1 for $2 seconds, output dropped: a warm-up.
drive() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2s" -s benches/load/ping.lua "http://$1/rtbs.json" >/dev/null
}

#!/usr/bin/env bash
# A local Ray cluster from the Ray that scripts/setup.sh installs (its own
# virtual environment, tools/ray/venv, `ray[default]` pinned there).
#
#   bash scripts/ray-cluster.sh up [--workers N] [--cpus C]
#        start a head (0 CPUs: it schedules, it does not evaluate) and N
#        worker nodes (default 2) of C CPUs each (default 1), each node a
#        `ray start --block` process of its own, on free loopback ports.
#        Lines before the last: `dashboard: http://127.0.0.1:PORT` (the job
#        submission API, for the trainer's `ray` backend), `state: DIR`.
#        Last line: the cluster's address (`127.0.0.1:PORT`), what
#        `[cluster] address` or VIVARIUM_RAY_ADDRESS takes.
#   bash scripts/ray-cluster.sh up --hold [...]
#        the same, then hold the cluster until stdin closes and stop it:
#        what tests use, so the cluster goes when the test process does,
#        however it ends.
#   bash scripts/ray-cluster.sh down
#        stop the nodes that `up` started, by their process ids (never
#        `ray stop`, which would stop every Ray cluster of this user).
#   bash scripts/ray-cluster.sh status
#        the address if the cluster is up (exit 0), else exit 1.
#
# Environment: VIVARIUM_RAY_STATE (where `up` keeps the node pids, ports
# and Ray's session files; default /tmp/vivarium-ray-$USER: one cluster per
# state directory, so tests that each want a cluster give their own),
# VIVARIUM_RAY_VENV (default tools/ray/venv), VIVARIUM_RAY_START_TIMEOUT
# (seconds the head, then the workers, may take to come up; default 240: a
# head takes ~10 s on an idle 2-core machine, minutes under heavy load).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VIVARIUM_RAY_VENV:-$root/tools/ray/venv}"
state="${VIVARIUM_RAY_STATE:-/tmp/vivarium-ray-${USER:-$(id -u)}}"
ray="$venv/bin/ray"
start_timeout="${VIVARIUM_RAY_START_TIMEOUT:-240}"

say() { echo "ray-cluster: $*" >&2; }
die() { echo "ray-cluster: $*" >&2; exit 1; }

# N free loopback ports, one per line (bound and released at once: a race
# with another process is possible but rare, and `ray start` then fails
# with the port's name).
free_ports() {
  "$venv/bin/python" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
EOF
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

status() {
  [ -f "$state/address" ] || return 1
  local pid
  for pid in $(cat "$state/pids" 2>/dev/null); do alive "$pid" || return 1; done
  cat "$state/address"
}

down() {
  [ -d "$state" ] || { say "no cluster in $state"; return 0; }
  local pids="" pid tmp=""
  pids="$(cat "$state/pids" 2>/dev/null || true)"
  tmp="$(cat "$state/tmpdir" 2>/dev/null || true)"
  # Workers first, then the head (the pid file lists the head first).
  for pid in $(echo "$pids" | tac); do alive "$pid" && kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local any=0
    for pid in $pids; do alive "$pid" && any=1; done
    [ "$any" = 0 ] && break
    sleep 0.2
  done
  for pid in $pids; do alive "$pid" && kill -KILL "$pid" 2>/dev/null || true; done
  # What `ray start --block` leaves behind (raylet, GCS, dashboard, workers)
  # names this cluster's own session directory on its command line: stop
  # exactly those processes.
  if [ -n "$tmp" ] && [ -d "$tmp" ]; then
    for proc in /proc/[0-9]*; do
      pid="${proc#/proc/}"
      if { tr '\0' ' ' < "$proc/cmdline"; } 2>/dev/null | grep -qF -- "$tmp"; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
    rm -rf "$tmp"
  fi
  rm -rf "$state"
  say "stopped"
}

up() {
  local workers=2 cpus=1 hold=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --workers) workers="${2:?--workers takes a number}"; shift 2 ;;
      --workers=*) workers="${1#*=}"; shift ;;
      --cpus) cpus="${2:?--cpus takes a number}"; shift 2 ;;
      --cpus=*) cpus="${1#*=}"; shift ;;
      --hold) hold=1; shift ;;
      *) die "unknown argument $1; usage: ray-cluster.sh up [--workers N] [--cpus C]" ;;
    esac
  done
  [[ "$workers" =~ ^[0-9]+$ ]] || die "--workers takes a whole number, not $workers"
  [[ "$cpus" =~ ^[0-9]+$ ]] && [ "$cpus" -ge 1 ] || die "--cpus takes a whole number of at least 1, not $cpus"
  [ -x "$ray" ] || die "no Ray in $venv; run scripts/setup.sh (or set VIVARIUM_RAY_VENV)"
  if addr="$(status)"; then
    say "already up in $state"
    echo "$addr"
    return 0
  fi
  [ -d "$state" ] && down
  mkdir -p "$state"
  # Ray's unix sockets live under its temp dir, whose path must stay short
  # (108 bytes for a socket path): a fresh /tmp/vr-XXXXXX.
  local tmp
  tmp="$(mktemp -d /tmp/vr-XXXXXX)"
  echo "$tmp" > "$state/tmpdir"
  : > "$state/pids"
  mapfile -t p < <(free_ports 8)
  local gcs="${p[0]}" dash="${p[1]}" client="${p[2]}"
  local common=(--node-ip-address=127.0.0.1 --disable-usage-stats --temp-dir="$tmp")
  export RAY_USAGE_STATS_ENABLED=0
  say "starting the head (GCS 127.0.0.1:$gcs, dashboard 127.0.0.1:$dash)"
  "$ray" start --head --block "${common[@]}" --num-cpus=0 --port="$gcs" \
    --dashboard-host=127.0.0.1 --dashboard-port="$dash" --ray-client-server-port="$client" \
    --dashboard-agent-listen-port="${p[3]}" --dashboard-agent-grpc-port="${p[4]}" \
    --metrics-export-port="${p[5]}" --runtime-env-agent-port="${p[6]}" \
    >"$state/head.log" 2>&1 &
  echo $! >> "$state/pids"
  wait_for() { # what, log, seconds, command...
    local what="$1" log="$2" secs="$3"; shift 3
    local rc
    for _ in $(seq $((secs * 5))); do
      rc=0
      "$@" >/dev/null 2>&1 || rc=$?
      [ "$rc" = 0 ] && return 0
      [ "$rc" = 2 ] && break # its process is gone
      sleep 0.2
    done
    say "$what did not come up within ${secs}s (VIVARIUM_RAY_START_TIMEOUT); the end of $log:"
    tail -20 "$log" >&2 || true
    down
    exit 1
  }
  local head_pid
  head_pid="$(head -1 "$state/pids")"
  head_up() { alive "$head_pid" || return 2; curl -sf "http://127.0.0.1:$dash/api/version"; }
  wait_for "the head's dashboard" "$state/head.log" "$start_timeout" head_up
  # Every node registered with the head: the head and `n` workers.
  nodes_alive() {
    local n
    n="$(curl -sf "http://127.0.0.1:$dash/api/v0/nodes" \
      | "$venv/bin/python" -c 'import json,sys; d=json.load(sys.stdin)["data"]["result"]["result"]; print(sum(1 for x in d if x["state"]=="ALIVE"))')"
    [ "$n" -ge $(($1 + 1)) ]
  }
  # Workers one at a time: a raylet that cannot register with the GCS
  # within Ray's own 30 s (a heavily loaded machine) makes `ray start`
  # exit; it is started again, up to three times.
  local i attempt pid ok
  for ((i = 1; i <= workers; i++)); do
    ok=0
    for attempt in 1 2 3; do
      mapfile -t w < <(free_ports 4)
      "$ray" start --block "${common[@]}" --address="127.0.0.1:$gcs" --num-cpus="$cpus" \
        --dashboard-agent-listen-port="${w[0]}" --dashboard-agent-grpc-port="${w[1]}" \
        --metrics-export-port="${w[2]}" --runtime-env-agent-port="${w[3]}" \
        >>"$state/worker-$i.log" 2>&1 &
      pid=$!
      echo "$pid" >> "$state/pids"
      for _ in $(seq $((start_timeout * 5))); do
        if nodes_alive "$i" >/dev/null 2>&1; then ok=1; break; fi
        alive "$pid" || break
        sleep 0.2
      done
      [ "$ok" = 1 ] && break
      say "worker node $i did not come up (attempt $attempt); the end of its log:"
      tail -5 "$state/worker-$i.log" >&2 || true
      kill -TERM "$pid" 2>/dev/null || true
      sleep 2
      kill -KILL "$pid" 2>/dev/null || true
    done
    if [ "$ok" != 1 ]; then
      down
      exit 1
    fi
  done
  echo "127.0.0.1:$gcs" > "$state/address"
  echo "http://127.0.0.1:$dash" > "$state/dashboard"
  echo "dashboard: http://127.0.0.1:$dash"
  echo "state: $state"
  echo "127.0.0.1:$gcs"
  if [ "$hold" = 1 ]; then
    # Until whoever started us closes our stdin (or dies).
    cat >/dev/null || true
    down
  fi
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  *) die "usage: ray-cluster.sh up [--workers N] [--cpus C] | down | status" ;;
esac

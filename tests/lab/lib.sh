# shellcheck shell=bash disable=SC2034 # the variables are used by the scripts that source this
# Shared definitions for the lab scripts in tests/lab/. Sourced, never run.

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$LAB_DIR/../.." && pwd)
STATE="$LAB_DIR/.state"

LAB_IMAGE=foobar-lab:bookworm
LAB_NETWORK=foobar-lab
LAB_SUBNET=172.30.77.0/24
LAB_GATEWAY=172.30.77.1
LAB_IP_RANGE=172.30.77.192/26
LAB_BRIDGE=br-foobar
LAB_LABEL=foobar-lab=1
LAB_DOMAIN=www.foobar.com

# Per-script prefix for messages ("lab/up: ...").
LAB_PROG="lab/$(basename "$0")"

log() { printf '%s: %s\n' "$LAB_PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$LAB_PROG" "$*" >&2; exit 1; }

# Seconds since the epoch with sub-second precision, and elapsed time since $1.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Every docker call of the lab scripts is bounded: a wedged engine fails the script with
# the command it waited for, never hangs it (LAB_DOCKER_TIMEOUT seconds, default 180).
docker() {
  local limit=${LAB_DOCKER_TIMEOUT:-180} rc=0 cmd="$*"
  timeout -k 5 "$limit" docker "$@" || rc=$?
  if ((rc == 124 || rc == 137)); then
    printf '%s: error: `docker %s` did not end within %ss (killed)\n' "$LAB_PROG" "${cmd:0:200}" "$limit" >&2
  fi
  return "$rc"
}

# docker answers? (quietly, within 20 s)
engine_ok() { LAB_DOCKER_TIMEOUT=20 docker info >/dev/null 2>&1; }

# The tests cut a host off with an iptables rule tagged foobar-e2e-cut (tests/support/guard.rs)
# and remove it when they end; a test process killed half-way leaves it. Remove any left.
heal_cuts() {
  command -v iptables >/dev/null && [[ $(id -u) == 0 ]] || return 0
  local rule n=0
  while IFS= read -r rule; do
    # shellcheck disable=SC2086 # the rule's words, as iptables -S printed them
    timeout 30 iptables -w 10 ${rule/#-A /-D } && n=$((n + 1))
  done < <(timeout 30 iptables -w 10 -S OUTPUT | grep -F -- '--comment foobar-e2e-cut' || true)
  ((n == 0)) || log "removed $n leftover fault-injection rule(s) (foobar-e2e-cut)"
}

# Serialise concurrent runs of the same script (tests may call `up` in parallel).
# $1: lock name. The lock is released when the script exits.
lab_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.$1.lock"
  if ! flock -n 9; then
    log "waiting for another $1 to finish"
    flock 9
  fi
}

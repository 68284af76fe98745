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

# docker answers? (quietly)
engine_ok() { docker info >/dev/null 2>&1; }

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

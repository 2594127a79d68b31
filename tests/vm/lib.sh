# shellcheck shell=bash
# Helpers for VM test cases (tests/vm/cases/*.sh). run-cases.sh sources this file before each case, inside the VM,
# as root, with `set -euo pipefail` in force and the case's own temp dir as the working directory.
#
# Environment a case can rely on:
#   CHAOS_BIN  directory holding chaos-agentd and chaos-agentctl (host build, seen read-only through 9p)
#   CASE_TMP   the case's private writable temp dir (VM RAM; removed after the case)
#   VM_REPO    the repository root (read-only)
#   VM_RESULTS the results dir shared with the host (writable; prefer stdout/stderr, which is captured per case)
#   VM_EXPECT_KERNEL  the kernel release the host booted (e.g. 6.1.0-56-amd64)
# Exit codes: 0 PASS, 77 SKIP, anything else FAIL.
# Mind pipefail: `cmd | grep -q X` can fail when grep exits early (SIGPIPE); use `grep -q X <<<"$(cmd)"`.

[ -n "${_VM_LIB_LOADED:-}" ] && return 0
_VM_LIB_LOADED=1

log() { printf '%s\n' "$*" >&2; }

fail() { log "FAIL: $*"; exit 1; }

skip() { log "SKIP: $*"; exit 77; }

# assert_eq EXPECTED ACTUAL [WHAT]
assert_eq() {
  [ "$1" = "$2" ] || fail "${3:-value}: expected '$1', got '$2'"
}

# assert_ge ACTUAL MIN [WHAT]   numeric (decimals allowed)
assert_ge() {
  awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }' || fail "${3:-value}: expected >= $2, got $1"
}

# assert_lt ACTUAL MAX [WHAT]   numeric (decimals allowed)
assert_lt() {
  awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }' || fail "${3:-value}: expected < $2, got $1"
}

# wait_for 'SHELL COMMAND' TIMEOUT_SECONDS - polls every 0.1 s; returns 1 (does not fail) on timeout.
wait_for() {
  local cmd=$1 timeout=${2:-10} deadline
  deadline=$(awk -v t="$timeout" -v n="${EPOCHREALTIME}" 'BEGIN { printf "%.3f", n + t }')
  while :; do
    if eval "$cmd"; then return 0; fi
    awk -v n="${EPOCHREALTIME}" -v d="$deadline" 'BEGIN { exit !(n >= d) }' && return 1
    sleep 0.1
  done
}

# on_exit 'SHELL COMMAND' - cleanup run when the case ends (also on fail/skip/timeout), last registered first.
_VM_CLEANUPS=()
on_exit() { _VM_CLEANUPS+=("$1"); }
_vm_run_cleanups() {
  VM_CASE_RC=$?
  set +e
  local i
  for ((i = ${#_VM_CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${_VM_CLEANUPS[i]}"; done
  _VM_CLEANUPS=()
  exit "$VM_CASE_RC"
}
trap _vm_run_cleanups EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# proc_state PID - the one-letter state from /proc/PID/stat (R, S, T, Z, ...), or empty when gone.
proc_state() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  s=${s##*) }
  printf '%s\n' "${s%% *}"
}

# require_agent - skip the case when the daemon/CLI binaries have not been built.
require_agent() {
  local b
  for b in chaos-agentd chaos-agentctl; do
    [ -x "$CHAOS_BIN/$b" ] || skip "$b not found in ${CHAOS_BIN_HOST:-$CHAOS_BIN} (build with 'swift build' or pass --bin-dir)"
  done
}

# ctl ARGS... - the CLI pointed at this case's agent.
ctl() { "$CHAOS_BIN/chaos-agentctl" --socket "$SOCK" "$@"; }

# start_agent [EXTRA chaos-agentd ARGS...] - starts the daemon with a private socket and state dir, waits until
# `ctl status` answers, and stops it when the case ends. Sets SOCK, STATE, AGENT_PID, AGENT_LOG, CTL_LATENCY.
start_agent() {
  require_agent
  SOCK=$CASE_TMP/agent.sock
  STATE=$CASE_TMP/state
  AGENT_LOG=$CASE_TMP/agentd.log
  mkdir -p "$STATE"
  "$CHAOS_BIN/chaos-agentd" run --socket "$SOCK" --state-dir "$STATE" "$@" >"$AGENT_LOG" 2>&1 &
  AGENT_PID=$!
  on_exit stop_agent
  if ! wait_for 'ctl status >/dev/null 2>&1 || ! kill -0 $AGENT_PID 2>/dev/null' "${AGENT_START_TIMEOUT:-60}" ||
    ! kill -0 "$AGENT_PID" 2>/dev/null; then
    fail "chaos-agentd did not answer 'status' (log: $AGENT_LOG)"
  fi
  local t0=$EPOCHREALTIME
  ctl status >/dev/null 2>&1 || true
  CTL_LATENCY=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
  log "agent up (pid $AGENT_PID, socket $SOCK); one warm 'ctl status' takes ${CTL_LATENCY}s"
  instance_marks
}

# instance_marks - this case's agent instance marks (from $STATE/instance.json): MAJ, MAJ1, MAJ2 (its root qdisc major
# and the first two fault qdisc majors, in tc's hex) and IFB (the prefix of its ifb device names).
instance_marks() {
  local m
  m=$(jq -r '.tcMajor' "$STATE/instance.json") || fail "no instance.json in $STATE"
  MAJ=$(printf '%x' "$m")
  MAJ1=$(printf '%x' $((m + 1)))
  MAJ2=$(printf '%x' $((m + 2)))
  if [ "$m" = 17217 ]; then IFB=ca-ifb; else IFB=$(printf 'ca%04xi' "$m"); fi
}

# ttl_for SECONDS - a TTL (in whole seconds) of at least SECONDS that also leaves room for three CLI calls at the
# measured CTL_LATENCY (a debug Swift binary takes about 1 s to start under TCG), so checks made while a fault should
# still be active do not race its expiry.
ttl_for() {
  awk -v want="$1" -v l="${CTL_LATENCY:-0}" 'BEGIN { t = 3 * l + 1; if (t < want) t = want; printf "%d\n", (t == int(t)) ? t : int(t) + 1 }'
}

# stop_agent - SIGTERM, then SIGKILL after 15 s; prints the daemon's log when the case did not pass.
stop_agent() {
  [ -n "${AGENT_PID:-}" ] || return 0
  if kill -0 "$AGENT_PID" 2>/dev/null; then
    kill -TERM "$AGENT_PID" 2>/dev/null
    wait_for "! kill -0 $AGENT_PID 2>/dev/null" 15 || { log "chaos-agentd ignored SIGTERM; killing"; kill -KILL "$AGENT_PID" 2>/dev/null; }
  fi
  wait "$AGENT_PID" 2>/dev/null
  if [ "${VM_CASE_RC:-0}" != 0 ] && [ "${VM_CASE_RC:-0}" != 77 ] && [ -s "${AGENT_LOG:-}" ]; then
    log "--- chaos-agentd log (last 50 lines) ---"
    tail -n 50 "$AGENT_LOG" >&2
  fi
  AGENT_PID=
}

# json_faults - the faults array from `ctl --json list` (accepts {"faults":[...]} or a bare array) on stdin.
json_faults() { jq -c 'if type == "array" then . else .faults end'; }

# netns_rtt NETNS DST [COUNT] [INTERVAL] - the minimum ping RTT in ms from NETNS to DST. The minimum, not the mean:
# netem delays every packet, so the minimum carries the whole delay, while a busy host (TCG sharing two cores with a
# build) only ever adds to some samples; a mean baseline of 28 ms once failed a +40 ms check on a loaded machine.
netns_rtt() {
  ip netns exec "$1" ping -q -n -c "${3:-20}" -i "${4:-0.02}" "$2" | awk -F' = ' '/^rtt|^round-trip/ { split($2, a, "/"); print a[1] }'
}

# tcp_connect_time NETNS DST PORT - the fastest of 5 TCP connects (seconds) from NETNS, in one process so interpreter
# start-up under TCG does not count.
tcp_connect_time() {
  ip netns exec "$1" python3 -c "
import socket, time
best = 9
for _ in range(5):
    s = socket.socket(); s.settimeout(5); t = time.monotonic(); s.connect(('$2', $3)); best = min(best, time.monotonic() - t); s.close()
print('%.4f' % best)"
}

# veth_netns_pair NS_A NS_B CIDR_A CIDR_B - two fresh network namespaces joined by veth-a (in NS_A, CIDR_A) and
# veth-b (in NS_B, CIDR_B), both up; removed when the case ends.
veth_netns_pair() {
  ip netns add "$1" && on_exit "ip netns del $1"
  ip netns add "$2" && on_exit "ip netns del $2"
  ip link add veth-a netns "$1" type veth peer name veth-b netns "$2"
  ip -n "$1" addr add "$3" dev veth-a
  ip -n "$2" addr add "$4" dev veth-b
  ip -n "$1" link set veth-a up; ip -n "$1" link set lo up
  ip -n "$2" link set veth-b up; ip -n "$2" link set lo up
}

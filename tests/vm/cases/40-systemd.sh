# systemd/chaos-agent.service under a real systemd as PID 1 (Debian 12 booted with systemd-nspawn on the VM's kernel):
# READY=1 only after reconciliation, a SIGSTOPped agent killed (hang watchdog or WatchdogSec) and restarted with its
# pause reverted, SIGKILL -> ExecStopPost reap -> restart, a clean `systemctl stop` reverting, the delegated subtree,
# and the `systemd-analyze security` score (printed, not judged).
# vm-needs: rootfs
# vm-timeout: 420

require_agent
[ -z "${CHAOS_VM_ROOTFS_SKIP:-}" ] || skip "no Debian rootfs: $CHAOS_VM_ROOTFS_SKIP"
ROOTFS=${CHAOS_VM_ROOTFS:-}
[ -n "$ROOTFS" ] && [ -f "$ROOTFS/.chaos-rootfs-ready" ] || skip "no Debian rootfs (scripts/lib/vm-rootfs.sh builds it)"
command -v systemd-nspawn >/dev/null || fail "systemd-nspawn is not installed (systemd-container, scripts/lib/deps.sh vm)"
SWIFT_LIB=$(ldd "$CHAOS_BIN/chaos-agentd" | awk '/libswiftCore.so/ { print $3 }')
SWIFT_ROOT=${SWIFT_LIB%%/usr/lib/swift/*}   # /opt/swift
[ -d "$SWIFT_ROOT" ] || fail "cannot find the Swift runtime chaos-agentd links against ($SWIFT_LIB)"

CASE_T0=$EPOCHREALTIME
log() { printf '[%6.1f] %s\n' "$(awk -v a="$CASE_T0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" "$*" >&2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# The unit as scripts/install writes it, with the binaries where we bind them.
unit=$CASE_TMP/chaos-agent.service
sed -e 's#/usr/local/bin/#/opt/chaos-bin/#g' "$VM_REPO/systemd/chaos-agent.service" >"$unit"

# nspawn outside systemd (PID 1 here is virtme-ng-init): no machined registration, no transient scope (--keep-unit:
# nspawn would ask systemd for one over D-Bus); it runs the container in a cgroup
# of its own that we make for it, so the container's systemd gets a delegated subtree with every controller.
CG=/sys/fs/cgroup/chaos-nspawn-$$
mkdir "$CG"
on_exit "rmdir $CG 2>/dev/null"
for c in cpu memory io pids; do echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true; done
NSPAWN_LOG=$CASE_TMP/nspawn.log
booted=$EPOCHREALTIME
(
  echo $BASHPID >"$CG/cgroup.procs"
  exec systemd-nspawn --quiet --boot --register=no --keep-unit --machine=chaos-sd -D "$ROOTFS" --volatile=overlay \
    --private-network --console=passive \
    --bind-ro="$SWIFT_ROOT:/opt/swift" --bind-ro="$CHAOS_BIN:/opt/chaos-bin" \
    --bind-ro="$unit:/etc/systemd/system/chaos-agent.service"
) </dev/null >"$NSPAWN_LOG" 2>&1 &
NSPAWN=$!
on_exit "stop_container"
stop_container() {
  kill -0 "$NSPAWN" 2>/dev/null || return 0
  [ -z "${LEADER:-}" ] || kill -RTMIN+4 "$LEADER" 2>/dev/null   # systemd: poweroff
  wait_for "! kill -0 $NSPAWN 2>/dev/null" 60 || { log "container did not power off; killing nspawn"; kill -KILL "$NSPAWN"; }
  wait "$NSPAWN" 2>/dev/null
  if [ "${VM_CASE_RC:-0}" != 0 ] && [ "${VM_CASE_RC:-0}" != 77 ]; then
    log "--- systemd-nspawn output (last 40 lines) ---"; tail -n 40 "$NSPAWN_LOG" >&2
  fi
}

# The container's PID 1, seen from here: the process whose innermost pid is 1 in a nested pid namespace.
leader() {   # one grep over every status file: an awk per process costs seconds under TCG
  local f
  f=$(grep -l '^NSpid:[[:space:]]*[0-9][0-9]*[[:space:]][[:space:]]*1$' /proc/[0-9]*/status 2>/dev/null | head -n 1)
  [ -n "$f" ] || return 1
  f=${f#/proc/}; echo "${f%/status}"
}
wait_for 'LEADER=$(leader)' 60 || fail "the container's systemd never started: $(tail -n 5 "$NSPAWN_LOG")"
log "container PID 1 is pid $LEADER here"
# c CMD... - runs CMD inside the container (all its namespaces, its root).
c() { nsenter --target "$LEADER" --all --root --wd -- "$@"; }
c_show() { c systemctl show -P "$1" "$2"; }   # c_show PROPERTY UNIT
# cwait 'SHELL CMD' SECONDS - like wait_for, polling once a second: each poll starts processes in the container, which
# under TCG would otherwise take the CPU from what we are waiting for.
cwait() {
  local end=$((SECONDS + $2))
  until eval "$1"; do [ $SECONDS -lt $end ] || return 1; sleep 1; done
}
dump() {
  log "--- systemctl status chaos-agent ---"; c systemctl --no-pager -l status chaos-agent >&2 || true
  log "--- journal (last 60 lines) ---"; c journalctl --no-pager -n 60 -o short-monotonic >&2 || true
}
on_exit '[ "${VM_CASE_RC:-0}" = 0 ] || [ "${VM_CASE_RC:-0}" = 77 ] || dump'

cwait '[[ $(c systemctl is-system-running 2>/dev/null) =~ ^(running|degraded)$ ]]' 120 ||
  fail "container did not finish booting: $(c systemctl is-system-running 2>&1)"
log "container booted in $(since "$booted")s ($(c systemctl is-system-running 2>&1); failed units: $(c systemctl --failed --no-legend --plain 2>&1 | tr '\n' ' '))"
log "systemd in the container: $(c systemctl --version | head -n 1)"

# A victim the faults act on: a real unit in the container.
c systemd-run --quiet --unit=victim /bin/sleep 3600
cwait '[ "$(c_show MainPID victim)" != 0 ]' 30 || fail "victim.service has no main pid"
VICTIM=$(c_show MainPID victim)
# Its pid here (the VM's pid namespace), so its state can be read cheaply and polled often.
VHOST=$(grep -lE "^NSpid:[[:space:]]*[0-9]+[[:space:]]+$VICTIM\$" /proc/[0-9]*/status | head -n 1)
VHOST=${VHOST#/proc/}; VHOST=${VHOST%/status}
[ -n "$VHOST" ] || fail "cannot find the victim ($VICTIM in the container) in the VM's /proc"
vstate() { proc_state "$VHOST"; }
log "victim.service: sleep, pid $VICTIM in the container, $VHOST here"

ctl_in() { c /opt/chaos-bin/chaos-agentctl "$@"; }
pause_victim() {   # pause_victim TTL - prints the fault id
  local id
  id=$(ctl_in inject pause --pid "$VICTIM" --ttl "$1") || fail "inject pause exited $?"
  [ "$(vstate)" = T ] || fail "victim not stopped after inject (state $(vstate))"
  echo "$id"
}
wait_active() {    # wait_active WHAT - the unit active with a main pid, or fail
  cwait '[ "$(c_show ActiveState chaos-agent)" = active ] && [ "$(c_show MainPID chaos-agent)" != 0 ]' 180 ||
    fail "chaos-agent not active again $1 (state $(c_show ActiveState chaos-agent)/$(c_show SubState chaos-agent))"
}

# --- 1. Type=notify: `systemctl start` returns once READY=1 was sent, after reconciliation -----------------------------
t=$EPOCHREALTIME
c systemctl start chaos-agent || fail "systemctl start chaos-agent exited $?"
log "systemctl start returned after $(since "$t")s"
assert_eq active "$(c_show ActiveState chaos-agent)" "ActiveState after start"
main0=$(c_show MainPID chaos-agent)
# READY=1 means it answers: no wait here.
ctl_in status >/dev/null || fail "the agent does not answer right after systemctl start returned"
log "StatusText: $(c_show StatusText chaos-agent)"

# --- 5. Delegate=yes: the daemon's own subtree, used by a cpu fault ----------------------------------------------------
assert_eq yes "$(c_show Delegate chaos-agent)" "Delegate"
cg=$(c_show ControlGroup chaos-agent)
c python3 -c "import os, sys; sys.exit(os.getxattr('/sys/fs/cgroup$cg', 'trusted.delegate') != b'1')" ||
  fail "no trusted.delegate=1 on $cg"
cpu=$(ctl_in inject cpu --load 10% --cpus 1 --ttl 120s) || fail "inject cpu exited $?"
lease_cgs() { c find "/sys/fs/cgroup$cg" -mindepth 1 -maxdepth 1 -type d -name 'lease-*' -printf '%f '; }
cwait '[ -n "$(lease_cgs)" ]' 30 || fail "no lease cgroup in $cg for cpu fault $cpu"
mcg=$(c cat "/proc/$main0/cgroup")
log "cpu fault $cpu: daemon in ${mcg#0::}; $cg holds: $(c find "/sys/fs/cgroup$cg" -mindepth 1 -maxdepth 1 -type d -printf '%f ')"
assert_eq "0::$cg/agent" "$mcg" "the daemon's cgroup once it made a lease cgroup"
ctl_in revert "$cpu" >/dev/null || fail "revert $cpu"
cwait '[ -z "$(lease_cgs)" ]' 30 || fail "lease cgroup(s) left in $cg after revert: $(lease_cgs)"

# --- 6. systemd-analyze security (reported) -------------------------------------------------------------------------
sec=$(c systemd-analyze security --no-pager chaos-agent 2>&1) || true
log "systemd-analyze security chaos-agent: $(grep -i 'overall exposure' <<<"$sec")"
grep -E '^(- |✗)' <<<"$sec" >&2 || true   # only the settings that cost exposure

# kill_daemon SIGNAL BOUND - pauses the victim (TTL far away), sends SIGNAL to the daemon, waits up to BOUND s for the
# victim to run again and for systemd to have restarted the unit (NRestarts up, active, a new main pid).
kill_daemon() {
  local n main id t
  n=$(c_show NRestarts chaos-agent) main=$(c_show MainPID chaos-agent)
  id=$(pause_victim 600s)
  log "paused victim ($id, TTL 600s); SIG$1 to the daemon, pid $main"
  t=$EPOCHREALTIME
  c kill -"$1" "$main"
  wait_for '[ "$(vstate)" != T ]' "$2" || fail "victim still stopped $2 s after the daemon got SIG$1"
  log "victim resumed $(since "$t")s after SIG$1"
  cwait '[ "$(c_show NRestarts chaos-agent)" -gt "$n" ]' "$2" || fail "NRestarts still $n after SIG$1"
  wait_active "after SIG$1"
  [ "$(c_show MainPID chaos-agent)" != "$main" ] || fail "main pid unchanged ($main) after SIG$1"
  log "restarted $(since "$t")s after SIG$1: NRestarts $n -> $(c_show NRestarts chaos-agent), main pid $(c_show MainPID chaos-agent)"
}

# --- 2. SIGSTOP the daemon: something kills it, the pause ends, systemd restarts it -----------------------------------
# The agent's hang watchdog (15 s of silence with a fault active) or WatchdogSec=30s, whichever comes first.
kill_daemon STOP 180
# Which of the two acted (either is fine): systemd's "Watchdog timeout" or the agent's "take-over".
c journalctl -u chaos-agent -o cat --no-pager | grep -iE 'watchdog timeout|take-over|took over|killing process|exited without' | tail -n 6 >&2 || true

# --- 3. SIGKILL: the hang watchdog or ExecStopPost reaps, the pause ends, restart -------------------------------------
kill_daemon KILL 120
post=$(c_show ExecStopPost chaos-agent)
log "ExecStopPost: $post"
grep -q 'status=0/0' <<<"$post" || fail "ExecStopPost (reap) did not exit 0: $post"

# --- 4. systemctl stop: clean exit, faults reverted, not restarted --------------------------------------------------
id=$(pause_victim 600s)
n2=$(c_show NRestarts chaos-agent)
t=$EPOCHREALTIME
c systemctl stop chaos-agent || fail "systemctl stop exited $?"
log "systemctl stop returned after $(since "$t")s"
st=$(vstate)
[[ $st == S || $st == R ]] || fail "victim in state '$st' after systemctl stop, expected S or R"
assert_eq inactive "$(c_show ActiveState chaos-agent)" "ActiveState after stop"
assert_eq success "$(c_show Result chaos-agent)" "Result after stop"
assert_eq 0 "$(c_show ExecMainStatus chaos-agent)" "exit status after stop"
# Not restarted (SubState would be auto-restart). systemd resets NRestarts on an explicit stop, so it is not compared.
assert_eq dead "$(c_show SubState chaos-agent)" "SubState after a clean stop"

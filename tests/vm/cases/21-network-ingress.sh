# Ingress network faults on Debian's kernel: the receiving side's ingress is redirected (clsact + mirred) to an ifb
# that carries the fault; RTT from the sender grows by the delay; SSH stays untouched; after revert (and after
# SIGKILL + reap) the interface has no ingress hook and the ifb is gone.
# vm-timeout: 360

modprobe sch_netem 2>/dev/null || true
veth_netns_pair ca cb 10.78.0.1/24 10.78.0.2/24

state_b() { ip -n cb -br link show | awk '{print $1}' | sort; tc -n cb qdisc show dev veth-b; tc -n cb filter show dev veth-b ingress 2>/dev/null; }

base=$(netns_rtt ca 10.78.0.2)
before=$(state_b)
log "baseline RTT ${base} ms; cb before: $before"
ip netns exec cb python3 -m http.server 22 --bind 10.78.0.2 >/dev/null 2>&1 &
srv=$!; on_exit "kill $srv 2>/dev/null"
wait_for "tcp_connect_time ca 10.78.0.2 22 >/dev/null 2>&1" 90 || fail "listener on :22 did not come up within 90 s"
b22=$(tcp_connect_time ca 10.78.0.2 22)

start_agent
ttl=$(ttl_for 60)
id=$(ctl inject network --netns cb --interface veth-b --direction ingress --delay 100ms --ttl "${ttl}s") ||
  fail "inject ingress exited $?"
during=$(state_b)
log "cb during: $during"
grep -q "$IFB" <<<"$during" || fail "no $IFB device during the fault"
grep -q "clsact" <<<"$during" || fail "no clsact on veth-b during the fault"
grep -q "netem ${MAJ1}:.*delay 100ms" <<<"$(tc -n cb qdisc show)" || fail "no netem on the ifb: $(tc -n cb qdisc show)"
d=$(netns_rtt ca 10.78.0.2)
log "RTT with ingress delay 100ms on the receiver: $d ms"
assert_ge "$d" "$(awk -v b="$base" 'BEGIN { print b + 90 }')" "RTT with 100 ms ingress delay"
assert_lt "$d" "$(awk -v b="$base" 'BEGIN { print b + 110 }')" "RTT with 100 ms ingress delay"
c22=$(tcp_connect_time ca 10.78.0.2 22)
log "connect to :22 during the ingress fault: ${c22}s (baseline ${b22}s)"
assert_lt "$c22" "$(awk -v b="$b22" 'BEGIN { print b + 0.02 }')" "connect to :22 (excluded) under an ingress delay"

ctl revert "$id" >/dev/null || fail "revert exited $?"
assert_eq "$before" "$(state_b)" "cb after revert"
d=$(netns_rtt ca 10.78.0.2)
assert_lt "$d" "$(awk -v b="$base" 'BEGIN { print b + 5 }')" "RTT after revert"

# SIGKILL mid-fault, then reap.
id=$(ctl inject network --netns cb --interface veth-b --direction ingress --loss 50% --ttl "${ttl}s") ||
  fail "inject before kill exited $?"
kill -KILL "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=
grep -q "$IFB" <<<"$(state_b)" || fail "the ingress fault vanished with the agent before reap"
"$CHAOS_BIN/chaos-agentd" reap --state-dir "$STATE" || fail "reap exited $?"
assert_eq "$before" "$(state_b)" "cb after SIGKILL + reap"
log "network ingress: all checks passed"

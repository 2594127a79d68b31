# Remote control, end to end over a real network: an orchestrator in its own network namespace talks to the agent
# over mutual TLS (certificates from scripts/gen-certs) and injects, with `--wait --heartbeat 10s`, a network fault
# that cuts its own traffic to the agent (ingress loss 100 % on the agent's side of the link). Its heartbeats can no
# longer arrive, so the agent reverts the fault within one interval of activation (reason heartbeat-missed), the link
# works again, the ingress hook and ifb are gone, and the orchestrator's CLI learns the outcome and exits 0.
# First, the lock-out guard: by default the agent's own TLS port is excluded like SSH, so the same fault without
# `--no-default-exclusions` drops pings but not the control channel (renewals keep arriving); the cut-off run needs
# that admin-only override.
# vm-timeout: 300

modprobe sch_netem 2>/dev/null || true
command -v openssl >/dev/null || skip "openssl not installed"
ip netns add orch && on_exit "ip netns del orch"
ip link add veth-agent type veth peer name veth-orch netns orch
on_exit "ip link del veth-agent 2>/dev/null"
ip addr add 10.79.0.1/24 dev veth-agent && ip link set veth-agent up
ip -n orch addr add 10.79.0.2/24 dev veth-orch && ip -n orch link set veth-orch up && ip -n orch link set lo up

tls=$CASE_TMP/tls
"$VM_REPO/scripts/gen-certs" --out "$tls" --server-name 10.79.0.1 --client orchestrator --client viewer 2>/dev/null ||
  fail "gen-certs failed"
cat >"$CASE_TMP/agent.toml" <<TOML
[policy]
max-ttl = "5m"
[remote]
listen = "10.79.0.1:7410"
certificate = "$tls/server.pem"
private-key = "$tls/server.key"
client-ca = "$tls/ca.pem"
[remote.roles]
"orchestrator" = "admin"
"viewer" = "viewer"
TOML
start_agent --config "$CASE_TMP/agent.toml"
wait_for "grep -q 'listening (mutual TLS)' '$AGENT_LOG'" 20 || fail "no TLS listener"

orch() {  # orch WHO ARGS... - chaos-agentctl in the orchestrator's namespace, as WHO
  local who=$1; shift
  ip netns exec orch "$CHAOS_BIN/chaos-agentctl" --host https://10.79.0.1:7410 --cert "$tls/$who.pem" \
    --key "$tls/$who.key" --ca "$tls/ca.pem" "$@"
}
orch viewer status >/dev/null || fail "status over TLS from the orchestrator's namespace failed"
orch viewer inject pause --pid 1 --ttl 10s 2>/dev/null && fail "a viewer injected"

guard=$(orch orchestrator inject network --interface veth-agent --direction ingress --loss 100% --ttl 60s \
  --heartbeat 10s) || fail "guarded inject exited $?"
lost=$(ip netns exec orch ping -q -n -c 10 -i 0.1 -W 1 10.79.0.1 | grep -o '[0-9.]*% packet loss' || true)
log "with the guarded 100 % ingress loss: ping ${lost}"
assert_eq "100%" "${lost%% *}" "ping loss under the guarded fault"
t_guard=$EPOCHREALTIME
for _ in 1 2 3 4; do
  orch orchestrator renew "$guard" --ttl 60s >/dev/null || fail "a renewal over TLS did not get through the guarded fault"
  sleep 2
done
assert_eq active "$(orch viewer --json get "$guard" | jq -r .state)" \
  "guarded fault after $(awk -v a="$t_guard" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s of renewals over TLS"
orch orchestrator revert "$guard" >/dev/null || fail "revert of the guarded fault exited $?"
log "guard: the TLS port stayed reachable under 100 % ingress loss; 4 renewals arrived"

t0=$EPOCHREALTIME
orch orchestrator --json inject network --interface veth-agent --direction ingress --loss 100% --ttl 120s \
  --no-default-exclusions \
  --heartbeat 10s --wait >"$CASE_TMP/inject.json" 2>"$CASE_TMP/inject.err" &
cli=$!
on_exit "kill $cli 2>/dev/null"
wait_for "[ -s '$CASE_TMP/inject.json' ]" 30 || fail "inject printed nothing: $(cat "$CASE_TMP/inject.err")"
id=$(jq -r .id "$CASE_TMP/inject.json")
log "fault $id applied after $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')s"
grep -q "clsact" <<<"$(tc qdisc show dev veth-agent)" || fail "no ingress hook on veth-agent"
# The link is cut towards the agent while the fault lives.
ip netns exec orch ping -q -c 3 -W 1 -i 0.3 10.79.0.1 >/dev/null 2>&1 && fail "the orchestrator still reaches the agent"

wait_for "ctl --json get $id | jq -e '.state == \"reverted\"' >/dev/null" 20 || fail "fault not reverted: $(ctl get "$id")"
f=$(ctl --json get "$id")
reason=$(jq -r .revertReason <<<"$f")
assert_eq "heartbeat-missed" "$reason" "revert reason"
life=$(python3 -c "
import datetime, json, sys
f = json.loads(sys.argv[1]); p = lambda s: datetime.datetime.fromisoformat(s.replace('Z', '+00:00'))
print('%.3f' % (p(f['revertedAt']) - p(f['createdAt'])).total_seconds())" "$f")
log "created -> reverted: ${life}s with a 10 s heartbeat and no beat arriving"
assert_ge "$life" 10.0 "fault lifetime"
assert_lt "$life" 20.0 "fault lifetime (one interval plus apply and revert under TCG)"
grep -q "event=heartbeat-missed" "$AGENT_LOG" || fail "no heartbeat-missed line in the agent's log"
# The agent's own measure: from the heartbeat deadline (activation + 10 s) to the fault gone from the link.
lag=$(grep "lease=$id" "$AGENT_LOG" | grep -o 'lagMs=[0-9.]*' | tail -n 1 | cut -d= -f2)
log "revert lag after the missed heartbeat: ${lag} ms"
assert_lt "${lag:-9999}" 1000 "revert lag (ms) after the heartbeat deadline"

# Connectivity is back, nothing is left on the link, and the orchestrator's CLI learns the outcome.
ip netns exec orch ping -q -c 3 -W 1 -i 0.2 10.79.0.1 >/dev/null || fail "the link did not come back"
assert_eq "" "$(tc filter show dev veth-agent ingress 2>/dev/null)" "ingress filters after revert"
grep -q "$IFB" <<<"$(ip -br link)" && fail "an ifb device is left"
wait_for "! kill -0 $cli 2>/dev/null" 40 || fail "the CLI did not finish after the link came back"
rc=0; wait "$cli" || rc=$?
assert_eq 0 "$rc" "CLI exit code ($(tail -n 2 "$CASE_TMP/inject.err" | tr '\n' ' '))"
log "PASS: the orchestrator cut itself off and the agent reverted its fault in ${life}s"

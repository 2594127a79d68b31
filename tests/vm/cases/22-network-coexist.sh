# Several network faults on one interface (issue 4, item 4): two faults with disjoint targets share one prio tree, each
# slowing only its own destination by its own delay; a third on overlapping traffic is a 409 and changes nothing;
# reverting one leaves the other working; the last one restores the tree before (also a tuned tbf root, whichever
# fault goes last); SIGKILL with two faults active then `reap` leaves the device clean. Run once with the default
# classifier (flower on this kernel) and the targeting re-measured with `[network] classifier = "u32"`.
# vm-timeout: 480

modprobe sch_netem 2>/dev/null || true
veth_netns_pair ca cb 10.77.0.1/24 10.77.0.2/24
ip -n cb addr add 10.77.0.3/24 dev veth-b
ip -n cb addr add 10.77.0.4/24 dev veth-b

tree() { ip netns exec ca tc qdisc show dev veth-a; ip netns exec ca tc filter show dev veth-a 2>/dev/null; }
plus() { awk -v b="$1" -v d="$2" 'BEGIN { print b + d }'; }

base2=$(netns_rtt ca 10.77.0.2); base3=$(netns_rtt ca 10.77.0.3); base4=$(netns_rtt ca 10.77.0.4)
log "baseline RTT: .2 ${base2} ms, .3 ${base3} ms, .4 ${base4} ms"
before=$(tree)

start_agent
ttl=$(ttl_for 300)  # every fault here is reverted explicitly: a long TTL only keeps a slow VM from racing it
classifier=$(ctl --json status | jq -r '.host.trafficControl.flower // false')
log "cls_flower on this kernel: $classifier"

# 1. Two faults, disjoint targets, one tree: .2 +100 ms, .3 +40 ms, .4 untouched.
a=$(ctl inject network --netns ca --interface veth-a --delay 100ms --to 10.77.0.2/32 --ttl "${ttl}s") || fail "inject A exited $?"
b=$(ctl inject network --netns ca --interface veth-a --delay 40ms --to 10.77.0.3/32 --ttl "${ttl}s") || fail "inject B exited $?"
ctl --json get "$b" >"$CASE_TMP/b.json"
log "B's target: $(jq -c .target "$CASE_TMP/b.json")"
assert_eq "$a" "$(jq -r '.target.sharedWith[0]' "$CASE_TMP/b.json")" "B shares A's tree"
assert_eq "${MAJ2}:" "$(jq -r '.target.handle' "$CASE_TMP/b.json")" "B's netem handle"
during=$(tree)
log "tree with two faults: $during"
grep -q "netem ${MAJ1}: parent ${MAJ}:4 .*delay 100ms" <<<"$during" || fail "no netem ${MAJ1}: delay 100ms under ${MAJ}:4"
grep -q "netem ${MAJ2}: parent ${MAJ}:5 .*delay 40ms" <<<"$during" || fail "no netem ${MAJ2}: delay 40ms under ${MAJ}:5"
[ "$(grep -c "^qdisc prio ${MAJ}: root" <<<"$during")" = 1 ] || fail "expected exactly one prio ${MAJ}: root"
if [ "$classifier" = true ]; then
  grep -q "flower" <<<"$during" || fail "flower is available but the filters are not flower"
fi
r2=$(netns_rtt ca 10.77.0.2); r3=$(netns_rtt ca 10.77.0.3); r4=$(netns_rtt ca 10.77.0.4)
log "RTT with A (.2 +100ms) and B (.3 +40ms): .2 ${r2} ms, .3 ${r3} ms, .4 ${r4} ms"
assert_ge "$r2" "$(plus "$base2" 90)" "RTT of A's target"; assert_lt "$r2" "$(plus "$base2" 110)" "RTT of A's target"
assert_ge "$r3" "$(plus "$base3" 36)" "RTT of B's target"; assert_lt "$r3" "$(plus "$base3" 44)" "RTT of B's target"
assert_lt "$r4" "$(plus "$base4" 1)" "RTT of the untargeted destination"

# 2. Overlapping traffic: 409 (exit 3), naming the fault it overlaps; the tree is unchanged.
set +e
msg=$(ctl inject network --netns ca --interface veth-a --loss 5% --to 10.77.0.0/24 --ttl 30s 2>&1 >/dev/null); rc=$?
set -e
log "overlapping fault: exit $rc: $msg"
assert_eq 3 "$rc" "exit status of an overlapping fault"
grep -q "overlaps" <<<"$msg" || fail "the refusal does not say what it overlaps: $msg"
assert_eq "$during" "$(tree)" "tree after the refused overlapping fault"

# 2b. Targets that the exclusions cover entirely would fault nothing: refused (422 -> exit 3), tree unchanged.
set +e
m1=$(ctl inject network --netns ca --interface veth-a --delay 10ms --to 10.77.0.4/32 --port 22 --ttl 30s 2>&1 >/dev/null); r1=$?
m2=$(ctl inject network --netns ca --interface veth-a --delay 10ms --to 10.77.0.4/32 --exclude-to 10.77.0.0/24 --ttl 30s 2>&1 >/dev/null); r2=$?
set -e
log "fully excluded targets: exit $r1: $m1 / exit $r2: $m2"
assert_eq 3 "$r1" "exit status of a fault on the excluded SSH port"
assert_eq 3 "$r2" "exit status of a fault whose --to lies inside --exclude-to"
grep -q "excluded" <<<"$m1" || fail "the SSH-port refusal does not say why: $m1"
grep -q "inside excludeTo" <<<"$m2" || fail "the exclude-to refusal does not say why: $m2"
assert_eq "$during" "$(tree)" "tree after the refused fully-excluded faults"

# 3. Revert A: .2 back to baseline, B still delaying .3.
ctl revert "$a" >/dev/null || fail "revert A exited $?"
r2=$(netns_rtt ca 10.77.0.2); r3=$(netns_rtt ca 10.77.0.3)
log "after reverting A: .2 ${r2} ms, .3 ${r3} ms"
assert_lt "$r2" "$(plus "$base2" 5)" "RTT of A's target after A's revert"
assert_ge "$r3" "$(plus "$base3" 36)" "RTT of B's target after A's revert"
grep -q "${MAJ1}:" <<<"$(tree)" && fail "A's netem ${MAJ1}: is still there: $(tree)"
ctl revert "$b" >/dev/null || fail "revert B exited $?"
assert_eq "$before" "$(tree)" "tree after both reverts"

# 4. Over a tuned tbf root: the first fault goes first, the second restores the tbf.
ip netns exec ca tc qdisc add dev veth-a root tbf rate 500mbit burst 64kb latency 40ms
tuned=$(tree)
a=$(ctl inject network --netns ca --interface veth-a --delay 20ms --to 10.77.0.2/32 --ttl "${ttl}s") || fail "inject over tbf exited $?"
b=$(ctl inject network --netns ca --interface veth-a --loss 1% --to 10.77.0.3/32 --ttl "${ttl}s") || fail "second inject over tbf exited $?"
ctl revert "$a" >/dev/null
grep -q "prio ${MAJ}:" <<<"$(tree)" || fail "reverting the first fault removed the shared root under the second"
ctl revert "$b" >/dev/null
assert_eq "$tuned" "$(tree)" "tree after two faults over a tuned tbf root"
ip netns exec ca tc qdisc del dev veth-a root

# 5. SIGKILL with two faults active, then reap: clean.
ctl inject network --netns ca --interface veth-a --delay 30ms --to 10.77.0.2/32 --ttl "${ttl}s" >/dev/null || fail "inject 5a"
ctl inject network --netns ca --interface veth-a --delay 30ms --to 10.77.0.3/32 --ttl "${ttl}s" >/dev/null || fail "inject 5b"
kill -KILL "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=
"$CHAOS_BIN/chaos-agentd" reap --state-dir "$STATE" || fail "reap exited $?"
assert_eq "$before" "$(tree)" "tree after SIGKILL + reap with two faults"

# 6. The same targeting with u32 forced: the target slowed, the neighbour not.
printf '[network]\nclassifier = "u32"\n' >"$CASE_TMP/u32.toml"
start_agent --config "$CASE_TMP/u32.toml"
a=$(ctl inject network --netns ca --interface veth-a --delay 100ms --to 10.77.0.2/32 --ttl "${ttl}s") || fail "u32 inject exited $?"
grep -q "u32" <<<"$(tree)" || fail "classifier u32 asked, but no u32 filter: $(tree)"
grep -q "flower" <<<"$(tree)" && fail "classifier u32 asked, but flower filters: $(tree)"
r2=$(netns_rtt ca 10.77.0.2); r3=$(netns_rtt ca 10.77.0.3)
log "u32 targeting: .2 ${r2} ms, .3 ${r3} ms"
assert_ge "$r2" "$(plus "$base2" 90)" "RTT of the u32 target"
assert_lt "$r3" "$(plus "$base3" 1)" "RTT of the neighbour (u32)"
ctl revert "$a" >/dev/null
assert_eq "$before" "$(tree)" "tree after the u32 revert"
log "network coexist: all checks passed"

# Network faults over rtnetlink on Debian's kernel, measured between two network namespaces over veth:
# delay (RTT +100 ms +-10 %), loss (20 % over 2,000 packets, +-3 points), a targeted fault that slows one destination
# and leaves another within 1 ms of baseline, SSH (port 22) untouched by default, the tree after revert equal to the
# tree before (also a pre-existing tbf root), and SIGKILL of the agent mid-fault then `reap` leaving the device clean.
# vm-timeout: 480

modprobe sch_netem 2>/dev/null || true
veth_netns_pair ca cb 10.77.0.1/24 10.77.0.2/24
ip -n cb addr add 10.77.0.3/24 dev veth-b

tree() { ip netns exec ca tc qdisc show dev veth-a; ip netns exec ca tc filter show dev veth-a 2>/dev/null; }

base=$(netns_rtt ca 10.77.0.2); base3=$(netns_rtt ca 10.77.0.3)
log "baseline RTT: 10.77.0.2 ${base} ms, 10.77.0.3 ${base3} ms"
before=$(tree)
log "tree before: $before"

ip netns exec cb python3 -m http.server 22 --bind 10.77.0.2 >/dev/null 2>&1 &
srv22=$!; on_exit "kill $srv22 2>/dev/null"
ip netns exec cb python3 -m http.server 8080 --bind 10.77.0.2 >/dev/null 2>&1 &
srv80=$!; on_exit "kill $srv80 2>/dev/null"
wait_for "tcp_connect_time ca 10.77.0.2 22 >/dev/null 2>&1" 90 || fail "test listener on :22 did not come up within 90 s"
wait_for "tcp_connect_time ca 10.77.0.2 8080 >/dev/null 2>&1" 90 || fail "test listener on :8080 did not come up within 90 s"
b22=$(tcp_connect_time ca 10.77.0.2 22); b80=$(tcp_connect_time ca 10.77.0.2 8080)
log "baseline TCP connect: port 22 ${b22}s, port 8080 ${b80}s"

start_agent
ttl=$(ttl_for 60)

# 1. Delay 100 ms on everything: RTT + 100 ms +-10 %.
id=$(ctl inject network --netns ca --interface veth-a --delay 100ms --ttl "${ttl}s") || fail "inject delay exited $?"
log "tree during: $(tree)"
grep -q "netem ${MAJ1}:.*delay 100ms" <<<"$(tree)" || fail "no netem ${MAJ1}: with delay 100ms in the dump"
grep -q "prio ${MAJ}:" <<<"$(tree)" || fail "no prio ${MAJ}: root in the dump"
d=$(netns_rtt ca 10.77.0.2)
log "RTT with delay 100ms: $d ms"
assert_ge "$d" "$(awk -v b="$base" 'BEGIN { print b + 90 }')" "RTT with 100 ms delay"
assert_lt "$d" "$(awk -v b="$base" 'BEGIN { print b + 110 }')" "RTT with 100 ms delay"

# SSH is excluded by default: a connect to port 22 is not delayed, to port 8080 it is.
c22=$(tcp_connect_time ca 10.77.0.2 22); c80=$(tcp_connect_time ca 10.77.0.2 8080)
log "TCP connect during delay: port 22 ${c22}s, port 8080 ${c80}s"
assert_lt "$c22" "$(awk -v b="$b22" 'BEGIN { print b + 0.02 }')" "connect to :22 (excluded) under a 100 ms delay fault"
assert_ge "$c80" "$(awk -v b="$b80" 'BEGIN { print b + 0.09 }')" "connect to :8080 under a 100 ms delay fault"

ctl revert "$id" >/dev/null || fail "revert exited $?"
after=$(tree)
assert_eq "$before" "$after" "qdisc/filter tree after revert"
d=$(netns_rtt ca 10.77.0.2)
assert_lt "$d" "$(awk -v b="$base" 'BEGIN { print b + 5 }')" "RTT after revert"

# 2. Loss 20 % over 2,000 packets: within +-3 points.
id=$(ctl inject network --netns ca --interface veth-a --loss 20% --ttl "${ttl}s") || fail "inject loss exited $?"
lossline=$(ip netns exec ca ping -q -n -c 2000 -i 0.002 -W 1 10.77.0.2 | grep -o '[0-9.]*% packet loss')
loss=${lossline%%%*}
log "loss with 20% netem over 2000 packets: ${loss}%"
assert_ge "$loss" 17 "measured loss"; assert_lt "$loss" 23 "measured loss"
ctl revert "$id" >/dev/null
assert_eq "$before" "$(tree)" "tree after loss revert"

# 2b. Rate 1mbit (a tbf): a bulk TCP transfer measured at the receiver, within +-10 %.
id=$(ctl inject network --netns ca --interface veth-a --rate 1mbit --ttl "${ttl}s") || fail "inject rate exited $?"
grep -q "tbf ${MAJ1}:.*rate 1Mbit" <<<"$(tree)" || fail "no tbf ${MAJ1}: rate 1Mbit in the dump: $(tree)"
ip netns exec cb python3 -c "
import socket, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(('10.77.0.2', 9000)); srv.listen(1)
c, _ = srv.accept(); total = 0; first = None
while True:
    b = c.recv(65536)
    if not b: break
    if first is None: first = time.monotonic()
    total += len(b)
dt = time.monotonic() - first
open('$CASE_TMP/rate.txt', 'w').write('%.1f' % (total * 8 / dt / 1000))
" &
rx=$!
sleep 2
ip netns exec ca python3 -c "
import socket
s = socket.create_connection(('10.77.0.2', 9000)); s.sendall(b'x' * 750000); s.close()"
wait $rx || fail "receiver failed"
kbit=$(cat "$CASE_TMP/rate.txt")
log "bulk transfer at --rate 1mbit: ${kbit} kbit/s goodput"
assert_ge "$kbit" 900 "goodput under a 1mbit rate fault (kbit/s)"
assert_lt "$kbit" 1100 "goodput under a 1mbit rate fault (kbit/s)"
ctl revert "$id" >/dev/null
assert_eq "$before" "$(tree)" "tree after rate revert"

# 3. Targeted: only 10.77.0.2 slowed; 10.77.0.3 within 1 ms of its baseline.
id=$(ctl inject network --netns ca --interface veth-a --delay 100ms --to 10.77.0.2/32 --ttl "${ttl}s") ||
  fail "inject targeted exited $?"
t2=$(netns_rtt ca 10.77.0.2); t3=$(netns_rtt ca 10.77.0.3)
log "targeted: 10.77.0.2 ${t2} ms, 10.77.0.3 ${t3} ms"
assert_ge "$t2" "$(awk -v b="$base" 'BEGIN { print b + 90 }')" "RTT of the target"
assert_lt "$t3" "$(awk -v b="$base3" 'BEGIN { print b + 1 }')" "RTT of the other destination"
# A second fault on the same interface is a conflict (409 -> exit 3).
set +e; ctl inject network --netns ca --interface veth-a --loss 5% --ttl 30s >/dev/null 2>&1; rc=$?; set -e
assert_eq 3 "$rc" "exit status of a second network fault on the same interface"
ctl revert "$id" >/dev/null
assert_eq "$before" "$(tree)" "tree after targeted revert"

# 3b. The same namespace addressed through a process in it (--netns-pid, as for a container).
ip netns exec ca sleep 600 &
inns=$!; on_exit "kill $inns 2>/dev/null"
id=$(ctl inject network --netns-pid "$inns" --interface veth-a --delay 100ms --ttl "${ttl}s") ||
  fail "inject --netns-pid exited $?"
d=$(netns_rtt ca 10.77.0.2)
log "RTT with delay 100ms via --netns-pid: $d ms"
assert_ge "$d" "$(awk -v b="$base" 'BEGIN { print b + 90 }')" "RTT with a --netns-pid delay"
ctl revert "$id" >/dev/null
assert_eq "$before" "$(tree)" "tree after --netns-pid revert"

# 4. A pre-existing tbf root is restored exactly.
ip netns exec ca tc qdisc add dev veth-a root tbf rate 500mbit burst 64kb latency 40ms
tuned=$(tree)
id=$(ctl inject network --netns ca --interface veth-a --delay 20ms --ttl "${ttl}s") || fail "inject over tbf exited $?"
ctl revert "$id" >/dev/null
assert_eq "$tuned" "$(tree)" "tree after revert over a tuned tbf root"
ip netns exec ca tc qdisc del dev veth-a root

# 5. Unknown interface and 101% loss are refused; nothing changes.
set +e
ctl inject network --netns ca --interface nope0 --delay 10ms --ttl 30s >/dev/null 2>&1; rc1=$?
ctl inject network --netns ca --interface veth-a --loss 101% --ttl 30s >/dev/null 2>&1; rc2=$?
set -e
assert_eq 3 "$rc1" "unknown interface"; assert_eq 2 "$rc2" "101% loss"
assert_eq "$before" "$(tree)" "tree after refusals"

# 6. SIGKILL of the agent mid-fault, then reap: the device is clean.
id=$(ctl inject network --netns ca --interface veth-a --delay 50ms --ttl "${ttl}s") || fail "inject before kill exited $?"
kill -KILL "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=
grep -q "netem" <<<"$(tree)" || fail "the fault vanished with the agent before reap"
"$CHAOS_BIN/chaos-agentd" reap --state-dir "$STATE" || fail "reap exited $?"
assert_eq "$before" "$(tree)" "tree after SIGKILL + reap"
d=$(netns_rtt ca 10.77.0.2)
assert_lt "$d" "$(awk -v b="$base" 'BEGIN { print b + 5 }')" "RTT after reap"
log "network egress: all checks passed"

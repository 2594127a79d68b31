#!/usr/bin/env python3
"""Network fault latency: the agent's socket API versus exec'ing `tc` (what other chaos tools do), side by side.

Needs a kernel with sch_netem, sch_tbf, sch_prio and cls_u32, so it normally runs inside the VM of the test layer:

    scripts/bench --network          # builds release, boots the VM, runs tests/vm/cases/bench-network.sh

or directly, as root, on a host whose kernel has them:

    python3 bench/network.py --bin-dir .build/release [--iterations 200] [--out-dir .bench-out]

Creates two network namespaces joined by a veth pair (ca/veth-a 10.77.0.1 <-> cb/veth-b 10.77.0.2), starts its own
chaos-agentd (temporary socket and state directory), and then, for each round, in a shuffled order:
  agent: GET /v1/status, POST /v1/faults (network fault on ca/veth-a), DELETE /v1/faults/{id}, all on one keep-alive
         connection, each timed in the client from request to parsed response; for netem (delay 10ms), tbf (rate
         10mbit) and a targeted netem (delay 10ms to 10.77.0.2/32);
  tc:    the same qdisc added and deleted by exec'ing tc: `tc -n ca ...` (tc's own netns switch) and
         `ip netns exec ca tc ...` (a separate netns-entering exec, as tools that nsenter do), timed as subprocess wall
         time; the targeted fault as other tools build it (prio root + netem child + u32 filter: 3 tc execs).
"Apply itself" is the daemon's own measure from its audit log (`applyMs`: prepare, journal, netlink, verify; and
`revertMs` for the revert), matched to each timed fault by id; each POST minus the median GET /v1/status round trip
on the same connection (the HTTP, JSON and scheduling overhead of a trivial request) is shown next to it.
Prints a table and writes everything to OUT_DIR/network-<UTC time>.json (and the table to .txt). Cleans up (agent
stopped, namespaces deleted) whatever happens. Python 3 standard library; reuses bench/spine.py's helpers.
"""

import argparse
import datetime
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # the repository is read-only inside the VM
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spine  # noqa: E402  (Daemon, Client, dist, pct, check, log, machine)
from spine import Client, Daemon, check, dist, log, pct  # noqa: E402

NS_A, NS_B, DEV = "ca", "cb", "veth-a"
TARGET = "10.77.0.2/32"
APPLY_RATIO_GOAL = 20.0  # the agent's apply itself >= 20x faster than one tc exec

SPECS = {
    "netem": {"netns": NS_A, "interface": DEV, "delay": "10ms"},
    "tbf": {"netns": NS_A, "interface": DEV, "rate": "10mbit"},
    "targeted": {"netns": NS_A, "interface": DEV, "delay": "10ms", "to": TARGET},
}
# The same qdiscs as other tools add them. tbf: the agent's own parameters for 10mbit (burst max(rate/100, 16 KiB),
# 50 ms of queue). Targeted: Pumba's and Chaos Mesh's shape, prio root, netem on band 3, a u32 filter to band 3.
TC_ADD = {
    "netem": [["qdisc", "add", "dev", DEV, "root", "netem", "delay", "10ms"]],
    "tbf": [["qdisc", "add", "dev", DEV, "root", "tbf", "rate", "10mbit", "burst", "16kb", "latency", "50ms"]],
    "targeted": [
        ["qdisc", "add", "dev", DEV, "root", "handle", "1:", "prio"],
        ["qdisc", "add", "dev", DEV, "parent", "1:3", "handle", "30:", "netem", "delay", "10ms"],
        ["filter", "add", "dev", DEV, "protocol", "ip", "parent", "1:0", "prio", "1", "u32", "match", "ip", "dst",
         TARGET, "flowid", "1:3"],
    ],
}
TC_DEL = ["qdisc", "del", "dev", DEV, "root"]
TC = ["tc"]  # how to exec tc: replaced by a copy in RAM (see stage_tc)
IP = ["ip"]


def stage_tc(where):
    """Copies tc, ip, their shared libraries and the dynamic loader into WHERE (tmpfs) and execs them from there.

    Inside the VM the root file system is 9p without a page cache, so every exec of /usr/sbin/tc would re-read tc and
    its ten libraries from the host (about twice the exec time, plus rare stalls); on a real host they sit in the page
    cache. The copy stands in for that. The loader is exec'd explicitly (`ld.so --library-path DIR DIR/tc`) so that it
    too comes from RAM; it then maps tc and the libraries exactly as the kernel's exec of tc would.
    """
    os.makedirs(where, exist_ok=True)
    loader = None
    for prog in ("tc", "ip"):
        path = shutil.which(prog, path="/usr/sbin:/sbin:/usr/bin:/bin")
        libs = re.findall(r"(/\S+)", sh("ldd", path))
        for f in libs + [path]:
            shutil.copy(f, where)
            if os.path.basename(f).startswith("ld-linux"):
                loader = os.path.join(where, os.path.basename(f))
    if loader is None:
        raise RuntimeError("no ld-linux in ldd's output for tc")
    TC[:] = [loader, "--library-path", where, os.path.join(where, "tc")]
    IP[:] = [loader, "--library-path", where, os.path.join(where, "ip")]


def sh(*argv, check_rc=True):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def tc_prefix(mode):
    return TC + ["-n", NS_A] if mode == "tc-n" else IP + ["netns", "exec", NS_A] + TC


def timed_execs(cmds):
    """Runs each argv in turn; returns the wall time of all of them, in ms. Fails on a non-zero exit."""
    t0 = time.perf_counter_ns()
    for argv in cmds:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
    return (time.perf_counter_ns() - t0) / 1e6


def tree():
    return sh(*TC, "-n", NS_A, "qdisc", "show", "dev", DEV) + sh(*TC, "-n", NS_A, "filter", "show", "dev", DEV)


class Netns:
    """ca and cb joined by a veth pair; deleted on close (which also removes any qdisc left on veth-a)."""

    def __init__(self):
        existing = sh("ip", "netns", "list")
        for ns in (NS_A, NS_B):
            if any(line.split()[0] == ns for line in existing.splitlines() if line.strip()):
                raise RuntimeError(f"network namespace {ns} already exists; not touching it")
        self.made = []
        for ns in (NS_A, NS_B):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
        sh("ip", "link", "add", DEV, "netns", NS_A, "type", "veth", "peer", "name", "veth-b", "netns", NS_B)
        sh("ip", "-n", NS_A, "addr", "add", "10.77.0.1/24", "dev", DEV)
        sh("ip", "-n", NS_B, "addr", "add", "10.77.0.2/24", "dev", "veth-b")
        for ns, dev in ((NS_A, DEV), (NS_B, "veth-b")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def close(self):
        for ns in reversed(self.made):
            sh("ip", "netns", "del", ns, check_rc=False)
        self.made = []


class Bench:
    def __init__(self, args, daemon):
        self.args = args
        self.client = Client(daemon.socket)
        self.samples = {}  # name -> [ms]
        self.kinds = {}  # fault id -> kind, for the timed rounds (to match the daemon's applyMs/revertMs)

    def add(self, name, ms):
        self.samples.setdefault(name, []).append(ms)

    def agent(self, kind, record=True):
        c = self.client
        t0 = time.perf_counter_ns()
        check(*c.request("GET", "/v1/status"), 200, "GET /v1/status")
        t1 = time.perf_counter_ns()
        body = {"kind": "network", "ttl": "1h", "labels": {"bench": "network"}, "spec": SPECS[kind]}
        doc = check(*c.request("POST", "/v1/faults", body), 201, f"POST {kind}")
        t2 = time.perf_counter_ns()
        check(*c.request("DELETE", f"/v1/faults/{doc['id']}"), 200, f"DELETE {kind}")
        t3 = time.perf_counter_ns()
        if record:
            self.kinds[doc["id"]] = kind
            self.add("agent:status", (t1 - t0) / 1e6)
            self.add(f"agent:{kind}:apply", (t2 - t1) / 1e6)
            self.add(f"agent:{kind}:revert", (t3 - t2) / 1e6)

    def tc(self, mode, kind, record=True):
        pre = tc_prefix(mode)
        add = timed_execs([pre + a for a in TC_ADD[kind]])
        rm = timed_execs([pre + TC_DEL])
        if record:
            self.add(f"{mode}:{kind}:apply", add)
            self.add(f"{mode}:{kind}:revert", rm)

    def status(self):
        t0 = time.perf_counter_ns()
        check(*self.client.request("GET", "/v1/status"), 200, "GET /v1/status")
        self.add("agent:status", (time.perf_counter_ns() - t0) / 1e6)

    def ops(self):
        if self.args.native_reference:
            # No netem or prio in this kernel: the agent cannot apply its network fault, tc can still add a tbf.
            return [self.status, lambda: self.tc("tc-n", "tbf"), lambda: self.tc("ip-netns-exec", "tbf")]
        out = [lambda k=k: self.agent(k) for k in SPECS]
        out += [lambda k=k: self.tc("tc-n", k) for k in SPECS]
        out += [lambda: self.tc("ip-netns-exec", "netem")]
        return out

    def sanity(self, before):
        """Once, untimed: each path really changes the tree, and leaves it as it was."""
        for kind, want in (("netem", "netem"), ("tbf", "tbf"), ("targeted", "netem")):
            if self.args.native_reference and kind != "tbf":
                continue
            if not self.args.native_reference:
                doc = check(*self.client.request("POST", "/v1/faults", {"kind": "network", "ttl": "1h",
                                                                        "spec": SPECS[kind]}), 201, f"POST {kind}")
                if want not in tree():
                    raise RuntimeError(f"agent {kind}: no {want} in the tree: {tree()}")
                check(*self.client.request("DELETE", f"/v1/faults/{doc['id']}"), 200, "DELETE")
                if tree() != before:
                    raise RuntimeError(f"agent {kind}: tree after revert differs: {tree()!r} vs {before!r}")
            for mode in ("tc-n", "ip-netns-exec"):
                timed_execs([tc_prefix(mode) + a for a in TC_ADD[kind]])
                if want not in tree():
                    raise RuntimeError(f"{mode} {kind}: no {want} in the tree: {tree()}")
                timed_execs([tc_prefix(mode) + TC_DEL])
                if tree() != before:
                    raise RuntimeError(f"{mode} {kind}: tree after delete differs: {tree()!r}")


def server_side(bench, logpath):
    """The daemon's own applyMs and revertMs for every timed fault, from its audit log lines."""
    with open(logpath, "rb") as f:
        for raw in f:
            line = raw.decode(errors="replace")
            m = re.search(r"\blease=(\S+)", line)
            kind = bench.kinds.get(m.group(1)) if m else None
            if kind is None:
                continue
            for key, phase in (("applyMs", "apply"), ("revertMs", "revert")):
                v = re.search(rf"\b{key}=([0-9.]+)", line)
                if v:
                    bench.add(f"server:{kind}:{phase}", float(v.group(1)))


def summarize(samples):
    out = {name: dist(v) for name, v in samples.items()}
    st = samples.get("agent:status", [])
    floor = pct(st, 50) if st else 0.0
    for kind in SPECS:
        v = samples.get(f"agent:{kind}:apply")
        if v:
            out[f"agent:{kind}:applyMinusStatusP50"] = dist([x - floor for x in v])
    return out


def ratio(a, b):
    return None if not a or not b else a / b


def rows_of(s):
    """(operation, agent p50/p99, tc p50/p99, ratio p50 / p99, goal, met?)"""
    rows = []

    def g(name, key):
        d = s.get(name)
        return d.get(key) if d else None

    def pair(name):
        a, b = g(name, "p50"), g(name, "p99")
        return "-" if a is None else f"{a:.2f} / {b:.2f}"

    def rat(tc_name, agent_name):
        r50, r99 = ratio(g(tc_name, "p50"), g(agent_name, "p50")), ratio(g(tc_name, "p99"), g(agent_name, "p99"))
        return "-" if r50 is None else f"{r50:.1f}x / {r99:.1f}x", r50, r99

    labels = {"netem": "netem delay 10ms", "tbf": "tbf rate 10mbit", "targeted": "netem to one /32"}
    for kind in SPECS:
        for phase in ("apply", "revert"):
            agent_name = f"agent:{kind}:{phase}"
            for mode in ("tc-n", "ip-netns-exec"):
                tc_name = f"{mode}:{kind}:{phase}"
                if tc_name not in s:
                    continue
                execs = len(TC_ADD[kind]) if phase == "apply" else 1
                how = "tc -n" if mode == "tc-n" else "ip netns exec + tc"
                text, r50, r99 = rat(tc_name, agent_name)
                goal, met = "", ""
                if phase == "apply":
                    goal = "API round trip < 1 tc exec"
                    one_exec = f"{mode}:netem:apply"
                    a50, a99 = g(agent_name, "p50"), g(agent_name, "p99")
                    t50, t99 = g(one_exec, "p50"), g(one_exec, "p99")
                    if None not in (a50, a99, t50, t99):
                        met = "yes" if a50 < t50 and a99 < t99 else ("p50 only" if a50 < t50 else "NO")
                verb = "POST" if phase == "apply" else "DELETE"
                rows.append((f"{labels[kind]}: {phase} (agent {verb} vs {how}, {execs} exec{'s' if execs > 1 else ''})",
                             pair(agent_name), pair(tc_name), text, goal, met))
            server = f"server:{kind}:{phase}"
            if server in s:
                text, r50, r99 = rat(f"tc-n:{kind}:{phase}", server)
                goal = f">= {APPLY_RATIO_GOAL:g}x" if phase == "apply" else ""
                met = "" if phase != "apply" or r50 is None else (
                    "yes" if r50 >= APPLY_RATIO_GOAL and r99 >= APPLY_RATIO_GOAL else
                    ("p50 only" if r50 >= APPLY_RATIO_GOAL else "NO"))
                rows.append((f"{labels[kind]}: {phase} itself (daemon's {phase}Ms) vs tc -n",
                             pair(server), pair(f"tc-n:{kind}:{phase}"), text, goal, met))
            if phase == "apply" and f"agent:{kind}:apply" in s:
                est = f"agent:{kind}:applyMinusStatusP50"
                text, r50, r99 = rat(f"tc-n:{kind}:apply", est)
                met = "-" if r50 is None else ("yes" if r50 >= APPLY_RATIO_GOAL and r99 >= APPLY_RATIO_GOAL else
                                                ("p50 only" if r50 >= APPLY_RATIO_GOAL else "NO"))
                rows.append((f"{labels[kind]}: POST - median GET /v1/status, vs tc -n",
                             pair(est), pair(f"tc-n:{kind}:apply"), text, "", ""))
    rows.append(("GET /v1/status (HTTP floor, same connection)", pair("agent:status"), "-", "-", "", ""))
    return rows


def table(rows):
    head = ("operation", "agent p50 / p99 ms", "tc p50 / p99 ms", "tc/agent p50 / p99", "goal", "met?")
    width = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(width[i]) for i, h in enumerate(head)), "  ".join("-" * w for w in width)]
    lines += ["  ".join(str(v).ljust(width[i]) for i, v in enumerate(r)) for r in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.environ.get("CHAOS_BIN", ".build/release"),
                    help="where chaos-agentd is (default $CHAOS_BIN, else .build/release)")
    ap.add_argument("--out-dir", default=os.environ.get("VM_RESULTS", ".bench-out"),
                    help="where the JSON and the table go (default $VM_RESULTS, else .bench-out)")
    ap.add_argument("--state-root", default=os.environ.get("TMPDIR", "/tmp"), help="parent of the daemon's temp dir")
    ap.add_argument("--iterations", type=int, default=200, help="timed rounds (each: every operation once)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    ap.add_argument("--budget", type=float, default=240.0, help="stop the timed rounds after this many seconds")
    ap.add_argument("--seed", type=int, default=1, help="shuffles the order of operations within each round")
    ap.add_argument("--quick", action="store_true", help="20 rounds, 2 warm-ups (checks the harness, not for numbers)")
    ap.add_argument("--no-stage", action="store_true",
                    help="exec the installed tc and ip, not copies in RAM (see stage_tc; matters on the VM's 9p root)")
    ap.add_argument("--native-reference", action="store_true",
                    help="for a kernel without netem/prio (such as the build host): time only GET /v1/status and "
                         "tc's tbf add/del, to see how much TCG inflates each")
    ap.add_argument("--keep-logs", action="store_true", help="copy the daemon's log into --out-dir")
    args = ap.parse_args()
    if args.quick:
        args.iterations, args.warmup = 20, 2
    args.bin_dir = os.path.abspath(args.bin_dir)
    args.out_dir = os.path.abspath(args.out_dir)
    args.stamp = "network-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    os.makedirs(args.out_dir, exist_ok=True)
    if not os.access(os.path.join(args.bin_dir, "chaos-agentd"), os.X_OK):
        sys.exit(f"bench: {args.bin_dir}/chaos-agentd is missing; run `swift build -c release`")
    if os.geteuid() != 0:
        sys.exit("bench: run as root (network namespaces, qdiscs)")
    for m in ("sch_netem", "sch_tbf", "sch_prio", "cls_u32"):
        subprocess.run(["modprobe", m], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    signal.signal(signal.SIGTERM, spine.on_signal)
    signal.signal(signal.SIGHUP, spine.on_signal)
    spine.STATE_ROOT[0] = args.state_root
    res = {"args": dict(vars(args)), "machine": spine.machine(),
           "startedAt": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    res["machine"]["commit"] = r.stdout.strip() or "?"
    res["machine"]["tcVersion"] = sh("tc", "-V", check_rc=False).strip()
    net = daemon = b = None
    stage_dir = None
    if not args.no_stage:
        stage_dir = tempfile.mkdtemp(prefix="chaos-bench-tc-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        stage_tc(stage_dir)
        log(f"network: exec'ing tc and ip from copies in {stage_dir}")
    res["tcExec"] = TC
    t_start = time.monotonic()
    rounds = 0
    try:
        net = Netns()
        daemon = Daemon("network", args)
        b = Bench(args, daemon)
        before = tree()
        res["treeBefore"] = before
        log("network: namespaces and agent up; checking each path once")
        b.sanity(before)
        log(f"network: {args.warmup} warm-up rounds")
        ops = b.ops()
        rng = random.Random(args.seed)
        for _ in range(args.warmup):
            for op in ops:
                op()
        b.samples, b.kinds = {}, {}
        log(f"network: {args.iterations} rounds of {len(ops)} operations (budget {args.budget:g} s)")
        t_loop = time.monotonic()
        while rounds < args.iterations and time.monotonic() - t_loop < args.budget:
            rng.shuffle(ops)
            for op in ops:
                op()
            rounds += 1
            if rounds % 50 == 0:
                log(f"network: {rounds} rounds, {time.monotonic() - t_loop:.0f} s")
        res["loopSeconds"] = time.monotonic() - t_loop
        if tree() != before:
            raise RuntimeError(f"tree after the run differs: {tree()!r}")
        res["treeAfterSameAsBefore"] = True
        b.client.close()
        server_side(b, daemon.logpath)  # the log is flushed per line; read it before stop() removes it
        res["samplesMs"] = b.samples
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        res["interrupted"] = str(e)
        res["samplesMs"] = b.samples if b is not None else {}
    except Exception as e:
        log(f"failed: {e!r}")
        res["error"] = repr(e)
        res["samplesMs"] = b.samples if b is not None else {}
    finally:
        if daemon is not None:
            daemon.stop()
        spine.cleanup_all()
        if net is not None:
            net.close()
        if stage_dir is not None:
            shutil.rmtree(stage_dir, ignore_errors=True)
    res["rounds"] = rounds
    res["totalSeconds"] = time.monotonic() - t_start
    res["loadAvgAtEnd"] = os.getloadavg()
    res["summary"] = summarize(res["samplesMs"])
    text = table(rows_of(res["summary"]))
    m = res["machine"]
    header = (f"chaos-agent network faults, agent vs tc ({m['commit']}): {m['nproc']} CPU {m['cpu']}, Linux {m['kernel']}, "
              f"{rounds} rounds in {res.get('loopSeconds', 0):.0f} s, {m['tcVersion']}")
    with open(os.path.join(args.out_dir, f"{args.stamp}.json"), "w") as f:
        json.dump(res, f, indent=2)
    with open(os.path.join(args.out_dir, f"{args.stamp}.txt"), "w") as f:
        f.write(header + "\n" + text + "\n")
    print(header)
    print(text)
    print(f"results: {os.path.join(args.out_dir, args.stamp + '.json')}")
    return 1 if "error" in res or "interrupted" in res or rounds == 0 else 0


if __name__ == "__main__":
    sys.exit(main())

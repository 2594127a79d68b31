#!/usr/bin/env python3
"""Resource faults: the agent's cpu and memory stress versus stress-ng, side by side in one run.

Needs cgroup v2 with the cpu and memory controllers and stress-ng, so it normally runs inside the VM of the test layer:

    scripts/bench --cgroup           # builds release, boots the VM, runs tests/vm/cases/bench-cgroup.sh

or directly, as root, on such a host:

    python3 bench/cgroup.py --bin-dir .build/release [--seconds 10] [--out-dir .bench-out]

CPU accuracy and steadiness: `cpu --load 50% --cpus N` through the agent, then `stress-ng --cpu N --cpu-load 50` in a
cgroup of its own, each sampled once a second from its cgroup's cpu.stat usage_usec for --seconds seconds; the
delivered share of the N CPUs per second gives mean, stdev, min, max and the mean error against 50 %. Both are sampled
the same way, so the comparison is fair; stress-ng's duty cycle is its own, the agent's is the kernel's cpu.max.
Memory fill rate: POST /v1/faults for `memory --size SIZE` returns once memory.current has reached the size (the
agent's proof), so its round trip minus a GET /v1/status round trip is the fill time; stress-ng `--vm 1 --vm-bytes SIZE
--vm-keep --vm-populate` is timed from exec until its cgroup's memory.current reaches 98 % of SIZE.
Overhead: the agent's own CPU time and RSS over the CPU fault, and the stress-ng parent's, from /proc.
Prints a table and writes OUT_DIR/cgroup-<UTC time>.json (and .txt). Cleans up whatever happens. Standard library only.
"""

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # the repository is read-only inside the VM
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spine  # noqa: E402
from spine import Client, Daemon, check, log  # noqa: E402

CG = "/sys/fs/cgroup"


def read_int(path, key=None):
    with open(path) as f:
        text = f.read()
    if key is None:
        return int(text.split()[0])
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    raise KeyError(key)


def proc_cpu_s(pid):
    """utime + stime of a process in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sample_shares(cgroup_dir, cpus, seconds, watch_pid=None):
    """Per-second share of `cpus` CPUs delivered to the cgroup; the watched process's CPU and peak RSS over the run."""
    shares = []
    u0, t0 = read_int(f"{cgroup_dir}/cpu.stat", "usage_usec"), time.monotonic()
    c0 = proc_cpu_s(watch_pid) if watch_pid else 0
    rss = 0
    start = t0
    for _ in range(seconds):
        time.sleep(max(0.0, t0 + 1.0 - time.monotonic()))
        u1, t1 = read_int(f"{cgroup_dir}/cpu.stat", "usage_usec"), time.monotonic()
        shares.append((u1 - u0) / 1e6 / (t1 - t0) / cpus)
        u0, t0 = u1, t1
        if watch_pid:
            rss = max(rss, proc_rss_kib(watch_pid))
    overhead = None
    if watch_pid:
        overhead = {"cpuPercent": 100 * (proc_cpu_s(watch_pid) - c0) / (time.monotonic() - start), "peakRssKiB": rss}
    return shares, overhead


def summary(shares, target):
    return {
        "mean": statistics.fmean(shares), "stdev": statistics.pstdev(shares), "min": min(shares), "max": max(shares),
        "meanErrorPoints": 100 * abs(statistics.fmean(shares) - target), "samples": shares,
    }


class StressNG:
    """stress-ng in a cgroup of its own (created here, removed at the end)."""

    def __init__(self, name, argv):
        self.dir = f"{CG}/{name}"
        os.makedirs(self.dir, exist_ok=True)
        # The shell puts itself into the cgroup, then becomes stress-ng: nothing of it runs outside.
        self.proc = subprocess.Popen(
            ["sh", "-c", f'echo $$ > {self.dir}/cgroup.procs && exec "$@"', "sh", *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.started = time.monotonic()

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:
            with open(f"{self.dir}/cgroup.kill", "w") as f:
                f.write("1")
        except OSError:
            pass
        for _ in range(200):
            try:
                os.rmdir(self.dir)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def bench_cpu(args, client, daemon):
    cpus, secs = args.cpus, args.seconds
    out = {}
    status, doc = client.request("POST", "/v1/faults", {
        "kind": "cpu", "ttl": f"{secs + 20}s", "spec": {"load": "50%", "cpus": cpus}})
    check(status, doc, 201, "inject cpu")
    cg = f"{CG}{doc['target']['cgroup']}"
    time.sleep(1)
    shares, overhead = sample_shares(cg, cpus, secs, watch_pid=daemon.pid)
    out["agent"] = summary(shares, 0.5)
    out["agent"]["agentOverhead"] = overhead
    out["agent"]["workerRssKiB"] = proc_rss_kib(doc["target"]["pid"])
    status, _ = client.request("DELETE", f"/v1/faults/{doc['id']}")
    check(status, None, 200, "revert cpu")

    s = StressNG("bench-stress-ng-cpu", ["stress-ng", "--cpu", str(cpus), "--cpu-load", "50", "--timeout",
                                         f"{secs + 20}s", "--quiet"])
    try:
        time.sleep(1)
        shares, overhead = sample_shares(s.dir, cpus, secs, watch_pid=s.proc.pid)
        out["stressNg"] = summary(shares, 0.5)
        out["stressNg"]["parentOverhead"] = overhead
    finally:
        s.stop()
    return out


def bench_memory(args, client):
    size = args.memory_mib << 20
    out = {}
    t = time.monotonic()
    status, _ = client.request("GET", "/v1/status")
    base = time.monotonic() - t
    t = time.monotonic()
    status, doc = client.request("POST", "/v1/faults", {
        "kind": "memory", "ttl": "60s", "spec": {"size": f"{args.memory_mib}MiB"}})
    took = time.monotonic() - t
    check(status, doc, 201, "inject memory")
    cg = f"{CG}{doc['target']['cgroup']}"
    cur = read_int(f"{cg}/memory.current")
    fill = max(1e-6, took - base)
    out["agent"] = {"seconds": fill, "GiBps": size / fill / (1 << 30), "memoryCurrent": cur,
                    "errorPercent": 100 * (cur - size) / size}
    client.request("DELETE", f"/v1/faults/{doc['id']}")

    s = StressNG("bench-stress-ng-vm", ["stress-ng", "--vm", "1", "--vm-bytes", f"{args.memory_mib}M", "--vm-keep",
                                        "--vm-populate", "--timeout", "60s", "--quiet"])
    try:
        deadline = time.monotonic() + 60
        cur = 0
        while time.monotonic() < deadline:
            cur = read_int(f"{s.dir}/memory.current")
            if cur >= 0.98 * size:
                break
            time.sleep(0.005)
        fill = time.monotonic() - s.started
        out["stressNg"] = {"seconds": fill, "GiBps": size / fill / (1 << 30), "memoryCurrent": cur,
                           "errorPercent": 100 * (cur - size) / size, "reached": cur >= 0.98 * size}
    finally:
        s.stop()
    return out


def table(res):
    c, m = res["cpu"], res["memory"]
    lines = [f"cpu: 50% of {res['args']['cpus']} CPU(s), {res['args']['seconds']} one-second samples each",
             f"{'':12} {'mean':>8} {'stdev':>8} {'min':>8} {'max':>8} {'|err| pts':>10}"]
    for name, key in (("agent", "agent"), ("stress-ng", "stressNg")):
        s = c[key]
        lines.append(f"{name:12} {100 * s['mean']:7.2f}% {100 * s['stdev']:7.2f}% {100 * s['min']:7.2f}% "
                     f"{100 * s['max']:7.2f}% {s['meanErrorPoints']:10.2f}")
    a, p = c["agent"]["agentOverhead"], c["stressNg"]["parentOverhead"]
    lines.append(f"overhead during the fault: agent daemon {a['cpuPercent']:.2f}% CPU, {a['peakRssKiB'] / 1024:.1f} MiB RSS "
                 f"(worker {c['agent']['workerRssKiB'] / 1024:.1f} MiB); stress-ng parent {p['cpuPercent']:.2f}% CPU, "
                 f"{p['peakRssKiB'] / 1024:.1f} MiB RSS")
    lines.append(f"memory: {res['args']['memory_mib']} MiB")
    for name, key in (("agent", "agent"), ("stress-ng", "stressNg")):
        s = m[key]
        lines.append(f"{name:12} {s['seconds']:6.2f} s  {s['GiBps']:6.3f} GiB/s  memory.current {s['memoryCurrent'] >> 20} MiB "
                     f"({s['errorPercent']:+.2f}%)")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.environ.get("CHAOS_BIN", ".build/release"))
    ap.add_argument("--out-dir", default=os.environ.get("VM_RESULTS", ".bench-out"))
    ap.add_argument("--state-root", default=os.environ.get("TMPDIR", "/tmp"))
    ap.add_argument("--cpus", type=int, default=1, help="CPUs to load (default 1)")
    ap.add_argument("--seconds", type=int, default=10, help="one-second samples per contender (default 10)")
    ap.add_argument("--memory-mib", type=int, default=512, help="memory fill size in MiB (default 512)")
    ap.add_argument("--quick", action="store_true", help="5 samples, 128 MiB (checks the harness, not for numbers)")
    ap.add_argument("--keep-logs", action="store_true", help="copy the daemon's log into --out-dir")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.memory_mib = 5, 128
    args.bin_dir = os.path.abspath(args.bin_dir)
    args.out_dir = os.path.abspath(args.out_dir)
    stamp = "cgroup-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    os.makedirs(args.out_dir, exist_ok=True)
    if os.geteuid() != 0:
        sys.exit("bench: run as root (cgroups)")
    with open(f"{CG}/cgroup.controllers") as f:
        have = f.read().split()
    if "cpu" not in have or "memory" not in have:
        sys.exit(f"bench: cgroup v2 at {CG} lacks the cpu or memory controller (has: {' '.join(have)})")
    with open(f"{CG}/cgroup.subtree_control", "w") as f:
        f.write("+cpu +memory")
    signal.signal(signal.SIGTERM, spine.on_signal)
    spine.STATE_ROOT[0] = args.state_root
    res = {"args": dict(vars(args)), "machine": spine.machine(),
           "startedAt": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    daemon = client = None
    try:
        daemon = Daemon("cgroup", args)
        client = Client(daemon.socket)
        log("cgroup: cpu, agent then stress-ng")
        res["cpu"] = bench_cpu(args, client, daemon)
        log("cgroup: memory, agent then stress-ng")
        res["memory"] = bench_memory(args, client)
    finally:
        if client:
            client.close()
        if daemon:
            daemon.stop()
    text = table(res)
    print(text)
    with open(os.path.join(args.out_dir, stamp + ".json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(args.out_dir, stamp + ".txt"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Remote-control benchmarks: requests/s and latency for `GET /v1/faults` and for inject+revert of a pause fault, over
the Unix socket and over mutual TLS, with 1, 16 and 128 concurrent clients; the agent's RSS under that load.

Run through `scripts/bench --remote` (installs what is missing, builds the release binaries), or directly:

    python3 bench/remote.py --bin-dir .build/release [--quick] [--seconds 5] [--out-dir .bench-out]

One chaos-agentd (temporary socket, state directory, certificates from scripts/gen-certs, TLS on a free loopback
port) serves every cell. Clients are keep-alive connections (a TLS handshake per connection, not per request), spread
over several worker processes so Python's GIL is not the limit; each inject+revert client pauses its own `sleep`
child. The client processes share the machine's cores with the agent: numbers are for this machine as a whole, not
the agent alone. Everything is torn down whatever happens. Prints a table and writes JSON to OUT_DIR.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "host"))
sys.path.insert(0, str(HERE))
from spine import Client as SocketClient  # noqa: E402  (keep-alive HTTP over the socket, shared with spine.py)
from remotelib import TLSClient, free_port, make_certs, remote_config  # noqa: E402


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]


class TLSWrap:
    def __init__(self, certs, port):
        self.c = TLSClient(Path(certs), port, "admin", timeout=60)

    def request(self, method, url, body=None):
        r = self.c.request(method, url, body)
        return r.status, r.json

    def close(self):
        self.c.close()


def worker(transport, target, workload, pids, seconds, start_at, out):
    """One process: a thread per client; returns latencies (ms) and errors."""
    lat, errors = [], []
    lock = threading.Lock()

    def client(pid):
        c = SocketClient(target) if transport == "socket" else TLSWrap(*target)
        mine = []
        try:
            c.request("GET", "/healthz")  # connect (and handshake) before the clock starts
            while time.time() < start_at:
                time.sleep(0.001)
            end = start_at + seconds
            while time.time() < end:
                t = time.perf_counter()
                if workload == "list":
                    s, _ = c.request("GET", "/v1/faults")
                    if s != 200:
                        raise RuntimeError(f"list: HTTP {s}")
                else:
                    s, f = c.request("POST", "/v1/faults", {"kind": "pause", "ttl": "60s", "spec": {"pid": pid}})
                    if s != 201:
                        raise RuntimeError(f"inject: HTTP {s} {f}")
                    s, f = c.request("DELETE", f"/v1/faults/{f['id']}")
                    if s != 200 or f["state"] != "reverted":
                        raise RuntimeError(f"revert: HTTP {s} {f}")
                mine.append((time.perf_counter() - t) * 1000)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            with lock:
                errors.append(f"{type(e).__name__}: {e}")
        finally:
            c.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(p,)) for p in pids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((lat, errors))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_cell(agent_pid, transport, target, workload, clients, seconds, victims):
    procs = min(clients, max(2, os.cpu_count() or 2) * 2)
    per = [victims[i::procs] for i in range(procs)]
    q = mp.Queue()
    start_at = time.time() + 1.0 + clients * 0.01
    ps = [mp.Process(target=worker, args=(transport, target, workload, [v.pid for v in group], seconds, start_at, q))
          for group in per if group]
    for p in ps:
        p.start()
    peak = rss_kib(agent_pid)
    while time.time() < start_at + seconds:
        peak = max(peak, rss_kib(agent_pid))
        time.sleep(0.1)
    lat, errors = [], []
    for _ in ps:
        l, e = q.get(timeout=seconds + 120)
        lat += l
        errors += e
    for p in ps:
        p.join(timeout=30)
    return {
        "transport": transport, "workload": workload, "clients": clients, "seconds": seconds, "ops": len(lat),
        "per_second": len(lat) / seconds, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat or [0]),
        "errors": errors[:5], "error_count": len(errors), "agent_rss_peak_kib": peak,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=".build/release")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--quick", action="store_true", help="2 s per cell")
    ap.add_argument("--clients", default="1,16,128")
    ap.add_argument("--out-dir", default=".bench-out")
    args = ap.parse_args()
    if args.quick:
        args.seconds = 2
    counts = [int(c) for c in args.clients.split(",")]
    work = Path(tempfile.mkdtemp(prefix="chaos-bench-remote-", dir="/tmp"))
    os.chmod(work, 0o755)
    victims, agent = [], None
    try:
        certs = make_certs(work / "tls")
        port = free_port()
        (work / "agent.toml").write_text('[agent]\nsocket-group = ""\n' + remote_config(certs, port, max_ttl="1h"))
        sock = str(work / "agent.sock")
        logf = open(work / "agentd.log", "wb")
        agent = subprocess.Popen([os.path.join(args.bin_dir, "chaos-agentd"), "run", "--socket", sock, "--state-dir",
                                  str(work / "state"), "--config", str(work / "agent.toml")],
                                 stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        deadline = time.time() + 20
        while True:
            try:
                if SocketClient(sock).request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if agent.poll() is not None or time.time() > deadline:
                raise RuntimeError("chaos-agentd did not start: " + (work / "agentd.log").read_text()[-2000:])
            time.sleep(0.05)
        time.sleep(0.3)  # the TLS listener binds right after the socket
        idle_rss = rss_kib(agent.pid)
        victims = [subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL) for _ in range(max(counts))]
        rows = []
        for workload in ("list", "inject+revert"):
            for transport, target in (("socket", sock), ("tls", (str(certs), port))):
                for n in counts:
                    log(f"{workload} over {transport}, {n} client(s), {args.seconds:g} s")
                    rows.append(run_cell(agent.pid, transport, target, workload, n, args.seconds, victims[:n]))
        leftover = SocketClient(sock).request("GET", "/v1/faults")[1]["faults"]
        live = [f for f in leftover if f["state"] not in ("reverted", "failed")]
        result = {
            "when": datetime.datetime.now(datetime.timezone.utc).isoformat(), "machine": platform.platform(),
            "cpus": os.cpu_count(), "bin_dir": args.bin_dir, "agent_rss_idle_kib": idle_rss, "rows": rows,
            "live_faults_after": len(live),
        }
        print(f"agent RSS idle: {idle_rss / 1024:.1f} MiB; live faults after the run: {len(live)}")
        print(f"{'workload':<14} {'transport':<9} {'clients':>7} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'errors':>6} {'RSS MiB':>8}")
        for r in rows:
            print(f"{r['workload']:<14} {r['transport']:<9} {r['clients']:>7} {r['per_second']:>9.1f} "
                  f"{(r['p50_ms'] or 0):>8.2f} {(r['p99_ms'] or 0):>8.2f} {r['error_count']:>6} "
                  f"{r['agent_rss_peak_kib'] / 1024:>8.1f}")
        os.makedirs(args.out_dir, exist_ok=True)
        out = Path(args.out_dir) / f"remote-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out.write_text(json.dumps(result, indent=2))
        print(f"results: {out}")
        return 1 if live or any(r["error_count"] for r in rows) else 0
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
                subprocess.run([os.path.join(args.bin_dir, "chaos-agentd"), "reap", "--state-dir",
                                str(work / "state")], check=False, capture_output=True, timeout=30)
        for v in victims:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(v.pid, sig)
                except ProcessLookupError:
                    pass
            v.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sys.exit(main())

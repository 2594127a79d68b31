#!/usr/bin/env python3
"""Spine benchmarks for chaos-agent: revert lag, apply latency, daemon footprint.

Run through scripts/bench (which installs what is missing and builds the release binaries), or directly:

    python3 bench/spine.py --bin-dir .build/release [--quick] [--out-dir .bench-out]

Every scenario starts its own chaos-agentd (temporary socket and state directory), its own `sleep 600` children, and
tears both down whatever happens: the daemon gets SIGTERM (SIGKILL plus `chaos-agentd reap` if it does not exit), every
child gets SIGCONT then SIGKILL. Prints a table (metric, value, goal, met?) and writes every number, with the machine
description, to OUT_DIR/spine-<UTC date and time>.json. Python 3 standard library only; needs root (the agent's pause
kind needs CAP_KILL).
"""

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
import tempfile
import threading
import time

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
LAG_GOAL_MS = 5.0
APPLY_GOAL_MS = 2.0
WAKEUP_GOAL = 1.0  # per second; "none besides the watchdog ping", and there is no watchdog here


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def us_of(text):
    """RFC 3339 timestamp -> integer microseconds since the epoch (exact, no float rounding)."""
    d = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (d - EPOCH) // datetime.timedelta(microseconds=1)


def now_us():
    return time.time_ns() // 1000


def pct(values, p):
    """Nearest-rank percentile."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]


def dist(values):
    if not values:
        return {"n": 0}
    return {
        "n": len(values), "min": min(values), "p50": pct(values, 50), "p90": pct(values, 90),
        "p99": pct(values, 99), "max": max(values), "mean": sum(values) / len(values),
    }


# ---------------------------------------------------------------------------------------------------------------------
# HTTP over the Unix socket


# The host test suite's connection class (stdlib only), so both speak to the socket the same way.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "host"))
from chaoslib import UnixHTTPConnection  # noqa: E402


class Client:
    """One keep-alive HTTP/1.1 connection (reopened if the server closes it)."""

    def __init__(self, path):
        self.path = path
        self.conn = UnixHTTPConnection(path)

    def request(self, method, url, body=None):
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            try:
                self.conn.request(method, url, body=payload, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = UnixHTTPConnection(self.path)
                if attempt == 2:
                    raise
        try:
            doc = json.loads(data) if data else None
        except ValueError:
            doc = {"raw": data.decode(errors="replace")}
        return r.status, doc

    def close(self):
        self.conn.close()


def one_shot(path, method, url, body=None):
    """A request on a connection of its own."""
    conn = UnixHTTPConnection(path)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, url, body=payload, headers=headers)
        r = conn.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data else None)
    finally:
        conn.close()


def pause_body(pid, ttl):
    return {"kind": "pause", "ttl": ttl, "labels": {"bench": "spine"}, "spec": {"pid": pid}}


def check(status, doc, want, what):
    if status != want:
        raise RuntimeError(f"{what}: HTTP {status} (wanted {want}): {doc}")
    return doc


# ---------------------------------------------------------------------------------------------------------------------
# Children and daemons, always cleaned up


class Children:
    """`sleep 600` children. Held as Popen objects and never reaped before cleanup, so no PID can be recycled."""

    live = []

    @classmethod
    def spawn(cls, n):
        out = []
        for _ in range(n):
            p = subprocess.Popen(
                ["sleep", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cls.live.append(p)
            out.append(p)
        return out

    @classmethod
    def cleanup(cls, only=None):
        group = cls.live if only is None else only
        for p in group:
            if p.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(p.pid, sig)
                    except ProcessLookupError:
                        pass
        for p in group:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"child {p.pid} did not die")
        ids = {id(p) for p in group}
        cls.live = [p for p in cls.live if id(p) not in ids]


class Daemon:
    live = []

    def __init__(self, tag, args):
        self.tag = tag
        self.args = args
        self.stopped = False
        self.bin = os.path.join(args.bin_dir, "chaos-agentd")
        self.dir = tempfile.mkdtemp(prefix=f"chaos-bench-{tag}-", dir=args.state_root)
        self.socket = os.path.join(self.dir, "agent.sock")
        self.state = os.path.join(self.dir, "state")
        self.config = os.path.join(self.dir, "agent.toml")
        self.logpath = os.path.join(self.dir, "daemon.log")
        with open(self.config, "w") as f:
            f.write('[agent]\nsocket-group = ""\n[policy]\nmax-ttl = "1h"\n')
        self.logfile = open(self.logpath, "wb")
        self.proc = subprocess.Popen(
            [self.bin, "run", "--socket", self.socket, "--state-dir", self.state, "--config", self.config],
            stdin=subprocess.DEVNULL, stdout=self.logfile, stderr=subprocess.STDOUT, start_new_session=True)
        Daemon.live.append(self)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chaos-agentd exited with {self.proc.returncode}; log: {self.log_tail()}")
            try:
                status, _ = one_shot(self.socket, "GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"chaos-agentd not ready after 20 s; log: {self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self, n=2000):
        try:
            with open(self.logpath, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return "?"

    def log_lags(self):
        """lagMs= of every revert the daemon logged for an expired lease."""
        out = []
        with open(self.logpath, "rb") as f:
            for m in re.finditer(rb"lagMs=(-?[0-9]+(?:\.[0-9]+)?)", f.read()):
                out.append(float(m.group(1)))
        return out

    def stop(self):
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if self in Daemon.live:
            Daemon.live.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"{self.tag}: chaos-agentd ignored SIGTERM for 30 s; killing it and reaping its journal")
                self.proc.kill()
                self.proc.wait()
                subprocess.run([self.bin, "reap", "--state-dir", self.state], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=30, check=False)
        self.logfile.close()
        if self.args.keep_logs:
            shutil.copy(self.logpath, os.path.join(self.args.out_dir, f"{self.args.stamp}-{self.tag}.log"))
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode


def cleanup_all():
    for d in list(Daemon.live):
        try:
            d.stop()
        except Exception as e:  # keep cleaning
            log(f"cleanup: {e}")
    Children.cleanup()


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------------------------------------------------------------
# /proc


def proc_state_fd(pid):
    return os.open(f"/proc/{pid}/stat", os.O_RDONLY)


def state_of(fd):
    data = os.pread(fd, 512, 0)
    return data[data.rindex(b")") + 2:data.rindex(b")") + 3]


def state_of_pid(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2:data.rindex(b")") + 3].decode()
    except OSError:
        return "?"


def status_field(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1]
    return None


def ctx_switches(pid):
    """{tid: (comm, voluntary + nonvoluntary)} over every thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            v = int(status_field(f"{pid}/task/{tid}", "voluntary_ctxt_switches"))
            nv = int(status_field(f"{pid}/task/{tid}", "nonvoluntary_ctxt_switches"))
            out[tid] = (comm, v + nv)
        except (OSError, TypeError):
            pass
    return out


def wakeups(pid, seconds):
    a = ctx_switches(pid)
    time.sleep(seconds)
    b = ctx_switches(pid)
    per_thread = {}
    total = 0
    for tid, (comm, n) in b.items():
        d = n - a.get(tid, (comm, 0))[1]
        total += d
        if d:
            per_thread[f"{tid}:{comm}"] = d
    return {
        "seconds": seconds, "contextSwitches": total, "perSecond": total / seconds, "byThread": per_thread,
        "threadsBefore": len(a), "threadsAfter": len(b),
    }


def footprint(pid):
    return {
        "vmRSSKiB": int(status_field(pid, "VmRSS")), "vmHWMKiB": int(status_field(pid, "VmHWM")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Scenario 1: revert lag with N concurrent leases


class Sampler(threading.Thread):
    """Watches a subset of paused children through /proc/PID/stat: each is polled back to back from 3 ms before its
    deadline until /proc shows it running, so the host (not the daemon) says when it resumed."""

    def __init__(self, items, give_up_at, interval):
        super().__init__(daemon=True)
        self.interval = interval
        self.items = sorted(items, key=lambda it: it["expiresAtUs"])  # dicts: pid, expiresAtUs
        self.give_up_at = give_up_at
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as e:
            self.error = repr(e)

    def _run(self):
        fds = {it["pid"]: proc_state_fd(it["pid"]) for it in self.items}
        pending = list(self.items)
        try:
            while pending and time.time() < self.give_up_at:
                now = now_us()
                due = [it for it in pending if it["expiresAtUs"] - 3000 <= now]
                if not due:
                    wait = (pending[0]["expiresAtUs"] - 3000 - now) / 1e6
                    time.sleep(min(max(wait, 0), 0.05))
                    continue
                if self.interval:
                    time.sleep(self.interval)  # leave the CPU to the daemon between rounds (2-core machines)
                for it in due:
                    t0 = now_us()
                    st = state_of(fds[it["pid"]])
                    t1 = now_us()
                    it["reads"] = it.get("reads", 0) + 1
                    if st == b"T":
                        it["lastStoppedUs"] = t0
                    else:
                        it["firstRunningUs"] = t1
                        it["stateSeen"] = st.decode()
                        pending.remove(it)
        finally:
            for fd in fds.values():
                os.close(fd)


def calibrate_apply(client, children):
    """Mean seconds per pause POST (then reverted) on a few spare children: sizes the lead time before deadlines."""
    t = []
    for p in children:
        t0 = time.perf_counter()
        doc = check(*client.request("POST", "/v1/faults", pause_body(p.pid, "1h")), 201, "calibration POST")
        t.append(time.perf_counter() - t0)
        check(*client.request("DELETE", f"/v1/faults/{doc['id']}"), 200, "calibration DELETE")
    return sum(t) / len(t)


def scenario_lag(args, variant):
    n = args.leases
    tag = f"lag-{variant}"
    log(f"{tag}: spawning {n + 20} children")
    kids = Children.spawn(n + 20)
    spare, kids = kids[:20], kids[20:]
    d = Daemon(tag, args)
    try:
        c = Client(d.socket)
        per_post = calibrate_apply(c, spare)
        lead = max(args.min_lead, 1.5 * n * per_post + 1.0)
        t_base = time.time() + lead
        if variant == "spread":
            grid = [t_base + args.spread * (i + random.random()) / n for i in range(n)]
            random.shuffle(grid)  # posting order is not expiry order
        else:
            grid = [t_base] * n
        log(f"{tag}: posting {n} pause leases (about {per_post * 1000:.2f} ms each; first deadline in {lead:.1f} s)")
        leases = []
        post_start = time.time()
        for p, deadline in zip(kids, grid):
            ttl_us = int((deadline - time.time()) * 1e6)
            if ttl_us < 150_000:
                raise RuntimeError(f"posting is slower than planned: ttl for pid {p.pid} would be {ttl_us} us")
            doc = check(*c.request("POST", "/v1/faults", pause_body(p.pid, f"{ttl_us}us")), 201, "POST pause")
            leases.append({"pid": p.pid, "id": doc["id"], "expiresAtUs": us_of(doc["expiresAt"])})
        post_secs = time.time() - post_start
        first = min(l["expiresAtUs"] for l in leases)
        last = max(l["expiresAtUs"] for l in leases)
        status = check(*c.request("GET", "/v1/status"), 200, "GET /v1/status")
        all_active = status.get("activeFaults") == n and now_us() < first
        stopped = sum(1 for l in leases if state_of_pid(l["pid"]) == "T")
        log(f"{tag}: {n} posted in {post_secs:.1f} s; active={status.get('activeFaults')}, /proc T={stopped}, "
            f"all active at once: {all_active}")
        c.close()

        sample = random.sample(leases, min(args.sample, n))
        sampler = Sampler([dict(pid=l["pid"], expiresAtUs=l["expiresAtUs"]) for l in sample],
                          give_up_at=last / 1e6 + 10, interval=args.poll_interval / 1000)
        sampler.start()
        time.sleep(max(0, last / 1e6 - time.time()) + 1.0)
        sampler.join(timeout=15)

        c = Client(d.socket)
        lags = []
        states = {}
        deadline = time.monotonic() + 20
        for l in leases:
            while True:
                doc = check(*c.request("GET", f"/v1/faults/{l['id']}"), 200, "GET fault")
                if doc["state"] in ("reverted", "failed") or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            states[doc["state"]] = states.get(doc["state"], 0) + 1
            if doc.get("revertedAt"):
                l["revertedAtUs"] = us_of(doc["revertedAt"])
                lags.append((l["revertedAtUs"] - l["expiresAtUs"]) / 1000)
        c.close()
        still_stopped = sum(1 for l in leases if state_of_pid(l["pid"]) == "T")
        observed, resolution, early = [], [], 0
        by_pid = {l["pid"]: l for l in leases}
        for it in sampler.items:
            if "firstRunningUs" in it:
                lag = (it["firstRunningUs"] - it["expiresAtUs"]) / 1000
                observed.append(lag)
                if "lastStoppedUs" in it:
                    resolution.append((it["firstRunningUs"] - it["lastStoppedUs"]) / 1000)
                else:
                    early += 1  # never seen stopped from 3 ms before its deadline on
        result = {
            "variant": variant, "leases": n, "ttlSpreadSeconds": args.spread if variant == "spread" else 0,
            "leadSeconds": lead, "postSeconds": post_secs, "allActiveAtOnce": all_active,
            "activeBeforeFirstDeadline": status.get("activeFaults"), "stoppedPerProcBeforeFirstDeadline": stopped,
            "deadlineWindowMs": (last - first) / 1000, "finalStates": states, "stillStoppedAfter": still_stopped,
            "lagMs": dist(lags), "daemonLogLagMs": dist(d.log_lags()),
            "lagMsSampledOnly": dist([(by_pid[it["pid"]]["revertedAtUs"] - it["expiresAtUs"]) / 1000
                                      for it in sampler.items if "revertedAtUs" in by_pid[it["pid"]]]),
            "lagMsAll": lags,
            "kernelObserved": {
                "sampled": len(sampler.items), "resumed": len(observed), "neverSeenStopped": early,
                "samplerError": sampler.error, "lagMs": dist(observed), "pollResolutionMs": dist(resolution),
                "items": [dict(it, revertedAtUs=by_pid.get(it["pid"], {}).get("revertedAtUs")) for it in sampler.items],
            },
        }
        log(f"{tag}: lag p50={result['lagMs'].get('p50')} p99={result['lagMs'].get('p99')} "
            f"max={result['lagMs'].get('max')} ms; /proc-observed p99={result['kernelObserved']['lagMs'].get('p99')} ms")
        return result
    finally:
        d.stop()
        Children.cleanup(kids + spare)


# ---------------------------------------------------------------------------------------------------------------------
# Scenario 2: apply latency


def scenario_apply(args):
    n = args.applies
    warm = 50
    log(f"apply: spawning {n + warm} children")
    kids = Children.spawn(n + warm)
    d = Daemon("apply", args)
    try:
        c = Client(d.socket)
        calibrate_apply(c, kids[n:])  # warm-up, not counted
        out = {"requests": n}
        for mode in ("keepAlive", "newConnection"):
            post, delete = [], []
            for p in kids[:n]:
                body = pause_body(p.pid, "1h")
                if mode == "keepAlive":
                    t0 = time.perf_counter_ns()
                    status, doc = c.request("POST", "/v1/faults", body)
                    t1 = time.perf_counter_ns()
                else:
                    t0 = time.perf_counter_ns()
                    status, doc = one_shot(d.socket, "POST", "/v1/faults", body)
                    t1 = time.perf_counter_ns()
                check(status, doc, 201, f"POST pause ({mode})")
                post.append((t1 - t0) / 1e6)
                t0 = time.perf_counter_ns()
                check(*c.request("DELETE", f"/v1/faults/{doc['id']}"), 200, "DELETE")
                delete.append((time.perf_counter_ns() - t0) / 1e6)
            out[mode] = {"postMs": dist(post), "deleteKeepAliveMs": dist(delete), "postMsAll": post}
            log(f"apply {mode}: POST p50={pct(post, 50):.3f} p99={pct(post, 99):.3f} max={max(post):.3f} ms")
        c.close()

        ctl = os.path.join(args.bin_dir, "chaos-agentctl")
        walls = []
        c = Client(d.socket)
        for p in kids[:args.ctl_runs]:
            t0 = time.perf_counter_ns()
            r = subprocess.run([ctl, "--socket", d.socket, "--json", "inject", "pause", "--pid", str(p.pid), "--ttl", "1h"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            walls.append((time.perf_counter_ns() - t0) / 1e6)
            if r.returncode != 0:
                raise RuntimeError(f"chaos-agentctl inject exited {r.returncode}: {r.stderr.decode(errors='replace')}")
            fid = json.loads(r.stdout)["id"]
            check(*c.request("DELETE", f"/v1/faults/{fid}"), 200, "DELETE")
        c.close()
        out["ctlInjectWallMs"] = dist(walls)
        log(f"apply: chaos-agentctl inject p50={pct(walls, 50):.1f} p99={pct(walls, 99):.1f} ms")
        return out
    finally:
        d.stop()
        Children.cleanup(kids)


# ---------------------------------------------------------------------------------------------------------------------
# Scenario 3: footprint and idle wake-ups


def scenario_resources(args):
    n = args.leases
    d = Daemon("resources", args)
    kids = []
    try:
        time.sleep(1.0)  # let start-up settle
        out = {"idle": footprint(d.pid)}
        log(f"resources: idle for {args.idle_seconds} s with no leases")
        out["idle"]["wakeups"] = wakeups(d.pid, args.idle_seconds)
        kids = Children.spawn(n)
        c = Client(d.socket)
        for p in kids:
            check(*c.request("POST", "/v1/faults", pause_body(p.pid, "1h")), 201, "POST pause")
        c.close()
        time.sleep(1.0)
        out["leases"] = n
        out["withLeases"] = footprint(d.pid)
        log(f"resources: idle for {args.idle_seconds} s with {n} leases (TTL 1h)")
        out["withLeases"]["wakeups"] = wakeups(d.pid, args.idle_seconds)
        out["withLeases"]["stoppedPerProc"] = sum(1 for p in kids if state_of_pid(p.pid) == "T")
        t0 = time.monotonic()
        out["shutdownExit"] = d.stop()
        out["shutdownSeconds"] = time.monotonic() - t0
        out["stillStoppedAfterShutdown"] = sum(1 for p in kids if state_of_pid(p.pid) == "T")
        log(f"resources: RSS idle {out['idle']['vmRSSKiB']} KiB, with leases {out['withLeases']['vmRSSKiB']} KiB; "
            f"wake-ups {out['idle']['wakeups']['perSecond']:.2f}/s and {out['withLeases']['wakeups']['perSecond']:.2f}/s")
        return out
    finally:
        d.stop()
        Children.cleanup(kids)


# ---------------------------------------------------------------------------------------------------------------------


STATE_ROOT = ["/tmp"]


def cpu_pressure():
    """/proc/pressure/cpu 'some' line: share of time something waited for a CPU (noise from other work)."""
    try:
        with open("/proc/pressure/cpu") as f:
            return f.readline().strip()
    except OSError:
        return None


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = status_field_file("/proc/meminfo", "MemTotal")

    def fs(path):
        r = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", path], stdout=subprocess.PIPE, text=True)
        return r.stdout.strip() or "?"

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    return {
        "nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu, "memTotalKiB": int(mem) if mem else None,
        "python": platform.python_version(), "commit": commit, "pidMax": int(open("/proc/sys/kernel/pid_max").read()),
        "ulimitU": resource.getrlimit(resource.RLIMIT_NPROC)[0], "loadAvgAtStart": os.getloadavg(),
        "stateRootFs": fs(os.path.abspath(STATE_ROOT[0])), "cpuPressureAtStart": cpu_pressure(),
    }


def status_field_file(path, field):
    with open(path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1]
    return None


def fmt(v, unit="ms", digits=3):
    return "-" if v is None else f"{v:.{digits}f} {unit}".strip()


def table(res):
    rows = []

    def goal_row(metric, value, goal, ok, unit="ms", digits=3):
        rows.append((metric, fmt(value, unit, digits), goal, "-" if value is None else ("yes" if ok else "NO")))

    def info(metric, value):
        rows.append((metric, value, "-", "-"))

    for variant, label in (("spread", f"{res['args']['leases']} leases, deadlines spread"),
                           ("burst", f"{res['args']['leases']} leases, one deadline")):
        r = res.get(f"lag_{variant}")
        if r is None:
            continue
        if "error" in r:
            info(f"revert lag, {label}", f"ERROR: {r['error']}")
            continue
        lag = r["lagMs"]
        info(f"revert lag, {label}: all active at once", "yes" if r["allActiveAtOnce"] else "NO")
        info(f"revert lag, {label}: p50", fmt(lag.get("p50")))
        goal_row(f"revert lag, {label}: p99", lag.get("p99"), f"<= {LAG_GOAL_MS:g} ms",
                 lag.get("p99") is not None and lag["p99"] <= LAG_GOAL_MS)
        info(f"revert lag, {label}: max", fmt(lag.get("max")))
        k = r["kernelObserved"]
        kl = k["lagMs"]
        goal_row(f"  /proc-observed resume lag ({k['resumed']}/{k['sampled']} sampled): p99", kl.get("p99"),
                 f"<= {LAG_GOAL_MS:g} ms", kl.get("p99") is not None and kl["p99"] <= LAG_GOAL_MS)
        info(f"  /proc-observed: p50 / max", f"{fmt(kl.get('p50'))} / {fmt(kl.get('max'))}")
        info(f"  not resumed after the run (/proc T)", str(r["stillStoppedAfter"]))
    a = res.get("apply")
    if a is not None and "error" in a:
        info("apply latency", f"ERROR: {a['error']}")
    elif a is not None:
        for mode, label in (("keepAlive", "keep-alive connection"), ("newConnection", "new connection per request")):
            m = a[mode]["postMs"]
            info(f"POST pause, {label}: p50", fmt(m["p50"]))
            goal_row(f"POST pause, {label}: p99 (n={m['n']})", m["p99"], f"<= {APPLY_GOAL_MS:g} ms",
                     m["p99"] <= APPLY_GOAL_MS)
            info(f"POST pause, {label}: max", fmt(m["max"]))
        dm = a["keepAlive"]["deleteKeepAliveMs"]
        info("DELETE (revert) pause, keep-alive: p50 / p99", f"{fmt(dm['p50'])} / {fmt(dm['p99'])}")
        w = a["ctlInjectWallMs"]
        info(f"chaos-agentctl inject pause wall (n={w['n']}): p50 / p99", f"{fmt(w['p50'], digits=1)} / {fmt(w['p99'], digits=1)}")
    r = res.get("resources")
    if r is not None and "error" in r:
        info("footprint", f"ERROR: {r['error']}")
    elif r is not None:
        info("daemon VmRSS idle, no leases", f"{r['idle']['vmRSSKiB'] / 1024:.1f} MiB")
        info(f"daemon VmRSS with {r['leases']} active leases", f"{r['withLeases']['vmRSSKiB'] / 1024:.1f} MiB")
        info("daemon threads idle / with leases", f"{r['idle']['threads']} / {r['withLeases']['threads']}")
        for key, label in (("idle", "no leases"), ("withLeases", f"{r['leases']} leases (TTL 1h)")):
            w = r[key]["wakeups"]
            who = ", ".join(f"{n} on {t.split(':', 1)[1]}" for t, n in sorted(w["byThread"].items(), key=lambda x: -x[1])[:2])
            rows.append((f"idle wake-ups/s, {label} ({w['seconds']:g} s)",
                         f"{w['perSecond']:.2f} /s" + (f" ({who})" if who else ""), f"~0 (< {WAKEUP_GOAL:g}/s)",
                         "yes" if w["perSecond"] < WAKEUP_GOAL else "NO"))
        info(f"SIGTERM with {r['leases']} leases: exit status, seconds, still stopped after",
             f"{r['shutdownExit']}, {r['shutdownSeconds']:.2f} s, {r['stillStoppedAfterShutdown']}")
    width = [max(len(row[i]) for row in rows + [("metric", "value", "goal", "met?")]) for i in range(4)]
    lines = ["  ".join(h.ljust(width[i]) for i, h in enumerate(("metric", "value", "goal", "met?")))]
    lines.append("  ".join("-" * w for w in width))
    for row in rows:
        lines.append("  ".join(str(v).ljust(width[i]) for i, v in enumerate(row)))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=".build/release", help="where chaos-agentd and chaos-agentctl are")
    ap.add_argument("--out-dir", default=".bench-out", help="where the JSON results go (kept out of git)")
    ap.add_argument("--state-root", default="/tmp", help="parent of each daemon's temporary socket and state dir")
    ap.add_argument("--leases", type=int, default=1000, help="concurrent leases in the lag and footprint scenarios")
    ap.add_argument("--spread", type=float, default=10.0, help="seconds over which the spread deadlines fall")
    ap.add_argument("--min-lead", type=float, default=5.0, help="least seconds from posting to the first deadline")
    ap.add_argument("--sample", type=int, default=50, help="children watched through /proc during expiry")
    ap.add_argument("--poll-interval", type=float, default=0.2,
                    help="ms the /proc sampler sleeps between rounds (0: spin; perturbs the daemon on few cores)")
    ap.add_argument("--applies", type=int, default=2000, help="sequential POSTs per connection mode")
    ap.add_argument("--ctl-runs", type=int, default=100, help="chaos-agentctl inject runs")
    ap.add_argument("--idle-seconds", type=float, default=30.0, help="length of each idle wake-up window")
    ap.add_argument("--only", action="append", choices=["lag-spread", "lag-burst", "apply", "resources"],
                    help="run only these scenarios (repeatable)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for checking the harness (not for numbers)")
    ap.add_argument("--keep-logs", action="store_true", help="copy each daemon's log into --out-dir")
    args = ap.parse_args()
    if args.quick:
        args.leases, args.applies, args.ctl_runs, args.idle_seconds, args.spread = 100, 200, 10, 3.0, 2.0
        args.min_lead = 1.0
    args.bin_dir = os.path.abspath(args.bin_dir)
    args.out_dir = os.path.abspath(args.out_dir)
    args.stamp = "spine-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    os.makedirs(args.out_dir, exist_ok=True)
    for b in ("chaos-agentd", "chaos-agentctl"):
        if not os.access(os.path.join(args.bin_dir, b), os.X_OK):
            sys.exit(f"bench: {args.bin_dir}/{b} is missing; run `swift build -c release` (scripts/bench does)")
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the pause kind needs CAP_KILL to signal the benchmark's children)")

    need = max(args.leases + 20, args.applies + 50) + 200
    nproc_limit = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    if nproc_limit != resource.RLIM_INFINITY and nproc_limit < need or pid_max < need * 2:
        sys.exit(f"bench: needs about {need} processes; ulimit -u is {nproc_limit}, pid_max {pid_max}")

    STATE_ROOT[0] = args.state_root
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if os.getloadavg()[0] > 1.0:
        log(f"warning: load average {os.getloadavg()[0]:.2f}; other work on this machine will show in the numbers")
    res = {"args": {k: v for k, v in vars(args).items()}, "machine": machine(),
           "startedAt": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    wanted = args.only or ["lag-spread", "lag-burst", "apply", "resources"]
    t_start = time.monotonic()
    try:
        for name in wanted:
            key = name.replace("-", "_")
            try:
                if name == "lag-spread":
                    res[key] = scenario_lag(args, "spread")
                elif name == "lag-burst":
                    res[key] = scenario_lag(args, "burst")
                elif name == "apply":
                    res[key] = scenario_apply(args)
                else:
                    res[key] = scenario_resources(args)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                log(f"{name} failed: {e!r}")
                res[key] = {"error": repr(e)}
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        res["interrupted"] = str(e)
    finally:
        cleanup_all()
    res["totalSeconds"] = time.monotonic() - t_start
    res["loadAvgAtEnd"] = os.getloadavg()
    res["cpuPressureAtEnd"] = cpu_pressure()
    path = os.path.join(args.out_dir, f"{args.stamp}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
    m = res["machine"]
    print(f"chaos-agent spine benchmarks ({m['commit']}): {m['nproc']} CPU {m['cpu']}, Linux {m['kernel']}, "
          f"state under {args.state_root} ({m['stateRootFs']}), {res['totalSeconds']:.0f} s, "
          f"load average {m['loadAvgAtStart'][0]:.2f} at start, {res['loadAvgAtEnd'][0]:.2f} at end")
    print(table(res))
    print(f"results: {path}")
    failed = any(isinstance(v, dict) and "error" in v for v in res.values()) or "interrupted" in res
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

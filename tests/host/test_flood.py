"""Connection floods cannot starve the revert path: every listener caps its connections (per listener, per peer, TLS
handshakes in count and time), the agent runs with a raised RLIMIT_NOFILE and keeps a reserve of descriptors free
of connections, so leases expire on time and /healthz answers while thousands of idle connections hammer it."""
from __future__ import annotations

import os
import re
import resource
import select
import signal
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chaoslib import http_request, proc_state, wait_until
from remotelib import free_port, https_once, make_certs, plain_get, remote_config

FLOOD = 5000          # idle connections on each of the Unix socket and the TLS port
FLOOD_UIDS = 20       # the socket flood comes from this many uids (none of them root), 250 connections each
FLOOD_IPS = 20        # the TCP flood comes from this many loopback addresses, 250 connections each
LEASES = 20
TTL = 2.0


def raise_own_fd_limit(n: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(n, soft), max(n, hard)))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_limit(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no 'Max open files' in /proc/PID/limits")


def metric(text: str, name: str, **labels) -> float:
    """Sums the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)', line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


class SocketFlood:
    """Children with other uids, each holding `per_child` idle connections to a Unix socket until killed."""

    def __init__(self, path: str, uids: list[int], per_child: int):
        self.children: list[tuple[int, int]] = []  # pid, report pipe (read end)
        for uid in uids:
            rep_r, rep_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: drop to `uid`, connect, report, hold until killed
                try:
                    os.close(rep_r)
                    os.setgroups([])
                    os.setgid(uid)
                    os.setuid(uid)
                    held, failed = [], 0
                    for _ in range(per_child):
                        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        s.settimeout(5)
                        try:
                            s.connect(path)
                            held.append(s)
                        except OSError:
                            failed += 1
                            s.close()
                    os.write(rep_w, f"{len(held)} {failed}\n".encode())
                    time.sleep(600)
                finally:
                    os._exit(0)
            os.close(rep_w)
            self.children.append((pid, rep_r))

    def wait_connected(self, timeout: float) -> tuple[int, int]:
        held = failed = 0
        deadline = time.monotonic() + timeout
        for _, rep in self.children:
            ready, _, _ = select.select([rep], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "a socket-flood child did not report in time"
            h, f = os.read(rep, 64).split()
            held, failed = held + int(h), failed + int(f)
        return held, failed

    def stop(self):
        for pid, rep in self.children:
            os.close(rep)
            os.kill(pid, signal.SIGKILL)
        for pid, _ in self.children:
            os.waitpid(pid, 0)
        self.children = []


def tcp_flood(port: int, n: int, addresses: int) -> tuple[list[socket.socket], int]:
    """`n` plain TCP connections to 127.0.0.1:port that never send a byte, from `addresses` loopback addresses."""
    held, failed = [], 0
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.bind((f"127.0.{1 + i % addresses}.{1 + (i // addresses) % 250}", 0))
            s.connect(("127.0.0.1", port))
            held.append(s)
        except OSError:
            failed += 1
            s.close()
    return held, failed


def revert_lags_ms(log_text: str) -> list[float]:
    """lagMs of every "fault reverted" line whose reason is expiry."""
    out = []
    for line in log_text.splitlines():
        if "fault reverted" in line and "reason=expired" in line:
            m = re.search(r"lagMs=([0-9.]+)", line)
            if m:
                out.append(float(m.group(1)))
    return out


def p99(values: list[float]) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(0.99 * (len(v) - 1))))]


def test_flood_on_socket_and_tls_port_leaves_reverts_on_time(make_agent, victims, workdir):
    raise_own_fd_limit(2 * FLOOD + 4096)
    certs = make_certs(workdir / "certs")
    port, metrics_port = free_port(), free_port()
    # The agent gets the 1,024 descriptors that used to run out; the caps are fitted under it.
    config = remote_config(certs, port, metrics_port) + (
        '[agent]\nsocket-mode = "0666"\n'
        '[connections]\nopen-files = 1024\nhandshake-timeout = "3s"\nidle-timeout = "30s"\n')
    agent = make_agent(config)
    assert fd_limit(agent.pid)[0] == 1024
    log = agent.log(tail=400)
    assert "open-file limit set" in log and "connection caps lowered" in log, log
    targets = [victims.spawn() for _ in range(LEASES)]

    flood = SocketFlood(agent.socket, list(range(61001, 61001 + FLOOD_UIDS)), FLOOD // FLOOD_UIDS)
    tcp: list[socket.socket] = []
    max_fds = 0
    try:
        tcp, tcp_failed = tcp_flood(port, FLOOD, FLOOD_IPS)
        held, failed = flood.wait_connected(timeout=60)
        max_fds = max(max_fds, open_fds(agent.pid))
        print(f"flood: socket {held} connected ({failed} failed), tcp {len(tcp)} connected ({tcp_failed} failed)")

        # The flood is real: both listeners are refusing connections over their caps right now.
        text = plain_get(metrics_port, "/metrics", timeout=5).body.decode()
        assert metric(text, "chaos_agent_connections_refused_total", listener="socket") >= 1000, text
        assert metric(text, "chaos_agent_connections_refused_total", listener="remote") >= 1000, text

        # A legitimate client (root on the socket) injects short leases during the flood, several at once.
        def inject(child):
            t0 = time.monotonic()
            f = agent.inject("pause", "--pid", str(child.pid), "--ttl", f"{TTL:g}s")
            return child.pid, f, time.monotonic() - t0
        with ThreadPoolExecutor(max_workers=10) as pool:
            leases = list(pool.map(inject, targets))
        slowest = max(took for _, _, took in leases)
        assert slowest < 5, f"an inject took {slowest:.2f}s under the flood"
        assert all(f["state"] == "active" for _, f, _ in leases), leases
        expires = {pid: _epoch(f["expiresAt"]) for pid, f, _ in leases}

        # /healthz answers within 1 s on the socket and the metrics listener while the leases run.
        for _ in range(5):
            t0 = time.monotonic()
            assert http_request(agent.socket, "GET", "/healthz", timeout=1).status == 200
            assert plain_get(metrics_port, "/healthz", timeout=1).status == 200
            assert time.monotonic() - t0 < 1.0
            max_fds = max(max_fds, open_fds(agent.pid))

        # Every paused process resumes within 1 s of its expiresAt.
        resumed: dict[int, float] = {}
        deadline = time.monotonic() + max(expires.values()) - time.time() + 5
        while len(resumed) < len(expires) and time.monotonic() < deadline:
            for pid in expires:
                if pid not in resumed and proc_state(pid) != "T":
                    resumed[pid] = time.time()
            max_fds = max(max_fds, open_fds(agent.pid))
            time.sleep(0.005)
        late = {pid: round(resumed.get(pid, float("inf")) - expires[pid], 3) for pid in expires}
        assert all(v < 1.0 for v in late.values()), f"resume after expiresAt (s): {late}"

        # A TLS client gets through once the flood's handshakes have timed out.
        def tls_ok():
            try:
                return https_once(certs, port, "operator", "GET", "/healthz", timeout=2).status == 200
            except OSError:
                return False
        wait_until(tls_ok, 10, interval=0.2, what="a mutual-TLS request during the flood")
        max_fds = max(max_fds, open_fds(agent.pid))
        agent_log = agent.log(tail=2000)
    finally:
        for s in tcp:
            s.close()
        flood.stop()

    # Connections never took the descriptors the revert path needs.
    assert max_fds <= 1024 - 200, f"the agent held {max_fds} fds during the flood"
    lags = revert_lags_ms(agent_log)
    assert len(lags) == LEASES, agent_log
    print(f"revert lag under flood (ms): p50 {statistics.median(lags):.3f} p99 {p99(lags):.3f} max {max(lags):.3f}; "
          f"max agent fds {max_fds}; resume after expiresAt (s) max {max(late.values()):.3f}")
    assert p99(lags) < 10.0, f"revert lag p99 {p99(lags):.3f} ms: {sorted(lags)}"
    assert "EMFILE" not in agent_log and "Too many open files" not in agent_log, agent_log


def _epoch(text: str) -> float:
    from chaoslib import parse_time
    return parse_time(text)


def test_fd_limit_is_raised_at_start_up(make_agent):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    agent = make_agent()
    have_soft, have_hard = fd_limit(agent.pid)
    assert have_soft == have_hard and have_soft >= max(hard, 65536), (have_soft, have_hard)
    assert "open-file limit set" in agent.log(tail=200)


def test_per_peer_cap_answers_503_and_frees_the_slot(make_agent):
    agent = make_agent('[policy]\nmax-ttl = "2m"\n[connections]\nper-peer = 3\n')
    held = []
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(agent.socket)
        held.append(s)
    try:
        wait_until(lambda: _refused(agent.socket), 5, what="a 503 from the per-peer cap")
        held.pop().close()
        # The slot comes back as soon as the connection closes.
        wait_until(lambda: http_request(agent.socket, "GET", "/healthz", timeout=2).status == 200, 5,
                   what="healthz after a slot was freed")
    finally:
        for s in held:
            s.close()
    assert "connection refused: over the connection cap" in agent.log(tail=200)


def _refused(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(path)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return (head.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in head
            and body.count(b"\n") == 1 and b'"code":"too-many-connections"' in body)


def test_idle_connections_and_silent_handshakes_are_closed(make_agent, workdir):
    certs = make_certs(workdir / "certs")
    port = free_port()
    agent = make_agent(remote_config(certs, port) + '[connections]\nidle-timeout = "1s"\nhandshake-timeout = "1s"\n')
    t0 = time.monotonic()
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.connect(agent.socket)
    tcp = socket.create_connection(("127.0.0.1", port))
    try:
        for s in (unix, tcp):
            s.settimeout(5)
            assert s.recv(1) == b""  # closed by the agent, without a byte
            assert 0.5 < time.monotonic() - t0 < 3
    finally:
        unix.close()
        tcp.close()
    assert agent.healthz() == 200

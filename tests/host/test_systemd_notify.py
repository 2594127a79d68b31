"""The daemon speaks the sd_notify protocol as systemd would see it: READY=1 only once the journal is reconciled and
the socket answers, WATCHDOG=1 at half of WATCHDOG_USEC while the lease engine answers, STOPPING=1 at SIGTERM."""
import os
import socket
import subprocess
import time

from chaoslib import http_request, is_running, is_stopped, wait_until


def start_with_notify(agent, extra_env):
    sock_path = str(agent.dir / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(sock_path)
    listener.settimeout(0.2)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, **extra_env)
    log = open(agent.log_path, "ab")
    agent.proc = subprocess.Popen(agent.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                  start_new_session=True)
    log.close()
    return listener


def receive(listener, until, timeout):
    """Datagrams (as lists of lines) until one contains `until`."""
    got = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            got.append(listener.recv(4096).decode().split("\n"))
        except socket.timeout:
            continue
        if until in got[-1]:
            return got
    raise AssertionError(f"no {until} within {timeout}s; got {got}")


def test_ready_after_reconciliation_then_watchdog_then_stopping(make_agent, victims):
    agent = make_agent(start=False)
    child = victims.spawn()
    # A previous run left a paused child behind in the journal.
    agent.start()
    agent.inject("pause", "--pid", str(child.pid), "--ttl", "90s")
    agent.kill9()
    assert is_stopped(child.pid)

    listener = start_with_notify(agent, {"WATCHDOG_USEC": "400000"})
    try:
        msgs = receive(listener, "READY=1", timeout=20)
        # READY comes only after the leftover fault was reverted and the socket answers.
        assert is_running(child.pid), "READY=1 was sent before reconciliation resumed the child"
        assert http_request(agent.socket, "GET", "/healthz").status == 200
        ready = next(m for m in msgs if "READY=1" in m)
        assert any(line.startswith("STATUS=") for line in ready), ready
        # Watchdog pings at half the interval (200 ms): several within 1.5 s.
        start = time.monotonic()
        pings = 0
        while time.monotonic() - start < 1.5:
            try:
                if "WATCHDOG=1" in listener.recv(4096).decode().split("\n"):
                    pings += 1
            except socket.timeout:
                pass
        assert 4 <= pings <= 12, f"{pings} watchdog pings in 1.5 s at a 400 ms watchdog"
        agent.proc.terminate()
        receive(listener, "STOPPING=1", timeout=10)
        assert agent.proc.wait(timeout=10) == 0
    finally:
        listener.close()


def test_no_notify_socket_means_no_pings(agent):
    # Without NOTIFY_SOCKET (and so without WATCHDOG_USEC) the agent itself must not wake up: no poll loop, no timer
    # per lease. What remains is libdispatch's once-a-second worker-pool monitor (its manager thread), which any
    # process using Swift concurrency's default executor has: allow that floor (1/s, plus one of slack), no more.
    def switches():
        total = 0
        for tid in os.listdir(f"/proc/{agent.pid}/task"):
            with open(f"/proc/{agent.pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        return total
    time.sleep(0.5)
    before = switches()
    time.sleep(4)
    woke = switches() - before
    assert woke <= 6, f"an idle agent woke up {woke} times in 4 s (libdispatch's floor is 4)"

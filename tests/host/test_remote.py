"""Remote control over real mutual TLS on loopback: who is let in, what each role may do, heartbeat leases,
idempotent retries, event resume, metrics, and clients that misbehave."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from chaoslib import AGENTCTL, is_running, is_stopped, run_ctl, short_tempdir, wait_until
from remotelib import (TLSClient, free_port, https_once, make_certs, metric_samples, plain_get, remote_config,
                       sample, tls_context)


@pytest.fixture(scope="session")
def certs():
    d = short_tempdir()
    yield make_certs(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def remote(make_agent, certs):
    port, mport = free_port(), free_port()
    agent = make_agent(config=remote_config(certs, port, mport))
    agent.port, agent.metrics_port, agent.certs = port, mport, certs
    wait_until(lambda: "listening (mutual TLS)" in agent.log(200), 10, what="TLS listener")
    return agent


def ctl_remote(agent, who: str, *args: str, **kw):
    c = agent.certs
    return run_ctl(None, "--host", f"https://localhost:{agent.port}", "--cert", str(c / f"{who}.pem"),
                   "--key", str(c / f"{who}.key"), "--ca", str(c / "ca.pem"), *args, **kw)


def pause_body(pid: int, ttl: str = "60s", **extra) -> dict:
    return {"kind": "pause", "ttl": ttl, "spec": {"pid": pid}, **extra}


def api_lines(agent) -> list[str]:
    return [l for l in agent.log(2000).splitlines() if "event=api" in l]


# ------------------------------------------------------------------------------------------------ who is let in

def test_valid_client_is_served_and_the_cli_works_remotely(remote, victims):
    child = victims.spawn()
    r = https_once(remote.certs, remote.port, "operator", "GET", "/v1/faults")
    assert r.status == 200 and r.json == {"faults": []}
    s = ctl_remote(remote, "viewer", "--json", "status")
    assert s.rc == 0, str(s)
    assert s.json["version"]
    inj = ctl_remote(remote, "operator", "--json", "inject", "pause", "--pid", str(child.pid), "--ttl", "30s")
    assert inj.rc == 0, str(inj)
    fault = inj.json
    assert fault["owner"] == "tls:operator"
    assert is_stopped(child.pid)
    lst = ctl_remote(remote, "viewer", "--json", "list")
    assert [f["id"] for f in lst.json["faults"]] == [fault["id"]]
    assert ctl_remote(remote, "operator", "renew", fault["id"], "--ttl", "1m").rc == 0
    rv = ctl_remote(remote, "operator", "revert", fault["id"])
    assert rv.rc == 0, str(rv)
    assert is_running(child.pid)
    # Audit: identity, peer address, fault id and outcome for the mutating calls.
    audit = [l for l in api_lines(remote) if "method=DELETE" in l]
    assert audit and "caller=tls:operator" in audit[-1] and f"lease={fault['id']}" in audit[-1], audit
    assert "peer=tls:127.0.0.1:" in audit[-1] and "outcome=reverted" in audit[-1]


@pytest.mark.parametrize("who", [None, "expired", "rogue"])
def test_no_expired_or_foreign_certificate_is_refused_before_any_route(remote, victims, who):
    child = victims.spawn()
    before = len(api_lines(remote))
    body = json.dumps(pause_body(child.pid)).encode()
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, OSError)):
        r = https_once(remote.certs, remote.port, who, "POST", "/v1/faults", body)
        pytest.fail(f"{who}: answered {r.status} {r.body!r}")
    time.sleep(0.3)
    assert is_running(child.pid)
    assert remote.active_faults() == []
    assert len(api_lines(remote)) == before, "a request was routed"
    # The CLI says the agent cannot be reached (exit 5), not that something went wrong inside.
    if who is not None:
        r = ctl_remote(remote, who, "list")
        assert r.rc == 5, str(r)


def test_plain_http_on_the_tls_port_is_refused(remote, victims):
    child = victims.spawn()
    s = socket.create_connection(("127.0.0.1", remote.port), timeout=5)
    body = json.dumps(pause_body(child.pid)).encode()
    s.sendall(b"POST /v1/faults HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert not data.startswith(b"HTTP/"), data
    assert is_running(child.pid) and remote.active_faults() == []


def test_valid_certificate_without_a_role_gets_403_and_nothing_else(remote, victims):
    child = victims.spawn()
    for method, path, body in [("GET", "/v1/faults", None), ("POST", "/v1/faults", pause_body(child.pid)),
                               ("GET", "/metrics", None)]:
        r = https_once(remote.certs, remote.port, "stranger", method, path, body)
        assert r.status == 403, (method, path, r.status, r.body)
        assert "[remote.roles]" in r.json["error"]["message"]
    assert is_running(child.pid)


# ----------------------------------------------------------------------------------------------------- roles

def test_viewer_reads_operator_changes_admin_reverts_all(remote, victims):
    a, b = victims.spawn(), victims.spawn()
    viewer, operator, admin = (TLSClient(remote.certs, remote.port, w) for w in ("viewer", "operator", "admin"))
    try:
        assert viewer.request("GET", "/v1/faults").status == 200
        r = viewer.request("POST", "/v1/faults", pause_body(a.pid))
        assert r.status == 403 and "operator" in r.json["error"]["message"]
        assert is_running(a.pid)
        r = operator.request("POST", "/v1/faults", pause_body(a.pid))
        assert r.status == 201, r.body
        fid = r.json["id"]
        assert is_stopped(a.pid)
        assert viewer.request("DELETE", f"/v1/faults/{fid}").status == 403
        assert viewer.request("POST", f"/v1/faults/{fid}/renew", {"ttl": "1m"}).status == 403
        assert is_stopped(a.pid)
        # admin-only: revert everything, and policy overrides.
        r = operator.request("DELETE", "/v1/faults")
        assert r.status == 403 and "admin" in r.json["error"]["message"]
        over = {"kind": "network", "ttl": "30s", "spec": {"interface": "lo", "delay": "10ms",
                                                          "noDefaultExclusions": True}}
        r = operator.request("POST", "/v1/faults", over)
        assert r.status == 403 and "noDefaultExclusions" in r.json["error"]["message"]
        assert is_stopped(a.pid)
        assert operator.request("POST", "/v1/faults", pause_body(b.pid)).status == 201
        r = admin.request("DELETE", "/v1/faults")
        assert r.status == 200 and len(r.json["reverted"]) == 2
        assert is_running(a.pid) and is_running(b.pid)
    finally:
        for c in (viewer, operator, admin):
            c.close()


# ------------------------------------------------------------------------------------------------- heartbeats

def test_missed_heartbeat_reverts_within_one_interval(remote, victims):
    child = victims.spawn()
    op = TLSClient(remote.certs, remote.port, "operator")
    try:
        r = op.request("POST", "/v1/faults", pause_body(child.pid, heartbeat="1s"))
        assert r.status == 201, r.body
        fid = r.json["id"]
        assert r.json["heartbeat"] == "1s"
        # Beating every 0.5 s for 3 s keeps it: three times the interval.
        end = time.monotonic() + 3
        while time.monotonic() < end:
            b = op.request("POST", f"/v1/faults/{fid}/heartbeat")
            assert b.status == 200, b.body
            assert is_stopped(child.pid)
            time.sleep(0.5)
        last = op.request("POST", f"/v1/faults/{fid}/heartbeat")
        last_beat = time.monotonic()
        assert last.status == 200
        wait_until(lambda: is_running(child.pid), 5, interval=0.005, what="resume after the missed heartbeat")
        lag = time.monotonic() - last_beat
        print(f"heartbeat 1s: resumed {lag:.3f}s after the last beat")
        assert 0.9 <= lag <= 1.3, lag
        f = remote.fault(fid)
        assert f["state"] == "reverted" and f["revertReason"] == "heartbeat-missed"
        assert op.request("POST", f"/v1/faults/{fid}/heartbeat").status == 409
        assert any("event=heartbeat-missed" in l and fid in l for l in remote.log(500).splitlines())
    finally:
        op.close()


def test_killed_cli_with_wait_leaves_nothing_behind(remote, victims):
    """`inject --wait` beats for the CLI; SIGKILL the CLI and the fault goes within the heartbeat interval."""
    child = victims.spawn()
    c = remote.certs
    p = subprocess.Popen([str(AGENTCTL), "--host", f"https://localhost:{remote.port}", "--cert", str(c / "operator.pem"),
                          "--key", str(c / "operator.key"), "--ca", str(c / "ca.pem"), "inject", "pause", "--pid",
                          str(child.pid), "--ttl", "90s", "--heartbeat", "2s", "--wait"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: is_stopped(child.pid), 10, what="pause")
        time.sleep(4)  # two intervals: the CLI's beats keep it
        assert is_stopped(child.pid)
        p.kill()
        killed = time.monotonic()
        p.wait(timeout=5)
        wait_until(lambda: is_running(child.pid), 5, interval=0.01, what="resume after the CLI died")
        lag = time.monotonic() - killed
        print(f"--wait --heartbeat 2s: resumed {lag:.3f}s after SIGKILL of the CLI")
        assert lag <= 2.3, lag
        assert remote.faults()[0]["revertReason"] == "heartbeat-missed"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_wait_uses_a_heartbeat_by_default(remote, victims):
    child = victims.spawn()
    p = subprocess.Popen([str(AGENTCTL), "--socket", remote.socket, "inject", "pause", "--pid", str(child.pid),
                          "--ttl", "60s", "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True)
    try:
        wait_until(lambda: remote.active_faults(), 10, what="fault")
        assert remote.active_faults()[0]["heartbeat"] == "10s"
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=10)
    assert is_running(child.pid)


# ------------------------------------------------------------------------------------------------ idempotency

def test_idempotent_retry_returns_the_same_fault_and_injects_once(remote, victims, make_agent):
    child = victims.spawn()
    op = TLSClient(remote.certs, remote.port, "operator")
    try:
        body = pause_body(child.pid)
        key = {"Idempotency-Key": "run-42-step-1"}
        r1 = op.request("POST", "/v1/faults", body, key)
        r2 = op.request("POST", "/v1/faults", json.dumps(body, indent=2), key)  # same request, other spacing
        assert (r1.status, r2.status) == (201, 200)
        assert r1.json["id"] == r2.json["id"]
        assert len(remote.faults()) == 1
        applies = [l for l in remote.log(500).splitlines() if "fault applied" in l]
        assert len(applies) == 1
        r3 = op.request("POST", "/v1/faults", pause_body(child.pid, ttl="90s"), key)
        assert r3.status == 422 and r3.json["error"]["code"] == "idempotency-key-reused"
        assert len(remote.faults()) == 1
    finally:
        op.close()
    # Keys are journaled: after a crash and restart the retry still names the first fault, and injects nothing.
    fid = r1.json["id"]
    remote.kill9()
    remote.start()
    assert is_running(child.pid)  # recovery reverted it
    r4 = https_once(remote.certs, remote.port, "operator", "POST", "/v1/faults", body, key)
    assert r4.status == 200 and r4.json["id"] == fid and r4.json["state"] == "reverted", r4.body
    assert is_running(child.pid)


# ----------------------------------------------------------------------------------------------------- events

def read_sse(sock_file, want: int, timeout: float = 10) -> list[dict]:
    events, current = [], {}
    end = time.monotonic() + timeout
    while len(events) < want and time.monotonic() < end:
        line = sock_file.readline()
        if not line:
            break
        line = line.decode().rstrip("\r\n")
        if line == "":
            if "data" in current:
                events.append({"id": int(current["id"]), "type": current["event"], **json.loads(current["data"])})
            current = {}
        elif not line.startswith(":"):
            k, _, v = line.partition(": ")
            current[k] = v
    return events


def open_sse(agent, last_id: int | None):
    ctx = tls_context(agent.certs, "viewer")
    raw = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    hdr = f"GET /v1/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n"
    if last_id is not None:
        hdr += f"Last-Event-ID: {last_id}\r\n"
    s.sendall((hdr + "\r\n").encode())
    f = s.makefile("rb")
    status = f.readline()
    assert b" 200 " in status, status
    while f.readline() not in (b"\r\n", b""):
        pass
    return s, f


def test_event_stream_resumes_after_reconnect_without_losing_an_event(remote, victims):
    kids = [victims.spawn() for _ in range(3)]
    op = TLSClient(remote.certs, remote.port, "operator")
    try:
        s, f = open_sse(remote, None)
        fid0 = op.request("POST", "/v1/faults", pause_body(kids[0].pid)).json["id"]
        first = read_sse(f, 1)
        assert first[0]["type"] == "applied" and first[0]["fault"]["id"] == fid0
        s.close()
        # While disconnected: a revert, two applies, a revert.
        op.request("DELETE", f"/v1/faults/{fid0}")
        fid1 = op.request("POST", "/v1/faults", pause_body(kids[1].pid)).json["id"]
        fid2 = op.request("POST", "/v1/faults", pause_body(kids[2].pid)).json["id"]
        op.request("DELETE", f"/v1/faults/{fid1}")
        s, f = open_sse(remote, first[0]["id"])
        missed = read_sse(f, 4)
        s.close()
        assert [(e["type"], e["fault"]["id"]) for e in missed] == [
            ("reverted", fid0), ("applied", fid1), ("applied", fid2), ("reverted", fid1)]
        ids = [first[0]["id"]] + [e["id"] for e in missed]
        assert ids == list(range(ids[0], ids[0] + 5)), ids  # consecutive: nothing lost
        op.request("DELETE", f"/v1/faults/{fid2}")
    finally:
        op.close()


# ---------------------------------------------------------------------------------------------------- metrics

def test_metrics_parse_and_move_with_faults(remote, victims):
    child = victims.spawn()

    def scrape_plain():
        r = plain_get(remote.metrics_port, "/metrics")
        assert r.status == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        return metric_samples(r.body.decode())

    def scrape_tls():
        r = https_once(remote.certs, remote.port, "viewer", "GET", "/metrics")
        assert r.status == 200
        return metric_samples(r.body.decode())

    m0 = scrape_plain()
    assert sample(m0, "chaos_agent_active_faults", kind="pause") == 0
    assert ("chaos_agent_active_faults", frozenset({("kind", "kill")})) in m0
    applies0 = sample(m0, "chaos_agent_applies_total", kind="pause")
    reverts0 = sample(m0, "chaos_agent_reverts_total", kind="pause", reason="expired")
    op = TLSClient(remote.certs, remote.port, "operator")
    try:
        # 3 s: the TLS scrape below must land while the fault is still active, also on a loaded machine.
        r = op.request("POST", "/v1/faults", pause_body(child.pid, ttl="3s"))
        assert r.status == 201
        m1 = scrape_tls()
        assert sample(m1, "chaos_agent_active_faults", kind="pause") == 1
        assert sample(m1, "chaos_agent_applies_total", kind="pause") == applies0 + 1
        assert sample(m1, "chaos_agent_apply_duration_seconds_count", kind="pause") >= 1
        assert sample(m1, "chaos_agent_journal_fsync_duration_seconds_count") >= 1
        wait_until(lambda: is_running(child.pid), 10, what="expiry")
        m2 = wait_until(lambda: (m := scrape_plain()) and sample(m, "chaos_agent_active_faults", kind="pause") == 0
                        and m, 5, what="gauge back to 0")
        assert sample(m2, "chaos_agent_reverts_total", kind="pause", reason="expired") == reverts0 + 1
        assert sample(m2, "chaos_agent_revert_lag_seconds_count", kind="pause") >= 1
        lag_sum = sample(m2, "chaos_agent_revert_lag_seconds_sum", kind="pause")
        assert 0 <= lag_sum < 1.0, lag_sum
    finally:
        op.close()
    # The plain listener serves nothing else.
    assert plain_get(remote.metrics_port, "/v1/faults").status == 404


# ------------------------------------------------------------------------------------------------- robustness

def test_slow_and_half_open_clients_do_not_block_others(remote):
    # Half-open TCP on the TLS port (no handshake), a TLS client that never finishes its headers, and a socket client
    # that promised a body and stalls.
    idle = [socket.create_connection(("127.0.0.1", remote.port), timeout=30) for _ in range(20)]
    ctx = tls_context(remote.certs, "viewer")
    partial = ctx.wrap_socket(socket.create_connection(("127.0.0.1", remote.port), timeout=30),
                              server_hostname="localhost")
    partial.sendall(b"GET /v1/faults HTTP/1.1\r\nHost: x\r\n")
    stalled = socket.socket(socket.AF_UNIX)
    stalled.settimeout(30)
    stalled.connect(remote.socket)
    stalled.sendall(b"POST /v1/faults HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"kind\":")
    stalled_at = time.monotonic()
    try:
        for _ in range(5):
            t = time.monotonic()
            assert https_once(remote.certs, remote.port, "viewer", "GET", "/v1/faults").status == 200
            assert remote.http("GET", "/v1/faults").status == 200
            assert time.monotonic() - t < 2
        # A body too large is refused before it is read.
        big = https_once(remote.certs, remote.port, "operator", "POST", "/v1/faults", b"{" + b" " * 200_000 + b"}")
        assert big.status == 413
        # The stalled body is cut off by the agent (request deadline 15 s), not left open.
        data = stalled.recv(4096)
        waited = time.monotonic() - stalled_at
        assert data == b"" and 14 <= waited <= 20, (data, waited)
    finally:
        for s in idle + [partial, stalled]:
            s.close()


def test_sighup_reloads_certificates_and_keeps_leases(remote, victims):
    child = victims.spawn()
    op = TLSClient(remote.certs, remote.port, "operator")
    fid = op.request("POST", "/v1/faults", pause_body(child.pid)).json["id"]
    op.close()
    os.kill(remote.pid, signal.SIGHUP)
    wait_until(lambda: "TLS certificates reloaded" in remote.log(500), 5, what="reload")
    assert https_once(remote.certs, remote.port, "viewer", "GET", f"/v1/faults/{fid}").json["state"] == "active"
    assert is_stopped(child.pid)
    # A broken certificate on disk: the reload fails, the old one stays in use.
    server = remote.certs / "server.pem"
    good = server.read_bytes()
    try:
        server.write_text("not a certificate\n")
        os.kill(remote.pid, signal.SIGHUP)
        wait_until(lambda: "TLS reload failed" in remote.log(500), 5, what="failed reload")
    finally:
        server.write_bytes(good)
    assert remote.alive()
    assert https_once(remote.certs, remote.port, "viewer", "GET", f"/v1/faults/{fid}").json["state"] == "active"
    assert is_stopped(child.pid)


def test_sighup_rereads_roles(remote, victims):
    child = victims.spawn()
    assert https_once(remote.certs, remote.port, "viewer", "POST", "/v1/faults", pause_body(child.pid)).status == 403
    text = remote.config_path.read_text().replace('"viewer" = "viewer"', '"viewer" = "operator"')
    remote.config_path.write_text(text)
    os.kill(remote.pid, signal.SIGHUP)
    wait_until(lambda: "identities=3" in remote.log(500) and "TLS certificates reloaded" in remote.log(500), 5,
               what="reload with the new roles")
    r = https_once(remote.certs, remote.port, "viewer", "POST", "/v1/faults", pause_body(child.pid))
    assert r.status == 201, r
    fid = r.json["id"]
    assert is_stopped(child.pid)
    # A configuration that no longer parses: logged, and the roles in use stay.
    remote.config_path.write_text(text + "\n[bogus]\n")
    os.kill(remote.pid, signal.SIGHUP)
    wait_until(lambda: "configuration cannot be re-read" in remote.log(500), 5, what="failed re-read")
    assert remote.alive()
    assert https_once(remote.certs, remote.port, "viewer", "DELETE", f"/v1/faults/{fid}").status == 200
    wait_until(lambda: not is_stopped(child.pid), 5, what="resumed")


def test_sighup_without_remote_is_harmless(agent, victims):
    child = victims.spawn()
    fault = agent.inject("pause", "--pid", str(child.pid), "--ttl", "60s")
    os.kill(agent.pid, signal.SIGHUP)
    wait_until(lambda: "nothing to reload" in agent.log(200), 5, what="SIGHUP noticed")
    assert agent.alive() and agent.healthz() == 200
    assert agent.fault(fault["id"])["state"] == "active" and is_stopped(child.pid)


def test_cli_remote_flags_are_checked(remote, certs):
    r = run_ctl(None, "--host", f"https://localhost:{remote.port}", "list")
    assert r.rc == 2 and "--cert FILE --key FILE --ca FILE" in r.err, str(r)
    r = run_ctl(None, "--cert", str(certs / "viewer.pem"), "list")
    assert r.rc == 2 and "go with --host" in r.err, str(r)
    r = run_ctl(None, "--host", f"http://localhost:{remote.port}", "--cert", str(certs / "viewer.pem"), "--key",
                str(certs / "viewer.key"), "--ca", str(certs / "ca.pem"), "list")
    assert r.rc == 2 and "https://" in r.err, str(r)
    r = run_ctl(None, "--host", f"https://localhost:{remote.port}", "--cert", "/nonexistent.pem", "--key",
                str(certs / "viewer.key"), "--ca", str(certs / "ca.pem"), "list")
    assert r.rc == 2 and "/nonexistent.pem" in r.err, str(r)
    # The server's certificate must chain to --ca: the wrong CA is refused by the client.
    r = run_ctl(None, "--host", f"https://localhost:{remote.port}", "--cert", str(certs / "viewer.pem"), "--key",
                str(certs / "viewer.key"), "--ca", str(certs / "other-ca.pem"), "list")
    assert r.rc == 5, str(r)
    # A viewer's change is refused with exit 3 and the role it needs.
    r = ctl_remote(remote, "viewer", "revert", "--all")
    assert r.rc == 3 and "admin" in r.err, str(r)
    h = run_ctl(None, "inject", "pause", "--help")
    assert "--heartbeat" in h.out and "--idempotency-key" in h.out


def test_cli_events_follow_over_tls(remote, victims):
    child = victims.spawn()
    c = remote.certs
    p = subprocess.Popen([str(AGENTCTL), "--host", f"https://localhost:{remote.port}", "--cert", str(c / "viewer.pem"),
                          "--key", str(c / "viewer.key"), "--ca", str(c / "ca.pem"), "--json", "events", "--since", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        fault = https_once(c, remote.port, "operator", "POST", "/v1/faults",
                           pause_body(child.pid, ttl="1s", heartbeat="500ms")).json
        seen = []
        end = time.monotonic() + 10
        while time.monotonic() < end:
            line = p.stdout.readline()
            if not line:
                break
            e = json.loads(line)
            if e["fault"]["id"] == fault["id"]:
                seen.append(e["type"])
            if e["type"] == "reverted":
                break
        assert seen == ["applied", "heartbeat-missed", "reverted"], seen
    finally:
        p.terminate()
        p.wait(timeout=5)


def test_tls_versions(remote):
    def negotiated(maximum=None, minimum=None):
        ctx = tls_context(remote.certs, "viewer")
        if maximum:
            ctx.maximum_version = maximum
        if minimum:
            ctx.minimum_version = minimum
        with socket.create_connection(("127.0.0.1", remote.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.version()
    assert negotiated() == "TLSv1.3"  # preferred when the client offers it
    assert negotiated(maximum=ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    # Below 1.2 the agent does not answer: the handshake fails (on whichever side refuses first).
    with pytest.raises(ssl.SSLError):
        negotiated(maximum=ssl.TLSVersion.TLSv1_1, minimum=ssl.TLSVersion.TLSv1)

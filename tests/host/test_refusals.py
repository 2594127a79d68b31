"""Refusals: the right exit code and proof that nothing was applied."""
import json
import os
import subprocess

import pytest

from chaoslib import AGENTCTL, comm, http_raw, is_running, run_ctl, unique


def assert_nothing_applied(agent, *procs):
    for p in procs:
        assert is_running(p.pid), f"pid {p.pid} was touched ({p.pid} state changed)"
    assert agent.active_faults() == [], "a refused request left a fault behind"
    assert agent.ctl("list").out.strip() == ""


def expect(result, rc):
    assert result.rc == rc, str(result)
    assert result.err.startswith("chaos-agentctl: "), f"error not on one prefixed stderr line:\n{result}"
    assert result.out == "", f"stdout must stay empty on errors:\n{result}"


@pytest.mark.parametrize("kind", ["pause", "kill"])
def test_pid_1_is_refused(agent, victims, kind):
    bystander = victims.spawn()
    expect(agent.ctl("inject", kind, "--pid", "1", "--ttl", "5s"), 3)
    assert_nothing_applied(agent, bystander)


def test_the_daemon_itself_is_refused(agent, victims):
    bystander = victims.spawn()
    expect(agent.ctl("inject", "pause", "--pid", str(agent.pid), "--ttl", "5s"), 3)
    expect(agent.ctl("inject", "kill", "--pid", str(agent.pid), "--ttl", "5s"), 3)
    assert agent.alive() and is_running(agent.pid)
    assert_nothing_applied(agent, bystander)


def test_the_callers_ancestors_are_refused(agent, victims):
    # pytest is the CLI's parent here.
    expect(agent.ctl("inject", "pause", "--pid", str(os.getpid()), "--ttl", "5s"), 3)
    # A shell that runs the CLI as a child ($$ is that shell, the CLI's parent).
    script = f'"{AGENTCTL}" --socket "{agent.socket}" inject pause --pid $$ --ttl 5s; exit $?'
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert p.returncode == 3, p.stderr
    assert_nothing_applied(agent)


def test_kernel_thread_is_refused(agent):
    assert comm(2) == "kthreadd"
    expect(agent.ctl("inject", "pause", "--pid", "2", "--ttl", "5s"), 3)
    expect(agent.ctl("inject", "kill", "--name", "^kthreadd$", "--ttl", "5s"), 3)
    assert_nothing_applied(agent)


def test_protected_process_is_refused(make_agent, victims):
    name = unique("cp")
    agent = make_agent(f'[policy]\nmax-ttl = "2m"\nprotected-processes = ["sshd", "systemd-journald", "{name}"]\n')
    protected = victims.spawn(name)
    expect(agent.ctl("inject", "pause", "--pid", str(protected.pid), "--ttl", "5s"), 3)
    expect(agent.ctl("inject", "pause", "--name", f"^{name}$", "--ttl", "5s"), 3)
    expect(agent.ctl("inject", "kill", "--name", f"^{name}$", "--ttl", "5s"), 3)
    assert_nothing_applied(agent, protected)
    # Control: the same kind of process under another name is fair game.
    free = victims.spawn(unique("cf"))
    fault = agent.inject("pause", "--pid", str(free.pid), "--ttl", "5s")
    assert fault["state"] == "active"
    assert agent.ctl("revert", fault["id"]).rc == 0


def test_default_protected_names_are_refused(agent):
    # Whether or not sshd/journald run here, targeting them is refused (protected, or matching nothing).
    expect(agent.ctl("inject", "pause", "--name", "^sshd$", "--ttl", "5s"), 3)
    expect(agent.ctl("inject", "pause", "--name", "^systemd-journald$", "--ttl", "5s"), 3)
    assert_nothing_applied(agent)


def test_selector_matching_nothing_is_refused(agent, victims):
    bystander = victims.spawn()
    expect(agent.ctl("inject", "pause", "--name", f"^{unique('nx')}$", "--ttl", "5s"), 3)
    # A PID that does not exist (pid_max is at most 2^22).
    expect(agent.ctl("inject", "pause", "--pid", str(2**22 + 17), "--ttl", "5s"), 3)
    assert_nothing_applied(agent, bystander)


def test_ttl_over_the_cap_is_refused(agent, victims):
    child = victims.spawn()
    expect(agent.ctl("inject", "pause", "--pid", str(child.pid), "--ttl", "3m"), 3)
    assert_nothing_applied(agent, child)
    fault = agent.inject("pause", "--pid", str(child.pid), "--ttl", "1m")
    expect(agent.ctl("renew", fault["id"], "--ttl", "3m"), 3)
    assert agent.ctl("revert", fault["id"]).rc == 0


def test_already_paused_is_a_conflict(agent, victims):
    child = victims.spawn()
    fault = agent.inject("pause", "--pid", str(child.pid), "--ttl", "1m")
    expect(agent.ctl("inject", "pause", "--pid", str(child.pid), "--ttl", "1m"), 3)
    assert [f["id"] for f in agent.active_faults()] == [fault["id"]]
    assert agent.ctl("revert", fault["id"]).rc == 0
    assert is_running(child.pid)


@pytest.mark.parametrize("args", [
    ["inject", "pause", "--pid", "{pid}", "--ttl", "5parsecs"],
    ["inject", "pause", "--pid", "{pid}"],
    ["inject", "pause", "--ttl", "5s"],
    ["inject", "pause", "--pid", "{pid}", "--name", "x", "--ttl", "5s"],
    ["inject", "pause", "--pid", "{pid}", "--ttl", "5s", "--label", "novalue"],
    ["inject", "kill", "--pid", "{pid}", "--ttl", "5s", "--repeat", "often"],
    ["inject", "teleport", "--ttl", "5s"],
    ["renew", "f-000000000000"],
    ["revert"],
    ["revert", "f-000000000000", "--all"],
    ["no-such-command"],
])
def test_usage_errors_exit_2(agent, victims, args):
    child = victims.spawn()
    r = agent.ctl(*[a.format(pid=child.pid) for a in args])
    assert r.rc == 2, str(r)
    assert r.err.startswith("chaos-agentctl: "), str(r)
    assert_nothing_applied(agent, child)


@pytest.mark.parametrize("args", [["get", "f-000000000000"], ["revert", "f-000000000000"],
                                  ["renew", "f-000000000000", "--ttl", "5s"]])
def test_unknown_fault_id_exits_4(agent, args):
    expect(agent.ctl(*args), 4)


def test_unreachable_socket_exits_5(workdir):
    r = run_ctl(str(workdir / "nothing-here.sock"), "list")
    assert r.rc == 5, str(r)
    assert "nothing-here.sock" in r.err
    # Same through the environment variable.
    r = run_ctl(None, "status", env={"CHAOS_AGENT_SOCKET": str(workdir / "nothing-here.sock")})
    assert r.rc == 5, str(r)


def test_stale_socket_exits_5(workdir):
    import socket
    path = str(workdir / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # bound, never listening: connection refused
    r = run_ctl(path, "list")
    assert r.rc == 5, str(r)
    assert "refused" in r.err


# ------------------------------------------------------------------------------------------------- raw HTTP checks

def error_of(r):
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"], body
    return body["error"]


def names(err, field):
    return err.get("field") == field or field in err["message"]


def test_api_malformed_json_is_400(agent, victims):
    child = victims.spawn()
    r = agent.http("POST", "/v1/faults", f'{{"kind": "pause", "ttl": "5s", "spec": {{"pid": {child.pid}}}')
    assert r.status == 400, r
    err = error_of(r)
    assert err["code"] == "bad-request"
    assert_nothing_applied(agent, child)


def test_api_unknown_kind_is_400_naming_kind(agent, victims):
    child = victims.spawn()
    r = agent.http("POST", "/v1/faults", {"kind": "teleport", "ttl": "5s", "spec": {"pid": child.pid}})
    assert r.status == 400, r
    assert names(error_of(r), "kind"), r.body
    assert_nothing_applied(agent, child)


def test_api_missing_ttl_is_400_naming_ttl(agent, victims):
    child = victims.spawn()
    r = agent.http("POST", "/v1/faults", {"kind": "pause", "spec": {"pid": child.pid}})
    assert r.status == 400, r
    assert names(error_of(r), "ttl"), r.body
    r = agent.http("POST", "/v1/faults", {"kind": "pause", "ttl": "5parsecs", "spec": {"pid": child.pid}})
    assert r.status == 400, r
    assert names(error_of(r), "ttl"), r.body
    assert_nothing_applied(agent, child)


def test_api_spec_with_pid_and_name_is_400(agent, victims):
    child = victims.spawn()
    r = agent.http("POST", "/v1/faults", {"kind": "pause", "ttl": "5s", "spec": {"pid": child.pid, "name": "^sleep$"}})
    assert r.status == 400, r
    error_of(r)
    assert_nothing_applied(agent, child)


def test_api_body_over_64k_is_413(agent, victims):
    child = victims.spawn()
    body = json.dumps({"kind": "pause", "ttl": "5s", "spec": {"pid": child.pid},
                       "labels": {"pad": "x" * (70 * 1024)}}).encode()
    req = (b"POST /v1/faults HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    r = http_raw(agent.socket, req)
    assert r.status == 413, (r.status, r.body)
    assert_nothing_applied(agent, child)
    # The agent still serves afterwards.
    assert agent.healthz() == 200


def test_api_unknown_route_and_method(agent):
    r = agent.http("GET", "/v1/nothing")
    assert r.status == 404, r
    error_of(r)
    r = agent.http("PUT", "/v1/faults")
    assert r.status in (404, 405), r
    error_of(r)


def test_api_ttl_below_minimum_is_400(agent, victims):
    # docs/api.md: "ttl (required): a duration ..., at least 100 ms".
    child = victims.spawn()
    r = agent.http("POST", "/v1/faults", {"kind": "pause", "ttl": "50ms", "spec": {"pid": child.pid}})
    assert r.status == 400, (r.status, r.body)
    assert names(error_of(r), "ttl"), r.body
    assert_nothing_applied(agent, child)

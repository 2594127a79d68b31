"""Nothing the daemon does (crash, restart, shutdown) leaves a fault behind."""
import time

from chaoslib import http_request, is_running, is_stopped, proc_state, wait_until


def test_sigkill_then_reap_resumes(agent, victims):
    child = victims.spawn()
    fault = agent.inject("pause", "--pid", str(child.pid), "--ttl", "1m")
    agent.kill9()
    time.sleep(0.3)
    assert is_stopped(child.pid), "nothing should resume the child while no daemon runs"
    r = agent.reap()
    assert r.rc == 0, str(r)
    assert is_running(child.pid), "reap did not resume the paused child"
    said = r.out + r.err
    assert fault["id"] in said or str(child.pid) in said, f"reap did not say what it reverted:\n{r}"
    # A second reap finds a clean host.
    again = agent.reap()
    assert again.rc == 0, str(again)
    assert is_running(child.pid)


def test_sigkill_then_restart_resumes_before_healthz(agent, victims):
    child = victims.spawn()
    second = victims.spawn()
    fault = agent.inject("pause", "--pid", str(child.pid), "--ttl", "1m")
    agent.inject("pause", "--pid", str(second.pid), "--ttl", "1m")
    agent.kill9()
    time.sleep(0.3)
    assert is_stopped(child.pid) and is_stopped(second.pid)

    agent.spawn()
    seen = {}

    def first_ok():
        if not agent.alive():
            raise AssertionError(f"restarted daemon exited {agent.proc.returncode}:\n{agent.log()}")
        status = agent.healthz()
        if status is not None and "first_answer" not in seen:
            seen["first_answer"] = (status, proc_state(child.pid), proc_state(second.pid))
        if status == 200:
            # Checked the instant /healthz first says ok.
            seen["at_ok"] = (proc_state(child.pid), proc_state(second.pid))
            return True
        return False

    wait_until(first_ok, 20, interval=0.005, what="the restarted daemon's /healthz")
    assert seen["at_ok"] == ("S", "S"), f"/healthz answered 200 while a journaled pause was still applied: {seen}"

    status = agent.ctl("--json", "status")
    assert status.rc == 0, str(status)
    assert status.json["recovered"] >= 1
    assert status.json["activeFaults"] == 0
    assert agent.active_faults() == []
    # The restarted agent does not resurrect the old fault.
    time.sleep(0.3)
    assert is_running(child.pid) and is_running(second.pid)
    r = agent.ctl("get", fault["id"])
    assert r.rc in (0, 4), str(r)
    if r.rc == 0:
        assert "reverted" in r.out


def test_sigterm_resumes_everything_and_exits_0(agent, victims):
    kids = [victims.spawn() for _ in range(3)]
    for k in kids:
        agent.inject("pause", "--pid", str(k.pid), "--ttl", "1m")
    assert all(is_stopped(k.pid) for k in kids)
    t0 = time.monotonic()
    rc = agent.stop(timeout=10)
    assert rc == 0, agent.log()
    assert time.monotonic() - t0 < 10
    assert all(is_running(k.pid) for k in kids), [proc_state(k.pid) for k in kids]
    # A clean shutdown leaves nothing for reap.
    r = agent.reap()
    assert r.rc == 0, str(r)


def test_sigint_also_resumes_and_exits_0(agent, victims):
    import signal
    child = victims.spawn()
    agent.inject("pause", "--pid", str(child.pid), "--ttl", "1m")
    agent.proc.send_signal(signal.SIGINT)
    assert agent.proc.wait(timeout=10) == 0, agent.log()
    assert is_running(child.pid)

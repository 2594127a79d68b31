"""A hung or dead agent strands nothing, without systemd: the hang watchdog process that `run` starts reverts every
fault in its place (issue: "a hung agent strands every fault"). Also `reap --take-over` by hand, and the lock
hand-over between a reap and a starting agent. Verdicts wait for states (generous bounds), never for clocks."""
import os
import signal
import time

from chaoslib import is_running, is_stopped, parse_time, proc_state, wait_until


def _gone(pid: int) -> bool:
    state = proc_state(pid)
    return state is None or state == "Z"


def test_sigkill_of_the_agent_alone_is_reaped_by_its_watchdog(agent, victims):
    child = victims.spawn()
    agent.inject("pause", "--pid", str(child.pid), "--ttl", "1m")
    wd = agent.watchdog_pid()
    assert wd is not None, "run started no hang watchdog"
    agent.kill9(watchdog=False)
    # No reap, no restart: the watchdog notices the pipe close without a goodbye and reverts from the journal.
    wait_until(lambda: is_running(child.pid), 20, what="the watchdog to resume the paused child")
    wait_until(lambda: _gone(wd), 20, what="the watchdog to exit after reaping")
    again = agent.reap()
    assert again.rc == 0 and "nothing to revert" in again.out, str(again)


def test_sigstopped_agent_is_taken_over_at_the_deadline(agent, victims):
    """The issue's example: SIGSTOP the agent; a due pause is still reverted within seconds of its deadline."""
    child = victims.spawn()
    fault = agent.inject("pause", "--pid", str(child.pid), "--ttl", "4s")
    expires = parse_time(fault["expiresAt"])
    wd = agent.watchdog_pid()
    assert wd is not None
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        time.sleep(1)
        assert is_stopped(child.pid), "the pause ended long before its deadline"
        wait_until(lambda: is_running(child.pid), 30, what="the watchdog to resume the child of a stopped agent")
        lag = time.time() - expires
        # The watchdog acts after 3 s of silence past the deadline; allow a loaded machine plenty more.
        assert lag < 15, f"resumed {lag:.1f}s after the deadline"
        wait_until(lambda: agent.proc.poll() is not None, 20, what="the hung agent to be killed")
        assert agent.proc.returncode == -signal.SIGKILL
        agent.exit_codes.append(agent.proc.returncode)
        wait_until(lambda: _gone(wd), 20, what="the watchdog to exit")
    finally:
        if agent.proc.poll() is None:
            os.kill(agent.pid, signal.SIGCONT)
    r = agent.reap()
    assert r.rc == 0 and "nothing to revert" in r.out, str(r)
    print(f"SIGSTOPped agent: 4 s pause resumed {lag:.2f}s after its deadline by the watchdog")


def test_hung_agent_with_a_far_deadline_is_taken_over_after_the_hang_timeout(make_agent, victims):
    agent = make_agent(args=("--hang-timeout", "2s"))
    child = victims.spawn()
    agent.inject("pause", "--pid", str(child.pid), "--ttl", "1m")
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: is_running(child.pid), 30, what="the watchdog to take over after the hang timeout")
        wait_until(lambda: agent.proc.poll() is not None, 20, what="the hung agent to be killed")
        agent.exit_codes.append(agent.proc.returncode)
    finally:
        if agent.proc.poll() is None:
            os.kill(agent.pid, signal.SIGCONT)


def test_clean_stop_says_goodbye_and_the_watchdog_leaves(agent, victims):
    child = victims.spawn()
    agent.inject("pause", "--pid", str(child.pid), "--ttl", "1m")
    wd = agent.watchdog_pid()
    assert wd is not None
    assert agent.stop() == 0
    assert is_running(child.pid)
    wait_until(lambda: _gone(wd), 10, what="the watchdog to exit after the agent's goodbye")


def test_killed_watchdog_is_replaced(agent, victims):
    """An idle agent does not beat (no wake-ups); the first beat after a fault exists finds the watchdog gone and
    starts a new one, which then reaps for the agent."""
    first = agent.watchdog_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: _gone(first), 10, what="the first watchdog to die")
    child = victims.spawn()
    agent.inject("pause", "--pid", str(child.pid), "--ttl", "1m")
    wait_until(lambda: agent.watchdog_pid() not in (None, first), 20, what="a new watchdog")
    agent.kill9(watchdog=False)
    wait_until(lambda: is_running(child.pid), 20, what="the new watchdog to reap")


def test_reap_refuses_a_running_agent_and_takes_over_a_stopped_one(make_agent, victims):
    agent = make_agent(args=("--no-watchdog",))
    child = victims.spawn()
    agent.inject("pause", "--pid", str(child.pid), "--ttl", "1m")
    r = agent.reap("--wait-lock", "0")
    assert r.rc == 1 and "owns the state directory" in r.err, str(r)
    assert is_stopped(child.pid) and agent.alive()
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        r = agent.reap("--take-over")
        assert r.rc == 0, str(r)
        assert is_running(child.pid)
        wait_until(lambda: agent.proc.poll() is not None, 10, what="the taken-over agent to be killed")
        agent.exit_codes.append(agent.proc.returncode)
    finally:
        if agent.proc.poll() is None:
            os.kill(agent.pid, signal.SIGCONT)
    # The state dir is free again: a new agent starts on it.
    agent.start()
    assert agent.active_faults() == []

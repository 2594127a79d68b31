"""kill: the signal is delivered (waitpid proves which), --repeat keeps killing during the TTL only."""
import signal
import subprocess
import time

from chaoslib import is_running, parse_time, unique, wait_until


def test_kill_by_pid_sends_sigkill(agent, victims):
    child = victims.spawn()
    fault = agent.inject("kill", "--pid", str(child.pid), "--ttl", "5s")
    assert fault["kind"] == "kill"
    assert child.wait(timeout=5) == -signal.SIGKILL


def test_kill_signal_term(agent, victims):
    child = victims.spawn()
    r = agent.ctl("inject", "kill", "--pid", str(child.pid), "--signal", "TERM", "--ttl", "5s")
    assert r.rc == 0, str(r)
    assert child.wait(timeout=5) == -signal.SIGTERM


def test_kill_signal_by_sig_name_and_number(agent, victims):
    a, b = victims.spawn(), victims.spawn()
    assert agent.ctl("inject", "kill", "--pid", str(a.pid), "--signal", "SIGINT", "--ttl", "5s").rc == 0
    assert agent.ctl("inject", "kill", "--pid", str(b.pid), "--signal", "15", "--ttl", "5s").rc == 0
    assert a.wait(timeout=5) == -signal.SIGINT
    assert b.wait(timeout=5) == -signal.SIGTERM


def test_kill_repeat_kills_newcomers_during_ttl_only(agent, victims):
    name = unique("ck")
    first = victims.spawn(name)
    bystander = victims.spawn()
    fault = agent.inject("kill", "--name", f"^{name}$", "--repeat", "1s", "--ttl", "4s")
    deadline = parse_time(fault["expiresAt"])
    assert first.wait(timeout=5) == -signal.SIGKILL

    # A matching process started during the TTL dies within about one interval.
    second = victims.spawn(name)
    assert second.wait(timeout=4) == -signal.SIGKILL
    assert time.time() < deadline + 0.5, "test too slow: the second kill landed after the deadline"

    # After the fault ends, the killing stops.
    wait_until(lambda: agent.fault(fault["id"])["state"] == "reverted", max(0.0, deadline - time.time()) + 5,
               interval=0.1, what="the repeating kill to end")
    survivor = victims.spawn(name)
    time.sleep(2.5)  # more than two repeat intervals
    assert survivor.poll() is None and is_running(survivor.pid), "a process was killed after the fault ended"
    assert bystander.poll() is None, "a non-matching process was killed"


def test_kill_exit_code_of_waited_fault(agent, victims):
    """--wait on a kill: blocks for the TTL, exits 0 when the fault ends by itself."""
    child = victims.spawn()
    r = agent.ctl("inject", "kill", "--pid", str(child.pid), "--ttl", "1s", "--wait", timeout=20)
    assert r.rc == 0, str(r)
    assert child.wait(timeout=5) == -signal.SIGKILL


def test_kill_pid_repeat_signals_the_same_process_every_interval(agent, victims, tmp_path):
    """`kill --pid X --repeat` signalled once; it re-signals the same process every interval while the fault lives."""
    counter = tmp_path / "usr1"
    script = ("import signal, sys, time\n"
              "n = 0\n"
              "def on_usr1(*_):\n"
              "    global n\n"
              "    n += 1\n"
              f"    open({str(counter)!r}, 'w').write(str(n))\n"
              "signal.signal(signal.SIGUSR1, on_usr1)\n"
              f"open({str(counter)!r}, 'w').write('0')\n"
              "while True: time.sleep(1)\n")
    p = subprocess.Popen(["python3", "-c", script], stdin=subprocess.DEVNULL, start_new_session=True)
    victims.procs.append(p)
    wait_until(lambda: counter.exists() and counter.read_text() == "0", 10, what="the handler to be installed")
    fault = agent.inject("kill", "--pid", str(p.pid), "--signal", "USR1", "--repeat", "200ms", "--ttl", "1500ms")
    deadline = parse_time(fault["expiresAt"])
    wait_until(lambda: agent.fault(fault["id"])["state"] == "reverted", max(0.0, deadline - time.time()) + 5,
               interval=0.1, what="the repeating kill to end")
    count = int(counter.read_text())
    assert count >= 4, f"only {count} SIGUSR1 in 1.5 s at a 200 ms interval"
    time.sleep(0.6)
    assert int(counter.read_text()) == count, "signals went on after the fault ended"
    assert p.poll() is None

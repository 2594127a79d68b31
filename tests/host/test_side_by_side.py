"""Two daemons with their own sockets and state dirs do not see or undo each other's faults."""
from chaoslib import is_running, is_stopped


def test_two_daemons_do_not_interfere(make_agent, victims):
    a = make_agent(name="a")
    b = make_agent(name="b")
    assert a.socket != b.socket and a.state_dir != b.state_dir
    ka, kb = victims.spawn(), victims.spawn()
    fa = a.inject("pause", "--pid", str(ka.pid), "--ttl", "1m")
    fb = b.inject("pause", "--pid", str(kb.pid), "--ttl", "1m")
    assert [f["id"] for f in a.active_faults()] == [fa["id"]]
    assert [f["id"] for f in b.active_faults()] == [fb["id"]]
    assert b.ctl("get", fa["id"]).rc == 4

    assert b.ctl("revert", "--all").rc == 0
    assert is_running(kb.pid)
    assert is_stopped(ka.pid), "reverting on b resumed a's process"

    assert b.stop() == 0
    assert is_stopped(ka.pid), "stopping b resumed a's process"
    assert b.reap().rc == 0
    assert is_stopped(ka.pid), "reaping b's state dir resumed a's process"
    assert [f["id"] for f in a.active_faults()] == [fa["id"]]

    assert a.ctl("revert", fa["id"]).rc == 0
    assert is_running(ka.pid)

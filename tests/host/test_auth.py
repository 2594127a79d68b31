"""Who may call: the socket's mode and SO_PEERCRED decide."""
import stat

from chaoslib import is_running, run_ctl
from conftest import socket_mode


def test_socket_is_0660_and_nobody_cannot_connect(agent, victims, public_ctl, as_nobody):
    assert socket_mode(agent.socket) == 0o660
    child = victims.spawn()
    r = run_ctl(agent.socket, "list", prefix=as_nobody, binary=public_ctl)
    assert r.rc == 5, str(r)
    assert "permission denied" in r.err, str(r)
    r = run_ctl(agent.socket, "inject", "pause", "--pid", str(child.pid), "--ttl", "5s", prefix=as_nobody,
                binary=public_ctl)
    assert r.rc == 5, str(r)
    assert is_running(child.pid)
    assert agent.active_faults() == []


def test_world_connectable_socket_is_read_only_for_others(make_agent, victims, public_ctl, as_nobody):
    agent = make_agent('[agent]\nsocket-mode = "0666"\n[policy]\nmax-ttl = "2m"\n')
    assert socket_mode(agent.socket) == 0o666
    child = victims.spawn()
    # Root's fault is visible to nobody.
    mine = agent.inject("pause", "--pid", str(child.pid), "--ttl", "1m")
    assert mine["owner"] == "unix:root"
    r = run_ctl(agent.socket, "list", prefix=as_nobody, binary=public_ctl)
    assert r.rc == 0, str(r)
    assert mine["id"] in r.out
    assert run_ctl(agent.socket, "status", prefix=as_nobody, binary=public_ctl).rc == 0
    assert run_ctl(agent.socket, "get", mine["id"], prefix=as_nobody, binary=public_ctl).rc == 0

    # Every change is forbidden (403 -> exit 3), and changes nothing.
    other = victims.spawn()
    r = run_ctl(agent.socket, "inject", "pause", "--pid", str(other.pid), "--ttl", "5s", prefix=as_nobody,
                binary=public_ctl)
    assert r.rc == 3, str(r)
    assert is_running(other.pid)
    for args in (["revert", mine["id"]], ["revert", "--all"], ["renew", mine["id"], "--ttl", "5s"]):
        r = run_ctl(agent.socket, *args, prefix=as_nobody, binary=public_ctl)
        assert r.rc == 3, f"{args}: {r}"
    assert [f["id"] for f in agent.active_faults()] == [mine["id"]]
    assert agent.fault(mine["id"])["ttl"] == "1m"
    assert agent.ctl("revert", mine["id"]).rc == 0
    assert is_running(child.pid)

"""Who may call: the socket's mode and the kernel's credentials (SO_PEERCRED, SO_PEERGROUPS) decide."""
import grp
import os
import shutil
import stat
import subprocess

import pytest

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


# ------------------------------------------------------------------------------------- groups: the kernel's word

@pytest.fixture
def make_group():
    """Factory: a throwaway system group, optionally listing `members` in /etc/group; removed at teardown."""
    made = []

    def make(members: tuple[str, ...] = ()) -> tuple[str, int]:
        name = "ca-t" + os.urandom(3).hex()
        subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
        made.append(name)
        for m in members:
            subprocess.run(["gpasswd", "-a", m, name], check=True, capture_output=True)
        return name, grp.getgrnam(name).gr_gid

    yield make
    for name in made:
        subprocess.run(["groupdel", name], capture_output=True)


def as_nobody_with(*flags: str) -> list[str]:
    return [shutil.which("setpriv") or "setpriv", "--reuid", "nobody", "--regid", "nogroup", *flags]


def test_socket_group_held_as_a_supplementary_group_makes_an_operator(make_agent, victims, public_ctl, make_group):
    # nobody is not listed in /etc/group for this group: only its process's credentials hold it
    # (as systemd's SupplementaryGroups= or `setpriv --groups` give it).
    name, gid = make_group()
    agent = make_agent(f'[agent]\nsocket-group = "{name}"\n[policy]\nmax-ttl = "2m"\n')
    assert socket_mode(agent.socket) == 0o660
    child = victims.spawn()
    r = run_ctl(agent.socket, "--json", "inject", "pause", "--pid", str(child.pid), "--ttl", "1m",
                prefix=as_nobody_with("--groups", str(gid)), binary=public_ctl)
    assert r.rc == 0, str(r)
    assert r.json["owner"] == "unix:nobody"
    assert agent.ctl("revert", r.json["id"]).rc == 0
    assert is_running(child.pid)


def test_socket_group_listed_in_etc_group_but_dropped_by_the_process_is_a_viewer(make_agent, victims, public_ctl,
                                                                                  make_group):
    name, gid = make_group(members=("nobody",))
    agent = make_agent(f'[agent]\nsocket-group = "{name}"\nsocket-mode = "0666"\n[policy]\nmax-ttl = "2m"\n')
    child = victims.spawn()
    # The process dropped every supplementary group: /etc/group still lists nobody, the kernel says no.
    r = run_ctl(agent.socket, "inject", "pause", "--pid", str(child.pid), "--ttl", "5s",
                prefix=as_nobody_with("--clear-groups"), binary=public_ctl)
    assert r.rc == 3, str(r)
    assert is_running(child.pid)
    assert agent.active_faults() == []
    assert run_ctl(agent.socket, "list", prefix=as_nobody_with("--clear-groups"), binary=public_ctl).rc == 0
    # The same user whose process does take its groups from /etc/group holds the group: operator.
    r = run_ctl(agent.socket, "--json", "inject", "pause", "--pid", str(child.pid), "--ttl", "1m",
                prefix=as_nobody_with("--init-groups"), binary=public_ctl)
    assert r.rc == 0, str(r)
    assert agent.ctl("revert", r.json["id"]).rc == 0
    assert is_running(child.pid)

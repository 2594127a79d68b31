"""Resource faults on this (hybrid cgroup) host: disk-fill for real on a private tmpfs, refusals of the cgroup kinds
with a sentence, pause/kill by cgroup on the controller-less unified hierarchy (cgroup.freeze and cgroup.kill are core
cgroup v2 files, so they work here too)."""
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from chaoslib import is_running, is_stopped, parse_time, proc_state, wait_until

MiB = 1 << 20
# The private tmpfs below is memory: disk-fill refuses it unless the configuration allows memory-backed file systems.
FILL_CONFIG = '[policy]\nmax-ttl = "2m"\n[disk-fill]\nallow-memory-backed = true\n'


@pytest.fixture
def agent(make_agent):
    """One daemon with `[policy] max-ttl = "2m"` that may fill memory-backed file systems (the tests' tmpfs)."""
    return make_agent(config=FILL_CONFIG)


@pytest.fixture
def tmpfs(workdir):
    """A private 256 MiB tmpfs: exact free-space arithmetic, nothing else writing to it."""
    d = Path(workdir) / f"fs-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256M", "tmpfs", str(d)], check=True)
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def free_bytes(path) -> int:
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize


def space_back(path, before):
    """The blocks of an unlinked file return to the file system a moment after the name goes."""
    wait_until(lambda: abs(free_bytes(path) - before) <= 64 * 1024, 3, what="the free space to come back")


def fill_files(path):
    return [p for p in Path(path).iterdir() if p.name.startswith(".chaos-agent-fill-")]


def test_disk_fill_leave_free_fills_and_reverts(agent, tmpfs):
    before = free_bytes(tmpfs)
    fault = agent.inject("disk-fill", "--path", str(tmpfs), "--leave-free", "100MiB", "--ttl", "3s")
    assert fault["state"] == "active", fault
    # The kernel's word: the file system now has ~100 MiB free, held by one file of ours.
    free = free_bytes(tmpfs)
    assert abs(free - 100 * MiB) <= 1 * MiB, f"{free / MiB:.1f} MiB free, wanted 100"
    files = fill_files(tmpfs)
    assert len(files) == 1 and str(files[0]) == fault["target"]["file"]
    assert files[0].stat().st_blocks * 512 >= before - 101 * MiB
    assert fault["target"]["method"] in ("fallocate", "write")
    expires = parse_time(fault["expiresAt"])
    wait_until(lambda: not fill_files(tmpfs), expires - time.time() + 3, what="the fill file to go at the deadline")
    assert time.time() >= expires - 0.05
    space_back(tmpfs, before)


def test_disk_fill_size_and_revert_command(agent, tmpfs):
    before = free_bytes(tmpfs)
    fault = agent.inject("disk-fill", "--path", str(tmpfs), "--size", "64MiB", "--ttl", "1m")
    assert abs((before - free_bytes(tmpfs)) - 64 * MiB) <= 64 * 1024
    # One fill per file system: the second is a conflict (exit 3), nothing more allocated.
    second = agent.ctl("inject", "disk-fill", "--path", str(tmpfs), "--size", "1MiB", "--ttl", "1m")
    assert second.rc == 3 and "conflict" in second.err.lower() or "already" in second.err.lower(), str(second)
    assert len(fill_files(tmpfs)) == 1
    r = agent.ctl("revert", fault["id"])
    assert r.rc == 0, str(r)
    assert fill_files(tmpfs) == []
    space_back(tmpfs, before)


def test_disk_fill_survives_sigkill_via_reap(agent, tmpfs):
    agent.inject("disk-fill", "--path", str(tmpfs), "--size", "32MiB", "--ttl", "1m")
    assert len(fill_files(tmpfs)) == 1
    agent.kill9()
    assert len(fill_files(tmpfs)) == 1  # nobody removed it yet
    r = agent.reap()
    assert r.rc == 0, str(r)
    assert fill_files(tmpfs) == []


def test_disk_fill_refusals(agent, tmpfs, workdir):
    ro = Path(workdir) / f"ro-{uuid.uuid4().hex[:8]}"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16M", "tmpfs", str(ro)], check=True)
    try:
        plain = tmpfs / "plain-file"
        plain.write_text("x")
        cases = [
            (["--path", str(ro), "--size", "1MiB"], "read-only"),
            (["--path", "/nonexistent/dir", "--size", "1MiB"], "does not exist"),
            (["--path", str(plain), "--size", "1MiB"], "not a directory"),
            (["--path", str(tmpfs), "--size", "250MiB"], "reserve"),  # would leave < 64 MiB
            (["--path", str(tmpfs), "--leave-free", "1MiB"], "reserve"),
            (["--path", str(tmpfs), "--leave-free", "1GiB"], "free"),
        ]
        for args, words in cases:
            r = agent.ctl("inject", "disk-fill", *args, "--ttl", "10s")
            assert r.rc == 3, str(r)
            assert words in r.err, str(r)
        usage = agent.ctl("inject", "disk-fill", "--path", str(tmpfs), "--ttl", "10s")
        assert usage.rc == 2, str(usage)
        assert fill_files(tmpfs) == [] and fill_files(ro) == []
        assert agent.active_faults() == []
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_disk_reserve_is_configurable(make_agent, tmpfs):
    strict = make_agent(config='[policy]\nmax-ttl = "2m"\nresource-reserve = "200MiB"\n[disk-fill]\nallow-memory-backed = true\n')
    r = strict.ctl("inject", "disk-fill", "--path", str(tmpfs), "--size", "100MiB", "--ttl", "10s")
    assert r.rc == 3 and "200.0MiB" in r.err, str(r)


@pytest.mark.parametrize("kind,args", [
    ("squeeze", ["--cgroup", "/", "--cpu-max", "20%"]),
])
def test_cgroup_kinds_are_refused_with_a_sentence_on_this_host(agent, kind, args):
    status = agent.http("GET", "/v1/status").json
    controllers = status["host"].get("cgroupControllers", [])
    if set(controllers) & {"cpu", "memory", "io", "pids"}:
        pytest.skip("this host has cgroup v2 controllers")
    kinds = {k["kind"]: k for k in status["kinds"]}
    assert kinds[kind]["available"] is False
    assert "controllers" in kinds[kind]["reason"] or "cgroup" in kinds[kind]["reason"]
    r = agent.ctl("inject", kind, *args, "--ttl", "10s")
    assert r.rc == 3, str(r)
    assert "cgroup" in r.err, str(r)


UNIFIED = "/sys/fs/cgroup/unified" if os.path.ismount("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"


@pytest.fixture
def victim_cgroup(victims):
    """A fresh cgroup in the v2 hierarchy with one `sleep` in it; removed afterwards."""
    name = f"chaos-test-{uuid.uuid4().hex[:8]}"
    path = Path(UNIFIED) / name
    path.mkdir()
    child = victims.spawn()
    (path / "cgroup.procs").write_text(str(child.pid))
    yield name, path, child
    if path.exists():
        (path / "cgroup.freeze").write_text("0")
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        wait_until(lambda: (path / "cgroup.procs").read_text().strip() == "", 5, what="test cgroup to empty")
        path.rmdir()


def events(path) -> dict:
    return dict(line.split() for line in (path / "cgroup.events").read_text().splitlines())


def test_pause_by_cgroup_freezes_and_thaws(agent, victim_cgroup):
    name, path, child = victim_cgroup
    fault = agent.inject("pause", "--cgroup", name, "--ttl", "2s")
    assert fault["target"]["freeze"]["cgroup"] == "/" + name
    assert fault["target"]["freeze"]["pids"] == [child.pid]
    assert events(path)["frozen"] == "1"
    assert (path / "cgroup.freeze").read_text().strip() == "1"
    # A second pause of the same cgroup is a conflict.
    again = agent.ctl("inject", "pause", "--cgroup", str(path), "--ttl", "2s")
    assert again.rc == 3, str(again)
    wait_until(lambda: events(path)["frozen"] == "0", 6, what="thaw at the deadline")
    assert is_running(child.pid)


def test_kill_by_cgroup_uses_cgroup_kill(agent, victim_cgroup):
    name, path, child = victim_cgroup
    fault = agent.inject("kill", "--cgroup", str(path), "--ttl", "5s")
    assert [p["pid"] for p in fault["target"]["processes"]] == [child.pid]
    wait_until(lambda: child.poll() is not None, 3, what="the child to die")
    assert child.returncode == -9
    assert (path / "cgroup.procs").read_text().strip() == ""


def test_pause_by_cgroup_refusals(agent, victim_cgroup):
    name, path, child = victim_cgroup
    for args, rc in [
        (["--cgroup", "/"], 3),
        (["--cgroup", "/no-such-cgroup-here"], 3),
        (["--unit", "no-such-unit.service"], 3),
        (["--cgroup", "../etc"], 2),
    ]:
        r = agent.ctl("inject", "pause", *args, "--ttl", "5s")
        assert r.rc == rc, str(r)
    assert events(path)["frozen"] == "0"
    assert is_running(child.pid)
    assert agent.active_faults() == []


def test_kill_by_cgroup_with_another_signal_goes_through_pidfds(agent, victim_cgroup, victims):
    name, path, child = victim_cgroup
    second = victims.spawn()
    (path / "cgroup.procs").write_text(str(second.pid))
    fault = agent.inject("kill", "--cgroup", name, "--signal", "TERM", "--ttl", "5s")
    assert sorted(p["pid"] for p in fault["target"]["processes"]) == sorted([child.pid, second.pid])
    assert fault["target"]["signal"] == "SIGTERM"
    wait_until(lambda: child.poll() is not None and second.poll() is not None, 3, what="both children to die")
    assert child.returncode == -15 and second.returncode == -15


def test_pause_by_cgroup_survives_sigkill_via_reap(agent, victim_cgroup):
    name, path, child = victim_cgroup
    agent.inject("pause", "--cgroup", name, "--ttl", "1m")
    assert events(path)["frozen"] == "1"
    agent.kill9()
    assert events(path)["frozen"] == "1"  # SIGKILL reverted nothing
    r = agent.reap()
    assert r.rc == 0, str(r)
    assert events(path)["frozen"] == "0"
    assert f"cgroup /{name} (frozen)" in r.out, r.out
    assert is_running(child.pid)


@pytest.mark.parametrize("args,words", [
    (["cpu", "--ttl", "5s"], "--load"),
    (["cpu", "--load", "fast", "--ttl", "5s"], "--load"),
    (["memory", "--size", "lots", "--ttl", "5s"], "--size"),
    (["io", "--path", "/tmp", "--ttl", "5s"], "--write-rate"),
    (["disk-fill", "--path", "/tmp", "--size", "1MiB", "--leave-free", "1GiB", "--ttl", "5s"], "--leave-free"),
    (["squeeze", "--cpu-max", "20%", "--ttl", "5s"], "--cgroup"),
    (["squeeze", "--cgroup", "/x", "--ttl", "5s"], "--cpu-max"),
    (["pause", "--pid", "1", "--cgroup", "/x", "--ttl", "5s"], "only one"),
])
def test_resource_flags_are_checked_by_the_cli(agent, args, words):
    r = agent.ctl("inject", *args)
    assert r.rc == 2, str(r)
    assert words in r.err, str(r)
    assert agent.active_faults() == []


def test_stress_kinds_refused_on_a_hybrid_host(agent):
    status = agent.http("GET", "/v1/status").json
    if "cpu" in status["host"].get("cgroupControllers", []):
        pytest.skip("this host has the cpu controller in cgroup v2")
    for args in (["cpu", "--load", "50%"], ["memory", "--size", "64MiB"], ["io", "--path", "/tmp", "--write-rate", "1MB/s"]):
        r = agent.ctl("inject", *args, "--ttl", "5s")
        assert r.rc == 3, str(r)
        assert "controller" in r.err and "cgroup v1" in r.err, str(r)


def test_disk_fill_left_by_a_lost_journal_is_removed_at_start(agent, tmpfs):
    """A reboot wipes the journal (/run is tmpfs) but not a fill file on a persistent disk: the registry under
    /var/lib/chaos-agent still names it, and the next start removes it."""
    agent.inject("disk-fill", "--path", str(tmpfs), "--size", "16MiB", "--ttl", "1m")
    assert len(fill_files(tmpfs)) == 1
    agent.kill9()
    for p in Path(agent.state_dir).iterdir():  # what a reboot does to /run/chaos-agent
        if p.is_file() and p.name != "lock":
            p.unlink()
    agent.start()
    assert fill_files(tmpfs) == [], "the orphan fill file survived the start"
    assert "orphan disk-fill file" in agent.log()

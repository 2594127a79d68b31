"""The journal survives a full state dir; a fault that can never be reverted does not stay stuck; disk-fill refuses
RAM-backed file systems (issue 10, items 5, 4, 11). Ownership (item 8) is in test_network.py."""
import json
import os
import subprocess
import time
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from chaoslib import is_running, is_stopped


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def pause_request(pid, ttl="1m"):
    return {"kind": "pause", "ttl": ttl, "spec": {"pid": pid}}


def fill_up(directory: Path) -> Path:
    """Writes zeros into `directory` until its file system says ENOSPC."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * 512
        while True:
            try:
                f.write(chunk)
            except OSError:
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    return filler


@pytest.fixture
def small_state(make_agent):
    """An agent (not started) whose state dir is a 64 KiB tmpfs of its own."""
    d = make_agent(start=False)
    os.makedirs(d.state_dir, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", d.state_dir)
    yield d
    if d.alive():
        d.stop()
    sh("umount", "-l", d.state_dir, check=False)


def test_full_state_dir_refuses_a_fault_then_the_next_one_survives_sigkill(small_state, victims):
    agent = small_state
    agent.start()
    first = victims.spawn()
    r = agent.http("POST", "/v1/faults", pause_request(first.pid))
    assert r.status == 201, (r.status, r.body)
    filler = fill_up(Path(agent.state_dir))
    journal = Path(agent.state_dir) / "journal.log"
    # The journal's last page may still hold an intent or two (tmpfs allocates whole pages): faults apply until an
    # intent no longer fits, usually half-written first (a short write, then ENOSPC).
    paused = [first]
    for _ in range(20):
        refused = victims.spawn()
        before = journal.read_bytes()
        r = agent.http("POST", "/v1/faults", pause_request(refused.pid))
        if r.status != 201:
            break
        paused.append(refused)
    # No room for the intent: refused clearly, nothing applied, and the journal is exactly as it was.
    assert r.status == 507, (r.status, r.body)
    assert r.json["error"]["code"] == "state-not-writable"
    assert "state dir not writable" in r.json["error"]["message"]
    assert is_running(refused.pid)
    assert journal.read_bytes() == before, "a failed append left bytes in the journal"
    # Room again: the next fault applies, and a SIGKILL + restart reverts it (its intent was a whole line).
    filler.unlink()
    second = victims.spawn()
    r = agent.http("POST", "/v1/faults", pause_request(second.pid))
    assert r.status == 201, (r.status, r.body)
    assert is_stopped(second.pid) and all(is_stopped(v.pid) for v in paused)
    agent.kill9()
    time.sleep(0.2)
    assert is_stopped(second.pid)
    agent.start()
    assert is_running(second.pid) and is_running(refused.pid)
    assert all(is_running(v.pid) for v in paused)
    assert "journal-repair" not in agent.log(), agent.log()
    assert agent.active_faults() == []


def test_reverts_go_on_while_the_state_dir_is_full(small_state, victims):
    agent = small_state
    agent.start()
    child = victims.spawn()
    fault = agent.http("POST", "/v1/faults", pause_request(child.pid)).json
    filler = fill_up(Path(agent.state_dir))
    r = agent.http("DELETE", f"/v1/faults/{fault['id']}")
    assert r.status == 200, (r.status, r.body)
    assert is_running(child.pid)
    filler.unlink()
    # The revert's state record may be missing (best effort), but the journal holds only whole lines: a restart
    # finds no torn line, and reverting the pause again is harmless.
    agent.kill9()
    agent.start()
    assert "journal-repair" not in agent.log(), agent.log()
    assert is_running(child.pid)


def test_disk_fill_with_a_nul_in_path_is_refused_with_400_and_nothing_sticks(agent, workdir):
    for path in ["/tmp\u0000x", str(workdir) + "\u0000", str(workdir) + "/\n"]:
        r = agent.http("POST", "/v1/faults", {"kind": "disk-fill", "ttl": "30s", "spec": {"path": path, "size": "1MiB"}})
        assert r.status == 400, (path, r.status, r.body)
        assert r.json["error"]["field"] == "spec.path"
    for path in ["/tmp\u0000x"]:
        r = agent.http("POST", "/v1/faults", {"kind": "io", "ttl": "30s", "spec": {"path": path, "writeRate": "1MB/s"}})
        assert r.status in (400, 422), (r.status, r.body)
    assert agent.faults() == []
    assert agent.stop() == 0
    r = agent.reap()
    assert r.rc == 0, str(r)


def journal_line(record: dict) -> bytes:
    body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def old_intent(fid, kind, plan, spec):
    now = datetime.now(timezone.utc)
    fmt = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"type": "intent", "id": fid, "at": fmt(now), "kind": kind, "spec": spec, "target": plan, "plan": plan,
            "claims": [], "owner": "unix:root", "createdAt": fmt(now), "expiresAt": fmt(now + timedelta(minutes=1)),
            "ttl": "1m", "state": "applying"}


def test_stuck_reverts_from_an_old_journal_end_and_reap_exits_0(make_agent, workdir):
    """What the old code journaled: a disk-fill whose plan names `<dir>\\0x/.chaos-agent-fill-...` (the kernel sees the
    directory), and a plan this version cannot read. Neither may stay `reverting` for ever."""
    d = make_agent(start=False)
    os.makedirs(d.state_dir, exist_ok=True)
    target = Path(workdir) / "keep"
    target.mkdir()
    nul_plan = {"path": f"{target}\u0000x", "file": f"{target}\u0000x/.chaos-agent-fill-0000", "bytes": 1048576,
                "freeBefore": 0, "device": 0}
    lines = journal_line(old_intent("f-00000000nul0", "disk-fill", nul_plan, {"path": f"{target}\u0000x", "size": "1MiB"}))
    lines += journal_line(old_intent("f-0000000bad00", "disk-fill", {"unknown": True}, {"path": "/tmp", "size": "1MiB"}))
    (Path(d.state_dir) / "journal.log").write_bytes(lines)
    r = d.reap()
    assert r.rc == 0, str(r)
    assert target.is_dir(), "the revert removed a directory"
    assert "f-0000000bad00" in r.out and "failed" in r.out, r.out
    again = d.reap()
    assert again.rc == 0 and "nothing to revert" in again.out, str(again)
    d.start()
    assert d.active_faults() == []


def test_disk_fill_on_memory_backed_file_systems_is_refused_with_422(agent, workdir):
    private = Path(workdir) / "ram"
    private.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", str(private))
    try:
        for path in ["/dev/shm", str(private)]:
            r = agent.http("POST", "/v1/faults", {"kind": "disk-fill", "ttl": "30s", "spec": {"path": path, "size": "1MiB"}})
            assert r.status == 422, (path, r.status, r.body)
            msg = r.json["error"]["message"]
            assert "tmpfs" in msg and "f_type 0x1021994" in msg and "allow-memory-backed" in msg, msg
        assert not [p for p in private.iterdir()]
        assert agent.faults() == []
    finally:
        sh("umount", "-l", str(private), check=False)


def test_memory_backed_fill_when_allowed_is_bounded_by_the_memory_reserve(make_agent, workdir):
    agent = make_agent(config='[policy]\nmax-ttl = "2m"\n[disk-fill]\nallow-memory-backed = true\n')
    private = Path(workdir) / "ram"
    private.mkdir()
    mem = {l.split(":")[0]: int(l.split()[1]) * 1024 for l in open("/proc/meminfo")}
    # A tmpfs larger than what the memory reserve lets a fill take.
    size = mem["MemTotal"] * 2
    sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(private))
    try:
        r = agent.http("POST", "/v1/faults", {"kind": "disk-fill", "ttl": "30s",
                                              "spec": {"path": str(private), "size": str(mem["MemAvailable"])}})
        assert r.status == 422, (r.status, r.body)
        assert "takes memory" in r.json["error"]["message"], r.body
        r = agent.http("POST", "/v1/faults", {"kind": "disk-fill", "ttl": "30s", "spec": {"path": str(private), "size": "8MiB"}})
        assert r.status == 201, (r.status, r.body)
        agent.http("DELETE", f"/v1/faults/{r.json['id']}")
    finally:
        sh("umount", "-l", str(private), check=False)


def test_an_agent_restarted_on_a_full_state_dir_still_reverts(small_state, victims):
    agent = small_state
    agent.start()
    child = victims.spawn()
    r = agent.http("POST", "/v1/faults", pause_request(child.pid))
    assert r.status == 201, (r.status, r.body)
    agent.kill9()
    (Path(agent.state_dir) / "instance.json").unlink()  # even its marks must be rewritten: they cannot be
    filler = fill_up(Path(agent.state_dir))
    agent.start()
    assert is_running(child.pid)
    # With room again new faults work.
    filler.unlink()
    again = victims.spawn()
    r = agent.http("POST", "/v1/faults", pause_request(again.pid))
    assert r.status == 201, (r.status, r.body)

"""Network faults on this host's kernel (no netem, no prio): refused with 422 and the reason, nothing changed; and
start-up reconciliation / reap removing a qdisc with the agent's reserved handle that no journal entry explains.
The effect of network faults is measured in the VM layer (tests/vm/cases/20-network-egress.sh)."""
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from chaoslib import AGENTD, wait_until


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


@pytest.fixture
def netns():
    name = "cat-" + uuid.uuid4().hex[:8]
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    sh("ip", "-n", name, "link", "set", "v0", "up")
    yield name
    sh("ip", "netns", "del", name, check=False)


def tree(ns):
    return sh("tc", "-n", ns, "qdisc", "show", "dev", "v0").stdout


def test_status_says_what_tc_pieces_this_kernel_has(agent):
    status = agent.ctl("--json", "status").json
    tc = status["host"]["trafficControl"]
    assert set(tc) >= {"netem", "prio", "tbf", "u32", "flower", "ifb", "mirred", "clsact"}
    network = next(k for k in status["kinds"] if k["kind"] == "network")
    if not tc["netem"] or not tc["prio"]:
        assert network["available"] is False
        assert "netem" in network["reason"] or "prio" in network["reason"]


def test_network_fault_refused_with_422_when_the_kernel_lacks_netem(agent, netns):
    status = agent.ctl("--json", "status").json
    if status["host"]["trafficControl"]["netem"]:
        pytest.skip("this kernel has netem; the VM layer covers the fault itself")
    before = tree(netns)
    r = agent.ctl("inject", "network", "--netns", netns, "--interface", "v0", "--delay", "100ms", "--ttl", "30s")
    assert r.rc == 3, str(r)
    assert "netem" in r.err or "prio" in r.err, str(r)
    raw = agent.http("POST", "/v1/faults", {"kind": "network", "ttl": "30s",
                                            "spec": {"netns": netns, "interface": "v0", "delay": "100ms"}})
    assert raw.status == 422, raw
    assert raw.json["error"]["code"] == "unsupported"
    assert tree(netns) == before
    assert agent.ctl("--json", "list").json["faults"] == []


def test_cli_refuses_bad_network_flags_before_asking(agent):
    for args in (["--loss", "101"], ["--rate", "fast"], ["--delay", "5parsecs"]):
        r = agent.ctl("inject", "network", "--interface", "lo", *args, "--ttl", "30s")
        assert r.rc == 2, str(r)


def test_reap_removes_an_orphan_qdisc_with_our_handle(workdir, netns):
    # A root qdisc with this instance's major that no journal knows: what a run whose journal was lost leaves. (Each
    # state dir is its own instance with its own majors, in <state dir>/instance.json; 4341: is the default one's.)
    state = workdir / f"state-{uuid.uuid4().hex[:6]}"
    r = subprocess.run([str(AGENTD), "reap", "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    major = instance_major(state)
    sh("tc", "-n", netns, "qdisc", "add", "dev", "v0", "root", "handle", major, "tbf", "rate", "1mbit", "burst",
       "32kb", "latency", "50ms")
    assert major in tree(netns)
    r = subprocess.run([str(AGENTD), "reap", "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "removed (no journal entry)" in r.stdout and "v0" in r.stdout and netns in r.stdout, r.stdout
    assert major not in tree(netns), tree(netns)


def test_reap_leaves_foreign_qdiscs_alone(workdir, netns):
    sh("tc", "-n", netns, "qdisc", "add", "dev", "v0", "root", "handle", "8123:", "tbf", "rate", "1mbit", "burst",
       "32kb", "latency", "50ms")
    before = tree(netns)
    state = workdir / f"state-{uuid.uuid4().hex[:6]}"
    r = subprocess.run([str(AGENTD), "reap", "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert tree(netns) == before


# Ownership: each agent instance (state dir) marks its trees with its own majors; reconciling removes only its own.
def instance_major(state_dir) -> str:
    info = json.loads((Path(state_dir) / "instance.json").read_text())
    return "%x:" % info["tcMajor"]


def reap_dir(state_dir):
    return subprocess.run([str(AGENTD), "reap", "--state-dir", str(state_dir)], capture_output=True, text=True, timeout=60)


def test_two_agents_side_by_side_never_remove_each_others_network_trees(make_agent, netns):
    a = make_agent()
    major_a = instance_major(a.state_dir)
    # A's tree on a veth (this kernel has no prio/netem, so its root stands for A's whole fault tree).
    sh("tc", "-n", netns, "qdisc", "add", "dev", "v0", "root", "handle", major_a, "tbf", "rate", "1mbit", "burst",
       "32kb", "latency", "50ms")
    assert major_a in tree(netns)
    # A second agent (another state dir) starts, and its reap runs: A's tree stays.
    b = make_agent()
    major_b = instance_major(b.state_dir)
    assert major_b != major_a
    assert major_a in tree(netns), tree(netns)
    b.stop()
    r = reap_dir(b.state_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert netns not in r.stdout, r.stdout
    assert major_a in tree(netns), tree(netns)
    # The same instance after a restart has the same marks, so A's own reap does remove its leftover.
    a.stop()
    r = reap_dir(a.state_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert instance_major(a.state_dir) == major_a
    assert "removed (no journal entry)" in r.stdout and netns in r.stdout, r.stdout
    assert major_a not in tree(netns), tree(netns)


def test_the_default_instance_marks_are_left_alone_by_a_test_instance(workdir, netns):
    # 4341: is the default state dir's (the production agent's) root major.
    sh("tc", "-n", netns, "qdisc", "add", "dev", "v0", "root", "handle", "4341:", "tbf", "rate", "1mbit", "burst",
       "32kb", "latency", "50ms")
    r = reap_dir(Path(workdir) / f"state-{uuid.uuid4().hex[:6]}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4341:" in tree(netns), tree(netns)

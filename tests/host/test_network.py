"""Network faults on this host's kernel (no netem, no prio): refused with 422 and the reason, nothing changed; and
start-up reconciliation / reap removing a qdisc with the agent's reserved handle that no journal entry explains.
The effect of network faults is measured in the VM layer (tests/vm/cases/20-network-egress.sh)."""
import subprocess
import uuid

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
    # A root qdisc with our reserved major (4341:) that no journal knows: what a run whose state dir was lost leaves.
    sh("tc", "-n", netns, "qdisc", "add", "dev", "v0", "root", "handle", "4341:", "tbf", "rate", "1mbit", "burst",
       "32kb", "latency", "50ms")
    assert "4341:" in tree(netns)
    state = workdir / f"state-{uuid.uuid4().hex[:6]}"
    r = subprocess.run([str(AGENTD), "reap", "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "removed (no journal entry)" in r.stdout and "v0" in r.stdout and netns in r.stdout, r.stdout
    assert "4341:" not in tree(netns), tree(netns)


def test_reap_leaves_foreign_qdiscs_alone(workdir, netns):
    sh("tc", "-n", netns, "qdisc", "add", "dev", "v0", "root", "handle", "8123:", "tbf", "rate", "1mbit", "burst",
       "32kb", "latency", "50ms")
    before = tree(netns)
    state = workdir / f"state-{uuid.uuid4().hex[:6]}"
    r = subprocess.run([str(AGENTD), "reap", "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert tree(netns) == before

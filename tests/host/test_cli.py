"""CLI surface against the real daemon: help, status, output formats."""
import json
import re

import pytest

from chaoslib import run_ctl


@pytest.mark.parametrize("args", [["--help"], ["inject", "--help"], ["inject", "pause", "--help"],
                                  ["inject", "kill", "--help"], ["list", "--help"], ["events", "--help"],
                                  ["help", "revert"], ["inject", "cpu", "--help"], ["inject", "memory", "--help"],
                                  ["inject", "io", "--help"], ["inject", "disk-fill", "--help"],
                                  ["inject", "squeeze", "--help"]])
def test_help_exits_0_and_teaches(args):
    r = run_ctl(None, *args)
    assert r.rc == 0, str(r)
    assert "USAGE:" in r.out
    assert "chaos-agentctl " in r.out.split("USAGE:")[0], "no examples before the usage line"


def test_root_help_explains_units_and_exit_codes():
    out = run_ctl(None, "--help").out
    for word in ("250ms", "1h30m", "256MiB", "EXIT STATUS", "refused", "not found", "unreachable"):
        assert word in out, word


def test_status(agent):
    r = agent.ctl("status")
    assert r.rc == 0, str(r)
    assert re.search(r"^pid:\s+%d$" % agent.pid, r.out, re.M), r.out
    assert re.search(r"^socket:\s+%s$" % re.escape(agent.socket), r.out, re.M), r.out
    assert re.search(r"^pause\s+yes", r.out, re.M) and re.search(r"^kill\s+yes", r.out, re.M), r.out
    j = agent.ctl("--json", "status").json
    assert j["pid"] == agent.pid
    assert j["maxTTL"] == "2m"
    assert {k["kind"]: k["available"] for k in j["kinds"]}.get("pause") is True


def test_json_is_pretty_and_sorted(agent, victims):
    child = victims.spawn()
    r = agent.ctl("--json", "inject", "pause", "--pid", str(child.pid), "--ttl", "30s")
    assert r.rc == 0, str(r)
    obj = json.loads(r.out)
    assert r.out.count("\n") > 5, "not pretty-printed"
    keys = re.findall(r'^  "([a-zA-Z]+)"', r.out, re.M)
    assert keys == sorted(keys), keys
    # The global flags work after the subcommand too.
    listed = agent.ctl("list", "--json")
    assert listed.rc == 0
    assert [f["id"] for f in listed.json["faults"]] == [obj["id"]]
    assert agent.ctl("revert", obj["id"]).rc == 0


def test_inject_prints_only_the_id(agent, victims):
    child = victims.spawn()
    r = agent.ctl("inject", "pause", "--pid", str(child.pid), "--ttl", "30s", "--label", "a=b", "--label", "c=d=e")
    assert r.rc == 0, str(r)
    assert re.fullmatch(r"f-[0-9a-z]+\n", r.out), repr(r.out)
    fault = agent.fault(r.out.strip())
    assert fault["labels"] == {"a": "b", "c": "d=e"}
    assert fault["spec"] == {"pid": child.pid}
    got = agent.ctl("get", fault["id"])
    assert re.search(r"^labels:\s+a=b,c=d=e$", got.out, re.M), got.out
    assert agent.ctl("revert", fault["id"]).rc == 0


def test_socket_from_environment(agent):
    r = run_ctl(None, "status", env={"CHAOS_AGENT_SOCKET": agent.socket})
    assert r.rc == 0, str(r)


def test_fault_object_carries_every_contract_field(agent, victims):
    # interface.md: "A fault object carries at least: id, kind, spec, target, state, createdAt, expiresAt,
    # revertedAt, owner, labels, error" (docs/api.md shows "revertedAt": null and "error": null while active).
    child = victims.spawn()
    r = agent.http("POST", "/v1/faults", {"kind": "pause", "ttl": "30s", "spec": {"pid": child.pid}})
    assert r.status == 201, r.body
    fault = r.json
    required = {"id", "kind", "spec", "target", "state", "createdAt", "expiresAt", "revertedAt", "owner", "labels",
                "error"}
    assert required <= set(fault), f"missing: {sorted(required - set(fault))}"
    assert fault["revertedAt"] is None and fault["error"] is None
    assert agent.ctl("revert", fault["id"]).rc == 0

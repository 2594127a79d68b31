"""200 concurrent mutual-TLS clients injecting and reverting pause faults for 30 s: afterwards the lease table, the
journal and the host agree that nothing is left."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from chaoslib import is_running, proc_state, short_tempdir, wait_until
from remotelib import TLSClient, free_port, make_certs, remote_config

CLIENTS = 200
SECONDS = 30


@pytest.fixture(scope="module")
def load_certs():
    d = short_tempdir()
    yield make_certs(d)
    shutil.rmtree(d, ignore_errors=True)


def journal_leases(state_dir: str) -> dict:
    """Folds journal.log (`CRC32 JSON` lines) into {id: last state}."""
    states = {}
    for line in (Path(state_dir) / "journal.log").read_text().splitlines():
        rec = json.loads(line.split(" ", 1)[1])
        if rec["type"] == "intent":
            states[rec["id"]] = rec.get("state", "applying")
        elif rec["type"] == "state" and rec["id"] in states:
            states[rec["id"]] = rec["state"]
    return states


def test_200_clients_for_30s_leave_everything_consistent(make_agent, victims, load_certs):
    port = free_port()
    # 200 clients from one address, all handshaking at once: over the defaults (32 per peer, 64 handshakes), which a
    # deployment with this many clients behind one address raises just so.
    agent = make_agent(config=remote_config(load_certs, port, max_ttl="5m")
                       + "[connections]\nper-peer = 256\nhandshakes = 256\n")
    wait_until(lambda: "listening (mutual TLS)" in agent.log(200), 10, what="TLS listener")
    kids = [victims.spawn() for _ in range(CLIENTS)]
    stop_at = time.monotonic() + SECONDS
    ops = [0] * CLIENTS
    problems: list[str] = []
    start = threading.Barrier(CLIENTS)

    def client(i: int):
        c = TLSClient(load_certs, port, "operator", timeout=60)
        try:
            start.wait()
            while time.monotonic() < stop_at:
                r = c.request("POST", "/v1/faults", {"kind": "pause", "ttl": "60s", "spec": {"pid": kids[i].pid},
                                                     "labels": {"client": str(i)}})
                if r.status != 201:
                    problems.append(f"client {i}: inject {r.status} {r.body[:200]!r}")
                    return
                d = c.request("DELETE", f"/v1/faults/{r.json['id']}")
                if d.status != 200 or d.json["state"] != "reverted":
                    problems.append(f"client {i}: revert {d.status} {d.body[:200]!r}")
                    return
                ops[i] += 1
        except Exception as e:  # noqa: BLE001 - any transport failure is a finding
            problems.append(f"client {i}: {type(e).__name__}: {e}")
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SECONDS + 120)
    elapsed = time.monotonic() - t0
    total = sum(ops)
    print(f"{CLIENTS} TLS clients, {elapsed:.1f}s: {total} inject+revert pairs ({total / elapsed:.1f}/s), "
          f"min per client {min(ops)}, max {max(ops)}")
    assert not problems, problems[:10]
    assert all(n >= 1 for n in ops), "a client never completed a pair"
    # Lease table: nothing live.
    assert agent.active_faults() == []
    # Journal: every lease it names ended reverted.
    left = {k: v for k, v in journal_leases(agent.state_dir).items() if v not in ("reverted", "failed")}
    assert left == {}, list(left.items())[:5]
    # Host: every victim runs.
    stopped = [k.pid for k in kids if not is_running(k.pid)]
    assert stopped == [], [(p, proc_state(p)) for p in stopped[:5]]
    assert agent.healthz() == 200

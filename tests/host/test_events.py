"""events: applied then reverted, as JSON lines and as text."""
import json
import subprocess

from chaoslib import AGENTCTL, LineReader, is_running


def follow(agent, *args):
    return subprocess.Popen([str(AGENTCTL), "--socket", agent.socket, "events", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def read_until(reader, pred, timeout=15):
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = reader.next(timeout=max(0.1, end - time.monotonic()))
        if line is None:
            break
        if pred(line):
            return line
    raise AssertionError(f"not seen; lines so far: {reader.lines}")


def test_events_json_shows_applied_then_reverted(agent, victims):
    child = victims.spawn()
    # --since 0 replays what the agent buffered, so nothing is lost to the subscription race.
    p = follow(agent, "--json", "--since", "0")
    try:
        reader = LineReader(p.stdout)
        fault = agent.inject("pause", "--pid", str(child.pid), "--ttl", "1s")
        events = []

        def mine(line):
            e = json.loads(line)
            if e["fault"]["id"] == fault["id"]:
                events.append(e)
            return e["type"] == "reverted" and e["fault"]["id"] == fault["id"]

        read_until(reader, mine)
        assert [e["type"] for e in events] == ["applied", "reverted"], events
        assert events[0]["seq"] < events[1]["seq"]
        assert events[0]["fault"]["state"] == "active"
        assert events[1]["fault"]["state"] == "reverted"
        assert is_running(child.pid)
        assert p.poll() is None, "events stopped following"

        # Replay from the applied event's seq gives just the later one.
        q = follow(agent, "--json", "--since", str(events[0]["seq"]))
        try:
            r2 = LineReader(q.stdout)
            first = json.loads(r2.next(timeout=10))
            assert first["seq"] == events[1]["seq"] and first["type"] == "reverted"
        finally:
            q.terminate()
            q.wait(timeout=5)
    finally:
        p.terminate()
        p.wait(timeout=5)


def test_events_text_lines(agent, victims):
    child = victims.spawn()
    p = follow(agent, "--since", "0")
    try:
        reader = LineReader(p.stdout)
        fault = agent.inject("pause", "--pid", str(child.pid), "--ttl", "1m")
        line = read_until(reader, lambda l: fault["id"] in l and " applied " in l)
        assert f"pid {child.pid} (sleep)" in line
        assert agent.ctl("revert", fault["id"]).rc == 0
        read_until(reader, lambda l: fault["id"] in l and " reverted " in l)
    finally:
        p.terminate()
        p.wait(timeout=5)


def test_events_ends_with_5_when_the_agent_stops(agent):
    p = follow(agent)
    try:
        import time
        time.sleep(0.5)
        assert agent.stop() == 0
        assert p.wait(timeout=10) == 5
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

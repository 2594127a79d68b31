"""Helpers for the host-privileged end-to-end suite: a real chaos-agentd, the real chaos-agentctl, real processes."""
from __future__ import annotations

import datetime
import http.client
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHAOS_BIN = Path(os.environ.get("CHAOS_BIN", REPO / ".build" / "debug"))
AGENTD = Path(os.environ.get("CHAOS_AGENTD", CHAOS_BIN / "chaos-agentd"))
AGENTCTL = Path(os.environ.get("CHAOS_AGENTCTL", CHAOS_BIN / "chaos-agentctl"))

SLEEP = shutil.which("sleep") or "/bin/sleep"


# ---------------------------------------------------------------------------------------------------------- polling

def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Polls `predicate` until it returns something truthy; returns it, or raises AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def parse_time(text: str) -> float:
    """RFC 3339 (`2026-11-23T04:00:00.123456Z`) to a Unix timestamp."""
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    return datetime.datetime.fromisoformat(text).timestamp()


# -------------------------------------------------------------------------------------------------------- processes

def proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat (field 3, after the last ')'), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(")") + 2:].split()[0]


def is_stopped(pid: int) -> bool:
    return proc_state(pid) == "T"


def is_running(pid: int) -> bool:
    """Alive and not stopped (sleeping `S` or running `R`)."""
    return proc_state(pid) in ("S", "R", "D")


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


class Victims:
    """Real child processes to target. Teardown resumes (SIGCONT) and kills every one, then reaps it."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def spawn(self, name: str | None = None, seconds: int = 600) -> subprocess.Popen:
        """`sleep`, or a copy of it called `name` so that its comm (and command line) is unique."""
        exe = SLEEP
        if name is not None:
            assert len(name) <= 15, "comm is at most 15 characters"
            exe = str(self.workdir / name)
            if not os.path.exists(exe):
                shutil.copy(SLEEP, exe)
                os.chmod(exe, 0o755)
        p = subprocess.Popen([exe, str(seconds)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        wait_until(lambda: proc_state(p.pid) == "S" and (name is None or comm(p.pid) == name), 5,
                   what=f"child {p.pid} to start")
        return p

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(p.pid, sig)
                    except ProcessLookupError:
                        pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


# ------------------------------------------------------------------------------------------------------------- HTTP

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


@dataclass
class HTTPResult:
    status: int
    headers: dict
    body: bytes

    @property
    def json(self):
        return json.loads(self.body) if self.body else None


def http_request(sock_path: str, method: str, path: str, body=None, headers: dict | None = None,
                 timeout: float = 10) -> HTTPResult:
    """One request over the Unix socket. `body` may be bytes, str, or anything JSON-encodable."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    hdrs = {"Connection": "close"}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn = UnixHTTPConnection(sock_path, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return HTTPResult(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def http_raw(sock_path: str, request: bytes, timeout: float = 10) -> HTTPResult:
    """Writes `request` as is (tolerating the server hanging up mid-body), reads the answer until EOF or a full body."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    try:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                hdrs = _parse_headers(head)
                n = hdrs.get("content-length")
                if n is not None and len(rest) >= int(n):
                    break
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head, "no answer at all"
    status = int(head.split(b" ", 2)[1])
    hdrs = _parse_headers(head)
    n = hdrs.get("content-length")
    return HTTPResult(status, hdrs, rest[: int(n)] if n is not None else rest)


def _parse_headers(head: bytes) -> dict:
    out = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.decode(errors="replace").partition(":")
        out[k.strip().lower()] = v.strip()
    return out


# -------------------------------------------------------------------------------------------------------------- CLI

@dataclass
class CtlResult:
    rc: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)

    def __str__(self):
        return f"rc={self.rc}\n--- stdout\n{self.out}--- stderr\n{self.err}"


def run_ctl(sock_path: str | None, *args: str, timeout: float = 30, env: dict | None = None,
            prefix: list[str] | None = None, binary: Path | str | None = None) -> CtlResult:
    """Runs chaos-agentctl (optionally under `prefix`, e.g. setpriv) and captures exit code, stdout and stderr."""
    cmd = list(prefix or []) + [str(binary or AGENTCTL)]
    if sock_path is not None:
        cmd += ["--socket", sock_path]
    cmd += list(args)
    full_env = dict(os.environ)
    full_env.pop("CHAOS_AGENT_SOCKET", None)
    full_env.update(env or {})
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=full_env)
    return CtlResult(p.returncode, p.stdout, p.stderr)


class LineReader:
    """Reads a child's stdout lines on a thread so tests can wait for them with a timeout."""

    def __init__(self, stream):
        self.q: queue.Queue = queue.Queue()
        self.lines: list[str] = []
        t = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        t.start()

    def _pump(self, stream):
        for line in stream:
            self.q.put(line)
        self.q.put(None)

    def next(self, timeout: float) -> str | None:
        line = self.q.get(timeout=timeout)
        if line is not None:
            self.lines.append(line)
        return line


# ----------------------------------------------------------------------------------------------------------- daemon

class Daemon:
    """A real chaos-agentd with its own socket, state dir and config under a private temp dir."""

    def __init__(self, workdir: Path, config: str = "", name: str = "a", args: tuple[str, ...] = ()):
        self.args = tuple(args)
        self.dir = workdir / f"agent-{name}"
        self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.socket = str(self.dir / "agent.sock")
        self.state_dir = str(self.dir / "state")
        self.config_path = self.dir / "agent.toml"
        self.config_path.write_text(config)
        self.log_path = self.dir / "agentd.log"
        self.proc: subprocess.Popen | None = None
        self.exit_codes: list[int] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        return [str(AGENTD), "run", "--socket", self.socket, "--state-dir", self.state_dir,
                "--config", str(self.config_path), *self.args]

    def spawn(self):
        """Starts the daemon without waiting for it."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()

    def start(self, timeout: float = 20):
        self.spawn()
        self.wait_healthy(timeout)
        return self

    def healthz(self) -> int | None:
        """The /healthz status, or None when nothing answers."""
        try:
            return http_request(self.socket, "GET", "/healthz", timeout=2).status
        except (OSError, http.client.HTTPException):
            return None

    def wait_healthy(self, timeout: float = 20):
        def ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"chaos-agentd exited with {self.proc.returncode}:\n{self.log()}")
            return self.healthz() == 200
        wait_until(ready, timeout, interval=0.05, what="chaos-agentd /healthz")

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then the exit code (SIGKILL and AssertionError if it takes longer than `timeout`)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"chaos-agentd did not exit within {timeout}s of SIGTERM:\n{self.log()}")
        rc = self.proc.returncode
        self.exit_codes.append(rc)
        return rc

    def watchdog_pid(self) -> int | None:
        """The agent's hang watchdog process (a child running `chaos-agentd watchdog`), if any."""
        assert self.proc is not None
        kids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                kids += [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                pass
        for k in kids:
            try:
                argv = Path(f"/proc/{k}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(argv) > 1 and argv[1] == b"watchdog":
                return k
        return None

    def kill9(self, watchdog: bool = True):
        """SIGKILL the agent. By default its hang watchdog dies first, as when systemd's final SIGKILL or the OOM
        killer takes the whole group: what is left to recover is the journal (reap, restart). `watchdog=False` leaves
        the watchdog alive, which then reverts everything by itself."""
        assert self.proc is not None
        if watchdog:
            wd = self.watchdog_pid()
            if wd is not None:
                os.kill(wd, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.exit_codes.append(self.proc.returncode)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, tail: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-tail:])

    # conveniences
    def ctl(self, *args: str, **kw) -> CtlResult:
        return run_ctl(self.socket, *args, **kw)

    def http(self, method: str, path: str, body=None, **kw) -> HTTPResult:
        return http_request(self.socket, method, path, body, **kw)

    def faults(self) -> list[dict]:
        r = self.http("GET", "/v1/faults")
        assert r.status == 200, r
        return r.json["faults"]

    def active_faults(self) -> list[dict]:
        return [f for f in self.faults() if f["state"] not in ("reverted", "failed")]

    def fault(self, fault_id: str) -> dict:
        r = self.http("GET", f"/v1/faults/{fault_id}")
        assert r.status == 200, (r.status, r.body)
        return r.json

    def inject(self, *args: str) -> dict:
        """`chaos-agentctl --json inject ...`, asserting success; returns the fault object."""
        r = self.ctl("--json", "inject", *args)
        assert r.rc == 0, str(r)
        return r.json

    def reap(self, *args: str, timeout: float = 30) -> CtlResult:
        p = subprocess.run([str(AGENTD), "reap", "--state-dir", self.state_dir, *args], capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return CtlResult(p.returncode, p.stdout, p.stderr)


def short_tempdir() -> Path:
    """A short, world-traversable temp dir (Unix socket paths are limited to 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="ca-", dir="/tmp"))
    os.chmod(d, 0o755)
    return d


def unique(prefix: str = "cv") -> str:
    """A unique process name of at most 15 characters."""
    return prefix + os.urandom(5).hex()

"""Fixtures for the host-privileged end-to-end suite (see README.md)."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from chaoslib import AGENTCTL, AGENTD, Daemon, Victims, short_tempdir

DEFAULT_CONFIG = '[policy]\nmax-ttl = "2m"\n'


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root: the daemon signals processes, creates root-owned sockets, "
                                       "and the tests switch users with setpriv")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def binaries():
    missing = [str(p) for p in (AGENTD, AGENTCTL) if not os.access(p, os.X_OK)]
    if missing and os.geteuid() == 0:
        pytest.fail(f"not built: {', '.join(missing)} (run 'swift build', or set CHAOS_BIN)", pytrace=False)


@pytest.fixture
def workdir():
    d = short_tempdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def victims(workdir):
    v = Victims(workdir)
    yield v
    v.cleanup()


@pytest.fixture
def make_agent(workdir, victims):
    """Factory: `make_agent(config=..., name=..., start=True)` -> a running Daemon.

    Teardown stops every daemon still running with SIGTERM and asserts it exits 0 within 10 s. It runs before the
    victims' teardown, so a daemon that fails to resume something is noticed before the processes are killed.
    """
    daemons: list[Daemon] = []

    def make(config: str = DEFAULT_CONFIG, name: str | None = None, start: bool = True,
             args: tuple[str, ...] = ()) -> Daemon:
        d = Daemon(workdir, config, name or chr(ord("a") + len(daemons)), args=args)
        daemons.append(d)
        if start:
            d.start()
        return d

    yield make

    problems = []
    for d in daemons:
        if d.alive():
            try:
                rc = d.stop(timeout=10)
                if rc != 0:
                    problems.append(f"{d.dir.name}: exit {rc} after SIGTERM")
            except AssertionError as e:
                problems.append(str(e))
        print(f"==== {d.dir.name} log (exit codes {d.exit_codes}) ====\n{d.log()}")
    assert not problems, "; ".join(problems)


@pytest.fixture
def agent(make_agent) -> Daemon:
    """One daemon with `[policy] max-ttl = "2m"`."""
    return make_agent()


@pytest.fixture(scope="session")
def public_ctl(tmp_path_factory) -> Path:
    """A copy of chaos-agentctl that `nobody` can execute (the repo may sit where nobody cannot traverse)."""
    d = Path(short_tempdir())
    dst = d / "chaos-agentctl"
    shutil.copy(AGENTCTL, dst)
    os.chmod(dst, 0o755)
    yield dst
    shutil.rmtree(d, ignore_errors=True)


def setpriv_nobody() -> list[str]:
    exe = shutil.which("setpriv")
    if exe is None:
        pytest.skip("setpriv (util-linux) not installed")
    return [exe, "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]


@pytest.fixture
def as_nobody():
    return setpriv_nobody()


def socket_mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)

"""Shared test setup: headless Chromium for dash[testing], Hypothesis profile, live servers."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def pytest_setup_options():
    """Chrome options for dash[testing]: Debian's chromium, headless, no network chatter."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1000"):
        options.add_argument(flag)
    return options


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServers:
    """A real ``crosslens serve`` (API + UI processes) on free loopback ports."""

    api_url: str
    ui_url: str
    login_link: str
    admin_token: str
    data_dir: Path
    process: subprocess.Popen
    log: list[str]


def start_servers(data_dir: Path, timeout_s: float = 180) -> LiveServers:
    api_port, ui_port = free_port(), free_port()
    env = {**os.environ, "CROSSLENS_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "serve", "--api-port", str(api_port),
         "--ui-port", str(ui_port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)
    log: list[str] = []
    link: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            if re.fullmatch(r"http://\S+/\?token=\S+", line.strip()):
                link.append(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not link:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("crosslens serve did not print a login link:\n" + "".join(log))
        time.sleep(0.2)
    token = link[0].rsplit("token=", 1)[1]
    return LiveServers(api_url=f"http://127.0.0.1:{api_port}",
                       ui_url=f"http://127.0.0.1:{ui_port}", login_link=link[0],
                       admin_token=token, data_dir=data_dir, process=proc, log=log)


def stop_servers(servers: LiveServers) -> None:
    import signal

    if servers.process.poll() is None:
        os.killpg(servers.process.pid, signal.SIGTERM)
        try:
            servers.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(servers.process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def live_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServers]:
    servers = start_servers(tmp_path_factory.mktemp("crosslens-data"))
    yield servers
    stop_servers(servers)


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    path = ARTIFACTS / request.node.module.__name__.rsplit(".", 1)[-1]
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- Postgres (DESIGN.md: "Postgres tested when available") ---------------------------------


def _pg_bin(name: str) -> str | None:
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a real Postgres: ``CROSSLENS_TEST_POSTGRES_URL`` if set, else a
    throwaway cluster started on a free loopback port (skipped where Postgres is missing)."""
    if os.environ.get("CROSSLENS_TEST_POSTGRES_URL"):
        yield os.environ["CROSSLENS_TEST_POSTGRES_URL"]
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no Postgres server binaries here; set CROSSLENS_TEST_POSTGRES_URL")
    import shutil
    import tempfile

    # Not pytest's tmp dir: its parents are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="crosslens-pg-"))
    data, port = root / "data", free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to own the cluster")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True,  # noqa: E731
                                      capture_output=True, text=True, timeout=120)
    run(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    run(pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)

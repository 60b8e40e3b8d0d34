"""Real processes for the session and service tests: a redis-server and `shoprouter serve` on free ports.

Both listen on 127.0.0.1 only, live in a temporary directory and are stopped by the tests that start them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_ROUTER = "tests.support_router:KeywordTestRouter"
# The API key the test servers accept (given to them in SHOPROUTER_API_KEYS) and the header that sends it.
TEST_KEY = "sr_test-key-for-the-service-tests-0123456789"
AUTH = {"authorization": f"Bearer {TEST_KEY}"}
REDIS_BIN = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS_BIN is None, reason="redis-server is not installed "
                                 "(apt-get install -y redis-server); the Redis store tests need a real server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:] if log else ''}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start in {timeout}s: {log.read_text()[-2000:] if log else ''}")


class RedisServer:
    """redis-server with appendonly yes + appendfsync always, its data in `directory`."""

    def __init__(self, directory: Path, port: int | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--protected-mode", "yes", "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            _wait(lambda: client.ping(), 15, "redis-server", self.proc, self.log)
        finally:
            client.close()
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


class Service:
    """`shoprouter serve` in a subprocess on 127.0.0.1."""

    def __init__(self, store: str, shop_db: Path, workdir: Path, router: str = TEST_ROUTER, port: int | None = None,
                 extra: list[str] | None = None, env: dict[str, str] | None = None):
        self.store, self.shop_db, self.workdir, self.router = store, shop_db, Path(workdir), router
        self.port = port or free_port()
        self.extra = extra or []
        # SHOPROUTER_API_KEYS=tester=TEST_KEY unless `env` says otherwise (a None value removes a variable)
        self.env = {"SHOPROUTER_API_KEYS": f"tester={TEST_KEY}", **(env or {})}
        self.headers = dict(AUTH)
        self.proc: subprocess.Popen | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / f"service-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               "SHOPROUTER_HOME": str(self.workdir / "home")}
        for k in ("SHOPROUTER_API_KEYS", "SHOPROUTER_KEYS_FILE", "SHOPROUTER_SESSION_SECRET",
                  "SHOPROUTER_PUBLIC_ROUTING", "SHOPROUTER_RETENTION_DAYS"):
            env.pop(k, None)
        for k, v in self.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        cmd = [sys.executable, "-c", "import sys; from shoprouter.cli import main; sys.exit(main(sys.argv[1:]))",
               "serve", "--host", "127.0.0.1", "--port", str(self.port), "--router", self.router,
               "--store", self.store, "--shop-db", str(self.shop_db), "--log-level", "warning", *self.extra]
        self._logfh = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=self._logfh, stderr=subprocess.STDOUT)
        _wait(lambda: httpx.get(self.url + "/healthz", timeout=1).status_code == 200, 60, "shoprouter serve",
              self.proc, self.log)
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._close_log()

    def _close_log(self) -> None:
        fh = getattr(self, "_logfh", None)
        if fh is not None and not fh.closed:
            fh.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    if REDIS_BIN is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shop_db_path(tmp_path_factory) -> Path:
    """One seeded shop database file shared by the tests of a run (each service writes to a copy when needed)."""
    from shoprouter.shop.db import create_shop_db

    return create_shop_db(tmp_path_factory.mktemp("shop") / "shop.sqlite3")


def copy_shop(shop_db_path: Path, directory: Path) -> Path:
    """A private copy of the seeded shop (agents change it: cancellations, returns, refunds)."""
    directory.mkdir(parents=True, exist_ok=True)
    dst = directory / "shop.sqlite3"
    shutil.copyfile(shop_db_path, dst)
    return dst

"""Private Redis and PostgreSQL servers for tests that stop, kill and restart them.

Each runs on a free port of 127.0.0.1 with its files in a fresh temporary folder, so a test can
break it without touching the machine's shared servers. PostgreSQL refuses to run as root, so
its programs run as the `postgres` user when the tests run as root.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.processes import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
POSTGRES_USER = "postgres"


def _wait(ready, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout} s")
        time.sleep(0.05)


class RedisServer:
    """A private redis-server. With `appendonly` every write is in its append-only file before
    Redis answers (as a broker that must not lose queued tasks across a restart is configured);
    without it a restart comes back empty."""

    def __init__(self, *, appendonly: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="faults-redis-"))
        self.port = free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def ping(self) -> bool:
        import redis

        try:
            return redis.Redis(port=self.port, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def start(self) -> None:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--dir", str(self.dir), "--daemonize", "no"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        with (self.dir / "redis.log").open("a") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        _wait(self.ping, timeout=10, what=f"redis-server on port {self.port} did not answer")

    def stop(self) -> None:
        """SIGTERM: Redis closes every connection and exits (flushing its append-only file)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A private PostgreSQL cluster (trust authentication on 127.0.0.1, user `postgres`), tuned
    to start fast: no fsync (a crash of PostgreSQL still loses nothing committed; only a crash
    of the machine could) and small buffers."""

    def __init__(self, *, max_connections: int = 60) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.max_connections = max_connections
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, user=POSTGRES_USER)
        self._run(
            [
                PG_BIN / "initdb",
                "-D",
                self.data,
                "-A",
                "trust",
                "-U",
                POSTGRES_USER,
                "--no-sync",
                "-E",
                "UTF8",
                "--locale",
                "C.UTF-8",
            ]
        )

    def _run(self, args: list, *, check: bool = True) -> subprocess.CompletedProcess:
        args = [str(a) for a in args]
        if self._as_postgres:
            args = ["runuser", "-u", POSTGRES_USER, "--", *args]
        done = subprocess.run(args, capture_output=True, text=True, cwd=self.dir)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done

    def url(self, dbname: str = "postgres") -> str:
        return f"postgres://{POSTGRES_USER}@127.0.0.1:{self.port}/{dbname}"

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={POSTGRES_USER} dbname={dbname}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c shared_buffers=16MB -c max_connections={self.max_connections}"
        )
        self._run(
            [
                PG_BIN / "pg_ctl",
                "-D",
                self.data,
                "-l",
                self.dir / "pg.log",
                "-w",
                "-t",
                "30",
                "-o",
                options,
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast`: PostgreSQL ends every session (rolling back what is open) and shuts down;
        `immediate`: every server process quits at once, as in a crash, and the next start
        recovers from the write-ahead log."""
        self._run([PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"], check=False)

    def kill(self) -> None:
        self.stop("immediate")

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "pg.log"
        return path.read_text() if path.exists() else ""


def wait_until(predicate, *, timeout: float = 30) -> bool:
    """Whether `predicate()` came true within `timeout` seconds (polled every 0.1 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())

"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temporary folder, as an unprivileged user."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path

BIN = Path(os.environ.get("LOUPE_PG_BIN", "/usr/lib/postgresql/15/bin"))


def unavailable() -> str:
    """'' when a server can be started here, else the reason why not."""
    if not (BIN / "initdb").exists() or not (BIN / "pg_ctl").exists():
        return f"PostgreSQL server binaries not found in {BIN} (Debian package postgresql-15)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no unprivileged 'postgres' user to run the server"
        if not shutil.which("runuser"):
            return "running as root without runuser to start the server as 'postgres'"
    return ""


def _as_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """``start()`` a server on 127.0.0.1 with trust authentication; ``url`` is a superuser URL; ``stop()``."""

    def __init__(self):
        import tempfile

        # a fresh folder directly under the temp dir, so the 'postgres' user can reach it
        self.folder = Path(tempfile.mkdtemp(prefix="loupe-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/loupe"

    def start(self) -> "PgServer":
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        subprocess.run(_as_user([str(BIN / "initdb"), "-D", str(self.data), "--auth=trust", "-U", self.user,
                                 "--no-sync", "-E", "UTF8"]), check=True, capture_output=True, timeout=300)
        opts = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=60"
        subprocess.run(_as_user([str(BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                                 str(self.folder / "server.log"), "-w", "-t", "120", "start"]),
                       check=True, capture_output=True, timeout=180)
        import psycopg

        with psycopg.connect(f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE loupe")
        return self

    def stop(self) -> None:
        subprocess.run(_as_user([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=120)
        shutil.rmtree(self.folder, ignore_errors=True)

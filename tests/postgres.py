"""A throw-away PostgreSQL server on a loopback port, for the daily report's database tests.

`PostgresServer` runs Debian's `initdb` and `pg_ctl` from /usr/lib/postgresql/*/bin in a
fresh folder under /tmp, with trust authentication, listening on 127.0.0.1 only (and
a Unix socket inside that folder), then creates one database. PostgreSQL refuses to
run as root, so as root every server command runs as the `postgres` user (`runuser`)
and the folder is handed to that user. `stop()` shuts the server down and removes
the folder.

Usable without pytest: `with PostgresServer() as pg: psycopg.connect(pg.url)`.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile

DATABASE = "business"


def find_bin() -> str | None:
    """The newest /usr/lib/postgresql/N/bin holding initdb and pg_ctl, or None."""
    found = [os.path.dirname(p) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
             if os.path.exists(os.path.join(os.path.dirname(p), "pg_ctl"))]
    found.sort(key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)
    return found[-1] if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """initdb + pg_ctl start in a temp folder; `url` names the test database."""

    def __init__(self, database: str = DATABASE):
        self.bin = find_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb "
                               "(`make test` installs Debian's postgresql package)")
        self.database = database
        self.port = free_port()
        self.folder = tempfile.mkdtemp(prefix="monitor-pg-")
        self.data = os.path.join(self.folder, "data")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            # The server's user must reach its own folder: mkdtemp made it 0700 for root.
            shutil.chown(self.folder, "postgres", "postgres")
        self.started = False
        try:
            self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                      "--locale=C", "--no-sync")
            options = (f"-k {self.folder} -p {self.port} -c listen_addresses=127.0.0.1 "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            self._run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.folder, "server.log"),
                      "-w", "-t", "30", "start")
            self.started = True
            self.execute("postgres", f'CREATE DATABASE "{database}"')
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, program: str, *args: str) -> None:
        command = [os.path.join(self.bin, program), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=self.folder)
        if proc.returncode != 0:
            log = os.path.join(self.folder, "server.log")
            tail = open(log).read()[-2000:] if os.path.exists(log) else ""
            raise RuntimeError(f"{program} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}")

    def execute(self, database: str, *statements: str) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/{database}",
                             autocommit=True, connect_timeout=10) as conn:
            for statement in statements:
                conn.execute(statement)

    def connect(self):
        import psycopg

        return psycopg.connect(self.url, connect_timeout=10)

    def stop(self) -> None:
        if self.started:
            try:
                self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t", "30", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            self.started = False
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

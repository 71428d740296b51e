"""A throwaway PostgreSQL server for the tests: ``postgres_url`` (session scope).

initdb and the server refuse to run as root, so under root they run as the ``postgres``
user (or ``nobody``) with a data folder owned by it. The server listens on 127.0.0.1 only,
on a free port, with its socket in the same temporary folder, password (SCRAM) logins and
fsync off: the data is thrown away at the end of the session.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Iterator

import pytest

USER, PASSWORD, DATABASE = "legato", "legato-test-pw", "legato_test"


def server_bin() -> str | None:
    """The newest installed server's bin folder (Debian's layout), else one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    initdb = found[-1] if found else shutil.which("initdb")
    return os.path.dirname(initdb) if initdb and os.path.exists(os.path.join(os.path.dirname(initdb), "pg_ctl")) else None


def run_as() -> str | None:
    """The unprivileged account to run the server as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    pytest.skip("running as root and no 'postgres' or 'nobody' account to run PostgreSQL as")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args: list[str], user: str | None, cwd: str) -> None:
    done = subprocess.run(args, user=user, cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql://legato:...@127.0.0.1:PORT/legato_test`` on a server that lives for the session."""
    bindir = server_bin()
    if bindir is None:
        reason = "no PostgreSQL server binaries (initdb, pg_ctl); run scripts/install-postgres.sh"
        print(f"\nSKIP postgres tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    user = run_as()
    home = tempfile.mkdtemp(prefix="legato-pg-")
    data, port = os.path.join(home, "data"), free_port()
    with open(os.path.join(home, "pw"), "w") as pw:
        pw.write(PASSWORD)
    if user:
        for path in (home, pw.name):
            shutil.chown(path, user=user)
    try:
        _run([f"{bindir}/initdb", "-D", data, "-U", USER, f"--pwfile={pw.name}", "--auth=scram-sha-256",
              "--no-locale", "-E", "UTF8", "--no-sync"], user, home)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={home} -c fsync=off"
        _run([f"{bindir}/pg_ctl", "-D", data, "-o", options, "-l", f"{home}/log", "-w", "-t", "60", "start"], user, home)
        try:
            _create_database(port)
            yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"
        finally:
            _run([f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], user, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _create_database(port: int) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")

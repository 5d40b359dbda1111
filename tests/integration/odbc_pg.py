"""A minimal private PostgreSQL for the ODBC driver tests (psqlODBC).

initdb (/usr/lib/postgresql/15/bin, Debian's postgresql-15) makes a cluster
in a temporary directory as the unprivileged `postgres` user (PostgreSQL
refuses root); `postgres` serves it on 127.0.0.1:<free port>, its socket in
the same directory, and is stopped by its PID.  Local socket connections
are trusted (the fixture's psql), TCP needs a password (scram-sha-256):
xmppd connects over TCP as `xmppd` to the database `xmppd` (UTF8, collation
C: bytewise, as SQLite).

Kept small on purpose: the PostgreSQL driver's own fixture (pgsql.py) is
the one to grow; they are to be unified.
"""
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from xmpptest import free_port

PGBIN = "/usr/lib/postgresql/15/bin"
RUN_AS = "postgres"
ODBC_DRIVER = "PostgreSQL Unicode"  # /etc/odbcinst.ini from odbc-postgresql


def _as_user(args, **kw):
    pw = pwd.getpwnam(RUN_AS)

    def demote():
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return subprocess.run(args, preexec_fn=demote, capture_output=True, text=True, **kw)


class PgServer:
    def __init__(self, user="xmppd", password="xmppd-pw", database="xmppd"):
        self.user, self.password, self.database = user, password, database
        self.dir = tempfile.mkdtemp(prefix="xd-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.proc = None

    def start(self, timeout=60):
        pw = pwd.getpwnam(RUN_AS)
        os.chmod(self.dir, 0o755)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        if not os.path.isdir(self.data):
            r = _as_user([PGBIN + "/initdb", "-D", self.data, "-U", "postgres", "-E", "UTF8",
                          "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"],
                         timeout=120)
            if r.returncode != 0:
                raise RuntimeError("initdb failed:\n" + r.stdout + r.stderr)

        def demote():
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
        self.proc = subprocess.Popen(
            [PGBIN + "/postgres", "-D", self.data, "-p", str(self.port), "-h", "127.0.0.1",
             "-k", self.dir, "-c", "fsync=off", "-c", "shared_buffers=16MB",
             "-c", "max_connections=100"],
            preexec_fn=demote, stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(self.dir, "pg.log"), "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited:\n" + self.log_text())
            r = subprocess.run([PGBIN + "/pg_isready", "-h", self.dir, "-p", str(self.port)],
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres not ready:\n" + self.log_text())

    def sql(self, text, database=None):
        r = subprocess.run(["/usr/bin/psql", "-h", self.dir, "-p", str(self.port), "-U",
                            self.user, "-d", database or self.database, "-v", "ON_ERROR_STOP=1",
                            "-q", "-A", "-t", "-c", text],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("psql: " + r.stderr)
        return r.stdout

    def admin(self, text):
        r = subprocess.run(["/usr/bin/psql", "-h", self.dir, "-p", str(self.port), "-U",
                            "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q",
                            "-c", text], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("psql: " + r.stderr)
        return r.stdout

    def setup_db(self):
        self.admin("CREATE ROLE %s LOGIN PASSWORD '%s'" % (self.user, self.password))
        self.admin("CREATE DATABASE %s OWNER %s ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
                   "TEMPLATE template0" % (self.database, self.user))

    def recreate_db(self):
        self.admin("DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.database)
        self.admin("CREATE DATABASE %s OWNER %s ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
                   "TEMPLATE template0" % (self.database, self.user))

    def odbc_conninfo(self):
        return ("Driver={%s};Server=127.0.0.1;Port=%d;Database=%s;UID=%s;PWD=%s"
                % (ODBC_DRIVER, self.port, self.database, self.user, self.password))

    def stop(self, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # fast shutdown
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self):
        self.stop()
        self.start()

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "pg.log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def available():
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        return False
    return os.access(PGBIN + "/initdb", os.X_OK) and \
        os.path.exists("/usr/lib/x86_64-linux-gnu/odbc/psqlodbcw.so")


@pytest.fixture(scope="session")
def odbc_pg_server():
    if not available():
        pytest.skip("postgresql-15 / odbc-postgresql are not installed (scripts/deps)")
    pg = PgServer()
    try:
        pg.start()
        pg.setup_db()
        yield pg
    finally:
        pg.cleanup()

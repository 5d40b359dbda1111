"""A real PostgreSQL for the storage tests, from Debian's packages.

PgServer runs /usr/lib/postgresql/15/bin/initdb and postgres (the Debian
paths: /usr/local/bin/initdb may be something else) in a temporary
directory, on a free loopback port and a Unix socket in that directory, as
the unprivileged `postgres` user that Debian's postgresql-common creates
(scripts/deps installs it): PostgreSQL refuses to run as root.  No system
service is touched.  It is stopped by its PID (SIGINT: a fast shutdown, then
SIGKILL), and stop()/start() again on the same directory and port is how the
fault tests restart the database under a running xmppd.

Each test gets a database of its own (new_database()), owned by the role
`xmppd` that logs in with a password over TCP (scram-sha-256), as a
production xmppd would.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_USER = "postgres"
ROLE = "xmppd"
PASSWORD = "xmppd-test-pw"
ODBC_DRIVER = "PostgreSQL Unicode"  # /etc/odbcinst.ini, from odbc-postgresql
ODBC_SO = "/usr/lib/x86_64-linux-gnu/odbc/psqlodbcw.so"


def odbc_available():
    """Why PostgreSQL through ODBC cannot run here ("" when it can)."""
    why = available()
    if not why and not os.path.exists(ODBC_SO):
        why = f"{ODBC_SO} missing (scripts/deps installs odbc-postgresql)"
    return why


def available():
    """Why PostgreSQL cannot run here ("" when it can)."""
    if not os.path.exists(os.path.join(PG_BIN, "postgres")):
        return f"{PG_BIN}/postgres missing (scripts/deps installs postgresql-15)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"no user {PG_USER} to run PostgreSQL as"
    return ""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="xmppd-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = _free_port()
        self.proc = None
        self.log_path = os.path.join(self.dir, "postgres.log")
        self._ndb = 0
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_USER)
            self._ids = (pw.pw_uid, pw.pw_gid)
            os.chown(self.dir, *self._ids)
        else:
            self._ids = None
        os.chmod(self.dir, 0o755)  # xmppd (root) reads nothing here; psql needs the socket

    def _run(self, argv, **kw):
        if self._ids:
            kw.update(user=self._ids[0], group=self._ids[1], extra_groups=[])
        return subprocess.run(argv, capture_output=True, text=True, cwd=self.dir, **kw)

    def init(self):
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write("superpw\n")
        if self._ids:
            os.chown(pwfile, *self._ids)
        r = self._run([f"{PG_BIN}/initdb", "-D", self.data, "-U", PG_USER, "--pwfile", pwfile,
                       "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                       "--locale=C.UTF-8", "--no-sync"])
        assert r.returncode == 0, r.stdout + r.stderr
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "max_connections = 200\nshared_buffers = 64MB\n")

    def start(self, timeout=30):
        kw = {}
        if self._ids:
            kw.update(user=self._ids[0], group=self._ids[1], extra_groups=[])
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [f"{PG_BIN}/postgres", "-D", self.data, "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}"],
            stdout=self._log, stderr=self._log, cwd=self.dir, **kw)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited:\n" + self.log_text())
            r = self._run([f"{PG_BIN}/pg_isready", "-h", self.dir, "-p", str(self.port),
                           "-U", PG_USER])
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not become ready:\n" + self.log_text())

    def stop(self, timeout=30):
        """Stops postgres by its PID (fast shutdown, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
        self._log.close()

    def psql(self, sql, db="postgres"):
        r = self._run([f"{PG_BIN}/psql", "-h", self.dir, "-p", str(self.port), "-U", PG_USER,
                       "-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def setup_role(self):
        self.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")

    def new_database(self):
        """A new empty database owned by the xmppd role; its name."""
        self._ndb += 1
        name = f"xmppd_t{self._ndb}"
        self.psql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name

    def yaml(self, database, extra=""):
        """The sql_* lines of an xmppd.yml that use database."""
        return (f"sql_type: pgsql\n"
                f"sql_server: 127.0.0.1\n"
                f"sql_port: {self.port}\n"
                f"sql_database: {database}\n"
                f"sql_username: {ROLE}\n"
                f"sql_password: {PASSWORD}\n"
                f"sql_ssl: disable\n{extra}")

    def odbc_yaml(self, database, extra=""):
        """The sql_* lines that reach database through unixODBC and psqlODBC
        (DSN-less; UID, PWD and Database come from sql_username and co.)."""
        return (f"sql_type: odbc\n"
                f"sql_server: \"Driver={{{ODBC_DRIVER}}};Server=127.0.0.1;Port={self.port}\"\n"
                f"sql_database: {database}\n"
                f"sql_username: {ROLE}\n"
                f"sql_password: {PASSWORD}\n{extra}")

    def odbc_conninfo(self, database):
        """A full ODBC connection string for database (driver-level tests)."""
        return (f"Driver={{{ODBC_DRIVER}}};Server=127.0.0.1;Port={self.port};"
                f"Database={database};UID={ROLE};PWD={PASSWORD}")

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

"""A private MariaDB server for the storage tests, from Debian's packages.

mariadb-install-db creates a data directory in a temporary directory;
mariadbd serves it on 127.0.0.1:<free port> with its Unix socket in the same
directory, as the unprivileged `mysql` user (--user=mysql; mariadbd refuses
to run as root otherwise) — no system service, no /etc/mysql, no
--skip-grant-tables.  root@localhost authenticates through the Unix socket
(we are root), and creates the database `xmppd` (utf8mb4, binary collation:
bytewise comparisons and ordering, as SQLite) and the password user `xmppd`
that xmppd connects as over TCP.

The server is stopped by its PID (SIGTERM, then SIGKILL).  restart() stops
and starts it on the same port and data, for reconnection tests.

Tests use conftest's session fixture `mariadb_server`; bench/storage.py uses MariaDB()
directly.
"""
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from xmpptest import free_port

INSTALL_DB = "/usr/bin/mariadb-install-db"
MARIADBD = "/usr/sbin/mariadbd"
CLIENT = "/usr/bin/mariadb"
RUN_AS = "mysql"


class MariaDB:
    def __init__(self, user="xmppd", password="xmppd-pw", database="xmppd"):
        self.user, self.password, self.database = user, password, database
        self.dir = tempfile.mkdtemp(prefix="xd-mariadb-")
        self.datadir = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "mysqld.sock")
        self.log = os.path.join(self.dir, "mysqld.log")
        self.port = free_port()
        self.host = "127.0.0.1"
        self.proc = None
        # A self-signed certificate for 127.0.0.1: TLS is offered, not required.
        self.cert = os.path.join(self.dir, "server.crt")
        self.key = os.path.join(self.dir, "server.key")

    def _chown(self):
        pw = pwd.getpwnam(RUN_AS)
        for root, dirs, files in os.walk(self.dir):
            for n in [root] + [os.path.join(root, d) for d in dirs] + \
                     [os.path.join(root, f) for f in files]:
                os.chown(n, pw.pw_uid, pw.pw_gid)

    def _install(self):
        os.chmod(self.dir, 0o755)
        self._chown()
        r = subprocess.run([INSTALL_DB, "--no-defaults", "--user=" + RUN_AS,
                            "--datadir=" + self.datadir, "--skip-test-db",
                            "--auth-root-authentication-method=socket"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("mariadb-install-db failed:\n" + r.stdout + r.stderr)

    def _make_cert(self):
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", self.key, "-out", self.cert, "-days", "2",
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("openssl: " + r.stderr)

    def start(self, timeout=60):
        if not os.path.exists(self.cert):
            self._make_cert()
        if not os.path.isdir(self.datadir):
            self._install()
        self.proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", "--user=" + RUN_AS, "--datadir=" + self.datadir,
             "--bind-address=127.0.0.1", "--port=%d" % self.port, "--socket=" + self.socket,
             "--pid-file=" + os.path.join(self.dir, "mysqld.pid"), "--log-error=" + self.log,
             "--skip-log-bin", "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
             "--max-connections=200", "--character-set-server=utf8mb4",
             "--collation-server=utf8mb4_bin", "--ssl-cert=" + self.cert,
             # full-text search finds short words and stopwords, as on SQLite
             # (docs/admin.md recommends the same)
             "--innodb-ft-min-token-size=1", "--innodb-ft-enable-stopword=OFF",
             "--ssl-key=" + self.key],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mariadbd exited with %d:\n%s" % (self.proc.returncode,
                                                                   self.log_text()))
            r = subprocess.run([CLIENT, "--no-defaults", "-uroot", "--socket=" + self.socket,
                                "-e", "SELECT 1"], capture_output=True, timeout=10)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("mariadbd not ready:\n" + self.log_text())

    def setup_db(self):
        self.sql("CREATE DATABASE IF NOT EXISTS %s CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
                 "CREATE USER IF NOT EXISTS '%s'@'127.0.0.1' IDENTIFIED BY '%s';"
                 "CREATE USER IF NOT EXISTS '%s'@'localhost' IDENTIFIED BY '%s';"
                 "GRANT ALL ON %s.* TO '%s'@'127.0.0.1';"
                 "GRANT ALL ON %s.* TO '%s'@'localhost';"
                 % (self.database, self.user, self.password, self.user, self.password,
                    self.database, self.user, self.database, self.user))

    def sql(self, text, database=None):
        """Runs SQL as root through the socket; returns stdout (tab-separated)."""
        args = [CLIENT, "--no-defaults", "-uroot", "--socket=" + self.socket, "-N", "-B"]
        if database:
            args.append(database)
        r = subprocess.run(args + ["-e", text], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("mariadb: " + r.stderr)
        return r.stdout

    def recreate_db(self):
        self.sql("DROP DATABASE IF EXISTS %s" % self.database)
        self.setup_db()

    def new_database(self):
        """A new empty database (utf8mb4_bin) the xmppd user may use; its name."""
        self._ndb = getattr(self, "_ndb", 0) + 1
        name = "xmppd_t%d" % self._ndb
        self.sql("CREATE DATABASE %s CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
                 "GRANT ALL ON %s.* TO '%s'@'127.0.0.1';"
                 "GRANT ALL ON %s.* TO '%s'@'localhost';"
                 % (name, name, self.user, name, self.user))
        return name

    def yaml(self, database, extra=""):
        """The sql_* lines of an xmppd.yml that use database."""
        return ("sql_type: mysql\n"
                "sql_server: 127.0.0.1\n"
                "sql_port: %d\n"
                "sql_database: %s\n"
                "sql_username: %s\n"
                "sql_password: %s\n%s" % (self.port, database, self.user, self.password, extra))

    def conninfo(self, **extra):
        kv = {"host": self.host, "port": str(self.port), "dbname": self.database,
              "user": self.user, "password": self.password}
        kv.update(extra)
        return " ".join("%s='%s'" % (k, v) for k, v in kv.items())

    def stop(self, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
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
            with open(self.log, errors="replace") as f:
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
    return all(os.access(p, os.X_OK) for p in (INSTALL_DB, MARIADBD, CLIENT))

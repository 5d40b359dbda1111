"""The MariaDB/MySQL ("mysql") and ODBC ("odbc") storage drivers against real
servers started from Debian's packages: a MariaDB (mariadb.py) and a
PostgreSQL reached through psqlODBC (odbc_pg.py).

Two levels:
  - driver level: tests/unit/test_storage_net (cmocka) run against each
    server through xd_db_open, the users API, typed values, transactions,
    errors, killed connections;
  - through the wire: xmppd with sql_type mysql / odbc, in-band
    registration, SASL login, roster, and the database restarting under it.

The dialect layer (per-dialect migrations) is not in this branch: the
tables are created here in each server's dialect (CORE_MYSQL, CORE_PGSQL:
the DDL the dialect layer must produce) and recorded in schema_version, so
xd_db_open finds them migrated.  What still fails because of module SQL is
marked xfail with the reason.
"""
import os
import re
import signal
import subprocess

import pytest

from conftest import build_dir
from mariadb import mariadb_server  # noqa: F401  (fixture)
from odbc_pg import odbc_pg_server  # noqa: F401  (fixture)
from xmpptest import free_port

# core/1 and core/2 of src/storage/migrate.c in MariaDB's dialect: TEXT in a
# key becomes VARCHAR(n) (InnoDB keys: at most 3072 bytes, 4 bytes a
# character in utf8mb4), SQLite's 64-bit INTEGER becomes BIGINT.
CORE_MYSQL = """
CREATE TABLE schema_version (component VARCHAR(191) NOT NULL PRIMARY KEY,
  version BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE users (host VARCHAR(255) NOT NULL, username VARCHAR(255) NOT NULL,
  created_at BIGINT NOT NULL, PRIMARY KEY (host, username));
CREATE TABLE user_scram (host VARCHAR(255) NOT NULL, username VARCHAR(255) NOT NULL,
  hash VARCHAR(16) NOT NULL CHECK (hash IN ('SHA-1', 'SHA-256', 'SHA-512')),
  salt BLOB NOT NULL, iterations BIGINT NOT NULL CHECK (iterations > 0),
  stored_key BLOB NOT NULL, server_key BLOB NOT NULL,
  PRIMARY KEY (host, username, hash),
  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);
CREATE TABLE fast_tokens (host VARCHAR(255) NOT NULL, username VARCHAR(255) NOT NULL,
  client VARCHAR(255) NOT NULL, slot BIGINT NOT NULL CHECK (slot IN (0, 1)),
  token_hash BLOB NOT NULL, mechanism TEXT NOT NULL, expires_at BIGINT NOT NULL,
  replay_count BIGINT NOT NULL, PRIMARY KEY (host, username, client, slot),
  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);
INSERT INTO schema_version VALUES ('core', 2, 0);
"""

# The same in PostgreSQL's dialect: BLOB is BYTEA, INTEGER is BIGINT.
CORE_PGSQL = """
CREATE TABLE schema_version (component TEXT NOT NULL PRIMARY KEY,
  version BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE users (host TEXT NOT NULL, username TEXT NOT NULL,
  created_at BIGINT NOT NULL, PRIMARY KEY (host, username));
CREATE TABLE user_scram (host TEXT NOT NULL, username TEXT NOT NULL,
  hash TEXT NOT NULL CHECK (hash IN ('SHA-1', 'SHA-256', 'SHA-512')),
  salt BYTEA NOT NULL, iterations BIGINT NOT NULL CHECK (iterations > 0),
  stored_key BYTEA NOT NULL, server_key BYTEA NOT NULL,
  PRIMARY KEY (host, username, hash),
  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);
CREATE TABLE fast_tokens (host TEXT NOT NULL, username TEXT NOT NULL,
  client TEXT NOT NULL, slot BIGINT NOT NULL CHECK (slot IN (0, 1)),
  token_hash BYTEA NOT NULL, mechanism TEXT NOT NULL, expires_at BIGINT NOT NULL,
  replay_count BIGINT NOT NULL, PRIMARY KEY (host, username, client, slot),
  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);
INSERT INTO schema_version VALUES ('core', 2, 0);
"""


def unit_binary():
    path = os.path.join(build_dir(), "tests", "unit", "test_storage_net")
    if not os.path.exists(path):
        pytest.skip("test_storage_net is not built")
    return path


def run_unit(env_extra):
    env = dict(os.environ)
    env.update(env_extra)
    r = subprocess.run([unit_binary()], env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "[  PASSED  ]" in out, out
    skipped = sorted(set(re.findall(r"\[  SKIPPED \] (test_\S+)", out)))
    return out, skipped


@pytest.fixture
def mysql_db(mariadb_server):
    mariadb_server.recreate_db()
    mariadb_server.sql(CORE_MYSQL, mariadb_server.database)
    return mariadb_server


@pytest.fixture
def pg_db(odbc_pg_server):
    odbc_pg_server.recreate_db()
    odbc_pg_server.sql(CORE_PGSQL)
    return odbc_pg_server


def test_mysql_driver_unit(mysql_db):
    dead = "host=127.0.0.1 port=%d user=x password=y dbname=z connect_timeout=2" % free_port()
    out, skipped = run_unit({"XD_TEST_DB_DRIVER": "mysql",
                             "XD_TEST_DB_CONNINFO": mysql_db.conninfo(),
                             "XD_TEST_DB_DIALECT": "mysql",
                             "XD_TEST_DB_DEAD_CONNINFO": dead})
    assert skipped == [], out


def test_mysql_driver_unit_socket(mysql_db):
    """host=/path is the server's Unix socket."""
    out, skipped = run_unit({"XD_TEST_DB_DRIVER": "mysql",
                             "XD_TEST_DB_CONNINFO": mysql_db.conninfo(host=mysql_db.socket),
                             "XD_TEST_DB_DIALECT": "mysql"})
    assert "test_net__unreachable" in skipped, out


def test_odbc_driver_unit(pg_db):
    dead = ("Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=%d;Database=x;UID=x;PWD=y"
            % free_port())
    supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lsan-psqlodbc.supp")
    out, skipped = run_unit({"LSAN_OPTIONS": "suppressions=" + supp,
                             "XD_TEST_DB_DRIVER": "odbc",
                             "XD_TEST_DB_CONNINFO": pg_db.odbc_conninfo(),
                             "XD_TEST_DB_DIALECT": "pgsql",
                             "XD_TEST_DB_DEAD_CONNINFO": dead})
    assert skipped == ["test_net__lock_wait_is_busy"], out


# ---- through the wire ---------------------------------------------------------------------

# Every module component xmppd registers, at its current version.  Their
# migrations are SQLite DDL (TEXT keys, AUTOINCREMENT, ON CONFLICT) that
# MariaDB refuses, so they are recorded as done without their tables: the
# modules that need them fail at run time (xfail below), the rest of the
# server runs.  When a module gains a version, add it here.
MODULE_VERSIONS = {"mod_roster": 2, "mod_offline": 2, "mod_vcard": 2, "mod_private": 1,
                   "privacy": 1, "mod_blocking": 2, "mod_last": 1, "mod_push": 1,
                   "mod_mam": 3, "mod_muc": 1, "mod_pep": 1}
MODULE_SQL_XFAIL = ("module SQL is SQLite's: its tables (TEXT keys, AUTOINCREMENT) cannot be "
                    "created on this server until the dialect layer lands")

REGISTER_ON = "auth_failure_delay: 50ms\nmodules:\n  mod_register:\n    registration_timeout: 0\n"


def fake_module_versions():
    return "".join("INSERT INTO schema_version VALUES ('%s', %d, 0);" % kv
                   for kv in MODULE_VERSIONS.items())


@pytest.fixture(params=["mysql", "odbc"])
def backend(request):
    """(name, sql_* YAML, server object) with the core tables created."""
    if request.param == "mysql":
        db = request.getfixturevalue("mariadb_server")
        db.recreate_db()
        db.sql(CORE_MYSQL + fake_module_versions(), db.database)
        yaml = ("sql_type: mysql\nsql_server: 127.0.0.1\nsql_port: %d\nsql_username: %s\n"
                "sql_password: %s\nsql_database: %s\n"
                % (db.port, db.user, db.password, db.database))
    else:
        db = request.getfixturevalue("odbc_pg_server")
        db.recreate_db()
        db.sql(CORE_PGSQL + fake_module_versions())
        # A DSN-less connection string; UID, PWD and Database from sql_*.
        yaml = ("sql_type: odbc\n"
                "sql_server: \"Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=%d\"\n"
                "sql_username: %s\nsql_password: %s\nsql_database: %s\n"
                % (db.port, db.user, db.password, db.database))
    return request.param, yaml, db


def tls_stream(port):
    from xclient import XClient
    c = XClient(port)
    c.open_stream()
    c.starttls()
    feats = c.open_stream()
    return c, feats


def test_register_and_login_through_the_wire(server_factory, backend):
    from helpers import iq
    name, yaml, db = backend
    srv = server_factory(extra_yaml=yaml + REGISTER_ON)
    assert "driver=%s" % name in srv.log_text()
    c, feats = tls_stream(srv.c2s_port)
    r = iq(c, "r1", "<query xmlns='jabber:iq:register'><username>newbie</username>"
                    "<password>a-good-password</password></query>")
    assert "type='result'" in r.replace('"', "'"), r
    c.close()
    c, _ = tls_stream(srv.c2s_port)
    assert c.scram("newbie", "a-good-password", "SHA-256")[0] == "success"
    c.close()
    c, _ = tls_stream(srv.c2s_port)
    assert c.scram("newbie", "wrong-password", "SHA-256")[0] == "failure"
    c.close()
    # xmppctl goes through the same users API.
    assert srv.ctl_run("register", "other", "localhost", "pw2").returncode == 0
    assert srv.ctl_run("check_account", "other", "localhost").returncode == 0
    if name == "mysql":
        rows = db.sql("SELECT username FROM users ORDER BY username", db.database)
    else:
        rows = db.sql("SELECT username FROM users ORDER BY username")
    assert rows.split() == ["newbie", "other"], rows


@pytest.mark.xfail(reason=MODULE_SQL_XFAIL, strict=False)
def test_roster_through_the_wire(server_factory, backend):
    from helpers import iq, users
    from xclient import login
    name, yaml, db = backend
    srv = server_factory(extra_yaml=yaml)
    users(srv, "alice")
    c, _ = login(srv.c2s_port, "alice", "pw")
    r = iq(c, "s1", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'/>"
                    "</query>")
    assert "type='result'" in r.replace('"', "'"), r
    r = iq(c, "g1", "<query xmlns='jabber:iq:roster'/>", "get")
    assert "bob@localhost" in r, r


@pytest.mark.slow
def test_database_restart_under_xmppd(server_factory, backend):
    """The database goes away and comes back: logins fail cleanly meanwhile
    (no crash, a SASL failure, a log line), and work again afterwards on new
    connections, without restarting xmppd."""
    from helpers import users
    from xclient import login
    name, yaml, db = backend
    srv = server_factory(extra_yaml=yaml + "auth_failure_delay: 50ms\n")
    users(srv, "alice")
    c, _ = login(srv.c2s_port, "alice", "pw")
    c.close()
    db.stop()
    try:
        c, _ = tls_stream(srv.c2s_port)
        kind, val = c.scram("alice", "pw", "SHA-256")
        assert kind == "failure", (kind, val)
        assert "temporary-auth-failure" in val, val
        c.close()
        assert srv.proc.poll() is None
    finally:
        db.start()
    # Pooled connections died with the server: each is found dead before it
    # is used (mysql: its socket polled; odbc: a ping after 2 s idle) and
    # replaced, so every login after the restart works, the first included.
    for i in range(6):
        c, _ = tls_stream(srv.c2s_port)
        kind, val = c.scram("alice", "pw", "SHA-256")
        c.close()
        assert kind == "success", (i, kind, val, srv.log_text()[-3000:])
    # A restart while xmppd sends nothing: the idle connection is dead when
    # the next login takes it, and that login still works.
    db.restart()
    c, _ = tls_stream(srv.c2s_port)
    kind, val = c.scram("alice", "pw", "SHA-256")
    c.close()
    assert kind == "success", (kind, val, srv.log_text()[-3000:])
    assert "db connection" in srv.log_text() or "db reconnect" in srv.log_text()


def mysql_yaml(db):
    return ("sql_type: mysql\nsql_server: 127.0.0.1\nsql_port: %d\nsql_username: %s\n"
            "sql_password: %s\nsql_database: %s\n" % (db.port, db.user, db.password,
                                                      db.database))


def ssl_accepts(db):
    out = db.sql("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")
    return int(out.split()[1])


def test_mysql_tls_verified(server_factory, mysql_db, tmp_path):
    """sql_ssl: verify-full with the server's CA: the pool's connections are
    TLS (the server counts the handshakes) and logins work; a CA that did not
    sign the server's certificate stops xmppd at start with the reason."""
    from helpers import users
    from xclient import login
    mysql_db.sql(fake_module_versions(), mysql_db.database)
    before = ssl_accepts(mysql_db)
    srv = server_factory(extra_yaml=mysql_yaml(mysql_db) +
                         "sql_ssl: verify-full\nsql_ssl_cafile: %s\n" % mysql_db.cert)
    users(srv, "alice")
    c, _ = login(srv.c2s_port, "alice", "pw")
    c.close()
    assert ssl_accepts(mysql_db) > before

    other = tmp_path / "other.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(tmp_path / "other.key"), "-out", str(other), "-days", "2",
                    "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    with pytest.raises(RuntimeError) as e:
        server_factory(extra_yaml=mysql_yaml(mysql_db) +
                       "sql_ssl: verify-full\nsql_ssl_cafile: %s\n" % other,
                       expect_clean_exit=False)
    assert "db open failed" in str(e.value) and "certificate" in str(e.value).lower(), e.value


def test_mysql_bad_ssl_mode_refused(server_factory, mysql_db):
    with pytest.raises(RuntimeError) as e:
        server_factory(extra_yaml=mysql_yaml(mysql_db) + "sql_ssl: sometimes\n",
                       expect_clean_exit=False)
    assert "bad conninfo value for sslmode" in str(e.value), e.value

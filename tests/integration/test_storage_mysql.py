"""The MariaDB/MySQL ("mysql") and ODBC ("odbc") storage drivers against real
servers started from Debian's packages: the session MariaDB (mariadb.py)
and the session PostgreSQL reached through psqlODBC (pgsql.py), both
conftest fixtures shared with test_storage.py.

Two levels:
  - driver level: tests/unit/test_storage_net (cmocka) run against each
    server through xd_db_open, the users API, typed values, transactions,
    errors, killed connections;
  - through the wire: xmppd with sql_type mysql / odbc, in-band
    registration, SASL login, roster, and the database restarting under it.

Every test gets a new empty database: xmppd (or xd_db_open) creates and
migrates every table itself through the dialect layer.  What each module
stores is covered on all four backends by test_storage.py.
"""
import os
import re
import subprocess

import pytest

from conftest import build_dir
from xmpptest import free_port

# Driver-specific (MariaDB, ODBC): the AddressSanitizer pass runs it; the
# ThreadSanitizer pass covers the storage threading on sqlite and pgsql.
pytestmark = pytest.mark.slow

SUPP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lsan-psqlodbc.supp")


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
    """The session MariaDB pointed at a new empty database."""
    mariadb_server.database = mariadb_server.new_database()
    return mariadb_server


@pytest.fixture
def pg_db(pg_server):
    """(server, a new empty database) on the session PostgreSQL."""
    return pg_server, pg_server.new_database()


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
    import pgsql
    why = pgsql.odbc_available()
    if why:
        pytest.skip(why)
    pg, database = pg_db
    dead = ("Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=%d;Database=x;UID=x;PWD=y"
            % free_port())
    out, skipped = run_unit({"LSAN_OPTIONS": "suppressions=" + SUPP,
                             "XD_TEST_DB_DRIVER": "odbc",
                             "XD_TEST_DB_CONNINFO": pg.odbc_conninfo(database),
                             "XD_TEST_DB_DIALECT": "pgsql",
                             "XD_TEST_DB_DEAD_CONNINFO": dead})
    assert skipped == ["test_net__lock_wait_is_busy"], out


# ---- through the wire ---------------------------------------------------------------------

REGISTER_ON = "auth_failure_delay: 50ms\nmodules:\n  mod_register:\n    registration_timeout: 0\n"


class Backend:
    """What a through-the-wire test needs of its database: the sql_* YAML,
    a query as the administrator, stop/start under a running xmppd."""

    def __init__(self, name, yaml, query, server):
        self.name, self.yaml, self.query, self.server = name, yaml, query, server

    def stop(self):
        self.server.stop()

    def start(self):
        self.server.start()

    def restart(self):
        self.server.stop()
        self.server.start()


@pytest.fixture(params=["mysql", "odbc"])
def backend(request, monkeypatch):
    """A new empty database on MariaDB, or on PostgreSQL through ODBC."""
    if request.param == "mysql":
        db = request.getfixturevalue("mariadb_server")
        name = db.new_database()
        return Backend("mysql", db.yaml(name), lambda q: db.sql(q, name), db)
    import pgsql
    why = pgsql.odbc_available()
    if why:
        pytest.skip(why)
    pg = request.getfixturevalue("pg_server")
    name = pg.new_database()
    monkeypatch.setenv("LSAN_OPTIONS", "suppressions=" + SUPP)
    # A DSN-less connection string; UID, PWD and Database from sql_*.
    return Backend("odbc", pg.odbc_yaml(name), lambda q: pg.psql(q, db=name), pg)


def tls_stream(port):
    from xclient import XClient
    c = XClient(port)
    c.open_stream()
    c.starttls()
    feats = c.open_stream()
    return c, feats


def test_register_and_login_through_the_wire(server_factory, backend):
    from helpers import iq
    srv = server_factory(extra_yaml=backend.yaml + REGISTER_ON)
    assert "driver=%s" % backend.name in srv.log_text()
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
    rows = backend.query("SELECT username FROM users ORDER BY username")
    assert rows.split() == ["newbie", "other"], rows


def test_roster_through_the_wire(server_factory, backend):
    from helpers import iq, users
    from xclient import login
    srv = server_factory(extra_yaml=backend.yaml + "modules:\n  mod_roster: {}\n")
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
    db = backend
    srv = server_factory(extra_yaml=backend.yaml + "auth_failure_delay: 50ms\n")
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
    return db.yaml(db.database)


def ssl_accepts(db):
    out = db.sql("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")
    return int(out.split()[1])


def test_mysql_tls_verified(server_factory, mysql_db, tmp_path):
    """sql_ssl: verify-full with the server's CA: the pool's connections are
    TLS (the server counts the handshakes) and logins work; a CA that did not
    sign the server's certificate stops xmppd at start with the reason."""
    from helpers import users
    from xclient import login
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
    assert 'sql_ssl "sometimes" not supported by mysql' in str(e.value), e.value


def test_mysql_ssl_prefer_refused(server_factory, mysql_db):
    """libpq's `prefer` (TLS when offered, unverified) has no MySQL
    counterpart: refused at start, not silently weakened or strengthened."""
    with pytest.raises(RuntimeError) as e:
        server_factory(extra_yaml=mysql_yaml(mysql_db) + "sql_ssl: prefer\n",
                       expect_clean_exit=False)
    assert 'sql_ssl "prefer" not supported by mysql' in str(e.value), e.value


def test_odbc_sql_ssl_refused(server_factory, pg_db):
    """sql_ssl means nothing to an ODBC driver (TLS is a setting of the
    connection string): set with odbc it stops the start with the reason
    instead of being ignored."""
    pg, database = pg_db
    with pytest.raises(RuntimeError) as e:
        server_factory(extra_yaml=pg.odbc_yaml(database) + "sql_ssl: require\n",
                       expect_clean_exit=False)
    assert "sql_ssl and sql_ssl_cafile are not used by odbc" in str(e.value), e.value


# ---- faults: requests wait for the database (sql_fault_wait) ------------------------------------

ROSTER_SET = "<query xmlns='jabber:iq:roster'><item jid='{}@localhost' name='{}'/></query>"


@pytest.mark.slow
def test_database_down_request_waits_then_fails(server_factory, backend):
    """The database stops while a client is online.  A roster set sent
    meanwhile waits for it (sql_fault_wait, reconnecting with backoff): when
    the database is back in time the IQ gets its result and the item is
    stored; when it stays away longer the IQ fails with internal-server-error
    and a `db unavailable` log line.  xmppd never crashes and nothing
    acknowledged is lost."""
    from helpers import iq, online, reply_rx, expect
    db = backend
    srv = server_factory(extra_yaml=db.yaml + "sql_fault_wait: 8s\n"
                         "modules:\n  mod_roster: {}\n")
    from helpers import users
    users(srv, "alice")
    a, _ = online(srv, "alice", "pc", roster=True)
    r = iq(a, "r0", ROSTER_SET.format("carol", "Carol"))
    assert "type='result'" in r, r
    try:
        # Down, back within the wait: the request waits and succeeds.
        db.stop()
        a.send("<iq type='set' id='r1'>%s</iq>" % ROSTER_SET.format("bob", "Bob"))
        db.start()
        r = expect(a, reply_rx("r1"), timeout=40)
        assert "type='result'" in r, (r, srv.log_text()[-3000:])
        # Down for longer than the wait: a clear error and a log line.
        db.stop()
        a.send("<iq type='set' id='r2'>%s</iq>" % ROSTER_SET.format("dave", "Dave"))
        r = expect(a, reply_rx("r2"), timeout=40)
        assert "type='error'" in r and "internal-server-error" in r, r
        assert 'event="db unavailable"' in srv.log_text() and \
            "driver=%s" % db.name in srv.log_text()
        assert srv.proc.poll() is None
        # xmppctl status shows the pool's health (the driver reconnects
        # itself; its failures are counted all the same).
        st = srv.ctl_run("status").stdout
        assert re.search(r"database %s down .*failures=[1-9]\d*.*last_error=\"." % db.name,
                         st), st
    finally:
        if db.server.proc is None or db.server.proc.poll() is not None:
            db.start()
    # Back: a new write goes through, and every acknowledged one is there.
    r = iq(a, "r3", ROSTER_SET.format("erin", "Erin"))
    assert "type='result'" in r, (r, srv.log_text()[-3000:])
    st = srv.ctl_run("status").stdout
    assert re.search(r"database %s up .*reconnects=[1-9]" % db.name, st), st
    r = iq(a, "g", "<query xmlns='jabber:iq:roster'/>", "get")
    for who in ("carol", "bob", "erin"):
        assert "%s@localhost" % who in r, (who, r)
    assert "dave@localhost" not in r, r
    rows = db.query("SELECT jid FROM roster_item ORDER BY jid")
    assert rows.split() == ["bob@localhost", "carol@localhost", "erin@localhost"], rows
    assert srv.proc.poll() is None  # no crash


def test_odbc_freetds_example_fails_cleanly(server_factory):
    """docs/admin.md's SQL Server configuration through FreeTDS (tdsodbc,
    scripts/deps).  No SQL Server can run here: with nothing listening the
    start stops with the driver's reason and no crash, which shows the
    example's connection string reaches FreeTDS as written."""
    import glob
    if not glob.glob("/usr/lib/*/odbc/libtdsodbc.so"):
        pytest.skip("tdsodbc is not installed (scripts/deps)")
    port = free_port()
    yaml = ("sql_type: odbc\n"
            "sql_server: \"Driver={FreeTDS};Server=127.0.0.1;Port=%d;TDS_Version=7.4;"
            "ClientCharset=UTF-8\"\n"
            "sql_database: xmppd\nsql_username: xmppd\nsql_password: pw\n" % port)
    with pytest.raises(RuntimeError) as e:
        server_factory(extra_yaml=yaml, expect_clean_exit=False)
    msg = str(e.value)
    assert "db open failed" in msg and "driver=odbc" in msg, msg
    assert "[08001]" in msg or "connect" in msg.lower(), msg
    assert "pw" not in re.findall(r'err="([^"]*)"', msg)[0], msg  # the password is never logged

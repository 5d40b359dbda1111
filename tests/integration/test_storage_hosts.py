"""Databases per virtual host (issue 18: "a connection pool per host").

The sql_* options may be set per host in host_config; a host without them
uses the top level's database, hosts that name the same database share one
pool, and every user of storage (accounts and SASL, the modules' data, the
storage commands, `xmppctl status`) goes to the host's own database.  Each
test writes through XMPP and xmppctl, looks into the database files (sqlite3)
or PostgreSQL (psql) to see where the rows landed, restarts xmppd and reads
the data back through XMPP.
"""
import os
import re
import sqlite3
import subprocess

import pytest

from conftest import build_dir
from helpers import expect, iq, online, users
from xclient import XClient
from xmpptest import Server

MODULES = ("modules:\n"
           "  mod_register:\n"
           "    registration_timeout: 0\n"
           "  mod_roster: {}\n"
           "  mod_offline: {}\n"
           "  mod_private: {}\n"
           "  mod_stanza_id: {}\n"
           "  mod_mam: {}\n")

ROSTER_GET = "<query xmlns='jabber:iq:roster'/>"


def indent(text, by="    "):
    return "".join(by + line + "\n" for line in text.splitlines())


def rows(path, sql, *args):
    with sqlite3.connect(path) as con:
        return con.execute(sql, args).fetchall()


def ok(r):
    assert "type='result'" in r, r
    return r


def reg_query(user, pw):
    return (f"<query xmlns='jabber:iq:register'><username>{user}</username>"
            f"<password>{pw}</password></query>")


def register_inband(srv, domain, user, pw):
    c = XClient(srv.c2s_port, domain=domain)
    c.open_stream()
    c.starttls()
    c.open_stream()
    ok(iq(c, "r1", reg_query(user, pw)))
    c.close()


def on(srv, domain, user, resource="pc", **kw):
    return online(srv, user, resource, domain=domain, **kw)


def restart(srv):
    assert srv.stop() == 0
    srv.restart()


def pool_lines(srv):
    st = srv.ctl_run("status").stdout
    return st, [ln for ln in st.splitlines() if ln.startswith("database ")]


def test_two_hosts_two_sqlite_files(server_factory, tmp_path):
    """a.test and c.test use the top level's file A (one pool), b.test its
    own file B: accounts, rosters and offline messages land in their host's
    file, survive a restart, and `xmppctl status` shows both pools."""
    file_a = str(tmp_path / "dbs" / "a.db")
    file_b = str(tmp_path / "dbs" / "b.db")
    srv = server_factory(hosts=("a.test", "b.test", "c.test"), extra_yaml=(
        f"sql_database: {file_a}\n"
        f"sql_pool_size: 4\n"
        f"host_config:\n"
        f"  b.test:\n"
        f"    sql_type: sqlite\n"
        f"    sql_database: {file_b}\n"
        f"    sql_pool_size: 3\n"
        + MODULES))
    users(srv, "alice", host="a.test")
    users(srv, "bob", host="b.test")
    users(srv, "carol", host="c.test")
    register_inband(srv, "b.test", "newbie", "a-good-password")

    # Each account is in its host's file only; nothing went to the default file.
    users_a = rows(file_a, "SELECT host, username FROM users ORDER BY host, username")
    users_b = rows(file_b, "SELECT host, username FROM users ORDER BY host, username")
    assert users_a == [("a.test", "alice"), ("c.test", "carol")], users_a
    assert users_b == [("b.test", "bob"), ("b.test", "newbie")], users_b
    assert not os.path.exists(os.path.join(srv.data_dir, "xmppd.db"))

    # Storage commands per host.
    r = srv.ctl_run("registered_users", "b.test")
    assert r.stdout.split() == ["bob", "newbie"], r.stdout + r.stderr
    r = srv.ctl_run("registered_users", "a.test")
    assert r.stdout.split() == ["alice"], r.stdout + r.stderr

    # Rosters and offline messages: alice's roster in A, bob's in B; the
    # message alice sends bob while he is offline is stored in B.
    a, _ = on(srv, "a.test", "alice")
    ok(iq(a, "ro1", "<query xmlns='jabber:iq:roster'><item jid='bob@b.test' name='Bobby'>"
                    "<group>Friends</group></item></query>"))
    a.send("<message to='bob@b.test' type='chat' id='o1'><body>stored in B</body></message>")
    a.roundtrip()
    # Bob without available presence: his offline messages stay stored.
    b, _ = on(srv, "b.test", "bob", presence=False)
    ok(iq(b, "ro2", "<query xmlns='jabber:iq:roster'><item jid='alice@a.test' name='Al'/>"
                    "</query>"))
    b.close()
    assert rows(file_a, "SELECT host, username, jid FROM roster_item") == [
        ("a.test", "alice", "bob@b.test")]
    assert rows(file_b, "SELECT host, username, jid FROM roster_item") == [
        ("b.test", "bob", "alice@a.test")]
    assert rows(file_b, "SELECT host, username FROM offline_msg") == [("b.test", "bob")]
    assert rows(file_a, "SELECT COUNT(*) FROM offline_msg") == [(0,)]
    # Each side's archive (MAM) is in its own host's file (mod_mam's journal
    # is moved into it before a reader runs: an export drains each host's).
    for u, h in (("alice", "a.test"), ("bob", "b.test")):
        assert srv.ctl_run("export_mam", u, h, os.path.join(srv.dir, f"{u}.xml")).returncode == 0
    assert rows(file_a, "SELECT host, username, peer FROM archive") == [
        ("a.test", "alice", "bob@b.test")]
    assert rows(file_b, "SELECT host, username, peer FROM archive") == [
        ("b.test", "bob", "alice@a.test")]
    a.close()

    # Two pools, each naming its hosts.
    st, lines = pool_lines(srv)
    assert len(lines) == 2, st
    assert re.search(r"^database sqlite up open=\d+ idle=\d+ busy=\d+ max=4 .*name=\"sqlite "
                     + re.escape(file_a) + r"\" hosts=a\.test,c\.test$", st, re.M), st
    assert re.search(r"^database sqlite up open=\d+ idle=\d+ busy=\d+ max=3 .*name=\"sqlite "
                     + re.escape(file_b) + r"\" hosts=b\.test$", st, re.M), st

    # Everything comes back after a restart, read from each host's file.
    restart(srv)
    a, _ = on(srv, "a.test", "alice", presence=False)
    r = ok(iq(a, "g1", ROSTER_GET, typ="get"))
    assert "bob@b.test" in r and "Bobby" in r and "Friends" in r, r
    b, _ = on(srv, "b.test", "bob", presence=False)
    r = ok(iq(b, "g2", ROSTER_GET, typ="get"))
    assert "alice@a.test" in r and "'Al'" in r, r
    b.send("<presence/>")
    assert "stored in B" in expect(b, r"<message[^>]*id='o1'.*?</message>")
    c, _ = on(srv, "b.test", "newbie", password="a-good-password", presence=False)
    c.close()
    assert rows(file_b, "SELECT COUNT(*) FROM offline_msg") == [(0,)]

    # Removing an account removes it from its host's file.
    assert srv.ctl_run("unregister", "carol", "c.test").returncode == 0
    assert rows(file_a, "SELECT username FROM users ORDER BY username") == [("alice",)]
    assert srv.ctl_run("check_account", "carol", "c.test").returncode == 1
    assert srv.ctl_run("check_account", "bob", "b.test").returncode == 0

    # delete_old_mam_messages empties each host's own archive.
    r = srv.ctl_run("delete_old_mam_messages", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(file_a, "SELECT COUNT(*) FROM archive") == [(0,)]
    assert rows(file_b, "SELECT COUNT(*) FROM archive") == [(0,)]


def test_export_import_per_host(server_factory, tmp_path):
    """export/import (XEP-0227) read and write each host's own database:
    accounts exported from b.test's file are imported into a.test's file."""
    file_b = str(tmp_path / "b.db")
    srv = server_factory(hosts=("a.test", "b.test"), extra_yaml=(
        f"host_config:\n"
        f"  b.test:\n"
        f"    sql_database: {file_b}\n"
        + MODULES))
    file_a = os.path.join(srv.data_dir, "xmppd.db")
    users(srv, "bob", host="b.test")
    out = str(tmp_path / "export.xml")
    r = srv.ctl_run("export_host", "b.test", out)
    assert r.returncode == 0, r.stdout + r.stderr
    text = open(out).read()
    assert "name='bob'" in text or 'name="bob"' in text, text
    assert rows(file_a, "SELECT COUNT(*) FROM users") == [(0,)]
    moved = text.replace("jid='b.test'", "jid='a.test'").replace('jid="b.test"', 'jid="a.test"')
    with open(out, "w") as f:
        f.write(moved)
    r = srv.ctl_run("import_file", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(file_a, "SELECT host, username FROM users") == [("a.test", "bob")]
    c, _ = on(srv, "a.test", "bob", presence=False)
    c.close()


def check_config(tmp_path, extra, hosts=("a.test", "b.test")):
    srv = Server(build_dir(), tmp_path / "srv", hosts=hosts, extra_yaml=extra)
    r = subprocess.run([srv.bin, "--config", srv.config_path, "--check-config"],
                       capture_output=True, text=True, timeout=30)
    return srv, r.returncode, r.stdout + r.stderr


def test_unknown_sql_type_in_host_config_names_file_line(tmp_path):
    srv, rc, out = check_config(tmp_path, "host_config:\n  b.test:\n    sql_type: oracle\n")
    assert rc != 0, out
    n = open(srv.config_path).read().splitlines().index("    sql_type: oracle") + 1
    assert re.search(re.escape(srv.config_path) + rf":{n}:\d+: host_config\.b\.test\.sql_type",
                     out), out
    assert "oracle" in out, out


def test_shared_database_with_other_pool_settings_is_a_config_error(tmp_path):
    """Two hosts that name one database share its one pool: different pool
    settings for it are refused, with the line that differs."""
    srv, rc, out = check_config(tmp_path, (
        "sql_database: /tmp/shared.db\n"
        "host_config:\n"
        "  b.test:\n"
        "    sql_pool_size: 2\n"))
    assert rc != 0, out
    n = open(srv.config_path).read().splitlines().index("    sql_pool_size: 2") + 1
    assert re.search(re.escape(srv.config_path) + rf":{n}:\d+: host_config\.b\.test\."
                     r"sql_pool_size: names the same database as the top level", out), out


def test_reload_refuses_a_changed_host_database(server_factory, tmp_path):
    """A host's database is opened at start: a reload that changes it, or
    adds a host on a database no running host uses, is refused as a whole."""
    file_b = str(tmp_path / "b.db")
    srv = server_factory(hosts=("a.test", "b.test"), extra_yaml=(
        f"host_config:\n  b.test:\n    sql_database: {file_b}\n" + MODULES))
    text = open(srv.config_path).read()
    with open(srv.config_path, "w") as f:
        f.write(text.replace(file_b, str(tmp_path / "other.db")))
    r = srv.ctl_run("reload_config")
    assert r.returncode != 0, r.stdout
    assert "host_config.b.test.sql_database: changed" in r.stdout + r.stderr, r.stdout + r.stderr
    # A new host on the database of a running one is fine, and uses it.
    with open(srv.config_path, "w") as f:
        f.write(text.replace("  - b.test\n", "  - b.test\n  - d.test\n"))
    r = srv.ctl_run("reload_config")
    assert r.returncode == 0, r.stdout + r.stderr
    users(srv, "dave", host="d.test")
    st, lines = pool_lines(srv)
    assert len(lines) == 2 and re.search(r"xmppd\.db\" hosts=a\.test,d\.test$", st, re.M), st
    assert rows(os.path.join(srv.data_dir, "xmppd.db"),
                "SELECT host, username FROM users") == [("d.test", "dave")]
    # A new host on a database nobody uses: refused.
    with open(srv.config_path, "w") as f:
        f.write(text.replace("  - b.test\n", "  - b.test\n  - e.test\n").replace(
            "host_config:\n", f"host_config:\n  e.test:\n    sql_database: {tmp_path}/e.db\n"))
    r = srv.ctl_run("reload_config")
    assert r.returncode != 0, r.stdout
    assert "new host e.test names a database no running host uses" in r.stdout + r.stderr


def test_one_host_on_postgresql(server_factory, pg_server, tmp_path):
    """a.test on SQLite (the top level), b.test on PostgreSQL: accounts,
    rosters and offline messages land in their host's database and come back
    after a restart; `xmppctl status` shows the two pools."""
    pg = pg_server
    dbname = pg.new_database()
    srv = server_factory(hosts=("a.test", "b.test"), extra_yaml=(
        "host_config:\n"
        "  b.test:\n"
        + indent(pg.yaml(dbname, "sql_pool_size: 5\n"))
        + MODULES))
    file_a = os.path.join(srv.data_dir, "xmppd.db")
    users(srv, "alice", host="a.test")
    users(srv, "bob", host="b.test")
    register_inband(srv, "b.test", "newbie", "a-good-password")
    assert rows(file_a, "SELECT host, username FROM users") == [("a.test", "alice")]
    assert pg.psql("SELECT host || ' ' || username FROM users ORDER BY username",
                   db=dbname).split("\n")[:2] == ["b.test bob", "b.test newbie"]

    a, _ = on(srv, "a.test", "alice")
    ok(iq(a, "ro1", "<query xmlns='jabber:iq:roster'><item jid='bob@b.test' name='Bobby'/>"
                    "</query>"))
    a.send("<message to='bob@b.test' type='chat' id='o1'><body>kept in pg</body></message>")
    a.roundtrip()
    a.close()
    b, _ = on(srv, "b.test", "bob", presence=False)
    ok(iq(b, "ro2", "<query xmlns='jabber:iq:roster'><item jid='alice@a.test' name='Al'/>"
                    "</query>"))
    b.close()
    assert pg.psql("SELECT jid FROM roster_item", db=dbname).strip() == "alice@a.test"
    assert pg.psql("SELECT COUNT(*) FROM offline_msg", db=dbname).strip() == "1"
    assert rows(file_a, "SELECT jid FROM roster_item") == [("bob@b.test",)]

    st, lines = pool_lines(srv)
    assert len(lines) == 2, st
    assert re.search(r"^database sqlite up .* max=10 .*hosts=a\.test$", st, re.M), st
    assert re.search(r"^database pgsql up .* max=5 .*name=\"pgsql " + dbname
                     + r"@127\.0\.0\.1:\d+\" hosts=b\.test$", st, re.M), st

    restart(srv)
    b, _ = on(srv, "b.test", "bob", presence=False)
    r = ok(iq(b, "g2", ROSTER_GET, typ="get"))
    assert "alice@a.test" in r, r
    b.send("<presence/>")
    assert "kept in pg" in expect(b, r"<message[^>]*id='o1'.*?</message>")
    a, _ = on(srv, "a.test", "alice", presence=False)
    assert "bob@b.test" in ok(iq(a, "g1", ROSTER_GET, typ="get"))
    c, _ = on(srv, "b.test", "newbie", password="a-good-password", presence=False)
    c.close()

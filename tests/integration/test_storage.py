"""The storage suite: every module's data through the wire, once per SQL
backend (conftest.STORAGE_BACKENDS: sqlite, pgsql, mysql on MariaDB, odbc on
PostgreSQL through psqlODBC).

Each test writes through XMPP, restarts xmppd on the same database (so what
comes back was read from the database, not a cache), and reads it back
through XMPP.  PostgreSQL and MariaDB are real servers from Debian's
packages, one of each per session (tests/integration/pgsql.py, mariadb.py),
each test on a new database; the pgsql fault test stops and restarts
PostgreSQL under a working xmppd (test_storage_mysql.py does the same for
mysql and odbc).
"""
import re

import pytest

from helpers import expect, iq, online, subscribe_in_order, users
from test_mam import bodies, chat, mam
from test_muc import MUC, NS_OWNER, config, create, join
from test_push import APP, SECRET, app_server, enable, offline_msg, publishes
from test_sasl2 import fast_login, get_token, stream
from xclient import XClient, login
from xmpptest import free_port

MODULES = ("modules:\n"
           "  mod_register:\n"
           "    registration_timeout: 0\n"
           "  mod_roster: {}\n"
           "  mod_offline: {}\n"
           "  mod_vcard:\n"
           "    search: true\n"
           "  mod_private: {}\n"
           "  mod_privacy: {}\n"
           "  mod_blocking: {}\n"
           "  mod_last: {}\n"
           "  mod_stanza_id: {}\n"
           "  mod_carbons: {}\n"
           "  mod_mam: {}\n"
           "  mod_pep: {}\n"
           "  mod_pubsub: {}\n"
           "  mod_muc: {}\n"
           "  mod_announce: {}\n"
           "  mod_push:\n"
           "    min_interval: 0s\n")


def start(server_factory, storage_yaml, names=("alice", "bob", "carol"), extra=""):
    """An xmppd with every storing module on a new database of the backend,
    with a component listener for the push app server."""
    cport = free_port()
    srv = server_factory(extra_yaml=(
        f"  - port: {cport}\n"
        f"    ip: 127.0.0.1\n"
        f"    module: component\n"
        f"    hosts:\n"
        f"      {APP}: {{password: {SECRET}}}\n"
        f"auth_failure_delay: 50ms\n"
        + MODULES + storage_yaml(extra)))
    srv.comp_port = cport
    users(srv, *names)
    return srv


def restart(srv):
    assert srv.stop() == 0
    srv.restart()


def ok(r):
    assert "type='result'" in r, r
    return r


# ---- accounts ---------------------------------------------------------------------------------

def reg_query(user, pw):
    return (f"<query xmlns='jabber:iq:register'><username>{user}</username>"
            f"<password>{pw}</password></query>")


def test_accounts(server_factory, storage_yaml):
    srv = start(server_factory, storage_yaml)
    # In-band registration, then SCRAM with the stored credentials.
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    ok(iq(c, "r1", reg_query("newbie", "a-good-password")))
    assert c.scram("newbie", "a-good-password", "SHA-256")[0] == "success"
    c.close()
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    assert "conflict" in iq(c, "r2", reg_query("alice", "whatever-pass"))
    c.close()
    restart(srv)
    for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        c, _ = login(srv.c2s_port, "newbie", "a-good-password", mech=mech)
        c.close()
    # Password change, then removal.
    c, _ = login(srv.c2s_port, "newbie", "a-good-password")
    ok(iq(c, "p1", reg_query("newbie", "new-pass-word")))
    assert srv.ctl_run("check_password", "newbie", "localhost", "new-pass-word").returncode == 0
    assert srv.ctl_run("check_password", "newbie", "localhost",
                       "a-good-password").returncode != 0
    ok(iq(c, "rm1", "<query xmlns='jabber:iq:register'><remove/></query>"))
    assert srv.ctl_run("check_account", "newbie", "localhost").returncode == 1
    restart(srv)
    assert srv.ctl_run("check_account", "newbie", "localhost").returncode == 1
    assert srv.ctl_run("check_account", "alice", "localhost").returncode == 0
    r = srv.ctl_run("registered_users", "localhost")
    assert r.stdout.split() == ["alice", "bob", "carol"], r.stdout + r.stderr


# ---- roster, offline, vCard, private, last ----------------------------------------------------

CARD = ("<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><NICKNAME>al</NICKNAME>"
        "<DESC>caf\u00e9 \u2603</DESC></vCard>")
PRIV = "<query xmlns='jabber:iq:private'><notes xmlns='storage:test'>n\u00f6te</notes></query>"


def test_roster_offline_vcard_private_last(server_factory, storage_yaml):
    srv = start(server_factory, storage_yaml)
    a, _ = online(srv, "alice", "pc")
    ok(iq(a, "ro1", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bobby'>"
                    "<group>Friends</group><group>Work</group></item></query>"))
    ok(iq(a, "v1", CARD))
    ok(iq(a, "pv1", PRIV))
    # Bob, offline, gets two messages stored.
    a.send("<message to='bob@localhost' type='chat' id='o1'><body>first</body></message>")
    a.send("<message to='bob@localhost' type='chat' id='o2'><body>second</body></message>")
    a.roundtrip()
    # Alice subscribes to carol (roster rows on both sides), carol leaves:
    # her last activity is stored.
    c, cjid = online(srv, "carol", "pc")
    subscribe_in_order(a, "alice@localhost/pc", c, cjid)
    c.send("<presence type='unavailable'><status>gone fishing</status></presence>")
    c.roundtrip()
    c.close()
    a.roundtrip()
    a.close()
    restart(srv)

    a, _ = online(srv, "alice", "pc", presence=False)
    r = ok(iq(a, "ro2", "<query xmlns='jabber:iq:roster'/>", typ="get"))
    assert "jid='bob@localhost'" in r and "name='Bobby'" in r, r
    assert "<group>Friends</group>" in r and "<group>Work</group>" in r, r
    assert re.search(r"<item[^>]*jid='carol@localhost'[^>]*subscription='to'", r), r
    r = ok(iq(a, "v2", "<vCard xmlns='vcard-temp'/>", typ="get"))
    assert "<FN>Alice Liddell</FN>" in r and "caf\u00e9 \u2603" in r, r
    # the user directory (XEP-0055) on the same database: a prefix search
    # and a case-folded one
    for i, value in enumerate(("alice l*", "ALICE LIDDELL")):
        r = ok(iq(a, f"se{i}", "<query xmlns='jabber:iq:search'><x xmlns='jabber:x:data' "
                               f"type='submit'><field var='fn'><value>{value}</value></field>"
                               "</x></query>", to="vjud.localhost"))
        assert "<value>alice@localhost</value>" in r, r
    r = ok(iq(a, "pv2", "<query xmlns='jabber:iq:private'><notes xmlns='storage:test'/>"
                        "</query>", typ="get"))
    assert "n\u00f6te" in r, r
    r = ok(iq(a, "l1", "<query xmlns='jabber:iq:last'/>", typ="get", to="carol@localhost"))
    assert re.search(r"seconds='\d+'", r) and "gone fishing" in r, r
    b, _ = online(srv, "bob", "pc")
    first = expect(b, r"<message[^>]*id='o1'.*?</message>")
    second = expect(b, r"<message[^>]*id='o2'.*?</message>")
    assert "first" in first and "second" in second, (first, second)
    a.close()
    b.close()
    # Delivered: nothing left after another restart.
    restart(srv)
    b, _ = online(srv, "bob", "pc2")
    b.send("<iq type='get' id='bar'><ping xmlns='urn:xmpp:ping'/></iq>")
    seen = b.recv_until(r"<iq[^>]*id=['\"]bar['\"]").string
    assert b"first" not in seen and b"second" not in seen, seen


# ---- privacy and blocking ---------------------------------------------------------------------

def test_privacy_and_blocking(server_factory, storage_yaml):
    srv = start(server_factory, storage_yaml)
    a, _ = online(srv, "alice", "pc")
    ok(iq(a, "b1", "<block xmlns='urn:xmpp:blocking'><item jid='carol@localhost'/>"
                   "<item jid='spam.example'/></block>"))
    a.close()
    # Privacy lists on another account (a default list would replace the
    # blocklist, which is the default list of XEP-0191's mapping).
    a, _ = online(srv, "bob", "pc")
    ok(iq(a, "p1", "<query xmlns='jabber:iq:privacy'><list name='work'>"
                   "<item type='jid' value='carol@localhost' action='deny' order='3'><message/>"
                   "</item><item action='allow' order='7'/></list></query>"))
    ok(iq(a, "p2", "<query xmlns='jabber:iq:privacy'><default name='work'/></query>"))
    ok(iq(a, "p3", "<query xmlns='jabber:iq:privacy'><default name='work'/></query>"))
    a.close()
    restart(srv)
    a, _ = online(srv, "alice", "pc")
    r = ok(iq(a, "b2", "<blocklist xmlns='urn:xmpp:blocking'/>", typ="get"))
    assert "jid='carol@localhost'" in r and "jid='spam.example'" in r, r
    a, _ = online(srv, "bob", "pc")
    r = ok(iq(a, "p4", "<query xmlns='jabber:iq:privacy'/>", typ="get"))
    assert "<default name='work'/>" in r and "name='work'" in r, r
    r = ok(iq(a, "p5", "<query xmlns='jabber:iq:privacy'><list name='work'/></query>",
              typ="get"))
    assert "value='carol@localhost'" in r and "order='3'" in r and "order='7'" in r, r
    # Enforced after the restart: carol's message to bob (privacy) and to
    # alice (blocking) bounce.
    c, _ = online(srv, "carol", "pc")
    c.send("<message to='bob@localhost' type='chat' id='x1'><body>hi</body></message>")
    assert "type='error'" in expect(c, r"<message[^>]*id='x1'.*?</message>")
    c.send("<message to='alice@localhost' type='chat' id='x2'><body>hi</body></message>")
    assert "type='error'" in expect(c, r"<message[^>]*id='x2'.*?</message>")


# ---- MAM with full-text search ----------------------------------------------------------------

def test_mam_and_fulltext(server_factory, storage_yaml):
    srv = start(server_factory, storage_yaml)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    msgs = ["the quick brown fox", "a lazy dog sleeps", "brown quick fox again",
            "nothing to see", "quick OR not"]
    for i, body in enumerate(msgs):
        chat(a, "bob@localhost", body, f"m{i}")
    a.roundtrip()
    b.roundtrip()
    a.close()
    b.close()
    restart(srv)
    a, _ = online(srv, "alice", "pc")
    res, fin = mam(a)
    assert bodies(res) == msgs, res
    res, fin = mam(a, rsm="<max>2</max><before/>")
    assert bodies(res) == msgs[-2:], res
    FTS = "{urn:xmpp:fulltext:0}fulltext"
    res, _ = mam(a, **{FTS: "Quick BROWN"})
    assert bodies(res) == ["the quick brown fox", "brown quick fox again"], res
    res, _ = mam(a, **{FTS: '"quick brown"'})
    assert bodies(res) == ["the quick brown fox"], res
    res, _ = mam(a, **{FTS: "elephant"})
    assert res == [], res
    res, _ = mam(a, **{FTS: "OR"})
    assert bodies(res) == ["quick OR not"], res
    # The same message id twice is archived once (an IGNORE upsert).
    b, _ = online(srv, "bob", "pc")
    res, _ = mam(b)
    assert bodies(res) == msgs, res


# ---- PEP, MUC, push, FAST ---------------------------------------------------------------------

PS = "http://jabber.org/protocol/pubsub"


def test_pep_items(server_factory, storage_yaml):
    srv = start(server_factory, storage_yaml)
    a, _ = online(srv, "alice", "pc")
    for i in range(3):
        ok(iq(a, f"pub{i}", f"<pubsub xmlns='{PS}'><publish node='urn:xmpp:test:node'>"
                            f"<item id='i{i}'><entry xmlns='urn:xmpp:test'>e{i}</entry></item>"
                            f"</publish></pubsub>"))
    a.close()
    restart(srv)
    a, _ = online(srv, "alice", "pc")
    r = ok(iq(a, "it", f"<pubsub xmlns='{PS}'><items node='urn:xmpp:test:node'/></pubsub>",
              typ="get"))
    # The node keeps one item (the default max_items): the last one.
    assert "id='i2'" in r and ">e2<" in r and "id='i0'" not in r, r


def test_pubsub_service_node_subscription_items(server_factory, storage_yaml):
    """The pubsub service's tables (pubsub_node, _aff, _sub, _item) across a
    restart: the node's configuration, an affiliation, a subscription and
    the items trimmed to max_items (the trim without LIMIT in a subquery)."""
    srv = start(server_factory, storage_yaml)
    svc = "pubsub.localhost"
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    form = (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{PS}#node_config</value></field>"
            f"<field var='pubsub#max_items'><value>2</value></field>"
            f"<field var='pubsub#title'><value>Süße Grüße</value></field></x>")
    ok(iq(a, "c", f"<pubsub xmlns='{PS}'><create node='news'/><configure>{form}</configure>"
                  f"</pubsub>", to=svc))
    ok(iq(a, "af", f"<pubsub xmlns='{PS}#owner'><affiliations node='news'><affiliation "
                   f"jid='carol@localhost' affiliation='publisher'/></affiliations></pubsub>",
          to=svc))
    ok(iq(b, "s", f"<pubsub xmlns='{PS}'><subscribe node='news' jid='bob@localhost'/></pubsub>",
          to=svc))
    for i in range(4):
        ok(iq(a, f"p{i}", f"<pubsub xmlns='{PS}'><publish node='news'><item id='i{i}'>"
                          f"<entry xmlns='urn:x'>e{i} ü</entry></item></publish></pubsub>",
              to=svc))
    a.close()
    b.close()
    restart(srv)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    r = ok(iq(b, "it", f"<pubsub xmlns='{PS}'><items node='news'/></pubsub>", typ="get",
              to=svc))
    assert ">e3 ü<" in r and ">e2 ü<" in r and "id='i1'" not in r and "id='i0'" not in r, r
    r = ok(iq(a, "cf", f"<pubsub xmlns='{PS}#owner'><configure node='news'/></pubsub>",
              typ="get", to=svc))
    assert "Süße Grüße" in r, r
    r = ok(iq(b, "ls", f"<pubsub xmlns='{PS}'><subscriptions/></pubsub>", typ="get", to=svc))
    assert "node='news'" in r and "subscription='subscribed'" in r, r
    r = ok(iq(a, "la", f"<pubsub xmlns='{PS}#owner'><affiliations node='news'/></pubsub>",
              typ="get", to=svc))
    assert "jid='carol@localhost'" in r and "affiliation='publisher'" in r, r


def test_muc_persistent_room(server_factory, storage_yaml):
    srv = start(server_factory, storage_yaml)
    a, _ = online(srv, "alice", "pc")
    create(a, "keep", "al")
    ok(config(a, "keep", {"roomname": "Kept", "persistentroom": "1"}))
    a.roundtrip()
    a.close()
    restart(srv)
    a, _ = online(srv, "alice", "pc")
    r = iq(a, "i1", "<query xmlns='http://jabber.org/protocol/disco#items'/>", typ="get", to=MUC)
    assert f"jid='keep@{MUC}'" in r and "name='Kept'" in r, r
    seq = join(a, "keep", "al")
    assert "code='201'" not in seq and "affiliation='owner'" in seq, seq
    r = iq(a, "g", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"keep@{MUC}")
    assert re.search(r"var='muc#roomconfig_roomname'[^>]*>\s*<value>Kept</value>", r), r


def test_push_registration(server_factory, storage_yaml):
    srv = start(server_factory, storage_yaml)
    a, _ = online(srv, "alice", "phone")
    ok(enable(a, "node-1"))
    a.close()
    restart(srv)
    app = app_server(srv)
    b, _ = online(srv, "bob", "pc")
    got = offline_msg(b, app)
    p = publishes(got)
    assert len(p) == 1 and "node='node-1'" in p[0], got


def test_fast_token(server_factory, storage_yaml):
    srv = start(server_factory, storage_yaml)
    tok, _ = get_token(srv.c2s_port, "alice", "pw")
    restart(srv)
    c = stream(srv.c2s_port)
    kind, body = fast_login(c, "alice", tok)
    assert kind == "success", body
    c.close()
    c = stream(srv.c2s_port)
    kind, body = fast_login(c, "alice", "fast-" + "0" * 64)
    assert kind == "failure", body


# ---- faults: the database goes away under a working xmppd ---------------------------------------

PRIVATE_SET = ("<query xmlns='jabber:iq:private'><n xmlns='storage:fault'>{}</n></query>")


@pytest.mark.slow
def test_pgsql_restart_loses_no_acknowledged_write(server_factory, pg_server):
    """PostgreSQL stops while clients work and comes back: what was
    acknowledged before is there; a request made while it is down waits for
    it (sql_fault_wait) and goes through when it returns in time, or fails
    with a clear stanza error and a log line when it does not; the pool
    reconnects and `xmppctl status` shows its health throughout."""
    pg = pg_server
    srv = start(server_factory, lambda extra="": pg.yaml(pg.new_database(),
                                                          "sql_fault_wait: 8s\n"))
    a, _ = online(srv, "alice", "pc")
    # Acknowledged writes: offline messages (the round trip comes after
    # their store) and a private-storage IQ result.
    for i in range(3):
        a.send(f"<message to='bob@localhost' type='chat' id='m{i}'><body>before {i}</body>"
               f"</message>")
    a.roundtrip()
    ok(iq(a, "p0", PRIVATE_SET.format("zero")))
    st = srv.ctl_run("status").stdout
    assert re.search(r"database pgsql up open=\d+ idle=\d+ busy=\d+ max=10 failures=0", st), st
    try:
        # Down, and back within the wait: the request waits and succeeds.
        pg.stop()
        a.send(f"<iq type='set' id='p1'>{PRIVATE_SET.format('one')}</iq>")
        pg.start()
        assert "type='result'" in expect(a, r"<iq[^>]*id='p1'[^>]*>", timeout=30)
        # Down for longer than the wait: a clear error, and a log line.
        pg.stop()
        a.send(f"<iq type='set' id='p2'>{PRIVATE_SET.format('two')}</iq>")
        r = expect(a, r"<iq[^>]*id='p2'.*?</iq>", timeout=30)
        assert "type='error'" in r and "internal-server-error" in r, r
        assert 'event="db unavailable"' in srv.log_text()
        st = srv.ctl_run("status").stdout
        assert re.search(r"database pgsql down .*failures=[1-9]\d*.*last_error=\"", st), st
    finally:
        if pg.proc is None or pg.proc.poll() is not None:
            pg.start()
    # Back: new writes go through on new connections.
    a.send("<message to='bob@localhost' type='chat' id='m3'><body>after 3</body></message>")
    a.roundtrip()
    ok(iq(a, "p3", PRIVATE_SET.format("three")))
    st = srv.ctl_run("status").stdout
    assert re.search(r"database pgsql up .*reconnects=[1-9]", st), st
    # Nothing acknowledged was lost.
    b, _ = online(srv, "bob", "pc")
    for i, text in ((0, "before 0"), (1, "before 1"), (2, "before 2"), (3, "after 3")):
        assert text in expect(b, rf"<message[^>]*id='m{i}'.*?</message>")
    r = ok(iq(a, "g", "<query xmlns='jabber:iq:private'><n xmlns='storage:fault'/></query>",
              typ="get"))
    assert ">three<" in r, r
    assert srv.proc.poll() is None  # no crash


@pytest.mark.slow
def test_concurrent_registrations_all_succeed(server_factory, storage_yaml):
    """Many clients register at once: none may get an error.  On PostgreSQL
    (SERIALIZABLE) the credentials' delete-then-insert of a new account made
    concurrent registrations conflict until xd_db_tx gave up."""
    import threading
    srv = start(server_factory, storage_yaml, names=())
    errors = []

    def one(i):
        try:
            for k in range(12):
                c = XClient(srv.c2s_port)
                c.open_stream()
                c.starttls()
                c.open_stream()
                r = iq(c, "r", reg_query(f"c{i}x{k}", f"pass-word-{i}"))
                if "type='result'" not in r:
                    errors.append(r)
                c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    ts = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == [], errors[:3]
    r = srv.ctl_run("registered_users", "localhost")
    assert len(r.stdout.split()) == 20 * 12, r.stdout[:200]


def test_pgsql_ssl_option_reaches_the_connection(tmp_path, pg_server):
    """sql_ssl is libpq's sslmode: `require` against this PostgreSQL (no
    TLS configured) stops the start with a clear message instead of
    falling back to plain text."""
    from conftest import build_dir
    from xmpptest import Server
    srv = Server(build_dir(), tmp_path / "srv",
                 extra_yaml=pg_server.yaml(pg_server.new_database()).replace(
                     "sql_ssl: disable", "sql_ssl: require"))
    srv.start(wait=False)
    try:
        rc = srv.proc.wait(timeout=60)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(timeout=20)
    assert rc != 0
    text = srv.log_text() + srv.stderr_text()
    assert "server does not support SSL, but SSL was required" in text, text[-2000:]
    assert "cannot open the database" in text, text[-2000:]


# ---- HTTP File Upload -------------------------------------------------------------------------

def test_upload_slot_survives_restart(server_factory, storage_yaml):
    # The slot is a row (upload_slot): requested before a restart, its PUT
    # and GET are served after it from what the database kept.
    from test_upload import http, request_slot, slot_urls
    from test_upload import start as upload_start
    srv = upload_start(server_factory, extra=storage_yaml(""))
    users(srv, "alice")
    c, _ = online(srv, "alice")
    data = "é".encode() * 500
    put, get = slot_urls(request_slot(c, "nötes.txt", len(data), "text/plain"))
    c.close()
    restart(srv)
    st, _, _ = http(srv, "PUT", put, data, "Content-Type: text/plain\r\n")
    assert st == 201
    st, _, body = http(srv, "GET", get)
    assert st == 200 and body == data


def test_pubsub_subscriptions_of_an_older_schema_are_kept(server_factory, storage_yaml,
                                                          request):
    """mod_pubsub schema 1 kept one subscription per (node, jid) (the subid
    was no part of the key): the upgrade to 2 keeps the subscriptions, and
    the JID can then hold several, each notified by its subid."""
    import os
    import sqlite3
    backend = request.node.callspec.params["storage_yaml"]
    seen = {}

    def capture(extra=""):
        seen["yaml"] = storage_yaml(extra)
        return seen["yaml"]
    srv = start(server_factory, capture)
    svc = "pubsub.localhost"
    a, _ = online(srv, "alice", "pc")
    ok(iq(a, "c", f"<pubsub xmlns='{PS}'><create node='news'/></pubsub>", to=svc))
    a.close()
    assert srv.stop() == 0
    key, int_, text = {"sqlite": ("TEXT", "INTEGER", "TEXT"),
                       "mysql": ("VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
                                 "BIGINT", "LONGTEXT")}.get(
        backend, ('TEXT COLLATE "C"', "BIGINT", "TEXT"))
    old = ["DROP TABLE pubsub_sub",
           f"CREATE TABLE pubsub_sub (host {key} NOT NULL, node {key} NOT NULL,"
           f" jid {key} NOT NULL, subid {text} NOT NULL, state {text} NOT NULL,"
           f" deliver {int_} NOT NULL, PRIMARY KEY (host, node, jid))",
           f"INSERT INTO pubsub_sub VALUES ('{svc}', 'news', 'bob@localhost', 'oldsubid',"
           f" 'subscribed', 1)",
           "UPDATE schema_version SET version = 1 WHERE component = 'mod_pubsub'"]
    database = (re.search(r"sql_database: (\S+)", seen["yaml"]) or [None, None])[1]
    if backend == "sqlite":
        with sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db")) as con:
            con.executescript(";".join(old))
    elif backend == "mysql":
        request.getfixturevalue("mariadb_server").sql(";".join(old), database)
    else:
        import pgsql
        request.getfixturevalue("pg_server").psql(
            f"SET ROLE {pgsql.ROLE};" + ";".join(old), database)
    srv.restart()
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    r = ok(iq(b, "ls", f"<pubsub xmlns='{PS}'><subscriptions/></pubsub>", typ="get", to=svc))
    assert "subid='oldsubid'" in r and "subscription='subscribed'" in r, r
    r = ok(iq(b, "s", f"<pubsub xmlns='{PS}'><subscribe node='news' jid='bob@localhost'/>"
                      f"</pubsub>", to=svc))
    new = re.search(r"subid='([^']+)'", r).group(1)
    assert new != "oldsubid", r
    r = ok(iq(b, "ls2", f"<pubsub xmlns='{PS}'><subscriptions/></pubsub>", typ="get", to=svc))
    assert "subid='oldsubid'" in r and f"subid='{new}'" in r, r
    ok(iq(a, "p", f"<pubsub xmlns='{PS}'><publish node='news'><item id='i1'>"
                  f"<entry xmlns='urn:x'>hi</entry></item></publish></pubsub>", to=svc))
    ev = expect(b, r"<message[^>]*from=['\"]pubsub.localhost['\"].*?</message>")
    assert sorted(re.findall(r"<header name=['\"]SubID['\"]>([^<]+)<", ev)) == \
        sorted(["oldsubid", new]), ev
    ok(iq(b, "u", f"<pubsub xmlns='{PS}'><unsubscribe node='news' jid='bob@localhost' "
                  f"subid='oldsubid'/></pubsub>", to=svc))
    restart(srv)
    b, _ = online(srv, "bob", "pc")
    r = ok(iq(b, "ls3", f"<pubsub xmlns='{PS}'><subscriptions/></pubsub>", typ="get", to=svc))
    assert "oldsubid" not in r and f"subid='{new}'" in r, r

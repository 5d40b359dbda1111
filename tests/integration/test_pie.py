"""XEP-0227 export and import (xmppctl export_account, export_host,
import_file) through the wire: accounts filled by real clients on one
server, exported, imported into a second server with a fresh data
directory, then checked there with XMPP queries after a SCRAM login with the
same password (the file holds SCRAM credentials, no password).

The server's storage is a fixture parameter (`pie_config`, BACKENDS):
every test runs on SQLite, PostgreSQL and MariaDB, and the round trip
exports from SQLite and imports into each of them."""
import os
import re
import stat

import pytest

from helpers import expect, iq, online, q, reply, reply_rx, take, users
from xclient import login

MODULES = ("modules:\n"
           "  mod_roster: {}\n"
           "  mod_vcard: {}\n"
           "  mod_private: {}\n"
           "  mod_offline: {}\n"
           "  mod_stanza_id: {}\n"
           "  mod_mam: {}\n"
           "  mod_privacy: {}\n"
           "  mod_blocking: {}\n"
           "  mod_pep: {}\n")

# Storage backends the tests run over: each server of a test gets a new
# empty database there.  test_round_trip exports from an SQLite server and
# imports into the backend's: an account moved to PostgreSQL or MariaDB
# with one command (xmppctl import_file), then logged in to there.
BACKENDS = ["sqlite", "pgsql", "mysql"]


@pytest.fixture(params=[b if b == "sqlite" else pytest.param(b, marks=pytest.mark.slow)
                        for b in BACKENDS])
def pie_config(request):
    """cfg() → the YAML of a server on a new database of the backend."""
    if request.param == "sqlite":
        return lambda: MODULES
    if request.param == "pgsql":
        pg = request.getfixturevalue("pg_server")
        return lambda: MODULES + pg.yaml(pg.new_database())
    my = request.getfixturevalue("mariadb_server")
    return lambda: MODULES + my.yaml(my.new_database())


def start(server_factory, cfg):
    return server_factory(extra_yaml=cfg())


def fill(srv):
    """alice's account as clients leave it: roster with a group and a
    pending outgoing request, a pending incoming request, vCard, private
    XML, two offline messages."""
    users(srv, "bob", "carol")
    users(srv, "alice", password="alice-secret")
    a, _ = online(srv, "alice", password="alice-secret", resource="r")
    r = iq(a, "r1", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bobby'>"
           "<group>Friends</group><group>Work</group></item></query>")
    assert "type='result'" in r, r
    a.send("<presence to='bob@localhost' type='subscribe'/>")
    a.roundtrip()
    r = iq(a, "v1", "<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><NICKNAME>al</NICKNAME>"
           "</vCard>")
    assert "type='result'" in r, r
    r = iq(a, "p1", "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
           "<conference jid='tea@muc.localhost' name='Tea party'/></storage></query>")
    assert "type='result'" in r, r
    r = iq(a, "l1", "<query xmlns='jabber:iq:privacy'><list name='work'>"
           "<item type='jid' value='mallory@localhost' action='deny' order='1'><message/></item>"
           "<item type='group' value='Work' action='allow' order='5'/>"
           "<item action='allow' order='9'/></list></query>")
    assert "type='result'" in r, r
    r = iq(a, "l2", "<query xmlns='jabber:iq:privacy'><default name='work'/></query>")
    assert "type='result'" in r, r
    r = iq(a, "b1", "<block xmlns='urn:xmpp:blocking'><item jid='dave@localhost'/></block>")
    assert "type='result'" in r, r
    # PEP: a nickname (defaults) and a node with its own configuration.
    r = iq(a, "n1", "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
           "<publish node='http://jabber.org/protocol/nick'><item id='current'>"
           "<nick xmlns='http://jabber.org/protocol/nick'>Alice</nick></item></publish></pubsub>")
    assert "type='result'" in r, r
    for i in (1, 2):
        r = iq(a, f"n2{i}", "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
               f"<publish node='urn:example:notes'><item id='note{i}'>"
               f"<note xmlns='urn:example:notes'>text {i}</note></item></publish>"
               "<publish-options><x xmlns='jabber:x:data' type='submit'>"
               "<field var='FORM_TYPE' type='hidden'><value>"
               "http://jabber.org/protocol/pubsub#publish-options</value></field>"
               "<field var='pubsub#access_model'><value>whitelist</value></field>"
               "<field var='pubsub#max_items'><value>10</value></field>"
               "</x></publish-options></pubsub>")
        assert "type='result'" in r, r
    a.close()
    # alice is offline now: carol's request stays pending, bob's messages
    # are stored (each sender's round trip: its pool work is done).
    c, _ = online(srv, "carol", presence=False)
    c.send("<presence to='alice@localhost' type='subscribe'><status>hi alice</status>"
           "</presence>")
    c.roundtrip()
    b, _ = online(srv, "bob", presence=False)
    for i, body in enumerate(("first & <one>", "second")):
        b.send(f"<message to='alice@localhost' type='chat' id='m{i}'><body>"
               f"{body.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}"
               f"</body></message>")
    b.roundtrip()
    b.close()
    c.close()


def mam_results(c, n=[0]):
    """alice's whole archive: [(archive id, stamp, body)] oldest first."""
    n[0] += 1
    c.send(f"<iq type='set' id='mq{n[0]}'><query xmlns='urn:xmpp:mam:2' queryid='q{n[0]}'/></iq>")
    m = c.recv_until(reply_rx(f"mq{n[0]}"))
    seen = q(m.string[:m.start()])
    assert "type='result'" in q(m.group(0)), q(m.group(0))
    out = []
    for r in re.findall(r"<result xmlns='urn:xmpp:mam:2'.*?</result>", seen, re.S):
        out.append((re.search(r"\bid='([^']+)'", r).group(1),
                    re.search(r"stamp='([^']+)'", r).group(1),
                    re.search(r"<body>([^<]*)</body>", r).group(1)))
    return out


def check_alice(srv):
    """What fill() left, read back through XMPP after a SCRAM login."""
    for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
        x, _ = login(srv.c2s_port, "alice", "alice-secret", mech=mech, resource="m")
        x.close()
    a, _ = online(srv, "alice", password="alice-secret", resource="r", presence=False)
    r = iq(a, "g1", "<query xmlns='jabber:iq:roster'/>", typ="get")
    item = re.search(r"<item [^>]*jid='bob@localhost'.*?</item>", r)
    assert item, r
    item = item.group(0)
    assert "name='Bobby'" in item and "ask='subscribe'" in item, item
    assert "subscription='none'" in item, item
    assert "<group>Friends</group>" in item and "<group>Work</group>" in item, item
    assert "carol" not in r, r  # a pending request only is not a roster item
    r = iq(a, "g2", "<vCard xmlns='vcard-temp'/>", typ="get")
    assert "<FN>Alice Liddell</FN>" in r and "<NICKNAME>al</NICKNAME>" in r, r
    r = iq(a, "g3", "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/>"
           "</query>", typ="get")
    assert "jid='tea@muc.localhost'" in r and "name='Tea party'" in r, r
    r = iq(a, "g4", "<query xmlns='jabber:iq:privacy'/>", typ="get")
    assert "<default name='work'/>" in r and "<list name='work'/>" in r, r
    r = iq(a, "g5", "<query xmlns='jabber:iq:privacy'><list name='work'/></query>", typ="get")
    assert re.search(r"<item [^>]*value='mallory@localhost'[^>]*action='deny'[^>]*order='1'"
                     r"[^>]*><message/></item>|<item [^>]*action='deny'[^>]*>", r), r
    assert "value='Work'" in r and "value='dave@localhost'" in r, r
    r = iq(a, "g6", "<blocklist xmlns='urn:xmpp:blocking'/>", typ="get")
    assert "<item jid='dave@localhost'/>" in r, r
    r = iq(a, "g7", "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
           "<items node='http://jabber.org/protocol/nick'/></pubsub>", typ="get")
    assert "<nick xmlns='http://jabber.org/protocol/nick'>Alice</nick>" in r, r
    r = iq(a, "g8", "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
           "<items node='urn:example:notes'/></pubsub>", typ="get")
    assert re.search(r"id='note1'.*text 1.*id='note2'.*text 2|id='note2'.*text 2.*id='note1'"
                     r".*text 1", r), r
    r = iq(a, "g9", "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>"
           "<configure node='urn:example:notes'/></pubsub>", typ="get")
    assert re.search(r"var='pubsub#access_model'[^>]*>\s*<value>whitelist</value>", r), r
    assert re.search(r"var='pubsub#max_items'[^>]*>\s*<value>10</value>", r), r
    # Initial presence: the offline messages in order, and carol's request.
    a.send("<presence/>")
    pres = take(a, r"<presence[^>]*from='carol@localhost'[^>]*>.*?</presence>|"
                   r"<presence[^>]*from='carol@localhost'[^>]*/>")
    assert "type='subscribe'" in pres, pres  # (the server resends no <status/>)
    m1 = take(a, r"<message[^>]*>.*?</message>")
    assert "first &amp; &lt;one&gt;" in m1 and "from='bob@localhost" in m1, m1
    assert "urn:xmpp:delay" in m1, m1
    m2 = take(a, r"<message[^>]*>.*?</message>")
    assert "second" in m2, m2
    a.roundtrip()
    return a


def export_host(srv, tmp_path, name="all.xml"):
    path = str(tmp_path / name)
    r = srv.ctl_run("export_host", "localhost", path)
    assert r.returncode == 0, r.stdout + r.stderr
    return path


def test_round_trip(server_factory, pie_config, tmp_path):
    src = start(server_factory, lambda: MODULES)  # SQLite, the default
    fill(src)
    a, _ = online(src, "alice", password="alice-secret", resource="q", presence=False)
    archive = mam_results(a)
    assert [b for _, _, b in archive] == ["first &amp; &lt;one&gt;", "second"], archive
    a.close()
    path = export_host(src, tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = open(path).read()
    assert "<server-data xmlns='urn:xmpp:pie:0'>" in text, text
    assert "urn:xmpp:pie:0#scram" in text and "alice-secret" not in text, text
    # export_host refuses to overwrite.
    r = src.ctl_run("export_host", "localhost", path)
    assert r.returncode != 0 and "exists" in (r.stdout + r.stderr), r
    # export_account writes one account.
    one = str(tmp_path / "alice.xml")
    r = src.ctl_run("export_account", "alice", "localhost", one)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "name='alice'" in open(one).read() and "name='bob'" not in open(one).read()

    dst = start(server_factory, pie_config)
    r = dst.ctl_run("import_file", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 imported, 0 failed" in r.stdout, r.stdout
    a = check_alice(dst)
    # The archive with the same ids, times and bodies.
    assert mam_results(a) == archive
    a.close()
    # bob and carol log in with their passwords.
    for u in ("bob", "carol"):
        x, _ = login(dst.c2s_port, u, "pw")
        x.close()


def test_existing_account_is_left_alone(server_factory, pie_config, tmp_path):
    src = start(server_factory, pie_config)
    users(src, "alice", "bob")
    path = export_host(src, tmp_path)
    dst = start(server_factory, pie_config)
    users(dst, "alice", password="other")
    r = dst.ctl_run("import_file", path)
    assert r.returncode != 0, r.stdout
    out = r.stdout + r.stderr
    assert "alice@localhost: the account exists already" in out, out
    assert "imported bob@localhost" in out and "1 imported, 1 failed" in out, out
    # alice still has her own password.
    x, _ = login(dst.c2s_port, "alice", "other")
    x.close()
    # No such account, no such file, a file that is not XEP-0227.
    r = dst.ctl_run("export_account", "nobody", "localhost", str(tmp_path / "nobody.xml"))
    assert r.returncode != 0 and "nobody@localhost does not exist" in r.stdout + r.stderr, r
    assert not os.path.exists(tmp_path / "nobody.xml")
    r = dst.ctl_run("import_file", str(tmp_path / "missing.xml"))
    assert r.returncode != 0 and "No such file" in r.stdout + r.stderr, r
    other = tmp_path / "other.xml"
    other.write_text("<roster xmlns='jabber:iq:roster'/>")
    r = dst.ctl_run("import_file", str(other))
    assert r.returncode != 0 and "not a XEP-0227 file" in r.stdout + r.stderr, r


def scram_of(path, user):
    text = open(path).read()
    m = re.search(rf"<user name='{user}'>(.*?)</user>", text, re.S)
    creds = re.findall(r"<scram-credentials .*?</scram-credentials>", m.group(1), re.S)
    assert creds, text
    return "".join(creds)


def test_unknown_namespace_warns(server_factory, pie_config, tmp_path):
    src = start(server_factory, pie_config)
    users(src, "alice")
    creds = scram_of(export_host(src, tmp_path), "alice")
    f = tmp_path / "unknown.xml"
    f.write_text("<?xml version='1.0'?>\n<server-data xmlns='urn:xmpp:pie:0'>"
                 "<host jid='localhost'><user name='alice'>" + creds +
                 "<stuff xmlns='urn:example:unknown'><x/></stuff>"
                 "<vCard xmlns='vcard-temp'><FN>Known</FN></vCard>"
                 "</user></host>"
                 "<host jid='elsewhere.example'><user name='zed'/></host>"
                 "</server-data>\n")
    dst = start(server_factory, pie_config)
    r = dst.ctl_run("import_file", str(f))
    out = r.stdout + r.stderr
    assert "imported alice@localhost" in out, out
    assert "warning: alice@localhost: not imported (no module takes them): " \
           "{urn:example:unknown}stuff" in out, out
    assert "host elsewhere.example is not served here" in out, out
    assert r.returncode != 0, out  # the host that is not served
    a, _ = online(dst, "alice", presence=False)
    r = iq(a, "v", "<vCard xmlns='vcard-temp'/>", typ="get")
    assert "<FN>Known</FN>" in r, r


def test_malformed_file(server_factory, pie_config, tmp_path):
    src = start(server_factory, pie_config)
    users(src, "alice", "bob")
    path = export_host(src, tmp_path)
    text = open(path).read()
    # Cut inside bob's <user/>: the error is reported, bob is not
    # half-imported.  (libxml2 reads ahead, so alice, before the cut, may or
    # may not be imported: whole or not at all.)
    cut = text.index("<user name='bob'>") + len("<user name='bob'>") + 20
    bad = tmp_path / "cut.xml"
    bad.write_text(text[:cut] + "<oops")
    dst = start(server_factory, pie_config)
    r = dst.ctl_run("import_file", str(bad))
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "malformed XML" in out and "line 5" in out, out
    assert dst.ctl_run("check_account", "bob", "localhost").returncode == 1
    # Not XML at all, and a DTD.
    junk = tmp_path / "junk.xml"
    junk.write_text("this is not xml")
    r = dst.ctl_run("import_file", str(junk))
    assert r.returncode != 0 and "malformed XML" in r.stdout + r.stderr, r
    dtd = tmp_path / "dtd.xml"
    dtd.write_text("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e 'boom'>]>"
                   "<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'>"
                   "<user name='eve'><vCard xmlns='vcard-temp'><FN>&e;</FN></vCard></user>"
                   "</host></server-data>")
    r = dst.ctl_run("import_file", str(dtd))
    assert r.returncode != 0 and "DTD" in r.stdout + r.stderr, r
    assert dst.ctl_run("check_account", "eve", "localhost").returncode == 1
    # A bad credential: that account is refused, nothing of it stored.
    badcred = tmp_path / "cred.xml"
    badcred.write_text("<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'>"
                       "<user name='mallory'><scram-credentials xmlns='urn:xmpp:pie:0#scram' "
                       "mechanism='SCRAM-MD5'/></user></host></server-data>")
    r = dst.ctl_run("import_file", str(badcred))
    assert r.returncode != 0 and "unknown mechanism 'SCRAM-MD5'" in r.stdout + r.stderr, r
    assert dst.ctl_run("check_account", "mallory", "localhost").returncode == 1


def test_failed_part_rolls_back_the_account(server_factory, pie_config, tmp_path):
    """A module refuses a part (a reserved namespace in private storage)
    after roster and vCard were stored: the account and everything stored
    for it are rolled back."""
    src = start(server_factory, pie_config)
    users(src, "trent", password="trent-pw")
    creds = scram_of(export_host(src, tmp_path), "trent")

    def trent(extra):
        return ("<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='trent'>"
                + creds + extra + "</user></host></server-data>")

    f = tmp_path / "bad-part.xml"
    f.write_text(trent("<query xmlns='jabber:iq:roster'><item jid='bob@localhost' "
                       "subscription='both'/></query>"
                       "<vCard xmlns='vcard-temp'><FN>Trent</FN></vCard>"
                       "<query xmlns='jabber:iq:private'><x xmlns='jabber:iq:roster'/></query>"))
    dst = start(server_factory, pie_config)
    r = dst.ctl_run("import_file", str(f))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "trent@localhost: private: reserved namespace" in out, out
    assert dst.ctl_run("check_account", "trent", "localhost").returncode == 1
    # The account again, without the bad part and without roster or vCard:
    # nothing of the first attempt is left.
    g = tmp_path / "good.xml"
    g.write_text(trent(""))
    r = dst.ctl_run("import_file", str(g))
    assert r.returncode == 0, r.stdout + r.stderr
    t, _ = online(dst, "trent", password="trent-pw", presence=False)
    r = iq(t, "v", "<vCard xmlns='vcard-temp'/>", typ="get")
    assert "Trent" not in r and "type='result'" in r, r
    r = iq(t, "r", "<query xmlns='jabber:iq:roster'/>", typ="get")
    assert "bob@localhost" not in r, r


def test_scram_only_password_attribute(server_factory, pie_config, tmp_path):
    """A file with only a plain password (XEP-0227 allows it) gets SCRAM
    credentials made from it."""
    f = tmp_path / "pw.xml"
    f.write_text("<server-data xmlns='urn:xmpp:pie:0'><host jid='LocalHost'>"
                 "<user name='Uma' password='uma &amp; pw'/></host></server-data>")
    dst = start(server_factory, pie_config)
    r = dst.ctl_run("import_file", str(f))
    assert r.returncode == 0 and "imported uma@localhost" in r.stdout, r.stdout + r.stderr
    x, _ = login(dst.c2s_port, "uma", "uma & pw", mech="SCRAM-SHA-1")
    x.close()


def test_import_is_held_to_the_new_servers_limits(server_factory, pie_config, tmp_path):
    """The importing server's limits apply: a roster over max_items, or more
    offline messages than max_user_messages, refuse that account whole."""
    src = start(server_factory, pie_config)
    users(src, "alice", "bob", "carol")
    a, _ = online(src, "alice")
    for who in ("bob", "carol"):
        r = iq(a, who, f"<query xmlns='jabber:iq:roster'><item jid='{who}@localhost'/></query>")
        assert "type='result'" in r, r
    a.close()
    b, _ = online(src, "bob", presence=False)
    for i in range(3):
        b.send(f"<message to='carol@localhost' type='chat' id='o{i}'><body>{i}</body></message>")
    b.roundtrip()
    b.close()
    path = export_host(src, tmp_path)
    def cfg():
        c = pie_config().replace("  mod_roster: {}\n", "  mod_roster:\n    max_items: 1\n")
        return c.replace("  mod_offline: {}\n", "  mod_offline:\n    max_user_messages: 2\n")
    dst = start(server_factory, cfg)
    r = dst.ctl_run("import_file", path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "error: alice@localhost: roster: more items than max_items" in out, out
    assert "error: carol@localhost: offline: more than max_user_messages" in out, out
    assert "imported bob@localhost" in out and "1 imported, 2 failed" in out, out
    for u in ("alice", "carol"):
        assert dst.ctl_run("check_account", u, "localhost").returncode == 1

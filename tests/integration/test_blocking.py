"""mod_blocking (XEP-0191 blocking command) through the wire: the list,
block / unblock / unblock-all with pushes to the sessions that requested the
list, enforcement on routing (inbound bounces and silent presence drops,
outbound <blocked/> errors), JID matching rules, persistence across a
restart, the blocks of an older server (its `blocklist` table) kept by the
upgrade, and the module without mod_privacy.  The interplay with privacy
lists is in test_privacy.py."""
import re

from helpers import POOL1, assert_nothing_before, expect, msg_rx, online, reply, users
from xclient import login

MODULES = "modules:\n  mod_roster: {}\n  mod_blocking: {}\n"
NS = "urn:xmpp:blocking"


def blocklist(c, iq_id):
    c.send(f"<iq type='get' id='{iq_id}'><blocklist xmlns='{NS}'/></iq>")
    r = reply(c, iq_id)
    assert "type='result'" in r and f"<blocklist xmlns='{NS}'" in r, r
    return re.findall(r"<item jid='([^']*)'", r)


def block(c, iq_id, *jids, verb="block"):
    items = "".join(f"<item jid='{j}'/>" for j in jids)
    c.send(f"<iq type='set' id='{iq_id}'><{verb} xmlns='{NS}'>{items}</{verb}></iq>")
    return reply(c, iq_id)


def start(server_factory, extra=""):
    srv = server_factory(extra_yaml=MODULES + extra)
    users(srv, "alice", "bob", "carol")
    return srv


def test_block_unblock_list_and_pushes(server_factory):
    srv = start(server_factory)
    a1, _ = online(srv, "alice", "one")
    a2, a2jid = online(srv, "alice", "two")
    a3, _ = online(srv, "alice", "three")  # never asks for the list: no pushes
    assert blocklist(a1, "l0") == []
    assert blocklist(a2, "l1") == []
    # §3.3: an empty <block/> is bad-request; a bad JID is refused.
    r = block(a1, "b0")
    assert "type='error'" in r and "bad-request" in r, r
    r = block(a1, "b0x", "@@bad")
    assert "type='error'" in r and "jid-malformed" in r, r
    r = block(a1, "b1", "bob@localhost", "Carol@LocalHost")
    assert "type='result'" in r, r
    push = expect(a2, r"<iq[^>]*type='set'[^>]*>.*?</iq>".replace("'", "['\"]"))
    assert f"to='{a2jid}'" in push and f"<block xmlns='{NS}'>" in push, push
    assert "jid='bob@localhost'" in push and "jid='carol@localhost'" in push, push
    # Pushes go out before the result that alice/one has seen.
    assert_nothing_before(a3, r"xmlns=['\"]urn:xmpp:blocking")
    assert blocklist(a2, "l2") == ["bob@localhost", "carol@localhost"]
    # Unblock one: the list shrinks, pushes carry the item.
    r = block(a2, "u1", "carol@localhost", verb="unblock")
    assert "type='result'" in r, r
    push = expect(a1, r"<iq[^>]*>\s*<unblock.*?</iq>")
    assert "jid='carol@localhost'" in push, push
    assert blocklist(a1, "l3") == ["bob@localhost"]
    # Another account's list is not ours to read.
    b, _ = online(srv, "bob", "x")
    b.send(f"<iq type='get' id='x1' to='alice@localhost'><blocklist xmlns='{NS}'/></iq>")
    r = reply(b, "x1")
    assert "type='error'" in r, r


def test_enforcement_both_directions(server_factory):
    srv = start(server_factory, POOL1)  # pool round trips below
    a, ajid = online(srv, "alice", "home")
    b, bjid = online(srv, "bob", "desk")
    c, _ = online(srv, "carol", "x")
    assert "type='result'" in block(a, "b1", "bob@localhost")
    # Inbound message: bob gets service-unavailable, alice sees nothing.
    b.send(f"<message to='{ajid}' type='chat' id='m1'><body>hello?</body></message>")
    r = expect(b, r"<message[^>]*id=['\"]m1['\"].*?</message>")
    assert "type='error'" in r and "service-unavailable" in r, r
    b.send("<message to='alice@localhost' type='chat' id='m2'><body>bare</body></message>")
    r = expect(b, r"<message[^>]*id=['\"]m2['\"].*?</message>")
    assert "service-unavailable" in r, r
    # Inbound IQ request: service-unavailable.
    b.send(f"<iq to='{ajid}' type='get' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>")
    r = reply(b, "q1")
    assert "type='error'" in r and "service-unavailable" in r, r
    # Inbound presence (directed, and a subscription request): no answer, not delivered.
    b.send(f"<presence to='{ajid}' id='p1'/>")
    b.send("<presence to='alice@localhost' type='subscribe' id='p2'/>")
    # Barriers: the block decides on bob's stream, in order; a subscription
    # it let pass would be handled on the pool, which bob's pool round trip
    # follows (one pool thread).
    assert_nothing_before(b, r"id=['\"]p[12]['\"]", pool=True)
    assert_nothing_before(a, r"id=['\"](m1|m2|q1|p1|p2)['\"]", after=b, pool=True)
    # Outbound: alice's message to bob comes back not-acceptable + <blocked/>.
    a.send(f"<message to='{bjid}' type='chat' id='o1'><body>Can you hear me now?</body></message>")
    r = expect(a, r"<message[^>]*id=['\"]o1['\"].*?</message>")
    assert "type='error'" in r and "not-acceptable" in r, r
    assert "<blocked xmlns='urn:xmpp:blocking:errors'" in r, r
    assert "Can you hear me now?" in r, r
    assert_nothing_before(b, r"id=['\"]o1['\"]", after=a)
    # Carol is not blocked: both directions flow.
    c.send(f"<message to='{ajid}' type='chat' id='c1'><body>hi</body></message>")
    assert "<body>hi</body>" in expect(a, r"<message[^>]*id=['\"]c1['\"].*?</message>")
    # Unblock: bob gets through again.
    assert "type='result'" in block(a, "u1", "bob@localhost", verb="unblock")
    b.send(f"<message to='{ajid}' type='chat' id='m3'><body>back</body></message>")
    assert "<body>back</body>" in expect(a, r"<message[^>]*id=['\"]m3['\"].*?</message>")


def test_jid_matching_full_and_domain(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice", "home")
    b1, _ = online(srv, "bob", "r1")
    b2, _ = online(srv, "bob", "r2")
    # A full JID blocks only that resource.
    assert "type='result'" in block(a, "b1", "bob@localhost/r1")
    b1.send(f"<message to='{ajid}' type='chat' id='f1'><body>1</body></message>")
    assert "service-unavailable" in expect(b1, r"<message[^>]*id=['\"]f1['\"].*?</message>")
    # bob/r2's message, sent after bob/r1's was refused, is a barrier for it.
    b2.send(f"<message to='{ajid}' type='chat' id='f2'><body>2</body></message>")
    assert "<body>2</body>" in assert_nothing_before(a, r"id=['\"]f1['\"]", after=b1,
                                                     barrier=msg_rx("f2"))
    # The domain blocks everyone there, but never alice's own resources.
    assert "type='result'" in block(a, "b2", "localhost")
    b2.send(f"<message to='{ajid}' type='chat' id='f3'><body>3</body></message>")
    assert "service-unavailable" in expect(b2, r"<message[^>]*id=['\"]f3['\"].*?</message>")
    a2, a2jid = online(srv, "alice", "other")
    a2.send(f"<message to='{ajid}' type='chat' id='own'><body>me</body></message>")
    assert "<body>me</body>" in assert_nothing_before(a, r"id=['\"]f[13]['\"]", after=b2,
                                                      barrier=msg_rx("own"))


def test_block_sends_unavailable_to_subscribed_contact(server_factory):
    srv = start(server_factory)
    a, ajid = login(srv.c2s_port, "alice", "pw", resource="home")
    b, _ = login(srv.c2s_port, "bob", "pw", resource="desk")
    b.send("<presence/>")
    a.send("<presence/>")
    # bob subscribes to alice, alice approves: bob has alice's presence.
    b.send("<presence to='alice@localhost' type='subscribe'/>")
    expect(a, r"<presence[^>]*type=['\"]subscribe['\"]")
    a.send("<presence to='bob@localhost' type='subscribed'/>")
    expect(b, r"<presence[^>]*from=['\"]alice@localhost/home['\"](?![^>]*type=)[^>]*>")
    assert "type='result'" in block(a, "b1", "bob@localhost")
    r = expect(b, r"<presence[^>]*from=['\"]alice@localhost/home['\"][^>]*>")
    assert "type='unavailable'" in r, r


def test_unblock_all(server_factory):
    srv = start(server_factory)
    a1, ajid = online(srv, "alice", "one")
    a2, _ = online(srv, "alice", "two")
    b, _ = online(srv, "bob", "x")
    blocklist(a2, "l0")
    assert "type='result'" in block(a1, "b1", "bob@localhost", "carol@localhost", "example.org")
    expect(a2, r"<iq[^>]*>\s*<block .*?</iq>")
    assert "type='result'" in block(a1, "u0", verb="unblock")
    push = expect(a2, r"<iq[^>]*>\s*<unblock[^>]*/>\s*</iq>|<iq[^>]*>\s*<unblock[^>]*>\s*</unblock>")
    assert "<item" not in push, push
    assert blocklist(a1, "l1") == []
    b.send(f"<message to='{ajid}' type='chat' id='m1'><body>free</body></message>")
    assert "<body>free</body>" in expect(a1, r"<message[^>]*id=['\"]m1['\"].*?</message>")


def test_lists_survive_restart(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice", "home")
    assert "type='result'" in block(a, "b1", "bob@localhost", "carol@localhost/x")
    a.close()
    assert srv.stop() == 0
    srv.restart()
    a, ajid = online(srv, "alice", "home")
    assert blocklist(a, "l1") == ["bob@localhost", "carol@localhost/x"]
    b, _ = online(srv, "bob", "x")
    b.send(f"<message to='{ajid}' type='chat' id='m1'><body>again</body></message>")
    assert "service-unavailable" in expect(b, r"<message[^>]*id=['\"]m1['\"].*?</message>")
    assert_nothing_before(a, r"id=['\"]m1['\"]", after=b)


def test_feature_in_account_disco(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice", "home")
    a.send("<iq type='get' id='d1' to='alice@localhost'>"
           "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    r = reply(a, "d1")
    assert f"var='{NS}'" in r, r
    # XEP-0191 2: clients ask their server.
    a.send("<iq type='get' id='d2' to='localhost'>"
           "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    r = reply(a, "d2")
    assert f"var='{NS}'" in r and "jabber:iq:privacy" not in r, r
    # Without mod_privacy, privacy lists are not served (blocks still are).
    a.send("<iq type='get' id='p1'><query xmlns='jabber:iq:privacy'/></iq>")
    r = reply(a, "p1")
    assert "type='error'" in r and "service-unavailable" in r, r


def test_blocks_of_an_older_server_are_kept(server_factory):
    """A database written before privacy lists (mod_blocking schema 1, its
    own `blocklist` table): the upgrade moves the blocks into the default
    privacy list and they hold as before."""
    import os
    import sqlite3
    srv = start(server_factory)
    assert srv.stop() == 0
    with sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db")) as con:
        con.executescript(
            "DROP TABLE privacy_default; DROP TABLE privacy_item; DROP TABLE privacy_list;"
            "DELETE FROM schema_version WHERE component = 'privacy';"
            "UPDATE schema_version SET version = 1 WHERE component = 'mod_blocking';"
            "CREATE TABLE blocklist (host TEXT NOT NULL, username TEXT NOT NULL,"
            " jid TEXT NOT NULL, created_at INTEGER NOT NULL,"
            " PRIMARY KEY (host, username, jid));"
            "INSERT INTO blocklist VALUES ('localhost', 'alice', 'carol@localhost/x', 20);"
            "INSERT INTO blocklist VALUES ('localhost', 'alice', 'bob@localhost', 10);")
    srv.restart()
    a, ajid = online(srv, "alice", "home")
    assert blocklist(a, "l1") == ["bob@localhost", "carol@localhost/x"]
    b, _ = online(srv, "bob", "x")
    b.send(f"<message to='{ajid}' type='chat' id='m1'><body>still?</body></message>")
    assert "service-unavailable" in expect(b, r"<message[^>]*id=['\"]m1['\"].*?</message>")
    assert "type='result'" in block(a, "u1", "bob@localhost", verb="unblock")
    b.send(f"<message to='{ajid}' type='chat' id='m2'><body>free</body></message>")
    assert "<body>free</body>" in expect(a, r"<message[^>]*id=['\"]m2['\"].*?</message>")
    with sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db")) as con:
        assert con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'blocklist'"
                           ).fetchone()[0] == 0

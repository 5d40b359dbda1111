"""Presence subscriptions, broadcast and probes between local users
(RFC 6121 3 and 4) with mod_roster."""
import re

from helpers import POOL1, assert_nothing_before, expect, online, pool_roundtrip, q, users

ROSTER = "modules:\n  mod_roster: {}\n"


def session(srv, user, resource, presence=True):
    """Asks for the roster (so it gets the pushes), then available."""
    return online(srv, user, resource, presence=presence, roster=True)


def test_subscribe_approve_broadcast_and_probe(server_factory):
    srv = server_factory(extra_yaml=ROSTER + POOL1)  # a pool round trip below
    users(srv, "alice", "bob")
    a, ajid = session(srv, "alice", "a")
    b, bjid = session(srv, "bob", "b")
    # Each session sees its own presence (RFC 6121 4.2.2).
    expect(a, rf"<presence[^>]*from=['\"]{re.escape(ajid)}")

    a.send("<presence to='bob@localhost' type='subscribe'/>")
    sub = q(expect(b, r"<presence[^>]*type=['\"]subscribe['\"][^>]*/?>"))
    assert "from='alice@localhost'" in sub, sub
    push = q(expect(a, r"<iq[^>]*type=['\"]set['\"].*?</iq>"))
    assert "jid='bob@localhost'" in push and "ask='subscribe'" in push, push

    b.send("<presence to='alice@localhost' type='subscribed'/>")
    ok = q(expect(a, r"<presence[^>]*type=['\"]subscribed['\"][^>]*/?>"))
    assert "from='bob@localhost'" in ok
    # The approver's presence follows (RFC 6121 3.1.6).
    expect(a, rf"<presence[^>]*from=['\"]{re.escape(bjid)}['\"](?![^>]*type=)")
    bpush = q(expect(b, r"<iq[^>]*type=['\"]set['\"].*?</iq>"))
    assert "subscription='from'" in bpush, bpush

    # Broadcast: bob goes unavailable, alice sees it.
    b.send("<presence type='unavailable'/>")
    un = q(expect(a, rf"<presence[^>]*from=['\"]{re.escape(bjid)}['\"][^>]*type=['\"]unavailable|"
                     rf"<presence[^>]*type=['\"]unavailable['\"][^>]*from=['\"]{re.escape(bjid)}"))
    assert "unavailable" in un
    # ... and available again, with a status.
    b.send("<presence><status>back</status></presence>")
    assert "<status>back</status>" in expect(a, r"<presence[^>]*>.*?</presence>")

    # Probe: a new alice session gets bob's current presence at login.
    a2, _ = session(srv, "alice", "a2")
    assert "<status>back</status>" in expect(a2, rf"<presence[^>]*from=['\"]{re.escape(bjid)}.*?</presence>")
    # Bob is not subscribed to alice: he does not get alice's presence.
    # alice/a2's broadcast goes out from the pool: pool round trips (POOL1).
    assert_nothing_before(b, r"<presence[^>]*from=['\"]alice@localhost/a2", after=a2, pool=True)


def test_own_initial_presence_arrives_once(server_factory):
    """RFC 6121 4.2.2: the initial presence goes to each of the user's
    available resources, the one that sent it included, once; the other
    resource's presence reaches the new session once too."""
    srv = server_factory(extra_yaml=ROSTER + POOL1)  # the broadcast runs on the pool
    users(srv, "erin")
    o, ojid = session(srv, "erin", "other")
    e, ejid = session(srv, "erin", "new")
    # A pool round trip: the broadcast and the other resources' presence
    # went out before it; everything since the login is still buffered.
    seen = q(pool_roundtrip(e).decode(errors="replace"))
    for jid in (ejid, ojid):
        got = re.findall(rf"<presence[^>]*from='{re.escape(jid)}'", seen)
        assert len(got) == 1, (jid, seen)
    o.close()


def test_subscription_request_waits_until_login(server_factory):
    srv = server_factory(extra_yaml=ROSTER)
    users(srv, "carol", "dave")
    c, _ = session(srv, "carol", "c")
    c.send("<presence to='dave@localhost' type='subscribe'><status>hi dave</status></presence>")
    expect(c, r"<iq[^>]*type=['\"]set['\"].*?</iq>")  # carol's push (ask)
    d, _ = session(srv, "dave", "d")
    req = q(expect(d, r"<presence[^>]*type=['\"]subscribe['\"][^>]*/?>"))
    assert "from='carol@localhost'" in req, req
    # Dave's roster shows no item for a request (RFC 6121 3.1.3).
    d.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
    r1 = expect(d, r"<iq[^>]*id=['\"]r1.*?(</iq>|/>)")
    assert "carol@localhost" not in r1, r1


def test_mutual_subscription_and_unsubscribe(server_factory):
    srv = server_factory(extra_yaml=ROSTER)
    users(srv, "eve", "fay")
    e, ejid = session(srv, "eve", "e")
    f, fjid = session(srv, "fay", "f")
    for x, y, yb in ((e, f, "fay@localhost"), (f, e, "eve@localhost")):
        x.send(f"<presence to='{yb}' type='subscribe'/>")
        expect(y, r"type=['\"]subscribe['\"]")
    e.send("<presence to='fay@localhost' type='subscribed'/>")
    f.send("<presence to='eve@localhost' type='subscribed'/>")
    expect(e, r"type=['\"]subscribed['\"]")
    expect(f, r"type=['\"]subscribed['\"]")
    e.send("<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>")
    assert "subscription='both'" in q(expect(e, r"<iq[^>]*id=['\"]r2.*?</iq>"))
    # Fay cancels eve's subscription: eve gets unavailable from fay.
    f.send("<presence to='eve@localhost' type='unsubscribed'/>")
    expect(e, r"type=['\"]unsubscribed['\"]")
    e.send("<iq type='get' id='r3'><query xmlns='jabber:iq:roster'/></iq>")
    assert "subscription='from'" in q(expect(e, r"<iq[^>]*id=['\"]r3.*?</iq>"))


def test_roster_remove_cancels_both_ways_and_features(server_factory):
    srv = server_factory(extra_yaml=ROSTER)
    users(srv, "gil", "hana")
    g, gjid = session(srv, "gil", "g")
    h, hjid = session(srv, "hana", "h")
    g.send("<presence to='hana@localhost' type='subscribe'/>")
    expect(h, r"type=['\"]subscribe['\"]")
    h.send("<presence to='gil@localhost' type='subscribed'/>")
    expect(g, r"type=['\"]subscribed['\"]")
    # RFC 6121 2.5.2: removing hana unsubscribes and cancels.
    g.send("<iq type='set' id='rm'><query xmlns='jabber:iq:roster'>"
           "<item jid='hana@localhost' subscription='remove'/></query></iq>")
    expect(g, r"<iq[^>]*id=['\"]rm")
    expect(h, r"type=['\"]unsubscribe['\"]")
    h.send("<iq type='get' id='r9'><query xmlns='jabber:iq:roster'/></iq>")
    r9 = q(expect(h, r"<iq[^>]*id=['\"]r9.*?(</iq>|/>)"))
    assert "subscription='from'" not in r9 and "subscription='both'" not in r9, r9


def test_stream_features_advertise_roster_versioning(server_factory):
    from xclient import XClient
    srv = server_factory(extra_yaml=ROSTER)
    users(srv, "ivy")
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    assert c.plain("ivy", "pw")[0] == "success"
    feats = c.open_stream()
    assert "urn:xmpp:features:rosterver" in feats and "urn:xmpp:features:pre-approval" in feats


def test_account_removal_drops_roster_vcard_private(server_factory):
    import os
    import sqlite3
    srv = server_factory(extra_yaml="modules:\n  mod_roster: {}\n  mod_vcard: {}\n  mod_private: {}\n")
    users(srv, "jon", "kim")
    j, _ = session(srv, "jon", "j")
    j.send("<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='kim@localhost'/>"
           "</query></iq>")
    expect(j, r"<iq[^>]*id=['\"]s1['\"][^>]*type=['\"]result|<iq[^>]*type=['\"]result['\"][^>]*id=['\"]s1")
    j.send("<iq type='set' id='s2'><vCard xmlns='vcard-temp'><FN>Jon</FN></vCard></iq>")
    expect(j, r"id=['\"]s2")
    j.send("<iq type='set' id='s3'><query xmlns='jabber:iq:private'>"
           "<prefs xmlns='urn:example:prefs'>x</prefs></query></iq>")
    expect(j, r"id=['\"]s3")
    db = os.path.join(srv.data_dir, "xmppd.db")

    def rows():
        with sqlite3.connect(db) as con:
            return [con.execute(f"SELECT COUNT(*) FROM {t} WHERE username='jon'").fetchone()[0]
                    for t in ("roster_item", "vcard", "private_storage")]

    assert rows() == [1, 1, 1]
    assert srv.ctl_run("unregister", "jon", "localhost").returncode == 0
    assert rows() == [0, 0, 0]


def test_blocked_contact_presence_is_not_broadcast(server_factory):
    srv = server_factory(extra_yaml="modules:\n  mod_roster: {}\n  mod_blocking: {}\n" + POOL1)
    users(srv, "lou", "mia")
    l, _ = session(srv, "lou", "l")
    m, mjid = session(srv, "mia", "m")
    l.send("<presence to='mia@localhost' type='subscribe'/>")
    expect(m, r"type=['\"]subscribe['\"]")
    m.send("<presence to='lou@localhost' type='subscribed'/>")
    expect(l, r"type=['\"]subscribed['\"]")
    m.send("<presence><status>one</status></presence>")
    assert "<status>one</status>" in expect(l, r"<presence[^>]*>.*?</presence>")
    l.send("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='mia@localhost'/>"
           "</block></iq>")
    expect(l, r"<iq[^>]*id=['\"]b1")
    m.send("<presence><status>two</status></presence>")
    # mia's broadcast goes out from the pool: pool round trips (POOL1).
    assert_nothing_before(l, r"<status>two</status>", after=m, pool=True)

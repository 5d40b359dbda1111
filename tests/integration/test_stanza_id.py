"""mod_stanza_id (XEP-0359) through the wire: every message to an account is
stamped with a stanza-id by the recipient's bare JID, the same for every
resource and after offline delivery, forged ids by the recipient are removed,
others kept, and the feature is advertised."""
import re

from helpers import expect, online, users

MODULES = "modules:\n  mod_roster: {}\n  mod_offline: {}\n  mod_stanza_id: {}\n"
SID = "urn:xmpp:sid:0"


def msg(c, body):
    return expect(c, r"<message[^>]*>(?:(?!</message>).)*" + body + r".*?</message>")


def sids(xml, by):
    """The ids of the stanza-id elements of xml that name `by`."""
    return [re.search(r"id='([^']*)'", e).group(1)
            for e in re.findall(r"<stanza-id [^>]*>", xml)
            if f"by='{by}'" in e and SID in e]


def test_stamped_unique_and_same_for_carbons_and_offline(server_factory):
    srv = server_factory(extra_yaml=MODULES)
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice", "a1")
    b1, _ = online(srv, "bob", "b1", priority=5)
    b2, _ = online(srv, "bob", "b2", priority=5)
    # Equal priorities: a message to the bare JID reaches both (RFC 6121 8.5.2.1.1).
    a.send("<message to='bob@localhost' type='chat'><body>one</body></message>")
    m1, m2 = msg(b1, "one"), msg(b2, "one")
    i1, i2 = sids(m1, "bob@localhost"), sids(m2, "bob@localhost")
    assert len(i1) == 1 and i1 == i2, (m1, m2)
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", i1[0])
    a.send("<message to='bob@localhost/b1' type='chat'><body>two</body></message>")
    i3 = sids(msg(b1, "two"), "bob@localhost")
    assert len(i3) == 1 and i3 != i1
    # Offline: the id is given before storage and delivered with the message.
    b1.end_stream()  # bob has no session left once the server closed both
    b2.end_stream()
    a.send("<message to='bob@localhost' type='chat'><body>three</body></message>")
    a.roundtrip()
    b3, _ = online(srv, "bob", "b3")
    m = msg(b3, "three")
    assert "urn:xmpp:delay" in m and len(sids(m, "bob@localhost")) == 1, m
    a.close()
    b3.close()


def test_forged_ids_removed_others_kept(server_factory):
    srv = server_factory(extra_yaml=MODULES)
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice", "a1")
    b, _ = online(srv, "bob", "b1")
    a.send("<message to='bob@localhost/b1' type='chat'><body>forged</body>"
           f"<stanza-id xmlns='{SID}' id='FORGED' by='bob@localhost'/>"
           f"<stanza-id xmlns='{SID}' id='room-1' by='room@conference.example'/>"
           f"<origin-id xmlns='{SID}' id='client-1'/></message>")
    m = msg(b, "forged")
    assert "FORGED" not in m, m
    own = sids(m, "bob@localhost")
    assert len(own) == 1 and own[0] != "FORGED"
    assert "id='room-1'" in m and "id='client-1'" in m, m
    # Error messages are not stamped.
    a.send("<message to='bob@localhost/b1' type='error'><body>err</body></message>")
    assert "stanza-id" not in msg(b, "err")
    a.close()
    b.close()


def test_feature_advertised(server_factory):
    srv = server_factory(extra_yaml=MODULES)
    users(srv, "alice")
    a, _ = online(srv, "alice", "a1")
    for to in ("alice@localhost", "localhost"):
        a.send(f"<iq type='get' id='d-{to}' to='{to}'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        r = a.recv_until(r"<iq[^>]*id=['\"]d-" + re.escape(to) + r"['\"].*?</iq>").group(0)
        assert f"var='{SID}'" in r.decode().replace('"', "'"), r
    a.close()


def test_off_without_the_module(server_factory):
    srv = server_factory(extra_yaml="modules:\n  mod_roster: {}\n")
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice", "a1")
    b, _ = online(srv, "bob", "b1")
    a.send("<message to='bob@localhost/b1' type='chat'><body>plain</body></message>")
    assert "stanza-id" not in msg(b, "plain")
    a.close()
    b.close()


def test_groupchat_not_stamped_forged_removed(server_factory):
    """A room's groupchat message is not the account's archive's: no
    stanza-id by the account is added to it (each copy of a room's
    fan-out stays the shared one), and one forged by a sender is removed."""
    srv = server_factory(extra_yaml=MODULES + "  mod_muc: {}\n")
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice", "a1")
    b, _ = online(srv, "bob", "b1")
    room = "r@conference.localhost"
    a.send(f"<presence to='{room}/al'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    expect(a, r"<message[^>]*>\s*<subject")
    a.send(f"<iq type='set' id='c1' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
           "<x xmlns='jabber:x:data' type='submit'/></query></iq>")
    expect(a, r"<iq[^>]*id='c1'")
    b.send(f"<presence to='{room}/bo'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    expect(b, r"<message[^>]*>\s*<subject")
    a.send(f"<message to='{room}' type='groupchat' id='g1'><body>gc</body>"
           f"<stanza-id xmlns='{SID}' id='FORGED' by='bob@localhost'/></message>")
    m = msg(b, "gc")
    assert "FORGED" not in m and not sids(m, "bob@localhost"), m
    m = msg(a, "gc")
    assert not sids(m, "alice@localhost"), m


def test_headline_not_stamped_forged_removed(server_factory):
    """A headline message is never archived (XEP-0313; mod_mam keeps none),
    so it gets no stanza-id by the account (an id naming nothing, and a copy
    and serialization per recipient of a PEP or pubsub fan-out); one forged
    by the sender is still removed, others kept."""
    srv = server_factory(extra_yaml=MODULES)
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice", "a1")
    b, _ = online(srv, "bob", "b1")
    a.send("<message to='bob@localhost/b1' type='headline'><body>news</body></message>")
    m = msg(b, "news")
    assert not sids(m, "bob@localhost"), m
    a.send("<message to='bob@localhost/b1' type='headline'><body>forged</body>"
           f"<stanza-id xmlns='{SID}' id='FORGED' by='bob@localhost'/>"
           f"<stanza-id xmlns='{SID}' id='svc-1' by='pubsub.example'/></message>")
    m = msg(b, "forged")
    assert "FORGED" not in m and not sids(m, "bob@localhost"), m
    assert sids(m, "pubsub.example") == ["svc-1"], m
    # A chat message is still stamped.
    a.send("<message to='bob@localhost/b1' type='chat'><body>talk</body></message>")
    assert len(sids(msg(b, "talk"), "bob@localhost")) == 1

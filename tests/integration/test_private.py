"""mod_private (XEP-0049 jabber:iq:private) through the wire: set and get in
two namespaces, several children in one set, reserved namespaces, another
account's storage, the size limits, and persistence across a restart."""
from helpers import reply, users
from xclient import login

MODULES = ("modules:\n"
           "  mod_private:\n"
           "    max_size: 1024\n"
           "    max_user_size: 4096\n")


def priv(body):
    return f"<query xmlns='jabber:iq:private'>{body}</query>"


def start(server_factory):
    srv = server_factory(extra_yaml=MODULES)
    users(srv, "alice", "bob")
    return srv


def test_set_get_two_namespaces(server_factory):
    srv = start(server_factory)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    # Two namespaces in one set.
    a.send("<iq type='set' id='s1'>" + priv(
        "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>"
        "<storage xmlns='storage:bookmarks'><conference jid='r@muc.localhost' name='R'/>"
        "</storage>") + "</iq>")
    r = reply(a, "s1")
    assert "type='result'" in r, r
    a.send("<iq type='get' id='g1'>" + priv("<exodus xmlns='exodus:prefs'/>") + "</iq>")
    r = reply(a, "g1")
    assert "type='result'" in r and "<defaultnick>Hamlet</defaultnick>" in r, r
    assert "bookmarks" not in r, r
    a.send("<iq type='get' id='g2' to='alice@localhost'>"
           + priv("<storage xmlns='storage:bookmarks'/>") + "</iq>")
    r = reply(a, "g2")
    assert "jid='r@muc.localhost'" in r and "defaultnick" not in r, r
    # Replace one; the other stays.
    a.send("<iq type='set' id='s2'>" + priv(
        "<exodus xmlns='exodus:prefs'><defaultnick>Ophelia</defaultnick></exodus>") + "</iq>")
    assert "type='result'" in reply(a, "s2")
    a.send("<iq type='get' id='g3'>" + priv("<exodus xmlns='exodus:prefs'/>") + "</iq>")
    r = reply(a, "g3")
    assert "Ophelia" in r and "Hamlet" not in r, r
    a.send("<iq type='get' id='g4'>" + priv("<storage xmlns='storage:bookmarks'/>") + "</iq>")
    assert "jid='r@muc.localhost'" in reply(a, "g4")
    # Nothing stored under a key: the element comes back empty.
    a.send("<iq type='get' id='g5'>" + priv("<none xmlns='urn:example:none'/>") + "</iq>")
    r = reply(a, "g5")
    assert "type='result'" in r and "urn:example:none" in r, r
    # A get naming two namespaces is refused.
    a.send("<iq type='get' id='g6'>" + priv(
        "<exodus xmlns='exodus:prefs'/><storage xmlns='storage:bookmarks'/>") + "</iq>")
    r = reply(a, "g6")
    assert "type='error'" in r and "bad-request" in r, r


def test_reserved_namespace_and_empty_query(server_factory):
    srv = start(server_factory)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    for i, el in enumerate(["<vCard xmlns='vcard-temp'><FN>Hamlet</FN></vCard>",
                            "<query xmlns='jabber:iq:roster'/>",
                            "<x xmlns='http://jabber.org/protocol/muc'/>",
                            "<plain/>"]):
        a.send(f"<iq type='set' id='r{i}'>" + priv(el) + "</iq>")
        r = reply(a, f"r{i}")
        assert "type='error'" in r and "not-acceptable" in r, (el, r)
    a.send("<iq type='get' id='rg'>" + priv("<vCard xmlns='vcard-temp'/>") + "</iq>")
    r = reply(a, "rg")
    assert "type='error'" in r and "not-acceptable" in r, r
    # A set that mixes a reserved namespace stores nothing at all.
    a.send("<iq type='set' id='mix'>" + priv(
        "<ok xmlns='urn:example:ok'>1</ok><vCard xmlns='vcard-temp'/>") + "</iq>")
    assert "not-acceptable" in reply(a, "mix")
    a.send("<iq type='get' id='mg'>" + priv("<ok xmlns='urn:example:ok'/>") + "</iq>")
    r = reply(a, "mg")
    assert "type='result'" in r and ">1<" not in r, r
    # XEP-0049 2.3: a query without a child.
    a.send("<iq type='get' id='e1'>" + priv("") + "</iq>")
    r = reply(a, "e1")
    assert "type='error'" in r and "not-acceptable" in r, r


def test_another_users_storage_forbidden(server_factory):
    srv = start(server_factory)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    b, _ = login(srv.c2s_port, "bob", "pw", resource="r")
    b.send("<iq type='set' id='b1'>" + priv("<secret xmlns='urn:example:s'>42</secret>")
           + "</iq>")
    assert "type='result'" in reply(b, "b1")
    a.send("<iq type='get' id='x1' to='bob@localhost'>"
           + priv("<secret xmlns='urn:example:s'/>") + "</iq>")
    r = reply(a, "x1")
    assert "type='error'" in r and "<forbidden" in r and "42" not in r, r
    a.send("<iq type='set' id='x2' to='bob@localhost'>"
           + priv("<secret xmlns='urn:example:s'>0</secret>") + "</iq>")
    r = reply(a, "x2")
    assert "type='error'" in r and "<forbidden" in r, r
    b.send("<iq type='get' id='b2'>" + priv("<secret xmlns='urn:example:s'/>") + "</iq>")
    assert ">42</secret>" in reply(b, "b2")


def test_size_limits(server_factory):
    srv = start(server_factory)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    a.send("<iq type='set' id='big'>" + priv(f"<a xmlns='urn:example:a'>{'x' * 1100}</a>")
           + "</iq>")
    r = reply(a, "big")
    assert "type='error'" in r and "not-acceptable" in r, r
    # Four elements of ~900 bytes fit max_size each; the fifth passes 4096 in total.
    for i in range(4):
        a.send(f"<iq type='set' id='q{i}'>"
               + priv(f"<e{i} xmlns='urn:example:q'>{'y' * 900}</e{i}>") + "</iq>")
        assert "type='result'" in reply(a, f"q{i}"), i
    a.send("<iq type='set' id='q4'>" + priv(f"<e4 xmlns='urn:example:q'>{'z' * 900}</e4>")
           + "</iq>")
    r = reply(a, "q4")
    assert "type='error'" in r and "policy-violation" in r, r
    a.send("<iq type='get' id='g4'>" + priv("<e4 xmlns='urn:example:q'/>") + "</iq>")
    r = reply(a, "g4")
    assert "type='result'" in r and "zzz" not in r, r
    # Replacing an element with a smaller one still fits.
    a.send("<iq type='set' id='q0b'>" + priv("<e0 xmlns='urn:example:q'>small</e0>") + "</iq>")
    assert "type='result'" in reply(a, "q0b")


def test_persists_across_restart(server_factory):
    srv = start(server_factory)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    a.send("<iq type='set' id='s'>" + priv("<p xmlns='urn:example:p'><k>v</k></p>") + "</iq>")
    assert "type='result'" in reply(a, "s")
    a.close()
    assert srv.stop() == 0
    srv.restart()
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    a.send("<iq type='get' id='g'>" + priv("<p xmlns='urn:example:p'/>") + "</iq>")
    r = reply(a, "g")
    assert "type='result'" in r and "<k>v</k>" in r, r

"""First routing between local sessions (RFC 6121 8.5): messages to full
and bare JIDs by presence priority, IQs between resources, bounces for
unknown resources and remote domains, across both workers."""
import os
import re
import time

import slixmpp

from helpers import POOL1, assert_nothing_before, expect, msg_rx, online, q, send_marker, users
from xmpptest import run_slixmpp


def test_message_to_full_jid_across_sessions(server):
    users(server, "alice", "bob")
    # Several sessions so that both workers own some.
    sessions = [online(server, "bob", f"r{i}") for i in range(4)]
    a, ajid = online(server, "alice", "home")
    for i, (c, jid) in enumerate(sessions):
        a.send(f"<message to='{jid}' type='chat' id='m{i}'><body>hi {i}</body></message>")
        text = expect(c, rf"<message[^>]*id=['\"]m{i}['\"].*?</message>")
        assert f"from='{ajid}'" in text.replace('"', "'"), text
        assert f"<body>hi {i}</body>" in text


def test_bare_jid_goes_to_highest_priority(server):
    users(server, "carol", "dan")
    lo, lojid = online(server, "dan", "lo", priority=1)
    hi, _ = online(server, "dan", "hi", priority=5)
    neg, negjid = online(server, "dan", "neg", priority=-1)
    c, _ = online(server, "carol", "x")
    c.send("<message to='dan@localhost' type='chat' id='b1'><body>top</body></message>")
    assert "<body>top</body>" in expect(hi, r"<message[^>]*id=['\"]b1.*?</message>")
    # Barriers: carol's next message to each full JID comes after b1 would have.
    assert_nothing_before(lo, r"id=['\"]b1", barrier=send_marker(c, lojid))
    assert_nothing_before(neg, r"id=['\"]b1", barrier=send_marker(c, negjid))
    # Headlines go to every available session of non-negative priority.
    c.send("<message to='dan@localhost' type='headline' id='h1'><body>news</body></message>")
    expect(hi, r"id=['\"]h1")
    expect(lo, r"id=['\"]h1")
    assert_nothing_before(neg, r"id=['\"]h1", barrier=send_marker(c, negjid))


def test_unknown_resource_falls_back_to_bare_for_chat(server):
    users(server, "eve", "fay")
    f, _ = online(server, "fay", "desk")
    e, _ = online(server, "eve", "x")
    e.send("<message to='fay@localhost/gone' type='chat' id='u1'><body>there?</body></message>")
    expect(f, r"id=['\"]u1")
    e.send("<iq to='fay@localhost/gone' type='get' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "service-unavailable" in expect(e, r"<iq[^>]*id=['\"]q1.*?</iq>")


def test_no_session_and_remote_domain_bounce(server):
    users(server, "gil", "hal")
    g, _ = online(server, "gil", "x")
    g.send("<message to='hal@localhost' type='chat' id='n1'><body>x</body></message>")
    t = expect(g, r"<message[^>]*id=['\"]n1.*?</message>")
    assert "type='error'" in t.replace('"', "'") and "service-unavailable" in t
    g.send("<message to='someone@elsewhere.example' id='r1'><body>x</body></message>")
    assert "remote-server-not-found" in expect(g, r"<message[^>]*id=['\"]r1.*?</message>")
    g.send("<message to='not a jid@@' id='j1'><body>x</body></message>")
    assert "jid-malformed" in expect(g, r"<message[^>]*id=['\"]j1.*?</message>")


def test_addresses_canonical_and_malformed_to(server):
    """RFC 7622: a client's 'to' goes on in canonical form (case-folded
    localpart and domain, no trailing dot); RFC 6120 8.3.3.8: a 'to' that is
    not a JID is answered from the server's domain, never from itself."""
    users(server, "ida", "jon")
    j, jjid = online(server, "jon", "Desk")
    i, _ = online(server, "ida", "x")
    i.send("<message to='JON@LocalHost./Desk' type='chat' id='k1'><body>x</body></message>")
    m = expect(j, msg_rx("k1"))
    assert f"to='{jjid}'" in m, m
    i.send("<message to='not a jid@@' id='k2'><body>x</body></message>")
    e = expect(i, msg_rx("k2"))
    assert "jid-malformed" in e and "from='localhost'" in e and "jid@@" not in e, e
    i.send("<iq to='@localhost' type='get' id='k3'><ping xmlns='urn:xmpp:ping'/></iq>")
    e = expect(i, r"<iq[^>]*id=['\"]k3.*?</iq>")
    assert "jid-malformed" in e and "from='localhost'" in e and "@localhost'" not in e, e


def test_iq_between_resources_and_result_back(server):
    users(server, "ian")
    a, ajid = online(server, "ian", "a")
    b, bjid = online(server, "ian", "b")
    a.send(f"<iq to='{bjid}' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
    req = expect(b, r"<iq[^>]*id=['\"]v1.*?</iq>")
    assert f"from='{ajid}'" in req.replace('"', "'")
    b.send(f"<iq to='{ajid}' type='result' id='v1'><query xmlns='jabber:iq:version'>"
           f"<name>test</name></query></iq>")
    assert "<name>test</name>" in expect(a, r"<iq[^>]*id=['\"]v1.*?</iq>")


def test_unavailable_session_gets_no_bare_messages(server):
    users(server, "jo", "kai")
    k, _ = online(server, "kai", "k")
    j, _ = online(server, "jo", "j")
    k.send("<presence type='unavailable'/>")
    k.roundtrip()  # its presence has been handled by then
    j.send("<message to='kai@localhost' type='chat' id='x1'><body>x</body></message>")
    assert "service-unavailable" in expect(j, r"<message[^>]*id=['\"]x1.*?</message>")


def test_slixmpp_chat_between_two_clients(server):
    users(server, "lia", "max")
    import asyncio, os, ssl
    got = {}

    def make_pair():
        ctx = ssl.create_default_context(
            cafile=os.path.join(server.data_dir, "certs", "localhost.pem"))
        recv = slixmpp.ClientXMPP("max@localhost/r", "pw")
        recv.register_plugin("xep_0199")
        send = slixmpp.ClientXMPP("lia@localhost/s", "pw")
        for c in (recv, send):
            c.ssl_context = ctx

        def on_msg(msg):
            got["body"] = msg["body"]
            got["from"] = str(msg["from"])
            recv.disconnect()
            send.disconnect()

        async def recv_start(_):
            recv.send_presence()
            # The server answers the ping after it handled the presence (in
            # order on max's stream): max is available before lia logs in.
            await recv["xep_0199"].send_ping("localhost")
            send.connect(address=("127.0.0.1", server.c2s_port))

        async def send_start(_):
            send.send_presence()
            send.send_message(mto="max@localhost", mbody="hello max", mtype="chat")

        recv.add_event_handler("session_start", recv_start)
        recv.add_event_handler("message", on_msg)
        send.add_event_handler("session_start", send_start)
        send.loop = recv.loop = asyncio.get_event_loop()
        return recv

    run_slixmpp(make_pair, ("127.0.0.1", server.c2s_port), timeout=20)
    assert got.get("body") == "hello max", server.log_text()
    assert got["from"] == "lia@localhost/s"


def test_iq_handlers_of_the_server_and_the_account(server):
    users(server, "nia")
    c, jid = online(server, "nia", "r")
    # To the server: ping, version, time, disco#info with features.
    c.send("<iq to='localhost' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "type='result'" in expect(c, r"<iq[^>]*id=['\"]p1['\"][^>]*/?>").replace('"', "'")
    c.send("<iq to='localhost' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
    assert "<name>xmppd</name>" in expect(c, r"<iq[^>]*id=['\"]v1.*?</iq>")
    c.send("<iq to='localhost' type='get' id='t1'><time xmlns='urn:xmpp:time'/></iq>")
    t = expect(c, r"<iq[^>]*id=['\"]t1.*?</iq>")
    assert re.search(r"<utc>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z</utc>", t), t
    c.send("<iq to='localhost' type='get' id='d1'>"
           "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    d = expect(c, r"<iq[^>]*id=['\"]d1.*?</iq>").replace('"', "'")
    assert "category='server'" in d and "type='im'" in d, d
    for ns in ("urn:xmpp:ping", "jabber:iq:version", "urn:xmpp:time",
               "http://jabber.org/protocol/disco#info"):
        assert f"var='{ns}'" in d, (ns, d)
    c.send("<iq to='localhost' type='get' id='d2'>"
           "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    assert "disco#items" in expect(c, r"<iq[^>]*id=['\"]d2.*?</iq>")
    # Unknown namespace: service-unavailable (RFC 6120 8.4).
    c.send("<iq to='localhost' type='get' id='u1'><query xmlns='urn:example:nope'/></iq>")
    assert "service-unavailable" in expect(c, r"<iq[^>]*id=['\"]u1.*?</iq>")
    # To the account (own bare JID, or no 'to'): answered for the account.
    c.send("<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "type='result'" in expect(c, r"<iq[^>]*id=['\"]p2['\"][^>]*/?>").replace('"', "'")
    c.send("<iq to='nia@localhost' type='get' id='d3'>"
           "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    d = expect(c, r"<iq[^>]*id=['\"]d3.*?</iq>").replace('"', "'")
    assert "category='account'" in d, d
    # A result to the server is not answered.
    c.send("<iq to='localhost' type='result' id='r9'/>")
    assert_nothing_before(c, r"id=['\"]r9")
    # No payload: bad-request.
    c.send("<iq to='localhost' type='get' id='e1'/>")
    assert "bad-request" in expect(c, r"<iq[^>]*id=['\"]e1.*?</iq>")


def test_iq_with_an_unknown_type_is_bad_request(server):
    """RFC 6120 8.3.3.1: an IQ whose 'type' is none of get, set, result and
    error is a bad-request, whoever it is addressed to (issue 12 #11)."""
    users(server, "oda", "pim")
    c, _ = online(server, "oda", "r")
    p, pjid = online(server, "pim", "r")
    for n, (to, typ) in enumerate((("localhost", " type='fetch'"), ("oda@localhost", " type='fetch'"),
                                   (pjid, " type='fetch'"), (pjid, ""))):
        c.send(f"<iq to='{to}'{typ} id='bt{n}'><ping xmlns='urn:xmpp:ping'/></iq>")
        r = expect(c, rf"<iq[^>]*id=['\"]bt{n}['\"].*?</iq>").replace('"', "'")
        assert "type='error'" in r and "bad-request" in r, (to, r)
    assert_nothing_before(p, r"id=['\"]bt", after=c)


def test_iq_to_a_missing_account_is_service_unavailable(server):
    """RFC 6121 8.5.1: an IQ to the bare JID of an account that does not
    exist gets service-unavailable, disco#info included (issue 12 #12)."""
    users(server, "quin")
    c, _ = online(server, "quin", "r")
    for n, q in enumerate(("<query xmlns='http://jabber.org/protocol/disco#info'/>",
                           "<query xmlns='http://jabber.org/protocol/disco#items'/>",
                           "<ping xmlns='urn:xmpp:ping'/>")):
        c.send(f"<iq to='ghost@localhost' type='get' id='m{n}'>{q}</iq>")
        r = expect(c, rf"<iq[^>]*id=['\"]m{n}['\"].*?</iq>").replace('"', "'")
        assert "type='error'" in r and "service-unavailable" in r, r
        assert "from='ghost@localhost'" in r, r


# One pool thread (POOL1): a session's message to an account that does not
# exist is refused by the offline store, on the pool, so its bounce comes
# after every pool job the session's earlier stanzas started (a delivery of
# stored messages among them).  Stores also run one at a time per worker in
# the order they were routed: the bounce also follows the stores before it.
OFFLINE = "modules:\n  mod_offline:\n    max_user_messages: 2\n" + POOL1
NOBODY = "nobody@localhost"


def test_offline_messages_stored_and_delivered_with_delay(server_factory):
    srv = server_factory(extra_yaml=OFFLINE)
    users(srv, "olga", "paul")
    p, _ = online(srv, "paul", "x")
    p.send("<message to='olga@localhost' type='chat' id='o1'><body>first</body></message>")
    p.send("<message to='olga@localhost' id='o2'><body>second</body></message>")
    # Chat states alone are not kept, and cause no error.
    p.send("<message to='olga@localhost' type='chat' id='o3'>"
           "<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    # Over the quota: the sender learns it was not kept.
    p.send("<message to='olga@localhost' type='chat' id='o4'><body>third</body></message>")
    assert "resource-constraint" in assert_nothing_before(p, r"id=['\"]o[123]['\"]",
                                                          barrier=msg_rx("o4"))
    # No such account: not stored.
    p.send("<message to='nobody@localhost' type='chat' id='o5'><body>x</body></message>")
    assert "service-unavailable" in expect(p, r"<message[^>]*id=['\"]o5.*?</message>")

    o, _ = online(srv, "olga", "r", presence=False)
    # Not before the initial presence.
    assert_nothing_before(o, r"<message", barrier=send_marker(o, NOBODY))
    o.send("<presence/>")
    m1 = expect(o, r"<message[^>]*id=['\"]o1.*?</message>")
    m2 = expect(o, r"<message[^>]*id=['\"]o2.*?</message>")
    assert "<body>first</body>" in m1 and "<body>second</body>" in m2
    assert "urn:xmpp:delay" in m1 and re.search(r"stamp=['\"]\d{4}-\d\d-\d\dT", m1), m1
    # Taken out: a second login gets nothing.
    o2, _ = online(srv, "olga", "r2")
    assert_nothing_before(o2, r"<message", barrier=send_marker(o2, NOBODY))


def test_offline_stamp_cannot_be_forged_by_the_sender(server_factory):
    """The <delay from='host'/> on a stored message is the server's: one a
    sender put there in the host's name is replaced, not trusted."""
    srv = server_factory(extra_yaml=OFFLINE)
    users(srv, "rita", "sam")
    s, _ = online(srv, "sam", "x")
    s.send("<message to='rita@localhost' type='chat' id='f1'><body>old news</body>"
           "<delay xmlns='urn:xmpp:delay' from='localhost' stamp='2001-01-01T00:00:00Z'/>"
           "<delay xmlns='urn:xmpp:delay' from='elsewhere.example' stamp='2002-02-02T00:00:00Z'/>"
           "</message>")
    assert "service-unavailable" in expect(s, send_marker(s, NOBODY))  # stored by now
    r, _ = online(srv, "rita", "r")
    m = q(expect(r, msg_rx("f1")))
    stamps = re.findall(r"<delay xmlns='urn:xmpp:delay' from='([^']*)' stamp='([^']*)'", m)
    assert ("elsewhere.example", "2002-02-02T00:00:00Z") in stamps, m
    ours = [st for frm, st in stamps if frm == "localhost"]
    assert len(ours) == 1 and not ours[0].startswith("2001"), m


def test_offline_messages_wait_for_a_non_negative_priority(server_factory):
    """XEP-0160 / RFC 6121 8.5.2.1.1: a session with a negative priority
    takes no bare-JID messages, so stored ones wait until it raises its
    priority (or another session comes with a non-negative one)."""
    srv = server_factory(extra_yaml=OFFLINE)
    users(srv, "quin", "rae")
    r, _ = online(srv, "rae", "x")
    r.send("<message to='quin@localhost' type='chat' id='n1'><body>held</body></message>")
    r.roundtrip()
    q, _ = online(srv, "quin", "low", priority=-1)
    assert_nothing_before(q, r"<message", barrier=send_marker(q, NOBODY))
    q.send("<presence><priority>-5</priority></presence>")  # still negative
    assert_nothing_before(q, r"<message", barrier=send_marker(q, NOBODY))
    q.send("<presence><priority>2</priority></presence>")
    m = expect(q, r"<message[^>]*id=['\"]n1.*?</message>")
    assert "<body>held</body>" in m and "urn:xmpp:delay" in m, m
    # Going negative and back does not deliver twice (nothing is left anyway,
    # and a new message to an available non-negative session is live).
    q.send("<presence><priority>-1</priority></presence>")
    q.send("<presence><priority>1</priority></presence>")
    assert_nothing_before(q, r"id=['\"]n1", barrier=send_marker(q, NOBODY))


def test_offline_message_survives_kill_9(server_factory):
    import os
    import signal
    srv = server_factory(extra_yaml=OFFLINE)
    srv.expect_clean_exit = False
    users(srv, "quin", "rita")
    r, _ = online(srv, "rita", "x")
    r.send("<message to='quin@localhost' type='chat' id='k1'><body>kept</body></message>")
    # Committed once a later store has answered (stores run in order).
    assert "service-unavailable" in expect(r, send_marker(r, NOBODY))
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv._stderr.close()
    os.remove(srv.log_path)
    srv.start()
    srv.expect_clean_exit = True
    q, _ = online(srv, "quin", "y")
    assert "<body>kept</body>" in expect(q, r"<message[^>]*id=['\"]k1.*?</message>")


def test_removing_an_account_drops_its_offline_messages(server_factory):
    import os
    import sqlite3
    srv = server_factory(extra_yaml=OFFLINE)
    users(srv, "sam", "tia")
    t, _ = online(srv, "tia", "x")
    t.send("<message to='sam@localhost' type='chat' id='d1'><body>x</body></message>")
    # Committed once a later store has answered (stores run in order).
    assert "service-unavailable" in expect(t, send_marker(t, NOBODY))
    db = os.path.join(srv.data_dir, "xmppd.db")

    def count():
        with sqlite3.connect(db) as con:
            return con.execute("SELECT COUNT(*) FROM offline_msg").fetchone()[0]

    assert count() == 1
    assert srv.ctl_run("unregister", "sam", "localhost").returncode == 0
    assert count() == 0


HINTS = "urn:xmpp:hints"


def test_offline_no_store_hint_is_not_stored(server_factory):
    """XEP-0334 <no-store/>: not kept for later delivery, so the sender gets
    what it gets from a host that keeps no messages, service-unavailable
    (RFC 6121 8.5.2.2.1); <no-store/> wins over a <store/> next to it."""
    srv = server_factory(extra_yaml=OFFLINE)
    users(srv, "uli", "vera")
    v, _ = online(srv, "vera", "x")
    v.send(f"<message to='uli@localhost' type='chat' id='ns1'><body>gone</body>"
           f"<no-store xmlns='{HINTS}'/></message>")
    e = expect(v, msg_rx("ns1"))
    assert "type='error'" in e and "service-unavailable" in e, e
    v.send(f"<message to='uli@localhost' id='ns2'><body>both</body>"
           f"<store xmlns='{HINTS}'/><no-store xmlns='{HINTS}'/></message>")
    e = expect(v, msg_rx("ns2"))
    assert "type='error'" in e and "service-unavailable" in e, e
    # A message without the hint is still kept (and ends the login's flood).
    v.send("<message to='uli@localhost' type='chat' id='ns3'><body>kept</body></message>")
    assert "service-unavailable" in expect(v, send_marker(v, NOBODY))  # stored by now
    u, _ = online(srv, "uli", "r")
    assert_nothing_before(u, r"id=['\"]ns[12]", barrier=msg_rx("ns3"))


def test_offline_no_permanent_store_hint_is_stored(server_factory):
    """XEP-0334 <no-permanent-store/> is about archives (MAM, logs): offline
    storage is the temporary kind that only <no-store/> excludes, so the
    message is kept and delivered like any other."""
    srv = server_factory(extra_yaml=OFFLINE)
    users(srv, "wim", "xena")
    x, _ = online(srv, "xena", "x")
    x.send(f"<message to='wim@localhost' type='chat' id='np1'><body>later</body>"
           f"<no-permanent-store xmlns='{HINTS}'/></message>")
    assert_nothing_before(x, r"id=['\"]np1", barrier=send_marker(x, NOBODY))
    w, _ = online(srv, "wim", "r")
    m = expect(w, msg_rx("np1"))
    assert "<body>later</body>" in m and "urn:xmpp:delay" in m, m


def test_offline_store_hint_keeps_a_message_without_body(server_factory):
    """XEP-0334 <store/>: kept even with no <body> or <subject> (a receipt,
    say), which offline storage otherwise drops (XEP-0160 3)."""
    srv = server_factory(extra_yaml=OFFLINE)
    users(srv, "yul", "zia")
    z, _ = online(srv, "zia", "x")
    z.send(f"<message to='yul@localhost' type='chat' id='st1'>"
           f"<received xmlns='urn:xmpp:receipts' id='orig1'/><store xmlns='{HINTS}'/></message>")
    # Without the hint: dropped, and no error either way.
    z.send("<message to='yul@localhost' type='chat' id='st2'>"
           "<received xmlns='urn:xmpp:receipts' id='orig2'/></message>")
    assert_nothing_before(z, r"id=['\"]st[12]", barrier=send_marker(z, NOBODY))
    y, _ = online(srv, "yul", "r", presence=False)
    assert_nothing_before(y, r"<message", barrier=send_marker(y, NOBODY))
    y.send("<presence/>")
    m = expect(y, msg_rx("st1"))
    assert "orig1" in m and "urn:xmpp:delay" in m, m
    assert_nothing_before(y, r"id=['\"]st2", barrier=send_marker(y, NOBODY))


def test_message_carbons_no_copy_hint(server):
    """XEP-0334 <no-copy/> (XEP-0280 6): the message reaches the resource it
    is addressed to and is not carbon-copied, received or sent; the same
    message without the hint is."""
    users(server, "amy", "ben")
    a, ajid = online(server, "amy", "a")
    b, bjid = online(server, "amy", "b")
    for x, i in ((a, "ea"), (b, "eb")):
        x.send(f"<iq type='set' id='{i}'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        assert "type='result'" in expect(x, rf"<iq[^>]*id=['\"]{i}['\"][^>]*/?>").replace('"', "'")
    v, vjid = online(server, "ben", "v")
    # Received.
    v.send(f"<message to='{bjid}' type='chat' id='nc1'><body>only b</body>"
           f"<no-copy xmlns='{HINTS}'/></message>")
    assert "<body>only b</body>" in expect(b, msg_rx("nc1"))
    v.send(f"<message to='{bjid}' type='chat' id='nc2'><body>b and a</body></message>")
    expect(b, msg_rx("nc2"))
    # The copy of nc2 is the barrier: one of nc1 would have come first.
    carbon = assert_nothing_before(a, r"only b", barrier=(
        r"<received xmlns=['\"]urn:xmpp:carbons:2['\"].*?</received>"))
    assert "<body>b and a</body>" in carbon, carbon
    # Sent.
    a.send(f"<message to='{vjid}' type='chat' id='nc3'><body>only ben</body>"
           f"<no-copy xmlns='{HINTS}'/></message>")
    assert "<body>only ben</body>" in expect(v, msg_rx("nc3"))
    a.send(f"<message to='{vjid}' type='chat' id='nc4'><body>ben and b</body></message>")
    expect(v, msg_rx("nc4"))
    sent = assert_nothing_before(b, r"only ben", barrier=(
        r"<sent xmlns=['\"]urn:xmpp:carbons:2['\"].*?</sent>"))
    assert "<body>ben and b</body>" in sent, sent


def test_message_carbons(server):
    users(server, "uma", "vic")
    a, ajid = online(server, "uma", "a")
    b, bjid = online(server, "uma", "b")
    c, cjid = online(server, "uma", "c")
    for x, i in ((a, "ea"), (b, "eb")):
        x.send(f"<iq type='set' id='{i}'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        assert "type='result'" in expect(x, rf"<iq[^>]*id=['\"]{i}['\"][^>]*/?>").replace('"', "'")
    v, vjid = online(server, "vic", "v")
    # Received: to uma/b; a gets a carbon, c (not enabled) nothing.
    v.send(f"<message to='{bjid}' type='chat' id='c1'><body>to b</body></message>")
    assert "<body>to b</body>" in expect(b, r"<message[^>]*id=['\"]c1.*?</message>")
    carbon = expect(a, r"<message[^>]*>\s*<received xmlns=['\"]urn:xmpp:carbons:2['\"].*?</received>\s*</message>")
    assert "urn:xmpp:forward:0" in carbon and "<body>to b</body>" in carbon, carbon
    assert "jabber:client" in carbon
    assert_nothing_before(c, r"to b", after=v)
    # Sent: a writes to vic; b gets a sent-carbon, a itself does not.
    a.send(f"<message to='{vjid}' type='chat' id='c2'><body>from a</body></message>")
    expect(v, r"<message[^>]*id=['\"]c2")
    sent = expect(b, r"<sent xmlns=['\"]urn:xmpp:carbons:2['\"].*?</sent>")
    assert "<body>from a</body>" in sent
    assert_nothing_before(a, r"<sent ")
    # Private messages are not copied.
    v.send(f"<message to='{bjid}' type='chat' id='c3'><body>secret</body>"
           f"<private xmlns='urn:xmpp:carbons:2'/></message>")
    expect(b, r"id=['\"]c3")
    assert_nothing_before(a, r"secret", after=v)
    # Disabled: no more copies.
    a.send("<iq type='set' id='da'><disable xmlns='urn:xmpp:carbons:2'/></iq>")
    expect(a, r"<iq[^>]*id=['\"]da")
    v.send(f"<message to='{bjid}' type='chat' id='c4'><body>later</body></message>")
    expect(b, r"id=['\"]c4")
    assert_nothing_before(a, r"later", after=v)


def test_directed_presence_unavailable_on_disconnect(server):
    users(server, "wes", "xia")
    x, xjid = online(server, "xia", "x")
    w, wjid = online(server, "wes", "w")
    w.send(f"<presence to='{xjid}'><status>hello xia</status></presence>")
    assert "hello xia" in expect(x, r"<presence[^>]*>.*?</presence>")
    w.close()  # RFC 6121 4.6.3: the recipient learns the sender is gone
    un = expect(x, rf"<presence[^>]*from=['\"]{re.escape(wjid)}['\"][^>]*/?>")
    assert "unavailable" in un, un
    # Directed unavailable forgets the recipient: no second notice later.
    w2, _ = online(server, "wes", "w2")
    w2.send(f"<presence to='{xjid}'/>")
    expect(x, r"<presence[^>]*from=['\"]wes@localhost/w2[^>]*>")
    w2.send(f"<presence to='{xjid}' type='unavailable'/>")
    expect(x, r"<presence[^>]*type=['\"]unavailable[^>]*>")
    # The server ends a session (and sends what its end sends) before it
    # closes the connection: a round trip for the close.
    w2.end_stream()
    assert_nothing_before(x, r"from=['\"]wes@localhost/w2")


def test_disco_server_info_contact_addresses(server_factory):
    srv = server_factory(extra_yaml=(
        "modules:\n  mod_disco:\n    server_info:\n"
        "      - name: abuse-addresses\n        urls: [\"mailto:abuse@localhost\"]\n"
        "      - name: admin-addresses\n        urls: [\"xmpp:admin@localhost\", \"https://example.org/\"]\n"))
    users(srv, "yan")
    c, _ = online(srv, "yan", "y")
    c.send("<iq to='localhost' type='get' id='si'>"
           "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    d = expect(c, r"<iq[^>]*id=['\"]si.*?</iq>").replace('"', "'")
    assert "http://jabber.org/network/serverinfo" in d, d
    assert "<field var='abuse-addresses'><value>mailto:abuse@localhost</value></field>" in d, d
    assert "<value>https://example.org/</value>" in d


def test_disco_server_info_bad_field_is_a_config_error(tmp_path):
    import subprocess
    from conftest import build_dir
    cfg = tmp_path / "x.yml"
    cfg.write_text("modules:\n  mod_disco:\n    server_info:\n      - name: spam-addresses\n"
                   "        urls: [\"mailto:x@y\"]\n")
    r = subprocess.run([os.path.join(build_dir(), "xmppd"), "--check-config", "-c", str(cfg)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "x.yml:4" in r.stderr and "spam-addresses" in r.stderr, r.stderr


def test_server_pings_silent_clients_and_drops_dead_ones(server_factory):
    srv = server_factory(extra_yaml=(
        "modules:\n  mod_ping:\n    send_pings: true\n    ping_interval: 1s\n"
        "    ping_ack_timeout: 1s\n    timeout_action: kill\n"))
    users(srv, "zoe", "zed")
    alive, _ = online(srv, "zoe", "alive")
    dead, _ = online(srv, "zed", "dead")
    ping_rx = r"<iq[^>]*type=['\"]get['\"].*?urn:xmpp:ping.*?</iq>"
    # The live client answers each ping at once, for six intervals: an
    # answer read in the same millisecond of the loop's clock as its ping
    # was sent counts (before, such a prompt client was killed as silent).
    answered, end = 0, time.time() + 6
    while time.time() < end:
        try:
            ping = alive.take(ping_rx, timeout=max(0.01, end - time.time())).group(0).decode()
        except AssertionError:
            break
        pid = re.search(r"id=['\"]([^'\"]+)", ping).group(1)
        alive.send(f"<iq type='result' id='{pid}' to='localhost'/>")
        answered += 1
    assert answered >= 2, answered
    # The silent one is pinged too, does not answer, and is closed.
    assert dead.stream_error(timeout=8) == "connection-timeout"
    assert b"no answer to ping" in dead.buf
    alive.roundtrip()  # still there

"""mod_push (XEP-0357) through the wire.  The app server is played by hand
over the component protocol (XEP-0114) on push.localhost: it gets the
pubsub publish of each notification and answers it (or not).

The account under test, alice, stays logged in without presence for her
IQs: a session that sent no available presence takes no message to the
bare JID (RFC 6121 8.5.2.1.1), so messages to alice@localhost are
"offline" ones and trigger notifications.

Barriers: the notification is routed before the sender's next stanza is
handled (the lookup holds the sender's stream), so a message from the same
sender to the component, sent next, reaches it after any notification."""
import itertools
import re
import time

from helpers import expect, iq, online, users
from test_component import Raw
from xclient import login
from xmpptest import free_port

SECRET = "pushsecret"
APP = "push.localhost"
NS = "urn:xmpp:push:0"
FORM = ("<x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value>"
        "</field><field var='secret'><value>s3kr1t-token</value></field></x>")
PUBLISH_RX = r"<iq[^>]*>.*?</iq>"

_marks = itertools.count(1)


def start(server_factory, **push_opts):
    cport = free_port()
    opts = {"min_interval": "0s", "max_registrations": "2"}
    opts.update(push_opts)
    push_yaml = "".join(f"    {k}: {v}\n" for k, v in opts.items())
    srv = server_factory(extra_yaml=(
        f"  - port: {cport}\n"
        f"    ip: 127.0.0.1\n"
        f"    module: component\n"
        f"    hosts:\n"
        f"      {APP}: {{password: {SECRET}}}\n"
        f"modules:\n"
        f"  mod_offline: {{}}\n"
        f"  mod_push:\n{push_yaml}"))
    srv.comp_port = cport
    users(srv, "alice", "bob")
    return srv


def app_server(srv):
    r = Raw(srv.comp_port, APP)
    sid, _ = r.header_id()
    r.handshake(sid, SECRET)
    r.until(r"<handshake\s*/>")
    return r


def enable(c, node, form=FORM, jid=APP, iq_id="e1"):
    return iq(c, iq_id, f"<enable xmlns='{NS}' jid='{jid}' node='{node}'>{form}</enable>")


def offline_msg(sender, app, body="Wherefore art thou?"):
    """bob sends a message to alice's bare JID, then a marker to the app
    server; returns what the app server got ahead of the marker."""
    mid = f"mk{next(_marks)}"
    sender.send(f"<message to='alice@localhost' type='chat' id='m{mid}'><body>{body}</body>"
                f"</message>")
    sender.send(f"<message to='{APP}' id='{mid}'><body>marker</body></message>")
    got = app.until(r".*?<message[^>]*id='" + mid + r"'.*?</message>")
    return got[:got.rfind("<message")]


def publishes(text):
    return re.findall(PUBLISH_RX, text, re.S)


def field(iq_text, var):
    m = re.search(r"<field var='" + re.escape(var) + r"'[^>]*><value>(.*?)</value>", iq_text,
                  re.S)
    return m and m.group(1)


def test_enable_notify_and_answers(server_factory):
    srv = start(server_factory)
    app = app_server(srv)
    a, ajid = login(srv.c2s_port, "alice", "pw", resource="phone")
    b, bjid = login(srv.c2s_port, "bob", "pw", resource="desk")
    # The account advertises the feature.
    r = iq(a, "d1", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to="alice@localhost")
    assert f"var='{NS}'" in r, r
    assert "type='result'" in enable(a, "node-A")

    got = offline_msg(b, app)
    ps = publishes(got)
    assert len(ps) == 1, got
    p = ps[0]
    assert "type='set'" in p and "from='alice@localhost'" in p and f"to='{APP}'" in p, p
    assert "<pubsub xmlns='http://jabber.org/protocol/pubsub'>" in p, p
    assert "<publish node='node-A'>" in p, p
    assert f"<notification xmlns='{NS}'>" in p, p
    assert field(p, "FORM_TYPE") == "urn:xmpp:push:summary", p
    assert field(p, "message-count") == "1", p
    assert field(p, "last-message-sender") == bjid, p
    # No body by default.
    assert "last-message-body" not in p and "Wherefore" not in p, p
    # The stored publish-options form.
    assert "<publish-options><x xmlns='jabber:x:data' type='submit'>" in p, p
    assert field(p, "secret") == "s3kr1t-token", p
    # The message was stored as well (mod_offline ran after).
    pid = re.search(r"id='([^']+)'", p).group(1)
    app.send(f"<iq type='result' id='{pid}' from='{APP}' to='alice@localhost'/>")

    # A second message: counted, still notified (no rate limit here).
    p = publishes(offline_msg(b, app, "again"))[0]
    assert field(p, "message-count") == "2", p

    # An error with the notification's id from anyone else changes nothing.
    pid = re.search(r"id='([^']+)'", p).group(1)
    b.send(f"<iq type='error' id='{pid}' to='alice@localhost'>"
           f"<error type='cancel'><item-not-found "
           f"xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    p = publishes(offline_msg(b, app, "third"))[0]
    assert field(p, "message-count") == "3", p

    # The app server answers "wait" (busy, rate-limited): nothing changes.
    pid = re.search(r"id='([^']+)'", p).group(1)
    app.send(f"<iq type='error' id='{pid}' from='{APP}' to='alice@localhost'>"
             f"<error type='wait'><resource-constraint "
             f"xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    app.send(f"<message from='{APP}' to='{bjid}' id='wait1'><body>x</body></message>")
    expect(b, r"<message[^>]*id='wait1'")
    p = publishes(offline_msg(b, app, "fourth"))[0]
    assert field(p, "message-count") == "4", p

    # The app server answers an error: the registration is disabled.
    pid = re.search(r"id='([^']+)'", p).group(1)
    app.send(f"<iq type='error' id='{pid}' from='{APP}' to='alice@localhost'>"
             f"<error type='cancel'><item-not-found "
             f"xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    # The component's next stanza is handled after the disabling is stored.
    app.send(f"<message from='{APP}' to='{bjid}' id='done1'><body>x</body></message>")
    expect(b, r"<message[^>]*id='done1'")
    got = offline_msg(b, app)
    assert not publishes(got), got

    # The stored messages reach alice when she becomes available.
    a.send("<presence/>")
    expect(a, r"Wherefore art thou")
    a.close()
    b.close()
    app.close()


def test_disable_and_removal(server_factory):
    srv = start(server_factory)
    app = app_server(srv)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="phone")
    b, _ = login(srv.c2s_port, "bob", "pw", resource="desk")
    assert "type='result'" in enable(a, "n1", iq_id="e1")
    assert "type='result'" in enable(a, "n2", form="", iq_id="e2")
    got = offline_msg(b, app)
    nodes = sorted(re.findall(r"<publish node='([^']+)'>", got))
    assert nodes == ["n1", "n2"], got
    # Without a form: no publish-options.
    p2 = [p for p in publishes(got) if "node='n2'" in p][0]
    assert "publish-options" not in p2, p2
    # Disable one node: only the other is notified.
    r = iq(a, "x1", f"<disable xmlns='{NS}' jid='{APP}' node='n1'/>")
    assert "type='result'" in r, r
    got = offline_msg(b, app)
    assert re.findall(r"<publish node='([^']+)'>", got) == ["n2"], got
    # Disable the whole service (no node).
    r = iq(a, "x2", f"<disable xmlns='{NS}' jid='{APP}'/>")
    assert "type='result'" in r, r
    got = offline_msg(b, app)
    assert not publishes(got), got

    # Account removal deletes the registrations.
    assert "type='result'" in enable(a, "n3", iq_id="e3")
    a.close()
    assert srv.ctl_run("unregister", "alice", "localhost").returncode == 0
    users(srv, "alice")
    got = offline_msg(b, app)
    assert not publishes(got), got
    b.close()
    app.close()


def test_body_option_and_rate_limit(server_factory):
    srv = start(server_factory, include_body="true", min_interval="1h")
    app = app_server(srv)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="phone")
    b, _ = login(srv.c2s_port, "bob", "pw", resource="desk")
    assert "type='result'" in enable(a, "n1")
    p = publishes(offline_msg(b, app, "hello &amp; bye"))[0]
    assert field(p, "last-message-body") == "hello &amp; bye", p
    # The rate limit: the next messages within min_interval send nothing.
    for _ in range(2):
        got = offline_msg(b, app, "more")
        assert not publishes(got), got
    # Another registration has its own budget, and counts every message.
    assert "type='result'" in enable(a, "n2", iq_id="e2")
    got = offline_msg(b, app, "last")
    ps = publishes(got)
    assert len(ps) == 1 and "node='n2'" in ps[0], got
    assert field(ps[0], "message-count") == "4", ps[0]
    a.close()
    b.close()
    app.close()


def test_bad_requests_and_limits(server_factory):
    srv = start(server_factory)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="phone")
    b, _ = login(srv.c2s_port, "bob", "pw", resource="desk")

    def err(c, iq_id, body, cond, typ="set", to=None):
        r = iq(c, iq_id, body, typ=typ, to=to)
        assert "type='error'" in r and cond in r, r

    err(a, "b1", f"<enable xmlns='{NS}' node='n'/>", "bad-request")
    err(a, "b2", f"<enable xmlns='{NS}' jid='{APP}'/>", "bad-request")
    err(a, "b3", f"<enable xmlns='{NS}' jid='a@b@c' node='n'/>", "jid-malformed")
    err(a, "b4", f"<enable xmlns='{NS}' jid='{APP}' node='n'/>", "bad-request", typ="get")
    err(a, "b5", f"<frob xmlns='{NS}'/>", "bad-request")
    err(b, "b6", f"<enable xmlns='{NS}' jid='{APP}' node='n'/>", "forbidden",
        to="alice@localhost")
    err(a, "b7", f"<disable xmlns='{NS}'/>", "bad-request")
    # Node and form sizes.
    err(a, "l1", f"<enable xmlns='{NS}' jid='{APP}' node='{'n' * 1025}'/>", "not-acceptable")
    big = ("<x xmlns='jabber:x:data' type='submit'><field var='secret'><value>"
           + "s" * 8200 + "</value></field></x>")
    err(a, "l2", f"<enable xmlns='{NS}' jid='{APP}' node='n'>{big}</enable>", "not-acceptable")
    # max_registrations (2): a third is refused; enabling one again replaces it.
    assert "type='result'" in enable(a, "n1", iq_id="r1")
    assert "type='result'" in enable(a, "n2", iq_id="r2")
    err(a, "r3", f"<enable xmlns='{NS}' jid='{APP}' node='n3'/>", "policy-violation")
    assert "type='result'" in enable(a, "n2", form="", iq_id="r4")
    assert "type='result'" in iq(a, "r5", f"<disable xmlns='{NS}' jid='{APP}' node='n1'/>")
    assert "type='result'" in enable(a, "n3", iq_id="r6")
    a.close()
    b.close()


def test_unanswered_limit_and_timeout(server_factory):
    srv = start(server_factory, max_unanswered="1", answer_timeout="1s")
    app = app_server(srv)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="phone")
    b, _ = login(srv.c2s_port, "bob", "pw", resource="desk")
    assert "type='result'" in enable(a, "n1")
    p = publishes(offline_msg(b, app))[0]
    # Unanswered: the next notification has no room.
    got = offline_msg(b, app)
    assert not publishes(got), got
    # Answered: room again.
    pid = re.search(r"id='([^']+)'", p).group(1)
    app.send(f"<iq type='result' id='{pid}' from='{APP}' to='alice@localhost'/>")
    app.send(f"<message from='{APP}' to='bob@localhost/desk' id='done1'><body>x</body></message>")
    expect(b, r"<message[^>]*id='done1'")
    p = publishes(offline_msg(b, app))[0]
    # Left unanswered, it is forgotten after answer_timeout: notifications
    # come again (and its late error disables nothing).
    deadline = time.time() + 10
    while True:
        ps = publishes(offline_msg(b, app))
        if ps or time.time() > deadline:
            break
    assert ps, "no notification after the answer timed out"
    pid = re.search(r"id='([^']+)'", p).group(1)
    app.send(f"<iq type='error' id='{pid}' from='{APP}' to='alice@localhost'>"
             f"<error type='cancel'><item-not-found "
             f"xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    pid = re.search(r"id='([^']+)'", ps[0]).group(1)
    app.send(f"<iq type='result' id='{pid}' from='{APP}' to='alice@localhost'/>")
    app.send(f"<message from='{APP}' to='bob@localhost/desk' id='done2'><body>x</body></message>")
    expect(b, r"<message[^>]*id='done2'")
    assert publishes(offline_msg(b, app))
    a.close()
    b.close()
    app.close()


def test_app_server_over_s2s(server_factory):
    """The app server on another domain: a client session carol@b.test/srv
    of a second xmppd gets the publish over s2s, and its error comes back
    over s2s and disables the registration."""
    from test_s2s import make_pair
    p = make_pair(server_factory,
                  a_extra="modules:\n  mod_offline: {}\n  mod_push:\n    min_interval: 0s\n")
    app_jid = "carol@b.test/srv"
    a, _ = online(p.a, "alice", "phone", presence=False)
    b, bjid = online(p.a, "bob", "desk")
    c, _ = online(p.b, "carol", "srv")
    r = iq(a, "e1", f"<enable xmlns='{NS}' jid='{app_jid}' node='remote-node'>{FORM}</enable>")
    assert "type='result'" in r, r
    b.send("<message to='alice@a.test' type='chat' id='m1'><body>hi</body></message>")
    p1 = expect(c, r"<iq[^>]*>.*?</iq>", timeout=20)
    assert "from='alice@a.test'" in p1 and "<publish node='remote-node'>" in p1, p1
    assert field(p1, "message-count") == "1" and field(p1, "last-message-sender") == bjid, p1
    assert field(p1, "secret") == "s3kr1t-token", p1
    pid = re.search(r"id='([^']+)'", p1).group(1)
    c.send(f"<iq type='error' id='{pid}' to='alice@a.test'><error type='cancel'>"
           f"<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    # The incoming stream's next stanza is handled after the disabling.
    c.send(f"<message to='{bjid}' id='done1'><body>x</body></message>")
    expect(b, r"<message[^>]*id='done1'", timeout=20)
    b.send("<message to='alice@a.test' type='chat' id='m2'><body>hi</body></message>")
    b.send(f"<message to='{app_jid}' type='chat' id='mk'><body>marker</body></message>")
    ahead, _ = c.before(r"<message[^>]*id=['\"]mk['\"]", timeout=20)
    assert b"urn:xmpp:push" not in ahead, ahead
    a.close()
    b.close()
    c.close()


def test_detached_session_triggers_a_push(server_factory):
    """alice's phone enables push and stream management with resumption,
    becomes available, and its connection breaks: the session is parked
    (still available, so messages go to it, not to offline storage), and
    a message that waits there for the resume is notified.  Before the
    break, the same message was not: the notification counts one."""
    from test_sm_resume import authed, enable as sm_enable, resume, wait_log
    srv = start(server_factory)
    app = app_server(srv)
    a, ajid = login(srv.c2s_port, "alice", "pw", resource="phone")
    b, bjid = login(srv.c2s_port, "bob", "pw", resource="desk")
    assert "type='result'" in enable(a, "node-P")
    a.send("<presence/>")
    a.roundtrip()
    _, rid = sm_enable(a)
    got = offline_msg(b, app, "while online")
    assert not publishes(got), got  # delivered to the connected session
    a.recv_until(r"while online")
    a.sock.close()
    wait_log(srv, "session parked")
    # The session may be on another worker than bob's stream: the
    # notification follows the delivery there, after bob's next stanza
    # perhaps; waited for, not raced against a marker.
    b.send("<message to='alice@localhost' type='chat' id='away'><body>while away</body>"
           "</message>")
    got = app.until(r".*?" + PUBLISH_RX, timeout=10)
    ps = publishes(got)
    assert len(ps) == 1 and "<publish node='node-P'>" in ps[0], got
    assert field(ps[0], "last-message-sender") == bjid, ps[0]
    assert field(ps[0], "message-count") == "1", ps[0]
    c = authed(srv, "alice")
    assert resume(c, rid, 0).startswith("<resumed")
    text = c.roundtrip().decode()
    # Never acknowledged, so resent, in order; both once.
    assert re.findall(r"while \w+", text) == ["while online", "while away"], text
    app.close()

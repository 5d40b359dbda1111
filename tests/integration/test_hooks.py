"""The typed hooks of include/xmppd/hooks.def, seen over the wire.

tests/modules/mod_hooktest.c is a module built as a .so against the public
headers alone (<build>/tests/modules) and loaded through module_dir.  It
handles every hook: it records each run's payload as an event in a log per
served host, which a client reads with an IQ get to the host
(<query xmlns='urn:xmppd:hooktest' since='N' hook='name'/>), and it acts where
a hook lets handlers act (drops messages with agreed bodies, marks delivered
messages and available presence, offers a stream feature, answers an IQ
before authentication, adds disco features and items).  So each test drives
the protocol, then checks that the hooks it should have run ran with the
payload hooks.h documents, and that what a handler did took effect.

Negative checks use round-trip barriers (helpers.assert_nothing_before),
never a wait.  Events are read after something that the server does only
after the hook ran (the answer to the stanza that ran it, a delivery that
follows it), so a read cannot come too early; the two exceptions (TICK, and
a connection dropped without a close) poll for the event until a deadline,
which can fail but cannot pass early."""
import itertools
import os
import re
import time
import xml.etree.ElementTree as ET

import pytest

import helpers
import test_s2s
from conftest import build_dir
from helpers import (POOL1, assert_nothing_before, expect, msg_rx, online, reply_rx,
                     send_marker, take, take_iq, users)
from xclient import XClient, login

NS = "urn:xmppd:hooktest"
NS_ROSTER = "urn:xmppd:hooktest:roster"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"


def module_dir():
    return os.path.join(build_dir(), "tests", "modules")


def ht_yaml(opts="{}", more=""):
    """Config lines that load mod_hooktest (options `opts`) and the
    modules in `more` (YAML lines indented by two spaces)."""
    return (f"module_dir: {module_dir()}\n"
            f"modules:\n  mod_hooktest: {opts}\n{more}")


ROSTER = "  mod_roster: {}\n"


@pytest.fixture(autouse=True)
def _module_built():
    so = os.path.join(module_dir(), "mod_hooktest.so")
    assert os.path.exists(so), f"{so} is not built: ninja -C {build_dir()}"


# ---- reading the log -----------------------------------------------------------------------

_ids = itertools.count(1)


class Log:
    """One answer of the log IQ: seq (the last event's number), counts by
    hook name, and the events (dicts of their attributes, plus 'groups')."""

    def __init__(self, text):
        root = ET.fromstring(text)
        q = root.find(f"{{{NS}}}query")
        assert q is not None, text
        self.seq = int(q.get("seq"))
        self.host = q.get("host")
        self.counts = {h.get("name"): int(h.get("count")) for h in q.findall(f"{{{NS}}}hook")}
        self.events = []
        for e in q.findall(f"{{{NS}}}ev"):
            d = dict(e.attrib)
            d["groups"] = [g.text for g in e.findall(f"{{{NS}}}group")]
            self.events.append(d)

    def of(self, hook, **match):
        """The events of `hook` whose attributes equal `match` (None: absent)."""
        return [e for e in self.events if e["hook"] == hook and
                all(e.get(k) == v for k, v in match.items())]


def read_log(c, since=0, hook=None, to=None):
    """The log of c's host (or of `to`), events after `since`; other
    stanzas c has buffered stay buffered."""
    h = f" hook='{hook}'" if hook else ""
    r = take_iq(c, f"ht{next(_ids)}", f"<query xmlns='{NS}' since='{since}'{h}/>", typ="get",
                to=to or getattr(c, "domain", "localhost"))
    assert "type='result'" in r, r
    return Log(r)


def poll_log(c, hook, pred, since=0, timeout=10):
    """Reads the log until an event of `hook` satisfies pred; for events
    nothing orders with c's stream.  Fails at the deadline."""
    deadline = time.time() + timeout
    while True:
        log = read_log(c, since, hook)
        hits = [e for e in log.of(hook) if pred(e)]
        if hits:
            return hits
        assert time.time() < deadline, f"no {hook} event matched: {log.events}"
        time.sleep(0.05)


def one(events, what=""):
    assert len(events) == 1, f"{what}: expected one event, got {events}"
    return events[0]


def marks(stanza):
    """The jid attributes of the <hooktest/> children USER_RECEIVE_PACKET added."""
    return re.findall(r"<hooktest xmlns='urn:xmppd:hooktest' jid='([^']*)'", stanza)


def start(server_factory, opts="{}", more="", extra="", **kw):
    srv = server_factory(extra_yaml=extra + ht_yaml(opts, more), **kw)
    users(srv, "alice", "bob", "carol")
    return srv


# ---- sessions ------------------------------------------------------------------------------

def test_sm_register_and_remove_connection(server_factory):
    srv = start(server_factory)
    bob, bobjid = online(srv, "bob", "obs")
    base = read_log(bob).seq
    # Bind: SM_REGISTER_CONNECTION with the bound full JID, before the answer.
    a, ajid = login(srv.c2s_port, "alice", "pw", resource="r1")
    ev = one(read_log(bob, base).of("sm_register_connection", jid=ajid), "bind")
    assert ev["host"] == "localhost" and "reason" not in ev, ev
    # The client closes its stream: SM_REMOVE_CONNECTION "closed" (the
    # session ends before the server closes the connection).
    a.end_stream()
    ev = one(read_log(bob, base).of("sm_remove_connection", jid=ajid), "close")
    assert ev["host"] == "localhost" and ev["reason"] == "closed", ev
    # The connection just goes away: "disconnected" (nothing orders the
    # server's read of the EOF with bob's stream: poll).
    a2, a2jid = login(srv.c2s_port, "alice", "pw", resource="r2")
    a2.close()
    ev = poll_log(bob, "sm_remove_connection", lambda e: e["jid"] == a2jid, base)
    assert one(ev)["reason"] == "disconnected", ev
    # Every bind had its register, and only the sessions that ended were removed.
    log = read_log(bob, base)
    assert [e["jid"] for e in log.of("sm_register_connection")] == [ajid, a2jid], log.events
    assert [e["jid"] for e in log.of("sm_remove_connection")] == [ajid, a2jid], log.events
    assert not log.of("sm_remove_connection", jid=bobjid), log.events


def test_sm_remove_connection_of_a_replaced_session(server_factory):
    srv = start(server_factory)
    bob, _ = online(srv, "bob", "obs")
    base = read_log(bob).seq
    old, jid = login(srv.c2s_port, "alice", "pw", resource="same")
    new, jid2 = login(srv.c2s_port, "alice", "pw", resource="same")
    assert jid == jid2
    assert old.stream_error() == "conflict"  # after the session ended
    log = read_log(bob, base)
    assert len(log.of("sm_register_connection", jid=jid)) == 2, log.events
    ev = one(log.of("sm_remove_connection", jid=jid), "replaced")
    # hooks.def: "A bound session ended (reason: closed, disconnected, replaced, ...)".
    assert ev["reason"] == "replaced", ev
    # The session that took the resource ends as any other.
    new.end_stream()
    evs = read_log(bob, base, "sm_remove_connection").of("sm_remove_connection", jid=jid)
    assert [e["reason"] for e in evs] == ["replaced", "closed"], evs


# ---- client streams ------------------------------------------------------------------------

def feature(features):
    m = re.findall(r"<hooktest xmlns=['\"]urn:xmppd:hooktest['\"][^>]*/>", features)
    assert len(m) == 1, features
    return dict(re.findall(r"(\w+)=['\"]([^'\"]*)['\"]", m[0]))


def test_c2s_stream_features_before_and_after_auth(server_factory):
    srv = start(server_factory)
    bob, _ = online(srv, "bob", "obs")
    base = read_log(bob).seq
    c = XClient(srv.c2s_port)
    f1 = feature(c.open_stream())  # TLS is required and not up
    assert f1 == dict(xmlns=NS, host="localhost", authenticated="false", secure="false",
                      tls_required="true", seq=f1["seq"]), f1
    c.starttls()
    f2 = feature(c.open_stream())
    assert (f2["authenticated"], f2["secure"], f2["tls_required"]) == ("false", "true", "false")
    assert c.scram("alice", "pw")[0] == "success"
    f3 = feature(c.open_stream())
    assert (f3["authenticated"], f3["secure"], f3["tls_required"]) == ("true", "true", "false")
    # One run per offer, in order, for the stream's host.
    evs = read_log(bob, base, "c2s_stream_features").of("c2s_stream_features")
    assert [e["seq"] for e in evs] == [f1["seq"], f2["seq"], f3["seq"]], evs
    assert all(e["host"] == "localhost" for e in evs), evs


def test_c2s_unauthenticated_iq(server_factory):
    srv = start(server_factory)
    bob, _ = online(srv, "bob", "obs")
    base = read_log(bob).seq
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    # Taken by the module's handler and answered at once ...
    r = helpers.iq(c, "p1", f"<query xmlns='{NS}'/>", typ="get")
    assert "type='result'" in r, r
    p = dict(re.findall(r"(\w+)='([^']*)'", re.search(r"<preauth[^>]*>", r).group(0)))
    assert (p["host"], p["ip"], p["secure"], p["tls_required"], p["registered"]) == \
        ("localhost", "127.0.0.1", "true", "false", "false"), p
    # ... or later, after the hook returned (the stream waits for it).
    c.send(f"<iq type='get' id='p2'><query xmlns='{NS}' async='true'/></iq>"
           f"<iq type='get' id='p3'><query xmlns='{NS}'/></iq>")
    r2, r3 = expect(c, reply_rx("p2")), expect(c, reply_rx("p3"))
    assert "type='result'" in r2 and "type='result'" in r3, (r2, r3)
    # The stream goes on to authenticate normally.
    assert c.scram("alice", "pw")[0] == "success"
    evs = read_log(bob, base, "c2s_unauthenticated_iq").of("c2s_unauthenticated_iq")
    assert [(e["id"], e["action"]) for e in evs] == [
        ("p1", "answered"), ("p2", "answered-later"), ("p3", "answered")], evs
    assert all(e["ip"] == "127.0.0.1" and e["has_peer"] == "true" and e["host"] == "localhost"
               for e in evs), evs
    # An IQ the handler does not take: the chain ends without a taker and
    # the stream closes (RFC 6120 6.4.1).
    d = XClient(srv.c2s_port)
    d.open_stream()
    d.starttls()
    d.open_stream()
    d.send("<iq type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
    assert d.stream_error() == "not-authorized"


# ---- stanzas of sessions -------------------------------------------------------------------

def test_user_send_packet_payload_and_drop(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice", "a")
    b, bjid = online(srv, "bob", "b")
    base = read_log(a).seq
    a.send("<message to='bob@localhost' id='s1' type='chat'><body>hello</body></message>")
    expect(b, msg_rx("s1"))
    # 'to' absent: resolved to the sender's bare JID before the hook.
    a.send("<message id='s2' type='chat'><body>note to self</body></message>")
    expect(a, msg_rx("s2"))
    log = read_log(a, base, "user_send_packet")
    ev = one(log.of("user_send_packet", id="s1"))
    assert (ev["host"], ev["jid"], ev["session"], ev["session_host"]) == \
        ("localhost", ajid, ajid, "localhost"), ev
    assert (ev["stanza"], ev["from"], ev["to"], ev["type"]) == \
        ("message", ajid, "bob@localhost", "chat"), ev
    ev = one(log.of("user_send_packet", id="s2"))
    assert ev["from"] == ajid and ev["to"] == "alice@localhost", ev

    # A handler drops the stanza (unref, st = NULL, STOP): it is not routed.
    a.send("<message to='bob@localhost' id='d1' type='chat'><body>hooktest:drop</body></message>")
    assert_nothing_before(b, "hooktest:drop", barrier=send_marker(a, "bob@localhost"))
    assert_nothing_before(a, r"id=['\"]d1['\"]")  # and the sender gets no error either
    log = read_log(a, base)
    assert one(log.of("user_send_packet", id="d1"))["action"] == "dropped", log.events
    assert not log.of("filter_packet", id="d1"), log.events  # never reached the router


def test_user_receive_packet_marks_and_drops(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice", "a")
    b1, b1jid = online(srv, "bob", "b1")
    b2, b2jid = online(srv, "bob", "b2")
    base = read_log(a).seq
    # To the bare JID: both resources get it (one stanza, shared), each
    # marked by the handler with its own session's JID.
    a.send("<message to='bob@localhost' id='r1' type='chat'><body>to both</body></message>")
    m1, m2 = expect(b1, msg_rx("r1")), expect(b2, msg_rx("r1"))
    assert marks(m1) == [b1jid] and marks(m2) == [b2jid], (m1, m2)
    assert "<body>to both</body>" in m1 and "<body>to both</body>" in m2
    log = read_log(a, base, "user_receive_packet")
    evs = log.of("user_receive_packet", id="r1")
    assert sorted((e["jid"], e["session"], e["action"]) for e in evs) == sorted(
        [(b1jid, b1jid, "marked"), (b2jid, b2jid, "marked")]), evs
    assert all(e["from"] == ajid and e["host"] == "localhost" for e in evs), evs
    # A handler drops a delivery: that session never gets it, the other
    # does, and the sender gets no error.
    a.send(f"<message to='{b1jid}' id='r2' type='chat'><body>hooktest:drop-receive</body>"
           "</message>")
    assert_nothing_before(b1, "drop-receive", barrier=send_marker(a, b1jid))
    assert_nothing_before(a, r"id=['\"]r2['\"]")
    log = read_log(a, base, "user_receive_packet")
    ev = one(log.of("user_receive_packet", id="r2"))
    assert ev["action"] == "dropped" and ev["jid"] == b1jid, ev
    # Only messages are marked: the answer to a ping is not.
    assert "hooktest" not in helpers.iq(b1, "pg", "<ping xmlns='urn:xmpp:ping'/>", typ="get")


def test_filter_packet(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice", "a")
    b, bjid = online(srv, "bob", "b")
    base = read_log(a).seq
    a.send(f"<message to='{bjid}' id='f1' type='chat'><body>hi</body></message>")
    assert marks(expect(b, msg_rx("f1"))) == [bjid]
    ev = one(read_log(a, base, "filter_packet").of("filter_packet", id="f1"))
    assert (ev["host"], ev["parsed_to"], ev["from"], ev["to"]) == \
        ("localhost", bjid, ajid, bjid), ev
    # Dropped by the filter: never delivered, no error.
    a.send(f"<message to='{bjid}' id='f2' type='chat'><body>hooktest:drop-filter</body>"
           "</message>")
    assert_nothing_before(b, "drop-filter", barrier=send_marker(a, bjid))
    assert_nothing_before(a, r"id=['\"]f2['\"]")
    log = read_log(a, base)
    assert one(log.of("filter_packet", id="f2"))["action"] == "dropped"
    assert not log.of("user_receive_packet", id="f2"), log.events


def test_presence_hooks(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice", "a", presence=False)
    b, bjid = online(srv, "bob", "b")
    base = read_log(a).seq
    a.send("<presence><priority>5</priority></presence>")
    a.roundtrip()
    a.send("<presence><priority>-1</priority></presence>")
    a.roundtrip()
    a.send("<presence type='unavailable'/>")
    a.roundtrip()
    a.send("<presence><priority>-2</priority></presence>")
    a.roundtrip()
    log = read_log(a, base)
    av = log.of("user_available", jid=ajid)
    assert [(e["priority"], e["initial"], e["first_nonneg"], e["has_presence"]) for e in av] == [
        ("5", "true", "true", "true"), ("-1", "false", "false", "true"),
        ("-2", "true", "false", "true")], av
    assert all(e["host"] == "localhost" and e["from"] == ajid for e in av), av
    un = log.of("user_unavailable", jid=ajid)
    assert [(e["has_presence"], e.get("type")) for e in un] == [("true", "unavailable")], un
    # PRESENCE_EDIT on every available presence the session sends, with
    # 'from' already stamped; what the handler adds reaches the receivers.
    ed = log.of("presence_edit", jid=ajid)
    assert [(e["from"], e.get("type"), e.get("to")) for e in ed] == [(ajid, None, None)] * 3, ed
    base = log.seq
    a.send(f"<presence to='{bjid}' id='dp'/>")
    p = expect(b, r"<presence[^>]*id='dp'.*?</presence>")
    assert f"<hooktest xmlns='{NS}' edit='{ajid}'" in p, p
    assert one(read_log(a, base).of("presence_edit", id="dp"))["to"] == bjid
    # A session that ends while available: USER_UNAVAILABLE without a presence.
    base = read_log(b).seq
    a.end_stream()
    un = read_log(b, base).of("user_unavailable", jid=ajid)
    assert [e["has_presence"] for e in un] == ["false"], un


def test_offline_message(server_factory):
    srv = start(server_factory)  # no mod_offline: nobody keeps the message
    a, ajid = online(srv, "alice", "a")
    base = read_log(a).seq
    a.send("<message to='bob@localhost' id='o1' type='chat'><body>later</body></message>")
    e = expect(a, msg_rx("o1"))
    assert "type='error'" in e and "service-unavailable" in e, e
    ev = one(read_log(a, base, "offline_message").of("offline_message", id="o1"))
    assert (ev["host"], ev["rcpt"], ev["from"], ev["body"]) == \
        ("localhost", "bob@localhost", ajid, "later"), ev
    # hooks.def: "A chat or normal message": not a headline (dropped
    # silently) nor a groupchat message (bounced, never stored).
    a.send("<message to='bob@localhost' id='o2'><body>normal</body></message>"
           "<message to='bob@localhost' id='o3' type='headline'><body>h</body></message>"
           "<message to='bob@localhost' id='o4' type='groupchat'><body>g</body></message>")
    assert "type='error'" in expect(a, msg_rx("o4"))
    log = read_log(a, base, "offline_message")
    assert [e["id"] for e in log.of("offline_message")] == ["o1", "o2"], log.events
    assert log.counts["offline_message"] == 2, log.counts


def test_offline_message_kept_by_a_handler(server_factory):
    srv = start(server_factory, opts="{offline_keep: true}")
    a, ajid = online(srv, "alice", "a")
    base = read_log(a).seq
    a.send("<message to='bob@localhost' id='k1' type='chat'><body>keep me</body></message>")
    # STOP: the handler kept it, so the sender gets no error.
    assert_nothing_before(a, r"id=['\"]k1['\"]")
    ev = one(read_log(a, base).of("offline_message", id="k1"))
    assert ev["action"] == "kept" and ev["rcpt"] == "bob@localhost", ev


def test_offline_message_runs_ahead_of_mod_offline(server_factory):
    srv = start(server_factory, more="  mod_offline: {}\n", extra=POOL1)
    a, ajid = online(srv, "alice", "a")
    base = read_log(a).seq
    a.send("<message to='bob@localhost' id='m1' type='chat'><body>stored</body></message>")
    # The store runs on the (one-thread) pool; a refusal there would come
    # back before the refusal of a store for an account that does not exist.
    assert "service-unavailable" in assert_nothing_before(
        a, r"id=['\"]m1['\"]", barrier=send_marker(a, "nobody@localhost"))  # kept
    assert one(read_log(a, base).of("offline_message", id="m1"))["rcpt"] == "bob@localhost"
    # Delivered when bob comes online, through USER_RECEIVE_PACKET like any other.
    b, bjid = online(srv, "bob", "b", presence=False)
    b.send("<presence/>")
    m = expect(b, msg_rx("m1"))
    assert "<body>stored</body>" in m and marks(m) == [bjid], m


# ---- accounts, rosters, subscriptions ------------------------------------------------------

def test_remove_user(server_factory):
    srv = start(server_factory, more="  mod_register: {}\n")
    users(srv, "dave")
    a, _ = online(srv, "alice", "a")
    base = read_log(a).seq
    # xmppctl unregister: the hook runs before the command answers.
    r = srv.ctl_run("unregister", "carol", "localhost")
    assert r.returncode == 0, r.stdout + r.stderr
    assert one(read_log(a, base).of("remove_user", user="carol"))["host"] == "localhost"
    # In-band (XEP-0077 3.2): the hook runs before the account's sessions
    # are closed, so once dave's stream is closed it has run.
    d, _ = online(srv, "dave", "d")
    d.send("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>")
    assert "type='result'" in expect(d, reply_rx("rm"))
    d.read_to_close()
    log = read_log(a, base, "remove_user")
    assert [(e["host"], e["user"]) for e in log.of("remove_user")] == [
        ("localhost", "carol"), ("localhost", "dave")], log.events


def test_roster_subscription_hooks(server_factory):
    srv = start(server_factory, more=ROSTER)
    a, ajid = online(srv, "alice", "a", roster=True)
    b, bjid = online(srv, "bob", "b", roster=True)
    base = read_log(a).seq
    a.send("<presence to='bob@localhost' type='subscribe'/>")
    # Delivered after both halves ran (out for alice, in for bob).
    expect(b, r"<presence[^>]*type='subscribe'[^>]*/?>")
    log = read_log(a, base)
    out = one(log.of("roster_out_subscription"), "out")
    assert (out["host"], out["user"], out["contact"], out["sub"]) == \
        ("localhost", "alice@localhost", "bob@localhost", "subscribe"), out
    assert (out["stanza"], out["type"], out["from"], out["to"]) == \
        ("presence", "subscribe", ajid, "bob@localhost"), out
    inn = one(log.of("roster_in_subscription"), "in")
    assert (inn["host"], inn["user"], inn["contact"], inn["sub"]) == \
        ("localhost", "bob@localhost", "alice@localhost", "subscribe"), inn
    # The approval: the other way round.
    base = log.seq
    b.send("<presence to='alice@localhost' type='subscribed'/>")
    take(a, r"<presence[^>]*type='subscribed'[^>]*/?>")
    log = read_log(a, base)
    out = one(log.of("roster_out_subscription"), "out")
    assert (out["user"], out["contact"], out["sub"]) == \
        ("bob@localhost", "alice@localhost", "subscribed"), out
    inn = one(log.of("roster_in_subscription"), "in")
    assert (inn["user"], inn["contact"], inn["sub"]) == \
        ("alice@localhost", "bob@localhost", "subscribed"), inn
    # ROSTER_CHANGED after each stored change: alice's item now 'to', bob's 'from'.
    ch = read_log(a, 0, "roster_changed")
    last = {}
    for e in ch.of("roster_changed"):
        last[(e["user"], e["jid"])] = e
    assert last[("alice", "bob@localhost")]["subscription"] == "to", ch.events
    assert last[("bob", "alice@localhost")]["subscription"] == "from", ch.events
    assert all(e["host"] == "localhost" for e in ch.of("roster_changed"))


def test_privacy_check_packet_observes_and_denies(server_factory):
    srv = start(server_factory, more=ROSTER, extra=POOL1)
    a, ajid = online(srv, "alice", "a", roster=True)
    b, bjid = online(srv, "bob", "b", roster=True)
    c, cjid = online(srv, "carol", "c", roster=True)
    base = read_log(a).seq
    a.send("<presence to='carol@localhost' type='subscribe' id='s1'/>")
    expect(c, r"<presence[^>]*id='s1'[^>]*/?>")
    log = read_log(a, base, "privacy_check_packet")
    evs = log.of("privacy_check_packet", id="s1")
    # The sender's outgoing rules, then each receiving session's incoming ones.
    assert [(e["user"], e["other"], e["outgoing"], e["type"]) for e in evs] == [
        ("alice@localhost", "carol@localhost", "true", "subscribe"),
        (cjid, "alice@localhost", "false", "subscribe")], evs
    # A handler that denies (deny = true, STOP): the request is not delivered.
    base = log.seq
    a.send("<presence to='bob@localhost' type='subscribe' id='s2'><status>hooktest:deny</status>"
           "</presence>")
    assert_nothing_before(b, r"id=['\"]s2['\"]", after=a, pool=True)
    evs = read_log(a, base).of("privacy_check_packet", id="s2")
    assert [(e["user"], e["outgoing"], e.get("action")) for e in evs] == [
        ("alice@localhost", "true", "denied")], evs


def test_roster_get_and_roster_changed(server_factory):
    srv = start(server_factory, more=ROSTER)
    a, ajid = online(srv, "alice", "a", roster=True)
    base = read_log(a).seq
    r = helpers.iq(a, "ra", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' "
                   "name='Bob'><group>Friends</group></item></query>")
    assert "type='result'" in r, r
    ev = one(read_log(a, base, "roster_changed").of("roster_changed"))
    assert (ev["host"], ev["user"], ev["jid"], ev["name"], ev["subscription"], ev["in_roster"],
            ev["groups"]) == ("localhost", "alice", "bob@localhost", "Bob", "none", "true",
                              ["Friends"]), ev
    # ROSTER_GET from a module (the consumer side): mod_roster answers.
    r = helpers.iq(a, "rg", f"<query xmlns='{NS_ROSTER}' user='alice'/>", typ="get",
                   to="localhost")
    assert re.search(r"served='true'[^>]*stopped='true'[^>]*rc='0'", r), r
    assert re.search(r"<item jid='bob@localhost' name='Bob' subscription='none'[^>]*>"
                     r"<group>Friends</group></item>", r), r
    r = helpers.iq(a, "rh", f"<query xmlns='{NS_ROSTER}' user='alice' "
                   "contact='nobody@localhost'/>", typ="get", to="localhost")
    assert "served='true'" in r and "<item" not in r, r
    gets = read_log(a, base, "roster_get").of("roster_get")
    assert [(e["user"], e.get("contact")) for e in gets] == [
        ("alice", None), ("alice", "nobody@localhost")], gets
    # Removed: in_roster false.
    base = read_log(a).seq
    helpers.iq(a, "rr", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' "
               "subscription='remove'/></query>")
    ev = one(read_log(a, base, "roster_changed").of("roster_changed"))
    assert ev["jid"] == "bob@localhost" and ev["in_roster"] == "false", ev


# ---- service discovery ---------------------------------------------------------------------

def features_of(r):
    return re.findall(r"<feature var='([^']*)'", r)


def test_disco_hooks(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice", "a")
    base = read_log(a).seq
    r = helpers.iq(a, "i1", f"<query xmlns='{NS_DISCO_INFO}'/>", typ="get", to="localhost")
    f = features_of(r)
    assert NS + ":local" in f and NS + ":sm" not in f, r
    assert NS in f  # the module's IQ handler, listed by mod_disco itself
    r = helpers.iq(a, "i2", f"<query xmlns='{NS_DISCO_INFO}'/>", typ="get",
                   to="bob@localhost")
    f = features_of(r)
    assert NS + ":sm" in f and NS + ":local" not in f, r
    r = helpers.iq(a, "i3", f"<query xmlns='{NS_DISCO_ITEMS}'/>", typ="get", to="localhost")
    assert f"<item jid='localhost' node='{NS}:local' name='hooktest'/>" in r, r
    r = helpers.iq(a, "i4", f"<query xmlns='{NS_DISCO_ITEMS}' node='n1'/>", typ="get",
                   to="localhost")
    assert f"<item jid='localhost' node='{NS}:local' name='n1'/>" in r, r
    log = read_log(a, base)
    lf = [e for e in log.of("disco_local_features") if e.get("from") == ajid]
    assert [(e["host"], e["to"], e.get("node")) for e in lf] == [("localhost", "localhost", None)]
    sf = one(log.of("disco_sm_features"))
    assert (sf["host"], sf["from"], sf["to"]) == ("localhost", ajid, "bob@localhost"), sf
    li = log.of("disco_local_items")
    assert [(e["from"], e["to"], e.get("node")) for e in li] == [
        (ajid, "localhost", None), (ajid, "localhost", "n1")], li


def test_disco_sm_items(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice", "a")
    base = read_log(a).seq
    r = helpers.iq(a, "i5", f"<query xmlns='{NS_DISCO_ITEMS}'/>", typ="get",
                   to="alice@localhost")
    assert f"<item jid='alice@localhost' node='{NS}:sm' name='hooktest'/>" in r, r
    si = one(read_log(a, base).of("disco_sm_items"))
    assert (si["host"], si["from"], si["to"]) == ("localhost", ajid, "alice@localhost"), si


def test_disco_info_node_reaches_the_hook(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice", "a")
    base = read_log(a).seq
    r = helpers.iq(a, "n1", f"<query xmlns='{NS_DISCO_INFO}' node='{NS}:local'/>", typ="get",
                   to="localhost")
    nodes = [e.get("node") for e in read_log(a, base).of("disco_local_features")
             if e.get("from") == ajid]
    # hooks.h: node is "the node asked for, or NULL".
    assert nodes == [f"{NS}:local"], (nodes, r)


# ---- TICK ----------------------------------------------------------------------------------

def test_tick_runs_on_every_worker(server_factory):
    srv = start(server_factory, workers=2)
    a, _ = online(srv, "alice", "a")
    seen = set()

    def both(e):
        seen.add(e["worker"])
        return len(seen) == 2

    poll_log(a, "tick", both, timeout=10)
    assert seen == {"0", "1"}, seen
    evs = read_log(a, 0, "tick").of("tick")
    for w in ("0", "1"):
        t = [int(e["now_ms"]) for e in evs if e["worker"] == w]
        assert t == sorted(t), (w, t)
    assert all(e["host"] == "localhost" for e in evs)


# ---- federation ----------------------------------------------------------------------------

def test_s2s_receive_packet(server_factory):
    # a.test and b.test federating on loopback (test_s2s.py), both with the module.
    p = test_s2s.make_pair(server_factory, a_extra=ht_yaml(), b_extra=ht_yaml())
    a, ajid = online(p.a, "alice", "r")
    b, bjid = online(p.b, "bob", "r")
    base_a, base_b = read_log(a).seq, read_log(b).seq
    a.send(f"<message to='{bjid}' type='chat' id='x1'><body>across</body></message>")
    m = test_s2s.expect(b, msg_rx("x1"))
    assert marks(m) == [bjid], m  # b's USER_RECEIVE_PACKET, not a's
    ev = one(read_log(b, base_b, "s2s_receive_packet").of("s2s_receive_packet", id="x1"))
    assert (ev["local"], ev["remote"], ev["from"], ev["to"]) == ("b.test", "a.test", ajid,
                                                                  bjid), ev
    # a's FILTER_PACKET runs for a stanza from its host to another server.
    ev = one(read_log(a, base_a, "filter_packet").of("filter_packet", id="x1"))
    assert ev["host"] == "a.test" and ev["parsed_to"] == bjid, ev
    # Dropped by b's handler: b's user never gets it (the marker follows on
    # the same stream).
    a.send(f"<message to='{bjid}' type='chat' id='x2'><body>hooktest:drop-s2s</body></message>")
    assert_nothing_before(b, "drop-s2s", barrier=send_marker(a, bjid), timeout=10)
    log = read_log(b, base_b)
    assert one(log.of("s2s_receive_packet", id="x2"))["action"] == "dropped"
    assert not log.of("filter_packet", id="x2") and not log.of("user_receive_packet", id="x2")
    # b sent nothing to a.test: a's hook never ran.
    assert not read_log(a, base_a).of("s2s_receive_packet")


# ---- the module goes and comes back --------------------------------------------------------

def test_reload_removes_and_restores_handlers(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice", "a")
    b, bjid = online(srv, "bob", "b")
    text = open(srv.config_path).read()
    assert "  mod_hooktest: {}\n" in text
    assert NS + ":local" in features_of(helpers.iq(a, "d1", f"<query xmlns='{NS_DISCO_INFO}'/>",
                                                   typ="get", to="localhost"))
    # Without the module: every handler is gone with the instance.
    open(srv.config_path, "w").write(text.replace("  mod_hooktest: {}\n", ""))
    assert srv.ctl_run("reload_config").returncode == 0
    f = features_of(helpers.iq(a, "d2", f"<query xmlns='{NS_DISCO_INFO}'/>", typ="get",
                               to="localhost"))
    assert not [x for x in f if x.startswith(NS)], f
    r = helpers.iq(a, "l1", f"<query xmlns='{NS}'/>", typ="get", to="localhost")
    assert "type='error'" in r and "service-unavailable" in r, r
    a.send("<message to='bob@localhost' id='g1' type='chat'><body>hooktest:drop</body></message>")
    m = expect(b, msg_rx("g1"))
    assert "hooktest:drop" in m and NS not in m, m
    c = XClient(srv.c2s_port)
    assert NS not in c.open_stream()
    c.starttls()
    c.open_stream()
    c.send(f"<iq type='get' id='p1'><query xmlns='{NS}'/></iq>")
    assert c.stream_error() == "not-authorized"
    # Back, with another option: a new instance, a new log, the new option.
    open(srv.config_path, "w").write(text.replace(
        "  mod_hooktest: {}\n", "  mod_hooktest: {drop_body: 'hooktest:drop2'}\n"))
    assert srv.ctl_run("reload_config").returncode == 0
    assert NS + ":local" in features_of(helpers.iq(a, "d3", f"<query xmlns='{NS_DISCO_INFO}'/>",
                                                   typ="get", to="localhost"))
    a.send("<message to='bob@localhost' id='g2' type='chat'><body>hooktest:drop2</body>"
           "</message>")
    a.send("<message to='bob@localhost' id='g3' type='chat'><body>hooktest:drop</body></message>")
    before, m = b.before(msg_rx("g3"))
    assert b"hooktest:drop2" not in before, before
    assert marks(helpers.q(m.group(0))) == [bjid]
    log = read_log(a)
    assert [e["id"] for e in log.of("user_send_packet", action="dropped")] == ["g2"], log.events
    assert not log.of("user_send_packet", id="g1"), log.events  # a fresh log

"""Client State Indication, XEP-0352 (src/router/session.c, the delivery
path of a session; src/stream/c2s.c, the feature and the nonzas).

While a client says it is <inactive/>, the server holds back what can wait:
availability presence, coalesced per full 'from' (the newest in the place
of the first), and messages that are only chat states or a PEP event.
Anything else (a message with a body, <store/>, an IQ, subscription
presence) first flushes what was held, in order; so does <active/>.  The
queue is bounded (1000 stanzas, 256 KiB): the oldest held presence is
dropped first, and a queue with no presence left to drop is flushed.
`xmppctl user_sessions_info` shows the state and the counters.

Negative checks never wait: a message with a body from the same sender
flushes the queue and is itself the barrier, so what was held must arrive
ahead of it, exactly as coalesced.  Where the test must see that something
is held (not written), it reads the session's counters: a stanza counted
in `queued` is in the queue, not on the wire.

The sender and the receiver sit on chosen workers (one c2s listener pinned
to each worker, as in test_workers.py): "same" and "cross" run both
delivery paths, the owner's direct one and the inbox.
"""
import re
import time

import pytest

from helpers import expect, msg_rx, online, send_marker, users
from xmpptest import free_port

NS = "urn:xmpp:csi:0"
CS = "http://jabber.org/protocol/chatstates"

placement = pytest.mark.parametrize("peer", [0, 1], ids=["same", "cross"])


@pytest.fixture
def srv(server_factory):
    ports = [free_port()]
    while len(ports) < 2:
        p = free_port()
        if p not in ports:
            ports.append(p)
    listen = "".join(f"  - port: {p}\n    ip: 127.0.0.1\n    module: c2s\n    worker: {w}\n"
                     for w, p in enumerate(ports))
    s = server_factory(listen=listen, workers=2)
    s.port = ports
    users(s, "ann", "bob")
    return s


def on(srv, worker, user, resource, **kw):
    return online(srv, user, resource, port=srv.port[worker], **kw)


def csi_info(srv, user, jid):
    """The user_sessions_info fields of session jid, as a dict."""
    r = srv.ctl_run("user_sessions_info", user, "localhost")
    assert r.returncode == 0, r.stdout + r.stderr
    for line in r.stdout.splitlines():
        f = line.split()
        if f and f[0] == jid:
            return dict(x.split("=", 1) for x in f[1:])
    raise AssertionError(f"{jid} not in {r.stdout!r}")


def wait_info(srv, user, jid, **want):
    """Polls user_sessions_info until session jid shows the fields `want`
    (a positive wait, bounded)."""
    deadline = time.time() + 10
    while True:
        got = csi_info(srv, user, jid)
        if all(got.get(k) == str(v) for k, v in want.items()):
            return got
        assert time.time() < deadline, (want, got)
        time.sleep(0.05)


def inactive(c):
    """<inactive/>, and a round trip while the queue is still empty (the
    IQ result would flush it): the state is set before what follows."""
    c.send(f"<inactive xmlns='{NS}'/>")
    c.roundtrip()


def presence(c, to, status):
    c.send(f"<presence to='{to}'><status>{status}</status></presence>")


def chatstate(c, to, state, mid):
    c.send(f"<message to='{to}' type='chat' id='{mid}'><{state} xmlns='{CS}'/></message>")


def test_feature_after_authentication_only(srv):
    c, jid = on(srv, 0, "ann", "r", presence=False)
    assert f"<csi xmlns='{NS}'/>" in c.features.replace('"', "'"), c.features
    assert csi_info(srv, "ann", jid)["csi"] == "active"
    c.send(f"<inactive xmlns='{NS}'/>")
    assert wait_info(srv, "ann", jid, csi="inactive")
    c.send(f"<active xmlns='{NS}'/>")
    assert wait_info(srv, "ann", jid, csi="active")


@placement
def test_presence_coalesced_until_a_body_flushes(srv, peer):
    a, ajid = on(srv, 0, "ann", "a")
    b, bjid = on(srv, peer, "bob", "b")
    inactive(b)
    for i in (1, 2, 3):
        presence(a, bjid, f"s{i}")
    barrier = send_marker(a, bjid)
    seen, m = b.before(barrier)
    got = re.findall(rb"<presence[^>]*>.*?</presence>", seen, re.S)
    assert len(got) == 1 and b"<status>s3</status>" in got[0], seen
    info = wait_info(srv, "bob", bjid, queued=0)
    assert info["held"] == "3" and info["coalesced"] == "2" and info["flushed"] == "1", info
    assert info["dropped"] == "0" and info["csi"] == "inactive", info


@placement
def test_chat_states_held_in_order_then_flushed_by_a_body(srv, peer):
    a, ajid = on(srv, 0, "ann", "a")
    b, bjid = on(srv, peer, "bob", "b")
    c, cjid = on(srv, 0, "ann", "c")
    inactive(b)
    chatstate(a, bjid, "composing", "cs1")
    presence(c, bjid, "away")
    chatstate(a, bjid, "paused", "cs2")
    # A PEP notification without a body is held too.
    a.send(f"<message to='{bjid}' id='pep1'><event xmlns='http://jabber.org/protocol/pubsub#event'>"
           "<items node='urn:xmpp:avatar:metadata'><item id='x'/></items></event></message>")
    wait_info(srv, "bob", bjid, queued=4, held=4)
    barrier = send_marker(a, bjid)
    seen, m = b.before(barrier)
    order = []
    for name, attrs in re.findall(rb"<(message|presence)\b([^>]*)>", seen):
        mid = re.search(rb"\bid=['\"](\w+)['\"]", attrs)
        order.append(mid.group(1) if mid else name)
    assert order == [b"cs1", b"presence", b"cs2", b"pep1"], seen
    assert wait_info(srv, "bob", bjid, queued=0, flushed=4)


@pytest.mark.parametrize("urgent", ["store", "iq", "subscribe"])
def test_urgent_stanzas_flush_first(srv, urgent):
    a, ajid = on(srv, 0, "ann", "a")
    b, bjid = on(srv, 1, "bob", "b")
    inactive(b)
    chatstate(a, bjid, "composing", "cs1")
    wait_info(srv, "bob", bjid, queued=1)
    if urgent == "store":
        a.send(f"<message to='{bjid}' type='chat' id='u1'><composing xmlns='{CS}'/>"
               "<store xmlns='urn:xmpp:hints'/></message>")
        rx = msg_rx("u1")
    elif urgent == "iq":
        a.send(f"<iq to='{bjid}' type='get' id='u1'><query xmlns='jabber:iq:version'/></iq>")
        rx = r"<iq[^>]*id=['\"]u1['\"].*?</iq>"
    else:
        a.send(f"<presence to='{bjid}' type='subscribe' id='u1'/>")
        rx = r"<presence[^>]*id=['\"]u1['\"][^>]*/>"
    seen, m = b.before(rx)
    assert re.search(rb"id=['\"]cs1['\"]", seen), seen
    assert wait_info(srv, "bob", bjid, queued=0, flushed=1)


def test_active_flushes(srv):
    a, ajid = on(srv, 0, "ann", "a")
    b, bjid = on(srv, 1, "bob", "b")
    inactive(b)
    chatstate(a, bjid, "composing", "cs1")
    presence(a, bjid, "busy")
    wait_info(srv, "bob", bjid, queued=2)
    b.send(f"<active xmlns='{NS}'/>")
    seen = b.roundtrip()  # the flush is written before the next element is read
    assert re.search(rb"id=['\"]cs1['\"].*<status>busy</status>", seen, re.S), seen
    info = wait_info(srv, "bob", bjid, csi="active", queued=0, flushed=2)
    assert info["held"] == "2"
    # Active again: nothing is held any more.
    chatstate(a, bjid, "paused", "cs2")
    expect(b, msg_rx("cs2"))


def test_bound_in_bytes_drops_the_oldest_presence(srv):
    # Five resources of ann each send bob a 61 KB presence: four fit in
    # 256 KiB, the fifth pushes out the oldest.
    senders = [on(srv, i % 2, "ann", f"r{i}") for i in range(5)]
    b, bjid = on(srv, 1, "bob", "b")
    inactive(b)
    big = "x" * 61000
    for i, (c, _) in enumerate(senders):
        presence(c, bjid, f"{i}{big}")
        c.roundtrip()
    wait_info(srv, "bob", bjid, held=5, queued=4, dropped=1)
    barrier = send_marker(senders[0][0], bjid)
    seen, m = b.before(barrier, timeout=20)
    froms = re.findall(rb"<presence[^>]*from=['\"]([^'\"]+)['\"]", seen)
    assert froms == [j.encode() for _, j in senders[1:]], froms
    assert wait_info(srv, "bob", bjid, queued=0, flushed=4)


def test_bound_in_stanzas_flushes_when_no_presence_is_left(srv):
    a, ajid = on(srv, 0, "ann", "a")
    b, bjid = on(srv, 1, "bob", "b")
    inactive(b)
    n = 1000
    for i in range(n):
        chatstate(a, bjid, "composing", f"c{i}")
    wait_info(srv, "bob", bjid, queued=n, held=n)
    # One more goes beyond: there is no presence to drop, so everything
    # held is written, in order, and then the new one (never held).
    chatstate(a, bjid, "paused", "last")
    seen, m = b.before(msg_rx("last"), timeout=30)
    ids = re.findall(rb"<message[^>]*id=['\"](\w+)['\"]", seen)
    assert ids == [f"c{i}".encode() for i in range(n)], ids[:5]
    info = wait_info(srv, "bob", bjid, queued=0)
    assert info["held"] == str(n) and info["flushed"] == str(n), info
    assert info["dropped"] == "0", info


def test_unknown_csi_element_is_a_stream_error(srv):
    c, jid = on(srv, 0, "ann", "r", presence=False)
    c.send(f"<sleepy xmlns='{NS}'/>")
    assert c.stream_error() == "unsupported-stanza-type"


def test_session_end_with_a_full_queue(srv):
    # What was held goes with the session (no leak, no crash: ASan).
    a, ajid = on(srv, 0, "ann", "a")
    b, bjid = on(srv, 1, "bob", "b")
    inactive(b)
    chatstate(a, bjid, "composing", "cs1")
    presence(a, bjid, "x")
    wait_info(srv, "bob", bjid, queued=2)
    b.end_stream()
    a.roundtrip()

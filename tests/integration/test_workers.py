"""Delivery between sessions placed on chosen workers (DESIGN.md 2;
RFC 6121 8.5).

A session lives on the worker that accepted its connection.  A stanza to a
session of the sender's own worker is delivered at once on that loop; one
to a session of another worker travels through that worker's inbox
(src/router/session.c).  With SO_REUSEPORT the kernel picks the worker, so
here each of two c2s listeners is pinned to one worker (listener option
`worker`): a login on srv.port[w] is a session on worker w, and both paths
run on purpose.

Every session proves where it is: the owner worker logs
`event="session bound" ... jid=<full JID> worker=<N>` before it writes the
bind result, so once login returns the line is in the log; login_on()
checks it.  The sender is always on worker 0; "same" puts the other party
on worker 0 too, "cross" on worker 1.

Negative checks use barriers (helpers.assert_nothing_before), never waits.
"""
import os
import re
import subprocess

import pytest

from conftest import build_dir
from helpers import (POOL1, assert_nothing_before, expect, msg_rx, online, reply_rx,
                     send_marker, users)
from xmpptest import free_port

# mod_offline stores messages for offline accounts; mod_roster does
# subscriptions and presence broadcast.  One pool thread (POOL1): a
# bounce from the offline store comes after the stores queued before it.
MODULES = "modules:\n  mod_roster: {}\n  mod_offline: {}\n" + POOL1

PLACEMENTS = {"same": 0, "cross": 1}
placement = pytest.mark.parametrize("peer", list(PLACEMENTS.values()), ids=list(PLACEMENTS))

NOBODY = "nobody@localhost"  # no such account: the offline store refuses (a barrier)


def pinned_listen(ports):
    """`listen` with one c2s listener per worker: ports[w] is worker w's."""
    return "".join(f"  - port: {p}\n    ip: 127.0.0.1\n    module: c2s\n    worker: {w}\n"
                   for w, p in enumerate(ports))


@pytest.fixture
def srv(server_factory):
    ports = [free_port()]
    while len(ports) < 2:
        p = free_port()
        if p not in ports:
            ports.append(p)
    s = server_factory(listen=pinned_listen(ports), extra_yaml=MODULES, workers=2)
    s.port = ports
    return s


def bound_workers(srv, jid):
    """The workers that bound the full JID jid, oldest first (from the log)."""
    rx = r'event="session bound" [^\n]*\bjid=' + re.escape(jid) + r" worker=(\d+)"
    return [int(w) for w in re.findall(rx, srv.log_text())]


def login_on(srv, worker, user, resource, **kw):
    """Logs in on worker `worker`'s listener and proves the placement."""
    c, jid = online(srv, user, resource, port=srv.port[worker], **kw)
    assert jid == f"{user}@localhost/{resource}", jid
    placed = bound_workers(srv, jid)
    assert placed and placed[-1] == worker, (jid, placed)
    return c, jid


def presence_rx(jid):
    """A presence with children from jid."""
    return rf"<presence[^>]*from=['\"]{re.escape(jid)}['\"][^>]*[^/]>.*?</presence>"


# ---- the listener option ---------------------------------------------------------------------

def test_pinned_listeners_accept_on_their_worker_only(srv):
    log = srv.log_text()
    for w, p in enumerate(srv.port):
        assert f'event="listening" module=c2s address=127.0.0.1:{p} worker={w}' in log, log
    users(srv, "ann")
    # Several connections per port: the kernel has one socket per port to
    # pick, so every one of them lands on the port's worker.
    sessions = [login_on(srv, i % 2, "ann", f"r{i}", presence=False) for i in range(6)]
    for i, (_, jid) in enumerate(sessions):
        assert bound_workers(srv, jid) == [i % 2]
    r = srv.ctl_run("connected_users")
    assert r.returncode == 0 and r.stdout.split() == sorted(j for _, j in sessions), r.stdout


def test_worker_beyond_workers_is_a_config_error(tmp_path):
    cfg = tmp_path / "x.yml"
    cfg.write_text("hosts: [localhost]\nworkers: 2\nlisten:\n"
                   "  - port: 5222\n    worker: 1\n"
                   "  - port: 5223\n    worker: 2\n")
    r = subprocess.run([os.path.join(build_dir(), "xmppd"), "--check-config", "-c", str(cfg)],
                       capture_output=True, text=True)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "x.yml:7:13: listen[1].worker: worker 2 does not exist" in r.stderr, r.stderr


# ---- delivery --------------------------------------------------------------------------------

@placement
def test_message_to_full_jid(srv, peer):
    users(srv, "alice", "bob")
    a, ajid = login_on(srv, 0, "alice", "a")
    b, bjid = login_on(srv, peer, "bob", "b")
    a.send(f"<message to='{bjid}' type='chat' id='m1'><body>hi bob</body></message>")
    m = expect(b, msg_rx("m1"))
    assert f"from='{ajid}'" in m and "<body>hi bob</body>" in m, m
    b.send(f"<message to='{ajid}' type='chat' id='m2'><body>hi alice</body></message>")
    m = expect(a, msg_rx("m2"))
    assert f"from='{bjid}'" in m and "<body>hi alice</body>" in m, m


@pytest.mark.parametrize("top", [0, 1], ids=["top-on-0", "top-on-1"])
def test_bare_jid_by_priority_over_both_workers(srv, top):
    """RFC 6121 8.5.2.1.1: to the highest non-negative priority (every one
    of them on a tie); the two resources are on different workers."""
    users(srv, "carol", "dan")
    hi, hijid = login_on(srv, top, "dan", "hi", priority=5)
    lo, lojid = login_on(srv, 1 - top, "dan", "lo", priority=1)
    c, _ = login_on(srv, 0, "carol", "c")
    c.send("<message to='dan@localhost' type='chat' id='b1'><body>top</body></message>")
    assert "<body>top</body>" in expect(hi, msg_rx("b1"))
    # carol's next message to lo comes after b1 would have.
    assert_nothing_before(lo, r"id=['\"]b1['\"]", barrier=send_marker(c, lojid))
    lo.send("<presence><priority>5</priority></presence>")
    lo.roundtrip()  # handled: both have priority 5 now
    c.send("<message to='dan@localhost' type='chat' id='b2'><body>tie</body></message>")
    assert "<body>tie</body>" in expect(hi, msg_rx("b2"))
    assert "<body>tie</body>" in expect(lo, msg_rx("b2"))


@placement
def test_presence_broadcast_between_contacts(srv, peer):
    users(srv, "eve", "fay")
    e, ejid = login_on(srv, 0, "eve", "e", roster=True)
    f, fjid = login_on(srv, peer, "fay", "f", roster=True)
    for x, y, yb in ((e, f, "fay@localhost"), (f, e, "eve@localhost")):
        x.send(f"<presence to='{yb}' type='subscribe'/>")
        expect(y, r"type=['\"]subscribe['\"]")
    e.send("<presence to='fay@localhost' type='subscribed'/>")
    f.send("<presence to='eve@localhost' type='subscribed'/>")
    expect(e, r"type=['\"]subscribed['\"]")
    expect(f, r"type=['\"]subscribed['\"]")
    e.send("<presence><status>eve here</status></presence>")
    assert "<status>eve here</status>" in expect(f, presence_rx(ejid))
    f.send("<presence><status>fay here</status></presence>")
    assert "<status>fay here</status>" in expect(e, presence_rx(fjid))
    e.send("<presence type='unavailable'/>")
    un = expect(f, r"<presence[^>]*type=['\"]unavailable['\"][^>]*/?>")
    assert f"from='{ejid}'" in un, un


@placement
def test_iq_to_full_jid_and_result(srv, peer):
    users(srv, "ian", "jo")
    i, ijid = login_on(srv, 0, "ian", "i")
    j, jjid = login_on(srv, peer, "jo", "j")
    i.send(f"<iq to='{jjid}' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
    req = expect(j, reply_rx("v1"))
    assert f"from='{ijid}'" in req and "type='get'" in req, req
    j.send(f"<iq to='{ijid}' type='result' id='v1'><query xmlns='jabber:iq:version'>"
           f"<name>jo-client</name></query></iq>")
    res = expect(i, reply_rx("v1"))
    assert f"from='{jjid}'" in res and "<name>jo-client</name>" in res, res


@placement
def test_carbons_between_resources_on_both_workers(srv, peer):
    """XEP-0280: uma's two resources are on different workers; vic, the
    other party, on worker `peer`."""
    users(srv, "uma", "vic")
    u0, u0jid = login_on(srv, 0, "uma", "u0")
    u1, u1jid = login_on(srv, 1, "uma", "u1")
    for c, i in ((u0, "e0"), (u1, "e1")):
        c.send(f"<iq type='set' id='{i}'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        assert "type='result'" in expect(c, reply_rx(i))
    v, vjid = login_on(srv, peer, "vic", "v")
    received = r"<message[^>]*>\s*<received xmlns=['\"]urn:xmpp:carbons:2['\"].*?</message>"
    sent = r"<message[^>]*>\s*<sent xmlns=['\"]urn:xmpp:carbons:2['\"].*?</message>"
    # Received: to each resource in turn; the other one gets the carbon.
    for to, tojid, other, otherjid, mid in ((u0, u0jid, u1, u1jid, "c1"),
                                            (u1, u1jid, u0, u0jid, "c2")):
        v.send(f"<message to='{tojid}' type='chat' id='{mid}'><body>to {mid}</body></message>")
        assert f"<body>to {mid}</body>" in expect(to, msg_rx(mid))
        carbon = expect(other, received)
        assert f"to='{otherjid}'" in carbon and f"<body>to {mid}</body>" in carbon, carbon
        assert "urn:xmpp:forward:0" in carbon and f"from='{vjid}'" in carbon, carbon
        # The recipient gets no copy of its own message.
        assert_nothing_before(to, r"<received ", after=v)
    # Sent: each resource writes to vic; the other one gets the carbon.
    for frm, other, otherjid, mid in ((u0, u1, u1jid, "s1"), (u1, u0, u0jid, "s2")):
        frm.send(f"<message to='{vjid}' type='chat' id='{mid}'><body>from {mid}</body></message>")
        assert f"<body>from {mid}</body>" in expect(v, msg_rx(mid))
        carbon = expect(other, sent)
        assert f"to='{otherjid}'" in carbon and f"<body>from {mid}</body>" in carbon, carbon
        assert_nothing_before(frm, r"<sent ")


@placement
def test_offline_message_delivered_at_login(srv, peer):
    users(srv, "olga", "paul")
    p, pjid = login_on(srv, 0, "paul", "p")
    p.send("<message to='olga@localhost' type='chat' id='o1'><body>kept</body></message>")
    # Stored once a later refusal of the store (POOL1) has come back.
    assert "service-unavailable" in expect(p, send_marker(p, NOBODY))
    o, _ = login_on(srv, peer, "olga", "o")
    m = expect(o, msg_rx("o1"))
    assert "<body>kept</body>" in m and "urn:xmpp:delay" in m and f"from='{pjid}'" in m, m


@placement
def test_order_of_200_messages(srv, peer):
    """RFC 6120 10.1: stanzas from one session to one recipient arrive in
    the order sent, also through the other worker's inbox."""
    users(srv, "kim", "lee")
    k, _ = login_on(srv, 0, "kim", "k")
    l, ljid = login_on(srv, peer, "lee", "l")
    for n in range(200):
        k.send(f"<message to='{ljid}' type='chat' id='n{n}'><body>{n}</body></message>")
    seen, last = l.before(msg_rx("n199"), timeout=20)
    ids = [int(x) for x in re.findall(rb"<message[^>]*id=['\"]n(\d+)['\"]",
                                      seen + last.group(0))]
    assert ids == list(range(200)), ids


# ---- sessions ending -------------------------------------------------------------------------

@placement
def test_session_replaced_by_login_on_other_worker(srv, peer):
    """RFC 6120 7.7.2.2 (resource_conflict: replace): the old session of
    the full JID ends with <conflict/>; stanzas go to the new one.  The old
    session is on worker `peer`, the new one on the other worker."""
    users(srv, "rex", "sid")
    s, _ = login_on(srv, 0, "sid", "s")
    old, jid = login_on(srv, peer, "rex", "x")
    new, _ = login_on(srv, 1 - peer, "rex", "x")
    assert bound_workers(srv, jid) == [peer, 1 - peer]
    assert old.stream_error() == "conflict"
    s.send(f"<message to='{jid}' type='chat' id='r1'><body>to the new one</body></message>")
    assert "<body>to the new one</body>" in expect(new, msg_rx("r1"))
    r = srv.ctl_run("connected_users")
    assert r.returncode == 0 and r.stdout.split() == [jid, "sid@localhost/s"], r.stdout


@placement
def test_stored_messages_come_before_the_stream_goes_on(srv, peer):
    """uli's initial presence makes mod_offline take the stored message out
    on the pool; the end of uli's stream, written in the same write, is
    handled only after that (xmppd/input.h: the work a stanza sends off the
    loop holds its stream), so the message reaches uli before the stream
    closes, and the store is empty after.  (A session that ends by other
    means meanwhile gets the message stored again: test_router.c,
    send_or_gives_back.)"""
    users(srv, "tom", "uli")
    t, _ = login_on(srv, 0, "tom", "t")
    t.send("<message to='uli@localhost' type='chat' id='z1'><body>late</body></message>")
    assert "service-unavailable" in expect(t, send_marker(t, NOBODY))  # stored
    u, _ = login_on(srv, peer, "uli", "u", presence=False)
    u.send("<presence/></stream:stream>")
    buf = u.read_to_close()
    assert b"<body>late</body>" in buf, buf
    u2, _ = login_on(srv, 1 - peer, "uli", "u2")
    assert_nothing_before(u2, msg_rx("z1"), barrier=send_marker(u2, NOBODY))
    assert_nothing_before(t, msg_rx("z1"))

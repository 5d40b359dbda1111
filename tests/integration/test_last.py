"""mod_last (XEP-0012 last activity) through the wire: the server's uptime,
an account's last logout with its status, seconds='0' while online,
forbidden without a presence subscription, item-not-found when nothing is
recorded, persistence across a restart and removal with the account."""
import re
import time

from helpers import POOL1, expect, iq, online, users

MODULES = "modules:\n  mod_roster: {}\n  mod_last: {}\n"
NS = "jabber:iq:last"


def session(srv, user, resource, presence=True):
    return online(srv, user, resource, presence=presence, roster=True)


def last(c, iq_id, to):
    return iq(c, iq_id, f"<query xmlns='{NS}'/>", typ="get", to=to)


def seconds(r):
    m = re.search(r"seconds='(\d+)'", r)
    assert m and "type='result'" in r, r
    return int(m.group(1))


def subscribe(srv, watcher, w, owner, o):
    """watcher gets a subscription to owner's presence (owner: from)."""
    w.send(f"<presence to='{owner}@localhost' type='subscribe'/>")
    expect(o, r"type=['\"]subscribe['\"]")
    o.send(f"<presence to='{watcher}@localhost' type='subscribed'/>")
    expect(w, r"type=['\"]subscribed['\"]")


def test_last_activity(server_factory):
    srv = server_factory(extra_yaml=MODULES)
    users(srv, "alice", "bob", "mallory")
    a, _ = session(srv, "alice", "a")
    b, _ = session(srv, "bob", "b")
    m, _ = session(srv, "mallory", "m")
    subscribe(srv, "bob", b, "alice", a)

    # The server: its uptime.
    up = seconds(last(b, "up", "localhost"))
    assert 0 <= up < 600
    # Online: 0 seconds.
    assert seconds(last(b, "l1", "alice@localhost")) == 0
    # No subscription: forbidden, online or not.
    assert "<forbidden" in last(m, "l2", "alice@localhost")
    # Nothing recorded for an account that was never available: item-not-found
    # (asked by the account itself, which is always allowed).
    users(srv, "carol")
    c, _ = session(srv, "carol", "c", presence=False)
    assert "<item-not-found" in last(c, "l3", "carol@localhost")
    c.close()

    # Alice logs out with a status; bob sees it with the seconds since.
    a.send("<presence type='unavailable'><status>Heading home</status></presence>")
    expect(b, r"type=['\"]unavailable")
    a.close()
    time.sleep(1.2)  # time itself is under test: at least a second since the logout
    r = last(b, "l4", "alice@localhost")
    assert seconds(r) >= 1 and ">Heading home</query>" in r, r
    # A set is not allowed.
    b.send(f"<iq type='set' id='l5' to='alice@localhost'><query xmlns='{NS}'/></iq>")
    assert "<not-allowed" in expect(b, r"<iq[^>]*id=['\"]l5.*?</iq>")

    # Kept across a restart.
    b.close()
    m.close()
    assert srv.stop() == 0
    srv.restart()
    b, _ = session(srv, "bob", "b")
    r = last(b, "l6", "alice@localhost")
    assert seconds(r) >= 1 and "Heading home" in r, r
    # Removing the account removes the record (a new alice starts empty).
    assert srv.ctl_run("unregister", "alice", "localhost").returncode == 0
    users(srv, "alice")
    a, _ = session(srv, "alice", "a", presence=False)
    assert "<item-not-found" in last(a, "l7", "alice@localhost")
    a.close()
    b.close()


def test_session_end_without_unavailable_is_recorded(server_factory):
    # One pool thread (POOL1): the record is written on the pool, queued when
    # the session ended, ahead of the broadcast that told eve, so before
    # eve's question (answered on the pool too).
    srv = server_factory(extra_yaml=MODULES + POOL1)
    users(srv, "dan", "eve")
    d, _ = session(srv, "dan", "d")
    e, _ = session(srv, "eve", "e")
    subscribe(srv, "eve", e, "dan", d)
    d.close()  # no unavailable presence: the session just ends
    expect(e, r"type=['\"]unavailable")
    r = last(e, "l1", "dan@localhost")
    assert seconds(r) < 60 and r.count("</query>") <= 1, r
    e.close()

"""mod_privacy (XEP-0016 privacy lists) through the wire, and its interplay
with mod_blocking (XEP-0191) on the one store: set / get / edit / remove,
bad requests, active and default lists with their conflicts, every stanza
kind refused in and out with the errors of 2.14, group and subscription
items, per-session active lists for stanzas to the bare JID, pushes to the
other resources, presence when presence-out changes, a block showing up in
the default list and the other way round, limits, each module without the
other, and persistence across a restart."""
import re

from helpers import (POOL1, assert_nothing_before, msg_rx, online, q, reply_rx, take, take_iq,
                     users)

NS = "jabber:iq:privacy"
NSB = "urn:xmpp:blocking"
BOTH = "modules:\n  mod_roster: {}\n  mod_blocking: {}\n  mod_privacy: {}\n"


def start(server_factory, modules=BOTH, names=("alice", "bob", "carol", "dave")):
    srv = server_factory(extra_yaml=modules)
    users(srv, *names)
    return srv


def ok(r):
    assert "type='result'" in r, r
    return r


def err(r, cond):
    assert "type='error'" in r and f"<{cond} " in r, r
    return r


def query(inner=""):
    return f"<query xmlns='{NS}'>{inner}</query>"


def set_list(c, iq_id, name, items):
    return take_iq(c, iq_id, query(f"<list name='{name}'>{items}</list>"))


def jid_item(value, action, order, kinds=""):
    return (f"<item type='jid' value='{value}' action='{action}' order='{order}'>"
            f"{kinds}</item>")


def names(c, iq_id):
    r = ok(take_iq(c, iq_id, query(), typ="get"))
    active = re.search(r"<active name='([^']*)'", r)
    default = re.search(r"<default name='([^']*)'", r)
    return (active and active.group(1), default and default.group(1),
            sorted(re.findall(r"<list name='([^']*)'", r)))


def get_list(c, iq_id, name):
    return take_iq(c, iq_id, query(f"<list name='{name}'/>"), typ="get")


def items_of(r):
    return re.findall(r"<item [^>]*?(?:/>|>.*?</item>)", r, re.S)


def push_rx(name):
    return (r"<iq[^>]*type=['\"]set['\"][^>]*>\s*<query xmlns=['\"]jabber:iq:privacy['\"]>"
            rf"\s*<list name=['\"]{re.escape(name)}['\"]\s*/>\s*</query>\s*</iq>")


def subscribe(a, ajid, b, bjid):
    """a subscribes to b's presence, b approves: a has subscription 'to'."""
    bare_b, bare_a = bjid.split("/")[0], ajid.split("/")[0]
    a.send(f"<presence to='{bare_b}' type='subscribe'/>")
    take(b, rf"<presence(?=[^>]*from=['\"]{bare_a}['\"])[^>]*type=['\"]subscribe['\"]")
    b.send(f"<presence to='{bare_a}' type='subscribed'/>")
    take(a, rf"<presence(?=[^>]*from=['\"]{re.escape(bjid)}['\"])(?![^>]*type=)[^>]*>")


# ---- lists ------------------------------------------------------------------------------------


def test_set_get_edit_remove(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice", "home")
    assert names(a, "n0") == (None, None, [])
    ok(set_list(a, "s1", "public",
                jid_item("Tybalt@LocalHost", "deny", 3, "<message/><presence-in/>") +
                "<item action='allow' order='68'/>"))
    assert names(a, "n1") == (None, None, ["public"])
    r = ok(get_list(a, "g1", "public"))
    its = items_of(r)
    assert len(its) == 2, r
    assert "value='tybalt@localhost'" in its[0] and "order='3'" in its[0], r  # normalised
    assert "<message/>" in its[0] and "<presence-in/>" in its[0], r
    assert "type=" not in its[1] and "action='allow'" in its[1], r
    # An edit replaces the whole list (2.6).
    ok(set_list(a, "s2", "public", jid_item("paris@localhost", "deny", 5)))
    its = items_of(ok(get_list(a, "g2", "public")))
    assert len(its) == 1 and "paris@localhost" in its[0], its
    ok(set_list(a, "s3", "special", "<item action='deny' order='666'/>"))
    assert names(a, "n2") == (None, None, ["public", "special"])
    # Remove (2.8): an empty <list/>; then it is gone.
    ok(set_list(a, "r1", "special", ""))
    assert names(a, "n3") == (None, None, ["public"])
    err(get_list(a, "g3", "special"), "item-not-found")
    err(set_list(a, "r2", "special", ""), "item-not-found")
    # One list at a time (2.3); one child in a set (2.1).
    err(take_iq(a, "g4", query("<list name='public'/><list name='special'/>"), typ="get"),
        "bad-request")
    err(take_iq(a, "s4", query("<active name='public'/><default name='public'/>")), "bad-request")
    err(take_iq(a, "s5", query()), "bad-request")
    # Bad items: bad-request; a group not in the roster: item-not-found.
    for i, bad in enumerate([
            "<item action='deny' order='1'/><item action='allow' order='1'/>",
            "<item type='jid' action='deny' order='1'/>",
            "<item type='jid' value='@x' action='deny' order='1'/>",
            "<item type='subscription' value='pending' action='deny' order='1'/>",
            "<item type='jid' value='a@b' action='block' order='1'/>",
            "<item action='deny' order='-2'/>",
            "<item action='deny'/>"]):
        err(set_list(a, f"b{i}", "bad", bad), "bad-request")
    err(set_list(a, "b9", "bad", "<item type='group' value='Nobody' action='deny' order='1'/>"),
        "item-not-found")
    assert names(a, "n4") == (None, None, ["public"])
    # Not someone else's lists.
    b, _ = online(srv, "bob", "x")
    err(take_iq(b, "x1", query(), typ="get", to="alice@localhost"), "forbidden")
    # The disco#info of the account and of the server list the feature.
    for to in ("alice@localhost", "localhost"):
        r = ok(take_iq(a, "d" + to, "<query xmlns='http://jabber.org/protocol/disco#info'/>",
                  typ="get", to=to))
        assert f"var='{NS}'" in r and f"var='{NSB}'" in r, r


def test_account_removal_clears_lists(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice", "home")
    ok(set_list(a, "s1", "p", jid_item("bob@localhost", "deny", 1)))
    ok(take_iq(a, "d1", query("<default name='p'/>")))
    a.close()
    assert srv.ctl_run("unregister", "alice", "localhost").returncode == 0
    users(srv, "alice")
    a, ajid = online(srv, "alice", "home")
    assert names(a, "n1") == (None, None, [])
    b, _ = online(srv, "bob", "x")
    b.send(f"<message to='{ajid}' type='chat' id='m1'><body>x</body></message>")
    take(a, msg_rx("m1"))


def test_active_default_and_conflicts(server_factory):
    srv = start(server_factory)
    a1, _ = online(srv, "alice", "one")
    a2, _ = online(srv, "alice", "two")
    ok(set_list(a1, "s1", "friends", "<item action='allow' order='1'/>"))
    ok(set_list(a1, "s2", "strict", "<item action='deny' order='1'><message/></item>"))
    err(take_iq(a1, "a0", query("<active name='nosuch'/>")), "item-not-found")
    err(take_iq(a1, "d0", query("<default name='nosuch'/>")), "item-not-found")
    ok(take_iq(a1, "a1", query("<active name='friends'/>")))
    assert names(a1, "n1") == ("friends", None, ["friends", "strict"])
    assert names(a2, "n2") == (None, None, ["friends", "strict"])  # active is per session
    # No default yet: setting one is free.
    ok(take_iq(a1, "d1", query("<default name='strict'/>")))
    assert names(a2, "n3")[1] == "strict"
    # Session two (no active list) uses the default: one may neither change
    # nor decline it (2.5), nor remove it (2.8) or two's active list.
    err(take_iq(a1, "d2", query("<default name='friends'/>")), "conflict")
    err(take_iq(a1, "d3", query("<default/>")), "conflict")
    err(set_list(a1, "r1", "strict", ""), "conflict")
    ok(take_iq(a2, "a2", query("<active name='strict'/>")))
    err(set_list(a1, "r2", "strict", ""), "conflict")
    # Removing one's own active list is fine: it is declined with it.
    ok(set_list(a1, "s3", "mine", "<item action='allow' order='1'/>"))
    ok(take_iq(a1, "a3", query("<active name='mine'/>")))
    ok(set_list(a1, "r3", "mine", ""))
    assert names(a1, "n4")[0] is None
    # Two has an active list now: one may change and decline the default.
    ok(take_iq(a1, "d4", query("<default name='friends'/>")))
    ok(take_iq(a1, "d5", query("<default/>")))
    assert names(a2, "n5") == ("strict", None, ["friends", "strict"])
    # Declining the active list (empty <active/>).
    ok(take_iq(a2, "a4", query("<active/>")))
    assert names(a2, "n6")[0] is None
    # When a session ends, its active list no longer holds a list.
    ok(take_iq(a2, "a5", query("<active name='strict'/>")))
    err(set_list(a1, "r4", "strict", ""), "conflict")
    a2.end_stream()  # the server has ended the session when it closes the connection
    ok(set_list(a1, "r5", "strict", ""))


def test_each_kind_in_and_out(server_factory):
    srv = start(server_factory, BOTH + POOL1)  # pool round trips below
    a, ajid = online(srv, "alice", "home")
    b, bjid = online(srv, "bob", "desk")
    lists = {
        "msg": jid_item("bob@localhost", "deny", 1, "<message/>"),
        "iq": jid_item("bob@localhost", "deny", 1, "<iq/>"),
        "pin": jid_item("bob@localhost", "deny", 1, "<presence-in/>"),
        "pout": jid_item("bob@localhost", "deny", 1, "<presence-out/>"),
        "all": jid_item("bob@localhost", "deny", 1),
    }
    for i, (n, body) in enumerate(lists.items()):
        ok(set_list(a, f"s{i}", n, body))

    def ping(mid):
        b.send(f"<iq to='{ajid}' type='get' id='{mid}'><ping xmlns='urn:xmpp:ping'/></iq>")

    # <message/>: bob's message bounces service-unavailable (2.14); IQs pass.
    ok(take_iq(a, "a1", query("<active name='msg'/>")))
    b.send(f"<message to='{ajid}' type='chat' id='m1'><body>hi</body></message>")
    err(take(b, msg_rx("m1")), "service-unavailable")
    ping("p1")
    take(a, r"<iq[^>]*id=['\"]p1['\"]")
    a.send(f"<iq to='{bjid}' type='result' id='p1'/>")
    # <iq/>: service-unavailable for a get; messages pass.
    ok(take_iq(a, "a2", query("<active name='iq'/>")))
    ping("p2")
    err(take(b, reply_rx("p2")), "service-unavailable")
    b.send(f"<message to='{ajid}' type='chat' id='m2'><body>hi</body></message>")
    take(a, msg_rx("m2"))
    # <presence-in/>: bob's presence vanishes without an error; not his messages.
    ok(take_iq(a, "a3", query("<active name='pin'/>")))
    b.send(f"<presence to='{ajid}' id='pr1'/>")
    b.send(f"<message to='{ajid}' type='chat' id='m3'><body>hi</body></message>")
    assert_nothing_before(a, r"id=['\"]pr1['\"]", barrier=msg_rx("m3"))
    assert_nothing_before(b, r"id=['\"]pr1['\"]")
    # <presence-out/>: alice's presence to bob goes nowhere, silently; her
    # messages still go (outgoing messages are refused only by items
    # without kinds).
    ok(take_iq(a, "a4", query("<active name='pout'/>")))
    a.send(f"<presence to='{bjid}' id='pr2'/>")
    a.send(f"<message to='{bjid}' type='chat' id='m4'><body>hi</body></message>")
    assert_nothing_before(b, r"id=['\"]pr2['\"]", barrier=msg_rx("m4"))
    assert_nothing_before(a, r"id=['\"]pr2['\"]")
    # No kinds: everything both ways.  Outgoing: not-acceptable, and no
    # <blocked/> (an active list, not the blocklist).
    ok(take_iq(a, "a5", query("<active name='all'/>")))
    a.send(f"<message to='{bjid}' type='chat' id='m5'><body>Can you hear me now?</body></message>")
    r = err(take(a, msg_rx("m5")), "not-acceptable")
    assert "Can you hear me now?" in r and "blocked" not in r, r
    a.send("<presence to='bob@localhost' type='subscribe' id='sub1'/>")
    err(take(a, r"<presence[^>]*id=['\"]sub1['\"].*?</presence>"), "not-acceptable")
    # Nothing from alice reaches bob now: her round trip shows what she sent
    # was handled (a subscription on the pool: pool round trips, POOL1).
    assert_nothing_before(b, r"id=['\"](m5|sub1)['\"]", after=a, pool=True)
    b.send(f"<message to='{ajid}' type='chat' id='m6'><body>hi</body></message>")
    err(take(b, msg_rx("m6")), "service-unavailable")
    b.send("<presence to='alice@localhost' type='subscribe' id='sub2'/>")
    assert_nothing_before(b, r"id=['\"]sub2['\"]", pool=True)
    assert_nothing_before(a, r"id=['\"](m6|sub2)['\"]", after=b, pool=True)
    # As the default list, a jid deny without kinds is a block item: the
    # outgoing error says <blocked/> (XEP-0191).
    ok(take_iq(a, "a6", query("<active/>")))
    ok(take_iq(a, "d1", query("<default name='all'/>")))
    a.send(f"<message to='{bjid}' type='chat' id='m7'><body>x</body></message>")
    r = err(take(a, msg_rx("m7")), "not-acceptable")
    assert "<blocked xmlns='urn:xmpp:blocking:errors'" in r, r


def test_group_and_subscription_items(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice", "home")
    b, _ = online(srv, "bob", "x")
    c, cjid = online(srv, "carol", "x")
    d, _ = online(srv, "dave", "x")
    ok(take_iq(a, "ro1", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost'>"
                    "<group>Enemies</group></item></query>"))
    subscribe(a, ajid, c, cjid)  # alice: carol 'to'
    ok(set_list(a, "s1", "sorted",
                "<item type='group' value='Enemies' action='deny' order='1'/>"
                "<item type='subscription' value='to' action='allow' order='2'/>"
                "<item type='subscription' value='none' action='deny' order='3'><message/></item>"))
    ok(take_iq(a, "d1", query("<default name='sorted'/>")))
    for who, mid in ((b, "gb"), (c, "gc"), (d, "gd")):
        who.send(f"<message to='{ajid}' type='chat' id='{mid}'><body>{mid}</body></message>")
    take(a, msg_rx("gc"))  # subscription 'to': allowed
    err(take(b, msg_rx("gb")), "service-unavailable")  # group Enemies
    err(take(d, msg_rx("gd")), "service-unavailable")  # not in the roster: 'none'
    d.send(f"<iq to='{ajid}' type='get' id='gdi'><ping xmlns='urn:xmpp:ping'/></iq>")
    take(a, r"<iq[^>]*id=['\"]gdi['\"]")  # 'none' denies messages only
    b.send(f"<iq to='{ajid}' type='get' id='gbi'><ping xmlns='urn:xmpp:ping'/></iq>")
    err(take(b, reply_rx("gbi")), "service-unavailable")  # Enemies: everything


def test_roster_change_applies_at_once(server_factory):
    """XEP-0016 2.2 rule 9: a group change during the session counts for
    the next stanza (the engine's roster copy follows mod_roster)."""
    srv = start(server_factory)
    a, ajid = online(srv, "alice", "home")
    b, _ = online(srv, "bob", "x")
    ok(take_iq(a, "ro1", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost'>"
                    "<group>Enemies</group></item></query>"))
    ok(set_list(a, "s1", "g", "<item type='group' value='Enemies' action='deny' order='1'/>"))
    ok(take_iq(a, "d1", query("<default name='g'/>")))
    b.send(f"<message to='{ajid}' type='chat' id='m1'><body>1</body></message>")
    err(take(b, msg_rx("m1")), "service-unavailable")
    ok(take_iq(a, "ro2", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost'>"
                    "<group>Friends</group></item></query>"))
    b.send(f"<message to='{ajid}' type='chat' id='m2'><body>2</body></message>")
    take(a, msg_rx("m2"))
    ok(take_iq(a, "ro3", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost'>"
                    "<group>Enemies</group></item></query>"))
    b.send(f"<message to='{ajid}' type='chat' id='m3'><body>3</body></message>")
    err(take(b, msg_rx("m3")), "service-unavailable")


def test_active_list_per_session_for_bare_jid_presence(server_factory):
    """Bob's presence broadcast to alice's bare JID: the session whose
    active list denies presence-in does not get it, the other one does."""
    srv = start(server_factory)
    a1, a1jid = online(srv, "alice", "one")
    a2, _ = online(srv, "alice", "two")
    b, bjid = online(srv, "bob", "x")
    subscribe(a1, a1jid, b, bjid)
    ok(set_list(a1, "s1", "quiet", jid_item("bob@localhost", "deny", 1, "<presence-in/>")))
    ok(take_iq(a1, "a1", query("<active name='quiet'/>")))
    b.send("<presence id='st1'><status>busy</status></presence>")
    take(a2, r"<presence[^>]*id=['\"]st1['\"]")
    # Messages to the bare JID still reach both (a chat goes to all
    # sessions of the same priority).  Bob's message, sent once alice/two
    # has his presence, is routed after it: a barrier for alice/one.
    b.send("<message to='alice@localhost' type='chat' id='bm1'><body>x</body></message>")
    assert_nothing_before(a1, r"id=['\"]st1['\"]", barrier=msg_rx("bm1"))
    take(a2, msg_rx("bm1"))


def test_presence_out_change_sends_unavailable_then_presence(server_factory):
    srv = start(server_factory, BOTH + POOL1)  # pool round trips below
    a, ajid = online(srv, "alice", "home")
    b, bjid = online(srv, "bob", "x")
    subscribe(b, bjid, a, ajid)  # bob sees alice's presence
    ok(set_list(a, "s1", "hide", jid_item("bob@localhost", "deny", 1, "<presence-out/>")))
    ok(take_iq(a, "d1", query("<default name='hide'/>")))
    r = take(b, rf"<presence[^>]*from=['\"]{re.escape(ajid)}['\"][^>]*>")
    assert "type='unavailable'" in r, r  # 2.11 note
    a.send("<presence><status>back</status></presence>")
    # A broadcast goes out from the pool: pool round trips (POOL1).
    assert_nothing_before(b, r"<status>back</status>", after=a, pool=True)
    ok(take_iq(a, "d2", query("<default/>")))
    r = take(b, rf"<presence[^>]*from=['\"]{re.escape(ajid)}['\"].*?</presence>")
    assert "unavailable" not in r and "<status>back</status>" in r, r


def test_pushes_to_the_sessions_that_asked(server_factory):
    srv = start(server_factory)
    a1, _ = online(srv, "alice", "one")
    a2, a2jid = online(srv, "alice", "two")
    a3, _ = online(srv, "alice", "three")  # never asks about privacy: no pushes
    names(a1, "n1")
    names(a2, "n2")
    ok(set_list(a1, "s1", "work", "<item action='allow' order='1'/>"))
    p = take(a2, push_rx("work"))
    assert f"to='{a2jid}'" in p, p
    take(a1, push_rx("work"))  # the requester too
    ok(set_list(a2, "r1", "work", ""))
    take(a1, push_rx("work"))
    # Pushes go out before the result that alice/two has seen.
    assert_nothing_before(a3, r"jabber:iq:privacy")


def test_block_shows_in_default_list_and_back(server_factory):
    srv = start(server_factory)
    a1, _ = online(srv, "alice", "one")   # XEP-0191 client
    a2, _ = online(srv, "alice", "two")   # XEP-0016 client
    a1.send(f"<iq type='get' id='bl0'><blocklist xmlns='{NSB}'/></iq>")
    a1.take(reply_rx("bl0"))
    names(a2, "n0")
    # A block creates the default list "Blocked contacts".
    ok(take_iq(a1, "b1", f"<block xmlns='{NSB}'><item jid='bob@localhost'/></block>"))
    take(a1, r"<iq[^>]*type=['\"]set['\"][^>]*>\s*<block .*?</iq>")
    take(a2, push_rx("Blocked contacts"))
    assert names(a2, "n1") == (None, "Blocked contacts", ["Blocked contacts"])
    its = items_of(ok(get_list(a2, "g1", "Blocked contacts")))
    assert len(its) == 1, its
    assert "type='jid'" in its[0] and "value='bob@localhost'" in its[0], its
    assert "action='deny'" in its[0] and "order='1'" in its[0] and its[0].endswith("/>"), its
    # Edited as a privacy list: new block items show up as XEP-0191 pushes,
    # other items do not belong to the blocklist.
    ok(set_list(a2, "s1", "Blocked contacts",
                jid_item("bob@localhost", "deny", 1) + jid_item("carol@localhost", "deny", 2) +
                jid_item("dave@localhost", "deny", 3, "<message/>") +
                jid_item("eve@localhost", "allow", 4)))
    p = take(a1, r"<iq[^>]*type=['\"]set['\"][^>]*>\s*<block .*?</iq>")
    assert "carol@localhost" in p and "bob@localhost" not in p, p
    a1.send(f"<iq type='get' id='bl1'><blocklist xmlns='{NSB}'/></iq>")
    r = q(a1.take(reply_rx("bl1")).group(0))
    assert re.findall(r"<item jid='([^']*)'", r) == ["bob@localhost", "carol@localhost"], r
    # Removing an item through XEP-0016 is an unblock for XEP-0191.
    ok(set_list(a2, "s2", "Blocked contacts", jid_item("carol@localhost", "deny", 2)))
    p = take(a1, r"<iq[^>]*type=['\"]set['\"][^>]*>\s*<unblock .*?</iq>")
    assert "bob@localhost" in p and "carol" not in p, p
    # An unblock through XEP-0191 is a privacy list push.
    ok(take_iq(a1, "u1", f"<unblock xmlns='{NSB}'><item jid='carol@localhost'/></unblock>"))
    take(a2, push_rx("Blocked contacts"))
    assert items_of(ok(get_list(a2, "g2", "Blocked contacts"))) == []
    # With another default list, blocks go in front of its items.
    ok(set_list(a2, "s3", "mine", "<item action='allow' order='0'/>"))
    ok(take_iq(a2, "a1", query("<active name='mine'/>")))  # so that one may change the default
    ok(take_iq(a1, "d1", query("<default name='mine'/>")))
    ok(take_iq(a1, "b2", f"<block xmlns='{NSB}'><item jid='dave@localhost'/></block>"))
    its = items_of(ok(get_list(a2, "g3", "mine")))
    assert len(its) == 2 and "dave@localhost" in its[0] and "action='allow'" in its[1], its
    d, _ = online(srv, "dave", "x")
    d.send("<message to='alice@localhost/one' type='chat' id='dm'><body>x</body></message>")
    err(take(d, msg_rx("dm")), "service-unavailable")


def test_limits(server_factory):
    srv = start(server_factory, modules="modules:\n  mod_roster: {}\n  mod_blocking: {}\n"
                                        "  mod_privacy: {max_lists: 2, max_items: 3}\n")
    a, _ = online(srv, "alice", "home")
    ok(set_list(a, "s1", "one", "<item action='allow' order='1'/>"))
    ok(set_list(a, "s2", "two", "<item action='allow' order='1'/>"))
    err(set_list(a, "s3", "three", "<item action='allow' order='1'/>"), "not-acceptable")
    err(set_list(a, "s4", "one", "".join(f"<item action='allow' order='{i}'/>"
                                          for i in range(4))), "not-acceptable")
    ok(take_iq(a, "d1", query("<default name='one'/>")))
    ok(take_iq(a, "b1", f"<block xmlns='{NSB}'><item jid='x@y'/><item jid='y@z'/></block>"))
    err(take_iq(a, "b2", f"<block xmlns='{NSB}'><item jid='z@q'/></block>"), "not-acceptable")


def test_each_module_alone(server_factory):
    srv = start(server_factory, modules="modules:\n  mod_roster: {}\n  mod_privacy: {}\n")
    a, ajid = online(srv, "alice", "home")
    b, _ = online(srv, "bob", "x")
    err(take_iq(a, "b1", f"<block xmlns='{NSB}'><item jid='bob@localhost'/></block>"),
        "service-unavailable")
    ok(set_list(a, "s1", "p", jid_item("bob@localhost", "deny", 1)))
    ok(take_iq(a, "d1", query("<default name='p'/>")))
    b.send(f"<message to='{ajid}' type='chat' id='m1'><body>x</body></message>")
    err(take(b, msg_rx("m1")), "service-unavailable")


def test_lists_survive_restart(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice", "home")
    ok(set_list(a, "s1", "keep", jid_item("bob@localhost", "deny", 7, "<iq/>") +
                "<item type='subscription' value='none' action='deny' order='9'><message/></item>"))
    ok(set_list(a, "s2", "other", "<item action='allow' order='1'/>"))
    ok(take_iq(a, "d1", query("<default name='keep'/>")))
    ok(take_iq(a, "a1", query("<active name='other'/>")))
    a.close()
    assert srv.stop() == 0
    srv.restart()
    a, ajid = online(srv, "alice", "home")
    assert names(a, "n1") == (None, "keep", ["keep", "other"])  # active lists are per session
    its = items_of(ok(get_list(a, "g1", "keep")))
    assert len(its) == 2 and "order='7'" in its[0] and "<iq/>" in its[0], its
    assert "type='subscription'" in its[1] and "<message/>" in its[1], its
    b, _ = online(srv, "bob", "x")
    b.send(f"<message to='{ajid}' type='chat' id='m1'><body>x</body></message>")
    err(take(b, msg_rx("m1")), "service-unavailable")  # 'none' denies messages

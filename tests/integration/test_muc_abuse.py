"""Abuse of group chat through the wire (an attacker review's findings,
each test failing before its fix): what one account, or a stranger whose
stanza reaches the room, can make mod_muc do: admin lists that take
their sender out (use-after-free), a malformed history 'since', invitations
and declines amplified, locked rooms answering strangers, a voice request
interval reset by entering again, rooms per account without a default
bound.  Raw XML in the style of test_muc.py (its helpers are reused).
Negative checks use barriers (helpers.py): a marker message from the same
sender, or a round trip."""
import re

from helpers import iq, online, send_marker

import test_muc as M


def admin_get(c, room, item, iq_id):
    return iq(c, iq_id, f"<query xmlns='{M.NS_ADMIN}'>{item}</query>", typ="get",
              to=f"{room}@{M.MUC}")


def test_muc_stranger_declines_are_not_amplified(server_factory):
    """A stranger (never invited, not an occupant) sends the room one
    message with many <decline to='victim'/>: mod_muc_msg.c room_invite
    forwarded every one of them, from the room's JID, without checking that
    the sender was invited and without muc_flood_ok.  XEP-0045 7.8.2: a
    decline goes from the invitee to its inviter, one per invitation; one
    stanza must not become many messages to a third party."""
    srv = M.start(server_factory, opts="max_messages_per_second: 1")
    a, ajid = online(srv, "alice")
    M.create(a, "lobby", "al")
    c, cjid = online(srv, "carol")
    d, _ = online(srv, "dave")
    declines = "".join(f"<decline to='{cjid}'><reason>spam {i}</reason></decline>"
                       for i in range(20))
    d.send(f"<message to='lobby@{M.MUC}' id='dx'><x xmlns='{M.NS_USER}'>{declines}</x>"
           f"</message>")
    marker = send_marker(d, cjid)
    seen, _ = c.before(marker, timeout=10)
    n = len(re.findall(rb"<decline ", seen))
    assert n <= 1, f"carol got {n} declines relayed by the room from one stanza of dave's"
    M.expect(d, M.err_rx("message", "dx", "not-acceptable"))
    # One decline, but carol never invited dave: refused, nothing relayed.
    d.send(f"<message to='lobby@{M.MUC}' id='d1'><x xmlns='{M.NS_USER}'>"
           f"<decline to='{cjid}'/></x></message>")
    M.expect(d, M.err_rx("message", "d1", "not-acceptable"))
    marker = send_marker(d, cjid)
    seen, _ = c.before(marker, timeout=10)
    assert b"<decline " not in seen, seen
    # Invited by alice, dave declines to her: relayed once; a second
    # decline of the same invitation is refused.
    a.send(f"<message to='lobby@{M.MUC}' id='i1'><x xmlns='{M.NS_USER}'>"
           f"<invite to='dave@localhost'/></x></message>")
    M.expect(d, rf"<message[^>]*from='lobby@{M.MUC}'[^>]*>.*?<invite .*?</message>")
    for i in range(2):
        d.send(f"<message to='lobby@{M.MUC}' id='d2{i}'><x xmlns='{M.NS_USER}'>"
               f"<decline to='{ajid}'><reason>busy</reason></decline></x></message>")
    M.expect(d, M.err_rx("message", "d21", "not-acceptable"))
    marker = send_marker(d, ajid)
    seen, _ = a.before(marker, timeout=10)
    assert len(re.findall(rb"<decline ", seen)) == 1, seen
    assert b"<reason>busy</reason>" in seen, seen


def test_muc_one_message_many_invitations(server_factory):
    """An occupant of a room that allows invitations sends one message with
    20 <invite to='carol'/>: carol got 20 invitations (and with an admin
    in a members-only room, each adds a member).  Invitations bypassed
    max_messages_per_second (muc_flood_ok ran after room_invite).  Now
    at most max_invitations (10) per message, each counted as a message
    against max_messages_per_second."""
    srv = M.start(server_factory, opts="max_messages_per_second: 1")
    a, _ = online(srv, "alice")
    M.create(a, "lobby", "al")
    assert "type='result'" in M.config(a, "lobby", {"allowinvites": "1"})
    b, _ = online(srv, "bob")
    M.join(b, "lobby", "bo")
    c, cjid = online(srv, "carol")
    invites = "".join(f"<invite to='{cjid}'/>" for _ in range(20))
    b.send(f"<message to='lobby@{M.MUC}' id='ix'><x xmlns='{M.NS_USER}'>{invites}</x>"
           f"</message>")
    marker = send_marker(b, cjid)
    seen, _ = c.before(marker, timeout=10)
    n = len(re.findall(rb"<invite ", seen))
    assert n <= 1, f"carol got {n} invitations from one stanza"
    M.expect(b, M.err_rx("message", "ix", "not-acceptable"))
    # Three (within max_invitations) and one message a second: the first
    # goes, the rest of the message is refused.
    b.send(f"<message to='lobby@{M.MUC}' id='i3'><x xmlns='{M.NS_USER}'>"
           f"<invite to='{cjid}'/><invite to='dave@localhost'/><invite to='alice@localhost'/>"
           f"</x></message>")
    M.expect(b, M.err_rx("message", "i3", "resource-constraint"))
    marker = send_marker(b, cjid)
    seen, _ = c.before(marker, timeout=10)
    assert len(re.findall(rb"<invite ", seen)) <= 1, seen


def test_muc_invitations_per_message_limit(server_factory):
    """max_invitations (10 by default) without a message rate: ten
    invitations in one message go, eleven are refused (none sent)."""
    srv = M.start(server_factory)
    a, _ = online(srv, "alice")
    M.create(a, "lobby", "al")
    c, cjid = online(srv, "carol")
    for mid, n in (("i10", 10), ("i11", 11)):
        invites = "".join(f"<invite to='{cjid}'><reason>{mid}</reason></invite>"
                          for _ in range(n))
        a.send(f"<message to='lobby@{M.MUC}' id='{mid}'><x xmlns='{M.NS_USER}'>{invites}</x>"
               f"</message>")
    M.expect(a, M.err_rx("message", "i11", "not-acceptable"))
    marker = send_marker(a, cjid)
    seen, _ = c.before(marker, timeout=10)
    assert len(re.findall(rb"<reason>i10</reason></invite>", seen)) == 10, seen
    assert b"i11" not in seen, seen


def test_muc_pending_invitations_bounded(server_factory):
    """max_pending_invitations: the room remembers that many invitations
    for their declines; past it the oldest is forgotten and its decline
    refused."""
    srv = M.start(server_factory, opts="max_pending_invitations: 2")
    a, ajid = online(srv, "alice")
    M.create(a, "lobby", "al")
    c, _ = online(srv, "carol")
    d, _ = online(srv, "dave")
    for i, who in enumerate(("carol", "dave", "bob")):
        a.send(f"<message to='lobby@{M.MUC}' id='i{i}'><x xmlns='{M.NS_USER}'>"
               f"<invite to='{who}@localhost'/></x></message>")
    a.roundtrip()
    for x, mid in ((c, "dc"), (d, "dd")):
        x.send(f"<message to='lobby@{M.MUC}' id='{mid}'><x xmlns='{M.NS_USER}'>"
               f"<decline to='{ajid}'/></x></message>")
    M.expect(c, M.err_rx("message", "dc", "not-acceptable"))
    marker = send_marker(d, ajid)
    seen, _ = a.before(marker, timeout=10)
    assert b"from='dave@localhost/" in seen and b"from='carol@localhost/" not in seen, seen


def test_muc_register_in_locked_room(server_factory):
    """A room just created is locked until its owner configures it: to
    everyone else it does not exist (XEP-0045 10.1.1/10.1.2: item-not-found).
    mod_muc_iq.c muc_room_register_iq does not look at r->locked, so a
    stranger who guesses the name registers while the owner fills in the
    form and is a member when the owner makes the room members-only."""
    srv = M.start(server_factory)
    a, _ = online(srv, "alice")
    seq = M.join(a, "secret", "al")  # created, locked: not configured yet
    assert "code='201'" in seq, seq
    b, _ = online(srv, "bob")
    reg = ("<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>"
           "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value>"
           "</field><field var='muc#register_roomnick'><value>bo</value></field></x></query>")
    r = iq(b, "rg", reg, to=f"secret@{M.MUC}")
    # The owner now makes it members-only.
    assert "type='result'" in iq(a, "cr", M.INSTANT, to=f"secret@{M.MUC}")
    assert "type='result'" in M.config(a, "secret", {"membersonly": "1"})
    members = admin_get(a, "secret", "<item affiliation='member'/>", "ml")
    assert "type='error'" in r and "item-not-found" in r and "bob@localhost" not in members, \
        f"a stranger registered with a locked room: {r}; its members then: {members}"


def test_muc_locked_room_not_listed(server_factory):
    """Covered surface (passed before): a locked room (created, not yet
    configured) is not in the service's disco#items.  (Its disco#info is
    checked in test_muc_locked_room_info.)"""
    srv = M.start(server_factory)
    a, _ = online(srv, "alice")
    assert "code='201'" in M.join(a, "notyet", "al")
    b, _ = online(srv, "bob")
    r = iq(b, "di", "<query xmlns='http://jabber.org/protocol/disco#items'/>", typ="get",
           to=M.MUC)
    assert "notyet@" not in r, r


def test_muc_locked_room_info(server_factory):
    """A locked room answers anyone's disco#info (mod_muc_arch.c
    muc_room_iq has no r->locked check), so a stranger can probe which
    names are being created; with the registration of
    test_muc_register_in_locked_room that is membership before the owner
    has decided anything.  XEP-0045 10.1.1: until configured the room is
    item-not-found to everyone but its owner (as for entering, which
    room_enter refuses so)."""
    srv = M.start(server_factory)
    a, _ = online(srv, "alice")
    assert "code='201'" in M.join(a, "notyet", "al")
    b, _ = online(srv, "bob")
    b.send(f"<presence to='notyet@{M.MUC}/bo'><x xmlns='{M.NS_MUC}'/></presence>")
    entering = M.expect(b, M.perr("item-not-found"))
    r = iq(b, "dn", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"notyet@{M.MUC}")
    assert "<item-not-found " in r, f"entering: {entering!r}; disco#info: {r}"
    # Its owner sees it; once configured, everyone does.
    info = "<query xmlns='http://jabber.org/protocol/disco#info'/>"
    assert "type='result'" in iq(a, "do", info, typ="get", to=f"notyet@{M.MUC}")
    assert "type='result'" in iq(a, "cr", M.INSTANT, to=f"notyet@{M.MUC}")
    assert "type='result'" in iq(b, "dn2", info, typ="get", to=f"notyet@{M.MUC}")


def test_muc_history_since_short_stamp(server_factory):
    """<history since/> is parsed by mod_muc_room.c parse_stamp: sscanf
    with %4d-%2d-%2dT%2d:%2d:%2d matches far shorter text than a full
    XEP-0082 stamp ('1-1-1T1:1:1', 11 bytes), and the code then reads the
    zone at s + 19, past the end of the attribute's string (strlen and atoi
    on whatever the arena holds next: here the name of the next attribute,
    'abc-999999999', read as a zone of -999999999 hours).  The since of year
    1 then lies 100,000 years ahead and the newcomer gets no history.  A
    malformed since must be refused or ignored (XEP-0045 7.2.15: the
    default history), never read past its end."""
    srv = M.start(server_factory)
    a, _ = online(srv, "alice")
    M.create(a, "lobby", "al")
    M.groupchat(a, "lobby", "old-message", "h1")
    a.roundtrip()
    b, _ = online(srv, "bob")
    got = {}
    for i, extra in enumerate(("", " abc-999999999='x'")):
        seq = M.join(b, "lobby", f"b{i}", f"<history since='1-1-1T1:1:1'{extra}/>")
        got[extra] = "old-message" in seq
        b.send(f"<presence to='lobby@{M.MUC}/b{i}' type='unavailable'/>")
        b.roundtrip()
    assert got[""] == got[" abc-999999999='x'"], \
        f"the history depends on bytes past the since attribute: {got}"
    # Ignored as other malformed history attributes are: the default history.
    assert got[""], got
    for i, (since, has) in enumerate((("2999-01-01T00:00:00+01:00", False),
                                      ("2000-01-01T00:00:00.123-05:00", True),
                                      ("2999-01-01T00:00:00Z", False),
                                      ("2999-01-01T00:00:00", True),
                                      ("2999-01-01T00:00:00+01", True),
                                      ("2999-13-01T00:00:00Z", True),
                                      ("2999-01-01T00:00:00.Z", True))):
        seq = M.join(b, "lobby", f"s{i}", f"<history since='{since}'/>")
        assert ("old-message" in seq) == has, (since, seq)
        b.send(f"<presence to='lobby@{M.MUC}/s{i}' type='unavailable'/>")
        b.roundtrip()


def test_muc_admin_list_that_kicks_its_sender(server_factory):
    """One muc#admin set whose first item takes the sender out of the room
    (a kick of one's own nick, or a ban of one's own JID when there is
    another owner) and has a second item: mod_muc_iq.c muc_room_admin_iq
    passes the same `me` to every admin_item, and the first one freed it
    (muc_occ_remove -> occ_free), so the second reads freed memory
    (me->nick, me->role).  Any account can do this in a room it creates.
    XEP-0045 8.2 lets the service refuse a self-kick (conflict); either
    way the server answers and stays up."""
    srv = M.start(server_factory)
    a, _ = online(srv, "alice")
    M.create(a, "lobby", "al")
    b, _ = online(srv, "bob")
    M.join(b, "lobby", "bo")
    r = M.admin(a, "<item nick='al' role='none'/><item nick='bo' role='visitor'/>", "lobby",
                iq_id="k1")
    # Refused as ejabberd and Prosody do (conflict: XEP-0045 8.2); nothing changed.
    assert "type='error'" in r and "<conflict " in r, r
    r = admin_get(a, "lobby", "<item role='participant'/>", "k2")
    assert "nick='bo'" in r, r
    # A ban of one's own account (bob is an owner too) takes the sender
    # out; the next item is the request of someone banned: refused.
    assert "type='result'" in M.admin(a, "<item affiliation='owner' jid='bob@localhost'/>",
                                      "lobby", iq_id="k3")
    r = M.admin(a, "<item affiliation='outcast' jid='alice@localhost'/>"
                   "<item affiliation='member' jid='carol@localhost'/>", "lobby", iq_id="k4")
    assert "type='error'" in r and "<forbidden " in r, r
    members = admin_get(b, "lobby", "<item affiliation='member'/>", "k5")
    assert "type='result'" in members and "carol@" not in members, members
    # The server is alive and the room still answers.
    r = iq(b, "ping", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"lobby@{M.MUC}")
    assert "type='result'" in r, r


def test_muc_self_ban_with_two_nicks(server_factory):
    """The same stale pointer by another path: an owner in the room under
    two nicks (two sessions) bans her own JID from the session that entered
    last.  admin_item passes actor = me->nick to muc_aff_follow, which
    removes the occupants of the account from the last one back: `me`
    first (freeing me->nick), then the other, whose unavailable presence
    and room event read the freed actor nick.  The server must answer and
    stay up (XEP-0045 9.1: a ban takes every occupant of the account out)."""
    srv = M.start(server_factory)
    a, _ = online(srv, "alice", "one")
    M.create(a, "lobby", "al")
    assert "type='result'" in M.admin(a, "<item affiliation='owner' jid='bob@localhost'/>",
                                      "lobby", iq_id="o1")
    a2, _ = online(srv, "alice", "two")
    M.join(a2, "lobby", "al2")
    r = M.admin(a2, "<item affiliation='outcast' jid='alice@localhost'/>", "lobby", iq_id="b1")
    assert "type='result'" in r, r
    # Both of her nicks are out, banned (301) by al2, which the second
    # removal still names.
    out = M.expect(a, M.pres_rx("lobby", "al", unavailable=True))
    assert "code='301'" in out and "<actor nick='al2'/>" in out, out
    # The server is alive (the room, empty and temporary, is gone).
    b, _ = online(srv, "bob")
    r = iq(b, "ping", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=M.MUC)
    assert "type='result'" in r, r


VOICE_REQ = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
             "<value>http://jabber.org/protocol/muc#request</value></field>"
             "<field var='muc#role'><value>participant</value></field></x>")


def test_muc_voice_request_interval_survives_rejoin(server_factory):
    """voice_request_min_interval (30 min by default) was kept on the
    occupant (muc_occ_t.voice_ms, mod_muc_msg.c room_voice_request): a
    visitor who left and entered again was a new occupant and asked again
    at once, each request a form to every moderator.  The interval must hold
    for the account (XEP-0045 8.6 leaves the rate to the service; a limit
    that one presence resets is none)."""
    srv = M.start(server_factory)
    a, _ = online(srv, "alice")
    M.create(a, "vr", "al")
    M.config(a, "vr", {"moderatedroom": "1"})
    c, cjid = online(srv, "carol")
    refused = 0
    for i in range(4):
        M.join(c, "vr", "cc")
        c.send(f"<message to='vr@{M.MUC}' id='v{i}'>{VOICE_REQ}</message>")
        c.send(f"<presence to='vr@{M.MUC}/cc' type='unavailable'/>")
        got = M.expect(c, rf"<message[^>]*id='v{i}'[^>]*type='error'.*?</message>|"
                          rf"<presence[^>]*type='unavailable'.*?</presence>")
        refused += "resource-constraint" in got
    marker = send_marker(c, "alice@localhost")
    seen, _ = a.before(marker, timeout=10)
    forms = len(re.findall(rb"<title>Voice request</title>", seen))
    assert forms <= 1, f"the moderator got {forms} voice requests in a row ({refused} refused)"


def test_muc_voice_requesters_bounded(server_factory):
    """max_voice_requesters: a room remembers that many accounts' last
    voice request; past it the oldest is forgotten (it may ask again)."""
    srv = M.start(server_factory, opts="max_voice_requesters: 1")
    a, _ = online(srv, "alice")
    M.create(a, "vr", "al")
    M.config(a, "vr", {"moderatedroom": "1"})
    c, _ = online(srv, "carol")
    d, _ = online(srv, "dave")
    for i, (x, nick) in enumerate(((c, "cc"), (d, "dd"), (c, "cc"))):
        M.join(x, "vr", nick)
        x.send(f"<message to='vr@{M.MUC}' id='v{i}'>{VOICE_REQ}</message>")
        x.send(f"<presence to='vr@{M.MUC}/{nick}' type='unavailable'/>")
        got = M.expect(x, rf"<message[^>]*id='v{i}'[^>]*type='error'.*?</message>|"
                          rf"<presence[^>]*type='unavailable'.*?</presence>")
        assert "type='error'" not in got, got
    marker = send_marker(c, "alice@localhost")
    seen, _ = a.before(marker, timeout=10)
    forms = re.findall(rb"<title>Voice request</title>", seen)
    assert len(forms) == 3, seen


def test_muc_rooms_per_account_bounded_by_default(server_factory):
    """max_rooms_per_user was 0 (no limit) by default (mod_muc.c), and any
    account may make a room persistent, so one account kept any number of
    rooms in memory for ever (hibernation_timeout 0), each with up to
    max_history_size messages of up to max_stanza_size.  Now 100 by
    default (ejabberd lets one account be in 100 rooms by default,
    max_user_conferences): the 101st is refused with resource-constraint."""
    srv = M.start(server_factory)
    b, _ = online(srv, "bob")
    made, got = 0, ""
    for i in range(101):
        b.send(f"<presence to='r{i}@{M.MUC}/bo'><x xmlns='{M.NS_MUC}'/></presence>")
        got = M.expect(b, rf"<presence[^>]*from='r{i}@{M.MUC}/bo'[^>]*>.*?</presence>")
        if "type='error'" in got:
            break
        M.expect(b, M.subject_rx(f"r{i}"))
        r = M.config(b, f"r{i}", {"persistentroom": "1"}, iq_id=f"c{i}")
        made += "type='result'" in r
    assert made == 100 and "<resource-constraint " in got, (made, got)


def test_muc_service_items_paged(server_factory):
    """The service's disco#items listed every public room in one answer,
    growing with the service (XEP-0045 6.3 recommends result set
    management).  Now at most max_disco_items per answer, in the order of
    the room JIDs, paged with XEP-0059 (max, after, before, count)."""
    srv = M.start(server_factory, opts="max_disco_items: 3")
    a, _ = online(srv, "alice")
    names = [f"r{i}" for i in range(5)]
    for n in names:
        M.create(a, n, "al")
    jids = [f"{n}@{M.MUC}" for n in names]
    RSM = "http://jabber.org/protocol/rsm"

    def items(iq_id, rsm=None):
        s = f"<set xmlns='{RSM}'>{rsm}</set>" if rsm is not None else ""
        r = iq(a, iq_id, f"<query xmlns='http://jabber.org/protocol/disco#items'>{s}</query>",
               typ="get", to=M.MUC)
        return r, re.findall(r"<item jid='([^']*)'", r)

    def tag(r, name):
        m = re.search(rf"<{name}[^>]*>([^<]*)</{name}>", r)
        return m and m.group(1)

    r, got = items("p1")  # no <set/>: the first page, and a <set/> saying there are more
    assert got == jids[:3] and tag(r, "count") == "5" and tag(r, "last") == jids[2], r
    assert "index='0'" in r, r
    r, got = items("p2", f"<max>3</max><after>{jids[2]}</after>")
    assert got == jids[3:] and tag(r, "first") == jids[3] and "index='3'" in r, r
    r, got = items("p3", "<max>2</max><before/>")  # the last page
    assert got == jids[3:], r
    r, got = items("p4", f"<max>10</max><before>{jids[3]}</before>")  # capped at 3
    assert got == jids[:3], r
    r, got = items("p5", "<max>0</max>")  # the count alone
    assert got == [] and tag(r, "count") == "5", r
    r, got = items("p6", f"<after>r1x@{M.MUC}</after>")  # an id that is gone: a key bound
    assert got == jids[2:5], r
    for i, bad in enumerate(("<max>x</max>", "<max>-1</max>", "<max></max>")):
        r, _ = items(f"b{i}", bad)
        assert "<bad-request " in r, r
    r = iq(a, "inf", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=M.MUC)
    assert f"var='{RSM}'" in r, r


def test_muc_admin_cannot_touch_owner(server_factory):
    """Covered surface (passes): an admin can neither ban, demote nor kick
    an owner, nor make anyone admin (XEP-0045 9.x, 10.x business rules)."""
    srv = M.start(server_factory)
    a, ajid = online(srv, "alice")
    M.create(a, "lobby", "al")
    b, _ = online(srv, "bob")
    assert "type='result'" in M.admin(a, "<item affiliation='admin' jid='bob@localhost'/>",
                                      "lobby", iq_id="a1")
    M.join(b, "lobby", "bo")
    for i, item in enumerate(("<item affiliation='outcast' jid='alice@localhost'/>",
                              "<item affiliation='member' jid='alice@localhost'/>",
                              "<item affiliation='admin' jid='carol@localhost'/>",
                              "<item role='none' nick='al'/>",
                              "<item role='visitor' nick='al'/>")):
        r = M.admin(b, item, "lobby", iq_id=f"b{i}")
        assert "type='error'" in r, (item, r)
    # A non-owner neither reads nor submits the configuration.
    r = iq(b, "cf", f"<query xmlns='{M.NS_OWNER}'/>", typ="get", to=f"lobby@{M.MUC}")
    assert "<forbidden " in r, r
    r = M.config(b, "lobby", {"membersonly": "1"}, iq_id="cf2")
    assert "<forbidden " in r, r
    # The last owner cannot leave the room ownerless.
    r = M.admin(a, "<item affiliation='member' jid='alice@localhost'/>", "lobby", iq_id="a2")
    assert "<conflict " in r, r


def test_muc_semianonymous_no_jid_leak(server_factory):
    """Covered surface (passes): in a semi-anonymous room a participant
    learns no real JID: not in presences, not from the member list, the
    role list or the voice-request path."""
    srv = M.start(server_factory)
    a, _ = online(srv, "alice")
    M.create(a, "lobby", "al")
    b, _ = online(srv, "bob")
    seq = M.join(b, "lobby", "bo")
    assert "alice@" not in seq, seq
    for i, item in enumerate(("<item affiliation='member'/>", "<item role='moderator'/>",
                              "<item affiliation='owner'/>", "<item affiliation='admin'/>")):
        r = admin_get(b, "lobby", item, f"m{i}")
        assert "alice@" not in r and "<forbidden " in r, (item, r)


def test_muc_odd_inputs_answered(server_factory):
    """Covered surface (passes): admin items without attributes, bad JIDs,
    unknown roles and nicks; configuration numbers out of range, empty or
    past 2^63; roomowners with bad JIDs; history attributes negative, huge
    or garbage; invitations and declines without or with a bad 'to'; a
    voice approval for nobody: each gets its error (or is ignored) and the
    room keeps answering."""
    srv = M.start(server_factory)
    a, _ = online(srv, "alice")
    M.create(a, "odd", "al")
    for i, (item, cond) in enumerate((
            ("<item/>", "bad-request"),
            ("<item affiliation='owner'/>", "bad-request"),
            ("<item jid='@@@' affiliation='member'/>", "jid-malformed"),
            ("<item jid='' affiliation='member'/>", None),
            ("<item nick='nobody' role='participant'/>", "item-not-found"),
            ("<item nick='al' role='king'/>", "bad-request"),
            ("<item nick='nobody' affiliation='member'/>", "item-not-found"),
            ("<item jid='x@localhost' affiliation='emperor'/>", "bad-request"))):
        r = M.admin(a, item, "odd", iq_id=f"ad{i}")
        assert "type='error'" in r and (cond is None or f"<{cond} " in r), (item, r)
    for i, (k, v) in enumerate((("maxusers", "-1"), ("maxusers", "99999999999999999999"),
                                ("maxusers", ""), ("maxusers", "abc"),
                                ("historylength", "-5"), ("historylength", "1e9"),
                                ("whois", "everybody"), ("allowpm", ""),
                                ("presencebroadcast", "king"), ("roomowners", "@@"),
                                ("voicerequestmininterval", "-1"))):
        r = M.config(a, "odd", {k: v}, iq_id=f"cf{i}")
        assert "type='error'" in r, (k, v, r)
    b, bjid = online(srv, "bob")
    for i, h in enumerate(("maxchars='-1'", "maxstanzas='99999999999999999999'",
                           "seconds='-99'", "since='garbage'", "since=''",
                           "maxchars='x' maxstanzas='' seconds='1e3'")):
        M.join(b, "odd", f"b{i}", f"<history {h}/>")
        b.send(f"<presence to='odd@{M.MUC}/b{i}' type='unavailable'/>")
        b.roundtrip()
    M.join(b, "odd", "bo")
    for i, x in enumerate(("<invite/>", "<invite to='@@'/>", "<decline/>", "<decline to=''/>")):
        b.send(f"<message to='odd@{M.MUC}' id='x{i}'><x xmlns='{M.NS_USER}'>{x}</x></message>")
        got = M.expect(b, rf"<message[^>]*id='x{i}'[^>]*>.*?</message>")
        assert "type='error'" in got, (x, got)
    a.send(f"<message to='odd@{M.MUC}' id='va'><x xmlns='jabber:x:data' type='submit'>"
           f"<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value>"
           f"</field><field var='muc#roomnick'><value>nobody</value></field>"
           f"<field var='muc#request_allow'><value>true</value></field></x></message>")
    a.roundtrip()
    r = iq(b, "alive", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"odd@{M.MUC}")
    assert "type='result'" in r, r

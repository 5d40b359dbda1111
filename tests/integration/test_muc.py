"""mod_muc (XEP-0045 multi-user chat) through the wire, raw XML: the
service's disco, entering (the order of the join sequence and its status
codes), instant rooms, nick conflicts and changes, leaving, groupchat and
private messages, history on entering, the subject, roles and affiliations
(kick, ban, voice, members-only, passwords, max users), the configuration
form and persistence across a restart, destruction, invitations,
occupant-id, self-ping, two sessions under one nick, and an occupant whose
session breaks.

Barriers: the service holds a sender's stream until the room (on its owner
worker) has handled the stanza, so a sender's round trip comes after what
the room sent because of its earlier stanzas; another occupant's round trip
after that is a barrier for what the room sent it (the room's copies were
queued to it first)."""
import re

import pytest

from helpers import assert_nothing_before, expect, iq, online, q, reply, take, users
from helpers import slix_client, slixmpp_mam_bodies

MUC = "conference.localhost"
NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_OWNER = NS_MUC + "#owner"
NS_ADMIN = NS_MUC + "#admin"
INSTANT = (f"<query xmlns='{NS_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query>")


def start(server_factory, opts="", shaper=False, mods="", **kw):
    extra = f"modules:\n  mod_muc: {{{opts}}}\n{mods}"
    if shaper:
        extra += "shaper:\n  tight: {rate: 50000, burst_size: 20000}\n"
        kw["listen_opts"] = "    shaper: tight\n"
    srv = server_factory(extra_yaml=extra, **kw)
    users(srv, "alice", "bob", "carol", "dave", *(f"o{i}" for i in range(9 if shaper else 0)))
    return srv


def pres_rx(room, nick, unavailable=False):
    """The presence from room/nick (optionally of type unavailable)."""
    t = r"[^>]*type=['\"]unavailable['\"]" if unavailable else ""
    frm = re.escape(f"{room}@{MUC}/{nick}")
    return (rf"<presence(?=[^>]*from=['\"]{frm}['\"]){t}[^>]*>.*?</presence>")


def subject_rx(room):
    return rf"<message[^>]*from=['\"]{re.escape(room)}@{MUC}[^>]*>\s*<subject.*?</message>"


def join(c, room, nick, body=""):
    """Enters room as nick; returns what came up to and including the
    subject (the end of the join sequence)."""
    c.send(f"<presence to='{room}@{MUC}/{nick}'><x xmlns='{NS_MUC}'>{body}</x></presence>")
    m = c.recv_until(r"(?s)^.*?<message[^>]*>\s*<subject[^>]*(/>|>.*?</subject>).*?</message>")
    return q(m.group(0))


def create(c, room, nick, form=INSTANT):
    """Creates room (instant unless form says otherwise) as nick."""
    seq = join(c, room, nick)
    assert "code='201'" in seq, seq
    r = iq(c, "cr-" + room, form, to=f"{room}@{MUC}")
    assert "type='result'" in r, r
    return seq


def config(c, room, fields, iq_id="cfg"):
    vals = "".join(f"<field var='muc#roomconfig_{k}'><value>{v}</value></field>"
                   for k, v in fields.items())
    return iq(c, iq_id, f"<query xmlns='{NS_OWNER}'><x xmlns='jabber:x:data' type='submit'>"
                        f"<field var='FORM_TYPE'><value>{NS_MUC}#roomconfig</value></field>"
                        f"{vals}</x></query>", to=f"{room}@{MUC}")


def admin(c, item, room, iq_id="adm"):
    return iq(c, iq_id, f"<query xmlns='{NS_ADMIN}'>{item}</query>", to=f"{room}@{MUC}")


def groupchat(c, room, body, mid):
    c.send(f"<message to='{room}@{MUC}' type='groupchat' id='{mid}'><body>{body}</body>"
           f"</message>")


def perr(cond):
    """A presence error with condition cond (within one presence)."""
    return rf"<presence[^>]*type='error'[^>]*>(?:(?!</presence>).)*<{cond} "


def err_rx(kind, sid, cond):
    """The error answer of kind (message, presence, iq) with id sid."""
    return rf"<{kind}(?=[^>]*id='{sid}')(?=[^>]*type='error')[^>]*>.*?<{cond} "


# ---- the service ----------------------------------------------------------------------------

def test_service_disco_and_public_rooms(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    r = iq(a, "i1", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get", to=MUC)
    assert "category='conference'" in r and f"var='{NS_MUC}'" in r, r
    assert "var='urn:xmpp:occupant-id:0'" in r, r
    # The server lists the service as an item? Not required; the service's
    # rooms are its items.
    r = iq(a, "i2", "<query xmlns='http://jabber.org/protocol/disco#items'/>", typ="get", to=MUC)
    assert "<item" not in r, r
    create(a, "lobby", "al")
    config(a, "lobby", {"roomname": "The Lobby"})
    create(a, "hidden", "al")
    config(a, "hidden", {"publicroom": "0"})
    r = iq(a, "i3", "<query xmlns='http://jabber.org/protocol/disco#items'/>", typ="get", to=MUC)
    assert f"jid='lobby@{MUC}'" in r and "name='The Lobby'" in r, r
    assert "hidden@" not in r, r
    # The room's own disco#info: identity, features, muc#roominfo.
    r = iq(a, "i4", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"lobby@{MUC}")
    assert "name='The Lobby'" in r and "var='muc_public'" in r and "var='muc_temporary'" in r, r
    assert "muc#roominfo" in r and "var='muc#roominfo_occupants'" in r, r
    r = iq(a, "i5", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"nowhere@{MUC}")
    assert "item-not-found" in r, r
    # muc#unique gives a fresh name.
    r = iq(a, "i6", f"<unique xmlns='{NS_MUC}#unique'/>", typ="get", to=MUC)
    assert re.search(r"<unique[^>]*>[a-z0-9_-]{20}</unique>", r), r


# ---- entering and leaving -------------------------------------------------------------------

def test_join_sequence_order_and_codes(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice")
    b, bjid = online(srv, "bob")
    seq = create(a, "r1", "al")
    # A new room: self presence with owner/moderator, 201 and 110 last, then the subject.
    self_p = re.search(pres_rx("r1", "al"), seq).group(0)
    assert "affiliation='owner'" in self_p and "role='moderator'" in self_p, self_p
    codes = re.findall(r"code='(\d+)'", self_p)
    assert codes[-1] == "110" and "201" in codes, codes
    assert "<occupant-id xmlns='urn:xmpp:occupant-id:0'" in self_p, self_p
    assert seq.index("from='r1@" + MUC + "/al'") < seq.index("<subject"), seq
    groupchat(a, "r1", "hello", "m1")
    expect(a, r"id='m1'")
    c, _ = online(srv, "carol")
    join(c, "r1", "cc")
    # Bob enters: al's and cc's presence first, then his own (110 last, no
    # 201), then the history, then the subject.
    seq = join(b, "r1", "bob")
    i_al = seq.index(f"from='r1@{MUC}/al'")
    i_cc = seq.index(f"from='r1@{MUC}/cc'")
    i_self = seq.index(f"from='r1@{MUC}/bob'")
    i_hist = seq.index("<body>hello</body>")
    i_subj = seq.index("<subject")
    assert max(i_al, i_cc) < i_self < i_hist < i_subj, seq
    self_p = re.search(pres_rx("r1", "bob"), seq).group(0)
    assert re.findall(r"code='(\d+)'", self_p) == ["110"], self_p
    assert "role='participant'" in self_p and "affiliation='none'" in self_p, self_p
    assert "urn:xmpp:delay" in seq[i_hist - 300:i_subj], seq
    # Semi-anonymous: bob does not see al's real JID; al (moderator) sees bob's.
    al_p = re.search(pres_rx("r1", "al"), seq).group(0)
    assert "jid=" not in al_p, al_p
    p = expect(a, pres_rx("r1", "bob"))
    assert f"jid='{bjid}'" in p, p
    # Occupant ids are stable per account and differ between accounts.
    oid_b = re.search(r"occupant-id[^>]*id='([^']+)'", p).group(1)
    assert oid_b and oid_b not in al_p
    # Leaving: unavailable to all, 110 to the leaver.
    b.send(f"<presence to='r1@{MUC}/bob' type='unavailable'><status>bye</status></presence>")
    p = expect(b, pres_rx("r1", "bob", unavailable=True))
    assert "code='110'" in p and "role='none'" in p, p
    p = expect(a, pres_rx("r1", "bob", unavailable=True))
    assert "code='110'" not in p and "<status>bye</status>" in p, p
    seq = join(b, "r1", "bob")
    assert f"id='{oid_b}'" in seq, seq


def test_locked_room_and_nick_conflict_and_change(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    seq = join(a, "r2", "al")
    assert "code='201'" in seq
    # Locked until configured: others get item-not-found.
    b.send(f"<presence to='r2@{MUC}/bob'><x xmlns='{NS_MUC}'/></presence>")
    expect(b, perr("item-not-found"))
    r = iq(a, "cf", INSTANT, to=f"r2@{MUC}")
    assert "type='result'" in r
    join(b, "r2", "bob")
    expect(a, pres_rx("r2", "bob"))
    c, _ = online(srv, "carol")
    c.send(f"<presence to='r2@{MUC}/al'><x xmlns='{NS_MUC}'/></presence>")
    e = expect(c, r"<presence[^>]*type='error'.*?</presence>")
    assert "<conflict " in e and f"from='r2@{MUC}/al'" in e, e
    # Nick change: unavailable with 303 and the new nick, then the new presence.
    b.send(f"<presence to='r2@{MUC}/robert'/>")
    p = expect(a, pres_rx("r2", "bob", unavailable=True))
    assert "code='303'" in p and "nick='robert'" in p, p
    expect(a, pres_rx("r2", "robert"))
    p = expect(b, pres_rx("r2", "bob", unavailable=True))
    assert "code='303'" in p and "code='110'" in p, p
    p = expect(b, pres_rx("r2", "robert"))
    assert "code='110'" in p
    # To a taken nick: conflict, and robert stays robert.
    b.send(f"<presence to='r2@{MUC}/al'/>")
    expect(b, perr("conflict"))
    groupchat(b, "r2", "still here", "m2")
    m = expect(a, r"<message[^>]*id='m2'.*?</message>")
    assert f"from='r2@{MUC}/robert'" in m, m


def test_messages_pm_and_errors(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    c, _ = online(srv, "carol")
    create(a, "r3", "al")
    join(b, "r3", "bob")
    groupchat(b, "r3", "hi all", "g1")
    for s in (a, b):
        m = expect(s, r"<message[^>]*id='g1'.*?</message>")
        assert f"from='r3@{MUC}/bob'" in m and "type='groupchat'" in m, m
        assert "occupant-id" in m, m
    # Private message through the room.
    b.send(f"<message to='r3@{MUC}/al' type='chat' id='p1'><body>psst</body></message>")
    m = expect(a, r"<message[^>]*id='p1'.*?</message>")
    assert f"from='r3@{MUC}/bob'" in m and f"xmlns='{NS_USER}'" in m, m
    # To nobody: item-not-found; a non-occupant: not-acceptable.
    b.send(f"<message to='r3@{MUC}/ghost' type='chat' id='p2'><body>?</body></message>")
    expect(b, err_rx("message", "p2", "item-not-found"))
    groupchat(c, "r3", "let me in", "g2")
    expect(c, err_rx("message", "g2", "not-acceptable"))
    assert_nothing_before(a, r"let me in", after=c, barrier=None)
    # A room that is not there.
    c.send(f"<message to='none@{MUC}' type='groupchat' id='g3'><body>x</body></message>")
    expect(c, err_rx("message", "g3", "item-not-found"))
    # Private messages off.
    config(a, "r3", {"allowpm": "none"})
    b.send(f"<message to='r3@{MUC}/al' type='chat' id='p3'><body>psst</body></message>")
    expect(b, err_rx("message", "p3", "forbidden"))


def test_history_on_join(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "r4", "al")
    for i in range(25):
        groupchat(a, "r4", f"msg{i}", f"h{i}")
    expect(a, r"id='h24'")
    # Default: the last 20.
    seq = join(b, "r4", "bob")
    bodies = re.findall(r"<body>(msg\d+)</body>", seq)
    assert bodies == [f"msg{i}" for i in range(5, 25)], bodies
    b.send(f"<presence to='r4@{MUC}/bob' type='unavailable'/>")
    expect(b, pres_rx("r4", "bob", unavailable=True))
    seq = join(b, "r4", "bob", "<history maxstanzas='3'/>")
    assert re.findall(r"<body>(msg\d+)</body>", seq) == ["msg22", "msg23", "msg24"], seq
    b.send(f"<presence to='r4@{MUC}/bob' type='unavailable'/>")
    expect(b, pres_rx("r4", "bob", unavailable=True))
    seq = join(b, "r4", "bob", "<history maxchars='0'/>")
    assert "<body>" not in seq, seq
    b.send(f"<presence to='r4@{MUC}/bob' type='unavailable'/>")
    expect(b, pres_rx("r4", "bob", unavailable=True))
    seq = join(b, "r4", "bob", "<history since='2000-01-01T00:00:00Z' maxstanzas='2'/>")
    assert re.findall(r"<body>(msg\d+)</body>", seq) == ["msg23", "msg24"], seq
    b.send(f"<presence to='r4@{MUC}/bob' type='unavailable'/>")
    expect(b, pres_rx("r4", "bob", unavailable=True))
    seq = join(b, "r4", "bob", "<history since='2999-01-01T00:00:00Z'/>")
    assert "<body>" not in seq, seq


def test_subject(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "r5", "al")
    join(b, "r5", "bob")
    a.send(f"<message to='r5@{MUC}' type='groupchat' id='s1'><subject>Today: tea</subject>"
           f"</message>")
    m = expect(b, r"<message[^>]*id='s1'.*?</message>")
    assert "<subject>Today: tea</subject>" in m and f"from='r5@{MUC}/al'" in m, m
    c, _ = online(srv, "carol")
    seq = join(c, "r5", "cc")
    assert "<subject>Today: tea</subject>" in seq, seq
    # Only moderators once changesubject is off.
    config(a, "r5", {"changesubject": "0"})
    b.send(f"<message to='r5@{MUC}' type='groupchat' id='s2'><subject>mine</subject>"
           f"</message>")
    expect(b, err_rx("message", "s2", "forbidden"))


# ---- roles and affiliations ---------------------------------------------------------------

def test_kick_ban_voice(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, bjid = online(srv, "bob")
    c, _ = online(srv, "carol")
    create(a, "r6", "al")
    join(b, "r6", "bob")
    join(c, "r6", "cc")
    # bob (participant) may not kick.
    r = admin(b, "<item nick='cc' role='none'/>", "r6", "k0")
    assert "<forbidden " in r, r
    # Kick: 307, with actor and reason.
    r = admin(a, "<item nick='cc' role='none'><reason>spam</reason></item>", "r6", "k1")
    assert "type='result'" in r, r
    p = expect(c, pres_rx("r6", "cc", unavailable=True))
    assert "code='307'" in p and "code='110'" in p and "<reason>spam</reason>" in p, p
    p = expect(b, pres_rx("r6", "cc", unavailable=True))
    assert "code='307'" in p, p
    # Voice: moderated room, visitor may not speak; voice makes it a participant.
    config(a, "r6", {"moderatedroom": "1"})
    join(c, "r6", "cc")
    p = expect(a, pres_rx("r6", "cc"))
    assert "role='visitor'" in p, p
    groupchat(c, "r6", "can I?", "v1")
    expect(c, err_rx("message", "v1", "forbidden"))
    r = admin(a, "<item nick='cc' role='participant'/>", "r6", "v2")
    assert "type='result'" in r, r
    p = expect(c, pres_rx("r6", "cc"))
    assert "role='participant'" in p, p
    groupchat(c, "r6", "now I can", "v3")
    expect(b, r"<message[^>]*id='v3'")
    # Ban: 301, and no way back in.
    r = admin(a, "<item jid='carol@localhost' affiliation='outcast'/>", "r6", "b1")
    assert "type='result'" in r, r
    p = expect(c, pres_rx("r6", "cc", unavailable=True))
    assert "code='301'" in p, p
    c.send(f"<presence to='r6@{MUC}/cc'><x xmlns='{NS_MUC}'/></presence>")
    expect(c, perr("forbidden"))
    r = iq(a, "l1", f"<query xmlns='{NS_ADMIN}'><item affiliation='outcast'/></query>",
           typ="get", to=f"r6@{MUC}")
    assert "jid='carol@localhost'" in r, r
    # An owner cannot be kicked by an admin; the last owner cannot go.
    r = admin(a, "<item jid='alice@localhost' affiliation='member'/>", "r6", "o1")
    assert "<conflict " in r, r


def test_voice_request(server_factory):
    """A visitor's voice request form reaches the moderators; a moderator's
    approval makes the visitor a participant (XEP-0045 8.6)."""
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    c, cjid = online(srv, "carol")
    create(a, "vr", "al")
    config(a, "vr", {"moderatedroom": "1"})
    join(c, "vr", "cc")
    expect(a, pres_rx("vr", "cc"))
    req = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
           "<value>http://jabber.org/protocol/muc#request</value></field>"
           "<field var='muc#role'><value>participant</value></field></x>")
    c.send(f"<message to='vr@{MUC}' id='vr1'>{req}</message>")
    m = expect(a, rf"<message[^>]*from='vr@{MUC}'[^>]*>.*?</message>")
    assert "muc#request" in m and f"<value>{cjid}</value>" in m, m
    assert re.search(r"var='muc#roomnick'[^>]*>\s*<value>cc</value>", m), m
    # A visitor may not answer one; once a participant, asking is not-acceptable.
    c.send(f"<message to='vr@{MUC}' id='vr2'><x xmlns='jabber:x:data' type='submit'>"
           f"<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value>"
           f"</field><field var='muc#roomnick'><value>cc</value></field>"
           f"<field var='muc#request_allow'><value>true</value></field></x></message>")
    expect(c, err_rx("message", "vr2", "forbidden"))
    a.send(f"<message to='vr@{MUC}' id='vr3'><x xmlns='jabber:x:data' type='submit'>"
           f"<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value>"
           f"</field><field var='muc#roomnick'><value>cc</value></field>"
           f"<field var='muc#request_allow'><value>true</value></field></x></message>")
    p = expect(c, pres_rx("vr", "cc"))
    assert "role='participant'" in p, p
    c.send(f"<message to='vr@{MUC}' id='vr4'>{req}</message>")
    expect(c, err_rx("message", "vr4", "not-acceptable"))


def test_members_only_password_max_users(server_factory):
    srv = start(server_factory, "max_users: 3")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    c, _ = online(srv, "carol")
    d, _ = online(srv, "dave")
    create(a, "r7", "al")
    join(c, "r7", "cc")
    config(a, "r7", {"membersonly": "1"})
    # Carol is no member: out, with 322.
    p = expect(c, pres_rx("r7", "cc", unavailable=True))
    assert "code='322'" in p and "code='110'" in p, p
    b.send(f"<presence to='r7@{MUC}/bob'><x xmlns='{NS_MUC}'/></presence>")
    expect(b, perr("registration-required"))
    r = admin(a, "<item jid='bob@localhost' affiliation='member'/>", "r7", "m1")
    assert "type='result'" in r, r
    join(b, "r7", "bob")
    # Password.
    create(a, "r8", "al")
    r = config(a, "r8", {"passwordprotectedroom": "1"})
    assert "<not-acceptable " in r, r  # a password room needs its secret
    config(a, "r8", {"passwordprotectedroom": "1", "roomsecret": "s3cret"})
    c.send(f"<presence to='r8@{MUC}/cc'><x xmlns='{NS_MUC}'/></presence>")
    expect(c, perr("not-authorized"))
    c.send(f"<presence to='r8@{MUC}/cc'><x xmlns='{NS_MUC}'><password>no</password></x>"
           f"</presence>")
    expect(c, perr("not-authorized"))
    join(c, "r8", "cc", "<password>s3cret</password>")
    # Max users (service limit 3): al, cc, bob in; dave is one too many.
    join(b, "r8", "bob", "<password>s3cret</password>")
    d.send(f"<presence to='r8@{MUC}/dd'><x xmlns='{NS_MUC}'><password>s3cret</password></x>"
           f"</presence>")
    expect(d, perr("service-unavailable"))
    # Beyond the service's limit the form is refused.
    r = config(a, "r8", {"maxusers": "4"})
    assert "<not-acceptable " in r, r


def test_config_form_round_trip_and_persistence(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "keep", "al")
    r = iq(a, "g1", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"keep@{MUC}")
    assert "type='form'" in r and "muc#roomconfig_persistentroom" in r, r
    for f in ("roomname", "roomdesc", "publicroom", "membersonly", "moderatedroom",
              "passwordprotectedroom", "roomsecret", "whois", "maxusers", "allowpm",
              "changesubject", "historylength", "allowinvites"):
        assert f"var='muc#roomconfig_{f}'" in r, f
    # no mod_muc_log on this host: no logging switch offered
    assert "muc#roomconfig_enablelogging" not in r, r
    # Non-owners may not read it.
    join(b, "keep", "bob")
    r = iq(b, "g2", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"keep@{MUC}")
    assert "<forbidden " in r, r
    r = config(a, "keep", {"roomname": "Kept", "roomdesc": "stays", "persistentroom": "1",
                           "whois": "anyone", "historylength": "5"})
    assert "type='result'" in r, r
    m = expect(b, rf"<message[^>]*from='keep@{MUC}'[^>]*>.*?</message>")
    assert "code='104'" in m and "code='172'" in m, m
    r = iq(a, "g3", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"keep@{MUC}")
    assert re.search(r"var='muc#roomconfig_roomname'[^>]*>\s*<value>Kept</value>", r), r
    assert re.search(r"var='muc#roomconfig_whois'[^>]*>\s*<value>anyone</value>", r), r
    admin(a, "<item jid='dave@localhost' affiliation='member'/>", "keep", "m1")
    a.send(f"<message to='keep@{MUC}' type='groupchat' id='s1'><subject>kept topic</subject>"
           f"</message>")
    expect(a, r"id='s1'")
    a.roundtrip()
    srv.stop()
    srv.restart()
    a, _ = online(srv, "alice")
    r = iq(a, "i1", "<query xmlns='http://jabber.org/protocol/disco#items'/>", typ="get", to=MUC)
    assert f"jid='keep@{MUC}'" in r and "name='Kept'" in r, r
    seq = join(a, "keep", "al")
    assert "code='201'" not in seq and "code='100'" in seq, seq
    assert "affiliation='owner'" in seq and "<subject>kept topic</subject>" in seq, seq
    r = iq(a, "l1", f"<query xmlns='{NS_ADMIN}'><item affiliation='member'/></query>",
           typ="get", to=f"keep@{MUC}")
    assert "jid='dave@localhost'" in r, r
    r = iq(a, "g4", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"keep@{MUC}")
    assert re.search(r"var='muc#roomconfig_roomdesc'[^>]*>\s*<value>stays</value>", r), r
    # Not persistent any more: gone after the next restart.
    config(a, "keep", {"persistentroom": "0"})
    a.roundtrip()
    srv.stop()
    srv.restart()
    a, _ = online(srv, "alice")
    r = iq(a, "i2", "<query xmlns='http://jabber.org/protocol/disco#items'/>", typ="get", to=MUC)
    assert "keep@" not in r, r


def test_destroy(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "doomed", "al")
    config(a, "doomed", {"persistentroom": "1"})
    join(b, "doomed", "bob")
    r = iq(b, "d0", f"<query xmlns='{NS_OWNER}'><destroy/></query>", to=f"doomed@{MUC}")
    assert "<forbidden " in r, r
    r = iq(a, "d1", f"<query xmlns='{NS_OWNER}'><destroy jid='new@{MUC}'>"
                    f"<reason>moved</reason></destroy></query>", to=f"doomed@{MUC}")
    assert "type='result'" in r, r
    p = expect(b, pres_rx("doomed", "bob", unavailable=True))
    assert f"<destroy jid='new@{MUC}'><reason>moved</reason></destroy>" in p, p
    r = iq(a, "i1", "<query xmlns='http://jabber.org/protocol/disco#items'/>", typ="get", to=MUC)
    assert "doomed@" not in r, r
    srv.stop()
    srv.restart()
    a, _ = online(srv, "alice")
    r = iq(a, "i2", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"doomed@{MUC}")
    assert "item-not-found" in r, r


# ---- invitations, self-ping, sessions --------------------------------------------------------

def test_mediated_invitation_and_decline(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice")
    c, _ = online(srv, "carol")
    create(a, "party", "al")
    a.send(f"<message to='party@{MUC}' id='inv1'><x xmlns='{NS_USER}'>"
           f"<invite to='carol@localhost'><reason>come</reason></invite></x></message>")
    m = expect(c, rf"<message[^>]*from='party@{MUC}'.*?</message>")
    assert f"<invite from='{ajid}'><reason>come</reason></invite>" in m, m
    assert "jabber:x:conference" in m, m
    c.send(f"<message to='party@{MUC}' id='dec1'><x xmlns='{NS_USER}'>"
           f"<decline to='{ajid}'><reason>busy</reason></decline></x></message>")
    m = expect(a, rf"<message[^>]*from='party@{MUC}'.*?<decline.*?</message>")
    assert "from='carol@localhost/" in m and "<reason>busy</reason>" in m, m


def test_self_ping(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "pp", "al")
    r = iq(a, "sp1", "<ping xmlns='urn:xmpp:ping'/>", typ="get", to=f"pp@{MUC}/al")
    assert "type='result'" in r, r
    r = iq(b, "sp2", "<ping xmlns='urn:xmpp:ping'/>", typ="get", to=f"pp@{MUC}/al")
    assert "<not-acceptable " in r, r


def test_iq_through_occupant_jid(server_factory):
    """An IQ to an occupant JID reaches the occupant's real JID from the
    sender's occupant JID, and the answer comes back the same way: neither
    learns the other's real JID.  A vCard request goes to the account."""
    srv = start(server_factory, mods="  mod_vcard: {}\n")
    a, ajid = online(srv, "alice")
    b, bjid = online(srv, "bob")
    r = iq(b, "vs", "<vCard xmlns='vcard-temp'><FN>Bob B</FN></vCard>")
    assert "type='result'" in r, r
    create(a, "fw", "al")
    join(b, "fw", "bob")
    a.send(f"<iq type='get' id='v1' to='fw@{MUC}/bob'><query xmlns='jabber:iq:version'/></iq>")
    got = expect(b, r"<iq[^>]*id='v1'.*?</iq>")
    assert f"from='fw@{MUC}/al'" in got and ajid not in got, got
    b.send(f"<iq type='result' id='v1' to='fw@{MUC}/al'><query xmlns='jabber:iq:version'>"
           f"<name>bobclient</name></query></iq>")
    r = reply(a, "v1")
    assert f"from='fw@{MUC}/bob'" in r and "bobclient" in r and bjid not in r, r
    # vcard-temp: the server answers for bob's account.
    r = iq(a, "v2", "<vCard xmlns='vcard-temp'/>", typ="get", to=f"fw@{MUC}/bob")
    assert f"from='fw@{MUC}/bob'" in r and "<FN>Bob B</FN>" in r and "bob@" not in r, r
    # An answer from someone who is not in the room is dropped.
    c, _ = online(srv, "carol")
    c.send(f"<iq type='result' id='x1' to='fw@{MUC}/al'/>")
    assert_nothing_before(a, r"id='x1'", after=c)


def test_two_sessions_one_nick(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b1, _ = online(srv, "bob", "one")
    b2, _ = online(srv, "bob", "two")
    create(a, "duo", "al")
    join(b1, "duo", "bob")
    expect(a, pres_rx("duo", "bob"))
    seq = join(b2, "duo", "bob")
    assert "code='110'" in seq, seq
    groupchat(a, "duo", "to both", "t1")
    expect(b1, r"id='t1'")
    expect(b2, r"id='t1'")
    # One session leaves: only it hears; al sees bob still there.
    b2.send(f"<presence to='duo@{MUC}/bob' type='unavailable'/>")
    expect(b2, pres_rx("duo", "bob", unavailable=True))
    b2.roundtrip()
    assert_nothing_before(a, r"type='unavailable'", after=(b2,))
    groupchat(a, "duo", "still", "t2")
    expect(b1, r"id='t2'")
    # Another account cannot take the nick.
    c, _ = online(srv, "carol")
    c.send(f"<presence to='duo@{MUC}/bob'><x xmlns='{NS_MUC}'/></presence>")
    expect(c, perr("conflict"))


def test_broken_session_leaves(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "brk", "al")
    join(b, "brk", "bob")
    expect(a, pres_rx("brk", "bob"))
    b.sock.close()  # no </stream>: the connection breaks
    p = expect(a, pres_rx("brk", "bob", unavailable=True), timeout=10)
    assert "role='none'" in p, p


def test_access_create_and_limits(server_factory):
    srv = start(server_factory, "access_create: none, max_nick: 8, max_room_name: 10")
    a, _ = online(srv, "alice")
    a.send(f"<presence to='newroom@{MUC}/al'><x xmlns='{NS_MUC}'/></presence>")
    expect(a, perr("not-allowed"))
    a.send(f"<presence to='r@{MUC}/nickname_too_long'><x xmlns='{NS_MUC}'/></presence>")
    expect(a, perr("not-acceptable"))
    a.send(f"<presence to='roomnametoolong@{MUC}/al'><x xmlns='{NS_MUC}'/></presence>")
    expect(a, perr("not-acceptable"))


def test_history_and_affiliation_limits(server_factory):
    srv = start(server_factory, "max_history_size: 3, max_affiliations: 2")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "lim", "al")
    # history_size (20) is above max_history_size: a new room keeps 3.
    for i in range(5):
        groupchat(a, "lim", f"msg{i}", f"l{i}")
    # A message with a subject and a body is a message, kept in the history.
    a.send(f"<message to='lim@{MUC}' type='groupchat' id='sb'><subject>s</subject>"
           f"<body>both</body></message>")
    expect(a, r"id='sb'")
    r = config(a, "lim", {"historylength": "4"})
    assert "<not-acceptable " in r, r
    seq = join(b, "lim", "bob")
    assert re.findall(r"<body>(\w+)</body>", seq) == ["msg3", "msg4", "both"], seq
    # Affiliations: alice (owner) and one more; by nick works too.
    r = admin(a, "<item nick='bob' affiliation='member'/>", "lim", "a1")
    assert "type='result'" in r, r
    p = expect(b, pres_rx("lim", "bob"))
    assert "affiliation='member'" in p, p
    r = admin(a, "<item jid='carol@localhost' affiliation='member'/>", "lim", "a2")
    assert "<resource-constraint " in r, r
    # Changing an existing one is fine at the limit.
    r = admin(a, "<item jid='bob@localhost' affiliation='admin'/>", "lim", "a3")
    assert "type='result'" in r, r


def test_reload_keeps_rooms(server_factory):
    """A configuration reload that changes mod_muc's options keeps the
    rooms and their occupants, and the new limits apply; a new host is
    refused (the old one keeps serving)."""
    srv = start(server_factory, "max_users: 5")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "stay", "al")
    join(b, "stay", "bob")
    text = open(srv.config_path).read()
    open(srv.config_path, "w").write(text.replace("max_users: 5", "max_users: 2"))
    assert srv.ctl_run("reload_config").returncode == 0
    groupchat(a, "stay", "still here", "k1")
    expect(b, r"id='k1'")
    r = config(a, "stay", {"maxusers": "3"})
    assert "<not-acceptable " in r, r
    open(srv.config_path, "w").write(text.replace("max_users: 5",
                                                  "max_users: 5, host: 'muc.@HOST@'"))
    r = srv.ctl_run("reload_config")
    assert r.returncode != 0 and "host cannot change" in r.stdout + r.stderr, r
    groupchat(a, "stay", "and now", "k2")
    expect(b, r"id='k2'")


def test_service_admin_acts_as_owner(server_factory):
    """access_admin: dave owns every room in effect: he enters alice's
    members-only password room without being a member or giving the
    password, reads its configuration and destroys it; carol cannot."""
    srv = start(server_factory, "access_admin: muc_admins, max_rooms_per_user: 1",
                mods="acl:\n  dave_acl:\n    user: [dave]\n"
                     "access_rules:\n  muc_admins:\n    - allow: dave_acl\n")
    a, _ = online(srv, "alice")
    c, _ = online(srv, "carol")
    d, _ = online(srv, "dave")
    create(a, "sa", "al")
    config(a, "sa", {"membersonly": "1", "passwordprotectedroom": "1", "roomsecret": "pw"})
    c.send(f"<presence to='sa@{MUC}/cc'><x xmlns='{NS_MUC}'/></presence>")
    expect(c, perr("registration-required"))
    r = iq(c, "g1", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"sa@{MUC}")
    assert "<forbidden " in r, r
    seq = join(d, "sa", "dd")
    assert "role='moderator'" in seq, seq
    r = iq(d, "g2", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"sa@{MUC}")
    assert "type='result'" in r and "muc#roomconfig" in r, r
    # max_rooms_per_user does not bind him.
    create(d, "sa2", "dd")
    create(d, "sa3", "dd")
    r = iq(d, "d1", f"<query xmlns='{NS_OWNER}'><destroy/></query>", to=f"sa@{MUC}")
    assert "type='result'" in r, r
    expect(a, pres_rx("sa", "al", unavailable=True))


def test_max_rooms_per_user(server_factory):
    srv = start(server_factory, "max_rooms_per_user: 1")
    a, _ = online(srv, "alice")
    create(a, "one", "al")
    a.send(f"<presence to='two@{MUC}/al'><x xmlns='{NS_MUC}'/></presence>")
    expect(a, perr("resource-constraint"))


# ---- a client library's view ----------------------------------------------------------------

def test_slixmpp_creates_configures_and_chats(server_factory):
    """slixmpp's XEP-0045 plugin: join_muc_wait creates the room (its own
    presence with 201 and 110, then the subject), the owner reads and
    submits the configuration form, sets the subject and chats; its echo
    comes back; a raw client entering later sees all of it."""
    import asyncio

    from xmpptest import run_slixmpp
    srv = start(server_factory)
    room = f"slix@{MUC}"
    seen = {}

    def make():
        c = slix_client(srv, "alice@localhost/sx", "xep_0045", "xep_0004")
        muc = c.plugin["xep_0045"]
        echo = asyncio.get_event_loop().create_future()

        def on_groupchat(msg):
            if msg["body"] == "from slixmpp" and not echo.done():
                echo.set_result(msg)

        c.add_event_handler("groupchat_message", on_groupchat)

        async def go(_):
            try:
                pres, subject, occupants, history = await muc.join_muc_wait(
                    room, "ally", timeout=10)
                seen["codes"] = sorted(pres["muc"]["status_codes"])
                seen["role"] = pres["muc"]["role"]
                form = await muc.get_room_config(room)
                seen["fields"] = set(form.get_fields().keys())
                form.set_values({"muc#roomconfig_roomname": "Slix room",
                                 "muc#roomconfig_persistentroom": True})
                await muc.set_room_config(room, form)
                muc.set_subject(room, "via slixmpp")
                c.send_message(mto=room, mbody="from slixmpp", mtype="groupchat")
                m = await asyncio.wait_for(echo, 10)
                seen["echo_from"] = str(m["from"])
            finally:
                c.disconnect()

        c.add_event_handler("session_start", lambda e: asyncio.ensure_future(go(e)))
        return c

    run_slixmpp(make, ("127.0.0.1", srv.c2s_port), timeout=30)
    assert seen.get("codes") == [110, 201], seen
    assert seen["role"] == "moderator", seen
    assert "muc#roomconfig_persistentroom" in seen["fields"], seen
    assert seen["echo_from"] == f"{room}/ally", seen
    b, _ = online(srv, "bob")
    seq = join(b, "slix", "bob")
    assert "<body>from slixmpp</body>" in seq and "<subject>via slixmpp</subject>" in seq, seq
    r = iq(b, "i1", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=room)
    assert "name='Slix room'" in r and "var='muc_persistent'" in r, r


@pytest.mark.slow
def test_fanout_is_charged_to_the_sender(server_factory):
    """A listener shaper of 20 KB burst at 50 KB/s: alice's 20 groupchat
    messages are ~12 KB on her stream, within the burst, but the room sends
    each to 10 occupants (~120 KB): her stream waits for its shaper, so her
    round trip after them takes at least (copies - burst) / rate, and the
    pauses are logged with what was charged."""
    import time

    srv = start(server_factory, shaper=True)
    a, ajid = online(srv, "alice")
    create(a, "big", "al")
    others = []
    for i in range(9):
        c, _ = online(srv, f"o{i}")
        join(c, "big", f"o{i}")
        others.append(c)
    a.roundtrip()
    body = "x" * 500
    min_copy = 500 + 60
    t0 = time.time()
    a.send("".join(f"<message to='big@{MUC}' type='groupchat' id='f{i}'><body>{body}</body>"
                   f"</message>" for i in range(20)))
    a.roundtrip()
    elapsed = time.time() - t0
    least = (20 * 10 * min_copy - 20000) / 50000
    assert elapsed >= least * 0.9, (elapsed, least)
    pauses = [ln for ln in srv.log_text().splitlines()
              if 'event="input shaped"' in ln and f"jid={ajid}" in ln]
    assert pauses, srv.log_text()[-3000:]
    charged = int(re.search(r"charged=(\d+)", pauses[-1]).group(1))
    assert charged >= 10 * min_copy, pauses
    for c in others:
        expect(c, r"id='f19'")


def test_bad_input_gets_errors_not_crashes(server_factory):
    """Odd stanzas to the service and a room get a clear error (or nothing,
    for errors and results) and leave the room working."""
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "odd", "al")
    join(b, "odd", "bob", "<history maxstanzas='-5' maxchars='x' seconds='' "
                          "since='yesterday'/>")
    room = f"odd@{MUC}"
    r = admin(a, "<item/>", "odd", "b1")
    assert "<bad-request " in r, r
    r = admin(a, "<item nick='bob' role='emperor'/>", "odd", "b2")
    assert "<bad-request " in r, r
    r = admin(a, "<item jid='@@@' affiliation='member'/>", "odd", "b3")
    assert "<jid-malformed " in r, r
    r = iq(a, "b4", f"<query xmlns='{NS_ADMIN}'><item affiliation='emperor'/></query>",
           typ="get", to=room)
    assert "<bad-request " in r, r
    r = config(a, "odd", {"maxusers": "many"}, "b5")
    assert "<not-acceptable " in r, r
    r = config(a, "odd", {"whois": "everybody"}, "b6")
    assert "<not-acceptable " in r, r
    r = iq(a, "b7", f"<query xmlns='{NS_OWNER}'><x xmlns='jabber:x:data' type='form'/></query>",
           to=room)
    assert "<bad-request " in r, r
    r = iq(a, "b8", f"<query xmlns='{NS_OWNER}'/>", to=room)
    assert "<bad-request " in r, r
    r = iq(a, "b9", "<query xmlns='jabber:iq:version'/>", typ="get", to=room)
    assert "<service-unavailable " in r, r
    r = iq(a, "b10", "<query xmlns='jabber:iq:version'/>", typ="get", to=MUC)
    assert "<service-unavailable " in r, r
    a.send(f"<message to='{room}' id='b11'><x xmlns='{NS_USER}'><invite/></x></message>")
    expect(a, err_rx("message", "b11", "jid-malformed"))
    a.send(f"<message to='{room}' type='chat' id='b12'><body>x</body></message>")
    expect(a, err_rx("message", "b12", "bad-request"))
    a.send(f"<message to='{room}/bob' type='groupchat' id='b13'><body>x</body></message>")
    expect(a, err_rx("message", "b13", "bad-request"))
    a.send(f"<presence to='{room}'/>")
    expect(a, perr("jid-malformed"))
    # Errors and results are not answered.
    c, _ = online(srv, "carol")
    c.send(f"<message to='{room}' type='error' id='b14'><body>x</body></message>")
    c.send(f"<presence to='{room}/al' type='error'/>")
    c.send(f"<iq to='{room}' type='result' id='b15'/>")
    c.send(f"<message to='{MUC}' type='error' id='b16'/>")
    assert_nothing_before(c, r"id='b1[456]'")
    groupchat(b, "odd", "still fine", "ok1")
    expect(a, r"id='ok1'")


def test_bounce_from_occupant_removes_it(server_factory):
    """An error back from an occupant's session (its server lost it) takes
    that occupant out with status 333, so that no ghost stays."""
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "gh", "al")
    join(b, "gh", "bob")
    expect(a, pres_rx("gh", "bob"))
    b.send(f"<message to='gh@{MUC}' type='error' id='e1'><body>x</body>"
           f"<error type='cancel'><service-unavailable "
           f"xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    p = expect(a, pres_rx("gh", "bob", unavailable=True))
    assert "code='333'" in p and "role='none'" in p, p
    join(b, "gh", "bob")
    b.send(f"<presence to='gh@{MUC}/bob' type='error'/>")
    p = expect(a, pres_rx("gh", "bob", unavailable=True))
    assert "code='333'" in p, p


# ---- the room's archive (XEP-0313 on the room JID) ------------------------------------------

MAM_MODS = "  mod_stanza_id: {}\n  mod_mam: {}\n"
NS_MAM = "urn:xmpp:mam:2"


def room_sid(m, room):
    """The archive id the room stamped on message m."""
    s = re.search(rf"<stanza-id xmlns='urn:xmpp:sid:0' id='([^']+)' by='{room}@{MUC}'/>", m)
    return s and s.group(1)


def test_room_archive_queries(server_factory):
    """A room whose configuration says muc#roomconfig_mam keeps its groupchat
    messages in mod_mam's archive under the stanza-id it stamps on every
    copy, and answers XEP-0313 queries on its JID (with, RSM, flip-page,
    ids, full text) to the querying occupant; a room without it does not."""
    from test_mam import bodies, fin_set, mam
    srv = start(server_factory, mods=MAM_MODS)
    a, _ = online(srv, "alice")
    b, bjid = online(srv, "bob")
    c, _ = online(srv, "carol")
    create(a, "arch", "al")
    r = iq(a, "g1", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"arch@{MUC}")
    assert re.search(r"var='muc#roomconfig_mam'[^>]*>\s*<value>0</value>", r), r
    r = iq(a, "d0", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"arch@{MUC}")
    assert f"var='{NS_MAM}'" not in r, r
    assert "type='result'" in config(a, "arch", {"mam": "1", "publicroom": "0"})
    r = iq(a, "d1", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"arch@{MUC}")
    assert f"var='{NS_MAM}'" in r and "var='urn:xmpp:message-moderate:1'" in r, r
    join(b, "arch", "bob")
    sids = []
    for i in range(6):
        groupchat(a if i % 2 == 0 else b, "arch", f"word{i} {'apple' if i in (1, 4) else 'pear'}",
                  f"g{i}")
        m = expect(b, rf"<message[^>]*id='g{i}'.*?</message>")
        sids.append(room_sid(m, "arch"))
        assert sids[-1], m
    a.roundtrip()
    b.roundtrip()
    # Everything, to bob's full JID from the room, ids as stamped.
    res, fin = mam(b, to=f"arch@{MUC}")
    assert bodies(res) == [f"word{i} {'apple' if i in (1, 4) else 'pear'}" for i in range(6)], res
    assert [rid for rid, _, _ in res] == sids
    assert f"to='{bjid}'" in res[0][2] and f"from='arch@{MUC}'" in res[0][2], res[0][2]
    assert f"from='arch@{MUC}/al'" in res[0][2] and "<occupant-id" in res[0][2], res[0][2]
    assert fin_set(fin)[2] == 6 and "complete='true'" in fin, fin
    # RSM pages of 2, backwards from the end, flipped.
    res, fin = mam(b, rsm="<max>2</max>", to=f"arch@{MUC}")
    assert len(res) == 2 and "complete='false'" in fin, fin
    res, fin = mam(b, rsm=f"<max>2</max><after>{fin_set(fin)[1]}</after>", to=f"arch@{MUC}")
    assert [rid for rid, _, _ in res] == sids[2:4], res
    res, fin = mam(b, rsm="<max>2</max><before/>", flip=True, to=f"arch@{MUC}")
    assert [rid for rid, _, _ in res] == [sids[5], sids[4]], res
    # with = an occupant JID (room/nick), ids, full text, start.
    res, _ = mam(b, to=f"arch@{MUC}", **{"with": f"arch@{MUC}/bob"})
    assert [rid for rid, _, _ in res] == sids[1::2], res
    res, _ = mam(b, to=f"arch@{MUC}", ids=[sids[3], sids[0]])
    assert [rid for rid, _, _ in res] == [sids[0], sids[3]], res
    res, _ = mam(b, to=f"arch@{MUC}", **{"{urn:xmpp:fulltext:0}fulltext": "apple"})
    assert bodies(res) == ["word1 apple", "word4 apple"], res
    res, fin = mam(b, to=f"arch@{MUC}", after_id="nope")
    assert "item-not-found" in fin, fin
    # The form and the metadata.
    r = iq(b, "f1", f"<query xmlns='{NS_MAM}'/>", typ="get", to=f"arch@{MUC}")
    assert "var='with'" in r and "var='ids'" in r, r
    r = iq(b, "md", f"<metadata xmlns='{NS_MAM}'/>", typ="get", to=f"arch@{MUC}")
    assert f"<start id='{sids[0]}'" in r and f"<end id='{sids[5]}'" in r, r
    # carol is no occupant nor member of this hidden room: forbidden; as a
    # member she reads it.
    res, fin = mam(c, to=f"arch@{MUC}")
    assert res == [] and "<forbidden " in fin, fin
    admin(a, "<item jid='carol@localhost' affiliation='member'/>", "arch", "mem")
    res, fin = mam(c, to=f"arch@{MUC}")
    assert len(res) == 6, fin
    # A room without an archive: no stanza-id, no archive.
    create(a, "plain", "al")
    join(b, "plain", "bob")
    groupchat(a, "plain", "unkept", "p1")
    m = expect(b, r"<message[^>]*id='p1'.*?</message>")
    assert "stanza-id" not in m.replace("by='bob@localhost'", ""), m
    res, fin = mam(b, to=f"plain@{MUC}")
    assert "service-unavailable" in fin, fin
    r = moderate(a, "plain", "any", "pm1")
    assert "service-unavailable" in r, r
    # A forged claim of the room's is taken off.
    b.send(f"<message to='arch@{MUC}' type='groupchat' id='fk'><body>forged</body>"
           f"<stanza-id xmlns='urn:xmpp:sid:0' id='fake' by='arch@{MUC}'/></message>")
    m = expect(a, r"<message[^>]*id='fk'.*?</message>")
    assert "id='fake'" not in m and room_sid(m, "arch"), m
    # A destroyed room's archive goes with it.
    r = iq(a, "ds", f"<query xmlns='{NS_OWNER}'><destroy/></query>", to=f"arch@{MUC}")
    assert "type='result'" in r, r
    create(a, "arch", "al")
    config(a, "arch", {"mam": "1"})
    res, fin = mam(a, to=f"arch@{MUC}")
    assert res == [] and "type='result'" in fin, fin


def test_room_archive_default_and_slixmpp(server_factory):
    """default_mam: new rooms keep an archive; slixmpp's XEP-0313 plugin
    pages through a public room's archive (10 a page) from outside it."""
    srv = start(server_factory, opts="default_mam: true", mods=MAM_MODS)
    a, _ = online(srv, "alice")
    create(a, "pub", "al")
    for i in range(25):
        groupchat(a, "pub", f"s{i}", f"s{i}")
    a.roundtrip()
    got = slixmpp_mam_bodies(srv, "bob@localhost/sx", archive=f"pub@{MUC}")
    assert got == [f"s{i}" for i in range(25)], got


# ---- moderation (XEP-0425) ------------------------------------------------------------------

def moderate(c, room, sid, iq_id, reason="spam", v=1):
    if v == 1:
        body = (f"<moderate xmlns='urn:xmpp:message-moderate:1' id='{sid}'>"
                f"<retract xmlns='urn:xmpp:message-retract:1'/><reason>{reason}</reason>"
                f"</moderate>")
    else:
        body = (f"<apply-to xmlns='urn:xmpp:fasten:0' id='{sid}'>"
                f"<moderate xmlns='urn:xmpp:message-moderate:0'>"
                f"<retract xmlns='urn:xmpp:message-retract:0'/><reason>{reason}</reason>"
                f"</moderate></apply-to>")
    return iq(c, iq_id, body, to=f"{room}@{MUC}")


def test_moderation_retracts_into_a_tombstone(server_factory):
    """A moderator retracts bob's message (XEP-0425 :1 and :0): every
    occupant gets the retraction, the archive keeps a tombstone without the
    body, an entering occupant's history no longer has it; bob (no
    moderator) is forbidden, an unknown id is item-not-found."""
    from test_mam import mam
    srv = start(server_factory, opts="default_mam: true", mods=MAM_MODS)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "mod", "al")
    join(b, "mod", "bob")
    sids = []
    for i, body in enumerate(["nasty words", "fine words", "more nastiness"]):
        groupchat(b, "mod", body, f"m{i}")
        sids.append(room_sid(expect(a, rf"<message[^>]*id='m{i}'.*?</message>"), "mod"))
    b.roundtrip()
    # Not a moderator.
    r = moderate(b, "mod", sids[1], "x1")
    assert "type='error'" in r and "<forbidden " in r, r
    r = iq(a, "x0", "<moderate xmlns='urn:xmpp:message-moderate:1'><retract "
                    "xmlns='urn:xmpp:message-retract:1'/></moderate>", to=f"mod@{MUC}")
    assert "type='error'" in r and "<bad-request " in r, r
    r = iq(a, "x5", f"<moderate xmlns='urn:xmpp:message-moderate:1' id='{sids[1]}'/>",
           to=f"mod@{MUC}")
    assert "type='error'" in r and "<bad-request " in r, r
    r = moderate(a, "mod", "x" * 300, "x6")
    assert "type='error'" in r and "<item-not-found " in r, r
    r = moderate(a, "mod", "no-such-id", "x2")
    assert "type='error'" in r and "<item-not-found " in r, r
    r = moderate(a, "mod", sids[0], "x3", reason="rude")
    assert "type='result'" in r, r
    m = expect(b, r"<message[^>]*from='mod@conference.localhost'[^>]*>(?:(?!</message>).)*"
                  r"<retract .*?</message>")
    assert f"<retract xmlns='urn:xmpp:message-retract:1' id='{sids[0]}'>" in m, m
    assert f"<moderated xmlns='urn:xmpp:message-moderate:1' by='mod@{MUC}/al'>" in m, m
    assert "<reason>rude</reason>" in m, m
    assert f"<apply-to xmlns='urn:xmpp:fasten:0' id='{sids[0]}'>" in m, m
    r = moderate(a, "mod", sids[2], "x4", v=0)
    assert "type='result'" in r, r
    expect(b, rf"<retract xmlns='urn:xmpp:message-retract:1' id='{sids[2]}'>")
    res, _ = mam(a, to=f"mod@{MUC}")
    assert [rid for rid, _, _ in res] == sids, res
    assert "nasty" not in res[0][2] and "<retracted " in res[0][2], res[0][2]
    assert f"by='mod@{MUC}/al'" in res[0][2] and "<reason>rude</reason>" in res[0][2], res[0][2]
    assert "<body>fine words</body>" in res[1][2], res[1][2]
    assert "nastiness" not in res[2][2] and "<retracted " in res[2][2], res[2][2]
    c, _ = online(srv, "carol")
    seq = join(c, "mod", "carol")
    assert "fine words" in seq and "nasty" not in seq, seq


# ---- anti-flood -----------------------------------------------------------------------------

@pytest.mark.slow
def test_max_messages_per_second(server_factory):
    """max_messages_per_second: a burst beyond it is refused with
    resource-constraint and not delivered; after a second, messages go
    again."""
    import time
    srv = start(server_factory, opts="max_messages_per_second: 3")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "calm", "al")
    join(b, "calm", "bob")
    b.send("".join(f"<message to='calm@{MUC}' type='groupchat' id='f{i}'><body>f{i}</body>"
                   f"</message>" for i in range(10)))
    seen = q(b.roundtrip())
    errs = re.findall(r"<message(?=[^>]*type='error')[^>]*id='(f\d)'", seen)
    assert len(errs) >= 5, seen
    assert "<resource-constraint " in seen, seen
    a.roundtrip()
    got = q(a.roundtrip())
    for e in errs:
        assert f"id='{e}'" not in got, got
    # A second later the bucket has filled again.
    time.sleep(1.2)
    groupchat(b, "calm", "again", "ok1")
    expect(a, r"<message[^>]*id='ok1'")
    r = q(srv.ctl_run("muc_stats", "localhost").stdout)
    assert re.search(r"flood_refusals (\d+)", r).group(1) == str(len(errs)), r


# ---- hibernation ----------------------------------------------------------------------------

def stats(srv):
    r = srv.ctl_run("muc_stats", "localhost")
    assert r.returncode == 0, r.stdout + r.stderr
    return {k: int(v) for k, v in (ln.split() for ln in r.stdout.split("\n") if ln.strip())}


def wait_stats(srv, pred, timeout=15):
    import time
    end = time.monotonic() + timeout
    while True:
        s = stats(srv)
        if pred(s) or time.monotonic() > end:
            return s
        time.sleep(0.2)


@pytest.mark.slow
def test_hibernation_and_wakeup(server_factory):
    """hibernation_timeout: persistent rooms nobody is in leave memory
    (muc_stats: rooms_live and history_bytes drop to 0) and come back on
    first use (disco, configuration, a message, an entering) with their
    configuration, affiliations, subject and history, across a restart
    too; a temporary room is not kept."""
    srv = start(server_factory, opts="hibernation_timeout: 1s")
    a, _ = online(srv, "alice")
    n = 8
    for i in range(n):
        create(a, f"h{i}", "al")
        config(a, f"h{i}", {"persistentroom": "1", "roomname": f"Room {i}"})
        admin(a, "<item jid='dave@localhost' affiliation='member'/>", f"h{i}", f"m{i}")
        a.send(f"<message to='h{i}@{MUC}' type='groupchat' id='s{i}'><subject>topic {i}"
               f"</subject></message>")
        groupchat(a, f"h{i}", f"kept {i}", f"k{i}")
        expect(a, rf"<message[^>]*id='k{i}'")
    before = stats(srv)
    assert before["rooms_live"] == n and before["history_bytes"] > 0, before
    for i in range(n):
        a.send(f"<presence to='h{i}@{MUC}/al' type='unavailable'/>")
        expect(a, pres_rx(f"h{i}", "al", unavailable=True))
    after = wait_stats(srv, lambda s: s["rooms_live"] == 0)
    assert after["rooms_live"] == 0 and after["history_bytes"] == 0, after
    assert after["hibernations"] == n, after
    print(f"muc memory: before {before['rooms_live']} rooms, {before['history_bytes']} "
          f"history bytes; after {after['rooms_live']} rooms, {after['history_bytes']}")
    # Back on a disco request, a configuration request, a message.
    r = iq(a, "d1", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"h1@{MUC}")
    assert "name='Room 1'" in r and "var='muc_persistent'" in r, r
    r = iq(a, "g2", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"h2@{MUC}")
    assert re.search(r"var='muc#roomconfig_roomname'[^>]*>\s*<value>Room 2</value>", r), r
    a.send(f"<message to='h3@{MUC}' type='groupchat' id='out'><body>x</body></message>")
    m = expect(a, err_rx("message", "out", "not-acceptable"))
    assert "item-not-found" not in m, m
    # An entering: history, subject and affiliations are there.
    b, _ = online(srv, "bob")
    seq = join(b, "h4", "bob")
    assert "<body>kept 4</body>" in seq and "<subject>topic 4</subject>" in seq, seq
    r = iq(a, "l4", f"<query xmlns='{NS_ADMIN}'><item affiliation='member'/></query>",
           typ="get", to=f"h4@{MUC}")
    assert "jid='dave@localhost'" in r, r
    s = stats(srv)
    assert s["wakeups"] >= 4 and s["rooms_live"] >= 4, s
    # Hibernated rooms keep their history across a restart.
    wait_stats(srv, lambda s: s["hibernations"] >= n + 3)
    a.roundtrip()
    srv.stop()
    srv.restart()
    c, _ = online(srv, "carol")
    seq = join(c, "h5", "carol")
    assert "<body>kept 5</body>" in seq and "<subject>topic 5</subject>" in seq, seq
    # A temporary room goes when empty, as before.
    create(c, "tmp", "ca")
    c.send(f"<presence to='tmp@{MUC}/ca' type='unavailable'/>")
    expect(c, pres_rx("tmp", "ca", unavailable=True))
    r = iq(c, "d9", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"tmp@{MUC}")
    assert "item-not-found" in r, r


def test_persistent_history_survives_restart(server_factory):
    """A persistent room in memory at a stop writes its history with its
    state: after the restart a newcomer gets it; a temporary room's is
    gone with it."""
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    create(a, "stay", "al")
    config(a, "stay", {"persistentroom": "1"})
    for i in range(3):
        groupchat(a, "stay", f"before restart {i}", f"r{i}")
        expect(a, rf"<message[^>]*id='r{i}'")
    a.roundtrip()
    srv.stop()
    srv.restart()
    b, _ = online(srv, "bob")
    seq = join(b, "stay", "bob")
    assert all(f"<body>before restart {i}</body>" in seq for i in range(3)), seq
    assert seq.count("<delay ") == 3, seq


def test_room_archive_for_a_remote_occupant(server_factory):
    """A querier on another server (b.test) reads a public room's archive
    on conference.a.test: the results and the <fin/> are routed to it over
    s2s (it has no session here)."""
    from test_mam import bodies, mam
    from test_s2s import A_IP, B_IP, listen_yaml
    from xmpptest import free_port
    ports = {"a": (free_port(addr=A_IP), free_port(addr=A_IP)),
             "b": (free_port(addr=B_IP), free_port(addr=B_IP))}
    srvs = {}
    for name, ip, other, oip in (("a", A_IP, "b", B_IP), ("b", B_IP, "a", A_IP)):
        hosts = f"  {other}.test: \"{oip}:{ports[other][1]}\"\n"
        if name == "b":
            hosts += f"  conference.a.test: \"{A_IP}:{ports['a'][1]}\"\n"
        extra = f"s2s_hosts:\n{hosts}s2s_connect_timeout: 5s\n"
        if name == "a":
            extra += ("modules:\n  mod_muc: {default_mam: true}\n" + MAM_MODS)
        srv = server_factory(hosts=(f"{name}.test",), listen=listen_yaml(ip, *ports[name]),
                             extra_yaml=extra)
        srv.c2s_port = ports[name][0]
        srv.ip = ip
        srv.domain = f"{name}.test"
        users(srv, "alice", "bob", host=f"{name}.test")
        srvs[name] = srv
    a, _ = online(srvs["a"], "alice", "r")
    room = "conference.a.test"
    a.send(f"<presence to='pub@{room}/al'><x xmlns='{NS_MUC}'/></presence>")
    expect(a, r"<subject")
    a.send(f"<iq type='set' id='cr' to='pub@{room}'>{INSTANT}</iq>")
    expect(a, r"id='cr'")
    for i in range(3):
        a.send(f"<message to='pub@{room}' type='groupchat' id='r{i}'><body>remote {i}</body>"
               f"</message>")
        expect(a, rf"<message[^>]*id='r{i}'")
    a.roundtrip()
    b, _ = online(srvs["b"], "bob", "r")
    res, fin = mam(b, to=f"pub@{room}")
    assert bodies(res) == [f"remote {i}" for i in range(3)], (res, fin)
    assert "type='result'" in fin and "complete='true'" in fin, fin


def test_room_archive_written_before_the_senders_next_answer(server_factory):
    """The sender's stream is held until its archived messages are durable
    (appended to mod_mam's journal), also when the room lives on another
    worker than the sender's session: right after the sender's round trip,
    the journal and the database hold every message (read from outside:
    the files, not a query; the background indexer is off, so only the
    queries index records) and a query counts them all
    (rooms on both workers).  The archive's appends come 50 ms late
    (XD_DEBUG_BATCH_DELAY_MS, a debug build's knob, xmppd/assert.h), so a
    sender released before its records are written finds them missing (this
    failed when mod_muc released the hold of a room on the other worker).
    Few messages a round, since each waits for its append.  In a release
    build the knob is compiled out and the test only guards."""
    import os
    import sqlite3

    from test_mam import fin_set, journal_ids, mam
    srv = start(server_factory, opts="default_mam: true",
                mods="  mod_stanza_id: {}\n"
                     "  mod_mam: {journal_idle: 1h, journal_index_records: 100000000}\n",
                env={"XD_DEBUG_BATCH_DELAY_MS": "50"})
    a, _ = online(srv, "alice")
    rooms = [f"w{i}" for i in range(6)]
    for rm in rooms:
        create(a, rm, "al")
    db = "file:" + os.path.join(srv.data_dir, "xmppd.db") + "?mode=ro"

    def stored():
        """Messages per room in the database or the journal (a reader's
        drain indexes its room's records and leaves them in the file)."""
        with sqlite3.connect(db, uri=True) as con:
            rows = con.execute("SELECT username, id FROM archive WHERE host = ?",
                               (MUC,)).fetchall()
        con.close()
        ids = journal_ids(srv, of=MUC)
        for user, i in rows:
            ids.setdefault(user, set()).add(i)
        return {user: len(v) for user, v in ids.items()}

    n, per = 0, 5
    for _ in range(2):
        # One room at a time: a round trip right after a room on the other
        # worker handled the last message finds its records (not only after
        # rooms on the sender's own worker made it wait).
        for k, rm in enumerate(rooms):
            a.send("".join(f"<message to='{rm}@{MUC}' type='groupchat' id='{rm}-{n + i}'>"
                           f"<body>{i}</body></message>" for i in range(per)))
            assert "type='error'" not in q(a.roundtrip())
            want = {r: n + per if j <= k else n for j, r in enumerate(rooms) if n or j <= k}
            assert stored() == want, (rm, stored())
        n += per
        a.buf = a.buf[:0]  # the echoes
        counts = [fin_set(mam(a, rsm="<max>0</max>", to=f"{rm}@{MUC}")[1])[2] for rm in rooms]
        assert counts == [n] * len(rooms), counts


# ---- registration (XEP-0045 7.10, 7.12) -------------------------------------------------------

NS_REG = "jabber:iq:register"


def register(c, room, nick, iq_id):
    return iq(c, iq_id, f"<query xmlns='{NS_REG}'><x xmlns='jabber:x:data' type='submit'>"
                        f"<field var='FORM_TYPE'><value>{NS_MUC}#register</value></field>"
                        f"<field var='muc#register_roomnick'><value>{nick}</value></field>"
                        f"</x></query>", to=f"{room}@{MUC}")


def test_room_registration_reserves_the_nick(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    c, _ = online(srv, "carol")
    create(a, "reg", "al")
    config(a, "reg", {"persistentroom": "1"})
    r = iq(b, "di", f"<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"reg@{MUC}")
    assert f"var='{NS_REG}'" in r, r
    # the form, then a registration: bob becomes a member with "bobby" reserved
    r = iq(b, "f1", f"<query xmlns='{NS_REG}'/>", typ="get", to=f"reg@{MUC}")
    assert "type='result'" in r and "var='muc#register_roomnick'" in r, r
    assert f"<value>{NS_MUC}#register</value>" in r and "<required/>" in r, r
    join(b, "reg", "bob")
    take(a, pres_rx("reg", "bob"))  # his entrance
    r = register(b, "reg", "bobby", "r1")
    assert "type='result'" in r, r
    # in the room already: everyone sees his new affiliation
    p = take(a, pres_rx("reg", "bob"))
    assert "affiliation='member'" in p, p
    r = iq(b, "f2", f"<query xmlns='{NS_REG}'/>", typ="get", to=f"reg@{MUC}")
    assert "<registered/>" in r and "<username>bobby</username>" in r, r
    r = iq(b, "n1", "<query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/>",
           typ="get", to=f"reg@{MUC}")
    assert re.search(r"<identity[^>]*name='bobby'", r), r
    r = iq(c, "n2", "<query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/>",
           typ="get", to=f"reg@{MUC}")
    assert "type='result'" in r and "<identity" not in r, r
    r = iq(a, "ml", f"<query xmlns='{NS_ADMIN}'><item affiliation='member'/></query>",
           typ="get", to=f"reg@{MUC}")
    assert re.search(r"<item[^>]*jid='bob@localhost'[^>]*nick='bobby'", r) or \
        re.search(r"<item[^>]*nick='bobby'[^>]*jid='bob@localhost'", r), r
    # nobody else enters as, or changes to, a reserved nick; nor registers it
    c.send(f"<presence to='reg@{MUC}/bobby'><x xmlns='{NS_MUC}'/></presence>")
    expect(c, perr("conflict"))
    join(c, "reg", "cc")
    c.send(f"<presence to='reg@{MUC}/bobby'/>")
    expect(c, perr("conflict"))
    assert "<conflict " in register(c, "reg", "bobby", "r2")
    assert "<conflict " in register(c, "reg", "al", "r3")  # in use by alice
    assert "<not-acceptable " in register(c, "reg", "", "r4")
    assert "<bad-request " in iq(c, "r5", f"<query xmlns='{NS_REG}'/>", to=f"reg@{MUC}")
    # bob himself may take it
    b.send(f"<presence to='reg@{MUC}/bobby'/>")
    p = expect(b, pres_rx("reg", "bobby"))
    # it lasts across a restart (persistent room)
    srv.stop()
    srv.restart()
    c, _ = online(srv, "carol")
    c.send(f"<presence to='reg@{MUC}/bobby'><x xmlns='{NS_MUC}'/></presence>")
    expect(c, perr("conflict"))
    b, _ = online(srv, "bob")
    r = iq(b, "f3", f"<query xmlns='{NS_REG}'/>", typ="get", to=f"reg@{MUC}")
    assert "<username>bobby</username>" in r, r
    # unregistering frees the nick and the membership
    r = iq(b, "u1", f"<query xmlns='{NS_REG}'><remove/></query>", to=f"reg@{MUC}")
    assert "type='result'" in r, r
    join(c, "reg", "bobby")
    a2, _ = online(srv, "alice")
    r = iq(a2, "ml2", f"<query xmlns='{NS_ADMIN}'><item affiliation='member'/></query>",
           typ="get", to=f"reg@{MUC}")
    assert "type='result'" in r and "bob@localhost" not in r, r


def test_room_registration_refusals(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "closed", "al")
    config(a, "closed", {"membersonly": "1"})
    # a members-only room's membership is the admins' to give
    r = iq(b, "f1", f"<query xmlns='{NS_REG}'/>", typ="get", to=f"closed@{MUC}")
    assert "<not-allowed " in r, r
    assert "<not-allowed " in register(b, "closed", "bee", "r1")
    # a member there may reserve a nick
    admin(a, "<item jid='bob@localhost' affiliation='member'/>", "closed", "m1")
    assert "type='result'" in register(b, "closed", "bee", "r2")
    # banned: not allowed either, and the reservation went with the membership
    admin(a, "<item jid='bob@localhost' affiliation='outcast'/>", "closed", "b1")
    r = iq(b, "f2", f"<query xmlns='{NS_REG}'/>", typ="get", to=f"closed@{MUC}")
    assert "<not-allowed " in r, r
    admin(a, "<item jid='bob@localhost' affiliation='none'/>", "closed", "b2")
    r = iq(b, "f3", f"<query xmlns='{NS_REG}'/>", typ="get", to=f"closed@{MUC}")
    assert "<not-allowed " in r and "<registered/>" not in r, r
    # unknown room
    r = iq(b, "f4", f"<query xmlns='{NS_REG}'/>", typ="get", to=f"nosuch@{MUC}")
    assert "<item-not-found " in r, r


# ---- the rest of ejabberd's room options (issue 15) ----------------------------------------

def config_multi(c, room, fields, iq_id="cfgm"):
    """A configuration form whose fields have several values (lists of
    values; a list of none sends the field empty); names are full vars."""
    vals = "".join(f"<field var='{k}'>" + "".join(f"<value>{v}</value>" for v in vs) +
                   "</field>" for k, vs in fields.items())
    return iq(c, iq_id, f"<query xmlns='{NS_OWNER}'><x xmlns='jabber:x:data' type='submit'>"
                        f"<field var='FORM_TYPE'><value>{NS_MUC}#roomconfig</value></field>"
                        f"{vals}</x></query>", to=f"{room}@{MUC}")


def form_values(r, var):
    """The values of field var in a form (in order)."""
    m = re.search(rf"<field[^>]*var='{re.escape(var)}'[^>]*>(.*?)</field>", r, re.S)
    assert m, (var, r)
    body = re.sub(r"<option.*?</option>", "", m.group(1), flags=re.S)
    return re.findall(r"<value>([^<]*)</value>", body)


NEW_FIELDS = ("muc#roomconfig_lang", "muc#roomconfig_pubsub", "muc#roomconfig_getmemberlist",
              "muc#roomconfig_roomowners", "muc#roomconfig_roomadmins",
              "allow_voice_requests", "voice_request_min_interval", "allow_visitor_status",
              "allow_visitor_nickchange", "members_by_default")


def test_config_lang_and_pubsub_in_roominfo(server_factory):
    """muc#roomconfig_lang and muc#roomconfig_pubsub: offered, kept, shown in
    the room's disco#info (muc#roominfo_lang, muc#roomconfig_pubsub); a value
    that is no language tag or no XMPP URI is refused with not-acceptable."""
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    create(a, "lang", "al")
    r = iq(a, "g1", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"lang@{MUC}")
    for f in NEW_FIELDS:
        assert f"var='{f}'" in r, (f, r)
    assert form_values(r, "muc#roomconfig_lang") in ([], [""]), r
    node = "xmpp:pubsub.localhost?;node=lang-news"
    r = config(a, "lang", {"lang": "fr-CA", "pubsub": node.replace("&", "&amp;")})
    assert "type='result'" in r, r
    r = iq(a, "d1", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"lang@{MUC}")
    assert form_values(r, "muc#roominfo_lang") == ["fr-CA"], r
    assert form_values(r, "muc#roomconfig_pubsub") == [node], r
    r = iq(a, "g2", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"lang@{MUC}")
    assert form_values(r, "muc#roomconfig_lang") == ["fr-CA"], r
    assert form_values(r, "muc#roomconfig_pubsub") == [node], r
    for bad in ({"lang": "no tag!"}, {"lang": "x" * 100}, {"pubsub": "https://example.com/"},
                {"pubsub": "xmpp:" + "n" * 2000}):
        r = config(a, "lang", bad, "bad")
        assert "<not-acceptable " in r, (bad, r)
    # An empty value unsets them.
    assert "type='result'" in config(a, "lang", {"lang": "", "pubsub": ""})
    r = iq(a, "d2", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to=f"lang@{MUC}")
    assert "muc#roomconfig_pubsub" not in r, r
    assert form_values(r, "muc#roominfo_lang") in ([], [""]), r


def test_config_roomowners_and_roomadmins(server_factory):
    """muc#roomconfig_roomowners/_roomadmins are the full lists (XEP-0045
    10.1.3): who is listed gets the affiliation, who is no longer listed
    loses it, occupants see their new affiliation and role; no owner left,
    a JID in both lists, a malformed JID and more than max_affiliations are
    refused with not-acceptable and change nothing."""
    srv = start(server_factory, "max_affiliations: 4")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "lists", "al")
    join(b, "lists", "bob")
    expect(a, pres_rx("lists", "bob"))
    r = iq(a, "g1", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"lists@{MUC}")
    assert form_values(r, "muc#roomconfig_roomowners") == ["alice@localhost"], r
    assert re.search(r"var='muc#roomconfig_roomadmins'[^>]*type='jid-multi'|"
                     r"type='jid-multi'[^>]*var='muc#roomconfig_roomadmins'", r), r
    r = config_multi(a, "lists", {"muc#roomconfig_roomadmins": ["bob@localhost",
                                                                 "carol@localhost/res"]})
    assert "type='result'" in r, r
    p = expect(b, pres_rx("lists", "bob"))
    assert "affiliation='admin'" in p and "role='moderator'" in p, p
    r = iq(a, "l1", f"<query xmlns='{NS_ADMIN}'><item affiliation='admin'/></query>",
           typ="get", to=f"lists@{MUC}")
    assert "jid='bob@localhost'" in r and "jid='carol@localhost'" in r, r
    r = config_multi(a, "lists", {"muc#roomconfig_roomowners": ["alice@localhost",
                                                                 "dave@localhost"],
                                  "muc#roomconfig_roomadmins": ["carol@localhost"]})
    assert "type='result'" in r, r
    p = expect(b, pres_rx("lists", "bob"))
    assert "affiliation='none'" in p and "role='participant'" in p, p
    r = iq(a, "g2", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"lists@{MUC}")
    assert sorted(form_values(r, "muc#roomconfig_roomowners")) == ["alice@localhost",
                                                                   "dave@localhost"], r
    assert form_values(r, "muc#roomconfig_roomadmins") == ["carol@localhost"], r
    for bad in ({"muc#roomconfig_roomowners": []},
                {"muc#roomconfig_roomowners": ["alice@localhost"],
                 "muc#roomconfig_roomadmins": ["alice@localhost"]},
                {"muc#roomconfig_roomadmins": ["@@bad"]},
                {"muc#roomconfig_roomadmins": [f"u{i}@localhost" for i in range(5)]}):
        r = config_multi(a, "lists", bad, "bad")
        assert "<not-acceptable " in r, (bad, r)
    r = iq(a, "g3", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"lists@{MUC}")
    assert sorted(form_values(r, "muc#roomconfig_roomowners")) == ["alice@localhost",
                                                                   "dave@localhost"], r
    assert form_values(r, "muc#roomconfig_roomadmins") == ["carol@localhost"], r
    # Owners may drop themselves while another owner stays.
    r = config_multi(a, "lists", {"muc#roomconfig_roomowners": ["dave@localhost"]})
    assert "type='result'" in r, r
    r = iq(a, "g4", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"lists@{MUC}")
    assert "<forbidden " in r, r


def test_config_getmemberlist(server_factory):
    """muc#roomconfig_getmemberlist: the roles that may get the member list
    (affiliation='member'); in a semi-anonymous room only those who see real
    JIDs (XEP-0045 5.2 ***); admins and owners always may."""
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "gml", "al")
    config(a, "gml", {"whois": "anyone"})
    admin(a, "<item jid='dave@localhost' affiliation='member'/>", "gml", "m1")
    join(b, "gml", "bob")
    get = f"<query xmlns='{NS_ADMIN}'><item affiliation='member'/></query>"
    r = iq(b, "l1", get, typ="get", to=f"gml@{MUC}")
    assert "type='result'" in r and "jid='dave@localhost'" in r, r
    # Other lists stay the admins'.
    r = iq(b, "l2", f"<query xmlns='{NS_ADMIN}'><item affiliation='outcast'/></query>",
           typ="get", to=f"gml@{MUC}")
    assert "<forbidden " in r, r
    r = config_multi(a, "gml", {"muc#roomconfig_getmemberlist": ["moderator"]})
    assert "type='result'" in r, r
    r = iq(a, "g1", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"gml@{MUC}")
    assert form_values(r, "muc#roomconfig_getmemberlist") == ["moderator"], r
    r = iq(b, "l3", get, typ="get", to=f"gml@{MUC}")
    assert "<forbidden " in r, r
    r = iq(a, "l4", get, typ="get", to=f"gml@{MUC}")
    assert "jid='dave@localhost'" in r, r
    # Semi-anonymous: a participant may not, whatever the list says.
    config_multi(a, "gml", {"muc#roomconfig_getmemberlist": ["participant", "moderator"],
                            "muc#roomconfig_whois": ["moderators"]})
    r = iq(b, "l5", get, typ="get", to=f"gml@{MUC}")
    assert "<forbidden " in r, r
    r = config_multi(a, "gml", {"muc#roomconfig_getmemberlist": ["emperor"]}, "bad")
    assert "<not-acceptable " in r, r


def test_config_voice_requests(server_factory):
    """allow_voice_requests off: a visitor's request is forbidden;
    voice_request_min_interval: a second request within it is
    resource-constraint, with 0 it goes again."""
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    c, _ = online(srv, "carol")
    create(a, "vq", "al")
    config(a, "vq", {"moderatedroom": "1"})
    assert "type='result'" in config_multi(a, "vq", {"allow_voice_requests": ["0"]})
    join(c, "vq", "cc")
    req = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
           "<value>http://jabber.org/protocol/muc#request</value></field>"
           "<field var='muc#role'><value>participant</value></field></x>")
    c.send(f"<message to='vq@{MUC}' id='q1'>{req}</message>")
    expect(c, err_rx("message", "q1", "forbidden"))
    r = config_multi(a, "vq", {"muc#roomconfig_allowvoicerequests": ["1"],
                               "muc#roomconfig_voicerequestmininterval": ["3600"]})
    assert "type='result'" in r, r
    r = iq(a, "g1", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"vq@{MUC}")
    assert form_values(r, "allow_voice_requests") == ["1"], r
    assert form_values(r, "voice_request_min_interval") == ["3600"], r
    a.roundtrip()
    c.send(f"<message to='vq@{MUC}' id='q2'>{req}</message>")
    m = expect(a, rf"<message[^>]*from='vq@{MUC}'[^>]*>(?:(?!</message>).)*muc#request.*?"
                  r"</message>")
    assert "<value>cc</value>" in m, m
    c.send(f"<message to='vq@{MUC}' id='q3'>{req}</message>")
    expect(c, err_rx("message", "q3", "resource-constraint"))
    assert_nothing_before(a, "muc#request", after=[c])
    assert "type='result'" in config_multi(a, "vq", {"voice_request_min_interval": ["0"]})
    c.send(f"<message to='vq@{MUC}' id='q4'>{req}</message>")
    expect(a, r"muc#request")
    r = config_multi(a, "vq", {"voice_request_min_interval": ["-1"]}, "bad")
    assert "<not-acceptable " in r, r


def test_config_visitor_status_nickchange_and_members_by_default(server_factory):
    """allow_visitor_status off: a visitor's <status/> is not broadcast;
    allow_visitor_nickchange off: a visitor's nick change is not-allowed;
    members_by_default on: in a moderated room, unaffiliated occupants enter
    as participants (ejabberd), off: as visitors (XEP-0045's default)."""
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    c, _ = online(srv, "carol")
    create(a, "vis", "al")
    r = config_multi(a, "vis", {"muc#roomconfig_moderatedroom": ["1"],
                                "allow_visitor_status": ["0"],
                                "allow_visitor_nickchange": ["0"]})
    assert "type='result'" in r, r
    c.send(f"<presence to='vis@{MUC}/cc'><x xmlns='{NS_MUC}'/><show>away</show>"
           f"<status>buy my stuff</status></presence>")
    p = expect(a, pres_rx("vis", "cc"))
    assert "role='visitor'" in p and "buy my stuff" not in p and "<show>away</show>" in p, p
    expect(c, subject_rx("vis"))
    c.send(f"<presence to='vis@{MUC}/cc'><status>cheap stuff</status></presence>")
    p = expect(a, pres_rx("vis", "cc"))
    assert "cheap stuff" not in p, p
    c.send(f"<presence to='vis@{MUC}/cc2'/>")
    e = expect(c, perr("not-allowed"))
    assert f"from='vis@{MUC}/cc2'" in e, e
    # With voice, the status goes through.
    assert "type='result'" in admin(a, "<item nick='cc' role='participant'/>", "vis", "v1")
    c.send(f"<presence to='vis@{MUC}/cc'><status>hello all</status></presence>")
    p = expect(a, pres_rx("vis", "cc"))
    assert "<status>hello all</status>" in p, p
    c.send(f"<presence to='vis@{MUC}/cc' type='unavailable'/>")
    expect(a, pres_rx("vis", "cc", unavailable=True))
    # members_by_default.
    assert "type='result'" in config_multi(a, "vis", {"members_by_default": ["1"]})
    join(c, "vis", "cc")
    p = expect(a, pres_rx("vis", "cc"))
    assert "role='participant'" in p, p
    c.send(f"<presence to='vis@{MUC}/cc' type='unavailable'/>")
    expect(a, pres_rx("vis", "cc", unavailable=True))
    assert "type='result'" in config_multi(a, "vis", {"members_by_default": ["0"]})
    join(c, "vis", "cc")
    p = expect(a, pres_rx("vis", "cc"))
    assert "role='visitor'" in p, p


def test_new_config_fields_survive_restart_and_service_defaults(server_factory):
    """The new fields are stored with a persistent room and come back after
    a restart; a new room takes the service's defaults (default_lang,
    default_getmemberlist, default_allow_voice_requests,
    default_voice_request_min_interval, default_allow_visitor_status,
    default_allow_visitor_nickchange, default_members_by_default)."""
    srv = start(server_factory,
                "default_lang: de, default_getmemberlist: [moderator], "
                "default_allow_voice_requests: false, "
                "default_voice_request_min_interval: 2m, default_allow_visitor_status: false, "
                "default_allow_visitor_nickchange: false, default_members_by_default: true")
    a, _ = online(srv, "alice")
    create(a, "defs", "al")
    r = iq(a, "g1", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"defs@{MUC}")
    want = {"muc#roomconfig_lang": ["de"], "muc#roomconfig_getmemberlist": ["moderator"],
            "allow_voice_requests": ["0"], "voice_request_min_interval": ["120"],
            "allow_visitor_status": ["0"], "allow_visitor_nickchange": ["0"],
            "members_by_default": ["1"]}
    for k, v in want.items():
        assert form_values(r, k) == v, (k, r)
    new = {"muc#roomconfig_persistentroom": ["1"], "muc#roomconfig_lang": ["en"],
           "muc#roomconfig_pubsub": ["xmpp:pubsub.localhost?;node=n1"],
           "muc#roomconfig_getmemberlist": ["moderator", "participant"],
           "muc#roomconfig_roomadmins": ["bob@localhost"],
           "muc#roomconfig_roomowners": ["alice@localhost", "carol@localhost"],
           "allow_voice_requests": ["1"], "voice_request_min_interval": ["7"],
           "allow_visitor_status": ["1"], "allow_visitor_nickchange": ["1"],
           "members_by_default": ["0"]}
    assert "type='result'" in config_multi(a, "defs", new)
    a.roundtrip()
    srv.stop()
    srv.restart()
    a, _ = online(srv, "alice")
    r = iq(a, "g2", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=f"defs@{MUC}")
    for k, v in new.items():
        if k == "muc#roomconfig_persistentroom":
            continue
        assert sorted(form_values(r, k)) == sorted(v), (k, r)


def test_room_archive_prefs(server_factory):
    """XEP-0441 on a room's JID: a room archives every message while its
    configuration says so, so <prefs/> shows default='always' to who may
    read the archive; a set is the owners' and may only say the same
    (never, roster or JID lists are not-acceptable); a room without archive
    answers service-unavailable as for its other MAM requests."""
    srv = start(server_factory, opts="default_mam: true", mods=MAM_MODS)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    c, _ = online(srv, "carol")
    create(a, "pf", "al")
    config(a, "pf", {"publicroom": "0"})
    join(b, "pf", "bob")
    get = f"<prefs xmlns='{NS_MAM}'/>"
    r = iq(b, "p1", get, typ="get", to=f"pf@{MUC}")
    assert "type='result'" in r and re.search(r"<prefs[^>]*default='always'", r), r
    r = iq(c, "p2", get, typ="get", to=f"pf@{MUC}")
    assert "<forbidden " in r, r
    r = iq(b, "p3", f"<prefs xmlns='{NS_MAM}' default='always'/>", to=f"pf@{MUC}")
    assert "<forbidden " in r, r
    r = iq(a, "p4", f"<prefs xmlns='{NS_MAM}' default='always'><always/><never/></prefs>",
           to=f"pf@{MUC}")
    assert "type='result'" in r and "default='always'" in r, r
    for bad in ("default='never'", "default='roster'", ""):
        r = iq(a, "p5", f"<prefs xmlns='{NS_MAM}' {bad}/>", to=f"pf@{MUC}")
        assert "<not-acceptable " in r, (bad, r)
    r = iq(a, "p6", f"<prefs xmlns='{NS_MAM}' default='always'><never><jid>bob@localhost</jid>"
                    f"</never></prefs>", to=f"pf@{MUC}")
    assert "<not-acceptable " in r, r
    config(a, "pf", {"mam": "0"})
    r = iq(b, "p7", get, typ="get", to=f"pf@{MUC}")
    assert "<service-unavailable " in r, r


def retract_msg(room, sid, mid):
    return (f"<message to='{room}@{MUC}' type='groupchat' id='{mid}'>"
            f"<retract xmlns='urn:xmpp:message-retract:1' id='{sid}'/>"
            f"<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>"
            f"<body>/me retracted a message</body></message>")


def test_occupant_retracts_own_message(server_factory):
    """XEP-0424 in a room with an archive: an occupant retracts its own
    message by the stanza-id the room stamped: every occupant gets the
    retraction, the archive keeps a tombstone, newcomers' history loses it.
    Another occupant (a moderator too: it has XEP-0425) is forbidden and
    nothing is forwarded; an unknown id is item-not-found.  The sender is
    matched by occupant-id (its account), not by nick."""
    from test_mam import mam
    srv = start(server_factory, opts="default_mam: true", mods=MAM_MODS)
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    c, _ = online(srv, "carol")
    create(a, "rt", "al")
    join(b, "rt", "bob")
    join(c, "rt", "cc")
    sids = []
    for i, body in enumerate(["oops wrong room", "keep this"]):
        groupchat(b, "rt", body, f"m{i}")
        sids.append(room_sid(expect(c, rf"<message[^>]*id='m{i}'.*?</message>"), "rt"))
    a.roundtrip()
    b.roundtrip()
    # Not the sender: carol, and alice the moderator.
    for who, mid in ((c, "r1"), (a, "r2")):
        who.send(retract_msg("rt", sids[0], mid))
        expect(who, err_rx("message", mid, "forbidden"))
    assert_nothing_before(b, r"id='r[12]'", after=[a, c])
    # Unknown id.
    b.send(retract_msg("rt", "no-such-id", "r3"))
    expect(b, err_rx("message", "r3", "item-not-found"))
    # bob retracts his own, under another nick: the account counts.
    b.send(f"<presence to='rt@{MUC}/robert'/>")
    expect(c, pres_rx("rt", "robert"))
    b.send(retract_msg("rt", sids[0], "r4"))
    for who in (a, c, b):
        m = expect(who, r"<message[^>]*id='r4'.*?</message>")
        assert f"from='rt@{MUC}/robert'" in m, m
        assert f"<retract xmlns='urn:xmpp:message-retract:1' id='{sids[0]}'" in m, m
    res, _ = mam(a, to=f"rt@{MUC}")
    kept = {rid: xml for rid, _, xml in res}
    assert "oops" not in kept[sids[0]] and "<retracted " in kept[sids[0]], kept[sids[0]]
    assert "keep this" in kept[sids[1]], kept
    d, _ = online(srv, "dave")
    seq = join(d, "rt", "dd")
    assert "keep this" in seq and "oops" not in seq, seq
    # A room without an archive cannot check: the message passes as before.
    create(a, "noarch", "al")
    config(a, "noarch", {"mam": "0"})
    join(b, "noarch", "bob")
    b.send(retract_msg("noarch", "whatever", "r5"))
    expect(a, r"<message[^>]*id='r5'")


@pytest.mark.slow
def test_history_survives_kill_9(server_factory):
    """history_flush_interval: a persistent room's new history is written
    behind within the interval (muc_stats history_flushes), so after a
    kill -9 and a restart a newcomer gets it, the archived room's too; with
    0 it is written only at a stop, and a kill -9 loses what came since
    (docs/admin.md)."""
    import signal
    for interval, kept in (("1s", True), ("0", False)):
        srv = start(server_factory, opts=f"history_flush_interval: {interval}", mods=MAM_MODS)
        a, _ = online(srv, "alice")
        for room, extra in (("crash", {}), ("crasharch", {"mam": "1"})):
            create(a, room, "al")
            config(a, room, {"persistentroom": "1", **extra})
            for i in range(3):
                groupchat(a, room, f"{room} said {i}", f"{room}{i}")
                expect(a, rf"<message[^>]*id='{room}{i}'")
        a.roundtrip()
        if kept:
            s = wait_stats(srv, lambda s: s["history_flushes"] >= 2)
            assert s["history_flushes"] >= 2, s
        else:
            assert stats(srv)["history_flushes"] == 0
        srv.stop(signal.SIGKILL)
        srv.restart()
        b, _ = online(srv, "bob")
        for room in ("crash", "crasharch"):
            seq = join(b, room, "bob")
            got = [f"<body>{room} said {i}</body>" in seq for i in range(3)]
            # The archived room's history comes from its archive then.
            assert got == [kept or room == "crasharch"] * 3, (interval, room, seq)
        srv.stop()


def history_bodies(seq, room):
    """The bodies of the history (delayed messages) of a join sequence, in
    order."""
    return re.findall(rf"<message[^>]*from='{room}@{MUC}/[^']*'[^>]*>(?:(?!</message>).)*?"
                      r"<body>([^<]*)</body>(?:(?!</message>).)*?urn:xmpp:delay", seq)


@pytest.mark.slow
def test_join_history_from_archive_after_kill_9(server_factory):
    """A persistent room with an archive whose stored history lags (a kill
    -9 within history_flush_interval) or is gone (the stored state lost its
    history): restored, its join history is completed from the archive, as
    Prosody's muc_mam serves it: the newest historylength messages in their
    order, once each, without the retracted one, the entering's limits
    (maxstanzas, since) applied; a room without an archive keeps what was
    stored.  The newcomer's presence, history and subject wait for the
    archive's answer."""
    import os
    import signal
    import sqlite3
    srv = start(server_factory, opts="history_flush_interval: 1h", mods=MAM_MODS)
    a, _ = online(srv, "alice")
    for room, mam_on in (("arch", "1"), ("plain", "0")):
        create(a, room, "al")
        config(a, room, {"persistentroom": "1", "mam": mam_on, "historylength": "5"})
        sids = []
        for i in range(7):
            if i == 3:  # a subject change stores the room, history 0-2 with it
                a.send(f"<message to='{room}@{MUC}' type='groupchat'><subject>s</subject>"
                       "</message>")
                expect(a, r"<message[^>]*>\s*<subject>s</subject>")
            groupchat(a, room, f"{room} {i}", f"{room}{i}")
            sids.append(room_sid(expect(a, rf"<message[^>]*id='{room}{i}'.*?</message>"), room))
        if mam_on == "1":  # alice retracts "arch 5": a tombstone in the archive
            a.send(retract_msg(room, sids[5], "rt5"))
            expect(a, r"<message[^>]*id='rt5'")
    a.roundtrip()
    assert stats(srv)["history_flushes"] == 0
    srv.stop(signal.SIGKILL)
    srv.restart()
    b, _ = online(srv, "bob")
    assert history_bodies(join(b, "arch", "bob"), "arch") == [f"arch {i}" for i in (1, 2, 3, 4, 6)]
    assert history_bodies(join(b, "plain", "bob"), "plain") == [f"plain {i}" for i in range(3)]
    assert stats(srv)["history_fills"] == 1
    # The entering's limits apply to it.
    c, _ = online(srv, "carol")
    seq = join(c, "arch", "carol", "<history maxstanzas='2'/>")
    assert history_bodies(seq, "arch") == ["arch 4", "arch 6"], seq
    d, _ = online(srv, "dave")
    seq = join(d, "arch", "dave", "<history since='2100-01-01T00:00:00Z'/>")
    assert history_bodies(seq, "arch") == [], seq
    # Stopped cleanly, the stored state has the whole history; without it
    # (lost from the stored state) the archive gives it back.
    srv.stop()
    with sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db")) as con:
        (state,) = con.execute("SELECT state FROM muc_room WHERE name = 'arch'").fetchone()
        assert "whole='1'" in q(state) and "arch 6" in state, state
        state = re.sub(r"<hist\b.*?</hist>", "", state, flags=re.S)
        con.execute("UPDATE muc_room SET state = ? WHERE name = 'arch'", (state,))
    srv.restart()
    b, _ = online(srv, "bob")
    assert history_bodies(join(b, "arch", "bob"), "arch") == [f"arch {i}" for i in (1, 2, 3, 4, 6)]
    srv.stop()


def test_slixmpp_sees_and_sets_the_new_fields(server_factory):
    """A client's view of the new fields (slixmpp's XEP-0045 and XEP-0004
    plugins): their types and values as the form gives them (the owner in
    roomowners, the roles of getmemberlist), and a form it fills (lang,
    roomadmins, getmemberlist, allow_voice_requests) takes effect."""
    import asyncio

    from xmpptest import run_slixmpp
    srv = start(server_factory)
    a, _ = online(srv, "alice", "raw")
    create(a, "slixcfg", "al")
    room = f"slixcfg@{MUC}"
    seen = {}

    def make():
        c = slix_client(srv, "alice@localhost/sx", "xep_0045", "xep_0004")
        muc = c.plugin["xep_0045"]

        async def go(_):
            try:
                form = await muc.get_room_config(room)
                fields = form.get_fields()
                seen["types"] = {k: fields[k]["type"] for k in NEW_FIELDS}
                seen["owners"] = fields["muc#roomconfig_roomowners"].get_value()
                seen["gml"] = fields["muc#roomconfig_getmemberlist"].get_value()
                form.set_values({"muc#roomconfig_lang": "nl",
                                 "muc#roomconfig_roomadmins": ["bob@localhost"],
                                 "muc#roomconfig_getmemberlist": ["moderator"],
                                 "allow_voice_requests": False})
                await muc.set_room_config(room, form)
            finally:
                c.disconnect()

        c.add_event_handler("session_start", lambda e: asyncio.ensure_future(go(e)))
        return c

    run_slixmpp(make, ("127.0.0.1", srv.c2s_port), timeout=30)
    assert seen["types"]["muc#roomconfig_roomowners"] == "jid-multi", seen
    assert seen["types"]["muc#roomconfig_getmemberlist"] == "list-multi", seen
    assert seen["types"]["allow_voice_requests"] == "boolean", seen
    assert [str(j) for j in seen["owners"]] == ["alice@localhost"], seen
    assert sorted(seen["gml"]) == ["moderator", "participant", "visitor"], seen
    r = iq(a, "d1", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get", to=room)
    assert form_values(r, "muc#roominfo_lang") == ["nl"], r
    r = iq(a, "g1", f"<query xmlns='{NS_OWNER}'/>", typ="get", to=room)
    assert form_values(r, "muc#roomconfig_roomadmins") == ["bob@localhost"], r
    assert form_values(r, "muc#roomconfig_getmemberlist") == ["moderator"], r
    assert form_values(r, "allow_voice_requests") == ["0"], r


def test_bad_room_defaults_stop_the_start(server_factory):
    """A default_getmemberlist role or a default_lang that is none stops the
    start with the option's name (a role with where it is and the value)."""
    for opts, text in (("default_getmemberlist: [moderator, emperor]",
                        'default_getmemberlist[1]: invalid role (moderator, participant or '
                        'visitor) "emperor"'),
                       ("default_lang: 'no tag!'", 'default_lang: "no tag!" is no language tag')):
        with pytest.raises(RuntimeError) as e:
            server_factory(extra_yaml=f"modules:\n  mod_muc: {{{opts}}}\n",
                           expect_clean_exit=False)
        assert text in str(e.value), e.value

"""mod_muc at scale, through the wire: a room's fan-out reaches occupants
on several workers with one inbox message per destination worker (the
muc_stats counters say how many), each copy with its own 'to' and the same
body, id and occupant-id; privacy (blocking) still applies per recipient;
an entering session's occupant list is paced (join_chunk: a chunk, then a
ping the client answers) so that a big room does not overflow the client's
stream management queue (sm_max_unacked) or write queue.

Barriers as in test_muc.py: a sender's round trip comes after what the
room sent because of its earlier stanzas; an occupant's round trip after
that is a barrier for what the room sent it."""
import re
import time

import pytest

from helpers import assert_nothing_before, expect, iq, online, q, take_iq, users
from test_muc import MUC, NS_MUC, create, groupchat, join

WORKER_RX = re.compile(r'event="session bound" conn=\d+ ip=\S+ jid=(\S+) worker=(\d+)')


def owner_of(key, workers):
    """xd_owner_of: 64-bit FNV-1a of the key, modulo the workers."""
    h = 0xcbf29ce484222325
    for b in key.encode():
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h % workers


def session_workers(srv):
    """Full JID -> worker of every session bound so far (from the log)."""
    return {m.group(1): int(m.group(2)) for m in WORKER_RX.finditer(srv.log_text())}


def muc_stats(srv):
    r = srv.ctl_run("muc_stats", "localhost")
    assert r.returncode == 0, r.stdout + r.stderr
    return {k: int(v) for k, v in (line.split() for line in r.stdout.split("\n") if line.strip())}


def start(server_factory, opts="", workers=3, extra="", mods=""):
    srv = server_factory(workers=workers,
                         extra_yaml=f"modules:\n  mod_muc: {{{opts}}}\n{mods}{extra}")
    return srv


def test_fanout_one_inbox_message_per_destination_worker(server_factory):
    """Occupants on several workers: a groupchat message reaches each with
    its own 'to' and the same body, id and occupant-id; the room's one
    fan-out took exactly one inbox message per worker other than the
    room's that has occupants (not one per occupant)."""
    workers = 3
    srv = start(server_factory, workers=workers)
    names = [f"u{i}" for i in range(12)]
    users(srv, *names)
    clients = {}
    for n in names:
        c, jid = online(srv, n)
        clients[jid] = c
        where = session_workers(srv)
        if len(clients) >= 6 and len({where[j] for j in clients}) >= 2:
            break
    where = session_workers(srv)
    assert len({where[j] for j in clients}) >= 2, where  # several workers
    jids = list(clients)
    room = "hall"
    create(clients[jids[0]], room, "n0")
    for i, j in enumerate(jids[1:], 1):
        join(clients[j], room, f"n{i}")
    sender = clients[jids[0]]
    sender.roundtrip()
    before = muc_stats(srv)
    groupchat(sender, room, "hello all", "g1")
    sender.roundtrip()
    after = muc_stats(srv)
    owner = owner_of(f"{room}@{MUC}", workers)
    dest = {where[j] for j in jids} - {owner}
    assert after["fanouts"] - before["fanouts"] == 1, (before, after)
    assert after["fanout_posts"] - before["fanout_posts"] == len(dest), (before, after, dest)
    assert after["fanout_copies"] - before["fanout_copies"] == len(jids), (before, after)
    oids = set()
    for j, c in clients.items():
        m = expect(c, r"<message[^>]*id='g1'.*?</message>")
        assert f"to='{j}'" in m, (j, m)
        assert f"from='{room}@{MUC}/n0'" in m and "<body>hello all</body>" in m, m
        assert "type='groupchat'" in m, m
        oids.add(re.search(r"<occupant-id[^>]*id='([^']+)'", m).group(1))
    assert len(oids) == 1, oids  # the sender's occupant id, the same in every copy


def test_fanout_respects_blocking_per_recipient(server_factory):
    """An occupant that blocked the sender's occupant JID (XEP-0191) gets
    nothing of the fan-out (each copy passes the recipient's filters); the
    others get theirs."""
    srv = start(server_factory, workers=2, mods="  mod_blocking: {}\n")
    users(srv, "alice", "bob", "carol")
    a, ajid = online(srv, "alice")
    b, bjid = online(srv, "bob")
    c, cjid = online(srv, "carol")
    create(a, "den", "al")
    join(b, "den", "bo")
    join(c, "den", "ca")
    r = iq(b, "bl1", f"<block xmlns='urn:xmpp:blocking'><item jid='den@{MUC}/al'/></block>")
    assert "type='result'" in r, r
    groupchat(a, "den", "secret", "s1")
    a.roundtrip()
    m = expect(c, r"<message[^>]*id='s1'.*?</message>")
    assert f"to='{cjid}'" in m, m
    # Bob's round trip after alice's: nothing of it reached him.
    assert_nothing_before(b, r"id='s1'", after=a)


def sm_enable(c):
    c.send("<enable xmlns='urn:xmpp:sm:3'/>")
    expect(c, r"<enabled[^>]*/>|<enabled[^>]*>.*?</enabled>")


class Counter:
    """Reads a client's stream stanza by stanza, counting them for stream
    management (it answers <r/> and acknowledges before answering a ping)
    and answering the room's pings, as a client does."""

    TOP = re.compile(rb"(?s)^\s*(<(message|presence|iq|r|a|stream:error)\b(?:[^>]*/>|.*?</\2>))")

    def __init__(self, c, sm=True):
        self.c = c
        self.sm = sm
        self.handled = 0

    def pump_until(self, pattern, timeout=30):
        """Reads until a stanza matches `pattern`; returns the stanzas read."""
        rx = re.compile(pattern, re.S)
        got = []
        deadline = time.time() + timeout
        while True:
            m = self.TOP.match(self.c.buf)
            if not m:
                assert not self.c.closed and time.time() < deadline, self.c.buf[-800:]
                self.c._recv_some(deadline)
                continue
            self.c.buf = self.c.buf[m.end():]
            st, kind = q(m.group(1)), m.group(2)
            assert kind != b"stream:error", st
            if kind == b"r":
                self.c.send(f"<a xmlns='urn:xmpp:sm:3' h='{self.handled}'/>")
                continue
            if kind == b"a":
                continue
            self.handled += 1
            got.append(st)
            if st.startswith("<iq") and "type='get'" in st and "urn:xmpp:ping" in st:
                pid = re.search(r"id='([^']+)'", st).group(1)
                frm = re.search(r"from='([^']+)'", st).group(1)
                ack = f"<a xmlns='urn:xmpp:sm:3' h='{self.handled}'/>" if self.sm else ""
                self.c.send(f"{ack}<iq type='result' id='{pid}' to='{frm}'/>")
            if rx.search(st):
                return got


def fill_room(srv, room, n, first_nick="f", one_account=False):
    """n occupants in room, each its own account (o0..), or sessions of one
    account (o0/r0.., with no presence of their own: a room's occupants
    need none); returns the clients."""
    names = ["o0"] * n if one_account else [f"o{i}" for i in range(n)]
    users(srv, *sorted(set(names)))
    cs = []
    for i, name in enumerate(names):
        if one_account:
            c, _ = online(srv, name, resource=f"r{i}", presence=False, mech="PLAIN")
        else:
            c, _ = online(srv, name)
        if i == 0:
            create(c, room, f"{first_nick}{i}")
        else:
            c.send(f"<presence to='{room}@{MUC}/{first_nick}{i}'><x xmlns='{NS_MUC}'/></presence>")
            if i % 20 == 0:
                c.roundtrip()
        cs.append(c)
    cs[-1].roundtrip()
    return cs


def test_big_occupant_list_is_paced_within_sm_bound(server_factory):
    """An entering client with stream management and sm_max_unacked 50 in a
    room of 70: the room lists 20 occupants, pings, and goes on when the
    client answered (it acknowledges what it read before answering), so
    the client is never over its bound; it gets all 70 presences, then its
    own (110) and the subject, and stays connected.  Without the pacing the
    70 presences come at once and the stream is closed (policy-violation)."""
    srv = start(server_factory, opts="join_chunk: 20", workers=2,
                extra="sm_ack_request_every: 0\nsm_max_unacked: 50\n")
    keep = fill_room(srv, "big", 70)  # noqa: F841 (their sockets stay open)
    users(srv, "joiner")
    j, jjid = online(srv, "joiner")
    sm_enable(j)
    before = muc_stats(srv)
    j.send(f"<presence to='big@{MUC}/me'><x xmlns='{NS_MUC}'/></presence>")
    cnt = Counter(j)
    got = cnt.pump_until(r"<message[^>]*>\s*<subject")
    pres = [s for s in got if s.startswith("<presence")]
    nicks = [re.search(r"from='big@[^/]+/([^']+)'", p).group(1) for p in pres]
    assert nicks[-1] == "me" and "code='110'" in pres[-1], pres[-1]
    assert sorted(nicks[:-1]) == sorted(f"f{i}" for i in range(70)), nicks
    # Still connected (over its bound it would have a policy-violation
    # stream error by now), and a message now reaches it.
    j.send(f"<message to='big@{MUC}' type='groupchat' id='after'><body>hi</body></message>")
    cnt.pump_until(r"id='after'")
    pings = [s for s in got if s.startswith("<iq")]
    assert len(pings) == 3, pings  # 70 = 20 + 20 + 20 + 10
    assert muc_stats(srv)["join_chunks"] - before["join_chunks"] == 3


def test_joining_session_gets_messages_after_its_list(server_factory):
    """While its list is paced the entering session gets no groupchat
    messages (they come in the history after its own presence); it gets
    the ones sent after."""
    srv = start(server_factory, opts="join_chunk: 5", workers=2)
    cs = fill_room(srv, "mid", 12)
    users(srv, "joiner")
    j, _ = online(srv, "joiner")
    j.send(f"<presence to='mid@{MUC}/me'><x xmlns='{NS_MUC}'/></presence>")
    # The first ping (taken out, unanswered for now): the list waits.
    ping = q(j.take(r"<iq[^>]*type=['\"]get['\"][^>]*>.*?</iq>").group(0))
    groupchat(cs[0], "mid", "during", "d1")
    cs[0].roundtrip()
    pid = re.search(r"id='([^']+)'", ping).group(1)
    j.send(f"<iq type='result' id='{pid}' to='mid@{MUC}'/>")
    cnt = Counter(j, sm=False)
    got = cnt.pump_until(r"<message[^>]*>\s*<subject")
    text = "".join(got)
    self_at = text.index("code='110'")
    d1 = text.index("id='d1'")
    assert d1 > self_at and "urn:xmpp:delay" in text[d1:], text  # in the history only
    assert text.count("id='d1'") == 1, text
    groupchat(cs[0], "mid", "later", "d2")
    cnt.pump_until(r"id='d2'")


def stanzas_until(c, pattern, timeout=10):
    """Reads c's stream stanza by stanza up to one matching `pattern`
    (answering nothing: the room's pings wait); returns them."""
    rx = re.compile(pattern, re.S)
    got = []
    deadline = time.time() + timeout
    while True:
        m = Counter.TOP.match(c.buf)
        if not m:
            assert not c.closed and time.time() < deadline, (got, c.buf[-800:])
            c._recv_some(deadline)
            continue
        c.buf = c.buf[m.end():]
        got.append(q(m.group(1)))
        if rx.search(got[-1]):
            return got


def paced_join(c, room, nick):
    """Enters room as nick, answering the pings of a paced list; returns the
    stanzas up to the subject."""
    c.send(f"<presence to='{room}@{MUC}/{nick}'><x xmlns='{NS_MUC}'/></presence>")
    return Counter(c, sm=False).pump_until(r"<message[^>]*>\s*<subject")


def view_of(stanzas, room):
    """Replays the presences of `stanzas` (from room/nick) as a client keeps
    its occupant list: a nick is in after its available presence, out after
    its unavailable.  Asserts that, before the self-presence (110), an
    occupant is announced once (no available for a nick in the list) and no
    unavailable comes for a nick not in it; returns the list after, and the
    self-presence."""
    seen, own = {}, None
    for s in stanzas:
        m = re.match(rf"<presence[^>]*from='{re.escape(room)}@{MUC}/([^']+)'", s)
        if not m:
            continue
        nick, gone = m.group(1), "type='unavailable'" in s.split(">")[0]
        assert own is None or "code='110'" not in s, ("a second self-presence", s)
        if "code='110'" in s:
            own = s
            continue
        if gone:
            assert nick in seen, ("unavailable for an occupant never announced", nick, stanzas)
            del seen[nick]
        else:
            assert own is not None or nick not in seen, ("announced twice", nick, stanzas)
            seen[nick] = s
    return seen, own


def test_paced_list_consistent_while_the_room_changes(server_factory):
    """join_chunk 2 and a room of 7 that changes while a newcomer's list is
    paced: an occupant not listed yet leaves, one enters, the room stops
    broadcasting visitors' presence (muc#roomconfig_presencebroadcast)
    and starts again, an occupant not listed yet changes its nick, and the
    newcomer itself gets voice.  XEP-0045 7.2.3: the newcomer gets each
    occupant's presence once, then its own (110) last: no occupant twice,
    no unavailable for one it was never told of, no self-presence before
    the end, and its final view is the room's (what a newcomer after it
    is listed)."""
    srv = start(server_factory, opts="join_chunk: 2", workers=2)
    users(srv, "alice", "joiner", "late", "gina", *(f"o{i}" for i in range(6)))
    a, _ = online(srv, "alice")
    room = "busy"
    create(a, room, "al")
    assert "type='result'" in pb_config(a, room, ["moderator", "participant", "visitor"])
    for who in ("o0", "o1", "o2", "gina"):  # participants; o3..o5 enter as visitors
        r = iq(a, "m-" + who, f"<query xmlns='{NS_MUC}#admin'><item jid='{who}@localhost' "
                              "affiliation='member'/></query>", to=f"{room}@{MUC}")
        assert "type='result'" in r, r
    occ = {}
    for i in range(6):
        occ[i], _ = online(srv, f"o{i}")
        paced_join(occ[i], room, f"f{i}")
    a.roundtrip()
    j, _ = online(srv, "joiner")
    j.send(f"<presence to='{room}@{MUC}/me'><x xmlns='{NS_MUC}'/></presence>")
    ping = re.compile(r"^<iq[^>]*type='get'")
    got = stanzas_until(j, ping.pattern)

    def answer(last):
        pid = re.search(r"id='([^']+)'", last).group(1)
        j.send(f"<iq type='result' id='{pid}' to='{room}@{MUC}'/>")

    # Listed so far: al and f0.  f4 (not listed yet) leaves, gina enters,
    # then the room hides visitors (f3, f5 and the newcomer).
    occ[4].send(f"<presence to='{room}@{MUC}/f4' type='unavailable'/>")
    expect(occ[4], r"<presence[^>]*type='unavailable'")
    g, _ = online(srv, "gina")
    paced_join(g, room, "g0")
    assert "type='result'" in pb_config(a, room, ["moderator", "participant"], "pb2")
    a.roundtrip()
    answer(got[-1])
    got += stanzas_until(j, ping.pattern)
    # Visitors broadcast again (f3 and f5 appear), gina (not listed yet)
    # becomes g1, and the newcomer gets voice.
    assert "type='result'" in pb_config(a, room, ["moderator", "participant", "visitor"], "pb3")
    g.send(f"<presence to='{room}@{MUC}/g1'/>")
    expect(g, r"<presence[^>]*from='[^']*/g1'[^>]*>(?:(?!</presence>).)*code='110'")
    r = take_iq(a, "v1", f"<query xmlns='{NS_MUC}#admin'><item nick='me' role='participant'/>"
                         "</query>", to=f"{room}@{MUC}")
    assert "type='result'" in r, r
    a.roundtrip()
    while not re.search(r"<subject", got[-1]):
        if ping.search(got[-1]):
            answer(got[-1])
        got += stanzas_until(j, r"^<iq[^>]*type='get'|^<message[^>]*>\s*<subject")
    seen, own = view_of(got, room)
    assert own and "role='participant'" in own, own
    pres = [s for s in got if s.startswith("<presence")]
    assert pres[-1] == own, pres  # its own last
    expected = ["al", "f0", "f1", "f2", "f3", "f5", "g1"]
    assert sorted(seen) == expected, (sorted(seen), got)
    # The room as a newcomer after it sees it: the same.
    late, _ = online(srv, "late")
    after = paced_join(late, room, "late")
    lseen, _ = view_of(after, room)
    assert sorted(lseen) == sorted(expected + ["me"]), after


# ---- muc#roomconfig_presencebroadcast ---------------------------------------------------------

def pb_config(c, room, roles, iq_id="pb"):
    """Submits muc#roomconfig_presencebroadcast (a list-multi) with moderatedroom."""
    vals = "".join(f"<value>{r}</value>" for r in roles)
    return iq(c, iq_id, f"<query xmlns='{NS_MUC}#owner'><x xmlns='jabber:x:data' type='submit'>"
                        f"<field var='FORM_TYPE'><value>{NS_MUC}#roomconfig</value></field>"
                        "<field var='muc#roomconfig_moderatedroom'><value>1</value></field>"
                        f"<field var='muc#roomconfig_presencebroadcast'>{vals}</field>"
                        "</x></query>", to=f"{room}@{MUC}")


def pres_of(room, nick, unavailable=False):
    t = r"[^>]*type='unavailable'" if unavailable else ""
    return rf"<presence(?=[^>]*from='{re.escape(room)}@{MUC}/{re.escape(nick)}'){t}[^>]*>.*?</presence>"


def listed(seq, room):
    """The nicks of the presences of a join sequence (its own last)."""
    return re.findall(rf"<presence[^>]*from='{re.escape(room)}@{MUC}/([^']+)'", seq)


def test_presencebroadcast_visitors_not_announced(server_factory):
    """A moderated room broadcasting moderators' and participants' presence
    only (XEP-0045 muc#roomconfig_presencebroadcast, ejabberd's
    presence_broadcast): a visitor's entering reaches its own session (110)
    and nobody else; a newcomer's occupant list leaves visitors out; voice
    granted makes the visitor a participant whose presence everyone gets;
    voice revoked takes it out of the others' view (unavailable, role
    none); a visitor's leaving reaches only itself."""
    srv = start(server_factory, workers=2)
    users(srv, "alice", "bob", "carol", "dave")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    c, _ = online(srv, "carol")
    d, _ = online(srv, "dave")
    room = "quiet"
    create(a, room, "al")
    r = pb_config(a, room, ["moderator", "participant"])
    assert "type='result'" in r, r
    form = iq(a, "f1", f"<query xmlns='{NS_MUC}#owner'/>", typ="get", to=f"{room}@{MUC}")
    field = re.search(r"<field[^>]*var='muc#roomconfig_presencebroadcast'.*?</field>", form).group(0)
    assert "type='list-multi'" in field, field
    assert re.findall(r"<value>([a-z]+)</value>(?!</option)", re.sub(r"<option.*?</option>", "", field)) \
        == ["moderator", "participant"], field
    r = iq(a, "m1", f"<query xmlns='{NS_MUC}#admin'><item jid='bob@localhost' "
                    "affiliation='member'/></query>", to=f"{room}@{MUC}")
    assert "type='result'" in r, r
    seq = join(b, room, "bo")  # a member: participant
    assert listed(seq, room) == ["al", "bo"], seq
    p = expect(a, pres_of(room, "bo"))
    assert "role='participant'" in p, p
    # Carol enters as a visitor: her own presence (110), nobody else hears.
    seq = join(c, room, "ca")
    assert listed(seq, room) == ["al", "bo", "ca"], seq
    assert "role='visitor'" in seq and "code='110'" in seq, seq
    assert_nothing_before(a, pres_of(room, "ca"), after=c)
    assert_nothing_before(b, pres_of(room, "ca"), after=c)
    # Dave (a visitor too) gets the moderator and the participant, not carol.
    seq = join(d, room, "da")
    assert listed(seq, room) == ["al", "bo", "da"], seq
    # Voice for carol: now a participant, announced to everyone.
    r = take_iq(a, "v1", f"<query xmlns='{NS_MUC}#admin'><item nick='ca' role='participant'/></query>",
           to=f"{room}@{MUC}")
    assert "type='result'" in r, r
    for x in (a, b, d):
        p = expect(x, pres_of(room, "ca"))
        assert "role='participant'" in p and "type=" not in p.split(">")[0], p
    p = expect(c, pres_of(room, "ca"))
    assert "role='participant'" in p and "code='110'" in p, p
    # A newcomer's list has her now.
    users(srv, "erin")
    e, _ = online(srv, "erin")
    seq = join(e, room, "er")
    assert listed(seq, room) == ["al", "bo", "ca", "er"], seq
    # Voice revoked: the others see her go (unavailable, role none); she
    # sees herself a visitor.
    r = take_iq(a, "v2", f"<query xmlns='{NS_MUC}#admin'><item nick='ca' role='visitor'/></query>",
           to=f"{room}@{MUC}")
    assert "type='result'" in r, r
    for x in (a, b, d):
        p = expect(x, pres_of(room, "ca", unavailable=True))
        assert "role='none'" in p, p
    p = expect(c, pres_of(room, "ca"))
    assert "role='visitor'" in p and "code='110'" in p and "unavailable" not in p, p
    # A visitor's leaving: only its own session hears of it.
    d.send(f"<presence to='{room}@{MUC}/da' type='unavailable'/>")
    p = expect(d, pres_of(room, "da", unavailable=True))
    assert "code='110'" in p, p
    assert_nothing_before(a, pres_of(room, "da", unavailable=True), after=d)
    assert_nothing_before(b, pres_of(room, "da", unavailable=True), after=d)
    # Messages still reach visitors.
    groupchat(a, room, "to all", "pb1")
    for x in (b, c, e):
        expect(x, r"<message[^>]*id='pb1'")


def test_presencebroadcast_default_all_and_service_default(server_factory):
    """Without configuration every role is broadcast (the form says
    moderator, participant, visitor); the service's
    default_presence_broadcast sets a new room's list, so a visitor of a
    big room costs no presence to the others from its first entering; a
    value that is not a role is refused with not-acceptable."""
    srv = start(server_factory, workers=1, opts="default_presence_broadcast: [moderator]")
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    create(a, "lobby", "al")
    form = iq(a, "f1", f"<query xmlns='{NS_MUC}#owner'/>", typ="get", to=f"lobby@{MUC}")
    field = re.search(r"<field[^>]*var='muc#roomconfig_presencebroadcast'.*?</field>", form).group(0)
    assert re.findall(r"<value>([a-z]+)</value>", re.sub(r"<option.*?</option>", "", field)) \
        == ["moderator"], field
    seq = join(b, "lobby", "bo")  # a participant, not broadcast here
    assert listed(seq, "lobby") == ["al", "bo"], seq
    assert_nothing_before(a, pres_of("lobby", "bo"), after=b)
    r = pb_config(a, "lobby", ["moderator", "chatty"], "bad")
    assert "type='error'" in r and "not-acceptable" in r, r
    srv2 = start(server_factory, workers=1)
    users(srv2, "carol")
    c, _ = online(srv2, "carol")
    create(c, "plain", "ca")
    form = iq(c, "f2", f"<query xmlns='{NS_MUC}#owner'/>", typ="get", to=f"plain@{MUC}")
    field = re.search(r"<field[^>]*var='muc#roomconfig_presencebroadcast'.*?</field>", form).group(0)
    assert re.findall(r"<value>([a-z]+)</value>", re.sub(r"<option.*?</option>", "", field)) \
        == ["moderator", "participant", "visitor"], field


@pytest.mark.parametrize("option, bad", [("default_presence_broadcast", "boss"),
                                         ("default_getmemberlist", "owner")])
def test_bad_role_list_is_a_config_error(tmp_path, option, bad):
    """A service default that lists roles (default_presence_broadcast,
    default_getmemberlist) with something that is not a role: the
    configuration is refused by --check-config, with where (file and line)
    and the value."""
    import os
    import subprocess
    from conftest import build_dir
    cfg = tmp_path / "x.yml"
    cfg.write_text(f"modules:\n  mod_muc:\n    {option}: [moderator, {bad}]\n")
    r = subprocess.run([os.path.join(build_dir(), "xmppd"), "--check-config", "-c", str(cfg)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "x.yml:3" in r.stderr and bad in r.stderr, r.stderr


def test_presencebroadcast_survives_restart(server_factory):
    """A persistent room keeps its presencebroadcast list (stored with its
    configuration) across a restart, an empty list (no role) included."""
    srv = start(server_factory, workers=1)
    users(srv, "alice")
    a, _ = online(srv, "alice")
    for room, roles in (("kept", ["participant", "visitor"]), ("none", [])):
        create(a, room, "al")
        vals = "".join(f"<value>{r}</value>" for r in roles)
        r = iq(a, "p" + room, f"<query xmlns='{NS_MUC}#owner'><x xmlns='jabber:x:data' type='submit'>"
                              f"<field var='FORM_TYPE'><value>{NS_MUC}#roomconfig</value></field>"
                              "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
                              f"<field var='muc#roomconfig_presencebroadcast'>{vals}</field>"
                              "</x></query>", to=f"{room}@{MUC}")
        assert "type='result'" in r, r
    a.roundtrip()
    srv.stop()
    srv.restart()
    a, _ = online(srv, "alice")
    for room, roles in (("kept", ["participant", "visitor"]), ("none", [])):
        form = iq(a, "f" + room, f"<query xmlns='{NS_MUC}#owner'/>", typ="get", to=f"{room}@{MUC}")
        field = re.search(r"<field[^>]*var='muc#roomconfig_presencebroadcast'.*?</field>",
                          form).group(0)
        assert re.findall(r"<value>([a-z]+)</value>", re.sub(r"<option.*?</option>", "", field)) \
            == roles, field


def room_form(c, room, fields, iq_id):
    """Submits a muc#roomconfig form: fields maps a field (after
    muc#roomconfig_) to a value or a list of values (list-multi).  Takes
    its answer out: what came before it stays buffered."""
    out = ""
    for k, v in fields.items():
        vals = "".join(f"<value>{x}</value>" for x in (v if isinstance(v, list) else [v]))
        out += f"<field var='muc#roomconfig_{k}'>{vals}</field>"
    return take_iq(c, iq_id, f"<query xmlns='{NS_MUC}#owner'><x xmlns='jabber:x:data' "
                             f"type='submit'><field var='FORM_TYPE'><value>{NS_MUC}#roomconfig"
                             f"</value></field>{out}</x></query>", to=f"{room}@{MUC}")


_room_pings = iter(range(1, 1 << 30))


def room_roundtrip(c, room):
    """A ping to the room and its answer: the room answers on its owner
    worker after what it did before, and its answer takes the way of what it
    sent c, so everything the room sent c before is ahead of it.  Returns
    what arrived ahead of it (it stays buffered), quotes normalised."""
    pid = f"rp{next(_room_pings)}"
    c.send(f"<iq type='get' id='{pid}' to='{room}@{MUC}'><ping xmlns='urn:xmpp:ping'/></iq>")
    seen, m = c.before(rf"<iq[^>]*id='{pid}'[^>]*(/>|>.*?</iq>)")
    assert "type='result'" in q(m.group(0)), m.group(0)
    return q(seen)


def first_tag(p):
    return p.split(">")[0]


def moderated_room_with_bob_member(a, room):
    """alice (a) creates a moderated room (nick al) and makes bob a member,
    so that bob enters as a participant and the others as visitors."""
    create(a, room, "al")
    r = room_form(a, room, {"moderatedroom": 1}, "mod")
    assert "type='result'" in r, r
    r = iq(a, "m1", f"<query xmlns='{NS_MUC}#admin'><item jid='bob@localhost' "
                    "affiliation='member'/></query>", to=f"{room}@{MUC}")
    assert "type='result'" in r, r


def test_presencebroadcast_change_while_occupied(server_factory):
    """presencebroadcast changed by the owner while occupants are in: the
    occupants of roles no longer broadcast leave the others' view (an
    unavailable presence, role none, as a leave: they themselves stay in,
    hear nothing of it and keep receiving), and newcomers' lists leave
    them out; the occupants of roles broadcast again are announced to
    everybody with their current presence as a newcomer gets it (the real
    JID to those who may see it, their role and affiliation, occupant-id)
    and are in newcomers' lists again.  Voice granted and revoked after the
    change follow the new list."""
    srv = start(server_factory, workers=2)
    users(srv, "alice", "bob", "carol", "dave", "erin", "frank")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    c, cjid = online(srv, "carol")
    d, _ = online(srv, "dave")
    room = "shift"
    moderated_room_with_bob_member(a, room)
    join(b, room, "bo")                     # participant
    join(c, room, "ca")                     # visitor
    join(d, room, "da")                     # visitor
    for x in (a, b, c, d):
        room_roundtrip(x, room)
        x.buf = b""
    # Visitors no longer broadcast: the others see them go, they stay.
    r = room_form(a, room, {"presencebroadcast": ["moderator", "participant"]}, "pb1")
    assert "type='result'" in r, r
    for x, gone in ((a, ("ca", "da")), (b, ("ca", "da")), (c, ("da",)), (d, ("ca",))):
        for nick in gone:
            p = q(x.take(pres_of(room, nick, unavailable=True)).group(0))
            assert "role='none'" in p and "code='110'" not in p, p
    for x, me in ((c, "ca"), (d, "da")):
        seen = room_roundtrip(x, room)
        assert not re.search(pres_of(room, me, unavailable=True), seen, re.S), seen
    for x in (a, b):
        seen = room_roundtrip(x, room)
        assert not re.search(r"<presence[^>]*type='unavailable'", seen), seen
    # Carol is still in: she gets messages, her presence reaches only her.
    groupchat(a, room, "still here?", "g1")
    expect(c, r"<message[^>]*id='g1'")
    c.send(f"<presence to='{room}@{MUC}/ca'><show>away</show><status>later</status></presence>")
    p = expect(c, pres_of(room, "ca"))
    assert "code='110'" in p and "<show>away</show>" in p, p
    assert_nothing_before(a, pres_of(room, "ca"), barrier=None, after=c)
    assert not re.search(pres_of(room, "ca"), room_roundtrip(b, room), re.S)
    # A newcomer (a visitor) gets the moderator and the participant only.
    e, _ = online(srv, "erin")
    seq = join(e, room, "er")
    assert listed(seq, room) == ["al", "bo", "er"], seq
    # Participants no longer either: bob leaves the others' view.
    r = room_form(a, room, {"presencebroadcast": ["moderator"]}, "pb2")
    assert "type='result'" in r, r
    for x in (a, c, d, e):
        p = q(x.take(pres_of(room, "bo", unavailable=True)).group(0))
        assert "role='none'" in p, p
    seen = room_roundtrip(b, room)
    assert not re.search(r"<presence[^>]*type='unavailable'", seen), seen
    # Everybody again: bob, carol, dave and erin are announced to the
    # others, as a newcomer sees them (alice, a moderator, sees real JIDs).
    for x in (a, b, c, d, e):
        room_roundtrip(x, room)
        x.buf = b""
    r = room_form(a, room, {"presencebroadcast": ["moderator", "participant", "visitor"]}, "pb3")
    assert "type='result'" in r, r
    back = {"bo": "participant", "ca": "visitor", "da": "visitor", "er": "visitor"}
    for x, me in ((a, None), (b, "bo"), (c, "ca"), (d, "da"), (e, "er")):
        for nick, role in back.items():
            if nick == me:
                continue
            p = q(x.take(pres_of(room, nick)).group(0))
            assert "type=" not in first_tag(p) and f"role='{role}'" in p, p
            assert "code='110'" not in p and "urn:xmpp:occupant-id:0" in p, p
            aff = "member" if nick == "bo" else "none"
            assert f"affiliation='{aff}'" in p, p
            assert ("jid=" in p.split("<item")[1].split(">")[0]) == (x is a), p
            if nick == "ca":
                assert "<show>away</show>" in p, p
                assert (f"jid='{cjid}'" in p) == (x is a), p
        seen = room_roundtrip(x, room)
        assert not re.search(r"<presence", seen), seen
    f, _ = online(srv, "frank")
    seq = join(f, room, "fr")
    assert listed(seq, room) == ["al", "bo", "ca", "da", "er", "fr"], seq
    ca = re.search(pres_of(room, "ca"), seq, re.S).group(0)
    assert "<show>away</show>" in ca and "<status>later</status>" in ca, ca
    # Voice follows the list in force: with visitors not broadcast again,
    # voice for dave announces him, revoking it takes him out of view.
    r = room_form(a, room, {"presencebroadcast": ["moderator", "participant"]}, "pb4")
    assert "type='result'" in r, r
    for x, me in ((a, None), (b, None), (c, "ca"), (d, "da"), (e, "er"), (f, "fr")):
        for nick in ("ca", "da", "er", "fr"):
            if nick != me:
                x.take(pres_of(room, nick, unavailable=True))
        room_roundtrip(x, room)
        x.buf = b""
    r = take_iq(a, "v1", f"<query xmlns='{NS_MUC}#admin'><item nick='da' role='participant'/>"
                         "</query>", to=f"{room}@{MUC}")
    assert "type='result'" in r, r
    for x in (a, b, c, e, f):
        p = q(x.take(pres_of(room, "da")).group(0))
        assert "type=" not in first_tag(p) and "role='participant'" in p, p
    r = take_iq(a, "v2", f"<query xmlns='{NS_MUC}#admin'><item nick='da' role='visitor'/>"
                         "</query>", to=f"{room}@{MUC}")
    assert "type='result'" in r, r
    for x in (a, b, c, e, f):
        p = q(x.take(pres_of(room, "da", unavailable=True)).group(0))
        assert "role='none'" in p, p


def test_presencebroadcast_widened_announces_hidden_occupants(server_factory):
    """Visitors not broadcast from the room's creation (the service's
    default_presence_broadcast): when the owner adds visitor to the list
    the visitors in the room are announced to the others, each as a
    newcomer's list has it (its show and status, the real JID to the
    moderator only, occupant-id), nothing goes to the visitor itself, and
    a newcomer's list has them."""
    srv = start(server_factory, workers=2, opts="default_presence_broadcast: [moderator, participant]")
    users(srv, "alice", "bob", "carol", "dave")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    c, cjid = online(srv, "carol")
    room = "widen"
    moderated_room_with_bob_member(a, room)
    join(b, room, "bo")
    c.send(f"<presence to='{room}@{MUC}/ca'><x xmlns='{NS_MUC}'/><show>dnd</show>"
           "<status>busy</status></presence>")
    seq = expect(c, r"(?s)^.*?<message[^>]*>\s*<subject[^>]*(/>|>.*?</subject>).*?</message>")
    assert "role='visitor'" in seq, seq
    for x in (a, b, c):
        assert not re.search(pres_of(room, "ca"), room_roundtrip(x, room), re.S)
        x.buf = b""
    r = room_form(a, room, {"presencebroadcast": ["moderator", "participant", "visitor"]}, "pb")
    assert "type='result'" in r, r
    for x in (a, b):
        p = q(x.take(pres_of(room, "ca")).group(0))
        assert "type=" not in first_tag(p) and "role='visitor'" in p, p
        assert "affiliation='none'" in p and "code='110'" not in p, p
        assert "<show>dnd</show>" in p and "<status>busy</status>" in p, p
        assert "urn:xmpp:occupant-id:0" in p, p
        assert (f"jid='{cjid}'" in p) == (x is a), p
    assert not re.search(r"<presence", room_roundtrip(c, room)), c.buf
    d, _ = online(srv, "dave")
    seq = join(d, room, "da")
    assert listed(seq, room) == ["al", "bo", "ca", "da"], seq


def test_presencebroadcast_change_in_persistent_room_and_restart(server_factory):
    """A persistent room whose presencebroadcast is narrowed while a visitor
    is in: the others see the visitor go at once; after a restart the stored
    list holds: a visitor entering is not announced, a newcomer's list
    leaves it out."""
    srv = start(server_factory, workers=1)
    users(srv, "alice", "bob", "carol")
    a, _ = online(srv, "alice")
    c, _ = online(srv, "carol")
    room = "kept2"
    create(a, room, "al")
    r = room_form(a, room, {"persistentroom": 1, "moderatedroom": 1}, "p1")
    assert "type='result'" in r, r
    join(c, room, "ca")                     # visitor, announced (all roles)
    expect(a, pres_of(room, "ca"))
    r = room_form(a, room, {"presencebroadcast": ["moderator", "participant"]}, "pb1")
    assert "type='result'" in r, r
    p = q(a.take(pres_of(room, "ca", unavailable=True)).group(0))
    assert "role='none'" in p, p
    a.roundtrip()
    srv.stop()
    srv.restart()
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    c, _ = online(srv, "carol")
    seq = join(a, room, "al")
    assert listed(seq, room) == ["al"], seq
    seq = join(c, room, "ca")
    assert "role='visitor'" in seq, seq
    assert not re.search(pres_of(room, "ca"), room_roundtrip(a, room), re.S)
    seq = join(b, room, "bo")
    assert listed(seq, room) == ["al", "bo"], seq

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


def test_presencebroadcast_bad_service_default_is_a_config_error(tmp_path):
    """default_presence_broadcast with something that is not a role: the
    configuration is refused, with where and why."""
    import os
    import subprocess
    from conftest import build_dir
    cfg = tmp_path / "x.yml"
    cfg.write_text("modules:\n  mod_muc:\n    default_presence_broadcast: [moderator, boss]\n")
    r = subprocess.run([os.path.join(build_dir(), "xmppd"), "--check-config", "-c", str(cfg)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "x.yml:3" in r.stderr and "boss" in r.stderr, r.stderr


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

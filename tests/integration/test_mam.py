"""mod_mam (XEP-0313, urn:xmpp:mam:2) through the wire: both directions
archived, queries with the form fields and RSM paging, preferences, hints,
carbons, account removal, durability against kill -9.

Barriers: a message's archive rows are committed before the sender's next
stanza is handled (the sender's stream is held, xmppd/input.h), so after
the sender's round trip a query sees every message it sent."""
import re
import signal

import pytest

from helpers import iq, online, q, reply_rx, users
from helpers import slixmpp_mam_bodies
from test_durability import restart_after

NS = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
MODS = "modules:\n  mod_roster: {}\n  mod_stanza_id: {}\n  mod_carbons: {}\n  mod_mam:\n"


def start(server_factory, **opts):
    yaml = MODS + "".join(f"    {k}: {v}\n" for k, v in opts.items())
    if not opts:
        yaml = MODS.rstrip(":\n") + ": {}\n"
    srv = server_factory(extra_yaml=yaml)
    users(srv, "alice", "bob", "carol")
    return srv


def chat(c, to, body, mid, extra=""):
    c.send(f"<message to='{to}' type='chat' id='{mid}'><body>{body}</body>{extra}</message>")


def form(**fields):
    f = "".join(
        f"<field var='{k.replace('_', '-')}'>"
        + "".join(f"<value>{x}</value>" for x in (v if isinstance(v, list) else [v]))
        + "</field>" for k, v in fields.items())
    return (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{NS}</value></field>{f}</x>")


_qid = iter(range(1, 1000000))


def mam(c, rsm="", flip=False, to=None, **fields):
    """Runs a query; returns (results as (id, body), fin reply text)."""
    n = next(_qid)
    body = (f"<query xmlns='{NS}' queryid='q{n}'>{form(**fields) if fields else ''}"
            f"{f'<set xmlns={chr(39)}{RSM}{chr(39)}>{rsm}</set>' if rsm else ''}"
            f"{'<flip-page/>' if flip else ''}</query>")
    t = f" to='{to}'" if to else ""
    c.send(f"<iq type='set' id='mq{n}'{t}>{body}</iq>")
    m = c.recv_until(reply_rx(f"mq{n}"))
    seen = q(m.string[:m.start()])
    res = []
    for r in re.findall(r"<message[^>]*>\s*<result xmlns='urn:xmpp:mam:2'.*?</message>\s*"
                        r"</forwarded>\s*</result>\s*</message>", seen, re.S):
        assert f"queryid='q{n}'" in r, r
        rid = re.search(r"<result[^>]*\bid='([^']+)'", r).group(1)
        b = re.search(r"<body>([^<]*)</body>", r)
        res.append((rid, b.group(1) if b else None, r))
    return res, q(m.group(0))


def bodies(res):
    return [b for _, b, _ in res]


def fin_set(fin):
    first = re.search(r"<first index='(\d+)'>([^<]+)</first>", fin)
    last = re.search(r"<last>([^<]+)</last>", fin)
    count = re.search(r"<count>(\d+)</count>", fin)
    return (first and (int(first.group(1)), first.group(2)), last and last.group(1),
            count and int(count.group(1)), "complete='true'" in fin)


def test_both_directions_same_id_and_disco(server_factory):
    srv = start(server_factory)
    a, ajid = online(srv, "alice", "pc")
    b, bjid = online(srv, "bob", "pc")
    r = iq(a, "d1", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to="alice@localhost")
    assert f"var='{NS}'" in r and f"var='{NS}#extended'" in r, r
    # The form.
    r = iq(a, "f1", f"<query xmlns='{NS}'/>", typ="get")
    for v in ("FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"):
        assert f"var='{v}'" in r, r
    chat(a, "bob@localhost", "hello bob", "m1")
    got = q(b.recv_until(r"<message[^>]*id='m1'.*?</message>").group(0))
    # bob's copy carries his archive's id, not alice's.
    sid = re.search(r"<stanza-id xmlns='urn:xmpp:sid:0' id='([^']+)' by='bob@localhost'/>", got)
    assert sid, got
    assert "by='alice@localhost'" not in got, got
    # Delivery does not wait for the archive: only alice's round trip
    # proves m1 written (in both archives) before bob's answer is.
    a.roundtrip()
    chat(b, "alice@localhost", "hi alice", "m2")
    a.recv_until(r"<message[^>]*id='m2'.*?</message>")
    b.roundtrip()
    res, fin = mam(b)
    assert bodies(res) == ["hello bob", "hi alice"], res
    assert res[0][0] == sid.group(1)  # the delivered stanza-id is the archive id
    assert "<delay xmlns='urn:xmpp:delay' stamp='" in res[0][2], res[0][2]
    assert f"to='{bjid}'" in res[0][2] and "from='bob@localhost'" in res[0][2]
    assert "<message xmlns='jabber:client'" in res[0][2] or "<forwarded xmlns='urn:xmpp:forward:0'>" \
        "<delay" in res[0][2]
    assert "type='result'" in fin and "complete='true'" in fin, fin
    res, fin = mam(a)
    assert bodies(res) == ["hello bob", "hi alice"], res
    assert fin_set(fin)[2] == 2
    # Another account's archive.
    r = iq(a, "x1", f"<query xmlns='{NS}'/>", to="bob@localhost")
    assert "type='error'" in r and "<forbidden" in r, r


def test_paging_filters_and_errors(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    c, _ = online(srv, "carol", "pc")
    for i in range(27):
        chat(a, "bob@localhost", f"b{i}", f"x{i}")
    chat(a, "carol@localhost", "c0", "y0")
    a.roundtrip()
    want = [f"b{i}" for i in range(27)] + ["c0"]
    # Forward through everything, 10 at a time.
    got, after, pages = [], None, 0
    while True:
        rsm = "<max>10</max>" + (f"<after>{after}</after>" if after else "")
        res, fin = mam(a, rsm=rsm)
        first, last, count, complete = fin_set(fin)
        assert count == 28, fin
        assert first[0] == len(got), fin
        got += bodies(res)
        pages += 1
        after = last
        if complete:
            break
    assert got == want and pages == 3
    # Backwards from the last page.
    got, before, pages = [], "", 0
    while True:
        res, fin = mam(a, rsm=f"<max>10</max><before>{before}</before>")
        first, last, count, complete = fin_set(fin)
        got = bodies(res) + got
        assert first[0] == 28 - len(got), fin
        pages += 1
        before = first[1]
        if complete:
            break
    assert got == want and pages == 3
    # flip-page: the same page, newest first.
    res, fin = mam(a, rsm="<max>5</max><before/>", flip=True)
    assert bodies(res) == list(reversed(want[-5:])), res
    # with: only carol; a full JID with another resource: nothing.
    res, _ = mam(a, **{"with": "carol@localhost"})
    assert bodies(res) == ["c0"]
    res, _ = mam(a, **{"with": "carol@localhost/other"})
    assert bodies(res) == []
    res, _ = mam(a, **{"with": "carol@localhost/pc"})
    assert bodies(res) == []  # alice sent to the bare JID: no resource archived
    # ids, after-id, before-id.
    all_res, _ = mam(a)
    ids = [r[0] for r in all_res]
    res, _ = mam(a, ids=[ids[5], ids[2]])
    assert bodies(res) == ["b2", "b5"]
    res, _ = mam(a, after_id=ids[20], before_id=ids[24])
    assert bodies(res) == ["b21", "b22", "b23"]
    # start / end: from the 11th message's time on, up to the 13th.
    stamps = [re.search(r"stamp='([^']+)'", r[2]).group(1) for r in all_res]
    res, _ = mam(a, start=stamps[10], end=stamps[12])
    assert bodies(res) == ["b10", "b11", "b12"]
    res, _ = mam(a, start="2100-01-01T00:00:00Z")
    assert res == []
    # Errors.
    _, fin = mam(a, rsm="<after>nosuchid</after>")
    assert "<item-not-found" in fin, fin
    _, fin = mam(a, after_id="nosuchid")
    assert "<item-not-found" in fin, fin
    _, fin = mam(a, ids=["nosuchid"])
    assert "<item-not-found" in fin, fin
    _, fin = mam(a, start="yesterday")
    assert "<bad-request" in fin, fin
    _, fin = mam(a, unknown_field="x")
    assert "<bad-request" in fin, fin
    _, fin = mam(a, rsm="<max>lots</max>")
    assert "<bad-request" in fin, fin
    # max_page caps <max/> (250 by default: all 28 here); max 0: just the count.
    res, fin = mam(a, rsm="<max>0</max>")
    assert res == [] and fin_set(fin)[2] == 28 and "complete='false'" in fin, fin


def test_max_page_caps_a_page(server_factory):
    srv = start(server_factory, max_page=3)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    for i in range(5):
        chat(a, "bob@localhost", f"b{i}", f"x{i}")
    a.roundtrip()
    res, fin = mam(a, rsm="<max>100</max>")
    assert bodies(res) == ["b0", "b1", "b2"] and "complete='false'" in fin, fin
    res, fin = mam(a)
    assert len(res) == 3, res
    # ids beyond max_page: refused.
    _, fin = mam(a, ids=["a", "b", "c", "d"])
    assert "<policy-violation" in fin, fin


def test_count_is_bounded_by_max_count(server_factory):
    """<count/> and <first index/> are given only while at most max_count
    messages are counted (XEP-0059 lets them be left out when expensive),
    so a page costs the same in any archive size; <max>0</max> asks for
    the count alone and gets it exact."""
    srv = start(server_factory, max_count=5)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    c, _ = online(srv, "carol", "pc")
    for i in range(9):
        chat(a, "bob@localhost", f"b{i}", f"x{i}")
    for i in range(5):
        chat(a, "carol@localhost", f"c{i}", f"y{i}")
    a.roundtrip()
    # 14 messages match: no count; the first page starts the set: index 0.
    res, fin = mam(a, rsm="<max>3</max>")
    first, last, count, _ = fin_set(fin)
    assert bodies(res) == ["b0", "b1", "b2"] and count is None and first[0] == 0, fin
    assert "<count>" not in fin, fin
    # After the 3rd: 3 messages precede the page, counted.
    res, fin = mam(a, rsm=f"<max>3</max><after>{last}</after>")
    first, last, count, _ = fin_set(fin)
    assert bodies(res) == ["b3", "b4", "b5"] and first[0] == 3 and count is None, fin
    # The last page: 11 precede it, more than max_count: no index.
    res, fin = mam(a, rsm="<max>3</max><before/>")
    assert bodies(res) == ["c2", "c3", "c4"], res
    assert re.search(r"<first>[^<]+</first>", fin) and "<count>" not in fin, fin
    # with= carol: 5 match, exactly max_count: counted, index 2 on the last page.
    res, fin = mam(a, rsm="<max>3</max><before/>", **{"with": "carol@localhost"})
    first, last, count, complete = fin_set(fin)
    assert bodies(res) == ["c2", "c3", "c4"] and count == 5 and first[0] == 2, fin
    # <max>0</max>: the count alone, exact beyond max_count.
    res, fin = mam(a, rsm="<max>0</max>")
    assert res == [] and fin_set(fin)[2] == 14, fin


def test_what_is_not_archived(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    a2, _ = online(srv, "alice", "phone")
    b, _ = online(srv, "bob", "pc")
    a2.send("<iq type='set' id='cb'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    a2.recv_until(reply_rx("cb"))
    hints = "urn:xmpp:hints"
    chat(a, "bob@localhost", "nps", "h1", f"<no-permanent-store xmlns='{hints}'/>")
    chat(a, "bob@localhost", "ns", "h2", f"<no-store xmlns='{hints}'/>")
    a.send("<message to='bob@localhost' type='headline' id='h3'><body>hl</body></message>")
    a.send("<message to='bob@localhost' type='chat' id='h4'>"
           "<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    a.send(f"<message to='bob@localhost' type='chat' id='h5'><store xmlns='{hints}'/>"
           "<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    a.send("<message to='bob@localhost' type='chat' id='h6'>"
           "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted>"
           "</message>")
    chat(a, "bob@localhost", "carbon", "h7")
    # alice's other resource gets the sent carbon, with the archive's id.
    sent = q(a2.recv_until(r"<message[^>]*>\s*<sent[^>]*>\s*<forwarded[^>]*>\s*"
                           r"<message[^>]*id=.h7.*?</message>\s*</forwarded>\s*</sent>"
                           r"\s*</message>").group(0))
    sid = re.search(r"<stanza-id xmlns='urn:xmpp:sid:0' id='([^']+)' by='alice@localhost'/>",
                    sent)
    assert sid, sent
    a.roundtrip()
    res, _ = mam(a)
    assert [r[2].count("id='h") for r in res] and [re.search(r"<message[^>]*id='(h\d)'",
                                                             r[2].split("<forwarded")[1]).group(1)
                                                   for r in res] == ["h5", "h6", "h7"], res
    assert res[2][0] == sid.group(1)  # the carbon's id is the archive id
    b.roundtrip()
    res, _ = mam(b)  # one copy each, though carbons were on
    assert len(res) == 3, res


def test_prefs(server_factory):
    srv = start(server_factory, max_prefs_jids=2)
    a, _ = online(srv, "alice", "pc", roster=True)
    b, _ = online(srv, "bob", "pc")
    c, _ = online(srv, "carol", "pc")
    r = iq(a, "p0", f"<prefs xmlns='{NS}'/>", typ="get")
    assert "default='always'" in r, r
    r = iq(a, "p1", f"<prefs xmlns='{NS}' default='never'><always><jid>carol@localhost</jid>"
                    f"</always><never/></prefs>")
    assert "default='never'" in r and "<jid>carol@localhost</jid>" in r, r
    chat(a, "bob@localhost", "to bob", "n1")
    chat(a, "carol@localhost", "to carol", "n2")
    a.roundtrip()
    res, _ = mam(a)
    assert bodies(res) == ["to carol"], res
    # roster: bob only once he is in alice's roster with a subscription.
    r = iq(a, "p2", f"<prefs xmlns='{NS}' default='roster'/>")
    assert "default='roster'" in r, r
    chat(a, "bob@localhost", "before roster", "n3")
    a.send("<presence to='bob@localhost' type='subscribe'/>")
    b.recv_until(r"<presence[^>]*type='subscribe'")
    b.send("<presence to='alice@localhost' type='subscribed'/>")
    a.recv_until(r"<presence[^>]*type='subscribed'")
    chat(a, "bob@localhost", "in roster", "n4")
    a.roundtrip()
    res, _ = mam(a)
    assert bodies(res) == ["to carol", "in roster"], res
    # Limits and bad input.
    r = iq(a, "p3", f"<prefs xmlns='{NS}' default='always'><always><jid>x@y</jid><jid>z@y</jid>"
                    f"</always><never><jid>w@y</jid></never></prefs>")
    assert "<not-acceptable" in r, r
    r = iq(a, "p4", f"<prefs xmlns='{NS}' default='sometimes'/>")
    assert "<bad-request" in r, r
    r = iq(a, "p5", f"<prefs xmlns='{NS}' default='always'><never><jid>@@</jid></never></prefs>")
    assert "<jid-malformed" in r, r


def test_removal_and_delete_old(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    chat(a, "bob@localhost", "one", "r1")
    a.roundtrip()
    r = srv.ctl_run("delete_old_mam_messages", "1")
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stdout + r.stderr
    res, _ = mam(a)
    assert len(res) == 1
    r = srv.ctl_run("delete_old_mam_messages", "0")
    assert r.returncode == 0 and r.stdout.strip() == "2", r.stdout + r.stderr
    res, _ = mam(a)
    assert res == []
    chat(a, "bob@localhost", "two", "r2")
    a.roundtrip()
    r = srv.ctl_run("unregister", "bob", "localhost")
    assert r.returncode == 0, r.stdout + r.stderr
    users(srv, "bob")
    b, _ = online(srv, "bob", "pc")
    b.roundtrip()
    res, _ = mam(b)
    assert res == [], res


def test_archive_survives_kill_9(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    n = 150
    a.send("".join(f"<message to='bob@localhost' type='chat' id='k{i}'><body>k{i}</body>"
                   f"</message>" for i in range(n)))
    assert "error" not in q(a.roundtrip())
    restart_after(srv, signal.SIGKILL)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    for c in (a, b):
        got, after = [], None
        while True:
            res, fin = mam(c, rsm="<max>100</max>" + (f"<after>{after}</after>" if after else ""))
            got += bodies(res)
            if "complete='true'" in fin:
                break
            after = fin_set(fin)[1]
        assert got == [f"k{i}" for i in range(n)]


def test_slixmpp_pages_through_the_archive(server_factory):
    """slixmpp's XEP-0313 plugin (iterate, RSM pages of 10) reads all 25
    messages of an archive, in order."""
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    for i in range(25):
        chat(a, "bob@localhost", f"s{i}", f"s{i}")
    a.roundtrip()
    got = slixmpp_mam_bodies(srv, "alice@localhost/sx")
    assert got == [f"s{i}" for i in range(25)], got


# ---- the journal (mod_mam.c "The writer"): appended at the ack, indexed later ----

# Nothing is indexed by the background policy: only a reader's drain, the
# bound, a stop or the replay at start move records into the archive.
NO_BG = {"journal_idle": "1h", "journal_index_records": 100000000}


def journal_records(srv, host="localhost"):
    """(records, bytes) in the host's journal files (mam_journal.h framing)."""
    import glob
    import os
    import struct
    n = size = 0
    for path in glob.glob(os.path.join(srv.data_dir, "mam-journal", host, "*.log")):
        data = open(path, "rb").read()
        assert data[:8] == b"XDMAMJ1\n", path
        size += len(data) - 16
        off = 16
        while off + 8 <= len(data):
            plen, _ = struct.unpack_from("=II", data, off)
            off += 8 + plen
            n += 1
    return n, size


def journal_ids(srv, host="localhost", of=None):
    """{username: {archive ids}} of the records in the journal files of
    host's mod_mam whose archive is on domain `of` (all when None), read
    from the start of each file: records already indexed may still be
    there (mam_journal.h payload: version (2), dir, ts, then host,
    username, id, ... each a uint32 length, the bytes and a NUL; version 1
    had a flags byte after the version)."""
    import glob
    import os
    import struct
    ids = {}
    for path in glob.glob(os.path.join(srv.data_dir, "mam-journal", host, "*.log")):
        data = open(path, "rb").read()
        off = 16
        while off + 8 <= len(data):
            plen, _ = struct.unpack_from("=II", data, off)
            p, fields = off + 8 + (11 if data[off + 8] == 1 else 10), []
            for _ in range(3):  # host, username, id
                n, = struct.unpack_from("=I", data, p)
                fields.append(data[p + 4:p + 4 + n].decode())
                p += 4 + n + 1
            if of is None or fields[0] == of:
                ids.setdefault(fields[1], set()).add(fields[2])
            off += 8 + plen
    return ids


def all_bodies(c):
    got, after = [], None
    while True:
        res, fin = mam(c, rsm="<max>100</max>" + (f"<after>{after}</after>" if after else ""))
        got += bodies(res)
        if "complete='true'" in fin:
            return got
        after = fin_set(fin)[1]


def test_query_right_after_ack_sees_the_journal(server_factory):
    """A message answered (its sender's round trip done) is in the journal,
    not yet in the archive: a query, the metadata, an export and
    delete_old_mam_messages all see it (they drain the journal first)."""
    srv = start(server_factory, **NO_BG)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    chat(a, "bob@localhost", "fresh", "j1")
    a.roundtrip()
    assert journal_records(srv)[0] == 2  # alice's copy and bob's, not indexed yet
    res, _ = mam(b)
    assert bodies(res) == ["fresh"], res
    # bob's record indexed by his query; the file keeps both until the
    # indexer passes (alice's waits for her own reader).
    assert journal_records(srv)[0] == 2
    chat(a, "bob@localhost", "fresher", "j2")
    a.roundtrip()
    r = iq(a, "md", f"<metadata xmlns='{NS}'/>", typ="get")
    ids = re.findall(r"<(?:start|end) id='([^']+)'", r)
    assert len(ids) == 2 and ids[0] != ids[1], r
    chat(a, "bob@localhost", "third", "j3")
    a.roundtrip()
    out = srv.data_dir + "/alice.xml"
    r = srv.ctl_run("export_mam", "alice", "localhost", out)
    assert r.returncode == 0 and r.stdout.strip() == "3", r.stdout + r.stderr
    chat(a, "bob@localhost", "fourth", "j4")
    a.roundtrip()
    r = srv.ctl_run("delete_old_mam_messages", "0")
    assert r.returncode == 0 and r.stdout.strip() == "8", r.stdout + r.stderr


def test_journal_replayed_exactly_once_after_kill_9(server_factory):
    """Answered messages still in the journal when the server is killed are
    indexed at the next start, each once, in order; a second kill right
    after the replay adds nothing twice."""
    srv = start(server_factory, **NO_BG)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    n = 150
    a.send("".join(f"<message to='bob@localhost' type='chat' id='k{i}'><body>k{i}</body>"
                   f"</message>" for i in range(n)))
    assert "error" not in q(a.roundtrip())
    # bob's first half indexed by his query (the journal's offset stays:
    # the replay meets those records again), the rest left in the journal.
    assert len(all_bodies(b)) == n
    a.send("".join(f"<message to='bob@localhost' type='chat' id='l{i}'><body>l{i}</body>"
                   f"</message>" for i in range(n)))
    assert "error" not in q(a.roundtrip())
    assert journal_records(srv)[0] == 4 * n
    restart_after(srv, signal.SIGKILL)
    assert journal_records(srv)[0] == 0  # replayed before serving
    restart_after(srv, signal.SIGKILL)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    want = [f"k{i}" for i in range(n)] + [f"l{i}" for i in range(n)]
    for c in (a, b):
        assert all_bodies(c) == want


def test_graceful_stop_indexes_the_journal(server_factory):
    srv = start(server_factory, **NO_BG)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    for i in range(30):
        chat(a, "bob@localhost", f"g{i}", f"g{i}")
    a.roundtrip()
    assert journal_records(srv)[0] == 60
    restart_after(srv, signal.SIGTERM)
    assert journal_records(srv)[0] == 0  # indexed at the stop
    b, _ = online(srv, "bob", "pc")
    assert all_bodies(b) == [f"g{i}" for i in range(30)]


def test_journal_bound_records_and_bytes(server_factory):
    """The journal never holds more than journal_max_records records (nor
    journal_max_bytes bytes): a batch that would pass the bound indexes the
    backlog first, its sender held; nothing is lost."""
    srv = start(server_factory, journal_max_records=5, **NO_BG)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    peak = 0
    for i in range(20):
        chat(a, "bob@localhost", f"r{i}", f"r{i}")
        a.roundtrip()
        peak = max(peak, journal_records(srv)[0])
    assert 4 <= peak <= 5, peak
    assert all_bodies(b) == [f"r{i}" for i in range(20)]
    srv.stop()
    srv = start(server_factory, journal_max_bytes=2048, **NO_BG)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    peak = 0
    for i in range(20):
        chat(a, "bob@localhost", "x" * 200 + f"s{i}", f"s{i}")
        a.roundtrip()
        peak = max(peak, journal_records(srv)[1])
    assert 1024 < peak <= 2048, peak  # a batch is two ~700-byte records
    assert all_bodies(b) == ["x" * 200 + f"s{i}" for i in range(20)]


# ---- messages from no stream: the server's own are archived, re-routes are not ----

def test_room_private_message_archived_for_the_recipient(server_factory):
    """A room's private message reaches the recipient from the room's
    worker, from no stream: it is the server's own and goes into the
    recipient's archive (before: only when the room happened to run on the
    sender's worker), and the sender's next answer waits for that write."""
    srv = server_factory(extra_yaml=MODS.rstrip(":\n") + ": {journal_idle: 1h}\n"
                         "  mod_muc: {}\n",
                         env={"XD_DEBUG_BATCH_DELAY_MS": "50"})  # appends come late
    users(srv, "alice", "bob", "carol", "dave")
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    c, _ = online(srv, "carol", "pc")
    d, _ = online(srv, "dave", "pc")
    muc = "conference.localhost"
    for cl, nick in ((a, "al"), (b, "bo"), (c, "ca"), (d, "da")):
        cl.send(f"<presence to='pm@{muc}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/>"
                f"</presence>")
        cl.recv_until(r"<message[^>]*>\s*<subject")
        if cl is a:  # an instant room
            r = iq(a, "inst", "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                              "<x xmlns='jabber:x:data' type='submit'/></query>", to=f"pm@{muc}")
            assert "type='result'" in r, r
    # Three senders on consecutive connections: on both workers, so some
    # send from the room's worker and some from the other.
    want = []
    for i in range(9):
        cl = (a, c, d)[i % 3]
        cl.send(f"<message to='pm@{muc}/bo' type='chat' id='pm{i}'><body>pm{i}</body>"
                f"<x xmlns='http://jabber.org/protocol/muc#user'/></message>")
        # The sender's round trip: the message is in bob's archive (the room
        # on the other worker acts for the sender's stream, xd_input_lend),
        # not only delivered.
        cl.roundtrip()
        want.append(f"pm{i}")
        res, _ = mam(b)
        assert bodies(res) == want, res


def test_rerouted_unacked_message_archived_once(server_factory):
    """A message stream management had not seen acknowledged when bob's
    session ended is routed again (to offline storage, then to his next
    session): it stays in his archive once, under the same id he is given."""
    srv = server_factory(extra_yaml=MODS.rstrip(":\n") + ": {journal_idle: 1h}\n"
                         "  mod_offline: {}\n")
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    b.send("<enable xmlns='urn:xmpp:sm:3'/>")
    b.recv_until(r"<enabled[^>]*/?>")
    chat(a, "bob@localhost", "once", "u1")
    got = q(b.recv_until(r"<message[^>]*id='u1'.*?</message>").group(0))
    sid = re.search(r"<stanza-id xmlns='urn:xmpp:sid:0' id='([^']+)' by='bob@localhost'", got)
    a.roundtrip()
    b.sock.close()  # no <a/>: u1 is unacknowledged
    # Wait for the session to end: alice sees bob's unavailable presence?
    # No subscription: instead poll until bob has no session (a ping barrier).
    import time
    for _ in range(100):
        r = srv.ctl_run("connected_users")
        if "bob@localhost" not in r.stdout:
            break
        time.sleep(0.05)
    b, _ = online(srv, "bob", "pc2")
    again = q(b.recv_until(r"<message[^>]*id='u1'.*?</message>").group(0))
    assert f"id='{sid.group(1)}' by='bob@localhost'" in again, again  # a stable id
    b.roundtrip()
    res, _ = mam(b)
    assert bodies(res) == ["once"], res
    assert res[0][0] == sid.group(1)


def test_torn_journal_tail_is_cut_at_start(server_factory):
    """A record cut short (a write a kill interrupted: its sender was never
    answered) or damaged ends the journal: the start indexes the whole
    records before it, logs the cut and serves."""
    import glob
    import os
    srv = start(server_factory, **NO_BG)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    for i in range(5):
        chat(a, "bob@localhost", f"t{i}", f"t{i}")
    a.roundtrip()
    files = [p for p in glob.glob(os.path.join(srv.data_dir, "mam-journal", "localhost", "*.log"))
             if os.path.getsize(p) > 16]
    assert files
    srv.expect_clean_exit = False
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv._stderr.close()
    with open(files[0], "ab") as f:  # a frame announcing 4000 bytes, 12 there
        f.write(b"\xa0\x0f\x00\x00\x00\x00\x00\x00garbage!!!!!")
    srv.restart()
    srv.expect_clean_exit = True
    assert "a cut or damaged record ends it" in srv.log_text()
    assert journal_records(srv)[0] == 0
    b, _ = online(srv, "bob", "pc")
    assert all_bodies(b) == [f"t{i}" for i in range(5)]


def journal_record_v1(host, user, aid, peer, body, ts_us, dir_=0):
    """A version-1 journal record (mam_journal.h; written before version 2
    dropped its flags byte), framed."""
    import struct
    import zlib
    xml = (f"<message xmlns='jabber:client' from='{peer}/r' to='{user}@{host}' type='chat'"
           f" id='{aid}'><body>{body}</body></message>")
    p = struct.pack("=BBBq", 1, 0x2, dir_, ts_us)
    for s in (host, user, aid, peer, "r", aid, None, body, xml):
        if s is None:
            p += struct.pack("=I", 0xFFFFFFFF)
        else:
            b = s.encode()
            p += struct.pack("=I", len(b)) + b + b"\0"
    return struct.pack("=II", len(p), zlib.crc32(p)) + p


def test_journal_of_the_previous_format_is_replayed(server_factory):
    """A journal left by the previous release (version-1 records, with the
    flags byte that version 2 dropped) is replayed at the start, each
    message once, beside the current format."""
    import os
    import struct
    import time
    srv = start(server_factory, **NO_BG)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    chat(b, "alice@localhost", "current format", "n1")
    b.roundtrip()
    srv.expect_clean_exit = False
    srv.proc.send_signal(signal.SIGKILL)  # "current format" stays in 0.log or 1.log
    srv.proc.wait()
    srv._stderr.close()
    now = int(time.time() * 1e6)
    path = os.path.join(srv.data_dir, "mam-journal", "localhost", "7.log")
    with open(path, "wb") as f:  # worker 7 of an earlier configuration, generation 1
        f.write(b"XDMAMJ1\n" + struct.pack("=Q", 1))
        f.write(journal_record_v1("localhost", "alice", "0000old1", "bob@localhost",
                                  "old format one", now - 2000000))
        f.write(journal_record_v1("localhost", "alice", "0000old2", "bob@localhost",
                                  "old format two", now - 1000000))
    srv.restart()
    srv.expect_clean_exit = True
    assert journal_records(srv)[0] == 0
    a, _ = online(srv, "alice", "pc")
    assert all_bodies(a) == ["old format one", "old format two", "current format"]
    restart_after(srv, signal.SIGKILL)  # nothing replayed twice
    a, _ = online(srv, "alice", "pc")
    assert all_bodies(a) == ["old format one", "old format two", "current format"]


def test_query_drains_only_for_an_account_with_records_pending(server_factory):
    """A query waits for the indexer only when the journal holds records of
    the queried archive: carol's query leaves alice's and bob's records in
    the journal; bob's indexes his own (test_a_reader_indexes_only_its_own_records)."""
    srv = start(server_factory, **NO_BG)
    a, _ = online(srv, "alice", "pc")
    c, _ = online(srv, "carol", "pc")
    chat(a, "bob@localhost", "pending", "p1")
    a.roundtrip()
    assert journal_records(srv)[0] == 2
    res, _ = mam(c)
    assert res == []
    assert journal_records(srv)[0] == 2
    b, _ = online(srv, "bob", "pc")
    res, _ = mam(b)
    assert bodies(res) == ["pending"], res
    assert journal_records(srv)[0] == 2  # the offset moves with the indexer, not a reader


def test_prefs_change_applies_to_the_very_next_message(server_factory):
    """The preferences are cached per account: a <prefs/> set, and an
    account's removal, must reach the next message, in both lists and the
    default, for both directions."""
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    r = iq(a, "c1", f"<prefs xmlns='{NS}' default='always'><never><jid>bob@localhost</jid>"
                    f"</never></prefs>")
    assert "<jid>bob@localhost</jid>" in r, r
    chat(a, "bob@localhost", "never 1", "s1")
    chat(b, "alice@localhost", "never 2", "s2")
    a.roundtrip()
    b.roundtrip()
    r = iq(a, "c2", f"<prefs xmlns='{NS}' default='never'><always><jid>bob@localhost</jid>"
                    f"</always></prefs>")
    assert "default='never'" in r, r
    chat(a, "bob@localhost", "always 1", "s3")
    a.roundtrip()  # in this order in alice's archive
    chat(b, "alice@localhost", "always 2", "s4")
    b.roundtrip()
    res, _ = mam(a)
    assert bodies(res) == ["always 1", "always 2"], res
    r = iq(a, "c3", f"<prefs xmlns='{NS}' default='never'/>")
    chat(a, "bob@localhost", "default never", "s5")
    a.roundtrip()
    r = iq(a, "c4", f"<prefs xmlns='{NS}' default='always'/>")
    chat(a, "bob@localhost", "default always", "s6")
    a.roundtrip()
    res, _ = mam(a)
    assert bodies(res) == ["always 1", "always 2", "default always"], res
    # Removal: bob's cached "never" must not outlive his account.
    r = iq(b, "c5", f"<prefs xmlns='{NS}' default='never'/>")
    chat(b, "alice@localhost", "bob never", "s7")
    b.roundtrip()
    r = srv.ctl_run("unregister", "bob", "localhost")
    assert r.returncode == 0, r.stdout + r.stderr
    users(srv, "bob")
    b, _ = online(srv, "bob", "pc2")
    chat(b, "alice@localhost", "new bob", "s8")
    b.roundtrip()
    res, _ = mam(b)
    assert bodies(res) == ["new bob"], res


def test_prefs_cache_bound(server_factory):
    """prefs_cache: 1 holds one account: alternating accounts with
    different preferences are each read again, never answered from the
    other's entry."""
    srv = start(server_factory, prefs_cache=1)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    c, _ = online(srv, "carol", "pc")
    iq(a, "b1", f"<prefs xmlns='{NS}' default='never'><always><jid>carol@localhost</jid>"
                f"</always></prefs>")
    iq(b, "b2", f"<prefs xmlns='{NS}' default='always'><never><jid>carol@localhost</jid>"
                f"</never></prefs>")
    for i in range(3):
        chat(a, "carol@localhost", f"a{i}", f"ba{i}")
        a.roundtrip()
        chat(b, "carol@localhost", f"b{i}", f"bb{i}")
        b.roundtrip()
        chat(a, "bob@localhost", f"ab{i}", f"bab{i}")
        a.roundtrip()
    res, _ = mam(a)
    assert bodies(res) == ["a0", "a1", "a2"], res
    res, _ = mam(b)
    assert bodies(res) == ["ab0", "ab1", "ab2"], res
    res, _ = mam(c)
    assert bodies(res) == ["a0", "b0", "a1", "b1", "a2", "b2"], res


@pytest.mark.slow
def test_a_burst_is_not_indexed_while_it_lasts(server_factory):
    """With the default watermark (journal_index_records 200000), a burst of
    20 000 records stays in the journal until a reader (or a pause of
    journal_idle) indexes it: the indexer takes no CPU from delivery during
    the burst (before: indexing started at 10 000 records, mid-burst)."""
    import os
    import sqlite3
    srv = start(server_factory, journal_idle="1h")
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    n = 10000
    for k in range(0, n, 500):
        a.send("".join(f"<message to='bob@localhost' type='chat' id='u{i}'><body>u{i}</body>"
                       f"</message>" for i in range(k, k + 500)))
        m = b.recv_until(f"id='u{k + 499}'")  # bob reads: his stream stays under its bound
        b.buf = b.buf[m.end():]
    assert "error" not in q(a.roundtrip())
    with sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db")) as con:
        rows = con.execute("SELECT COUNT(*) FROM archive").fetchone()[0]
        pos = con.execute("SELECT COALESCE(SUM(pos), 0) FROM mam_journal").fetchone()[0]
    assert rows == 0 and pos == 0, (rows, pos)
    assert journal_records(srv)[0] == 2 * n
    res, fin = mam(b, rsm="<max>0</max>")
    assert fin_set(fin)[2] == n, fin


def test_a_reader_indexes_only_its_own_records(server_factory):
    """A query of an archive with records in the journal indexes only that
    account's records (not the whole backlog); the indexer later passes
    over them, and a replay after kill -9 adds none twice."""
    import os
    import sqlite3
    srv = start(server_factory, **NO_BG)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    c, _ = online(srv, "carol", "pc")
    n = 300
    chat(c, "carol@localhost", "note 1", "o1")  # to herself: one record, hers
    c.roundtrip()
    a.send("".join(f"<message to='bob@localhost' type='chat' id='v{i}'><body>v{i}</body>"
                   f"</message>" for i in range(n)))
    assert "error" not in q(a.roundtrip())
    chat(c, "carol@localhost", "note 2", "o2")
    c.roundtrip()

    def rows():
        with sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db")) as con:
            return con.execute("SELECT username, COUNT(*) FROM archive GROUP BY username"
                               " ORDER BY username").fetchall()
    assert bodies(mam(c)[0]) == ["note 1", "note 2"]
    assert rows() == [("carol", 2)]  # alice's and bob's 600 records wait
    assert journal_records(srv)[0] == 2 * n + 2
    want = [f"v{i}" for i in range(n)]
    assert all_bodies(b) == want
    assert rows() == [("bob", n), ("carol", 2)]
    restart_after(srv, signal.SIGKILL)  # replay: alice's indexed, bob's and carol's again
    assert rows() == [("alice", n), ("bob", n), ("carol", 2)]
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    chat(a, "bob@localhost", "after", "w1")
    a.roundtrip()
    assert all_bodies(b) == want + ["after"]
    restart_after(srv, signal.SIGTERM)  # the stop's drain passes over bob's, indexes alice's
    assert rows() == [("alice", n + 1), ("bob", n + 1), ("carol", 2)]
    a, _ = online(srv, "alice", "pc")
    assert all_bodies(a) == want + ["after"]


@pytest.mark.slow
def test_the_bound_indexes_a_transaction_not_the_whole_journal(server_factory):
    """A batch that would pass journal_max_bytes indexes until it fits (a
    transaction of at most 4 MiB of each file), not the whole journal: its
    senders are held for one transaction, and a flood goes on at the
    indexer's rate (before: the 12 MiB journal was indexed at once, the
    senders held throughout)."""
    import os
    import sqlite3
    srv = start(server_factory, journal_max_bytes="12MiB", **NO_BG)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    n, body = 1700, "y" * 2000
    for k in range(0, n, 100):
        a.send("".join(f"<message to='bob@localhost' type='chat' id='z{i}'><body>{body}{i}"
                       f"</body></message>" for i in range(k, k + 100)))
        m = b.recv_until(f"id='z{k + 99}'")
        b.buf = b.buf[m.end():]
    assert "error" not in q(a.roundtrip())
    with sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db")) as con:
        rows = con.execute("SELECT COUNT(*) FROM archive").fetchone()[0]
    # ~4.1 KB a record, 3 400 records: the bound (~3 000) passed once; one
    # transaction moves ~1 000 records of a file (two files: ~2 000).
    assert 0 < rows <= 2 * 1100, rows
    assert all_bodies(b) == [f"{body}{i}" for i in range(n)]


def test_retraction_indexed_with_the_messages_it_names(server_factory):
    """A retraction indexed in the same transaction as the message it names,
    behind more rows than one multi-row INSERT of the indexer takes (32):
    the rows before it are in the table when it is applied, so that message
    becomes a tombstone in both archives and the others keep their bodies."""
    srv = start(server_factory, journal_idle="1h")
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    for k in range(40):
        chat(a, "bob@localhost", f"m{k}", f"a{k}")
    rt = "urn:xmpp:message-retract:1"
    a.send(f"<message to='bob@localhost' type='chat' id='ra'><retract xmlns='{rt}' id='a35'/>"
           f"<body>retracted</body><store xmlns='urn:xmpp:hints'/></message>")
    a.roundtrip()
    b.recv_until(r"<message[^>]*id='ra'")
    b.roundtrip()
    for cl in (a, b):
        res, _ = mam(cl, rsm="<max>100</max>")
        assert len(res) == 41, res
        want = [f"m{k}" for k in range(40)]
        want[35] = None
        assert bodies(res)[:40] == want, bodies(res)
        assert f"<retracted xmlns='{rt}'" in res[35][2] and "id='a35'" in res[35][2], res[35]

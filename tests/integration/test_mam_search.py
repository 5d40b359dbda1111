"""mod_mam through the wire, second part: XEP-0431 full-text search (SQLite
FTS5), the #extended metadata query, XEP-0424 retraction tombstones and
xmppctl export_mam.

Barriers as in test_mam.py: after the sender's round trip its messages are
in the archive."""
from helpers import iq, online
from test_mam import NS, bodies, chat, fin_set, mam, start

FTS = "{urn:xmpp:fulltext:0}fulltext"


def search(c, text, **kw):
    kw[FTS] = text
    return mam(c, **kw)


def test_fulltext_search(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    c, _ = online(srv, "carol", "pc")
    r = iq(a, "d1", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to="alice@localhost")
    assert "var='urn:xmpp:fulltext:0'" in r, r
    r = iq(a, "f1", f"<query xmlns='{NS}'/>", typ="get")
    assert f"var='{FTS}'" in r, r
    msgs = [("bob", "the quick brown fox"), ("bob", "a lazy dog sleeps"),
            ("carol", "quick thinking, Brown"), ("bob", "brown quick fox again"),
            ("carol", "nothing to see"), ("bob", "Café au lait")]
    for i, (to, body) in enumerate(msgs):
        chat(a, f"{to}@localhost", body, f"m{i}")
    for i in range(12):
        chat(a, "bob@localhost", f"page{i} needle", f"p{i}")
    a.roundtrip()
    # Every word, in any order, any case.
    res, fin = search(a, "Quick BROWN")
    assert bodies(res) == ["the quick brown fox", "quick thinking, Brown",
                           "brown quick fox again"], res
    assert "complete='true'" in fin and fin_set(fin)[2] == 3, fin
    # A phrase: the words next to each other, in that order.
    res, _ = search(a, '"quick brown"')
    assert bodies(res) == ["the quick brown fox"], res
    res, _ = search(a, '"brown quick" fox')
    assert bodies(res) == ["brown quick fox again"], res
    # Diacritics and case folded by the tokenizer.
    res, _ = search(a, "cafe")
    assert bodies(res) == ["Café au lait"], res
    # No match; operators and FTS5 syntax are plain words.
    res, fin = search(a, "elephant")
    assert res == [] and "complete='true'" in fin, fin
    res, fin = search(a, "quick AND NOT fox* (x) NEAR:1 ^")
    assert res == [] and "type='result'" in fin, fin
    # Combined with with=.
    res, _ = search(a, "quick", **{"with": "carol@localhost"})
    assert bodies(res) == ["quick thinking, Brown"], res
    # Bob's archive has his received copies: searched separately.
    b.roundtrip()
    res, _ = search(b, "quick")
    assert bodies(res) == ["the quick brown fox", "brown quick fox again"], res
    # RSM paging through the results, forwards then backwards.
    got, after = [], None
    while True:
        res, fin = search(a, "needle", rsm="<max>5</max>" + (f"<after>{after}</after>"
                                                             if after else ""))
        first, last, count, complete = fin_set(fin)
        assert count == 12 and first[0] == len(got), fin
        got += bodies(res)
        after = last
        if complete:
            break
    assert got == [f"page{i} needle" for i in range(12)], got
    res, fin = search(a, "needle", rsm="<max>5</max><before/>")
    assert bodies(res) == [f"page{i} needle" for i in range(7, 12)], res
    assert fin_set(fin)[0][0] == 7, fin
    # Bad input: no word, too long (1024 bytes at most).
    _, fin = search(a, '"" ""')
    assert "<bad-request" in fin, fin
    _, fin = search(a, "x" * 1025)
    assert "<not-acceptable" in fin, fin
    res, fin = search(a, "x" * 1024)
    assert res == [] and "type='result'" in fin, fin


def test_metadata(server_factory):
    """urn:xmpp:mam:2#extended: <metadata/> gives the first and last
    messages' ids and times; an empty archive an empty <metadata/>."""
    import re
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    r = iq(a, "md0", f"<metadata xmlns='{NS}'/>", typ="get")
    assert f"<metadata xmlns='{NS}'/>" in r, r
    for i in range(3):
        chat(a, "bob@localhost", f"m{i}", f"m{i}")
    a.roundtrip()
    res, _ = mam(a)
    stamps = [re.search(r"stamp='([^']+)'", x[2]).group(1) for x in res]
    r = iq(a, "md1", f"<metadata xmlns='{NS}'/>", typ="get")
    assert f"<start id='{res[0][0]}' timestamp='{stamps[0]}'/>" in r, r
    assert f"<end id='{res[2][0]}' timestamp='{stamps[2]}'/>" in r, r
    r = iq(a, "md2", f"<metadata xmlns='{NS}'/>", typ="set")
    assert "<bad-request" in r, r
    r = iq(a, "md3", f"<metadata xmlns='{NS}'/>", typ="get", to="bob@localhost")
    assert "<forbidden" in r, r


RETRACT = "urn:xmpp:message-retract:1"


def retraction(c, to, rid, mid):
    c.send(f"<message to='{to}' type='chat' id='{mid}'><retract xmlns='{RETRACT}' id='{rid}'/>"
           f"<fallback xmlns='urn:xmpp:fallback:0' for='{RETRACT}'/>"
           f"<body>This person attempted to retract a previous message</body>"
           f"<store xmlns='urn:xmpp:hints'/></message>")


def test_retraction_leaves_a_tombstone(server_factory):
    """XEP-0424: the sender's retraction turns the message into a tombstone
    in both archives (no body, no payload, <retracted stamp/> and the
    origin-id), the retraction itself is archived; a retraction by anyone
    else changes nothing."""
    import re
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    c, _ = online(srv, "carol", "pc")
    r = iq(a, "d1", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to="alice@localhost")
    assert f"var='{RETRACT}'" in r, r
    chat(a, "bob@localhost", "secret plans", "a1", "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/>"
         "<x xmlns='jabber:x:oob'><url>https://example.org/plans.pdf</url></x>")
    chat(a, "bob@localhost", "keep this", "a2")
    a.roundtrip()
    chat(b, "alice@localhost", "bob's own o1", "o1")
    b.roundtrip()
    # Not the sender: bob names alice's a2, carol names o1; nothing changes.
    retraction(b, "alice@localhost", "a2", "rb")
    retraction(c, "alice@localhost", "o1", "rc")
    c.roundtrip()
    b.roundtrip()
    res, _ = mam(a)
    assert bodies(res)[:3] == ["secret plans", "keep this", "bob's own o1"], res
    # alice retracts o1 (the origin-id of a1).
    retraction(a, "bob@localhost", "o1", "ra")
    a.roundtrip()
    b.recv_until(r"<message[^>]*id='ra'")
    b.roundtrip()
    for cl, n in ((a, 6), (b, 5)):
        res, _ = mam(cl)
        assert len(res) == n, res
        tomb = res[0][2]
        assert res[0][1] is None and "secret" not in tomb and "oob" not in tomb, tomb
        assert re.search(rf"<retracted xmlns='{RETRACT}' stamp='[^']+'/>", tomb), tomb
        assert "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/>" in tomb and "id='a1'" in tomb, tomb
        assert bodies(res)[1:3] == ["keep this", "bob's own o1"], res
        assert f"<retract xmlns='{RETRACT}' id='o1'/>" in res[-1][2], res[-1]
        got, _ = search(cl, "secret")
        assert got == [], got
    # bob's message with id o1 stayed: another sender, another peer.
    res, _ = mam(b, **{"with": "alice@localhost"})
    assert "bob's own o1" in bodies(res), res


def test_export_mam(server_factory, tmp_path):
    """xmppctl export_mam USER HOST FILE writes the account's archive in the
    XEP-0227 form, oldest first, across the 1000-row reads; a FILE that
    exists is refused."""
    import os
    import xml.etree.ElementTree as ET
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    a.send("".join(f"<message to='bob@localhost' type='chat' id='e{i}'><body>n{i}</body>"
                   f"</message>" for i in range(1003)))
    chat(a, "bob@localhost", "a &amp; b &lt;c&gt; 'q'", "last")
    a.roundtrip()
    res, _ = mam(a, rsm="<max>1</max><before/>")
    path = str(tmp_path / "alice.xml")
    r = srv.ctl_run("export_mam", "alice", "localhost", path)
    assert r.returncode == 0 and r.stdout.strip() == "1004", r.stdout + r.stderr
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    root = ET.parse(path).getroot()
    assert root.tag == "{urn:xmpp:pie:0}server-data"
    host = root.find("{urn:xmpp:pie:0}host")
    user = host.find("{urn:xmpp:pie:0}user")
    assert host.get("jid") == "localhost" and user.get("name") == "alice"
    results = user.find("{urn:xmpp:pie:0#mam}archive").findall("{urn:xmpp:mam:2}result")
    bodies_ = [x.find("{urn:xmpp:forward:0}forwarded/{jabber:client}message/{jabber:client}body")
               .text for x in results]
    assert bodies_ == [f"n{i}" for i in range(1003)] + ["a & b <c> 'q'"], bodies_[-3:]
    assert results[-1].get("id") == res[0][0]
    stamp = results[0].find("{urn:xmpp:forward:0}forwarded/{urn:xmpp:delay}delay").get("stamp")
    assert stamp.endswith("Z"), stamp
    # The file exists: refused, untouched.
    r = srv.ctl_run("export_mam", "alice", "localhost", path)
    assert r.returncode != 0 and "exists" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    # An account without messages: an empty archive element.
    path2 = str(tmp_path / "carol.xml")
    r = srv.ctl_run("export_mam", "carol", "localhost", path2)
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stdout + r.stderr
    assert ET.parse(path2).getroot().find(".//{urn:xmpp:pie:0#mam}archive") is not None
    # Not a host of ours.
    r = srv.ctl_run("export_mam", "alice", "elsewhere.example", str(tmp_path / "x.xml"))
    assert r.returncode != 0 and not os.path.exists(tmp_path / "x.xml"), r.stdout + r.stderr


def test_retraction_limit(server_factory):
    """At most 16 messages become tombstones per retraction (the same
    origin-id used 17 times): the rest are left as they are."""
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    for i in range(17):
        chat(a, "bob@localhost", f"dup{i}", f"d{i}",
             "<origin-id xmlns='urn:xmpp:sid:0' id='same'/>")
    a.roundtrip()
    retraction(a, "bob@localhost", "same", "rr")
    a.roundtrip()
    res, _ = mam(a)
    assert [x[1] for x in res[:17]].count(None) == 16, res
    assert len(res) == 18 and res[17][1].startswith("This person"), res


def test_fulltext_index_is_filled_after_the_rows_and_stays_sound(server_factory):
    """SQLite: the full-text index is filled in its own pass after the rows
    (mam_fts.pos: the rows up to it are indexed), not by a trigger per row.
    A retraction and an account's removal that reach rows the index has not
    seen yet leave it sound, and a search first brings it up to date, so it
    finds every message and none that is retracted or deleted."""
    import os
    import sqlite3
    from test_mam import NO_BG
    srv = start(server_factory, **NO_BG)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    c, _ = online(srv, "carol", "pc")
    db = os.path.join(srv.data_dir, "xmppd.db")

    def fts_pos():
        with sqlite3.connect(db) as con:
            return (con.execute("SELECT pos FROM mam_fts").fetchone()[0],
                    con.execute("SELECT COALESCE(MAX(seq), 0) FROM archive").fetchone()[0])

    chat(a, "bob@localhost", "alpha one", "a1", "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/>")
    chat(a, "bob@localhost", "alpha two", "a2")
    a.roundtrip()
    chat(c, "alice@localhost", "alpha from carol", "c1")
    c.roundtrip()
    # Plain queries index alice's and carol's rows; the full-text index has
    # not seen them.
    assert bodies(mam(a)[0]) == ["alpha one", "alpha two", "alpha from carol"]
    assert bodies(mam(c)[0]) == ["alpha from carol"]
    pos, top = fts_pos()
    assert pos < top, (pos, top)
    # The retraction tombstones a row beyond the index (alice's archive).
    retraction(a, "bob@localhost", "o1", "ra")
    a.roundtrip()
    res, _ = mam(a)
    assert res[0][1] is None and bodies(res)[1:3] == ["alpha two", "alpha from carol"], res
    assert fts_pos()[0] == pos
    # carol's account goes, its rows beyond the index with it.
    assert srv.ctl_run("unregister", "carol", "localhost").returncode == 0
    # A search brings the index up to date first.
    got, _ = search(a, "alpha")
    assert bodies(got) == ["alpha two", "alpha from carol"], got
    pos, top = fts_pos()
    assert pos == top, (pos, top)
    got, _ = search(b, "alpha")  # bob's rows: indexed by his query, found by the search
    assert bodies(got) == ["alpha two"], got
    # Rows the index has: a retraction and a removal reach it too.
    chat(b, "alice@localhost", "alpha from bob", "b1", "<origin-id xmlns='urn:xmpp:sid:0' id='o2'/>")
    b.roundtrip()
    assert bodies(search(a, "alpha")[0]) == ["alpha two", "alpha from carol", "alpha from bob"]
    retraction(b, "alice@localhost", "o2", "rb")
    b.roundtrip()
    assert bodies(search(a, "alpha")[0]) == ["alpha two", "alpha from carol"]
    assert bodies(search(b, "bob")[0]) == []
    assert srv.stop() == 0
    with sqlite3.connect(db) as con:
        con.execute("INSERT INTO archive_fts (archive_fts) VALUES ('integrity-check')")


def test_imported_archive_is_searchable(server_factory, tmp_path):
    """Rows written by another path than the indexer (an account imported
    with xmppctl import_file, XEP-0227) reach the full-text index through
    the pass a search runs first."""
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    chat(a, "bob@localhost", "zebra crossing", "z1")
    a.roundtrip()
    chat(b, "alice@localhost", "yak shaving", "y1")
    b.roundtrip()
    assert bodies(search(a, "zebra")[0]) == ["zebra crossing"]
    path = str(tmp_path / "alice.xml")
    r = srv.ctl_run("export_account", "alice", "localhost", path)
    assert r.returncode == 0, r.stdout + r.stderr
    a.close()
    assert srv.ctl_run("unregister", "alice", "localhost").returncode == 0
    c, _ = online(srv, "carol", "pc")
    assert bodies(search(c, "zebra")[0]) == []
    r = srv.ctl_run("import_file", path)
    assert r.returncode == 0 and "1 imported, 0 failed" in r.stdout, r.stdout + r.stderr
    a, _ = online(srv, "alice", "pc")
    assert bodies(mam(a)[0]) == ["zebra crossing", "yak shaving"]
    assert bodies(search(a, "zebra")[0]) == ["zebra crossing"]
    assert bodies(search(a, "SHAVING")[0]) == ["yak shaving"]


def test_upgrade_from_schema_4_keeps_search_and_retraction(server_factory):
    """An archive of schema 4 (the full-text index kept by triggers,
    archive_msgid led by the client's id) upgraded by migrations 5 and 6:
    its rows stay searchable (mam_fts.pos starts past them), new rows are
    found too, a retraction finds an old message through the new index, and
    the full-text index passes FTS5's integrity-check."""
    import os
    import sqlite3
    srv = start(server_factory)
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    chat(a, "bob@localhost", "old walrus", "w1", "<origin-id xmlns='urn:xmpp:sid:0' id='ow1'/>")
    chat(a, "bob@localhost", "old narwhal", "w2")
    a.roundtrip()
    assert srv.stop() == 0
    db = os.path.join(srv.data_dir, "xmppd.db")
    with sqlite3.connect(db) as con:  # back to schema 4, the rows kept
        con.executescript("""
            DROP INDEX archive_msgid_acct;
            CREATE INDEX archive_msgid ON archive (msgid, host, username, peer);
            DROP TRIGGER archive_fts_delete;
            DROP TRIGGER archive_fts_update;
            DROP TABLE mam_fts;
            DELETE FROM archive_fts;
            INSERT INTO archive_fts (archive_fts) VALUES ('rebuild');
            CREATE TRIGGER archive_fts_insert AFTER INSERT ON archive WHEN new.body IS NOT NULL
              BEGIN INSERT INTO archive_fts (rowid, body) VALUES (new.seq, new.body); END;
            CREATE TRIGGER archive_fts_delete AFTER DELETE ON archive WHEN old.body IS NOT NULL
              BEGIN INSERT INTO archive_fts (archive_fts, rowid, body)
                    VALUES ('delete', old.seq, old.body); END;
            CREATE TRIGGER archive_fts_update AFTER UPDATE OF body ON archive BEGIN
              INSERT INTO archive_fts (archive_fts, rowid, body)
                SELECT 'delete', old.seq, old.body WHERE old.body IS NOT NULL;
              INSERT INTO archive_fts (rowid, body)
                SELECT new.seq, new.body WHERE new.body IS NOT NULL; END;
            UPDATE schema_version SET version = 4 WHERE component = 'mod_mam';
        """)
        # Enough other rows (carol's, older) for the statistics to matter.
        con.executemany("INSERT INTO archive (host, username, id, ts, peer, resource, dir,"
                        " body, xml, msgid) VALUES ('localhost', ?, ?, ?, ?, '', 0, NULL,"
                        " '<message/>', ?)",
                        [("carol" if i % 2 else f"u{i % 50}", f"f{i}", i,
                          f"c{i % 20}@localhost", f"m{i * 7919 % 10007}") for i in range(20000)])
        con.execute("ANALYZE")
    srv.restart()
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT version FROM schema_version"
                           " WHERE component = 'mod_mam'").fetchone()[0] == 6
        assert con.execute("SELECT pos FROM mam_fts").fetchone()[0] == \
            con.execute("SELECT MAX(seq) FROM archive").fetchone()[0]
    a, _ = online(srv, "alice", "pc")
    b, _ = online(srv, "bob", "pc")
    chat(a, "bob@localhost", "new walrus", "w3")
    a.roundtrip()
    assert bodies(search(a, "walrus")[0]) == ["old walrus", "new walrus"]
    assert bodies(mam(a)[0]) == ["old walrus", "old narwhal", "new walrus"]
    assert bodies(search(b, "narwhal")[0]) == ["old narwhal"]
    retraction(a, "bob@localhost", "ow1", "rw")
    a.roundtrip()
    assert bodies(search(a, "walrus")[0]) == ["new walrus"]
    res, _ = mam(a)
    assert res[0][1] is None and "retracted" in res[0][2], res
    assert srv.stop() == 0
    with sqlite3.connect(db) as con:
        con.execute("INSERT INTO archive_fts (archive_fts) VALUES ('integrity-check')")
        plan = con.execute("EXPLAIN QUERY PLAN SELECT seq, xml FROM archive WHERE host = ?"
                           " AND username = ? AND peer = ? AND msgid = ? AND dir = ?"
                           " AND body IS NOT NULL", ("localhost", "carol", "c1@localhost",
                                                     "m7", 0)).fetchall()
        assert "archive_msgid_acct" in str(plan), plan
        # Statistics from before the new index (ANALYZE above): the last
        # page still reads archive_ts in order (the partial index cannot
        # serve it), no sort of the archive.
        plan = con.execute("EXPLAIN QUERY PLAN SELECT seq, ts, id, xml FROM archive"
                           " WHERE host = ? AND username = ? ORDER BY ts DESC, seq DESC"
                           " LIMIT ?", ("h", "u", 50)).fetchall()
        assert "archive_ts" in str(plan) and "TEMP B-TREE" not in str(plan), plan

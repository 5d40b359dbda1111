#!/usr/bin/python3
"""bench/mam.py — message archive (XEP-0313) query latency in a large
archive: one account's archive is filled with N messages (default
1,000,000) by direct SQL inserts into the archive table (the FTS5 index
built after them, as mod_mam's full-text pass does), then the server is started and three kinds
of query are timed over the wire, each from sending the IQ to receiving
its <fin/>:

  last50   the last page: <set><max>50</max><before/></set>
  with50   the last 50 messages with one contact (1 in 20 of the archive)
  fts50    the last 50 messages holding a word (XEP-0431; --words of them,
           from rare to common)

    bench/mam.py --build build-release [--messages 1000000] [--queries 200]
                 [--keep DIR]

Also prints SQLite's plan for each query shape (EXPLAIN QUERY PLAN on the
filled database, with the SQL mod_mam builds).  The server runs on
loopback with a temporary data directory and is stopped by its PID.
"""
import argparse
import glob
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from xclient import login  # noqa: E402
from xmpptest import Server  # noqa: E402

NS = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
CONTACTS = 20
VOCAB = 5000

# The SQL mod_mam builds (mam_where, mam_select, mam_count_upto).
W = "SELECT seq, ts, id, xml FROM archive WHERE host = ? AND username = ?"
PLANS = {
    "last page": W + " ORDER BY ts DESC, seq DESC LIMIT ?",
    "before-id page": W + " AND ts <= ? AND (ts < ? OR seq < ?) ORDER BY ts DESC, seq DESC LIMIT ?",
    "after-id page": W + " AND ts >= ? AND (ts > ? OR seq > ?) ORDER BY ts, seq LIMIT ?",
    "with page": W + " AND peer = ? ORDER BY ts DESC, seq DESC LIMIT ?",
    "bounded count": "SELECT COUNT(*) FROM (SELECT 1 FROM archive WHERE host = ? AND username = ?"
                     " AND ts <= ? AND (ts < ? OR seq < ?) LIMIT ?)",
    "full-text count": "SELECT COUNT(*) FROM (SELECT 1 FROM archive_fts CROSS JOIN archive"
                       " ON archive.seq = archive_fts.rowid WHERE host = ? AND username = ?"
                       " AND archive_fts MATCH ? LIMIT ?)",
    "full-text page": "SELECT seq, ts, id, xml FROM archive_fts CROSS JOIN archive"
                      " ON archive.seq = archive_fts.rowid WHERE host = ? AND username = ?"
                      " AND archive_fts MATCH ? ORDER BY archive_fts.rowid DESC LIMIT ?",
    "full-text before": "SELECT seq, ts, id, xml FROM archive_fts CROSS JOIN archive"
                        " ON archive.seq = archive_fts.rowid WHERE host = ? AND username = ?"
                        " AND ts <= ? AND (ts < ? OR seq < ?) AND archive_fts MATCH ?"
                        " AND archive_fts.rowid < ? ORDER BY archive_fts.rowid DESC LIMIT ?",
    "retraction": "SELECT seq, xml FROM archive WHERE host = ? AND username = ?"
                  " AND peer = ? AND msgid = ? AND dir = ? AND body IS NOT NULL",
}


def word(i):
    return f"w{i}"


def fill(db, n):
    """n messages of alice@localhost with CONTACTS peers; bodies of 8 words
    drawn from a Zipf-like vocabulary (word k has weight 1/(k+1))."""
    rnd = random.Random(14)
    weights = [1.0 / (k + 1) for k in range(VOCAB)]
    c = sqlite3.connect(db)
    c.execute("PRAGMA synchronous=OFF")
    ts0 = int(time.time() * 1e6) - n * 1000
    batch = []
    t0 = time.perf_counter()
    words = rnd.choices(range(VOCAB), weights, k=8 * n)
    for i in range(n):
        peer = f"c{i % CONTACTS}@localhost"
        body = " ".join(word(k) for k in words[8 * i:8 * i + 8])
        out = i % 2
        fr, to = ("alice@localhost/pc", peer) if out else (peer + "/x", "alice@localhost/pc")
        xml = (f"<message xmlns='jabber:client' from='{fr}' to='{to}' type='chat' id='m{i}'>"
               f"<body>{body}</body></message>")
        batch.append(("localhost", "alice", f"a{i:08d}", ts0 + i * 1000, peer, "", out, body,
                      xml))
        if len(batch) == 20000:
            c.executemany("INSERT INTO archive (host, username, id, ts, peer, resource, dir,"
                          " body, xml) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
            c.commit()
            batch = []
    if batch:
        c.executemany("INSERT INTO archive (host, username, id, ts, peer, resource, dir,"
                      " body, xml) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
        c.commit()
    # The full-text index, as mod_mam's pass builds it (mam_fts_tx): the
    # rows after mam_fts.pos in one statement.
    t1 = time.perf_counter()
    pos = c.execute("SELECT pos FROM mam_fts").fetchone()[0]
    c.execute("INSERT INTO archive_fts (rowid, body) SELECT seq, body FROM archive"
              " WHERE seq > ? AND body IS NOT NULL", (pos,))
    c.execute("UPDATE mam_fts SET pos = (SELECT MAX(seq) FROM archive)")
    c.commit()
    print(f"full-text index of {n} messages in {time.perf_counter() - t1:.0f} s", flush=True)
    c.execute("ANALYZE")
    c.commit()
    freq = {}
    for k in words:
        freq[k] = freq.get(k, 0) + 1
    print(f"filled {n} messages in {time.perf_counter() - t0:.0f} s", flush=True)
    c.close()
    return freq, n * 8


def plans(db):
    c = sqlite3.connect(db)
    for name, sql in PLANS.items():
        args = [1] * sql.count("?")
        if "MATCH" in sql:
            args[sql[:sql.index("MATCH")].count("?")] = word(10)
        plan = "; ".join(r[3] for r in c.execute("EXPLAIN QUERY PLAN " + sql, args))
        print(f"plan {name:16s} {plan}", flush=True)
    c.close()


def timed(c, payload, n, tag):
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        c.send(f"<iq type='set' id='{tag}{i}'>{payload}</iq>")
        c.recv_until(rf"<iq[^>]*id=['\"]{tag}{i}['\"][^>]*>.*?</iq>", timeout=60)
        lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def query(form="", rsm="<max>50</max><before/>"):
    x = ""
    if form:
        x = (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
             f"<value>{NS}</value></field>{form}</x>")
    return f"<query xmlns='{NS}' queryid='b'>{x}<set xmlns='{RSM}'>{rsm}</set></query>"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-release")
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--keep", help="keep (or reuse) the data directory here")
    a = ap.parse_args()
    tmp = a.keep or tempfile.mkdtemp(prefix="xd-mam-bench-")
    os.makedirs(tmp, exist_ok=True)
    srv = Server(os.path.abspath(a.build), tmp, workers=2,
                 extra_yaml="modules:\n  mod_roster: {}\n  mod_stanza_id: {}\n  mod_mam: {}\n")
    with open(srv.config_path) as f:  # the tests' debug log would dominate
        conf = f.read().replace("loglevel: debug", "loglevel: notice")
    with open(srv.config_path, "w") as f:
        f.write(conf)
    try:
        srv.restart(timeout=600)  # counts the "ready" lines of a kept directory's log
        fresh = srv.ctl_run("register", "alice", "localhost", "pw").returncode == 0
        srv.stop(signal.SIGTERM)
        dbs = [p for p in glob.glob(os.path.join(srv.data_dir, "**", "*"), recursive=True)
               if p.endswith((".db", ".sqlite", ".sqlite3"))]
        assert len(dbs) == 1, dbs
        freq = None
        if fresh:
            freq, _ = fill(dbs[0], a.messages)
        plans(dbs[0])
        srv.restart(timeout=600)
        c = login(srv.c2s_port, "alice", "pw", resource="pc")[0]
        timed(c, query(), 20, "w")  # warm the page cache
        print(f"{'query':28s} {'p50 ms':>8s} {'p99 ms':>8s}", flush=True)
        p50, p99 = timed(c, query(), a.queries, "l")
        print(f"{'last50':28s} {p50:8.2f} {p99:8.2f}", flush=True)
        p50, p99 = timed(c, query("<field var='with'><value>c3@localhost</value></field>"),
                         a.queries, "c")
        print(f"{'with50 (5% of the archive)':28s} {p50:8.2f} {p99:8.2f}", flush=True)
        for k in (4000, 1000, 100, 10, 0):
            share = f" ({freq[k] / a.messages:.2%} of msgs)" if freq and k in freq else ""
            f = f"<field var='{{urn:xmpp:fulltext:0}}fulltext'><value>{word(k)}</value></field>"
            p50, p99 = timed(c, query(f), a.queries, f"f{k}")
            print(f"{'fts50 ' + word(k) + share:28s} {p50:8.2f} {p99:8.2f}", flush=True)
        c.close()
    finally:
        srv.stop(signal.SIGTERM)
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

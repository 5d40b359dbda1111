"""Floods (the hardening issue, item 8): the c2s listener's default shaper,
the sender of a presence broadcast paying for every copy (xd_input_charge,
docs/design.md "Fan-out is charged"), and the bound of each connection's
write queue (listen: max_queue).

Where a figure is checked against time it is a bound that the shaper
guarantees whatever the machine's speed: at most burst + rate x elapsed
bytes pass, and a pause lasts at least (debt / rate).  A slow machine only
makes such a check easier to pass for a correct server, never for a server
that does not shape.  The pauses themselves are counted in the server's log
(event "input shaped", one line per pause, with the bytes charged so far)."""
import os
import re
import select
import socket
import sqlite3
import threading
import time

import pytest

from helpers import online, q, users
from xclient import SSL

ROSTER = "modules:\n  mod_roster: {}\n"

# The defaults of a c2s listener without `shaper` (include/xmppd/config.h).
C2S_RATE = 64 << 10
C2S_BURST = 512 << 10

# A broadcast copy is at least this long (<presence from='flood@localhost/f'>
# <status>u0</status></presence> and to='cN@localhost'); what the server
# charges per copy is its length, so this is a lower bound.
MIN_COPY = 80


def roster_from(srv, user, contacts):
    """Puts `contacts` in user's roster with subscription 'from' (they get
    user's presence) and user in each contact's with 'to', straight in the
    database (WAL: the running server sees the rows at its next read)."""
    with sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db")) as con:
        con.executemany("INSERT INTO roster_item (host, username, jid, subscription) "
                        "VALUES ('localhost', ?, ?, ?)",
                        [(user, f"{c}@localhost", 2) for c in contacts] +
                        [(c, f"{user}@localhost", 1) for c in contacts])


def shaped(srv, jid):
    """The "input shaped" log lines of the stream bound to jid."""
    return [ln for ln in srv.log_text().splitlines()
            if 'event="input shaped"' in ln and f"jid={jid}" in ln]


class Drain(threading.Thread):
    """Reads the given clients' streams into their buffers until stopped,
    as real clients do, so that their write queues stay empty."""

    def __init__(self, clients):
        super().__init__(daemon=True)
        self.clients = clients
        self.stop = threading.Event()

    def run(self):
        socks = {c.sock: c for c in self.clients}
        while not self.stop.is_set():
            ready = [c for c in self.clients if c.tls and c.tls.pending()]
            if not ready:
                r, _, _ = select.select(list(socks), [], [], 0.05)
                ready = [socks[s] for s in r]
            for c in ready:
                if not c.closed:
                    c._recv_some(time.time() + 0.01)

    def end(self):
        self.stop.set()
        self.join()


def sender(c, data):
    """Writes data on c from a thread (the server may stop reading for a
    while: that is what is tested) on a blocking socket (OpenSSL would
    give up on a socket with a timeout); returns the thread.  c is not
    used by anyone else until the thread is joined."""
    def run():
        c.sock.settimeout(None)
        try:
            c.send(data)
        except (OSError, SSL.Error):
            pass  # the test closed the stream first
        c.sock.settimeout(c.timeout)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.slow
def test_presence_flood_pauses_the_sender_not_the_others(server_factory, monkeypatch):
    """5,000 presence updates to 200 contacts (50 of them online and
    reading), with the c2s listener's default shaper: the flooder pays for
    every copy, so its updates go out no faster than the shaper lets bytes
    in; another user's login meanwhile completes at once, and memory stays
    flat.  Before: 1 M deliveries in ~40 s, the other login 11-13 s, RSS
    +660 MB (docs/performance.md "Presence floods")."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "quarantine_size_mb=16")
    srv = server_factory(extra_yaml=ROSTER)
    readers = [f"r{i}" for i in range(50)]
    users(srv, "flood", "eve", *readers)
    roster_from(srv, "flood", readers + [f"c{i}" for i in range(50, 200)])
    rs = [online(srv, n, "x")[0] for n in readers]
    f, fjid = online(srv, "flood", "f")
    drain = Drain(rs)
    drain.start()
    base = srv.rss_kib()

    n = 5000
    t0 = time.time()
    flood = sender(f, "".join(f"<presence><status>u{i}</status></presence>" for i in range(n)))
    # The other user logs in meanwhile (roster, initial presence, probes).
    t_login = time.time()
    e, _ = online(srv, "eve", "e", roster=True)
    login_s = time.time() - t_login
    e.roundtrip()
    peak = srv.rss_kib()
    # A window of a few seconds past the burst: the bound below holds for any
    # length (a shaper that works cannot break it), the unshaped flood
    # exceeds it by far in any window past a fraction of a second.
    while time.time() - t0 < 3:
        time.sleep(0.2)
        peak = max(peak, srv.rss_kib())

    drain.end()
    ahead = rs[0].roundtrip()
    elapsed = time.time() - t0
    got = len(re.findall(rb"<status>u\d+</status>", rs[0].buf))
    # What the shaper lets through by now, counting every copy at its least.
    most = (C2S_BURST + C2S_RATE * elapsed) / (200 * MIN_COPY) + 2
    print(f"flood: {got} updates delivered in {elapsed:.1f} s (at most {most:.0f}); "
          f"other login {login_s:.2f} s; RSS {base} -> {peak} KiB")
    assert 0 < got <= most, (got, most, elapsed, ahead[-300:])
    pauses = shaped(srv, fjid)
    assert pauses, "the flooder was never paused"
    assert login_s < 5, login_s
    assert peak - base < 64 * 1024, (base, peak)
    f.close()
    flood.join(10)


def test_fanout_is_charged_to_the_sender(server_factory):
    """A listener shaper of 20 KB burst at 50 KB/s: a client's 10 presence
    updates are ~450 bytes on its stream, but each one is sent to 200
    contacts (~16 KB): the client's stream waits for its shaper, so its
    round trip after them takes at least (10 x 200 copies - burst) / rate,
    and its pauses are logged with what was charged."""
    srv = server_factory(extra_yaml=ROSTER + "shaper:\n  tight: {rate: 50000, burst_size: 20000}\n",
                         listen_opts="    shaper: tight\n")
    users(srv, "flood")
    roster_from(srv, "flood", [f"c{i}" for i in range(200)])
    f, fjid = online(srv, "flood", "f")
    t0 = time.time()
    f.send("".join(f"<presence><status>u{i}</status></presence>" for i in range(10)))
    f.roundtrip()
    elapsed = time.time() - t0
    least = (10 * 200 * MIN_COPY - 20000) / 50000
    assert elapsed >= least * 0.9, (elapsed, least)
    pauses = shaped(srv, fjid)
    assert pauses, srv.log_text()[-3000:]
    charged = int(re.search(r"charged=(\d+)", pauses[-1]).group(1))
    assert charged >= 200 * MIN_COPY, pauses


def test_default_c2s_shaper_and_none(server_factory):
    """Without `shaper`, a c2s listener shapes (64 KiB/s, 512 KiB burst):
    1 MB of messages pause the client, and the round trip after them
    cannot come before (1 MB - burst - one read) / rate.  `shaper: none`
    turns it off: the same input, no pause."""
    body = "x" * 2000
    data = "".join(f"<message to='nobody@localhost' type='chat'><body>{body}</body></message>"
                   for _ in range(500))  # ~1 MB
    srv = server_factory()
    users(srv, "ann")
    a, ajid = online(srv, "ann", "x", presence=False)
    t0 = time.time()
    w = sender(a, data)
    w.join(60)
    a.roundtrip()
    elapsed = time.time() - t0
    assert shaped(srv, ajid), "the default shaper never paused the client"
    # Parsed by then: the burst, the refill, and the last read (64 KiB) whose
    # bytes are handled before the shaper pauses.
    assert elapsed >= (len(data) - C2S_BURST - 65536) / C2S_RATE, elapsed

    srv = server_factory(listen_opts="    shaper: none\n")
    users(srv, "ann")
    b, bjid = online(srv, "ann", "y", presence=False)
    w = sender(b, data)
    w.join(60)
    b.roundtrip()
    assert not shaped(srv, bjid)


def test_a_recipient_that_does_not_read_is_closed(server_factory, monkeypatch):
    """max_queue: a session that reads nothing of what it is sent is closed
    with policy-violation once more than max_queue bytes wait for it (past
    what the kernel's socket buffers hold); a session that reads gets
    everything and stays, and memory stays bounded meanwhile."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "quarantine_size_mb=16")
    # The test floods on purpose (megabytes in a few seconds): no shaper.
    srv = server_factory(listen_opts="    shaper: none\n    max_queue: 256KB\n")
    users(srv, "src", "reader", "sleeper")
    s, _ = online(srv, "src", "x", presence=False)
    r, rjid = online(srv, "reader", "x")
    z, zjid = online(srv, "sleeper", "x")
    drain = Drain([r])
    drain.start()
    base = peak = srv.rss_kib()
    body = "y" * 30000
    # Headlines: once the sleeper is gone, those to it are dropped, not
    # bounced to the sender (RFC 6121 8.5.3.2.1).  Five to each per round
    # trip (150 KB): the reader keeps up, the sleeper's buffers fill.
    sent = 0
    overflow = False
    for k in range(200):
        s.send("".join(f"<message to='{to}' type='headline' id='m{i}'><body>{body}</body>"
                       f"</message>" for i in range(sent, sent + 5) for to in (rjid, zjid)))
        sent += 5
        s.roundtrip()
        peak = max(peak, srv.rss_kib())
        if overflow:
            break  # one more round after it: the reader goes on
        overflow = f"jid={zjid} bytes=" in srv.log_text()
    drain.end()
    assert overflow, f"{sent * 30} KB to the sleeper and it is still open"
    assert z.stream_error(timeout=60) == "policy-violation"
    assert "max_queue=262144" in srv.log_text()
    r.roundtrip()
    ids = re.findall(rb"<message[^>]*id=['\"]m(\d+)['\"]", r.buf)
    assert [int(i) for i in ids] == list(range(sent)), len(ids)
    assert not r.closed and 'event="write queue full"' not in \
        "".join(ln for ln in srv.log_text().splitlines() if f"jid={rjid}" in ln)
    print(f"sleeper closed after {sent * 30} KB; RSS {base} -> {peak} KiB")
    assert peak - base < 64 * 1024, (base, peak)

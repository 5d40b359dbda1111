#!/usr/bin/python3
"""bench/presence_flood.py — the presence flood of the hardening issue
(item 8), measured: one client sends U presence updates to C contacts, all
online and reading; meanwhile other users log in one after another.

    bench/presence_flood.py --build build-release [--contacts 200] [--updates 5000]
                            [--seconds 30] [--mode default|before]

Modes: `default` runs the listener as shipped (default c2s shaper, which the
broadcast's copies are charged to; max_queue 1MB); `before` sets
`shaper: none` and `max_queue: 4MB`, which is what the server did before
(no shaper, no charge, a 4 MiB queue).

Clients speak plain TCP with SASL PLAIN (no TLS: the driver is one Python
thread and must keep up with the server).  The readers are drained by one
select loop that counts the presence stanzas they get.  The run ends when
every update was delivered or after --seconds.

Output: deliveries and deliveries/s, how far the flood got, the other
logins' latency (median and worst), the server's RSS at start and at peak.
"""
import argparse
import os
import re
import select
import sqlite3
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from xclient import XClient  # noqa: E402
from xmpptest import Server  # noqa: E402


def login_plain(port, user, resource="b", presence=True):
    c = XClient(port, timeout=120)
    c.open_stream()
    kind, val = c.plain(user, "pw")
    assert kind == "success", (kind, val)
    c.open_stream()
    _, jid = c.bind(resource)
    if presence:
        c.send("<presence/>")
    return c, jid


class Counter(threading.Thread):
    """Reads the readers' sockets and counts the presence stanzas they get."""

    def __init__(self, clients):
        super().__init__(daemon=True)
        self.socks = [c.sock for c in clients]
        self.count = 0
        self.stop = threading.Event()

    def run(self):
        tails = {s: b"" for s in self.socks}
        for s in self.socks:
            s.setblocking(False)
        while not self.stop.is_set():
            r, _, _ = select.select(self.socks, [], [], 0.05)
            for s in r:
                try:
                    d = s.recv(1 << 20)
                except BlockingIOError:
                    continue
                except OSError:
                    d = b""
                if not d:
                    self.socks.remove(s)
                    continue
                t = tails[s] + d
                self.count += t.count(b"</presence>")
                tails[s] = t[-10:]  # a match cut in two, never one counted twice


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-release")
    ap.add_argument("--contacts", type=int, default=200)
    ap.add_argument("--updates", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--mode", choices=("default", "before"), default="default")
    a = ap.parse_args()

    extra = "    starttls: false\n    starttls_required: false\n"
    if a.mode == "before":
        extra += "    shaper: none\n    max_queue: 4MB\n"
    d = tempfile.mkdtemp(prefix="xmppd-flood-")
    srv = Server(os.path.abspath(a.build), d, workers=2,
                 extra_yaml="allow_unencrypted_plain_auth: true\nloglevel: info\n"
                            "modules:\n  mod_roster: {}\n")
    # The default listen entry plus the plain-TCP settings.
    text = open(srv.config_path).read().replace("    module: c2s\n", "    module: c2s\n" + extra)
    text = text.replace("loglevel: debug\n", "")
    with open(srv.config_path, "w") as f:
        f.write(text)
    srv.start()
    try:
        contacts = [f"r{i}" for i in range(a.contacts)]
        others = [f"o{i}" for i in range(200)]
        for n in ["flood"] + contacts + others:
            assert srv.ctl_run("register", n, "localhost", "pw").returncode == 0
        with sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db")) as con:
            con.executemany("INSERT INTO roster_item (host, username, jid, subscription) "
                            "VALUES ('localhost', ?, ?, ?)",
                            [("flood", f"{c}@localhost", 2) for c in contacts] +
                            [(c, "flood@localhost", 1) for c in contacts])
        readers = [login_plain(srv.c2s_port, n)[0] for n in contacts]
        f, _ = login_plain(srv.c2s_port, "flood", "f")
        for r in readers:
            r.roundtrip()
        f.roundtrip()
        counter = Counter(readers)
        counter.start()
        time.sleep(0.5)
        start_count = counter.count
        base = peak = srv.rss_kib()

        data = "".join(f"<presence><status>u{i}</status></presence>"
                       for i in range(a.updates)).encode()
        f.sock.settimeout(None)
        t0 = time.time()
        threading.Thread(target=f.sock.sendall, args=(data,), daemon=True).start()
        want = a.updates * a.contacts
        lat = []
        k = 0
        while time.time() - t0 < a.seconds and counter.count - start_count < want:
            t1 = time.time()
            c, _ = login_plain(srv.c2s_port, others[k % len(others)], f"l{k}")
            c.roundtrip()
            lat.append(time.time() - t1)
            c.close()
            k += 1
            peak = max(peak, srv.rss_kib())
            time.sleep(0.5)
        elapsed = time.time() - t0
        got = counter.count - start_count
        counter.stop.set()
        print(f"mode={a.mode} contacts={a.contacts} updates={a.updates}")
        print(f"deliveries {got} of {want} in {elapsed:.1f} s: {got / elapsed:.0f}/s "
              f"({100.0 * got / want:.1f} % of the flood)")
        print(f"other logins: {len(lat)}, median {statistics.median(lat):.3f} s, "
              f"worst {max(lat):.3f} s")
        print(f"RSS {base // 1024} MiB at start, {peak // 1024} MiB at peak "
              f"(+{(peak - base) // 1024} MiB)")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""bench/mam_index.py — how fast mod_mam's indexer moves journaled
messages into the archive (the rate the archive keeps up with when
messages arrive for ever; issue 14, docs/performance.md "Throughput with
archiving").

PAIRS senders each send MESSAGES chat messages to their own recipient
(both online), pipelined, with background indexing off (journal_idle 1h,
journal_index_records out of reach): every message is answered once it is
in the journal.  Then one sender's archive query with the whole backlog
in the journal times a reader of one account (it indexes only that
account's records: its cost should follow the account's records, not the
journal's), and `xmppctl delete_old_mam_messages 1000000` (which deletes
nothing, but indexes the whole journal first) times the indexing of every
record (two per message: the sender's and the recipient's archive) in
transactions of up to 4 MiB of each worker's journal, sorted by account.

    bench/mam_index.py --build build-release [--pairs 50] [--messages 400] [--rounds 2]
                       [--perf DIR [--perf-cg dwarf] [--perf-freq HZ]]

--perf DIR records `perf record --call-graph fp` (--perf-cg dwarf) of the server into DIR/intake-N.data
and DIR/index-N.data (round N) for `perf report -i`.  Each indexing line gives the server's CPU
time per record (user + system, all threads: less sensitive to other work on the machine than the
rate); --syscalls adds the server's pwrite/pread/fdatasync calls per 1000 records while indexing
(perf stat of syscall tracepoints: independent of the machine's load).

Each round adds to the same archive (the second round indexes into a
table that already holds the first's rows).  The server runs on loopback
with a temporary data directory and is stopped by its PID.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from xclient import login  # noqa: E402
from xmpptest import Server  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-release")
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--perf", metavar="DIR", help="perf record -g each phase into DIR")
    ap.add_argument("--perf-cg", default="fp", help="perf's --call-graph (fp, dwarf)")
    ap.add_argument("--syscalls", action="store_true",
                    help="count the server's pwrite/pread/fdatasync calls while indexing (perf stat)")
    ap.add_argument("--perf-freq", type=int, default=0, help="perf's -F (samples/s; 0: perf's default)")
    a = ap.parse_args()
    if a.perf:
        os.makedirs(a.perf, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="xd-mamix-bench-")
    srv = Server(os.path.abspath(a.build), tmp, workers=2,
                 extra_yaml="modules:\n  mod_roster: {}\n  mod_stanza_id: {}\n  mod_mam:\n"
                            "    journal_idle: 1h\n    journal_index_records: 100000000\n")
    with open(srv.config_path) as f:
        conf = f.read().replace("loglevel: debug", "loglevel: notice")
    with open(srv.config_path, "w") as f:
        f.write(conf)
    try:
        srv.restart(timeout=120)
        for i in range(a.pairs):
            for u in (f"s{i}", f"r{i}"):
                assert srv.ctl_run("register", u, "localhost", "pw").returncode == 0
        snd = [login(srv.c2s_port, f"s{i}", "pw", resource="b")[0] for i in range(a.pairs)]
        rcv = [login(srv.c2s_port, f"r{i}", "pw", resource="b")[0] for i in range(a.pairs)]
        for c in snd + rcv:
            c.send("<presence/>")
        n = 0
        tick = os.sysconf("SC_CLK_TCK")

        def cpu():
            """The server's CPU seconds (user + system, all threads)."""
            with open(f"/proc/{srv.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick

        def perf(name):
            if not a.perf:
                return None
            freq = ["-F", str(a.perf_freq)] if a.perf_freq else []
            p = subprocess.Popen(["perf", "record", "--call-graph", a.perf_cg, *freq, "-q", "-p", str(srv.pid),
                                  "-o", os.path.join(a.perf, f"{name}.data")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # perf attached before the phase starts
            return p

        def perf_end(p):
            if p:
                p.send_signal(signal.SIGINT)
                p.wait(timeout=120)

        for rnd in range(a.rounds):
            pr = perf(f"intake-{rnd}")
            t0 = time.perf_counter()
            for i, c in enumerate(snd):
                c.send("".join(f"<message to='r{i}@localhost' type='chat' id='m{rnd}-{k}'>"
                               f"<body>round {rnd} message {k} of s{i} with a few words</body>"
                               f"</message>" for k in range(a.messages)))
            for i, c in enumerate(snd):
                c.send(f"<iq type='get' id='p{rnd}'><ping xmlns='urn:xmpp:ping'/></iq>")
                c.recv_until(rf"<iq[^>]*id=['\"]p{rnd}['\"]", timeout=600)
            t_append = time.perf_counter() - t0
            perf_end(pr)
            msgs = a.pairs * a.messages
            n += msgs
            # One account's reader with the whole backlog in the journal.
            t0 = time.perf_counter()
            q = snd[0]
            q.send(f"<iq type='set' id='q{rnd}'><query xmlns='urn:xmpp:mam:2'>"
                   f"<set xmlns='http://jabber.org/protocol/rsm'><max>0</max></set>"
                   f"</query></iq>")
            m = q.recv_until(rf"<iq[^>]*id=['\"]q{rnd}['\"][^>]*>.*?</iq>", timeout=600)
            t_one = time.perf_counter() - t0
            count = m.group(0)
            assert f"<count>{(rnd + 1) * a.messages}</count>" in str(count), count
            # The whole journal (a delete of nothing indexes it all first).
            pr = perf(f"index-{rnd}")
            ps = None
            if a.syscalls:
                ps = subprocess.Popen(["perf", "stat", "-x", ",", "-p", str(srv.pid), "-e",
                                       "syscalls:sys_enter_pwrite64,syscalls:sys_enter_pread64,"
                                       "syscalls:sys_enter_fdatasync"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                time.sleep(0.5)
            t0, c0 = time.perf_counter(), cpu()
            r = srv.ctl_run("delete_old_mam_messages", "1000000", timeout=600)
            t_index, c_index = time.perf_counter() - t0, cpu() - c0
            perf_end(pr)
            recs = 2 * msgs - a.messages  # s0's were indexed by its query
            calls = ""
            if ps:
                ps.send_signal(signal.SIGINT)
                err = ps.communicate(timeout=60)[1]
                cnt = {}
                for line in err.splitlines():
                    f = line.split(",")
                    if len(f) > 2 and f[0].isdigit():
                        cnt[f[2].rsplit("_", 1)[-1]] = int(f[0])
                calls = ", per 1000 records: " + " ".join(
                    f"{k} {1000 * v / recs:.0f}" for k, v in sorted(cnt.items()))
            assert r.returncode == 0, r
            print(f"round {rnd}: {msgs} messages ({2 * msgs} records) journaled in "
                  f"{t_append:.2f} s ({msgs / t_append:.0f} msgs/s, delivery included); "
                  f"one account's query (its {a.messages} records) {1000 * t_one:.1f} ms; "
                  f"the other {recs} records indexed in {t_index:.2f} s: "
                  f"{recs / t_index:.0f} records/s = {recs / 2 / t_index:.0f} msgs/s, "
                  f"server CPU {1e6 * c_index / recs:.1f} us/record "
                  f"(archive now {2 * n} rows){calls}",
                  flush=True)
        load = open("/proc/loadavg").read().split()[:3]
        print(f"load average {' '.join(load)}", flush=True)
        for c in snd + rcv:
            c.close()
    finally:
        srv.stop(signal.SIGTERM)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

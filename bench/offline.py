#!/usr/bin/python3
"""bench/offline.py — offline-store throughput: K senders each pipeline M
messages to an offline contact, then a ping; the time until every ping is
answered is the time until every message is committed (RFC 6120 10.1: the
sender's stream waits for its stores, docs/design.md).  Prints stores/s.

    bench/offline.py --build build-release [--senders 1,10,50] [--messages 2000]
                     [--workers 2] [--pool 4]

One sender is paced by one database round trip per message; several share
the per-worker batches (one transaction for up to 256 messages), which is
where the throughput comes from.  The server runs on loopback with a
temporary data directory and is stopped by its PID.
"""
import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from xclient import login  # noqa: E402
from xmpptest import Server  # noqa: E402


def run(build, senders, messages, workers, pool):
    tmp = tempfile.mkdtemp(prefix="xd-offline-bench-")
    srv = Server(os.path.abspath(build), tmp, workers=workers,
                 extra_yaml=(f"pool_threads: {pool}\n"
                             "modules:\n  mod_offline:\n    max_user_messages: 1000000\n"
                             "    max_user_size: 1GiB\n"))
    with open(srv.config_path) as f:  # the tests' debug log would dominate
        conf = f.read().replace("loglevel: debug", "loglevel: notice")
    with open(srv.config_path, "w") as f:
        f.write(conf)
    try:
        srv.start()  # inside: a server that never gets ready is stopped too
        for i in range(senders):
            for u in (f"s{i}", f"r{i}"):
                r = srv.ctl_run("register", u, "localhost", "pw")
                assert r.returncode == 0, r.stderr
        clients = [login(srv.c2s_port, f"s{i}", "pw", resource="b")[0] for i in range(senders)]
        payloads = ["".join(f"<message to='r{i}@localhost' type='chat'><body>offline bench "
                            f"message {k}</body></message>" for k in range(messages))
                    + "<iq type='get' id='done'><ping xmlns='urn:xmpp:ping'/></iq>"
                    for i in range(senders)]
        t0 = time.perf_counter()
        for c, p in zip(clients, payloads):
            c.send(p)
        for c in clients:
            c.recv_until(r"<iq[^>]*id=['\"]done['\"]", timeout=600)
        dt = time.perf_counter() - t0
        for c in clients:
            c.close()
        return senders * messages / dt, dt
    finally:
        srv.stop(signal.SIGTERM)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-release")
    ap.add_argument("--senders", default="1,10,50")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pool", type=int, default=4)
    a = ap.parse_args()
    for k in [int(x) for x in a.senders.split(",")]:
        m = max(1, a.messages // k) if k > 1 else a.messages
        rate, dt = run(a.build, k, m, a.workers, a.pool)
        print(f"senders {k:3d}  messages {k * m:6d}  {dt:6.2f} s  {rate:8.0f} stores/s", flush=True)


if __name__ == "__main__":
    main()

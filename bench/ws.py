#!/usr/bin/python3
"""bench/ws.py — XMPP over WebSocket (issue 17): memory per idle session
and messages per second between WebSocket clients.

    bench/ws.py [--build build] [--sessions 1000] [--pairs 4] [--messages 20000]

idle: N accounts log in over plain TCP c2s (SCRAM-SHA-256, bind, available
presence) and stay idle; then N others over ws://127.0.0.1/ws (no TLS on
either, so the figures compare the transports alone; TCP first, so the
server's warm-up is not billed to WebSocket), after N warm-up TCP sessions
that stay online, so neither group pays for the server's first growth.  The
server's RSS before and with them online gives the cost per session.

messages: P pairs of WebSocket clients; each sender writes M/P chat
messages to its partner as fast as the socket takes them, and the time
until every receiver has them all gives messages/s (the Python clients
are part of the measure: the figure is a lower bound for the server).

The server is the build in --build, started on loopback with a temporary
data directory, 2 workers, `shaper: none`, and stopped by its PID.
Only /usr/bin/python3 and its standard library are needed.  The clients are
bench/webclient.py's; bench/webcompare.py runs the same against ejabberd and
Prosody.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from webclient import TcpClient, WsClient, free_port, rss_kib  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--messages", type=int, default=20000)
    args = ap.parse_args()

    d = tempfile.mkdtemp(prefix="xd-ws-bench-")
    c2s, http = free_port(), free_port()
    cfg = os.path.join(d, "xmppd.yml")
    with open(cfg, "w") as f:
        f.write(f"hosts: [localhost]\nloglevel: warn\nlog_file: {d}/log\nworkers: 2\n"
                f"data_dir: {d}/var\nctl_socket: {d}/ctl.sock\n"
                f"listen:\n  - port: {c2s}\n    ip: 127.0.0.1\n    module: c2s\n"
                f"    starttls_required: false\n    shaper: none\n"
                f"  - port: {http}\n    ip: 127.0.0.1\n    module: http\n    shaper: none\n"
                f"    max_connections: 1000000\n")
    proc = subprocess.Popen([os.path.join(args.build, "xmppd"), "--config", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while not os.path.exists(os.path.join(d, "ctl.sock")) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        n = args.sessions
        names = [f"u{i}" for i in range(3 * n + 2 * args.pairs)]
        ctl = os.path.join(args.build, "xmppctl")
        for u in names:
            subprocess.run([ctl, "--socket", f"{d}/ctl.sock", "register", u, "localhost", "pw"],
                           check=True, stdout=subprocess.DEVNULL)
        # Warm-up: N sessions that stay, so caches, arenas and tables have
        # grown before either measured group.
        warm = [TcpClient(c2s, f"u{i}", "pw") for i in range(2 * n, 3 * n)]
        time.sleep(3)
        r0 = rss_kib(proc.pid)
        tcp = []
        for i in range(n, 2 * n):
            tcp.append(TcpClient(c2s, f"u{i}", "pw"))
        time.sleep(3)  # the idle parsers are trimmed after 2 s
        r1 = rss_kib(proc.pid)
        ws = []
        for i in range(n):
            w = WsClient(http)
            w.login(f"u{i}", "pw", resource="r")
            ws.append(w)
        time.sleep(3)
        r2 = rss_kib(proc.pid)
        print(f"idle sessions: {n} TCP, then {n} WebSocket (no TLS on either)")
        print(f"  RSS before {r0} KiB, with TCP {r1} KiB, with both {r2} KiB")
        print(f"  per TCP session {(r1 - r0) / n:.1f} KiB, "
              f"per WebSocket session {(r2 - r1) / n:.1f} KiB")
        for w in ws:
            w.close()
        for t in tcp:
            t.close()

        # messages/s between WebSocket clients
        base = 3 * n
        for t in warm:
            t.close()
        per = args.messages // args.pairs
        pairs = []
        for p in range(args.pairs):
            a, b = WsClient(http), WsClient(http)
            a.login(f"u{base + 2 * p}", "pw", resource="a", presence=False)
            b.login(f"u{base + 2 * p + 1}", "pw", resource="b", presence=False)
            pairs.append((a, b, f"u{base + 2 * p + 1}@localhost/b"))
        done = []

        def recv_all(b):
            got = 0
            while got < per:
                m = b.recv(60)
                got += m.count("<body>")
            done.append(got)

        def send_all(a, to):
            for i in range(per):
                a.send(f"<message to='{to}' type='chat'><body>m{i}</body></message>")

        t0 = time.time()
        th = [threading.Thread(target=recv_all, args=(b,)) for _, b, _ in pairs]
        th += [threading.Thread(target=send_all, args=(a, to)) for a, _, to in pairs]
        for t in th:
            t.start()
        for t in th:
            t.join()
        dt = time.time() - t0
        total = sum(done)
        print(f"messages: {total} over {args.pairs} WebSocket pairs in {dt:.2f} s = "
              f"{total / dt:.0f} messages/s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

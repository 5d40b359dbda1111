#!/usr/bin/python3
"""bench/bosh.py — XMPP over BOSH (issue 17): memory per idle BOSH session.

    bench/bosh.py [--build build] [--sessions 1000]

N warm-up TCP sessions stay online; then N sessions over plain TCP c2s and
N over BOSH at http://127.0.0.1/bosh (SCRAM-SHA-256, restart, bind,
available presence; no TLS on either), RSS taken 3 s after each group.  A
BOSH session is idle with no request held (bosh_max_inactivity is set to an
hour): what it costs is the session itself, not a held HTTP connection.

The server is the build in --build, started on loopback with a temporary
data directory, 2 workers, `shaper: none`, and stopped by its PID.  Only
/usr/bin/python3 and its standard library are needed.
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
sys.path.insert(0, HERE)
from webclient import BoshClient, TcpClient, free_port, rss_kib  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--sessions", type=int, default=1000)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="xd-bosh-bench-")
    c2s, http = free_port(), free_port()
    cfg = os.path.join(d, "xmppd.yml")
    with open(cfg, "w") as f:
        f.write(f"hosts: [localhost]\nloglevel: warn\nlog_file: {d}/log\nworkers: 2\n"
                f"data_dir: {d}/var\nctl_socket: {d}/ctl.sock\n"
                f"listen:\n  - port: {c2s}\n    ip: 127.0.0.1\n    module: c2s\n"
                f"    starttls_required: false\n    shaper: none\n"
                f"  - port: {http}\n    ip: 127.0.0.1\n    module: http\n    shaper: none\n"
                f"    max_connections: 1000000\n    bosh_max_inactivity: 1h\n"
                f"    request_rate: 1000000\n")
    proc = subprocess.Popen([os.path.join(args.build, "xmppd"), "--config", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while not os.path.exists(os.path.join(d, "ctl.sock")) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        n = args.sessions
        ctl = os.path.join(args.build, "xmppctl")
        for i in range(3 * n):
            subprocess.run([ctl, "--socket", f"{d}/ctl.sock", "register", f"u{i}", "localhost",
                            "pw"], check=True, stdout=subprocess.DEVNULL)
        warm = [TcpClient(c2s, f"u{i}", "pw") for i in range(2 * n, 3 * n)]
        time.sleep(3)
        r0 = rss_kib(proc.pid)
        tcp = [TcpClient(c2s, f"u{i}", "pw") for i in range(n, 2 * n)]
        time.sleep(3)
        r1 = rss_kib(proc.pid)
        bosh = [BoshClient(http, f"u{i}", "pw") for i in range(n)]
        time.sleep(3)
        r2 = rss_kib(proc.pid)
        print(f"idle sessions: {n} TCP, then {n} BOSH (no TLS on either)")
        print(f"  RSS before {r0} KiB, with TCP {r1} KiB, with both {r2} KiB")
        print(f"  per TCP session {(r1 - r0) / n:.1f} KiB, "
              f"per BOSH session {(r2 - r1) / n:.1f} KiB")
        for t in tcp + warm:
            t.close()
        del bosh
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

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
import base64
import hashlib
import hmac
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ws import TcpClient, free_port, rss_kib  # noqa: E402

NS = "http://jabber.org/protocol/httpbind"


class BoshClient:
    """SCRAM-SHA-256, restart and bind over BOSH; each request on a new connection."""

    def __init__(self, port, user, password):
        self.port, self.rid, self.sid = port, 1, None
        r = self.call(" to='localhost' wait='5' hold='1' ver='1.6' xmpp:version='1.0'")
        self.sid = re.search(r"sid='([0-9a-f]+)'", r).group(1)
        r = self.until(r"SCRAM-SHA-256", r)
        nonce = base64.b64encode(os.urandom(18)).decode()
        first = f"n={user},r={nonce}"
        r = self.until(r"<challenge[^>]*>([^<]*)</challenge>", self.call(
            "", "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>"
            + base64.b64encode(("n,," + first).encode()).decode() + "</auth>"))
        sf = base64.b64decode(re.search(r"<challenge[^>]*>([^<]*)</challenge>", r).group(1)).decode()
        a = dict(kv.split("=", 1) for kv in sf.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(a["s"]),
                                     int(a["i"]))
        fb = f"c=biws,r={a['r']}"
        am = f"{first},{sf},{fb}".encode()
        ck = hmac.new(salted, b"Client Key", "sha256").digest()
        cs = hmac.new(hashlib.sha256(ck).digest(), am, "sha256").digest()
        proof = base64.b64encode(bytes(x ^ y for x, y in zip(ck, cs))).decode()
        self.until(r"<success", self.call("", "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                                          + base64.b64encode(f"{fb},p={proof}".encode()).decode()
                                          + "</response>"))
        self.until(r"xmpp-bind", self.call(" xmpp:restart='true'"))
        self.until(r"</jid>", self.call("", "<iq xmlns='jabber:client' type='set' id='b'>"
                                        "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
                                        "<presence xmlns='jabber:client'/>"))

    def call(self, attrs="", inner=""):
        self.rid += 1
        sid = f" sid='{self.sid}'" if self.sid else ""
        body = (f"<body xmlns='{NS}' xmlns:xmpp='urn:xmpp:xbosh' rid='{self.rid}'{sid}{attrs}"
                + (f">{inner}</body>" if inner else "/>")).encode()
        s = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        s.sendall(f"POST /bosh HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n"
                  f"Connection: close\r\n\r\n".encode() + body)
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        s.close()
        return data.split(b"\r\n\r\n", 1)[1].decode().replace('"', "'")

    def until(self, pat, r):
        while not re.search(pat, r):
            assert "terminate" not in r, r
            r = self.call()
        return r


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
            t.s.close()
        del bosh
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""bench/webcompare.py — xmppd, ejabberd and Prosody over the web (issue 17),
interleaved in one run, the same client code (bench/webclient.py) and the
same N for every server:

  idle     per server: a fresh restart, one throwaway login, then N warm-up
           TCP sessions that stay (the server's own first growth is billed to
           nobody), then N plain TCP c2s sessions, N WebSocket sessions and
           (unless --no-bosh) N BOSH sessions (SCRAM-SHA-1, bind, available
           presence; no TLS anywhere), each group followed by --settle
           seconds and a sample of the server's RSS (its PIDs and their
           children: beam.smp and erl_child_setup for ejabberd): KiB per
           session of each transport.  An idle BOSH session holds no request
           (each request on its own connection).
  msg      P pairs of WebSocket clients; each sender writes M/P chat messages
           to its partner's full JID as fast as its socket takes them; the
           time until every receiver has all of them (or --msg-timeout) gives
           delivered messages/s.  The clients are Python threads: a lower
           bound, the same for all.
  upload   one account asks the server's upload service for a slot over c2s
           (XEP-0363, urn:xmpp:http:upload:0), PUTs a --mb MB file (10^6
           bytes) to the slot's URL and GETs it back into a discarding reader;
           MB/s of each (first byte sent to last byte answered) and the peak
           RSS above the one before.

Tests are interleaved: each test runs on every server in turn before the next
test, and the whole is repeated --reps times.  The servers are the adapters
in --adapters (scripts/bench-compare's copy of the shared harness, servers/),
already set up, running and with user1..userK registered (K >= 4N + 2P + 1,
password --password); scripts/bench-compare does all that (phase `web`).
Users: warm-up 1..N, TCP N+1..2N, WebSocket 2N+1..3N, BOSH 3N+1..4N,
message pairs 4N+1..4N+2P, upload 4N+2P+1.

Output: progress on stderr; one `RESULT ...` line per test and server and a
markdown summary on stdout.
"""
import argparse
import concurrent.futures
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from webclient import (BoshClient, RssPeak, TcpClient, WsClient, cpu_s,  # noqa: E402
                       http_get, http_put, request_slot, rss_kib)

MECH = "SCRAM-SHA-1"     # the one SCRAM all three offer with their stored passwords;
                         # --mech PLAIN for a check of what SCRAM costs a server


def say(*a):
    print(f"[{time.strftime('%H:%M:%S')}] webcompare:", *a, file=sys.stderr, flush=True)


class Server:
    def __init__(self, adapters, name):
        self.name, self.script = name, os.path.join(adapters, name, "server.sh")
        self.refresh()

    def refresh(self):
        out = subprocess.run([self.script, "env"], check=True, capture_output=True,
                             text=True).stdout.split()
        e = dict(kv.split("=", 1) for kv in out if "=" in kv)
        self.port, self.domain = int(e["PORT"]), e["DOMAIN"]
        self.http, self.ws_path, self.bosh_path = int(e["HTTP_PORT"]), e["WS_PATH"], e["BOSH_PATH"]
        self.upload = e["UPLOAD_HOST"]
        self.pids = [int(p) for p in e.get("PIDS", "").split(",") if p]

    def restart(self):
        subprocess.run([self.script, "restart"], check=True, stdout=sys.stderr)
        self.refresh()
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.http), timeout=2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def rss(self):
        return rss_kib(self.pids)


def group(n, make, workers):
    """n sessions made by make(i) on a pool of workers threads: (the
    sessions, errors, seconds)."""
    t0 = time.time()
    out, errs = [], []
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        for f in [ex.submit(make, i) for i in range(n)]:
            try:
                out.append(f.result())
            except Exception as e:  # noqa: BLE001 — counted and reported
                errs.append(repr(e)[:200])
    return out, errs, time.time() - t0


def close_all(sessions):
    for s in sessions:
        try:
            s.close()
        except Exception:  # noqa: BLE001 — BoshClient has no socket
            pass


def idle(srv, a):
    n, pw = a.sessions, a.password
    srv.restart()
    TcpClient(srv.port, "user1", pw, srv.domain, MECH).close()
    time.sleep(1)
    res = {"rss_start": srv.rss()}

    def tcp(base):
        return lambda i: TcpClient(srv.port, f"user{base + i}", pw, srv.domain, MECH)

    def ws(i):
        w = WsClient(srv.http, srv.ws_path, srv.domain)
        w.login(f"user{2 * n + 1 + i}", pw, srv.domain, MECH)
        return w

    def bosh(i):
        return BoshClient(srv.http, f"user{3 * n + 1 + i}", pw, srv.domain, srv.bosh_path, MECH)

    groups = [("warm", tcp(1)), ("tcp", tcp(n + 1)), ("ws", ws)]
    if not a.no_bosh:
        groups.append(("bosh", bosh))
    held, prev = [], None
    for name, make in groups:
        sess, errs, dt = group(n, make, a.workers)
        held += sess
        time.sleep(a.settle)
        r = srv.rss()
        res[f"{name}_n"], res[f"{name}_errors"], res[f"{name}_s"] = len(sess), len(errs), dt
        res[f"rss_{name}"] = r
        if prev is not None and sess:
            res[f"{name}_kib"] = (r - prev) / len(sess)
        prev = r
        say(f"{srv.name}: {name} {len(sess)}/{n} sessions in {dt:.1f} s, RSS {r} KiB"
            + (f", {len(errs)} failed, first: {errs[0]}" if errs else ""))
    if a.late:
        # all groups still held: what the sessions after the warm-up cost
        # once the server has had --late seconds more (ejabberd's processes
        # collect and hibernate later than the settle)
        time.sleep(a.late)
        r = srv.rss()
        after = sum(res[f"{g}_n"] for g, _ in groups[1:])
        res["rss_late"] = r
        if after:
            res["late_kib"] = (r - res["rss_warm"]) / after
        say(f"{srv.name}: {a.late:.0f} s later RSS {r} KiB")
    close_all(held)
    return res


def msg(srv, a):
    p, per, pw = a.pairs, a.messages // a.pairs, a.password
    base = 4 * a.sessions + 1
    pairs = []
    for k in range(p):
        s, r = WsClient(srv.http, srv.ws_path, srv.domain), WsClient(srv.http, srv.ws_path,
                                                                      srv.domain)
        s.login(f"user{base + 2 * k}", pw, srv.domain, MECH, resource="a")
        r.login(f"user{base + 2 * k + 1}", pw, srv.domain, MECH, resource="b")
        pairs.append((s, r))
    time.sleep(1)
    got = [0] * p
    deadline = time.time() + a.msg_timeout

    def recv_all(k):
        r = pairs[k][1]
        while got[k] < per and time.time() < deadline:
            try:
                got[k] += r.recv(max(0.1, deadline - time.time())).count("<body>")
            except (socket.timeout, OSError, EOFError):
                break

    def send_all(k):
        s, r = pairs[k]
        for i in range(per):
            s.send(f"<message xmlns='jabber:client' to='{r.jid}' type='chat'>"
                   f"<body>m{i}</body></message>")

    th = [threading.Thread(target=recv_all, args=(k,)) for k in range(p)]
    th += [threading.Thread(target=send_all, args=(k,)) for k in range(p)]
    c0, t0 = cpu_s(srv.pids), time.time()
    for t in th:
        t.start()
    for t in th:
        t.join()
    dt, c1 = time.time() - t0, cpu_s(srv.pids)
    close_all([c for pr in pairs for c in pr])
    total = sum(got)
    return {"pairs": p, "sent": per * p, "delivered": total, "seconds": round(dt, 2),
            "msgs_per_s": round(total / dt), "srv_cpu_s": round(c1 - c0, 2)}


def upload(srv, a):
    size = a.mb * 1000 * 1000
    c = TcpClient(srv.port, f"user{4 * a.sessions + 2 * a.pairs + 1}", a.password, srv.domain,
                  MECH)
    out = {}
    try:
        name = f"big-{int(time.time() * 1000)}.bin"
        put_url, hdrs, get_url = request_slot(c, srv.upload, name, size)
        before = srv.rss()
        mon = RssPeak(srv.pids)
        mon.start()
        c0 = cpu_s(srv.pids)
        t_put, status, body = http_put(put_url, size, hdrs)
        c1 = cpu_s(srv.pids)
        mon.stop = True
        mon.join()
        out.update(put_status=status, put_mb_s=round(size / t_put / 1e6, 1),
                   put_s=round(t_put, 2), put_srv_cpu_s=round(c1 - c0, 2),
                   put_peak_mib=round((mon.peak - before) / 1024, 1))
        if status not in (200, 201):
            out["put_error"] = body[:200]
            return out
        before = srv.rss()
        mon = RssPeak(srv.pids)
        mon.start()
        c0 = cpu_s(srv.pids)
        t_get, status, n = http_get(get_url)
        c1 = cpu_s(srv.pids)
        mon.stop = True
        mon.join()
        out.update(get_status=status, get_bytes=n, get_mb_s=round(size / t_get / 1e6, 1),
                   get_s=round(t_get, 2), get_srv_cpu_s=round(c1 - c0, 2), get_peak_mib=round((mon.peak - before) / 1024, 1),
                   rss_after_mib=round(srv.rss() / 1024, 1))
    finally:
        c.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adapters", required=True, help="servers/ of the harness copy")
    ap.add_argument("--servers", default="xmppd-web ejabberd-web prosody-web")
    ap.add_argument("--tests", default="idle msg upload", help="of idle msg upload, space or comma separated")
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--msg-timeout", type=float, default=120)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--settle", type=float, default=5)
    ap.add_argument("--late", type=float, default=0,
                    help="idle: sample RSS again this many seconds after the last group")
    ap.add_argument("--workers", type=int, default=8, help="logins in flight")
    ap.add_argument("--mech", default="SCRAM-SHA-1", choices=["SCRAM-SHA-1", "PLAIN"])
    ap.add_argument("--no-bosh", action="store_true")
    ap.add_argument("--password", default="password")
    a = ap.parse_args()
    global MECH
    MECH = a.mech
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    servers = [Server(a.adapters, s) for s in a.servers.split()]
    results = []
    print(f"# webcompare {time.strftime('%Y-%m-%dT%H:%M:%S%z')} servers=[{a.servers}] "
          f"tests=[{a.tests}] sessions={a.sessions} pairs={a.pairs} messages={a.messages} "
          f"mb={a.mb} reps={a.reps} settle={a.settle} workers={a.workers} mech={a.mech}",
          flush=True)
    for rep in range(1, a.reps + 1):
        for test in a.tests.replace(",", " ").split():
            for srv in servers:
                load = os.getloadavg()[0]
                say(f"rep {rep} {test} {srv.name} (load {load:.2f})")
                try:
                    r = {"idle": idle, "msg": msg, "upload": upload}[test](srv, a)
                except Exception as e:  # noqa: BLE001 — reported, the run goes on
                    r = {"error": repr(e)[:300]}
                    say(f"{srv.name} {test}: {r['error']}")
                r.update(rep=rep, test=test, server=srv.name, load1=round(load, 2))
                results.append(r)
                print("RESULT " + " ".join(
                    f"{k}={round(v, 1) if isinstance(v, float) else v}" for k, v in r.items()
                    if not isinstance(v, (bytes, list))), flush=True)
    summary(results, servers, a)


def summary(results, servers, a):
    def vals(test, srv, key):
        return [r[key] for r in results if r["test"] == test and r["server"] == srv.name
                and key in r]

    def cell(v, fmt="{:.1f}"):
        return " / ".join(fmt.format(x) for x in v) if v else "—"

    print()
    print(f"| server | TCP KiB/session | WebSocket KiB/session | BOSH KiB/session "
          f"| WS msgs/s ({a.pairs} pairs) | PUT MB/s | GET MB/s |")
    print("|---|---|---|---|---|---|---|")
    for s in servers:
        print(f"| {s.name} | {cell(vals('idle', s, 'tcp_kib'))} | {cell(vals('idle', s, 'ws_kib'))}"
              f" | {cell(vals('idle', s, 'bosh_kib'))} | {cell(vals('msg', s, 'msgs_per_s'), '{:.0f}')}"
              f" | {cell(vals('upload', s, 'put_mb_s'))} | {cell(vals('upload', s, 'get_mb_s'))} |")
    ws = {s.name: vals("idle", s, "ws_kib") for s in servers}
    ej = [n for n in ws if n.startswith("ejabberd")]
    xd = [n for n in ws if n.startswith("xmppd")]
    if ej and xd and ws[ej[0]] and ws[xd[0]]:
        x, e = statistics.median(ws[xd[0]]), statistics.median(ws[ej[0]])
        print(f"\nWebSocket KiB/session, medians: {xd[0]} {x:.1f}, {ej[0]} {e:.1f}: "
              f"ratio {x / e:.2f} (goal <= 0.25)")


if __name__ == "__main__":
    main()

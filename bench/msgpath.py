#!/usr/bin/python3
"""bench/msgpath.py — what one chat message costs inside xmppd, counted
rather than timed: instructions and calls of malloc/free/memcpy, per message,
from the sender's read to the recipient's write.

It starts an xmppd of the given build under valgrind's callgrind (which
counts instructions and calls, repeatable whatever else the machine does),
logs two users in over plain TCP (the shared bench's msg phase), sends
N messages from one to the other's full JID and waits until all arrived,
then stops the server.  It does that twice, with N1 and N2 messages, and
reports the difference divided by N2 - N1: what each further message costs,
start-up and login cancelled out.

    bench/msgpath.py --build build-release [--workers 1|2] [--modules bench|none]
                     [--n1 200] [--n2 1200]

Modules: `bench` (default) loads the IM modules of the shared bench's xmppd
configuration (bench/shared/servers/xmppd/xmppd.yml.in), as the msg phase
runs; `none` loads no module, the bare router.

Workers: with 1 the recipient is always on the sender's worker (direct
delivery); with 2 there are two listeners pinned to worker 0 and worker 1
(the listener option `worker`), the sender logs in on the first and the
recipient on the second: every message crosses through worker 1's inbox.

Output: one line per counter, e.g.
    Ir/msg 16399
    malloc/msg 2.00
    free/msg 2.00
    __memcpy_avx_unaligned_erms/msg 43.46   (every memcpy call, attribute strings included;
                                             copies of the whole message: see docs/performance.md)
"""
import argparse
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
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from xclient import XClient  # noqa: E402
from xmpptest import Server, free_port  # noqa: E402

BODY = "x" * 100  # a short chat line, as the shared bench's bodies


def login_plain(port, user, resource):
    c = XClient(port, timeout=120)
    c.open_stream()
    kind, val = c.plain(user, "pw")
    assert kind == "success", (kind, val)
    c.open_stream()
    _, jid = c.bind(resource)
    c.send("<presence/>")
    return c, jid


def worker_of(srv, jid):
    m = re.findall(r'event="session bound"[^\n]*jid=' + re.escape(jid) + r' worker=(\d+)',
                   srv.log_text())
    return int(m[-1]) if m else None


BENCH_MODULES = ("mod_roster", "mod_offline", "mod_vcard", "mod_private", "mod_blocking",
                 "mod_privacy", "mod_stanza_id", "mod_last")


def make_cert(tmp):
    """One certificate for both runs: a self-signed one made at start-up
    would put key generation (a random number of OpenSSL allocations) into
    the difference."""
    path = os.path.join(tmp, "localhost.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", path, "-out", path + ".crt"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(path, "a") as f, open(path + ".crt") as c:
        f.write(c.read())
    os.chmod(path, 0o600)
    return path


def run(build, tmp, n, workers, tool_args, modules):
    """One server run with n messages; returns the callgrind output file."""
    out = os.path.join(tmp, f"cg.{n}.out")
    extra = (f"certfiles:\n  - {os.path.join(tmp, 'localhost.pem')}\n"
             "host_config:\n  localhost:\n    allow_unencrypted_plain_auth: true\n")
    if modules == "none":
        extra += "modules: {}\n"
    else:
        extra += "modules:\n" + "".join(f"  {m}: {{}}\n" for m in BENCH_MODULES)
    port2 = free_port()
    srv = Server(build, os.path.join(tmp, f"srv{n}"), workers=workers,
                 listen=None, extra_yaml=extra)
    if workers > 1:
        with open(srv.config_path) as f:
            cfg = f.read()
        cfg = cfg.replace("    module: c2s\n",
                          "    module: c2s\n    worker: 0\n"
                          f"  - port: {port2}\n    ip: 127.0.0.1\n    module: c2s\n"
                          "    worker: 1\n", 1)
        with open(srv.config_path, "w") as f:
            f.write(cfg)
    # The plain-TCP listener of the bench: no STARTTLS required.
    with open(srv.config_path) as f:
        cfg = f.read().replace("    module: c2s\n",
                               "    module: c2s\n    starttls_required: false\n")
    cfg = cfg.replace("loglevel: debug", "loglevel: info")
    with open(srv.config_path, "w") as f:
        f.write(cfg)
    subprocess.run([srv.bin, "--config", srv.config_path, "--check-config"], check=True,
                   stdout=subprocess.DEVNULL)
    bin_, args = srv.bin, ["--config", srv.config_path]
    srv._stderr = open(srv.stderr_path, "wb")
    srv.proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                 *tool_args, bin_, *args], cwd=srv.dir,
                                stdout=srv._stderr, stderr=srv._stderr)
    srv.wait_ready(timeout=300)
    for u in ("alice", "bob"):
        srv.ctl_run("register", u, "localhost", "pw", timeout=120)
    a, ajid = login_plain(srv.c2s_port, "alice", "a")
    b, bjid = login_plain(srv.c2s_port if workers == 1 else port2, "bob", "b")
    wa, wb = worker_of(srv, ajid), worker_of(srv, bjid)
    if workers > 1 and (wa, wb) != (0, 1):
        sys.exit(f"msgpath: sessions on workers {wa}, {wb}, not 0, 1")
    # Warm-up: one message, and its arrival.
    a.send(f"<message type='chat' to='{bjid}' id='w'><body>{BODY}</body></message>")
    b.recv_until(r"id=['\"]w['\"]", timeout=120)
    b.buf = b""
    for i in range(n):
        a.send(f"<message type='chat' to='{bjid}' id='m{i}'><body>{BODY}</body></message>")
    b.recv_until(r"id=['\"]m" + str(n - 1) + r"['\"]", timeout=600)
    a.close()
    b.close()
    srv.stop(timeout=300)
    return out, (wa, wb)


def totals(out):
    """Instructions and call counts of malloc/free/memcpy from callgrind_annotate."""
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", out], capture_output=True,
                         text=True, check=True).stdout
    ir = int(re.search(r"([\d,]+)\s+\(100\.0%\)\s+PROGRAM TOTALS", ann).group(1).replace(",", ""))
    calls = {}
    # Call counts: callgrind_control format via --tree=caller is noisy; read the raw file.
    with open(out) as f:
        data = f.read()
    fn_names = {}
    for m in re.finditer(r"^c?fn=\((\d+)\)(?: (.+))?$", data, re.M):
        if m.group(2):
            fn_names[m.group(1)] = m.group(2)
    want = {"malloc", "calloc", "realloc", "free", "memcpy", "__memcpy_avx_unaligned_erms",
            "__memmove_avx_unaligned_erms", "memmove"}
    # "cfn=(id)" followed by "calls=N ..." lines.
    for m in re.finditer(r"^cfn=\((\d+)\)(?: (.+))?\ncalls=(\d+)", data, re.M):
        name = m.group(2) or fn_names.get(m.group(1), "")
        base = name.split("'")[0]
        if base in want:  # the libc entry points only, not our wrappers (xd_malloc)
            calls[base] = calls.get(base, 0) + int(m.group(3))
    return ir, calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build-release"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--modules", choices=("bench", "none"), default="bench")
    ap.add_argument("--n1", type=int, default=200)
    ap.add_argument("--n2", type=int, default=1200)
    ap.add_argument("--keep", action="store_true", help="keep the callgrind files")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("msgpath: valgrind is needed (Debian package valgrind)")
    tmp = tempfile.mkdtemp(prefix="xd-msgpath-")
    build = os.path.abspath(args.build)
    make_cert(tmp)
    o1, p1 = run(build, tmp, args.n1, args.workers, [], args.modules)
    o2, p2 = run(build, tmp, args.n2, args.workers, [], args.modules)
    (i1, c1), (i2, c2) = totals(o1), totals(o2)
    d = args.n2 - args.n1
    print(f"workers={args.workers} modules={args.modules} placement={p2} "
          f"n1={args.n1} n2={args.n2}")
    print(f"Ir/msg {(i2 - i1) / d:.0f}")
    for k in sorted(set(c1) | set(c2)):
        print(f"{k}/msg {(c2.get(k, 0) - c1.get(k, 0)) / d:.2f}")
    if args.keep:
        print(f"callgrind files: {o1} {o2}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""bench/mobile.py — mobile sessions (issue 13): what a parked XEP-0198
session costs, how fast SASL2 + Bind2 + FAST logs in, and what stream
management adds to an idle session.

    bench/mobile.py [--build build-release] [--cert rsa|ec] park
                    [--accounts 1000] [--messages 100] [--resume on|off] [--sample 10]
                    [--cut-batch K] [--expire SECONDS] [--pad BYTES]
    bench/mobile.py [--build build-release] [--cert rsa|ec] logins
                    [--flow sasl1|sasl2|fast|all] [--accounts 1000] [--conc 16]
                    [--procs 1] [--seconds 10] [--reps 3]
    bench/mobile.py [--build build-release] [--cert rsa|ec] idle
                    [--sessions 10000] [--sm on|off] [--leave-unacked] [--procs 2]

park: N accounts log in (STARTTLS, SCRAM-SHA-256, bind, <enable resume='true'/>
or, with --resume off, <enable/>, available presence); a sender puts M chat
messages to each full JID, which the account reads and never acknowledges;
then every TCP connection is cut (no </stream>, no TLS close_notify), so the
sessions park (or, without resumption, end and their messages go to offline
storage).  The server's RSS, Pss and glibc heap in use (malloc_stats() through
gdb) are taken before the logins, after them, after the messages and after
the cut; then a sample of accounts resumes (or logs in again) and must get
exactly the M messages (what was stored for it), in order.  --cut-batch K
cuts K connections at a time, each batch handled before the next; --expire S
sets sm_resume_timeout and waits for the parked sessions to time out,
counting what reached offline storage and what was refused ("offline store
queue full"); --pad makes the bodies longer.

logins: closed-loop login cycles on C connections (spread over P driver
processes), for S seconds after a 2 s warm-up:
  sasl1  TCP, STARTTLS, SASL SCRAM-SHA-256, stream restart, bind, close
  sasl2  TCP, STARTTLS, SASL2 SCRAM-SHA-256 with Bind2 inline, close
  fast   TCP, STARTTLS, SASL2 HT-SHA-256-NONE with a FAST token (fetched
         once per account beforehand) and Bind2 inline, close
Prints logins/s, login latency (connect to bound) p50/p99, and the server's
CPU seconds (utime + stime of /proc/PID/stat) per login.  The driver caches
each account's SCRAM salted password as xmppload does (the server still
does its full share of every exchange).

idle: S sessions (STARTTLS, SCRAM, bind, available presence; with --sm on
also <enable resume='true'/>, two pings and an <a/> acknowledging them),
held idle (by default everything acknowledged; --leave-unacked leaves the
last ping result waiting); RSS and heap before and with them online.

The server is the release build in --build (meson setup build-release
--buildtype=release), started by the script on 127.0.0.1 with a temporary
data directory, 2 workers, the IM modules of bench/shared's adapter, an
RSA-2048 certificate (as the shared harness uses), `shaper: none`, and
stopped by its PID.  Accounts (u0.., password pw, and `sender`) are
registered once through xmppctl and the database is kept in --cache
(default /var/tmp/xd-mobile-bench) for later runs of the same binary.
Only /usr/bin/python3 and its standard library are needed.
"""
import argparse
import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import multiprocessing
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from xmpptest import Server  # noqa: E402

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS2 = "urn:xmpp:sasl:2"
SM = "urn:xmpp:sm:3"
DOMAIN = "localhost"
PASSWORD = "pw"

MODULES = ("modules:\n  mod_roster: {}\n  mod_offline: {}\n  mod_vcard: {}\n"
           "  mod_private: {}\n  mod_blocking: {}\n  mod_privacy: {}\n"
           "  mod_stanza_id: {}\n  mod_last: {}\n")
LISTEN_OPTS = "    shaper: none\n    backlog: 1024\n    max_connections: 100000\n"


def b64(b):
    return base64.b64encode(b).decode()


def unb64(s):
    s = s.strip()
    return base64.b64decode(s) if s and s != "=" else b""


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 200000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---- server -----------------------------------------------------------------------------

def make_cert(d, kind="rsa"):
    """A self-signed certificate: RSA-2048 (the shared harness's kind) or ECDSA P-256
    (the kind xmppd creates for itself)."""
    pem = os.path.join(d, "cert.pem")
    key, crt = os.path.join(d, "k.pem"), os.path.join(d, "c.pem")
    newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else [
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run(["openssl", "req", "-x509"] + newkey + ["-nodes", "-keyout", key,
                    "-out", crt, "-days", "30", "-subj", f"/CN={DOMAIN}",
                    "-addext", f"subjectAltName=DNS:{DOMAIN}"],
                   check=True, capture_output=True)
    with open(pem, "w") as f:
        f.write(open(crt).read() + open(key).read())
    return pem


class Bench:
    """A release xmppd in a temporary directory with the cached accounts."""

    def __init__(self, a, loglevel="warning", extra=""):
        self.tmp = tempfile.mkdtemp(prefix="xd-mobile-")
        pem = make_cert(self.tmp, a.cert)
        self.srv = Server(os.path.abspath(a.build), self.tmp, workers=a.workers,
                          listen_opts=LISTEN_OPTS,
                          extra_yaml=(f"certfiles:\n  - {pem}\n" + MODULES + extra))
        with open(self.srv.config_path) as f:
            conf = f.read().replace("loglevel: debug", f"loglevel: {loglevel}")
        with open(self.srv.config_path, "w") as f:
            f.write(conf)
        self.accounts = a.need
        cache_db = users_db(a, self.accounts)
        os.makedirs(self.srv.data_dir, exist_ok=True)
        shutil.copy(cache_db, os.path.join(self.srv.data_dir, "xmppd.db"))

    def __enter__(self):
        try:
            start_quiet(self.srv)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc):
        self.srv.stop(signal.SIGTERM, timeout=120)
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def port(self):
        return self.srv.c2s_port

    def mem(self):
        """(VmRSS KiB, Pss KiB) of the server."""
        pid = self.srv.pid
        rss = pss = 0
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
        except OSError:
            pass
        return rss, pss

    def heap(self):
        """glibc's own count of heap bytes in use (malloc_stats through gdb, printed to
        the server's stderr): what RSS does not show, memory freed but not returned."""
        if not shutil.which("gdb"):
            return None
        before = len(self.srv.stderr_text())
        subprocess.run(["gdb", "-p", str(self.srv.pid), "-batch", "-nx",
                        "-ex", "call (void) malloc_stats()"],
                       capture_output=True, timeout=120)
        text = self.srv.stderr_text()[before:]
        m = re.findall(r"Total \(incl\. mmap\):\s*system bytes\s*=\s*(\d+)\s*in use bytes\s*=\s*(\d+)",
                       text)
        return (int(m[-1][0]), int(m[-1][1])) if m else None

    def cpu(self):
        """utime + stime of the server in seconds."""
        f = open(f"/proc/{self.srv.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def log_count(self, text):
        return self.srv.log_text().count(text)


def start_quiet(srv):
    """Starts the server and waits until its c2s port accepts (below loglevel notice
    there is no "xmppd ready" line to wait for) and the control socket answers."""
    srv.start(wait=False)
    deadline = time.time() + 30
    try:
        while True:
            assert srv.proc.poll() is None, srv.stderr_text() + srv.log_text()
            try:
                socket.create_connection(("127.0.0.1", srv.c2s_port), timeout=1).close()
                if srv.ctl_run("registered_users", DOMAIN).returncode == 0:
                    return
            except OSError:
                pass
            assert time.time() < deadline, "xmppd did not start:\n" + srv.log_text()
            time.sleep(0.1)
    except BaseException:
        srv.stop(signal.SIGTERM)  # never leave a server behind
        raise


def users_db(a, n):
    """A database with accounts u0..u{n-1} and sender (password pw), registered once
    through xmppctl and cached per binary."""
    xd = os.path.join(os.path.abspath(a.build), "xmppd")
    st = os.stat(xd)
    stamp = f"{st.st_size}-{int(st.st_mtime)}"
    have = []
    for f in os.listdir(a.cache) if os.path.isdir(a.cache) else []:
        mm = re.fullmatch(r"users-(\d+)-" + stamp + r"\.db", f)
        if mm and int(mm.group(1)) >= n:
            have.append((int(mm.group(1)), os.path.join(a.cache, f)))
    if have:
        return min(have)[1]
    path = os.path.join(a.cache, f"users-{n}-{stamp}.db")
    os.makedirs(a.cache, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="xd-mobile-reg-")
    srv = Server(os.path.abspath(a.build), tmp, workers=2, extra_yaml="pool_threads: 4\n")
    with open(srv.config_path) as f:
        conf = f.read().replace("loglevel: debug", "loglevel: warning")
    with open(srv.config_path, "w") as f:
        f.write(conf)
    start_quiet(srv)
    try:
        t0 = time.time()
        names = ["sender"] + [f"u{i}" for i in range(n)]

        def reg(name):
            r = srv.ctl_run("register", name, DOMAIN, PASSWORD, timeout=120)
            assert r.returncode == 0, r.stdout + r.stderr

        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            list(ex.map(reg, names))
        print(f"# registered {len(names)} accounts in {time.time() - t0:.0f} s", flush=True)
    finally:
        srv.stop(signal.SIGTERM)
    shutil.copy(os.path.join(srv.data_dir, "xmppd.db"), path + ".tmp")
    os.rename(path + ".tmp", path)
    shutil.rmtree(tmp, ignore_errors=True)
    return path


# ---- client -----------------------------------------------------------------------------

def tls_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_salted = {}


def scram_keys(password, salt, it):
    """The client's PBKDF2, once per (password, salt, iterations), as xmppload caches it."""
    k = (password, salt, it)
    if k not in _salted:
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, it)
        ckey = hmac.new(salted, b"Client Key", "sha256").digest()
        _salted[k] = (ckey, hashlib.sha256(ckey).digest(),
                      hmac.new(salted, b"Server Key", "sha256").digest())
    return _salted[k]


RX_FEATURES = re.compile(rb"<stream:features\s*/>|<stream:features>.*?</stream:features>", re.S)
RX_HEADER = re.compile(rb"<stream:stream[^>]*>")
RX_PROCEED = re.compile(rb"<proceed xmlns=['\"]urn:ietf:params:xml:ns:xmpp-tls['\"]\s*/>")
RX_SASL1 = re.compile(rb"<(challenge|success|failure) xmlns=['\"]" + NS_SASL.encode() +
                      rb"['\"][^>]*?(/>|>(.*?)</\1>)", re.S)
RX_SASL2 = re.compile(rb"<(challenge|success|failure) xmlns=['\"]" + NS2.encode() +
                      rb"['\"][^>]*?(/>|>(.*?)</\1>)", re.S)
RX_CLOSE = re.compile(rb"</stream:stream>")


class Client:
    def __init__(self):
        self.r = self.w = None
        self.buf = b""

    async def connect(self, port):
        self.r, self.w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)

    def send(self, s):
        self.w.write(s.encode() if isinstance(s, str) else s)

    async def until(self, rx, timeout=120):
        if isinstance(rx, (str, bytes)):
            rx = re.compile(rx.encode() if isinstance(rx, str) else rx, re.S)
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            d = await asyncio.wait_for(self.r.read(1 << 16), timeout)
            if not d:
                raise EOFError(f"closed, waiting for {rx.pattern!r}; got {self.buf[-300:]!r}")
            self.buf += d

    async def read_some(self, timeout=120):
        d = await asyncio.wait_for(self.r.read(1 << 16), timeout)
        if not d:
            raise EOFError("closed")
        self.buf += d

    async def open_stream(self):
        self.send(f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  f"xmlns:stream='{NS_STREAMS}' to='{DOMAIN}' version='1.0'>")
        await self.until(RX_HEADER)
        return (await self.until(RX_FEATURES)).group(0).decode()

    async def starttls(self, ctx):
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.until(RX_PROCEED)
        assert self.buf == b"", self.buf
        await self.w.start_tls(ctx, server_hostname=DOMAIN)

    async def tls_stream(self, port, ctx):
        await self.connect(port)
        await self.open_stream()
        await self.starttls(ctx)
        return await self.open_stream()

    async def scram1(self, user):
        cnonce = b64(os.urandom(18))
        first_bare = f"n={user},r={cnonce}"
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>"
                  f"{b64(('n,,' + first_bare).encode())}</auth>")
        m = await self.until(RX_SASL1)
        assert m.group(1) == b"challenge", m.group(0)
        server_first = unb64((m.group(3) or b"").decode()).decode()
        final, auth_msg, skey = self._scram_final(first_bare, server_first, cnonce)
        self.send(f"<response xmlns='{NS_SASL}'>{b64(final.encode())}</response>")
        m = await self.until(RX_SASL1)
        assert m.group(1) == b"success", m.group(0)
        v = unb64((m.group(3) or b"").decode())
        assert v == b"v=" + base64.b64encode(hmac.new(skey, auth_msg, "sha256").digest()), v

    def _scram_final(self, first_bare, server_first, cnonce):
        at = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert at["r"].startswith(cnonce), server_first
        ckey, stored, skey = scram_keys(PASSWORD, base64.b64decode(at["s"]), int(at["i"]))
        final_bare = f"c={b64(b'n,,')},r={at['r']}"
        auth_msg = f"{first_bare},{server_first},{final_bare}".encode()
        csig = hmac.new(stored, auth_msg, "sha256").digest()
        proof = bytes(x ^ y for x, y in zip(ckey, csig))
        return f"{final_bare},p={b64(proof)}", auth_msg, skey

    async def bind(self, resource):
        self.send(f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        m = await self.until(rb"<iq[^>]*id=['\"]bind1['\"][^>]*>.*?</iq>")
        assert b"type='result'" in m.group(0) or b'type="result"' in m.group(0), m.group(0)
        return re.search(rb"<jid>([^<]+)</jid>", m.group(0)).group(1).decode()

    async def login1(self, port, ctx, user, resource):
        """STARTTLS, SCRAM-SHA-256, restart, bind: the full JID."""
        await self.tls_stream(port, ctx)
        await self.scram1(user)
        await self.open_stream()
        return await self.bind(resource)

    def authenticate(self, mech, initial, ua, extra):
        self.send(f"<authenticate xmlns='{NS2}' mechanism='{mech}'>"
                  f"<initial-response>{b64(initial)}</initial-response>"
                  f"<user-agent id='{ua}'><software>mobile-bench</software></user-agent>"
                  f"{extra}</authenticate>")

    async def scram2(self, user, ua, extra):
        cnonce = b64(os.urandom(18))
        first_bare = f"n={user},r={cnonce}"
        self.authenticate("SCRAM-SHA-256", ("n,," + first_bare).encode(), ua, extra)
        m = await self.until(RX_SASL2)
        assert m.group(1) == b"challenge", m.group(0)
        server_first = unb64(m.group(3).decode()).decode()
        final, auth_msg, skey = self._scram_final(first_bare, server_first, cnonce)
        self.send(f"<response xmlns='{NS2}'>{b64(final.encode())}</response>")
        m = await self.until(RX_SASL2)
        assert m.group(1) == b"success", m.group(0)
        body = m.group(3).decode()
        ad = re.search(r"<additional-data>([^<]*)</additional-data>", body).group(1)
        assert unb64(ad) == b"v=" + base64.b64encode(
            hmac.new(skey, auth_msg, "sha256").digest()), body
        return body

    async def fast(self, user, token, ua, extra):
        proof = hmac.new(token.encode(), b"Initiator", "sha256").digest()
        self.authenticate("HT-SHA-256-NONE", user.encode() + b"\0" + proof, ua,
                          "<fast xmlns='urn:xmpp:fast:0'/>" + extra)
        m = await self.until(RX_SASL2)
        assert m.group(1) == b"success", m.group(0)
        body = m.group(3).decode()
        ad = re.search(r"<additional-data>([^<]*)</additional-data>", body).group(1)
        assert unb64(ad) == hmac.new(token.encode(), b"Responder", "sha256").digest(), body
        return body

    async def close_stream(self):
        """</stream>, then until the server closes its side."""
        self.send("</stream:stream>")
        try:
            await self.until(RX_CLOSE, timeout=30)
        except EOFError:
            pass
        self.abort()

    def abort(self):
        """Cuts the TCP connection: no </stream>, no TLS close_notify."""
        if self.w is not None:
            self.w.transport.abort()

    async def ping(self, rid="p"):
        self.send(f"<iq type='get' id='{rid}'><ping xmlns='urn:xmpp:ping'/></iq>")
        return await self.until(rb"<iq[^>]*id=['\"]" + rid.encode() + rb"['\"][^>]*(/>|>.*?</iq>)")


BIND2 = "<bind xmlns='urn:xmpp:bind:0'><tag>bench</tag></bind>"


def ua_of(i):
    return f"00000000-0000-4000-8000-{i:012d}"


async def gather_limited(n, conc, fn):
    sem = asyncio.Semaphore(conc)

    async def one(i):
        async with sem:
            return await fn(i)
    return await asyncio.gather(*(one(i) for i in range(n)))


# ---- 1. parked sessions -----------------------------------------------------------------

PAD = ""


def msg(jid, i, k):
    return (f"<message to='{jid}' type='chat' id='m{i}-{k}'><body>mobile bench message {k} "
            f"to u{i}: the quick brown fox jumps over the lazy dog{PAD}</body></message>")


def count_messages(buf):
    return len(re.findall(rb"<message[^>]*id=['\"]m\d+-\d+['\"]", buf))


async def park_run(a):
    ctx = tls_ctx()
    n, m = a.accounts, a.messages
    resume = a.resume == "on"
    out = {}
    extra = "sm_max_unacked: 5000\n"
    if a.expire:
        extra += f"sm_resume_timeout: {a.expire}s\n"
    with Bench(a, loglevel="info", extra=extra) as b:
        await asyncio.sleep(3)
        out["start"] = b.mem()
        out["start_heap"] = b.heap()
        clients = [Client() for _ in range(n)]
        jids = [None] * n
        ids = [None] * n

        async def up(i):
            c = clients[i]
            jids[i] = await c.login1(b.port, ctx, f"u{i}", "phone")
            c.send(f"<enable xmlns='{SM}'" + (" resume='true'" if resume else "") + "/>")
            e = (await c.until(rb"<enabled[^>]*/>")).group(0).decode()
            if resume:
                ids[i] = re.search(r"id='([^']+)'", e).group(1)
            c.send("<presence/>")
            await c.ping("up")
        t0 = time.time()
        await gather_limited(n, 32, up)
        print(f"# {n} logged in, SM enabled in {time.time() - t0:.1f} s", flush=True)
        await asyncio.sleep(4)  # the parsers' idle trim (2 s)
        out["online"] = b.mem()
        out["online_heap"] = b.heap()

        s = Client()
        await s.login1(b.port, ctx, "sender", "s")
        t0 = time.time()

        async def drain(i):
            c = clients[i]
            while count_messages(c.buf) < m:
                await c.read_some()
        readers = asyncio.gather(*(drain(i) for i in range(n)))
        for k in range(m):
            s.send("".join(msg(jids[i], i, k) for i in range(n)))
            await s.w.drain()
        await s.ping("sent")
        await readers
        print(f"# {n * m} messages delivered in {time.time() - t0:.1f} s", flush=True)
        await s.close_stream()
        await asyncio.sleep(4)
        out["queued"] = b.mem()
        out["queued_heap"] = b.heap()

        db = os.path.join(b.srv.data_dir, "xmppd.db")
        parked0 = b.log_count("session parked")
        closed0 = b.log_count('event="connection closed"')
        full0 = b.log_count("offline store queue full")
        batch = a.cut_batch or n
        t0 = time.time()
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            for c in clients[lo:hi]:
                c.abort()
            # until the server has handled every cut of this batch: parked, or ended
            # with each unacknowledged message stored or refused (queue full)
            while True:
                if resume:
                    done = b.log_count("session parked") - parked0 >= hi
                else:
                    done = (b.log_count('event="connection closed"') - closed0 >= hi and
                            offline_rows(db) + b.log_count("offline store queue full") - full0
                            >= hi * m)
                if done:
                    break
                assert time.time() - t0 < 300, "the cut sessions were not handled in 300 s"
                await asyncio.sleep(0.05)
        out["stored"] = offline_rows(db)
        out["refused"] = b.log_count("offline store queue full") - full0
        print(f"# {'parked' if resume else 'ended'} after {time.time() - t0:.1f} s "
              f"(cut in batches of {batch}); offline rows {out['stored']}, refused "
              f"(offline store queue full) {out['refused']}", flush=True)
        await asyncio.sleep(4)
        out["parked"] = b.mem()
        out["parked_heap"] = b.heap()

        # Sanity: a sample gets exactly its m messages back, in order (without
        # resumption: exactly what was stored for it, in order).
        step = max(1, n // a.sample)
        for i in list(range(0, n, step))[:a.sample]:
            want = list(range(m)) if resume else stored_ids(db, i)
            c = Client()
            await c.tls_stream(b.port, ctx)
            await c.scram1(f"u{i}")
            await c.open_stream()
            if resume:
                c.send(f"<resume xmlns='{SM}' previd='{ids[i]}' h='0'/>")
                r = (await c.until(rb"<resumed[^>]*/>|<failed.*?</failed>")).group(0)
                assert r.startswith(b"<resumed"), r
            else:
                await c.bind("phone2")
                c.send("<presence/>")
            t1 = time.time()
            while count_messages(c.buf) < len(want) and time.time() - t1 < 30:
                await c.read_some(timeout=30)
            c.send("<iq type='get' id='chk'><ping xmlns='urn:xmpp:ping'/></iq>")
            rx = re.compile(rb"<iq[^>]*id=['\"]chk['\"]")
            while not rx.search(c.buf):
                await c.read_some(timeout=30)
            before_ping = c.buf[:rx.search(c.buf).start()]
            got = re.findall(rb"<message[^>]*id=['\"]m" + str(i).encode() + rb"-(\d+)['\"]",
                             before_ping)
            assert [int(x) for x in got] == want, (i, got[:5], len(got), len(want))
            if resume:  # all of it handled (the messages and the ping's result)
                c.send(f"<a xmlns='{SM}' h='{m + 1}'/>")
            await c.close_stream()
        # how much of the RSS is memory glibc holds freed: give it back and look again
        if shutil.which("gdb"):
            subprocess.run(["gdb", "-p", str(b.srv.pid), "-batch", "-nx",
                            "-ex", "call (int) malloc_trim(0)"], capture_output=True, timeout=120)
            out["trimmed"] = b.mem()
        if resume and a.expire:
            # the rest stay parked until sm_resume_timeout: then each ends and what
            # waited for it goes to offline storage
            ended0 = b.log_count("parked session ends")
            rows0 = offline_rows(db)
            left = n - len(list(range(0, n, step))[:a.sample])
            t1 = time.time()
            while b.log_count("parked session ends") - ended0 < left:
                assert time.time() - t1 < a.expire + 120, "parked sessions did not time out"
                await asyncio.sleep(0.2)
            t2 = time.time()
            while True:  # until stored + refused is all of it, or nothing moves for 5 s
                got = offline_rows(db) - rows0 + b.log_count("offline store queue full") - full0
                if got >= left * m or time.time() - t2 > 5:
                    break
                await asyncio.sleep(0.2)
            out["expired_stored"] = offline_rows(db) - rows0
            out["expired_refused"] = b.log_count("offline store queue full") - full0
            print(f"# {left} parked sessions timed out: {out['expired_stored']} of {left * m} "
                  f"messages stored offline, {out['expired_refused']} refused "
                  f"(offline store queue full)", flush=True)
        print(f"# sample of {a.sample}: each got exactly its "
              f"{'m' if resume else 'stored'} messages, in order", flush=True)
    return out


def offline_rows(db):
    import sqlite3
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT count(*) FROM offline_msg").fetchone()[0]
    except sqlite3.Error:
        return 0


def stored_ids(db, i):
    """The message numbers stored offline for u{i}, in the order stored."""
    import sqlite3
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        rows = con.execute("SELECT xml FROM offline_msg WHERE username = ? ORDER BY id",
                           (f"u{i}",)).fetchall()
    return [int(re.search(r"id=['\"]m\d+-(\d+)['\"]", x).group(1)) for (x,) in rows]


def park_main(a):
    global PAD
    PAD = " " + "x" * (a.pad - 1) if a.pad > 0 else ""
    a.need = a.accounts
    raise_fd_limit()
    out = asyncio.run(park_run(a))
    n, m = a.accounts, a.messages
    print(f"resume={a.resume} accounts={n} messages_each={m} cut_batch={a.cut_batch or n} "
          f"stored_offline={out['stored']} refused={out['refused']}")
    for k in ("start", "online", "queued", "parked"):
        rss, pss = out[k]
        h = out.get(k + "_heap")
        hs = f" heap_in_use={h[1] // 1024} KiB heap_system={h[0] // 1024} KiB" if h else ""
        print(f"  {k:7s} RSS {rss:8d} KiB  Pss {pss:8d} KiB{hs}")
    if "trimmed" in out:
        print(f"  after malloc_trim(0) (end of run): RSS {out['trimmed'][0]:8d} KiB  "
              f"Pss {out['trimmed'][1]:8d} KiB")
    d = lambda x, y, i=0: (out[x][i] - out[y][i]) * 1024  # noqa: E731
    print(f"  per session online (SM on, RSS): {d('online', 'start') / n:9.0f} B")
    print(f"  per queued message (RSS):        {d('queued', 'online') / (n * m):9.0f} B")
    print(f"  per session after the cut, from start (RSS): {d('parked', 'start') / n:9.0f} B")
    hs = [out.get(k + "_heap") for k in ("start", "online", "queued", "parked")]
    if all(hs):
        print(f"  heap: per session online {(hs[1][1] - hs[0][1]) / n:9.0f} B, per message "
              f"{(hs[2][1] - hs[1][1]) / (n * m):7.0f} B, per session after the cut "
              f"{(hs[3][1] - hs[0][1]) / n:9.0f} B")


# ---- 2. logins per second ---------------------------------------------------------------

async def get_tokens(port, n):
    ctx = tls_ctx()
    toks = [None] * n

    async def one(i):
        c = Client()
        await c.tls_stream(port, ctx)
        body = await c.scram2(f"u{i}", ua_of(i),
                              "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>")
        toks[i] = re.search(r"<token [^>]*token=['\"]([^'\"]+)['\"]", body).group(1)
        await c.close_stream()
    await gather_limited(n, 16, one)
    return toks


async def login_once(flow, port, ctx, i, tokens):
    c = Client()
    t0 = time.perf_counter()
    if flow == "sasl1":
        await c.login1(port, ctx, f"u{i}", "bench")
    else:
        await c.tls_stream(port, ctx)
        if flow == "sasl2":
            body = await c.scram2(f"u{i}", ua_of(i), BIND2)
        else:
            body = await c.fast(f"u{i}", tokens[i], ua_of(i), BIND2)
        assert "<bound" in body, body
        await c.until(RX_FEATURES)
    dt = time.perf_counter() - t0
    await c.close_stream()
    return dt


def login_proc(flow, port, conc, accounts, tokens, start_at, warm, seconds, offset, stride):
    """One driver process: conc slots of login cycles; latencies of the logins that
    ended inside [start_at + warm, start_at + warm + seconds]."""
    async def run():
        ctx = tls_ctx()
        lat, fails = [], 0
        t_begin, t_end = start_at + warm, start_at + warm + seconds
        nxt = [offset]

        async def slot():
            nonlocal fails
            while time.time() < t_end:
                i = nxt[0] % accounts
                nxt[0] += stride
                try:
                    dt = await login_once(flow, port, ctx, i, tokens)
                except (EOFError, AssertionError, OSError, asyncio.TimeoutError) as e:
                    fails += 1
                    if fails < 3:
                        print(f"# login failed: {e!r}"[:300], file=sys.stderr)
                    continue
                if t_begin <= time.time() <= t_end:
                    lat.append(dt)
        await asyncio.sleep(max(0, start_at - time.time()))
        c0 = time.process_time()
        await asyncio.gather(*(slot() for _ in range(conc)))
        return lat, fails, time.process_time() - c0
    return asyncio.run(run())


def login_measure(b, a, flow, tokens):
    conc_each = [a.conc // a.procs + (1 if p < a.conc % a.procs else 0) for p in range(a.procs)]
    start_at = time.time() + 1.0
    warm = 2.0
    with multiprocessing.get_context("fork").Pool(
            a.procs, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
        jobs = [pool.apply_async(login_proc, (flow, b.port, conc_each[p], a.accounts, tokens,
                                              start_at, warm, a.seconds, p, a.procs))
                for p in range(a.procs)]
        time.sleep(max(0, start_at + warm - time.time()))
        cpu0, t0 = b.cpu(), time.time()
        time.sleep(a.seconds)
        cpu1, t1 = b.cpu(), time.time()
        res = [j.get(timeout=600) for j in jobs]
    lat = sorted(x for r in res for x in r[0])
    fails = sum(r[1] for r in res)
    drv = sum(r[2] for r in res)
    n = len(lat)
    rate = n / (t1 - t0)
    p50 = lat[n // 2] * 1000 if n else 0
    p99 = lat[min(n - 1, int(n * 0.99))] * 1000 if n else 0
    cpu_per = (cpu1 - cpu0) / n if n else 0
    return dict(flow=flow, logins=n, rate=rate, p50=p50, p99=p99, fails=fails,
                srv_cpu=(cpu1 - cpu0) / (t1 - t0), cpu_per=cpu_per,
                drv_cpu=drv / (t1 - t0 + warm))


def logins_main(a):
    a.need = a.accounts
    raise_fd_limit()
    flows = ["sasl1", "sasl2", "fast"] if a.flow == "all" else a.flow.split(",")
    with Bench(a, loglevel="warning") as b:
        tokens = asyncio.run(get_tokens(b.port, a.accounts)) if "fast" in flows else None
        # one login per account first: the driver's PBKDF2 cache (per salt) is filled in
        # every process (forked after this), as xmppload caches it after a first login
        if set(flows) & {"sasl1", "sasl2"}:
            async def fill():
                ctx = tls_ctx()
                await gather_limited(a.accounts, 16, lambda i: login_once("sasl1", b.port, ctx, i, None))
            asyncio.run(fill())
        time.sleep(2)
        for rep in range(a.reps):
            for flow in flows:
                r = login_measure(b, a, flow, tokens)
                la = os.getloadavg()[0]
                print(f"flow={flow:5s} rep={rep} conc={a.conc} procs={a.procs} "
                      f"logins={r['logins']} rate={r['rate']:.0f}/s p50={r['p50']:.1f}ms "
                      f"p99={r['p99']:.1f}ms failed={r['fails']} server_cpu={100 * r['srv_cpu']:.0f}% "
                      f"server_cpu_per_login={1e6 * r['cpu_per']:.0f}us "
                      f"driver_cpu={100 * r['drv_cpu']:.0f}% load1={la:.2f}", flush=True)
                time.sleep(2)


# ---- 3. idle sessions, SM on / off ------------------------------------------------------

def idle_proc(port, ids, sm, conn, conc, leave_unacked):
    """Holds the sessions of accounts `ids` until told to go."""
    async def run():
        ctx = tls_ctx()
        clients = []

        async def up(i):
            c = Client()
            await c.login1(port, ctx, f"u{i}", "idle")
            if sm:
                c.send(f"<enable xmlns='{SM}' resume='true'/>")
                await c.until(rb"<enabled[^>]*/>")
            c.send("<presence/>")
            await c.ping("i1")
            if sm:
                await c.ping("i2")
                # every stanza the server sent since <enabled/>: own presence, 2 results
                c.send(f"<a xmlns='{SM}' h='3'/>")
                await c.ping("i3")
                if not leave_unacked:  # and the last result: nothing waits for an ack
                    c.send(f"<a xmlns='{SM}' h='4'/><r xmlns='{SM}'/>")
                    await c.until(rb"<a xmlns=['\"]" + SM.encode() + rb"['\"][^>]*/>")
            clients.append(c)
        ok = await gather_limited(len(ids), conc, lambda k: up(ids[k]))
        conn.send(("ready", len(ok)))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)
        for c in clients:
            c.abort()
    raise_fd_limit()
    asyncio.run(run())


def idle_main(a):
    a.need = a.sessions
    raise_fd_limit()
    sm = a.sm == "on"
    extra = "" if sm else "stream_management: false\n"
    with Bench(a, loglevel="warning", extra=extra) as b:
        time.sleep(3)
        m0 = b.mem()
        h0 = b.heap()
        t0 = time.time()
        ctx = multiprocessing.get_context("fork")
        pipes, procs = [], []
        for p in range(a.procs):
            here, there = ctx.Pipe()
            ids = list(range(p, a.sessions, a.procs))
            pr = ctx.Process(target=idle_proc, args=(b.port, ids, sm, there, 32, a.leave_unacked))
            pr.start()
            pipes.append(here)
            procs.append(pr)
        n = sum(pp.recv()[1] for pp in pipes)
        dt = time.time() - t0
        time.sleep(8)  # the parsers' idle trim (2 s), settled
        m1 = b.mem()
        h1 = b.heap()
        print(f"sm={a.sm}{' leave-unacked' if sm and a.leave_unacked else ''} sessions={n} "
              f"up in {dt:.0f} s ({n / dt:.0f}/s)")
        print(f"  RSS {m0[0]} -> {m1[0]} KiB: {(m1[0] - m0[0]) * 1024 / n:.0f} B/session; "
              f"Pss {m0[1]} -> {m1[1]} KiB: {(m1[1] - m0[1]) * 1024 / n:.0f} B/session")
        if h0 and h1:
            print(f"  heap in use {h0[1] // 1024} -> {h1[1] // 1024} KiB: "
                  f"{(h1[1] - h0[1]) / n:.0f} B/session")
        for pp in pipes:
            pp.send("go")
        for pr in procs:
            pr.join(120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build-release")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", default="/var/tmp/xd-mobile-bench")
    ap.add_argument("--cert", choices=("rsa", "ec"), default="rsa",
                    help="server certificate: RSA-2048 (default, as the shared harness) or "
                         "ECDSA P-256")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("park")
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--messages", type=int, default=100)
    p.add_argument("--resume", choices=("on", "off"), default="on")
    p.add_argument("--sample", type=int, default=10)
    p.add_argument("--pad", type=int, default=0,
                   help="make each message body this many bytes longer")
    p.add_argument("--cut-batch", type=int, default=0,
                   help="cut the connections K at a time, each batch handled before the next "
                        "(default: all at once)")
    p.add_argument("--expire", type=int, default=0,
                   help="with resumption: sm_resume_timeout SECONDS, and after the sample "
                        "wait for the other parked sessions to time out")
    p = sub.add_parser("logins")
    p.add_argument("--flow", default="all")
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--conc", type=int, default=16)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--reps", type=int, default=3)
    p = sub.add_parser("idle")
    p.add_argument("--sessions", type=int, default=10000)
    p.add_argument("--sm", choices=("on", "off"), default="on")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--leave-unacked", action="store_true",
                   help="with --sm on: leave the last ping result unacknowledged (one stanza "
                        "waits in each session's queue)")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on SIGTERM too
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} load {os.getloadavg()}", flush=True)
    {"park": park_main, "logins": logins_main, "idle": idle_main}[a.cmd](a)
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} load {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()

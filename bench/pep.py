#!/usr/bin/python3
"""bench/pep.py — PEP (XEP-0163) publish fan-out: xmppd beside ejabberd (and
Prosody) in one interleaved run.

For each N (default 100 and 1,000) and each server, in turn: an account
pubN with N contacts c1..cN (mutual presence subscription, "both"), the N
contacts online with entity capabilities (XEP-0115) whose disco#info
announces http://jabber.org/protocol/tune+notify, and pubN online too.
pubN publishes tune items as fast as the server acknowledges them, with a
window of --window outstanding publish IQs, until N x publishes reaches
about --notifications (or --max-seconds have passed: no publish after it).  Each item carries the send time (this process's
monotonic clock), so each contact's notification gives one publish ->
notification latency.  Reported per run:

  notif/s    notifications received by all contacts / (last notification -
             first publish); distinct (contact, item) pairs: Prosody 0.12
             sends each item twice to a contact (to its bare and its full
             JID), the copies are in the RESULT line's stanzas=
  pub/s      publishes acknowledged per second
  p50, p99   publish -> notification latency (ms), over every notification
  srv cpu    server CPU time (user+system, /proc/PID/stat, with its child
             processes) per notification, in microseconds, and in % of one core
  rss        server resident set size after the run (VmRSS; VmHWM in the log)
  cli cpu    the load driver's CPU in % of one core (it must not be the
             bottleneck: it runs on the same cores as the server); its µs
             per notification is cli_cpu_us= in the RESULT lines

Two load drivers (--driver) do the publishing and the counting, the same
way (logins, caps, warm-up, marks, counts and latencies alike):
  c       bench/pepload.c, built as BUILD/bench/pepload: one libuv process
          for the publisher and all contacts (the default when it is
          built; bench/pepload_check.py checks its stream splitting);
          2.5-6 µs of CPU per notification, most of it the kernel's reads
  python  this process (asyncio; on uvloop when python3-uvloop (Debian) is
          installed): 4-8 µs per notification in xmppd's runs, 11-20 µs in
          ejabberd's slower ones
In both, the setup (accounts, rosters) is this process's.  Servers run on
loopback through the adapters in bench/shared/servers
(xmppd-pep, ejabberd-pep, prosody-pep), in a copy of the shared harness
(../shared/bench, for common.sh and the ejabberd/Prosody adapters) under
--work; their state lives under --run (kept between runs: users and rosters
are created once).  Accounts are created by in-band registration (XEP-0077)
and the rosters by the subscription protocol (RFC 6121: pubN sends subscribe,
each contact answers subscribed and subscribes back), the same way on every
server, so that all start with the same roster state.  Every server started
here is stopped by its PID (the adapters' stop) at the end.

    bench/pep.py [--build build-release] [--servers xmppd,ejabberd,prosody]
                 [--contacts 100,1000] [--notifications 200000] [--window 16]
                 [--rounds 1] [--max-seconds 120] [--driver c|python]
                 [--coalesce-us 500] [--keep-running]
"""
import argparse
import asyncio
import base64
import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

try:
    import uvloop  # Debian python3-uvloop: less client CPU per notification
except ImportError:  # pragma: no cover
    uvloop = None

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ADAPTERS = {"xmppd": "xmppd-pep", "ejabberd": "ejabberd-pep", "prosody": "prosody-pep"}
PASSWORD = "password"
DUMP = os.environ.get("PEPBENCH_DUMP")  # debugging: the raw input of this JID's streams
NODE = "http://jabber.org/protocol/tune"
CAPS_NODE = "https://xmppd.invalid/pepbench"
IDENTITY = ("client", "pc", "pepbench")
# No feature is a prefix of another (no bare NODE beside NODE+notify): with
# one, xmppd's verification string (src/xmpp/caps.c sorts the "feature<"
# strings, XEP-0115 5.1 and slixmpp, ejabberd, Prosody sort the features)
# differs, it finds our answer "not usable" and sends no notifications.
FEATURES = sorted([
    "http://jabber.org/protocol/caps",
    "http://jabber.org/protocol/disco#info",
    NODE + "+notify",
    "urn:xmpp:ping",
])


def caps_ver():
    """XEP-0115 5.1 verification string of our disco#info (sha-1)."""
    s = "%s/%s//%s<" % IDENTITY + "".join(f + "<" for f in FEATURES)
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


VER = caps_ver()
DISCO = ("<identity category='%s' type='%s' name='%s'/>" % IDENTITY +
         "".join(f"<feature var='{f}'/>" for f in FEATURES))
CAPS = f"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{VER}'/>"

# One top-level element of the stream (no stanza we get nests one of its own
# name), the stream header, or its end.
TOP = re.compile(rb"\s*(?:<\?xml[^>]*\?>|<stream:stream\b[^>]*>|</stream:stream>"
                 rb"|<([\w:]+)\b(?:[^>\"']|\"[^\"]*\"|'[^']*')*?(?:/>|>.*?</\1>))", re.S)
MARK = re.compile(rb"pb:(\w+):(\d+):(\d+)")
ATTR = {k: re.compile(rb"^<\w+[^>]*?\s" + k.encode() + rb"=[\"']([^\"']*)[\"']")
        for k in ("id", "type", "from")}


def attr(st, name):
    m = ATTR[name].match(st)
    return m.group(1).decode() if m else None


def bare(jid):
    return jid.split("/", 1)[0]


def xesc(s):
    return s.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;")


class Conn(asyncio.Protocol):
    """One client connection.  Before run mode: complete top-level elements
    are split off, the server's requests answered (disco#info, ping, roster
    pushes), subscription requests passed to on_subscribe, the rest queued
    for wait().  In run mode (a contact's during the measurement) whole runs
    of <message/> stanzas are only searched for the items' marks."""

    def __init__(self, jid=None):
        self.jid = jid
        self.t = None
        self.buf = b""
        self.queue = []
        self.waiter = None
        self.closed = asyncio.get_running_loop().create_future()
        self.on_subscribe = None
        self.on_ack = None
        self.sink = None  # Run: counts the marks of the current tag
        self.got = 0      # marks of the current tag received here
        self.seen = set()  # item numbers of the current tag received here
        self.last_warm = None

    # asyncio.Protocol
    def connection_made(self, transport):
        self.t = transport

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(exc)
        if self.waiter and not self.waiter[1].done():
            self.waiter[1].set_exception(ConnectionError(f"{self.jid}: connection lost"))

    def data_received(self, data):
        if DUMP and self.jid and self.jid.startswith(DUMP):
            with open("/tmp/pepbench-dump.xml", "ab") as f:
                f.write(data)
        buf = self.buf + data if self.buf else data
        if self.sink is not None:
            end = buf.rfind(b"</message>")
            if end >= 0:
                cut = end + 10
                region = buf[:cut]
                if b"<iq" not in region and b"<presence" not in region:
                    self.buf = buf[cut:]
                    self.sink.marks(self, region)
                    return
        self.buf = buf
        self._split()

    def _split(self):
        buf, pos, n = self.buf, 0, len(self.buf)
        while pos < n:
            m = TOP.match(buf, pos)
            if not m:
                break
            pos = m.end()
            if m.group(1):
                self._stanza(buf[m.start(1) - 1:pos])
        self.buf = buf[pos:]
        if self.waiter and not self.waiter[1].done():
            self._try_wait()

    def _stanza(self, st):
        if st.startswith(b"<message"):
            if self.sink is not None:
                self.sink.marks(self, st)
            return
        if st.startswith(b"<iq"):
            typ = attr(st, "type")
            if typ in ("get", "set"):
                self._answer(st, typ)
                if b"jabber:iq:roster" not in st:
                    return
            elif self.on_ack and (attr(st, "id") or "").startswith("pb"):
                self.on_ack(attr(st, "id"), typ)
                return
        elif st.startswith(b"<presence") and attr(st, "type") == "subscribe":
            if self.on_subscribe:
                self.on_subscribe(bare(attr(st, "from") or ""))
            return
        self.queue.append(st)

    def _answer(self, st, typ):
        iid, frm = xesc(attr(st, "id") or ""), attr(st, "from")
        to = f" to='{xesc(frm)}'" if frm else ""
        if typ == "get" and b"http://jabber.org/protocol/disco#info" in st:
            m = re.search(rb"<query[^>]*node=[\"']([^\"']*)[\"']", st)
            node = f" node='{xesc(m.group(1).decode())}'" if m else ""
            self.send(f"<iq type='result' id='{iid}'{to}><query xmlns="
                      f"'http://jabber.org/protocol/disco#info'{node}>{DISCO}</query></iq>")
        elif typ == "set" and b"jabber:iq:roster" in st or b"urn:xmpp:ping" in st:
            self.send(f"<iq type='result' id='{iid}'{to}/>")
        else:
            self.send(f"<iq type='error' id='{iid}'{to}><error type='cancel'><service-unavailable"
                      f" xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")

    def _try_wait(self):
        pred, fut = self.waiter
        for i, st in enumerate(self.queue):
            if pred(st):
                del self.queue[i]
                fut.set_result(st)
                return

    def send(self, s):
        self.t.write(s.encode() if isinstance(s, str) else s)

    async def wait(self, pred, timeout=60):
        if isinstance(pred, (bytes, str)):
            pat = re.compile(pred.encode() if isinstance(pred, str) else pred, re.S)
            pred = lambda st, p=pat: p.search(st) is not None  # noqa: E731
        self.waiter = (pred, asyncio.get_running_loop().create_future())
        self._try_wait()
        try:
            return await asyncio.wait_for(self.waiter[1], timeout)
        finally:
            self.waiter = None

    def close(self):
        if self.t and not self.t.is_closing():
            self.t.write(b"</stream:stream>")
            self.t.close()


async def connect(port, domain, jid=None):
    loop = asyncio.get_running_loop()
    _, c = await loop.create_connection(lambda: Conn(jid), "127.0.0.1", port)
    return c


def header(domain):
    return (f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>")


async def register(port, domain, user):
    c = await connect(port, domain)
    try:
        c.send(header(domain))
        await c.wait(rb"^<stream:features")
        c.send(f"<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>{user}"
               f"</username><password>{PASSWORD}</password></query></iq>")
        st = await c.wait(rb"^<iq[^>]*id=[\"']r1")
        return attr(st, "type") == "result" or b"conflict" in st
    finally:
        c.close()


async def login(port, domain, user, resource="b"):
    c = await connect(port, domain, f"{user}@{domain}")
    c.send(header(domain))
    await c.wait(rb"^<stream:features")
    tok = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{tok}</auth>")
    st = await c.wait(rb"^<(success|failure)")
    if not st.startswith(b"<success"):
        c.close()
        raise RuntimeError(f"{user}@{domain}: authentication failed: {st[:200]!r}")
    c.send(header(domain))
    feats = await c.wait(rb"^<stream:features")
    c.send(f"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>"
           f"{resource}</resource></bind></iq>")
    st = await c.wait(rb"^<iq[^>]*id=[\"']b1")
    m = re.search(rb"<jid>([^<]+)</jid>", st)
    if not m:
        raise RuntimeError(f"{user}@{domain}: bind failed: {st[:200]!r}")
    c.jid = m.group(1).decode()
    sess = re.search(rb"<session xmlns=[\"']urn:ietf:params:xml:ns:xmpp-session[\"']\s*(/>|>(.*?)"
                     rb"</session>)", feats, re.S)
    if sess and b"optional" not in (sess.group(2) or b""):
        c.send("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        await c.wait(rb"^<iq[^>]*id=[\"']s1")
    return c


async def gather_limited(coros, limit):
    sem = asyncio.Semaphore(limit)

    async def one(co):
        async with sem:
            return await co
    return await asyncio.gather(*(one(co) for co in coros))


ROSTER_GETS = [0]


async def roster(c):
    ROSTER_GETS[0] += 1
    iid = f"ro{ROSTER_GETS[0]}"
    c.send(f"<iq type='get' id='{iid}'><query xmlns='jabber:iq:roster'/></iq>")
    st = await c.wait(rf"^<iq[^>]*id=[\"']{iid}[\"']", timeout=600)
    items = {}
    for m in re.finditer(rb"<item\b[^>]*>", st):
        it = m.group(0)
        j = re.search(rb"jid=[\"']([^\"']+)", it)
        s = re.search(rb"subscription=[\"']([^\"']+)", it)
        if j:
            items[j.group(1).decode()] = s.group(1).decode() if s else "none"
    return items


class Run:
    """Counts the marks of one tag over all contacts."""

    def __init__(self, tag):
        self.tag = tag.encode()
        self.n = 0       # distinct (contact, item) notifications
        self.copies = 0  # notification stanzas with the tag, duplicates included
        self.lat = []
        self.t_last = 0.0
        self.warm = {}

    def marks(self, c, region):
        now = time.perf_counter_ns()
        got = 0
        seen = c.seen
        for m in MARK.finditer(region):
            if m.group(1) == self.tag:
                self.copies += 1
                seq = m.group(2)
                if seq in seen:  # a second copy of the item for this contact
                    continue
                seen.add(seq)
                self.lat.append(now - int(m.group(3)))
                got += 1
            elif m.group(1).startswith(b"w"):
                c.last_warm = m.group(1)
        if got:
            self.n += got
            c.got += got
            self.t_last = now


def publish_xml(tag, seq):
    ts = time.perf_counter_ns()
    return (f"<iq type='set' id='pb{seq}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
            f"<publish node='{NODE}'><item><tune xmlns='{NODE}'><artist>pepbench</artist>"
            f"<title>pb:{tag}:{seq}:{ts}</title><length>{seq % 600}</length></tune>"
            f"</item></publish></pubsub></iq>")


def proc_cpu(pid):
    """user+system seconds of pid and its children (threads included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fs = f.read().rsplit(")", 1)[1].split()
            total += (int(fs[11]) + int(fs[12])) / tick
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return total


def proc_mem(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


class Server:
    def __init__(self, name, work, env):
        self.name, self.adapter = name, ADAPTERS[name]
        self.script = os.path.join(work, "servers", self.adapter, "server.sh")
        self.env = env
        self.started = False

    def ctl(self, *args, check=True):
        r = subprocess.run([self.script, *args], env=self.env, stdout=subprocess.PIPE, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{self.adapter} {' '.join(args)}: exit {r.returncode}")
        return r.stdout

    def info(self):
        f = dict(kv.split("=", 1) for kv in self.ctl("env").split() if "=" in kv)
        self.port, self.domain = int(f["PORT"]), f["DOMAIN"]
        return f

    def pid(self):
        p = self.ctl("pid", check=False).strip()
        return int(p) if p else None

    def start(self):
        if self.pid():
            raise RuntimeError(f"{self.adapter} is already running (pid {self.pid()}): "
                               "not started here, stop it first")
        self.ctl("setup")
        self.ctl("start")
        self.started = True
        self.info()

    def stop(self):
        if self.started:
            self.ctl("stop", check=False)
            self.started = False


async def ensure_users(srv, n):
    mark = os.path.join(srv.env["BENCH_RUN"], srv.adapter, ".pep-users")
    have = int(open(mark).read()) if os.path.exists(mark) else 0
    if have >= n:
        return
    users = list(dict.fromkeys([f"c{i}" for i in range(have + 1, n + 1)] +
                               [f"pub{k}" for k in (10, 100, 1000, n)]))
    t0 = time.perf_counter()
    ok = await gather_limited([register(srv.port, srv.domain, u) for u in users], 20)
    bad = [u for u, o in zip(users, ok) if not o]
    if bad:
        raise RuntimeError(f"{srv.name}: registration failed for {bad[:5]}...")
    os.makedirs(os.path.dirname(mark), exist_ok=True)
    with open(mark, "w") as f:
        f.write(str(n))
    print(f"  {srv.name}: registered {len(users)} users in {time.perf_counter() - t0:.1f} s",
          flush=True)


async def ensure_roster(srv, pub, contacts):
    """pubN and each contact subscribed to each other (both), through the
    subscription protocol; skipped when pubN's roster has them all."""
    pj = f"{pub}@{srv.domain}"
    p = await login(srv.port, srv.domain, pub, "setup")
    try:
        items = await roster(p)
        missing = [c for c in contacts if items.get(f"{c}@{srv.domain}") != "both"]
        if not missing:
            return 0
        t0 = time.perf_counter()
        cs = await gather_limited([login(srv.port, srv.domain, c, "setup") for c in missing], 50)

        def contact_sub(c):
            def on(frm):
                if frm == pj:
                    c.send(f"<presence to='{pj}' type='subscribed'/><presence to='{pj}' type='subscribe'/>")
            return on
        for c in cs:
            c.on_subscribe = contact_sub(c)
            c.send("<presence/>")
        asked = set()

        def pub_sub(frm):
            asked.add(frm)
            p.send(f"<presence to='{frm}' type='subscribed'/>")
        p.on_subscribe = pub_sub
        p.send("<presence/>")
        for c in missing:
            p.send(f"<presence to='{c}@{srv.domain}' type='subscribe'/>")
        # Each contact's subscribe back comes after its subscribed; then
        # the roster (one fetch every 5 s: a loaded server is slow with
        # 1,000 items, and fetching adds to its load).
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            await asyncio.sleep(5)
            if len(asked) < len(missing):
                continue
            items = await roster(p)
            left = [c for c in contacts if items.get(f"{c}@{srv.domain}") != "both"]
            if not left:
                break
        else:
            raise RuntimeError(f"{srv.name}: contacts of {pub} not all 'both' after 900 s"
                               f" ({len(asked)} subscribed back)")
        for c in cs:
            c.close()
        print(f"  {srv.name}: {pub} roster: {len(missing)} mutual subscriptions in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        return len(missing)
    finally:
        p.close()


async def measure(srv, n, total, window, tag, max_seconds, pepload=None):
    if pepload:
        return await measure_c(srv, n, total, window, tag, max_seconds, pepload)
    contacts = [f"c{i}" for i in range(1, n + 1)]
    pub = f"pub{n}"
    await ensure_roster(srv, pub, contacts)
    run = Run(tag)
    # The publisher first, so that the contacts' initial presence (with
    # caps) reaches its sessions, as a server that filters there needs.
    p = await login(srv.port, srv.domain, pub, "pc")
    p.send("<presence/>")  # no caps: the publisher wants no notifications
    t0 = time.perf_counter()
    cs = await gather_limited([login(srv.port, srv.domain, c, "m") for c in contacts], 50)
    for c in cs:
        c.sink = run
        c.send(f"<presence>{CAPS}</presence>")
    t_login = time.perf_counter() - t0
    # Warm-up: publish until every contact gets the notification (the
    # server learns the caps once, then filters by them).
    ready = 0
    for w in range(10):
        wtag = f"w{w}"
        p.on_ack = None
        p.send(publish_xml(wtag, 0).replace("id='pb0'", f"id='warm{w}'"))
        await p.wait(rf"^<iq[^>]*id=[\"']warm{w}", timeout=120)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready = sum(1 for c in cs if c.last_warm == wtag.encode())
            if ready == n:
                break
            await asyncio.sleep(0.1)
        if ready == n:
            break
    if ready < n:
        print(f"  {srv.name}: only {ready} of {n} contacts get notifications", flush=True)
    pubs = max(1, total // n)
    expected = pubs * ready
    pid = srv.pid()
    cpu0, ru0 = proc_cpu(pid), resource.getrusage(resource.RUSAGE_SELF)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    state = {"sent": 0, "acked": 0, "errors": 0, "t_ack": 0.0}

    def send_next():
        state["sent"] += 1
        p.send(publish_xml(tag, state["sent"]))

    def on_ack(iid, typ):
        state["acked"] += 1
        if typ != "result":
            state["errors"] += 1
        if state["sent"] < pubs and time.perf_counter_ns() < t_stop:
            send_next()
        elif state["acked"] == state["sent"] and state["sent"] < pubs:  # --max-seconds
            state["t_ack"] = time.perf_counter_ns()
            if not done.done():
                done.set_result(None)
        elif state["acked"] == pubs:
            state["t_ack"] = time.perf_counter_ns()
            if not done.done():
                done.set_result(None)
    p.on_ack = on_ack
    t_start = time.perf_counter_ns()
    t_stop = t_start + int(max_seconds * 1e9)
    for _ in range(min(window, pubs)):
        send_next()
    await asyncio.wait_for(done, max_seconds + 600)
    pubs = state["sent"]
    expected = pubs * ready
    last, idle = run.n, 0
    while run.n < expected and idle < 10:
        await asyncio.sleep(0.5)
        idle = idle + 1 if run.n == last else 0
        last = run.n
    wall = (max(run.t_last, state["t_ack"]) - t_start) / 1e9
    cpu1, ru1 = proc_cpu(pid), resource.getrusage(resource.RUSAGE_SELF)
    mem = proc_mem(pid)
    lat = sorted(run.lat)
    pct = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] / 1e6 if lat else float("nan")  # noqa: E731
    notif_wall = (run.t_last - t_start) / 1e9 if run.n else float("nan")
    scpu = cpu1 - cpu0
    ccpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    res = {
        "server": srv.name, "N": n, "ready": ready, "publishes": pubs,
        "pub_errors": state["errors"], "notifications": run.n, "expected": expected,
        "stanzas": run.copies,
        "notif_s": run.n / notif_wall if run.n else 0.0,
        "pub_s": pubs / ((state["t_ack"] - t_start) / 1e9),
        "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": lat[-1] / 1e6 if lat else 0,
        "srv_cpu_us": scpu / run.n * 1e6 if run.n else 0.0, "srv_cpu_pct": scpu / wall * 100,
        "rss_mb": mem.get("VmRSS", 0), "hwm_mb": mem.get("VmHWM", 0),
        "cli_cpu_pct": ccpu / wall * 100, "wall_s": wall, "login_s": t_login,
        "driver": "python", "cli_cpu_us": ccpu / run.n * 1e6 if run.n else 0.0,
        "contact_min": min(c.got for c in cs), "contact_max": max(c.got for c in cs),
    }
    p.close()
    for c in cs:
        c.close()
    await asyncio.sleep(1)  # the servers see the streams end before the next one runs
    return res


COALESCE_US = [500]  # --coalesce-us


async def pepload_line(proc, word, timeout):
    """The next line of pepload's stdout that starts with word, as a dict."""
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            rc = await proc.wait()
            raise RuntimeError(f"pepload exited with status {rc} before {word}")
        f = line.decode().split()
        if f and f[0] == word:
            return dict(kv.split("=", 1) for kv in f[1:])


async def measure_c(srv, n, total, window, tag, max_seconds, pepload):
    """measure() with bench/pepload.c as the publisher and the contacts:
    the same run, the same figures (its CPU is the client's)."""
    contacts = [f"c{i}" for i in range(1, n + 1)]
    pub = f"pub{n}"
    await ensure_roster(srv, pub, contacts)
    pubs = max(1, total // n)
    proc = await asyncio.create_subprocess_exec(
        pepload, "--port", str(srv.port), "--domain", srv.domain, "--publisher", pub,
        "--contacts", str(n), "--pubs", str(pubs), "--window", str(window), "--tag", tag,
        "--max-seconds", str(max_seconds), "--password", PASSWORD,
        "--coalesce-us", str(COALESCE_US[0]), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        rd = await pepload_line(proc, "READY", 900)
        if rd["caps"] != VER:
            raise RuntimeError(f"pepload's caps ver {rd['caps']} is not pep.py's {VER}")
        ready = int(rd["ready"])
        if ready < n:
            print(f"  {srv.name}: only {ready} of {n} contacts get notifications", flush=True)
        pid = srv.pid()
        cpu0, ru0 = proc_cpu(pid), resource.getrusage(resource.RUSAGE_SELF)
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        r = await pepload_line(proc, "RESULT", max_seconds + 700)
        cpu1, ru1 = proc_cpu(pid), resource.getrusage(resource.RUSAGE_SELF)
        mem = proc_mem(pid)
        proc.stdin.write(b"close\n")
        proc.stdin.close()
        rc = await asyncio.wait_for(proc.wait(), 60)
        if rc != 0:
            raise RuntimeError(f"pepload exited with status {rc}")
    finally:
        if proc.returncode is None:
            proc.kill()  # ours, by its PID
            await proc.wait()
    got, wall = int(r["notifications"]), float(r["wall_s"])
    scpu = cpu1 - cpu0
    # the driver's CPU, and this process's (waiting for the RESULT line)
    ccpu = float(r["cli_cpu_s"]) + (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    res = {
        "server": srv.name, "N": n, "ready": ready, "publishes": int(r["publishes"]),
        "pub_errors": int(r["pub_errors"]), "notifications": got,
        "expected": int(r["expected"]), "stanzas": int(r["stanzas"]),
        "notif_s": float(r["notif_s"]), "pub_s": float(r["pub_s"]),
        "p50_ms": float(r["p50_ms"]), "p99_ms": float(r["p99_ms"]), "max_ms": float(r["max_ms"]),
        "srv_cpu_us": scpu / got * 1e6 if got else 0.0,
        "srv_cpu_pct": scpu / wall * 100 if wall > 0 else 0.0,
        "rss_mb": mem.get("VmRSS", 0), "hwm_mb": mem.get("VmHWM", 0),
        "cli_cpu_pct": ccpu / wall * 100 if wall > 0 else 0.0, "wall_s": wall,
        "login_s": float(rd["login_s"]), "driver": "c",
        "cli_cpu_us": ccpu / got * 1e6 if got else 0.0,
        "contact_min": int(r["contact_min"]), "contact_max": int(r["contact_max"]),
        # the driver's system CPU per notification and its reads per notification
        "cli_sys_us": float(r["cli_sys_s"]) / got * 1e6 if got else 0.0,
        "reads_per_notif": int(r["reads"]) / got if got else 0.0,
    }
    if int(r["lost"]):
        print(f"  {srv.name}: {r['lost']} contact connections lost during the run", flush=True)
    await asyncio.sleep(1)  # the servers see the streams end before the next one runs
    return res


def complete(r):
    """Every contact got every item of the run."""
    return (r["ready"] == r["N"] and r["notifications"] == r["expected"] == r["publishes"] * r["N"]
            and r["contact_min"] == r["contact_max"] == r["publishes"])


def versions(servers, env):
    out = {}
    for s in servers:
        if s == "xmppd":
            r = subprocess.run([env["XMPPD_BIN"], "--version"], stdout=subprocess.PIPE, text=True)
            # the last commit of the server's sources (not of bench/ or docs/)
            rev = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h", "--", "src",
                                  "include", "meson.build", "meson_options.txt"],
                                 stdout=subprocess.PIPE, text=True).stdout.strip()
            out[s] = f"{r.stdout.strip().splitlines()[0] if r.stdout else '?'} ({rev})"
        else:
            r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", s], stdout=subprocess.PIPE,
                               text=True)
            out[s] = f"{s} {r.stdout.strip()} (Debian)"
    return out


def prepare(work, src):
    """A copy of the shared harness with our adapters in servers/."""
    os.makedirs(work, exist_ok=True)
    subprocess.run(f"tar -C '{src}' --exclude=./results --exclude=./xmppload -cf - . | "
                   f"tar -C '{work}' -xf - && chmod -R u+w '{work}'", shell=True, check=True)
    ours = os.path.join(REPO, "bench", "shared", "servers")
    for a in os.listdir(ours):
        src_a, dst = os.path.join(ours, a), os.path.join(work, "servers", a)
        shutil.rmtree(dst, ignore_errors=True)
        if os.path.isdir(src_a):
            shutil.copytree(src_a, dst)
        else:  # a shared script beside the adapters (servers/web.sh)
            shutil.copy2(src_a, dst)


def row(r):
    return (f"{r['server']:9s} {r['N']:5d} {r['publishes']:6d} {r['notifications']:8d}"
            f"/{r['expected']:<8d} {r['notif_s']:9.0f} {r['pub_s']:7.1f} {r['p50_ms']:8.1f}"
            f" {r['p99_ms']:8.1f} {r['srv_cpu_us']:8.1f} {r['srv_cpu_pct']:6.0f}%"
            f" {r['rss_mb']:7.1f} {r['cli_cpu_pct']:6.0f}%")


HEAD = (f"{'server':9s} {'N':>5s} {'pubs':>6s} {'notifications':>17s} {'notif/s':>9s}"
        f" {'pub/s':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'us/notif':>8s} {'srvcpu':>7s}"
        f" {'rss MB':>7s} {'clicpu':>7s}")


async def main_async(a, servers):
    results = []
    for rnd in range(a.rounds):
        for n in a.contacts:
            for s in servers:
                tag = f"r{int(time.time())}x{rnd}"
                r = await measure(s, n, a.notifications, a.window, tag, a.max_seconds,
                                  a.pepload)
                results.append(r)
                print(row(r), flush=True)
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-release")
    ap.add_argument("--servers", default="xmppd,ejabberd")
    ap.add_argument("--contacts", default="100,1000")
    ap.add_argument("--notifications", type=int, default=200000,
                    help="about this many notifications per run (publishes = this / N)")
    ap.add_argument("--window", type=int, default=16, help="outstanding publish IQs")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=120,
                    help="no new publish after this many seconds (a slow server)")
    ap.add_argument("--work", default="/var/tmp/xmppbench-pep-work")
    ap.add_argument("--run", default="/var/tmp/xmppbench-pep")
    ap.add_argument("--bench-src", default=os.path.join(REPO, "..", "shared", "bench"))
    ap.add_argument("--keep-running", action="store_true")
    ap.add_argument("--coalesce-us", type=int, default=500,
                    help="--driver c: its sleep after each poll of the run (bench/pepload.c)")
    ap.add_argument("--driver", choices=("c", "python"),
                    help="load driver: c (BUILD/bench/pepload, the default when it is built)"
                    " or python (this process)")
    a = ap.parse_args()
    pepload = os.path.abspath(os.path.join(a.build, "bench", "pepload"))
    if a.driver is None:
        a.driver = "c" if os.access(pepload, os.X_OK) else "python"
    if a.driver == "c" and not os.access(pepload, os.X_OK):
        ap.error(f"--driver c: {pepload} is not built (ninja -C {a.build} bench/pepload)")
    a.pepload = pepload if a.driver == "c" else None
    COALESCE_US[0] = a.coalesce_us
    # SIGTERM (timeout, kill) ends the run through the finally below, which
    # stops the servers started here
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    a.contacts = [int(x) for x in a.contacts.split(",")]
    names = a.servers.split(",")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    prepare(a.work, os.path.abspath(a.bench_src))
    xd = os.path.abspath(os.path.join(a.build, "xmppd"))
    env = dict(os.environ, BENCH_RUN=a.run, XMPPD_BIN=xd,
               XMPPCTL_BIN=os.path.join(os.path.dirname(xd), "xmppctl"))
    servers = [Server(s, a.work, env) for s in names]
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')} pep.py servers={names} N={a.contacts} "
          f"notifications~{a.notifications} window={a.window} rounds={a.rounds}", flush=True)
    for s, v in versions(names, env).items():
        print(f"# {s}: {v}", flush=True)
    print(f"# load before: {open('/proc/loadavg').read().strip()}; cpus={os.cpu_count()}; "
          + (f"driver=c ({a.pepload}, coalesce {a.coalesce_us} us)" if a.pepload else
             f"driver=python (client loop={'uvloop' if uvloop else 'asyncio'})"), flush=True)
    if uvloop:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        for s in servers:
            s.start()
            print(f"# {s.name}: pid {s.pid()} port {s.port} domain {s.domain}", flush=True)

        async def setup():
            for s in servers:
                await ensure_users(s, max(a.contacts))
        asyncio.run(setup())
        print(HEAD, flush=True)
        results = asyncio.run(main_async(a, servers))
        print(f"# load after: {open('/proc/loadavg').read().strip()}", flush=True)
        bad = [r for r in results if not complete(r)]
        print(f"# complete: {len(results) - len(bad)} of {len(results)} runs delivered every"
              " item to every contact" + "".join(
                  f"; NOT {r['server']} N={r['N']}: ready {r['ready']}, {r['notifications']}"
                  f" of {r['publishes'] * r['N']}, per contact {r['contact_min']}"
                  f"-{r['contact_max']}" for r in bad), flush=True)
        for r in results:
            print("RESULT " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in r.items()), flush=True)
    finally:
        if not a.keep_running:
            for s in servers:
                s.stop()


if __name__ == "__main__":
    main()

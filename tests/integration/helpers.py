"""What the integration tests share on top of xclient.py (the hand-driven
client) and xmpptest.py (the server process): accounts and sessions, IQs,
reading stanzas, and negative checks that cannot lie.

Reading: expect() reads up to and including a match and drops what came
before it; take() removes only the match and leaves the rest buffered for
later checks (for pushes and answers that may come in either order).

Negative checks ("X must not reach c") never wait for a while: on a slow
machine a wait passes when it should fail.  The test arranges a barrier
instead, something that reaches c after X would have, and
assert_nothing_before() reads c's stream up to it.  What the server orders,
and so what makes a barrier sound:

  - one session's stanzas are handled in order, and routing is synchronous
    on the sender's worker: what the server routes because of a stanza (a
    delivery, a bounce, a carbon, a refusal) is queued for its recipients
    before the sender's next stanza is handled;
  - what is queued for a session is written to it in that order (RFC 6120
    10.1).  So a stanza from the same sender to c, sent after X, is a
    barrier (send_marker()); c's own round trip is one for what c's earlier
    stanzas caused (barrier=None); and after the sender's round trip, c's
    round trip is one for what the sender's stanzas caused (after=sender);
  - work done off the loop (presence broadcasts and subscriptions, offline
    storage and delivery, IQs like the roster's: the blocking pool) holds
    the stream whose stanza started it (xmppd/input.h): that stream's next
    stanza is handled after it, so a session's own round trip comes after
    every pool job its earlier stanzas started.  Between streams, pool work
    is ordered only with one pool thread (POOL1): jobs then run one at a
    time in the order they were queued and complete on the queuing worker
    in that order.
"""
import itertools
import re

from xclient import login

# One blocking-pool thread: pool jobs run in the order they were queued.
POOL1 = "pool_threads: 1\n"

# An IQ the roster module answers on the pool (XD_IQ_PARALLEL).
ROSTER_GET = "<query xmlns='jabber:iq:roster'/>"


def q(x):
    """Text with the quotes normalised to ' (bytes or str)."""
    return (x.decode() if isinstance(x, bytes) else x).replace('"', "'")


# ---- accounts and sessions -------------------------------------------------------------------

def users(srv, *names, password="pw", host=None):
    """Registers the accounts on srv's domain (srv.domain when the test gave
    it one, else localhost)."""
    host = host or getattr(srv, "domain", None) or "localhost"
    for n in names:
        r = srv.ctl_run("register", n, host, password)
        assert r.returncode == 0, r.stdout + r.stderr


def online(srv, user, resource=None, priority=0, presence=True, roster=False, password="pw",
           port=None, **login_kw):
    """Logs in (STARTTLS, SASL, bind) to srv's c2s port (or `port`), at
    srv.ip/srv.domain when the test set them; roster: asks for the roster
    first (its pushes then reach this session); presence: sends the initial
    presence and waits until the server handled it.  Returns (client, full
    JID)."""
    if getattr(srv, "ip", None):
        login_kw.setdefault("host", srv.ip)
    if getattr(srv, "domain", None):
        login_kw.setdefault("domain", srv.domain)
    c, jid = login(port or srv.c2s_port, user, password, resource=resource, **login_kw)
    if roster:
        c.send(f"<iq type='get' id='r0'>{ROSTER_GET}</iq>")
        expect(c, reply_rx("r0"))
    if presence:
        c.send("<presence/>" if priority == 0 else
               f"<presence><priority>{priority}</priority></presence>")
        c.roundtrip()
    return c, jid


# ---- reading ---------------------------------------------------------------------------------

def reply_rx(iq_id):
    """The answer to the IQ with id iq_id."""
    i = re.escape(iq_id)
    return (rf"<iq[^>]*id=['\"]{i}['\"][^>]*/>|"
            rf"<iq[^>]*id=['\"]{i}['\"][^>]*[^/]>.*?</iq>")


def msg_rx(mid):
    """The message with id mid."""
    return rf"<message[^>]*id=['\"]{re.escape(mid)}['\"].*?</message>"


def expect(c, pattern, timeout=5):
    """Reads up to the first match of pattern; returns it (quotes
    normalised) and drops what came before."""
    return q(c.recv_until(pattern, timeout=timeout).group(0))


def take(c, pattern, timeout=5):
    """Takes the first match of pattern out of c's stream (quotes
    normalised); what came before stays buffered."""
    return q(c.take(pattern, timeout=timeout).group(0))


def reply(c, iq_id, timeout=5):
    """The answer to IQ iq_id (read as expect() does)."""
    return expect(c, reply_rx(iq_id), timeout)


def iq(c, iq_id, body, typ="set", to=None, timeout=5):
    """Sends an IQ and returns its answer (read as expect() does)."""
    t = f" to='{to}'" if to else ""
    c.send(f"<iq type='{typ}' id='{iq_id}'{t}>{body}</iq>")
    return reply(c, iq_id, timeout)


def take_iq(c, iq_id, body, typ="set", to=None, timeout=5):
    """Sends an IQ and takes its answer out (read as take() does)."""
    t = f" to='{to}'" if to else ""
    c.send(f"<iq type='{typ}' id='{iq_id}'{t}>{body}</iq>")
    return take(c, reply_rx(iq_id), timeout)


# ---- barriers --------------------------------------------------------------------------------

_marks = itertools.count(1)


def send_marker(sender, to, typ="chat"):
    """Sends a message with a unique id from sender to `to`; returns the
    pattern that matches it (or its bounce) on a stream."""
    mid = f"barrier{next(_marks)}"
    sender.send(f"<message to='{to}' type='{typ}' id='{mid}'><body>{mid}</body></message>")
    return msg_rx(mid)


def pool_roundtrip(c):
    """With POOL1 and mod_roster: a roster get, answered on the pool after
    every pool job that c's earlier stanzas started has completed (a
    presence broadcast has been routed, a subscription handled)."""
    return c.roundtrip(ROSTER_GET)


def assert_nothing_before(c, unwanted, barrier=None, after=(), pool=False, timeout=5):
    """The negative check: nothing matching `unwanted` reached c ahead of
    the barrier.

    barrier: the pattern of a stanza the caller has arranged to reach c
    after any unwanted one would have, e.g. send_marker() from the same
    sender; None: c's own round trip.  after: the sessions (one or a
    tuple) that sent the stanzas under test; their round trips come first,
    so that whatever the server routed because of them is ahead of the
    barrier.  pool: the round trips are pool_roundtrip()s (POOL1), for
    what the server does on the pool.  Returns the barrier stanza (quotes
    normalised; "" for a round trip); what arrived before it stays
    buffered, so a later check still sees it."""
    roundtrip = pool_roundtrip if pool else (lambda s: s.roundtrip())
    for s in (after if isinstance(after, (list, tuple)) else (after,)):
        roundtrip(s)
    if barrier is None:
        seen, got = roundtrip(c), ""
    else:
        seen, m = c.before(barrier, timeout)
        got = q(m.group(0))
    rx = unwanted.encode() if isinstance(unwanted, str) else unwanted
    bad = re.search(rx, seen, re.S)
    assert bad is None, f"{bad.group(0)!r} arrived before the barrier: {seen!r}"
    return got



# ---- federation ------------------------------------------------------------------------------

def subscribe_in_order(a, ajid, b, bjid):
    """alice asks bob for his presence and bob approves: the remote server
    sends `subscribed` and then bob's available presence on one stream, and
    alice must get them in that order (RFC 6120 10.1; xmppd handles the
    subscription on the pool and holds the incoming stream meanwhile)."""
    abare, bbare = ajid.split("/")[0], bjid.split("/")[0]
    a.send(f"<presence to='{bbare}' type='subscribe'/>")
    b.take(r"<presence[^>]*type=['\"]subscribe['\"][^>]*>", timeout=20)
    b.send(f"<presence to='{abare}' type='subscribed'/>")
    ahead, _ = a.before(r"<presence(?![^>]*type=)[^>]*from=['\"]" + re.escape(bjid) + r"['\"]",
                        timeout=20)
    assert re.search(rb"<presence[^>]*type=['\"]subscribed['\"]", ahead), ahead



def slix_client(srv, jid, *plugins, password="pw"):
    """A slixmpp client for jid that trusts srv's certificate, with plugins."""
    import ssl

    import slixmpp

    from test_c2s import cert_path
    c = slixmpp.ClientXMPP(jid, password)
    c.ssl_context = ssl.create_default_context(cafile=cert_path(srv))
    for p in plugins:
        c.register_plugin(p)
    return c


def slixmpp_mam_bodies(srv, jid, archive=None, total=100, page=10, timeout=30):
    """Pages through an archive with slixmpp's XEP-0313 plugin (iterate,
    RSM pages of `page`, at most `total` messages) as `jid` (password "pw")
    and returns the bodies in the order they came.  archive: the JID of the
    archive (a room's), None: the account's own."""
    import asyncio

    from xmpptest import run_slixmpp

    got = []
    where = {"jid": archive} if archive else {}

    def make():
        c = slix_client(srv, jid, "xep_0313")

        async def go(_):
            try:
                async for m in c.plugin["xep_0313"].iterate(total=total, rsm={"max": page},
                                                            **where):
                    got.append(m["mam_result"]["forwarded"]["stanza"]["body"])
            finally:
                c.disconnect()

        c.add_event_handler("session_start", lambda e: asyncio.ensure_future(go(e)))
        return c

    run_slixmpp(make, ("127.0.0.1", srv.c2s_port), timeout=timeout)
    return got

"""What the integration tests share on top of xclient.py (the hand-driven
client) and xmpptest.py (the server process): accounts and sessions, IQs,
reading stanzas.

Reading: expect() reads up to and including a match and drops what came
before it; take() removes only the match and leaves the rest buffered for
later checks (for pushes and answers that may come in either order).
"""
import re

from xclient import login

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
           **login_kw):
    """Logs in (STARTTLS, SASL, bind) to srv's c2s port, at srv.ip/srv.domain
    when the test set them; roster: asks for the roster first (its pushes
    then reach this session); presence: sends the initial presence and waits
    until the server handled it.  Returns (client, full JID)."""
    if getattr(srv, "ip", None):
        login_kw.setdefault("host", srv.ip)
    if getattr(srv, "domain", None):
        login_kw.setdefault("domain", srv.domain)
    c, jid = login(srv.c2s_port, user, password, resource=resource, **login_kw)
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


def nothing(c, pattern, wait=0.8):
    """True when nothing matching pattern arrives within `wait` seconds."""
    try:
        c.take(pattern, timeout=wait)
    except AssertionError:
        return True
    return False

"""External components (XEP-0114) through the wire: a slixmpp component
connects, receives stanzas for its domain from a client, answers with its
domain, and its route goes away with it; raw-XML tests for the handshake
and addressing errors."""
import asyncio
import hashlib
import re
import socket
import threading
import time

import slixmpp
from slixmpp.componentxmpp import ComponentXMPP

from helpers import msg_rx, q, users
from xclient import XClient, login
from xmpptest import free_port, NS_STREAMS

SECRET = "s3cret"


def component_server(server_factory):
    cport = free_port()
    srv = server_factory(extra_yaml=(
        f"  - port: {cport}\n"
        f"    ip: 127.0.0.1\n"
        f"    module: component\n"
        f"    hosts:\n"
        f"      bot.localhost: {{password: {SECRET}}}\n"
        f"      other.localhost: {{password: another}}\n"
        f"      localhost: {{password: nope}}\n"))
    srv.comp_port = cport
    users(srv, "alice")
    return srv


class Bot(ComponentXMPP):
    """Echoes messages back, from the JID they were sent to."""

    def __init__(self):
        super().__init__("bot.localhost", SECRET)
        self.register_plugin("xep_0030")
        self.ready = threading.Event()
        self.got = []
        self.add_event_handler("session_start", lambda _: self.ready.set())
        self.add_event_handler("message", self.on_message)

    def on_message(self, msg):
        self.got.append(msg)
        msg.reply("echo: " + msg["body"]).send()


def run_bot(port):
    # slixmpp binds to the current event loop when it is built: give it the
    # loop its thread will run (an earlier test may have cleared the main
    # thread's).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        bot = Bot()
    finally:
        asyncio.set_event_loop(None)

    def main():
        asyncio.set_event_loop(loop)
        bot.loop = loop
        bot.connect(host="127.0.0.1", port=port)
        loop.run_forever()
        loop.close()

    t = threading.Thread(target=main, daemon=True)
    t.start()
    assert bot.ready.wait(10), "the component did not connect"

    def stop():
        fut = asyncio.run_coroutine_threadsafe(_disconnect(bot), loop)
        fut.result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
    return bot, stop


async def _disconnect(bot):
    # Ends when the server has answered our </stream:stream> with its own
    # (or after slixmpp's own 2 s wait).
    await bot.disconnect()
    # Let slixmpp's own tasks end before the loop goes away.
    me = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def test_slixmpp_component_round_trip(server_factory):
    srv = component_server(server_factory)  # extra_yaml continues `listen:`
    bot, stop = run_bot(srv.comp_port)
    try:
        a, ajid = login(srv.c2s_port, "alice", "pw", resource="r")
        a.send("<message to='echo@bot.localhost' type='chat' id='m1'><body>hi</body></message>")
        m = a.recv_until(r"<message[^>]*>.*?echo: hi.*?</message>").group(0).decode()
        m = m.replace('"', "'")
        assert "from='echo@bot.localhost'" in m and f"to='{ajid}'" in m, m
        assert bot.got and str(bot.got[0]["from"]) == ajid
        # An IQ to the component's domain is answered by the component.
        a.send("<iq type='get' id='d1' to='bot.localhost'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        r = a.recv_until(r"<iq[^>]*id=['\"]d1['\"].*?(</iq>|/>)").group(0).decode()
        assert "type=\"result\"" in r or "type='result'" in r, r
    finally:
        stop()
    # Gone: the domain has no route any more.
    deadline = time.time() + 5
    while True:
        a.send("<message to='echo@bot.localhost' type='chat' id='m2'><body>x</body></message>")
        e = a.recv_until(r"<message[^>]*id=['\"]m2['\"].*?</message>").group(0).decode()
        if "type='error'" in e.replace('"', "'") or time.time() > deadline:
            break
    assert "remote-server-not-found" in e or "service-unavailable" in e, e
    a.close()


class Raw:
    """A component stream by hand."""

    def __init__(self, port, domain, source=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5,
                                          source_address=(source, 0) if source else None)
        self.buf = b""
        self.s.sendall((f"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                        f"xmlns:stream='{NS_STREAMS}' to='{domain}'>").encode())

    def until(self, pattern, timeout=5):
        deadline = time.time() + timeout
        while True:
            m = re.search(pattern.encode(), self.buf, re.S)
            if m:
                self.buf = self.buf[m.end():]
                return m.group(0).decode().replace('"', "'")
            self.s.settimeout(max(0.05, deadline - time.time()))
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                chunk = None
            if not chunk:
                raise AssertionError(f"no {pattern!r} in {self.buf!r}")
            self.buf += chunk

    def header_id(self):
        hdr = self.until(r"<stream:stream[^>]*>")
        assert "version=" not in hdr, hdr  # XEP-0114 streams carry no version
        return re.search(r"id='([^']+)'", hdr).group(1), hdr

    def handshake(self, sid, secret):
        d = hashlib.sha1((sid + secret).encode()).hexdigest()
        self.s.sendall(f"<handshake>{d}</handshake>".encode())

    def send(self, x):
        self.s.sendall(x.encode())

    def error(self):
        return self.until(r"<stream:error>.*?</stream:error>")

    def close(self):
        self.s.close()


def test_raw_handshake_and_addressing_errors(server_factory):
    srv = component_server(server_factory)
    # A wrong secret.
    r = Raw(srv.comp_port, "bot.localhost")
    sid, hdr = r.header_id()
    assert "from='bot.localhost'" in hdr
    r.handshake(sid, "wrong")
    assert "not-authorized" in r.error()
    r.close()
    # A served host cannot be a component; nor an unknown domain.
    for dom in ("localhost", "unknown.localhost"):
        r = Raw(srv.comp_port, dom)
        assert "host-unknown" in r.error()
        r.close()
    # Anything before the handshake.
    r = Raw(srv.comp_port, "bot.localhost")
    r.header_id()
    r.send("<message to='alice@localhost' from='bot.localhost'/>")
    assert "not-authorized" in r.error()
    r.close()
    # A good one, then a second for the same domain: conflict.
    r = Raw(srv.comp_port, "bot.localhost")
    sid, _ = r.header_id()
    r.handshake(sid, SECRET)
    r.until(r"<handshake\s*/>")
    r2 = Raw(srv.comp_port, "bot.localhost")
    sid2, _ = r2.header_id()
    r2.handshake(sid2, SECRET)
    assert "conflict" in r2.error()
    r2.close()
    # Sending with its domain works, from a subdomain-less JID too.
    a, ajid = login(srv.c2s_port, "alice", "pw", resource="r")
    r.send(f"<message from='svc@bot.localhost/x' to='{ajid}'><body>from comp</body></message>")
    m = a.recv_until(r"<message[^>]*>.*?from comp.*?</message>").group(0).decode()
    assert "svc@bot.localhost/x" in m and "jabber:component" not in m, m
    # A stanza from the client reaches the raw component, from the full JID.
    a.send("<message to='bot.localhost' id='up'><body>to comp</body></message>")
    got = r.until(r"<message[^>]*>.*?to comp.*?</message>")
    assert f"from='{ajid}'" in got, got
    # Another domain's 'from': invalid-from; a missing 'to': improper-addressing.
    r.send(f"<message from='x@other.localhost' to='{ajid}'/>")
    assert "invalid-from" in r.error()
    r.close()
    r = Raw(srv.comp_port, "other.localhost")
    sid, _ = r.header_id()
    r.handshake(sid, "another")
    r.until(r"<handshake\s*/>")
    r.send("<message from='other.localhost'><body>x</body></message>")
    assert "improper-addressing" in r.error()
    r.close()
    a.close()


def connected(srv, domain="bot.localhost", secret=SECRET):
    r = Raw(srv.comp_port, domain)
    sid, _ = r.header_id()
    r.handshake(sid, secret)
    r.until(r"<handshake\s*/>")
    return r


def test_raw_addresses_canonical_and_malformed(server_factory):
    """A component's addresses go on in canonical form (RFC 7622: case-folded
    localpart and domain, no trailing dot, the resource as it is); a 'to'
    that is not a JID is answered with jid-malformed from the server's
    domain, never from itself (RFC 6120 8.3.3.8); a 'from' that is not a
    JID is improper-addressing, as a missing one is."""
    srv = component_server(server_factory)
    r = connected(srv)
    a, ajid = login(srv.c2s_port, "alice", "pw", resource="r")
    r.send("<message from='Svc@BOT.LOCALHOST/X' to='ALICE@LOCALHOST/r' id='c1'>"
           "<body>one</body></message>")
    m = q(a.recv_until(msg_rx("c1")).group(0))
    assert "from='svc@bot.localhost/X'" in m and f"to='{ajid}'" in m, m
    r.send("<message from='svc@bot.localhost.' to='alice@localhost./r' id='c2'>"
           "<body>two</body></message>")
    m = q(a.recv_until(msg_rx("c2")).group(0))
    assert "from='svc@bot.localhost'" in m and f"to='{ajid}'" in m, m
    r.send("<message from='svc@bot.localhost' to='alice@@localhost' id='c3'>"
           "<body>three</body></message>")
    e = r.until(r"<message[^>]*id=['\"]c3['\"].*?</message>")
    assert "type='error'" in e and "jid-malformed" in e, e
    assert "from='localhost'" in e and "to='svc@bot.localhost'" in e and "alice@@" not in e, e
    r.send("<message from='svc@bot..localhost' to='alice@localhost'><body>x</body></message>")
    assert "improper-addressing" in r.error()
    r.close()
    a.close()


def test_xml_1_1_declaration_refused(server_factory):
    """RFC 6120 11.8: XMPP is XML 1.0; a stream declared 1.1 is bad-format."""
    srv = component_server(server_factory)
    r = Raw.__new__(Raw)
    r.s = socket.create_connection(("127.0.0.1", srv.comp_port), timeout=5)
    r.buf = b""
    r.send(f"<?xml version='1.1'?><stream:stream xmlns='jabber:component:accept' "
           f"xmlns:stream='{NS_STREAMS}' to='bot.localhost'>")
    assert "<bad-format" in r.error()
    r.close()


def test_bad_hosts_option_is_a_config_error(tmp_path):
    import subprocess
    from conftest import build_dir
    from xmpptest import Server
    srv = Server(build_dir(), tmp_path / "bad", extra_yaml=(
        "  - port: 5347\n    ip: 127.0.0.1\n    module: component\n"
        "    hosts:\n      gw.localhost: {secret: x}\n"))
    p = subprocess.run([srv.bin, "--config", srv.config_path, "--check-config"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert re.search(r"xmppd\.yml:\d+:\d+: listen\[1\]\.hosts\.gw\.localhost\.password: "
                     r"missing required option", p.stderr), p.stderr

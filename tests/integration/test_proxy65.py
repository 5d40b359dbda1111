"""mod_proxy65: a SOCKS5 bytestreams proxy (XEP-0065) over the wire — the
service's discovery and streamhost, the SOCKS5 handshake as clients speak
it, activation by the initiator, a transfer relayed both ways with its end
of stream, and the limits (third party, connection caps, pending
timeout, early bytes)."""
import hashlib
import os
import re
import socket
import time

import pytest

from helpers import iq, online, users
from xmpptest import free_port

NS = "http://jabber.org/protocol/bytestreams"


def start(server_factory, extra=""):
    port = free_port()
    srv = server_factory(extra_yaml=(
        "modules:\n  mod_proxy65:\n    ip: 127.0.0.1\n"
        f"    port: {port}\n    pending_timeout: 2s\n{extra}"))
    srv.proxy_port = port
    return srv


def recv_exact(s, n, timeout=10):
    s.settimeout(timeout)
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise AssertionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def recv_all(s, timeout=10):
    """Everything until the end of stream."""
    s.settimeout(timeout)
    out = b""
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            return out
        out += chunk


def socks_connect(port, dst, methods=b"\x00"):
    """A SOCKS5 client as XEP-0065 5.3 has it: no authentication, CONNECT
    to the domain `dst`, port 0.  Returns (socket, the CONNECT reply)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"\x05" + bytes([len(methods)]) + methods)
    r = recv_exact(s, 2)
    if r != b"\x05\x00":
        return s, r
    d = dst.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(d)]) + d + b"\x00\x00")
    head = recv_exact(s, 5)
    if head[1] != 0:
        return s, head
    return s, head + recv_exact(s, head[4] + 2)


def dst_hash(sid, initiator, target):
    return hashlib.sha1((sid + initiator + target).encode()).hexdigest()


def test_disco_and_streamhost(server_factory):
    srv = start(server_factory)
    users(srv, "alice")
    c, _ = online(srv, "alice", "r")
    r = iq(c, "i", "<query xmlns='http://jabber.org/protocol/disco#items'/>", typ="get",
           to="localhost")
    assert "jid='proxy.localhost'" in r, r
    r = iq(c, "p", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to="proxy.localhost")
    assert "category='proxy'" in r and "type='bytestreams'" in r and f"var='{NS}'" in r, r
    r = iq(c, "s", f"<query xmlns='{NS}'/>", typ="get", to="proxy.localhost")
    assert (f"<streamhost jid='proxy.localhost' host='127.0.0.1' port='{srv.proxy_port}'/>"
            in r), r


def test_transfer_relayed_both_ways_to_the_end(server_factory):
    srv = start(server_factory)
    users(srv, "ini", "tgt")
    ini, ini_jid = online(srv, "ini", "send")
    _, tgt_jid = online(srv, "tgt", "recv")
    sid = "s1d-" + os.urandom(4).hex()
    h = dst_hash(sid, ini_jid, tgt_jid)
    # XEP-0065 6.3: the target connects first, then the initiator.
    t, rt = socks_connect(srv.proxy_port, h)
    assert rt == b"\x05\x00\x00\x03\x28" + h.encode() + b"\x00\x00", rt
    i, ri = socks_connect(srv.proxy_port, h)
    assert ri[:2] == b"\x05\x00", ri
    # bytes sent before the activation are kept and come after it
    i.sendall(b"early:")
    r = iq(ini, "a", f"<query xmlns='{NS}' sid='{sid}'><activate>{tgt_jid}</activate></query>",
           to="proxy.localhost")
    assert "type='result'" in r, r
    payload = os.urandom(3 << 20)  # more than the back-pressure mark
    i.sendall(payload)
    t.sendall(b"thanks")
    assert recv_exact(i, 6) == b"thanks"
    i.shutdown(socket.SHUT_WR)  # the initiator is done: the target reads to its end
    got = recv_all(t)
    assert got == b"early:" + payload, (len(got), len(payload))
    t.close()
    assert recv_all(i) == b""  # both ended: the proxy closed the initiator's side
    i.close()


def test_activation_needs_both_parties_and_the_access(server_factory):
    srv = start(server_factory, "    access: only_ini\naccess_rules:\n  only_ini:\n"
                                "    allow: {user: ini}\n")
    users(srv, "ini", "tgt", "eve")
    ini, ini_jid = online(srv, "ini", "r")
    eve, _ = online(srv, "eve", "r")
    _, tgt_jid = online(srv, "tgt", "r")
    sid = "lonely"
    t, _ = socks_connect(srv.proxy_port, dst_hash(sid, ini_jid, tgt_jid))
    r = iq(ini, "a1", f"<query xmlns='{NS}' sid='{sid}'><activate>{tgt_jid}</activate></query>",
           to="proxy.localhost")
    assert "type='error'" in r and "<item-not-found" in r, r
    r = iq(ini, "a2", f"<query xmlns='{NS}' sid='{sid}'/>", to="proxy.localhost")
    assert "type='error'" in r and "<bad-request" in r, r
    r = iq(eve, "a3", f"<query xmlns='{NS}' sid='{sid}'><activate>{tgt_jid}</activate></query>",
           to="proxy.localhost")
    assert "type='error'" in r and "<forbidden" in r, r
    r = iq(eve, "a4", f"<query xmlns='{NS}'/>", typ="get", to="proxy.localhost")
    assert "<forbidden" in r and "streamhost" not in r, r
    t.close()


def test_socks_refusals(server_factory):
    srv = start(server_factory)
    # no acceptable method: 05 FF
    s, r = socks_connect(srv.proxy_port, "x", methods=b"\x02")
    assert r == b"\x05\xff", r
    assert recv_all(s) == b""
    # not a SHA1 hash: not allowed (02)
    s, r = socks_connect(srv.proxy_port, "not-a-hash")
    assert r[:2] == b"\x05\x02", r
    # a third connection for one hash: not allowed
    h = dst_hash("sid", "a@localhost/r", "b@localhost/r")
    a, ra = socks_connect(srv.proxy_port, h)
    b, rb = socks_connect(srv.proxy_port, h)
    c, rc = socks_connect(srv.proxy_port, h)
    assert ra[1] == 0 and rb[1] == 0 and rc[:2] == b"\x05\x02", (ra, rb, rc)
    # BIND instead of CONNECT: command not supported (07)
    s = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=10)
    s.sendall(b"\x05\x01\x00")
    assert recv_exact(s, 2) == b"\x05\x00"
    s.sendall(b"\x05\x02\x00\x03\x01x\x00\x00")
    assert recv_exact(s, 2) == b"\x05\x07"
    # never activated: closed after pending_timeout (2 s)
    t0 = time.time()
    assert recv_all(a, timeout=10) == b""
    assert time.time() - t0 < 8


def test_connection_limits(server_factory):
    srv = start(server_factory, "    max_connections_per_ip: 2\n")
    a = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=10)
    b = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=10)
    # a and b are in (their greeting is answered), the third is closed at once
    for s in (a, b):
        s.sendall(b"\x05\x01\x00")
        assert recv_exact(s, 2) == b"\x05\x00"
    c = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=10)
    c.settimeout(10)
    try:
        c.sendall(b"\x05\x01\x00")
        assert c.recv(2) == b""
    except ConnectionResetError:
        pass
    a.close()
    # a's place is free again once the proxy saw it go
    for _ in range(100):
        d = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=10)
        d.sendall(b"\x05\x01\x00")
        d.settimeout(10)
        try:
            if d.recv(2) == b"\x05\x00":
                break
        except ConnectionResetError:
            pass
        d.close()
        time.sleep(0.05)
    else:
        pytest.fail("the closed connection's place was not freed")


def test_port_in_use_stops_the_start(server_factory):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    with pytest.raises(RuntimeError) as e:
        server_factory(extra_yaml=f"modules:\n  mod_proxy65:\n    ip: 127.0.0.1\n    port: {port}\n",
                       expect_clean_exit=False)
    assert re.search(rf"cannot listen on \[127\.0\.0\.1\]:{port}", str(e.value)), e.value
    busy.close()
    with pytest.raises(RuntimeError) as e:
        server_factory(extra_yaml="modules:\n  mod_proxy65:\n    host: 'not a domain!'\n",
                       expect_clean_exit=False)
    assert "host not a domain! is not a domain" in str(e.value), e.value


def test_receiver_closed_first_still_gets_every_byte(server_factory):
    """The target half-closes at once (it never sends), the initiator sends
    more than the proxy's buffers and socket buffers hold, then ends: the
    proxy passes the end on after the last queued byte (closing both at
    the initiator's end dropped what was queued)."""
    import threading
    srv = start(server_factory)
    users(srv, "ini", "tgt")
    ini, ini_jid = online(srv, "ini", "send")
    _, tgt_jid = online(srv, "tgt", "recv")
    h = dst_hash("late", ini_jid, tgt_jid)
    t = socket.socket()
    t.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    t.connect(("127.0.0.1", srv.proxy_port))
    t.settimeout(10)
    t.sendall(b"\x05\x01\x00")
    assert recv_exact(t, 2) == b"\x05\x00"
    t.sendall(b"\x05\x01\x00\x03\x28" + h.encode() + b"\x00\x00")
    assert recv_exact(t, 47)[:2] == b"\x05\x00"
    i, _ = socks_connect(srv.proxy_port, h)
    r = iq(ini, "a", f"<query xmlns='{NS}' sid='late'><activate>{tgt_jid}</activate></query>",
           to="proxy.localhost")
    assert "type='result'" in r, r
    t.shutdown(socket.SHUT_WR)
    payload = os.urandom(12 << 20)

    def send():
        i.sendall(payload)
        i.shutdown(socket.SHUT_WR)
    th = threading.Thread(target=send)
    th.start()
    got = recv_all(t, timeout=30)
    th.join(30)
    assert len(got) == len(payload) and got == payload, (len(got), len(payload))


def test_slixmpp_clients_transfer_through_the_proxy(server_factory):
    """Two clients of a real library (slixmpp's XEP-0065 plugin): the
    initiator discovers the proxy from the server's disco#items, offers it
    as streamhost, the target connects through it, the initiator
    activates, and the bytes arrive."""
    import asyncio

    from helpers import slix_client
    from xmpptest import close_loop

    srv = start(server_factory)
    users(srv, "ini", "tgt")
    payload = os.urandom(256 * 1024)
    got = bytearray()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        a = slix_client(srv, "ini@localhost/s", "xep_0030", "xep_0065")
        b = slix_client(srv, "tgt@localhost/s", "xep_0030", "xep_0065")
        b["xep_0065"].auto_accept = True  # the target takes the offered stream
        started = {"a": loop.create_future(), "b": loop.create_future()}
        done = loop.create_future()

        def on_start(name, c):
            c.send_presence()
            started[name].set_result(True)

        def on_data(d):
            got.extend(d)
            if len(got) >= len(payload) and not done.done():
                done.set_result(True)

        a.add_event_handler("session_start", lambda e: on_start("a", a))
        b.add_event_handler("session_start", lambda e: on_start("b", b))
        b.add_event_handler("socks5_data", on_data)
        for c in (a, b):
            c.loop = loop
            c.connect(address=("127.0.0.1", srv.c2s_port))

        async def main():
            await asyncio.wait_for(asyncio.gather(*started.values()), 15)
            proxies = await a["xep_0065"].discover_proxies(timeout=10)
            assert "proxy.localhost" in {str(j) for j in proxies}, proxies
            conn = await asyncio.wait_for(a["xep_0065"].handshake(b.boundjid), 15)
            assert conn is not None
            await conn.write(payload)
            await asyncio.wait_for(done, 15)

        loop.run_until_complete(main())
        assert bytes(got) == payload, (len(got), len(payload))
        for c in (a, b):
            c.disconnect()
    finally:
        close_loop(loop)

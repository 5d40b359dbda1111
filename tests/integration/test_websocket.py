"""XMPP over WebSocket (RFC 7395, src/http/ws.c) through the wire: the
upgrade and its checks (subprotocol, origin), <open/>/<close/> framing,
a whole client session (SCRAM, bind, messages with a TCP slixmpp client),
the limits (an oversized frame is a stream error), pings both ways,
see-other-uri, and the errors a bad client earns."""
import base64
import hashlib
import re
import ssl
import threading
import time

import slixmpp

from helpers import users
from test_c2s import cert_path
from test_http import web
from wstest import NS_FRAMING, WS
from xmpptest import run_slixmpp

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_upgrade_answers_101_with_accept_and_protocol(server_factory):
    srv = web(server_factory, module=False)
    w = WS(srv.http_port)
    assert w.status == 101, w.head
    assert "Sec-WebSocket-Protocol: xmpp" in w.head
    assert re.search(r"(?i)upgrade: websocket", w.head)
    m = re.search(r"Sec-WebSocket-Accept: (\S+)", w.head)
    assert m and len(base64.b64decode(m.group(1))) == 20
    w.close()


def test_accept_key_is_rfc6455(server_factory):
    srv = web(server_factory, module=False)
    import socket
    s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
    key = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: xmpp\r\n\r\n").encode())
    head = s.recv(4096).decode()
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    assert expected == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    s.close()


def test_subprotocol_xmpp_required(server_factory):
    srv = web(server_factory, module=False)
    assert WS(srv.http_port, protocol=None).status == 400
    assert WS(srv.http_port, protocol="chat, superchat").status == 400
    assert WS(srv.http_port, protocol="chat, xmpp").status == 101


def test_plain_get_on_ws_path_is_426(server_factory):
    srv = web(server_factory, module=False)
    from test_http import get
    st, h, _ = get(srv.http_port, "/ws")
    assert st == 426 and h["upgrade"] == "websocket"


def test_origin_allow_list(server_factory):
    srv = web(server_factory, module=False,
              http_opts="    websocket_origins: [https://chat.example]\n")
    assert WS(srv.http_port, origin="https://evil.example").status == 403
    assert WS(srv.http_port).status == 403  # no Origin at all
    w = WS(srv.http_port, origin="https://chat.example")
    assert w.status == 101
    w.open()


def test_open_and_close_framing(server_factory):
    srv = web(server_factory, module=False)
    w = WS(srv.http_port)
    opened = w.open()
    assert re.match(rf"<open xmlns='{NS_FRAMING}' id='[0-9a-f]{{32}}' from='localhost' "
                    r"version='1.0' xml:lang='en'/>$", opened), opened
    feats = w.recv()
    # A standalone message declares the stream prefix (RFC 7395 3.3.3).
    assert feats.startswith("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>")
    assert "SCRAM-SHA-256" in feats
    w.send(f"<close xmlns='{NS_FRAMING}'/>")
    rest = w.messages_to_close()
    assert rest == [f"<close xmlns='{NS_FRAMING}'/>"]
    assert w.close_code == 1000


def test_unknown_host_is_stream_error(server_factory):
    srv = web(server_factory, module=False)
    w = WS(srv.http_port)
    w.send(f"<open xmlns='{NS_FRAMING}' to='nowhere.example' version='1.0'/>")
    msgs = w.messages_to_close()
    assert msgs[0].startswith("<open ")
    assert re.match(r"<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
                    r"<host-unknown ", msgs[1]), msgs
    assert msgs[-1] == f"<close xmlns='{NS_FRAMING}'/>"


def test_open_without_framing_namespace_is_refused(server_factory):
    srv = web(server_factory, module=False)
    w = WS(srv.http_port)
    w.send("<open to='localhost' version='1.0'/>")
    msgs = w.messages_to_close()
    assert any("<invalid-namespace " in m for m in msgs), msgs


def test_bad_xml_is_not_well_formed(server_factory):
    srv = web(server_factory, module=False)
    w = WS(srv.http_port)
    w.open()
    w.recv()
    w.send("<message><body>unclosed</message>")
    msgs = w.messages_to_close()
    assert any("<not-well-formed " in m for m in msgs), msgs


def test_binary_message_is_bad_format(server_factory):
    srv = web(server_factory, module=False)
    w = WS(srv.http_port)
    w.open()
    w.recv()
    w.send_frame(0x2, b"<presence/>")
    msgs = w.messages_to_close()
    assert any("<bad-format " in m for m in msgs), msgs


def test_oversized_frame_is_stream_error(server_factory):
    srv = web(server_factory, module=False, http_opts="    max_stanza_size: 20000\n")
    w = WS(srv.http_port)
    w.open()
    w.recv()
    # Exactly at the limit is fine ...
    body = "a" * (20000 - len("<message to='x@localhost'><body></body></message>"))
    w.send(f"<message to='x@localhost'><body>{body}</body></message>")
    # ... (a round trip proves it was taken) ...
    w.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    # unauthenticated: the server answers the IQ with an error or closes; either
    # way it must not be a policy-violation for the 20000-byte message.
    msgs = []
    try:
        msgs.append(w.recv(5))
    except EOFError:
        pass
    assert not any("policy-violation" in m for m in msgs), msgs
    w2 = WS(srv.http_port)
    w2.open()
    w2.recv()
    w2.send("<message><body>" + "b" * 20001 + "</body></message>")
    msgs = w2.messages_to_close()
    assert any(re.search(r"<policy-violation .*stanza too big", m) for m in msgs), msgs
    assert w2.close_code == 1009


def test_oversized_fragmented_message_is_stream_error(server_factory):
    srv = web(server_factory, module=False, http_opts="    max_stanza_size: 20000\n")
    w = WS(srv.http_port)
    w.open()
    w.recv()
    w.send_frame(0x1, "<message><body>" + "c" * 15000, fin=False)
    w.send_frame(0x0, "d" * 15000 + "</body></message>", fin=True)
    msgs = w.messages_to_close()
    assert any("<policy-violation " in m for m in msgs), msgs


def test_fragmented_message_is_reassembled(server_factory):
    srv = web(server_factory, module=False)
    w = WS(srv.http_port)
    w.send_frame(0x1, f"<open xmlns='{NS_FRAMING}' ", fin=False)
    w.send_frame(0x9, b"in-between")  # a control frame may interleave
    w.send_frame(0x0, "to='localhost' version='1.0'/>", fin=True)
    op, data = w.frame()
    assert op == 0xA and data == b"in-between"  # the pong
    assert w.recv().startswith("<open ")


def test_ping_is_answered_with_pong(server_factory):
    srv = web(server_factory, module=False)
    w = WS(srv.http_port)
    w.open()
    w.recv()
    w.send_frame(0x9, b"are-you-there")
    op, data = w.frame()
    assert op == 0xA and data == b"are-you-there"


def test_server_pings_idle_socket_and_closes_a_dead_one(server_factory):
    srv = web(server_factory, module=False, http_opts="    websocket_ping_interval: 1s\n")
    w = WS(srv.http_port)
    w.open()
    w.recv()
    start = time.time()
    op, data = w.frame(timeout=5)
    assert op == 0x9, (op, data)
    # We never answer: after another interval the stream ends.
    msgs = w.messages_to_close(timeout=5)
    assert any("<connection-timeout " in m for m in msgs), msgs
    assert time.time() - start < 5


def test_pong_keeps_the_socket(server_factory):
    srv = web(server_factory, module=False, http_opts="    websocket_ping_interval: 1s\n")
    w = WS(srv.http_port)
    w.open()
    w.recv()
    for _ in range(3):
        op, data = w.frame(timeout=5)
        assert op == 0x9
        w.send_frame(0xA, data)
    # still open: a stream-level round trip is answered
    w.send(f"<close xmlns='{NS_FRAMING}'/>")
    assert w.messages_to_close() == [f"<close xmlns='{NS_FRAMING}'/>"]


def test_see_other_uri(server_factory):
    srv = web(server_factory, module=False,
              http_opts="    websocket_see_other_uri: wss://other.example/xmpp\n")
    w = WS(srv.http_port)
    w.send(f"<open xmlns='{NS_FRAMING}' to='localhost' version='1.0'/>")
    msgs = w.messages_to_close()
    assert msgs[0].startswith("<open ")
    assert msgs[1] == (f"<close xmlns='{NS_FRAMING}' "
                       "see-other-uri='wss://other.example/xmpp'/>")


def test_login_and_message_exchange_with_tcp_client(server_factory):
    srv = web(server_factory, module=False)
    users(srv, "alice", "bob")
    w = WS(srv.http_port)
    jid = w.login("alice", "pw")
    assert jid == "alice@localhost/ws"
    w.send("<presence/>")

    got = []
    ready = threading.Event()

    class Bob(slixmpp.ClientXMPP):
        def __init__(self):
            super().__init__("bob@localhost/tcp", "pw")
            self.ssl_context = ssl.create_default_context(cafile=cert_path(srv))
            self.add_event_handler("session_start", self.start)
            self.add_event_handler("message", self.on_message)

        async def start(self, _):
            self.send_presence()
            self.send_message(mto="alice@localhost/ws", mbody="hello over tcp", mtype="chat")
            ready.set()

        def on_message(self, msg):
            got.append(str(msg["body"]))
            self.disconnect()

    def run():
        run_slixmpp(lambda: Bob(), ("127.0.0.1", srv.c2s_port), timeout=20)

    t = threading.Thread(target=run)
    t.start()
    m = w.recv_until(r"hello over tcp")
    assert m.startswith("<message xmlns='jabber:client' ")
    assert "from='bob@localhost/tcp'" in m
    w.send("<message to='bob@localhost/tcp' type='chat' id='r1'>"
           "<body>hello over websocket</body></message>")
    t.join(25)
    assert got == ["hello over websocket"]
    # The session is an ordinary c2s session: visible to the admin tools.
    w.send(f"<close xmlns='{NS_FRAMING}'/>")
    w.messages_to_close()


def test_stream_management_over_websocket(server_factory):
    srv = web(server_factory, module=False)
    users(srv, "carol")
    w = WS(srv.http_port)
    w.login("carol", "pw")
    w.send("<enable xmlns='urn:xmpp:sm:3'/>")
    assert w.recv_until(r"^<enabled ").startswith("<enabled xmlns='urn:xmpp:sm:3'")
    w.send("<iq type='get' id='x1' xmlns='jabber:client'><ping xmlns='urn:xmpp:ping'/></iq>")
    w.recv_until(r"id='x1'")
    w.send("<r xmlns='urn:xmpp:sm:3'/>")
    assert re.match(r"<a xmlns='urn:xmpp:sm:3' h='1'/>", w.recv_until(r"^<a ")), "ack"


def test_websocket_over_tls_and_host_meta_says_wss(server_factory):
    srv = web(server_factory, module=False, http_opts="    tls: true\n")
    users(srv, "dave")
    ctx = ssl.create_default_context(cafile=cert_path(srv))
    w = WS(srv.http_port, tls_context=ctx)
    assert w.status == 101
    assert w.login("dave", "pw") == "dave@localhost/ws"
    assert re.search(r'event="authenticated" conn=\d+ ip=127\.0\.0\.1 jid=dave@localhost',
                     srv.log_text())
    import socket
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.http_port), timeout=10),
                        server_hostname="localhost")
    s.sendall(f"GET /.well-known/host-meta.json HTTP/1.1\r\nHost: localhost:{srv.http_port}"
              f"\r\nConnection: close\r\n\r\n".encode())
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
    assert f'"href":"wss://localhost:{srv.http_port}/ws"'.encode() in out


def test_websocket_on_ipv6_listener(server_factory):
    from xmpptest import free_port, have_ipv6
    import pytest
    if not have_ipv6():
        pytest.skip("no IPv6 loopback")
    port = free_port()
    c2s = free_port()
    srv = server_factory(listen=(f"  - port: {c2s}\n    ip: 127.0.0.1\n    module: c2s\n"
                                 f"  - port: {port}\n    ip: '::1'\n    module: http\n"))
    users(srv, "erin")
    w = WS(port, host="::1")
    assert w.status == 101
    assert w.login("erin", "pw") == "erin@localhost/ws"

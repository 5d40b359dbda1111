"""Client streams on the wire: headers, stream errors, limits (RFC 6120 4, 11).

Each test speaks raw XML, so that what a client library would hide is
visible: the exact stream error condition and the closing tag.
"""
import re

import pytest

from xmpptest import stream_header_attrs

BILLION_LAUGHS = (
    "<?xml version='1.0'?>"
    "<!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    + "".join(f"<!ENTITY lol{i} '{('&lol' + (str(i - 1) if i > 1 else '') + ';') * 10}'>"
              for i in range(1, 10))
    + "]><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
      "to='localhost' version='1.0'>&lol9;")


def opened(server):
    s = server.raw()
    s.open_stream()
    s.recv_until(r"<stream:features\s*/>|</stream:features>")
    return s


def test_stream__header_reply(server):
    s = server.raw()
    s.open_stream(extra=" xml:lang='de' from='juliet@localhost'")
    s.recv_until(r"<stream:features")
    attrs = stream_header_attrs(s.buf)
    assert attrs["from"] == "localhost"
    assert attrs["version"] == "1.0"
    assert attrs["xmlns"] == "jabber:client"
    assert attrs["xmlns:stream"] == "http://etherx.jabber.org/streams"
    assert attrs["xml:lang"] == "de"
    assert attrs["to"] == "juliet@localhost"  # RFC6120 4.7.2
    assert re.fullmatch(r"[0-9a-f]{32}", attrs["id"])
    s2 = opened(server)
    assert stream_header_attrs(s2.buf)["id"] != attrs["id"]


def test_stream__host_normalised(server):
    s = server.raw()
    s.open_stream(to="LocalHost.")
    s.recv_until(r"<stream:features")
    assert stream_header_attrs(s.buf)["from"] == "localhost"


def test_stream__unknown_host(server):
    s = server.raw()
    s.open_stream(to="example.org")
    assert s.stream_error() == "host-unknown"
    # RFC6120 4.9.1.2: a header is sent before the error.
    assert b"<stream:stream" in s.buf


def test_stream__missing_to(server):
    s = server.raw()
    s.send("<stream:stream xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
    assert s.stream_error() == "host-unknown"


def test_stream__wrong_content_namespace(server):
    s = server.raw()
    s.open_stream(xmlns="jabber:server")
    assert s.stream_error() == "invalid-namespace"


def test_stream__wrong_stream_namespace(server):
    s = server.raw()
    s.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://example.com/streams' "
           "to='localhost' version='1.0'>")
    assert s.stream_error() == "invalid-namespace"


def test_stream__old_version(server):
    s = server.raw()
    s.send("<stream:stream xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>")
    assert s.stream_error() == "unsupported-version"


def test_stream__stanza_before_auth(server):
    s = opened(server)
    s.send("<message to='romeo@localhost'><body>hi</body></message>")
    assert s.stream_error() == "not-authorized"


def test_stream__unknown_top_level_element(server):
    s = opened(server)
    s.send("<foo xmlns='urn:example:foo'/>")
    assert s.stream_error() == "unsupported-stanza-type"


def test_stream__not_well_formed(server):
    s = opened(server)
    s.send("<message><body>hi</bdoy></message>")
    assert s.stream_error() == "not-well-formed"


def test_stream__garbage_before_header(server):
    s = server.raw()
    s.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert s.stream_error() == "not-well-formed"


def test_stream__undeclared_prefix(server):
    s = opened(server)
    s.send("<message><x:body>hi</x:body></message>")
    assert s.stream_error() in ("bad-namespace-prefix", "not-well-formed")


@pytest.mark.parametrize("xml", [
    "<!-- a comment -->",
    "<?pi target?>",
    "<message><body>&amp;&custom;</body></message>",
])
def test_stream__restricted_xml(server, xml):
    s = opened(server)
    s.send(xml)
    assert s.stream_error() in ("restricted-xml",) or \
        (xml.startswith("<message") and s.stream_error() == "not-well-formed")


def test_stream__dtd_before_header(server):
    s = server.raw()
    s.send("<?xml version='1.0'?><!DOCTYPE stream:stream [<!ELEMENT a ANY>]>"
           "<stream:stream xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
    assert s.stream_error() == "restricted-xml"


def test_stream__billion_laughs_rejected_with_bounded_memory(server):
    before = server.rss_kib()
    s = server.raw()
    s.send(BILLION_LAUGHS)
    assert s.stream_error() == "restricted-xml"
    # 10^9 "lol"s would be 3 GB; the DTD is refused before any expansion.
    assert server.rss_kib() - before < 16 * 1024


@pytest.mark.parametrize("chunked", [False, True])
def test_stream__10mb_stanza_rejected_with_bounded_memory(server, chunked):
    s = opened(server)
    before = server.rss_kib()
    body = b"<message><body>" + b"A" * (10 * 1024 * 1024) + b"</body></message>"
    if chunked:
        sent = s.send_until_closed(body, chunk=4096)
    else:
        sent = s.send_until_closed(body)
    assert s.stream_error() == "policy-violation"
    assert b"too big" in s.buf
    # The parser stops at max_stanza_size (64 KiB): neither the 10 MB nor a
    # large part of it is ever held in memory.
    grown = server.rss_kib() - before
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB after {sent} bytes"


def test_stream__huge_attribute_rejected(server):
    s = opened(server)
    s.send_until_closed(b"<message to='" + b"a" * (2 * 1024 * 1024))
    assert s.stream_error() == "policy-violation"


def test_stream__deep_nesting_rejected(server):
    s = opened(server)
    s.send("<message>" + "<a>" * 10000)
    assert s.stream_error() == "policy-violation"


@pytest.mark.parametrize("bad", [
    b"\xff\xfe",               # never valid in UTF-8
    b"\xc0\xaf",               # overlong '/'
    b"\xed\xa0\x80",           # UTF-16 surrogate
    b"\xe2\x82",               # truncated sequence followed by ASCII
])
def test_stream__invalid_utf8(server, bad):
    s = opened(server)
    s.send(b"<message><body>" + bad + b"x</body></message>")
    assert s.stream_error() == "not-well-formed"


def test_stream__non_utf8_encoding_declaration(server):
    s = server.raw()
    s.send("<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
    assert s.stream_error() in ("unsupported-encoding",)


def test_stream__xml_1_1_declaration(server):
    """RFC 6120 11.8: XMPP is XML 1.0; libxml2 would parse a 1.1 stream on."""
    s = server.raw()
    s.send("<?xml version='1.1'?><stream:stream xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
    assert s.stream_error() == "bad-format"


def test_stream__client_closes_stream(server):
    s = opened(server)
    s.send("</stream:stream>")
    data = s.read_to_close()
    assert data.rstrip().endswith(b"</stream:stream>")
    assert b"<stream:error>" not in data


def test_stream__handshake_timeout(server_factory):
    from xmpptest import free_port
    port = free_port()
    srv = server_factory(listen=f"  - port: {port}\n    ip: 127.0.0.1\n    module: c2s\n"
                                f"    handshake_timeout: 1s\n")
    s = srv.raw(port)
    s.open_stream()
    assert s.stream_error(timeout=10) == "connection-timeout"


def test_stream__max_connections(server_factory):
    from xmpptest import free_port
    port = free_port()
    srv = server_factory(listen=f"  - port: {port}\n    ip: 127.0.0.1\n    module: c2s\n"
                                f"    max_connections: 2\n")
    a, b = srv.raw(port), srv.raw(port)
    for s in (a, b):
        s.open_stream()
        s.recv_until(r"<stream:features")
    c = srv.raw(port)
    assert c.stream_error() == "resource-constraint"
    a.close()
    b.close()


def test_stream__split_at_every_byte(server):
    """The parser must not care how TCP splits the stream."""
    import time
    s = server.raw()
    header = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
              "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
    for ch in header.encode():
        s.send(bytes([ch]))
    s.recv_until(r"<stream:features")
    s.send("</stream:stream>")
    assert s.read_to_close().rstrip().endswith(b"</stream:stream>")


def test_stream__slixmpp_client_gets_stream_and_features(server):
    """A real client library opens a stream; with no SASL offered yet it
    cannot log in, but it must see a valid header and features."""
    import slixmpp
    from xmpptest import run_slixmpp

    seen = {}

    def make():
        c = slixmpp.ClientXMPP("juliet@localhost/balcony", "secret")
        c.add_event_handler("connected", lambda *_: seen.setdefault("connected", True))

        def on_features(features):
            seen["features"] = True
            c.disconnect()
        c.register_handler(slixmpp.xmlstream.handler.Callback(
            "features", slixmpp.xmlstream.matcher.MatchXPath(
                "{http://etherx.jabber.org/streams}features"), on_features))
        return c

    run_slixmpp(make, ("127.0.0.1", server.c2s_port), timeout=10,
                disable_starttls=True, force_starttls=False)
    assert seen.get("connected") and seen.get("features"), seen
    assert 'event="connection accepted"' in server.log_text()


def test_broken_reference_is_not_well_formed_at_once(server):
    # libxml2 would wait for a ';' that may never come; the client must get
    # its error now, not after the next stanza.
    s = server.raw()
    s.open_stream()
    s.recv_until(r"<stream:features")
    s.send("<message>&3-x</message>")
    assert s.stream_error(timeout=5) == "not-well-formed"

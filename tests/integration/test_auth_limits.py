"""auth_limits through the wire (ejabberd's mod_fail2ban, docs/admin.md):
failed authentications are counted per address and per account across
streams and workers; past `delay_after` they are answered later, past
`max_failures` the address is banned and its new streams are refused with
policy-violation.  Client SASL and component handshakes; dialback is in
test_s2s.py.  Other peer addresses come from 127.0.0.x on loopback."""
import re
import time

from helpers import users
from test_component import Raw
from xclient import XClient
from xmpptest import free_port

LIMITS = ("auth_failure_delay: 0s\n"
          "auth_limits:\n"
          "  max_failures: 6\n"
          "  delay_after: 3\n"
          "  delay: 200ms\n"
          "  max_delay: 400ms\n")


def sasl_stream(port, source=None):
    c = XClient(port, source=source)
    c.open_stream()
    c.starttls()
    c.open_stream()
    return c


def refused_text(c):
    """The stream error of a refused stream: (condition, text)."""
    cond = c.stream_error()
    m = re.search(rb"<text[^>]*>([^<]*)</text>", c.buf)
    return cond, (m.group(1).decode() if m else "")


def failure_lines(srv):
    return [l for l in srv.log_text().splitlines() if 'event="authentication failed"' in l]


def test_wrong_passwords_over_many_streams_ban_the_address(server_factory):
    srv = server_factory(extra_yaml=LIMITS)
    users(srv, "amy", password="right")
    users(srv, "bea", password="bea-pw")
    # One wrong password per stream, as a guesser spreading over streams does
    # (each stream stays under max_auth_failures).
    for i in range(5):
        c = sasl_stream(srv.c2s_port)
        assert c.plain("amy", f"guess{i}") == ("failure", "not-authorized")
        c.close()
    # The sixth reaches max_failures: answered, then the stream ends.
    c = sasl_stream(srv.c2s_port)
    assert c.plain("amy", "guess5") == ("failure", "not-authorized")
    cond, text = refused_text(c)
    assert cond == "policy-violation", c.buf
    assert "too many failed authentications from 127.0.0.1" in text, text
    # A new stream from the address is refused at its header, before TLS,
    # and so is the right password.
    c = XClient(srv.c2s_port)
    c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
    cond, text = refused_text(c)
    assert cond == "policy-violation" and "127.0.0.1" in text and "more seconds" in text, c.buf
    assert b"<stream:features" not in c.buf
    # Another address logs in to another account, and to the guessed one.
    c = sasl_stream(srv.c2s_port, source="127.0.0.2")
    assert c.plain("bea", "bea-pw")[0] == "success"
    c = sasl_stream(srv.c2s_port, source="127.0.0.2")
    assert c.scram("amy", "right", "SHA-256")[0] == "success"
    # xmppctl shows the ban and lifts it.
    r = srv.ctl_run("auth_bans")
    assert r.returncode == 0 and re.search(r"^127\.0\.0\.1 failures=6 banned_for=\d+s$",
                                           r.stdout, re.M), r.stdout + r.stderr
    assert srv.ctl_run("auth_unban", "127.0.0.1").returncode == 0
    c = sasl_stream(srv.c2s_port)
    assert c.scram("amy", "right", "SHA-256")[0] == "success"
    assert srv.ctl_run("auth_unban", "127.0.0.9").returncode == 1


def test_failures_past_delay_after_are_answered_later(server_factory):
    srv = server_factory(extra_yaml=LIMITS)
    users(srv, "cal", password="right")
    for i in range(5):
        c = sasl_stream(srv.c2s_port)
        t0 = time.monotonic()
        assert c.plain("cal", f"x{i}") == ("failure", "not-authorized")
        took = time.monotonic() - t0
        c.close()
        if i == 4:
            assert took >= 0.35, took  # delay, doubled once: 400 ms (max_delay)
    delays = [int(re.search(r"delay_ms=(\d+)", l).group(1)) for l in failure_lines(srv)]
    assert delays == [0, 0, 0, 200, 400], delays


def test_account_failures_slow_down_other_addresses_but_never_ban(server_factory):
    srv = server_factory(extra_yaml=LIMITS)
    users(srv, "dee", password="right")
    users(srv, "eve", password="eve-pw")
    # Four addresses guess dee's password once each: no address is near a
    # limit, but the account is past delay_after.
    for i in range(4):
        c = sasl_stream(srv.c2s_port, source=f"127.0.0.{10 + i}")
        assert c.plain("dee", f"g{i}") == ("failure", "not-authorized")
        c.close()
    line = failure_lines(srv)[-1]
    assert "addr_failures=1 account_failures=4 delay_ms=200" in line, line
    # Another account from a fresh address: no delay.
    c = sasl_stream(srv.c2s_port, source="127.0.0.20")
    assert c.plain("eve", "nope") == ("failure", "not-authorized")
    assert "account_failures=1 delay_ms=0" in failure_lines(srv)[-1]
    # The account itself is never banned; its user logs in, which clears it.
    c = sasl_stream(srv.c2s_port, source="127.0.0.21")
    assert c.plain("dee", "right")[0] == "success"
    out = srv.ctl_run("auth_bans").stdout
    assert "dee@localhost" not in out and "eve@localhost (account) failures=1" in out, out


def test_component_wrong_secrets_hit_the_limit(server_factory):
    cport = free_port()
    srv = server_factory(extra_yaml=(
        f"  - port: {cport}\n"
        f"    ip: 127.0.0.1\n"
        f"    module: component\n"
        f"    hosts:\n"
        f"      bot.localhost: {{password: s3cret}}\n" + LIMITS))
    for i in range(6):
        r = Raw(cport, "bot.localhost")
        sid, _ = r.header_id()
        r.handshake(sid, f"wrong{i}")
        assert "not-authorized" in r.error()
        r.close()
    lines = [l for l in srv.log_text().splitlines() if "component handshake failed" in l]
    assert [re.search(r"delay_ms=(\d+)", l).group(1) for l in lines] == \
        ["0", "0", "0", "200", "400", "400"], lines
    # Banned now: even the right secret is not asked for.
    r = Raw(cport, "bot.localhost")
    err = r.error()
    assert "policy-violation" in err and "too many failed authentications from 127.0.0.1" in err
    r.close()
    # Another address with the right secret connects.
    r = Raw(cport, "bot.localhost", source="127.0.0.2")
    sid, _ = r.header_id()
    r.handshake(sid, "s3cret")
    r.until(r"<handshake\s*/>")
    r.close()


def test_dialback_keys_called_invalid_hit_the_limit(server_factory):
    """A server at 127.0.0.3 claims a.test and sends b.test dialback keys it
    cannot know; b.test asks a.test (the authoritative server), which calls
    them invalid.  Each counts for 127.0.0.3: answers slow down, then the
    address is banned; a.test's own streams (127.0.0.1) are not."""
    from test_s2s import A_IP, B_IP, incoming_over_tls, listen_yaml, read_until
    a_c2s, a_s2s = free_port(addr=A_IP), free_port(addr=A_IP)
    b_c2s, b_s2s = free_port(addr=B_IP), free_port(addr=B_IP)
    server_factory(hosts=("a.test",), listen=listen_yaml(A_IP, a_c2s, a_s2s),
                   extra_yaml=f"s2s_hosts:\n  b.test: \"{B_IP}:{b_s2s}\"\n")
    b = server_factory(hosts=("b.test",), listen=listen_yaml(B_IP, b_c2s, b_s2s),
                       extra_yaml=f"s2s_hosts:\n  a.test: \"{A_IP}:{a_s2s}\"\n" + LIMITS)
    header = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              b"xmlns:db='jabber:server:dialback' "
              b"xmlns:stream='http://etherx.jabber.org/streams' "
              b"from='a.test' to='b.test' version='1.0'>")
    import socket
    raw = socket.create_connection((B_IP, b_s2s), timeout=10, source_address=("127.0.0.3", 0))
    tls, _ = incoming_over_tls(raw, header, "b.test")
    buf = b""
    for i in range(6):
        tls.sendall(f"<db:result from='a.test' to='b.test'>{i:064x}</db:result>".encode())
        buf = read_until(tls, rb"type=['\"]invalid['\"]", buf)
        buf = buf[re.search(rb"type=['\"]invalid['\"]", buf).end():]
    # The sixth ban: the stream ends after its answer.
    buf = read_until(tls, rb"</stream:error>", buf)
    assert b"policy-violation" in buf and b"too many failed authentications from 127.0.0.3" in buf
    tls.close()
    lines = [l for l in b.log_text().splitlines() if "dialback key refused" in l]
    assert [re.search(r"delay_ms=(\d+)", l).group(1) for l in lines] == \
        ["0", "0", "0", "200", "400", "400"], lines
    # A new stream from 127.0.0.3 is refused at its header.
    raw = socket.create_connection((B_IP, b_s2s), timeout=10, source_address=("127.0.0.3", 0))
    raw.sendall(header)
    buf = read_until(raw, rb"</stream:error>")
    assert b"policy-violation" in buf and b"<stream:features" not in buf, buf
    raw.close()
    # a.test itself (127.0.0.1) still federates with b.test: a ping crosses.
    from helpers import online
    b.c2s_port, b.ip, b.domain = b_c2s, B_IP, "b.test"
    users(b, "bob")
    bob, _ = online(b, "bob", "r")
    bob.send("<iq to='a.test' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    got = bob.recv_until(r"<iq[^>]*id=['\"]p1['\"][^>]*>|<iq[^>]*id=['\"]p1['\"][^>]*/>")
    assert b"type='result'" in got.group(0).replace(b'"', b"'"), got.group(0)
    assert "127.0.0.1" not in b.ctl_run("auth_bans").stdout

"""In-band registration (XEP-0077): off unless mod_register is listed,
behind access rules and a per-address rate limit, password change and
account removal after login; classic fields and data forms."""
import re

import slixmpp

from helpers import iq
from xclient import XClient, login
from xmpptest import run_slixmpp

REG = "urn:ietf:params:xml:ns:xmpp-stanzas"
ON = ("auth_failure_delay: 50ms\n"
      "modules:\n"
      "  mod_register:\n"
      "    registration_timeout: 0\n")


def tls_stream(port):
    c = XClient(port)
    c.open_stream()
    c.starttls()
    feats = c.open_stream()
    return c, feats


def reg_query(user, pw):
    return (f"<query xmlns='jabber:iq:register'><username>{user}</username>"
            f"<password>{pw}</password></query>")


def test_registration_off_by_default(server):
    c, feats = tls_stream(server.c2s_port)
    assert "iq-register" not in feats
    r = iq(c, "r1", "<query xmlns='jabber:iq:register'/>", "get")
    assert "service-unavailable" in r, r


def test_register_then_login(server_factory):
    srv = server_factory(extra_yaml=ON)
    c, feats = tls_stream(srv.c2s_port)
    assert "http://jabber.org/features/iq-register" in feats, feats
    form = iq(c, "f1", "<query xmlns='jabber:iq:register'/>", "get")
    assert "<username" in form and "<password" in form and "jabber:x:data" in form, form
    r = iq(c, "r1", reg_query("newbie", "a-good-password"))
    assert "type='result'" in r.replace('"', "'"), r
    # One registration per stream.
    r = iq(c, "r2", reg_query("second", "another-password"))
    assert "not-acceptable" in r, r
    # The account works, through SCRAM (credentials were derived).
    assert c.scram("newbie", "a-good-password", "SHA-256")[0] == "success"
    assert srv.ctl_run("check_account", "newbie", "localhost").returncode == 0


def plain_listener(srv_port):
    return (f"  - port: {srv_port}\n    ip: 127.0.0.1\n    module: c2s\n"
            f"    starttls_required: false\n")


def test_no_registration_before_tls_where_passwords_would_travel_in_clear(server_factory):
    """Issue 12 #5: on a listener without required STARTTLS, registration is
    treated like PLAIN: neither offered nor accepted before TLS (a password
    would travel in clear) unless the host allows unencrypted passwords;
    after STARTTLS it works, and a password change on a session without TLS
    is refused the same way."""
    from xmpptest import free_port
    port = free_port()
    srv = server_factory(extra_yaml=ON, listen=plain_listener(port))
    c = XClient(port)
    feats = c.open_stream()
    assert "iq-register" not in feats, feats
    for n, (typ, q) in enumerate((("get", "<query xmlns='jabber:iq:register'/>"),
                                   ("set", reg_query("clear", "a-good-password")))):
        r = iq(c, f"c{n}", q, typ)
        assert "policy-violation" in r and "type='error'" in r.replace('"', "'"), r
    assert srv.ctl_run("check_account", "clear", "localhost").returncode != 0
    c.starttls()
    feats = c.open_stream()
    assert "iq-register" in feats, feats
    r = iq(c, "t1", reg_query("secured", "a-good-password"))
    assert "type='result'" in r.replace('"', "'"), r
    # A host that allows passwords in clear offers and accepts it before
    # TLS; a session logged in without TLS may not change its password
    # unless the host allows that too.
    port2 = free_port()
    srv2 = server_factory(extra_yaml=ON, listen=plain_listener(port2))
    srv2.ctl_run("register", "old", "localhost", "a-good-password")
    c2 = XClient(port2)
    c2.open_stream()
    assert c2.scram("old", "a-good-password", "SHA-256")[0] == "success"  # no password sent
    c2.open_stream()
    c2.bind("r")
    r = iq(c2, "p1", reg_query("old", "another-good-password"))
    assert "policy-violation" in r, r
    c2b = XClient(port2)
    c2b.open_stream()
    assert c2b.scram("old", "a-good-password", "SHA-256")[0] == "success"  # unchanged
    port3 = free_port()
    srv3 = server_factory(extra_yaml=ON + "allow_unencrypted_plain_auth: true\n",
                          listen=plain_listener(port3))
    c3 = XClient(port3)
    feats = c3.open_stream()
    assert "iq-register" in feats, feats
    r = iq(c3, "u1", reg_query("clearok", "a-good-password"))
    assert "type='result'" in r.replace('"', "'"), r
    assert c3.plain("clearok", "a-good-password")[0] == "success"
    c3.open_stream()
    c3.bind("r")
    r = iq(c3, "u2", reg_query("clearok", "another-good-password"))
    assert "type='result'" in r.replace('"', "'"), r
    c3b = XClient(port3)
    c3b.open_stream()
    assert c3b.plain("clearok", "another-good-password")[0] == "success"  # changed
    del srv2, srv3


def test_register_with_data_form_and_conflict(server_factory):
    srv = server_factory(extra_yaml=ON)
    srv.ctl_run("register", "taken", "localhost", "pw")
    c, _ = tls_stream(srv.c2s_port)
    form = ("<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE'><value>jabber:iq:register</value></field>"
            "<field var='username'><value>taken</value></field>"
            "<field var='password'><value>pw2</value></field></x></query>")
    r = iq(c, "r1", form)
    assert "<conflict" in r, r
    c2, _ = tls_stream(srv.c2s_port)
    r = iq(c2, "r2", form.replace("taken", "formuser"))
    assert "type='result'" in r.replace('"', "'"), r
    assert srv.ctl_run("check_password", "formuser", "localhost", "pw2").returncode == 0


def test_register_denied_by_access_rule(server_factory):
    srv = server_factory(extra_yaml=(
        "access_rules:\n  register:\n    - deny: all\n"
        "modules:\n  mod_register:\n    access: register\n    registration_timeout: 0\n"))
    c, _ = tls_stream(srv.c2s_port)
    r = iq(c, "r1", reg_query("x1", "pw-pw-pw"))
    assert "<forbidden" in r, r
    assert srv.ctl_run("check_account", "x1", "localhost").returncode == 1


def test_register_rate_limited_per_address(server_factory):
    srv = server_factory(extra_yaml="modules:\n  mod_register:\n    registration_timeout: 600s\n")
    c, _ = tls_stream(srv.c2s_port)
    assert "result" in iq(c, "r1", reg_query("first1", "pw-first"))
    c2, _ = tls_stream(srv.c2s_port)
    r = iq(c2, "r2", reg_query("second2", "pw-second"))
    assert "resource-constraint" in r, r


def test_weak_password_refused(server_factory):
    srv = server_factory(extra_yaml=ON + "    password_strength: 40\n")
    c, _ = tls_stream(srv.c2s_port)
    assert "not-acceptable" in iq(c, "r1", reg_query("weak", "abc"))
    assert "result" in iq(c, "r2", reg_query("strong", "Tr0ub4dor&amp;3-horse-battery"))


def test_password_change_and_cancel_after_login(server_factory):
    srv = server_factory(extra_yaml=ON)
    srv.ctl_run("register", "pat", "localhost", "old-pass")
    c, jid = login(srv.c2s_port, "pat", "old-pass")
    other, _ = login(srv.c2s_port, "pat", "old-pass", resource="other")
    r = iq(c, "g1", "<query xmlns='jabber:iq:register'/>", "get")
    assert "<registered" in r and "pat" in r, r
    r = iq(c, "p1", reg_query("pat", "new-pass"))
    assert "result" in r, r
    assert srv.ctl_run("check_password", "pat", "localhost", "new-pass").returncode == 0
    r = iq(c, "p2", reg_query("someoneelse", "x"))
    assert "not-allowed" in r, r
    r = iq(c, "rm1", "<query xmlns='jabber:iq:register'><remove/></query>")
    assert "result" in r, r
    assert c.stream_error() == "not-authorized"
    assert other.stream_error() == "not-authorized"
    assert srv.ctl_run("check_account", "pat", "localhost").returncode == 1


def test_slixmpp_register_plugin(server_factory):
    srv = server_factory(extra_yaml=ON)
    done = {"ok": False}

    def make():
        c = slixmpp.ClientXMPP("slix@localhost", "slix-password")
        c.register_plugin("xep_0077")
        c["xep_0077"].force_registration = True
        # slixmpp 1.8 queues every stanza until the session starts, the
        # registration IQ included; this switch lets it through.
        c._always_send_everything = True
        import ssl, os
        c.ssl_context = ssl.create_default_context(
            cafile=os.path.join(srv.data_dir, "certs", "localhost.pem"))

        async def on_register(_):
            resp = c.Iq()
            resp["type"] = "set"
            resp["register"]["username"] = "slix"
            resp["register"]["password"] = "slix-password"
            await resp.send()

        def on_start(_):
            done["ok"] = True
            c.disconnect()

        c.add_event_handler("register", on_register)
        c.add_event_handler("session_start", on_start)
        return c

    run_slixmpp(make, ("127.0.0.1", srv.c2s_port))
    assert done["ok"], srv.log_text()
    assert srv.ctl_run("check_account", "slix", "localhost").returncode == 0

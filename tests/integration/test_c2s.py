"""Client connections through the wire: STARTTLS and direct TLS, SASL
(PLAIN, SCRAM-SHA-1/256/512 and -PLUS with every channel binding), failures
and their limits, resource binding and conflicts, with slixmpp and with the
hand-driven client of xclient.py."""
import os
import re
import ssl
import time

import pytest
import slixmpp
from OpenSSL import SSL

from helpers import users
from xclient import NS_TLS, XClient, login
from xmpptest import free_port, run_slixmpp

FAST = "auth_failure_delay: 50ms\n"


def c2s_listen(port, extra=""):
    return f"  - port: {port}\n    ip: 127.0.0.1\n    module: c2s\n{extra}"


def cert_path(srv, host="localhost"):
    return os.path.join(srv.data_dir, "certs", f"{host}.pem")


def slix_login(srv, jid, password, mech=None, tls12=False, use_ssl=False, port=None,
               resource=None, stop_on_failure=True):
    """Logs in with slixmpp, verifying the server certificate against the
    self-signed one the server made; returns (session_started, bound_jid, client).
    stop_on_failure=False lets slixmpp walk down its mechanism list after a
    SASL failure, as it does by default."""
    state = {"ok": False, "jid": None, "failed": False}

    def make():
        full = jid + (f"/{resource}" if resource else "")
        c = slixmpp.ClientXMPP(full, password, sasl_mech=mech)
        ctx = ssl.create_default_context(cafile=cert_path(srv))
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        c.ssl_context = ctx

        def on_start(_):
            state["ok"] = True
            state["jid"] = str(c.boundjid)
            c.disconnect()

        def on_fail(_):
            state["failed"] = True
            if stop_on_failure:
                c.disconnect()

        c.add_event_handler("session_start", on_start)
        c.add_event_handler("failed_auth", on_fail)
        return c

    client = run_slixmpp(make, ("127.0.0.1", port or srv.c2s_port), use_ssl=use_ssl)
    return state["ok"], state["jid"], client


# ---- features and STARTTLS --------------------------------------------------------------

def test_features_before_tls_offer_required_starttls_only(server):
    c = XClient(server.c2s_port)
    feats = c.open_stream()
    assert re.search(r"<starttls xmlns=['\"]urn:ietf:params:xml:ns:xmpp-tls['\"]>\s*<required\s*/>",
                     feats), feats
    assert "mechanisms" not in feats, feats
    c.starttls()
    feats = c.open_stream()
    assert "starttls" not in feats
    mechs = re.findall(r"<mechanism>([^<]+)</mechanism>", feats)
    assert mechs[:3] == ["SCRAM-SHA-512-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"], mechs
    assert {"SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"} <= set(mechs), mechs
    # XEP-0440: the channel-binding types are advertised.
    assert "urn:xmpp:sasl-cb:0" in feats and "tls-exporter" in feats, feats
    assert c.tls_version() == "TLSv1.3"
    c.close()


def test_auth_before_starttls_is_refused(server):
    c = XClient(server.c2s_port)
    c.open_stream()
    c.auth("PLAIN", b"\0a\0b")
    kind, cond = c.sasl_answer()
    assert (kind, cond) == ("failure", "encryption-required")
    assert c.stream_error() == "policy-violation"


def test_stanza_after_starttls_before_auth_is_not_authorized(server):
    c = XClient(server.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.send("<message to='x@localhost'><body>hi</body></message>")
    assert c.stream_error() == "not-authorized"


@pytest.mark.parametrize("split", [False, True])
def test_whitespace_after_starttls_belongs_to_the_old_stream(server, split):
    """Issue 12 #9: go-sendxmpp writes `<starttls/>\n` in one write; the
    newline (or whitespace arriving in a read of its own before the
    ClientHello) is XML whitespace of the old stream, not TLS."""
    c = XClient(server.c2s_port)
    c.open_stream()
    if split:
        c.send(f"<starttls xmlns='{NS_TLS}'/>")
        c.recv_until(r"<proceed xmlns=['\"]" + re.escape(NS_TLS) + r"['\"]\s*/>")
        c.send(" \r\n\t")
    else:
        c.send(f"<starttls xmlns='{NS_TLS}'/>\n ")
        c.recv_until(r"<proceed xmlns=['\"]" + re.escape(NS_TLS) + r"['\"]\s*/>")
    c._handshake()
    features = c.open_stream()
    assert "SCRAM-SHA-256" in features, features


def test_self_signed_certificate_is_created_0600_and_reused(server_factory):
    srv = server_factory()
    path = cert_path(srv)
    assert os.path.exists(path)
    assert (os.stat(path).st_mode & 0o777) == 0o600
    assert "self-signed certificate created" in srv.log_text()
    before = open(path, "rb").read()
    srv.stop()
    os.remove(srv.log_path)  # so that the readiness wait sees the new start
    srv.start()
    assert open(path, "rb").read() == before
    assert "using self-signed certificate" in srv.log_text()


# ---- SASL mechanisms ---------------------------------------------------------------------

NO_PLUS = "disable_sasl_mechanisms: [SCRAM-SHA-1-PLUS, SCRAM-SHA-256-PLUS, SCRAM-SHA-512-PLUS]\n"


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_slixmpp_login_each_mechanism(server_factory, mech):
    # slixmpp can bind channels and says so with the 'y' flag on plain SCRAM;
    # RFC 5802 makes the server refuse 'y' when it offered -PLUS, so the
    # -PLUS mechanisms are disabled here (they have their own tests).
    srv = server_factory(extra_yaml=NO_PLUS)
    users(srv, "alice", password="secret pass")
    ok, jid, _ = slix_login(srv, "alice@localhost", "secret pass", mech=mech)
    assert ok, srv.log_text()
    assert jid.startswith("alice@localhost/")
    assert f"mech={mech} " in srv.log_text()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS"])
def test_slixmpp_login_plus_tls_unique_over_tls12(server, mech):
    # slixmpp binds with tls-unique, which exists only in TLS 1.2.
    users(server, "bob", password="pw-bob")
    ok, jid, _ = slix_login(server, "bob@localhost", "pw-bob", mech=mech, tls12=True)
    assert ok, server.log_text()
    assert f"mech={mech} cb=tls-unique" in server.log_text()


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256", "SHA-512"])
@pytest.mark.parametrize("cb", ["tls-exporter", "tls-server-end-point"])
def test_scram_plus_channel_bindings(server, hash_name, cb):
    users(server, "carol", password="pw-carol")
    c, jid = login(server.c2s_port, "carol", "pw-carol", mech=f"SCRAM-{hash_name}-PLUS", cb=cb)
    assert jid.startswith("carol@localhost/")
    assert f"cb={cb}" in server.log_text()
    c.close()


def test_scram_plus_wrong_binding_data_fails(server):
    users(server, "dave", password="pw")
    c = XClient(server.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    real = c.cb_data
    c.cb_data = lambda kind: bytes(len(real(kind)))
    kind, cond = c.scram("dave", "pw", "SHA-256", cb="tls-exporter")
    assert (kind, cond) == ("failure", "not-authorized")


def test_scram_downgrade_flag_y_refused_when_plus_offered(server):
    users(server, "erin", password="pw")
    c = XClient(server.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    kind, cond = c.scram("erin", "pw", "SHA-256", gs2_flag="y")
    assert (kind, cond) == ("failure", "not-authorized")


def test_slixmpp_tls_unique_only_stays_on_scram_over_tls13(server):
    """Issue: slixmpp before 1.8.5 knows only tls-unique and uses it on TLS
    1.3 too (then 'y' on plain SCRAM, then PLAIN).  Its first choice,
    SCRAM-*-PLUS with tls-unique, is accepted on TLS 1.3 (legacy binding,
    never advertised there), so it logs in with channel binding and no
    failure on the way."""
    users(server, "tess", password="pw-tess")
    ok, jid, _ = slix_login(server, "tess@localhost", "pw-tess", stop_on_failure=False)
    assert ok and jid.startswith("tess@localhost/"), server.log_text()
    log = server.log_text()
    assert re.search(r'"tls established".* version=TLSv1\.3', log), log
    assert "authentication failed" not in log, log
    assert re.search(r"authenticated.*mech=SCRAM-SHA-\d+-PLUS cb=tls-unique", log), log


def test_tls13_tls_unique_accepted_but_not_advertised(server):
    users(server, "uma", password="pw")
    c = XClient(server.c2s_port)
    c.open_stream()
    c.starttls()
    feats = c.open_stream()
    assert c.tls_version() == "TLSv1.3"
    cbs = re.findall(r"<channel-binding type=['\"]([^'\"]+)['\"]", feats)
    assert cbs == ["tls-exporter", "tls-server-end-point"], feats  # XEP-0440: no tls-unique
    real = c.cb_data
    c.cb_data = lambda kind: bytes(len(real(kind)))
    assert c.scram("uma", "pw", "SHA-256", cb="tls-unique") == ("failure", "not-authorized")
    c.cb_data = real
    assert c.scram("uma", "pw", "SHA-256", cb="tls-unique")[0] == "success"
    assert "mech=SCRAM-SHA-256-PLUS cb=tls-unique" in server.log_text()


def test_tls13_tls_unique_can_be_turned_off(server_factory):
    srv = server_factory(extra_yaml="sasl_tls13_tls_unique: false\n")
    users(srv, "val", password="pw")
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    assert c.scram("val", "pw", "SHA-256", cb="tls-unique") == ("failure", "not-authorized")
    assert c.scram("val", "pw", "SHA-256", cb="tls-exporter")[0] == "success"


@pytest.mark.parametrize("tls12", [False, True])
def test_scram_flag_y_still_refused_after_a_tls_unique_attempt(server, tls12):
    """The 'y' downgrade check does not depend on what the stream tried
    before: a man in the middle could send that attempt itself."""
    users(server, "wes", password="pw")
    c = XClient(server.c2s_port, tls_max=SSL.TLS1_2_VERSION if tls12 else None)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.auth("SCRAM-SHA-256-PLUS", b"p=tls-bogus,,n=wes,r=abcdefghijkl")
    assert c.sasl_answer() == ("failure", "not-authorized")
    assert c.scram("wes", "pw", "SHA-256", gs2_flag="y") == ("failure", "not-authorized")


def test_tls12_offers_tls_unique(server):
    c = XClient(server.c2s_port, tls_max=SSL.TLS1_2_VERSION)
    c.open_stream()
    c.starttls()
    feats = c.open_stream()
    assert c.tls_version() == "TLSv1.2"
    assert "tls-unique" in feats and "tls-server-end-point" in feats, feats
    users(server, "fay", password="pw")
    kind, _ = c.scram("fay", "pw", "SHA-256", cb="tls-unique")
    assert kind == "success"


def test_authzid_other_user_is_invalid(server):
    users(server, "gus", password="pw")
    c = XClient(server.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    assert c.plain("gus", "pw", authzid="other@localhost") == ("failure", "invalid-authzid")
    assert c.plain("gus", "pw", authzid="gus@localhost")[0] == "success"


# ---- failures --------------------------------------------------------------------------

def test_bad_password_then_success_on_retry(server_factory):
    srv = server_factory(extra_yaml=FAST)
    users(srv, "hal", password="right")
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    assert c.scram("hal", "wrong", "SHA-256") == ("failure", "not-authorized")
    assert c.plain("hal", "wrong") == ("failure", "not-authorized")
    assert c.scram("hal", "right", "SHA-256")[0] == "success"


def test_slixmpp_bad_password_then_success(server_factory):
    srv = server_factory(extra_yaml=FAST + NO_PLUS)
    users(srv, "hank", password="right")
    ok, _, client = slix_login(srv, "hank@localhost", "wrong", mech="SCRAM-SHA-256")
    assert not ok
    assert "cond=not-authorized" in srv.log_text()
    ok, jid, _ = slix_login(srv, "hank@localhost", "right", mech="SCRAM-SHA-256")
    assert ok and jid.startswith("hank@localhost/"), srv.log_text()


def test_unknown_user_fails_like_a_wrong_password(server_factory):
    srv = server_factory(extra_yaml=FAST)
    users(srv, "ivy", password="pw")
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    # The exchange reaches the proof for a user that does not exist.
    assert c.scram("nobody", "pw", "SHA-256") == ("failure", "not-authorized")


def test_unknown_user_salt_is_stable_across_restarts(server_factory):
    """The fake salt of an unknown user comes from the node secret in
    data_dir (its "scram fake salt" key, HKDF-Expand-SHA256), so a probe
    sees the same salt before and after a restart, as it would for an
    account that exists, and a different one for another name."""
    import base64
    import hashlib
    import hmac
    srv = server_factory(extra_yaml=FAST)

    def salt_of(user):
        c = XClient(srv.c2s_port)
        c.open_stream()
        c.starttls()
        c.open_stream()
        c.auth("SCRAM-SHA-256", f"n,,n={user},r=0123456789abcdef".encode())
        kind, val = c.sasl_answer()
        assert kind == "challenge", (kind, val)
        c.close()
        attrs = dict(kv.split("=", 1) for kv in val.decode().split(","))
        return base64.b64decode(attrs["s"])

    before = salt_of("nobody")
    assert len(before) == 16 and salt_of("nobody") == before
    assert salt_of("somebody") != before
    with open(os.path.join(srv.data_dir, "secret"), "rb") as f:
        secret = f.read()
    k = hmac.new(secret, b"xmppd node key: scram fake salt\x01", hashlib.sha256).digest()
    assert before == hmac.new(k, b"salt:localhost\0SHA-256\0nobody", hashlib.sha256).digest()[:16]
    srv.stop()
    srv.restart()
    assert salt_of("nobody") == before

def test_too_many_failures_close_the_stream(server_factory):
    srv = server_factory(extra_yaml=FAST + "max_auth_failures: 2\n")
    users(srv, "jay", password="pw")
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    assert c.plain("jay", "x") == ("failure", "not-authorized")
    assert c.plain("jay", "y") == ("failure", "not-authorized")
    assert c.stream_error() == "policy-violation"


def test_failure_is_delayed(server_factory):
    srv = server_factory(extra_yaml="auth_failure_delay: 400ms\n")
    users(srv, "kim", password="pw")
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    t0 = time.monotonic()
    assert c.plain("kim", "bad") == ("failure", "not-authorized")
    assert time.monotonic() - t0 >= 0.35


def test_abort_and_malformed(server_factory):
    srv = server_factory(extra_yaml=FAST)
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.auth("SCRAM-SHA-256")  # no initial response: empty challenge first
    assert c.sasl_answer() == ("challenge", b"")
    c.send(f"<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    assert c.sasl_answer() == ("failure", "aborted")
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!notbase64</auth>")
    assert c.sasl_answer() == ("failure", "incorrect-encoding")
    c.auth("DIGEST-MD5", b"")
    assert c.sasl_answer() == ("failure", "invalid-mechanism")


# ---- direct TLS -----------------------------------------------------------------------

def test_direct_tls_slixmpp_and_raw(server_factory):
    tls_port = free_port()
    port = free_port()
    srv = server_factory(listen=c2s_listen(port) + c2s_listen(tls_port, "    tls: true\n"))
    srv.c2s_port = port
    users(srv, "lee", password="pw")
    ok, jid, _ = slix_login(srv, "lee@localhost", "pw", use_ssl=True, port=tls_port, tls12=True)
    assert ok, srv.log_text()
    c = XClient(tls_port, direct_tls=True, cafile=cert_path(srv))
    feats = c.open_stream()
    assert "starttls" not in feats and "SCRAM-SHA-256-PLUS" in feats, feats
    assert "tls=direct" in srv.log_text()


def test_garbage_on_direct_tls_port_closes_quietly(server_factory):
    tls_port = free_port()
    srv = server_factory(listen=c2s_listen(tls_port, "    tls: true\n"))
    from xmpptest import RawStream
    s = RawStream("127.0.0.1", tls_port)
    s.send(b"<?xml version='1.0'?><stream:stream to='localhost'>")
    s.read_to_close()
    assert "tls failure" in srv.log_text()


# ---- binding ---------------------------------------------------------------------------

def test_connected_users_with_nobody_connected(server):
    # An empty list: no output, and the server (under UBSan) lives on.
    r = server.ctl_run("connected_users")
    assert r.returncode == 0 and r.stdout.strip() == ""
    assert server.ctl_run("connected_users_number").stdout.strip() == "0"
    assert server.proc.poll() is None


def test_bind_server_generated_and_chosen(server):
    users(server, "max", password="pw")
    c, jid = login(server.c2s_port, "max", "pw")
    assert re.fullmatch(r"max@localhost/xmppd-[0-9a-f]{16}", jid), jid
    c2, jid2 = login(server.c2s_port, "max", "pw", resource="laptop")
    assert jid2 == "max@localhost/laptop"
    r = server.ctl_run("connected_users")
    assert r.returncode == 0
    assert sorted(r.stdout.split()) == sorted([jid, jid2])
    assert server.ctl_run("connected_users_number").stdout.strip() == "2"
    c.close()
    c2.close()


def test_stanza_before_bind_is_not_authorized(server):
    users(server, "ned", password="pw")
    c = XClient(server.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    assert c.plain("ned", "pw")[0] == "success"
    c.open_stream()
    c.send("<message to='x@localhost'><body>hi</body></message>")
    assert c.stream_error() == "not-authorized"


def test_resource_conflict_replace(server):
    users(server, "oli", password="pw")
    old, _ = login(server.c2s_port, "oli", "pw", resource="phone")
    new, jid = login(server.c2s_port, "oli", "pw", resource="phone")
    assert jid == "oli@localhost/phone"
    assert old.stream_error() == "conflict"
    assert server.ctl_run("connected_users").stdout.split() == ["oli@localhost/phone"]
    new.close()


def test_resource_conflict_refuse(server_factory):
    srv = server_factory(extra_yaml="resource_conflict: refuse\n")
    users(srv, "pam", password="pw")
    old, _ = login(srv.c2s_port, "pam", "pw", resource="phone")
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    assert c.plain("pam", "pw")[0] == "success"
    c.open_stream()
    text, jid = c.bind("phone")
    assert jid is None and "type='error'" in text.replace('"', "'") and "<conflict" in text, text
    # The old session is untouched.
    old.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    old.recv_until(r"<iq[^>]*id=['\"]p1['\"][^>]*type=['\"]result['\"]|"
                   r"<iq[^>]*type=['\"]result['\"][^>]*id=['\"]p1['\"]")


def test_resource_conflict_rename(server_factory):
    srv = server_factory(extra_yaml="resource_conflict: rename\n")
    users(srv, "quin", password="pw")
    a, jid_a = login(srv.c2s_port, "quin", "pw", resource="phone")
    b, jid_b = login(srv.c2s_port, "quin", "pw", resource="phone")
    assert jid_a == "quin@localhost/phone"
    assert jid_b != jid_a and jid_b.startswith("quin@localhost/")


def test_spoofed_from_is_invalid_from(server):
    users(server, "ron", password="pw")
    c, jid = login(server.c2s_port, "ron", "pw")
    c.send("<message from='someone@localhost/x' to='ron@localhost'><body>x</body></message>")
    assert c.stream_error() == "invalid-from"


def test_kick_session(server):
    users(server, "sue", password="pw")
    c, jid = login(server.c2s_port, "sue", "pw", resource="r1")
    r = server.ctl_run("kick_session", "sue", "localhost", "r1", "bye now")
    assert r.returncode == 0, r.stdout + r.stderr
    assert c.stream_error() == "policy-violation"
    assert b"bye now" in c.buf
    r = server.ctl_run("kick_session", "sue", "localhost", "r1")
    assert r.returncode == 1 and "not connected" in r.stdout + r.stderr


def test_anonymous_host(server_factory):
    srv = server_factory(extra_yaml="auth_method: anonymous\n")
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    feats = c.open_stream()
    sasl1 = re.search(r"<mechanisms [^>]*>(.*?)</mechanisms>", feats).group(1)
    assert re.findall(r"<mechanism>([^<]+)</mechanism>", sasl1) == ["ANONYMOUS"], feats
    c.auth("ANONYMOUS", b"")
    assert c.sasl_answer()[0] == "success"
    c.open_stream()
    text, jid = c.bind()
    assert re.fullmatch(r"[0-9a-f]{24}@localhost/.+", jid), jid


def test_idle_timeout_and_whitespace_keepalive(server_factory):
    port = free_port()
    srv = server_factory(listen=c2s_listen(port, "    idle_timeout: 1500ms\n"))
    srv.c2s_port = port
    users(srv, "ida", password="pw")
    live, _ = login(port, "ida", "pw", resource="live")
    quiet, _ = login(port, "ida", "pw", resource="quiet")
    # Whitespace keepalives (RFC 6120 4.6.1) count as traffic.
    for _ in range(6):
        time.sleep(0.5)  # time itself is under test: idle_timeout
        live.send(" ")
    assert quiet.stream_error() == "connection-timeout"
    assert srv.ctl_run("connected_users").stdout.split() == ["ida@localhost/live"]
    live.close()

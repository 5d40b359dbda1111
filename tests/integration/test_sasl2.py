"""SASL2 (XEP-0388), SSDP (XEP-0474), Bind2 (XEP-0386) and FAST (XEP-0484)
through the wire: raw XML over STARTTLS with xclient.XClient (pyOpenSSL, so
that every channel binding can be computed), SCRAM and HT written out here."""
import base64
import hashlib
import hmac
import os
import re
import time
import uuid

from OpenSSL import SSL

from helpers import users
from test_csi import csi_info
from xclient import XClient, HASHES

NS2 = "urn:xmpp:sasl:2"
UA = "d4565fa7-4d72-4749-b3d3-740edbf87770"
UA2 = "0f9e1b2a-3c4d-4e5f-8a7b-6c5d4e3f2a1b"


def stream(port, **kw):
    c = XClient(port, **kw)
    c.open_stream()
    c.starttls()
    c.features = c.open_stream()
    return c


def b64(b):
    return base64.b64encode(b).decode()


def authenticate(c, mech, initial=None, ua=UA, extra=""):
    ir = f"<initial-response>{b64(initial)}</initial-response>" if initial is not None else ""
    uae = (f"<user-agent id='{ua}'><software>pytest</software><device>box</device></user-agent>"
           if ua is not None else "")
    c.send(f"<authenticate xmlns='{NS2}' mechanism='{mech}'>{ir}{uae}{extra}</authenticate>")


def answer(c):
    """(kind, body text) of the next challenge/success/failure."""
    m = c.recv_until(r"<(challenge|success|failure) xmlns=['\"]" + NS2 +
                     r"['\"][^>]*?(/>|>(.*?)</\1>)")
    return m.group(1).decode(), (m.group(3) or b"").decode()


def data_of(body):
    return base64.b64decode(body.strip()) if body.strip() else b""


def condition(body):
    m = re.search(r"<([a-z-]+) xmlns=['\"]urn:ietf:params:xml:ns:xmpp-sasl['\"]\s*/>", body)
    return m.group(1) if m else None


def advertised(features):
    """The SASL2 mechanisms and XEP-0440 channel bindings of the features."""
    auth = re.search(r"<authentication xmlns=['\"]" + NS2 + r"['\"]>(.*?)</authentication>",
                     features).group(1)
    inline = auth.find("<inline>")
    mechs = re.findall(r"<mechanism>([^<]+)</mechanism>", auth[:inline] if inline >= 0 else auth)
    cbs = re.findall(r"<channel-binding type=['\"]([^'\"]+)['\"]", features)
    fast = re.findall(r"<mechanism>([^<]+)</mechanism>",
                      (re.search(r"<fast [^>]*>(.*?)</fast>", auth) or re.search("()", "")).group(1))
    return mechs, cbs, fast


def ssdp_hash(mechs, cbs, hname):
    """XEP-0474 4: what a client computes from what it saw."""
    s = "\x1e".join(sorted(mechs))
    if cbs:
        s += "\x1f" + "\x1e".join(sorted(cbs))
    return b64(hashlib.new(HASHES[hname], s.encode()).digest())


def scram2(c, user, password, hname="SHA-256", cb=None, initial=True, extra="", ua=UA):
    """SCRAM over SASL2.  Returns (kind, body, server_first attrs)."""
    h = HASHES[hname]
    mech = f"SCRAM-{hname}" + ("-PLUS" if cb else "")
    gs2 = (f"p={cb}" if cb else "n") + ",,"
    cnonce = b64(os.urandom(18))
    first_bare = f"n={user},r={cnonce}"
    if initial:
        authenticate(c, mech, (gs2 + first_bare).encode(), ua=ua, extra=extra)
    else:
        authenticate(c, mech, None, ua=ua, extra=extra)
        kind, body = answer(c)
        assert kind == "challenge" and data_of(body) == b"", (kind, body)
        c.send(f"<response xmlns='{NS2}'>{b64((gs2 + first_bare).encode())}</response>")
    kind, body = answer(c)
    if kind != "challenge":
        return kind, body, None
    server_first = data_of(body).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salt = base64.b64decode(attrs["s"])
    cbind = gs2.encode() + (c.cb_data(cb) if cb else b"")
    final_bare = f"c={b64(cbind)},r={attrs['r']}"
    auth_msg = f"{first_bare},{server_first},{final_bare}".encode()
    salted = hashlib.pbkdf2_hmac(h, password.encode(), salt, int(attrs["i"]))
    ckey = hmac.new(salted, b"Client Key", h).digest()
    csig = hmac.new(hashlib.new(h, ckey).digest(), auth_msg, h).digest()
    proof = bytes(a ^ b for a, b in zip(ckey, csig))
    c.send(f"<response xmlns='{NS2}'>{b64(f'{final_bare},p={b64(proof)}'.encode())}</response>")
    kind, body = answer(c)
    if kind == "success":
        skey = hmac.new(salted, b"Server Key", h).digest()
        ssig = hmac.new(skey, auth_msg, h).digest()
        ad = re.search(r"<additional-data>([^<]*)</additional-data>", body).group(1)
        assert data_of(ad) == b"v=" + base64.b64encode(ssig), body
    return kind, body, attrs


def authz_id(body):
    return re.search(r"<authorization-identifier>([^<]+)</authorization-identifier>",
                     body).group(1)


def token_of(body):
    m = re.search(r"<token xmlns=['\"]urn:xmpp:fast:0['\"] ([^>]*)/>", body)
    if not m:
        return None, None
    a = dict(re.findall(r"(\w+)=['\"]([^'\"]*)['\"]", m.group(1)))
    return a["token"], a["expiry"]


HT_CB = {"HT-SHA-256-NONE": None, "HT-SHA-256-ENDP": "tls-server-end-point",
         "HT-SHA-256-EXPR": "tls-exporter"}


def ht_cb(c, mech):
    if mech == "HT-SHA-256-UNIQ":
        return c.cb_data("tls-unique" if c.tls_version() != "TLSv1.3" else "tls-exporter")
    kind = HT_CB[mech]
    return c.cb_data(kind) if kind else b""


def fast_login(c, user, token, mech="HT-SHA-256-NONE", ua=UA, extra="", fast_attrs=""):
    """HT over SASL2 (draft-schmaus-kitten-sasl-ht 3).  (kind, body)."""
    cbd = ht_cb(c, mech)
    proof = hmac.new(token.encode(), b"Initiator" + cbd, "sha256").digest()
    authenticate(c, mech, user.encode() + b"\0" + proof, ua=ua,
                 extra=f"<fast xmlns='urn:xmpp:fast:0' {fast_attrs}/>" + extra)
    kind, body = answer(c)
    if kind == "success":
        ad = re.search(r"<additional-data>([^<]*)</additional-data>", body).group(1)
        assert data_of(ad) == hmac.new(token.encode(), b"Responder" + cbd, "sha256").digest()
    return kind, body


def get_token(port, user, password, mech="HT-SHA-256-NONE", ua=UA, **kw):
    c = stream(port, **kw)
    kind, body, _ = scram2(c, user, password, ua=ua,
                           extra=f"<request-token xmlns='urn:xmpp:fast:0' mechanism='{mech}'/>")
    assert kind == "success", body
    tok, exp = token_of(body)
    assert tok and exp, body
    c.close()
    return tok, exp


# ---- SASL2 ------------------------------------------------------------------------------------

def test_sasl2_scram_login_without_restart(server_factory):
    srv = server_factory()
    users(srv, "amy", password="secret")
    c = stream(srv.c2s_port)
    assert "<authentication xmlns='urn:xmpp:sasl:2'>" in c.features, c.features
    mechs, cbs, fast = advertised(c.features)
    sasl1 = re.search(r"<mechanisms[^>]*>(.*?)</mechanisms>", c.features).group(1)
    assert mechs == re.findall(r"<mechanism>([^<]+)</mechanism>", sasl1), c.features
    assert "<bind xmlns='urn:xmpp:bind:0'><inline>" in c.features, c.features
    assert "HT-SHA-256-NONE" in fast and "HT-SHA-256-EXPR" in fast, c.features
    kind, body, _ = scram2(c, "amy", "secret")
    assert kind == "success", body
    assert authz_id(body) == "amy@localhost"
    # No restart: the features of the authenticated stream follow at once.
    feats = c.recv_until(r"<stream:features>.*?</stream:features>").group(0).decode()
    assert "urn:ietf:params:xml:ns:xmpp-bind" in feats, feats
    text, jid = c.bind("desk")
    assert jid == "amy@localhost/desk", text
    c.roundtrip()
    # XEP-0388 2.9: a second authentication is a stream error.
    authenticate(c, "PLAIN", b"\0amy\0secret")
    assert c.stream_error() == "policy-violation"


def test_sasl2_without_initial_response_and_plain(server_factory):
    srv = server_factory()
    users(srv, "amy", password="secret")
    c = stream(srv.c2s_port)
    kind, body, _ = scram2(c, "amy", "secret", initial=False)
    assert kind == "success", body
    c = stream(srv.c2s_port)
    authenticate(c, "PLAIN", b"\0amy\0secret")
    kind, body = answer(c)
    assert kind == "success" and authz_id(body) == "amy@localhost", body
    assert "<additional-data" not in body


def test_sasl2_bad_password_counts_like_sasl1(server_factory):
    srv = server_factory(extra_yaml="auth_failure_delay: 0s\nmax_auth_failures: 2\n"
                                    "auth_limits:\n  max_failures: 20\n")
    users(srv, "amy", password="secret")
    c = stream(srv.c2s_port)
    kind, body, _ = scram2(c, "amy", "wrong")
    assert kind == "failure" and condition(body) == "not-authorized", body
    # The stream stays for the next attempt (RFC 6120 6.4.5 via XEP-0388).
    kind, body, _ = scram2(c, "amy", "wrong2")
    assert kind == "failure" and condition(body) == "not-authorized", body
    # max_auth_failures: 2 reached: the stream ends.
    assert c.stream_error() == "policy-violation"
    lines = [l for l in srv.log_text().splitlines() if 'event="authentication failed"' in l]
    assert len(lines) == 2, lines
    assert "addr_failures=1 " in lines[0] and "addr_failures=2 " in lines[1], lines
    assert "account_failures=2" in lines[1], lines


def test_sasl2_abort(server_factory):
    srv = server_factory()
    users(srv, "amy", password="secret")
    c = stream(srv.c2s_port)
    authenticate(c, "SCRAM-SHA-256")
    assert answer(c)[0] == "challenge"
    c.send(f"<abort xmlns='{NS2}'><text>changed my mind</text></abort>")
    kind, body = answer(c)
    assert kind == "failure" and condition(body) == "aborted", body
    kind, body, _ = scram2(c, "amy", "secret")
    assert kind == "success", body


def test_sasl2_malformed_user_agent(server_factory):
    srv = server_factory()
    users(srv, "amy", password="secret")
    c = stream(srv.c2s_port)
    for bad in ("x" * 257, "has space", ""):
        authenticate(c, "PLAIN", b"\0amy\0secret", ua=bad)
        kind, body = answer(c)
        assert kind == "failure" and condition(body) == "malformed-request", (bad, body)
        assert "user-agent" in body, body
    # 256 bytes is the limit, and still fine.
    authenticate(c, "PLAIN", b"\0amy\0secret", ua="y" * 256)
    assert answer(c)[0] == "success"


def test_sasl2_unknown_mechanism_and_fast_without_fast_element(server_factory):
    srv = server_factory()
    users(srv, "amy", password="secret")
    c = stream(srv.c2s_port)
    authenticate(c, "HT-SHA-256-NONE", b"amy\0" + b"x" * 32)  # no <fast/>
    kind, body = answer(c)
    assert kind == "failure" and condition(body) == "invalid-mechanism", body
    # HT-* is never in RFC 6120 SASL.
    c.auth("HT-SHA-256-NONE", b"amy\0" + b"x" * 32)
    assert c.sasl_answer() == ("failure", "invalid-mechanism")


# ---- SSDP (XEP-0474) --------------------------------------------------------------------------

def test_ssdp_hash_detects_stripped_mechanisms(server_factory):
    srv = server_factory()
    users(srv, "amy", password="secret")
    for hname in ("SHA-256", "SHA-1"):
        c = stream(srv.c2s_port)
        mechs, cbs, _ = advertised(c.features)
        assert cbs, c.features  # XEP-0440 stays advertised
        kind, body, attrs = scram2(c, "amy", "secret", hname=hname)
        assert kind == "success", body
        assert attrs["h"] == ssdp_hash(mechs, cbs, hname), (attrs, mechs, cbs)
        # A client that saw a list stripped by a man in the middle (no
        # -PLUS, no channel bindings) computes another hash: downgrade.
        stripped = [m for m in mechs if not m.endswith("-PLUS")]
        assert attrs["h"] != ssdp_hash(stripped, [], hname)
        assert attrs["h"] != ssdp_hash(mechs, [b for b in cbs if b != "tls-exporter"], hname)
    # RFC 6120 SASL gets no h= (the brief: SSDP for SASL2).
    c = stream(srv.c2s_port)
    c.auth("SCRAM-SHA-256", b"n,,n=amy,r=abcdefgh")
    kind, val = c.sasl_answer()
    assert kind == "challenge" and b",h=" not in val, val


# ---- Bind2 (XEP-0386) -------------------------------------------------------------------------

def bind2(tag="AwesomeXMPP", inline=""):
    return f"<bind xmlns='urn:xmpp:bind:0'><tag>{tag}</tag>{inline}</bind>"


def test_bind2_stable_resource_per_user_agent(server_factory):
    srv = server_factory()
    users(srv, "amy", password="secret")
    jids = []
    for ua in (UA, UA, UA2):
        c = stream(srv.c2s_port)
        kind, body, _ = scram2(c, "amy", "secret", ua=ua, extra=bind2())
        assert kind == "success", body
        assert "<bound xmlns='urn:xmpp:bind:0'" in body, body
        jid = authz_id(body)
        feats = c.recv_until(r"<stream:features>.*?</stream:features>").group(0).decode()
        assert "xmpp-bind" not in feats, feats  # bound already
        c.roundtrip()  # the stream is bound: an IQ is answered
        jids.append(jid)
        c.close()
    assert re.fullmatch(r"amy@localhost/AwesomeXMPP\.[0-9a-f]{8}", jids[0]), jids
    assert jids[0] == jids[1] and jids[2] != jids[0], jids
    assert UA not in jids[0] and UA[:8] not in jids[0]


def test_bind2_inline_carbons_csi_sm(server_factory):
    srv = server_factory()
    users(srv, "amy", "bob", password="secret")
    a = stream(srv.c2s_port)
    inline = ("<enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3'/>")
    kind, body, _ = scram2(a, "amy", "secret", extra=bind2(inline=inline))
    assert kind == "success", body
    assert re.search(r"<bound xmlns='urn:xmpp:bind:0'><enabled xmlns='urn:xmpp:sm:3'/></bound>",
                     body), body
    a.recv_until(r"<stream:features>.*?</stream:features>")
    # SM is on: <r/> is answered.
    a.send("<r xmlns='urn:xmpp:sm:3'/>")
    a.recv_until(r"<a xmlns='urn:xmpp:sm:3' h='0'/>")
    a.send("<presence/>")
    a.roundtrip()
    # Carbons are on: what another session of amy sends is copied here.
    b = stream(srv.c2s_port)
    kind, body, _ = scram2(b, "amy", "secret", ua=UA2, extra=bind2(tag="Other"))
    assert kind == "success", body
    b.send("<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>")
    b.roundtrip()
    a.recv_until(r"<sent xmlns='urn:xmpp:carbons:2'>.*?<body>hi</body>")
    # CSI inline: the session begins inactive (XEP-0386 2.2).
    c = stream(srv.c2s_port)
    kind, body, _ = scram2(c, "amy", "secret", ua=str(uuid.uuid4()),
                           extra=bind2(tag="Idle", inline="<inactive xmlns='urn:xmpp:csi:0'/>"))
    assert kind == "success", body
    assert csi_info(srv, "amy", authz_id(body))["csi"] == "inactive"
    d = stream(srv.c2s_port)
    kind, body, _ = scram2(d, "amy", "secret", ua=str(uuid.uuid4()), extra=bind2(tag="Busy"))
    assert kind == "success", body
    assert csi_info(srv, "amy", authz_id(body))["csi"] == "active"


# ---- FAST (XEP-0484) --------------------------------------------------------------------------

def test_fast_token_login_without_pbkdf2(server_factory):
    srv = server_factory()
    users(srv, "amy", password="secret")
    tok, exp = get_token(srv.c2s_port, "amy", "secret")
    assert re.fullmatch(r"fast-[0-9a-f]{64}", tok), tok
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", exp), exp
    # The database keeps only its SHA-256.
    import sqlite3
    db = sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db"))
    rows = db.execute("SELECT token_hash FROM fast_tokens").fetchall()
    assert rows == [(hashlib.sha256(tok.encode()).digest(),)], rows
    before = srv.log_text().count("get_scram")
    c = stream(srv.c2s_port)
    kind, body = fast_login(c, "amy", tok, extra=bind2())
    assert kind == "success", body
    assert authz_id(body).startswith("amy@localhost/AwesomeXMPP."), body
    c.roundtrip()
    log = srv.log_text()
    assert re.search(r'event="authenticated" .*mech=HT-SHA-256-NONE cb=- sasl=2 fast=yes', log), log
    # No credential was read or derived for it (SCRAM would ask for one).
    assert log.count("get_scram") == before


def test_fast_wrong_token_counts_and_fails(server_factory):
    srv = server_factory(extra_yaml="auth_failure_delay: 0s\n")
    users(srv, "amy", password="secret")
    tok, _ = get_token(srv.c2s_port, "amy", "secret")
    c = stream(srv.c2s_port)
    kind, body = fast_login(c, "amy", "fast-" + "0" * 64)
    assert kind == "failure" and condition(body) == "not-authorized", body
    # Another user-agent id has no token.
    kind, body = fast_login(c, "amy", tok, ua=UA2)
    assert kind == "failure" and condition(body) == "not-authorized", body
    lines = [l for l in srv.log_text().splitlines() if 'event="authentication failed"' in l]
    assert len(lines) == 2 and "account_failures=2" in lines[1], lines
    # The right one still works; a token is bound to its mechanism.
    kind, body = fast_login(c, "amy", tok, mech="HT-SHA-256-EXPR")
    assert kind == "failure", body
    c = stream(srv.c2s_port)
    assert fast_login(c, "amy", tok)[0] == "success"


def test_fast_token_ends_with_password_change_and_account(server_factory):
    srv = server_factory()
    users(srv, "amy", password="secret")
    tok, _ = get_token(srv.c2s_port, "amy", "secret")
    r = srv.ctl_run("change_password", "amy", "localhost", "new-secret")
    assert r.returncode == 0, r.stdout + r.stderr
    c = stream(srv.c2s_port)
    kind, body = fast_login(c, "amy", tok)
    assert kind == "failure" and condition(body) == "not-authorized", body
    tok, _ = get_token(srv.c2s_port, "amy", "new-secret")
    assert srv.ctl_run("unregister", "amy", "localhost").returncode == 0
    import sqlite3
    db = sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db"))
    assert db.execute("SELECT COUNT(*) FROM fast_tokens").fetchone() == (0,)


def test_fast_rotation_and_invalidate(server_factory):
    srv = server_factory()
    users(srv, "amy", password="secret")
    t1, _ = get_token(srv.c2s_port, "amy", "secret")
    # The client asks for a new token while logging in with the old one:
    # both stay valid until the new one is used (XEP-0484 3.4, 8.1).
    c = stream(srv.c2s_port)
    kind, body = fast_login(c, "amy", t1, extra="<request-token xmlns='urn:xmpp:fast:0' "
                                                "mechanism='HT-SHA-256-NONE'/>")
    assert kind == "success", body
    t2, _ = token_of(body)
    assert t2 and t2 != t1
    c = stream(srv.c2s_port)
    assert fast_login(c, "amy", t1)[0] == "success"  # not used t2 yet: t1 still good
    c = stream(srv.c2s_port)
    assert fast_login(c, "amy", t2)[0] == "success"  # t2 used: t1 ends
    c = stream(srv.c2s_port)
    assert fast_login(c, "amy", t1)[0] == "failure"
    # invalidate='true': the token ends with this login.
    c = stream(srv.c2s_port)
    kind, body = fast_login(c, "amy", t2, fast_attrs="invalidate='true'")
    assert kind == "success" and token_of(body) == (None, None), body
    c = stream(srv.c2s_port)
    assert fast_login(c, "amy", t2)[0] == "failure"


def test_fast_expiry_and_rotation_point(server_factory):
    srv = server_factory(extra_yaml="fast_token_ttl: 4s\nauth_failure_delay: 0s\n")
    users(srv, "amy", password="secret")
    t1, exp = get_token(srv.c2s_port, "amy", "secret")
    issued = time.time()
    # First half of its life: used without a new token.
    c = stream(srv.c2s_port)
    kind, body = fast_login(c, "amy", t1)
    assert kind == "success" and token_of(body) == (None, None), body
    # Second half: the login that uses it gets a successor.
    time.sleep(max(0, issued + 2.3 - time.time()))
    c = stream(srv.c2s_port)
    kind, body = fast_login(c, "amy", t1)
    assert kind == "success", body
    t2, _ = token_of(body)
    assert t2 and t2 != t1, body
    # Past its expiry a token is refused.
    time.sleep(max(0, issued + 4.3 - time.time()))
    c = stream(srv.c2s_port)
    kind, body = fast_login(c, "amy", t1)
    assert kind == "failure" and condition(body) == "not-authorized", body
    c = stream(srv.c2s_port)
    assert fast_login(c, "amy", t2)[0] == "success"


def test_fast_channel_binding_variants(server_factory):
    srv = server_factory()
    users(srv, "amy", password="secret")
    for mech in ("HT-SHA-256-EXPR", "HT-SHA-256-ENDP", "HT-SHA-256-UNIQ"):
        tok, _ = get_token(srv.c2s_port, "amy", "secret", mech=mech)
        c = stream(srv.c2s_port)
        assert fast_login(c, "amy", tok, mech=mech)[0] == "success", mech
        # The binding data is part of the proof: without it the login fails.
        c = stream(srv.c2s_port)
        proof = hmac.new(tok.encode(), b"Initiator", "sha256").digest()
        authenticate(c, mech, b"amy\0" + proof, extra="<fast xmlns='urn:xmpp:fast:0'/>")
        kind, body = answer(c)
        assert kind == "failure" and condition(body) == "not-authorized", (mech, body)
    # UNIQ on TLS 1.2 binds to tls-unique.
    tok, _ = get_token(srv.c2s_port, "amy", "secret", mech="HT-SHA-256-UNIQ",
                       tls_max=SSL.TLS1_2_VERSION)
    c = stream(srv.c2s_port, tls_max=SSL.TLS1_2_VERSION)
    assert c.tls_version() == "TLSv1.2"
    assert "HT-SHA-256-UNIQ" in advertised(c.features)[2], c.features
    assert fast_login(c, "amy", tok, mech="HT-SHA-256-UNIQ")[0] == "success"


def test_fast_off(server_factory):
    srv = server_factory(extra_yaml="fast: false\n")
    users(srv, "amy", password="secret")
    c = stream(srv.c2s_port)
    assert "urn:xmpp:fast:0" not in c.features, c.features
    kind, body, _ = scram2(c, "amy", "secret",
                           extra="<request-token xmlns='urn:xmpp:fast:0' "
                                 "mechanism='HT-SHA-256-NONE'/>")
    assert kind == "success" and token_of(body) == (None, None), body

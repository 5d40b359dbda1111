"""auth_method ldap against a real slapd (ldapfix.py): PLAIN logins are
checked by a bind as the user's entry, found by a search with the service
bind; user existence for routing and offline storage; the filter; failover
over ldap_servers; a directory that is down; names that try to widen the
search filter; the mechanisms offered; method lists with internal."""
import re
import socket
import time

import pytest

import ldapfix
from helpers import expect, msg_rx, online, reply, users
from xclient import XClient, login

pytestmark = pytest.mark.skipif(not ldapfix.available(), reason="slapd is not installed")

FAST_FAIL = "auth_failure_delay: 0s\n"
OFFLINE = "modules:\n  mod_roster: {}\n  mod_offline: {}\n"


@pytest.fixture
def slapd(tmp_path):
    s = ldapfix.Slapd(tmp_path / "slapd")
    s.start()
    yield s
    s.stop()


def ldap_server(server_factory, slapd, method="ldap", servers=None, extra=""):
    return server_factory(extra_yaml=f"auth_method: {method}\n{FAST_FAIL}"
                          + ldapfix.yaml(slapd, servers, extra))


def plain(srv, user, password):
    """STARTTLS, then SASL PLAIN; returns (kind, condition or payload)."""
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    r = c.plain(user, password)
    c.close()
    return r


def mechanisms(srv, tls=True):
    c = XClient(srv.c2s_port)
    feats = c.open_stream()
    if tls:
        c.starttls()
        feats = c.open_stream()
    c.close()
    m = re.search(r"<mechanisms [^>]*>(.*?)</mechanisms>", feats)
    return sorted(re.findall(r"<mechanism>([^<]+)</mechanism>", m.group(1))) if m else []


def test_ldap_login_ok_wrong_unknown(server_factory, slapd):
    srv = ldap_server(server_factory, slapd)
    c, jid = login(srv.c2s_port, "alice", "alicepw", mech="PLAIN", resource="r")
    assert jid == "alice@localhost/r"
    c.close()
    assert plain(srv, "alice", "wrong") == ("failure", "not-authorized")
    assert plain(srv, "nobody", "alicepw") == ("failure", "not-authorized")
    # An empty password is never an (unauthenticated) bind.
    assert plain(srv, "alice", "")[0] == "failure"


def test_ldap_offers_plain_only(server_factory, slapd):
    srv = ldap_server(server_factory, slapd)
    assert mechanisms(srv) == ["PLAIN"]
    # Not over plain text (allow_unencrypted_plain_auth is off): nothing to offer.
    assert mechanisms(srv, tls=False) == []


def test_ldap_user_existence(server_factory, slapd):
    """A message to an unknown account bounces; to a known, offline LDAP
    account it is stored and delivered when it logs in."""
    srv = ldap_server(server_factory, slapd, extra=OFFLINE)
    a, _ = online(srv, "alice", password="alicepw", mech="PLAIN")
    a.send("<message to='nobody@localhost' id='m1' type='chat'><body>x</body></message>")
    bounce = expect(a, msg_rx("m1"))
    assert "type='error'" in bounce and "service-unavailable" in bounce, bounce
    a.send("<message to='carol@localhost' id='m2' type='chat'><body>hello carol</body>"
           "</message>")
    # The IQ to carol's bare JID: the server answers for a known account
    # (not service-unavailable); then the offline store has run before it.
    a.send("<iq type='get' id='p1' to='carol@localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    r = reply(a, "p1")
    assert "service-unavailable" not in r, r
    assert "m2" not in a.buf.decode(errors="replace")  # no bounce for carol
    c, _ = online(srv, "carol", password="carolpw", mech="PLAIN")
    got = expect(c, msg_rx("m2"))
    assert "hello carol" in got
    a.close()
    c.close()


def test_ldap_filter_restricts_users(server_factory, slapd):
    srv = ldap_server(server_factory, slapd, extra="ldap_filter: \"(employeeType=xmpp)\"\n")
    assert plain(srv, "alice", "alicepw")[0] == "success"
    assert plain(srv, "bob", "bobpw") == ("failure", "not-authorized")


def test_ldap_uids_format(server_factory, slapd):
    """ldap_uids with a format: the user name is looked up in mail."""
    srv = ldap_server(server_factory, slapd,
                      extra="ldap_uids: [{mail: \"%u@mail.example.org\"}]\n")
    assert plain(srv, "alice", "alicepw")[0] == "success"
    assert plain(srv, "alice@mail.example.org", "alicepw")[0] == "failure"


def test_ldap_service_bind(server_factory, slapd):
    # Without the service bind the search sees nothing (the ACL gives
    # anonymous no read access): nobody can log in.
    srv = server_factory(extra_yaml="auth_method: ldap\n" + FAST_FAIL + ldapfix.yaml(slapd)
                         .replace(f"ldap_rootdn: \"{ldapfix.READER}\"\n", "")
                         .replace(f"ldap_password: \"{ldapfix.READER_PW}\"\n", ""))
    assert plain(srv, "alice", "alicepw") == ("failure", "not-authorized")
    # A wrong service password: the directory cannot be asked.
    srv3 = server_factory(extra_yaml="auth_method: ldap\n" + FAST_FAIL
                          + ldapfix.yaml(slapd).replace(ldapfix.READER_PW, "bad"))
    assert plain(srv3, "alice", "alicepw") == ("failure", "temporary-auth-failure")
    assert "ldap connect failed" in srv3.log_text()


def test_ldap_failover(server_factory, slapd):
    """The first server entry is down (nothing listens on 127.0.0.2): the
    second one answers."""
    srv = ldap_server(server_factory, slapd, servers=["127.0.0.2", "127.0.0.1"])
    assert plain(srv, "alice", "alicepw")[0] == "success"
    assert plain(srv, "alice", "bad") == ("failure", "not-authorized")


def test_ldap_down_is_temporary_failure(server_factory, slapd):
    srv = ldap_server(server_factory, slapd)
    assert plain(srv, "alice", "alicepw")[0] == "success"  # a pooled connection now
    slapd.stop()
    assert plain(srv, "alice", "alicepw") == ("failure", "temporary-auth-failure")
    # Back up: the next login works on a new connection.
    slapd.start()
    assert plain(srv, "alice", "alicepw")[0] == "success"


def test_ldap_timeout(server_factory, slapd):
    """A server that accepts connections and never answers: the login fails
    with temporary-auth-failure after ldap_timeout, not never."""
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)  # the kernel completes the handshakes; nobody reads
    try:
        yml = (ldapfix.yaml(slapd).replace(f"ldap_port: {slapd.port}",
                                           f"ldap_port: {hang.getsockname()[1]}")
               .replace("ldap_timeout: 3s", "ldap_timeout: 700ms"))
        srv = server_factory(extra_yaml="auth_method: ldap\n" + FAST_FAIL + yml)
        t0 = time.monotonic()
        assert plain(srv, "alice", "alicepw") == ("failure", "temporary-auth-failure")
        took = time.monotonic() - t0
        assert 0.6 < took < 5, took
    finally:
        hang.close()


def test_ldap_pool_bound(server_factory, slapd):
    """ldap_pool_size: 1 against a server that never answers: the second
    login at once finds the one connection busy, waits ldap_timeout for it
    and gives up (temporary-auth-failure, "ldap pool busy")."""
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    try:
        yml = (ldapfix.yaml(slapd, extra="ldap_pool_size: 1\n")
               .replace(f"ldap_port: {slapd.port}", f"ldap_port: {hang.getsockname()[1]}")
               .replace("ldap_timeout: 3s", "ldap_timeout: 1s"))
        srv = server_factory(extra_yaml="auth_method: ldap\n" + FAST_FAIL + yml)
        cs = []
        for _ in range(2):
            c = XClient(srv.c2s_port)
            c.open_stream()
            c.starttls()
            c.open_stream()
            cs.append(c)
        for c in cs:
            c.auth("PLAIN", b"\0alice\0alicepw")
        for c in cs:
            assert c.sasl_answer() == ("failure", "temporary-auth-failure")
            c.close()
        assert "ldap pool busy" in srv.log_text()
    finally:
        hang.close()


def test_ldap_filter_injection(server_factory, slapd):
    """Filter metacharacters in a name are escaped (RFC 4515): "*)(uid=*"
    matches no entry, "*" only an entry whose uid is a literal "*"."""
    srv = ldap_server(server_factory, slapd, extra=OFFLINE)
    assert plain(srv, "*)(uid=*", "alicepw") == ("failure", "not-authorized")
    assert plain(srv, "*", "alicepw") == ("failure", "not-authorized")
    assert plain(srv, "al*", "alicepw") == ("failure", "not-authorized")
    assert plain(srv, "star*", "starpw")[0] == "success"
    # Existence: a message to "*" is not stored for anyone.
    a, _ = online(srv, "alice", password="alicepw", mech="PLAIN")
    a.send("<message to='*@localhost' id='m1' type='chat'><body>x</body></message>")
    assert "service-unavailable" in expect(a, msg_rx("m1"))
    a.close()


def test_method_list_internal_then_ldap(server_factory, slapd):
    """[internal, ldap]: an internal account and an LDAP account both log
    in; registration goes to internal; only PLAIN is offered."""
    srv = ldap_server(server_factory, slapd, method="[internal, ldap]")
    users(srv, "ivan", password="ivanpw")       # xmppctl register: the internal store
    users(srv, "alice", password="internalpw")  # the same name in both
    assert mechanisms(srv) == ["PLAIN"]
    assert plain(srv, "ivan", "ivanpw")[0] == "success"
    assert plain(srv, "alice", "alicepw")[0] == "success"      # LDAP's
    assert plain(srv, "alice", "internalpw")[0] == "success"   # internal's
    assert plain(srv, "ivan", "alicepw") == ("failure", "not-authorized")
    # Order: with slapd down, internal still answers first for its users;
    # a name internal does not know ends in LDAP's error.
    slapd.stop()
    assert plain(srv, "ivan", "ivanpw")[0] == "success"
    assert plain(srv, "carol", "carolpw") == ("failure", "temporary-auth-failure")


def test_method_list_ldap_then_internal_down(server_factory, slapd):
    """[ldap, internal] with the directory down: LDAP's error is not the
    last word, internal's yes is."""
    srv = ldap_server(server_factory, slapd, method="[ldap, internal]")
    users(srv, "ivan", password="ivanpw")
    slapd.stop()
    assert plain(srv, "ivan", "ivanpw")[0] == "success"
    assert plain(srv, "ivan", "bad") == ("failure", "temporary-auth-failure")


@pytest.fixture
def slapd_tls(tmp_path):
    s = ldapfix.Slapd(tmp_path / "slapd-tls", tls=True)
    s.start()
    yield s
    s.stop()


def tls_yaml(slapd, encrypt, port, extra):
    return ("auth_method: ldap\n" + FAST_FAIL
            + ldapfix.yaml(slapd, extra=f"ldap_encrypt: {encrypt}\n{extra}")
            .replace(f"ldap_port: {slapd.port}", f"ldap_port: {port}"))


@pytest.mark.parametrize("encrypt", ["tls", "starttls"])
def test_ldap_tls(server_factory, slapd_tls, encrypt):
    """LDAPS and StartTLS: the server's certificate is verified against
    ldap_tls_cacertfile; without it (an untrusted certificate) the directory
    cannot be asked, unless ldap_tls_verify is off."""
    port = slapd_tls.tls_port if encrypt == "tls" else slapd_tls.port
    srv = server_factory(extra_yaml=tls_yaml(
        slapd_tls, encrypt, port, f"ldap_tls_cacertfile: {slapd_tls.cacert}\n"))
    assert plain(srv, "alice", "alicepw")[0] == "success"
    assert plain(srv, "alice", "bad") == ("failure", "not-authorized")
    srv2 = server_factory(extra_yaml=tls_yaml(slapd_tls, encrypt, port, ""))
    assert plain(srv2, "alice", "alicepw") == ("failure", "temporary-auth-failure")
    srv3 = server_factory(extra_yaml=tls_yaml(slapd_tls, encrypt, port,
                                              "ldap_tls_verify: false\n"))
    assert plain(srv3, "alice", "alicepw")[0] == "success"


def test_ldap_starttls_refused_by_plain_server(server_factory, slapd):
    """A server without TLS refuses StartTLS: an error, never a fallback to
    plain text."""
    srv = server_factory(extra_yaml=tls_yaml(slapd, "starttls", slapd.port,
                                             "ldap_tls_verify: false\n"))
    assert plain(srv, "alice", "alicepw") == ("failure", "temporary-auth-failure")


def test_ldap_xmppctl(server_factory, slapd):
    """xmppctl's checks run the chain on the control thread (sync path);
    registration has no method that stores and is refused."""
    srv = ldap_server(server_factory, slapd)
    ctl = srv.ctl_run
    assert ctl("check_account", "alice", "localhost").returncode == 0
    assert ctl("check_account", "nobody", "localhost").returncode == 1
    assert ctl("check_password", "alice", "localhost", "alicepw").returncode == 0
    assert ctl("check_password", "alice", "localhost", "bad").returncode == 1
    r = ctl("register", "dave", "localhost", "pw")
    assert r.returncode != 0, r.stdout + r.stderr


def test_ldap_added_by_reload(server_factory, slapd):
    """reload_config from internal to [internal, ldap]: LDAP accounts log in
    from then on, internal ones still do; and back."""
    srv = server_factory(extra_yaml=FAST_FAIL)
    users(srv, "ivan", password="ivanpw")
    assert plain(srv, "alice", "alicepw") == ("failure", "not-authorized")
    base = open(srv.config_path).read()
    with open(srv.config_path, "w") as f:
        f.write(base + "auth_method: [internal, ldap]\n" + ldapfix.yaml(slapd))
    r = srv.ctl_run("reload_config")
    assert r.returncode == 0, r.stdout + r.stderr
    assert plain(srv, "alice", "alicepw")[0] == "success"
    assert plain(srv, "ivan", "ivanpw")[0] == "success"
    assert mechanisms(srv) == ["PLAIN"]
    with open(srv.config_path, "w") as f:
        f.write(base)
    assert srv.ctl_run("reload_config").returncode == 0
    assert plain(srv, "alice", "alicepw") == ("failure", "not-authorized")
    assert "SCRAM-SHA-256" in mechanisms(srv)

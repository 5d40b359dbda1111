"""auth_method pam: PLAIN logins checked by a PAM service.  The test writes
its own service file into a temporary directory that xmppd reads through
pam_confdir (pam_start_confdir), pointing at pam_pwdfile.so with a password
file in that directory: neither /etc/pam.d nor the machine's accounts are
used."""
import os
import subprocess

import pytest

from xclient import XClient, login

PWDFILE_SO = "/lib/x86_64-linux-gnu/security/pam_pwdfile.so"
pytestmark = pytest.mark.skipif(not os.path.exists(PWDFILE_SO),
                                reason="libpam-pwdfile is not installed")

SERVICE = "xmppd-test"


def crypt(password):
    r = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password,
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


@pytest.fixture
def pamdir(tmp_path):
    d = tmp_path / "pam.d"
    d.mkdir()
    pw = tmp_path / "passwd"
    pw.write_text(f"alice:{crypt('alicepw')}\n"
                  f"bob@localhost:{crypt('bobpw')}\n")
    (d / SERVICE).write_text(f"auth required pam_pwdfile.so pwdfile={pw}\n"
                             f"account required pam_permit.so\n")
    return d


def pam_server(server_factory, pamdir, extra=""):
    return server_factory(extra_yaml=f"auth_method: pam\n"
                          f"pam_service: {SERVICE}\n"
                          f"pam_confdir: {pamdir}\n"
                          f"auth_failure_delay: 0s\n{extra}")


def plain(srv, user, password):
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    r = c.plain(user, password)
    c.close()
    return r


def test_pam_login_ok_wrong_unknown(server_factory, pamdir):
    srv = pam_server(server_factory, pamdir)
    c, jid = login(srv.c2s_port, "alice", "alicepw", mech="PLAIN", resource="r")
    assert jid == "alice@localhost/r"
    c.close()
    assert plain(srv, "alice", "wrong") == ("failure", "not-authorized")
    assert plain(srv, "nobody", "alicepw") == ("failure", "not-authorized")


def test_pam_offers_plain_only(server_factory, pamdir):
    srv = pam_server(server_factory, pamdir)
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    feats = c.open_stream()
    c.close()
    assert "<mechanism>PLAIN</mechanism>" in feats and "SCRAM" not in feats, feats


def test_pam_userinfotype_jid(server_factory, pamdir):
    # username (the default): PAM sees "alice", not "bob@localhost".
    srv = pam_server(server_factory, pamdir)
    assert plain(srv, "bob", "bobpw") == ("failure", "not-authorized")
    # jid: PAM sees "bob@localhost"; "alice@localhost" is not in the file.
    srv2 = pam_server(server_factory, pamdir, "pam_userinfotype: jid\n")
    assert plain(srv2, "bob", "bobpw")[0] == "success"
    assert plain(srv2, "alice", "alicepw") == ("failure", "not-authorized")


def test_pam_missing_service_is_temporary_failure(server_factory, pamdir):
    """A service whose file is missing: Linux-PAM falls back to "other"
    inside pam_confdir, which does not exist either: the stack cannot run,
    and that is not the user's fault."""
    srv = server_factory(extra_yaml=f"auth_method: pam\npam_service: no-such-service\n"
                         f"pam_confdir: {pamdir}\nauth_failure_delay: 0s\n")
    assert plain(srv, "alice", "alicepw") == ("failure", "temporary-auth-failure")
    assert "pam request failed" in srv.log_text()

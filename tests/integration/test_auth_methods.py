"""auth_method as a list (tried in order, as ejabberd's) and the SASL
mechanisms each configuration offers: exactly what its methods can verify.
LDAP lists are in test_auth_ldap.py."""
import os
import re
import subprocess

import pytest

from conftest import build_dir
from xclient import XClient
from xmpptest import Server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXTAUTH = os.path.join(ROOT, "examples", "extauth.py")


def mechanisms(srv, tls=True):
    c = XClient(srv.c2s_port)
    feats = c.open_stream()
    if tls:
        c.starttls()
        feats = c.open_stream()
    c.close()
    m = re.search(r"<mechanisms [^>]*>(.*?)</mechanisms>", feats)
    return sorted(re.findall(r"<mechanism>([^<]+)</mechanism>", m.group(1))) if m else []


def plain(srv, user, password):
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    r = c.plain(user, password)
    c.close()
    return r


def ext_yaml(tmp_path, users):
    f = tmp_path / "extusers"
    f.write_text(users)
    return (f"extauth_program: \"/usr/bin/python3 {EXTAUTH} {f}\"\n"
            f"extauth_timeout: 3s\nauth_failure_delay: 0s\n")


SCRAM = ["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS",
         "SCRAM-SHA-512", "SCRAM-SHA-512-PLUS"]


@pytest.mark.parametrize("method,want", [
    ("internal", sorted(["PLAIN"] + SCRAM)),
    ("[internal]", sorted(["PLAIN"] + SCRAM)),
    ("anonymous", ["ANONYMOUS"]),
    ("[internal, anonymous]", ["ANONYMOUS", "PLAIN"]),
    ("[anonymous, external]", ["ANONYMOUS", "PLAIN"]),
    ("[internal, external]", ["PLAIN"]),
    ("external", ["PLAIN"]),
    ("pam", ["PLAIN"]),
])
def test_offered_mechanisms(server_factory, tmp_path, method, want):
    srv = server_factory(extra_yaml=f"auth_method: {method}\n" + ext_yaml(tmp_path, ""))
    assert mechanisms(srv) == want
    # Before STARTTLS (required by default) nothing is offered.
    assert mechanisms(srv, tls=False) == []


def test_internal_then_external(server_factory, tmp_path):
    """[internal, external]: accounts of both log in, each with its own
    password; registration goes to internal, the first that stores."""
    srv = server_factory(extra_yaml="auth_method: [internal, external]\n"
                         + ext_yaml(tmp_path, "eve:evepw\nann:extpw\n"))
    assert srv.ctl_run("register", "ann", "localhost", "intpw").returncode == 0
    assert plain(srv, "eve", "evepw")[0] == "success"     # external only
    assert plain(srv, "ann", "intpw")[0] == "success"     # internal
    assert plain(srv, "ann", "extpw")[0] == "success"     # external, after internal's no
    assert plain(srv, "ann", "bad") == ("failure", "not-authorized")
    assert plain(srv, "nobody", "x") == ("failure", "not-authorized")
    # Existence asks both; the internal store lists only its own.
    assert srv.ctl_run("check_account", "eve", "localhost").returncode == 0
    assert srv.ctl_run("check_account", "zed", "localhost").returncode == 1
    assert srv.ctl_run("registered_users", "localhost").stdout.split() == ["ann"]


def test_anonymous_then_internal(server_factory, tmp_path):
    srv = server_factory(extra_yaml="auth_method: [anonymous, internal]\nauth_failure_delay: 0s\n")
    assert srv.ctl_run("register", "ivy", "localhost", "pw").returncode == 0
    assert plain(srv, "ivy", "pw")[0] == "success"
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    c.auth("ANONYMOUS", b"")
    assert c.sasl_answer()[0] == "success"
    c.close()


@pytest.mark.parametrize("value,message", [
    ("[internal, kerberos]", 'unknown authentication method "kerberos"'),
    ("kerberos", 'unknown authentication method "kerberos"'),
    ("[internal, internal]", 'authentication method "internal" is listed twice'),
    ("[]", "at least one authentication method is needed"),
    ("{a: b}", "expected a method or a list of methods"),
])
def test_bad_auth_method_is_a_config_error(tmp_path, value, message):
    srv = Server(build_dir(), tmp_path / "srv", extra_yaml=f"auth_method: {value}\n")
    r = subprocess.run([srv.bin, "--config", srv.config_path, "--check-config"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    # file:line:column of the offending value
    line = open(srv.config_path).read().splitlines().index(f"auth_method: {value}") + 1
    assert re.search(re.escape(srv.config_path) + rf":{line}:\d+: .*auth_method", out), out
    assert message in out, out


def test_ldap_needs_ldap_base(tmp_path):
    srv = Server(build_dir(), tmp_path / "srv", extra_yaml="auth_method: [internal, ldap]\n")
    r = subprocess.run([srv.bin, "--config", srv.config_path, "--check-config"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "ldap_base" in r.stdout + r.stderr


@pytest.mark.parametrize("line,message", [
    ("ldap_uids: \"bad attr\"", '"bad attr" is not an LDAP attribute name'),
    ("ldap_uids: {mail: \"x@example.org\"}", "must hold %u exactly once"),
    ("ldap_uids: {mail: \"%u%u\"}", "must hold %u exactly once"),
    ("ldap_uids: []", "at least one attribute is needed"),
    ("ldap_encrypt: ssl", "ldap_encrypt"),
])
def test_bad_ldap_option_is_a_config_error(tmp_path, line, message):
    srv = Server(build_dir(), tmp_path / "srv",
                 extra_yaml=f"auth_method: ldap\nldap_base: \"dc=example\"\n{line}\n")
    r = subprocess.run([srv.bin, "--config", srv.config_path, "--check-config"],
                       capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    n = open(srv.config_path).read().splitlines().index(line) + 1
    assert re.search(re.escape(srv.config_path) + rf":{n}:\d+: ", out), out
    assert message in out, out

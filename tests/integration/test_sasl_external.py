"""SASL EXTERNAL for clients (XEP-0178) through the wire: a c2s listener with
tls_verify asks for a client certificate; one issued by the trusted CA with
an XmppAddr of an account logs in without a password; the mechanism is not
offered without a trusted certificate; a certificate naming no account, or
another account than the authzid asks for, is refused."""
import base64
import os
import re
import subprocess

import pytest

from helpers import users
from xclient import XClient
from xmpptest import free_port

XMPPADDR_OID = "1.3.6.1.5.5.7.8.5"


@pytest.fixture
def ca(tmp_path):
    from prosody import TestCA, Unavailable
    try:
        return TestCA(str(tmp_path / "ca"))
    except Unavailable as e:
        pytest.skip(str(e))


def client_cert(ca, tmp_path, name, *jids):
    """A client certificate from `ca` with an XmppAddr for each JID."""
    d = tmp_path / name
    d.mkdir()
    key, csr, leaf, ext = (str(d / n) for n in ("key.pem", "req.csr", "leaf.pem", "ext.cnf"))
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", key], check=True, capture_output=True)
    sans = ", ".join(f"otherName:{XMPPADDR_OID};UTF8:{j}" for j in jids)
    with open(ext, "w") as f:
        f.write("[ext]\nbasicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n"
                f"subjectAltName = {sans}\n")
    subprocess.run(["openssl", "req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={name}"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key,
                    "-set_serial", "7", "-days", "2", "-out", leaf, "-extfile", ext,
                    "-extensions", "ext"], check=True, capture_output=True)
    return leaf, key


def server(server_factory, ca):
    port = free_port()
    srv = server_factory(listen=(f"  - port: {port}\n    ip: 127.0.0.1\n    module: c2s\n"
                                 f"    tls_verify: true\n"),
                         extra_yaml=f"ca_file: {ca.cert}\n")
    srv.c2s_port = port
    users(srv, "alice", "bob")
    return srv


def mechanisms(c):
    c.open_stream()
    c.starttls()
    feats = c.open_stream()
    return re.findall(r"<mechanism>([^<]+)</mechanism>", feats)


def external(c, authzid=""):
    init = base64.b64encode(authzid.encode()).decode() if authzid else "="
    c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{init}</auth>")
    m = c.recv_until(r"<(success|failure)[^>]*?(/>|>(.*?)</\1>)")
    return m.group(1).decode(), (m.group(3) or b"").decode()


def test_external_login_with_a_client_certificate(server_factory, ca, tmp_path):
    srv = server(server_factory, ca)
    cert, key = client_cert(ca, tmp_path, "alice", "alice@localhost")
    c = XClient(srv.c2s_port, certfile=cert, keyfile=key)
    assert "EXTERNAL" in mechanisms(c)
    kind, _ = external(c)
    assert kind == "success"
    feats = c.open_stream()
    assert "urn:ietf:params:xml:ns:xmpp-bind" in feats
    _, jid = c.bind("cert")
    assert jid == "alice@localhost/cert"
    c.close()
    # An explicit authzid that the certificate names works too.
    c = XClient(srv.c2s_port, certfile=cert, keyfile=key)
    mechanisms(c)
    assert external(c, "alice@localhost")[0] == "success"
    c.close()
    # Another account as authzid: refused.
    c = XClient(srv.c2s_port, certfile=cert, keyfile=key)
    mechanisms(c)
    kind, cond = external(c, "bob@localhost")
    assert kind == "failure", cond
    c.close()


def test_external_refusals(server_factory, ca, tmp_path):
    srv = server(server_factory, ca)
    # No certificate: not offered (the password mechanisms are).
    c = XClient(srv.c2s_port)
    mechs = mechanisms(c)
    assert "EXTERNAL" not in mechs and "SCRAM-SHA-256" in mechs, mechs
    c.close()
    # A certificate from another CA: not offered.
    from prosody import TestCA
    other = TestCA(str(tmp_path / "other"))
    cert, key = client_cert(other, tmp_path, "mallory", "alice@localhost")
    c = XClient(srv.c2s_port, certfile=cert, keyfile=key)
    assert "EXTERNAL" not in mechanisms(c)
    c.close()
    # A trusted certificate for an account that does not exist.
    cert, key = client_cert(ca, tmp_path, "ghost", "ghost@localhost")
    c = XClient(srv.c2s_port, certfile=cert, keyfile=key)
    assert "EXTERNAL" in mechanisms(c)
    kind, cond = external(c)
    assert kind == "failure" and "not-authorized" in cond, cond
    c.close()
    # Two accounts in one certificate and no authzid: the client must choose.
    cert, key = client_cert(ca, tmp_path, "both", "alice@localhost", "bob@localhost")
    c = XClient(srv.c2s_port, certfile=cert, keyfile=key)
    mechanisms(c)
    kind, cond = external(c)
    assert kind == "failure" and "invalid-authzid" in cond, cond
    c.close()
    c = XClient(srv.c2s_port, certfile=cert, keyfile=key)
    mechanisms(c)
    assert external(c, "bob@localhost")[0] == "success"
    c.close()

"""Federation with ejabberd (the Debian package, 23.01 on Debian 12) on
loopback: xmppd.test on 127.0.0.1 and ejabberd.test on 127.0.0.2.  Both find
each other only through SRV records of a private dnsmasq (xmppd with
s2s_dns_servers, ejabberd through the Erlang resolver's inetrc), on random
ports: dialback with self-signed certificates, and SASL EXTERNAL both ways
with certificates from a test CA (ejabberd without mod_s2s_dialback, so
nothing else can authenticate; xmppd's certificate carries no
id-on-xmppAddr, which crashes ejabberd 23.01, see the test), each checked on
both sides (`xmppctl s2s_connections` and ejabberd's log); and the
fixture's own contract (current user, no epmd, stopped by PID).  Skipped,
with the reason, where ejabberd is not installed or cannot start
(XMPPD_REQUIRE_EJABBERD=1 makes that a failure)."""
import os
import re

import pytest

from ejabberd import ejabberd_lab  # noqa: F401  (the fixture)
from helpers import online, subscribe_in_order, users
from xmpptest import free_port

X_IP, E_IP = "127.0.0.1", "127.0.0.2"
pytestmark = pytest.mark.slow


def start_xmppd(server_factory, lab, verify, certs=None):
    c2s, s2s = free_port(addr=X_IP), free_port(addr=X_IP)
    lab.add_peer("xmppd.test", X_IP, s2s)  # SRV for ejabberd
    extra = (f"s2s_dns_servers: \"{lab.dns.nameserver}\"\n"
             f"s2s_connect_timeout: 10s\n"
             f"s2s_verify_certificates: {'true' if verify else 'false'}\n"
             f"ca_file: {lab.ca.cert}\n")
    if certs:
        extra += f"certfiles:\n  - {certs.cert}\n  - {certs.key}\n"
    srv = server_factory(hosts=("xmppd.test",),
                         listen=(f"  - port: {c2s}\n    ip: {X_IP}\n    module: c2s\n"
                                 f"  - port: {s2s}\n    ip: {X_IP}\n    module: s2s\n"),
                         extra_yaml=extra)
    srv.c2s_port = c2s
    srv.s2s_port = s2s
    users(srv, "alice", host="xmppd.test")
    return srv


def message(c, mid, timeout=20):
    """The next <message/> with id `mid`, as text with quotes normalised."""
    m = c.take(r"<message[^>]*id=['\"]" + mid + r"['\"].*?</message>", timeout=timeout)
    return m.group(0).decode().replace('"', "'")


def chat(xmppd, ej):
    """alice@xmppd.test <-> bob@ejabberd.test, one message each way; returns
    `xmppctl s2s_connections`."""
    ej.register("bob", "pw")
    a, ajid = online(xmppd, "alice", "x", host=X_IP, domain="xmppd.test")
    # ejabberd with auth_password_format: plain offers SCRAM-SHA-1 and PLAIN.
    b, bjid = online(ej, "bob", "e", mech="SCRAM-SHA-1")
    assert (ajid, bjid) == ("alice@xmppd.test/x", "bob@ejabberd.test/e")
    a.send(f"<message to='{bjid}' type='chat' id='xe1'><body>to ejabberd</body></message>")
    got = message(b, "xe1")
    assert f"from='{ajid}'" in got, got
    assert "<body>to ejabberd</body>" in got, got
    b.send(f"<message to='{ajid}' type='chat' id='ex1'><body>to xmppd</body></message>")
    got = message(a, "ex1")
    assert f"from='{bjid}'" in got, got
    assert "<body>to xmppd</body>" in got, got
    subscribe_in_order(a, ajid, b, bjid)
    a.close()
    b.close()
    r = xmppd.ctl_run("s2s_connections")
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def assert_found_by_srv(lab, xmppd, ej):
    """Both sides asked the lab's dnsmasq for the other's SRV record (the
    ports are random, so only those records could have named them)."""
    queries = lab.dns.queries()
    assert ej.s2s_port != 5269 and xmppd.s2s_port != 5269
    assert ("SRV", "_xmpp-server._tcp.ejabberd.test") in queries, queries  # by xmppd
    assert ("SRV", "_xmpp-server._tcp.xmppd.test") in queries, queries     # by ejabberd


def test_ejabberd_dialback(server_factory, ejabberd_lab):
    lab = ejabberd_lab
    x = start_xmppd(server_factory, lab, verify=False)
    e = lab.start(domain="ejabberd.test", ip=E_IP, cert="self-signed", dialback=True)
    conns = chat(x, e)
    assert re.search(r"out xmppd\.test -> ejabberd\.test auth=dialback", conns), conns
    assert re.search(r"in xmppd\.test <- ejabberd\.test auth=dialback", conns), conns
    assert_found_by_srv(lab, x, e)
    # ejabberd's side: it tries SASL EXTERNAL first (xmppd offers none to a
    # self-signed peer), then dialback, which must have succeeded both ways.
    e.wait_log(r"Accepted inbound s2s dialback authentication xmppd\.test -> ejabberd\.test")
    e.wait_log(r"Accepted outbound s2s dialback authentication ejabberd\.test -> xmppd\.test")


def test_ejabberd_sasl_external(server_factory, ejabberd_lab):
    lab = ejabberd_lab
    # No id-on-xmppAddr in xmppd's certificate: ejabberd 23.01's p1_xmpp
    # 1.6.1 crashes on one (xmpp_stream_pkix:get_domains_from_san/1 returns a
    # binary, not a list, to lists:flatmap -> badarg in the s2s process), so
    # neither SASL EXTERNAL towards it nor its check of our server
    # certificate could succeed.  dNSName alone is what it reads.
    x = start_xmppd(server_factory, lab, verify=True,
                    certs=lab.ca.issue("xmppd.test", xmpp_addr=False))
    e = lab.start(domain="ejabberd.test", ip=E_IP, cert="ca", dialback=False)
    conns = chat(x, e)
    assert re.search(r"out xmppd\.test -> ejabberd\.test auth=sasl", conns), conns
    assert re.search(r"in xmppd\.test <- ejabberd\.test auth=sasl", conns), conns
    assert_found_by_srv(lab, x, e)
    # ejabberd's side of the same two streams.
    e.wait_log(r"Accepted inbound s2s EXTERNAL authentication xmppd\.test -> ejabberd\.test")
    e.wait_log(r"Accepted outbound s2s EXTERNAL authentication ejabberd\.test -> xmppd\.test")


def epmd_pids():
    pids = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == "epmd":
                        pids.add(int(d))
            except OSError:
                pass
    return pids


def test_ejabberd_fixture_stops_by_pid_without_epmd(ejabberd_lab):
    """The fixture's own contract: ejabberd runs as the current user on its
    private node, answers ejabberdctl, starts no epmd, and is gone after
    stop()."""
    before = epmd_pids()
    e = ejabberd_lab.start(domain="solo.test", ip=E_IP, cert="self-signed")
    with open(f"/proc/{e.pid}/status") as f:
        uid = int(re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1))
    assert uid == os.geteuid()
    r = e.ctl("registered_users", "solo.test")
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr
    e.register("carol", "pw")
    r = e.ctl("registered_users", "solo.test")
    assert r.stdout.split() == ["carol"], r.stdout + r.stderr
    assert epmd_pids() <= before, "ejabberd started an epmd"
    pid = e.pid
    assert e.stop() == 0
    assert not os.path.exists(f"/proc/{pid}")
    assert e.ctl("status", timeout=30).returncode != 0

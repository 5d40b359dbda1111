"""mod_stun_disco: external service discovery (XEP-0215) over the wire —
the STUN/TURN services a calling client (Conversations, Dino, Monal) asks
its server for, with TURN REST API credentials checked against the
shared secret as a TURN server (coturn's use-auth-secret) checks them."""
import base64
import calendar
import hashlib
import hmac
import os
import re
import subprocess
import time

from conftest import build_dir
from helpers import iq, online, users

NS = "urn:xmpp:extdisco:2"
SECRET = "n0t-so-s3cret"

SERVICES = (
    "modules:\n"
    "  mod_stun_disco:\n"
    f"    secret: {SECRET}\n"
    "    credentials_lifetime: 1h\n"
    "    services:\n"
    "      - {host: turn.example.org, type: stun}\n"
    "      - {host: turn.example.org, type: turn, name: 'Relay'}\n"
    "      - {host: turn.example.org, type: turn, transport: tcp}\n"
    "      - {host: 192.0.2.7, type: turns, port: 443}\n"
    "      - {host: relay.example.net, type: turn, username: fixed, password: 'p&w'}\n"
)


def services(r):
    """The <service/> elements of an answer as dicts of their attributes."""
    return [dict(re.findall(r"(\w+)='([^']*)'", s)) for s in re.findall(r"<service [^>]*/>", r)]


def check_rest_credentials(s, jid_bare, lifetime):
    """username EXPIRY:bare-JID, password base64(HMAC-SHA1(secret, username)),
    expires = EXPIRY as XEP-0082 UTC, about now + lifetime."""
    exp, who = s["username"].split(":", 1)
    assert who == jid_bare, s
    assert abs(int(exp) - (time.time() + lifetime)) < 60, s
    want = base64.b64encode(hmac.new(SECRET.encode(), s["username"].encode(),
                                     hashlib.sha1).digest()).decode()
    assert s["password"] == want, s
    assert s["expires"].endswith("Z")
    assert calendar.timegm(time.strptime(s["expires"], "%Y-%m-%dT%H:%M:%SZ")) == int(exp), s
    assert s["restricted"] in ("1", "true"), s


def test_services_listed_with_turn_credentials(server_factory):
    srv = server_factory(extra_yaml=SERVICES)
    users(srv, "alice")
    c, _ = online(srv, "alice", "call")
    r = iq(c, "d", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to="localhost")
    assert f"var='{NS}'" in r, r

    r = iq(c, "s1", f"<services xmlns='{NS}'/>", typ="get", to="localhost")
    assert "type='result'" in r, r
    got = services(r)
    assert len(got) == 5, r
    stun, turn, turn_tcp, turns, fixed = got
    assert stun == {"host": "turn.example.org", "port": "3478", "transport": "udp",
                    "type": "stun"}, stun
    assert (turn["type"], turn["port"], turn["transport"], turn["name"]) == \
        ("turn", "3478", "udp", "Relay"), turn
    check_rest_credentials(turn, "alice@localhost", 3600)
    assert (turn_tcp["transport"], turn_tcp["port"]) == ("tcp", "3478"), turn_tcp
    check_rest_credentials(turn_tcp, "alice@localhost", 3600)
    assert (turns["host"], turns["port"], turns["transport"]) == ("192.0.2.7", "443", "tcp")
    check_rest_credentials(turns, "alice@localhost", 3600)
    # fixed credentials are sent as configured (escaped in XML), no expiry
    assert (fixed["username"], fixed["password"]) == ("fixed", "p&amp;w"), fixed
    assert "expires" not in fixed

    # one type only, and the type echoed (XEP-0215 §3.2)
    r = iq(c, "s2", f"<services xmlns='{NS}' type='turn'/>", typ="get", to="localhost")
    assert re.search(rf"<services xmlns='{NS}' type='turn'", r), r
    assert [s["type"] for s in services(r)] == ["turn", "turn", "turn"], r
    r = iq(c, "s3", f"<services xmlns='{NS}' type='ftp'/>", typ="get", to="localhost")
    assert "type='result'" in r and services(r) == [], r


def test_credentials_for_one_service(server_factory):
    srv = server_factory(extra_yaml=SERVICES)
    users(srv, "bob")
    c, _ = online(srv, "bob", "r")
    r = iq(c, "c1", f"<credentials xmlns='{NS}'><service host='turn.example.org' type='turn'/>"
           "</credentials>", typ="get", to="localhost")
    assert f"<credentials xmlns='{NS}'>" in r, r
    got = services(r)
    assert [s["transport"] for s in got] == ["udp", "tcp"], r  # two ports… one host and type
    for s in got:
        check_rest_credentials(s, "bob@localhost", 3600)
    # narrowed by port
    r = iq(c, "c2", f"<credentials xmlns='{NS}'><service host='192.0.2.7' type='turns' "
           "port='443'/></credentials>", typ="get", to="localhost")
    assert len(services(r)) == 1, r
    # nothing there: item-not-found; no host: bad-request
    r = iq(c, "c3", f"<credentials xmlns='{NS}'><service host='turn.example.org' type='turns'/>"
           "</credentials>", typ="get", to="localhost")
    assert "type='error'" in r and "<item-not-found" in r, r
    r = iq(c, "c4", f"<credentials xmlns='{NS}'><service type='turn'/></credentials>",
           typ="get", to="localhost")
    assert "type='error'" in r and "<bad-request" in r, r
    # a set is not a request of this protocol (pushes go from server to client)
    r = iq(c, "c5", f"<services xmlns='{NS}'/>", typ="set", to="localhost")
    assert "type='error'" in r and "<not-allowed" in r, r


def test_access_rule_refuses(server_factory):
    srv = server_factory(extra_yaml=SERVICES + "    access: none\n")
    users(srv, "carol")
    c, _ = online(srv, "carol", "r")
    r = iq(c, "a1", f"<services xmlns='{NS}'/>", typ="get", to="localhost")
    assert "type='error'" in r and "<forbidden" in r, r
    assert "username=" not in r


def check_config(tmp_path, text):
    cfg = tmp_path / "x.yml"
    cfg.write_text(text)
    return subprocess.run([os.path.join(build_dir(), "xmppd"), "--check-config", "-c", str(cfg)],
                          capture_output=True, text=True)


def test_restricted_service_without_credentials_is_a_config_error(tmp_path):
    r = check_config(tmp_path, "modules:\n  mod_stun_disco:\n    services:\n"
                     "      - {host: stun.example.org, type: stun}\n"
                     "      - {host: turn.example.org, type: turn}\n")
    assert r.returncode != 0, r.stderr
    assert "x.yml:5:" in r.stderr and "services[1]" in r.stderr and "secret" in r.stderr, r.stderr
    r = check_config(tmp_path, "modules:\n  mod_stun_disco:\n    services:\n"
                     "      - {host: turn.example.org, type: turns, transport: udp}\n")
    assert r.returncode != 0 and "x.yml:4:" in r.stderr and "tcp" in r.stderr, r.stderr
    r = check_config(tmp_path, "modules:\n  mod_stun_disco:\n    services:\n"
                     "      - {host: turn.example.org, type: turn, restricted: false}\n")
    assert r.returncode == 0, r.stderr

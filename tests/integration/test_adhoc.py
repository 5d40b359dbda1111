"""mod_adhoc: the server's commands as ad-hoc commands (XEP-0050) over the
wire — discovery by access rule, the form of a command's arguments, a
run through the form (on the pool) and one on the main loop, list and
number results, sessions, cancel, errors, and who may run what."""
import re
import time

from helpers import expect, iq, online, users
from xclient import login

NS = "http://jabber.org/protocol/commands"
XD = "jabber:x:data"

ADMIN = (
    "acl:\n  admin:\n    user: ['admin@localhost']\n"
    "access_rules:\n  admin:\n    allow: admin\n"
    "modules:\n  mod_adhoc: {}\n"
)


def command(node, action=None, sid=None, fields=None):
    a = f" action='{action}'" if action else ""
    s = f" sessionid='{sid}'" if sid else ""
    body = ""
    if fields is not None:
        body = f"<x xmlns='{XD}' type='submit'>" + "".join(
            f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items()) + "</x>"
    return f"<command xmlns='{NS}' node='{node}'{a}{s}>{body}</command>"


def note(r):
    m = re.search(r"<note type='(\w+)'>(.*?)</note>", r, re.S)
    return (m.group(1), m.group(2)) if m else (None, None)


def test_commands_listed_by_access_rule(server_factory):
    srv = server_factory(extra_yaml=ADMIN)
    users(srv, "admin", "bob")
    a, _ = online(srv, "admin", "r")
    b, _ = online(srv, "bob", "r")
    r = iq(a, "f", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
           to="localhost")
    assert f"var='{NS}'" in r, r
    r = iq(a, "l", f"<query xmlns='http://jabber.org/protocol/disco#items' node='{NS}'/>",
           typ="get", to="localhost")
    nodes = re.findall(r"node='(api-commands/[^']+)'", r)
    for want in ("register", "status", "connected_users", "unregister"):
        assert f"api-commands/{want}" in nodes, r
    r = iq(a, "n", "<query xmlns='http://jabber.org/protocol/disco#info' "
           "node='api-commands/register'/>", typ="get", to="localhost")
    assert "category='automation'" in r and "type='command-node'" in r, r
    # bob is no admin: no commands, and a command's node is unknown to him
    r = iq(b, "l2", f"<query xmlns='http://jabber.org/protocol/disco#items' node='{NS}'/>",
           typ="get", to="localhost")
    assert "api-commands/" not in r, r
    r = iq(b, "x", command("api-commands/status", "execute"), to="localhost")
    assert "type='error'" in r and "<item-not-found" in r, r


def test_register_through_the_form(server_factory):
    srv = server_factory(extra_yaml=ADMIN)
    users(srv, "admin")
    a, _ = online(srv, "admin", "r")
    r = iq(a, "e1", command("api-commands/register", "execute"), to="localhost")
    assert "status='executing'" in r, r
    sid = re.search(r"sessionid='([^']+)'", r).group(1)
    assert "<complete/>" in r
    assert re.search(r"<field var='user' type='text-single' label='user'>.*?<required/>", r)
    assert re.search(r"<field var='host' type='list-single'[^>]*>.*?<value>localhost</value>", r)
    assert "var='password' type='text-private'" in r, r
    r = iq(a, "e2", command("api-commands/register", "complete", sid,
                            {"user": "carol", "host": "localhost", "password": "s3cr3t"}),
           to="localhost")
    assert "status='completed'" in r, r
    assert note(r)[0] == "info", r
    # the account is there: it logs in
    c, jid = login(srv.c2s_port, "carol", "s3cr3t", resource="x")
    assert jid.startswith("carol@localhost/")
    c.close()
    # the session was used up
    r = iq(a, "e3", command("api-commands/register", "complete", sid,
                            {"user": "dave", "host": "localhost", "password": "x"}),
           to="localhost")
    assert "type='error'" in r and "<bad-sessionid" in r, r
    # a bad argument: the command's own usage message, as bad-request
    r = iq(a, "e4", command("api-commands/register", "execute", None,
                            {"user": "no spaces allowed", "host": "localhost", "password": "x"}),
           to="localhost")
    assert "type='error'" in r and "<bad-request" in r and "user" in r, r
    # a required field left out
    r = iq(a, "e5", command("api-commands/register", "execute", None, {"user": "erin"}),
           to="localhost")
    assert "type='error'" in r and "<bad-request" in r, r


def test_main_loop_commands_and_results(server_factory):
    srv = server_factory(extra_yaml=ADMIN)
    users(srv, "admin", "bob")
    a, ajid = online(srv, "admin", "r")
    _, bjid = online(srv, "bob", "phone")
    # no arguments, on the main loop: completed at once with its text
    r = iq(a, "s", command("api-commands/status"), to="localhost")
    assert "status='completed'" in r and "is running" in r, r
    # a list (connected_users, on the main loop): a result form
    r = iq(a, "c1", command("api-commands/connected_users", "execute"), to="localhost")
    sid = re.search(r"sessionid='([^']+)'", r).group(1)
    r = iq(a, "c2", command("api-commands/connected_users", "complete", sid,
                            {"host": "localhost"}), to="localhost")
    assert "status='completed'" in r and f"<x xmlns='{XD}' type='result'>" in r, r
    values = re.findall(r"<value>([^<]*)</value>", r)
    assert ajid in values and bjid in values, r
    # a number
    r = iq(a, "n", command("api-commands/connected_users_number", "execute", None,
                           {"host": "localhost"}), to="localhost")
    assert note(r) == ("info", "2"), r
    # a command that fails completes with an error note
    r = iq(a, "k", command("api-commands/kick_session", "execute", None,
                           {"user": "bob", "host": "localhost", "resource": "nowhere"}),
           to="localhost")
    assert "status='completed'" in r and note(r)[0] == "error" and "not connected" in r, r


def test_cancel_and_bad_actions(server_factory):
    srv = server_factory(extra_yaml=ADMIN)
    users(srv, "admin")
    a, _ = online(srv, "admin", "r")
    r = iq(a, "e", command("api-commands/register", "execute"), to="localhost")
    sid = re.search(r"sessionid='([^']+)'", r).group(1)
    r = iq(a, "c", command("api-commands/register", "cancel", sid), to="localhost")
    assert "status='canceled'" in r, r
    r = iq(a, "c2", command("api-commands/register", "cancel", sid), to="localhost")
    assert "<bad-sessionid" in r, r
    r = iq(a, "p", command("api-commands/status", "jump"), to="localhost")
    assert "<malformed-action" in r, r
    r = iq(a, "g", f"<command xmlns='{NS}' node='api-commands/status'/>", typ="get",
           to="localhost")
    assert "type='error'" in r and "<bad-request" in r, r
    r = iq(a, "u", command("api-commands/no_such_command"), to="localhost")
    assert "<item-not-found" in r, r


def test_host_admin_cannot_run_server_wide_commands(server_factory):
    """An ACL that names a localpart only matches on a host, so its admin
    may run host commands there but not server-wide ones (status, stop)."""
    srv = server_factory(extra_yaml=(
        "acl:\n  admin:\n    user: [hostadmin]\n"
        "access_rules:\n  admin:\n    allow: admin\n"
        "modules:\n  mod_adhoc: {}\n"))
    users(srv, "hostadmin")
    a, _ = online(srv, "hostadmin", "r")
    r = iq(a, "l", f"<query xmlns='http://jabber.org/protocol/disco#items' node='{NS}'/>",
           typ="get", to="localhost")
    nodes = re.findall(r"node='api-commands/([^']+)'", r)
    assert "register" in nodes and "status" not in nodes and "stop" not in nodes, r
    r = iq(a, "s", command("api-commands/stop"), to="localhost")
    assert "<item-not-found" in r, r
    # the host argument left out means every host: server-wide, refused
    r = iq(a, "c", command("api-commands/connected_users", "execute", None, {}), to="localhost")
    assert "type='error'" in r and "<forbidden" in r, r
    r = iq(a, "c2", command("api-commands/connected_users", "execute", None,
                            {"host": "localhost"}), to="localhost")
    assert "status='completed'" in r, r


def test_sessions_side_by_side_and_echoed(server_factory):
    """Two forms open at once (each its own session); the completed answer
    carries the session id (XEP-0050 3.4)."""
    srv = server_factory(extra_yaml=ADMIN)
    users(srv, "admin")
    a, _ = online(srv, "admin", "r")
    r1 = iq(a, "o1", command("api-commands/register", "execute"), to="localhost")
    r2 = iq(a, "o2", command("api-commands/register", "execute"), to="localhost")
    s1 = re.search(r"sessionid='([^']+)'", r1).group(1)
    s2 = re.search(r"sessionid='([^']+)'", r2).group(1)
    assert s1 != s2
    for sid, user in ((s1, "first"), (s2, "second")):
        r = iq(a, "c" + user, command("api-commands/register", "complete", sid,
                                      {"user": user, "host": "localhost", "password": "p"}),
               to="localhost")
        assert "status='completed'" in r and f"sessionid='{sid}'" in r, r


def test_reload_that_restarts_the_adhoc_module_answers(server_factory):
    """reload_config run as an ad-hoc command, with a change that restarts
    mod_adhoc itself: the stop must not wait for the command that asked
    for it (it waited its 10 s, then freed the instance under the running
    command)."""
    srv = server_factory(extra_yaml=ADMIN)
    users(srv, "admin")
    a, _ = online(srv, "admin", "r")
    with open(srv.config_path) as f:
        text = f.read()
    with open(srv.config_path, "w") as f:
        f.write(text.replace("mod_adhoc: {}", "mod_adhoc: {max_sessions: 7}"))
    t0 = time.time()
    r = iq(a, "rl", command("api-commands/reload_config"), to="localhost", timeout=30)
    assert "status='completed'" in r, r
    assert time.time() - t0 < 5, time.time() - t0
    # the new instance serves
    r = iq(a, "st", command("api-commands/status"), to="localhost")
    assert "is running" in r, r


ADMIN_NS = "http://jabber.org/protocol/admin#"


def test_service_administration_nodes(server_factory):
    """XEP-0133's standard nodes for what the registry can do: listed,
    their own forms and fields, and the XEP's result fields."""
    srv = server_factory(extra_yaml=ADMIN + "  mod_announce: {}\n")
    users(srv, "admin", "bob")
    a, _ = online(srv, "admin", "r")
    b, _ = online(srv, "bob", "r")
    r = iq(a, "l", f"<query xmlns='http://jabber.org/protocol/disco#items' node='{NS}'/>",
           typ="get", to="localhost")
    for op in ("add-user", "change-user-password", "get-registered-users-num",
               "get-online-users-num", "announce", "set-motd", "edit-motd", "delete-motd"):
        assert f"node='{ADMIN_NS}{op}'" in r, (op, r)
    # add-user: the XEP's form, then the fields
    r = iq(a, "a1", command(ADMIN_NS + "add-user", "execute"), to="localhost")
    sid = re.search(r"sessionid='([^']+)'", r).group(1)
    for var in ("accountjid", "password", "password-verify"):
        assert f"var='{var}'" in r, r
    assert "<value>http://jabber.org/protocol/admin</value>" in r, r
    r = iq(a, "a2", command(ADMIN_NS + "add-user", "complete", sid,
                            {"accountjid": "carol@localhost", "password": "pw1",
                             "password-verify": "pw2"}), to="localhost")
    assert "type='error'" in r and "do not match" in r, r
    r = iq(a, "a3", command(ADMIN_NS + "add-user", "execute", None,
                            {"accountjid": "carol@localhost", "password": "pw1",
                             "password-verify": "pw1"}), to="localhost")
    assert "status='completed'" in r, r
    c, _ = login(srv.c2s_port, "carol", "pw1", resource="x")
    # counts as the XEP's fields: 3 accounts; 2 accounts online (admin,
    # bob; carol's login above has no presence but is a session too)
    r = iq(a, "n1", command(ADMIN_NS + "get-registered-users-num"), to="localhost")
    assert re.search(r"<field var='registeredusersnum'><value>3</value>", r), r
    r = iq(a, "n2", command(ADMIN_NS + "get-online-users-num"), to="localhost")
    assert re.search(r"<field var='onlineusersnum'><value>3</value>", r), r
    c.close()
    # announce: the lines of the text-multi field are the body
    a.send(f"<iq type='set' id='an' to='localhost'><command xmlns='{NS}' "
           f"node='{ADMIN_NS}announce' action='complete'><x xmlns='{XD}' type='submit'>"
           "<field var='subject'><value>Heads up</value></field>"
           "<field var='announcement'><value>line one</value><value>line two</value></field>"
           "</x></command></iq>")
    r = expect(a, r"<iq[^>]*id=['\"]an['\"].*?</iq>")
    assert "status='completed'" in r, r
    m = expect(b, r"<message[^>]*from=['\"]localhost['\"].*?</message>")
    assert "<subject>Heads up</subject>" in m and "line one\nline two" in m, m

"""mod_announce: announcements and the message of the day over the wire —
messages to HOST/announce/online, /all, /motd, /motd/update and
/motd/delete, as ejabberd's module takes them."""
from helpers import POOL1, assert_nothing_before, expect, online, users

CONF = (POOL1 +
        "acl:\n  admin:\n    user: ['admin@localhost']\n"
        "access_rules:\n  admin:\n    allow: admin\n"
        "modules:\n  mod_announce: {}\n  mod_offline: {}\n")


def announce(c, what, body, subject=None):
    s = f"<subject>{subject}</subject>" if subject else ""
    c.send(f"<message to='localhost/announce/{what}'>{s}<body>{body}</body></message>")


def rx(body):
    return rf"<message[^>]*from=['\"]localhost['\"][^>]*>(?:(?!</message>).)*{body}.*?</message>"


def test_online_and_all(server_factory):
    srv = server_factory(extra_yaml=CONF)
    users(srv, "admin", "bob", "carol")
    a, _ = online(srv, "admin", "r")
    b, _ = online(srv, "bob", "r")
    announce(a, "online", "Maintenance at noon", subject="Notice")
    m = expect(b, rx("Maintenance at noon"))
    assert "<subject>Notice</subject>" in m and "type='normal'" in m, m
    # carol was offline: "online" did not reach her, "all" does (offline storage)
    announce(a, "all", "New terms of service")
    expect(b, rx("New terms of service"))
    c, _ = online(srv, "carol", "r")
    expect(c, rx("New terms of service"))
    assert_nothing_before(c, rx("Maintenance"), after=a)


def test_message_of_the_day(server_factory):
    srv = server_factory(extra_yaml=CONF)
    users(srv, "admin", "bob", "dave", "erin")
    a, _ = online(srv, "admin", "r")
    b, _ = online(srv, "bob", "r")
    announce(a, "motd", "Welcome v1")
    expect(b, rx("Welcome v1"))  # online now
    # ... and bob, who got it now, does not get it again at his next login
    b2, _ = online(srv, "bob", "other")
    assert_nothing_before(b2, rx("Welcome v1"), pool=True)
    # dave logs in later: gets it once, not at the next login
    d, _ = online(srv, "dave", "one")
    expect(d, rx("Welcome v1"))
    d2, _ = online(srv, "dave", "two")
    assert_nothing_before(d2, rx("Welcome"), pool=True)
    # update: nobody is told now, the next login of anyone gets the new one
    announce(a, "motd/update", "Welcome v2")
    assert_nothing_before(b, rx("Welcome v2"), after=a, pool=True)
    d3, _ = online(srv, "dave", "three")
    expect(d3, rx("Welcome v2"))
    # it survives a restart
    srv.stop()
    srv.restart()
    e, _ = online(srv, "erin", "r")
    expect(e, rx("Welcome v2"))
    # delete: nothing any more
    a, _ = online(srv, "admin", "r2")
    announce(a, "motd/delete", "x")
    a.roundtrip()
    users(srv, "frank")
    f, _ = online(srv, "frank", "r")
    assert_nothing_before(f, rx("Welcome"), pool=True)


def test_only_the_access_rule_may(server_factory):
    srv = server_factory(extra_yaml=CONF)
    users(srv, "admin", "mallory", "bob")
    m, _ = online(srv, "mallory", "r")
    b, _ = online(srv, "bob", "r")
    announce(m, "online", "Free money")
    err = expect(m, r"<message[^>]*type=['\"]error['\"].*?</message>")
    assert "<forbidden" in err, err
    assert_nothing_before(b, rx("Free money"), after=m)
    # other resources of the server are no announcements
    a, _ = online(srv, "admin", "r")
    a.send("<message to='localhost/announce/everyone'><body>x</body></message>")
    err = expect(a, r"<message[^>]*type=['\"]error['\"].*?</message>")
    assert "<service-unavailable" in err, err


def test_commands_from_xmppctl_and_adhoc(server_factory):
    srv = server_factory(extra_yaml=CONF + "  mod_adhoc: {}\n")
    users(srv, "admin", "bob", "gina")
    b, _ = online(srv, "bob", "r")
    r = srv.ctl_run("announce_online", "localhost", "From the console", "Console")
    assert r.returncode == 0, r.stdout + r.stderr
    m = expect(b, rx("From the console"))
    assert "<subject>Console</subject>" in m, m
    r = srv.ctl_run("announce_online", "nowhere.example", "x")
    assert r.returncode != 0
    # the same commands as ad-hoc commands (XEP-0050) for the admin
    a, _ = online(srv, "admin", "r")
    a.send("<iq type='set' id='ah' to='localhost'><command "
           "xmlns='http://jabber.org/protocol/commands' node='api-commands/set_motd' "
           "action='execute'><x xmlns='jabber:x:data' type='submit'>"
           "<field var='host'><value>localhost</value></field>"
           "<field var='body'><value>Motd by ad-hoc</value></field></x></command></iq>")
    r = expect(a, r"<iq[^>]*id=['\"]ah['\"].*?</iq>")
    assert "status='completed'" in r, r
    expect(b, rx("Motd by ad-hoc"))  # sent to the sessions now
    g, _ = online(srv, "gina", "r")  # and at gina's first login
    expect(g, rx("Motd by ad-hoc"))
    r = srv.ctl_run("delete_motd", "localhost")
    assert r.returncode == 0, r.stdout + r.stderr
    users(srv, "hal")
    h, _ = online(srv, "hal", "r")
    assert_nothing_before(h, rx("Motd by ad-hoc"), pool=True)


def test_announce_resource_of_another_domain_is_not_taken(server_factory):
    """A message to DOMAIN/announce/online for a domain this host does not
    serve goes where it is addressed (here: nowhere, an error), and the
    host's users do not get it as an announcement."""
    srv = server_factory(extra_yaml=CONF)
    users(srv, "admin", "bob")
    a, _ = online(srv, "admin", "r")
    b, _ = online(srv, "bob", "r")
    a.send("<message to='elsewhere.example/announce/online' id='x1'><body>Not ours</body>"
           "</message>")
    err = expect(a, r"<message[^>]*id=['\"]x1['\"].*?</message>")
    assert "type='error'" in err and "forbidden" not in err, err
    assert_nothing_before(b, rx("Not ours"), after=a)

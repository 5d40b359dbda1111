"""mod_http_api: the command registry over HTTP (POST /api/COMMAND with a
JSON object of arguments, Basic credentials of an account), as a control
panel or a script calls it."""
import base64
import json
import time
import urllib.error
import urllib.request

from helpers import online, users
from xclient import login
from xmpptest import free_port

ADMIN = ("acl:\n  admin:\n    user: ['admin@localhost']\n"
         "access_rules:\n  admin:\n    allow: admin\n"
         "modules:\n  mod_http_api: {}\n")


def start(server_factory, extra=ADMIN):
    http, c2s = free_port(), free_port()
    listen = (f"  - port: {c2s}\n    ip: 127.0.0.1\n    module: c2s\n"
              f"  - port: {http}\n    ip: 127.0.0.1\n    module: http\n")
    srv = server_factory(listen=listen, extra_yaml=extra)
    srv.c2s_port = c2s
    srv.http_port = http
    return srv


def call(srv, command, args=None, cred="admin@localhost:pw", raw=None, timeout=20):
    """(status, decoded JSON body, headers) of POST /api/command."""
    data = raw if raw is not None else (json.dumps(args).encode() if args is not None else b"")
    req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/api/{command}", data=data,
                                 method="POST", headers={"Content-Type": "application/json"})
    if cred:
        req.add_header("Authorization", "Basic " + base64.b64encode(cred.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, (json.loads(body) if body else None), e.headers
        except ValueError:
            return e.code, body.decode(errors="replace"), e.headers  # the server's text page


def test_commands_as_json(server_factory):
    srv = start(server_factory)
    users(srv, "admin", "bob")
    # a command with arguments (on the pool): the account exists afterwards
    st, body, _ = call(srv, "register", {"user": "carol", "host": "localhost",
                                         "password": "s3cret"})
    assert st == 200 and body == 0, (st, body)
    c, _ = login(srv.c2s_port, "carol", "s3cret", resource="x")
    c.close()
    # results: a list, a number (main loop), a string
    b, _ = online(srv, "bob", "phone")  # kept: the session lives while b does
    st, body, _ = call(srv, "connected_users", {"host": "localhost"})
    assert st == 200 and body == ["bob@localhost/phone"], (st, body)
    st, body, _ = call(srv, "connected_users_number", {})
    assert st == 200 and body == 1, (st, body)
    st, body, _ = call(srv, "status")
    assert st == 200 and isinstance(body, str) and "is running" in body, (st, body)
    # a command that ran and failed, bad arguments, unknown ones
    st, body, _ = call(srv, "kick_session", {"user": "bob", "host": "localhost",
                                             "resource": "nowhere"})
    assert st == 409 and "not connected" in body["message"], (st, body)
    st, body, _ = call(srv, "register", {"user": "a b", "host": "localhost", "password": "x"})
    assert st == 400 and body["status"] == "error", (st, body)
    st, body, _ = call(srv, "register", {"user": "dave"})
    assert st == 400, (st, body)
    st, body, _ = call(srv, "register", raw=b"[1, 2]")
    assert st == 400 and "object" in body["message"], (st, body)
    st, body, _ = call(srv, "register", raw=b"{not json")
    assert st == 400, (st, body)
    st, body, _ = call(srv, "no_such_command", {})
    assert st == 404, (st, body)


def test_credentials_and_rules(server_factory):
    srv = start(server_factory)
    users(srv, "admin", "bob")
    st, _, headers = call(srv, "status", cred=None)
    assert st == 401 and headers["WWW-Authenticate"].startswith("Basic"), st
    st, _, _ = call(srv, "status", cred="admin@localhost:wrong")
    assert st == 401
    st, _, _ = call(srv, "status", cred="nobody@localhost:pw")
    assert st == 401
    st, _, _ = call(srv, "status", cred="not a jid:pw")
    assert st == 401
    # bob is an account but not an administrator
    st, body, _ = call(srv, "register", {"user": "x", "host": "localhost", "password": "y"},
                       cred="bob@localhost:pw")
    assert st == 403, (st, body)
    # GET is not a call
    req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/api/status")
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("GET answered")
    except urllib.error.HTTPError as e:
        assert e.code == 405, e.code


def test_reload_that_removes_the_api_answers(server_factory):
    """reload_config through the API with mod_http_api removed from the
    file: the command stops the very instance it came through; it must
    neither wait for itself nor use the freed instance."""
    srv = start(server_factory)
    users(srv, "admin")
    with open(srv.config_path) as f:
        text = f.read()
    with open(srv.config_path, "w") as f:
        f.write(text.replace("  mod_http_api: {}\n", "  mod_http_api: {}\n  mod_last: {}\n"))
    st, body, _ = call(srv, "reload_config")
    assert st == 200, (st, body)
    with open(srv.config_path, "w") as f:
        f.write(text.replace("modules:\n  mod_http_api: {}\n", "modules:\n  mod_last: {}\n"))
    try:
        call(srv, "reload_config", timeout=3)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        pass  # the handler went with the module: no answer is allowed, a crash is not
    assert srv.proc.poll() is None  # still running
    r = srv.ctl_run("status")
    assert r.returncode == 0, r.stdout + r.stderr
    # the reload took effect (mod_last runs, the API is gone)
    st, _, _ = call(srv, "status")
    assert st == 404, st


def test_stop_through_the_api(server_factory):
    """stop as a call: the server stops cleanly (the stop runs inside the
    queue of calls, which it closes)."""
    srv = start(server_factory)
    users(srv, "admin")
    try:
        st, body, _ = call(srv, "stop")
        assert st == 200 and "stopping" in body, (st, body)
    except (urllib.error.URLError, ConnectionError):
        pass  # the stop may close the connection before the answer is written
    assert srv.proc.wait(timeout=20) == 0

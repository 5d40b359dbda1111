"""xmppctl account and session commands against a running server, and the
external authentication script (ejabberd's protocol) through the wire."""
import os
import stat

from xclient import XClient, login

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXTAUTH = os.path.join(ROOT, "examples", "extauth.py")
CRASHER = os.path.join(ROOT, "tests", "unit", "extauth-crash.py")


def test_account_lifecycle(server):
    ctl = server.ctl_run
    r = ctl("check_account", "alice", "localhost")
    assert r.returncode == 1, r
    r = ctl("register", "Alice", "localhost", "pw1")  # the localpart is case-folded
    assert r.returncode == 0, r.stdout + r.stderr
    assert ctl("register", "alice", "localhost", "pw1").returncode == 1
    assert ctl("check_account", "alice", "localhost").returncode == 0
    assert ctl("check_password", "alice", "localhost", "pw1").returncode == 0
    assert ctl("check_password", "alice", "localhost", "nope").returncode == 1
    assert ctl("change_password", "alice", "localhost", "pw2").returncode == 0
    assert ctl("check_password", "alice", "localhost", "pw1").returncode == 1
    assert ctl("check_password", "alice", "localhost", "pw2").returncode == 0
    assert ctl("register", "bob", "localhost", "x").returncode == 0
    r = ctl("registered_users", "localhost")
    assert r.returncode == 0 and r.stdout.split() == ["alice", "bob"], r.stdout
    # The new password works through the wire, the old one does not.
    c, jid = login(server.c2s_port, "alice", "pw2")
    assert jid.startswith("alice@localhost/")
    c.close()
    assert ctl("unregister", "alice", "localhost").returncode == 0
    assert ctl("check_account", "alice", "localhost").returncode == 1
    assert ctl("unregister", "alice", "localhost").returncode == 1
    assert ctl("registered_users", "localhost").stdout.split() == ["bob"]


def test_usage_errors_and_help(server):
    ctl = server.ctl_run
    r = ctl("register", "alice", "localhost")
    assert r.returncode == 2 and "usage" in (r.stdout + r.stderr)
    r = ctl("register", "a b", "localhost", "pw")
    assert r.returncode == 2 and "user" in (r.stdout + r.stderr)
    r = ctl("register", "alice", "elsewhere.example", "pw")
    assert r.returncode == 2 and "not a host" in (r.stdout + r.stderr)
    r = ctl("no_such_command")
    assert r.returncode == 2
    r = ctl("help")
    assert r.returncode == 0
    for name in ("status", "stop", "register", "unregister", "change_password", "check_account",
                 "check_password", "registered_users", "connected_users",
                 "connected_users_number", "kick_session", "reload_config"):
        assert name in r.stdout, name
    r = ctl("help", "register")
    assert r.returncode == 0 and "USER HOST PASSWORD" in r.stdout and "password" in r.stdout


def test_password_never_logged(server):
    assert server.ctl_run("register", "zed", "localhost", "S3cr3t-Value").returncode == 0
    assert "S3cr3t-Value" not in server.log_text()


def test_ctl_socket_is_private(server):
    mode = stat.S_IMODE(os.stat(server.ctl_socket).st_mode)
    assert mode == 0o600, oct(mode)


def extauth_server(server_factory, tmp_path, program, users="alice:apw\n", pool=2, arg=None):
    users_file = tmp_path / "users.txt"
    users_file.write_text(users)
    return server_factory(extra_yaml=(
        "auth_method: external\n"
        f"extauth_program: \"/usr/bin/python3 {program} {arg or users_file}\"\n"
        f"extauth_pool_size: {pool}\n"
        "extauth_timeout: 3s\n"
        "auth_failure_delay: 50ms\n")), users_file


def test_external_auth_with_example_script(server_factory, tmp_path):
    srv, users = extauth_server(server_factory, tmp_path, EXTAUTH)
    # External hosts offer PLAIN only: the script knows passwords, not SCRAM keys.
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    feats = c.open_stream()
    assert "<mechanism>PLAIN</mechanism>" in feats and "SCRAM" not in feats, feats
    assert c.plain("alice", "wrong") == ("failure", "not-authorized")
    assert c.plain("alice", "apw")[0] == "success"
    # Account commands go through the script too.
    ctl = srv.ctl_run
    assert ctl("check_account", "alice", "localhost").returncode == 0
    assert ctl("check_account", "ghost", "localhost").returncode == 1
    assert ctl("register", "bob", "localhost", "bpw").returncode == 0
    assert "bob:bpw" in users.read_text()
    assert ctl("change_password", "bob", "localhost", "b2").returncode == 0
    assert ctl("check_password", "bob", "localhost", "b2").returncode == 0
    c2, jid = login(srv.c2s_port, "bob", "b2", mech="PLAIN")
    assert jid.startswith("bob@localhost/")
    assert ctl("unregister", "bob", "localhost").returncode == 0
    assert ctl("check_account", "bob", "localhost").returncode == 1


def test_external_auth_slixmpp(server_factory, tmp_path):
    from test_c2s import slix_login
    srv, _ = extauth_server(server_factory, tmp_path, EXTAUTH, users="carl:cpw\n")
    ok, jid, _ = slix_login(srv, "carl@localhost", "cpw")
    assert ok and jid.startswith("carl@localhost/"), srv.log_text()
    assert "mech=PLAIN" in srv.log_text()


def test_external_script_crash_mid_request(server_factory, tmp_path):
    # extauth-crash.py: password "crash" kills the script mid-request,
    # "good" succeeds; argv[1] is a directory it records its spawns in.
    spawns = tmp_path / "spawns"
    spawns.mkdir()
    srv, _ = extauth_server(server_factory, tmp_path, CRASHER, pool=1, arg=spawns)
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    # The script dies while answering this one: a clean temporary failure.
    assert c.plain("alice", "crash") == ("failure", "temporary-auth-failure")
    # The script was restarted: the next attempt works.
    assert c.plain("alice", "good")[0] == "success"
    assert srv.proc.poll() is None
    assert len([p for p in os.listdir(spawns) if p.isdigit()]) >= 2  # it was restarted

"""The server process: start-up, readiness, configuration check, signals,
graceful stop, the control socket (xmppctl)."""
import os
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import build_dir
from xmpptest import RawStream, Server, free_port, have_ipv6


def test_server__ready_then_clean_stop(server):
    log = server.log_text()
    assert 'event="xmppd ready"' in log
    assert "workers=2" in log
    s = server.raw()
    s.open_stream()
    s.recv_until(r"<stream:features")
    s.close()
    assert server.stop() == 0
    assert 'event="xmppd stopped"' in server.log_text()


def test_server__files_are_private_in_a_shared_data_dir(server_factory, tmp_path):
    """Issue 12 #6: with a data_dir that others may read (0755, as packages
    create /var/lib/xmppd), every file xmppd writes (database and its
    -wal/-shm, certificates, node secret, log) is for its user only."""
    srv = Server(build_dir(), tmp_path / "srv")
    os.makedirs(srv.data_dir, mode=0o755, exist_ok=True)
    os.chmod(srv.data_dir, 0o755)
    old = os.umask(0o022)  # the usual umask of a service
    try:
        srv.start()
    finally:
        os.umask(old)
    try:
        r = srv.ctl_run("register", "ivy", "localhost", "pw")  # a write: the WAL exists
        assert r.returncode == 0, r.stderr
        written = [srv.log_path]
        for root, dirs, files in os.walk(srv.data_dir):
            written += [os.path.join(root, f) for f in files]
            for d in dirs:
                mode = stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode)
                assert mode & 0o077 == 0, (d, oct(mode))
        names = {os.path.basename(f) for f in written}
        assert {"xmppd.db", "xmppd.db-wal", "xmppd.db-shm", "secret", "localhost.pem"} <= names, \
            names
        for f in written:
            mode = stat.S_IMODE(os.stat(f).st_mode)
            assert mode & 0o077 == 0, (f, oct(mode))
    finally:
        assert srv.stop() == 0


def test_server__log_lines_are_key_value(server):
    for line in server.log_text().splitlines():
        parts = line.split(" ", 3)
        assert parts[0].endswith("Z") and "T" in parts[0], line
        assert parts[1].startswith("level="), line
        assert parts[2].startswith('event='), line


def test_server__no_config_runs_on_defaults(tmp_path):
    """DESIGN.md 6: no file at all → localhost, ./var, c2s on 127.0.0.1 and ::1:5222."""
    for addr, fam in (("127.0.0.1", socket.AF_INET),) + ((("::1", socket.AF_INET6),) if have_ipv6() else ()):
        with socket.socket(fam, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((addr, 5222))
            except OSError:
                pytest.skip(f"port 5222 on {addr} is in use on this machine")
    errf = open(tmp_path / "stderr.log", "wb")
    proc = subprocess.Popen([os.path.join(build_dir(), "xmppd")], cwd=tmp_path,
                            stdout=errf, stderr=errf)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            text = (tmp_path / "stderr.log").read_text(errors="replace")
            if 'event="xmppd ready"' in text:
                break
            assert proc.poll() is None, text
            time.sleep(0.05)  # a starting process answers nothing yet: poll its log
        else:
            raise AssertionError("not ready: " + text)
        assert (tmp_path / "var" / "xmppd.db").exists()
        mode = os.stat(tmp_path / "var").st_mode & 0o777
        assert mode == 0o700
        sock = tmp_path / "var" / "xmppd.sock"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        families = [("127.0.0.1", socket.AF_INET)]
        if have_ipv6():
            families.append(("::1", socket.AF_INET6))
        for addr, fam in families:
            s = RawStream(addr, 5222, fam)
            s.open_stream("localhost")
            s.recv_until(r"<stream:features")
            s.close()
        r = subprocess.run([os.path.join(build_dir(), "xmppctl"), "status"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert "host localhost" in r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        errf.close()
    assert rc == 0
    text = (tmp_path / "stderr.log").read_text(errors="replace")
    assert "ERROR: AddressSanitizer" not in text and "runtime error:" not in text, text


def test_server__check_config_accepts_valid_file(server_factory, tmp_path):
    srv = server_factory()
    r = subprocess.run([srv.bin, "--check-config", "--config", srv.config_path],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


def test_server__check_config_reports_file_line_column(tmp_path):
    cfg = tmp_path / "bad.yml"
    cfg.write_text("hosts:\n  - localhost\nlisten:\n  - port: 52x2\n    module: c2s\n")
    r = subprocess.run([os.path.join(build_dir(), "xmppd"), "--check-config", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert f"{cfg}:4:11:" in r.stderr, r.stderr
    assert "port" in r.stderr


def test_server__unknown_option_is_an_error(tmp_path):
    cfg = tmp_path / "bad.yml"
    cfg.write_text("hosts: [localhost]\nloglevl: debug\n")
    r = subprocess.run([os.path.join(build_dir(), "xmppd"), "--check-config", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert f"{cfg}:2:1:" in r.stderr and "loglevl" in r.stderr, r.stderr


@pytest.mark.parametrize("text, where, why", [
    # A socket path longer than sun_path used to pass the check and fail at start.
    ("hosts: [localhost]\nctl_socket: /" + "s" * 120 + "\n", ":2:13: ctl_socket:",
     "path too long for a Unix socket"),
    # 0 used to mean the 64 KB default, silently.
    ("hosts: [localhost]\nlisten:\n  - port: 5222\n    max_stanza_size: 0\n",
     ":4:22: listen[0].max_stanza_size:", "0 is too small (at least 10000 bytes"),
    ("hosts: localhost\n", ":1:8: hosts:", "expected a list of domains, got a scalar"),
])
def test_server__check_config_refuses(tmp_path, text, where, why):
    cfg = tmp_path / "bad.yml"
    cfg.write_text(text)
    r = subprocess.run([os.path.join(build_dir(), "xmppd"), "--check-config", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{cfg}{where}" in r.stderr and why in r.stderr, r.stderr


def test_server__version_and_help():
    xmppd = os.path.join(build_dir(), "xmppd")
    r = subprocess.run([xmppd, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("xmppd ")
    r = subprocess.run([xmppd, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--check-config" in r.stdout
    r = subprocess.run([xmppd, "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2


def test_server__port_in_use_is_a_clear_error(tmp_path):
    from xmpptest import Server
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        srv = Server(build_dir(), tmp_path / "s",
                     listen=f"  - port: {port}\n    ip: 127.0.0.1\n    module: c2s\n")
        srv.start(wait=False)
        try:
            rc = srv.proc.wait(20)
        finally:
            srv.stop()
        assert rc == 1
        assert f"cannot listen on 127.0.0.1:{port}" in srv.stderr_text()


def test_server__sighup_reopens_log_and_reloads(server):
    os.rename(server.log_path, server.log_path + ".1")
    os.kill(server.pid, signal.SIGHUP)
    # A signal has no answer to wait for: poll the log (this cannot pass
    # before the reload is logged).
    deadline = time.time() + 10
    while time.time() < deadline:
        if os.path.exists(server.log_path) and 'event="config reloaded"' in server.log_text():
            break
        time.sleep(0.05)
    assert 'event="config reloaded"' in server.log_text()


def test_server__sigterm_closes_streams_with_system_shutdown(server):
    s = server.raw()
    s.open_stream()
    s.recv_until(r"<stream:features")
    os.kill(server.pid, signal.SIGTERM)
    assert s.stream_error() == "system-shutdown"
    assert server.stop() == 0


def test_server__ipv6_listener(server_factory):
    if not have_ipv6():
        pytest.skip("no IPv6 loopback")
    port = free_port(socket.AF_INET6, "::1")
    srv = server_factory(listen=f"  - port: {port}\n    ip: '::1'\n    module: c2s\n")
    s = RawStream("::1", port, socket.AF_INET6)
    s.open_stream()
    s.recv_until(r"<stream:features")
    s.close()


def test_ctl__status_help_and_errors(server):
    r = server.ctl_run("status")
    assert r.returncode == 0, r.stderr
    assert "is running" in r.stdout and "host localhost" in r.stdout
    r = server.ctl_run("help")
    assert r.returncode == 0 and "reload_config" in r.stdout and "stop" in r.stdout
    r = server.ctl_run("no_such_command")
    assert r.returncode == 2 and "unknown command" in r.stderr
    r = server.ctl_run("status", "extra")
    assert r.returncode == 2
    assert stat.S_IMODE(os.stat(server.ctl_socket).st_mode) == 0o600


def test_ctl__reload_with_broken_file_keeps_running(server):
    good = open(server.config_path).read()
    with open(server.config_path, "w") as f:
        f.write(good + "bogus_option: 1\n")
    r = server.ctl_run("reload_config")
    assert r.returncode == 1
    assert "bogus_option" in r.stderr
    s = server.raw()
    s.open_stream()
    s.recv_until(r"<stream:features")
    s.close()
    with open(server.config_path, "w") as f:
        f.write(good)
    assert server.ctl_run("reload_config").returncode == 0


def test_ctl__stop_and_not_running(server):
    r = server.ctl_run("stop")
    assert r.returncode == 0
    assert server.proc.wait(20) == 0
    r = server.ctl_run("status")
    assert r.returncode == 3


# ---- reloads that cannot be applied (issue: hardening 14) ------------------------------------

def _log_line(server, event, timeout=10):
    """The first log line of `event`.  A SIGHUP has no answer to wait for:
    this polls the log, and cannot pass before the line is written."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in server.log_text().splitlines():
            if f'event="{event}"' in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no {event} in the log:\n" + server.log_text())


def _session(server):
    from helpers import online, users
    users(server, "ann")
    c, _ = online(server, "ann")
    return c


def _host_unknown(server, host):
    s = server.raw()
    s.open_stream(host)
    return s.stream_error() == "host-unknown"


def test_reload__empty_file_is_refused(server):
    """An empty file used to be accepted and run the built-in defaults."""
    c = _session(server)
    good = open(server.config_path).read()
    open(server.config_path, "w").write("")
    os.kill(server.pid, signal.SIGHUP)
    line = _log_line(server, "config reload refused")
    assert f"{server.config_path}:1:1: (top level): the file is empty" in line, line
    assert 'event="config reloaded"' not in server.log_text()
    c.roundtrip()  # the session still works
    r = server.ctl_run("reload_config")
    assert r.returncode == 1 and "the file is empty" in r.stderr, r.stderr
    assert "reload refused: the running configuration stays in force" in r.stderr
    open(server.config_path, "w").write(good)
    assert server.ctl_run("reload_config").returncode == 0
    c.roundtrip()


def test_reload__dropping_every_host_is_refused(server):
    c = _session(server)
    good = open(server.config_path).read()
    open(server.config_path, "w").write(good.replace("  - localhost\n", "  - other.example\n"))
    r = server.ctl_run("reload_config")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{server.config_path}:2:3: hosts: serves none of the running hosts (localhost)" \
        in r.stderr, r.stderr
    c.roundtrip()
    assert _host_unknown(server, "other.example")  # nothing of the file was applied
    assert "serves none of the running hosts" in _log_line(server, "config reload refused")


def test_reload__listener_change_needs_restart(server):
    c = _session(server)
    good = open(server.config_path).read()
    port = free_port()
    changed = good.replace(f"port: {server.c2s_port}\n", f"port: {port}\n")
    changed = changed.replace("  - localhost\n", "  - localhost\n  - extra.example\n")
    open(server.config_path, "w").write(changed)
    r = server.ctl_run("reload_config")
    assert r.returncode == 1, r.stdout + r.stderr
    want = (f"{server.config_path}:10:11: listen[0].port: changed (was {server.c2s_port}, "
            f"now {port}): takes effect only at a restart")
    assert want in r.stderr, r.stderr
    assert want in _log_line(server, "config reload refused")
    c.roundtrip()
    # Never half-applied: the host added in the same file is not served, and
    # the old port is the one that listens.
    assert _host_unknown(server, "extra.example")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    open(server.config_path, "w").write(good.replace("  - localhost\n",
                                                     "  - localhost\n  - extra.example\n"))
    r = server.ctl_run("reload_config")
    assert r.returncode == 0, r.stderr
    s = server.raw()
    s.open_stream("extra.example")
    s.recv_until(r"<stream:features")  # a live change applies
    s.close()


def test_reload__data_dir_change_needs_restart(server, tmp_path):
    """data_dir was half-applied: the certificate of a reload went to the new
    directory while the database stayed in the old one."""
    c = _session(server)
    good = open(server.config_path).read()
    newdir = str(tmp_path / "elsewhere")
    open(server.config_path, "w").write(
        good.replace(f"data_dir: {server.data_dir}\n", f"data_dir: {newdir}\n"))
    os.kill(server.pid, signal.SIGHUP)
    line = _log_line(server, "config reload refused")
    assert (f'{server.config_path}:6:11: data_dir: changed (was "{server.data_dir}", '
            f'now "{newdir}")') in line, line
    assert "takes effect only at a restart" in line
    c.roundtrip()
    assert not os.path.exists(newdir)
    r = server.ctl_run("reload_config")
    assert r.returncode == 1 and "data_dir: changed" in r.stderr and "sql_database" in r.stderr


# ---- xmppctl: listener roles and socket errors (issue: hardening 16) -------------------------

def test_ctl__status_shows_each_listener_role(server_factory):
    """status used to print every listener as "c2s"."""
    c2s, s2s, comp = free_port(), free_port(), free_port()
    srv = server_factory(listen=(f"  - port: {c2s}\n    ip: 127.0.0.1\n    module: c2s\n"
                                 f"  - port: {s2s}\n    ip: 127.0.0.1\n    module: s2s\n"
                                 f"  - port: {comp}\n    ip: 127.0.0.1\n    module: component\n"
                                 f"    password: secret\n"))
    r = srv.ctl_run("status")
    assert r.returncode == 0, r.stderr
    assert f"listener c2s 127.0.0.1:{c2s} " in r.stdout, r.stdout
    assert f"listener s2s 127.0.0.1:{s2s} " in r.stdout, r.stdout
    assert f"listener component 127.0.0.1:{comp} " in r.stdout, r.stdout


def test_ctl__permission_denied_is_not_server_down(server):
    """A socket this user may not use was reported as "is xmppd running?"."""
    if os.geteuid() == 0:
        # Root may use any socket: ask as nobody (the private directories
        # and the 0600 socket keep it out).
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
               server.ctl, "--socket", server.ctl_socket, "status"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    else:
        os.chmod(server.ctl_socket, 0)
        r = server.ctl_run("status")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert f"permission denied on {server.ctl_socket}: run as the xmppd user or root" \
        in r.stderr, r.stderr
    assert "is xmppd running" not in r.stderr
    # Nothing listening: still "is xmppd running?", exit 3.
    r = subprocess.run([server.ctl, "--socket", server.ctl_socket + ".none", "status"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 3 and "is xmppd running?" in r.stderr, r.stderr

"""Loadable modules (docs/modules.md): the guide's examples mod_echo and
mod_cputime, built as .so files in <build>/examples and loaded through
module_dir; plus the errors an operator sees for an unknown module; plus the
same modules built out of tree with examples/Makefile against the headers
and xmppd.pc that `meson install` puts into a DESTDIR."""
import glob
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT, build_dir
from helpers import users
from xclient import login


def modules_yaml(extra="", module_dir=None):
    return (f"module_dir: {module_dir or os.path.join(build_dir(), 'examples')}\n"
            "modules:\n"
            "  mod_echo:\n"
            "    host: \"echo.localhost\"\n"
            "  mod_cputime: {}\n" + extra)


def registered_login(srv, user="alice", pw="secret-pw"):
    users(srv, user, password=pw)
    return login(srv.c2s_port, user, pw)


def test_echo_returns_message_to_sender(server_factory):
    srv = server_factory(extra_yaml=modules_yaml())
    c, jid = registered_login(srv)
    c.send("<message to='echo.localhost' id='m1' type='chat'><body>hello echo</body></message>")
    m = c.recv_until(r"<message[^>]*>.*?</message>").group(0).decode().replace('"', "'")
    assert "from='echo.localhost'" in m, m
    assert f"to='{jid}'" in m, m
    assert "<body>hello echo</body>" in m, m


def test_echo_does_not_answer_errors(server_factory):
    srv = server_factory(extra_yaml=modules_yaml())
    c, jid = registered_login(srv)
    c.send("<message to='echo.localhost' id='e1' type='error'><body>x</body></message>")
    c.send("<message to='echo.localhost' id='m2'><body>after</body></message>")
    m = c.recv_until(r"<message[^>]*>.*?</message>").group(0).decode().replace('"', "'")
    # The first message that comes back is the normal one: the error was dropped.
    assert "id='m2'" in m, m


def test_cputime_iq(server_factory):
    srv = server_factory(extra_yaml=modules_yaml())
    c, jid = registered_login(srv)
    c.send("<iq type='get' to='localhost' id='c1'><query xmlns='ejabberd:cputime'/></iq>")
    r = c.recv_until(r"<iq[^>]*id=['\"]c1['\"][^>]*(/>|>.*?</iq>)").group(0).decode()
    r = r.replace('"', "'")
    assert "type='result'" in r, r
    m = re.search(r"<cputime[^>]*>(\d+)</cputime>", r)
    assert m, r
    # A sanitizer build with TLS and SCRAM behind it has used CPU time.
    assert int(m.group(1)) > 0, r
    # The module also registered a command.
    out = srv.ctl_run("cputime")
    assert out.returncode == 0 and out.stdout.strip().isdigit(), out


def test_cputime_not_enabled_is_service_unavailable(server_factory):
    srv = server_factory()
    c, jid = registered_login(srv)
    c.send("<iq type='get' to='localhost' id='c2'><query xmlns='ejabberd:cputime'/></iq>")
    r = c.recv_until(r"<iq[^>]*id=['\"]c2['\"][^>]*(/>|>.*?</iq>)").group(0).decode()
    assert "service-unavailable" in r, r


def test_unknown_module_fails_check_config(tmp_path):
    cfg = tmp_path / "xmppd.yml"
    cfg.write_text(f"hosts: [localhost]\ndata_dir: {tmp_path}/var\n"
                   f"module_dir: {os.path.join(build_dir(), 'examples')}\n"
                   "modules:\n  mod_nosuch: {}\n")
    p = subprocess.run([os.path.join(build_dir(), "xmppd"), "--config", str(cfg),
                        "--check-config"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "mod_nosuch" in p.stderr, p.stderr


def test_bad_module_option_names_location(tmp_path):
    cfg = tmp_path / "xmppd.yml"
    cfg.write_text(f"hosts: [localhost]\ndata_dir: {tmp_path}/var\n"
                   f"module_dir: {os.path.join(build_dir(), 'examples')}\n"
                   "modules:\n  mod_echo:\n    hots: x\n")
    p = subprocess.run([os.path.join(build_dir(), "xmppd"), "--config", str(cfg),
                        "--check-config"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "modules.mod_echo.hots" in p.stderr and "xmppd.yml:6" in p.stderr, p.stderr


def test_reload_adds_and_removes_module(server_factory):
    srv = server_factory(extra_yaml=modules_yaml())
    c, jid = registered_login(srv)
    # Drop mod_echo from the file and reload: the service route is gone.
    text = open(srv.config_path).read()
    open(srv.config_path, "w").write(text.replace("  mod_echo:\n    host: \"echo.localhost\"\n", ""))
    assert srv.ctl_run("reload_config").returncode == 0
    c.send("<message to='echo.localhost' id='m3'><body>gone</body></message>")
    m = c.recv_until(r"<message[^>]*>.*?</message>").group(0).decode().replace('"', "'")
    assert "type='error'" in m, m
    # And back.
    open(srv.config_path, "w").write(text)
    assert srv.ctl_run("reload_config").returncode == 0
    c.send("<message to='echo.localhost' id='m4'><body>back</body></message>")
    m = c.recv_until(r"<message[^>]*id='m4'[^>]*>.*?</message>").group(0).decode()
    assert "<body>back</body>" in m and "type='error'" not in m.replace('"', "'"), m


def test_examples_build_out_of_tree_against_installed_api(server_factory, tmp_path):
    # docs/modules.md 7: `meson install` gives include/xmppd and xmppd.pc;
    # examples/Makefile builds the modules with those alone, from a copy of
    # their sources outside the tree; the server loads what it built.
    if not shutil.which("cc"):
        pytest.skip("no C compiler (cc) to build the example modules with")
    dest = tmp_path / "destdir"
    p = subprocess.run(["meson", "install", "-C", build_dir(), "--destdir", str(dest),
                        "--no-rebuild", "--quiet"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    # Every public header and X-macro list is installed, under <prefix>/include/xmppd.
    incdirs = glob.glob(str(dest / "**" / "include" / "xmppd"), recursive=True)
    assert len(incdirs) == 1, incdirs
    assert sorted(os.listdir(incdirs[0])) == sorted(os.listdir(os.path.join(ROOT, "include",
                                                                             "xmppd")))
    include = os.path.dirname(incdirs[0])
    pcs = glob.glob(str(dest / "**" / "pkgconfig" / "xmppd.pc"), recursive=True)
    assert len(pcs) == 1, pcs
    pc = open(pcs[0]).read()
    assert "Cflags: -I${includedir}" in pc, pc
    # moduledir is the server's module_dir default (XD_MODULE_DIR of this build).
    m = re.search(r'XD_MODULE_DIR "([^"]*)"', open(os.path.join(build_dir(),
                                                                 "xd_version.h")).read())
    prefix = re.search(r"^prefix=(.*)$", pc, re.M).group(1)
    moduledir = re.search(r"^moduledir=(.*)$", pc, re.M).group(1).replace("${prefix}", prefix)
    assert moduledir == m.group(1), (moduledir, m.group(1))

    src = tmp_path / "src"
    src.mkdir()
    for f in ("Makefile", "mod_echo.c", "mod_cputime.c"):
        shutil.copy(os.path.join(ROOT, "examples", f), src)
    env = dict(os.environ, CFLAGS="-std=c17 -O2 -Wall -Wextra -Werror")
    args = []
    if shutil.which("pkg-config"):
        env.update(PKG_CONFIG_PATH=os.path.dirname(pcs[0]), PKG_CONFIG_SYSROOT_DIR=str(dest))
    else:
        args.append(f"XMPPD_CFLAGS=-I{include}")
    p = subprocess.run(["make", "-C", str(src)] + args, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"-I{include} " in p.stdout, p.stdout  # the installed headers, nothing else
    assert "-I" + os.path.join(ROOT, "") not in p.stdout, p.stdout
    for so in ("mod_echo.so", "mod_cputime.so"):
        assert (src / so).exists(), so

    srv = server_factory(extra_yaml=modules_yaml(module_dir=str(src)))
    c, jid = registered_login(srv)
    c.send("<message to='echo.localhost' id='o1' type='chat'><body>out of tree</body></message>")
    m = c.recv_until(r"<message[^>]*>.*?</message>").group(0).decode().replace('"', "'")
    assert "from='echo.localhost'" in m and f"to='{jid}'" in m, m
    assert "<body>out of tree</body>" in m, m
    c.send("<iq type='get' to='localhost' id='o2'><query xmlns='ejabberd:cputime'/></iq>")
    r = c.recv_until(r"<iq[^>]*id=['\"]o2['\"][^>]*(/>|>.*?</iq>)").group(0).decode()
    r = r.replace('"', "'")
    assert "type='result'" in r and re.search(r"<cputime unit='ms'>\d+</cputime>", r), r
    out = srv.ctl_run("cputime")
    assert out.returncode == 0 and out.stdout.strip().isdigit(), out

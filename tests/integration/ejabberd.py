"""A private ejabberd (the Debian package) for federation interop tests.

Everything runs on loopback, as the current user (root in CI), in a temporary
directory, and every process is stopped by its PID at teardown.  The test CA,
the self-signed certificates and the dnsmasq that serves the SRV records are
those of prosody.py (TestCA, self_signed, DnsServer), imported, not copied, and
so are the process and lab plumbing (Daemon: ports, stop by PID, logs; Lab and
run_lab: the CA, the DNS, skip or fail, teardown).

  Ejabberd        one Erlang VM running ejabberd, started with `erl` directly
                  (see below), with its own ejabberd.yml, inetrc, Mnesia spool,
                  log directory, node name, cookie and distribution port.
  EjabberdLab     what the `ejabberd_lab` fixture yields: a directory, a lazily
                  made TestCA and DnsServer, and the ejabberd servers started
                  through it.

Why not `ejabberdctl start`
---------------------------
Debian's /usr/sbin/ejabberdctl (INSTALLUSER=ejabberd) re-executes itself
through `su ejabberd` when run as root and refuses any other user, so it can
neither run ejabberd as the current user nor read a pytest tmp_path (mode
0700).  The fixture therefore runs what `ejabberdctl foreground` would run,
as a child whose PID it owns:

    erl -name <node>@127.0.0.1 -setcookie <random> -noinput +K true
        -start_epmd false -erl_epmd_port <dist port>
        -kernel inet_dist_use_interface '{127,0,0,1}'
        -mnesia dir '"<dir>/spool"' -s ejabberd

with EJABBERD_CONFIG_PATH, EJABBERD_LOG_PATH, ERL_INETRC, ERL_LIBS (read from
ejabberdctl, /usr/lib/x86_64-linux-gnu on Debian 12), HOME=<dir> and
ERL_CRASH_DUMP_BYTES=0 in its environment.  `erl` exec()s erlexec which
exec()s beam.smp, so the PID is the VM's; SIGTERM makes the VM run
init:stop() (a clean ejabberd shutdown), SIGKILL follows after 20 s.

No epmd: -start_epmd false keeps erl from starting one, and -erl_epmd_port
makes the node listen for distribution on a fixed private port and assume
that port for the nodes it calls (the approach of the benchmark's
ERL_DIST_PORT).  ERL_EPMD_PORT points at another private port where nothing
listens, so the node's attempt to register with an epmd fails (then it runs
unregistered, which -erl_epmd_port allows) instead of reaching a system
epmd on 4369.  Administration (`ctl()`, `register()`) runs ejabberd_ctl the
way ejabberdctl does, in a second short-lived VM: -hidden -dist_listen false,
same cookie and port.  Node names use the host 127.0.0.1 so that neither VM
resolves a host name to reach the other.

How name resolution is redirected (no /etc/hosts, no real DNS)
---------------------------------------------------------------
ejabberd 23.01's outgoing s2s (xmpp_stream_out in p1_xmpp 1.6.1, read from
the installed beam's debug info) resolves in two steps:

  SRV   inet_res:getbyname("_xmpps-server._tcp.D", srv), then
        "_xmpp-server._tcp.D": Erlang's own DNS client, configured by the
        file named in ERL_INETRC (ejabberdctl points it at <config>/inetrc);
  A     net:getaddrinfo(Target, Port): the C library's getaddrinfo(), i.e.
        /etc/hosts and /etc/resolv.conf, which no ejabberd or Erlang option
        redirects (no SRV answer: getaddrinfo(D, 5269)).

The fixture writes an inetrc that sends every inet_res query to the lab's
dnsmasq:

    {resolv_conf, ""}.                    no resolv.conf: only ours
    {hosts_file, "<dir>/hosts"}.          only localhost: /etc/hosts ignored
    {lookup, [file, dns]}.                no "native" (getaddrinfo) lookups
    {nameserver, {127,0,0,1}, <dnsmasq port>}.
    {timeout, 2000}.  {retry, 2}.

inet_db re-reads those files every few seconds (checked with OTP 25.2):
without resolv_conf, /etc/resolv.conf's nameservers replace the inetrc
one, and so do an empty file's (none) at its first re-read, ~5 s after the
start; `""` reads and monitors no file.  With an *empty* hosts file, every
inet:gethostbyname answers nxdomain without asking dns once the file has
been re-read.

For the second step, EjabberdLab.add_peer() publishes the peer's SRV record
with the peer's IP address as its target ("_xmpp-server._tcp.xmppd.test SRV
0 0 <port> 127.0.0.1."): dnsmasq serves the dotted quad as a name, inet_res
returns it as the string "127.0.0.1", and getaddrinfo() parses it as a
numeric address without any lookup.  The peer's A record is published too,
so a peer (xmppd) resolving its own names is unaffected.  ejabberd's own SRV
record, which only xmppd reads, names ejabberd's domain as usual.  A working
connection on the random ports proves the SRV record was used (without it,
ejabberd would try <domain>:5269 through getaddrinfo and fail).  Domains
must end in .test (the only zone dnsmasq answers).

ejabberd options that matter (all written by Ejabberd.__init__)
--------------------------------------------------------------
  hosts, certfiles       the domain; its certificate chain and key (PEM)
  ca_file, s2s_cafile    the trust anchor peers are verified against
  s2s_use_starttls       "required" (default): TLS before authentication
  listen                 ejabberd_c2s (starttls_required) and ejabberd_s2s_in
                         on `ip` and free ports
  mod_s2s_dialback       loaded when dialback=True.  It also turns off the
                         outgoing certificate check (its s2s_out_tls_verify
                         hook), so with dialback=False an outgoing stream
                         needs a peer certificate that verifies against
                         s2s_cafile and names the peer, and authenticates
                         with SASL EXTERNAL only.
  auth_password_format   plain: clients may use PLAIN or SCRAM-SHA-1
  s2s_max_retry_delay    5 s instead of 300 s after a failed connection
  loglevel               debug (XML of every stream in ejabberd.log)

Clients: xclient.login(e.c2s_port, user, pw, mech="SCRAM-SHA-1",
host=e.ip, domain=e.domain).
"""
import glob
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time

import pytest

from prosody import Daemon, Lab, Unavailable, _read, run_lab
from xmpptest import free_port

ERL = shutil.which("erl") or "/usr/bin/erl"
EJABBERDCTL = "/usr/sbin/ejabberdctl"
DEFAULT_ERL_LIBS = "/usr/lib/x86_64-linux-gnu"
MIN_VERSION = (21, 0)  # mod_s2s_dialback, YAML options and p1_xmpp streams as used here


# ---- installation -------------------------------------------------------------

def erl_libs():
    """The ERL_LIBS that ejabberdctl sets (where ejabberd-<vsn>/ebin lives)."""
    text = _read(EJABBERDCTL)
    m = re.search(r"^ERL_LIBS=['\"]?([^'\"\n]+)", text, re.M)
    return m.group(1) if m else DEFAULT_ERL_LIBS


def installed_version():
    """(major, minor) of the installed ejabberd, read from ebin/ejabberd.app,
    or None when it is not installed."""
    for lib in erl_libs().split(":") + ["/usr/lib/erlang/lib"]:
        for app in sorted(glob.glob(os.path.join(lib, "ejabberd-*", "ebin", "ejabberd.app"))):
            m = re.search(r"\{\s*vsn\s*,\s*\"(\d+)\.(\d+)", _read(app))
            if m:
                return int(m.group(1)), int(m.group(2))
    return None


def check_ejabberd():
    """Raises Unavailable naming the Debian package when ejabberd or Erlang
    is missing or too old; returns the version."""
    if not os.access(ERL, os.X_OK):
        raise Unavailable("erl is not installed (Debian package: erlang-base, "
                          "a dependency of ejabberd)")
    v = installed_version()
    if v is None:
        raise Unavailable(f"ejabberd is not installed (Debian package: ejabberd; "
                          f"no ejabberd-*/ebin/ejabberd.app under {erl_libs()})")
    if v < MIN_VERSION:
        raise Unavailable(f"ejabberd {v[0]}.{v[1]:02d} is older than "
                          f"{MIN_VERSION[0]}.{MIN_VERSION[1]:02d}")
    return v


def yq(s):
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(str(s))


# ---- ejabberd -------------------------------------------------------------------

class Ejabberd(Daemon):
    """One ejabberd VM: its own directory, config, spool, log, node and ports.

    domain          the served host (must end in .test when `dns` is given)
    ip              the loopback address both listeners bind to (and the
                    source address of outgoing s2s connections)
    c2s_port, s2s_port   default: free ports on ip
    cert            CertPaths for domain (required: c2s and s2s use TLS)
    cafile          trust anchor(s) for verifying peers; default cert.ca
    dialback        load mod_s2s_dialback (see the module doc)
    starttls        s2s_use_starttls: "required", "optional" or "false"
    dns             a started DnsServer to resolve peers through, or None
                    (then Erlang's default resolver configuration is used)
    log_level       ejabberd's loglevel ("debug")
    modules         extra `modules:` entries as YAML text (indented 2)
    extra_config    YAML text appended at the top level
    """

    name = "ejabberd"
    stop_timeout = 20  # SIGTERM makes the VM run init:stop(), a clean shutdown

    def __init__(self, dirpath, domain="ejabberd.test", ip="127.0.0.2", c2s_port=None,
                 s2s_port=None, cert=None, cafile=None, dialback=True, starttls="required",
                 dns=None, log_level="debug", modules="", extra_config=""):
        if cert is None:
            raise ValueError("ejabberd needs a certificate (self_signed() or TestCA.issue())")
        self.dir = os.path.abspath(str(dirpath))
        self.domain = domain                                       # the served host
        self.ip = ip                                               # listen + source address
        self.c2s_port = c2s_port or free_port(socket.AF_INET, ip)  # client port
        self.s2s_port = s2s_port or free_port(socket.AF_INET, ip)  # server port
        self.cert = cert                                           # CertPaths
        self.cafile = cafile or cert.ca                            # peers' trust anchor
        self.dialback = dialback                                   # mod_s2s_dialback loaded
        self.dns = dns                                             # DnsServer or None
        tag = secrets.token_hex(4)
        self.node = f"xdej{tag}@127.0.0.1"                         # Erlang node name
        self.cookie = secrets.token_hex(16)                        # distribution cookie
        self.dist_port = free_port()                               # node's distribution port
        self.epmd_port = free_port()                               # nobody listens here
        self.config_path = os.path.join(self.dir, "ejabberd.yml")
        self.inetrc_path = os.path.join(self.dir, "inetrc")        # Erlang resolver config
        self.spool_dir = os.path.join(self.dir, "spool")           # Mnesia database
        self.log_dir = os.path.join(self.dir, "logs")
        self.log_path = os.path.join(self.log_dir, "ejabberd.log")  # + error.log, crash.log
        self.stdout_path = os.path.join(self.dir, "stdout.log")    # the VM's own output
        self.proc = None                                           # the running VM
        self._out = None                                           # its stdout file
        for d in (self.dir, self.spool_dir, self.log_dir):
            os.makedirs(d, exist_ok=True)
        if dns is not None and dns.port is None:
            raise ValueError("start the DnsServer before creating ejabberd")
        self._write_inetrc()
        self._write_config(starttls, log_level, modules, extra_config)

    def _write_inetrc(self):
        # inet_db re-reads a resolv_conf and a hosts_file every few seconds.
        # No resolv.conf at all (`""`: none read or monitored): a file's
        # nameservers, even an empty file's none, replace ours at the first
        # re-read, about 5 s after the start (an empty file left ejabberd
        # with no nameserver: "DNS lookup failed: enoname" once a test took
        # that long).  The hosts file must not be empty: OTP 25 then answers
        # nxdomain for every "file" lookup after the first re-read, without
        # trying dns.
        hosts = os.path.join(self.dir, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n")
        lines = ["%% generated by tests/integration/ejabberd.py",
                 '{resolv_conf, ""}.',
                 f"{{hosts_file, {yq(hosts)}}}."]
        if self.dns is not None:
            ip = ",".join(self.dns.ip.split("."))
            lines += ["{lookup, [file, dns]}.",
                      f"{{nameserver, {{{ip}}}, {self.dns.port}}}.",
                      "{timeout, 2000}.",
                      "{retry, 2}."]
        else:
            lines.append("{lookup, [file, native]}.")
        with open(self.inetrc_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _write_config(self, starttls, log_level, modules, extra_config):
        mods = ["  mod_disco: {}", "  mod_ping: {}", "  mod_roster: {}"]
        if self.dialback:
            mods.append("  mod_s2s_dialback: {}")
        text = f"""# generated by tests/integration/ejabberd.py
hosts:
  - {yq(self.domain)}
loglevel: {log_level}
log_rotate_count: 0
hide_sensitive_log_data: false
fqdn: {yq(self.domain)}
certfiles:
  - {yq(self.cert.cert)}
  - {yq(self.cert.key)}
ca_file: {yq(self.cafile)}
s2s_cafile: {yq(self.cafile)}
s2s_use_starttls: {starttls}
s2s_access: s2s
s2s_dns_timeout: 3
s2s_dns_retries: 1
s2s_max_retry_delay: 5
outgoing_s2s_families:
  - ipv4
outgoing_s2s_ipv4_address: {yq(self.ip)}
outgoing_s2s_timeout: 8
negotiation_timeout: 20
auth_method: internal
auth_password_format: plain
listen:
  -
    port: {self.c2s_port}
    ip: {yq(self.ip)}
    module: ejabberd_c2s
    starttls_required: true
    access: c2s
    shaper: none
  -
    port: {self.s2s_port}
    ip: {yq(self.ip)}
    module: ejabberd_s2s_in
    shaper: none
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  s2s:
    allow: all
shaper: {{}}
shaper_rules:
  max_user_sessions: 10
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
modules:
{chr(10).join(mods)}
{modules}
{extra_config}
"""
        with open(self.config_path, "w") as f:
            f.write(text)

    # process
    def _env(self, server):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ERL_", "EJABBERD_", "CONTRIB_MODULES_"))}
        env.update(HOME=self.dir, ERL_LIBS=erl_libs(), ERL_CRASH_DUMP_BYTES="0",
                   ERL_EPMD_PORT=str(self.epmd_port))
        if server:
            env.update(EJABBERD_CONFIG_PATH=self.config_path,
                       EJABBERD_LOG_PATH=self.log_path,
                       ERL_INETRC=self.inetrc_path,
                       CONTRIB_MODULES_PATH=os.path.join(self.dir, "contrib"))
        return env

    def start(self, timeout=40):
        """Starts the VM, waits until both ports accept connections and
        `ejabberdctl status` answers.  Raises Unavailable (with the logs)
        when it exits or does not come up."""
        check_ejabberd()
        cmd = [ERL, "-name", self.node, "-setcookie", self.cookie, "-noinput", "+K", "true",
               "-start_epmd", "false", "-erl_epmd_port", str(self.dist_port),
               "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
               "-mnesia", "dir", json.dumps(self.spool_dir),
               "-s", "ejabberd"]
        self._out = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.spool_dir, env=self._env(True),
                                     stdout=self._out, stderr=self._out,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        if not self._wait_listening(deadline):
            self.stop()
            raise Unavailable(f"ejabberd did not listen on {self.ip}:{self.c2s_port}/"
                              f"{self.s2s_port} within {timeout}s:\n{self.output_text()}")
        r = None
        while time.time() < deadline:
            r = self.ctl("status", timeout=max(5, deadline - time.time()))
            if r.returncode == 0:
                return self
            time.sleep(0.3)  # a starting VM: poll until it answers
        self.stop()
        raise Unavailable(f"ejabberdctl status failed ({r and r.returncode}):\n"
                          f"{r and r.stdout}{r and r.stderr}\n{self.output_text()}")

    # administration
    def ctl(self, *args, timeout=30):
        """One ejabberd_ctl command against this node (what `ejabberdctl
        --node <node> ARGS` does), in a hidden VM that does not listen;
        returns CompletedProcess (returncode 0 = success)."""
        cmd = [ERL, "-name", f"ctl{secrets.token_hex(4)}@127.0.0.1", "-setcookie", self.cookie,
               "-hidden", "-noinput", "-start_epmd", "false",
               "-erl_epmd_port", str(self.dist_port), "-dist_listen", "false",
               "-s", "ejabberd_ctl", "-extra", self.node] + [str(a) for a in args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=self._env(False), cwd=self.dir, stdin=subprocess.DEVNULL)

    def register(self, user, password):
        """Creates user@domain (ejabberd must be running)."""
        r = self.ctl("register", user, self.domain, password)
        if r.returncode != 0:
            raise RuntimeError(f"ejabberdctl register {user} {self.domain} failed "
                               f"({r.returncode}):\n{r.stdout}{r.stderr}")

    # logs
    def wait_log(self, pattern, timeout=10):
        """The first match of regex `pattern` in ejabberd.log, waiting up to
        `timeout` s: ejabberd's logger writes the file in batches, so a
        line may appear a moment after the event.  AssertionError (with the
        log's tail) when it does not."""
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        while True:
            m = rx.search(_read(self.log_path))
            if m:
                return m
            if time.time() > deadline:
                raise AssertionError(f"no {pattern!r} in {self.log_path}:\n"
                                     f"{self.log_text()[-4000:]}")
            time.sleep(0.1)

    def output_text(self):
        parts = [_read(self.stdout_path), _read(self.log_path),
                 _read(os.path.join(self.log_dir, "error.log")),
                 _read(os.path.join(self.log_dir, "crash.log"))]
        return "\n".join(p for p in parts if p)


# ---- the pytest fixture -----------------------------------------------------------

class EjabberdLab(Lab):
    """What the `ejabberd_lab` fixture yields: a directory, a lazily created
    TestCA and DnsServer (prosody.py's), and the ejabberd servers started
    through it.

        lab.add_peer("xmppd.test", "127.0.0.1", xmppd_s2s_port)
        e = lab.start(domain="ejabberd.test", ip="127.0.0.2", cert="ca")
        lab.ca.cert          # the CA to give xmppd as ca_file
        lab.dns.nameserver   # "127.0.0.1:<port>" for xmppd's s2s_dns_servers

    cert is "ca" (issued by lab.ca), "self-signed", or a CertPaths; the other
    keywords are those of Ejabberd().  Each server started here gets its SRV
    and A records in lab.dns and resolves through it (use_dns=False: Erlang's
    default resolver).  When skip is true, Unavailable (a missing package, an
    ejabberd or dnsmasq that cannot start) becomes pytest.skip, or a failure
    when XMPPD_REQUIRE_EJABBERD=1 (see Lab)."""

    name = "ejabberd"
    require_env = "XMPPD_REQUIRE_EJABBERD"
    server_class = Ejabberd
    default_domain, default_ip = "ejabberd.test", "127.0.0.2"

    @staticmethod
    def check(use_dns):
        check_ejabberd()

    def add_peer(self, domain, ip, port):
        """Makes `domain` (e.g. xmppd's) resolvable from the ejabberd servers
        here: SRV _xmpp-server._tcp.domain -> <ip as a name>:port (see the
        module doc: ejabberd resolves SRV targets with getaddrinfo) and
        domain A -> ip.  The port of the running dnsmasq does not change, so
        this may be called before or after an ejabberd starts (answers have
        TTL 0)."""
        self.dns.add_srv(domain, port, target=ip)
        self.dns.add_host(domain, ip)
        self._dns_apply()


@pytest.fixture
def ejabberd_lab(request, tmp_path):
    """Yields an EjabberdLab in tmp_path; at teardown stops every process it
    started, by PID, and prints the ejabberd and dnsmasq logs when the test
    failed (conftest.py records the reports).  A missing package or an
    ejabberd that cannot start skips the test with the reason;
    XMPPD_REQUIRE_EJABBERD=1 makes that a failure.  Use it from a test module
    with `from ejabberd import ejabberd_lab  # noqa: F401`."""
    yield from run_lab(request, EjabberdLab(tmp_path / "ejabberd-lab"))

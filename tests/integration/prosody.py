"""A private Prosody (and what it needs) for federation interop tests.

Everything runs on loopback, as the current user, in a temporary directory,
and every process is stopped by its PID at teardown.  Three pieces, usable
alone or through the `prosody_lab` pytest fixture at the end of this file:

  TestCA / self_signed()  certificates made with the openssl CLI: a test CA
                          that issues leaf certificates (SAN dNSName +
                          id-on-xmppAddr, serverAuth + clientAuth), or a
                          self-signed certificate.  Paths are returned, so
                          xmppd can trust the CA through its `ca_file`.
  DnsServer               dnsmasq on 127.0.0.1:<free port> serving the SRV
                          and A records of the test domains.
  Prosody                 one `prosody -F --config <dir>/prosody.cfg.lua`.

How name resolution is redirected (no /etc/hosts, no real DNS)
---------------------------------------------------------------
Debian's Prosody 0.12 resolves through libunbound when lua-unbound is
installed (util/dependencies.lua preloads net.unbound as net.adns; without it
Prosody falls back to net.dns, which only reads /etc/resolv.conf and always
uses port 53, so it cannot be redirected: the fixture then skips).  The
global `unbound` option is handed to lunbound.new() and configures that
libunbound context; the fixture writes:

    unbound = {
        resolvconf = false;              -- ignore /etc/resolv.conf
        hoststxt = false;                -- ignore /etc/hosts
        forward = "127.0.0.1@<port>";    -- ub_ctx_set_fwd: every query to dnsmasq
        options = { ["local-zone:"] = "test. transparent" };  -- ub_ctx_set_option
    }

The last line matters: libunbound, like unbound, answers NXDOMAIN itself for
the RFC 6761 names (test., invalid., localhost., onion. ...) through its
default local zones, so without it no query under .test ever leaves
Prosody.  "transparent" lets the names it has no local data for (all of
them) go to the forwarder.  Only one zone can be re-opened that way (the
lunbound `options` table takes one string per option name; a table value
crashes it), so test domains must end in ".test".  No trust anchor is
configured, so answers are simply "insecure", never "bogus".

dnsmasq runs with --no-resolv --no-hosts --local=/test/ (authoritative:
NXDOMAIN for unknown .test names, no upstream), --cache-size=0,
--log-queries (the self-test reads the queries from its log), and one
--srv-host=_xmpp-server._tcp.<domain>,<domain>,<port>,0,0 plus one
--host-record=<domain>,<ip> per server.  Prosody's s2s (mod_s2s ->
net.resolvers.service) then connects to <ip>:<port> exactly as it would in
production; as the ports are random, a working connection proves the SRV
record was used (without SRV Prosody would try <domain>:5269).  xmppd can
use the same dnsmasq: DnsServer.nameserver is "127.0.0.1:<port>".
Records are given on dnsmasq's command line: add them before starting the
Prosody that needs them (DnsServer.restart() applies later changes; answers
have TTL 0, so nothing stale is cached).

Prosody options that matter (all written by Prosody.__init__)
-------------------------------------------------------------
  run_as_root = true      only when euid == 0: mod_posix otherwise refuses to
                          start ("Danger, Will Robinson!") and prosodyctl
                          would switch to the 'prosody' user.
  -F on the command line  stay in the foreground (we own the PID).
  data_path, log          a private data dir and a debug-level log file;
                          no pidfile (mod_posix writes one only if set).
  c2s_ports/c2s_interfaces, s2s_ports/s2s_interfaces, interfaces
                          the chosen loopback address and free ports.
  ssl = { certificate, key, cafile }
                          the host's certificate and the CA used to verify
                          peers (cafile replaces the system bundle; capath
                          is pointed at an empty directory).
  s2s_secure_auth         true: a peer must present a certificate that
                          verifies against cafile and names its domain
                          (then SASL EXTERNAL is used); false: dialback may
                          authenticate an unverifiable peer.
  s2s_require_encryption  refuse s2s streams without TLS.
  modules_enabled         roster saslauth tls disco ping (+ dialback when
                          dialback=True, else it is in modules_disabled);
                          s2s and s2s_auth_certs are always loaded.
  authentication = "internal_hashed", storage = "internal"
                          users are created with
                          `prosodyctl --config <cfg> register USER HOST PW`.
  unbound = {...}         see above, only when a DnsServer is given.

Clients: use xclient.login(p.c2s_port, user, pw, host=p.ip, domain=p.domain)
(STARTTLS, certificate not verified unless cafile= is given) or slixmpp.
"""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from xmpptest import free_port

PROSODY = shutil.which("prosody") or "/usr/bin/prosody"
PROSODYCTL = shutil.which("prosodyctl") or "/usr/bin/prosodyctl"
DNSMASQ = "/usr/sbin/dnsmasq"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

# The OID of id-on-xmppAddr (RFC 6120 13.7.1.4).
XMPPADDR_OID = "1.3.6.1.5.5.7.8.5"


class Unavailable(Exception):
    """A tool is missing or Prosody/dnsmasq could not start; the fixture
    turns this into pytest.skip (or a failure with XMPPD_REQUIRE_PROSODY=1)."""


# ---- helpers ----------------------------------------------------------------

def lua_str(s):
    """A Lua string literal for s (paths and domains written into the config)."""
    s = str(s)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def lua_list(items):
    return "{ " + "; ".join(lua_str(i) for i in items) + " }"


def _run(cmd, cwd=None, timeout=60):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited with {r.returncode}:\n"
                           f"{r.stdout}{r.stderr}")
    return r


def _stop_proc(proc, timeout=10):
    """SIGTERM by PID, SIGKILL after `timeout` s; returns the exit code or
    'hung (killed)'."""
    if proc is None:
        return 0
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return "hung (killed)"
    return proc.returncode


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def prosody_lua():
    """The Lua interpreter named on /usr/bin/prosody's #! line (lua5.4 on
    Debian 12), or None when Prosody is not installed."""
    if not os.path.exists(PROSODY):
        return None
    with open(PROSODY, errors="replace") as f:
        first = f.readline()
    m = re.match(r"#!\s*(\S+)(?:\s+(\S+))?", first)
    if not m:
        return None
    interp = m.group(2) if m.group(1).endswith("/env") and m.group(2) else m.group(1)
    return shutil.which(interp)


def check_prosody(need_unbound=False):
    """Raises Unavailable with the Debian package to install when Prosody
    (or lua-unbound, needed to redirect DNS) is missing."""
    if not (os.access(PROSODY, os.X_OK) and os.access(PROSODYCTL, os.X_OK)):
        raise Unavailable("prosody is not installed (Debian package: prosody)")
    lua = prosody_lua()
    if lua is None:
        raise Unavailable(f"cannot find the Lua interpreter of {PROSODY}")
    if need_unbound:
        r = subprocess.run([lua, "-e", 'require "lunbound"'], capture_output=True, text=True)
        if r.returncode != 0:
            raise Unavailable("Prosody cannot be pointed at a test DNS server without "
                              "lua-unbound (Debian package: lua-unbound / lua5.4-unbound): "
                              + r.stderr.strip())


# ---- certificates -------------------------------------------------------------

class CertPaths:
    """Where one certificate lives: cert (PEM, leaf first then the issuing CA
    when there is one), key (PEM, unencrypted), ca (the CA that verifies
    it: the test CA, or the certificate itself when self-signed)."""

    def __init__(self, cert, key, ca, domain):
        self.cert = cert      # path of the certificate chain (PEM)
        self.key = key        # path of its private key (PEM)
        self.ca = ca          # path of the trust anchor that verifies cert
        self.domain = domain  # the XMPP domain it is for

    def __repr__(self):
        return f"CertPaths({self.domain!r}, cert={self.cert!r})"


def _ext_file(path, names=(), ca=False, xmpp_addr=True):
    """Writes an openssl extension section [ext]: a CA's, or a server
    certificate's with SAN dNSName (+ id-on-xmppAddr) for each name."""
    with open(path, "w") as f:
        f.write("[ext]\n")
        if ca:
            f.write("basicConstraints = critical, CA:TRUE\n"
                    "keyUsage = critical, keyCertSign, cRLSign\n"
                    "subjectKeyIdentifier = hash\n")
            return
        sans = [f"DNS:{n}" for n in names]
        if xmpp_addr:
            sans += [f"otherName:{XMPPADDR_OID};UTF8:{n}" for n in names if "*" not in n]
        f.write("basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature, keyEncipherment\n"
                "extendedKeyUsage = serverAuth, clientAuth\n"
                "subjectKeyIdentifier = hash\n"
                f"subjectAltName = {', '.join(sans)}\n")


def _newkey(path):
    _run([OPENSSL, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-out", path])
    os.chmod(path, 0o600)


def self_signed(dirpath, domain, names=None, days=3):
    """A self-signed certificate for `domain` (SAN dNSName and xmppAddr for
    domain and each of `names`); returns CertPaths with ca == cert."""
    if not shutil.which(OPENSSL):
        raise Unavailable("openssl is not installed (Debian package: openssl)")
    d = os.path.join(str(dirpath), f"self-{domain}")
    os.makedirs(d, exist_ok=True)
    key, cert, ext = (os.path.join(d, n) for n in ("key.pem", "cert.pem", "ext.cnf"))
    _newkey(key)
    _ext_file(ext, [domain] + list(names or ()))
    _run([OPENSSL, "req", "-x509", "-new", "-key", key, "-out", cert, "-days", str(days),
          "-subj", f"/CN={domain}", "-config", ext, "-extensions", "ext"])
    return CertPaths(cert, key, cert, domain)


class TestCA:
    """A throw-away certificate authority in `dirpath` (EC P-256, valid for
    `days`).  ca.cert is the PEM to hand to a verifier (Prosody's
    ssl.cafile, xmppd's ca_file)."""

    __test__ = False  # not a pytest test class

    def __init__(self, dirpath, name="xmppd interop test CA", days=3):
        if not shutil.which(OPENSSL):
            raise Unavailable("openssl is not installed (Debian package: openssl)")
        self.dir = os.path.join(str(dirpath), "ca")
        os.makedirs(self.dir, exist_ok=True)
        self.key = os.path.join(self.dir, "ca.key")    # the CA's private key
        self.cert = os.path.join(self.dir, "ca.pem")   # the CA certificate
        self.days = days                               # validity of what it issues
        self._serial = int(time.time() * 1000)         # next serial number
        ext = os.path.join(self.dir, "ca.cnf")
        _newkey(self.key)
        _ext_file(ext, ca=True)
        _run([OPENSSL, "req", "-x509", "-new", "-key", self.key, "-out", self.cert,
              "-days", str(days), "-subj", f"/CN={name}", "-config", ext, "-extensions", "ext"])

    def issue(self, domain, names=None, xmpp_addr=True):
        """A leaf certificate for `domain` (+ `names`): SAN dNSName for each
        and id-on-xmppAddr unless xmpp_addr is False.  Returns CertPaths;
        cert holds the leaf followed by the CA certificate."""
        self._serial += 1
        d = os.path.join(self.dir, f"{domain}-{self._serial}")
        os.makedirs(d)
        key, csr, leaf, ext = (os.path.join(d, n) for n in
                               ("key.pem", "req.csr", "leaf.pem", "ext.cnf"))
        chain = os.path.join(d, "chain.pem")
        _newkey(key)
        _ext_file(ext, [domain] + list(names or ()), xmpp_addr=xmpp_addr)
        _run([OPENSSL, "req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={domain}"])
        _run([OPENSSL, "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
              "-set_serial", str(self._serial), "-days", str(self.days), "-out", leaf,
              "-extfile", ext, "-extensions", "ext"])
        with open(chain, "w") as out:
            out.write(_read(leaf))
            out.write(_read(self.cert))
        return CertPaths(chain, key, self.cert, domain)


# ---- DNS ----------------------------------------------------------------------

def dns_query(server, port, name, qtype=1, timeout=1.0):
    """One UDP DNS query (qtype 1 = A, 33 = SRV); returns (rcode, answer
    count, the whole response) or None on timeout.  Enough to see that
    dnsmasq is up and what it serves."""
    qid = int.from_bytes(os.urandom(2), "big")
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(q, (server, port))
            while True:
                data, _ = s.recvfrom(4096)
                if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                    flags, _, ancount = struct.unpack(">HHH", data[2:8])
                    return flags & 0xF, ancount, data
        except (socket.timeout, ConnectionRefusedError):
            return None


class DnsServer:
    """dnsmasq on ip:<free port>, authoritative for .test, with the records
    added by add_host()/add_srv()/add_xmpp_server().  Started by start(),
    stopped by PID by stop()."""

    READY_NAME = "dns-ready.test"

    def __init__(self, dirpath, ip="127.0.0.1"):
        self.dir = str(dirpath)
        os.makedirs(self.dir, exist_ok=True)
        self.ip = ip                  # listen address
        self.port = None              # UDP/TCP port, set by start()
        self.log_path = os.path.join(self.dir, "dnsmasq.log")  # stderr incl. queries
        self.records = []             # dnsmasq record options, in order
        self.proc = None              # the running dnsmasq
        self._log = None              # its open log file

    # records
    def add_host(self, name, *addrs):
        """A/AAAA records for name."""
        self.records.append(f"--host-record={name},{','.join(addrs)}")

    def add_srv(self, domain, port=None, target=None, service="xmpp-server",
                priority=0, weight=0):
        """_service._tcp.domain SRV priority weight port target; port None
        gives the "." record (service unavailable)."""
        owner = f"_{service}._tcp.{domain}"
        if port is None:
            self.records.append(f"--srv-host={owner}")
        else:
            self.records.append(f"--srv-host={owner},{target or domain},{port},"
                                f"{priority},{weight}")

    def add_xmpp_server(self, domain, ip, port):
        """What a federating server needs: SRV _xmpp-server._tcp.domain ->
        domain:port and domain A/AAAA ip."""
        self.add_srv(domain, port)
        self.add_host(domain, ip)

    # addresses for clients of this server
    @property
    def forward(self):
        """libunbound forwarder syntax: "ip@port"."""
        return f"{self.ip}@{self.port}"

    @property
    def nameserver(self):
        """"ip:port", as xmppd's resolver options take it."""
        return f"{self.ip}:{self.port}"

    # process
    def start(self, port=None, tries=5):
        if not os.access(DNSMASQ, os.X_OK):
            raise Unavailable(f"{DNSMASQ} not found (Debian package: dnsmasq-base)")
        last = ""
        for _ in range(tries):
            self.port = port or free_port(socket.AF_INET, self.ip)
            self._log = open(self.log_path, "ab")
            cmd = [DNSMASQ, "--no-daemon", f"--port={self.port}",
                   f"--listen-address={self.ip}", "--bind-interfaces",
                   "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file",
                   "--local=/test/", "--cache-size=0", "--log-queries",
                   f"--host-record={self.READY_NAME},127.0.9.9"] + self.records
            self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=self._log,
                                         stdin=subprocess.DEVNULL)
            deadline = time.time() + 5
            while time.time() < deadline and self.proc.poll() is None:
                r = dns_query(self.ip, self.port, self.READY_NAME, timeout=0.2)
                if r and r[0] == 0 and r[1] >= 1:
                    return self
            _stop_proc(self.proc)
            self._log.close()
            self.proc = None
            last = _read(self.log_path)[-2000:]
            if port:
                break  # a fixed port that cannot be bound: retrying will not help
        raise Unavailable(f"dnsmasq did not start:\n{last}")

    def stop(self):
        rc = _stop_proc(self.proc)
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None
        return rc

    def restart(self):
        """Applies records added since start(), on the same port."""
        port = self.port
        self.stop()
        return self.start(port=port)

    def log_text(self):
        return _read(self.log_path)

    def queries(self):
        """[(type, name)] of every query dnsmasq received, e.g.
        ('SRV', '_xmpp-server._tcp.b.test')."""
        return re.findall(r"query\[(\w+)\] (\S+) from", self.log_text())


# ---- servers and labs (shared with ejabberd.py) ------------------------------

class Daemon:
    """What Prosody and Ejabberd share: one server process of their own
    (proc, its output file _out), listening on ip:c2s_port and ip:s2s_port,
    serving `domain`, logging to log_path.  Subclasses set `name` (for
    messages) and `stop_timeout` (seconds from SIGTERM to SIGKILL)."""

    name = "server"
    stop_timeout = 10

    def _wait_listening(self, deadline):
        """Until both ports accept connections: True; False at the deadline.
        Unavailable (with the output) when the process exits first.  A
        starting process answers nothing, so this polls its ports."""
        while time.time() < deadline:
            if self.proc.poll() is not None:
                rc, self.proc = self.proc.returncode, None  # reaped: nothing to stop
                self._out.close()
                self._out = None
                raise Unavailable(f"{self.name} exited with {rc} at start:\n"
                                  f"{self.output_text()}")
            if self._listening(self.c2s_port) and self._listening(self.s2s_port):
                return True
            time.sleep(0.05)
        return False

    def _listening(self, port):
        try:
            with socket.create_connection((self.ip, port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self):
        """Stops the process by PID (SIGTERM, SIGKILL after stop_timeout s);
        returns its exit code."""
        rc = _stop_proc(self.proc, timeout=self.stop_timeout)
        if self._out:
            self._out.close()
            self._out = None
        return rc

    @property
    def pid(self):
        return self.proc.pid

    def jid(self, user):
        return f"{user}@{self.domain}"

    def log_text(self):
        return _read(self.log_path) or "(no log file)"


class Lab:
    """What ProsodyLab and EjabberdLab share: a directory, a lazily created
    TestCA and DnsServer, the servers created through it (each with its SRV
    and A records in the lab's DNS unless use_dns=False), their teardown and
    their logs.  Subclasses set:

        name            "prosody" / "ejabberd": messages, directory names
        require_env     the variable that makes Unavailable a failure
        server_class    Prosody / Ejabberd
        default_domain, default_ip
    and define check(use_dns) (Unavailable when the package is missing) and
    add_peer()."""

    def __init__(self, dirpath, skip=True):
        self.dir = str(dirpath)
        os.makedirs(self.dir, exist_ok=True)
        self.skip = skip      # Unavailable -> pytest.skip (else raised)
        self.servers = []     # server_class instances, in creation order
        self._ca = None       # TestCA, made on first use
        self._dns = None      # DnsServer, made on first use

    def _guard(self, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except Unavailable as e:
            if not self.skip:
                raise
            if os.environ.get(self.require_env):
                pytest.fail(str(e))
            pytest.skip(str(e))

    @property
    def ca(self):
        if self._ca is None:
            self._ca = self._guard(TestCA, self.dir)
        return self._ca

    @property
    def dns(self):
        """The DnsServer (not necessarily started yet)."""
        if self._dns is None:
            self._dns = DnsServer(os.path.join(self.dir, "dns"))
        return self._dns

    def _dns_apply(self):
        self._guard(self.dns.start if self.dns.proc is None else self.dns.restart)

    def cert_for(self, domain, cert="ca"):
        if cert == "ca":
            return self.ca.issue(domain)
        if cert == "self-signed":
            return self._guard(self_signed, self.dir, domain)
        return cert

    def create(self, domain=None, ip=None, cert="ca", use_dns=True, **kw):
        """A configured, not yet started server (see server_class)."""
        domain = domain or self.default_domain
        ip = ip or self.default_ip
        self._guard(self.check, use_dns)
        certp = self.cert_for(domain, cert)
        if use_dns:
            kw.setdefault("s2s_port", free_port(socket.AF_INET, ip))
            self.dns.add_xmpp_server(domain, ip, kw["s2s_port"])
            self._dns_apply()
            kw["dns"] = self.dns
        srv = self.server_class(
            os.path.join(self.dir, f"{self.name}{len(self.servers)}-{domain}"),
            domain=domain, ip=ip, cert=certp, **kw)
        self.servers.append(srv)
        return srv

    def start(self, domain=None, ip=None, cert="ca", **kw):
        """create() then start(); returns the running server."""
        srv = self.create(domain, ip, cert, **kw)
        self._guard(srv.start)
        return srv

    # Known hangs of the packaged servers at SIGTERM, not of the test: (log
    # text, why).  The process is still stopped by PID (SIGKILL).
    KNOWN_STOP_HANGS = ()

    def close(self):
        """Stops every process by PID; returns [problem strings]."""
        problems = []
        for srv in self.servers:
            rc = srv.stop()
            if rc not in (0, None):
                out = srv.output_text()
                known = [why for text, why in self.KNOWN_STOP_HANGS
                         if rc == "hung (killed)" and text in out]
                if known:
                    print(f"{self.name} {srv.domain}: stopped by SIGKILL after a known hang: "
                          f"{known[0]}")
                    continue
                problems.append(f"{self.name} {srv.domain} exited with {rc} after SIGTERM")
        if self._dns is not None:
            self._dns.stop()
        return problems

    def logs(self):
        out = [f"----- {self.name} {srv.domain} ({srv.dir}) -----\n{srv.output_text()}"
               for srv in self.servers]
        if self._dns is not None:
            out.append(f"----- dnsmasq ({self._dns.dir}) -----\n{self._dns.log_text()}")
        return "\n".join(out)


def run_lab(request, lab):
    """The body of a lab fixture: yields lab; at teardown stops every
    process it started, by PID, prints the logs when the test failed
    (conftest.py records the reports) or a process did not stop cleanly,
    and fails the test in the latter case.  A missing package skips the
    test (lab.require_env=1: fails it)."""
    lab._guard(lab.check, False)
    try:
        yield lab
    finally:
        failed = any(getattr(getattr(request.node, "rep_" + w, None), "failed", False)
                     for w in ("setup", "call"))
        problems = lab.close()
        if failed or problems:
            print("\n" + lab.logs())
        if problems:
            pytest.fail("\n".join(problems))


# ---- Prosody ------------------------------------------------------------------

class Prosody(Daemon):
    """One Prosody process: its own directory, config, data, log and ports.

    domain         the VirtualHost (must end in .test when `dns` is given)
    ip             the loopback address every listener binds to
    c2s_port, s2s_port   default: free ports on ip
    cert           CertPaths for domain (required: c2s and s2s need TLS)
    cafile         trust anchor(s) for verifying peers (PEM); default cert.ca
    s2s_secure_auth, s2s_require_encryption, dialback   see the module doc
    dns            a started DnsServer to resolve peers through, or None
                   (then Prosody uses the system resolver)
    data_dir, log_path   default: <dirpath>/data, <dirpath>/prosody.log
    log_level      the file log's minimum level ("debug")
    modules        extra modules_enabled entries
    extra_config   Lua text appended to the global section
    host_config    Lua text appended to the VirtualHost section
    """

    name = "prosody"

    def __init__(self, dirpath, domain="prosody.test", ip="127.0.0.1", c2s_port=None,
                 s2s_port=None, cert=None, cafile=None, s2s_secure_auth=False,
                 s2s_require_encryption=True, dialback=True, dns=None, modules=(),
                 extra_config="", host_config="", log_level="debug", data_dir=None,
                 log_path=None):
        if cert is None:
            raise ValueError("Prosody needs a certificate (self_signed() or TestCA.issue())")
        self.dir = os.path.abspath(str(dirpath))
        os.makedirs(self.dir, exist_ok=True)
        self.domain = domain                                  # the VirtualHost
        self.ip = ip                                          # listen address
        self.c2s_port = c2s_port or free_port(socket.AF_INET, ip)  # client port
        self.s2s_port = s2s_port or free_port(socket.AF_INET, ip)  # server port
        self.cert = cert                                      # CertPaths
        self.cafile = cafile or cert.ca                       # peers' trust anchor
        self.dns = dns                                        # DnsServer or None
        # data_path (accounts, rosters) and the debug log
        self.data_dir = os.path.abspath(data_dir or os.path.join(self.dir, "data"))
        self.log_path = os.path.abspath(log_path or os.path.join(self.dir, "prosody.log"))
        self.stdout_path = os.path.join(self.dir, "stdout.log")  # early errors
        self.config_path = os.path.join(self.dir, "prosody.cfg.lua")
        self.proc = None                                      # the running Prosody
        self._out = None                                      # its stdout file
        os.makedirs(self.data_dir, exist_ok=True)
        capath = os.path.join(self.dir, "capath")             # empty: no system CAs
        certdir = os.path.join(self.dir, "certs")             # empty: no cert lookup
        os.makedirs(capath, exist_ok=True)
        os.makedirs(certdir, exist_ok=True)

        enabled = ["roster", "saslauth", "tls", "disco", "ping"] + list(modules)
        disabled = []
        (enabled if dialback else disabled).append("dialback")
        lines = [
            "-- generated by tests/integration/prosody.py",
            f"run_as_root = {'true' if os.geteuid() == 0 else 'false'}",
            f"data_path = {lua_str(self.data_dir)}",
            f"log = {{ {{ levels = {{ min = {lua_str(log_level)} }}; to = \"file\";"
            f" filename = {lua_str(self.log_path)} }} }}",
            f"interfaces = {lua_list([ip])}",
            f"c2s_ports = {{ {self.c2s_port} }}",
            f"c2s_interfaces = {lua_list([ip])}",
            f"s2s_ports = {{ {self.s2s_port} }}",
            f"s2s_interfaces = {lua_list([ip])}",
            "c2s_direct_tls_ports = { }",
            "s2s_direct_tls_ports = { }",
            "legacy_ssl_ports = { }",
            f"modules_enabled = {lua_list(enabled)}",
            f"modules_disabled = {lua_list(disabled)}",
            "authentication = \"internal_hashed\"",
            "storage = \"internal\"",
            "c2s_require_encryption = true",
            f"s2s_require_encryption = {'true' if s2s_require_encryption else 'false'}",
            f"s2s_secure_auth = {'true' if s2s_secure_auth else 'false'}",
            "s2s_timeout = 15",
            f"certificates = {lua_str(certdir)}",
            f"ssl = {{ certificate = {lua_str(cert.cert)}; key = {lua_str(cert.key)};"
            f" cafile = {lua_str(self.cafile)}; capath = {lua_str(capath)} }}",
        ]
        if dns is not None:
            if dns.port is None:
                raise ValueError("start the DnsServer before creating Prosody")
            lines.append(
                "unbound = { resolvconf = false; hoststxt = false; "
                f"forward = {lua_str(dns.forward)}; "
                "options = { [\"local-zone:\"] = \"test. transparent\" } }")
        if extra_config:
            lines.append(extra_config)
        lines += [
            "",
            f"VirtualHost {lua_str(domain)}",
            f"  ssl = {{ certificate = {lua_str(cert.cert)}; key = {lua_str(cert.key)} }}",
        ]
        if host_config:
            lines.append(host_config)
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    # process
    def start(self, timeout=20):
        """Starts Prosody and waits until both ports accept connections.
        Raises Unavailable (with the log) when it exits or does not listen."""
        check_prosody(need_unbound=self.dns is not None)
        self._out = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen([PROSODY, "-F", "--config", self.config_path],
                                     cwd=self.dir, stdout=self._out, stderr=self._out,
                                     stdin=subprocess.DEVNULL)
        if self._wait_listening(time.time() + timeout):
            return self
        self.stop()
        raise Unavailable(f"prosody did not listen on {self.ip}:{self.c2s_port}/"
                          f"{self.s2s_port} within {timeout}s:\n{self.output_text()}")

    # administration
    def ctl(self, *args, timeout=30):
        """prosodyctl with this instance's config; returns CompletedProcess."""
        return subprocess.run([PROSODYCTL, "--config", self.config_path] + list(args),
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=self.dir)

    def register(self, user, password):
        """Creates user@domain (works whether or not Prosody is running)."""
        r = self.ctl("register", user, self.domain, password)
        if r.returncode != 0:
            raise RuntimeError(f"prosodyctl register {user} {self.domain} failed "
                               f"({r.returncode}):\n{r.stdout}{r.stderr}")

    # logs
    def output_text(self):
        return _read(self.stdout_path) + "\n" + _read(self.log_path)


# ---- the pytest fixture ---------------------------------------------------------

class ProsodyLab(Lab):
    """What the `prosody_lab` fixture yields: a directory, a lazily created
    TestCA and DnsServer, and the Prosody instances started through it.

        lab.add_peer("xmppd.test", "127.0.0.1", xmppd_s2s_port)
        p = lab.start(domain="prosody.test", ip="127.0.0.1", cert="ca")
        lab.ca.cert    # the CA to give xmppd as ca_file
        lab.dns.nameserver   # "127.0.0.1:<port>" for xmppd's resolver

    cert is "ca" (issued by lab.ca), "self-signed", or a CertPaths; the other
    keywords are those of Prosody().  Each Prosody started here gets its
    SRV + A records in lab.dns and resolves through it (use_dns=False: the
    system resolver).  When skip is true, Unavailable (a missing package, a
    Prosody or dnsmasq that cannot start) becomes pytest.skip (see Lab)."""

    # Prosody 0.12.3 (Debian 12): a client stream that is being retired while
    # the server shuts down makes mod_c2s call a method of a connection
    # that is gone; the shutdown coroutine dies and the process waits
    # forever (seen once in CI, test_secure_auth_refuses_self_signed).
    KNOWN_STOP_HANGS = (
        ("mod_c2s.lua:469: attempt to call a nil value (method 'close')",
         "Prosody 0.12 mod_c2s shutdown race (a client stream retired during shutdown)"),
    )
    name = "prosody"
    require_env = "XMPPD_REQUIRE_PROSODY"
    server_class = Prosody
    default_domain, default_ip = "prosody.test", "127.0.0.1"

    @staticmethod
    def check(use_dns):
        check_prosody(need_unbound=use_dns)

    def add_peer(self, domain, ip, port):
        """Makes `domain` (e.g. xmppd's) resolvable from the Prosody servers
        here: SRV _xmpp-server._tcp.domain -> domain:port, domain A -> ip.
        Call it before starting the Prosody that must reach the peer."""
        self.dns.add_xmpp_server(domain, ip, port)
        self._dns_apply()


@pytest.fixture
def prosody_lab(request, tmp_path):
    """Yields a ProsodyLab in tmp_path; at teardown stops every process it
    started, by PID, and prints the Prosody and dnsmasq logs when the test
    failed (conftest.py records the reports).  Missing packages or a Prosody
    that cannot start skip the test with the reason; XMPPD_REQUIRE_PROSODY=1
    makes that a failure.  Use it from a test module with
    `from prosody import prosody_lab  # noqa: F401`."""
    yield from run_lab(request, ProsodyLab(tmp_path / "prosody-lab"))

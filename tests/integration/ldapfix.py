"""A real OpenLDAP slapd for the LDAP authentication tests: its own slapd.conf
and mdb database in a temporary directory, filled with slapadd, listening on
a free loopback port, started in the foreground (-d 0) so that the test owns
its PID and stops it by that PID.  Nothing of the machine's own LDAP setup
is read or touched."""
import os
import shutil
import signal
import socket
import subprocess
import time

from xmpptest import free_port

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
BASE = "dc=example,dc=org"
ROOTDN = f"cn=admin,{BASE}"
READER = f"cn=reader,{BASE}"          # the service account xmppd searches with
READER_PW = "readerpw"

# uid, password, employeeType (the filter tests restrict to "xmpp")
USERS = [
    ("alice", "alicepw", "xmpp"),
    ("bob", "bobpw", "staff"),
    ("carol", "carolpw", "xmpp"),
    # a literal "*" in a name: only this entry may match it
    ("star*", "starpw", "xmpp"),
]


def available():
    return os.path.exists(SLAPD) and os.path.exists(SLAPADD)


def _conf(d, port, tls):
    tls_conf = (f"TLSCertificateFile {d}/cert.pem\nTLSCertificateKeyFile {d}/key.pem\n"
                if tls else "")
    return tls_conf + f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{BASE}"
rootdn "{ROOTDN}"
rootpw adminpw
directory {d}/db
access to attrs=userPassword
    by anonymous auth
    by self write
    by * none
access to *
    by dn.exact="{READER}" read
    by self read
    by * none
"""


def _ldif():
    out = [f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n"
           f"o: Example\n",
           f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n",
           f"dn: {READER}\nobjectClass: simpleSecurityObject\nobjectClass: organizationalRole\n"
           f"cn: reader\nuserPassword: {READER_PW}\n"]
    for uid, pw, kind in USERS:
        cn = uid.replace("*", "star")
        out.append(f"dn: cn={cn},ou=people,{BASE}\nobjectClass: inetOrgPerson\ncn: {cn}\n"
                   f"sn: {cn}\nuid: {uid}\nmail: {cn}@mail.example.org\n"
                   f"employeeType: {kind}\nuserPassword: {pw}\n")
    return "\n".join(out)


class Slapd:
    def __init__(self, dirpath, port=None, tls=False):
        """tls: also listen for LDAPS on tls_port, with a self-signed
        certificate for 127.0.0.1 (cacert: its path) that StartTLS uses too."""
        self.dir = str(dirpath)
        os.makedirs(os.path.join(self.dir, "db"), exist_ok=True)
        self.port = port or free_port()
        self.tls_port = free_port() if tls else None
        self.cacert = os.path.join(self.dir, "cert.pem") if tls else None
        if tls:
            r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                                "-keyout", os.path.join(self.dir, "key.pem"),
                                "-out", self.cacert, "-days", "2", "-subj", "/CN=127.0.0.1",
                                "-addext", "subjectAltName=IP:127.0.0.1",
                                "-addext", "basicConstraints=critical,CA:TRUE"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
        self.conf = os.path.join(self.dir, "slapd.conf")
        self.log = os.path.join(self.dir, "slapd.log")
        self.proc = None
        with open(self.conf, "w") as f:
            f.write(_conf(self.dir, self.port, tls))
        ldif = os.path.join(self.dir, "data.ldif")
        with open(ldif, "w") as f:
            f.write(_ldif())
        r = subprocess.run([SLAPADD, "-f", self.conf, "-l", ldif], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr

    def start(self, timeout=20):
        self._log = open(self.log, "ab")
        urls = f"ldap://127.0.0.1:{self.port}/"
        if self.tls_port:
            urls += f" ldaps://127.0.0.1:{self.tls_port}/"
        self.proc = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", self.conf, "-h", urls],
            stdout=self._log, stderr=self._log)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.proc.returncode}: "
                                   + open(self.log).read())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)  # a new process: nothing to round-trip with yet
        self.stop()
        raise RuntimeError("slapd did not listen: " + open(self.log).read())

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        self.proc = None
        self._log.close()


def yaml(slapd, servers=None, extra=""):
    """The LDAP options of an xmppd host that uses `slapd`."""
    servers = servers or ["127.0.0.1"]
    lst = ", ".join(f'"{s}"' for s in servers)
    return (f"ldap_servers: [{lst}]\n"
            f"ldap_port: {slapd.port}\n"
            f"ldap_base: \"ou=people,{BASE}\"\n"
            f"ldap_rootdn: \"{READER}\"\n"
            f"ldap_password: \"{READER_PW}\"\n"
            f"ldap_timeout: 3s\n"
            f"{extra}")

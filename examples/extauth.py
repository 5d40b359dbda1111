#!/usr/bin/env python3
"""extauth.py — an external authentication script for xmppd (and ejabberd).

It speaks the external authentication protocol of the ejabberd Developers
Guide ("External"): on stdin, requests framed by a 2-byte big-endian length,

    auth:User:Server:Password        isuser:User:Server
    setpass:User:Server:Password     tryregister:User:Server:Password
    removeuser:User:Server           removeuser3:User:Server:Password

and on stdout, for each request, 2 bytes holding the number 2 followed by 2
bytes holding 1 (success / valid) or 0 (failure / invalid).  It exits when
stdin reaches end-of-file, which is how xmppd stops it.

Accounts live in a plain text file, one "user:password" per line (the
password is everything after the first ':', so it may contain ':'; blank
lines and lines starting with '#' are ignored).  The Server field is not
used: give each virtual host its own file.  The file is re-read for every
request and rewritten atomically (temporary file + rename) on a change, under
an flock(2) on "<file>.lock", so several processes (extauth_pool_size > 1)
can share it.

Configure xmppd (xmppd.yml), for every host or per host under host_config:

    auth_method: external
    extauth_program: "/usr/bin/python3 /path/extauth.py /path/users.txt"
    extauth_pool_size: 2      # processes per host
    extauth_timeout: 10s      # a slower answer fails and the script is restarted

The file path comes from argv[1], else from the environment variable
EXTAUTH_USERS.  The file must be readable and writable by the server's user
(and by nobody else: it holds passwords in the clear — this script is an
example of the protocol, not a recommendation to store passwords this way).
"""

import fcntl
import os
import struct
import sys
import tempfile


def read_exact(fd, n):
    """Reads exactly n bytes from fd; None at end-of-file (also mid-way)."""
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def write_all(fd, data):
    while data:
        k = os.write(fd, data)
        data = data[k:]


class Users:
    def __init__(self, path):
        self.path = path
        self.lock_path = path + ".lock"

    def _locked(self, exclusive):
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        return fd

    def _load(self):
        users = {}
        try:
            with open(self.path, "r", encoding="utf-8", errors="surrogateescape") as f:
                for line in f:
                    line = line.rstrip("\r\n")
                    if not line or line.startswith("#") or ":" not in line:
                        continue
                    user, password = line.split(":", 1)
                    users[user] = password
        except FileNotFoundError:
            pass
        return users

    def _save(self, users):
        d = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".extauth-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
                for user, password in users.items():
                    f.write("%s:%s\n" % (user, password))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    def read(self, fn):
        lock = self._locked(False)
        try:
            return fn(self._load())
        finally:
            os.close(lock)

    def change(self, fn):
        """fn(users) returns (result, changed)."""
        lock = self._locked(True)
        try:
            users = self._load()
            result, changed = fn(users)
            if changed:
                self._save(users)
            return result
        finally:
            os.close(lock)


def handle(users, request):
    """The answer (True/False) to one request (a str)."""
    op, _, rest = request.partition(":")
    if op in ("auth", "setpass", "tryregister", "removeuser3"):
        fields = rest.split(":", 2)  # User, Server, Password (may hold ':')
        if len(fields) != 3:
            return False
        user, _server, password = fields
    elif op in ("isuser", "removeuser"):
        fields = rest.split(":")
        if len(fields) != 2:
            return False
        user, _server = fields
        password = None
    else:
        return False

    if op == "auth":
        return users.read(lambda u: user in u and u[user] == password)
    if op == "isuser":
        return users.read(lambda u: user in u)
    if op == "setpass":
        def setpass(u):
            if user not in u:
                return False, False
            u[user] = password
            return True, True
        return users.change(setpass)
    if op == "tryregister":
        def register(u):
            if user in u:
                return False, False
            u[user] = password
            return True, True
        return users.change(register)
    if op == "removeuser":
        def remove(u):
            if user not in u:
                return False, False
            del u[user]
            return True, True
        return users.change(remove)
    if op == "removeuser3":
        def remove3(u):
            if u.get(user) != password:
                return False, False
            del u[user]
            return True, True
        return users.change(remove3)
    return False


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EXTAUTH_USERS")
    if not path:
        sys.stderr.write("extauth.py: give the users file as argv[1] or EXTAUTH_USERS\n")
        return 2
    users = Users(path)
    fin, fout = sys.stdin.fileno(), sys.stdout.fileno()
    while True:
        head = read_exact(fin, 2)
        if head is None:
            return 0  # end-of-file: the server stops us
        (size,) = struct.unpack(">H", head)
        body = read_exact(fin, size)
        if body is None:
            return 0
        try:
            ok = handle(users, body.decode("utf-8", errors="surrogateescape"))
        except Exception as e:  # never die on one bad request
            sys.stderr.write("extauth.py: %s\n" % e)
            ok = False
        write_all(fout, struct.pack(">HH", 2, 1 if ok else 0))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""extauth-crash.py — a misbehaving external auth script for test_auth.c.

Speaks the ejabberd external auth protocol; for "auth" the password picks the
behaviour:

    good      answers 1 (success)
    crash     exits (status 3) after reading the request, without answering
    hang      never answers (sleeps; end-of-file on stdin is not noticed)
    garbage   answers with a bad length (0x0005 "hello")
    short     writes half an answer, then exits
    closein   closes its stdin, answers 0 and stays alive (the next request
              then meets a closed pipe: EPIPE, which must not raise SIGPIPE)
    anything  answers 0

Every other operation answers 1.  With argv[1] (a directory), each process
creates an empty file named after its pid there when it starts, so that the
test can count spawns and check that they are all gone afterwards (the file
lists the descriptors the process inherited), and one named .hang-<pid> when
it starts to hang.
"""

import os
import struct
import sys
import time


def read_exact(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def main():
    if len(sys.argv) > 1:
        # The pid file holds the descriptors this process inherited (the
        # listing's own descriptor is left out): only 0, 1 and 2 should be.
        fds = set(int(x) for x in os.listdir("/proc/self/fd"))
        fds = sorted(fd for fd in fds if fd <= 2 or os.path.exists("/proc/self/fd/%d" % fd))
        with open(os.path.join(sys.argv[1], str(os.getpid())), "w") as f:
            f.write(" ".join(str(fd) for fd in fds))
    fin, fout = sys.stdin.fileno(), sys.stdout.fileno()
    while True:
        head = read_exact(fin, 2)
        if head is None:
            return 0
        (size,) = struct.unpack(">H", head)
        body = read_exact(fin, size)
        if body is None:
            return 0
        op, _, rest = body.decode().partition(":")
        answer = 1
        if op == "auth":
            password = rest.split(":", 2)[2]
            if password == "crash":
                os._exit(3)
            elif password == "hang":
                if len(sys.argv) > 1:
                    open(os.path.join(sys.argv[1], ".hang-%d" % os.getpid()), "w").close()
                while True:
                    time.sleep(60)
            elif password == "garbage":
                os.write(fout, struct.pack(">H", 5) + b"hello")
                continue
            elif password == "closein":
                os.close(fin)
                os.write(fout, struct.pack(">HH", 2, 0))
                while True:
                    time.sleep(60)
            elif password == "short":
                os.write(fout, struct.pack(">H", 2))
                os._exit(0)
            answer = 1 if password == "good" else 0
        os.write(fout, struct.pack(">HH", 2, answer))


if __name__ == "__main__":
    sys.exit(main())

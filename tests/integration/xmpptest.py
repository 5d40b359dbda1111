"""Helpers for xmppd integration tests: a server process, raw XML sockets,
and slixmpp clients.  Loopback only; processes are stopped by their PID."""
import asyncio
import os
import re
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"


_given_ports = set()


def free_port(family=socket.AF_INET, addr="127.0.0.1"):
    """A port free now, never one this process handed out before: the
    kernel may give the same ephemeral port to two binds in a row once the
    first socket is closed, and a server's c2s and s2s listeners then
    collided (its config was refused: "already used by listen[0]")."""
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((addr, 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port
    raise RuntimeError("no free port that was not handed out already")


def have_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class Server:
    """One xmppd process with its own directory, config and ports."""

    def __init__(self, build, dirpath, hosts=("localhost",), workers=2, extra_yaml="",
                 listen=None, config_text=None, args=(), expect_clean_exit=True,
                 listen_opts="", env=None):
        """listen_opts: more lines of the default c2s listen entry, such as
        "    shaper: none\n".  env: more environment variables of the server
        (the debug build's test knobs, XD_DEBUG_DELAY in xmppd/assert.h)."""
        self.bin = os.path.join(build, "xmppd")
        self.ctl = os.path.join(build, "xmppctl")
        self.dir = str(dirpath)
        os.makedirs(self.dir, exist_ok=True)
        self.hosts = list(hosts)
        self.c2s_port = free_port()
        self.data_dir = os.path.join(self.dir, "var")
        self.log_path = os.path.join(self.dir, "xmppd.log")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.config_path = os.path.join(self.dir, "xmppd.yml")
        self.ctl_socket = os.path.join(self.dir, "ctl.sock")
        self.args = list(args)
        self.expect_clean_exit = expect_clean_exit
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        if config_text is None:
            if listen is None:
                listen = (f"  - port: {self.c2s_port}\n"
                          f"    ip: 127.0.0.1\n"
                          f"    module: c2s\n"
                          f"{listen_opts}")
            hosts_yaml = "".join(f"  - {h}\n" for h in self.hosts)
            config_text = (
                f"hosts:\n{hosts_yaml}"
                f"loglevel: debug\n"
                f"log_file: {self.log_path}\n"
                f"workers: {workers}\n"
                f"data_dir: {self.data_dir}\n"
                f"ctl_socket: {self.ctl_socket}\n"
                f"listen:\n{listen}"
                f"{extra_yaml}")
        with open(self.config_path, "w") as f:
            f.write(config_text)

    def start(self, wait=True):
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([self.bin, "--config", self.config_path] + self.args,
                                     cwd=self.dir, stdout=self._stderr, stderr=self._stderr,
                                     env=self.env)
        if wait:
            try:
                self.wait_ready()
            except RuntimeError:
                # Never leave a process behind that did not become ready
                # (callers outside the fixtures have no teardown for it).
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait(timeout=20)
                raise

    def wait_ready(self, timeout=60, seen=0):
        """Until the log holds more than `seen` "xmppd ready" lines.  A new
        process has no one to answer a round trip before it is ready: this
        polls its log (and fails at the deadline, it cannot pass early)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xmppd exited with {self.proc.returncode}:\n"
                                   f"{self.stderr_text()}\n{self.log_text()}")
            if self.log_text().count('event="xmppd ready"') > seen:
                return
            time.sleep(0.05)
        raise RuntimeError("xmppd did not become ready:\n" + self.log_text())

    def restart(self, timeout=20):
        """Starts a stopped server again on the same directory, data and
        ports; its log file already holds the earlier "ready" lines."""
        seen = self.log_text().count('event="xmppd ready"')
        self.start(wait=False)
        self.wait_ready(timeout, seen)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stops the process by PID; returns its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._stderr.close()
                return "hung (killed)"
        self._stderr.close()
        return self.proc.returncode

    @property
    def pid(self):
        return self.proc.pid

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return "(no log file)\n" + self.stderr_text()

    def stderr_text(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def sanitizer_report(self):
        text = self.stderr_text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "WARNING: ThreadSanitizer"):
            if marker in text:
                return text
        return None

    def ctl_run(self, *args, timeout=20):
        return subprocess.run([self.ctl, "--socket", self.ctl_socket] + list(args),
                              capture_output=True, text=True, timeout=timeout)

    def raw(self, port=None, host="127.0.0.1", family=socket.AF_INET):
        return RawStream(host, port or self.c2s_port, family)


class RawStream:
    """A TCP connection for hand-written XML; reads what the server sends."""

    def __init__(self, host, port, family=socket.AF_INET, timeout=10):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""
        self.closed = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def send_until_closed(self, data, chunk=65536):
        """Sends data in chunks until all is sent or the server closes;
        returns the number of bytes the kernel accepted."""
        sent = 0
        try:
            while sent < len(data):
                n = self.sock.send(data[sent:sent + chunk])
                sent += n
                self._drain_nonblocking()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        return sent

    def _drain_nonblocking(self):
        self.sock.setblocking(False)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    self.closed = True
                    break
                self.buf += d
        except (BlockingIOError, ConnectionResetError):
            pass
        finally:
            self.sock.setblocking(True)
            self.sock.settimeout(10)

    def _recv_some(self, deadline):
        """One recv with the time left; marks the stream closed on EOF."""
        self.sock.settimeout(max(0.01, deadline - time.time()))
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return
        except ConnectionResetError:
            d = b""
        if not d:
            self.closed = True
        self.buf += d

    def recv_until(self, pattern, timeout=10):
        """Reads until `pattern` (regex bytes or str) matches the received
        bytes; returns the match."""
        if isinstance(pattern, str):
            pattern = pattern.encode()
        rx = re.compile(pattern, re.S)
        deadline = time.time() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                return m
            if self.closed or time.time() > deadline:
                raise AssertionError(f"no match for {pattern!r} in {self.buf!r}")
            self._recv_some(deadline)

    def read_to_close(self, timeout=10):
        """Reads until the server closes the TCP connection; returns all bytes."""
        deadline = time.time() + timeout
        while not self.closed:
            if time.time() > deadline:
                raise AssertionError(f"server did not close; got {self.buf!r}")
            self._recv_some(deadline)
        return self.buf

    def stream_error(self, timeout=10):
        """Waits for a stream error and the server's close; returns the
        condition name (e.g. 'not-well-formed')."""
        self.read_to_close(timeout)
        m = re.search(rb"<stream:error>\s*<([a-z-]+) xmlns=['\"]" +
                      re.escape(NS_STREAM_ERRORS.encode()), self.buf)
        if not m:
            raise AssertionError(f"no stream error in {self.buf!r}")
        # RFC 6120 4.9.1.1: the error is followed by the closing stream tag.
        assert self.buf.rstrip().endswith(b"</stream:stream>"), self.buf
        return m.group(1).decode()

    def open_stream(self, to="localhost", xmlns="jabber:client", version="1.0", extra=""):
        self.send(f"<?xml version='1.0'?><stream:stream xmlns='{xmlns}' "
                  f"xmlns:stream='{NS_STREAMS}' to='{to}' version='{version}'{extra}>")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def stream_header_attrs(buf):
    """Parses the attributes of the server's <stream:stream> tag."""
    m = re.search(rb"<stream:stream\b([^>]*)>", buf)
    assert m, buf
    return dict((k.decode(), v.decode())
                for k, v in re.findall(rb"([\w:]+)=['\"]([^'\"]*)['\"]", m.group(1)))


def run_slixmpp(make_client, address, timeout=15, **connect_kw):
    """Runs a slixmpp client created by make_client() until it disconnects
    or `timeout` passes; returns the client for inspection."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        client = make_client()
        client.connect(address=address, **connect_kw)
        client.loop = loop
        done = loop.create_future()
        client.add_event_handler("disconnected", lambda *_: done.done() or done.set_result(True))
        try:
            loop.run_until_complete(asyncio.wait_for(done, timeout))
        except asyncio.TimeoutError:
            # Ends when the server has closed its stream (or after
            # slixmpp's own 2 s wait).
            loop.run_until_complete(client.disconnect())
        return client
    finally:
        close_loop(loop)


def close_loop(loop):
    """Lets slixmpp's own tasks end, then closes the loop."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()
    asyncio.set_event_loop(None)

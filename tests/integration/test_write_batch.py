"""Writes batched per loop turn (option io_uring, src/stream/conn.c "writes
batched per loop turn"): a worker records the writes of a loop turn and
hands them to the kernel in one io_uring submission; what a socket does not
take goes into the connection's queue.  What a peer receives must be the
same with batching on and off, byte for byte and in order, over TLS (the
encrypted records are copies) and without (the stanza's own bytes are
referenced), also when the peer's socket is full and when the stream is
closed right after the writes (the records go out before the shutdown).

The reader that does not read while the burst is sent makes the socket
fill: its receive buffer is fixed and small (SO_RCVBUF before connecting),
and the burst is larger than the biggest send buffer the kernel gives the
server's socket (net.ipv4.tcp_wmem's maximum), so part of it waits in the
queue (write_stats counts it) whatever the machine's settings."""
import re
import socket

import pytest

from helpers import online, users
from xclient import XClient

# Plain streams for the referenced-bytes path; no shaper (the burst is
# several MiB); a queue bound above the burst (the bound has its own test
# in test_flood.py).
PLAIN = "allow_unencrypted_plain_auth: true\n"
LISTEN = "    shaper: none\n    starttls_required: false\n    max_queue: 64MiB\n"

RCVBUF = 16384        # the reader's receive buffer


def _wmem_max():
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


FILL = "x" * 1800     # ~2 KB a message
# Messages enough to exceed the server's largest send buffer by 1 MiB
# (2,500 or more: ~5 MB with Linux's default 4 MiB maximum).
BURST = max(2500, (_wmem_max() + (1 << 20)) // 1800 + 1)


def plain_online(srv, user, resource, **kw):
    c = XClient(srv.c2s_port, **kw)
    c.open_stream()
    kind, val = c.plain(user, "pw")
    assert kind == "success", (kind, val)
    c.open_stream()
    text, jid = c.bind(resource)
    assert jid, text
    c.send("<presence/>")
    c.roundtrip()
    return c, jid


def login(srv, user, resource, tls, **kw):
    return (online(srv, user, resource, **kw) if tls
            else plain_online(srv, user, resource, **kw))


def write_stats(srv):
    r = srv.ctl_run("write_stats")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [dict(kv.split("=", 1) for kv in ln.split()) for ln in r.stdout.splitlines()
            if ln.startswith("worker=")]
    assert rows, r.stdout
    return rows


def total(rows, key):
    return sum(int(r[key]) for r in rows)


def burst(tx, rxjid):
    for i in range(BURST):
        tx.send(f"<message to='{rxjid}' id='m{i}' type='chat'><body>{i} {FILL}</body></message>")
    tx.roundtrip()  # every message routed: written, recorded or queued for rx


def check_burst(data):
    """The messages of burst(), whole, each once, in order."""
    text = data.decode()
    got = [int(m.group(1)) for m in re.finditer(
        r"<message[^>]*id=['\"]m(\d+)['\"][^>]*>\s*<body>(\d+) (x*)</body>", text)]
    assert got == list(range(BURST)), (len(got), got[:5], got[-5:])
    assert text.count("<message") == BURST


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
@pytest.mark.parametrize("io_uring", ["true", "false"])
def test_burst_to_a_full_socket_arrives_whole_and_in_order(server_factory, io_uring, tls):
    # One worker: tx's round trip then means every message of the burst was
    # written toward rx (with two, the deliveries cross to rx's worker
    # through its inbox and may still be on their way, and then rx is
    # already reading when they are written: the socket never fills — seen
    # twice in CI under TSan, all bytes in order but no queued write).
    srv = server_factory(extra_yaml=f"io_uring: {io_uring}\n" + PLAIN, listen_opts=LISTEN,
                         workers=1)
    users(srv, "tx", "rx")
    rx, rxjid = login(srv, "rx", "r", tls, rcvbuf=RCVBUF)
    tx, _ = login(srv, "tx", "t", tls)
    before = write_stats(srv)
    burst(tx, rxjid)  # rx reads nothing meanwhile
    rx.send("<iq type='get' id='end'><ping xmlns='urn:xmpp:ping'/></iq>")
    m = rx.recv_until(r"<iq[^>]*id=['\"]end['\"]", timeout=60)
    check_burst(m.string[:m.start()])
    after = write_stats(srv)
    if io_uring == "true":
        assert all(r["io_uring"] == "on" for r in after), after
        # recorded until the socket filled; then the queue holds bytes and
        # later writes join it there (order)
        assert total(after, "writes") > total(before, "writes")
        assert total(after, "submissions") > total(before, "submissions")
        # the socket filled: some bytes waited in the queue — the rest of
        # a batched send, or of a direct write (a write that finds bytes
        # queued joins them there; which of the two the first fill is
        # depends on where the loop turn stands when the socket fills)
        queued = lambda rows: total(rows, "queued_rests") + total(rows, "queued_writes")
        assert queued(after) > queued(before), after
    else:
        assert all(r["io_uring"] == "off" for r in after), after
        assert total(after, "writes") == 0


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_writes_before_a_close_go_out_before_it(server_factory, tls):
    """The burst to a full socket, then the stream is closed (kick_session):
    the peer reads every message, then the stream error, then the close."""
    srv = server_factory(extra_yaml="io_uring: true\n" + PLAIN, listen_opts=LISTEN)
    users(srv, "tx", "rx")
    rx, rxjid = login(srv, "rx", "r", tls, rcvbuf=RCVBUF)
    tx, _ = login(srv, "tx", "t", tls)
    burst(tx, rxjid)
    r = srv.ctl_run("kick_session", "rx", "localhost", "r", "bye")
    assert r.returncode == 0, r.stdout + r.stderr
    assert rx.stream_error(timeout=60) == "policy-violation"
    head, _, tail = rx.buf.partition(b"<stream:error>")
    check_burst(head)
    assert b"<message" not in tail


def test_writes_and_close_in_one_turn(server_factory):
    """One read of rx's input makes the server write ~3 x 60 KB to rx (its
    messages to itself) and then close the stream (the XML error after
    them), all in one loop turn, while rx's socket takes only part of it:
    the records are written, their rest queued, before the shutdown (which
    would refuse a later queued write: the rest and the error lost)."""
    srv = server_factory(extra_yaml="io_uring: true\n" + PLAIN, listen_opts=LISTEN)
    users(srv, "rx")
    rx, rxjid = plain_online(srv, "rx", "r")
    rx.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    big = "y" * 60000
    rx.send("".join(f"<message to='{rxjid}' id='s{i}' type='chat'><body>{i} {big}</body>"
                    "</message>" for i in range(3)) + "<message><body>broken</message>")
    assert rx.stream_error(timeout=60) == "not-well-formed"
    got = re.findall(rb"<message[^>]*id=['\"]s(\d)['\"][^>]*>\s*<body>\d (y*)</body>", rx.buf)
    assert [(int(i), len(b)) for i, b in got] == [(0, 60000), (1, 60000), (2, 60000)]


@pytest.mark.parametrize("bound", [None, "4"], ids=["default", "bound4"])
def test_records_bound_sends_before_recording_more(server_factory, bound):
    """A worker holds at most WB_MAXREC records (1,024; the debug knob
    XD_DEBUG_WB_MAXREC lowers it): 20 messages read in one turn, each
    written to rx on the same worker, reach a bound of 4 several times
    (full_turns counts it) and still arrive whole and in order; with the
    default bound they fit in one turn's records."""
    env = {"XD_DEBUG_WB_MAXREC": bound} if bound else {}
    srv = server_factory(extra_yaml="io_uring: true\n" + PLAIN, listen_opts=LISTEN, workers=1,
                         env=env)
    users(srv, "tx", "rx")
    rx, rxjid = plain_online(srv, "rx", "r")
    tx, _ = plain_online(srv, "tx", "t")
    before = total(write_stats(srv), "full_turns")
    tx.send("".join(f"<message to='{rxjid}' id='b{i}' type='chat'><body>{i}</body></message>"
                    for i in range(20)))
    tx.roundtrip()
    m = rx.recv_until(r"<message[^>]*id=['\"]b19['\"].*?</message>", timeout=20)
    text = m.string[:m.end()].decode()
    got = [int(x) for x in re.findall(r"id=['\"]b(\d+)['\"][^>]*>\s*<body>(?:\d+)</body>", text)]
    assert got == list(range(20)), got
    full = total(write_stats(srv), "full_turns") - before
    if bound:
        assert full >= 1, full
    else:
        assert full == 0, full

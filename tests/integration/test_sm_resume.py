"""Stream management resumption (XEP-0198 5) through the wire: a session
whose connection broke is parked for sm_resume_timeout; <resume/> on a new
stream (on any worker) gets back exactly what the client had not
acknowledged, in order, once; a session never resumed ends at the timeout
(unavailable broadcast then, its messages to offline storage); a new
login of the resource, the bound on what waits and a graceful stop end a
parked session the same way.  A real client library resumes at the end."""
import re
import signal
import time
from datetime import timedelta

from helpers import online, q, users
from xclient import XClient

SM = "urn:xmpp:sm:3"
MODULES = "modules:\n  mod_roster: {}\n  mod_offline: {}\n  mod_ping: {}\n"
QUIET = MODULES + "sm_ack_request_every: 0\n"


def enable(c, extra=""):
    c.send(f"<enable xmlns='{SM}' resume='true'{extra}/>")
    got = q(c.recv_until(r"<enabled[^>]*/>|<failed.*?</failed>").group(0))
    assert got.startswith("<enabled"), got
    m = re.search(r"id='([^']+)'", got)
    return got, (m.group(1) if m else None)


def authed(srv, user, password="pw"):
    """A stream of `user`, authenticated, restarted, not bound."""
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    assert c.scram(user, password, "SHA-256")[0] == "success"
    c.features = c.open_stream()
    return c


def resume(c, previd, h):
    c.send(f"<resume xmlns='{SM}' previd='{previd}' h='{h}'/>")
    return q(c.recv_until(r"<resumed[^>]*/>|<failed.*?</failed>").group(0))


def wait_log(srv, text, count=1, timeout=10):
    """Until the server's log has `text` `count` times (a positive wait)."""
    deadline = time.time() + timeout
    while srv.log_text().count(text) < count:
        assert time.time() < deadline, f"no {count}x {text!r} in the log"
        time.sleep(0.02)


def crossed_workers(srv):
    """A session was handed from one worker to another."""
    return any(a != b for a, b in
               re.findall(r"session handed over\" [^\n]*from_worker=(\d) to_worker=(\d)",
                          srv.log_text()))


def ids_of(text, prefix):
    return re.findall(r"<message[^>]*id='(" + prefix + r"\d+)'", text)


def test_enabled_offers_resumption(server_factory):
    srv = server_factory(extra_yaml=QUIET + "sm_resume_timeout: 120s\n"
                                            "sm_max_resume_timeout: 600s\n"
                                            "sm_resume_location: 'xmpp.example:5222'\n")
    users(srv, "ann")
    a, _ = online(srv, "ann", "a", presence=False)
    got, rid = enable(a)
    assert re.fullmatch(r"[0-9a-f]{32}", rid), got
    assert "resume='true'" in got and "max='120'" in got, got
    assert "location='xmpp.example:5222'" in got, got
    b, _ = online(srv, "ann", "b", presence=False)
    got, rid2 = enable(b, " max='60'")
    assert "max='60'" in got and rid2 != rid, got
    c, _ = online(srv, "ann", "c", presence=False)
    got, _ = enable(c, " max='100000'")
    assert "max='600'" in got, got  # capped by sm_max_resume_timeout
    # Without resume='true', or with resumption off: no id.
    d, _ = online(srv, "ann", "d", presence=False)
    d.send(f"<enable xmlns='{SM}'/>")
    assert "id=" not in q(d.recv_until(r"<enabled[^>]*/>").group(0))


def test_resumption_off(server_factory):
    srv = server_factory(extra_yaml=QUIET + "sm_resume_timeout: 0\n")
    users(srv, "ann")
    a, _ = online(srv, "ann", "a", presence=False)
    got, rid = enable(a)
    assert rid is None and "resume=" not in got, got


def park(srv, user="ann", resource="a"):
    """A session of user with resumption enabled and available presence."""
    c, jid = online(srv, user, resource)
    _, rid = enable(c)
    return c, jid, rid


def test_resume_resends_exactly_what_was_not_acknowledged(server_factory):
    """bob sends five messages; ann reads them, acknowledges two, says
    she handled three (h on <resume/>), and her connection breaks.  Two
    more arrive while she is away (bob sees no unavailable from her).  The
    resumed stream gets m3..m6 once, in order, after <resumed h/> that
    counts her own stanzas; nothing goes to offline storage."""
    srv = server_factory(extra_yaml=QUIET)
    users(srv, "ann", "bob")
    a, ajid, rid = park(srv)
    b, _ = online(srv, "bob", "b")
    # ann's directed presence to bob: its end would reach bob as unavailable.
    a.send(f"<presence to='{b_jid(srv)}'/>")
    a.roundtrip()  # 2 stanzas of ann handled after enable (presence, ping)
    b.recv_until(r"<presence[^>]*from='ann@localhost/a'")
    for i in range(5):
        b.send(f"<message to='{ajid}' type='chat' id='m{i}'><body>m{i}</body></message>")
    b.roundtrip()
    a.recv_until(r"id='m4'")
    a.send(f"<a xmlns='{SM}' h='3'/>")  # the ping result and m0, m1
    a.roundtrip()  # 3
    a.sock.close()
    wait_log(srv, "session parked")
    for i in range(5, 7):
        b.send(f"<message to='{ajid}' type='chat' id='m{i}'><body>m{i}</body></message>")
    got_b = q(b.roundtrip())
    assert "unavailable" not in got_b, got_b
    c = authed(srv, "ann")
    got = resume(c, rid, 4)  # she had handled the ping result, m0, m1 and m2
    assert got.startswith("<resumed") and f"previd='{rid}'" in got and "h='3'" in got, got
    text = q(c.roundtrip())
    assert ids_of(text, "m") == ["m3", "m4", "m5", "m6"], text
    # The session goes on: a stanza of ann still counts from where it was.
    c.send(f"<r xmlns='{SM}'/>")
    assert "h='4'" in q(c.recv_until(r"<a [^>]*/>").group(0))  # the ping above
    b.send(f"<message to='{ajid}' type='chat' id='m7'><body>m7</body></message>")
    c.recv_until(r"id='m7'")
    assert "session resumed" in srv.log_text()
    # She acknowledges everything (4 + 5 resent + a ping result + m7) and
    # leaves: nothing is stored offline, a new session of ann gets nothing.
    c.send(f"<a xmlns='{SM}' h='11'/>")
    c.send("</stream:stream>")
    c.read_to_close()
    n, _ = online(srv, "ann", "n")
    assert ids_of(q(n.roundtrip()), "m") == [], "stored although resumed"


def b_jid(srv):
    return "bob@localhost/b"


def test_resume_on_another_worker(server_factory):
    """Two workers: connections land on either (SO_REUSEPORT).  ann breaks
    and resumes until one resume has crossed to the other worker; every
    time, the message that waited arrives once."""
    srv = server_factory(extra_yaml=QUIET, workers=2)
    users(srv, "ann", "bob")
    a, ajid, rid = park(srv)
    b, _ = online(srv, "bob", "b")
    crossed = False
    h_out = 0  # what the server sent ann that she handled
    for i in range(40):
        b.send(f"<message to='{ajid}' type='chat' id='w{i}'><body>w{i}</body></message>")
        b.roundtrip()
        a.recv_until(rf"id='w{i}'")
        h_out += 1  # w_i; then x_i and a ping result on the resumed stream
        a.sock.close()
        wait_log(srv, "session parked", i + 1)
        b.send(f"<message to='{ajid}' type='chat' id='x{i}'><body>x{i}</body></message>")
        b.roundtrip()
        a = authed(srv, "ann")
        got = resume(a, rid, h_out)
        assert got.startswith("<resumed"), got
        text = q(a.roundtrip())
        assert ids_of(text, "[wx]") == [f"x{i}"], text
        h_out += 2
        if crossed_workers(srv):
            crossed = True
            break
    assert crossed, "every connection landed on one worker"


def test_resume_needs_the_same_account(server_factory):
    srv = server_factory(extra_yaml=QUIET)
    users(srv, "ann", "bob")
    a, ajid, rid = park(srv)
    a.sock.close()
    wait_log(srv, "session parked")
    other = authed(srv, "bob")
    got = resume(other, rid, 0)
    assert "item-not-found" in got, got
    _, bjid = other.bind("r")  # the stream goes on: bob binds
    assert bjid and bjid.startswith("bob@"), bjid
    junk = authed(srv, "ann")
    assert "item-not-found" in resume(junk, "0" * 32, 0)
    junk.send(f"<resume xmlns='{SM}' previd='{rid}' h='x'/>")
    assert "bad-request" in q(junk.recv_until(r"<failed.*?</failed>").group(0))
    ann = authed(srv, "ann")
    assert resume(ann, rid, 0).startswith("<resumed")


def test_never_resumed_goes_offline_at_the_timeout(server_factory):
    """A session killed mid-stream (no </stream>) and never resumed: bob
    sees ann's unavailable only at the timeout, and ann's next session
    gets the unacknowledged messages from offline storage, in order."""
    srv = server_factory(extra_yaml=QUIET + "sm_resume_timeout: 2s\n")
    users(srv, "ann", "bob")
    a, ajid, rid = park(srv)
    b, bjid = online(srv, "bob", "b")
    a.send(f"<presence to='{bjid}'/>")
    b.recv_until(r"<presence[^>]*from='ann@localhost/a'")
    for i in range(3):
        b.send(f"<message to='{ajid}' type='chat' id='t{i}'><body>t{i}</body></message>")
    b.roundtrip()
    a.recv_until(r"id='t2'")
    a.sock.close()
    wait_log(srv, "session parked")
    b.send(f"<message to='{ajid}' type='chat' id='t3'><body>t3</body></message>")
    assert "unavailable" not in q(b.roundtrip())  # not at the break
    got = q(b.recv_until(r"<presence[^>]*type='unavailable'[^>]*>", timeout=15).group(0))
    assert "ann@localhost/a" in got, got
    assert "reason=timeout" in srv.log_text()
    a2, _ = online(srv, "ann", "a2")
    assert ids_of(q(a2.roundtrip()), "t") == ["t0", "t1", "t2", "t3"]
    # A late resume learns how many of ann's stanzas were handled: her
    # directed presence (XEP-0198 5, <failed h/>); another account does not.
    got = resume(authed(srv, "ann"), rid, 0)
    assert "item-not-found" in got and "h='1'" in got, got
    got = resume(authed(srv, "bob"), rid, 0)
    assert "item-not-found" in got and "h=" not in got, got


def test_new_login_replaces_a_parked_session(server_factory):
    """ann's broken session is parked with one unacknowledged message; a
    new login binds the same resource: the parked session ends (replaced)
    and the message goes to the new holder of the resource."""
    srv = server_factory(extra_yaml=QUIET)
    users(srv, "ann", "bob")
    a, ajid, rid = park(srv)
    b, _ = online(srv, "bob", "b")
    b.send(f"<message to='{ajid}' type='chat' id='r1'><body>r1</body></message>")
    a.recv_until(r"id='r1'")
    a.sock.close()
    wait_log(srv, "session parked")
    n, njid = online(srv, "ann", "a")
    assert njid == ajid
    n.recv_until(r"<message[^>]*id='r1'", timeout=10)
    assert "item-not-found" in resume(authed(srv, "ann"), rid, 0)


def test_resume_while_the_old_connection_looks_alive(server_factory):
    """The client comes back before the server saw its old connection
    break: the old one is closed with conflict, the session resumes."""
    srv = server_factory(extra_yaml=QUIET)
    users(srv, "ann", "bob")
    a, ajid, rid = park(srv)
    b, _ = online(srv, "bob", "b")
    b.send(f"<message to='{ajid}' type='chat' id='o1'><body>o1</body></message>")
    a.recv_until(r"id='o1'")
    c = authed(srv, "ann")
    got = resume(c, rid, 0)
    assert got.startswith("<resumed"), got
    assert ids_of(q(c.roundtrip()), "o") == ["o1"]
    assert a.stream_error() == "conflict"


def test_too_many_waiting_ends_a_parked_session(server_factory):
    srv = server_factory(extra_yaml=QUIET + "sm_max_unacked: 10\n")
    users(srv, "ann", "bob")
    a, ajid, rid = park(srv)
    a.sock.close()
    wait_log(srv, "session parked")
    b, _ = online(srv, "bob", "b")
    for i in range(11):
        b.send(f"<message to='{ajid}' type='chat' id='f{i}'><body>f{i}</body></message>")
    b.roundtrip()
    wait_log(srv, "reason=overflow")
    assert "item-not-found" in resume(authed(srv, "ann"), rid, 0)
    a2, _ = online(srv, "ann", "a2")
    assert ids_of(q(a2.roundtrip()), "f") == [f"f{i}" for i in range(11)]


def test_handled_count_too_high_on_resume(server_factory):
    srv = server_factory(extra_yaml=QUIET)
    users(srv, "ann")
    a, ajid, rid = park(srv)
    a.sock.close()
    wait_log(srv, "session parked")
    c = authed(srv, "ann")
    got = resume(c, rid, 50)
    assert "<failed" in got and "undefined-condition" in got, got
    assert c.stream_error() == "undefined-condition"


def test_graceful_stop_stores_what_a_parked_session_waited_for(server_factory):
    srv = server_factory(extra_yaml=QUIET)
    users(srv, "ann", "bob")
    a, ajid, rid = park(srv)
    a.sock.close()
    wait_log(srv, "session parked")
    b, _ = online(srv, "bob", "b")
    for i in range(3):
        b.send(f"<message to='{ajid}' type='chat' id='g{i}'><body>g{i}</body></message>")
    b.roundtrip()
    assert srv.stop(signal.SIGTERM) == 0
    log = srv.log_text()
    assert "reason=shutdown" in log and "offline store failed" not in log, log[-3000:]
    srv.restart()
    a2, _ = online(srv, "ann", "a2")
    assert ids_of(q(a2.roundtrip()), "g") == ["g0", "g1", "g2"]


def test_status_shows_a_parked_session(server_factory):
    srv = server_factory(extra_yaml=QUIET)
    users(srv, "ann")
    a, ajid, rid = park(srv)
    a.sock.close()
    wait_log(srv, "session parked")
    out = srv.ctl_run("user_sessions_info", "ann", "localhost").stdout
    assert "state=detached available=yes" in out, out
    c = authed(srv, "ann")
    assert resume(c, rid, 0).startswith("<resumed")
    c.roundtrip()
    out = srv.ctl_run("user_sessions_info", "ann", "localhost").stdout
    assert "state=connected" in out, out


def test_server_pings_leave_a_parked_session_alone(server_factory):
    """mod_ping with timeout_action kill: a parked session has been silent
    longer than a silent client whose session the pings end; the parked
    one is neither pinged nor ended (one worker: one tick sees both)."""
    srv = server_factory(workers=1, extra_yaml=(
        "modules:\n  mod_roster: {}\n  mod_offline: {}\n  mod_ping:\n    send_pings: true\n"
        "    ping_interval: 1s\n    ping_ack_timeout: 1s\n    timeout_action: kill\n"
        "sm_ack_request_every: 0\n"))
    users(srv, "ann", "zed")
    a, ajid, rid = park(srv)
    a.sock.close()
    wait_log(srv, "session parked")
    dead, _ = online(srv, "zed", "dead")
    assert dead.stream_error(timeout=10) == "connection-timeout"
    c = authed(srv, "ann")
    got = resume(c, rid, 0)
    assert got.startswith("<resumed"), got
    assert "urn:xmpp:ping" not in q(c.roundtrip())  # nothing of ours waited for it


def test_slixmpp_resumes(server_factory):
    """slixmpp's XEP-0198 plugin: ann's client enables resumption, gets m1
    from bob, and its TCP connection is cut (no </stream>).  bob sends m2
    while the session is parked; the client reconnects, resumes (its
    'session_resumed' event, no new session_start) and gets m2 once, m1
    not again."""
    import asyncio
    import ssl

    import slixmpp

    from test_c2s import cert_path
    from xmpptest import close_loop
    srv = server_factory(extra_yaml=QUIET)
    users(srv, "ann", "bob")
    b, _ = online(srv, "bob", "b")
    st = {"starts": 0, "resumed": 0, "bodies": []}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    done = loop.create_future()
    c = slixmpp.ClientXMPP("ann@localhost/sx", "pw")
    c.ssl_context = ssl.create_default_context(cafile=cert_path(srv))
    c.register_plugin("xep_0198")
    addr = ("127.0.0.1", srv.c2s_port)

    def on_start(_):
        st["starts"] += 1
        c.send_presence()

    def on_enabled(_):
        b.send("<message to='ann@localhost/sx' type='chat' id='s1'><body>m1</body></message>")

    def on_message(m):
        st["bodies"].append(m["body"])
        if m["body"] == "m1":
            c.transport.abort()  # the network is gone
        elif m["body"] == "m2":
            done.done() or done.set_result(True)

    def on_disconnected(_):
        if st["resumed"] or done.done():
            return
        wait_log(srv, "session parked")
        b.send("<message to='ann@localhost/sx' type='chat' id='s2'><body>m2</body></message>")
        b.roundtrip()
        c.connect(address=addr)

    def on_resumed(_):
        st["resumed"] += 1

    c.add_event_handler("session_start", on_start)
    c.add_event_handler("sm_enabled", on_enabled)
    c.add_event_handler("message", on_message)
    c.add_event_handler("disconnected", on_disconnected)
    c.add_event_handler("session_resumed", on_resumed)
    try:
        c.connect(address=addr)
        loop.run_until_complete(asyncio.wait_for(done, 20))
        loop.run_until_complete(c.disconnect())
    finally:
        close_loop(loop)
    assert st == {"starts": 1, "resumed": 1, "bodies": ["m1", "m2"]}, st
    assert "session resumed" in srv.log_text()


def test_resume_inline_in_sasl2(server_factory):
    """XEP-0198 8.2: <resume/> inside SASL2's <authenticate/> is tried
    before Bind2; resumed, the <success/> carries <resumed/>, the bind is
    ignored and the queue follows the features.  Repeated until one such
    resume crossed workers (the answer then comes from the inbox).  An
    unknown id: <failed/> in the <success/>, and Bind2 binds afresh."""
    from test_sasl2 import authz_id, bind2, scram2, stream
    srv = server_factory(extra_yaml=QUIET, workers=2)
    users(srv, "amy", "bob", password="secret")
    a = stream(srv.c2s_port)
    kind, body, _ = scram2(a, "amy", "secret",
                           extra=bind2(inline=f"<enable xmlns='{SM}' resume='true'/>"))
    assert kind == "success", body
    enabled = q(body)
    m = re.search(r"<enabled xmlns='urn:xmpp:sm:3' id='([0-9a-f]{32})' resume='true'", enabled)
    assert m, enabled
    rid, ajid = m.group(1), authz_id(body)
    a.recv_until(r"<stream:features>.*?</stream:features>")
    b, _ = online(srv, "bob", "b", password="secret")
    h = 0
    crossed = False
    for i in range(40):
        b.send(f"<message to='{ajid}' type='chat' id='i{i}'><body>i{i}</body></message>")
        a.recv_until(rf"id='i{i}'")
        h += 1
        a.sock.close()
        wait_log(srv, "session parked", i + 1)
        b.send(f"<message to='{ajid}' type='chat' id='j{i}'><body>j{i}</body></message>")
        b.roundtrip()
        a = stream(srv.c2s_port)
        kind, body, _ = scram2(a, "amy", "secret",
                               extra=f"<resume xmlns='{SM}' previd='{rid}' h='{h}'/>"
                                     + bind2(tag="Ignored"))
        body = q(body)
        assert kind == "success" and f"<resumed xmlns='{SM}' previd='{rid}'" in body, body
        assert authz_id(body) == ajid and "<bound" not in body, body
        text = q(a.recv_until(rf"<stream:features>.*?</stream:features>.*?id='j{i}'").group(0))
        assert ids_of(text, "[ij]") == [f"j{i}"], text
        h += 1
        if crossed_workers(srv):
            crossed = True
            break
    assert crossed, "no resume crossed workers"
    bad = stream(srv.c2s_port)
    kind, body, _ = scram2(bad, "amy", "secret",
                           extra=f"<resume xmlns='{SM}' previd='{'0' * 32}' h='0'/>"
                                 + bind2(tag="Fresh"))
    body = q(body)
    assert kind == "success" and "<failed xmlns='urn:xmpp:sm:3'><item-not-found" in body, body
    assert "<bound xmlns='urn:xmpp:bind:0'" in body and "/Fresh." in authz_id(body), body


def test_aioxmpp_resumes(server_factory):
    """aioxmpp's stream management: its client enables resumption and
    reaches the server through a loopback relay; the relay resets both
    TCP connections (the network is gone).  The client reconnects by
    itself and resumes (on_stream_resumed, no on_stream_destroyed), and
    the message bob sent meanwhile reaches it once."""
    import asyncio
    import socket
    import struct

    import aioxmpp
    import aioxmpp.connector

    srv = server_factory(extra_yaml=QUIET)
    users(srv, "ann", "bob")
    b, _ = online(srv, "bob", "b")
    st = {"resumed": 0, "destroyed": 0, "bodies": []}
    links = []  # (client side, server side) writers of the relay's connections

    def reset(w):
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()

    async def pipe(r, w):
        try:
            while data := await r.read(65536):
                w.write(data)
        except (ConnectionError, OSError):
            pass

    async def relay(cr, cw):
        sr, sw = await asyncio.open_connection("127.0.0.1", srv.c2s_port)
        links.append((cw, sw))
        await asyncio.gather(pipe(cr, sw), pipe(sr, cw))

    async def run():
        proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        got_m1, got_m2 = asyncio.Event(), asyncio.Event()
        client = aioxmpp.PresenceManagedClient(
            aioxmpp.JID.fromstr("ann@localhost/ax"),
            aioxmpp.make_security_layer("pw", no_verify=True),
            override_peer=[("127.0.0.1", port, aioxmpp.connector.STARTTLSConnector())],
        )
        client.resumption_timeout = 60
        client.backoff_start = timedelta(milliseconds=100)
        client.on_stream_resumed.connect(lambda *_: st.__setitem__("resumed", st["resumed"] + 1))
        client.on_stream_destroyed.connect(
            lambda *_: st.__setitem__("destroyed", st["destroyed"] + 1))

        def on_message(msg):
            body = msg.body.any() if msg.body else None
            st["bodies"].append(body)
            (got_m1 if body == "m1" else got_m2).set()

        client.stream.register_message_callback(aioxmpp.MessageType.CHAT, None, on_message)
        async with client.connected() as stream:
            assert stream.sm_enabled and stream.sm_resumable
            b.send("<message to='ann@localhost/ax' type='chat' id='a1'><body>m1</body></message>")
            await asyncio.wait_for(got_m1.wait(), 10)
            cw, sw = links[0]
            reset(sw)
            reset(cw)
            await asyncio.get_running_loop().run_in_executor(
                None, wait_log, srv, "session parked")
            b.send("<message to='ann@localhost/ax' type='chat' id='a2'><body>m2</body></message>")
            b.roundtrip()
            await asyncio.wait_for(got_m2.wait(), 20)
            stream_destroyed = st["destroyed"]  # before the client's own end
        proxy.close()
        return stream_destroyed

    loop = asyncio.new_event_loop()
    try:
        destroyed = loop.run_until_complete(asyncio.wait_for(run(), 40))
    finally:
        loop.close()
    assert destroyed == 0, "the stream was lost, not resumed"
    assert st["resumed"] == 1 and st["bodies"] == ["m1", "m2"], st
    assert "session resumed" in srv.log_text()


def test_max_user_sessions_ends_parked_ones_first(server_factory):
    """max_user_sessions: 2.  ann has a parked session (a1) and a
    connected one (a2); a third bind ends the parked one, a fourth the
    oldest connected one (conflict).  Parked sessions cannot pile up
    without bound for one account."""
    srv = server_factory(extra_yaml=QUIET + "max_user_sessions: 2\n")
    users(srv, "ann")
    a1, _, rid = park(srv, resource="a1")
    a1.sock.close()
    wait_log(srv, "session parked")
    a2, _ = online(srv, "ann", "a2")
    a3, _ = online(srv, "ann", "a3")
    wait_log(srv, "parked session ends")
    got = resume(authed(srv, "ann"), rid, 0)
    assert "item-not-found" in got, got
    a2.roundtrip()  # still there
    a4, _ = online(srv, "ann", "a4")
    assert a2.stream_error() == "conflict"
    a3.roundtrip()
    a4.roundtrip()
    out = srv.ctl_run("user_sessions_info", "ann", "localhost").stdout
    assert sorted(re.findall(r"ann@localhost/(a\d)", out)) == ["a3", "a4"], out


def test_unacknowledged_bytes_are_bounded_by_max_queue(server_factory):
    """What the server keeps unacknowledged is bounded in bytes too (the
    listener's max_queue, 64 KiB here), not only in stanzas: 4 KiB
    messages to a connected client that reads but never acknowledges
    close its stream; to a parked session they end it.  Both times the
    messages go to offline storage, in order, also those that were on
    their way when the session ended (none bounces to the sender)."""
    # One worker: with two, what the sender routes after the session ended
    # is stored by its own worker's writer beside the ended session's
    # queue, and the two writers may interleave (a known gap, noted in
    # docs/design.md 1.3: offline order across a session's end).
    srv = server_factory(workers=1, extra_yaml=QUIET, listen_opts="    max_queue: 64KB\n")
    users(srv, "ann", "bob")
    b, _ = online(srv, "bob", "b")
    a, ajid = online(srv, "ann", "a")
    enable(a)
    pad = "x" * 4096
    # 40: the stream closes after about 16; those sent after reach a
    # session that is gone by the time they are delivered, and are routed
    # again (to offline storage), not bounced.
    for i in range(40):
        b.send(f"<message to='{ajid}' type='chat' id='q{i}'><body>{pad}</body></message>")
    assert a.stream_error(timeout=10) == "policy-violation"
    got_b = q(b.roundtrip())
    assert "type='error'" not in got_b, got_b[:500]
    assert "bytes=" in srv.log_text()
    n1, _ = online(srv, "ann", "n1")
    got = ids_of(q(n1.roundtrip()), "q")
    assert got == [f"q{i}" for i in range(40)], got
    n1.send("</stream:stream>")
    n1.read_to_close()
    p, pjid, rid = park(srv, resource="p")
    p.sock.close()
    wait_log(srv, "session parked")
    for i in range(20):
        b.send(f"<message to='{pjid}' type='chat' id='k{i}'><body>{pad}</body></message>")
    b.roundtrip()
    wait_log(srv, "reason=overflow")
    n2, _ = online(srv, "ann", "n2")
    got = ids_of(q(n2.roundtrip()), "k")
    assert got == [f"k{i}" for i in range(20)], got

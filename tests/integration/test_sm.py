"""Stream management (XEP-0198, urn:xmpp:sm:3) on client streams, the
acknowledgements (resumption: test_sm_resume.py): enabling, acknowledgements both ways, the server's requests,
the peer's errors, the bound on unacknowledged stanzas, and what happens to
what a client did not acknowledge when its stream ends (its other sessions
or offline storage take the messages).  Counters across 2^32: test_smq.c."""
import re
import time

from helpers import online, q, users

SM = "urn:xmpp:sm:3"
MODULES = "modules:\n  mod_roster: {}\n  mod_offline: {}\n  mod_ping: {}\n"


def enable(c):
    """Acknowledgements only: resumption is test_sm_resume.py's."""
    c.send(f"<enable xmlns='{SM}'/>")
    got = q(c.recv_until(r"<enabled[^>]*/>|<failed.*?</failed>").group(0))
    assert got.startswith("<enabled"), got
    return got


def gone(srv, jid, timeout=10):
    """Until the server has ended the session of jid (a positive wait)."""
    deadline = time.time() + timeout
    while jid in srv.ctl_run("connected_users").stdout.split():
        assert time.time() < deadline, f"{jid} still connected"
        time.sleep(0.05)


def test_enable_and_counts_both_ways(server_factory):
    srv = server_factory(extra_yaml=MODULES + "sm_ack_request_every: 0\n")
    users(srv, "ann", "bob")
    a, ajid = online(srv, "ann", "a", presence=False)
    assert f"<sm xmlns='{SM}'/>" in q(a.features)
    got = enable(a)
    assert "resume=" not in got and "id=" not in got, got  # not asked for
    a.send(f"<enable xmlns='{SM}'/>")  # twice
    assert "unexpected-request" in q(a.recv_until(r"<failed.*?</failed>").group(0))
    # Three stanzas of ann handled: <a h='3'/>.
    for i in range(3):
        a.send(f"<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>")
    a.send(f"<r xmlns='{SM}'/>")
    assert re.search(r"<a xmlns='urn:xmpp:sm:3' h='3'/>", q(a.recv_until(r"<a [^>]*/>").group(0)))
    # The server counts what it sent: three ping results, acknowledged.
    a.send(f"<a xmlns='{SM}' h='3'/>")
    a.send(f"<a xmlns='{SM}' h='2'/>")  # late: changes nothing
    a.roundtrip()
    # Acknowledging more than was sent (4 so far) is the client's error.
    a.send(f"<a xmlns='{SM}' h='99'/>")
    assert a.stream_error() == "undefined-condition"
    assert "handled count too high" in srv.log_text()


def test_enable_before_bind_and_resume_fail(server_factory):
    from xclient import XClient
    srv = server_factory(extra_yaml=MODULES)
    users(srv, "ann")
    c = XClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    c.open_stream()
    assert c.scram("ann", "pw", "SHA-256")[0] == "success"
    c.open_stream()
    c.send(f"<enable xmlns='{SM}'/>")
    assert "unexpected-request" in q(c.recv_until(r"<failed.*?</failed>").group(0))
    c.send(f"<resume xmlns='{SM}' previd='abc' h='0'/>")
    assert "item-not-found" in q(c.recv_until(r"<failed.*?</failed>").group(0))
    text, jid = c.bind("r")
    assert jid, text


def test_not_offered_when_off(server_factory):
    srv = server_factory(extra_yaml=MODULES + "stream_management: false\n")
    users(srv, "ann")
    a, _ = online(srv, "ann", "a", presence=False)
    assert SM not in q(a.features)
    a.send(f"<enable xmlns='{SM}'/>")
    assert "unexpected-request" in q(a.recv_until(r"<failed.*?</failed>").group(0))


def test_server_requests_acks(server_factory):
    srv = server_factory(extra_yaml=MODULES + "sm_ack_request_every: 3\n")
    users(srv, "ann", "bob")
    a, ajid = online(srv, "ann", "a")
    enable(a)
    b, _ = online(srv, "bob", "b")
    for i in range(6):
        b.send(f"<message to='{ajid}' type='chat' id='m{i}'><body>{i}</body></message>")
    b.roundtrip()
    got = q(a.roundtrip())
    # <r/> after the 3rd and the 6th delivery.
    marks = re.findall(r"id='m(\d)'|<r xmlns='urn:xmpp:sm:3'/>", got)
    assert marks == ["0", "1", "2", "", "3", "4", "5", ""], got


def test_unacknowledged_messages_survive_a_broken_stream(server_factory):
    """bob sends ann three messages; ann acknowledges the first and her
    connection breaks (no </stream>): the other two go to offline storage
    and reach her next session, in order, and the first does not again."""
    srv = server_factory(extra_yaml=MODULES + "sm_ack_request_every: 0\n")
    users(srv, "ann", "bob")
    a, ajid = online(srv, "ann", "a", presence=True)
    enable(a)
    b, _ = online(srv, "bob", "b")
    for i in range(3):
        b.send(f"<message to='{ajid}' type='chat' id='u{i}'><body>u{i}</body></message>")
    b.roundtrip()
    a.recv_until(r"id='u2'")
    a.send(f"<a xmlns='{SM}' h='1'/>")
    a.roundtrip()  # the ack is handled; the ping result is one more unacknowledged (an IQ result)
    a.sock.close()  # broken, not closed
    gone(srv, ajid)
    a2, _ = online(srv, "ann", "a2")
    got = q(a2.roundtrip())
    ids = re.findall(r"<message[^>]*id='(u\d)'", got)
    assert ids == ["u1", "u2"], got
    assert "urn:xmpp:delay" in got
    assert "routed again" in srv.log_text()


def test_unacknowledged_go_to_another_session(server_factory):
    """With another session of the account available, what one session did
    not acknowledge goes there (RFC 6121 8.5.3.2.1), not to storage."""
    srv = server_factory(extra_yaml=MODULES + "sm_ack_request_every: 0\n")
    users(srv, "ann", "bob")
    a, ajid = online(srv, "ann", "a")
    enable(a)
    other, _ = online(srv, "ann", "other")
    b, _ = online(srv, "bob", "b")
    b.send(f"<message to='{ajid}' type='chat' id='x1'><body>x1</body></message>")
    b.roundtrip()
    a.recv_until(r"id='x1'")
    a.send("</stream:stream>")  # a clean close without acknowledging: the same
    a.read_to_close()
    assert "<body>x1</body>" in q(other.recv_until(r"<message[^>]*id='x1'.*?</message>").group(0))


def test_too_many_unacknowledged(server_factory):
    """sm_max_unacked: one more closes the stream with policy-violation;
    everything it held is routed again (offline here)."""
    srv = server_factory(extra_yaml=MODULES + "sm_ack_request_every: 0\nsm_max_unacked: 10\n")
    users(srv, "ann", "bob")
    a, ajid = online(srv, "ann", "a")
    enable(a)
    b, _ = online(srv, "bob", "b")
    for i in range(11):
        b.send(f"<message to='{ajid}' type='chat' id='t{i}'><body>t{i}</body></message>")
    assert a.stream_error() == "policy-violation"
    gone(srv, ajid)
    b.roundtrip()
    a2, _ = online(srv, "ann", "a2")
    ids = re.findall(r"<message[^>]*id='(t\d+)'", q(a2.roundtrip()))
    assert ids == [f"t{i}" for i in range(11)], ids


def test_slixmpp_stream_management(server_factory):
    """slixmpp's XEP-0198 plugin against xmppd: it enables stream
    management (asking for resumption, which it gets), sends three
    messages to itself, gets them, asks for an acknowledgement and gets one
    that covers exactly what it sent (its 'stanza_acked' events), and
    acknowledges what it received."""
    import ssl

    import slixmpp

    from test_c2s import cert_path
    from xmpptest import run_slixmpp
    srv = server_factory(extra_yaml=MODULES + "sm_ack_request_every: 2\n")
    users(srv, "ann")
    state = {"enabled": False, "got": 0, "acked": 0}

    def make():
        c = slixmpp.ClientXMPP("ann@localhost/sx", "pw")
        c.ssl_context = ssl.create_default_context(cafile=cert_path(srv))
        c.register_plugin("xep_0198")

        def on_enabled(_):
            state["enabled"] = True
            for i in range(3):
                c.send_message(mto=c.boundjid.full, mbody=f"self {i}", mtype="chat")

        def on_message(m):
            state["got"] += 1
            if state["got"] == 3:
                c.plugin["xep_0198"].request_ack()

        def on_acked(st):
            if st.name == "message":
                state["acked"] += 1
                if state["acked"] == 3:
                    c.disconnect()

        c.add_event_handler("sm_enabled", on_enabled)
        c.add_event_handler("message", on_message)
        c.add_event_handler("stanza_acked", on_acked)
        c.add_event_handler("session_start", lambda _: c.send_presence())
        return c

    run_slixmpp(make, ("127.0.0.1", srv.c2s_port), timeout=20)
    assert state == {"enabled": True, "got": 3, "acked": 3}, state
    log = srv.log_text()
    assert "stream management enabled" in log, log
    assert "handled count too high" not in log and "stream error sent" not in log, log


def test_unacknowledged_at_a_graceful_stop_are_stored(server_factory):
    """The server stops while ann has three unacknowledged messages: her
    stream closes with system-shutdown, and they are stored before the
    storage closes (the stop waits for the work the streams' closing
    starts); her next session gets them."""
    import signal
    srv = server_factory(extra_yaml=MODULES + "sm_ack_request_every: 0\n")
    users(srv, "ann", "bob")
    a, ajid = online(srv, "ann", "a")
    enable(a)
    b, _ = online(srv, "bob", "b")
    for i in range(3):
        b.send(f"<message to='{ajid}' type='chat' id='g{i}'><body>g{i}</body></message>")
    b.roundtrip()
    a.recv_until(r"id='g2'")
    assert srv.stop(signal.SIGTERM) == 0
    log = srv.log_text()
    assert "offline store failed" not in log, log[-3000:]
    srv.restart()
    a2, _ = online(srv, "ann", "a2")
    ids = re.findall(r"<message[^>]*id='(g\d)'", q(a2.roundtrip()))
    assert ids == ["g0", "g1", "g2"], ids


def test_server_requests_acks_on_a_timer(server_factory):
    """sm_ack_request_interval: one stanza not asked about is asked for
    that long after it, even below sm_ack_request_every; asking resets it."""
    srv = server_factory(extra_yaml=MODULES + "sm_ack_request_every: 100\n"
                                              "sm_ack_request_interval: 1s\n")
    users(srv, "ann", "bob")
    a, ajid = online(srv, "ann", "a")
    enable(a)
    b, _ = online(srv, "bob", "b")
    t0 = time.time()
    b.send(f"<message to='{ajid}' type='chat' id='k1'><body>k1</body></message>")
    got = q(a.recv_until(r"<r xmlns='urn:xmpp:sm:3'/>", timeout=10).group(0))
    assert time.time() - t0 >= 0.9, got  # not before the interval
    a.send(f"<a xmlns='{SM}' h='1'/>")
    b.send(f"<message to='{ajid}' type='chat' id='k2'><body>k2</body></message>")
    a.recv_until(r"id='k2'.*?<r xmlns='urn:xmpp:sm:3'/>", timeout=10)


def test_mass_disconnect_stores_everything(server_factory):
    """Twelve sessions (one worker) hold 900 unacknowledged messages each
    and their connections all break at once: 10800 messages are routed
    again to offline storage together, more than its per-worker write
    queue takes from senders (10000).  They come from no sender's stream
    (nobody to pace), so none may be refused: each account finds its 900,
    in order.  Before: hundreds bounced with "write queue full"."""
    n_msgs = 900
    srv = server_factory(workers=1, extra_yaml=MODULES + "sm_ack_request_every: 0\n")
    names = [f"u{i}" for i in range(12)]
    users(srv, "bob", *names)
    sess = [online(srv, n, "m") for n in names]
    for c, _ in sess:
        enable(c)
    b, _ = online(srv, "bob", "b")
    for i in range(n_msgs):
        b.send("".join(f"<message to='{jid}' type='chat' id='n{i}'><body>n{i}</body></message>"
                       for _, jid in sess))
    b.roundtrip()
    for c, _ in sess:
        c.recv_until(rf"id='n{n_msgs - 1}'", timeout=60)
    for c, _ in sess:
        c.sock.close()
    for _, jid in sess:
        gone(srv, jid, timeout=30)
    assert "write queue full" not in srv.log_text()
    for n in names:
        # The rows may still be on their way when the account logs in
        # again: what is stored after its pop is taken out for it then
        # (test_rerouted_messages_stored_late_reach_the_new_session).
        c, _ = online(srv, n, "again")
        got = c.recv_until(rf"id='n{n_msgs - 1}'.*?</message>", timeout=60)
        ids = re.findall(r"<message[^>]*id='n(\d+)'", q(got.string[:got.end()]))
        assert ids == [str(i) for i in range(n_msgs)], (n, len(ids), ids[:3])


def test_rerouted_messages_stored_late_reach_the_new_session(server_factory):
    """A session ends with messages it had not acknowledged: they are
    routed again, to offline storage.  When the account logs in again
    while those rows are still on their way (the store's commit comes late:
    XD_DEBUG_BATCH_DELAY_MS, a debug build's knob), the new session's pop
    runs first and finds nothing; the rows stored after it are taken out
    for that session as soon as they are committed, not left for the next
    login.  (test_mass_disconnect_stores_everything hit this on a loaded
    machine.)"""
    srv = server_factory(workers=1, extra_yaml=MODULES + "sm_ack_request_every: 0\n",
                         env={"XD_DEBUG_BATCH_DELAY_MS": "1500"})
    users(srv, "ann", "bob")
    a, ajid = online(srv, "ann", "a")
    enable(a)
    b, _ = online(srv, "bob", "b")
    b.send("".join(f"<message to='{ajid}' type='chat' id='late{i}'><body>{i}</body></message>"
                   for i in range(3)))
    b.roundtrip()
    a.recv_until(r"id='late2'")
    a.sock.close()  # nothing acknowledged
    gone(srv, ajid)
    a2, _ = online(srv, "ann", "again")  # its pop runs before the late commit
    got = a2.recv_until(r"id='late2'.*?</message>", timeout=20)
    ids = re.findall(r"<message[^>]*id='late(\d)'", q(got.string[:got.end()]))
    assert ids == ["0", "1", "2"], ids

"""Gajim's XMPP library (nbxmpp, python3-nbxmpp) against mod_muc: the MUC
issue asks that Gajim's expectations hold for join, config form, subject
and history.  An nbxmpp client, on its GLib main loop as in Gajim, logs in
with STARTTLS and SCRAM, enters a room with history, and reads everything
through nbxmpp's own parsers (its MUC module's presence and message
properties, its disco and data-form code): the self-presence with 110 and
its affiliation and role, the occupant list, the history with delays, the
subject, the room's disco#info, and, as owner of a room it creates, the
configuration form, submitted back with changes."""
import pytest

from helpers import expect, online, users
from test_muc import MUC, config, create, groupchat

nbxmpp = pytest.importorskip("nbxmpp", reason="python3-nbxmpp is missing: run scripts/deps")


class Gajimish:
    """An nbxmpp client driven by a list of steps on a GLib main loop."""

    def __init__(self, srv, user):
        from gi.repository import GLib
        from nbxmpp.client import Client
        from nbxmpp.const import ConnectionProtocol, ConnectionType
        from nbxmpp.structs import StanzaHandler
        from nbxmpp.namespaces import Namespace
        self.GLib = GLib
        self.loop = GLib.MainLoop()
        self.seen = {"presences": [], "messages": [], "errors": []}
        self.keep = []  # nbxmpp holds task callbacks by weak reference
        c = Client()
        c.set_domain("localhost")
        c.set_username(user)
        c.set_resource("gajim")
        c.set_password("pw")
        c.set_custom_host(f"127.0.0.1:{srv.c2s_port}", ConnectionProtocol.TCP,
                          ConnectionType.START_TLS)
        c.set_ignore_tls_errors(True)
        c.subscribe("connection-failed", self._failed)
        c.subscribe("disconnected", self._failed)
        c.register_handler(StanzaHandler(name="presence", callback=self._presence,
                                         ns=Namespace.MUC_USER, priority=49))
        c.register_handler(StanzaHandler(name="message", callback=self._message,
                                         typ="groupchat", priority=49))
        self.c = c

    def _failed(self, client, signal_name):
        self.seen["errors"].append(f"{signal_name}: {client.get_error()}")
        self.loop.quit()

    def _presence(self, _client, _stanza, properties):
        self.seen["presences"].append(properties)

    def _message(self, _client, _stanza, properties):
        self.seen["messages"].append(properties)

    def run(self, on_connected, timeout=30):
        def connected(_client, _signal):
            on_connected(self)
        self.c.subscribe("connected", connected)
        self.GLib.timeout_add_seconds(timeout, self.loop.quit)
        self.c.connect()
        self.loop.run()
        if self.c.state.name != "DISCONNECTED":
            self.c.disconnect()

    def wait(self, pred, then, timeout_ms=15000):
        """then() once pred() holds (checked every 50 ms), else the loop ends."""
        left = [timeout_ms // 50]

        def check():
            if pred():
                then()
                return False
            left[0] -= 1
            if left[0] <= 0:
                self.seen["errors"].append("timed out")
                self.loop.quit()
                return False
            return True
        self.GLib.timeout_add(50, check)


def codes(p):
    """The MUC status codes of presence properties p, as numbers."""
    return {int(c.value) for c in (p.muc_status_codes or [])}


def test_nbxmpp_join_history_subject_and_config(server_factory):
    from nbxmpp.protocol import JID, Presence
    from nbxmpp.namespaces import Namespace
    from nbxmpp.modules.dataforms import extend_form

    srv = server_factory(extra_yaml="modules:\n  mod_muc: {}\n")
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice")
    create(a, "tea", "al")
    config(a, "tea", {"persistentroom": "1", "roomname": "Tea room"})
    a.send(f"<message to='tea@{MUC}' type='groupchat' id='s1'><subject>Darjeeling</subject>"
           f"</message>")
    expect(a, r"id='s1'")
    groupchat(a, "tea", "first cup", "h1")
    groupchat(a, "tea", "second cup", "h2")
    expect(a, r"id='h2'")

    g = Gajimish(srv, "bob")
    out = {}

    def joined():
        return any(110 in codes(p) for p in g.seen["presences"] if p.jid.bare == f"tea@{MUC}")

    def subject_seen():
        return any(m.subject is not None for m in g.seen["messages"])

    def step_join(gj):
        # Gajim's join presence: MUC x with history limits
        p = Presence(to=f"tea@{MUC}/bobby")
        x = p.setTag("x", namespace=Namespace.MUC)
        x.setTag("history", attrs={"maxstanzas": "20"})
        gj.c.send_stanza(p)
        gj.wait(lambda: joined() and subject_seen(), step_info)

    def step_info():
        def got(task):
            out["info"] = task.finish()
            step_create()
        g.keep.append(got)
        g.c.get_module("Discovery").disco_info(f"tea@{MUC}", callback=got)

    def step_create():
        p = Presence(to=f"made@{MUC}/bobby")
        p.setTag("x", namespace=Namespace.MUC)
        g.c.send_stanza(p)
        g.wait(lambda: any(p.jid.bare == f"made@{MUC}" and 201 in codes(p)
                           for p in g.seen["presences"]), step_config)

    def step_config():
        def got(task):
            out["form"] = task.finish()
            form = extend_form(node=out["form"].form)
            form["muc#roomconfig_roomname"].value = "Made by nbxmpp"
            form["muc#roomconfig_persistentroom"].value = True
            form.type_ = "submit"

            def done(task2):
                out["set"] = task2.finish()
                g.loop.quit()
            g.keep.append(done)
            g.c.get_module("MUC").set_config(JID.from_string(f"made@{MUC}"), form,
                                             callback=done)
        g.keep.append(got)
        g.c.get_module("MUC").request_config(JID.from_string(f"made@{MUC}"), callback=got)

    g.run(step_join)
    assert not g.seen["errors"], g.seen["errors"]
    own = [p for p in g.seen["presences"] if p.jid.bare == f"tea@{MUC}" and 110 in codes(p)][0]
    assert own.muc_user.affiliation.value == "none" and own.muc_user.role.value == "participant"
    nicks = {p.jid.resource for p in g.seen["presences"] if p.jid.bare == f"tea@{MUC}"}
    assert {"al", "bobby"} <= nicks, nicks
    hist = [m for m in g.seen["messages"] if m.jid.bare == f"tea@{MUC}" and m.body]
    assert [m.body for m in hist] == ["first cup", "second cup"], hist
    assert all(m.has_server_delay for m in hist), hist  # XEP-0203 delays from the room
    subj = [m for m in g.seen["messages"] if m.subject is not None][0]
    assert subj.is_muc_subject and subj.muc_subject.text == "Darjeeling", subj
    info = out["info"]
    assert info.muc_name == "Tea room" and "muc_persistent" in info.features, info
    assert "muc#roomconfig_roomname" in [f.var for f in out["form"].form.iter_fields()]
    a.send(f"<iq type='get' id='di' to='made@{MUC}'>"
               f"<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    r = expect(a, r"<iq[^>]*id='di'.*?</iq>")
    assert "Made by nbxmpp" in r and "muc_persistent" in r, r

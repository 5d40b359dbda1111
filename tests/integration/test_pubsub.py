"""mod_pubsub (the XEP-0060 service on pubsub.localhost) through the wire, raw
XML: disco of the service and of nodes, create (configured, instant),
configure, default, delete (with redirect), purge, publish (generated ids,
overwrite, publish-options preconditions), retract, items (all, by id,
max_items), max_items and "max", item expiry, subscribe/unsubscribe with
authorization, subscription options, the user's and the owner's lists of
subscriptions and affiliations, the access and publish models, the
notifications (payloads or not, retract, purge, delete, configuration,
notification_type, last item on subscribe), every error condition; and
slixmpp's XEP-0060 plugin end to end.

Barriers: the service holds the sender's stream until a node's operation is
done and routes its answer before its notifications, so the sender's next
round trip comes after them; another client's notifications are checked
with a round trip to the service from the sender and a marker message."""
import re
import time

import pytest

from helpers import assert_nothing_before, iq, reply, send_marker, slix_client, take, take_iq, users

PS = "http://jabber.org/protocol/pubsub"
PSO = PS + "#owner"
EV = PS + "#event"
ERR = PS + "#errors"
DI = "http://jabber.org/protocol/disco#info"
DIT = "http://jabber.org/protocol/disco#items"
SVC = "pubsub.localhost"

MODULES = ("modules:\n"
           "  mod_roster: {}\n"
           "  mod_pubsub:\n"
           "    max_items_limit: 20\n"
           "    max_item_size: 2KiB\n"
           "    max_nodes: 8\n")


def start(server_factory, extra=""):
    srv = server_factory(extra_yaml=MODULES + extra)
    users(srv, "alice", "bob", "carol", "dave")
    return srv


def session(srv, user, res="r", presence=True):
    from xclient import login
    c, jid = login(srv.c2s_port, user, "pw", resource=res)
    if presence:
        c.send("<presence/>")
        c.roundtrip()
    return c, jid


def ps(c, iid, body, typ="set", ns=PS):
    return take_iq(c, iid, f"<pubsub xmlns='{ns}'>{body}</pubsub>", typ=typ, to=SVC)


def ok(r):
    assert "type='result'" in r, r
    return r


def err(r, cond, app=None, feature=None):
    assert "type='error'" in r and f"<{cond} " in r, r
    if app:
        assert re.search(rf"<{app} xmlns='{re.escape(ERR)}'", r), r
    if feature:
        assert f"feature='{feature}'" in r, r
    return r


def form(ftype, **fields):
    f = ""
    for k, v in fields.items():
        vals = v if isinstance(v, list) else [v]
        f += f"<field var='pubsub#{k}'>" + "".join(f"<value>{x}</value>" for x in vals) + "</field>"
    return (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{PS}#{ftype}</value></field>{f}</x>")


def create(c, iid, node, **cfg):
    conf = f"<configure>{form('node_config', **cfg)}</configure>" if cfg else ""
    return ps(c, iid, f"<create node='{node}'/>{conf}")


def publish(c, iid, node, payload="<x xmlns='urn:x'/>", item_id=None, options=None):
    i = f" id='{item_id}'" if item_id else ""
    po = f"<publish-options>{form('publish-options', **options)}</publish-options>" if options else ""
    return ps(c, iid, f"<publish node='{node}'><item{i}>{payload}</item></publish>{po}")


def items(c, iid, node, extra="", inner=""):
    return ps(c, iid, f"<items node='{node}'{extra}>{inner}</items>", typ="get")


def subscribe(c, iid, node, jid, options=None):
    o = f"<options>{form('subscribe_options', **options)}</options>" if options else ""
    return ps(c, iid, f"<subscribe node='{node}' jid='{jid}'/>{o}")


def event_rx(node, what="items"):
    return (rf"<message[^>]*>\s*<event xmlns=['\"]{re.escape(EV)}['\"]>\s*<{what} "
            rf"node=['\"]{re.escape(node)}['\"].*?</message>")


def barrier(sender, c, cjid):
    """sender's earlier notifications to c came before this marker."""
    return send_marker(sender, cjid)


def roster_add(c, iid, jid, group=None):
    g = f"<group>{group}</group>" if group else ""
    ok(take_iq(c, iid, f"<query xmlns='jabber:iq:roster'><item jid='{jid}'>{g}</item></query>"))


def presence_sub(w, wjid, o, ojid):
    """w subscribes to o's presence; o approves (o's roster: from)."""
    wb, ob = wjid.split("/")[0], ojid.split("/")[0]
    w.send(f"<presence to='{ob}' type='subscribe'/>")
    take(o, rf"<presence(?=[^>]*from=['\"]{wb}['\"])[^>]*type=['\"]subscribe['\"]")
    o.send(f"<presence to='{wb}' type='subscribed'/>")
    take(w, rf"<presence(?=[^>]*from=['\"]{ob}['\"])[^>]*type=['\"]subscribed['\"]")
    o.roundtrip()
    w.roundtrip()


# ---- disco ------------------------------------------------------------------------------------------

def test_disco_service_and_nodes(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    r = ok(take_iq(a, "d1", f"<query xmlns='{DI}'/>", typ="get", to=SVC))
    assert "category='pubsub'" in r and "type='service'" in r, r
    for f in ("create-nodes", "instant-nodes", "publish", "subscribe", "retrieve-items",
              "access-authorize", "access-roster", "access-whitelist", "publish-options",
              "item-expire", "modify-affiliations", "manage-subscriptions", "retract-items",
              "delete-items"):
        assert f"var='{PS}#{f}'" in r, (f, r)
    assert "collections" not in r, r
    # No ad-hoc commands (XEP-0060 8.7.3.1: service-unavailable), so no
    # get-pending advertised (8.7.1: only when it is supported).
    assert "get-pending" not in r, r
    err(take_iq(a, "gp", "<command xmlns='http://jabber.org/protocol/commands' "
                f"node='{PS}#get-pending' action='execute'/>", to=SVC), "service-unavailable")
    ok(create(a, "c1", "news", title="News"))
    ok(create(a, "c2", "secret", access_model="whitelist"))
    b, _ = session(srv, "bob")
    r = ok(take_iq(b, "d2", f"<query xmlns='{DIT}'/>", typ="get", to=SVC))
    assert "node='news'" in r and "name='News'" in r and "secret" not in r, r
    r = ok(take_iq(a, "d3", f"<query xmlns='{DIT}'/>", typ="get", to=SVC))
    assert "node='news'" in r and "node='secret'" in r, r
    r = ok(take_iq(b, "d4", f"<query xmlns='{DI}' node='news'/>", typ="get", to=SVC))
    assert "type='leaf'" in r and f"{PS}#meta-data" in r and "alice@localhost" in r, r
    assert re.search(r"var='pubsub#title'[^>]*>\s*<value>News</value>", r), r
    err(take_iq(b, "d5", f"<query xmlns='{DI}' node='nope'/>", typ="get", to=SVC),
        "item-not-found")
    ok(publish(a, "p1", "news", item_id="one"))
    r = ok(take_iq(b, "d6", f"<query xmlns='{DIT}' node='news'/>", typ="get", to=SVC))
    assert f"jid='{SVC}'" in r and "name='one'" in r, r


# ---- nodes ------------------------------------------------------------------------------------------

def test_create_configure_delete_purge(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, bjid = session(srv, "bob")
    ok(create(a, "c1", "n1"))
    err(create(a, "c2", "n1"), "conflict")
    # Instant node: the service names it.
    r = ok(ps(a, "c3", "<create/>"))
    inst = re.search(r"<create node='([^']+)'", r).group(1)
    assert inst, r
    # Collections are not offered.
    err(ps(a, "c4", f"<create node='col'/><configure>{form('node_config', node_type='collection')}"
                    "</configure>"), "feature-not-implemented", "unsupported", "collections")
    err(create(a, "c5", "bad", access_model="nonsense"), "not-acceptable")
    err(create(a, "c6", "bad", max_items="21"), "not-acceptable")
    # Configure: get, set, not the owner.
    r = ok(ps(a, "g1", "<configure node='n1'/>", typ="get", ns=PSO))
    assert f"{PS}#node_config" in r and "pubsub#notification_type" in r, r
    assert re.search(r"var='pubsub#access_model'[^>]*>\s*<value>open</value>", r), r
    err(ps(b, "g2", "<configure node='n1'/>", typ="get", ns=PSO), "forbidden")
    err(ps(a, "g3", "<configure node='zz'/>", typ="get", ns=PSO), "item-not-found")
    err(ps(a, "g4", "<configure/>", typ="get", ns=PSO), "bad-request", "nodeid-required")
    ok(ps(a, "g5", f"<configure node='n1'>{form('node_config', max_items='max', title='T')}"
                   "</configure>", ns=PSO))
    r = ok(ps(a, "g6", "<configure node='n1'/>", typ="get", ns=PSO))
    assert re.search(r"var='pubsub#max_items'[^>]*>\s*<value>max</value>", r), r
    r = ok(ps(a, "df", "<default/>", typ="get", ns=PSO))
    assert f"{PS}#node_config" in r, r
    # Purge and delete, with notifications to a subscriber.
    ok(subscribe(b, "s1", "n1", "bob@localhost"))
    for i in range(3):
        ok(publish(a, f"p{i}", "n1", item_id=f"i{i}"))
    ok(ps(a, "pu", "<purge node='n1'/>", ns=PSO))
    assert "type='result'" in items(a, "it", "n1") and "<item " not in items(a, "it2", "n1")
    take(b, rf"<message[^>]*>\s*<event xmlns='{re.escape(EV)}'>\s*<purge node='n1'/>")
    err(ps(b, "pu2", "<purge node='n1'/>", ns=PSO), "forbidden")
    ok(ps(a, "de", "<delete node='n1'><redirect uri='xmpp:pubsub.localhost?;node=n2'/></delete>",
          ns=PSO))
    ev = take(b, rf"<message[^>]*>\s*<event xmlns='{re.escape(EV)}'>\s*<delete node='n1'>.*?</message>")
    assert "redirect uri='xmpp:pubsub.localhost?;node=n2'" in ev, ev
    err(items(a, "it3", "n1"), "item-not-found")
    err(ps(a, "de2", "<delete node='n1'/>", ns=PSO), "item-not-found")


def test_create_and_configure_errors(server_factory):
    """XEP-0060 8.1.3: <configure/> follows <create/> and has no 'node'
    (else bad-request); an access model the service does not support is
    not-acceptable + unsupported-access-model (8.1.2); neither creates."""
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    cf = f"{form('node_config', max_items='3')}"
    err(ps(a, "k1", f"<create node='k1'/><configure node='k1'>{cf}</configure>"), "bad-request")
    err(ps(a, "k2", f"<configure>{cf}</configure><create node='k2'/>"), "bad-request")
    err(create(a, "k3", "k3", access_model="bogus"), "not-acceptable", "unsupported-access-model")
    for n in ("k1", "k2", "k3"):
        err(items(a, f"i{n}", n), "item-not-found")
    ok(ps(a, "k4", f"<create node='k4'/><configure>{cf}</configure>"))


def test_create_access_rule_and_node_limit(server_factory):
    srv = start(server_factory, extra=(
        "    access_createnode: creators\n"
        "acl:\n  creators:\n    user: [alice]\n"
        "access_rules:\n  creators:\n    - allow: creators\n"))
    a, _ = session(srv, "alice")
    b, _ = session(srv, "bob")
    err(create(b, "c1", "x"), "forbidden")
    for i in range(8):
        ok(create(a, f"c{i}", f"n{i}"))
    err(create(a, "c9", "n9"), "resource-constraint")


# ---- items ------------------------------------------------------------------------------------------

def test_publish_items_retract(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, bjid = session(srv, "bob")
    ok(create(a, "c", "n", max_items="3"))
    r = ok(publish(a, "p0", "n", "<x xmlns='urn:x'>zero</x>"))
    gen = re.search(r"<item id='([^']+)'", r).group(1)
    ok(publish(a, "p1", "n", "<x xmlns='urn:x'>one</x>", item_id="a"))
    ok(publish(a, "p2", "n", "<x xmlns='urn:x'>one-b</x>", item_id="a"))  # overwrite
    r = ok(items(b, "i1", "n"))
    assert r.count("<item ") == 2 and "one-b" in r and ">one<" not in r and gen in r, r
    ok(publish(a, "p3", "n", item_id="b"))
    ok(publish(a, "p4", "n", item_id="c"))
    r = ok(items(b, "i2", "n"))
    assert r.count("<item ") == 3 and gen not in r, r  # max_items 3
    r = ok(items(b, "i3", "n", extra=" max_items='1'"))
    assert r.count("<item ") == 1 and "id='c'" in r, r
    r = ok(items(b, "i4", "n", inner="<item id='a'/>"))
    assert "one-b" in r and r.count("<item ") == 1, r
    err(items(b, "i5", "n", inner="<item id='zz'/>"), "item-not-found")
    err(items(b, "i6", "n", extra=" max_items='0'"), "bad-request")
    # Retract: owner only, notified to subscribers.
    ok(subscribe(b, "s", "n", "bob@localhost"))
    err(ps(b, "r0", "<retract node='n'><item id='a'/></retract>"), "forbidden")
    ok(ps(a, "r1", "<retract node='n' notify='true'><item id='a'/></retract>"))
    take(b, rf"<message[^>]*>\s*<event xmlns='{re.escape(EV)}'>\s*<items node='n'>\s*<retract id='a'/>")
    assert "id='a'" not in ok(items(b, "i7", "n"))
    err(ps(a, "r2", "<retract node='n'><item id='a'/></retract>"), "item-not-found")
    err(ps(a, "r3", "<retract node='n'/>"), "bad-request", "item-required")
    err(ps(a, "r4", "<retract><item id='a'/></retract>"), "bad-request", "nodeid-required")
    err(ps(a, "r5", "<retract node='zz'><item id='a'/></retract>"), "item-not-found")


def test_publish_errors_and_preconditions(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, _ = session(srv, "bob")
    ok(create(a, "c", "n", access_model="open", max_items="max"))
    err(ps(a, "e1", "<publish><item><x xmlns='urn:x'/></item></publish>"), "bad-request",
        "nodeid-required")
    err(ps(a, "e2", "<publish node='n'/>"), "bad-request", "item-required")
    err(ps(a, "e3", "<publish node='n'><item/></publish>"), "bad-request", "payload-required")
    err(publish(a, "e4", "missing"), "item-not-found")
    err(publish(b, "e5", "n"), "forbidden")  # publish model publishers
    err(publish(a, "e6", "n", f"<x xmlns='urn:x'>{'y' * 3000}</x>"), "not-acceptable",
        "payload-too-big")
    ok(publish(a, "e7", "n", options={"access_model": "open", "max_items": "20"}))  # max == 20
    err(publish(a, "e8", "n", options={"access_model": "whitelist"}), "conflict",
        "precondition-not-met")
    # 7.1.5: a field the service does not know is refused too.
    err(publish(a, "e8b", "n", options={"frobnicate": "1"}), "conflict", "precondition-not-met")
    err(ps(a, "e9", "<frobnicate node='n'/>"), "bad-request")
    err(ps(a, "e10", "<associate node='n'/>"), "feature-not-implemented", "unsupported",
        "collections")
    err(take_iq(a, "e11", "<query xmlns='jabber:iq:version'/>", typ="get", to=SVC),
        "service-unavailable")


def test_publish_to_transient_notification_node(server_factory):
    """XEP-0060 7.1.3.6: a node that neither persists items nor delivers
    payloads takes a publish without an item; one that provides an item,
    even an empty one or only an id, is a bad-request with item-forbidden."""
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    ok(create(a, "c", "tr", persist_items="0", deliver_payloads="0"))
    ok(ps(a, "p0", "<publish node='tr'/>"))
    err(publish(a, "p1", "tr"), "bad-request", "item-forbidden")
    err(ps(a, "p2", "<publish node='tr'><item/></publish>"), "bad-request", "item-forbidden")
    err(ps(a, "p3", "<publish node='tr'><item id='x'/></publish>"), "bad-request",
        "item-forbidden")


def test_name_and_id_limits(server_factory):
    """Node names and item ids up to 1024 bytes; longer ones not-acceptable."""
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    ok(create(a, "c1", "n" * 1024))
    err(create(a, "c2", "n" * 1025), "not-acceptable")
    err(items(a, "i1", "n" * 1025), "not-acceptable")
    ok(publish(a, "p1", "n" * 1024, item_id="i" * 1024))
    err(publish(a, "p2", "n" * 1024, item_id="i" * 1025), "not-acceptable")
    assert "i" * 1024 in ok(items(a, "i2", "n" * 1024))
    err(create(a, "c3", "t", title="x" * 256), "not-acceptable")
    ok(create(a, "c4", "t", title="x" * 255))
    err(create(a, "c5", "g", access_model="roster",
               roster_groups_allowed=[f"group{i:03d}" + "y" * 40 for i in range(12)]),
        "not-acceptable")
    ok(create(a, "c6", "g", access_model="roster",
              roster_groups_allowed=[f"group{i:03d}" + "y" * 40 for i in range(10)]))


def test_publish_models(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, _ = session(srv, "bob")
    c, _ = session(srv, "carol")
    ok(create(a, "c1", "subs", publish_model="subscribers"))
    ok(create(a, "c2", "open", publish_model="open"))
    ok(create(a, "c3", "pubs"))
    err(publish(b, "p1", "subs"), "forbidden")
    ok(subscribe(b, "s1", "subs", "bob@localhost"))
    ok(publish(b, "p2", "subs"))
    ok(publish(c, "p3", "open"))
    err(publish(c, "p4", "pubs"), "forbidden")
    ok(ps(a, "af", "<affiliations node='pubs'><affiliation jid='carol@localhost' "
                   "affiliation='publish-only'/></affiliations>", ns=PSO))
    ok(publish(c, "p5", "pubs", item_id="byc"))
    # publish-only may publish and retract its own items, not read.
    ok(ps(c, "r1", "<retract node='pubs'><item id='byc'/></retract>"))


# ---- subscriptions ----------------------------------------------------------------------------------

def test_subscribe_unsubscribe_options_lists(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, bjid = session(srv, "bob")
    ok(create(a, "c", "n"))
    ok(publish(a, "p0", "n", "<x xmlns='urn:x'>last</x>", item_id="l"))
    err(subscribe(b, "s0", "n", "carol@localhost"), "bad-request", "invalid-jid")
    err(ps(b, "s1", "<subscribe node='n'/>"), "bad-request", "jid-required")
    err(ps(b, "s2", "<subscribe jid='bob@localhost'/>"), "bad-request", "nodeid-required")
    err(subscribe(b, "s3", "zz", "bob@localhost"), "item-not-found")
    r = ok(subscribe(b, "s4", "n", bjid))  # a full JID of its own
    assert "subscription='subscribed'" in r and f"jid='{bjid}'" in r and "subid=" in r, r
    # The last published item follows the answer (send_last_published_item).
    ev = take(b, event_rx("n"))
    assert ">last<" in ev, ev
    # Options: the form, deliver off, then no notifications.
    r = ok(ps(b, "o1", f"<options node='n' jid='{bjid}'/>", typ="get"))
    assert f"{PS}#subscribe_options" in r and "pubsub#deliver" in r, r
    err(ps(b, "o2", "<options node='n' jid='carol@localhost'/>", typ="get"), "forbidden")
    err(ps(b, "o3", "<options node='n' jid='bob@localhost'/>", typ="get"), "unexpected-request",
        "not-subscribed")
    sub_form = form("subscribe_options", deliver="0")
    ok(ps(b, "o4", f"<options node='n' jid='{bjid}'>{sub_form}</options>"))
    ok(publish(a, "p1", "n", "<x xmlns='urn:x'>quiet</x>"))
    assert_nothing_before(b, "quiet", barrier=send_marker(a, bjid))
    # Lists: the user's subscriptions and affiliations.
    r = ok(ps(b, "l1", "<subscriptions/>", typ="get"))
    assert "node='n'" in r and "subscription='subscribed'" in r, r
    r = ok(ps(a, "l2", "<affiliations/>", typ="get"))
    assert "node='n'" in r and "affiliation='owner'" in r, r
    # The owner's list.
    r = ok(ps(a, "l3", "<subscriptions node='n'/>", typ="get", ns=PSO))
    assert f"jid='{bjid}'" in r, r
    err(ps(b, "l4", "<subscriptions node='n'/>", typ="get", ns=PSO), "forbidden")
    # Unsubscribe.
    err(ps(b, "u0", "<unsubscribe node='n' jid='carol@localhost'/>"), "forbidden")  # 6.2.3.3
    err(ps(b, "u00", "<unsubscribe node='n'/>"), "bad-request", "jid-required")
    ok(ps(b, "u1", f"<unsubscribe node='n' jid='{bjid}'/>"))
    err(ps(b, "u2", f"<unsubscribe node='n' jid='{bjid}'/>"), "unexpected-request",
        "not-subscribed")
    assert "<subscription " not in ok(ps(b, "l5", "<subscriptions/>", typ="get"))


def test_owner_manages_subscriptions_and_affiliations(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, bjid = session(srv, "bob")
    c, _ = session(srv, "carol")
    ok(create(a, "c", "n", access_model="whitelist"))
    err(items(b, "i0", "n"), "not-allowed", "closed-node")
    err(subscribe(b, "s0", "n", "bob@localhost"), "not-allowed", "closed-node")
    ok(ps(a, "a1", "<affiliations node='n'><affiliation jid='bob@localhost' affiliation='member'/>"
                   "<affiliation jid='carol@localhost' affiliation='outcast'/></affiliations>",
          ns=PSO))
    r = ok(ps(a, "a2", "<affiliations node='n'/>", typ="get", ns=PSO))
    assert "jid='bob@localhost' affiliation='member'" in r, r
    assert "jid='carol@localhost' affiliation='outcast'" in r, r
    assert "jid='alice@localhost' affiliation='owner'" in r, r
    ok(items(b, "i1", "n"))
    err(items(c, "i2", "n"), "forbidden")
    err(ps(a, "a3", "<affiliations node='n'><affiliation jid='bob@localhost' "
                    "affiliation='king'/></affiliations>", ns=PSO), "not-acceptable")
    err(ps(b, "a4", "<affiliations node='n'/>", typ="get", ns=PSO), "forbidden")
    # The owner subscribes bob; bob is told.
    ok(ps(a, "m1", "<subscriptions node='n'><subscription jid='bob@localhost' "
                   "subscription='subscribed'/></subscriptions>", ns=PSO))
    take(b, rf"<message[^>]*>\s*<event xmlns='{re.escape(EV)}'>\s*<subscription node='n' "
            r"jid='bob@localhost' subid='[^']+' subscription='subscribed'/>")
    ok(publish(a, "p", "n", "<x xmlns='urn:x'>hello</x>"))
    assert "hello" in take(b, event_rx("n"))
    ok(ps(a, "m2", "<subscriptions node='n'><subscription jid='bob@localhost' "
                   "subscription='none'/></subscriptions>", ns=PSO))
    assert "<subscription " not in ok(ps(b, "l", "<subscriptions/>", typ="get"))
    # An outcast loses its subscription.
    ok(ps(a, "a5", "<affiliations node='n'><affiliation jid='bob@localhost' affiliation='member'/>"
                   "</affiliations>", ns=PSO))
    ok(subscribe(b, "s1", "n", bjid))
    ok(ps(a, "a6", "<affiliations node='n'><affiliation jid='bob@localhost' "
                   "affiliation='outcast'/></affiliations>", ns=PSO))
    assert "<subscription " not in ok(ps(b, "l2", "<subscriptions/>", typ="get"))
    r = ok(ps(b, "l3", "<affiliations/>", typ="get"))
    assert "affiliation='outcast'" in r, r


def test_owner_changes_several_entries_partly_invalid(server_factory):
    """XEP-0060 8.8.2.4 and 8.9.2.4: of several subscriptions or
    affiliations set in one request, the invalid ones come back in the
    not-acceptable error with their original, unaltered values and the
    others are made; two <affiliation/> for one JID are a bad-request and
    change nothing."""
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    ok(create(a, "c", "n", access_model="whitelist"))
    ok(ps(a, "a0", "<affiliations node='n'><affiliation jid='bob@localhost' affiliation='member'/>"
                   "</affiliations>", ns=PSO))
    # The sole owner made none (the XEP's example) and an unknown affiliation.
    r = err(ps(a, "a1", "<affiliations node='n'>"
                        "<affiliation jid='alice@localhost' affiliation='none'/>"
                        "<affiliation jid='carol@localhost' affiliation='publisher'/>"
                        "<affiliation jid='bob@localhost' affiliation='king'/>"
                        "</affiliations>", ns=PSO), "not-acceptable")
    back = re.search(rf"<pubsub xmlns='{re.escape(PSO)}'>\s*<affiliations node='n'>(.*?)"
                     r"</affiliations>\s*</pubsub>", r)
    assert back, r
    assert re.findall(r"<affiliation [^>]*/>", back.group(1)) == [
        "<affiliation jid='alice@localhost' affiliation='owner'/>",
        "<affiliation jid='bob@localhost' affiliation='member'/>"], r
    r = ok(ps(a, "a2", "<affiliations node='n'/>", typ="get", ns=PSO))
    assert "jid='carol@localhost' affiliation='publisher'" in r, r
    assert "jid='bob@localhost' affiliation='member'" in r, r
    assert "jid='alice@localhost' affiliation='owner'" in r, r
    # One JID twice: bad-request, nothing changed.
    err(ps(a, "a3", "<affiliations node='n'>"
                    "<affiliation jid='dave@localhost' affiliation='member'/>"
                    "<affiliation jid='dave@localhost' affiliation='publisher'/>"
                    "</affiliations>", ns=PSO), "bad-request")
    assert "dave@localhost" not in ok(ps(a, "a4", "<affiliations node='n'/>", typ="get", ns=PSO))
    # Subscriptions: bob's stays as it was, carol's is made.
    ok(ps(a, "m0", "<subscriptions node='n'><subscription jid='bob@localhost' "
                   "subscription='subscribed'/></subscriptions>", ns=PSO))
    r = err(ps(a, "m1", "<subscriptions node='n'>"
                        "<subscription jid='bob@localhost' subscription='bogus'/>"
                        "<subscription jid='carol@localhost' subscription='subscribed'/>"
                        "<subscription jid='dave@localhost' subscription='maybe'/>"
                        "</subscriptions>", ns=PSO), "not-acceptable")
    back = re.search(rf"<pubsub xmlns='{re.escape(PSO)}'>\s*<subscriptions node='n'>(.*?)"
                     r"</subscriptions>\s*</pubsub>", r)
    assert back, r
    got = re.findall(r"<subscription [^>]*/>", back.group(1))
    assert len(got) == 2, r
    assert re.match(r"<subscription jid='bob@localhost' (subid='[^']+' )?"
                    r"subscription='subscribed'/>", got[0]), r
    assert got[1] == "<subscription jid='dave@localhost' subscription='none'/>", r
    r = ok(ps(a, "m2", "<subscriptions node='n'/>", typ="get", ns=PSO))
    assert re.search(r"jid='carol@localhost'[^>]*subscription='subscribed'", r), r
    assert re.search(r"jid='bob@localhost'[^>]*subscription='subscribed'", r), r


def test_authorize_access_model(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, _ = session(srv, "bob")
    c, _ = session(srv, "carol")
    ok(create(a, "c", "n", access_model="authorize"))
    ok(publish(a, "p0", "n", "<x xmlns='urn:x'>first</x>"))
    err(items(b, "i0", "n"), "not-authorized", "not-subscribed")
    r = ok(subscribe(b, "s1", "n", "bob@localhost"))
    assert "subscription='pending'" in r, r
    msg = take(a, rf"<message[^>]*from='{SVC}'[^>]*>.*?subscribe_authorization.*?</message>")
    assert "bob@localhost" in msg and "pubsub#allow" in msg, msg
    err(subscribe(b, "s2", "n", "bob@localhost"), "not-authorized", "pending-subscription")
    r = ok(ps(a, "gp", "<subscriptions node='n'/>", typ="get", ns=PSO))
    assert "subscription='pending'" in r, r

    def answer(who, allow):
        a.send(f"<message to='{SVC}'><x xmlns='jabber:x:data' type='submit'>"
               f"<field var='FORM_TYPE' type='hidden'><value>{PS}#subscribe_authorization</value>"
               f"</field><field var='pubsub#node'><value>n</value></field>"
               f"<field var='pubsub#subscriber_jid'><value>{who}</value></field>"
               f"<field var='pubsub#allow'><value>{allow}</value></field></x></message>")
    answer("bob@localhost", "true")
    take(b, r"<subscription node='n' jid='bob@localhost' subid='[^']+' subscription='subscribed'/>")
    assert "first" in take(b, event_rx("n"))  # the last item, once approved
    assert "first" in ok(items(b, "i1", "n"))
    # Denied.
    ok(subscribe(c, "s3", "n", "carol@localhost"))
    take(a, rf"<message[^>]*from='{SVC}'[^>]*>.*?carol@localhost.*?</message>")
    answer("carol@localhost", "false")
    take(c, r"<subscription node='n' jid='carol@localhost' subid='[^']+' subscription='none'/>")
    err(items(c, "i2", "n"), "not-authorized", "not-subscribed")
    # Someone else's answer does nothing.
    ok(subscribe(c, "s4", "n", "carol@localhost"))
    b.send(f"<message to='{SVC}'><x xmlns='jabber:x:data' type='submit'>"
           f"<field var='FORM_TYPE' type='hidden'><value>{PS}#subscribe_authorization</value>"
           f"</field><field var='pubsub#node'><value>n</value></field>"
           f"<field var='pubsub#subscriber_jid'><value>carol@localhost</value></field>"
           f"<field var='pubsub#allow'><value>true</value></field></x></message>")
    b.roundtrip()
    r = ok(ps(a, "gp2", "<subscriptions node='n'/>", typ="get", ns=PSO))
    assert "jid='carol@localhost' subid" in r and "subscription='pending'" in r, r


def test_presence_and_roster_access_models(server_factory):
    srv = start(server_factory)
    a, ajid = session(srv, "alice")
    b, bjid = session(srv, "bob")
    c, cjid = session(srv, "carol")
    d, _ = session(srv, "dave")
    ok(create(a, "c1", "pres", access_model="presence"))
    ok(create(a, "c2", "fr", access_model="roster", roster_groups_allowed=["Friends"]))
    presence_sub(b, bjid, a, ajid)  # alice's roster: bob, from
    roster_add(a, "ro1", "carol@localhost", "Friends")
    roster_add(a, "ro2", "dave@localhost", "Work")
    ok(items(b, "i1", "pres"))
    err(items(c, "i2", "pres"), "not-authorized", "presence-subscription-required")
    err(subscribe(c, "s1", "pres", "carol@localhost"), "not-authorized",
        "presence-subscription-required")
    ok(subscribe(b, "s2", "pres", "bob@localhost"))
    ok(items(c, "i3", "fr"))
    err(items(d, "i4", "fr"), "not-authorized", "not-in-roster-group")
    err(items(b, "i5", "fr"), "not-authorized", "not-in-roster-group")
    r = ok(ps(a, "g", "<configure node='fr'/>", typ="get", ns=PSO))
    assert re.search(r"var='pubsub#roster_groups_allowed'[^>]*>\s*<value>Friends</value>", r), r


# ---- notifications ----------------------------------------------------------------------------------

def test_notifications_payloads_type_config(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, bjid = session(srv, "bob")
    ok(create(a, "c", "n", deliver_payloads="0", notification_type="normal",
              send_last_published_item="never", max_items="10"))
    ok(publish(a, "p0", "n", "<x xmlns='urn:x'>before</x>", item_id="b0"))
    ok(subscribe(b, "s", "n", "bob@localhost"))
    ok(publish(a, "p1", "n", "<x xmlns='urn:x'>secret</x>", item_id="i1"))
    ev = take(b, event_rx("n"))
    assert "type='normal'" in ev and "id='i1'" in ev and "secret" not in ev, ev
    assert "before" not in ev and "b0" not in ev, ev  # send_last never
    # Configuration change notified (notify_config), with payloads on: the form.
    ok(ps(a, "cf", f"<configure node='n'>{form('node_config', deliver_payloads='1', notification_type='headline')}"
                   "</configure>", ns=PSO))
    ev = take(b, rf"<message[^>]*>\s*<event xmlns='{re.escape(EV)}'>\s*<configuration node='n'.*?</message>")
    assert "pubsub#deliver_payloads" in ev, ev
    ok(publish(a, "p2", "n", "<x xmlns='urn:x'>visible</x>"))
    ev = take(b, event_rx("n"))
    assert "type='headline'" in ev and "visible" in ev, ev
    # notify_retract off: no retract event.
    ok(ps(a, "cf2", f"<configure node='n'>{form('node_config', notify_retract='0')}</configure>",
          ns=PSO))
    take(b, rf"<configuration node='n'")
    ok(ps(a, "r", "<retract node='n'><item id='i1'/></retract>"))
    assert_nothing_before(b, "<retract", barrier=send_marker(a, bjid))


def test_last_item_on_presence(server_factory):
    """on_sub_and_presence: a subscriber's session that becomes available
    gets the last item of each such node; on_sub nodes and subscriptions
    with delivery off send nothing then."""
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, bjid = session(srv, "bob")
    ok(create(a, "c1", "both", max_items="5"))  # on_sub_and_presence by default
    ok(create(a, "c2", "onsub", send_last_published_item="on_sub"))
    ok(create(a, "c3", "quiet"))
    for n in ("both", "onsub"):
        ok(subscribe(b, f"s-{n}", n, "bob@localhost"))
    ok(subscribe(b, "s-q", "quiet", "bob@localhost",
                 options={"deliver": "0"}))
    b.close()
    ok(publish(a, "p0", "both", "<x xmlns='urn:x'>older</x>"))
    ok(publish(a, "p1", "both", "<x xmlns='urn:x'>newest</x>"))
    ok(publish(a, "p2", "onsub", "<x xmlns='urn:x'>not-sent</x>"))
    ok(publish(a, "p3", "quiet", "<x xmlns='urn:x'>not-sent</x>"))
    b, bjid = session(srv, "bob", "again", presence=False)
    b.send("<presence/>")
    ev = take(b, event_rx("both"))
    assert "newest" in ev and f"to='{bjid}'" in ev and "older" not in ev, ev
    assert_nothing_before(b, "not-sent")  # the presence's work is done by the round trip


@pytest.mark.slow  # a 1 s expiry against the clock; under ThreadSanitizer a round trip can take it
def test_item_expiry(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    ok(create(a, "c", "n", item_expire="1", max_items="10"))
    ok(publish(a, "p0", "n", item_id="old"))
    time.sleep(2.1)  # the item's age is what is tested, not a negative check
    ok(publish(a, "p1", "n", item_id="new"))
    r = ok(items(a, "i", "n"))
    assert "id='new'" in r and "id='old'" not in r, r
    err(items(a, "i2", "n", inner="<item id='old'/>"), "item-not-found")
    # Gone from storage: a longer expiry does not bring it back.
    ok(ps(a, "cf", f"<configure node='n'>{form('node_config', item_expire='0')}</configure>",
          ns=PSO))
    assert "id='old'" not in ok(items(a, "i3", "n"))


def test_persistence(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, _ = session(srv, "bob")
    ok(create(a, "c", "n"))
    ok(publish(a, "p", "n", "<x xmlns='urn:x'>kept</x>", item_id="k"))
    ok(subscribe(b, "s", "n", "bob@localhost"))
    a.close()
    b.close()
    assert srv.stop() == 0
    srv.restart()
    b, _ = session(srv, "bob")
    assert "kept" in ok(items(b, "i", "n"))
    assert "node='n'" in ok(ps(b, "l", "<subscriptions/>", typ="get"))


def test_account_removal(server_factory):
    """An account's nodes, subscriptions and affiliations go with it."""
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, bjid = session(srv, "bob")
    c, _ = session(srv, "carol")
    ok(create(a, "c1", "alices"))
    ok(publish(a, "p1", "alices", item_id="x"))
    ok(create(c, "c2", "carols"))
    ok(subscribe(b, "s1", "carols", "bob@localhost"))
    ok(subscribe(b, "s2", "carols", bjid))
    ok(ps(c, "a1", "<affiliations node='carols'><affiliation jid='bob@localhost' "
                   "affiliation='publisher'/></affiliations>", ns=PSO))
    a.close()
    b.close()
    for u in ("alice", "bob"):
        assert srv.ctl_run("unregister", u, "localhost").returncode == 0
    c.roundtrip()
    users(srv, "alice", "bob")
    a, _ = session(srv, "alice")
    err(items(a, "i1", "alices"), "item-not-found")
    ok(create(a, "c3", "alices"))  # the name is free again
    r = ok(ps(c, "l1", "<subscriptions node='carols'/>", typ="get", ns=PSO))
    assert "bob@" not in r, r
    r = ok(ps(c, "l2", "<affiliations node='carols'/>", typ="get", ns=PSO))
    assert "bob@" not in r, r


# ---- slixmpp -----------------------------------------------------------------------------------------

def test_slixmpp_xep0060(server_factory):
    """slixmpp's XEP-0060 plugin: create, configure, publish, subscribe, get
    notified, items, retract, delete."""
    import asyncio
    import xml.etree.ElementTree as ET
    import slixmpp
    from xmpptest import run_slixmpp
    srv = start(server_factory)
    state = {}

    def make():
        c = slix_client(srv, "alice@localhost/slix", "xep_0004", "xep_0030", "xep_0060")
        got = asyncio.Event()
        got_retract = asyncio.Event()

        def on_event(msg):
            state.setdefault("events", []).extend(
                i["id"] for i in msg["pubsub_event"]["items"]["substanzas"])
            got.set()

        def on_retract(msg):
            state["retracted"] = True
            got_retract.set()

        async def on_start(_):
            svc = slixmpp.JID(SVC)
            p = c["xep_0060"]
            try:
                c.send_presence()
                await p.create_node(svc, "slixnode")
                cfg = await p.get_node_config(svc, "slixnode")
                form = cfg["pubsub_owner"]["configure"]["form"]
                form["type"] = "submit"
                form.field["pubsub#max_items"]["value"] = "5"
                await p.set_node_config(svc, "slixnode", form)
                await p.subscribe(svc, "slixnode")
                payload = ET.fromstring("<entry xmlns='urn:example'>hi</entry>")
                r = await p.publish(svc, "slixnode", id="e1", payload=payload)
                state["published"] = r["pubsub"]["publish"]["item"]["id"]
                await asyncio.wait_for(got.wait(), 5)
                r = await p.get_items(svc, "slixnode")
                state["items"] = [i["id"] for i in r["pubsub"]["items"]["substanzas"]]
                await p.retract(svc, "slixnode", "e1", notify=True)
                await asyncio.wait_for(got_retract.wait(), 5)
                cfg = await p.get_node_config(svc, "slixnode")
                state["max"] = cfg["pubsub_owner"]["configure"]["form"]["values"]["pubsub#max_items"]
                await p.delete_node(svc, "slixnode")
                try:
                    await p.get_items(svc, "slixnode")
                except slixmpp.exceptions.IqError as e:
                    state["after_delete"] = e.iq["error"]["condition"]
            finally:
                c.disconnect()

        c.add_event_handler("pubsub_publish", on_event)
        c.add_event_handler("pubsub_retract", on_retract)
        c.add_event_handler("session_start", on_start)
        return c

    run_slixmpp(make, ("127.0.0.1", srv.c2s_port))
    assert state.get("published") == "e1", state
    assert state.get("events") == ["e1"], state
    assert state.get("items") == ["e1"], state
    assert state.get("retracted"), state
    assert state.get("max") == "5", state
    assert state.get("after_delete") == "item-not-found", state


def test_node_queue_bound(server_factory):
    """max_queue: a node runs one request and keeps max_queue waiting; more
    are answered resource-constraint.  The database is locked from outside
    so that the first request cannot finish while the others arrive."""
    import os
    import sqlite3
    srv = start(server_factory, extra="    max_queue: 1\n")
    users(srv, "erin", "frank")
    a, _ = session(srv, "alice")
    ok(create(a, "c", "n", publish_model="open"))
    cs = [session(srv, u)[0] for u in ("bob", "carol", "dave", "erin")]
    con = sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db"), isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        for i, c in enumerate(cs):
            c.send(f"<iq type='set' id='q{i}' to='{SVC}'><pubsub xmlns='{PS}'><publish node='n'>"
                   f"<item id='i{i}'><x xmlns='urn:x'/></item></publish></pubsub></iq>")
        # Wait until two answers came (the refusals: the other two cannot
        # finish while the lock is held), reading every stream in turn.
        answers = {}
        deadline = time.time() + 10
        while len(answers) < 2 and time.time() < deadline:
            for i, c in enumerate(cs):
                if i in answers:
                    continue
                try:
                    answers[i] = c.recv_until(rf"<iq[^>]*id='q{i}'.*?</iq>|<iq[^>]*id='q{i}'[^>]*/>",
                                              timeout=0.05).group(0).decode()
                except AssertionError:
                    pass
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert len(answers) == 2, answers
    assert all("resource-constraint" in r for r in answers.values()), answers
    # The two others go through once the lock is gone.
    for i, c in enumerate(cs):
        if i not in answers:
            assert "type='result'" in reply(c, f"q{i}", timeout=10).replace('"', "'")


def test_subid_in_options_and_unsubscribe(server_factory):
    """XEP-0060 6.2.3.5 and 6.3.4.3: a subid that is not the subscription's
    is not-acceptable + invalid-subid (options get and set, unsubscribe);
    the right one works, and the options form names it (6.3.2)."""
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, bjid = session(srv, "bob")
    ok(create(a, "c", "n"))
    r = ok(subscribe(b, "s1", "n", bjid))
    subid = re.search(r"subid='([^']+)'", r).group(1)
    err(ps(b, "o1", f"<options node='n' jid='{bjid}' subid='nope'/>", typ="get"),
        "not-acceptable", "invalid-subid")
    r = ok(ps(b, "o2", f"<options node='n' jid='{bjid}' subid='{subid}'/>", typ="get"))
    assert f"subid='{subid}'" in r, r
    r = ok(ps(b, "o3", f"<options node='n' jid='{bjid}'/>", typ="get"))
    assert f"subid='{subid}'" in r, r
    sub_form = form("subscribe_options", deliver="0")
    err(ps(b, "o4", f"<options node='n' jid='{bjid}' subid='nope'>{sub_form}</options>"),
        "not-acceptable", "invalid-subid")
    ok(ps(b, "o5", f"<options node='n' jid='{bjid}' subid='{subid}'>{sub_form}</options>"))
    err(ps(b, "u1", f"<unsubscribe node='n' jid='{bjid}' subid='nope'/>"), "not-acceptable",
        "invalid-subid")
    assert f"jid='{bjid}'" in ok(ps(a, "l1", "<subscriptions node='n'/>", typ="get", ns=PSO))
    ok(ps(b, "u2", f"<unsubscribe node='n' jid='{bjid}' subid='{subid}'/>"))
    err(ps(b, "u3", f"<unsubscribe node='n' jid='{bjid}'/>"), "unexpected-request",
        "not-subscribed")


# ---- multiple subscriptions, subscription options (XEP-0060 6.1.6, 6.3, 6.4) --------------------

SHIM = "http://jabber.org/protocol/shim"


def subids_of(ev):
    """The SubID SHIM headers of a notification, in order."""
    return re.findall(r"<header name='SubID'>([^<]+)</header>", ev)


def test_disco_lists_exactly_the_subscription_features(server_factory):
    """disco#info names each feature once, and the subscription ones the
    service has: multi-subscribe (with the option on), subscription-options,
    retrieve-default-sub, presence-notifications, subscription-notifications."""
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    r = ok(take_iq(a, "d1", f"<query xmlns='{DI}'/>", typ="get", to=SVC))
    feats = re.findall(r"<feature var='([^']+)'/>", r)
    assert len(feats) == len(set(feats)), feats
    for f in ("multi-subscribe", "subscription-options", "retrieve-default-sub",
              "presence-notifications", "subscription-notifications"):
        assert f"{PS}#{f}" in feats, (f, feats)
    for f in ("leased-subscription", "collections", "filtered-notifications"):
        assert f"{PS}#{f}" not in feats, (f, feats)


def test_multi_subscribe(server_factory):
    """One JID, several subscriptions: each its own subid; unsubscribe and
    options need the subid (bad-request + subid-required) and refuse a
    wrong one (not-acceptable + invalid-subid); the lists show each; a
    notification goes once to the JID with a SHIM SubID header per
    subscription that takes it; max_subscriptions is a policy-violation +
    too-many-subscriptions."""
    srv = start(server_factory, "    max_subscriptions: 3\n")
    a, _ = session(srv, "alice")
    b, bjid = session(srv, "bob")
    ok(create(a, "c", "n", send_last_published_item="never"))
    r1 = ok(subscribe(b, "s1", "n", "bob@localhost"))
    r2 = ok(subscribe(b, "s2", "n", "bob@localhost"))
    s1 = re.search(r"subid='([^']+)'", r1).group(1)
    s2 = re.search(r"subid='([^']+)'", r2).group(1)
    assert s1 != s2 and "subscription='subscribed'" in r2, (r1, r2)
    # Both listed, to the subscriber and to the owner.
    r = ok(ps(b, "l1", "<subscriptions node='n'/>", typ="get"))
    assert f"subid='{s1}'" in r and f"subid='{s2}'" in r, r
    r = ok(ps(a, "l2", "<subscriptions node='n'/>", typ="get", ns=PSO))
    assert f"subid='{s1}'" in r and f"subid='{s2}'" in r, r
    assert r.count("jid='bob@localhost'") == 2, r
    # Which one? The subid is required, and must be one of them.
    err(ps(b, "u0", "<unsubscribe node='n' jid='bob@localhost'/>"), "bad-request",
        "subid-required")
    err(ps(b, "o0", "<options node='n' jid='bob@localhost'/>", typ="get"), "bad-request",
        "subid-required")
    sub_off = form("subscribe_options", deliver="0")
    err(ps(b, "o1", f"<options node='n' jid='bob@localhost'>{sub_off}</options>"), "bad-request",
        "subid-required")
    err(ps(b, "o2", "<options node='n' jid='bob@localhost' subid='nope'/>", typ="get"),
        "not-acceptable", "invalid-subid")
    err(ps(b, "u1", "<unsubscribe node='n' jid='bob@localhost' subid='nope'/>"),
        "not-acceptable", "invalid-subid")
    r = ok(ps(b, "o3", f"<options node='n' jid='bob@localhost' subid='{s2}'/>", typ="get"))
    assert f"subid='{s2}'" in r and f"{PS}#subscribe_options" in r, r
    # One notification, naming both subscriptions.
    ok(publish(a, "p1", "n", "<x xmlns='urn:x'>one</x>", item_id="i1"))
    ev = take(b, event_rx("n"))
    assert ">one<" in ev and f"<headers xmlns='{SHIM}'>" in ev, ev
    assert sorted(subids_of(ev)) == sorted([s1, s2]), ev
    assert ev.index("</event>") < ev.index("<headers"), ev  # after the event (12.x)
    assert_nothing_before(b, ">one<", barrier=send_marker(a, bjid))
    # Delivery off for s1: the next one names s2 only.
    ok(ps(b, "o4", f"<options node='n' jid='bob@localhost' subid='{s1}'>{sub_off}</options>"))
    ok(publish(a, "p2", "n", "<x xmlns='urn:x'>two</x>", item_id="i2"))
    ev = take(b, event_rx("n"))
    assert ">two<" in ev and subids_of(ev) == [s2], ev
    # Retractions carry the headers too.
    ok(ps(a, "r", "<retract node='n' notify='1'><item id='i2'/></retract>"))
    ev = take(b, event_rx("n"))
    assert "<retract id='i2'/>" in ev and subids_of(ev) == [s2], ev
    # A third, then the limit: of the account, its bare and full JIDs together.
    ok(subscribe(b, "s3", "n", "bob@localhost"))
    err(subscribe(b, "s4", "n", "bob@localhost"), "policy-violation", "too-many-subscriptions")
    err(subscribe(b, "s4f", "n", bjid), "policy-violation", "too-many-subscriptions")
    # Unsubscribe one by subid; the others stay.
    ok(ps(b, "u2", f"<unsubscribe node='n' jid='bob@localhost' subid='{s1}'/>"))
    # A full JID's subscriptions are its own (counted with its account's).
    ok(subscribe(b, "s5", "n", bjid))
    r = ok(ps(b, "l3", "<subscriptions node='n'/>", typ="get"))
    assert s1 not in r and f"subid='{s2}'" in r and r.count("<subscription ") == 3, r
    # The owner removes one subscription by subid, then all of the JID's.
    ok(ps(a, "m1", f"<subscriptions node='n'><subscription jid='bob@localhost' subid='{s2}' "
                   "subscription='none'/></subscriptions>", ns=PSO))
    take(b, rf"<subscription node='n' jid='bob@localhost' subid='{s2}' subscription='none'/>")
    r = ok(ps(b, "l4", "<subscriptions node='n'/>", typ="get"))
    assert s2 not in r and r.count("<subscription ") == 2, r
    ok(ps(a, "m2", "<subscriptions node='n'><subscription jid='bob@localhost' "
                   "subscription='none'/></subscriptions>", ns=PSO))
    r = ok(ps(b, "l5", "<subscriptions node='n'/>", typ="get"))
    assert r.count("<subscription ") == 1 and f"jid='{bjid}'" in r, r
    # The one left needs no subid.
    ok(ps(b, "u3", f"<unsubscribe node='n' jid='{bjid}'/>"))
    # Purge and delete: once per JID, without headers (12.x).
    ok(subscribe(b, "s6", "n", "bob@localhost"))
    ok(subscribe(b, "s7", "n", "bob@localhost"))
    ok(ps(a, "pu", "<purge node='n'/>", ns=PSO))
    ev = take(b, rf"<message[^>]*>\s*<event xmlns='{re.escape(EV)}'>\s*<purge node='n'/>"
                 r".*?</message>")
    assert "<headers" not in ev, ev
    ok(ps(a, "de", "<delete node='n'/>", ns=PSO))
    ev = take(b, rf"<message[^>]*>\s*<event xmlns='{re.escape(EV)}'>\s*<delete node='n'"
                 r".*?</message>")
    assert "<headers" not in ev, ev
    assert_nothing_before(b, "<(purge|delete) node='n'", barrier=send_marker(a, bjid))


def test_multi_subscribe_off(server_factory):
    """multi_subscribe false: subscribing again answers with the
    subscription the JID has (6.1.6), and disco does not offer the feature."""
    srv = start(server_factory, "    multi_subscribe: false\n")
    a, _ = session(srv, "alice")
    b, _ = session(srv, "bob")
    r = ok(take_iq(a, "d1", f"<query xmlns='{DI}'/>", typ="get", to=SVC))
    assert "multi-subscribe" not in r and "subscription-options" in r, r
    ok(create(a, "c", "n"))
    r1 = ok(subscribe(b, "s1", "n", "bob@localhost"))
    r2 = ok(subscribe(b, "s2", "n", "bob@localhost", options={"deliver": "0"}))
    s1 = re.search(r"subid='([^']+)'", r1).group(1)
    assert f"subid='{s1}'" in r2 and "subscription='subscribed'" in r2, r2
    r = ok(ps(b, "l", "<subscriptions node='n'/>", typ="get"))
    assert r.count("<subscription ") == 1, r
    r = ok(ps(b, "o", "<options node='n' jid='bob@localhost'/>", typ="get"))
    assert re.search(r"var='pubsub#deliver'[^>]*>\s*<value>0</value>", r), r


def test_subscription_options_form_and_errors(server_factory):
    """The options form (6.3.2): pubsub#deliver and pubsub#show-values, and
    not what is not offered (digests, bodies); a submitted form with a bad
    value or an option that is not offered is bad-request +
    invalid-options (6.3.5); collection options are feature-not-implemented
    + unsupported collections; the default options (6.4)."""
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, bjid = session(srv, "bob")
    ok(create(a, "c", "n"))
    ok(subscribe(b, "s", "n", bjid))
    r = ok(ps(b, "g", f"<options node='n' jid='{bjid}'/>", typ="get"))
    assert "type='form'" in r and "var='pubsub#deliver'" in r, r
    assert re.search(r"var='pubsub#show-values' type='list-multi'", r), r
    for v in ("away", "chat", "dnd", "online", "xa"):
        assert re.search(rf"<option label='[^']+'><value>{v}</value></option>", r), (v, r)
    for absent in ("pubsub#digest", "pubsub#include_body", "pubsub#expire",
                   "pubsub#subscription_type"):
        assert absent not in r, (absent, r)

    def opts(iid, x):
        return ps(b, iid, f"<options node='n' jid='{bjid}'>{x}</options>")
    for iid, fields in (("e1", {"deliver": "maybe"}), ("e2", {"show-values": ["away", "sleeping"]}),
                        ("e3", {"digest": "1"}), ("e4", {"include_body": "true"}),
                        ("e5", {"expire": "2030-01-01T00:00:00Z"}),
                        ("e6", {"digest_frequency": "soon"}), ("e7", {"nonsense": "1"})):
        err(opts(iid, form("subscribe_options", **fields)), "bad-request", "invalid-options")
    err(opts("e8", form("node_config", deliver="1")), "bad-request", "invalid-options")
    err(opts("e9", ""), "bad-request", "invalid-options")
    err(opts("e10", form("subscribe_options", subscription_type="items")),
        "feature-not-implemented", "unsupported", "collections")
    err(opts("e11", form("subscribe_options", subscription_depth="all")),
        "feature-not-implemented", "unsupported", "collections")
    # What is offered as off may be submitted off.
    ok(opts("k1", form("subscribe_options", deliver="1", digest="0", include_body="false",
                       digest_frequency="86400000", **{"show-values": ["chat", "online"]})))
    r = ok(ps(b, "g2", f"<options node='n' jid='{bjid}'/>", typ="get"))
    assert re.search(r"var='pubsub#show-values'.*?</option>\s*<value>chat</value>\s*"
                     r"<value>online</value>\s*</field>", r, re.S), r
    # An empty show-values list: no presence filter.
    ok(opts("k2", "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                  f"<value>{PS}#subscribe_options</value></field>"
                  "<field var='pubsub#show-values'/></x>"))
    r = ok(ps(b, "g3", f"<options node='n' jid='{bjid}'/>", typ="get"))
    assert not re.search(r"</option>\s*<value>", r), r
    # Errors of the request itself (6.3.4).
    err(ps(b, "n1", f"<options node='zz' jid='{bjid}'/>", typ="get"), "item-not-found")
    err(ps(b, "n2", "<options node='n'/>", typ="get"), "bad-request", "jid-required")
    err(ps(b, "n3", f"<options jid='{bjid}'/>", typ="get"), "bad-request", "nodeid-required")
    err(ps(b, "n4", "<options node='n' jid='alice@localhost'/>", typ="get"), "forbidden")
    err(ps(a, "n5", "<options node='n' jid='alice@localhost'/>", typ="get"), "unexpected-request",
        "not-subscribed")
    # Default subscription options (6.4): of the service and of a node.
    for iid, el in (("d1", "<default/>"), ("d2", "<default node='n'/>")):
        r = ok(ps(b, iid, el, typ="get"))
        assert f"{PS}#subscribe_options" in r and "type='result'" in r, r
        assert re.search(r"var='pubsub#deliver'[^>]*>\s*<value>1</value>", r), r
        assert "node_config" not in r, r
    err(ps(b, "d3", "<default node='zz'/>", typ="get"), "item-not-found")


def test_subscribe_and_configure(server_factory):
    """6.3.7: <options/> after <subscribe/> configures the new subscription
    and the answer carries the resulting options as a result form; options
    naming a node or jid is bad-request; invalid options make no
    subscription."""
    srv = start(server_factory)
    a, _ = session(srv, "alice")
    b, bjid = session(srv, "bob")
    ok(create(a, "c", "n"))
    ok(publish(a, "p0", "n", "<x xmlns='urn:x'>last</x>"))
    err(subscribe(b, "s0", "n", bjid, options={"deliver": "perhaps"}), "bad-request",
        "invalid-options")
    err(ps(b, "s1", f"<subscribe node='n' jid='{bjid}'/><options node='n' jid='{bjid}'>"
                    f"{form('subscribe_options', deliver='1')}</options>"), "bad-request")
    assert "<subscription " not in ok(ps(b, "l", "<subscriptions/>", typ="get"))
    r = ok(subscribe(b, "s2", "n", bjid, options={"deliver": "0",
                                                   "show-values": ["chat", "dnd"]}))
    assert "subscription='subscribed'" in r, r
    assert re.search(rf"<subscription [^>]*/>\s*<options>\s*<x xmlns='jabber:x:data' "
                     rf"type='result'>.*?{re.escape(PS)}#subscribe_options", r, re.S), r
    assert re.search(r"var='pubsub#deliver'[^>]*>\s*<value>0</value>", r), r
    assert re.search(r"var='pubsub#show-values'[^>]*>\s*<value>chat</value>\s*"
                     r"<value>dnd</value>", r), r
    # Delivery off from the start: not even the last item.
    assert_nothing_before(b, ">last<", barrier=send_marker(a, bjid))
    r = ok(ps(b, "g", f"<options node='n' jid='{bjid}'/>", typ="get"))
    assert re.search(r"var='pubsub#deliver'[^>]*>\s*<value>0</value>", r), r


def test_show_values_presence_based_delivery(server_factory):
    """pubsub#show-values: a subscription takes notifications only while the
    subscriber's presence (its session for a full JID; any available one of
    non-negative priority for a bare JID) has one of the shows; none listed:
    always."""
    srv = start(server_factory)
    a, ajid = session(srv, "alice")
    b, bjid = session(srv, "bob")
    c, cjid = session(srv, "carol")
    ok(create(a, "cr", "n", send_last_published_item="never"))
    ok(subscribe(b, "s1", "n", bjid, options={"show-values": ["chat", "online"]}))
    ok(subscribe(c, "s2", "n", "carol@localhost", options={"show-values": ["away"]}))
    n = [0]

    def pub():
        n[0] += 1
        word = f"w{n[0]}x"
        ok(publish(a, f"p{n[0]}", "n", f"<x xmlns='urn:x'>{word}</x>"))
        return word

    # bob online (no show), carol online: bob only.
    w = pub()
    assert w in take(b, event_rx("n"))
    assert_nothing_before(c, w, barrier=send_marker(a, cjid))
    # bob dnd, carol away: carol only.
    b.send("<presence><show>dnd</show></presence>")
    b.roundtrip()
    c.send("<presence><show>away</show></presence>")
    c.roundtrip()
    w = pub()
    assert w in take(c, event_rx("n"))
    assert_nothing_before(b, w, barrier=send_marker(a, bjid))
    # bob chat: again.
    b.send("<presence><show>chat</show></presence>")
    b.roundtrip()
    w = pub()
    assert w in take(b, event_rx("n"))
    # carol's away session goes negative priority: a headline to the bare
    # JID would not reach it, so nothing.
    c.send("<presence><show>away</show><priority>-1</priority></presence>")
    c.roundtrip()
    w = pub()
    assert_nothing_before(c, w, barrier=send_marker(a, cjid))
    # carol offline: nothing either (and no offline storage of it).
    c.close()
    w = pub()
    c, cjid = session(srv, "carol", "again", presence=False)
    c.send("<presence><show>away</show></presence>")
    c.roundtrip()
    assert_nothing_before(c, w, barrier=send_marker(a, cjid))
    w = pub()
    assert w in take(c, event_rx("n"))


def test_show_values_last_item(server_factory):
    """pubsub#show-values holds for the last item too (XEP-0060 6.3.7,
    12.x): not on subscribe, nor on the owner's approval (authorize), while
    the subscriber's presence has none of the shows; on presence only to a
    session whose show is listed."""
    srv = start(server_factory)
    a, ajid = session(srv, "alice")
    b, bjid = session(srv, "bob")
    c, cjid = session(srv, "carol")
    ok(create(a, "c1", "n"))  # on_sub_and_presence
    ok(publish(a, "p0", "n", "<x xmlns='urn:x'>last-n</x>"))
    ok(create(a, "c2", "auth", access_model="authorize"))
    ok(publish(a, "p1", "auth", "<x xmlns='urn:x'>last-auth</x>"))
    # bob (online, no show) subscribes for chat only: no last item.
    ok(subscribe(b, "s1", "n", "bob@localhost", options={"show-values": ["chat"]}))
    assert_nothing_before(b, "last-n", barrier=send_marker(a, bjid))
    # A session of his that is dnd gets nothing; one that is chat, the item.
    bd, bdjid = session(srv, "bob", "dnd", presence=False)
    bd.send("<presence><show>dnd</show></presence>")
    assert_nothing_before(bd, "last-n")  # the presence's work is done by the round trip
    bc, bcjid = session(srv, "bob", "chat", presence=False)
    bc.send("<presence><show>chat</show></presence>")
    ev = take(bc, event_rx("n"))
    assert "last-n" in ev and f"to='{bcjid}'" in ev, ev
    # carol asks for away only; alice approves while carol is online: nothing.
    r = ok(subscribe(c, "s2", "auth", "carol@localhost", options={"show-values": ["away"]}))
    assert "subscription='pending'" in r, r
    take(a, rf"<message[^>]*from='{SVC}'[^>]*>.*?carol@localhost.*?</message>")
    a.send(f"<message to='{SVC}'><x xmlns='jabber:x:data' type='submit'>"
           f"<field var='FORM_TYPE' type='hidden'><value>{PS}#subscribe_authorization</value>"
           f"</field><field var='pubsub#node'><value>auth</value></field>"
           f"<field var='pubsub#subscriber_jid'><value>carol@localhost</value></field>"
           f"<field var='pubsub#allow'><value>true</value></field></x></message>")
    take(c, r"<subscription node='auth' jid='carol@localhost' subid='[^']+' "
            r"subscription='subscribed'/>")
    assert_nothing_before(c, "last-auth", barrier=send_marker(a, cjid))
    # Her away session gets it when it comes.
    ca, cajid = session(srv, "carol", "away", presence=False)
    ca.send("<presence><show>away</show></presence>")
    ev = take(ca, event_rx("auth"))
    assert "last-auth" in ev and f"to='{cajid}'" in ev, ev


def test_slixmpp_multi_subscribe_and_options(server_factory):
    """A client's view, slixmpp's XEP-0060 plugin: two subscriptions with
    options at subscribe time, both listed, options of one read by subid,
    one notification naming both subids, unsubscribe by subid."""
    import asyncio
    import xml.etree.ElementTree as ET
    import slixmpp
    from xmpptest import run_slixmpp
    srv = start(server_factory)
    state = {}

    def make():
        c = slix_client(srv, "alice@localhost/slix", "xep_0004", "xep_0030", "xep_0060")
        got = asyncio.Event()

        def on_event(msg):
            hs = msg.xml.findall(f"{{{SHIM}}}headers/{{{SHIM}}}header")
            state.setdefault("headers", []).append(sorted(h.text for h in hs
                                                          if h.get("name") == "SubID"))
            got.set()

        async def on_start(_):
            svc = slixmpp.JID(SVC)
            p = c["xep_0060"]
            try:
                c.send_presence()
                info = await c["xep_0030"].get_info(svc)
                state["features"] = info["disco_info"]["features"]
                await p.create_node(svc, "multi")
                subids = []
                for shows in (["online"], ["chat", "online"]):
                    f = c["xep_0004"].make_form(ftype="submit")
                    f.add_field(var="FORM_TYPE", ftype="hidden",
                                value=f"{PS}#subscribe_options")
                    f.add_field(var="pubsub#deliver", ftype="boolean", value=True)
                    f.add_field(var="pubsub#show-values", ftype="list-multi", value=shows)
                    r = await p.subscribe(svc, "multi", options=f)
                    subids.append(r["pubsub"]["subscription"]["subid"])
                    state.setdefault("result_shows", []).append(
                        r["pubsub"]["options"]["options"].get_values()["pubsub#show-values"])
                state["subids"] = subids
                r = await p.get_subscriptions(svc, "multi")
                state["listed"] = sorted(s["subid"] for s in r["pubsub"]["subscriptions"])
                try:
                    await p.get_subscription_options(svc, "multi", "alice@localhost")
                except slixmpp.exceptions.IqError as e:
                    state["no_subid"] = e.iq["error"]["condition"]
                iq = c.Iq(sto=svc, stype="get")
                iq["pubsub"]["options"]["node"] = "multi"
                iq["pubsub"]["options"]["jid"] = "alice@localhost"
                iq["pubsub"]["options"].xml.set("subid", subids[1])
                r = await iq.send()
                state["opts"] = r["pubsub"]["options"]["options"].get_values()["pubsub#show-values"]
                payload = ET.fromstring("<entry xmlns='urn:example'>hi</entry>")
                await p.publish(svc, "multi", id="e1", payload=payload)
                await asyncio.wait_for(got.wait(), 5)
                await p.unsubscribe(svc, "multi", subid=subids[0])
                r = await p.get_subscriptions(svc, "multi")
                state["after"] = [s["subid"] for s in r["pubsub"]["subscriptions"]]
            finally:
                c.disconnect()

        c.add_event_handler("pubsub_publish", on_event)
        c.add_event_handler("session_start", on_start)
        return c

    run_slixmpp(make, ("127.0.0.1", srv.c2s_port))
    assert f"{PS}#multi-subscribe" in state.get("features", ()), state
    subids = state.get("subids", [])
    assert len(subids) == 2 and subids[0] != subids[1], state
    assert state.get("result_shows") == [["online"], ["chat", "online"]], state
    assert state.get("listed") == sorted(subids), state
    assert state.get("no_subid") == "bad-request", state
    assert state.get("opts") == ["chat", "online"], state
    assert state.get("headers") == [sorted(subids)], state
    assert state.get("after") == [subids[1]], state

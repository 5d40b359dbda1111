"""mod_pep (XEP-0163 personal eventing on the account's bare JID) through
the wire, raw XML: publish and items by the owner with auto-create, errors,
+notify filtering by entity capabilities (the server asks the caps once per
ver), the last item on available presence, OMEMO device lists and bundles
(open access, max_items=max), XEP-0402 bookmarks (whitelist), retract,
delete, purge, configure, the limits, persistence and account removal."""
import re
import time

import pytest

from helpers import (assert_nothing_before, expect, iq, pool_roundtrip, reply, reply_rx,
                     send_marker, take, take_iq, slix_client, users)
from test_caps import ver_of
import xml.etree.ElementTree as ET

MODULES = ("modules:\n"
           "  mod_roster: {}\n"
           "  mod_pep:\n"
           "    max_nodes: 6\n"
           "    max_item_size: 2KiB\n"
           "    max_items_limit: 50\n")

PS = "http://jabber.org/protocol/pubsub"
PSO = PS + "#owner"
EV = PS + "#event"
DI = "http://jabber.org/protocol/disco#info"
TUNE = "http://jabber.org/protocol/tune"
DEVICES = "eu.siacs.conversations.axolotl.devicelist"
BUNDLES = "urn:xmpp:omemo:2:bundles"
BOOKMARKS = "urn:xmpp:bookmarks:1"


def start(server_factory, workers=1):
    """One worker unless told, for pep_marker."""
    srv = server_factory(extra_yaml=MODULES, workers=workers)
    users(srv, "alice", "bob", "carol", "dave")
    return srv


def pep_marker(owner, to):
    """The barrier after an owner's publish: the notifications go out from the
    workers after the publish's result, and the owner's stream reads on
    meanwhile.  A roster get (answered on the pool, its answer queued on the
    owner's worker behind them) first, then the marker message (send_marker):
    with one worker it reaches a contact after any notification."""
    from helpers import pool_roundtrip
    pool_roundtrip(owner)
    return send_marker(owner, to)


def caps_query(features, node="https://example.org/client"):
    """A client's disco#info and its caps <c/>."""
    feats = "".join(f"<feature var='{f}'/>" for f in features)
    q = f"<query xmlns='{DI}'><identity category='client' type='pc' name='T'/>{feats}</query>"
    ver = ver_of(ET.fromstring(q))
    return q, f"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{node}' ver='{ver}'/>"


def session(srv, user, res, features=None, answer=True, **kw):
    """A session with available presence; with features: caps announced, and
    the server's disco#info query answered (answer); kw for login (domain)."""
    from xclient import login
    c, jid = login(srv.c2s_port, user, "pw", resource=res, **kw)
    if features is None:
        c.send("<presence/>")
        c.roundtrip()
        return c, jid
    q, cel = caps_query(features)
    c.send(f"<presence>{cel}</presence>")
    if answer:
        got = take(c, r"<iq[^>]*type=['\"]get['\"][^>]*>\s*<query[^>]*disco#info.*?</iq>")
        iid = re.search(r"id='([^']+)'", got).group(1)
        frm = re.search(r"from='([^']+)'", got).group(1)
        node = re.search(r"node='([^']+)'", got)
        qn = q if not node else q.replace("<query ", f"<query node='{node.group(1)}' ", 1)
        c.send(f"<iq type='result' id='{iid}' to='{frm}'>{qn}</iq>")
    c.roundtrip()
    return c, jid


def subscribe(w, wjid, o, ojid):
    """w subscribes to o's presence; o approves (o's roster: from)."""
    wb, ob = wjid.split("/")[0], ojid.split("/")[0]
    w.send(f"<presence to='{ob}' type='subscribe'/>")
    take(o, rf"<presence(?=[^>]*from=['\"]{wb}['\"])[^>]*type=['\"]subscribe['\"]")
    o.send(f"<presence to='{wb}' type='subscribed'/>")
    take(w, rf"<presence(?=[^>]*from=['\"]{ob}['\"])[^>]*type=['\"]subscribed['\"]")
    o.roundtrip()
    w.roundtrip()


def form(ftype, **fields):
    f = "".join(f"<field var='pubsub#{k}'><value>{v}</value></field>" for k, v in fields.items())
    return (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{PS}#{ftype}</value></field>{f}</x>")


def publish(c, iid, node, payload, item_id=None, options=None, to=None):
    i = f" id='{item_id}'" if item_id else ""
    po = f"<publish-options>{form('publish-options', **options)}</publish-options>" if options else ""
    return take_iq(c, iid, f"<pubsub xmlns='{PS}'><publish node='{node}'><item{i}>{payload}</item>"
                      f"</publish>{po}</pubsub>", to=to)


def items(c, iid, owner, node, extra="", inner=""):
    return take_iq(c, iid, f"<pubsub xmlns='{PS}'><items node='{node}'{extra}>{inner}</items></pubsub>",
              typ="get", to=owner)


def tune(title):
    return f"<tune xmlns='{TUNE}'><title>{title}</title></tune>"


def event_rx(node):
    return (rf"<message[^>]*>\s*<event xmlns=['\"]{re.escape(EV)}['\"]>\s*<items "
            rf"node=['\"]{re.escape(node)}['\"].*?</message>")


# ---- publish and items --------------------------------------------------------------------------

def test_publish_autocreate_items_owner(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice", "r")
    r = publish(a, "p1", TUNE, tune("One"))
    assert "type='result'" in r, r
    gen = re.search(r"<item id='([^']+)'", r).group(1)
    # The own session is told.
    ev = take(a, event_rx(TUNE))
    assert "from='alice@localhost'" in ev and "type='headline'" in ev and "One" in ev, ev
    r = items(a, "i1", "alice@localhost", TUNE)
    assert f"<item id='{gen}'>" in r and "<title>One</title>" in r, r
    # Default max_items 1: a second publish replaces the first.
    assert "type='result'" in publish(a, "p2", TUNE, tune("Two"), item_id="t2")
    r = items(a, "i2", "alice@localhost", TUNE)
    assert "Two" in r and "One" not in r, r
    # By id; an unknown id.
    assert "Two" in items(a, "i3", "alice@localhost", TUNE, inner="<item id='t2'/>")
    r = items(a, "i4", "alice@localhost", TUNE, inner="<item id='nope'/>")
    assert "item-not-found" in r, r


def test_disco_of_account(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice", "r")
    r = iq(a, "d1", f"<query xmlns='{DI}'/>", typ="get", to="alice@localhost")
    assert "category='pubsub'" in r and "type='pep'" in r, r
    # XEP-0163 4.1 (every XEP-0060 feature supported, by its registered
    # name), 9: auto-subscribe and filtered-notifications are MUSTs.
    for f in ("publish", "auto-create", "publish-options", "retrieve-items", "retract-items",
              "delete-nodes", "purge-nodes", "config-node", "access-presence", "access-open",
              "access-roster", "auto-subscribe", "filtered-notifications",
              "access-whitelist", "persistent-items", "last-published", "create-nodes",
              "create-and-configure", "subscribe", "retrieve-subscriptions",
              "retrieve-affiliations"):
        assert f"var='{PS}#{f}'" in r, (f, r)
    assert f"var='{PS}#retract'" not in r, r  # not a XEP-0060 feature


def test_disco_items_lists_visible_nodes(server_factory):
    srv = start(server_factory)
    a, ajid = session(srv, "alice", "r")
    b, bjid = session(srv, "bob", "b")
    c, _ = session(srv, "carol", "c")
    subscribe(b, bjid, a, ajid)
    publish(a, "p1", "n-open", "<x xmlns='urn:x'/>", options={"access_model": "open"})
    publish(a, "p2", "n-presence", "<x xmlns='urn:x'/>")
    publish(a, "p3", "n-white", "<x xmlns='urn:x'/>", options={"access_model": "whitelist"})
    DIT = "http://jabber.org/protocol/disco#items"

    def nodes(cl, iid):
        r = take_iq(cl, iid, f"<query xmlns='{DIT}'/>", typ="get", to="alice@localhost")
        assert "type='result'" in r, r
        return sorted(re.findall(r"node='([^']+)'", r))
    assert nodes(a, "da") == ["n-open", "n-presence", "n-white"]
    assert nodes(b, "db") == ["n-open", "n-presence"]
    assert nodes(c, "dc") == ["n-open"]


def test_errors(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice", "r")
    b, _ = session(srv, "bob", "r")
    r = iq(a, "e1", f"<pubsub xmlns='{PS}'><publish><item>{tune('x')}</item></publish></pubsub>")
    assert "bad-request" in r and "nodeid-required" in r, r
    r = iq(a, "e2", f"<pubsub xmlns='{PS}'><publish node='n'/></pubsub>")
    assert "bad-request" in r and "item-required" in r, r
    r = iq(a, "e3", f"<pubsub xmlns='{PS}'><publish node='n'><item/></publish></pubsub>")
    assert "bad-request" in r and "payload-required" in r, r
    r = items(a, "e4", "alice@localhost", "missing")
    assert "item-not-found" in r, r
    r = publish(b, "e5", TUNE, tune("x"), to="alice@localhost")
    assert "forbidden" in r, r
    r = iq(a, "e6", f"<pubsub xmlns='{PS}'><subscribe node='n' jid='alice@localhost'/></pubsub>")
    assert "item-not-found" in r, r
    r = iq(a, "e7", f"<pubsub xmlns='{PS}'><retract node='n'><item id='x'/></retract></pubsub>")
    assert "item-not-found" in r, r
    r = iq(b, "e8", f"<pubsub xmlns='{PSO}'><delete node='n'/></pubsub>", to="alice@localhost")
    assert "forbidden" in r, r
    r = items(a, "e9", "alice@localhost", TUNE, extra=" max_items='x'")
    assert "bad-request" in r, r
    # The owner operations PEP does not offer name their XEP-0060 features
    # (8.3.3.2 retrieve-default, 8.8.1.3 manage-subscriptions, 8.9.1.3
    # modify-affiliations).
    for i, (op, typ, feature) in enumerate((
            ("<default/>", "get", "retrieve-default"),
            (f"<subscriptions node='{TUNE}'/>", "get", "manage-subscriptions"),
            (f"<subscriptions node='{TUNE}'><subscription jid='bob@localhost' "
             "subscription='subscribed'/></subscriptions>", "set", "manage-subscriptions"),
            (f"<affiliations node='{TUNE}'/>", "get", "modify-affiliations"),
            (f"<affiliations node='{TUNE}'><affiliation jid='bob@localhost' "
             "affiliation='member'/></affiliations>", "set", "modify-affiliations"))):
        r = iq(a, f"o{i}", f"<pubsub xmlns='{PSO}'>{op}</pubsub>", typ=typ, to="alice@localhost")
        assert "feature-not-implemented" in r and f"feature='{feature}'" in r, (op, r)


def test_publish_options_unknown_field(server_factory):
    """XEP-0060 7.1.5: a service MUST reject a publish whose publish-options
    name a field it does not know: one no node configuration has, and one
    that PEP nodes do not offer (deliver_payloads), both conflict +
    precondition-not-met, nothing published; the fields PEP offers pass."""
    srv = start(server_factory)
    a, _ = session(srv, "alice", "r")
    for i, opts in enumerate(({"frobnicate": "1"}, {"deliver_payloads": "0"})):
        r = publish(a, f"u{i}", TUNE, tune("x"), options=opts)
        assert "<conflict " in r and "precondition-not-met" in r, r
    r = items(a, "i0", "alice@localhost", TUNE)
    assert "item-not-found" in r, r
    r = publish(a, "ok", TUNE, tune("y"), options={"access_model": "presence", "max_items": "1",
                                                   "persist_items": "true",
                                                   "send_last_published_item": "on_sub_and_presence"})
    assert "type='result'" in r, r


def test_limits(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice", "r")
    # max_item_size 2KiB.
    r = publish(a, "big", "n0", f"<x xmlns='urn:x'>{'y' * 3000}</x>")
    assert "not-acceptable" in r and "payload-too-big" in r, r
    assert "type='result'" in publish(a, "ok", "n0", f"<x xmlns='urn:x'>{'y' * 1000}</x>")
    # max_nodes 6.
    for i in range(1, 6):
        assert "type='result'" in publish(a, f"n{i}", f"n{i}", "<x xmlns='urn:x'/>")
    r = publish(a, "n6", "n6", "<x xmlns='urn:x'/>")
    assert "not-allowed" in r, r
    # Publishing to an existing node still works.
    assert "type='result'" in publish(a, "n5b", "n5", "<x xmlns='urn:x'/>")
    # max_items beyond max_items_limit 50.
    a.send(f"<iq type='set' id='c1'><pubsub xmlns='{PSO}'><configure node='n1'>"
           f"{form('node_config', max_items='51')}</configure></pubsub></iq>")
    assert "not-acceptable" in reply(a, "c1")


# ---- create, subscribe, unsubscribe (XEP-0163 8, XEP-0060 6.1, 6.2, 8.1) ------------------------

def create(c, iid, node, cfg=None, to=None):
    conf = f"<configure>{form('node_config', **cfg)}</configure>" if cfg is not None else ""
    n = f" node='{node}'" if node is not None else ""
    return take_iq(c, iid, f"<pubsub xmlns='{PS}'><create{n}/>{conf}</pubsub>", to=to)


def sub(c, iid, owner, node, jid, op="subscribe"):
    j = f" jid='{jid}'" if jid is not None else ""
    return take_iq(c, iid, f"<pubsub xmlns='{PS}'><{op} node='{node}'{j}/></pubsub>", to=owner)


def test_create_and_configure(server_factory):
    """XEP-0060 8.1 on PEP: the owner creates a node (default configuration,
    or the <configure/> form's), which then exists empty; nobody else may;
    an existing node is a conflict; max_nodes bounds it as publish does."""
    srv = start(server_factory)
    a, _ = session(srv, "alice", "r")
    b, _ = session(srv, "bob", "r")
    assert "type='result'" in create(a, "c1", "n-plain")
    r = items(a, "i1", "alice@localhost", "n-plain")
    assert "type='result'" in r and "<item " not in r, r
    r = iq(a, "g1", f"<pubsub xmlns='{PSO}'><configure node='n-plain'/></pubsub>", typ="get")
    assert re.search(r"var='pubsub#access_model'[^>]*>\s*<value>presence</value>", r), r
    assert "type='result'" in create(a, "c2", "n-open", {"access_model": "open",
                                                         "max_items": "5"})
    r = iq(a, "g2", f"<pubsub xmlns='{PSO}'><configure node='n-open'/></pubsub>", typ="get")
    assert re.search(r"var='pubsub#access_model'[^>]*>\s*<value>open</value>", r), r
    assert re.search(r"var='pubsub#max_items'[^>]*>\s*<value>5</value>", r), r
    # The configuration holds for a publish without publish-options.
    for i in range(3):
        assert "type='result'" in publish(a, f"p{i}", "n-open", f"<x xmlns='urn:x'>{i}</x>")
    assert items(b, "i2", "alice@localhost", "n-open").count("<item ") == 3
    r = create(a, "c3", "n-plain")
    assert "<conflict " in r, r
    r = create(b, "c4", "n-bob", to="alice@localhost")
    assert "forbidden" in r, r
    r = create(a, "c5", None)
    assert "not-acceptable" in r and "nodeid-required" in r, r
    r = create(a, "c6", "n-auth", {"access_model": "authorize"})
    assert "not-acceptable" in r and "unsupported-access-model" in r, r
    r = take_iq(a, "c7", f"<pubsub xmlns='{PS}'><create node='n-x'/>"
                         f"<configure node='n-x'>{form('node_config')}</configure></pubsub>")
    assert "bad-request" in r, r
    # max_nodes 6: four more fit.
    for i in range(4):
        assert "type='result'" in create(a, f"m{i}", f"n-m{i}")
    r = create(a, "m4", "n-m4")
    assert "not-allowed" in r, r
    assert "item-not-found" in items(a, "i3", "alice@localhost", "n-m4")


def test_subscribe_explicit_notifications(server_factory):
    """XEP-0060 6.1 on PEP: carol, no contact of alice, subscribes to her
    open node: the result, then the last item; each publish reaches her
    session although it announces no caps.  dave subscribes one full JID:
    only that session is told.  bob, a contact with +notify, subscribed
    too, gets one copy.  After unsubscribe carol gets nothing more."""
    srv = start(server_factory)
    a, ajid = session(srv, "alice", "r")
    b0, bjid = session(srv, "bob", "setup")
    subscribe(b0, bjid, a, ajid)
    b0.close()
    node = "urn:example:open"
    assert "type='result'" in publish(a, "p0", node, "<x xmlns='urn:example'>first</x>",
                                      item_id="i0", options={"access_model": "open"})
    c, _ = session(srv, "carol", "c")
    c.send(f"<iq type='set' id='s1' to='alice@localhost'><pubsub xmlns='{PS}'>"
           f"<subscribe node='{node}' jid='carol@localhost'/></pubsub></iq>")
    r = take(c, reply_rx("s1"))
    assert "type='result'" in r and "subscription='subscribed'" in r, r
    assert "jid='carol@localhost'" in r and f"node='{node}'" in r, r
    ev = take(c, event_rx(node))
    assert "first" in ev and "from='alice@localhost'" in ev, ev
    # Subscribing again: the same subscription, no second last item.
    r = sub(c, "s2", "alice@localhost", node, "carol@localhost")
    assert "subscription='subscribed'" in r, r
    d1, _ = session(srv, "dave", "d1")
    d2, _ = session(srv, "dave", "d2")
    r = sub(d1, "s3", "alice@localhost", node, "dave@localhost/d1")
    assert "subscription='subscribed'" in r and "jid='dave@localhost/d1'" in r, r
    take(d1, event_rx(node))
    b, _ = session(srv, "bob", "b", features=[node + "+notify"])
    take(b, event_rx(node))  # the last item on presence (+notify)
    assert "subscription='subscribed'" in sub(b, "s4", "alice@localhost", node, "bob@localhost")
    take(b, event_rx(node))  # and on subscribe
    assert "type='result'" in publish(a, "p1", node, "<x xmlns='urn:example'>second</x>",
                                      item_id="i1")
    assert "second" in take(c, event_rx(node))
    assert "second" in take(d1, event_rx(node))
    assert "second" in take(b, event_rx(node))
    assert_nothing_before(d2, "pubsub#event", barrier=pep_marker(a, "dave@localhost/d2"))
    assert_nothing_before(b, "pubsub#event", barrier=pep_marker(a, "bob@localhost/b"))
    assert "type='result'" in sub(c, "u1", "alice@localhost", node, "carol@localhost",
                                  op="unsubscribe")
    assert "type='result'" in publish(a, "p2", node, "<x xmlns='urn:example'>third</x>")
    assert "third" in take(d1, event_rx(node))
    assert_nothing_before(c, "pubsub#event", barrier=pep_marker(a, "carol@localhost/c"))
    r = sub(c, "u2", "alice@localhost", node, "carol@localhost", op="unsubscribe")
    assert "unexpected-request" in r and "not-subscribed" in r, r


def test_subscriber_last_item_on_presence(server_factory):
    """send_last_published_item on_sub_and_presence (XEP-0163 6.3.4): an
    explicit subscriber's newly available session gets the last item
    whatever its caps: carol (no contact, no caps); dave's subscribed full
    JID, not his other resource; bob, a contact with +notify and
    subscribed, once.  A node that says on_sub sends nothing then."""
    srv = start(server_factory)
    a, ajid = session(srv, "alice", "r")
    b0, bjid = session(srv, "bob", "setup")
    subscribe(b0, bjid, a, ajid)
    b0.close()
    A, node, onsub = "alice@localhost", "urn:example:open", "urn:example:onsub"
    publish(a, "p0", node, "<x xmlns='urn:example'>last</x>", options={"access_model": "open"})
    publish(a, "p1", onsub, "<x xmlns='urn:example'>onsub</x>",
            options={"access_model": "open", "send_last_published_item": "on_sub"})
    c, _ = session(srv, "carol", "c")
    for n in (node, onsub):
        sub(c, f"s{n}", A, n, "carol@localhost")
        take(c, event_rx(n))
    d, _ = session(srv, "dave", "d1")
    sub(d, "s3", A, node, "dave@localhost/d1")
    take(d, event_rx(node))
    b, _ = session(srv, "bob", "b", features=[node + "+notify"])
    take(b, event_rx(node))
    sub(b, "s4", A, node, "bob@localhost")
    take(b, event_rx(node))
    for cl in (c, d, b):
        cl.close()
    c2, _ = session(srv, "carol", "c2")
    assert "last" in take(c2, event_rx(node))
    assert_nothing_before(c2, "onsub")
    d1, _ = session(srv, "dave", "d1")
    assert "last" in take(d1, event_rx(node))
    d2, _ = session(srv, "dave", "d2")
    assert_nothing_before(d2, "pubsub#event")
    b2, _ = session(srv, "bob", "b2", features=[node + "+notify"], answer=False)
    assert "last" in take(b2, event_rx(node))
    assert_nothing_before(b2, "pubsub#event")


def test_subscribe_access_and_errors(server_factory):
    """Subscribing passes the node's access model (XEP-0060 6.1.3): presence
    (bob, a contact, may; carol not), roster groups, whitelist (the owner
    only); the JID must be the requester's (6.1.3.1 / 6.2.3.3); the node
    must exist.  A subscriber that loses access gets nothing more."""
    srv = start(server_factory)
    a, ajid = session(srv, "alice", "r")
    b, bjid = session(srv, "bob", "b")
    c, _ = session(srv, "carol", "c")
    subscribe(b, bjid, a, ajid)
    publish(a, "p1", "n-pres", "<x xmlns='urn:x'>p</x>")
    publish(a, "p2", "n-white", "<x xmlns='urn:x'/>", options={"access_model": "whitelist"})
    publish(a, "p3", "n-roster", "<x xmlns='urn:x'/>",
            options={"access_model": "roster", "roster_groups_allowed": "friends"})
    A = "alice@localhost"
    r = sub(c, "e1", A, "n-pres", "carol@localhost")
    assert "not-authorized" in r and "presence-subscription-required" in r, r
    r = sub(b, "e2", A, "n-white", "bob@localhost")
    assert "not-allowed" in r and "closed-node" in r, r
    r = sub(b, "e3", A, "n-roster", "bob@localhost")
    assert "not-authorized" in r and "not-in-roster-group" in r, r
    r = sub(b, "e4", A, "n-pres", "carol@localhost")
    assert "bad-request" in r and "invalid-jid" in r, r
    r = sub(b, "e5", A, "n-pres", None)
    assert "bad-request" in r and "jid-required" in r, r
    r = sub(b, "e6", A, "missing", "bob@localhost")
    assert "item-not-found" in r, r
    r = take_iq(b, "e7", f"<pubsub xmlns='{PS}'><subscribe jid='bob@localhost'/></pubsub>", to=A)
    assert "nodeid-required" in r, r
    # The owner may subscribe even to a whitelist node.
    assert "subscription='subscribed'" in sub(a, "o1", A, "n-white", "alice@localhost")
    r = sub(b, "s1", A, "n-pres", "bob@localhost")
    assert "subscription='subscribed'" in r, r
    take(b, event_rx("n-pres"))
    r = sub(c, "e8", A, "n-pres", "bob@localhost", op="unsubscribe")
    assert "forbidden" in r, r
    r = sub(b, "e9", A, "missing", "bob@localhost", op="unsubscribe")
    assert "item-not-found" in r, r
    # alice cancels bob's presence subscription: his PEP one no longer counts.
    publish(a, "p4", "n-pres", "<x xmlns='urn:x'>still</x>")
    assert "still" in take(b, event_rx("n-pres"))
    a.send("<presence to='bob@localhost' type='unsubscribed'/>")
    take(b, r"<presence(?=[^>]*from=['\"]alice@localhost)[^>]*type=['\"]unsubscribed['\"]")
    pool_roundtrip(a)
    publish(a, "p5", "n-pres", "<x xmlns='urn:x'>gone</x>")
    assert_nothing_before(b, "pubsub#event", barrier=pep_marker(a, "bob@localhost/b"))


def test_subscription_cancelled_on_access_loss(server_factory):
    """XEP-0163 10.1: a roster change that takes away a subscriber's right
    to a presence node cancels its explicit subscription (an open node's
    stays)."""
    from helpers import POOL1
    srv = server_factory(extra_yaml=POOL1 + MODULES)
    users(srv, "alice", "bob")
    a, ajid = session(srv, "alice", "r")
    b, bjid = session(srv, "bob", "b")
    subscribe(b, bjid, a, ajid)
    A = "alice@localhost"
    publish(a, "p1", "n-pres", "<x xmlns='urn:x'/>")
    publish(a, "p2", "n-open", "<x xmlns='urn:x'/>", options={"access_model": "open"})
    for n in ("n-pres", "n-open"):
        assert "subscription='subscribed'" in sub(b, f"s{n}", A, n, "bob@localhost")
    a.send("<presence to='bob@localhost' type='unsubscribed'/>")
    take(b, r"<presence(?=[^>]*from=['\"]alice@localhost)[^>]*type=['\"]unsubscribed['\"]")
    pool_roundtrip(a)
    pool_roundtrip(b)
    r = take_iq(b, "l1", f"<pubsub xmlns='{PS}'><subscriptions/></pubsub>", typ="get", to=A)
    assert re.findall(r"<subscription node='([^']+)'", r) == ["n-open"], r


def test_subscription_bounds(server_factory):
    """max_node_subscribers (per node) and max_subscriptions (per bare JID,
    its full JIDs included): the next one is policy-violation +
    too-many-subscriptions; an unsubscribe frees the place."""
    srv = server_factory(extra_yaml=MODULES + "    max_node_subscribers: 2\n"
                                              "    max_subscriptions: 2\n")
    users(srv, "alice", "bob", "carol", "dave")
    a, _ = session(srv, "alice", "r")
    for n in ("n1", "n2", "n3"):
        publish(a, f"p{n}", n, "<x xmlns='urn:x'/>", options={"access_model": "open"})
    c, _ = session(srv, "carol", "c")
    A = "alice@localhost"
    assert "subscription='subscribed'" in sub(c, "c1", A, "n1", "carol@localhost")
    assert "subscription='subscribed'" in sub(c, "c2", A, "n2", "carol@localhost/c")
    r = sub(c, "c3", A, "n3", "carol@localhost")
    assert "policy-violation" in r and "too-many-subscriptions" in r, r
    b, _ = session(srv, "bob", "b")
    d, _ = session(srv, "dave", "d")
    assert "subscription='subscribed'" in sub(b, "b1", A, "n1", "bob@localhost")
    r = sub(d, "d1", A, "n1", "dave@localhost")
    assert "policy-violation" in r and "too-many-subscriptions" in r, r
    assert "type='result'" in sub(b, "b2", A, "n1", "bob@localhost", op="unsubscribe")
    assert "subscription='subscribed'" in sub(d, "d2", A, "n1", "dave@localhost")


def test_subscriptions_persist_list_and_delete(server_factory):
    """Explicit subscriptions are stored: after a restart carol's are listed
    (XEP-0060 5.6) and still notified; affiliations (5.7): the owner owns
    every node, carol has none.  Deleting the node tells carol and ends
    her subscription; removing her account ends the others."""
    srv = start(server_factory)
    a, _ = session(srv, "alice", "r")
    A = "alice@localhost"
    for n in ("n1", "n2"):
        publish(a, f"p{n}", n, "<x xmlns='urn:x'/>", options={"access_model": "open"})
    c, _ = session(srv, "carol", "c")
    sub(c, "s1", A, "n1", "carol@localhost")
    sub(c, "s2", A, "n2", "carol@localhost/c")
    a.close()
    c.close()
    assert srv.stop() == 0
    srv.restart()
    a, _ = session(srv, "alice", "r")
    c, _ = session(srv, "carol", "c")
    take(c, event_rx("n1"))  # the last items on presence (on_sub_and_presence)
    take(c, event_rx("n2"))
    r = take_iq(c, "l1", f"<pubsub xmlns='{PS}'><subscriptions/></pubsub>", typ="get", to=A)
    subs = re.findall(r"<subscription node='([^']+)' jid='([^']+)' subscription='subscribed'/>",
                      r)
    assert subs == [("n1", "carol@localhost"), ("n2", "carol@localhost/c")], r
    r = take_iq(c, "l2", f"<pubsub xmlns='{PS}'><subscriptions node='n2'/></pubsub>", typ="get",
                to=A)
    assert "node='n2'" in r and "node='n1'" not in r, r
    r = take_iq(c, "l3", f"<pubsub xmlns='{PS}'><affiliations/></pubsub>", typ="get", to=A)
    assert "type='result'" in r and "<affiliation " not in r, r
    r = take_iq(a, "l4", f"<pubsub xmlns='{PS}'><affiliations/></pubsub>", typ="get")
    assert re.findall(r"<affiliation node='([^']+)' affiliation='owner'/>", r) == ["n1", "n2"], r
    publish(a, "p3", "n1", "<x xmlns='urn:x'>after</x>")
    assert "after" in take(c, event_rx("n1"))
    r = take_iq(a, "de", f"<pubsub xmlns='{PSO}'><delete node='n1'/></pubsub>")
    assert "type='result'" in r, r
    take(c, r"<message[^>]*>.*?<delete node=['\"]n1['\"]/>.*?</message>")
    publish(a, "p4", "n1", "<x xmlns='urn:x'>again</x>", options={"access_model": "open"})
    assert_nothing_before(c, "again", barrier=pep_marker(a, "carol@localhost/c"))
    r = take_iq(c, "l5", f"<pubsub xmlns='{PS}'><subscriptions/></pubsub>", typ="get", to=A)
    assert "node='n1'" not in r and "node='n2'" in r, r
    c.close()
    assert srv.ctl_run("unregister", "carol", "localhost").returncode == 0
    users(srv, "carol")
    c, _ = session(srv, "carol", "c")
    r = take_iq(c, "l6", f"<pubsub xmlns='{PS}'><subscriptions/></pubsub>", typ="get", to=A)
    assert "<subscription " not in r, r


# ---- notifications ------------------------------------------------------------------------------

def test_notify_by_caps_and_subscription(server_factory):
    srv = start(server_factory)
    a, ajid = session(srv, "alice", "r")
    b0, bjid = session(srv, "bob", "setup")
    c0, cjid = session(srv, "carol", "setup")
    subscribe(b0, bjid, a, ajid)
    subscribe(c0, cjid, a, ajid)
    b0.close()
    c0.close()
    # An item before bob is online: he gets it once his caps are known.
    assert "type='result'" in publish(a, "p0", TUNE, tune("Before"))
    b, bjid = session(srv, "bob", "b", features=[TUNE, TUNE + "+notify"])
    ev = take(b, event_rx(TUNE))
    assert "Before" in ev and "from='alice@localhost'" in ev, ev
    c, _ = session(srv, "carol", "c", features=[TUNE])  # no +notify
    # No subscription; the same caps as bob's: known, not asked again.
    d, _ = session(srv, "dave", "d", features=[TUNE, TUNE + "+notify"], answer=False)
    assert "type='result'" in publish(a, "p1", TUNE, tune("Now"))
    ev = take(b, event_rx(TUNE))
    assert "Now" in ev, ev
    assert_nothing_before(c, "pubsub#event", barrier=pep_marker(a, "carol@localhost/c"))
    assert_nothing_before(d, "pubsub#event", barrier=pep_marker(a, "dave@localhost/d"))
    # A second session with the same caps: not asked again, gets the last item.
    from xclient import login
    b2, _ = login(srv.c2s_port, "bob", "pw", resource="b2")
    _, cel = caps_query([TUNE, TUNE + "+notify"])
    b2.send(f"<presence>{cel}</presence>")
    ev = take(b2, event_rx(TUNE))
    assert "Now" in ev, ev
    seen = b2.roundtrip()
    assert b"disco#info" not in seen, seen


def test_retract_delete_purge(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice", "r")
    opts = {"max_items": "10"}
    for i in range(3):
        assert "type='result'" in publish(a, f"p{i}", "n", f"<x xmlns='urn:x'>{i}</x>",
                                          item_id=f"i{i}", options=opts)
    r = items(a, "g", "alice@localhost", "n")
    assert r.count("<item ") == 3, r
    r = items(a, "g2", "alice@localhost", "n", extra=" max_items='2'")
    assert r.count("<item ") == 2 and "i2" in r and "i1" in r and "i0" not in r, r
    a.send(f"<iq type='set' id='rt'><pubsub xmlns='{PS}'><retract node='n' notify='true'>"
           f"<item id='i1'/></retract></pubsub></iq>")
    # The result first (the item is gone), then the notification.
    assert "type='result'" in reply(a, "rt")
    ev = take(a, r"<message[^>]*>(?:(?!</message>).)*<retract id=['\"]i1['\"]/>.*?</message>")
    assert "node='n'" in ev, ev
    r = items(a, "g3", "alice@localhost", "n")
    assert r.count("<item ") == 2 and "i1" not in r, r
    # Purge: items gone, node stays.
    assert "type='result'" in take_iq(a, "pu", f"<pubsub xmlns='{PSO}'><purge node='n'/></pubsub>")
    r = items(a, "g4", "alice@localhost", "n")
    assert "type='result'" in r and "<item " not in r, r
    # Delete: node gone.
    assert "type='result'" in take_iq(a, "de", f"<pubsub xmlns='{PSO}'><delete node='n'/></pubsub>")
    take(a, r"<message[^>]*>.*?<delete node=['\"]n['\"]/>.*?</message>")
    assert "item-not-found" in items(a, "g5", "alice@localhost", "n")
    assert "item-not-found" in iq(a, "de2", f"<pubsub xmlns='{PSO}'><delete node='n'/></pubsub>")


def test_configure(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice", "r")
    assert "type='result'" in publish(a, "p", "n", "<x xmlns='urn:x'/>")
    r = iq(a, "cg", f"<pubsub xmlns='{PSO}'><configure node='n'/></pubsub>", typ="get")
    assert "pubsub#node_config" in r, r
    assert re.search(r"var='pubsub#access_model'[^>]*>\s*<value>presence</value>", r), r
    assert re.search(r"var='pubsub#max_items'[^>]*>\s*<value>1</value>", r), r
    r = iq(a, "cs", f"<pubsub xmlns='{PSO}'><configure node='n'>"
                    f"{form('node_config', max_items='2', access_model='open')}"
                    f"</configure></pubsub>")
    assert "type='result'" in r, r
    for i in range(3):
        publish(a, f"q{i}", "n", f"<x xmlns='urn:x'>{i}</x>", item_id=f"k{i}")
    r = items(a, "g", "alice@localhost", "n")
    assert r.count("<item ") == 2 and "k0" not in r, r
    r = iq(a, "cg2", f"<pubsub xmlns='{PSO}'><configure node='n'/></pubsub>", typ="get")
    assert re.search(r"var='pubsub#access_model'[^>]*>\s*<value>open</value>", r), r
    r = iq(a, "bad", f"<pubsub xmlns='{PSO}'><configure node='n'>"
                     f"{form('node_config', access_model='authorize')}</configure></pubsub>")
    assert "not-acceptable" in r, r


# ---- OMEMO and bookmarks ------------------------------------------------------------------------

def test_omemo_devicelist_and_bundles(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice", "r")
    d, _ = session(srv, "dave", "d")  # no subscription
    dl = "<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>"
    r = publish(a, "dl", DEVICES, dl, item_id="current", options={"access_model": "open"})
    assert "type='result'" in r, r
    r = items(d, "dg", "alice@localhost", DEVICES)
    assert "device id='1234'" in r, r
    # Bundles: one node, an item per device, max_items=max.
    opts = {"access_model": "open", "max_items": "max"}
    for dev in ("1234", "5678"):
        r = publish(a, f"b{dev}", BUNDLES, f"<bundle xmlns='urn:xmpp:omemo:2'><spk id='{dev}'/>"
                    "</bundle>", item_id=dev, options=opts)
        assert "type='result'" in r, r
    r = items(d, "bg", "alice@localhost", BUNDLES)
    assert "item id='1234'" in r and "item id='5678'" in r, r
    r = items(d, "bg1", "alice@localhost", BUNDLES, inner="<item id='5678'/>")
    assert "spk id='5678'" in r and "1234" not in r, r
    # A precondition that does not hold for the existing node.
    r = publish(a, "dl2", DEVICES, dl, item_id="current", options={"access_model": "presence"})
    assert "conflict" in r and "precondition-not-met" in r, r
    r = publish(a, "b3", BUNDLES, "<bundle xmlns='urn:xmpp:omemo:2'/>", item_id="9",
                options={"max_items": "1"})
    assert "precondition-not-met" in r, r
    # "max" and the limit are the same precondition.
    r = publish(a, "b4", BUNDLES, "<bundle xmlns='urn:xmpp:omemo:2'/>", item_id="9",
                options={"max_items": "50", "access_model": "open"})
    assert "type='result'" in r, r


def test_bookmarks_whitelist(server_factory):
    srv = start(server_factory)
    a, ajid = session(srv, "alice", "r")
    b0, bjid = session(srv, "bob", "setup")
    subscribe(b0, bjid, a, ajid)
    b0.close()
    # bob wants bookmark notifications (+notify) but may not have them.
    b, bjid = session(srv, "bob", "b", features=[BOOKMARKS + "+notify", TUNE + "+notify"])
    opts = {"access_model": "whitelist", "max_items": "max", "persist_items": "true",
            "send_last_published_item": "never"}
    for room in ("r1", "r2"):
        r = publish(a, room, BOOKMARKS, f"<conference xmlns='{BOOKMARKS}' name='{room}'/>",
                    item_id=f"{room}@muc.localhost", options=opts)
        assert "type='result'" in r, r
    r = items(a, "own", "alice@localhost", BOOKMARKS)
    assert "r1@muc.localhost" in r and "r2@muc.localhost" in r, r
    # A contact with a presence subscription cannot read them.
    r = items(b, "peek", "alice@localhost", BOOKMARKS)
    assert "not-allowed" in r and "closed-node" in r and "r1@" not in r, r
    # Nor is he told; a node he may see is (the same caps).
    assert_nothing_before(b, "pubsub#event", barrier=pep_marker(a, bjid))
    assert "type='result'" in publish(a, "t", TUNE, tune("Seen"))
    assert "Seen" in take(b, event_rx(TUNE))
    r = publish(a, "r3", BOOKMARKS, f"<conference xmlns='{BOOKMARKS}'/>", item_id="r3@m",
                options={"access_model": "open"})
    assert "precondition-not-met" in r, r


def test_private_storage_xep0223(server_factory):
    """XEP-0223: private data in PEP with publish-options persist_items true
    and access_model whitelist: the account reads it, a contact with a
    presence subscription does not, is not told, and other options fail."""
    srv = start(server_factory)
    a, ajid = session(srv, "alice", "r")
    b0, bjid = session(srv, "bob", "setup")
    subscribe(b0, bjid, a, ajid)
    b0.close()
    node = "storage:bookmarks"
    b, bjid = session(srv, "bob", "b", features=[node + "+notify"])
    opts = {"persist_items": "true", "access_model": "whitelist"}
    payload = "<storage xmlns='storage:bookmarks'><conference jid='r@muc.localhost'/></storage>"
    assert "type='result'" in publish(a, "p1", node, payload, item_id="current", options=opts)
    r = items(a, "g1", "alice@localhost", node)
    assert "r@muc.localhost" in r, r
    r = items(b, "g2", "alice@localhost", node)
    assert "not-allowed" in r and "closed-node" in r and "muc.localhost" not in r, r
    assert_nothing_before(b, "storage:bookmarks'><conference", barrier=pep_marker(a, bjid))
    # The same preconditions again: fine; persist_items false: refused.
    assert "type='result'" in publish(a, "p2", node, payload, item_id="current", options=opts)
    r = publish(a, "p3", node, payload, item_id="current",
                options={"persist_items": "false", "access_model": "whitelist"})
    assert "conflict" in r and "precondition-not-met" in r, r
    # Stored: still there after a restart.
    a.close()
    b.close()
    assert srv.stop() == 0
    srv.restart()
    a, _ = session(srv, "alice", "r")
    assert "r@muc.localhost" in items(a, "g3", "alice@localhost", node)


def roster_group(c, iid, jid, group):
    """c puts jid in roster group `group` (a roster set), answered."""
    r = take_iq(c, iid, f"<query xmlns='jabber:iq:roster'><item jid='{jid}'>"
                        f"<group>{group}</group></item></query>")
    assert "type='result'" in r, r


def test_roster_access_model(server_factory):
    """The roster access model through the shared engine: contacts in one of
    pubsub#roster_groups_allowed read, are notified (with +notify) and see
    the node in disco#items; others get not-authorized + not-in-roster-group."""
    srv = start(server_factory)
    a, ajid = session(srv, "alice", "r")
    for u in ("bob", "carol"):
        w, wjid = session(srv, u, "setup")
        subscribe(w, wjid, a, ajid)
        w.close()
    for u, g in (("bob", "Friends"), ("carol", "Work")):
        roster_group(a, f"ro-{u}", f"{u}@localhost", g)
    opts = {"access_model": "roster", "roster_groups_allowed": "Friends"}
    assert "type='result'" in publish(a, "p0", TUNE, tune("First"), options=opts)
    b, bjid = session(srv, "bob", "b", features=[TUNE, TUNE + "+notify"])
    assert "First" in take(b, event_rx(TUNE))  # the last item on available
    c, cjid = session(srv, "carol", "c", features=[TUNE, TUNE + "+notify"], answer=False)
    assert "type='result'" in publish(a, "p1", TUNE, tune("Second"), options=opts)
    assert "Second" in take(b, event_rx(TUNE))
    assert_nothing_before(c, "pubsub#event", barrier=pep_marker(a, cjid))
    assert "Second" in items(b, "bi", "alice@localhost", TUNE)
    r = items(c, "ci", "alice@localhost", TUNE)
    assert "not-authorized" in r and "not-in-roster-group" in r and "<title>" not in r, r
    DIT = "http://jabber.org/protocol/disco#items"
    r = take_iq(b, "bd", f"<query xmlns='{DIT}'/>", typ="get", to="alice@localhost")
    assert f"node='{TUNE}'" in r, r
    r = take_iq(c, "cd", f"<query xmlns='{DIT}'/>", typ="get", to="alice@localhost")
    assert "type='result'" in r and f"node='{TUNE}'" not in r, r
    r = iq(a, "cg", f"<pubsub xmlns='{PSO}'><configure node='{TUNE}'/></pubsub>", typ="get")
    assert re.search(r"var='pubsub#roster_groups_allowed'[^>]*>\s*<value>Friends</value>", r), r
    # Other groups as a precondition: refused; Work added by configure: carol reads.
    r = publish(a, "p2", TUNE, tune("x"), options={"access_model": "roster",
                                                   "roster_groups_allowed": "Work"})
    assert "precondition-not-met" in r, r
    a.send(f"<iq type='set' id='cs'><pubsub xmlns='{PSO}'><configure node='{TUNE}'>"
           f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
           f"<value>{PS}#node_config</value></field>"
           f"<field var='pubsub#roster_groups_allowed'><value>Friends</value><value>Work</value>"
           f"<value>Work</value></field></x></configure></pubsub></iq>")
    assert "type='result'" in reply(a, "cs")
    assert "Second" in items(c, "ci2", "alice@localhost", TUNE)


def test_presence_access_model(server_factory):
    srv = start(server_factory)
    a, ajid = session(srv, "alice", "r")
    b, bjid = session(srv, "bob", "b")
    c, _ = session(srv, "carol", "c")
    subscribe(b, bjid, a, ajid)
    assert "type='result'" in publish(a, "p", TUNE, tune("T"))
    assert "<title>T</title>" in items(b, "bi", "alice@localhost", TUNE)
    r = items(c, "ci", "alice@localhost", TUNE)
    assert "not-authorized" in r and "presence-subscription-required" in r and "<title>" not in r


# ---- persistence and removal --------------------------------------------------------------------

def test_persistence_and_removal(server_factory):
    srv = start(server_factory)
    a, _ = session(srv, "alice", "r")
    assert "type='result'" in publish(a, "p", TUNE, tune("Kept"), item_id="k")
    a.close()
    assert srv.stop() == 0
    srv.restart()
    a, _ = session(srv, "alice", "r")
    assert "Kept" in items(a, "g", "alice@localhost", TUNE)
    a.close()
    assert srv.ctl_run("unregister", "alice", "localhost").returncode == 0
    users(srv, "alice")
    a, _ = session(srv, "alice", "r")
    assert "item-not-found" in items(a, "g2", "alice@localhost", TUNE)


# ---- the caps cache -----------------------------------------------------------------------------

CAPS_QUERY = r"<iq[^>]*type=['\"]get['\"][^>]*>\s*<query[^>]*disco#info.*?</iq>"


def test_caps_cache_bound_and_wrong_answer(server_factory):
    # Nothing pinned (caps_pinned_per_account 0): the entries of available
    # sessions are evicted too (test_pubsub_abuse.py has the pinned ones).
    srv = server_factory(extra_yaml=MODULES + "    caps_cache_size: 1\n"
                                              "    caps_pinned_per_account: 0\n")
    users(srv, "alice")
    fa = [TUNE, TUNE + "+notify"]
    fb = [TUNE, TUNE + "+notify", "urn:example:b"]
    x, _ = session(srv, "alice", "x", features=fa)     # A asked, cached
    y, _ = session(srv, "alice", "y", features=fa, answer=False)  # known: not asked
    z, _ = session(srv, "alice", "z", features=fb)     # B asked, cached, A evicted
    w, _ = session(srv, "alice", "w", features=fa)     # A asked again (session() waits for it)
    # A wrong answer (features that do not give the ver) is not kept.
    from xclient import login
    v, _ = login(srv.c2s_port, "alice", "pw", resource="v")
    _, cel = caps_query(["urn:example:c", TUNE + "+notify"])
    v.send(f"<presence>{cel}</presence>")
    got = take(v, CAPS_QUERY)
    iid = re.search(r"id='([^']+)'", got).group(1)
    wrong, _ = caps_query(["urn:example:other"])
    v.send(f"<iq type='result' id='{iid}' to='localhost'>{wrong}</iq>")
    v.roundtrip()
    u, _ = login(srv.c2s_port, "alice", "pw", resource="u")
    u.send(f"<presence>{cel}</presence>")
    take(u, CAPS_QUERY)  # still unknown: asked again


# ---- slixmpp -------------------------------------------------------------------------------------

def test_slixmpp_publish_options_and_items(server_factory):
    """slixmpp's XEP-0060 plugin, as an OMEMO client uses it: the device list
    published with publish-options (open, max), read back, the event
    received; a raw-XML account without a subscription reads it too."""
    import asyncio
    import slixmpp
    from xmpptest import run_slixmpp
    srv = start(server_factory)
    state = {}
    node = "urn:xmpp:omemo:2:devices"

    def make():
        c = slix_client(srv, "alice@localhost/slix", "xep_0004", "xep_0030", "xep_0060")
        got_event = asyncio.Event()

        def on_event(msg):
            state["event"] = [i["id"] for i in msg["pubsub_event"]["items"]["substanzas"]]
            got_event.set()

        async def on_start(_):
            try:
                c.send_presence()
                form = c["xep_0004"].make_form("submit")
                form.add_field(var="FORM_TYPE", ftype="hidden", value=PS + "#publish-options")
                form.add_field(var="pubsub#access_model", value="open")
                form.add_field(var="pubsub#max_items", value="max")
                payload = ET.fromstring("<devices xmlns='urn:xmpp:omemo:2'>"
                                        "<device id='42'/></devices>")
                r = await c["xep_0060"].publish(slixmpp.JID("alice@localhost"), node,
                                                id="current", payload=payload, options=form)
                state["published"] = r["pubsub"]["publish"]["item"]["id"]
                await asyncio.wait_for(got_event.wait(), 5)
                r = await c["xep_0060"].get_items(slixmpp.JID("alice@localhost"), node)
                state["items"] = [i["id"] for i in r["pubsub"]["items"]["substanzas"]]
                form2 = c["xep_0004"].make_form("submit")
                form2.add_field(var="FORM_TYPE", ftype="hidden", value=PS + "#publish-options")
                form2.add_field(var="pubsub#access_model", value="presence")
                try:
                    await c["xep_0060"].publish(slixmpp.JID("alice@localhost"), node,
                                                id="current", payload=payload, options=form2)
                except slixmpp.exceptions.IqError as e:
                    state["precondition"] = e.iq["error"]["condition"]
            finally:
                c.disconnect()

        c.add_event_handler("pubsub_publish", on_event)
        c.add_event_handler("session_start", on_start)
        return c

    run_slixmpp(make, ("127.0.0.1", srv.c2s_port))
    assert state.get("published") == "current", state
    assert state.get("event") == ["current"], state
    assert state.get("items") == ["current"], state
    assert state.get("precondition") == "conflict", state
    d, _ = session(srv, "dave", "d")
    assert "device id='42'" in items(d, "dg", "alice@localhost", node)


def test_slixmpp_subscribe_to_contact_node(server_factory):
    """slixmpp's XEP-0060 plugin subscribes bob (no entity capabilities, so
    no +notify) to his contact alice's tune node (presence access): the
    subscription, the last item, then alice's next publish; unsubscribe."""
    import asyncio
    import slixmpp
    from xmpptest import run_slixmpp
    srv = start(server_factory)
    a, ajid = session(srv, "alice", "r")
    b0, bjid = session(srv, "bob", "setup")
    subscribe(b0, bjid, a, ajid)
    b0.close()
    assert "type='result'" in publish(a, "p0", TUNE, tune("Before"), item_id="t0")
    state = {"events": []}

    def make():
        c = slix_client(srv, "bob@localhost/slix", "xep_0004", "xep_0030", "xep_0060")
        got = asyncio.Queue()

        def on_event(msg):
            if msg["pubsub_event"]["items"]["node"] == TUNE:
                item = msg["pubsub_event"]["items"]["item"]
                state["events"].append(item["id"])
                got.put_nowait(item["id"])

        async def on_start(_):
            try:
                c.send_presence()
                r = await c["xep_0060"].subscribe(slixmpp.JID("alice@localhost"), TUNE)
                state["sub"] = (r["pubsub"]["subscription"]["subscription"],
                                str(r["pubsub"]["subscription"]["jid"]))
                await asyncio.wait_for(got.get(), 5)
                # alice (raw XML, blocking briefly) publishes again.
                publish(a, "p1", TUNE, tune("After"), item_id="t1")
                await asyncio.wait_for(got.get(), 5)
                await c["xep_0060"].unsubscribe(slixmpp.JID("alice@localhost"), TUNE)
                state["unsubscribed"] = True
            finally:
                c.disconnect()

        c.add_event_handler("pubsub_publish", on_event)
        c.add_event_handler("session_start", on_start)
        return c

    run_slixmpp(make, ("127.0.0.1", srv.c2s_port))
    assert state.get("sub") == ("subscribed", "bob@localhost"), state
    assert state["events"] == ["t0", "t1"], state
    assert state.get("unsubscribed"), state


# ---- XEP-0411: bookmarks in private XML storage and in PEP (XEP-0402) ----------------------------

CONV_MODULES = MODULES + "  mod_private: {}\n  mod_vcard: {}\n"
BM48 = "storage:bookmarks"


def start_conv(server_factory):
    srv = server_factory(extra_yaml=CONV_MODULES, workers=1)
    users(srv, "alice", "bob", "carol", "dave")
    return srv


def retract_rx(node, item_id):
    return (rf"<message[^>]*>\s*<event xmlns=['\"]{re.escape(EV)}['\"]>\s*<items "
            rf"node=['\"]{re.escape(node)}['\"]>\s*<retract id=['\"]{re.escape(item_id)}['\"]"
            rf".*?</message>")


def test_bookmarks_conversion_disco(server_factory):
    srv = start_conv(server_factory)
    a, _ = session(srv, "alice", "r")
    r = iq(a, "d1", f"<query xmlns='{DI}'/>", typ="get", to="alice@localhost")
    assert "var='urn:xmpp:bookmarks-conversion:0'" in r, r
    # XEP-0402 §Compatibility: clients (Conversations, Gajim) store
    # bookmarks only through PEP when the account says it unifies them
    # with private XML storage.
    assert "var='urn:xmpp:bookmarks:1#compat'" in r, r


def test_bookmarks_private_to_pep_and_back(server_factory):
    """XEP-0411: bookmarks a XEP-0048 client stores in private XML storage
    (slixmpp's xep_0048 over xep_0049) show up as XEP-0402 items with
    notifications; a XEP-0402 publish shows up in the private storage; a
    bookmark the old client drops is retracted (notified)."""
    import asyncio
    import slixmpp
    from slixmpp.plugins.xep_0048 import Bookmarks
    from xmpptest import run_slixmpp
    srv = start_conv(server_factory)
    a, _ = session(srv, "alice", "r", features=[BOOKMARKS + "+notify"])
    state = {}

    def make():
        c = slix_client(srv, "alice@localhost/slix", "xep_0004", "xep_0030", "xep_0060", "xep_0049", "xep_0048")

        def conferences(res):
            return sorted((str(x["jid"]), x["name"], x["nick"], x["autojoin"], x["password"])
                          for x in res["private"]["bookmarks"]["substanzas"]
                          if x.name == "conference")

        async def on_start(_):
            try:
                bm = Bookmarks()
                bm.add_conference("room@muc.localhost", "Al", name="Room", autojoin=True,
                                  password="s3")
                bm.add_url("https://example.org/", name="Ex")
                await c["xep_0048"].set_bookmarks(bm, method="xep_0049")
                r = await c["xep_0060"].get_items(slixmpp.JID("alice@localhost"), BOOKMARKS)
                state["items"] = [(i["id"], str(i)) for i in r["pubsub"]["items"]["substanzas"]]
                # A XEP-0402 client adds one.
                payload = ET.fromstring(f"<conference xmlns='{BOOKMARKS}' name='Other'>"
                                        "<nick>Ali</nick></conference>")
                await c["xep_0060"].publish(slixmpp.JID("alice@localhost"), BOOKMARKS,
                                            id="other@muc.localhost", payload=payload)
                r = await c["xep_0048"].get_bookmarks(method="xep_0049")
                state["private"] = conferences(r)
                state["urls"] = [x["url"] for x in r["private"]["bookmarks"]["substanzas"]
                                 if x.name == "url"]
                # The old client drops the first one.
                bm2 = Bookmarks()
                bm2.add_conference("other@muc.localhost", "Ali", name="Other")
                await c["xep_0048"].set_bookmarks(bm2, method="xep_0049")
                r = await c["xep_0060"].get_items(slixmpp.JID("alice@localhost"), BOOKMARKS)
                state["items2"] = [i["id"] for i in r["pubsub"]["items"]["substanzas"]]
            finally:
                c.disconnect()

        c.add_event_handler("session_start", on_start)
        return c

    run_slixmpp(make, ("127.0.0.1", srv.c2s_port))
    assert [i for i, _ in state.get("items", [])] == ["room@muc.localhost"], state
    item = state["items"][0][1]
    assert "autojoin=\"true\"" in item and "name=\"Room\"" in item, item
    assert "<nick>Al</nick>" in item and "<password>s3</password>" in item, item
    assert state.get("private") == [("other@muc.localhost", "Other", "Ali", False, ""),
                                    ("room@muc.localhost", "Room", "Al", True, "s3")], state
    assert state.get("urls") == ["https://example.org/"], state
    assert state.get("items2") == ["other@muc.localhost"], state
    # The XEP-0402 session was told of each change, the retraction too.
    ev = take(a, event_rx(BOOKMARKS))
    assert "id='room@muc.localhost'" in ev and "autojoin='true'" in ev, ev
    ev = take(a, event_rx(BOOKMARKS))
    assert "id='other@muc.localhost'" in ev, ev
    take(a, retract_rx(BOOKMARKS, "room@muc.localhost"))
    # The node is whitelist: another account reads nothing.
    b, _ = session(srv, "bob", "b")
    r = items(b, "ib", "alice@localhost", BOOKMARKS)
    assert "type='error'" in r, r


def test_bookmarks_pep_publish_shows_in_private_raw(server_factory):
    """Raw XML: a XEP-0402 publish (with the XEP-0402 publish-options) is
    what a later private storage get returns; an unchanged re-set of the
    same bookmarks publishes nothing (no notification)."""
    srv = start_conv(server_factory)
    a, _ = session(srv, "alice", "r", features=[BOOKMARKS + "+notify"])
    r = publish(a, "p1", BOOKMARKS,
                f"<conference xmlns='{BOOKMARKS}' name='The Room' autojoin='true'>"
                "<nick>A</nick><extensions><x xmlns='urn:example'/></extensions></conference>",
                item_id="theroom@muc.localhost",
                options={"persist_items": "true", "max_items": "max",
                         "send_last_published_item": "never", "access_model": "whitelist"})
    assert "type='result'" in r, r
    take(a, event_rx(BOOKMARKS))
    r = take_iq(a, "g1", f"<query xmlns='jabber:iq:private'><storage xmlns='{BM48}'/></query>",
                typ="get")
    assert "type='result'" in r, r
    assert re.search(r"<conference(?=[^>]*jid='theroom@muc.localhost')(?=[^>]*name='The Room')"
                     r"(?=[^>]*autojoin='true')[^>]*>\s*<nick>A</nick>", r), r
    # Setting back what was read changes nothing: no event, extensions kept.
    st = re.search(r"<storage.*</storage>", r).group(0)
    r = take_iq(a, "s1", f"<query xmlns='jabber:iq:private'>{st}</query>")
    assert "type='result'" in r, r
    assert_nothing_before(a, event_rx(BOOKMARKS), after=a, pool=True)
    r = items(a, "i1", "alice@localhost", BOOKMARKS)
    assert "<x xmlns='urn:example'/>" in r and "The Room" in r, r
    # A conference whose jid is not a bare room JID is not converted.
    r = take_iq(a, "s2", "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
                "<conference jid='not a jid' name='x'/></storage></query>")
    assert "type='result'" in r, r
    take(a, retract_rx(BOOKMARKS, "theroom@muc.localhost"))
    r = items(a, "i2", "alice@localhost", BOOKMARKS)
    assert "type='result'" in r and "<item " not in r, r


# ---- XEP-0398: the vCard's PHOTO and the XEP-0084 avatar ----------------------------------------

AV_DATA = "urn:xmpp:avatar:data"
AV_META = "urn:xmpp:avatar:metadata"
PNG1 = bytes.fromhex("89504e470d0a1a0a") + b"first avatar image" * 3
PNG2 = bytes.fromhex("89504e470d0a1a0a") + b"second one"


def test_avatar_conversion_disco(server_factory):
    srv = start_conv(server_factory)
    a, _ = session(srv, "alice", "r")
    r = iq(a, "d1", f"<query xmlns='{DI}'/>", typ="get", to="alice@localhost")
    assert "var='urn:xmpp:pep-vcard-conversion:0'" in r, r


def test_avatar_vcard_to_pep_and_back(server_factory):
    """XEP-0398 with slixmpp's xep_0054 and xep_0084: a vCard PHOTO becomes
    the XEP-0084 data and metadata items (the contact with +notify is told);
    an avatar published by a XEP-0084 client becomes the vCard's PHOTO and
    the XEP-0153 hash the server stamps on presence."""
    import asyncio
    import base64
    import hashlib
    import slixmpp
    from xmpptest import run_slixmpp
    srv = start_conv(server_factory)
    a, ajid = session(srv, "alice", "r", features=[AV_META + "+notify"])
    b, bjid = session(srv, "bob", "b", features=[AV_META + "+notify", "urn:example:bob"])
    subscribe(b, bjid, a, ajid)
    h1, h2 = hashlib.sha1(PNG1).hexdigest(), hashlib.sha1(PNG2).hexdigest()
    state = {}

    def make():
        c = slix_client(srv, "alice@localhost/slix", "xep_0004", "xep_0030", "xep_0060", "xep_0163", "xep_0054", "xep_0084")

        async def on_start(_):
            try:
                vc = c["xep_0054"].make_vcard()
                vc["FN"] = "Alice"
                vc["PHOTO"]["TYPE"] = "image/png"
                vc["PHOTO"]["BINVAL"] = PNG1
                await c["xep_0054"].publish_vcard(vc)
                me = slixmpp.JID("alice@localhost")
                r = await c["xep_0060"].get_items(me, AV_META)
                state["meta"] = [(i["id"], str(i)) for i in r["pubsub"]["items"]["substanzas"]]
                r = await c["xep_0060"].get_items(me, AV_DATA)
                state["data"] = [(i["id"], i["payload"].text)
                                 for i in r["pubsub"]["items"]["substanzas"]]
                # A XEP-0084 client changes the avatar.
                await c["xep_0084"].publish_avatar(PNG2)
                await c["xep_0084"].publish_avatar_metadata(
                    [{"id": h2, "type": "image/png", "bytes": len(PNG2)}])
                r = await c["xep_0054"].get_vcard(me)
                state["vcard"] = (r["vcard_temp"]["FN"], r["vcard_temp"]["PHOTO"]["BINVAL"],
                                  r["vcard_temp"]["PHOTO"]["TYPE"])
            finally:
                c.disconnect()

        c.add_event_handler("session_start", on_start)
        return c

    run_slixmpp(make, ("127.0.0.1", srv.c2s_port))
    assert [i for i, _ in state.get("meta", [])] == [h1], state
    meta = state["meta"][0][1]
    assert f'bytes="{len(PNG1)}"' in meta and 'type="image/png"' in meta, meta
    assert state.get("data") and state["data"][0][0] == h1, state
    assert base64.b64decode(state["data"][0][1]) == PNG1, state
    assert state.get("vcard") == ("Alice", PNG2, "image/png"), state
    # The contact was told of the vCard's avatar, then of the client's.
    ev = take(b, event_rx(AV_META))
    assert f"id='{h1}'" in ev, ev
    ev = take(b, event_rx(AV_META))
    assert f"id='{h2}'" in ev, ev
    # The XEP-0153 hash the server stamps follows the new avatar.
    a.send("<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>")
    take(b, rf"<presence(?=[^>]*from=['\"]{re.escape(ajid)}['\"])(?:(?!</presence>).)*"
            rf"<photo>{h2}</photo>")


def test_avatar_disable_both_ways_raw(server_factory):
    """Raw XML: an empty XEP-0084 metadata (avatar off) takes the PHOTO out
    of the vCard and keeps the rest; a vCard set without PHOTO after one
    with publishes the empty metadata; an unchanged PHOTO publishes nothing;
    metadata naming data that is not there leaves the vCard alone."""
    import base64
    import hashlib
    srv = start_conv(server_factory)
    a, ajid = session(srv, "alice", "r", features=[AV_META + "+notify"])
    b64 = base64.b64encode(PNG1).decode()
    h1 = hashlib.sha1(PNG1).hexdigest()
    card = (f"<vCard xmlns='vcard-temp'><NICKNAME>al</NICKNAME><PHOTO><TYPE>image/png</TYPE>"
            f"<BINVAL>{b64[:20]}\n{b64[20:]}</BINVAL></PHOTO></vCard>")
    assert "type='result'" in take_iq(a, "v1", card)
    ev = take(a, event_rx(AV_META))
    assert f"<info bytes='{len(PNG1)}' id='{h1}' type='image/png'/>" in ev, ev
    # The same vCard again: no new event.
    assert "type='result'" in take_iq(a, "v2", card)
    assert_nothing_before(a, event_rx(AV_META), after=a, pool=True)
    # Metadata naming an image the data node lacks: the vCard keeps its photo.
    r = publish(a, "m0", AV_META, f"<metadata xmlns='{AV_META}'><info id='{'0' * 40}' "
                "bytes='3' type='image/png'/></metadata>", item_id="0" * 40)
    assert "type='result'" in r, r
    take(a, event_rx(AV_META))
    r = take_iq(a, "g0", "<vCard xmlns='vcard-temp'/>", typ="get")
    assert "<BINVAL>" in r, r
    # Avatar off through XEP-0084: the PHOTO goes, the rest stays.
    r = publish(a, "m1", AV_META, f"<metadata xmlns='{AV_META}'/>", item_id="off")
    assert "type='result'" in r, r
    take(a, event_rx(AV_META))
    r = take_iq(a, "g1", "<vCard xmlns='vcard-temp'/>", typ="get")
    assert "<NICKNAME>al</NICKNAME>" in r and "PHOTO" not in r, r
    # A photo again by vCard, then a vCard without one: the empty metadata.
    assert "type='result'" in take_iq(a, "v3", card)
    assert f"id='{h1}'" in take(a, event_rx(AV_META))
    assert "type='result'" in take_iq(a, "v4", "<vCard xmlns='vcard-temp'><FN>A</FN></vCard>")
    ev = take(a, event_rx(AV_META))
    assert re.search(rf"<metadata xmlns='{AV_META}'\s*/>", ev), ev


# ---- contacts on another server (s2s) ------------------------------------------------------------

def s2s_pair(server_factory, a_pep_extra=""):
    from test_s2s import make_pair
    return make_pair(server_factory,
                     a_extra="modules:\n  mod_roster: {}\n  mod_pep:"
                     + (f"\n{a_pep_extra}" if a_pep_extra else " {}\n"),
                     b_extra="modules:\n  mod_roster: {}\n")


def s2s_take(c, pattern, timeout=10):
    return take(c, pattern, timeout=timeout)


def s2s_both(a, b, ajid="alice@a.test", bjid="bob@b.test"):
    """alice@a.test and bob@b.test (or the bare JIDs given) subscribe to
    each other (both)."""
    for (x, xb), (y, yb) in (((a, ajid), (b, bjid)), ((b, bjid), (a, ajid))):
        x.send(f"<presence to='{yb}' type='subscribe'/>")
        s2s_take(y, rf"<presence(?=[^>]*from=['\"]{xb}['\"])[^>]*type=['\"]subscribe['\"]")
        y.send(f"<presence to='{xb}' type='subscribed'/>")
        s2s_take(x, rf"<presence(?=[^>]*from=['\"]{yb}['\"])[^>]*type=['\"]subscribed['\"]")


def remote_caps(b, features, node="https://example.org/remote"):
    """bob announces caps; a.test's disco#info query is answered."""
    q, cel = caps_query(features, node=node)
    b.send(f"<presence>{cel}</presence>")
    got = s2s_take(b, r"<iq[^>]*type=['\"]get['\"][^>]*>\s*<query[^>]*disco#info.*?</iq>")
    assert "from='a.test'" in got, got
    iid = re.search(r"id='([^']+)'", got).group(1)
    nd = re.search(r"node='([^']+)'", got)
    qn = q if not nd else q.replace("<query ", f"<query node='{nd.group(1)}' ", 1)
    b.send(f"<iq type='result' id='{iid}' to='a.test'>{qn}</iq>")


@pytest.mark.slow
def test_pep_to_contact_on_another_server(server_factory):
    """alice@a.test's PEP reaches bob@b.test through s2s: the last item when
    bob's presence (with caps asked for across) arrives, then each publish;
    a node bob does not +notify is not sent; after bob's unavailable
    presence nothing more goes to him.  A remote session that only sent
    directed presence (no subscription) gets the last item of an open node,
    not that of a presence node."""
    from helpers import online
    p = s2s_pair(server_factory)
    a, ajid = online(p.a, "alice", "r")
    b, bjid = online(p.b, "bob", "r")
    s2s_both(a, b)
    assert "type='result'" in publish(a, "p1", TUNE, tune("Before"), item_id="t1")
    assert "type='result'" in publish(a, "p2", "urn:example:other", "<x xmlns='urn:example'/>")
    remote_caps(b, [TUNE + "+notify"])
    ev = s2s_take(b, event_rx(TUNE))
    assert "from='alice@a.test'" in ev and "Before" in ev, ev
    assert "type='result'" in publish(a, "p3", TUNE, tune("After"), item_id="t2")
    ev = s2s_take(b, event_rx(TUNE))
    assert "After" in ev and f"to='{bjid}'" in ev, ev
    assert "type='result'" in publish(a, "p4", "urn:example:other", "<x xmlns='urn:example'/>")
    a.send(f"<message to='{bjid}' id='mk1'><body>mark1</body></message>")
    s2s_take(b, r"<message[^>]*id='mk1'")
    assert "urn:example:other" not in b.buf.decode(), b.buf
    # Unavailable: no more events for bob.
    b.send("<presence type='unavailable'/>")
    s2s_take(a, rf"<presence(?=[^>]*from=['\"]{re.escape(bjid)}['\"])[^>]*type=['\"]unavailable")
    assert "type='result'" in publish(a, "p5", TUNE, tune("Gone"), item_id="t3")
    a.send(f"<message to='{bjid}' id='mk2'><body>mark2</body></message>")
    s2s_take(b, r"<message[^>]*id='mk2'")
    assert "Gone" not in b.buf.decode(), b.buf
    assert "type='result'" in publish(a, "p6", "urn:example:open", "<x xmlns='urn:example'/>",
                                      options={"access_model": "open"})
    feats = [TUNE + "+notify", "urn:example:open+notify"]
    # carol@b.test, no subscription: directed presence with caps.
    c, cjid = online(p.b, "carol", "c")
    q, cel = caps_query(feats + ["urn:example:carol"], node="https://example.org/remote")
    c.send(f"<presence to='alice@a.test'>{cel}</presence>")
    got = s2s_take(c, r"<iq[^>]*type=['\"]get['\"][^>]*>\s*<query[^>]*disco#info.*?</iq>")
    iid = re.search(r"id='([^']+)'", got).group(1)
    nd = re.search(r"node='([^']+)'", got).group(1)
    c.send(f"<iq type='result' id='{iid}' to='a.test'>"
           + q.replace("<query ", f"<query node='{nd}' ", 1) + "</iq>")
    s2s_take(c, event_rx("urn:example:open"))
    a.send(f"<message to='{cjid}' id='mk3'><body>mark</body></message>")
    s2s_take(c, r"<message[^>]*id='mk3'")
    assert TUNE not in c.buf.decode(), c.buf


@pytest.mark.slow
def test_pep_remote_limits_and_access(server_factory):
    """max_remote_resources: 1 keeps bob@b.test's first session only (the
    second gets no events)."""
    from helpers import online
    p = s2s_pair(server_factory, a_pep_extra="    max_remote_resources: 1\n")
    a, ajid = online(p.a, "alice", "r")
    b1, b1jid = online(p.b, "bob", "r1")
    b2, b2jid = online(p.b, "bob", "r2")
    s2s_both(a, b1)
    assert "type='result'" in publish(a, "p1", TUNE, tune("T1"), item_id="t1")
    assert "type='result'" in publish(a, "p2", "urn:example:open", "<x xmlns='urn:example'/>",
                                      options={"access_model": "open"})
    feats = [TUNE + "+notify", "urn:example:open+notify"]
    remote_caps(b1, feats)
    s2s_take(b1, event_rx(TUNE))
    # The second session: same caps (known), not remembered.
    q, cel = caps_query(feats, node="https://example.org/remote")
    b2.send(f"<presence>{cel}</presence>")
    s2s_take(a, rf"<presence(?=[^>]*from=['\"]{re.escape(b2jid)}['\"])")
    assert "type='result'" in publish(a, "p3", TUNE, tune("T2"), item_id="t2")
    assert "T2" in s2s_take(b1, event_rx(TUNE))
    a.send(f"<message to='{b2jid}' id='mk'><body>mark</body></message>")
    s2s_take(b2, r"<message[^>]*id='mk'")
    assert "<event" not in b2.buf.decode(), b2.buf


# ---- the roster cache, the fan-out, other local hosts ---------------------------------------------

MOOD = "http://jabber.org/protocol/mood"


def mood(m):
    return f"<mood xmlns='{MOOD}'><{m}/></mood>"


def resubscribe(b, bjid, a, ajid):
    """b asks for a's presence again and a approves (a's roster: from)."""
    subscribe(b, bjid, a, ajid)


def test_roster_change_takes_effect_on_next_publish(server_factory):
    """The owner's roster is cached for publishes: a group change (roster
    access model), a cancelled subscription and a removal each hold from the
    very next publish; the notification of a later publish, and a message the
    owner sends after the publish, are the barriers."""
    srv = start(server_factory)
    a, ajid = session(srv, "alice", "r")
    w, wjid = session(srv, "bob", "setup")
    subscribe(w, wjid, a, ajid)
    w.close()
    roster_group(a, "g1", "bob@localhost", "Friends")
    b, bjid = session(srv, "bob", "b", features=[TUNE + "+notify", MOOD + "+notify"])
    ropts = {"access_model": "roster", "roster_groups_allowed": "Friends"}
    assert "type='result'" in publish(a, "p1", MOOD, mood("happy"), options=ropts)
    assert "happy" in take(b, event_rx(MOOD))
    assert "type='result'" in publish(a, "p2", TUNE, tune("T1"))
    assert "T1" in take(b, event_rx(TUNE))
    # bob moves to another group: the roster node's next publish skips him.
    roster_group(a, "g2", "bob@localhost", "Work")
    assert "type='result'" in publish(a, "p3", MOOD, mood("sad"))
    assert "type='result'" in publish(a, "p4", TUNE, tune("T2"))
    got = assert_nothing_before(b, "<sad", barrier=event_rx(TUNE))
    assert "T2" in got
    # Back in Friends: notified again.
    roster_group(a, "g3", "bob@localhost", "Friends")
    assert "type='result'" in publish(a, "p5", MOOD, mood("calm"))
    assert "calm" in take(b, event_rx(MOOD))
    # alice cancels bob's subscription (her roster: none): nothing more.
    a.send("<presence to='bob@localhost' type='unsubscribed'/>")
    take(b, r"<presence(?=[^>]*from=['\"]alice@localhost)[^>]*type=['\"]unsubscribed['\"]")
    assert "type='result'" in publish(a, "p6", TUNE, tune("T3"))
    assert_nothing_before(b, "pubsub#event", barrier=pep_marker(a, bjid))
    resubscribe(b, bjid, a, ajid)
    assert "type='result'" in publish(a, "p7", TUNE, tune("T4"))
    assert "T4" in take(b, event_rx(TUNE))
    # alice removes bob from her roster: nothing more.
    r = take_iq(a, "g4", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' "
                         "subscription='remove'/></query>")
    assert "type='result'" in r, r
    assert "type='result'" in publish(a, "p8", TUNE, tune("T5"))
    assert_nothing_before(b, "pubsub#event", barrier=pep_marker(a, bjid))
    resubscribe(b, bjid, a, ajid)
    assert "type='result'" in publish(a, "p9", TUNE, tune("T6"))
    assert "T6" in take(b, event_rx(TUNE))


def pep_stats(srv, host="localhost"):
    """xmppctl pep_stats HOST as a dict of counters."""
    r = srv.ctl_run("pep_stats", host)
    assert r.returncode == 0, r.stdout + r.stderr
    return {k: int(v) for k, v in (ln.split() for ln in r.stdout.split("\n") if ln.strip())}


def test_pep_stats_of_a_host_without_pep(server_factory):
    """pep_stats names the host mod_pep does not run on (a served host
    without it: host_config adds it to the other one only)."""
    srv = server_factory(extra_yaml="modules:\n  mod_roster: {}\nhost_config:\n  localhost:\n"
                         "    modules:\n      mod_pep: {}\n",
                         hosts=("localhost", "other.localhost"))
    assert pep_stats(srv)["publishes_in_flight"] == 0
    r = srv.ctl_run("pep_stats", "other.localhost")
    assert r.returncode != 0, r.stdout
    assert "mod_pep does not run on other.localhost" in r.stdout + r.stderr, r.stdout + r.stderr


def test_roster_cache_bound(server_factory):
    """roster_cache_size 2 and three publishers, each with a contact of its
    own: pep_stats shows the entries staying at 2 while each roster read
    past the bound evicts one, a publisher whose roster is there read from
    memory (a hit), and an evicted publisher's next publish read from the
    database again and reaching its own contact, and no other."""
    srv = server_factory(extra_yaml=MODULES + "    roster_cache_size: 2\n", workers=1)
    pairs = (("alice", "bob"), ("carol", "dave"), ("erin", "frank"))
    users(srv, *[u for p in pairs for u in p])
    owners, contacts = {}, {}
    for o, w in pairs:
        owners[o] = session(srv, o, "r")
        wc, wjid = session(srv, w, "setup")
        subscribe(wc, wjid, *owners[o])
        wc.close()
    for i, (o, w) in enumerate(pairs):  # the first session answers the caps query
        contacts[o] = session(srv, w, "n", features=[TUNE + "+notify"], answer=i == 0)
    assert pep_stats(srv)["roster_cache_entries"] == 0
    n = 0

    def pub(o):
        """A publish by o, its event at o's contact (the barrier: the roster
        was looked up before the event went); the counters after it."""
        nonlocal n
        n += 1
        assert "type='result'" in publish(owners[o][0], f"p{n}", TUNE, tune(f"{o}{n}"))
        ev = take(contacts[o][0], event_rx(TUNE))
        assert f"{o}{n}<" in ev and f"from='{o}@localhost'" in ev, ev
        return pep_stats(srv)

    st = pub("alice")
    assert (st["roster_cache_entries"], st["roster_cache_loads"]) == (1, 1), st
    st = pub("alice")
    assert (st["roster_cache_hits"], st["roster_cache_loads"]) == (1, 1), st
    st = pub("carol")
    assert (st["roster_cache_entries"], st["roster_cache_loads"]) == (2, 2), st
    assert st["roster_cache_evictions"] == 0, st
    st = pub("erin")
    assert (st["roster_cache_entries"], st["roster_cache_loads"]) == (2, 3), st
    assert st["roster_cache_evictions"] == 1, st
    # alice or carol went: of their next publishes, the evicted one's is
    # read from the database (and evicts another), every one at the bound.
    reread = 0
    for o in ("alice", "carol", "erin", "alice", "carol", "erin"):
        before = st
        st = pub(o)
        assert st["roster_cache_entries"] == 2, st
        loaded = st["roster_cache_loads"] - before["roster_cache_loads"]
        assert loaded + st["roster_cache_hits"] - before["roster_cache_hits"] == 1, (before, st)
        assert st["roster_cache_evictions"] - before["roster_cache_evictions"] == loaded, st
        reread += loaded
    assert reread >= 2, st
    # Nobody got another publisher's events.
    for o, _ in pairs:
        c, cjid = contacts[o]
        assert_nothing_before(c, "pubsub#event", barrier=pep_marker(owners[o][0], cjid))


def three_contacts(srv, a, ajid):
    """bob, carol and dave subscribed to alice (a), each online with a
    session that wants tune notifications (bob's answers the caps query)."""
    subs = []
    for u in ("bob", "carol", "dave"):
        w, wjid = session(srv, u, "setup")
        subscribe(w, wjid, a, ajid)
        w.close()
        subs.append(session(srv, u, "n", features=[TUNE + "+notify"], answer=u == "bob"))
    return subs


def pipelined_publishes(a, subs, tag):
    """Sixteen publishes sent without waiting: every one answered, and each
    contact gets the notifications in publish order."""
    a.send("".join(f"<iq type='set' id='w{i}'><pubsub xmlns='{PS}'><publish node='{TUNE}'>"
                   f"<item id='i{i}'>{tune(f'{tag}{i}')}</item></publish></pubsub></iq>"
                   for i in range(16)))
    for i in range(16):
        assert "type='result'" in take(a, reply_rx(f"w{i}")), i
    for c, cjid in subs:
        for i in range(16):
            got = take(c, r"<message[^>]*>.*?</message>")
            assert f"<title>{tag}{i}</title>" in got, (cjid, i, got)


def test_overlapping_publishes_keep_order(server_factory):
    """Sixteen publishes sent without waiting, two workers: every one
    answered, and each contact gets the notifications in publish order
    (they go out from the owner's worker while the next ones are stored)."""
    srv = start(server_factory, workers=2)
    a, ajid = session(srv, "alice", "r")
    pipelined_publishes(a, three_contacts(srv, a, ajid), "N")


def test_publishes_in_flight_bound(server_factory):
    """max_publishes_in_flight 0: a publisher's stream reads its next
    stanza only after its publish's notifications went out (the bound of
    the notification queue, back-pressure): sixteen publishes sent without
    waiting all answered, each one counted as a wait, the contacts get them
    in order, and nothing is left in flight."""
    srv = server_factory(extra_yaml=MODULES + "    max_publishes_in_flight: 0\n", workers=2)
    users(srv, "alice", "bob", "carol", "dave")
    a, ajid = session(srv, "alice", "r")
    subs = three_contacts(srv, a, ajid)
    # The caps of the contacts known first (one publish, its event at each).
    assert "type='result'" in publish(a, "p0", TUNE, tune("N0"))
    for c, _ in subs:
        assert "N0" in take(c, event_rx(TUNE))
    waits0 = pep_stats(srv)["publish_waits"]
    pipelined_publishes(a, subs, "M")
    st = pep_stats(srv)
    assert st["publish_waits"] - waits0 == 16, st
    deadline = time.monotonic() + 10  # the last job's counter follows its writes
    while st["publishes_in_flight"] and time.monotonic() < deadline:
        st = pep_stats(srv)
    assert st["publishes_in_flight"] == 0, st


def conv_flight(server_factory):
    """max_publishes_in_flight 0 with the conversions: alice (r, the setter;
    n, +notify for bookmarks and avatars), bob subscribed to her (n, the
    same +notify); publish_waits before anything was converted."""
    srv = server_factory(extra_yaml=MODULES + "    max_publishes_in_flight: 0\n"
                         "  mod_private: {}\n  mod_vcard: {}\n", workers=2)
    users(srv, "alice", "bob")
    a, ajid = session(srv, "alice", "r")
    w, wjid = session(srv, "bob", "setup")
    subscribe(w, wjid, a, ajid)
    w.close()
    feats = [BOOKMARKS + "+notify", AV_META + "+notify"]
    n, _ = session(srv, "alice", "n", features=feats)
    b, _ = session(srv, "bob", "n", features=feats, answer=False)
    return srv, a, n, b, pep_stats(srv)["publish_waits"]


ANY_IQ = r"<iq[^>]*/>|<iq[^>]*[^/]>.*?</iq>"


def no_flight_left(srv):
    st = pep_stats(srv)
    deadline = time.monotonic() + 10  # the last job's counter follows its writes
    while st["publishes_in_flight"] and time.monotonic() < deadline:
        st = pep_stats(srv)
    assert st["publishes_in_flight"] == 0, st


def test_bookmark_conversion_counts_in_flight(server_factory):
    """max_publishes_in_flight 0: the publishes of the XEP-0411 conversion
    count like a publish by IQ and hold the stream of the private XML set
    that made them.  Sixteen bookmark sets sent without waiting (each adds
    a conference: one publish each) are all answered in order, each one
    waited for (publish_waits), alice's +notify session gets the sixteen
    events in order, and nothing is left in flight."""
    srv, a, n, _, waits0 = conv_flight(server_factory)

    def confs(i):
        return "".join(f"<conference jid='room{k}@muc.localhost' name='R{k}'/>"
                       for k in range(i + 1))
    a.send("".join(f"<iq type='set' id='b{i}'><query xmlns='jabber:iq:private'>"
                   f"<storage xmlns='{BM48}'>{confs(i)}</storage></query></iq>"
                   for i in range(16)))
    for i in range(16):
        r = expect(a, ANY_IQ)
        assert f"id='b{i}'" in r and "type='result'" in r, (i, r)
    for i in range(16):
        ev = take(n, event_rx(BOOKMARKS))
        assert f"id='room{i}@muc.localhost'" in ev, (i, ev)
    st = pep_stats(srv)
    assert st["publish_waits"] - waits0 == 16, st
    no_flight_left(srv)


def test_avatar_conversion_counts_in_flight(server_factory):
    """The same for XEP-0398: four vCard sets sent without waiting, a new
    photo each (two publishes each: data and metadata), all answered in
    order, eight waits, bob (a contact, +notify) gets the four metadata
    events in order, nothing left in flight."""
    import base64
    import hashlib
    srv, a, _, b, waits0 = conv_flight(server_factory)
    pngs = [PNG1, PNG2, PNG1, PNG2]
    a.send("".join(f"<iq type='set' id='v{i}'><vCard xmlns='vcard-temp'><PHOTO>"
                   f"<TYPE>image/png</TYPE><BINVAL>{base64.b64encode(p).decode()}</BINVAL>"
                   f"</PHOTO></vCard></iq>" for i, p in enumerate(pngs)))
    for i in range(len(pngs)):
        r = expect(a, ANY_IQ)
        assert f"id='v{i}'" in r and "type='result'" in r, (i, r)
    for i, p in enumerate(pngs):
        ev = take(b, event_rx(AV_META))
        assert f"id='{hashlib.sha1(p).hexdigest()}'" in ev, (i, ev)
    st = pep_stats(srv)
    assert st["publish_waits"] - waits0 == 2 * len(pngs), st
    no_flight_left(srv)


def test_contact_on_another_local_host(server_factory):
    """A contact on another virtual host of the same server gets the
    notifications and, when its session becomes available, the last item."""
    srv = server_factory(extra_yaml=MODULES, hosts=("localhost", "other.localhost"))
    users(srv, "alice")
    users(srv, "bob", host="other.localhost")
    a, ajid = session(srv, "alice", "r")
    w, wjid = session(srv, "bob", "setup", domain="other.localhost")
    subscribe(w, wjid, a, ajid)
    w.close()
    assert "type='result'" in publish(a, "p0", TUNE, tune("Before"))
    b, bjid = session(srv, "bob", "b", features=[TUNE + "+notify"], domain="other.localhost")
    assert "Before" in take(b, event_rx(TUNE))  # the last item on available
    assert "type='result'" in publish(a, "p1", TUNE, tune("After"))
    assert "After" in take(b, event_rx(TUNE))


# ---- remote sessions: a bound per server, expiry ---------------------------------------------------

def remote_second(a, b2, b2jid, feats):
    """bob's second session on b.test shows the same caps (known to a.test)."""
    q, cel = caps_query(feats, node="https://example.org/remote")
    b2.send(f"<presence>{cel}</presence>")
    s2s_take(a, rf"<presence(?=[^>]*from=['\"]{re.escape(b2jid)}['\"])")


def s2s_two_domains(server_factory, a_pep_extra):
    """a.test (mod_pep with a_pep_extra) and one server of two domains,
    b.test and c.test, on another address: a.test reaches both there."""
    from test_s2s import A_IP, B_IP, Pair, listen_yaml
    from xmpptest import free_port
    a_c2s, a_s2s = free_port(addr=A_IP), free_port(addr=A_IP)
    b_c2s, b_s2s = free_port(addr=B_IP), free_port(addr=B_IP)
    a = server_factory(hosts=("a.test",), listen=listen_yaml(A_IP, a_c2s, a_s2s),
                       extra_yaml=(f"s2s_hosts:\n  b.test: \"{B_IP}:{b_s2s}\"\n"
                                   f"  c.test: \"{B_IP}:{b_s2s}\"\n"
                                   "modules:\n  mod_roster: {}\n  mod_pep:\n" + a_pep_extra))
    b = server_factory(hosts=("b.test", "c.test"), listen=listen_yaml(B_IP, b_c2s, b_s2s),
                       extra_yaml=(f"s2s_hosts:\n  a.test: \"{A_IP}:{a_s2s}\"\n"
                                   "modules:\n  mod_roster: {}\n"))
    a.c2s_port, a.ip, a.domain = a_c2s, A_IP, "a.test"
    b.c2s_port, b.ip, b.domain = b_c2s, B_IP, "b.test"
    users(a, "alice")
    users(b, "bob")
    users(b, "bob", host="c.test")
    return Pair(a, b)


@pytest.mark.slow
def test_pep_remote_per_domain_bound(server_factory):
    """max_remote_per_domain: 1 with contacts on two other domains (b.test
    and c.test, one server): bob@b.test's first session fills b.test's
    share and his second gets nothing, while bob@c.test's first session is
    still remembered (its last item, then the events) and only his second
    is not: one domain at its bound does not take another's."""
    from helpers import online
    p = s2s_two_domains(server_factory, "    max_remote_per_domain: 1\n")
    a, ajid = online(p.a, "alice", "r")
    b1, b1jid = online(p.b, "bob", "r1")
    c1, c1jid = online(p.b, "bob", "r1", domain="c.test")
    s2s_both(a, b1)
    s2s_both(a, c1, bjid="bob@c.test")
    assert "type='result'" in publish(a, "p1", TUNE, tune("T1"), item_id="t1")
    feats = [TUNE + "+notify"]
    remote_caps(b1, feats)
    assert "T1" in s2s_take(b1, event_rx(TUNE))
    remote_second(a, c1, c1jid, feats)  # caps known: its last item at once
    assert "T1" in s2s_take(c1, event_rx(TUNE))
    # The second session of each domain: over that domain's share.
    b2, b2jid = online(p.b, "bob", "r2")
    c2, c2jid = online(p.b, "bob", "r2", domain="c.test")
    remote_second(a, b2, b2jid, feats)
    remote_second(a, c2, c2jid, feats)
    assert "type='result'" in publish(a, "p2", TUNE, tune("T2"), item_id="t2")
    for c in (b1, c1):
        ev = s2s_take(c, event_rx(TUNE))
        assert "T2" in ev and "from='alice@a.test'" in ev, ev
    for c, cjid in ((b2, b2jid), (c2, c2jid)):
        a.send(f"<message to='{cjid}' id='mk-{cjid}'><body>mark</body></message>")
        s2s_take(c, rf"<message[^>]*id='mk-{re.escape(cjid)}'")
        assert "<event" not in c.buf.decode(), c.buf


@pytest.mark.slow
def test_pep_remote_sessions_expire(server_factory):
    """remote_resource_ttl: a remote session not heard of for that long is
    forgotten (its slot goes to the next one; it gets no more events)."""
    import time
    from helpers import online
    p = s2s_pair(server_factory, a_pep_extra="    max_remote_per_domain: 1\n"
                                             "    remote_resource_ttl: 2s\n")
    a, ajid = online(p.a, "alice", "r")
    b1, b1jid = online(p.b, "bob", "r1")
    b2, b2jid = online(p.b, "bob", "r2")
    s2s_both(a, b1)
    assert "type='result'" in publish(a, "p1", TUNE, tune("T1"), item_id="t1")
    feats = [TUNE + "+notify"]
    remote_caps(b1, feats)
    s2s_take(b1, event_rx(TUNE))
    time.sleep(2.5)  # the time limit itself: r1 was last heard of 2.5 s ago
    remote_second(a, b2, b2jid, feats)
    assert "T1" in s2s_take(b2, event_rx(TUNE))  # r2 took the slot: its last item
    assert "type='result'" in publish(a, "p2", TUNE, tune("T2"), item_id="t2")
    assert "T2" in s2s_take(b2, event_rx(TUNE))
    a.send(f"<message to='{b1jid}' id='mk'><body>mark</body></message>")
    s2s_take(b1, r"<message[^>]*id='mk'")
    assert "T2" not in b1.buf.decode(), b1.buf


@pytest.mark.slow
def test_pep_remote_sessions_forgotten_when_link_down(server_factory):
    """b.test goes down: the notification to bob's remembered session
    bounces (remote-server-not-found), and every b.test session alice's
    account remembered is forgotten, so bob's session after b.test is back
    takes the slot (max_remote_per_domain: 1)."""
    from helpers import online
    p = s2s_pair(server_factory, a_pep_extra="    max_remote_per_domain: 1\n")
    a, ajid = online(p.a, "alice", "r")
    b1, b1jid = online(p.b, "bob", "r1")
    s2s_both(a, b1)
    assert "type='result'" in publish(a, "p1", TUNE, tune("T1"), item_id="t1")
    feats = [TUNE + "+notify"]
    remote_caps(b1, feats)
    s2s_take(b1, event_rx(TUNE))
    p.b.stop()
    assert "type='result'" in publish(a, "p2", TUNE, tune("T2"), item_id="t2")
    # alice's own message to bob bounces after the notification's bounce.
    a.send(f"<message to='{b1jid}' id='mk' type='chat'><body>mark</body></message>")
    s2s_take(a, r"<message[^>]*id='mk'[^>]*type='error'|<message[^>]*type='error'[^>]*id='mk'",
             timeout=30)
    p.b.restart()
    b2, b2jid = online(p.b, "bob", "r2")
    q, cel = caps_query(feats, node="https://example.org/remote")
    b2.send(f"<presence>{cel}</presence>")
    assert "T2" in s2s_take(b2, event_rx(TUNE), timeout=30)  # the slot was free: last item

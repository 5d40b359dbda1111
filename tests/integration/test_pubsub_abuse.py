"""Abuse of pubsub, PEP, private storage and the message archive through
the wire: what an authenticated user (or a stranger) can make the server
do.  Each test asserts what a hardened server does (from an attacker
review; raw XML in the style of test_pep.py and test_pubsub.py, whose
helpers are reused).  Negative checks use barriers (helpers.py): a marker
message from the same sender, or a round trip."""
import re

from helpers import assert_nothing_before, iq, online, send_marker, take, take_iq, users
from xclient import login

import test_pubsub as P

PS = "http://jabber.org/protocol/pubsub"
PSO = PS + "#owner"


def count_items(r, item_id):
    return len(re.findall(rf"<item[^>]*id='{re.escape(item_id)}'", r))


def ids_request(n, prefix="i"):
    """<item id/> for n distinct ids: one past the bound is refused."""
    return "".join(f"<item id='{prefix}{i}'/>" for i in range(n))


# ---- repeated ids or elements: one request, the same payload many times ------------------------

PEP_MODULES = ("modules:\n"
               "  mod_roster: {}\n"
               "  mod_pep:\n"
               "    max_item_size: 8KiB\n")


def test_pep_items_by_repeated_id_not_amplified(server_factory):
    """Any user may read an open PEP node (OMEMO bundles are open).  Asking
    for the same item id N times must not make the server build (and send)
    N copies of the item: XEP-0060 6.5.8 returns the items asked for, each
    once.  mod_pep.c pp_items_get runs one SELECT per <item id/> and appends
    every row: with a 64 KiB stanza of <item id='k'/> (about 4,000 of them)
    and a 60 KiB item, one request makes the server build ~240 MB."""
    srv = server_factory(extra_yaml=PEP_MODULES, workers=1)
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice", "r")
    b, _ = online(srv, "bob", "r")
    blob = "<bundle xmlns='urn:x:bundle'>" + "A" * 3000 + "</bundle>"
    po = P.form("publish-options", access_model="open")
    r = take_iq(a, "p1", f"<pubsub xmlns='{PS}'><publish node='urn:x:bundle'>"
                         f"<item id='k'>{blob}</item></publish><publish-options>{po}"
                         f"</publish-options></pubsub>")
    assert "type='result'" in r, r
    many = "<item id='k'/>" * 100
    r = take_iq(b, "g1", f"<pubsub xmlns='{PS}'><items node='urn:x:bundle'>{many}</items>"
                         f"</pubsub>", typ="get", to="alice@localhost", timeout=20)
    assert "type='result'" in r, r[:300]
    n = count_items(r, "k")
    assert n == 1, f"the item came {n} times ({len(r)} bytes for a {len(many)}-byte request)"
    # At most 100 distinct ids (PSE_ITEM_IDS_MAX) in one request; more: policy-violation.
    r = take_iq(b, "g2", f"<pubsub xmlns='{PS}'><items node='urn:x:bundle'>{ids_request(100)}"
                         f"<item id='k'/></items></pubsub>", typ="get", to="alice@localhost")
    assert "<policy-violation " in r and "too many item ids" in r, r[:500]
    r = take_iq(b, "g3", f"<pubsub xmlns='{PS}'><items node='urn:x:bundle'>{ids_request(99)}"
                         f"<item id='k'/><item id='k'/></items></pubsub>", typ="get",
                to="alice@localhost")
    assert "type='result'" in r and count_items(r, "k") == 1, r[:500]


def test_pubsub_items_by_repeated_id_not_amplified(server_factory):
    """The same on the pubsub service: mod_pubsub.c ps_items, one SELECT and
    one copy per <item id/>."""
    srv = P.start(server_factory)
    a, _ = P.session(srv, "alice")
    b, _ = P.session(srv, "bob")
    P.ok(P.create(a, "c", "n"))
    P.ok(P.publish(a, "p", "n", "<x xmlns='urn:x'>" + "B" * 1500 + "</x>", item_id="k"))
    many = "<item id='k'/>" * 100
    r = P.ok(take_iq(b, "g", f"<pubsub xmlns='{PS}'><items node='n'>{many}</items></pubsub>",
                     typ="get", to=P.SVC, timeout=20))
    n = count_items(r, "k")
    assert n == 1, f"the item came {n} times ({len(r)} bytes for a {len(many)}-byte request)"
    r = take_iq(b, "g2", f"<pubsub xmlns='{PS}'><items node='n'>{ids_request(101)}</items>"
                         f"</pubsub>", typ="get", to=P.SVC)
    P.err(r, "policy-violation")
    assert "too many item ids" in r, r
    r = P.ok(take_iq(b, "g3", f"<pubsub xmlns='{PS}'><items node='n'>{ids_request(99)}"
                              f"<item id='k'/></items></pubsub>", typ="get", to=P.SVC))
    assert count_items(r, "k") == 1, r[:500]


def test_private_get_repeated_element_not_amplified(server_factory):
    """XEP-0049 get: each requested element once.  mod_private.c pv_get
    loads and appends the stored element once per child of the query, so
    a get of N identical children returns N copies of a max_size (64 KiB
    by default) element: ~4,000 x 64 KiB from one 64 KiB stanza."""
    srv = server_factory(extra_yaml="modules:\n  mod_private:\n    max_size: 4KiB\n")
    users(srv, "alice")
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    r = iq(a, "s1", "<query xmlns='jabber:iq:private'><big xmlns='urn:x:big'>"
                    + "C" * 3000 + "</big></query>")
    assert "type='result'" in r, r
    many = "<big xmlns='urn:x:big'/>" * 100
    r = iq(a, "g1", f"<query xmlns='jabber:iq:private'>{many}</query>", typ="get", timeout=20)
    copies = r.count("CCCCCCCCCC" * 300)
    assert "type='error'" in r or copies <= 1, f"{copies} copies of the stored element"


# ---- pubsub: per-account bounds ----------------------------------------------------------------

def test_pubsub_pending_requests_by_resource(server_factory):
    """An authorize node: each subscription request sends the owner an
    authorization form (XEP-0060 8.6).  The 'pending-subscription' check and
    max_subscriptions are per subscribed JID, and the subscriber picks the
    resource (ps_own_jid accepts any full JID of its own account), so one
    account makes any number of pending subscriptions and floods the owner
    with forms (and the table with rows).  A bounded server caps what one
    account holds on a node."""
    srv = P.start(server_factory, extra="    max_subscriptions: 2\n")
    a, _ = P.session(srv, "alice")
    b, _ = P.session(srv, "bob")
    P.ok(P.create(a, "c", "n", access_model="authorize"))
    accepted = 0
    for i in range(12):
        r = P.subscribe(b, f"s{i}", "n", f"bob@localhost/x{i}")
        accepted += "type='result'" in r
    b.roundtrip()
    marker = send_marker(b, "alice@localhost/r")
    seen, _ = a.before(marker, timeout=10)
    forms = len(re.findall(rb"subscribe_authorization", seen))
    assert accepted <= 2 and forms <= 2, \
        f"one account holds {accepted} pending subscriptions; the owner got {forms} forms"
    # One request per account waits for the owner: the others are pending-subscription.
    assert accepted == 1 and forms == 1, (accepted, forms)
    P.err(P.subscribe(b, "sb", "n", "bob@localhost"), "not-authorized")
    # max_subscriptions holds for the account, bare and full JIDs together.
    P.ok(P.create(a, "c2", "o"))
    P.ok(P.subscribe(b, "o1", "o", "bob@localhost"))
    P.ok(P.subscribe(b, "o2", "o", "bob@localhost/y0"))
    r = P.subscribe(b, "o3", "o", "bob@localhost/y1")
    P.err(r, "policy-violation")
    assert "too-many-subscriptions" in r, r


def test_pubsub_one_account_takes_every_node(server_factory):
    """max_nodes is the service's total (ps_create counted every node of
    the service): one account created them all and nobody else could
    create one.  max_nodes_per_user (default 100) is each account's share:
    alice tries to take all 110 nodes of the service, gets 100, and bob
    still creates one."""
    srv = server_factory(extra_yaml="modules:\n  mod_roster: {}\n  mod_pubsub:\n"
                                    "    max_nodes: 110\n")
    users(srv, "alice", "bob")
    a, _ = P.session(srv, "alice")
    b, _ = P.session(srv, "bob")
    made, refused = 0, ""
    for i in range(110):
        r = P.create(a, f"c{i}", f"n{i}")
        made += "type='result'" in r
        refused = refused or ("" if "type='result'" in r else r)
    r = P.create(b, "cb", "bobs")
    assert "type='result'" in r, f"alice made {made} nodes and bob cannot make one: {r}"
    assert made == 100, made
    P.err(refused, "resource-constraint")
    assert "max_nodes_per_user" in refused, refused



# ---- pubsub: per-node bound on subscriptions ------------------------------------------------------

NODE_FULL = "max_node_subscribers"


def node_subs(owner, node):
    """The owner's list of the node's subscriptions: [(jid, state)]."""
    r = P.ok(P.ps(owner, "ls", f"<subscriptions node='{node}'/>", typ="get", ns=PSO))
    return re.findall(r"<subscription [^>]*jid='([^']+)'[^>]*subscription='([^']+)'", r)


def test_pubsub_node_subscribers_bound_on_subscribe(server_factory):
    """max_subscriptions bounds one account's subscriptions to a node, not
    the node's: any number of accounts (local or over s2s) subscribing to
    an open node grew its pubsub_sub rows, and each publish's fan-out,
    without end.  With max_node_subscribers: 3 the fourth subscription is
    policy-violation + too-many-subscriptions whoever asks (another
    account, or a subscriber's second resource); an unsubscribe frees a
    place; the rows are the bound's count, so it holds after a restart."""
    srv = P.start(server_factory, extra="    max_node_subscribers: 3\n")
    users(srv, "erin", "frank")
    a, _ = P.session(srv, "alice")
    P.ok(P.create(a, "c", "n"))
    s = {u: P.session(srv, u)[0] for u in ("bob", "carol", "dave", "erin", "frank")}
    for u in ("bob", "carol", "dave"):
        P.ok(P.subscribe(s[u], "s", "n", f"{u}@localhost"))
    r = P.subscribe(s["erin"], "s", "n", "erin@localhost")
    P.err(r, "policy-violation", "too-many-subscriptions")
    assert NODE_FULL in r, r
    r = P.subscribe(s["bob"], "s2", "n", "bob@localhost/other")
    P.err(r, "policy-violation", "too-many-subscriptions")
    assert sorted(j for j, _ in node_subs(a, "n")) == [
        "bob@localhost", "carol@localhost", "dave@localhost"]
    # Another node has room of its own.
    P.ok(P.create(a, "c2", "m"))
    P.ok(P.subscribe(s["erin"], "sm", "m", "erin@localhost"))
    # An unsubscribe frees a place.
    P.ok(P.ps(s["dave"], "u", "<unsubscribe node='n' jid='dave@localhost'/>"))
    P.ok(P.subscribe(s["erin"], "s3", "n", "erin@localhost"))
    P.err(P.subscribe(s["frank"], "s", "n", "frank@localhost"), "policy-violation",
          "too-many-subscriptions")
    # The bound counts the stored subscriptions: it holds after a restart.
    a.close()
    for c in s.values():
        c.close()
    assert srv.stop() == 0
    srv.restart()
    f, _ = P.session(srv, "frank")
    r = P.subscribe(f, "s", "n", "frank@localhost")
    P.err(r, "policy-violation", "too-many-subscriptions")
    assert NODE_FULL in r, r
    d, _ = P.session(srv, "dave")
    P.err(P.subscribe(d, "s", "n", "dave@localhost"), "policy-violation",
          "too-many-subscriptions")
    e, _ = P.session(srv, "erin")
    P.ok(P.ps(e, "u", "<unsubscribe node='n' jid='erin@localhost'/>"))
    P.ok(P.subscribe(f, "s2", "n", "frank@localhost"))
    a, _ = P.session(srv, "alice")
    assert sorted(j for j, _ in node_subs(a, "n")) == [
        "bob@localhost", "carol@localhost", "frank@localhost"]


def test_pubsub_node_subscribers_bound_on_owner_set(server_factory):
    """The owner's subscriptions set (XEP-0060 8.8.2) makes a subscription
    for any JID it names: one request of a few thousand entries (or many
    requests) made that many rows.  With max_node_subscribers: 3 a new
    subscription past the bound is refused like any invalid entry
    (8.8.2.4): the other entries are made, the refused ones come back in
    the not-acceptable error as they are (subscription='none'); changing
    or removing existing ones still works, and a removal earlier in the
    same request makes room for a later entry."""
    srv = P.start(server_factory, extra="    max_node_subscribers: 3\n")
    a, _ = P.session(srv, "alice")
    b, _ = P.session(srv, "bob")
    P.ok(P.create(a, "c", "n"))
    P.ok(P.subscribe(b, "s", "n", "bob@localhost"))

    def owner_set(iid, *entries):
        body = "".join(f"<subscription jid='{j}' subscription='{v}'/>" for j, v in entries)
        return P.ps(a, iid, f"<subscriptions node='n'>{body}</subscriptions>", ns=PSO)

    many = [(f"u{i}@localhost", "subscribed") for i in range(20)]
    r = P.err(owner_set("m1", ("carol@localhost", "subscribed"), *many), "not-acceptable")
    assert NODE_FULL in r, r
    back = re.search(rf"<pubsub xmlns='{re.escape(PSO)}'>\s*<subscriptions node='n'>(.*?)"
                     r"</subscriptions>\s*</pubsub>", r)
    assert back, r
    got = re.findall(r"<subscription [^>]*/>", back.group(1))
    assert got == [f"<subscription jid='u{i}@localhost' subscription='none'/>"
                   for i in range(1, 20)], r
    assert sorted(node_subs(a, "n")) == [("bob@localhost", "subscribed"),
                                         ("carol@localhost", "subscribed"),
                                         ("u0@localhost", "subscribed")]
    # Full: a change of an existing subscription is made, a new one is not.
    r = P.err(owner_set("m2", ("carol@localhost", "pending"), ("dave@localhost", "subscribed")),
              "not-acceptable")
    assert "jid='dave@localhost' subscription='none'" in r and NODE_FULL in r, r
    assert ("carol@localhost", "pending") in node_subs(a, "n")
    P.err(P.subscribe(b, "s2", "n", "bob@localhost/x"), "policy-violation",
          "too-many-subscriptions")
    # A removal makes room, in the same request for the entry after it.
    P.ok(owner_set("m3", ("u0@localhost", "none"), ("dave@localhost", "subscribed")))
    assert sorted(j for j, _ in node_subs(a, "n")) == [
        "bob@localhost", "carol@localhost", "dave@localhost"]
    # After an unsubscribe the owner may make one again.
    P.ok(P.ps(b, "u", "<unsubscribe node='n' jid='bob@localhost'/>"))
    P.err(owner_set("m4", ("erin@localhost", "subscribed"), ("frank@localhost", "subscribed")),
          "not-acceptable")
    assert sorted(j for j, _ in node_subs(a, "n")) == [
        "carol@localhost", "dave@localhost", "erin@localhost"]

# ---- node meta-data -------------------------------------------------------------------------------

def test_pubsub_node_metadata_closed_to_strangers(server_factory):
    """disco#info on a node (meta-data, XEP-0060 5.4) answers anyone with
    the node's whole configuration form, pubsub#roster_groups_allowed
    included: the names of the owner's roster groups (private roster data,
    RFC 6121) reach a stranger who is in none of them, for a roster or a
    whitelist node that disco#items hides from the same stranger
    (mod_pubsub.c ps_disco: no ps_access for info)."""
    srv = P.start(server_factory)
    a, _ = P.session(srv, "alice")
    b, _ = P.session(srv, "bob")
    P.ok(P.create(a, "c1", "fr", access_model="roster",
                  roster_groups_allowed=["Secret Lovers"]))
    P.ok(P.create(a, "c2", "wl", access_model="whitelist", title="Quiet Plans"))
    items = P.ok(take_iq(b, "di", f"<query xmlns='{P.DIT}'/>", typ="get", to=P.SVC))
    assert "node='wl'" not in items, items
    r1 = take_iq(b, "i1", f"<query xmlns='{P.DI}' node='fr'/>", typ="get", to=P.SVC)
    r2 = take_iq(b, "i2", f"<query xmlns='{P.DI}' node='wl'/>", typ="get", to=P.SVC)
    leaked = [x for x, r in (("Secret Lovers", r1), ("Quiet Plans", r2)) if x in r]
    assert not leaked, f"a stranger read {leaked} from the nodes' meta-data: {r1} {r2}"
    # What the stranger gets: a whitelist node does not exist (as in disco#items), the
    # roster node shows its access model only.
    P.err(r2, "item-not-found")
    P.ok(r1)
    assert "var='pubsub#access_model'" in r1 and "pubsub#owner" not in r1, r1
    # The owner reads the whole meta-data, roster groups included.
    r = P.ok(take_iq(a, "i3", f"<query xmlns='{P.DI}' node='fr'/>", typ="get", to=P.SVC))
    assert "Secret Lovers" in r and "alice@localhost" in r, r
    # A reader of an open node sees its meta-data but not the roster groups kept in its
    # configuration, neither in disco#info nor in a configuration notification.
    P.ok(P.create(a, "c3", "op", roster_groups_allowed=["Hidden Group"]))
    r = P.ok(take_iq(b, "i4", f"<query xmlns='{P.DI}' node='op'/>", typ="get", to=P.SVC))
    assert "alice@localhost" in r and "Hidden Group" not in r, r
    P.ok(P.subscribe(b, "s1", "op", "bob@localhost"))
    P.ok(P.ps(a, "cf", f"<configure node='op'>{P.form('node_config', title='Renamed')}"
                       f"</configure>", ns=PSO))
    got = take(b, P.event_rx("op", "configuration"))
    assert "Renamed" in got and "Hidden Group" not in got, got


# ---- PEP: the caps cache -------------------------------------------------------------------------

def test_pep_caps_cache_flush_by_one_account(server_factory):
    """The caps cache (caps_cache_size) evicts any entry when full, and a
    publish only notifies sessions whose caps ver is in the cache
    (mod_pep.c pp_fan_wants_ver: unknown -> no notification, nothing asked).
    One account that logs in with fresh caps vers (each a correct answer to
    the server's disco#info) flushes everyone else's entries, and their
    contacts then get no PEP notifications until they send a new presence.
    XEP-0163 4.3.2 / XEP-0115 6.2: a contact whose +notify the server
    cannot tell must still get the notification (asked again, or its
    entry kept while it is online)."""
    import test_pep as E
    srv = server_factory(extra_yaml=E.MODULES + "    caps_cache_size: 2\n", workers=1)
    users(srv, "alice", "bob", "carol")
    a, ajid = E.session(srv, "alice", "r")
    c0, cjid = E.session(srv, "carol", "setup")
    E.subscribe(c0, cjid, a, ajid)
    c0.close()
    c, _ = E.session(srv, "carol", "c", features=[E.TUNE, E.TUNE + "+notify"])
    assert "type='result'" in E.publish(a, "p0", E.TUNE, E.tune("Before"))
    assert "Before" in take(c, E.event_rx(E.TUNE))
    # bob, no contact of anyone, logs in ten times with caps of his own.
    for i in range(10):
        E.session(srv, "bob", f"b{i}", features=[f"urn:x:flush:{i}"])
    assert "type='result'" in E.publish(a, "p1", E.TUNE, E.tune("After"))
    marker = E.pep_marker(a, "carol@localhost/c")
    seen, _ = c.before(marker, timeout=10)
    assert b"After" in seen, "carol got no notification after bob's logins flushed the caps cache"


def test_pep_caps_pinned_per_account_bound(server_factory):
    """What one account pins is bounded (caps_pinned_per_account): with 2,
    bob's third and fourth sessions (caps of their own) are cached
    unpinned, so the fourth's evicts the third's from a cache of one
    (caps_cache_size), and that session gets no notification while its
    first two, pinned, and the fourth get theirs."""
    import test_pep as E
    srv = server_factory(extra_yaml=E.MODULES + "    caps_cache_size: 1\n"
                                                "    caps_pinned_per_account: 2\n", workers=1)
    users(srv, "alice", "bob")
    a, ajid = E.session(srv, "alice", "r")
    b0, bjid = E.session(srv, "bob", "setup")
    E.subscribe(b0, bjid, a, ajid)
    b0.close()
    bs = [E.session(srv, "bob", f"b{i}", features=[E.TUNE, E.TUNE + "+notify", f"urn:x:{i}"])[0]
          for i in range(4)]
    assert "type='result'" in E.publish(a, "p1", E.TUNE, E.tune("Bound"))
    got = []
    for i, c in enumerate(bs):
        marker = E.pep_marker(a, f"bob@localhost/b{i}")
        seen, _ = c.before(marker, timeout=10)
        got.append(b"Bound" in seen)
    assert got == [True, True, False, True], got


# ---- covered surface (these pass; kept so that they stay so) ----------------------------------

def test_pubsub_access_control_covered(server_factory):
    """Covered surface (passes): a stranger neither retracts another's item,
    nor configures, purges, deletes or reads the affiliations of a node it
    does not own, nor reads a whitelist node; an owner cannot take the
    creator's ownership away."""
    srv = P.start(server_factory)
    a, _ = P.session(srv, "alice")
    b, _ = P.session(srv, "bob")
    P.ok(P.create(a, "c", "n", publish_model="open"))
    P.ok(P.publish(a, "p", "n", item_id="mine"))
    P.err(P.ps(b, "r", "<retract node='n'><item id='mine'/></retract>"), "forbidden")
    P.err(P.ps(b, "cf", "<configure node='n'/>", typ="get", ns=PSO), "forbidden")
    P.err(P.ps(b, "pu", "<purge node='n'/>", ns=PSO), "forbidden")
    P.err(P.ps(b, "de", "<delete node='n'/>", ns=PSO), "forbidden")
    P.err(P.ps(b, "af", "<affiliations node='n'/>", typ="get", ns=PSO), "forbidden")
    P.err(P.ps(b, "af2", "<affiliations node='n'><affiliation jid='bob@localhost' "
                         "affiliation='owner'/></affiliations>", ns=PSO), "forbidden")
    P.ok(P.create(a, "c2", "w", access_model="whitelist"))
    P.ok(P.publish(a, "p2", "w", "<x xmlns='urn:x'>secret</x>"))
    r = P.items(b, "i", "w")
    assert "secret" not in r and "type='error'" in r, r
    P.ok(P.ps(a, "af3", "<affiliations node='n'><affiliation jid='bob@localhost' "
                        "affiliation='owner'/></affiliations>", ns=PSO))
    P.err(P.ps(b, "af4", "<affiliations node='n'><affiliation jid='alice@localhost' "
                         "affiliation='outcast'/></affiliations>", ns=PSO), "not-acceptable")


def test_pep_presence_and_whitelist_nodes_closed_to_strangers(server_factory):
    """Covered surface (passes): a stranger (no subscription) reads neither
    a presence-access nor a whitelist PEP node, by items or by disco, and
    gets no notification of a publish there."""
    srv = server_factory(extra_yaml=PEP_MODULES, workers=1)
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice", "r")
    b, bjid = online(srv, "bob", "r")
    for node, am in (("urn:x:pres", "presence"), ("urn:x:white", "whitelist")):
        po = P.form("publish-options", access_model=am)
        r = take_iq(a, f"p-{am}", f"<pubsub xmlns='{PS}'><publish node='{node}'><item id='i'>"
                                  f"<s xmlns='{node}'>secret-{am}</s></item></publish>"
                                  f"<publish-options>{po}</publish-options></pubsub>")
        assert "type='result'" in r, r
        r = take_iq(b, f"g-{am}", f"<pubsub xmlns='{PS}'><items node='{node}'/></pubsub>",
                    typ="get", to="alice@localhost")
        assert "secret" not in r and "type='error'" in r, r
        r = take_iq(b, f"g2-{am}", f"<pubsub xmlns='{PS}'><items node='{node}'><item id='i'/>"
                                   f"</items></pubsub>", typ="get", to="alice@localhost")
        assert "secret" not in r and "type='error'" in r, r
    r = take_iq(b, "di", "<query xmlns='http://jabber.org/protocol/disco#items'/>", typ="get",
                to="alice@localhost")
    assert "urn:x:pres" not in r and "urn:x:white" not in r, r
    assert_nothing_before(b, r"secret-", after=a)


def test_pubsub_pep_odd_inputs_answered(server_factory):
    """Covered surface (passes): node configuration numbers negative, zero,
    past the limit or past 2^63; items max_items zero, negative, garbage,
    huge; subscribing another account; subscription options and
    affiliations with garbage; PEP publishes without or with two payloads,
    node names and item ids past their limits: each a clean error or a
    bounded answer, and the services keep answering."""
    srv = P.start(server_factory, extra="  mod_pep: {}\n")
    a, _ = P.session(srv, "alice")
    b, _ = P.session(srv, "bob")
    P.ok(P.create(a, "c", "n"))
    P.ok(P.publish(a, "p", "n", item_id="i"))
    for i, (k, v) in enumerate((("max_items", "0"), ("max_items", "-1"),
                                ("max_items", "99999999999999999999"), ("max_items", ""),
                                ("item_expire", "-1"), ("item_expire", "1.5"),
                                ("access_model", "everyone"), ("send_last_published_item", ""),
                                ("notification_type", "chat"), ("title", "T" * 5000))):
        r = P.ps(a, f"cf{i}", f"<configure node='n'>{P.form('node_config', **{k: v})}"
                              f"</configure>", ns=PSO)
        assert "type='error'" in r, (k, v, r)
    r = P.ps(a, "cfx", f"<configure node='n'>{P.form('node_config', item_expire='9' * 19)}"
                       f"</configure>", ns=PSO)
    assert "type='result'" in r or "type='error'" in r, r
    P.ok(P.publish(a, "p2", "n", item_id="j"))
    for i, mi in enumerate(("0", "-1", "abc", "", "99999999999999999999")):
        r = P.items(b, f"it{i}", "n", extra=f" max_items='{mi}'")
        assert "type='error'" in r or "type='result'" in r, (mi, r)
    P.err(P.subscribe(b, "s1", "n", "alice@localhost"), "bad-request", "invalid-jid")
    P.err(P.subscribe(b, "s2", "n", "@@"), "bad-request", "invalid-jid")
    r = P.subscribe(b, "s3", "n", "bob@localhost", options={"deliver": "maybe"})
    assert "type='error'" in r, r
    P.err(P.ps(a, "af", "<affiliations node='n'><affiliation jid='@@' affiliation='member'/>"
                        "</affiliations>", ns=PSO), "bad-request")
    P.err(P.ps(a, "af2", "<affiliations node='n'><affiliation jid='x@localhost' "
                         "affiliation='god'/></affiliations>", ns=PSO), "not-acceptable")
    # PEP on alice's own account.
    for i, body in enumerate(("<publish node='t'><item/></publish>",
                              "<publish node='t'><item><a xmlns='u'/><b xmlns='u'/></item>"
                              "</publish>",
                              f"<publish node='{'n' * 3000}'><item><a xmlns='u'/></item>"
                              f"</publish>",
                              f"<publish node='t'><item id='{'i' * 3000}'><a xmlns='u'/>"
                              f"</item></publish>",
                              "<publish><item><a xmlns='u'/></item></publish>",
                              "<retract node='t'/>", "<items/>")):
        r = take_iq(a, f"pep{i}", f"<pubsub xmlns='{PS}'>{body}</pubsub>",
                    typ="get" if body == "<items/>" else "set", to="alice@localhost")
        assert "type='error'" in r, (body[:80], r)
    r = P.ok(P.ps(b, "alive", "<items node='n'/>", typ="get"))
    assert "id='j'" in r, r


MAM_MODULES = ("modules:\n  mod_roster: {}\n  mod_stanza_id: {}\n  mod_mam:\n"
               "    default: always\n")


def test_mam_rsm_and_form_edges(server_factory):
    """Covered surface (passes): RSM <max/> negative, not a number, or past
    2^63; an ids list longer than a page; a cursor id of 10 KB; a full-text
    search longer than the limit; a queryid of 10 KB: each a clean error or
    a bounded page, never a crash."""
    srv = server_factory(extra_yaml=MAM_MODULES)
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice", "r")
    for i in range(3):
        a.send(f"<message to='bob@localhost' type='chat' id='m{i}'><body>hi {i}</body></message>")
    a.roundtrip()
    MAM = "urn:xmpp:mam:2"

    def query(qid, rsm="", fields="", attrs=""):
        x = (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
             f"<value>{MAM}</value></field>{fields}</x>") if fields else ""
        s = f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set>" if rsm else ""
        return iq(a, qid, f"<query xmlns='{MAM}'{attrs}>{x}{s}</query>", timeout=20)

    assert "<bad-request " in query("q1", "<max>-1</max>")
    assert "<bad-request " in query("q2", "<max>ten</max>")
    assert "<bad-request " in query("q3", "<max></max>")
    r = query("q4", "<max>99999999999999999999999</max>")
    assert "type='result'" in r or "<bad-request " in r, r
    ids = "<field var='ids'>" + "".join(f"<value>x{i}</value>" for i in range(2000)) + "</field>"
    r = query("q5", fields=ids)
    assert "type='error'" in r, r[:300]
    r = query("q6", f"<after>{'z' * 10000}</after>")
    assert "<item-not-found " in r, r[:300]
    r = query("q7", attrs=f" queryid='{'q' * 10000}'")
    assert "<not-acceptable " in r, r[:300]
    r = query("q8", fields="<field var='start'><value>9999-99-99T99:99:99Z</value></field>")
    assert "<bad-request " in r, r[:300]

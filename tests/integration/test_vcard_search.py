"""mod_vcard's user directory (XEP-0055, jabber:iq:search on vjud.HOST) over
the wire: the search form, legacy and form searches, prefix and
case-insensitive matches, the directory following vCard changes, accounts
stored before it was on, limits and who may search."""
import os
import re
import sqlite3

from helpers import iq, online, users

NS = "jabber:iq:search"
XD = "jabber:x:data"

CONF = "modules:\n  mod_vcard:\n    search: true\n"


def set_vcard(c, iid, body):
    r = iq(c, iid, f"<vCard xmlns='vcard-temp'>{body}</vCard>")
    assert "type='result'" in r, r


def form_search(c, iid, **fields):
    f = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items())
    return iq(c, iid, f"<query xmlns='{NS}'><x xmlns='{XD}' type='submit'>"
              f"<field var='FORM_TYPE' type='hidden'><value>{NS}</value></field>{f}</x></query>",
              to="vjud.localhost")


def jids(r):
    return sorted(re.findall(r"<field var='jid'><value>([^<]+)</value>", r)
                  + re.findall(r"<item jid='([^']+)'", r))


def test_directory_searches(server_factory):
    srv = server_factory(extra_yaml=CONF)
    users(srv, "alice", "bob", "carol", "dan")
    a, _ = online(srv, "alice", "r")
    b, _ = online(srv, "bob", "r")
    c, _ = online(srv, "carol", "r")
    set_vcard(a, "v1", "<FN>Alice Ångström</FN><N><FAMILY>Ångström</FAMILY><GIVEN>Alice</GIVEN>"
                       "</N><NICKNAME>ali</NICKNAME><EMAIL><USERID>alice@example.org</USERID>"
                       "</EMAIL><ADR><LOCALITY>Uppsala</LOCALITY><CTRY>Sweden</CTRY></ADR>")
    set_vcard(b, "v2", "<FN>Bob Builder</FN><N><FAMILY>Builder</FAMILY><GIVEN>Bob</GIVEN></N>"
                       "<ORG><ORGNAME>Acme</ORGNAME></ORG>")
    set_vcard(c, "v3", "<FN>Carol Ångqvist</FN><N><FAMILY>Ångqvist</FAMILY></N>")
    # dan has no vCard: not in the directory
    r = iq(a, "d", "<query xmlns='http://jabber.org/protocol/disco#items'/>", typ="get",
           to="localhost")
    assert "jid='vjud.localhost'" in r, r
    r = iq(a, "g", f"<query xmlns='{NS}'/>", typ="get", to="vjud.localhost")
    assert "<first/>" in r and "<last/>" in r and f"<x xmlns='{XD}' type='form'>" in r, r
    assert "var='orgname'" in r and "var='user'" in r, r
    # form: case-folded (Unicode) exact and prefix matches, fields ANDed
    r = form_search(a, "s1", last="ångström")
    assert jids(r) == ["alice@localhost"], r
    assert "<value>Ångström</value>" in r and "<reported>" in r, r
    r = form_search(a, "s2", last="ÅNG*")
    assert jids(r) == ["alice@localhost", "carol@localhost"], r
    r = form_search(a, "s3", last="Ång*", first="alice")
    assert jids(r) == ["alice@localhost"], r
    r = form_search(a, "s4", ctry="sweden", locality="uppsala", email="alice@example.org")
    assert jids(r) == ["alice@localhost"], r
    r = form_search(a, "s5", user="b*")
    assert jids(r) == ["bob@localhost"], r
    r = form_search(a, "s6", orgname="%")  # LIKE's wildcards are plain characters
    assert jids(r) == [], r
    r = form_search(a, "s7", fn="_ob*")
    assert jids(r) == [], r
    # legacy fields: legacy items
    r = iq(a, "l1", f"<query xmlns='{NS}'><nick>ali</nick></query>", to="vjud.localhost")
    assert re.search(r"<item jid='alice@localhost'><first>Alice</first><last>Ångström</last>"
                     r"<nick>ali</nick><email>alice@example.org</email></item>", r), r
    # the directory follows the vCard: changed, then emptied
    set_vcard(b, "v4", "<FN>Robert Builder</FN><N><GIVEN>Robert</GIVEN></N>")
    assert jids(form_search(a, "s8", first="bob")) == []
    assert jids(form_search(a, "s9", first="robert")) == ["bob@localhost"]
    set_vcard(b, "v5", "")
    assert jids(form_search(a, "s10", user="bob")) == []
    # nothing filled in: refused (allow_return_all is off), and a lone *
    # (which would match anything) is nothing filled in
    r = form_search(a, "s11")
    assert "type='error'" in r and "<not-acceptable" in r, r
    r = form_search(a, "s12", fn="*")
    assert "type='error'" in r and "<not-acceptable" in r, r
    r = iq(a, "l2", f"<query xmlns='{NS}'><last>*</last></query>", to="vjud.localhost")
    assert "type='error'" in r and "<not-acceptable" in r, r
    # a value longer than what is kept, cut inside a two-byte character:
    # the vCard is stored and the account found by the value's beginning
    set_vcard(c, "v6", "<FN>" + "x" * 719 + "é" * 10 + "</FN>")
    r = form_search(a, "s13", fn="xxx*")
    assert jids(r) == ["carol@localhost"], r


def test_directory_limits_and_access(server_factory, tmp_path):
    srv = server_factory(extra_yaml="modules:\n  mod_vcard:\n    search: true\n    matches: 2\n"
                                    "    allow_return_all: true\n")
    names = ["u1", "u2", "u3"]
    users(srv, *names)
    for n in names:
        c, _ = online(srv, n, "r")
        set_vcard(c, "v", f"<FN>User {n}</FN>")
    c, _ = online(srv, "u1", "s")
    r = form_search(c, "all")
    assert jids(r) == ["u1@localhost", "u2@localhost"], r  # matches: 2, by username
    # a rule that allows nobody
    srv2 = server_factory(extra_yaml=CONF + "    search_access: none\n")
    users(srv2, "eve")
    e, _ = online(srv2, "eve", "r")
    r = iq(e, "x", f"<query xmlns='{NS}'/>", typ="get", to="vjud.localhost")
    assert "type='error'" in r and "<forbidden" in r, r


def test_vcards_stored_before_the_directory_are_found(server_factory):
    srv = server_factory(extra_yaml=CONF.replace("true", "false"))  # search off
    users(srv, "old")
    o, _ = online(srv, "old", "r")
    set_vcard(o, "v", "<FN>Old Timer</FN><NICKNAME>oldie</NICKNAME>")
    o.close()
    assert srv.stop() == 0
    # as a database from before the directory (schema 2) has it: a vCard
    # and no directory row
    db = sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db"))
    assert db.execute("DELETE FROM vcard_search").rowcount == 1
    db.commit()
    db.close()
    with open(srv.config_path) as f:  # the directory turned on
        text = f.read()
    with open(srv.config_path, "w") as f:
        f.write(text.replace("search: false", "search: true"))
    srv.restart()
    users(srv, "newcomer")
    n, _ = online(srv, "newcomer", "r")
    r = form_search(n, "s", nick="oldie")
    assert jids(r) == ["old@localhost"], r
    assert 'event="user directory filled" host=localhost added=1' in srv.log_text()


def test_service_domain_answers(server_factory):
    """What every service domain answers alike (xd_service_answer_common):
    a ping, an empty disco#items, service-unavailable to a message and to
    an IQ for a JID at the domain, nothing for a presence."""
    srv = server_factory(extra_yaml=CONF)
    users(srv, "zed")
    z, _ = online(srv, "zed", "r")
    r = iq(z, "p", "<ping xmlns='urn:xmpp:ping'/>", typ="get", to="vjud.localhost")
    assert "type='result'" in r, r
    r = iq(z, "i", "<query xmlns='http://jabber.org/protocol/disco#items'/>", typ="get",
           to="vjud.localhost")
    assert "type='result'" in r and "<item" not in r, r
    r = iq(z, "u", f"<query xmlns='{NS}'/>", typ="get", to="someone@vjud.localhost")
    assert "<service-unavailable" in r, r
    z.send("<presence to='vjud.localhost'/>")
    z.send("<message to='vjud.localhost' id='m1'><body>hi</body></message>")
    err = z.recv_until(r"<message[^>]*id=['\"]m1['\"].*?</message>").group(0).decode()
    assert "type='error'" in err.replace('"', "'") and "service-unavailable" in err, err

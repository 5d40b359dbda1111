"""Entity capabilities of the server (XEP-0115): the <c/> stream feature
after authentication carries a 'ver' that this test recomputes from the
server's disco#info with its own implementation of XEP-0115 5.1; disco#info
to node#ver answers the same; other nodes are item-not-found; the ver
follows the modules that run."""
import base64
import hashlib
import re
import xml.etree.ElementTree as ET

from helpers import users
from xclient import login

DI = "http://jabber.org/protocol/disco#info"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def ver_of(query):
    """XEP-0115 5.1, written from the spec for this test."""
    ids = sorted((i.get("category", ""), i.get("type", ""), i.get(XML_LANG, ""),
                  i.get("name", "")) for i in query.findall(f"{{{DI}}}identity"))
    s = "".join("/".join(i) + "<" for i in ids)
    # sorted as they are, then each with its '<' ("a/tune" before "a/tune+notify")
    s += "".join(v + "<" for v in sorted(f.get("var") for f in query.findall(f"{{{DI}}}feature")))
    forms = []
    for x in query.findall("{jabber:x:data}x"):
        fields = {}
        for f in x.findall("{jabber:x:data}field"):
            fields[f.get("var")] = sorted(v.text or "" for v in f.findall("{jabber:x:data}value"))
        ft = fields.pop("FORM_TYPE")[0]
        forms.append((ft, "".join(k + "<" + "".join(v + "<" for v in fields[k])
                                  for k in sorted(fields))))
    s += "".join(ft + "<" + rest for ft, rest in sorted(forms))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


def disco(c, iq_id, node=None):
    n = f" node='{node}'" if node else ""
    c.send(f"<iq type='get' id='{iq_id}' to='localhost'><query xmlns='{DI}'{n}/></iq>")
    return c.recv_until(r"<iq[^>]*id=['\"]" + iq_id + r"['\"].*?</iq>").group(0).decode()


def caps_of(features):
    m = re.search(r"<c [^>]*xmlns=['\"]http://jabber.org/protocol/caps['\"][^>]*/>", features)
    assert m, features
    attrs = dict(re.findall(r"(\w+)=['\"]([^'\"]*)['\"]", m.group(0)))
    return attrs


def check(server, user):
    c, _ = login(server.c2s_port, user, "pw")
    caps = caps_of(c.features)
    assert caps["hash"] == "sha-1" and caps["node"], caps
    reply = disco(c, "d1")
    q = ET.fromstring(reply).find(f"{{{DI}}}query")
    assert f"<feature var='http://jabber.org/protocol/caps'/>" in reply.replace('"', "'")
    assert ver_of(q) == caps["ver"], (reply, caps)
    node = caps["node"] + "#" + caps["ver"]
    again = disco(c, "d2", node)
    assert "type='result'" in again.replace('"', "'") and f"node='{node}'" in \
        again.replace('"', "'"), again
    q2 = ET.fromstring(again).find(f"{{{DI}}}query")
    assert ver_of(q2) == caps["ver"]
    bad = disco(c, "d3", caps["node"] + "#AAAA")
    assert "item-not-found" in bad, bad
    c.close()
    return caps["ver"]


def test_server_caps_match_disco(server_factory):
    srv = server_factory(extra_yaml="modules:\n  mod_roster: {}\n")
    users(srv, "alice")
    v1 = check(srv, "alice")
    srv.stop()
    # Other modules, other features, other ver; an XEP-0128 form too.
    srv2 = server_factory(extra_yaml="modules:\n  mod_roster: {}\n  mod_vcard: {}\n"
                          "  mod_stanza_id: {}\n  mod_disco:\n    server_info:\n"
                          "      - name: admin-addresses\n"
                          "        urls: ['xmpp:b@localhost', 'mailto:a@localhost']\n")
    users(srv2, "alice")
    v2 = check(srv2, "alice")
    assert v1 != v2

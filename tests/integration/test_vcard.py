"""mod_vcard (XEP-0054 vcard-temp) through the wire: one's own vCard, another
account's, the errors the XEP names, the size limit, the server's vCard from
module options, and persistence across a restart."""
import re

from helpers import reply, users
from xclient import login

MAX = 2048
MODULES = (
    "modules:\n"
    "  mod_vcard:\n"
    f"    max_size: {MAX}\n"
    "    vcard:\n"
    "      FN: Example Server\n"
    "      URL: \"https://example.org/\"\n"
    "      ADR:\n"
    "        LOCALITY: Paris\n"
)


def start(server_factory):
    srv = server_factory(extra_yaml=MODULES)
    users(srv, "alice", "bob")
    return srv


CARD = ("<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><NICKNAME>al</NICKNAME>"
        "<ORG><ORGNAME>Wonderland &amp; Co</ORGNAME></ORG></vCard>")


def test_own_vcard_empty_then_set_then_get(server_factory):
    srv = start(server_factory)
    a, ajid = login(srv.c2s_port, "alice", "pw", resource="r")
    # XEP-0054 3.1: no vCard yet → an empty <vCard/> for the owner.
    a.send("<iq type='get' id='g0'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(a, "g0")
    assert "type='result'" in r, r
    assert re.search(r"<vCard xmlns='vcard-temp'\s*/>|<vCard xmlns='vcard-temp'></vCard>", r), r
    a.send(f"<iq type='set' id='s1'>{CARD}</iq>")
    r = reply(a, "s1")
    assert "type='result'" in r, r
    # Get without 'to' and with 'to' = own bare JID.
    a.send("<iq type='get' id='g1'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(a, "g1")
    assert "<FN>Alice Liddell</FN>" in r and "<NICKNAME>al</NICKNAME>" in r, r
    assert "<ORGNAME>Wonderland &amp; Co</ORGNAME>" in r, r
    a.send("<iq type='get' id='g2' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(a, "g2")
    assert "type='result'" in r and "<FN>Alice Liddell</FN>" in r, r
    # A second set replaces the whole vCard (no partial update, XEP-0054 3.2).
    a.send("<iq type='set' id='s2'><vCard xmlns='vcard-temp'><FN>Alice L.</FN></vCard></iq>")
    assert "type='result'" in reply(a, "s2")
    a.send("<iq type='get' id='g3'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(a, "g3")
    assert "<FN>Alice L.</FN>" in r and "NICKNAME" not in r, r


def test_another_users_vcard_and_errors(server_factory):
    srv = start(server_factory)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    b, _ = login(srv.c2s_port, "bob", "pw", resource="r")
    # Bob has no vCard: service-unavailable, as for an account that does not exist.
    a.send("<iq type='get' id='o1' to='bob@localhost'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(a, "o1")
    assert "type='error'" in r and "service-unavailable" in r, r
    a.send("<iq type='get' id='o2' to='nobody@localhost'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(a, "o2")
    assert "type='error'" in r and "service-unavailable" in r, r
    b.send("<iq type='set' id='b1'><vCard xmlns='vcard-temp'><FN>Bob</FN></vCard></iq>")
    assert "type='result'" in reply(b, "b1")
    a.send("<iq type='get' id='o3' to='bob@localhost'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(a, "o3")
    assert "type='result'" in r and "from='bob@localhost'" in r and "<FN>Bob</FN>" in r, r
    # Setting another account's vCard: forbidden, and Bob's stays as it was.
    a.send("<iq type='set' id='o4' to='bob@localhost'>"
           "<vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard></iq>")
    r = reply(a, "o4")
    assert "type='error'" in r and "<forbidden" in r, r
    b.send("<iq type='get' id='b2'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(b, "b2")
    assert "<FN>Bob</FN>" in r and "Mallory" not in r, r


def test_size_limit(server_factory):
    srv = start(server_factory)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    a.send(f"<iq type='set' id='ok'><vCard xmlns='vcard-temp'><FN>{'x' * 100}</FN></vCard></iq>")
    assert "type='result'" in reply(a, "ok")
    big = "y" * (MAX + 1)
    a.send(f"<iq type='set' id='big'><vCard xmlns='vcard-temp'><DESC>{big}</DESC></vCard></iq>")
    r = reply(a, "big")
    assert "type='error'" in r and "not-acceptable" in r, r
    # The refused vCard did not replace the stored one.
    a.send("<iq type='get' id='g'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(a, "g")
    assert "x" * 100 in r and "DESC" not in r, r


def test_persists_across_restart(server_factory):
    srv = start(server_factory)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    a.send(f"<iq type='set' id='s'>{CARD}</iq>")
    assert "type='result'" in reply(a, "s")
    a.close()
    assert srv.stop() == 0
    srv.restart()
    b, _ = login(srv.c2s_port, "bob", "pw", resource="r")
    b.send("<iq type='get' id='g' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(b, "g")
    assert "type='result'" in r and "<FN>Alice Liddell</FN>" in r, r


def test_server_vcard_from_options(server_factory):
    srv = start(server_factory)
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    a.send("<iq type='get' id='h1' to='localhost'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(a, "h1")
    assert "type='result'" in r and "from='localhost'" in r, r
    assert "<FN>Example Server</FN>" in r and "<URL>https://example.org/</URL>" in r, r
    assert re.search(r"<ADR><LOCALITY>Paris</LOCALITY></ADR>", r), r
    a.send("<iq type='set' id='h2' to='localhost'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(a, "h2")
    assert "type='error'" in r and "<forbidden" in r, r
    # XEP-0054 4: the feature is announced.
    a.send("<iq type='get' id='d1' to='localhost'>"
           "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert "var='vcard-temp'" in reply(a, "d1")


def test_not_enabled_means_service_unavailable(server):
    users(server, "alice")
    a, _ = login(server.c2s_port, "alice", "pw", resource="r")
    a.send("<iq type='get' id='n1'><vCard xmlns='vcard-temp'/></iq>")
    r = reply(a, "n1")
    assert "type='error'" in r and "service-unavailable" in r, r


def test_bad_server_vcard_option_is_a_config_error(tmp_path):
    import subprocess
    from conftest import build_dir
    from xmpptest import Server
    srv = Server(build_dir(), tmp_path / "bad",
                 extra_yaml="modules:\n  mod_vcard:\n    vcard:\n      \"not a name\": x\n")
    p = subprocess.run([srv.bin, "--config", srv.config_path, "--check-config"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "modules.mod_vcard.vcard" in p.stderr and "not a vCard element name" in p.stderr, \
        p.stderr


# ---- XEP-0153 avatar hashes in presence ----

IMAGE = bytes(range(256)) * 3  # stands for a PNG; only its bytes matter
UPD = "vcard-temp:x:update"


def photo_card(img):
    import base64
    b64 = base64.b64encode(img).decode()
    lines = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))  # as clients wrap it
    return ("<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE>"
            f"<BINVAL>{lines}</BINVAL></PHOTO></vCard>")


def directed(a, b, tag, extra=""):
    """a sends available presence to b's full JID; the x:update b sees."""
    a.send(f"<presence to='bob@localhost/r'><status>{tag}</status>{extra}</presence>")
    m = b.recv_until(r"<presence[^>]*>(?:(?!</presence>).)*" + tag + r".*?</presence>")
    text = m.group(0).decode().replace('"', "'")
    x = re.search(r"<x xmlns='" + UPD + r"'\s*/>|<x xmlns='" + UPD + r"'>.*?</x>", text)
    assert x, text
    assert text.count(UPD) == 1, text
    return x.group(0)


def photo_of(x):
    m = re.search(r"<photo>([^<]*)</photo>|<photo\s*/>", x)
    assert m, x
    return m.group(1) or ""


def test_avatar_hash_in_presence(server_factory):
    import hashlib
    srv = server_factory(extra_yaml="modules:\n  mod_roster: {}\n  mod_vcard: {}\n")
    users(srv, "alice", "bob")
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    b, _ = login(srv.c2s_port, "bob", "pw", resource="r")
    # No vCard: an empty <photo/> (no avatar).
    assert photo_of(directed(a, b, "t1")) == ""
    a.send(f"<iq type='set' id='s1'>{photo_card(IMAGE)}</iq>")
    assert "type='result'" in reply(a, "s1")
    want = hashlib.sha1(IMAGE).hexdigest()
    assert photo_of(directed(a, b, "t2")) == want
    # A client's own claim is replaced by what the server stored ...
    assert photo_of(directed(a, b, "t3", f"<x xmlns='{UPD}'><photo>{'0' * 40}</photo></x>")) \
        == want
    # ... but "not ready" (no <photo/> child) is the client's to say.
    assert "<photo" not in directed(a, b, "t4", f"<x xmlns='{UPD}'/>")
    # The session's own presence (echoed to the user's resources) has it too.
    a.send("<presence><status>own</status></presence>")
    own = a.recv_until(r"<presence[^>]*>(?:(?!</presence>).)*own.*?</presence>").group(0)
    assert want in own.decode(), own
    a.close()
    b.close()
    # Kept across a restart (loaded from storage at start); a row stored
    # before the hash column existed (NULL) is hashed by the start.
    assert srv.stop() == 0
    import os
    import sqlite3
    db = sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db"))
    db.execute("UPDATE vcard SET photo_hash = NULL")
    db.commit()
    db.close()
    srv.restart()
    a, _ = login(srv.c2s_port, "alice", "pw", resource="r")
    b, _ = login(srv.c2s_port, "bob", "pw", resource="r")
    assert photo_of(directed(a, b, "t5")) == want
    # A vCard without a photo clears it.
    a.send("<iq type='set' id='s2'><vCard xmlns='vcard-temp'><FN>A</FN></vCard></iq>")
    assert "type='result'" in reply(a, "s2")
    assert photo_of(directed(a, b, "t6")) == ""
    a.close()
    b.close()
